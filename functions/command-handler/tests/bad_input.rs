//! Bad input gets the right 4xx problem+json and changes nothing: not the stream, not the
//! write-model table. Checked on the in-memory ports, and against moto over HTTP.

use command_handler::CommandApi;
use serde_json::json;
use timeline_core::ports::{EventLog, SystemClock, WriteModelStore};
use timeline_core::StreamKey;
use timeline_engine::memory::{MemoryLog, MemoryStore};
use timeline_testkit::{api_request, post, read};

struct Case {
    name: &'static str,
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Option<String>,
    status: u16,
    code: &'static str,
}

fn case(name: &'static str, path: &str, body: &str, status: u16, code: &'static str) -> Case {
    Case {
        name,
        method: "POST",
        path: path.to_owned(),
        headers: vec![("Content-Type", "application/json".to_owned())],
        body: Some(body.to_owned()),
        status,
        code,
    }
}

impl Case {
    fn header(mut self, name: &'static str, value: &str) -> Case {
        self.headers.retain(|(n, _)| !n.eq_ignore_ascii_case(name));
        self.headers.push((name, value.to_owned()));
        self
    }
    fn method(mut self, method: &'static str) -> Case {
        self.method = method;
        self
    }
}

/// A ride and a video to send bad commands to.
async fn seed<S: WriteModelStore, L: EventLog>(api: &CommandApi<S, L, SystemClock>) {
    let booking = json!({
        "id": "r1", "rider_id": "rider-1",
        "pickup": { "address": "1 Main St", "lat": 52.52, "lon": 13.40 },
        "dropoff": { "address": "9 Oak Ave", "lat": 52.50, "lon": 13.45 }
    });
    assert_eq!(read(api.handle(post("/rides", &booking, &[])).await).0, 201);
    assert_eq!(
        read(api.handle(post("/videos", &upload(), &[])).await).0,
        201
    );
}

fn upload() -> serde_json::Value {
    json!({ "id": "v1", "title": "Keynote", "source_uri": "s3://in/k.mp4" })
}

/// Every bad request answers its 4xx problem.
async fn send_every_bad_request<S: WriteModelStore, L: EventLog>(
    api: &CommandApi<S, L, SystemClock>,
) {
    let big = format!("{{\"driver_id\": \"{}\"}}", "x".repeat(20_000));
    let cases = vec![
        case(
            "malformed JSON",
            "/rides/r1/assign-driver",
            "{\"driver_id\": ",
            400,
            "malformed_json",
        ),
        case(
            "not an object",
            "/rides/r1/assign-driver",
            "[1, 2]",
            400,
            "invalid_body",
        ),
        case(
            "wrong type",
            "/rides/r1/adjust-fare",
            r#"{"fare_cents": "ten", "reason": "x"}"#,
            400,
            "invalid_body",
        ),
        case(
            "missing field",
            "/rides/r1/assign-driver",
            "{}",
            400,
            "invalid_body",
        ),
        case(
            "unknown field",
            "/rides/r1/start",
            r#"{"force": true}"#,
            400,
            "invalid_body",
        ),
        case(
            "unknown field on a command with fields",
            "/rides/r1/assign-driver",
            r#"{"driver_id": "d", "x": 1}"#,
            400,
            "invalid_body",
        ),
        case(
            "a command tag smuggled in",
            "/rides/r1/start",
            r#"{"command": "complete"}"#,
            400,
            "invalid_body",
        ),
        case(
            "unknown command",
            "/rides/r1/teleport",
            "{}",
            404,
            "not_found",
        ),
        case("unknown collection", "/boats", "{}", 404, "not_found"),
        case(
            "oversized body",
            "/rides/r1/assign-driver",
            &big,
            413,
            "body_too_large",
        ),
        case(
            "invalid id in the path",
            "/rides/bad.id/start",
            "{}",
            400,
            "invalid_id",
        ),
        case(
            "invalid id in a create",
            "/rides",
            &json!({"id": "../etc", "rider_id": "r"}).to_string(),
            400,
            "invalid_id",
        ),
        case(
            "id of the wrong type",
            "/videos",
            r#"{"id": 7, "title": "t", "source_uri": "s"}"#,
            400,
            "invalid_id",
        ),
        case(
            "illegal transition",
            "/rides/r1/start",
            "{}",
            422,
            "ride.driver_not_assigned",
        ),
        case(
            "business rule: negative fare",
            "/rides/r1/adjust-fare",
            r#"{"fare_cents": -5, "reason": "x"}"#,
            422,
            "ride.negative_fare",
        ),
        case(
            "business rule: progress over 100",
            "/videos/v1/progress",
            r#"{"percent": 101}"#,
            422,
            "video.progress_out_of_range",
        ),
        case(
            "progress beyond its type",
            "/videos/v1/progress",
            r#"{"percent": 300}"#,
            400,
            "invalid_body",
        ),
        case(
            "unknown entity",
            "/rides/nope/start",
            "{}",
            404,
            "ride.not_found",
        ),
        case(
            "existing id",
            "/videos",
            &upload().to_string(),
            409,
            "video.already_exists",
        ),
        case(
            "stale If-Match",
            "/rides/r1/assign-driver",
            r#"{"driver_id": "d"}"#,
            409,
            "version_conflict",
        )
        .header("If-Match", "\"5\""),
        case(
            "stale expected_version",
            "/rides/r1/assign-driver",
            r#"{"driver_id": "d", "expected_version": 0}"#,
            409,
            "version_conflict",
        ),
        case(
            "bad If-Match",
            "/rides/r1/assign-driver",
            r#"{"driver_id": "d"}"#,
            400,
            "invalid_if_match",
        )
        .header("If-Match", "abc"),
        case(
            "negative expected_version",
            "/rides/r1/assign-driver",
            r#"{"driver_id": "d", "expected_version": -1}"#,
            400,
            "invalid_body",
        ),
        case(
            "If-Match and expected_version disagree",
            "/rides/r1/assign-driver",
            r#"{"driver_id": "d", "expected_version": 2}"#,
            400,
            "conflicting_versions",
        )
        .header("If-Match", "\"1\""),
        case(
            "Idempotency-Key too long",
            "/rides/r1/assign-driver",
            r#"{"driver_id": "d"}"#,
            400,
            "invalid_idempotency_key",
        )
        .header("Idempotency-Key", &"k".repeat(300)),
        case(
            "not JSON",
            "/rides/r1/assign-driver",
            "driver_id=d",
            415,
            "unsupported_media_type",
        )
        .header("Content-Type", "application/x-www-form-urlencoded"),
        // Numbers DynamoDB cannot hold: refused here, on every backend, before a commit.
        case(
            "a latitude too small to store",
            "/rides",
            r#"{"id": "r9", "rider_id": "x", "pickup": {"address": "A", "lat": 1e-200, "lon": 1}, "dropoff": {"address": "B", "lat": 2, "lon": 1}}"#,
            400,
            "invalid_body",
        ),
        case(
            "a distance too large to store",
            "/rides/r1/complete",
            r#"{"final_fare_cents": 100, "distance_km": 1e200}"#,
            400,
            "invalid_body",
        ),
        case(
            "wrong method",
            "/rides/r1/start",
            "",
            405,
            "method_not_allowed",
        )
        .method("GET"),
    ];

    for c in cases {
        let headers: Vec<(&str, &str)> = c.headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let response = api
            .handle(api_request(c.method, &c.path, &headers, c.body.as_deref()))
            .await;
        let (status, problem, response_headers) = read(response);
        assert_eq!(status, c.status, "{}: {problem}", c.name);
        assert_eq!(
            response_headers["content-type"], "application/problem+json",
            "{}",
            c.name
        );
        assert_eq!(problem["code"], c.code, "{}: {problem}", c.name);
        if c.name.ends_with("to store") {
            let field = problem["field"].as_str().unwrap_or_default();
            assert!(
                field == "pickup.lat" || field == "distance_km",
                "{}: {problem}",
                c.name
            );
        }
        assert_eq!(problem["status"], c.status, "{}", c.name);
        assert!(
            problem["detail"].as_str().is_some_and(|d| !d.is_empty()),
            "{}",
            c.name
        );
        assert!(
            problem["type"]
                .as_str()
                .is_some_and(|t| t.ends_with(c.code)),
            "{}",
            c.name
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bad_request_gets_its_4xx_problem_and_writes_nothing() {
    let env = timeline_testkit::test_env!();
    let api = CommandApi::new(env.store(), env.log(), SystemClock);
    seed(&api).await;
    let items_before = env.table_items().await;
    let records_before = env.records().await.len();
    send_every_bad_request(&api).await;
    assert_eq!(
        env.table_items().await,
        items_before,
        "no bad request changed a table"
    );
    assert_eq!(
        env.records().await.len(),
        records_before,
        "no bad request reached the stream"
    );
}

#[tokio::test]
async fn on_the_in_memory_ports_every_bad_request_gets_its_4xx_problem_and_writes_nothing() {
    let (store, log) = (MemoryStore::default(), MemoryLog::default());
    let api = CommandApi::new(store.clone(), log.clone(), SystemClock);
    seed(&api).await;
    let heads =
        || [StreamKey::new("ride", "r1"), StreamKey::new("video", "v1")].map(|k| store.head(&k));
    let (heads_before, records_before) = (heads(), log.records());
    send_every_bad_request(&api).await;
    assert_eq!(heads(), heads_before, "no bad request changed a head");
    assert_eq!(
        log.records(),
        records_before,
        "no bad request reached the log"
    );
}
