//! Replaying the whole log (archive, then the stream tail) through the same projection the
//! processor runs: a rebuild of the read models is then exactly what live processing would
//! have written, and a verify compares that with what is stored, changing nothing.

use crate::envelope::{CommitRecord, StreamKey};
use crate::memory::MemoryReadModels;
use crate::ports::{Head, StoreError};
use crate::processor::{IncomingRecord, Processor, RecordFailure};
use crate::read_ports::{ReadModelError, ReadModelStore, StoredView};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::future::Future;

/// A run of commit records in log order, with a position to resume after it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayChunk {
    pub records: Vec<CommitRecord>,
    /// Opaque position: pass it back to continue after this chunk.
    pub position: String,
    /// Problems met while reading this chunk (a corrupt object, with its key).
    pub problems: Vec<SourceProblem>,
    /// Progress: units (e.g. archive objects) read so far, and in all when known.
    pub done: usize,
    pub total: Option<usize>,
}

/// Something wrong in the log itself, reported with where it was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceProblem {
    pub location: String,
    pub reason: String,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
#[error("event log unreadable: {0}")]
pub struct SourceError(pub String);

/// The whole log and each entity's part of it (the archive plus the stream tail).
pub trait EventSource: Send + Sync {
    /// Copies of one entity's events with `occurred_at <= until` (all if None), from every
    /// place they may be, in any order, duplicates allowed.
    fn entity_events(
        &self,
        key: &StreamKey,
        until: Option<Timestamp>,
    ) -> impl Future<Output = Result<(Vec<crate::EventEnvelope>, Vec<SourceProblem>), SourceError>> + Send;

    /// The next part of the whole log in order, after `position` (from the start if None);
    /// None at the end. Pulled one chunk at a time, so a replay holds one chunk in memory.
    fn next_chunk(
        &self,
        position: Option<&str>,
    ) -> impl Future<Output = Result<Option<ReplayChunk>, SourceError>> + Send;
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RebuildReport {
    pub chunks: usize,
    pub records: usize,
    pub events_applied: usize,
    pub duplicates_skipped: usize,
    /// Where to resume if this run stopped early.
    pub position: Option<String>,
    /// Records that could not be applied (poison, gaps), and log problems.
    pub problems: Vec<SourceProblem>,
}

fn incoming(records: &[CommitRecord], start: usize) -> Vec<IncomingRecord> {
    records
        .iter()
        .enumerate()
        .map(|(i, r)| IncomingRecord {
            sequence_number: (start + i).to_string(),
            partition_key: r.partition_key().unwrap_or_default(),
            data: crate::codec::encode_record(r),
        })
        .collect()
}

/// Replays the log into `target` with the processor's own rules. Records that fail are
/// retried once the rest of the log has been seen (an out-of-order copy then finds its
/// predecessors), and reported if they still fail.
pub async fn rebuild<S: EventSource, R: ReadModelStore>(
    source: &S,
    target: &Processor<R>,
    resume_after: Option<String>,
    progress: &mut (dyn FnMut(&RebuildReport, usize, Option<usize>) + Send),
) -> Result<RebuildReport, SourceError> {
    let mut report = RebuildReport::default();
    let mut deferred: Vec<CommitRecord> = Vec::new();
    let now = Timestamp::from_millis(0).expect("epoch");
    let mut position = resume_after;
    while let Some(chunk) = source.next_chunk(position.as_deref()).await? {
        report.problems.extend(chunk.problems.iter().cloned());
        let records = incoming(&chunk.records, report.records);
        report.records += records.len();
        report.chunks += 1;
        deferred.extend(apply(target, &chunk.records, &records, now, &mut report).await);
        report.position = Some(chunk.position.clone());
        position = Some(chunk.position);
        progress(&report, chunk.done, chunk.total);
    }
    if !deferred.is_empty() {
        let records = incoming(&deferred, report.records);
        let still = apply(target, &deferred, &records, now, &mut report).await;
        for record in still {
            report.problems.push(SourceProblem {
                location: record.partition_key().unwrap_or_default(),
                reason: format!(
                    "versions {:?}..={:?} could not be applied",
                    record.first_version(),
                    record.last_version()
                ),
            });
        }
    }
    Ok(report)
}

/// Runs records through the processor, resuming after each failure as the event source
/// mapping would; returns the records that failed.
async fn apply<R: ReadModelStore>(
    target: &Processor<R>,
    commits: &[CommitRecord],
    records: &[IncomingRecord],
    now: Timestamp,
    report: &mut RebuildReport,
) -> Vec<CommitRecord> {
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
                if let RecordFailure::Store { reason } = failure {
                    report.problems.push(SourceProblem {
                        location: records[at].partition_key.clone(),
                        reason: reason.clone(),
                    });
                }
                failed.push(commits[at].clone());
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

/// Reads, for verify: the stored views and the heads. Nothing is written.
pub trait Stored: Send + Sync {
    fn views(
        &self,
        keys: &[StreamKey],
    ) -> impl Future<Output = Result<std::collections::HashMap<StreamKey, StoredView>, ReadModelError>>
           + Send;
    fn head(
        &self,
        key: &StreamKey,
    ) -> impl Future<Output = Result<Option<Head>, StoreError>> + Send;
}

/// Replays the log in memory and compares it with the stored views and heads.
pub async fn verify<S: EventSource, T: Stored>(
    source: &S,
    stored: &T,
) -> Result<VerifyReport, SourceError> {
    let expected = MemoryReadModels::views_only();
    let processor = Processor::new(expected.clone());
    let rebuilt = rebuild(source, &processor, None, &mut |_, _, _| {}).await?;
    let views = expected.views();
    let keys: Vec<StreamKey> = views.keys().cloned().collect();
    let actual = stored
        .views(&keys)
        .await
        .map_err(|e| SourceError(e.to_string()))?;
    let mut report = VerifyReport {
        entities: views.len(),
        records: rebuilt.records,
        problems: rebuilt.problems,
        ..Default::default()
    };
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
            .map_err(|e| SourceError(e.to_string()))?;
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
