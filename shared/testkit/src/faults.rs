//! What AWS documents it may do, on demand: a schedule of faults drawn from a seeded
//! generator, shared by the HTTP fault proxy in front of moto ([`crate::proxy`]) and by
//! wrappers around the ports ([`Faulty`]) for the embedded backend, which has no HTTP to
//! stand in front of.
//!
//! Each fault is a probability per call: throttling (`ProvisionedThroughputExceededException`,
//! `ThrottlingException`, S3's `SlowDown`), a 500, an answer lost after the work was done
//! (the caller cannot tell it happened), a slow answer, an empty `GetRecords` page while the
//! shard holds more, an expired shard iterator, part of a batch left undone, a transaction
//! cancelled by a conflict; and settings: S3 listings and shard listings in small pages,
//! iterators that expire after a short life, Kinesis's 5 reads per second per shard.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use timeline_core::ports::Stored;
use timeline_core::ports::{ArchiveError, ArchiveStore};
use timeline_core::ports::{
    Checkpoints, Commit, CommitError, EventLog, Head, IdempotencyRecord, LogError, LogRecord,
    Published, StoreError, StreamReader, WriteModelStore,
};
use timeline_core::ports::{
    Lookup, Page, PageRequest, Parked, PositionOf, ReadModelError, ReadModelQueries,
    ReadModelStore, StoredView, ViewWrite,
};
use timeline_core::shards::{PageEnd, ReadFrom, Shard};
use timeline_core::views::HistoryEntry;
use timeline_core::CommitRecord;
use timeline_core::StreamKey;
use timeline_core::Timestamp;
pub use timeline_engine::testing::WriteCheck;

/// How often each fault happens (a probability per call) and how the services are shaped.
#[derive(Debug, Clone, PartialEq)]
pub struct Faults {
    /// A call is refused as over its rate.
    pub throttle: f64,
    /// A call fails with a 500 before doing anything.
    pub server_error: f64,
    /// A write is done, and its answer lost: the caller sees a 500.
    pub lost_answer: f64,
    /// A call is slowed by `delay`.
    pub slow: f64,
    pub delay: Duration,
    /// `GetRecords` answers an empty page although the shard holds more.
    pub empty_page: f64,
    /// A shard iterator is found expired.
    pub expire_iterator: f64,
    /// How long a shard iterator lives (Kinesis: 5 minutes).
    pub iterator_life: Duration,
    /// `BatchWriteItem`, `BatchGetItem` and `PutRecords` leave part of the batch undone.
    pub partial_batch: f64,
    /// `TransactWriteItems` is cancelled by a conflict (and a plain write, with
    /// `TransactionConflictException`).
    pub transaction_conflict: f64,
    /// S3 `ListObjectsV2` pages hold at most this many keys.
    pub s3_page: Option<usize>,
    /// `ListShards` pages hold at most this many shards.
    pub shards_page: Option<usize>,
    /// `GetRecords` calls a shard takes per second before throttling (Kinesis: 5).
    pub shard_reads_per_second: Option<usize>,
    /// The operations faults apply to (`GetRecords`, `PutItem`, ...); all when empty.
    pub only: Vec<String>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            throttle: 0.0,
            server_error: 0.0,
            lost_answer: 0.0,
            slow: 0.0,
            delay: Duration::ZERO,
            empty_page: 0.0,
            expire_iterator: 0.0,
            iterator_life: Duration::from_secs(300),
            partial_batch: 0.0,
            transaction_conflict: 0.0,
            s3_page: None,
            shards_page: None,
            shard_reads_per_second: None,
            only: Vec::new(),
        }
    }
}

impl Faults {
    /// No fault at all: the emulator as it is.
    pub fn none() -> Self {
        Faults::default()
    }

    /// Every kind of fault on `rate` of the calls, listings in small pages.
    pub fn all(rate: f64) -> Self {
        Faults {
            throttle: rate,
            server_error: rate,
            lost_answer: rate,
            slow: rate,
            delay: Duration::from_millis(10),
            empty_page: rate,
            expire_iterator: rate,
            partial_batch: rate,
            transaction_conflict: rate,
            s3_page: Some(2),
            shards_page: Some(1),
            ..Faults::default()
        }
    }

    /// A schedule drawn from `seed`: each kind of fault is off or happens on up to
    /// `max` of the calls, and the listings page small or not. Seed 0 is [`Faults::all`]
    /// at `max`, so a run of schedules meets every kind.
    pub fn random(seed: u64, max: f64) -> Self {
        if seed == 0 {
            return Faults::all(max);
        }
        let mut rng = fastrand::Rng::with_seed(seed);
        let mut p = || {
            if rng.bool() {
                0.0
            } else {
                rng.f64() * max
            }
        };
        let (throttle, server_error, lost_answer, slow, empty_page, expire_iterator) =
            (p(), p(), p(), p(), p(), p());
        let (partial_batch, transaction_conflict) = (p(), p());
        Faults {
            throttle,
            server_error,
            lost_answer,
            slow,
            delay: Duration::from_millis(rng.u64(1..15)),
            empty_page,
            expire_iterator,
            iterator_life: Duration::from_secs(300),
            partial_batch,
            transaction_conflict,
            s3_page: rng.bool().then(|| rng.usize(1..4)),
            shards_page: rng.bool().then(|| rng.usize(1..3)),
            shard_reads_per_second: None,
            only: Vec::new(),
        }
    }

    /// Only what a reader meets (no write faults): for answers that must be the same with
    /// and without faults.
    pub fn reads_only(mut self) -> Self {
        self.lost_answer = 0.0;
        self.partial_batch = 0.0;
        self.transaction_conflict = 0.0;
        self
    }

    fn applies_to(&self, operation: &str) -> bool {
        self.only.is_empty() || self.only.iter().any(|o| o == operation)
    }
}

/// A [`Faults`] plan in force, its seeded generator, and a count of what it injected.
#[derive(Debug)]
pub struct Schedule {
    faults: Mutex<Faults>,
    rng: Mutex<fastrand::Rng>,
    injected: Mutex<BTreeMap<String, usize>>,
}

impl Schedule {
    pub fn new(seed: u64, faults: Faults) -> Arc<Self> {
        Arc::new(Schedule {
            faults: Mutex::new(faults),
            rng: Mutex::new(fastrand::Rng::with_seed(seed)),
            injected: Mutex::new(BTreeMap::new()),
        })
    }

    /// Replaces the plan (the generator goes on).
    pub fn set(&self, faults: Faults) {
        *self.faults.lock().unwrap() = faults;
    }

    pub fn faults(&self) -> Faults {
        self.faults.lock().unwrap().clone()
    }

    /// Faults injected so far, by kind.
    pub fn injected(&self) -> BTreeMap<String, usize> {
        self.injected.lock().unwrap().clone()
    }

    pub fn count(&self, kind: &str) {
        *self
            .injected
            .lock()
            .unwrap()
            .entry(kind.to_owned())
            .or_default() += 1;
    }

    /// Does the fault `kind` (probability `pick` of the plan) happen to this call of
    /// `operation`? Counted when it does.
    pub fn roll(&self, operation: &str, kind: &str, pick: impl Fn(&Faults) -> f64) -> bool {
        let faults = self.faults.lock().unwrap();
        if !faults.applies_to(operation) {
            return false;
        }
        let p = pick(&faults);
        drop(faults);
        let hit = p > 0.0 && self.rng.lock().unwrap().f64() < p;
        if hit {
            self.count(kind);
        }
        hit
    }

    /// A number in `range` from the generator.
    pub fn draw(&self, range: std::ops::Range<usize>) -> usize {
        self.rng.lock().unwrap().usize(range)
    }

    /// Waits `delay` if the call is to be slow.
    pub async fn maybe_slow(&self, operation: &str) {
        if self.roll(operation, "slow", |f| f.slow) {
            tokio::time::sleep(self.faults().delay).await;
        }
    }
}

/// What a call meets before it is done.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Before {
    Go,
    Throttled,
    Failed,
}

impl Schedule {
    /// Slowness, then throttling or a 500, for a call of `operation`.
    pub async fn before(&self, operation: &str) -> Before {
        self.maybe_slow(operation).await;
        if self.roll(operation, "throttle", |f| f.throttle) {
            Before::Throttled
        } else if self.roll(operation, "server_error", |f| f.server_error) {
            Before::Failed
        } else {
            Before::Go
        }
    }

    /// Whether the answer of a write just done is lost.
    pub fn lose_answer(&self, operation: &str) -> bool {
        self.roll(operation, "lost_answer", |f| f.lost_answer)
    }
}

/// A port with the faults of a schedule in front of it (see the module documentation).
#[derive(Debug, Clone)]
pub struct Faulty<T> {
    pub inner: T,
    pub schedule: Arc<Schedule>,
}

impl<T> Faulty<T> {
    pub fn new(inner: T, schedule: Arc<Schedule>) -> Self {
        Faulty { inner, schedule }
    }
}

fn log_fault(before: Before, operation: &str) -> Option<LogError> {
    match before {
        Before::Go => None,
        Before::Throttled => Some(LogError::Throttled(format!(
            "{operation}: ProvisionedThroughputExceededException (injected)"
        ))),
        Before::Failed => Some(LogError::Unavailable(format!(
            "{operation}: InternalFailure (injected)"
        ))),
    }
}

fn unavailable(before: Before, operation: &str) -> Option<String> {
    match before {
        Before::Go => None,
        Before::Throttled => Some(format!("{operation}: throttled (injected)")),
        Before::Failed => Some(format!("{operation}: 500 (injected)")),
    }
}

const LOST: &str = "the answer was lost (injected): the work was done";

impl<R: StreamReader> StreamReader for Faulty<R> {
    async fn shards(&self) -> Result<Vec<Shard>, LogError> {
        if let Some(e) = log_fault(self.schedule.before("ListShards").await, "ListShards") {
            return Err(e);
        }
        self.inner.shards().await
    }

    async fn read(
        &self,
        shard: &str,
        from: &ReadFrom,
        limit: usize,
    ) -> Result<timeline_core::shards::Page, LogError> {
        if let Some(e) = log_fault(self.schedule.before("GetRecords").await, "GetRecords") {
            return Err(e);
        }
        let page = self.inner.read(shard, from, limit).await?;
        // An empty page while the shard holds more: the same read later gets them.
        if !page.records.is_empty()
            && self
                .schedule
                .roll("GetRecords", "empty_page", |f| f.empty_page)
        {
            return Ok(timeline_core::shards::Page {
                records: Vec::new(),
                end: PageEnd::Behind,
            });
        }
        Ok(page)
    }

    fn key_hash(&self, partition_key: &str) -> u128 {
        self.inner.key_hash(partition_key)
    }

    async fn read_key(
        &self,
        partition_key: &str,
        from: &ReadFrom,
    ) -> Result<Option<Vec<LogRecord>>, LogError> {
        if let Some(e) = log_fault(self.schedule.before("GetRecords").await, "GetRecords") {
            return Err(e);
        }
        self.inner.read_key(partition_key, from).await
    }
}

impl<L: EventLog> EventLog for Faulty<L> {
    async fn publish(&self, record: &CommitRecord) -> Result<Published, LogError> {
        if let Some(e) = log_fault(self.schedule.before("PutRecord").await, "PutRecord") {
            return Err(e);
        }
        let published = self.inner.publish(record).await?;
        if self.schedule.lose_answer("PutRecord") {
            return Err(LogError::Unavailable(LOST.into()));
        }
        Ok(published)
    }
}

fn archive_fault(before: Before, target: &str) -> Option<ArchiveError> {
    unavailable(before, target).map(|message| ArchiveError::Unavailable {
        target: target.to_owned(),
        message,
    })
}

impl<A: ArchiveStore> ArchiveStore for Faulty<A> {
    fn prefix(&self) -> &str {
        self.inner.prefix()
    }

    async fn list_keys(
        &self,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<Vec<String>, ArchiveError> {
        let before = self.schedule.before("ListObjectsV2").await;
        if let Some(e) = archive_fault(before, self.inner.prefix()) {
            return Err(e);
        }
        self.inner.list_keys(from, to).await
    }

    async fn read_object(&self, key: &str) -> Result<Vec<CommitRecord>, ArchiveError> {
        if let Some(e) = archive_fault(self.schedule.before("GetObject").await, key) {
            return Err(e);
        }
        self.inner.read_object(key).await
    }

    async fn put_object(&self, key: &str, bytes: Vec<u8>) -> Result<(), ArchiveError> {
        if let Some(e) = archive_fault(self.schedule.before("PutObject").await, key) {
            return Err(e);
        }
        self.inner.put_object(key, bytes).await?;
        if self.schedule.lose_answer("PutObject") {
            return Err(ArchiveError::Unavailable {
                target: key.to_owned(),
                message: LOST.into(),
            });
        }
        Ok(())
    }
}

fn read_fault(before: Before, operation: &str) -> Option<ReadModelError> {
    unavailable(before, operation).map(ReadModelError::Unavailable)
}

impl<R: ReadModelQueries> ReadModelQueries for Faulty<R> {
    async fn view(&self, key: &StreamKey) -> Result<Option<serde_json::Value>, ReadModelError> {
        if let Some(e) = read_fault(self.schedule.before("GetItem").await, "GetItem") {
            return Err(e);
        }
        self.inner.view(key).await
    }

    async fn list(
        &self,
        lookup: &Lookup,
        page: &PageRequest,
    ) -> Result<Page<serde_json::Value>, ReadModelError> {
        if let Some(e) = read_fault(self.schedule.before("Query").await, "Query") {
            return Err(e);
        }
        self.inner.list(lookup, page).await
    }

    async fn history(
        &self,
        key: &StreamKey,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        page: &PageRequest,
    ) -> Result<Page<HistoryEntry>, ReadModelError> {
        if let Some(e) = read_fault(self.schedule.before("Query").await, "Query") {
            return Err(e);
        }
        self.inner.history(key, from, to, page).await
    }
}

impl<R: ReadModelStore> ReadModelStore for Faulty<R> {
    async fn load_views(
        &self,
        keys: &[StreamKey],
    ) -> Result<std::collections::HashMap<StreamKey, StoredView>, ReadModelError> {
        if let Some(e) = read_fault(self.schedule.before("BatchGetItem").await, "BatchGetItem") {
            return Err(e);
        }
        self.inner.load_views(keys).await
    }

    async fn write(&self, write: ViewWrite) -> Result<(), ReadModelError> {
        if let Some(e) = read_fault(self.schedule.before("PutItem").await, "PutItem") {
            return Err(e);
        }
        self.inner.write(write).await?;
        if self.schedule.lose_answer("PutItem") {
            return Err(ReadModelError::Unavailable(LOST.into()));
        }
        Ok(())
    }

    async fn attach_positions(
        &self,
        key: &StreamKey,
        positions: &[PositionOf],
    ) -> Result<(), ReadModelError> {
        if let Some(e) = read_fault(self.schedule.before("UpdateItem").await, "UpdateItem") {
            return Err(e);
        }
        self.inner.attach_positions(key, positions).await
    }

    async fn park(&self, parked: &Parked) -> Result<(), ReadModelError> {
        if let Some(e) = read_fault(self.schedule.before("UpdateItem").await, "UpdateItem") {
            return Err(e);
        }
        self.inner.park(parked).await?;
        if self.schedule.lose_answer("UpdateItem") {
            return Err(ReadModelError::Unavailable(LOST.into()));
        }
        Ok(())
    }

    async fn parked(&self) -> Result<Vec<Parked>, ReadModelError> {
        if let Some(e) = read_fault(self.schedule.before("Query").await, "Query") {
            return Err(e);
        }
        self.inner.parked().await
    }

    async fn parked_entity(&self, entity: &str) -> Result<Option<Parked>, ReadModelError> {
        if let Some(e) = read_fault(self.schedule.before("GetItem").await, "GetItem") {
            return Err(e);
        }
        self.inner.parked_entity(entity).await
    }

    async fn unpark(&self, entity: &str, seen: u64) -> Result<bool, ReadModelError> {
        if let Some(e) = read_fault(self.schedule.before("DeleteItem").await, "DeleteItem") {
            return Err(e);
        }
        let done = self.inner.unpark(entity, seen).await?;
        if self.schedule.lose_answer("DeleteItem") {
            return Err(ReadModelError::Unavailable(LOST.into()));
        }
        Ok(done)
    }
}

fn store_fault(before: Before, operation: &str) -> Option<StoreError> {
    unavailable(before, operation).map(StoreError::Unavailable)
}

/// A write's fault as the DynamoDB adapter reports it: a throttled write was refused (not
/// done); after a 500 the caller cannot tell whether it was done.
fn write_fault(before: Before, operation: &str) -> Option<StoreError> {
    match before {
        Before::Go => None,
        Before::Throttled => Some(StoreError::Unavailable(format!(
            "{operation}: throttled (injected)"
        ))),
        Before::Failed => Some(StoreError::Uncertain(format!(
            "{operation}: 500 (injected)"
        ))),
    }
}

impl<S: WriteModelStore> WriteModelStore for Faulty<S> {
    async fn load_head(&self, key: &StreamKey) -> Result<Option<Head>, StoreError> {
        if let Some(e) = store_fault(self.schedule.before("GetItem").await, "GetItem") {
            return Err(e);
        }
        self.inner.load_head(key).await
    }

    async fn commit(&self, commit: Commit) -> Result<(), CommitError> {
        let operation = if commit.idempotency.is_some() {
            "TransactWriteItems"
        } else {
            "PutItem"
        };
        if let Some(e) = write_fault(self.schedule.before(operation).await, operation) {
            return Err(e.into());
        }
        // Cancelled by another transaction on the item: nothing written.
        if self.schedule.roll(operation, "transaction_conflict", |f| {
            f.transaction_conflict
        }) {
            return Err(CommitError::Busy);
        }
        self.inner.commit(commit).await?;
        if self.schedule.lose_answer(operation) {
            return Err(StoreError::Uncertain(LOST.into()).into());
        }
        Ok(())
    }

    async fn remember(&self, record: IdempotencyRecord, now: Timestamp) -> Result<(), CommitError> {
        if let Some(e) = write_fault(self.schedule.before("PutItem").await, "PutItem") {
            return Err(e.into());
        }
        self.inner.remember(record, now).await?;
        if self.schedule.lose_answer("PutItem") {
            return Err(StoreError::Uncertain(LOST.into()).into());
        }
        Ok(())
    }

    async fn confirm_published(
        &self,
        key: &StreamKey,
        from: u64,
        through: u64,
    ) -> Result<(), StoreError> {
        if let Some(e) = write_fault(self.schedule.before("UpdateItem").await, "UpdateItem") {
            return Err(e);
        }
        self.inner.confirm_published(key, from, through).await?;
        if self.schedule.lose_answer("UpdateItem") {
            return Err(StoreError::Uncertain(LOST.into()));
        }
        Ok(())
    }

    async fn load_idempotency(
        &self,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        if let Some(e) = store_fault(self.schedule.before("GetItem").await, "GetItem") {
            return Err(e);
        }
        self.inner.load_idempotency(key, now).await
    }

    async fn pending_heads(&self, limit: usize) -> Result<Vec<StreamKey>, StoreError> {
        if let Some(e) = store_fault(self.schedule.before("Query").await, "Query") {
            return Err(e);
        }
        self.inner.pending_heads(limit).await
    }
}

impl<T: Stored> Stored for Faulty<T> {
    async fn views(
        &self,
        keys: &[StreamKey],
    ) -> Result<std::collections::HashMap<StreamKey, StoredView>, ReadModelError> {
        if let Some(e) = read_fault(self.schedule.before("BatchGetItem").await, "BatchGetItem") {
            return Err(e);
        }
        self.inner.views(keys).await
    }

    async fn head(&self, key: &StreamKey) -> Result<Option<Head>, StoreError> {
        if let Some(e) = store_fault(self.schedule.before("GetItem").await, "GetItem") {
            return Err(e);
        }
        self.inner.head(key).await
    }
}

impl<C: Checkpoints> Checkpoints for Faulty<C> {
    async fn load(&self) -> Result<std::collections::HashMap<String, String>, LogError> {
        self.inner.load().await
    }
    async fn save(
        &self,
        positions: &std::collections::HashMap<String, String>,
    ) -> Result<(), LogError> {
        self.inner.save(positions).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_schedule_is_the_same_for_the_same_seed() {
        let draw = |seed| {
            let s = Schedule::new(
                seed,
                Faults {
                    throttle: 0.5,
                    ..Faults::none()
                },
            );
            (0..50)
                .map(|_| s.roll("GetRecords", "throttle", |f| f.throttle))
                .collect::<Vec<bool>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
        let hits = draw(7).iter().filter(|h| **h).count();
        assert!((10..40).contains(&hits), "{hits}");
    }

    #[test]
    fn faults_apply_only_to_the_operations_named() {
        let s = Schedule::new(
            1,
            Faults {
                throttle: 1.0,
                only: vec!["GetRecords".into()],
                ..Faults::none()
            },
        );
        assert!(s.roll("GetRecords", "throttle", |f| f.throttle));
        assert!(!s.roll("PutRecord", "throttle", |f| f.throttle));
        assert_eq!(s.injected()["throttle"], 1);
    }

    #[test]
    fn no_faults_never_fire_and_random_ones_stay_under_their_bound() {
        let s = Schedule::new(3, Faults::none());
        assert!((0..100).all(|_| !s.roll("PutItem", "throttle", |f| f.throttle)));
        for seed in 0..20 {
            let f = Faults::random(seed, 0.3);
            for p in [f.throttle, f.server_error, f.empty_page, f.partial_batch] {
                assert!((0.0..=0.3).contains(&p), "{f:?}");
            }
            assert_eq!(f.clone().reads_only().lost_answer, 0.0);
        }
    }
}
