//! The projection of a stream batch into read models, with at-least-once delivery in mind:
//! apply an event only if it is the next version of its view, skip duplicates, never apply
//! out of order, and coalesce each entity's changes into one conditional view write per
//! batch. A batch's entities are written concurrently (bounded), in order within each.
//!
//! A record that can never be applied (undecodable, unknown to this processor, a gap, a
//! write the store refuses) parks its entity (see [`crate::park`]) and the batch goes on.
//! What a retry may fix (the store unavailable, throttled, a view that moved) is a failure:
//! the result names the first such record, so the Lambda can answer `batchItemFailures`
//! and Kinesis redelivers from there; everything after it that was applied comes back as
//! duplicates and is skipped.

use futures::future::BoxFuture;
use futures::stream::{self, StreamExt};
use serde::Serialize;
use std::collections::{HashMap, HashSet};
use timeline_core::codec::{decode_event, decode_record};
use timeline_core::envelope::{EventEnvelope, StreamKey};
use timeline_core::park::{ParkReason, Parked};
use timeline_core::ports::{ReadModelError, ReadModelStore, StoredView, ViewWrite};
use timeline_core::time::Timestamp;
use timeline_core::views::{project, View};
use timeline_core::{Entity, Visitor};

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

/// A record as the log serves it, as the processor takes it.
impl From<&timeline_core::ports::LogRecord> for IncomingRecord {
    fn from(r: &timeline_core::ports::LogRecord) -> Self {
        IncomingRecord {
            sequence_number: r.sequence_number.clone(),
            partition_key: r.partition_key.clone(),
            data: r.data.clone(),
            shard_id: Some(r.shard_id.clone()),
            arrival: Some(r.arrival),
        }
    }
}

impl IncomingRecord {
    pub fn position(&self) -> Option<timeline_core::ports::LogPosition> {
        Some(timeline_core::ports::LogPosition {
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
    /// Cannot succeed however often it is retried (see [`ParkReason`]): the live processor
    /// parks the entity instead of reporting it; a replay reports it.
    Unappliable(ParkReason),
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
    /// Entities parked by this batch (again, when they already were).
    pub entities_parked: usize,
    /// Records set aside because their entity is parked (the one that parked it included).
    pub records_set_aside: usize,
    /// Largest `now - occurred_at` among applied events, in milliseconds.
    pub max_lag_ms: Option<i64>,
}

impl BatchStats {
    fn add(&mut self, other: &BatchStats) {
        self.events_applied += other.events_applied;
        self.duplicates_skipped += other.duplicates_skipped;
        self.entities_written += other.entities_written;
        self.entities_parked += other.entities_parked;
        self.records_set_aside += other.records_set_aside;
        self.max_lag_ms = match (self.max_lag_ms, other.max_lag_ms) {
            (Some(a), Some(b)) => Some(a.max(b)),
            (a, b) => a.or(b),
        };
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct BatchOutcome {
    /// The first record that could not be applied: report it in `batchItemFailures`.
    pub first_failure: Option<(usize, String)>,
    /// Every failure, by record index, for logs and metrics.
    pub failures: Vec<(usize, RecordFailure)>,
    /// Entities parked by this batch (the live processor has stored these; a redrive only
    /// reports them).
    pub parked: Vec<Parked>,
    pub stats: BatchStats,
}

struct EntityRun {
    key: StreamKey,
    /// (record index, event) in delivery order.
    events: Vec<(usize, EventEnvelope)>,
}

/// What the processor does with a record it can never apply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Parks the entity and goes on (the processor Lambda).
    Live,
    /// Reports it as a failure, and records stream positions met again (rebuilds).
    Replay,
    /// Says it would park, without storing it (a redrive, which keeps the parking).
    Redrive,
}

/// Entities written at once by default: a batch of 100 records is a few rounds of store
/// calls, not a hundred (see the README's capacity model).
pub const DEFAULT_CONCURRENCY: usize = 32;

pub struct Processor<R> {
    store: R,
    mode: Mode,
    concurrency: usize,
}

impl<R: ReadModelStore> Processor<R> {
    /// The live processor: parks what it can never apply.
    pub fn new(store: R) -> Self {
        Processor {
            store,
            mode: Mode::Live,
            concurrency: DEFAULT_CONCURRENCY,
        }
    }

    /// A processor for replays: reports what it cannot apply, and records the stream
    /// position of events met again (applied from the archive first), so the history
    /// entries end as live processing leaves them.
    pub fn for_replay(store: R) -> Self {
        Processor {
            mode: Mode::Replay,
            ..Processor::new(store)
        }
    }

    /// A processor for [`crate::park::redrive`]: reports a parking without storing it.
    pub fn for_redrive(store: R) -> Self {
        Processor {
            mode: Mode::Redrive,
            ..Processor::new(store)
        }
    }

    /// At most `n` entities written at once (1: one after another).
    pub fn with_concurrency(mut self, n: usize) -> Self {
        self.concurrency = n.max(1);
        self
    }

    pub fn store(&self) -> &R {
        &self.store
    }

    pub async fn process(&self, records: &[IncomingRecord], now: Timestamp) -> BatchOutcome {
        let mut outcome = BatchOutcome::default();
        outcome.stats.records = records.len();
        // A replay reports the first failure of a key and stops that key there; the live
        // processor lets each later record decide for itself (a gap parks it too).
        let mut blocked: HashSet<String> = HashSet::new();
        let mut unappliable: Vec<(usize, Option<StreamKey>, ParkReason)> = Vec::new();
        let mut runs: Vec<EntityRun> = Vec::new();
        let mut run_of: HashMap<StreamKey, usize> = HashMap::new();

        for (index, record) in records.iter().enumerate() {
            if blocked.contains(&record.partition_key) {
                continue;
            }
            match decode(record) {
                Err(reason) => {
                    tracing::error!(index, sequence_number = %record.sequence_number, ?reason, "record cannot be applied");
                    unappliable.push((index, None, reason));
                    if self.mode == Mode::Replay {
                        blocked.insert(record.partition_key.clone());
                    }
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
        let mut stored = if keys.is_empty() {
            HashMap::new()
        } else {
            match self.store.load_views(&keys).await {
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
            }
        };

        // The futures are made first (a closure returning an async block would not be
        // `Send` for every lifetime), then run at most `concurrency` at once, in order.
        let pending: Vec<_> = runs
            .iter()
            // Each entity's view is taken, not copied: one run per entity.
            .map(|run| self.apply_run(run, records, stored.remove(&run.key), now))
            .collect();
        let ends: Vec<RunEnd> = stream::iter(pending)
            .buffered(self.concurrency)
            .collect()
            .await;
        for (run, end) in runs.iter().zip(ends) {
            outcome.stats.add(&end.stats);
            match end.failure {
                None => {}
                Some((index, RecordFailure::Unappliable(reason))) => {
                    unappliable.push((index, Some(run.key.clone()), reason));
                }
                Some(failure) => outcome.failures.push(failure),
            }
        }

        for (index, key, reason) in unappliable {
            if self.mode == Mode::Replay {
                outcome
                    .failures
                    .push((index, RecordFailure::Unappliable(reason)));
                continue;
            }
            let record = &records[index];
            let entity = key.map_or_else(|| record.partition_key.clone(), |k| k.partition_key());
            // This record and every later one of the entity in the batch are set aside.
            let set_aside = records[index..]
                .iter()
                .filter(|r| r.partition_key == record.partition_key)
                .count() as u64;
            let parked = Parked {
                entity,
                from_version: match &reason {
                    ParkReason::Gap { expected, .. } => Some(*expected),
                    ParkReason::UnreadableEvent { version, .. } => Some(*version),
                    _ => first_version(record),
                },
                shard_id: record.shard_id.clone(),
                sequence_number: record.sequence_number.clone(),
                reason,
                parked_at: now,
                set_aside,
            };
            if self.mode == Mode::Live {
                if let Err(e) = self.store.park(&parked).await {
                    outcome.failures.push((
                        index,
                        RecordFailure::Store {
                            reason: format!("parking {}: {e}", parked.entity),
                        },
                    ));
                    continue;
                }
                tracing::error!(entity = %parked.entity, reason = ?parked.reason, set_aside, "entity parked");
            }
            outcome.stats.entities_parked += 1;
            outcome.stats.records_set_aside += set_aside as usize;
            outcome.parked.push(parked);
        }
        finish(outcome, records)
    }

    async fn apply_run(
        &self,
        run: &EntityRun,
        records: &[IncomingRecord],
        current: Option<StoredView>,
        now: Timestamp,
    ) -> RunEnd {
        let apply = Apply {
            processor: self,
            run,
            records,
            current,
            now,
        };
        match timeline_core::dispatch(&run.key.aggregate_type, apply) {
            Ok(applying) => applying.await,
            // `decode` parks unregistered types first; this keeps the refusal explicit.
            Err(e) => RunEnd::failed(
                BatchStats::default(),
                run.events[0].0,
                RecordFailure::Unappliable(ParkReason::UnknownType {
                    aggregate_type: e.0,
                }),
            ),
        }
    }

    /// Folds one entity's events onto its stored view and writes the result once.
    async fn apply<A: Entity>(
        &self,
        run: &EntityRun,
        records: &[IncomingRecord],
        current: Option<StoredView>,
        now: Timestamp,
    ) -> RunEnd {
        let mut stats = BatchStats::default();
        let expected_version = current.as_ref().map_or(0, |c| c.version);
        let mut view: Option<View<A::State>> = match current {
            None => None,
            Some(c) => match serde_json::from_value(c.view) {
                Ok(v) => Some(v),
                Err(e) => {
                    let reason = format!("stored view of {} is unreadable: {e}", run.key);
                    return RunEnd::failed(
                        stats,
                        run.events[0].0,
                        RecordFailure::Unappliable(ParkReason::UnreadableView { reason }),
                    );
                }
            },
        };
        let mut history = Vec::new();
        let mut failure = None;
        let mut first_applied: Option<(usize, u64)> = None;
        let mut positions = Vec::new();
        for (index, envelope) in &run.events {
            let version = view.as_ref().map_or(0, |v| v.version);
            if envelope.version <= version {
                stats.duplicates_skipped += 1;
                if let Some(position) = records[*index]
                    .position()
                    .filter(|_| self.mode == Mode::Replay)
                {
                    positions.push(timeline_core::ports::PositionOf {
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
                    RecordFailure::Unappliable(ParkReason::Gap {
                        expected: version + 1,
                        found: envelope.version,
                    }),
                ));
                break;
            }
            let event = match decode_event::<A>(envelope) {
                Ok(event) => event,
                Err(e) => {
                    tracing::error!(stream = %run.key, version = envelope.version, error = %e, "undecodable event");
                    failure = Some((
                        *index,
                        RecordFailure::Unappliable(ParkReason::UnreadableEvent {
                            version: envelope.version,
                            reason: e.to_string(),
                        }),
                    ));
                    break;
                }
            };
            let (next, mut entry) = project::<A>(view, envelope, &event);
            entry.position = records[*index].position();
            view = Some(next);
            history.push(entry);
            first_applied.get_or_insert((*index, envelope.version));
            let lag = now.as_millis() - envelope.occurred_at.as_millis();
            stats.max_lag_ms = Some(stats.max_lag_ms.map_or(lag, |m| m.max(lag)));
        }
        if !positions.is_empty() {
            // A replay ends with the entries live processing leaves: a failure here is the
            // record's, to be tried again.
            if let Err(e) = self.store.attach_positions(&run.key, &positions).await {
                let first = run.events.iter().map(|(i, _)| *i).min().unwrap_or(0);
                return RunEnd::failed(
                    stats,
                    first,
                    RecordFailure::Store {
                        reason: e.to_string(),
                    },
                );
            }
        }
        let (Some(view), Some((first_applied, first_version))) = (view, first_applied) else {
            return RunEnd { stats, failure };
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
                RunEnd { stats, failure }
            }
            Err(ReadModelError::Refused(reason)) => {
                tracing::error!(stream = %run.key, version = first_version, %reason, "the read models refuse the view");
                RunEnd::failed(
                    stats,
                    first_applied,
                    RecordFailure::Unappliable(ParkReason::Refused { reason }),
                )
            }
            Err(e) => {
                if e == ReadModelError::Conflict {
                    tracing::warn!(stream = %run.key, "view moved under us; will retry");
                }
                RunEnd::failed(
                    stats,
                    first_applied,
                    RecordFailure::Store {
                        reason: e.to_string(),
                    },
                )
            }
        }
    }
}

/// How one entity's part of a batch ended.
struct RunEnd {
    stats: BatchStats,
    /// The record it stopped at, and why.
    failure: Option<(usize, RecordFailure)>,
}

impl RunEnd {
    fn failed(stats: BatchStats, index: usize, failure: RecordFailure) -> Self {
        RunEnd {
            stats,
            failure: Some((index, failure)),
        }
    }
}

/// The entity and events of a record, or why it names none this processor projects.
fn decode(record: &IncomingRecord) -> Result<(StreamKey, Vec<EventEnvelope>), ParkReason> {
    let commit = decode_record(&record.data).map_err(|e| ParkReason::Undecodable {
        reason: e.to_string(),
    })?;
    let key = commit
        .stream_key()
        .expect("validated records are not empty");
    if !key.is_partition_key(&record.partition_key) {
        return Err(ParkReason::Undecodable {
            reason: format!(
                "record for {key} arrived under partition key {}",
                record.partition_key
            ),
        });
    }
    if !known_aggregate(&key.aggregate_type) {
        return Err(ParkReason::UnknownType {
            aggregate_type: key.aggregate_type,
        });
    }
    Ok((key, commit.events))
}

/// The first version a record holds, if it can be read that far.
fn first_version(record: &IncomingRecord) -> Option<u64> {
    decode_record(&record.data)
        .ok()
        .and_then(|c| c.events.first().map(|e| e.version))
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

/// Whether the registry knows the aggregate type, for callers that need to check first.
pub fn known_aggregate(aggregate_type: &str) -> bool {
    timeline_core::registry::kind(aggregate_type).is_ok()
}

/// [`Processor::apply`] for the aggregate type a run names.
struct Apply<'a, R> {
    processor: &'a Processor<R>,
    run: &'a EntityRun,
    records: &'a [IncomingRecord],
    current: Option<StoredView>,
    now: Timestamp,
}

impl<'a, R: ReadModelStore> Visitor for Apply<'a, R> {
    type Output = BoxFuture<'a, RunEnd>;

    fn visit<A: Entity>(self) -> Self::Output {
        Box::pin(
            self.processor
                .apply::<A>(self.run, self.records, self.current, self.now),
        )
    }
}
