//! The generic archive pump and log source, on the in-memory log and archive: every record
//! reaches the archive once and in order, a failed delivery is retried and loses nothing, and
//! the log source finds an entity's events across the archive and the stream tail.

use serde_json::json;
use std::time::Duration;
use timeline_core::ports::ArchiveStore;
use timeline_core::ports::EventLog;
use timeline_core::ports::{EntityEvents, EntityRead, EventSource, SourceError};
use timeline_core::ports::{Lookup, Page, PageRequest, ReadModelError, ReadModelQueries};
use timeline_core::time::Deadline;
use timeline_core::timetravel::{merge, AsOf};
use timeline_engine::log_source::LogSource;
use timeline_engine::memory::MemoryStore;
use timeline_engine::memory::{MemoryArchive, MemoryCheckpoints, MemoryLog};
use timeline_engine::pump::{ObjectBuffer, Pump, PumpConfig, PumpError, StreamPump};

fn found_in(read: Result<EntityRead, SourceError>) -> EntityEvents {
    match read.unwrap() {
        EntityRead::Found(found) => found,
        EntityRead::Absent => panic!("the entity was found absent"),
    }
}
use timeline_core::views::HistoryEntry;
use timeline_core::CommitRecord;
use timeline_core::EventEnvelope;
use timeline_core::Metadata;
use timeline_core::StreamKey;
use timeline_core::Timestamp;

fn event(id: &str, version: u64) -> EventEnvelope {
    let at: Timestamp = "2026-11-28T10:00:00.000Z".parse().unwrap();
    EventEnvelope {
        event_id: format!("{id}-{version}"),
        aggregate_type: "ride".into(),
        aggregate_id: id.into(),
        version,
        event_type: "RideBooked".into(),
        schema_version: 1,
        occurred_at: at.plus_millis(version as i64 * 1000),
        recorded_at: at.plus_millis(version as i64 * 1000),
        metadata: Metadata {
            command_id: format!("c-{id}-{version}"),
            correlation_id: None,
            causation_id: None,
            actor: "rider-1".into(),
        },
        data: json!({ "n": version }),
    }
}

async fn publish(log: &MemoryLog, id: &str, versions: std::ops::RangeInclusive<u64>) {
    for v in versions {
        log.publish(&CommitRecord::new(vec![event(id, v)]).unwrap())
            .await
            .unwrap();
    }
}

/// Puts `records` in the archive as one object, as Firehose would have.
async fn archive_one_object(archive: &MemoryArchive, records: &[CommitRecord]) {
    archive
        .put_object(
            "events/2026/11/28/10/a-1-2026-11-28-10-00-00-x",
            timeline_engine::archive::encode_object(records, false),
        )
        .await
        .unwrap();
}

fn config(buffer_bytes: usize) -> PumpConfig {
    let mut c = PumpConfig::new("test-archive");
    c.buffer_bytes = buffer_bytes;
    c
}

/// The archived events, objects in the order they were delivered (keys written in the same
/// second sort by their random part, as Firehose's do).
async fn archived(archive: &MemoryArchive, keys: &[String]) -> Vec<(String, u64)> {
    assert_eq!(
        archive.keys().len(),
        keys.len(),
        "no object twice, none unreported"
    );
    let mut out = Vec::new();
    for key in keys {
        for r in archive.read_object(key).await.unwrap() {
            out.extend(r.events.into_iter().map(|e| (e.aggregate_id, e.version)));
        }
    }
    out
}

#[tokio::test]
async fn every_record_reaches_the_archive_once_in_order() {
    let log = MemoryLog::default();
    let archive = MemoryArchive::default();
    publish(&log, "r1", 1..=10).await;
    // About three records per object.
    let mut pump = StreamPump::new(log.clone(), "s", archive.clone(), config(1000));
    let mut report = pump.poll().await.unwrap();
    assert_eq!(report.records_read, 10);
    assert!(report.objects_written >= 2, "{report:?}");
    publish(&log, "r1", 11..=12).await;
    let second = pump.poll().await.unwrap();
    assert_eq!(second.records_read, 2, "reads only what is new");
    report.add(second);
    report.add(pump.flush().await.unwrap());
    assert_eq!(pump.buffered(), (0, 0));
    let got = archived(&archive, &report.keys).await;
    let want: Vec<(String, u64)> = (1..=12).map(|v| ("r1".to_string(), v)).collect();
    assert_eq!(got, want);
}

#[tokio::test]
async fn a_failed_delivery_is_retried_first_and_loses_nothing() {
    let log = MemoryLog::default();
    let archive = MemoryArchive::default();
    publish(&log, "r1", 1..=6).await;
    let mut pump = StreamPump::new(log.clone(), "s", archive.clone(), config(1000));
    archive.fail_next_puts(1);
    let failed = pump.poll().await;
    assert!(matches!(failed, Err(PumpError::Archive(_))), "{failed:?}");
    assert!(archive.keys().is_empty());
    publish(&log, "r1", 7..=8).await;
    let mut report = pump.poll().await.unwrap();
    report.add(pump.flush().await.unwrap());
    let got = archived(&archive, &report.keys).await;
    let want: Vec<(String, u64)> = (1..=8).map(|v| ("r1".to_string(), v)).collect();
    assert_eq!(got, want, "nothing lost, nothing twice");
}

#[tokio::test]
async fn the_buffer_is_delivered_once_its_interval_passes() {
    let log = MemoryLog::default();
    let archive = MemoryArchive::default();
    publish(&log, "r1", 1..=2).await;
    let mut slow = StreamPump::new(log.clone(), "s", archive.clone(), config(1 << 20));
    assert_eq!(slow.poll().await.unwrap().objects_written, 0);
    let mut due = config(1 << 20);
    due.buffer_interval = Duration::ZERO;
    let mut fast = StreamPump::new(log.clone(), "s", archive.clone(), due);
    assert_eq!(fast.poll().await.unwrap().objects_written, 1);
}

/// No history index: every entity read scans the whole archive.
struct NoIndex;

impl ReadModelQueries for NoIndex {
    async fn view(&self, _: &StreamKey) -> Result<Option<serde_json::Value>, ReadModelError> {
        Ok(None)
    }
    async fn list(
        &self,
        _: &Lookup,
        _: &PageRequest,
    ) -> Result<Page<serde_json::Value>, ReadModelError> {
        unreachable!("the log source only reads history")
    }
    async fn history(
        &self,
        _: &StreamKey,
        _: Option<Timestamp>,
        _: Option<Timestamp>,
        _: &PageRequest,
    ) -> Result<Page<HistoryEntry>, ReadModelError> {
        Ok(Page {
            items: Vec::new(),
            next_cursor: None,
        })
    }
}

#[tokio::test]
async fn the_source_reads_the_archive_then_the_tail() {
    let log = MemoryLog::default();
    let archive = MemoryArchive::default();
    publish(&log, "r1", 1..=3).await;
    publish(&log, "r2", 1..=2).await;
    let mut pump = StreamPump::new(log.clone(), "s", archive.clone(), config(1 << 20));
    pump.poll().await.unwrap();
    pump.flush().await.unwrap();
    // Not archived yet: only on the stream.
    publish(&log, "r1", 4..=4).await;
    let source = LogSource::new(
        archive.clone(),
        log.clone(),
        "s",
        None::<NoIndex>,
        None::<MemoryStore>,
    );

    let key = StreamKey::new("ride", "r1");
    let found = found_in(
        source
            .entity_events(&key, AsOf::Now, &Deadline::none())
            .await,
    );
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    let events = found.events;
    let mut versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    versions.sort();
    versions.dedup();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    assert!(events.iter().all(|e| e.aggregate_id == "r1"));

    let until = "2026-11-28T10:00:02.000Z".parse().unwrap();
    let early = found_in(
        source
            .entity_events(&key, AsOf::Time(until), &Deadline::none())
            .await,
    );
    let log = merge(key.clone(), early.events).knowing(early.latest, early.known_times);
    assert_eq!(
        log.target(AsOf::Time(until)),
        2,
        "versions 1 and 2 had happened by then"
    );
    assert!(log.missing_up_to(2).is_empty());

    // The whole log: the archive's object, then the tail, then the end.
    let first = source
        .next_chunk(None, &Deadline::none())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(first.records.len(), 5);
    assert_eq!((first.done, first.total), (1, Some(2)));
    let tail = source
        .next_chunk(Some(&first.position), &Deadline::none())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tail.records.len(), 6, "the tail is the whole stream");
    assert_eq!((tail.done, tail.total), (1, Some(2)));
    let end = source
        .next_chunk(Some(&tail.position), &Deadline::none())
        .await
        .unwrap()
        .unwrap();
    assert!(end.records.is_empty());
    assert_eq!((end.done, end.total), (2, Some(2)));
    assert!(source
        .next_chunk(Some(&end.position), &Deadline::none())
        .await
        .unwrap()
        .is_none());
}

#[tokio::test]
async fn a_replay_reads_the_tail_in_parts_and_resumes_from_any_of_them() {
    let log = MemoryLog::default();
    publish(&log, "r1", 1..=5).await;
    let source = LogSource::new(
        MemoryArchive::default(),
        log,
        "s",
        None::<NoIndex>,
        None::<MemoryStore>,
    )
    .with_tail_chunk(2);
    let mut position: Option<String> = None;
    let mut parts = Vec::new();
    while let Some(chunk) = source
        .next_chunk(position.as_deref(), &Deadline::none())
        .await
        .unwrap()
    {
        assert!(chunk.records.len() <= 2, "{}", chunk.records.len());
        parts.push((chunk.position.clone(), chunk.records));
        position = Some(parts.last().unwrap().0.clone());
    }
    let versions: Vec<u64> = parts
        .iter()
        .flat_map(|(_, records)| records.iter().map(|r| r.events[0].version))
        .collect();
    assert_eq!(versions, [1, 2, 3, 4, 5], "every record once, in order");
    // Resuming after the second part reads only what came after it.
    let resumed = source
        .next_chunk(Some(&parts[1].0), &Deadline::none())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(resumed.records[0].events[0].version, 5);
    assert!(
        source
            .next_chunk(Some("tail:x"), &Deadline::none())
            .await
            .is_err(),
        "not a position"
    );
}
#[tokio::test]
async fn events_no_longer_on_the_stream_are_found_in_the_archive() {
    // The stream's retention has passed for v1 and v2: only the archive has them.
    let archive = MemoryArchive::default();
    let old = vec![
        CommitRecord::new(vec![event("r9", 1)]).unwrap(),
        CommitRecord::new(vec![event("r9", 2)]).unwrap(),
    ];
    archive_one_object(&archive, &old).await;
    let log = MemoryLog::default();
    publish(&log, "r9", 3..=3).await;
    let source = LogSource::new(archive, log, "s", None::<NoIndex>, None::<MemoryStore>);
    let found = found_in(
        source
            .entity_events(&StreamKey::new("ride", "r9"), AsOf::Now, &Deadline::none())
            .await,
    );
    assert!(found.problems.is_empty(), "{:?}", found.problems);
    let mut versions: Vec<u64> = found.events.iter().map(|e| e.version).collect();
    versions.sort();
    assert_eq!(versions, vec![1, 2, 3]);
}

#[tokio::test]
async fn two_different_copies_of_a_version_are_both_kept_and_the_answer_says_so() {
    // The archive holds one event as version 2; the stream holds another. Neither is dropped
    // in favour of the other: the answer is partial and names the conflict.
    let archive = MemoryArchive::default();
    let mut other = event("r7", 2);
    other.event_id = "someone-else".into();
    let old = vec![
        CommitRecord::new(vec![event("r7", 1)]).unwrap(),
        CommitRecord::new(vec![other]).unwrap(),
    ];
    archive_one_object(&archive, &old).await;
    let log = MemoryLog::default();
    publish(&log, "r7", 1..=3).await;
    let source = LogSource::new(archive, log, "s", None::<NoIndex>, None::<MemoryStore>);
    let key = StreamKey::new("ride", "r7");
    let found = found_in(
        source
            .entity_events(&key, AsOf::Now, &Deadline::none())
            .await,
    );
    let mut ids: Vec<&str> = found
        .events
        .iter()
        .filter(|e| e.version == 2)
        .map(|e| e.event_id.as_str())
        .collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids, ["r7-2", "someone-else"], "both copies reach the merge");
    let merged = merge(key, found.events).knowing(found.latest, found.known_times);
    assert!(
        merged.issues.iter().any(|i| matches!(
            i,
            timeline_core::timetravel::LogIssue::Conflict { version: 2, .. }
        )),
        "{:?}",
        merged.issues
    );
}

#[tokio::test]
async fn a_restarted_pump_rereads_only_what_was_not_delivered() {
    let log = MemoryLog::default();
    let archive = MemoryArchive::default();
    let checkpoints = MemoryCheckpoints::default();
    publish(&log, "r1", 1..=4).await;
    // A pump as a new process would make it: nothing but the saved checkpoints.
    let start = || {
        StreamPump::with_checkpoints(
            log.clone(),
            "s",
            archive.clone(),
            config(1 << 20),
            checkpoints.clone(),
        )
    };
    let mut pump = start();
    let mut report = pump.poll().await.unwrap();
    report.add(pump.flush().await.unwrap());
    assert_eq!(checkpoints.saved()["shardId-000000000000"], "4");

    // Read and buffered, then the process dies before delivering: nothing is saved.
    publish(&log, "r1", 5..=6).await;
    let mut dying = start();
    assert_eq!(dying.poll().await.unwrap().records_read, 2);
    drop(dying);
    assert_eq!(checkpoints.saved()["shardId-000000000000"], "4");

    // A failed delivery saves nothing either.
    let mut failing = start();
    assert_eq!(failing.poll().await.unwrap().records_read, 2);
    archive.fail_next_puts(1);
    assert!(failing.flush().await.is_err());
    assert_eq!(checkpoints.saved()["shardId-000000000000"], "4");
    drop(failing);

    // The next pump reads 5 and 6 again, and only them.
    let mut next = start();
    assert_eq!(next.poll().await.unwrap().records_read, 2);
    report.add(next.flush().await.unwrap());
    assert_eq!(checkpoints.saved()["shardId-000000000000"], "6");
    let got = archived(&archive, &report.keys).await;
    let want: Vec<(String, u64)> = (1..=6).map(|v| ("r1".to_string(), v)).collect();
    assert_eq!(got, want, "each record archived once");
}

#[tokio::test]
async fn an_object_holds_at_most_fifteen_minutes_of_arrivals_and_is_named_by_the_oldest() {
    let at = |s: &str| -> Timestamp { s.parse().unwrap() };
    let mut buffer = ObjectBuffer::new(config(1 << 20));
    buffer.push(b"{}".to_vec(), Some(at("2026-11-28T10:05:00Z")));
    // Earlier arrivals (another shard, read later) join and name the object.
    assert!(buffer.fits(Some(at("2026-11-28T10:01:00Z"))));
    buffer.push(b"{}".to_vec(), Some(at("2026-11-28T10:01:00Z")));
    assert!(buffer.fits(Some(at("2026-11-28T10:15:59Z"))));
    assert!(
        !buffer.fits(Some(at("2026-11-28T10:16:00Z"))),
        "15 min after the oldest"
    );
    assert!(
        !buffer.fits(Some(at("2026-11-28T09:50:00Z"))),
        "15 min before the newest"
    );
    buffer.seal("events/");
    let mut report = timeline_engine::pump::PumpReport::default();
    let archive = MemoryArchive::default();
    buffer.deliver(&archive, &mut report).await.unwrap();
    let key = &report.keys[0];
    assert!(
        key.starts_with("events/2026/11/28/10/test-archive-1-2026-11-28-10-01-00-"),
        "{key}"
    );
}
