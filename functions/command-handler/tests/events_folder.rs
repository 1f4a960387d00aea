//! Every API Gateway payload in `events/api/` is decoded exactly as Lambda decodes it and
//! handled, in file-name order, by one fresh system (moto over HTTP); each must succeed and
//! together they tell the story the README shows.

use command_handler::CommandApi;
use std::path::PathBuf;
use timeline_core::ports::{SystemClock, WriteModelStore};
use timeline_core::StreamKey;
use timeline_testkit::read;

fn api_events() -> Vec<PathBuf> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../events/api");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_gateway_event_in_the_events_folder_is_handled() {
    let files = api_events();
    assert!(
        files.len() >= 12,
        "one event per command at least: {files:?}"
    );
    let env = timeline_testkit::test_env!();
    let api = CommandApi::new(env.store(), env.log(), SystemClock);
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        let request = lambda_http::request::from_str(&text).unwrap_or_else(|e| {
            panic!("{} is not an API Gateway proxy event: {e}", file.display())
        });
        let (status, body, _) = read(api.handle(request).await);
        assert!(
            (200..300).contains(&status),
            "{}: {status} {body}",
            file.display()
        );
        assert_eq!(body["published"], true, "{}", file.display());
        assert!(
            body["events"][0]["actor"]
                .as_str()
                .is_some_and(|a| a != "anonymous"),
            "{}: the Cognito claims in the event name the actor",
            file.display()
        );
    }

    let head = |t: &str, id: &str| {
        let store = env.store();
        let key = StreamKey::new(t, id);
        async move { store.load_head(&key).await.unwrap().expect("entity exists") }
    };
    let ride = head("ride", "ride-demo-1").await;
    assert_eq!(ride.state["status"], "completed");
    assert_eq!(ride.state["fare_cents"], 11000);
    let cancelled = head("ride", "ride-demo-2").await;
    assert_eq!(cancelled.state["status"], "cancelled");
    let video = head("video", "video-demo-1").await;
    assert_eq!(video.state["phase"], "succeeded");
    assert_eq!(video.state["failure_reason"], "timeout");

    let events = env.events().await;
    let total: usize = files.len();
    assert_eq!(events.len(), total, "one event per request");
}
