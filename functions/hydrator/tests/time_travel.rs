//! The hydrator against moto over HTTP: commands through the real handler, the stream pumped
//! into S3 in Firehose's layout, the read models filled by the real processor; then state,
//! history, rebuild and verify from the log.

mod support;

use hydrator::{Function, HydratorRequest};
use serde_json::{json, Value};
use support::*;
use timeline_aws::archive::S3Archive;
use timeline_core::time::Deadline;
use timeline_core::EventEnvelope;
use timeline_core::StreamKey;
use timeline_core::Timestamp;
use timeline_testkit::{read, scan_sorted, unique};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn archive_only_stream_only_and_both_give_the_same_states_and_histories() {
    let Some(w) = world().await else {
        return;
    };
    let empty_stream = unique("empty");
    timeline_aws::resources::create_stream(w.env.clients.kinesis(), &empty_stream, 1)
        .await
        .unwrap();
    let archive_only = w.hydrator(w.source(&empty_stream, PREFIX));
    let stream_only = w.hydrator(w.source(&w.env.names.event_stream, "nothing-here/"));
    let both = w.full();
    let keys = w.archive_objects().await;
    assert!(keys.len() >= 3, "several archive objects: {keys:?}");
    for key in w.entities() {
        let reference = state(&both, &key, None).await;
        assert_eq!(reference["complete"], true, "{key}: {reference}");
        for (name, h) in [
            ("archive only", &archive_only),
            ("stream only", &stream_only),
        ] {
            assert_eq!(
                state(h, &key, None).await["view"],
                reference["view"],
                "{key} from {name}"
            );
            assert_eq!(
                history(h, &key).await["steps"],
                history(&both, &key).await["steps"],
                "{key} from {name}"
            );
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_as_of_a_time_or_version_is_the_fold_of_exactly_those_events() {
    let Some(w) = world().await else {
        return;
    };
    let h = w.full();
    let mut seed: u64 = 42;
    let mut next = |n: u64| {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (seed >> 33) % n
    };
    let keys = w.entities();
    let first = w.events.iter().map(|e| e.occurred_at).min().unwrap();
    let last = w.events.iter().map(|e| e.occurred_at).max().unwrap();
    let span = (last.as_millis() - first.as_millis()) as u64 + 20;
    for _ in 0..12 {
        let key = &keys[next(keys.len() as u64) as usize];
        let t = first.plus_millis(next(span) as i64 - 10);
        let mut mine: Vec<EventEnvelope> = w
            .events
            .iter()
            .filter(|e| e.stream_key() == *key && e.occurred_at <= t)
            .cloned()
            .collect();
        mine.sort_by_key(|e| e.version);
        mine.dedup_by_key(|e| e.version);
        let expected = match key.aggregate_type.as_str() {
            "ride" => timeline_core::views::fold::<timeline_core::ride::RideAggregate>(&mine)
                .unwrap()
                .map(|(v, _)| serde_json::to_value(v).unwrap()),
            _ => timeline_core::views::fold::<timeline_core::video::VideoAggregate>(&mine)
                .unwrap()
                .map(|(v, _)| serde_json::to_value(v).unwrap()),
        };
        let answer = state(&h, key, Some(t)).await;
        assert_eq!(
            answer["view"],
            expected.clone().unwrap_or(Value::Null),
            "{key} as of {t}"
        );
        if let Some(v) = expected {
            let n = v["version"].as_u64().unwrap();
            let by_version = h
                .handle(
                    HydratorRequest::State {
                        aggregate_type: key.aggregate_type.clone(),
                        aggregate_id: key.aggregate_id.clone(),
                        as_of: None,
                        version: Some(n),
                    },
                    &Deadline::none(),
                )
                .await
                .unwrap();
            assert_eq!(by_version["view"], v, "{key} as of version {n}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_seed_examples_read_right_through_the_api() {
    let Some(w) = world().await else {
        return;
    };
    let h = w.full();
    let get = |path: &str| timeline_testkit::api_request("GET", path, &[], None);
    let (status, body, _) = read(h.handle_http(get("/videos/seed/timeline")).await);
    assert_eq!(status, 200, "{body}");
    let statuses: Vec<&str> = body["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status_after"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["uploaded", "processing", "processing:50%", "failed"]
    );
    assert_eq!(body["steps"][3]["reason"], "timeout");

    let fares: Vec<&EventEnvelope> = w
        .events
        .iter()
        .filter(|e| e.aggregate_id == "fare")
        .collect();
    for (i, expected) in [(0, 9000), (1, 10000), (2, 11000)] {
        let t = fares[i].occurred_at;
        let (status, body, _) = read(
            h.handle_http(get(&format!("/rides/fare/state?as_of={t}")))
                .await,
        );
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["view"]["state"]["fare_cents"], expected, "as of {t}");
        if i < 2 {
            // Just before the next adjustment, still the old fare.
            let before_next = fares[i + 1].occurred_at.plus_millis(-1);
            let (_, body, _) = read(
                h.handle_http(get(&format!("/rides/fare/state?as_of={before_next}")))
                    .await,
            );
            assert_eq!(body["view"]["state"]["fare_cents"], expected);
        }
    }
    let (status, body, _) = read(h.handle_http(get("/rides/fare/state?version=2")).await);
    assert_eq!(
        (status, body["view"]["state"]["fare_cents"].as_i64()),
        (200, Some(10000))
    );
    let before = fares[0].occurred_at.plus_millis(-1);
    let (status, body, _) = read(
        h.handle_http(get(&format!("/rides/fare/state?as_of={before}")))
            .await,
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (404, Some("ride.not_found"))
    );
    let (status, body, _) = read(
        h.handle_http(get("/rides/fare/state?as_of=yesterday"))
            .await,
    );
    assert_eq!(
        (status, body["code"].as_str()),
        (400, Some("invalid_query"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rebuild_restores_deleted_read_models_byte_for_byte_and_verify_sees_drift() {
    let Some(w) = world().await else {
        return;
    };
    let h = w.full();
    let table = &w.env.names.read_model_table;
    let dynamodb = w.env.clients.dynamodb();
    let before = scan_sorted(dynamodb, table).await;

    let healthy = h
        .handle(HydratorRequest::Verify {}, &Deadline::none())
        .await
        .unwrap();
    assert_eq!(healthy["drift"], json!([]), "{healthy}");
    assert_eq!(healthy["entities"], w.entities().len());

    // Delete every read-model item, then rebuild.
    let out = dynamodb.scan().table_name(table).send().await.unwrap();
    for item in out.items() {
        dynamodb
            .delete_item()
            .table_name(table)
            .key("pk", item["pk"].clone())
            .key("sk", item["sk"].clone())
            .send()
            .await
            .unwrap();
    }
    assert!(scan_sorted(dynamodb, table).await.is_empty());
    let report = h
        .handle(
            HydratorRequest::Rebuild {
                target_table: None,
                resume_after: None,
            },
            &Deadline::none(),
        )
        .await
        .unwrap();
    assert_eq!(report["problems"], json!([]), "{report}");
    assert_eq!(
        scan_sorted(dynamodb, table).await,
        before,
        "rebuilt byte for byte"
    );

    // Hand-corrupt one view and delete another: verify reports both, changes nothing.
    dynamodb
        .update_item()
        .table_name(table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("ride#r1".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("view".into()),
        )
        .update_expression("SET #v.#s = :s")
        .expression_attribute_names("#v", "view")
        .expression_attribute_names("#s", "status")
        .expression_attribute_values(
            ":s",
            aws_sdk_dynamodb::types::AttributeValue::S("completed".into()),
        )
        .send()
        .await
        .unwrap();
    dynamodb
        .delete_item()
        .table_name(table)
        .key(
            "pk",
            aws_sdk_dynamodb::types::AttributeValue::S("ride#r2".into()),
        )
        .key(
            "sk",
            aws_sdk_dynamodb::types::AttributeValue::S("view".into()),
        )
        .send()
        .await
        .unwrap();
    let corrupted = scan_sorted(dynamodb, table).await;
    let drift = h
        .handle(HydratorRequest::Verify {}, &Deadline::none())
        .await
        .unwrap();
    let kinds: Vec<(String, String)> = drift["drift"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["kind"].as_str().unwrap().to_owned(),
                d["entity"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        [
            ("different_view".to_owned(), "ride#r1".to_owned()),
            ("missing_view".to_owned(), "ride#r2".to_owned())
        ]
    );
    assert_eq!(
        scan_sorted(dynamodb, table).await,
        corrupted,
        "verify wrote nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_archive_object_is_reported_with_its_key_and_the_rest_still_answers() {
    let Some(w) = world().await else {
        return;
    };
    let keys = w.archive_objects().await;
    let archive = S3Archive::new(
        w.env.clients.s3().clone(),
        &w.env.names.archive_bucket,
        PREFIX,
    );
    // A truncated object next to the good ones, written at the same time.
    let written = timeline_engine::archive::parse_object_key(PREFIX, &keys[0])
        .unwrap()
        .written_at;
    let bad =
        timeline_engine::archive::object_key(PREFIX, "timeline-archive", written, "corrupt", false);
    archive
        .put_object(&bad, b"{\"events\":[{\"event_id\":".to_vec())
        .await
        .unwrap();
    let empty_stream = unique("empty");
    timeline_aws::resources::create_stream(w.env.clients.kinesis(), &empty_stream, 1)
        .await
        .unwrap();
    let h = w.hydrator(w.source(&empty_stream, PREFIX));
    let answer = state(&h, &StreamKey::new("video", "seed"), None).await;
    assert_eq!(answer["view"]["status"], "failed");
    // Every version is there, from the good objects: whole, and the bad object is reported.
    assert_eq!(answer["complete"], true, "{answer}");
    let problems = answer["problems"].as_array().unwrap();
    assert!(
        problems.iter().any(|p| p["location"] == bad.as_str()),
        "{problems:?}"
    );

    // Now the object that held the video's last version is the corrupt one: the answer stops
    // before it and says which version the log could not give.
    let (key, _) = w.object_with_seeds_last().await;
    let last = w.events.iter().filter(|e| e.aggregate_id == "seed").count() as u64;
    archive
        .put_object(&key, b"{\"events\":[{\"event_id\":".to_vec())
        .await
        .unwrap();
    let answer = state(&h, &StreamKey::new("video", "seed"), None).await;
    assert_eq!(answer["complete"], false, "{answer}");
    assert!(
        answer["missing_versions"]
            .as_array()
            .unwrap()
            .contains(&json!(last)),
        "{answer}"
    );
    assert!(answer["view"]["version"].as_u64().unwrap() < last);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_sample_request_is_accepted_by_the_function_its_folder_names() {
    let Some(w) = world().await else {
        return;
    };
    let h = w.full();
    let mut seen = 0;
    for (folder, function) in [
        ("hydrator", Function::Hydrator),
        ("maintenance", Function::Maintenance),
    ] {
        let dir = format!("{}/../../events/{folder}", env!("CARGO_MANIFEST_DIR"));
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        seen += files.len();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            let request: HydratorRequest =
                serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert_eq!(request.function(), function, "{}", file.display());
            let request = match request {
                // The sample names a table that does not exist here; rebuild into a fresh one.
                HydratorRequest::Rebuild {
                    target_table: Some(_),
                    resume_after,
                } => {
                    let fresh = unique("rebuilt");
                    timeline_aws::resources::create_table(
                        w.env.clients.dynamodb(),
                        &fresh,
                        &timeline_aws::resources::read_model_table(),
                    )
                    .await
                    .unwrap();
                    HydratorRequest::Rebuild {
                        target_table: Some(fresh),
                        resume_after,
                    }
                }
                other => other,
            };
            let answer = match function {
                Function::Hydrator => h.travel(request, &Deadline::none()).await,
                Function::Maintenance => h.maintain(request, &Deadline::none()).await,
            }
            .unwrap_or_else(|e| panic!("{}: {e}", file.display()));
            assert!(answer.is_object(), "{}: {answer}", file.display());
        }
    }
    assert_eq!(seen, 9);
}

/// Moves the object holding the seed video's last event to `late` (as Firehose writes an
/// object late after throttling), and reads without the stream tail; with the seed
/// versions the moved object held.
async fn archive_late(w: &World, late: Timestamp) -> (Value, Vec<u64>) {
    let archive = S3Archive::new(
        w.env.clients.s3().clone(),
        &w.env.names.archive_bucket,
        PREFIX,
    );
    let (key, records) = w.object_with_seeds_last().await;
    let mut versions: Vec<u64> = records
        .iter()
        .flat_map(|r| &r.events)
        .filter(|e| e.aggregate_id == "seed")
        .map(|e| e.version)
        .collect();
    versions.sort();
    let bytes = timeline_engine::archive::encode_object(&records, true);
    let new_key =
        timeline_engine::archive::object_key(PREFIX, "timeline-archive", late, "late", true);
    archive.put_object(&new_key, bytes).await.unwrap();
    w.env
        .clients
        .s3()
        .delete_object()
        .bucket(&w.env.names.archive_bucket)
        .key(&key)
        .send()
        .await
        .unwrap();

    let empty_stream = unique("empty");
    timeline_aws::resources::create_stream(w.env.clients.kinesis(), &empty_stream, 1)
        .await
        .unwrap();
    let h = w.hydrator(w.source(&empty_stream, PREFIX));
    (
        state(&h, &StreamKey::new("video", "seed"), None).await,
        versions,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_archived_hours_late_is_still_found() {
    let Some(w) = world().await else {
        return;
    };
    let last = w.events.iter().filter(|e| e.aggregate_id == "seed").count();
    let late = w
        .events
        .iter()
        .map(|e| e.recorded_at)
        .max()
        .unwrap()
        .plus_millis(3 * 3_600_000);
    let (answer, _) = archive_late(&w, late).await;
    assert_eq!(answer["view"]["version"], last, "{answer}");
    assert_eq!(answer["view"]["status"], "failed");
    assert_eq!(answer["complete"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_archived_beyond_any_window_is_reported_missing_not_searched_for() {
    let Some(w) = world().await else {
        return;
    };
    let last = w.events.iter().filter(|e| e.aggregate_id == "seed").count() as u64;
    // Years away: no delivery is that late, and the whole archive is not read to find it.
    let (answer, moved) = archive_late(&w, "2030-01-01T00:00:00Z".parse().unwrap()).await;
    assert!(moved.contains(&last));
    assert_eq!(answer["complete"], false, "{answer}");
    assert_eq!(answer["missing_versions"], json!(moved));
    assert_eq!(answer["view"]["version"], moved[0] - 1);
}
