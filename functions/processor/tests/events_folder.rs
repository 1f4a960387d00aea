//! Every Kinesis batch in `events/kinesis/` (the exact shape Lambda delivers) is decoded
//! with `aws_lambda_events` and projected into DynamoDB (moto over HTTP).

use processor::{KinesisBatch, ProcessorHandler};
use timeline_core::ports::SystemClock;
use timeline_core::ports::{ReadModelQueries, ReadModelStore};
use timeline_core::StreamKey;

fn batch(name: &str) -> KinesisBatch {
    let path = format!("{}/../../events/kinesis/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{path} is not a Kinesis event: {e}"))
}

fn failures(response: &aws_lambda_events::event::streams::KinesisEventResponse) -> Vec<String> {
    response
        .batch_item_failures
        .iter()
        .map(|f| f.item_identifier.clone().expect("no empty identifiers"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_kinesis_batch_in_the_events_folder_is_projected_as_documented() {
    let dir = format!("{}/../../events/kinesis", env!("CARGO_MANIFEST_DIR"));
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [
            "batch-with-duplicate.json",
            "batch.json",
            "poison-record.json",
            "redelivered-batch.json"
        ],
        "a new file here needs its expectations below"
    );

    let env = timeline_testkit::test_env!();
    let h = ProcessorHandler::new(env.read_models(), SystemClock);
    let ride = StreamKey::new("ride", "ride-k1");
    let video = StreamKey::new("video", "video-k1");

    // A clean batch: two entities, 56-digit sequence numbers, nothing to report.
    let first = batch("batch.json");
    assert_eq!(first.records[0].kinesis.sequence_number.len(), 56);
    assert!(failures(&h.handle(first).await).is_empty());
    let view = env.read_models().view(&ride).await.unwrap().unwrap();
    assert_eq!(
        (view["version"].as_u64(), view["status"].as_str()),
        (Some(2), Some("driver_assigned"))
    );
    let after_first = env.read_model_items().await;

    // The same batch again (a redelivery) changes nothing.
    assert!(failures(&h.handle(batch("redelivered-batch.json")).await).is_empty());
    assert_eq!(env.read_model_items().await, after_first);

    // A republished pending run repeats version 1: skipped, nothing changes.
    let outcome = h
        .processor()
        .process(
            &to_records(batch("batch-with-duplicate.json")),
            timeline_core::Timestamp::from_millis(0).unwrap(),
        )
        .await;
    assert_eq!(outcome.stats.duplicates_skipped, 3);
    assert_eq!(outcome.stats.events_applied, 0);
    assert_eq!(env.read_model_items().await, after_first);

    // A poison record parks its entity (nothing for Kinesis to retry); the other entities
    // still apply.
    let fresh = timeline_testkit::test_env!();
    let h = ProcessorHandler::new(fresh.read_models(), SystemClock);
    let poisoned = batch("poison-record.json");
    let poison_seq = poisoned.records[1].kinesis.sequence_number.clone();
    assert!(failures(&h.handle(poisoned).await).is_empty());
    assert!(fresh.read_models().view(&ride).await.unwrap().is_some());
    assert!(fresh.read_models().view(&video).await.unwrap().is_some());
    let parked = fresh.read_models().parked().await.unwrap();
    assert_eq!(parked.len(), 1, "{parked:?}");
    assert_eq!(
        (
            parked[0].entity.as_str(),
            parked[0].sequence_number.as_str()
        ),
        ("ride#ride-bad", poison_seq.as_str())
    );
    assert!(matches!(
        parked[0].reason,
        timeline_core::park::ParkReason::Undecodable { .. }
    ));
}

fn to_records(event: KinesisBatch) -> Vec<timeline_engine::projection::IncomingRecord> {
    event
        .records
        .into_iter()
        .map(processor::batch::BatchRecord::into_incoming)
        .collect()
}
