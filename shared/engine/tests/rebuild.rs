//! A rebuild that stops (its time ran out) and is resumed from the position its report gives
//! ends with the read models of one run to the end, even when it stopped with records set
//! aside behind a gap: objects written in the same second sort by a random id, so a ride's
//! later versions can come in an earlier part of the log than its first.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use timeline_core::ports::ArchiveStore;
use timeline_core::ports::{EntityRead, EventSource, ReplayChunk, SourceError};
use timeline_core::time::Deadline;
use timeline_core::timetravel::AsOf;
use timeline_core::CommitRecord;
use timeline_core::StreamKey;
use timeline_core::Timestamp;
use timeline_engine::archive::{encode_object, object_key};
use timeline_engine::log_source::LogSource;
use timeline_engine::memory::{MemoryArchive, MemoryLog, MemoryReadModels, MemoryStore};
use timeline_engine::projection::Processor;
use timeline_engine::replay::rebuild;

use timeline_core::scenario::sample_ride as ride;

fn at() -> Timestamp {
    "2026-11-28T10:00:00Z".parse().unwrap()
}

fn record(id: &str, versions: std::ops::RangeInclusive<u64>) -> CommitRecord {
    CommitRecord::new(versions.map(|v| ride(id, v)).collect()).unwrap()
}

/// Five objects written in one second: `a` holds ride x's versions 2 and 3, `z` its version
/// 1, and three others in between; keys sort by their random id, so a replay reads `a`
/// (in its first part: four objects a part) before `z` (in its second).
async fn archive() -> MemoryArchive {
    let archive = MemoryArchive::default();
    let objects = [
        ("a", vec![record("x", 2..=3)]),
        ("b1", vec![record("p", 1..=2)]),
        ("b2", vec![record("q", 1..=1)]),
        ("b3", vec![record("s", 1..=3)]),
        ("z", vec![record("x", 1..=1), record("q", 2..=2)]),
    ];
    for (id, records) in objects {
        archive
            .put_object(
                &object_key("events/", "t", at(), id, false),
                encode_object(&records, false),
            )
            .await
            .unwrap();
    }
    archive
}

/// A source that runs out of time after `parts` parts of the log.
struct StopsAfter<S> {
    inner: S,
    parts: usize,
    read: AtomicUsize,
}

impl<S: EventSource> EventSource for StopsAfter<S> {
    async fn entity_events(
        &self,
        key: &StreamKey,
        as_of: AsOf,
        deadline: &Deadline,
    ) -> Result<EntityRead, SourceError> {
        self.inner.entity_events(key, as_of, deadline).await
    }

    async fn next_chunk(
        &self,
        position: Option<&str>,
        deadline: &Deadline,
    ) -> Result<Option<ReplayChunk>, SourceError> {
        if self.read.fetch_add(1, Ordering::SeqCst) >= self.parts {
            return Err(SourceError::OutOfTime("stopped by the test".into()));
        }
        self.inner.next_chunk(position, deadline).await
    }
}

fn source(
    archive: MemoryArchive,
) -> LogSource<MemoryArchive, MemoryLog, MemoryReadModels, MemoryStore> {
    LogSource::new(archive, MemoryLog::default(), "s", None, None)
}

/// A rebuild into `target` that runs out of time after the first part of the log.
async fn stopped_after_one_part(
    target: &MemoryReadModels,
) -> timeline_engine::replay::RebuildReport {
    rebuild(
        &StopsAfter {
            inner: source(archive().await),
            parts: 1,
            read: AtomicUsize::new(0),
        },
        &Processor::for_replay(target.clone()),
        None,
        &Deadline::none(),
        &mut |_, _, _| {},
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn a_rebuild_stopped_with_records_set_aside_resumes_before_them() {
    // One run to the end: every ride whole.
    let whole = MemoryReadModels::default();
    let report = rebuild(
        &source(archive().await),
        &Processor::for_replay(whole.clone()),
        None,
        &Deadline::none(),
        &mut |_, _, _| {},
    )
    .await
    .unwrap();
    assert!(report.finished && report.problems.is_empty(), "{report:?}");
    let expected = whole.views();
    let versions: BTreeMap<String, u64> = expected
        .iter()
        .map(|(k, v)| (k.aggregate_id.clone(), v["version"].as_u64().unwrap()))
        .collect();
    assert_eq!(versions["x"], 3);

    // Stopped after the first part (x's versions 2 and 3 set aside, waiting for version 1).
    let target = MemoryReadModels::default();
    let stopped = stopped_after_one_part(&target).await;
    assert!(!stopped.finished);
    assert_eq!(
        stopped.position, None,
        "the first part held records still set aside: resume from before it"
    );

    // Resumed from there: the same read models as one run.
    let resumed = rebuild(
        &source(archive().await),
        &Processor::for_replay(target.clone()),
        stopped.position,
        &Deadline::none(),
        &mut |_, _, _| {},
    )
    .await
    .unwrap();
    assert!(
        resumed.finished && resumed.problems.is_empty(),
        "{resumed:?}"
    );
    assert_eq!(target.views(), expected);

    // Resuming after the first part instead (where its records were all read) would lose
    // x's versions 2 and 3 for good: the position the report gives is what saves them.
    let first_part = source(archive().await)
        .next_chunk(None, &Deadline::none())
        .await
        .unwrap()
        .unwrap()
        .position;
    let lossy = MemoryReadModels::default();
    let partial = stopped_after_one_part(&lossy).await;
    assert!(!partial.finished);
    rebuild(
        &source(archive().await),
        &Processor::for_replay(lossy.clone()),
        Some(first_part),
        &Deadline::none(),
        &mut |_, _, _| {},
    )
    .await
    .unwrap();
    assert_ne!(lossy.views(), expected);
}

#[tokio::test]
async fn a_record_whose_earlier_versions_never_come_is_reported_not_kept_forever() {
    // Ride y's version 1 is in no object: its version 2 is a gap.
    let archive = MemoryArchive::default();
    archive
        .put_object(
            &object_key("events/", "t", at(), "a", false),
            encode_object(&[record("y", 2..=2), record("p", 1..=1)], false),
        )
        .await
        .unwrap();
    let target = MemoryReadModels::default();
    let report = rebuild(
        &source(archive),
        &Processor::for_replay(target.clone()),
        None,
        &Deadline::none(),
        &mut |_, _, _| {},
    )
    .await
    .unwrap();
    assert!(report.finished);
    assert_eq!(report.problems.len(), 1, "{report:?}");
    assert_eq!(report.problems[0].location, "ride#y");
    assert!(target.views().contains_key(&StreamKey::new("ride", "p")));
}
