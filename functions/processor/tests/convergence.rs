//! Property: whatever the command sequence, batch boundaries, redeliveries and transient
//! store failures, the views end equal to the fold of the full event log.
//! Many cases on in-memory ports; a few of the same cases against moto over HTTP.

use processor::ProcessorHandler;
use proptest::prelude::*;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use timeline_aws::stream_reader::StreamRecord;
use timeline_core::codec::encode_record;
use timeline_core::ports::SystemClock;
use timeline_core::ports::{ReadModelError, ReadModelQueries, ReadModelStore, ViewWrite};
use timeline_core::ride::{CancelledBy, Location, RideAggregate, RideCommand};
use timeline_core::video::{VideoAggregate, VideoCommand};
use timeline_core::views::fold;
use timeline_core::write::{CommandRequest, RequestContext};
use timeline_core::EventEnvelope;
use timeline_core::StreamKey;
use timeline_engine::memory::{MemoryLog, MemoryReadModels, MemoryStore};
use timeline_engine::write::CommandService;
use timeline_testkit::faults::WriteCheck;
use timeline_testkit::{by_value, kinesis_event};

#[derive(Debug, Clone)]
enum Op {
    Ride(usize, u8),
    Video(usize, u8),
}

fn ops() -> impl Strategy<Value = Vec<Op>> {
    prop::collection::vec(
        prop_oneof![
            (0..6usize, 0..8u8).prop_map(|(e, c)| Op::Ride(e, c)),
            (0..4usize, 0..6u8).prop_map(|(e, c)| Op::Video(e, c)),
        ],
        1..80,
    )
}

fn place(n: u8) -> Location {
    Location {
        address: format!("{n} Main St"),
        lat: 52.0 + f64::from(n) / 100.0,
        lon: 13.0,
    }
}

fn ride_command(c: u8, n: usize) -> RideCommand {
    match c {
        0 => RideCommand::Book {
            rider_id: format!("rider-{}", n % 3),
            pickup: place(0),
            dropoff: place(1),
            fare_estimate_cents: Some(9000),
        },
        1 => RideCommand::AssignDriver {
            driver_id: format!("driver-{}", n % 4),
        },
        2 => RideCommand::Start,
        3 => RideCommand::ChangeDestination {
            dropoff: place((n % 7 + 2) as u8),
        },
        4 => RideCommand::AdjustFare {
            fare_cents: 9000 + (n as i64 % 5) * 500,
            reason: "surge".into(),
        },
        5 => RideCommand::Complete {
            final_fare_cents: 12000,
            distance_km: 9.5,
        },
        _ => RideCommand::Cancel {
            by: CancelledBy::Rider,
            reason: "late".into(),
        },
    }
}

fn video_command(c: u8, n: usize) -> VideoCommand {
    match c {
        0 => VideoCommand::Upload {
            title: "clip".into(),
            source_uri: "s3://in/clip.mp4".into(),
            uploaded_by: None,
        },
        1 => VideoCommand::StartProcessing,
        2 | 3 => VideoCommand::ReportProgress {
            percent: (n % 101) as u8,
        },
        4 => VideoCommand::Succeed { output_uri: None },
        _ => VideoCommand::Fail {
            error: "timeout".into(),
        },
    }
}

/// Runs the commands (refusals are part of life) and returns the log as stream records.
async fn run_commands(ops: &[Op]) -> Vec<StreamRecord> {
    let log = MemoryLog::default();
    let service = CommandService::new(MemoryStore::default(), log.clone(), SystemClock);
    for (n, op) in ops.iter().enumerate() {
        let context = RequestContext {
            caller: None,
            actor: "prop".into(),
            ..Default::default()
        };
        // Refused commands are part of the workload; only accepted ones reach the log.
        match op {
            Op::Ride(e, c) => service
                .execute::<RideAggregate>(CommandRequest {
                    aggregate_id: format!("r{e}"),
                    command: ride_command(*c, n),
                    expected_version: None,
                    idempotency: None,
                    context,
                })
                .await
                .map_or((), |_| ()),
            Op::Video(e, c) => service
                .execute::<VideoAggregate>(CommandRequest {
                    aggregate_id: format!("v{e}"),
                    command: video_command(*c, n),
                    expected_version: None,
                    idempotency: None,
                    context,
                })
                .await
                .map_or((), |_| ()),
        }
    }
    log.records()
        .iter()
        .enumerate()
        .map(|(i, r)| StreamRecord {
            shard_id: "shardId-000000000000".into(),
            // 56-digit, like real ones.
            sequence_number: format!("4959{:052}", i + 1),
            partition_key: r.partition_key().unwrap(),
            data: encode_record(r),
            approximate_arrival_millis: None,
        })
        .collect()
}

fn expected(records: &[StreamRecord]) -> BTreeMap<StreamKey, serde_json::Value> {
    let mut per: BTreeMap<StreamKey, Vec<EventEnvelope>> = BTreeMap::new();
    for r in records {
        for e in timeline_core::codec::decode_record(&r.data).unwrap().events {
            per.entry(e.stream_key()).or_default().push(e);
        }
    }
    per.into_iter()
        .map(|(k, mut events)| {
            events.sort_by_key(|e| e.version);
            events.dedup_by_key(|e| e.version);
            let v = if k.aggregate_type == "ride" {
                serde_json::to_value(fold::<RideAggregate>(&events).unwrap().unwrap().0)
            } else {
                serde_json::to_value(fold::<VideoAggregate>(&events).unwrap().unwrap().0)
            };
            (k, v.unwrap())
        })
        .collect()
}

/// Fails every `every`th write, as a flaky table would.
fn flaky<R: ReadModelStore>(inner: R, every: u64) -> impl ReadModelStore {
    let calls = AtomicU64::new(0);
    WriteCheck {
        inner,
        check: move |_: &ViewWrite| {
            let n = calls.fetch_add(1, Ordering::SeqCst);
            std::future::ready(
                (every > 0 && n % every == every - 1)
                    .then(|| ReadModelError::Unavailable("flaky".into())),
            )
        },
    }
}

/// The event source mapping, played by a script: random batch sizes, a redelivery of the
/// same batch now and then, and a retry from the reported record after a failure.
async fn deliver_all<R: ReadModelStore>(
    h: &ProcessorHandler<R, SystemClock>,
    records: &[StreamRecord],
    sizes: &[usize],
    redeliver: &[bool],
) {
    let mut start = 0;
    let mut step = 0;
    let mut guard = 0;
    while start < records.len() {
        guard += 1;
        assert!(guard < 10_000, "never drained");
        let size = sizes[step % sizes.len()].max(1);
        let end = (start + size).min(records.len());
        let batch = &records[start..end];
        let response = h
            .handle(kinesis_event(
                batch,
                "arn:aws:kinesis:us-east-1:000000000000:stream/p",
            ))
            .await;
        if redeliver[step % redeliver.len()] {
            h.handle(kinesis_event(
                batch,
                "arn:aws:kinesis:us-east-1:000000000000:stream/p",
            ))
            .await;
        }
        step += 1;
        match response.batch_item_failures.first() {
            None => start = end,
            Some(f) => {
                let seq = f.item_identifier.as_deref().expect("an identifier");
                let at = batch
                    .iter()
                    .position(|r| r.sequence_number == seq)
                    .expect("from this batch");
                start += at;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn views_always_equal_the_fold_of_the_log(
        ops in ops(),
        sizes in prop::collection::vec(1..12usize, 1..6),
        redeliver in prop::collection::vec(any::<bool>(), 1..6),
        fail_every in prop_oneof![Just(0u64), 2..6u64],
    ) {
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(async {
            let records = run_commands(&ops).await;
            let models = MemoryReadModels::default();
            let h = ProcessorHandler::new(flaky(models.clone(), fail_every), SystemClock);
            deliver_all(&h, &records, &sizes, &redeliver).await;
            let views: BTreeMap<StreamKey, serde_json::Value> = models.views();
            prop_assert_eq!(views, expected(&records));
            Ok(())
        })?;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_property_holds_against_dynamodb_in_moto() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    for _ in 0..4 {
        let ops = ops().new_tree(&mut runner).unwrap().current();
        let sizes = prop::collection::vec(1..12usize, 1..6)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let redeliver = prop::collection::vec(any::<bool>(), 1..6)
            .new_tree(&mut runner)
            .unwrap()
            .current();
        let records = run_commands(&ops).await;
        let env = timeline_testkit::test_env!();
        let h = ProcessorHandler::new(flaky(env.read_models(), 3), SystemClock);
        deliver_all(&h, &records, &sizes, &redeliver).await;
        let models = env.read_models();
        for (key, view) in expected(&records) {
            let stored = models.view(&key).await.unwrap();
            assert_eq!(
                stored.as_ref().map(by_value),
                Some(by_value(&view)),
                "{key}"
            );
        }
    }
}
