//! The ports: every trait the system is written against, in one place. The write model and
//! the log are here; the read models in [`read`], the archive in [`archive`], the log as one
//! source of an entity's events in [`source`]. The AWS adapters live in `timeline-aws`, the
//! embedded ones in `timeline-embedded`, the in-memory ones in `timeline_engine::memory`.
//!
//! Methods return `impl Future + Send` so generic callers (Lambda handlers, spawned tasks)
//! can hold them across `.await` on a multi-threaded runtime.

use crate::envelope::{CommitRecord, EventEnvelope, StreamKey};
use crate::shards::{ReadFrom, Shard};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::future::Future;

pub mod archive;
pub mod read;
pub mod source;

pub use archive::{ArchiveError, ArchiveStore};
pub use read::*;
pub use source::*;

/// The write-model item of one entity: its version, a snapshot of its state at that
/// version, and the outbox of events committed but not yet confirmed published.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Head {
    pub key: StreamKey,
    pub version: u64,
    pub state: serde_json::Value,
    /// Contiguous, in version order, ending at `version` whenever non-empty.
    pub pending: Vec<EventEnvelope>,
    pub last_occurred_at: Option<Timestamp>,
    pub updated_at: Timestamp,
    /// When the entity's first event was recorded (None on heads written before this was
    /// kept): where to start looking for its records on the stream.
    #[serde(default)]
    pub created_at: Option<Timestamp>,
}

/// A stored response for an `Idempotency-Key`. It expires at a whole second (both stores
/// compare expiry in whole seconds, as DynamoDB's TTL attribute holds it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub key: String,
    /// Hash of method, path and body: the same key with another request is refused.
    pub fingerprint: String,
    pub stream: StreamKey,
    pub version: u64,
    pub outcome: serde_json::Value,
    pub expires_at: Timestamp,
}

/// One atomic write: the new head (conditional on the version read) and, if the request
/// had a key, its idempotency record (conditional on the key being unused or expired).
#[derive(Debug, Clone)]
pub struct Commit {
    pub expected_version: u64,
    pub head: Head,
    pub idempotency: Option<IdempotencyRecord>,
    pub now: Timestamp,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum StoreError {
    /// The call failed and wrote nothing (a read, or a write the store refused: throttled,
    /// cancelled, invalid).
    #[error("write-model store unavailable: {0}")]
    Unavailable(String),
    /// A write whose answer was lost (a timeout, a 500, a dropped connection): it may or may
    /// not have been done.
    #[error("write-model store gave no answer: {0}")]
    Uncertain(String),
    #[error("write-model item is corrupt: {0}")]
    Corrupt(String),
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum CommitError {
    #[error("the head moved since it was read")]
    HeadConflict,
    #[error("the idempotency key is already in use")]
    IdempotencyConflict,
    /// The head is in another transaction right now (DynamoDB's `TransactionConflict`):
    /// nothing was written, and the same commit may succeed a moment later.
    #[error("the head is being written by another transaction")]
    Busy,
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub trait WriteModelStore: Send + Sync {
    /// A strongly consistent read of the head.
    fn load_head(
        &self,
        key: &StreamKey,
    ) -> impl Future<Output = Result<Option<Head>, StoreError>> + Send;

    fn commit(&self, commit: Commit) -> impl Future<Output = Result<(), CommitError>> + Send;

    /// Commits as [`commit`](Self::commit) does and, in a store that keeps the commands' log
    /// in the same database (the embedded backend), appends the new head's whole outbox to
    /// that log as one record in the same transaction, leaving nothing pending and nothing
    /// to confirm: the write protocol's steps 3 and 4 as one atomic step. `Some` says where
    /// the record went; `None` (the default, and any store whose log is elsewhere) means the
    /// events wait in the outbox for the publish step.
    fn commit_and_append(
        &self,
        commit: Commit,
    ) -> impl Future<Output = Result<Option<Published>, CommitError>> + Send {
        async move { self.commit(commit).await.map(|()| None) }
    }

    /// Drops outbox events `from..=through` once a record holding them is on the log.
    /// Conditional, so it never drops events it did not publish.
    fn confirm_published(
        &self,
        key: &StreamKey,
        from: u64,
        through: u64,
    ) -> impl Future<Output = Result<(), StoreError>> + Send;

    /// Stores an answer under a key without changing any head (a command that changed
    /// nothing, or a refusal), unless the key is in use and not expired at `now`
    /// (`IdempotencyConflict`).
    fn remember(
        &self,
        record: IdempotencyRecord,
        now: Timestamp,
    ) -> impl Future<Output = Result<(), CommitError>> + Send;

    /// The record for a key, if any and not expired at `now`.
    fn load_idempotency(
        &self,
        key: &str,
        now: Timestamp,
    ) -> impl Future<Output = Result<Option<IdempotencyRecord>, StoreError>> + Send;

    /// Entities whose outbox holds events (a sparse index), oldest first.
    fn pending_heads(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Vec<StreamKey>, StoreError>> + Send;
}

/// Where a record landed on the log.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Published {
    pub shard_id: String,
    /// Opaque: Kinesis sequence numbers are compared as Kinesis defines, never parsed.
    pub sequence_number: String,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum LogError {
    #[error("event log unavailable: {0}")]
    Unavailable(String),
    /// Over the log's documented rate (Kinesis: 5 reads or 2 MB per second per shard,
    /// shared by every consumer); the same call succeeds later.
    #[error("event log throttled: {0}")]
    Throttled(String),
    #[error("record of {0} bytes is over the log's limit")]
    TooLarge(usize),
}

impl LogError {
    /// Worth trying again after a pause.
    pub fn is_throttled(&self) -> bool {
        matches!(self, LogError::Throttled(_))
    }
}

/// The largest record a log takes (data plus partition key), as Kinesis.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// A commit record as a log stores it: its partition key and bytes, checked against
/// [`MAX_RECORD_BYTES`].
pub fn log_entry(record: &CommitRecord) -> Result<(String, Vec<u8>), LogError> {
    let partition_key = record
        .partition_key()
        .ok_or_else(|| LogError::Unavailable("empty commit record".into()))?;
    let data = crate::codec::encode_record(record);
    if data.len() + partition_key.len() > MAX_RECORD_BYTES {
        return Err(LogError::TooLarge(data.len()));
    }
    Ok((partition_key, data))
}

pub trait EventLog: Send + Sync {
    fn publish(
        &self,
        record: &CommitRecord,
    ) -> impl Future<Output = Result<Published, LogError>> + Send;
}

pub trait Clock: Send + Sync {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_datetime(chrono::Utc::now())
    }
}

/// One record as the log holds it, for readers that follow a shard (the event source
/// mapping, the archive pump).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub shard_id: String,
    /// Opaque; ordered within its shard as `timeline_engine::sequence::compare` says.
    pub sequence_number: String,
    pub partition_key: String,
    pub data: Vec<u8>,
    /// When the log received it (Kinesis's approximate arrival timestamp).
    pub arrival: Timestamp,
}

/// Where the record that carried an event sits on the log: kept with the event in the
/// history read model, so a reader of one entity goes straight to its records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogPosition {
    pub shard_id: String,
    pub sequence_number: String,
    /// When the log received it (Firehose names archive objects by this time).
    pub arrival: Timestamp,
}

/// Reads the log shard by shard, as Kinesis consumers do (see [`crate::shards`]).
pub trait StreamReader: Send + Sync {
    /// Every shard the log holds now, open and closed.
    fn shards(&self) -> impl Future<Output = Result<Vec<Shard>, LogError>> + Send;

    /// Up to `limit` records of `shard` from `from`, in order, and what the shard says
    /// follows them. An empty page that ends [`PageEnd::Behind`](crate::shards::PageEnd) is
    /// not the end: read again from the same `from` (a reader that keeps iterators, as the
    /// Kinesis one does, goes on from where the empty page left it).
    fn read(
        &self,
        shard: &str,
        from: &ReadFrom,
        limit: usize,
    ) -> impl Future<Output = Result<crate::shards::Page, LogError>> + Send;

    /// Where a partition key falls in the shards' hash ranges (Kinesis: its MD5).
    fn key_hash(&self, partition_key: &str) -> u128;

    /// One partition key's records from `from` on its shard, in order, when the log has an
    /// index for them; None when it has not (Kinesis), and callers read the key's shards.
    fn read_key(
        &self,
        _partition_key: &str,
        _from: &ReadFrom,
    ) -> impl Future<Output = Result<Option<Vec<LogRecord>>, LogError>> + Send {
        async { Ok(None) }
    }
}

/// Where a follower of the log (the archive pump, the event source mapping) keeps the last
/// sequence number it finished per shard, so a restart continues instead of starting over.
pub trait Checkpoints: Send + Sync {
    fn load(
        &self,
    ) -> impl Future<Output = Result<std::collections::HashMap<String, String>, LogError>> + Send;
    fn save(
        &self,
        positions: &std::collections::HashMap<String, String>,
    ) -> impl Future<Output = Result<(), LogError>> + Send;
}

/// Positions kept in memory only: a restarted follower reads from the oldest record again
/// (at least once; readers dedupe).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoCheckpoints;

impl Checkpoints for NoCheckpoints {
    async fn load(&self) -> Result<std::collections::HashMap<String, String>, LogError> {
        Ok(Default::default())
    }
    async fn save(
        &self,
        _positions: &std::collections::HashMap<String, String>,
    ) -> Result<(), LogError> {
        Ok(())
    }
}

/// The most records one read returns (the `GetRecords` maximum).
pub const MAX_READ: usize = 10_000;
