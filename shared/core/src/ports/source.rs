//! The log as one source, for answers about an entity and for replays of everything: the
//! port the hydrator and the redrive read through (the log source of `timeline-engine`
//! implements it over the archive and the stream), and what verify reads of what is stored.

use crate::envelope::{CommitRecord, EventEnvelope, StreamKey};
use crate::ports::read::{ReadModelError, StoredView};
use crate::ports::{Head, StoreError};
use crate::time::{Deadline, Timestamp};
use crate::timetravel::AsOf;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::future::Future;

/// A run of commit records in log order, with a position to resume after it.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayChunk {
    pub records: Vec<CommitRecord>,
    /// Where each record sits on the stream, for records read from it (empty for the
    /// archive, which keeps no positions).
    pub positions: Vec<crate::ports::LogPosition>,
    /// Opaque position: pass it back to continue after this chunk.
    pub position: String,
    /// Problems met while reading this chunk (a corrupt object, with its key).
    pub problems: Vec<SourceProblem>,
    /// Progress: units (e.g. archive objects) read so far, and in all when known.
    pub done: usize,
    pub total: Option<usize>,
    /// When the chunk's records arrived, roughly (an archive object's name time); None on
    /// the stream tail.
    pub arrived: Option<Timestamp>,
}

/// Something wrong in the log itself, reported with where it was found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SourceProblem {
    pub location: String,
    pub reason: String,
}

/// The log could not be read now; the same read may succeed later (answer "retry later",
/// never a partial answer marked complete).
#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SourceError {
    #[error("event log unreadable: {0}")]
    Unavailable(String),
    #[error("out of time reading the event log: {0}")]
    OutOfTime(String),
}

/// One entity's part of the log, as an answer about one point needs it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EntityEvents {
    /// Copies of its events, from every place they may be, in any order, duplicates allowed.
    pub events: Vec<EventEnvelope>,
    /// The latest version committed (the write model's head), when the source knows it.
    pub latest: Option<u64>,
    /// When the versions an index knows happened.
    pub known_times: BTreeMap<u64, Timestamp>,
    /// Parts of the log that could not be read (a corrupt object), with where they are.
    pub problems: Vec<SourceProblem>,
}

/// What the log says of one entity.
#[derive(Debug, Clone, PartialEq)]
pub enum EntityRead {
    /// It did not exist at that point: the write model and the index say so, and the log
    /// was not read.
    Absent,
    Found(EntityEvents),
}

/// The whole log and each entity's part of it (the archive plus the stream tail).
pub trait EventSource: Send + Sync {
    /// The copies of one entity's events an answer about `as_of` needs (at least every
    /// version up to that point the log holds), read before `deadline`.
    fn entity_events(
        &self,
        key: &StreamKey,
        as_of: AsOf,
        deadline: &Deadline,
    ) -> impl Future<Output = Result<EntityRead, SourceError>> + Send;

    /// The next part of the whole log in order, after `position` (from the start if None);
    /// None at the end. Pulled one chunk at a time, so a replay holds one chunk in memory.
    fn next_chunk(
        &self,
        position: Option<&str>,
        deadline: &Deadline,
    ) -> impl Future<Output = Result<Option<ReplayChunk>, SourceError>> + Send;
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
