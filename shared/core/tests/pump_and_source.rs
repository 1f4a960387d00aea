//! The generic archive pump and log source, on the in-memory log and archive: every record
//! reaches the archive once and in order, a failed delivery is retried and loses nothing, and
//! the log source finds an entity's events across the archive and the stream tail.

use serde_json::json;
use std::time::Duration;
use timeline_core::archive::ArchiveStore;
use timeline_core::log_source::LogSource;
use timeline_core::memory::{MemoryArchive, MemoryLog};
use timeline_core::ports::EventLog;
use timeline_core::pump::{Pump, PumpConfig, PumpError, StreamPump};
use timeline_core::read_ports::{Lookup, Page, PageRequest, ReadModelError, ReadModelQueries};
use timeline_core::replay::EventSource;
use timeline_core::views::HistoryEntry;
use timeline_core::{CommitRecord, EventEnvelope, Metadata, StreamKey, Timestamp};

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
    let source = LogSource::new(archive.clone(), log.clone(), "s", None::<NoIndex>);

    let key = StreamKey::new("ride", "r1");
    let (events, problems) = source.entity_events(&key, None).await.unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let mut versions: Vec<u64> = events.iter().map(|e| e.version).collect();
    versions.sort();
    versions.dedup();
    assert_eq!(versions, vec![1, 2, 3, 4]);
    assert!(events.iter().all(|e| e.aggregate_id == "r1"));

    let until = "2026-11-28T10:00:02.000Z".parse().unwrap();
    let (early, _) = source.entity_events(&key, Some(until)).await.unwrap();
    assert!(early.iter().all(|e| e.version <= 2), "{early:?}");

    // The whole log: the archive's object, then the tail, then the end.
    let first = source.next_chunk(None).await.unwrap().unwrap();
    assert_eq!(first.records.len(), 5);
    assert_eq!((first.done, first.total), (1, Some(2)));
    let tail = source
        .next_chunk(Some(&first.position))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(tail.records.len(), 6, "the tail is the whole stream");
    assert!(source
        .next_chunk(Some(&tail.position))
        .await
        .unwrap()
        .is_none());
}
