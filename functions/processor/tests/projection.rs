//! The processor against moto over HTTP: commands go through the real command handler, the
//! stream is read back with GetRecords and fed to the processor as the Kinesis events Lambda
//! delivers, and the read models are checked, also under redelivery, retries and poison.

use command_handler::CommandApi;
use processor::ProcessorHandler;
use serde_json::{json, Value};
use timeline_aws::read_models::DynamoReadModels;
use timeline_aws::stream_reader::StreamRecord;
use timeline_core::park::ParkReason;
use timeline_core::ports::SystemClock;
use timeline_core::ports::{
    Lookup, LookupKind, PageRequest, ReadModelError, ReadModelQueries, ReadModelStore, ViewWrite,
};
use timeline_core::ride::RideAggregate;
use timeline_core::video::VideoAggregate;
use timeline_core::views::fold;
use timeline_core::EventEnvelope;
use timeline_core::StreamKey;
use timeline_engine::park::{redrive, RedriveReport};
use timeline_testkit::faults::WriteCheck;
use timeline_testkit::{by_value, kinesis_event, post, read, TestEnv};

const ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/test";

fn location(address: &str, lat: f64) -> Value {
    json!({ "address": address, "lat": lat, "lon": 13.4 })
}

/// A small workload: three rides through their lifecycles and the seed video.
async fn workload(env: &TestEnv) {
    let api = CommandApi::new(env.store(), env.log(), SystemClock);
    let mut send = Vec::new();
    for (ride, rider) in [("r1", "alice"), ("r2", "alice"), ("r3", "bob")] {
        send.push((
            "/rides".to_owned(),
            json!({ "id": ride, "rider_id": rider, "pickup": location("A", 52.5), "dropoff": location("B", 52.6), "fare_estimate_cents": 9000 }),
        ));
    }
    let ride_steps = [
        ("r1", "assign-driver", json!({ "driver_id": "d1" })),
        ("r1", "start", json!({})),
        (
            "r1",
            "adjust-fare",
            json!({ "fare_cents": 10000, "reason": "detour" }),
        ),
        (
            "r1",
            "adjust-fare",
            json!({ "fare_cents": 11000, "reason": "toll" }),
        ),
        (
            "r1",
            "complete",
            json!({ "final_fare_cents": 11000, "distance_km": 8.2 }),
        ),
        ("r2", "assign-driver", json!({ "driver_id": "d1" })),
        ("r2", "start", json!({})),
        (
            "r3",
            "cancel",
            json!({ "by": "rider", "reason": "changed plans" }),
        ),
    ];
    for (ride, command, body) in ride_steps {
        send.push((format!("/rides/{ride}/{command}"), body));
    }
    send.push((
        "/videos".into(),
        json!({ "id": "v1", "title": "Keynote", "source_uri": "s3://in/k.mp4" }),
    ));
    for (command, body) in [
        ("start-processing", json!({})),
        ("progress", json!({ "percent": 50 })),
        ("fail", json!({ "error": "timeout" })),
    ] {
        send.push((format!("/videos/v1/{command}"), body));
    }
    for (path, body) in send {
        let (status, answer, _) = read(api.handle(post(&path, &body, &[])).await);
        assert!(status == 200 || status == 201, "{path}: {status} {answer}");
    }
}

fn handler(env: &TestEnv) -> ProcessorHandler<DynamoReadModels, SystemClock> {
    ProcessorHandler::new(env.read_models(), SystemClock)
}

async fn deliver<R: ReadModelStore>(
    h: &ProcessorHandler<R, SystemClock>,
    records: &[StreamRecord],
) -> Option<String> {
    let response = h.handle(kinesis_event(records, ARN)).await;
    assert!(response.batch_item_failures.len() <= 1);
    response.batch_item_failures.first().map(|f| {
        f.item_identifier
            .clone()
            .expect("never an empty identifier")
    })
}

/// Delivers a shard's records as the event source mapping would, retrying from the
/// reported sequence number until the shard is drained.
async fn drain<R: ReadModelStore>(
    h: &ProcessorHandler<R, SystemClock>,
    records: &[StreamRecord],
    batch: usize,
) {
    let mut start = 0;
    let mut attempts = 0;
    while start < records.len() {
        attempts += 1;
        assert!(attempts < 100, "the shard never drained");
        let end = (start + batch).min(records.len());
        match deliver(h, &records[start..end]).await {
            None => start = end,
            Some(seq) => {
                start = records
                    .iter()
                    .position(|r| r.sequence_number == seq)
                    .expect("a sequence number of the batch");
            }
        }
    }
}

fn by_shard(records: Vec<StreamRecord>) -> Vec<Vec<StreamRecord>> {
    let mut shards: std::collections::BTreeMap<String, Vec<StreamRecord>> = Default::default();
    for r in records {
        shards.entry(r.shard_id.clone()).or_default().push(r);
    }
    shards.into_values().collect()
}

async fn expected_views(env: &TestEnv) -> std::collections::BTreeMap<String, Value> {
    let mut per: std::collections::BTreeMap<StreamKey, Vec<EventEnvelope>> = Default::default();
    for e in env.events().await {
        per.entry(e.stream_key()).or_default().push(e);
    }
    per.into_iter()
        .map(|(key, mut events)| {
            events.sort_by_key(|e| e.version);
            events.dedup_by_key(|e| e.version);
            let view = match key.aggregate_type.as_str() {
                "ride" => serde_json::to_value(fold::<RideAggregate>(&events).unwrap().unwrap().0),
                _ => serde_json::to_value(fold::<VideoAggregate>(&events).unwrap().unwrap().0),
            };
            (key.to_string(), by_value(&view.unwrap()))
        })
        .collect()
}

async fn actual_views(env: &TestEnv) -> std::collections::BTreeMap<String, Value> {
    let models = env.read_models();
    let mut out = std::collections::BTreeMap::new();
    for key in expected_views(env).await.keys() {
        let key = StreamKey::parse_partition_key(key).unwrap();
        if let Some(v) = models.view(&key).await.unwrap() {
            out.insert(key.to_string(), by_value(&v));
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_through_the_stream_become_views_lookups_and_history() {
    let env = timeline_testkit::test_env!();
    workload(&env).await;
    let h = handler(&env);
    for shard in by_shard(env.records().await) {
        drain(&h, &shard, 100).await;
    }
    assert_eq!(actual_views(&env).await, expected_views(&env).await);

    let models = env.read_models();
    let r1 = models
        .view(&StreamKey::new("ride", "r1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(r1["status"], "completed");
    assert_eq!(r1["version"], 6);
    assert_eq!(r1["state"]["fare_cents"], 11000);
    assert!(
        r1["steps"]["RideStarted"].is_string(),
        "timestamps of each step: {r1}"
    );
    let v1 = models
        .view(&StreamKey::new("video", "v1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v1["status"], "failed");
    assert_eq!(v1["state"]["failure_reason"], "timeout");

    let page = |limit| PageRequest {
        limit,
        cursor: None,
    };
    let lookup = |kind, value: &str| Lookup {
        aggregate_type: "ride".into(),
        kind,
        value: value.into(),
    };
    let alice = models
        .list(&lookup(LookupKind::Rider, "alice"), &page(10))
        .await
        .unwrap();
    let ids: Vec<&str> = alice
        .items
        .iter()
        .map(|v| v["aggregate_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r2", "r1"], "newest first");
    let d1 = models
        .list(&lookup(LookupKind::Driver, "d1"), &page(10))
        .await
        .unwrap();
    assert_eq!(d1.items.len(), 2);
    let moving = models
        .list(&lookup(LookupKind::Status, "in_progress"), &page(10))
        .await
        .unwrap();
    let ids: Vec<&str> = moving
        .items
        .iter()
        .map(|v| v["aggregate_id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, ["r2"]);

    let history = models
        .history(&StreamKey::new("video", "v1"), None, None, &page(50))
        .await
        .unwrap();
    let statuses: Vec<&str> = history
        .items
        .iter()
        .map(|e| e.status_after.as_str())
        .collect();
    assert_eq!(
        statuses,
        ["uploaded", "processing", "processing:50%", "failed"]
    );
    assert_eq!(history.items[3].data["error"], "timeout");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_delivered_three_times_or_overlapping_leaves_the_same_bytes_as_once() {
    let once = timeline_testkit::test_env!();
    workload(&once).await;
    let records = once.records().await;
    let h = handler(&once);
    for shard in by_shard(records.clone()) {
        drain(&h, &shard, 100).await;
    }
    let reference = once.read_model_items().await;

    let h_again = handler(&once);
    for shard in by_shard(records.clone()) {
        for _ in 0..3 {
            assert_eq!(deliver(&h_again, &shard).await, None);
        }
        // Overlapping windows, as after a split or a retry from the middle.
        for start in 0..shard.len() {
            let end = (start + 4).min(shard.len());
            assert_eq!(deliver(&h_again, &shard[start..end]).await, None);
        }
    }
    assert_eq!(
        once.read_model_items().await,
        reference,
        "redelivery changed nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_mid_batch_reports_its_sequence_number_and_a_retry_from_there_converges() {
    let env = timeline_testkit::test_env!();
    workload(&env).await;
    let records = env.records().await;
    // The shard holding r2, and r2's first record in it.
    let shard: Vec<StreamRecord> = by_shard(records)
        .into_iter()
        .find(|s| s.iter().any(|r| r.partition_key == "ride#r2"))
        .unwrap();
    let first_r2 = shard
        .iter()
        .position(|r| r.partition_key == "ride#r2")
        .unwrap();
    // The first write of r2 fails, as a throttled or unavailable table would.
    let victim = StreamKey::new("ride", "r2");
    let tripped = std::sync::atomic::AtomicBool::new(false);
    let h = ProcessorHandler::new(
        WriteCheck {
            inner: env.read_models(),
            check: move |w: &ViewWrite| {
                std::future::ready(
                    (w.key == victim && !tripped.swap(true, std::sync::atomic::Ordering::SeqCst))
                        .then(|| ReadModelError::Unavailable("injected".into())),
                )
            },
        },
        SystemClock,
    );
    let failed = deliver(&h, &shard).await;
    assert_eq!(
        failed.as_deref(),
        Some(shard[first_r2].sequence_number.as_str())
    );
    // Everything else in the batch was applied anyway.
    let models = env.read_models();
    for r in &shard {
        if r.partition_key != "ride#r2" {
            let key = StreamKey::parse_partition_key(&r.partition_key).unwrap();
            assert!(models.view(&key).await.unwrap().is_some(), "{key} applied");
        }
    }
    assert!(models
        .view(&StreamKey::new("ride", "r2"))
        .await
        .unwrap()
        .is_none());
    // Kinesis redelivers from the reported record.
    assert_eq!(deliver(&h, &shard[first_r2..]).await, None);
    let expected = expected_views(&env).await;
    let actual = actual_views(&env).await;
    for (key, view) in &actual {
        assert_eq!(Some(view), expected.get(key), "{key}");
    }
}

fn poison(shard: &[StreamRecord], at: usize, data: &[u8], key: &str) -> Vec<StreamRecord> {
    let mut out = shard.to_vec();
    let mut bad = shard[at].clone();
    bad.data = data.to_vec();
    bad.partition_key = key.into();
    // A sequence number between its neighbours' (opaque, but longer sorts later here).
    bad.sequence_number = format!("{}5", shard[at].sequence_number);
    out.insert(at + 1, bad);
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_that_can_never_apply_parks_its_entity_and_the_others_go_on() {
    let env = timeline_testkit::test_env!();
    workload(&env).await;
    let records = env.records().await;
    let h = handler(&env);
    let models = env.read_models();
    for shard in by_shard(records) {
        // Nothing for Kinesis to retry: the entity is parked, the shard goes on.
        let batch = poison(&shard, 0, b"{not json", "ride#ghost");
        assert_eq!(deliver(&h, &batch).await, None);
    }
    assert_eq!(actual_views(&env).await, expected_views(&env).await);
    let parked = models.parked().await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(parked[0].entity, "ride#ghost");
    assert!(matches!(parked[0].reason, ParkReason::Undecodable { .. }));

    // An unknown entity type, and a version that skips ahead (a gap), park the same way.
    let shard = &by_shard(env.records().await)[0];
    let mut unknown: Value = serde_json::from_slice(&shard[0].data).unwrap();
    for e in unknown["events"].as_array_mut().unwrap() {
        e["aggregate_type"] = json!("boat");
    }
    let id = unknown["events"][0]["aggregate_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let batch = poison(
        shard,
        0,
        unknown.to_string().as_bytes(),
        &format!("boat#{id}"),
    );
    assert_eq!(deliver(&h, &batch[1..2]).await, None);
    let mut gap: Value = serde_json::from_slice(&shard[0].data).unwrap();
    let key = format!(
        "{}#{}",
        gap["events"][0]["aggregate_type"].as_str().unwrap(),
        gap["events"][0]["aggregate_id"].as_str().unwrap()
    );
    for e in gap["events"].as_array_mut().unwrap() {
        e["version"] = json!(e["version"].as_u64().unwrap() + 50);
    }
    let batch = poison(shard, 0, gap.to_string().as_bytes(), &key);
    // Delivered twice (a redelivery): parked once, both deliveries counted as set aside.
    assert_eq!(deliver(&h, &batch[1..2]).await, None);
    assert_eq!(deliver(&h, &batch[1..2]).await, None);
    let parked = models.parked().await.unwrap();
    let reasons: Vec<(&str, &ParkReason, u64)> = parked
        .iter()
        .map(|p| (p.entity.as_str(), &p.reason, p.set_aside))
        .collect();
    assert_eq!(parked.len(), 3, "{reasons:?}");
    let gapped = models.parked_entity(&key).await.unwrap().unwrap();
    assert!(
        matches!(gapped.reason, ParkReason::Gap { .. }),
        "{gapped:?}"
    );
    assert_eq!(gapped.set_aside, 2);
    assert_eq!(
        models
            .parked_entity(&format!("boat#{id}"))
            .await
            .unwrap()
            .unwrap()
            .reason,
        ParkReason::UnknownType {
            aggregate_type: "boat".into()
        }
    );

    // The gapped entity's view holds every version the log has: a redrive reads the log,
    // finds nothing missing, and ends the parking. The others stay parked, and say why.
    let source = timeline_aws::event_source::aws_event_source(
        timeline_aws::archive::S3Archive::new(
            env.clients.s3().clone(),
            &env.names.archive_bucket,
            "events/",
        ),
        env.clients.kinesis().clone(),
        &env.names.event_stream,
        Some(env.read_models()),
        Some(env.store()),
    );
    let redriver = timeline_engine::projection::Processor::for_redrive(env.read_models());
    let now = timeline_core::ports::Clock::now(&SystemClock);
    let deadline = timeline_core::time::Deadline::none();
    let report = redrive(&source, &redriver, &key, now, &deadline)
        .await
        .unwrap();
    assert!(report.unparked, "{report:?}");
    assert_eq!(report.view_version, report.latest_version.unwrap());
    assert!(models.parked_entity(&key).await.unwrap().is_none());
    assert!(matches!(
        redrive(&source, &redriver, "boat#x", now, &deadline).await,
        Ok(RedriveReport { parked: None, .. })
    ));
    // No processor projects boats: it stays parked, and says why.
    let boat = redrive(&source, &redriver, &format!("boat#{id}"), now, &deadline)
        .await
        .unwrap();
    assert!(!boat.unparked);
    assert!(matches!(boat.still, Some(ParkReason::UnknownType { .. })));
    // The ghost never had an event: its (empty) view is whole, its parking ends.
    assert!(
        redrive(&source, &redriver, "ride#ghost", now, &deadline)
            .await
            .unwrap()
            .unparked
    );
    let left: Vec<String> = models
        .parked()
        .await
        .unwrap()
        .into_iter()
        .map(|p| p.entity)
        .collect();
    assert_eq!(left, [format!("boat#{id}")]);
}
