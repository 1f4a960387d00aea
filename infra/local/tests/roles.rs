//! Who may do what, end to end: the local runner verifies each request's token, and the real
//! handlers apply the policy. Every role's allowed requests succeed and the refused ones get
//! their documented status (403 for what a caller may see but not do, 404 for what it may
//! not see, 401 without a valid token), on the embedded backend and on moto.

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::Duration;
use timeline_core::access::{Caller, Role};
use timeline_local::auth::{self, Issuer};
use timeline_local::backend::{AwsBackend, Backend, EmbeddedBackend};
use timeline_local::demo::{Http, Tokens};
use timeline_local::runner::{run, RunOptions};
use tokio::sync::oneshot;

fn place(a: &str) -> Value {
    json!({ "address": a, "lat": 53.34, "lon": -6.25 })
}

/// One request by one caller and the status it must get.
struct Step {
    who: &'static str,
    method: &'static str,
    path: String,
    body: Option<Value>,
    status: u16,
}

fn step(
    who: &'static str,
    method: &'static str,
    path: &str,
    body: Option<Value>,
    status: u16,
) -> Step {
    Step {
        who,
        method,
        path: path.to_owned(),
        body,
        status,
    }
}

fn callers() -> Vec<(&'static str, Option<Caller>)> {
    vec![
        ("rider r-1", Some(Caller::user("r-1", [Role::Rider]))),
        ("rider r-2", Some(Caller::user("r-2", [Role::Rider]))),
        ("driver d-1", Some(Caller::user("d-1", [Role::Driver]))),
        ("driver d-2", Some(Caller::user("d-2", [Role::Driver]))),
        (
            "dispatcher",
            Some(Caller::user("disp-1", [Role::Dispatcher])),
        ),
        ("operator", Some(auth::operator())),
        ("uploader u-1", Some(Caller::user("u-1", []))),
        ("user u-2", Some(Caller::user("u-2", []))),
        ("pipeline", Some(auth::pipeline())),
        ("nobody", None),
    ]
}

/// The story, in order: each caller's allowed and refused requests on a ride and a video.
fn story(id: &str) -> Vec<Step> {
    let ride = format!("/rides/ride-{id}");
    let video = format!("/videos/video-{id}");
    let book = json!({ "id": format!("ride-{id}"), "pickup": place("A"), "dropoff": place("B"), "fare_estimate_cents": 1000 });
    let mut steps = vec![
        // Nobody gets anywhere without a token.
        step("nobody", "POST", "/rides", Some(book.clone()), 401),
        step("nobody", "GET", "/rides?status=booked", None, 401),
        // A rider books as themself (the id comes from the token), never as another.
        step(
            "rider r-2",
            "POST",
            "/rides",
            Some(json!({ "rider_id": "r-1", "pickup": place("A"), "dropoff": place("B") })),
            403,
        ),
        step(
            "driver d-1",
            "POST",
            "/rides",
            Some(json!({ "rider_id": "d-1", "pickup": place("A"), "dropoff": place("B") })),
            403,
        ),
        step("rider r-1", "POST", "/rides", Some(book), 201),
        // Another rider cannot see it, or touch it: it does not exist for them.
        step("rider r-2", "GET", &ride, None, 404),
        step("rider r-2", "GET", &format!("{ride}/history"), None, 404),
        step("rider r-2", "GET", &format!("{ride}/state"), None, 404),
        step("rider r-2", "GET", &format!("{ride}/timeline"), None, 404),
        step(
            "rider r-2",
            "POST",
            &format!("{ride}/cancel"),
            Some(json!({ "by": "rider", "reason": "x" })),
            404,
        ),
        // Its rider sees it, but prices are the dispatcher's.
        step("rider r-1", "GET", &ride, None, 200),
        step("rider r-1", "GET", &format!("{ride}/state"), None, 200),
        step(
            "rider r-1",
            "POST",
            &format!("{ride}/adjust-fare"),
            Some(json!({ "fare_cents": 1, "reason": "x" })),
            403,
        ),
        step("rider r-1", "GET", "/rides?rider_id=r-1", None, 200),
        step("rider r-1", "GET", "/rides?rider_id=r-2", None, 403),
        step("rider r-1", "GET", "/rides?status=booked", None, 403),
        // Drivers see open bookings and take one only as themselves.
        step("driver d-2", "GET", "/rides?status=booked", None, 200),
        step("driver d-2", "GET", &ride, None, 200),
        step(
            "driver d-2",
            "POST",
            &format!("{ride}/assign-driver"),
            Some(json!({ "driver_id": "d-1" })),
            403,
        ),
        step(
            "driver d-1",
            "POST",
            &format!("{ride}/assign-driver"),
            Some(json!({ "driver_id": "d-1" })),
            200,
        ),
        // Once taken, the other driver no longer sees it.
        step("driver d-2", "GET", &ride, None, 404),
        step(
            "driver d-2",
            "POST",
            &format!("{ride}/start"),
            Some(json!({})),
            404,
        ),
        step(
            "dispatcher",
            "POST",
            &format!("{ride}/start"),
            Some(json!({})),
            403,
        ),
        step(
            "driver d-1",
            "POST",
            &format!("{ride}/start"),
            Some(json!({})),
            200,
        ),
        step(
            "dispatcher",
            "POST",
            &format!("{ride}/adjust-fare"),
            Some(json!({ "fare_cents": 1200, "reason": "traffic" })),
            200,
        ),
        step(
            "rider r-1",
            "POST",
            &format!("{ride}/change-destination"),
            Some(json!({ "dropoff": place("C") })),
            200,
        ),
        step(
            "driver d-1",
            "POST",
            &format!("{ride}/complete"),
            Some(json!({ "final_fare_cents": 1200, "distance_km": 3.5 })),
            200,
        ),
        step("dispatcher", "GET", "/rides?driver_id=d-1", None, 200),
        step("operator", "GET", &format!("{ride}/timeline"), None, 200),
        // Videos: users upload as themselves; the pipeline (a service) reports.
        step(
            "uploader u-1",
            "POST",
            "/videos",
            Some(
                json!({ "id": format!("video-{id}"), "title": "t", "source_uri": "s3://in/t.mp4" }),
            ),
            201,
        ),
        step(
            "pipeline",
            "POST",
            "/videos",
            Some(json!({ "title": "t", "source_uri": "s3://in/t.mp4" })),
            403,
        ),
        step(
            "uploader u-1",
            "POST",
            &format!("{video}/start-processing"),
            Some(json!({})),
            403,
        ),
        step(
            "user u-2",
            "POST",
            &format!("{video}/start-processing"),
            Some(json!({})),
            404,
        ),
        step(
            "pipeline",
            "POST",
            &format!("{video}/start-processing"),
            Some(json!({})),
            200,
        ),
        step(
            "pipeline",
            "POST",
            &format!("{video}/fail"),
            Some(json!({ "error": "timeout" })),
            200,
        ),
        step("uploader u-1", "GET", &video, None, 200),
        step("user u-2", "GET", &video, None, 404),
        step("user u-2", "GET", &format!("{video}/timeline"), None, 404),
        step("operator", "GET", &video, None, 200),
        step("uploader u-1", "GET", "/videos?status=failed", None, 403),
        step("operator", "GET", "/videos?status=failed", None, 200),
        step("pipeline", "GET", &video, None, 200),
        step("nobody", "GET", &video, None, 401),
    ];
    // Each caller's own token, and garbage, are told apart from none at all.
    steps.push(step("nobody", "GET", &format!("{video}/state"), None, 401));
    steps
}

async fn play<B: Backend>(backend: B, dir: std::path::PathBuf, id: &str) {
    let issuer = Arc::new(Issuer::open(&dir).unwrap());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let options = RunOptions {
        sweep_every: Duration::from_secs(1),
        failures: dir.join("failed.jsonl"),
        issuer: issuer.clone(),
        subscribers: None,
        announce_deliveries: false,
        publish: timeline_core::write::PublishMode::Inline,
    };
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        run(listener, backend, options, async {}, async {
            let _ = stopped.await;
        })
        .await
    });
    let clients: Vec<(&str, Http)> = callers()
        .into_iter()
        .map(|(who, caller)| {
            let http = match caller {
                Some(c) => {
                    let token = issuer.mint(&c, 600).unwrap();
                    Http::signed(
                        base.clone(),
                        Tokens {
                            user: token.clone(),
                            pipeline: token,
                        },
                    )
                }
                None => Http::new(base.clone()),
            };
            (who, http)
        })
        .collect();
    let http = |who: &str| &clients.iter().find(|(w, _)| *w == who).expect("a caller").1;
    for s in story(id) {
        // Reads wait for the read side (eventually consistent) before judging a status.
        let mut tries = if s.method == "GET" { 50 } else { 1 };
        loop {
            let (status, body) = http(s.who)
                .call(s.method, &s.path, s.body.as_ref(), &[])
                .await
                .unwrap();
            tries -= 1;
            if status == s.status || tries == 0 {
                assert_eq!(
                    status, s.status,
                    "{} {} by {}: {body}",
                    s.method, s.path, s.who
                );
                if status == 403 {
                    assert_eq!(body["code"], "forbidden", "{body}");
                    assert!(body["rule"].is_string(), "{body}");
                }
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    // A forged token (signed by another issuer) is no token.
    let other_guard = timeline_testkit::tempdir("other-issuer");
    let other = Issuer::open(other_guard.path()).unwrap();
    let forged = other.mint(&auth::operator(), 600).unwrap();
    let (status, _) = Http::new(base.clone())
        .call(
            "GET",
            "/rides?status=booked",
            None,
            &[("authorization", &format!("Bearer {forged}"))],
        )
        .await
        .unwrap();
    assert_eq!(status, 401);
    stop.send(()).unwrap();
    task.await.unwrap().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_does_its_part_and_no_more_on_the_embedded_backend() {
    let dir_guard = timeline_testkit::tempdir("roles-embedded");
    let dir = dir_guard.path().to_path_buf();
    let backend = EmbeddedBackend::open(&dir).unwrap();
    play(backend, dir, "e").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_does_its_part_and_no_more_on_moto() {
    let env = timeline_testkit::test_env!();
    let backend = AwsBackend {
        read_store: None,
        clients: env.clients.clone(),
        streams: env.streams.clone(),
        names: env.names.clone(),
        endpoint: std::env::var("AWS_ENDPOINT_URL").ok(),
    };
    let dir_guard = timeline_testkit::tempdir("roles-aws");
    play(backend, dir_guard.path().to_path_buf(), "a").await;
}

/// Every operation of the OpenAPI document, with random ids, bodies and query strings, and
/// no token, a malformed one, or one from another issuer: never anything but 401.
#[test]
fn no_documented_request_succeeds_without_a_valid_token() {
    use proptest::prelude::*;
    let doc = timeline_testkit::openapi::document();
    let mut operations: Vec<(String, String)> = Vec::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in ["get", "post"] {
            if item.get(method).is_some() {
                operations.push((method.to_uppercase(), path.clone()));
            }
        }
    }
    assert!(operations.len() >= 22, "{operations:?}");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir_guard = timeline_testkit::tempdir("roles-fuzz");
    let dir = dir_guard.path().to_path_buf();
    let issuer = Arc::new(Issuer::open(&dir).unwrap());
    let backend = EmbeddedBackend::open(&dir).unwrap();
    let listener = rt
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let options = RunOptions {
        sweep_every: Duration::from_secs(1),
        failures: dir.join("failed.jsonl"),
        issuer,
        subscribers: None,
        announce_deliveries: false,
        publish: timeline_core::write::PublishMode::Inline,
    };
    let task = rt.spawn(async move {
        run(listener, backend, options, async {}, async {
            let _ = stopped.await;
        })
        .await
    });
    let other_guard = timeline_testkit::tempdir("roles-fuzz-other");
    let other = Issuer::open(other_guard.path()).unwrap();
    let forged = other.mint(&auth::operator(), 600).unwrap();
    let http = Http::new(base);
    let config = ProptestConfig::with_cases(300);
    proptest!(config, |(
        op in 0..operations.len(),
        id in "[A-Za-z0-9_-]{1,8}",
        query in "(status=booked|rider_id=r-1|driver_id=d-1|as_of=2026-01-01T00:00:00Z|version=1|)",
        body in prop_oneof![Just("{}".to_owned()), "\\{\"[a-z_]{1,10}\": ?\"[a-z0-9-]{0,8}\"\\}", any::<String>()],
        auth in prop_oneof![
            Just(None),
            Just(Some("Bearer".to_owned())),
            "Bearer [A-Za-z0-9._-]{0,60}".prop_map(Some),
            Just(Some(format!("Bearer {forged}"))),
            Just(Some("Basic dXNlcjpwYXNz".to_owned())),
        ],
    )| {
        let (method, template) = &operations[op];
        let path = format!("{}?{query}", template.replace("{id}", &id));
        let headers: Vec<(&str, &str)> = auth.as_deref().map(|a| ("authorization", a)).into_iter().collect();
        let body: Option<Value> = (method == "POST").then(|| serde_json::from_str(&body).unwrap_or(Value::String(body.clone())));
        let (status, answer) = rt.block_on(http.call(method, &path, body.as_ref(), &headers)).unwrap();
        prop_assert_eq!(status, 401, "{} {} with {:?}: {}", method, path, auth, answer);
        prop_assert_eq!(&answer["code"], "unauthenticated");
    });
    stop.send(()).unwrap();
    rt.block_on(task).unwrap().unwrap();
}
