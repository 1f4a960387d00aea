//! Replaying the whole log (archive, then the stream tail) through the same projection the
//! processor runs: a rebuild of the read models is then exactly what live processing would
//! have written, and a verify compares that with what is stored, changing nothing.

use crate::memory::MemoryReadModels;
use crate::projection::{IncomingRecord, Processor, RecordFailure};
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::time::{Duration, Instant};
use timeline_core::envelope::{CommitRecord, StreamKey};
use timeline_core::ports::ReadModelStore;
use timeline_core::ports::{EventSource, ReplayChunk, SourceError, SourceProblem, Stored};
use timeline_core::time::Deadline;
use timeline_core::time::Timestamp;

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RebuildReport {
    pub chunks: usize,
    pub records: usize,
    pub events_applied: usize,
    pub duplicates_skipped: usize,
    /// Where to resume (pass it back as `resume_after`): after the last part of the log
    /// whose records are all applied, or set aside and then applied. A run stopped at any
    /// point and resumed from here ends with the same read models as one run to the end.
    pub position: Option<String>,
    /// False when the run stopped before the end of the log (its time ran out): resume it
    /// from `position`.
    pub finished: bool,
    /// Records that could not be applied (poison, gaps), and log problems.
    pub problems: Vec<SourceProblem>,
}

fn incoming(
    records: &[CommitRecord],
    positions: &[Option<timeline_core::ports::LogPosition>],
    start: usize,
) -> Vec<IncomingRecord> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let position = positions.get(i).and_then(Option::as_ref);
            IncomingRecord {
                sequence_number: position
                    .map_or_else(|| (start + i).to_string(), |p| p.sequence_number.clone()),
                partition_key: r.partition_key().unwrap_or_default(),
                data: timeline_core::codec::encode_record(r),
                shard_id: position.map(|p| p.shard_id.clone()),
                arrival: position.map(|p| p.arrival),
            }
        })
        .collect()
}

/// A record that could not be applied yet (its entity's earlier versions had not been seen:
/// archive objects written in the same second sort by a random id).
struct Deferred {
    record: CommitRecord,
    /// Where it sat on the stream, if it came from there.
    position: Option<timeline_core::ports::LogPosition>,
    /// The position before the chunk it came in: resuming from there reads it again.
    resume: Option<String>,
    /// When its chunk's records arrived, if known.
    arrived: Option<Timestamp>,
    /// Why it failed the last time it was tried.
    why: String,
}

/// How far (in arrival time) a replay goes on past a record it could not apply before
/// calling it a gap: an archive object holds at most 15 minutes of arrivals, so an entity's
/// earlier versions are never further behind than that, and a margin.
const DEFER_WINDOW_MILLIS: i64 = 2 * crate::archive::MAX_BUFFER_MILLIS;
/// Time kept in hand when a run has a deadline, beyond twice its slowest chunk.
const STOP_MARGIN: Duration = Duration::from_secs(2);

/// Replays the log into `target` with the processor's own rules, until the end of the log or
/// until `deadline` would pass (then `finished` is false and `position` says where to
/// resume). A record that fails is set aside and tried again as its entity's other records
/// come; one still failing once the replay is well past it, or at the end, is reported.
pub async fn rebuild<S: EventSource, R: ReadModelStore>(
    source: &S,
    target: &Processor<R>,
    resume_after: Option<String>,
    deadline: &Deadline,
    progress: &mut (dyn FnMut(&RebuildReport, usize, Option<usize>) + Send),
) -> Result<RebuildReport, SourceError> {
    let mut report = RebuildReport {
        position: resume_after.clone(),
        ..Default::default()
    };
    let mut deferred: Vec<Deferred> = Vec::new();
    let now = Timestamp::from_millis(0).expect("epoch");
    let mut position = resume_after;
    let mut slowest = Duration::ZERO;
    loop {
        if !deadline.allows(slowest * 2 + STOP_MARGIN) {
            return Ok(report);
        }
        let started = Instant::now();
        let chunk = match source.next_chunk(position.as_deref(), deadline).await {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            // Out of time inside a read: stop cleanly where the last whole chunk ended.
            Err(SourceError::OutOfTime(_)) => return Ok(report),
            Err(e) => return Err(e),
        };
        report.problems.extend(chunk.problems.iter().cloned());
        let positions: Vec<_> = chunk.positions.iter().cloned().map(Some).collect();
        let records = incoming(&chunk.records, &positions, report.records);
        report.records += records.len();
        report.chunks += 1;
        for (at, why) in apply(target, &records, now, &mut report).await {
            deferred.push(Deferred {
                record: chunk.records[at].clone(),
                position: chunk.positions.get(at).cloned(),
                resume: position.clone(),
                arrived: chunk.arrived,
                why,
            });
        }
        retry_deferred(target, &mut deferred, &chunk, now, &mut report).await;
        expire_deferred(&mut deferred, chunk.arrived, &mut report);
        position = Some(chunk.position.clone());
        report.position = match deferred.first() {
            Some(oldest) => oldest.resume.clone(),
            None => position.clone(),
        };
        slowest = slowest.max(started.elapsed());
        progress(&report, chunk.done, chunk.total);
    }
    if !deferred.is_empty() {
        let (commits, positions) = split(&deferred.iter().collect::<Vec<_>>());
        let records = incoming(&commits, &positions, report.records);
        for (at, why) in apply(target, &records, now, &mut report).await {
            report.problems.push(unapplied(&commits[at], &why));
        }
    }
    report.position = position;
    report.finished = true;
    Ok(report)
}

/// The records of set-aside entries, and their positions where they have one.
fn split(
    deferred: &[&Deferred],
) -> (
    Vec<CommitRecord>,
    Vec<Option<timeline_core::ports::LogPosition>>,
) {
    let commits = deferred.iter().map(|d| d.record.clone()).collect();
    let positions = deferred.iter().map(|d| d.position.clone()).collect();
    (commits, positions)
}

fn unapplied(record: &CommitRecord, why: &str) -> SourceProblem {
    let versions = match (record.first_version(), record.last_version()) {
        (Some(first), Some(last)) => format!("versions {first}..={last}"),
        _ => "a record".to_owned(),
    };
    SourceProblem {
        location: record.partition_key().unwrap_or_default(),
        reason: format!("{versions} could not be applied: {why}"),
    }
}

/// Tries again the set-aside records of the entities this chunk brought records of (only
/// those can have had their missing versions arrive).
async fn retry_deferred<R: ReadModelStore>(
    target: &Processor<R>,
    deferred: &mut Vec<Deferred>,
    chunk: &ReplayChunk,
    now: Timestamp,
    report: &mut RebuildReport,
) {
    let touched: HashSet<String> = chunk
        .records
        .iter()
        .filter_map(CommitRecord::partition_key)
        .collect();
    let retry: Vec<&Deferred> = deferred
        .iter()
        .filter(|d| {
            d.record
                .partition_key()
                .is_some_and(|k| touched.contains(&k))
        })
        .collect();
    if retry.is_empty() {
        return;
    }
    let (commits, positions) = split(&retry);
    let records = incoming(&commits, &positions, report.records);
    let still: Vec<(CommitRecord, String)> = apply(target, &records, now, report)
        .await
        .into_iter()
        .map(|(at, why)| (commits[at].clone(), why))
        .collect();
    // Kept in the order they were set aside: the first is the oldest.
    deferred.retain_mut(|d| {
        let retried = d
            .record
            .partition_key()
            .is_some_and(|k| touched.contains(&k));
        if !retried {
            return true;
        }
        match still.iter().find(|(r, _)| *r == d.record) {
            Some((_, why)) => {
                d.why.clone_from(why);
                true
            }
            None => false,
        }
    });
}

/// Reports (and drops) records set aside so long ago that their missing versions are not
/// coming: the replay is more than [`DEFER_WINDOW_MILLIS`] of arrivals past them.
fn expire_deferred(
    deferred: &mut Vec<Deferred>,
    now_at: Option<Timestamp>,
    report: &mut RebuildReport,
) {
    let Some(now_at) = now_at else { return };
    deferred.retain(|d| {
        let stale = d
            .arrived
            .is_some_and(|at| now_at.as_millis() - at.as_millis() > DEFER_WINDOW_MILLIS);
        if stale {
            report.problems.push(unapplied(&d.record, &d.why));
        }
        !stale
    });
}

/// Runs records through the processor, resuming after each failure as the event source
/// mapping would; returns the indexes of the records that failed, and why.
async fn apply<R: ReadModelStore>(
    target: &Processor<R>,
    records: &[IncomingRecord],
    now: Timestamp,
    report: &mut RebuildReport,
) -> Vec<(usize, String)> {
    let mut failed = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let outcome = target.process(&records[start..], now).await;
        report.events_applied += outcome.stats.events_applied;
        report.duplicates_skipped += outcome.stats.duplicates_skipped;
        match outcome.failures.first() {
            None => break,
            Some((index, failure)) => {
                let at = start + index;
                let why = match failure {
                    RecordFailure::Store { reason } => {
                        report.problems.push(SourceProblem {
                            location: records[at].partition_key.clone(),
                            reason: reason.clone(),
                        });
                        reason.clone()
                    }
                    RecordFailure::Unappliable(reason) => reason.to_string(),
                };
                failed.push((at, why));
                start = at + 1;
            }
        }
    }
    failed
}

/// One difference between the log and what is stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Drift {
    /// The log has the entity; the read model has no view of it.
    MissingView { entity: String, log_version: u64 },
    /// The view is behind the log.
    StaleView {
        entity: String,
        log_version: u64,
        view_version: u64,
    },
    /// Same version, different content.
    DifferentView { entity: String, version: u64 },
    /// The write model's head disagrees with the log (version or state).
    HeadMismatch {
        entity: String,
        log_version: u64,
        head_version: Option<u64>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VerifyReport {
    pub entities: usize,
    pub records: usize,
    pub drift: Vec<Drift>,
    pub problems: Vec<SourceProblem>,
}

/// Replays the log in memory and compares it with the stored views and heads.
pub async fn verify<S: EventSource, T: Stored>(
    source: &S,
    stored: &T,
    deadline: &Deadline,
) -> Result<VerifyReport, SourceError> {
    let expected = MemoryReadModels::views_only();
    let processor = Processor::new(expected.clone());
    let rebuilt = rebuild(source, &processor, None, deadline, &mut |_, _, _| {}).await?;
    if !rebuilt.finished {
        return Err(SourceError::OutOfTime(format!(
            "verify read {} records before its time ran out",
            rebuilt.records
        )));
    }
    let views = expected.views();
    let keys: Vec<StreamKey> = views.keys().cloned().collect();
    let actual = stored
        .views(&keys)
        .await
        .map_err(|e| SourceError::Unavailable(e.to_string()))?;
    let mut report = VerifyReport {
        entities: views.len(),
        records: rebuilt.records,
        problems: rebuilt.problems,
        ..Default::default()
    };
    // What the live processor parks is behind on purpose; say so, never hide it.
    let parked = expected
        .parked()
        .await
        .map_err(|e| SourceError::Unavailable(e.to_string()))?;
    report
        .problems
        .extend(parked.into_iter().map(|p| SourceProblem {
            location: p.entity,
            reason: format!("the processor parks it: {}", p.reason),
        }));
    for (key, view) in &views {
        let entity = key.to_string();
        let log_version = view["version"].as_u64().unwrap_or(0);
        match actual.get(key) {
            None => report.drift.push(Drift::MissingView {
                entity: entity.clone(),
                log_version,
            }),
            Some(stored) if stored.version < log_version => report.drift.push(Drift::StaleView {
                entity: entity.clone(),
                log_version,
                view_version: stored.version,
            }),
            Some(stored) if !same_json(&stored.view, view) => {
                report.drift.push(Drift::DifferentView {
                    entity: entity.clone(),
                    version: stored.version,
                })
            }
            Some(_) => {}
        }
        let head = stored
            .head(key)
            .await
            .map_err(|e| SourceError::Unavailable(e.to_string()))?;
        let head_ok = head
            .as_ref()
            .is_some_and(|h| h.version == log_version && same_json(&h.state, &view["state"]));
        if !head_ok {
            report.drift.push(Drift::HeadMismatch {
                entity,
                log_version,
                head_version: head.map(|h| h.version),
            });
        }
    }
    Ok(report)
}

/// JSON equality by value: stores keep numbers, not their spelling (13.0 may come back as 13).
pub fn same_json(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    use serde_json::Value;
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(a, b)| same_json(a, b))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| same_json(v, w)))
        }
        _ => a == b,
    }
}
