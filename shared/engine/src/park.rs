//! The redrive of a parked entity (see `timeline_core::park`): re-project it from the log and
//! end its parking once its view holds every committed version. A redrive and the live
//! processor can run at once: the parking ends only if no record was set aside while the
//! redrive read the log; otherwise it reads again. Nothing set aside is lost: the log keeps
//! every record, and the redrive reads it there.

use crate::projection::{IncomingRecord, Processor, RecordFailure};
use serde::{Deserialize, Serialize};
use timeline_core::codec::encode_record;
use timeline_core::envelope::{CommitRecord, StreamKey};
use timeline_core::park::{ParkReason, Parked};
use timeline_core::ports::{
    EntityRead, EventSource, ReadModelError, ReadModelStore, SourceError, SourceProblem,
};
use timeline_core::time::{Deadline, Timestamp};
use timeline_core::timetravel::{merge, AsOf};

/// What a redrive did.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RedriveReport {
    pub entity: String,
    /// The parking found (none: the entity was not parked, and nothing was done).
    pub parked: Option<Parked>,
    pub events_applied: usize,
    /// The view's version after the redrive, and the latest version committed.
    pub view_version: u64,
    pub latest_version: Option<u64>,
    /// True when the parking ended: the view holds every committed version.
    pub unparked: bool,
    /// Why the entity is still parked, when it is.
    pub still: Option<ParkReason>,
    /// Parts of the log that could not be read.
    pub problems: Vec<SourceProblem>,
}

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("{0:?} names no entity (type#id): nothing can project it")]
    NotAnEntity(String),
    #[error(transparent)]
    Source(#[from] SourceError),
    #[error("read models: {0}")]
    Store(#[from] ReadModelError),
    #[error("records of {0} kept being set aside while it was redriven; try again")]
    Busy(String),
}

/// Times a redrive reads the log again when records were set aside meanwhile.
const REDRIVE_ROUNDS: usize = 5;

/// Re-projects one parked entity from the log and ends its parking when its view then
/// holds every committed version. `processor` must be [`Processor::for_redrive`] over the
/// live read models.
pub async fn redrive<S: EventSource, R: ReadModelStore>(
    source: &S,
    processor: &Processor<R>,
    entity: &str,
    now: Timestamp,
    deadline: &Deadline,
) -> Result<RedriveReport, RedriveError> {
    let key = StreamKey::parse_partition_key(entity)
        .ok_or_else(|| RedriveError::NotAnEntity(entity.to_owned()))?;
    let store = processor.store();
    let mut applied = 0;
    for _ in 0..REDRIVE_ROUNDS {
        let Some(parked) = store.parked_entity(entity).await? else {
            return Ok(RedriveReport {
                entity: entity.to_owned(),
                parked: None,
                events_applied: applied,
                view_version: view_version(store, &key).await?,
                latest_version: None,
                unparked: false,
                still: None,
                problems: Vec::new(),
            });
        };
        if !crate::projection::known_aggregate(&key.aggregate_type) {
            return Ok(RedriveReport {
                entity: entity.to_owned(),
                still: Some(ParkReason::UnknownType {
                    aggregate_type: key.aggregate_type.clone(),
                }),
                parked: Some(parked),
                events_applied: 0,
                view_version: 0,
                latest_version: None,
                unparked: false,
                problems: Vec::new(),
            });
        }
        let found = match source.entity_events(&key, AsOf::Now, deadline).await? {
            EntityRead::Absent => Default::default(),
            EntityRead::Found(found) => found,
        };
        let log = merge(key.clone(), found.events).knowing(found.latest, found.known_times);
        let records: Vec<IncomingRecord> = log
            .events
            .iter()
            .map(|e| IncomingRecord {
                sequence_number: format!("log:{}", e.version),
                partition_key: entity.to_owned(),
                data: encode_record(
                    &CommitRecord::new(vec![e.clone()]).expect("one event is a record"),
                ),
                shard_id: None,
                arrival: None,
            })
            .collect();
        let outcome = processor.process(&records, now).await;
        applied += outcome.stats.events_applied;
        if let Some((_, failure)) = outcome.failures.first() {
            match failure {
                RecordFailure::Store { reason } => {
                    return Err(RedriveError::Store(ReadModelError::Unavailable(
                        reason.clone(),
                    )))
                }
                RecordFailure::Unappliable(_) => {}
            }
        }
        let view_version = view_version(store, &key).await?;
        let latest = log.latest.or(log.events.last().map(|e| e.version));
        let still = match outcome.parked.first() {
            Some(p) => Some(p.reason.clone()),
            None => log
                .missing_up_to(latest.unwrap_or(0))
                .first()
                .map(|missing| ParkReason::Gap {
                    expected: *missing,
                    found: latest.unwrap_or(0),
                }),
        };
        let report = |unparked, still| RedriveReport {
            entity: entity.to_owned(),
            parked: Some(parked.clone()),
            events_applied: applied,
            view_version,
            latest_version: latest,
            unparked,
            still,
            problems: found.problems.clone(),
        };
        if still.is_some() {
            return Ok(report(false, still));
        }
        if store.unpark(entity, parked.set_aside).await? {
            return Ok(report(true, None));
        }
    }
    Err(RedriveError::Busy(entity.to_owned()))
}

async fn view_version<R: ReadModelStore>(
    store: &R,
    key: &StreamKey,
) -> Result<u64, ReadModelError> {
    Ok(store
        .load_views(std::slice::from_ref(key))
        .await?
        .get(key)
        .map_or(0, |v| v.version))
}
