//! The command path end to end against moto over HTTP: API Gateway event -> handler ->
//! DynamoDB (head, outbox, idempotency) -> Kinesis, read back with GetRecords.

use command_handler::CommandApi;
use serde_json::{json, Value};
use std::collections::BTreeMap;
use std::sync::Arc;
use timeline_aws::{DynamoWriteStore, KinesisEventLog};
use timeline_core::hydrate::hydrate;
use timeline_core::ports::{SystemClock, WriteModelStore};
use timeline_core::ride::RideAggregate;
use timeline_core::video::{VideoAggregate, VideoState};
use timeline_core::EventEnvelope;
use timeline_core::StreamKey;
use timeline_testkit::{post, read, TestEnv};

type Api = CommandApi<DynamoWriteStore, KinesisEventLog, SystemClock>;

fn api(env: &TestEnv) -> Api {
    CommandApi::new(env.store(), env.log(), SystemClock)
}

fn booking(id: &str) -> Value {
    json!({
        "id": id,
        "rider_id": "rider-1",
        "pickup": { "address": "1 Main St", "lat": 52.52, "lon": 13.40 },
        "dropoff": { "address": "9 Oak Ave", "lat": 52.50, "lon": 13.45 },
        "fare_estimate_cents": 9000
    })
}

async fn book(api: &Api, id: &str) {
    let (status, body, _) = read(api.handle(post("/rides", &booking(id), &[])).await);
    assert_eq!(status, 201, "{body}");
}

/// Per entity, every version first appears after all lower versions, and the versions seen
/// are exactly 1..=n.
fn assert_ordered(events: &[EventEnvelope]) -> BTreeMap<String, u64> {
    let mut highest: BTreeMap<String, u64> = BTreeMap::new();
    let mut ids: BTreeMap<(String, u64), &str> = BTreeMap::new();
    for e in events {
        let key = e.stream_key().to_string();
        // A copy of a version is the same event; two events never share a version.
        let id = ids.entry((key.clone(), e.version)).or_insert(&e.event_id);
        assert_eq!(*id, e.event_id, "{key} version {} is two events", e.version);
        let seen = highest.entry(key.clone()).or_default();
        assert!(
            e.version <= *seen + 1,
            "{key} version {} appeared before version {}",
            e.version,
            *seen + 1
        );
        *seen = (*seen).max(e.version);
    }
    highest
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn booking_a_ride_commits_publishes_one_record_and_clears_the_outbox_in_four_requests() {
    let env = timeline_testkit::test_env!();
    let api = api(&env);
    let (status, body, headers) = read(api.handle(post("/rides", &booking("r1"), &[])).await);
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["location"], "/rides/r1");
    assert_eq!(headers["etag"], "\"1\"");
    assert_eq!(body["aggregate_id"], "r1");
    assert_eq!(body["version"], 1);
    assert_eq!(body["published"], true);
    assert_eq!(body["events"][0]["type"], "RideBooked");
    assert_eq!(body["events"][0]["actor"], "test-user");

    let counts = env.counter.snapshot();
    assert!(env.counter.total() <= 4, "happy path made {counts:?}");
    assert_eq!(counts.get("PutRecord"), Some(&1), "{counts:?}");
    assert_eq!(counts.get("PutRecords"), None, "{counts:?}");

    // An Idempotency-Key costs no extra request on the happy path.
    env.counter.reset();
    let (status, _, _) = read(
        api.handle(post(
            "/rides/r1/assign-driver",
            &json!({ "driver_id": "d-1" }),
            &[("Idempotency-Key", "k-1")],
        ))
        .await,
    );
    assert_eq!(status, 200);
    assert!(
        env.counter.total() <= 4,
        "keyed happy path made {:?}",
        env.counter.snapshot()
    );

    let records = env.records().await;
    assert_eq!(records.len(), 2);
    assert_eq!(records[0].partition_key, "ride#r1");
    let head = env
        .store()
        .load_head(&StreamKey::new("ride", "r1"))
        .await
        .unwrap()
        .unwrap();
    assert!(head.pending.is_empty(), "outbox cleared after publish");
    assert_eq!(head.version, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_whole_ride_and_the_seed_video_land_on_the_stream_and_hydrate_to_the_heads() {
    let env = timeline_testkit::test_env!();
    let api = api(&env);
    book(&api, "r1").await;
    let steps = [
        ("/rides/r1/assign-driver", json!({ "driver_id": "d-7" })),
        ("/rides/r1/start", json!({})),
        (
            "/rides/r1/change-destination",
            json!({ "dropoff": { "address": "3 Elm St", "lat": 52.49, "lon": 13.41 } }),
        ),
        (
            "/rides/r1/adjust-fare",
            json!({ "fare_cents": 10000, "reason": "detour" }),
        ),
        (
            "/rides/r1/adjust-fare",
            json!({ "fare_cents": 11000, "reason": "toll" }),
        ),
        (
            "/rides/r1/complete",
            json!({ "final_fare_cents": 11000, "distance_km": 7.5 }),
        ),
        (
            "/videos",
            json!({ "id": "v1", "title": "Keynote", "source_uri": "s3://in/k.mp4" }),
        ),
        ("/videos/v1/start-processing", json!({})),
        ("/videos/v1/progress", json!({ "percent": 50 })),
        ("/videos/v1/fail", json!({ "error": "timeout" })),
    ];
    for (path, body) in steps {
        let (status, answer, _) = read(api.handle(post(path, &body, &[])).await);
        assert!(status == 200 || status == 201, "{path}: {status} {answer}");
    }

    let events = env.events().await;
    let highest = assert_ordered(&events);
    assert_eq!(highest["ride#r1"], 7);
    assert_eq!(highest["video#v1"], 4);

    let ride_events: Vec<_> = events.iter().filter(|e| e.aggregate_id == "r1").collect();
    let ride = hydrate::<RideAggregate>(ride_events.iter().copied()).unwrap();
    let head = env
        .store()
        .load_head(&StreamKey::new("ride", "r1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(serde_json::to_value(&ride.state).unwrap(), head.state);
    assert_eq!(head.state["status"], "completed");
    assert_eq!(head.state["fare_cents"], 11000);

    // The seed's example: uploaded -> processing -> processing:50% -> failed ("timeout").
    let video_events: Vec<_> = events.iter().filter(|e| e.aggregate_id == "v1").collect();
    let mut statuses = Vec::new();
    for n in 1..=video_events.len() {
        let state: VideoState = hydrate::<VideoAggregate>(video_events[..n].iter().copied())
            .unwrap()
            .state;
        statuses.push(state.unwrap().status());
    }
    assert_eq!(
        statuses,
        ["uploaded", "processing", "processing:50%", "failed"]
    );
    let video = hydrate::<VideoAggregate>(video_events.iter().copied())
        .unwrap()
        .state
        .unwrap();
    assert_eq!(video.failure_reason.as_deref(), Some("timeout"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn of_50_concurrent_commands_at_one_expected_version_exactly_one_wins() {
    let env = timeline_testkit::test_env!();
    let api = Arc::new(api(&env));
    book(&api, "r1").await;
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                let body = json!({ "fare_cents": 10_000 + i, "reason": format!("offer {i}") });
                read(
                    api.handle(post(
                        "/rides/r1/adjust-fare",
                        &body,
                        &[("If-Match", "\"1\"")],
                    ))
                    .await,
                )
            })
        })
        .collect();
    let mut statuses = BTreeMap::<u16, usize>::new();
    for task in tasks {
        let (status, body, _) = task.await.unwrap();
        if status == 409 {
            assert_eq!(body["code"], "version_conflict");
            assert_eq!(body["expected_version"], 1);
            assert_eq!(body["current_version"], 2);
        }
        *statuses.entry(status).or_default() += 1;
    }
    assert_eq!(statuses, BTreeMap::from([(200, 1), (409, 49)]));

    let events = env.events().await;
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2], "contiguous, no repeats");
    let head = env
        .store()
        .load_head(&StreamKey::new("ride", "r1"))
        .await
        .unwrap()
        .unwrap();
    let replayed = hydrate::<RideAggregate>(&events).unwrap();
    assert_eq!(serde_json::to_value(&replayed.state).unwrap(), head.state);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_publishers_keep_every_version_after_all_lower_ones_on_the_shard() {
    let env = timeline_testkit::test_env!();
    let api = Arc::new(api(&env));
    for ride in ["r1", "r2", "r3"] {
        book(&api, ride).await;
    }
    // No expected version: writers retry on conflict, so many commits race to publish.
    let tasks: Vec<_> = (0..36)
        .map(|i| {
            let api = api.clone();
            tokio::spawn(async move {
                let path = format!("/rides/r{}/adjust-fare", i % 3 + 1);
                let body = json!({ "fare_cents": 20_000 + i, "reason": "surge" });
                read(api.handle(post(&path, &body, &[])).await).0
            })
        })
        .collect();
    let mut accepted = 0;
    for task in tasks {
        let status = task.await.unwrap();
        assert!(status == 200 || status == 409, "status {status}");
        accepted += usize::from(status == 200);
    }
    let events = env.events().await;
    let highest = assert_ordered(&events);
    let total: u64 = highest.values().sum();
    assert_eq!(
        total as usize,
        3 + accepted,
        "every accepted command is on the stream"
    );
    for ride in ["r1", "r2", "r3"] {
        let key = StreamKey::new("ride", ride);
        let head = env.store().load_head(&key).await.unwrap().unwrap();
        assert_eq!(head.version, highest[&key.to_string()]);
        // Dedupe on (aggregate, version), then the stream hydrates to the head.
        let mut mine: Vec<EventEnvelope> = events
            .iter()
            .filter(|e| e.aggregate_id == ride)
            .cloned()
            .collect();
        mine.sort_by_key(|e| e.version);
        mine.dedup_by_key(|e| e.version);
        let state = hydrate::<RideAggregate>(&mine).unwrap().state;
        assert_eq!(serde_json::to_value(&state).unwrap(), head.state);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_same_idempotency_key_ten_times_commits_once_and_answers_the_same() {
    let env = timeline_testkit::test_env!();
    let api = Arc::new(api(&env));
    let body = json!({
        "rider_id": "rider-1",
        "pickup": { "address": "1 Main St", "lat": 52.52, "lon": 13.40 },
        "dropoff": { "address": "9 Oak Ave", "lat": 52.50, "lon": 13.45 }
    });
    let headers = [("Idempotency-Key", "book-once-123")];
    let mut answers = Vec::new();
    for _ in 0..10 {
        answers.push(read(api.handle(post("/rides", &body, &headers)).await));
    }
    let concurrent: Vec<_> = (0..10)
        .map(|_| {
            let api = api.clone();
            let body = body.clone();
            tokio::spawn(async move {
                read(
                    api.handle(post(
                        "/rides",
                        &body,
                        &[("Idempotency-Key", "book-once-456")],
                    ))
                    .await,
                )
            })
        })
        .collect();
    let mut concurrent_answers = Vec::new();
    for task in concurrent {
        concurrent_answers.push(task.await.unwrap());
    }
    for group in [&answers, &concurrent_answers] {
        let (first_status, first_body, _) = &group[0];
        assert_eq!(*first_status, 201, "{first_body}");
        for (status, body, _) in group.iter() {
            assert_eq!(status, first_status);
            assert_eq!(body, first_body, "same response each time");
        }
        let replays = group
            .iter()
            .filter(|(_, _, h)| h.get("idempotent-replayed").is_some())
            .count();
        assert_eq!(replays, 9, "one original, nine replays");
    }
    // One commit per key: two entities, each at version 1. (A replay that finds the
    // original's events still in the outbox publishes them: a harmless duplicate on the
    // stream that readers drop on (aggregate, version).)
    let events = env.events().await;
    let distinct: std::collections::BTreeSet<(String, u64)> = events
        .iter()
        .map(|e| (e.aggregate_id.clone(), e.version))
        .collect();
    assert_eq!(distinct.len(), 2, "one commit per key: {distinct:?}");
    let heads = env
        .table_items()
        .await
        .into_iter()
        .filter(|item| item.contains("pk=S(\"ride#"))
        .count();
    assert_eq!(heads, 2, "two rides created, not twenty");

    // The same key with another body is refused and writes nothing.
    let before = env.table_items().await;
    let mut other = body.clone();
    other["rider_id"] = json!("rider-2");
    let (status, problem, headers) = read(api.handle(post("/rides", &other, &headers)).await);
    assert_eq!(status, 422);
    assert_eq!(problem["code"], "idempotency_key_reused");
    assert_eq!(headers["content-type"], "application/problem+json");
    assert_eq!(env.table_items().await, before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_failed_publish_is_committed_not_lost_and_the_next_command_publishes_it_in_order() {
    let env = timeline_testkit::test_env!();
    let broken = CommandApi::new(env.store(), env.broken_log(), SystemClock);
    let (status, body, _) = read(broken.handle(post("/rides", &booking("r1"), &[])).await);
    assert_eq!(status, 202, "committed but not published: {body}");
    assert_eq!(body["published"], false);
    let (status, _, _) = read(
        broken
            .handle(post(
                "/rides/r1/assign-driver",
                &json!({ "driver_id": "d-1" }),
                &[],
            ))
            .await,
    );
    assert_eq!(status, 202);
    assert!(env.records().await.is_empty());
    let key = StreamKey::new("ride", "r1");
    let head = env.store().load_head(&key).await.unwrap().unwrap();
    let pending: Vec<u64> = head.pending.iter().map(|e| e.version).collect();
    assert_eq!(pending, [1, 2], "both events wait in the outbox");

    let healthy = api(&env);
    let (status, _, _) = read(
        healthy
            .handle(post("/rides/r1/start", &json!({}), &[]))
            .await,
    );
    assert_eq!(status, 200);
    let records = env.records().await;
    assert_eq!(records.len(), 1, "one record carries the whole pending run");
    let events = env.events().await;
    let versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3]);
    let head = env.store().load_head(&key).await.unwrap().unwrap();
    assert!(head.pending.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_sweep_publishes_what_a_failed_publish_left_and_only_that() {
    let env = timeline_testkit::test_env!();
    let broken = CommandApi::new(env.store(), env.broken_log(), SystemClock);
    for id in ["r1", "r2"] {
        let (status, _, _) = read(broken.handle(post("/rides", &booking(id), &[])).await);
        assert_eq!(status, 202);
    }
    let healthy = api(&env);
    book(&healthy, "r3").await;
    assert_eq!(env.records().await.len(), 1);

    let report = healthy.service().sweep(100).await.unwrap();
    assert_eq!(
        (report.examined, report.published, report.failed),
        (2, 2, 0)
    );
    let records = env.records().await;
    let mut keys: Vec<&str> = records.iter().map(|r| r.partition_key.as_str()).collect();
    keys.sort();
    assert_eq!(keys, ["ride#r1", "ride#r2", "ride#r3"]);
    for id in ["r1", "r2"] {
        let head = env
            .store()
            .load_head(&StreamKey::new("ride", id))
            .await
            .unwrap()
            .unwrap();
        assert!(head.pending.is_empty());
    }
    let again = healthy.service().sweep(100).await.unwrap();
    assert_eq!(
        again.examined, 0,
        "the sparse index is empty once published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sequence_numbers_from_the_emulator_are_kept_as_opaque_strings() {
    let env = timeline_testkit::test_env!();
    let api = api(&env);
    book(&api, "r1").await;
    book(&api, "r2").await;
    for r in env.records().await {
        assert!(!r.sequence_number.is_empty());
        assert!(
            r.sequence_number.bytes().all(|b| b.is_ascii_digit()),
            "{}",
            r.sequence_number
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn with_the_stream_relay_a_command_is_answered_once_committed_even_while_the_log_is_down() {
    let env = timeline_testkit::test_env!();
    let config = timeline_core::write::WriteConfig {
        publish: timeline_core::write::PublishMode::Stream,
        ..Default::default()
    };
    // The log is broken: it is never called, so the answers do not notice.
    let api = CommandApi::with_config(env.store(), env.broken_log(), SystemClock, config);
    env.counter.reset();
    let (status, body, _) = read(api.handle(post("/rides", &booking("r1"), &[])).await);
    assert_eq!(status, 201, "{body}");
    // Half the inline path's requests: read the head, commit; nothing to Kinesis.
    let counts = env.counter.snapshot();
    assert_eq!(
        counts,
        [
            ("GetItem".to_owned(), 1),
            ("TransactWriteItems".to_owned(), 1)
        ]
        .into(),
        "{counts:?}"
    );
    assert_eq!(
        (&body["relayed"], &body["published"]),
        (&json!(true), &json!(false))
    );
    let doc = timeline_testkit::openapi::document();
    let schema = json!({ "$ref": "#/components/schemas/CommandOutcome" });
    let mut errors = Vec::new();
    timeline_testkit::openapi::check(&doc, &schema, &body, "answer", &mut errors);
    assert_eq!(errors, Vec::<String>::new());

    let assign = json!({ "driver_id": "d-1" });
    let (status, _, _) = read(
        api.handle(post("/rides/r1/assign-driver", &assign, &[]))
            .await,
    );
    assert_eq!(status, 200);
    assert!(
        env.records().await.is_empty(),
        "the relay publishes, not the handler"
    );
    let head = env.store().load_head(&StreamKey::new("ride", "r1")).await;
    let pending: Vec<u64> = head
        .unwrap()
        .unwrap()
        .pending
        .iter()
        .map(|e| e.version)
        .collect();
    assert_eq!(pending, [1, 2], "committed, waiting for the relay");
}
