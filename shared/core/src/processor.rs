//! The projection of a stream batch into read models, with at-least-once delivery in mind:
//! apply an event only if it is the next version of its view, skip duplicates, never apply
//! out of order, report a gap or an undecodable record as a failure of that record, and
//! coalesce each entity's changes into one conditional view write per batch.
//!
//! The result names the first record that could not be applied, so the Lambda can answer
//! `batchItemFailures` and Kinesis redelivers from there; everything after it that was
//! applied comes back as duplicates and is skipped.

use crate::aggregate::Aggregate;
use crate::codec::{decode_event, decode_record};
use crate::envelope::{EventEnvelope, StreamKey};
use crate::read_ports::{ReadModelError, ReadModelStore, StoredView, ViewWrite};
use crate::ride::RideAggregate;
use crate::time::Timestamp;
use crate::video::VideoAggregate;
use crate::views::{project, ReadModel, View};
use serde::Serialize;
use std::collections::{HashMap, HashSet};

/// One stream record as delivered (Kinesis data already base64-decoded).
#[derive(Debug, Clone, PartialEq)]
pub struct IncomingRecord {
    /// Opaque; echoed back in the failure report and kept as the events' log position.
    pub sequence_number: String,
    pub partition_key: String,
    pub data: Vec<u8>,
    /// The shard it came from and when the log received it, when known: kept with each
    /// history entry so time travel finds the record again without reading the stream.
    pub shard_id: Option<String>,
    pub arrival: Option<Timestamp>,
}

impl IncomingRecord {
    pub fn position(&self) -> Option<crate::ports::LogPosition> {
        Some(crate::ports::LogPosition {
            shard_id: self.shard_id.clone()?,
            sequence_number: self.sequence_number.clone(),
            arrival: self.arrival?,
        })
    }
}

/// Why a record could not be applied.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum RecordFailure {
    /// Cannot succeed however often it is retried (undecodable, unknown entity type, unknown
    /// event type or schema): goes to the on-failure destination after bounded retries.
    Poison { reason: String },
    /// A version is missing before this record's events: never happens under the write
    /// invariant, so it is a bug or a hand-written record.
    Gap { expected: u64, found: u64 },
    /// The read models could not be written; a retry may succeed.
    Store { reason: String },
}

#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BatchStats {
    pub records: usize,
    pub events_applied: usize,
    pub duplicates_skipped: usize,
    pub failures: usize,
    pub entities_written: usize,
    /// Largest `now - occurred_at` among applied events, in milliseconds.
    pub max_lag_ms: Option<i64>,
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutcome {
    /// The first record that could not be applied: report it in `batchItemFailures`.
    pub first_failure: Option<(usize, String)>,
    /// Every failure, by record index, for logs and metrics.
    pub failures: Vec<(usize, RecordFailure)>,
    pub stats: BatchStats,
}

struct EntityRun {
    key: StreamKey,
    /// (record index, event) in delivery order.
    events: Vec<(usize, EventEnvelope)>,
}

pub struct Processor<R> {
    store: R,
    /// On a replay: record the stream position of events met again (applied from the
    /// archive first), so the history entries end as live processing leaves them.
    attach_positions: bool,
}

impl<R: ReadModelStore> Processor<R> {
    pub fn new(store: R) -> Self {
        Processor {
            store,
            attach_positions: false,
        }
    }

    /// A processor for replays (see the field).
    pub fn for_replay(store: R) -> Self {
        Processor {
            store,
            attach_positions: true,
        }
    }

    pub fn store(&self) -> &R {
        &self.store
    }

    pub async fn process(&self, records: &[IncomingRecord], now: Timestamp) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        outcome.stats.records = records.len();
        let mut blocked: HashSet<String> = HashSet::new();
        let mut runs: Vec<EntityRun> = Vec::new();
        let mut run_of: HashMap<StreamKey, usize> = HashMap::new();

        for (index, record) in records.iter().enumerate() {
            if blocked.contains(&record.partition_key) {
                continue;
            }
            let decoded = decode_record(&record.data)
                .map_err(|e| e.to_string())
                .and_then(|commit| {
                    let key = commit
                        .stream_key()
                        .expect("validated records are not empty");
                    if key.partition_key() != record.partition_key {
                        return Err(format!(
                            "record for {key} arrived under partition key {}",
                            record.partition_key
                        ));
                    }
                    if !known_aggregate(&key.aggregate_type) {
                        return Err(format!("unknown entity type {:?}", key.aggregate_type));
                    }
                    Ok((key, commit.events))
                });
            match decoded {
                Err(reason) => {
                    tracing::error!(index, sequence_number = %record.sequence_number, %reason, "poison record");
                    outcome
                        .failures
                        .push((index, RecordFailure::Poison { reason }));
                    blocked.insert(record.partition_key.clone());
                }
                Ok((key, events)) => {
                    let slot = *run_of.entry(key.clone()).or_insert_with(|| {
                        runs.push(EntityRun {
                            key,
                            events: Vec::new(),
                        });
                        runs.len() - 1
                    });
                    runs[slot]
                        .events
                        .extend(events.into_iter().map(|e| (index, e)));
                }
            }
        }

        let keys: Vec<StreamKey> = runs.iter().map(|r| r.key.clone()).collect();
        let stored = match self.store.load_views(&keys).await {
            Ok(stored) => stored,
            Err(e) => {
                // Nothing can be applied: fail from the first record with events.
                let reason = e.to_string();
                for run in &runs {
                    outcome.failures.push((
                        run.events[0].0,
                        RecordFailure::Store {
                            reason: reason.clone(),
                        },
                    ));
                }
                return finish(outcome, records);
            }
        };

        for run in runs {
            let current = stored.get(&run.key).cloned();
            let result = match run.key.aggregate_type.as_str() {
                "ride" => {
                    self.apply::<RideAggregate>(&run, records, current, now, &mut outcome.stats)
                        .await
                }
                _ => {
                    self.apply::<VideoAggregate>(&run, records, current, now, &mut outcome.stats)
                        .await
                }
            };
            if let Some(failure) = result {
                outcome.failures.push(failure);
            }
        }
        finish(outcome, records)
    }

    /// Folds one entity's events onto its stored view and writes the result once.
    async fn apply<A: ReadModel>(
        &self,
        run: &EntityRun,
        records: &[IncomingRecord],
        current: Option<StoredView>,
        now: Timestamp,
        stats: &mut BatchStats,
    ) -> Option<(usize, RecordFailure)> {
        let expected_version = current.as_ref().map_or(0, |c| c.version);
        let mut view: Option<View<A::State>> = match current {
            None => None,
            Some(c) => match serde_json::from_value(c.view) {
                Ok(v) => Some(v),
                Err(e) => {
                    let reason = format!("stored view of {} is unreadable: {e}", run.key);
                    return Some((run.events[0].0, RecordFailure::Store { reason }));
                }
            },
        };
        let mut history = Vec::new();
        let mut failure = None;
        let mut first_applied: Option<usize> = None;
        let mut positions = Vec::new();
        for (index, envelope) in &run.events {
            let version = view.as_ref().map_or(0, |v| v.version);
            if envelope.version <= version {
                stats.duplicates_skipped += 1;
                if let Some(position) = records[*index].position().filter(|_| self.attach_positions)
                {
                    positions.push(crate::read_ports::PositionOf {
                        occurred_at: envelope.occurred_at,
                        version: envelope.version,
                        position,
                    });
                }
                continue;
            }
            if envelope.version != version + 1 {
                tracing::error!(
                    stream = %run.key, expected = version + 1, found = envelope.version,
                    "GAP in the event stream: refusing to apply out of order"
                );
                failure = Some((
                    *index,
                    RecordFailure::Gap {
                        expected: version + 1,
                        found: envelope.version,
                    },
                ));
                break;
            }
            let event = match decode_event::<A>(envelope) {
                Ok(event) => event,
                Err(e) => {
                    tracing::error!(stream = %run.key, version = envelope.version, error = %e, "undecodable event");
                    failure = Some((
                        *index,
                        RecordFailure::Poison {
                            reason: e.to_string(),
                        },
                    ));
                    break;
                }
            };
            let (next, mut entry) = project::<A>(view, envelope, &event);
            entry.position = records[*index].position();
            view = Some(next);
            history.push(entry);
            first_applied.get_or_insert(*index);
            let lag = now.as_millis() - envelope.occurred_at.as_millis();
            stats.max_lag_ms = Some(stats.max_lag_ms.map_or(lag, |m| m.max(lag)));
        }
        if !positions.is_empty() {
            // A replay ends with the entries live processing leaves: a failure here is the
            // record's, to be tried again.
            if let Err(e) = self.store.attach_positions(&run.key, &positions).await {
                let first = run.events.iter().map(|(i, _)| *i).min().unwrap_or(0);
                return Some((
                    first,
                    RecordFailure::Store {
                        reason: e.to_string(),
                    },
                ));
            }
        }
        let (Some(view), Some(first_applied)) = (view, first_applied) else {
            return failure;
        };
        let write = ViewWrite {
            key: run.key.clone(),
            expected_version,
            version: view.version,
            view: serde_json::to_value(&view).expect("views serialize"),
            status_family: A::status_family(&view.status),
            lookups: A::lookups(&view.state),
            created_at: view.created_at,
            updated_at: view.updated_at,
            history,
        };
        let applied = write.history.len();
        match self.store.write(write).await {
            Ok(()) => {
                stats.events_applied += applied;
                stats.entities_written += 1;
                failure
            }
            Err(e) => {
                if e == ReadModelError::Conflict {
                    tracing::warn!(stream = %run.key, "view moved under us; will retry");
                }
                Some((
                    first_applied,
                    RecordFailure::Store {
                        reason: e.to_string(),
                    },
                ))
            }
        }
    }
}

fn finish(mut outcome: BatchOutcome, records: &[IncomingRecord]) -> BatchOutcome {
    outcome.failures.sort_by_key(|(index, _)| *index);
    outcome.stats.failures = outcome.failures.len();
    outcome.first_failure = outcome
        .failures
        .first()
        .map(|(index, _)| (*index, records[*index].sequence_number.clone()));
    outcome
}

/// The aggregate types the processor knows, for callers that need to check first.
pub fn known_aggregate(aggregate_type: &str) -> bool {
    aggregate_type == RideAggregate::TYPE || aggregate_type == VideoAggregate::TYPE
}
