//! The local runner end to end against moto over HTTP: the guided demo drives the real API
//! (commands in, views and history out, time travel from the archive), exactly as the
//! README's first command does.

use std::time::Duration;
use timeline_local::demo::{self, Http};
use timeline_local::runner::{run, RunOptions};
use timeline_testkit::TestEnv;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_runs_against_the_runner_and_time_travel_answers() {
    let env = TestEnv::new().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let failures =
        std::env::temp_dir().join(format!("{}.jsonl", timeline_testkit::unique("failures")));
    let options = RunOptions {
        sweep_every: Duration::from_secs(1),
        bootstrap: Some(false),
        failures,
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let (clients, names) = (env.clients.clone(), env.names.clone());
    let runner = tokio::spawn(async move {
        run(listener, clients, names, options, async {}, async {
            let _ = stop_rx.await;
        })
        .await
    });

    let http = Http::new(format!("http://{addr}"));
    let mut lines = Vec::new();
    let outcome = demo::run(&http, "t", |l| lines.push(l))
        .await
        .expect("the demo runs");
    assert_eq!(outcome.steps, 13);
    assert_eq!(outcome.ride_view["status"], "completed");
    assert_eq!(outcome.ride_view["state"]["fare_cents"], 11000);
    let statuses: Vec<&str> = outcome.video_timeline["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status_after"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["uploaded", "processing", "processing:50%", "failed"]
    );
    assert_eq!(outcome.video_timeline["steps"][3]["reason"], "timeout");
    // The state as of the first fare adjustment: 100.00, not 90.00 or 110.00.
    assert_eq!(outcome.fare_earlier["view"]["state"]["fare_cents"], 10000);
    assert!(lines.iter().any(|l| l.contains("processing:50%")));

    // Bad input through the runner is the same problem+json as in Lambda.
    let (status, problem) = http
        .post("/rides/ride-t/start", serde_json::json!({ "x": 1 }))
        .await
        .unwrap();
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_body"))
    );

    stop_tx.send(()).unwrap();
    runner.await.unwrap().unwrap();
    // After shutdown the archive holds every event that was accepted.
    let archive = timeline_aws::archive::S3Archive::new(
        env.clients.s3.clone(),
        &env.names.archive_bucket,
        "events/",
    );
    let mut archived = 0;
    for key in archive.list_keys(None, None).await.unwrap() {
        archived += archive
            .read_object(&key)
            .await
            .unwrap()
            .iter()
            .map(|r| r.events.len())
            .sum::<usize>();
    }
    let distinct: std::collections::BTreeSet<(String, u64)> = env
        .events()
        .await
        .iter()
        .map(|e| (e.aggregate_id.clone(), e.version))
        .collect();
    assert!(
        archived >= distinct.len(),
        "archived {archived} of {}",
        distinct.len()
    );
}
