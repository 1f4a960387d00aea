//! The local runner's followers of the log (the event source mapping into the processor and
//! the archive pump) and `replay-archive`, as AWS serves the stream: through a reshard
//! (a split and a merge, one ride's records on a closed parent and its children), with empty
//! pages, expiring iterators, throttling and failures on the way. Nothing is lost, nothing
//! is applied out of order, nothing is sent to the on-failure destination.

use serde_json::json;
use std::collections::{BTreeMap, BTreeSet};
use timeline_aws::archive::S3Archive;
use timeline_aws::pump::{FirehosePump, PumpConfig};
use timeline_aws::stream_reader::KinesisReader;
use timeline_core::ports::ArchiveStore;
use timeline_core::ports::ReadModelQueries;
use timeline_core::ports::{StreamReader, SystemClock, WriteModelStore};
use timeline_core::shards::lineage;
use timeline_core::StreamKey;
use timeline_embedded::Embedded;
use timeline_engine::projection::Processor;
use timeline_engine::pump::{Pump, StreamPump};
use timeline_local::esm::{EventSourceMapping, MappingConfig};
use timeline_local::operate::replay_archive;
use timeline_local::system::{FailureFile, ProcessorFunction};
use timeline_testkit::faults::{Faults, Faulty, Schedule};
use timeline_testkit::{post, read, tempdir, unique};

fn place(a: &str) -> serde_json::Value {
    json!({ "address": a, "lat": 53.34, "lon": -6.25 })
}

/// Commands through the real handler; every answer 200 or 201.
async fn run<S, L>(
    api: &command_handler::CommandApi<S, L, SystemClock>,
    steps: &[(String, serde_json::Value)],
) where
    S: WriteModelStore + 'static,
    L: timeline_core::ports::EventLog + 'static,
{
    for (path, body) in steps {
        let (status, answer, _) = read(api.handle(post(path, body, &[])).await);
        assert!(status == 200 || status == 201, "{path}: {status} {answer}");
    }
}

fn book(ids: impl IntoIterator<Item = String>) -> Vec<(String, serde_json::Value)> {
    ids.into_iter()
        .map(|id| {
            (
                "/rides".to_owned(),
                json!({ "id": id, "rider_id": "rider-1", "pickup": place("A"), "dropoff": place("B"), "fare_estimate_cents": 1000 }),
            )
        })
        .collect()
}

fn adjust(ids: &[String], fare: i64) -> Vec<(String, serde_json::Value)> {
    ids.iter()
        .map(|id| {
            (
                format!("/rides/{id}/adjust-fare"),
                json!({ "fare_cents": fare, "reason": format!("to {fare}") }),
            )
        })
        .collect()
}

/// Polls the mapping until it is drained, riding out failed polls (the runner logs them and
/// polls again).
async fn drain<R, H, S>(esm: &mut EventSourceMapping<R, H, S>) -> usize
where
    R: StreamReader,
    H: timeline_local::esm::BatchHandler,
    S: timeline_local::esm::FailureSink,
{
    let mut failed_polls = 0;
    let mut quiet = 0;
    for _ in 0..5_000 {
        match esm.poll().await {
            Ok(r) if r.busy() => quiet = 0,
            Ok(_) => {
                quiet += 1;
                if quiet == 3 {
                    return failed_polls;
                }
            }
            Err(_) => failed_polls += 1,
        }
    }
    panic!("the mapping never drained");
}

/// Polls the pump until a poll succeeds with nothing new, then flushes (retrying failures).
async fn pump_all(pump: &mut impl Pump) {
    for _ in 0..1_000 {
        if let Ok(report) = pump.poll().await {
            if report.records_read == 0 {
                break;
            }
        }
    }
    for _ in 0..1_000 {
        if pump.flush().await.is_ok() {
            return;
        }
    }
    panic!("the pump never delivered");
}

/// Each entity's versions in these log records.
fn versions_of<'a>(records: impl Iterator<Item = &'a [u8]>) -> BTreeMap<String, BTreeSet<u64>> {
    let mut by_entity: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    for data in records {
        for e in timeline_core::codec::decode_record(data).unwrap().events {
            by_entity
                .entry(e.stream_key().to_string())
                .or_default()
                .insert(e.version);
        }
    }
    by_entity
}

/// Each entity's versions in the archive, and how many copies there are of all of them.
async fn archived<A: ArchiveStore>(archive: &A) -> (BTreeMap<String, BTreeSet<u64>>, usize) {
    let mut by_entity: BTreeMap<String, BTreeSet<u64>> = BTreeMap::new();
    let mut copies = 0;
    for key in archive.list_keys(None, None).await.unwrap() {
        for record in archive.read_object(&key).await.unwrap() {
            for e in record.events {
                copies += 1;
                by_entity
                    .entry(e.stream_key().to_string())
                    .or_default()
                    .insert(e.version);
            }
        }
    }
    (by_entity, copies)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_mapping_and_the_pump_follow_a_split_and_a_merge_in_order_through_faults() {
    let (env, proxy) = timeline_testkit::proxy_env!();
    let api = command_handler::CommandApi::new(env.store(), env.log(), SystemClock);
    let dir = tempdir("followers");
    let failures = dir.path().join("failed.jsonl");
    let mut esm = EventSourceMapping::new(
        KinesisReader::new(env.clients.kinesis().clone(), &env.names.event_stream),
        ProcessorFunction(Processor::new(env.read_models())),
        FailureFile::new(failures.clone()),
        MappingConfig {
            batch_size: 3,
            ..MappingConfig::default()
        },
    );
    let archive = S3Archive::new(
        env.clients.s3().clone(),
        &env.names.archive_bucket,
        "events/",
    );
    let mut config = PumpConfig::new("timeline-archive");
    config.buffer_bytes = 2_000;
    let mut pump = FirehosePump::new(
        env.clients.kinesis().clone(),
        &env.names.event_stream,
        archive.clone(),
        config,
    );
    let reads_fail = Faults {
        empty_page: 0.3,
        expire_iterator: 0.1,
        throttle: 0.2,
        server_error: 0.1,
        only: vec![
            "GetRecords".into(),
            "GetShardIterator".into(),
            "ListShards".into(),
        ],
        ..Faults::none()
    };

    let rides: Vec<String> = (0..8).map(|i| format!("r{i}")).collect();
    run(&api, &book(rides.clone())).await;
    run(&api, &adjust(&rides, 1100)).await;
    proxy.set(reads_fail.clone());
    drain(&mut esm).await;
    pump_all(&mut pump).await;

    // Split the shard that holds r0 at r0's hash, and go on writing.
    proxy.set(Faults::none());
    let reader = KinesisReader::new(env.clients.kinesis().clone(), &env.names.event_stream);
    let hash = reader.key_hash("ride#r0");
    let parent = env.split_at("ride#r0").await;
    run(&api, &adjust(&rides, 1200)).await;
    // Merge the children back, and go on writing.
    env.merge_children(&parent).await;
    run(&api, &adjust(&rides, 1300)).await;
    assert_eq!(lineage(&reader.shards().await.unwrap(), hash).len(), 3);

    // The followers catch up through faults, a parent before its children.
    proxy.set(reads_fail);
    let failed_polls = drain(&mut esm).await;
    pump_all(&mut pump).await;
    proxy.set(Faults::none());
    assert!(proxy.injected().values().sum::<usize>() > 0);
    eprintln!(
        "failed polls: {failed_polls}; faults: {:?}",
        proxy.injected()
    );

    assert!(
        !failures.exists() || std::fs::read_to_string(&failures).unwrap().is_empty(),
        "nothing was sent to the on-failure destination: {:?}",
        std::fs::read_to_string(&failures)
    );
    for id in &rides {
        let key = StreamKey::new("ride", id);
        let head = env.store().load_head(&key).await.unwrap().unwrap();
        let view = env.read_models().view(&key).await.unwrap().unwrap();
        assert_eq!(
            view["version"], head.version,
            "{key}: every version, in order"
        );
        assert_eq!(view["state"]["fare_cents"], 1300);
        let history = env
            .read_models()
            .history(
                &key,
                None,
                None,
                &timeline_core::ports::PageRequest {
                    limit: 100,
                    cursor: None,
                },
            )
            .await
            .unwrap();
        assert_eq!(history.items.len() as u64, head.version);
    }
    let (by_entity, copies) = archived(&archive).await;
    assert_eq!(by_entity.len(), rides.len());
    for versions in by_entity.values() {
        assert_eq!(versions, &(1..=4).collect::<BTreeSet<u64>>());
    }
    assert_eq!(copies, rides.len() * 4, "each event archived once");

    // replay-archive from S3 into a new stream through faults (throttled and failed puts,
    // failed reads, listings in small pages): run again until it gets through, and the new
    // stream holds every record.
    let fresh = unique("replayed");
    timeline_aws::resources::create_stream(env.clients.kinesis(), &fresh, 2)
        .await
        .unwrap();
    let log = timeline_aws::KinesisEventLog::new(env.clients.kinesis().clone(), &fresh);
    proxy.set(Faults {
        throttle: 0.2,
        server_error: 0.1,
        lost_answer: 0.1,
        s3_page: Some(2),
        only: vec![
            "PutRecord".into(),
            "GetObject".into(),
            "ListObjectsV2".into(),
        ],
        ..Faults::none()
    });
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs < 20, "replay-archive never got through");
        if replay_archive(&archive, &log, None, None, &mut |_, _| {})
            .await
            .is_ok()
        {
            break;
        }
    }
    proxy.set(Faults::none());
    let records = timeline_aws::stream_reader::read_all(env.clients.kinesis(), &fresh)
        .await
        .unwrap();
    assert_eq!(
        versions_of(records.iter().map(|r| r.data.as_slice())),
        by_entity,
        "after {runs} runs"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_backend_the_followers_lose_nothing_under_faults() {
    let dir = tempdir("followers-embedded");
    let db = Embedded::open(dir.path()).unwrap();
    let api = command_handler::CommandApi::new(db.clone(), db.clone(), SystemClock);
    let rides: Vec<String> = (0..12).map(|i| format!("e{i}")).collect();
    run(&api, &book(rides.clone())).await;
    for fare in [1100, 1200, 1300] {
        run(&api, &adjust(&rides, fare)).await;
    }
    // Faults on the log and the archive (the readers' side; the processor's own writes
    // under faults are its own suite's).
    let schedule = Schedule::new(11, Faults::all(0.3));
    let failures = dir.path().join("failed.jsonl");
    let mut esm = EventSourceMapping::new(
        Faulty::new(db.clone(), schedule.clone()),
        ProcessorFunction(Processor::new(db.clone())),
        FailureFile::new(failures.clone()),
        MappingConfig {
            batch_size: 5,
            ..MappingConfig::default()
        },
    );
    let archive = db.archive("events/");
    let mut config = PumpConfig::new("timeline-archive");
    config.buffer_bytes = 3_000;
    let mut pump = StreamPump::new(
        Faulty::new(db.clone(), schedule.clone()),
        "log",
        Faulty::new(archive.clone(), schedule.clone()),
        config,
    );
    drain(&mut esm).await;
    pump_all(&mut pump).await;
    assert!(schedule.injected().values().sum::<usize>() > 0);
    assert!(
        !failures.exists() || std::fs::read_to_string(&failures).unwrap().is_empty(),
        "a failed read is tried again, never a reason to discard"
    );
    for id in &rides {
        let key = StreamKey::new("ride", id);
        let view = db.view(&key).await.unwrap().unwrap();
        assert_eq!(view["version"], 4, "{key}");
        assert_eq!(view["state"]["fare_cents"], 1300);
    }
    let (by_entity, _) = archived(&archive).await;
    assert_eq!(by_entity.len(), rides.len());
    assert!(by_entity
        .values()
        .all(|v| v == &(1..=4).collect::<BTreeSet<u64>>()));

    // replay-archive into a new data directory, with faults on the way: an interrupted run
    // is run again, and the new log then holds every record (copies are skipped by readers).
    let into = tempdir("followers-replayed");
    let fresh = Embedded::open(into.path()).unwrap();
    schedule.set(Faults::all(0.15));
    let faulty_log = Faulty::new(fresh.clone(), schedule.clone());
    let faulty_archive = Faulty::new(archive.clone(), schedule.clone());
    let mut runs = 0;
    loop {
        runs += 1;
        assert!(runs < 50, "replay-archive never got through");
        if replay_archive(&faulty_archive, &faulty_log, None, None, &mut |_, _| {})
            .await
            .is_ok()
        {
            break;
        }
    }
    let mut records = Vec::new();
    for shard in fresh.shards().await.unwrap() {
        let page = fresh
            .read(&shard.id, &timeline_core::shards::ReadFrom::Oldest, 10_000)
            .await
            .unwrap();
        records.extend(page.records);
    }
    assert_eq!(
        versions_of(records.iter().map(|r| r.data.as_slice())),
        by_entity,
        "after {runs} runs"
    );
}
