//! In-memory implementations of the ports, for unit tests and examples. They keep the same
//! conditions as the AWS adapters (conditional commit, conditional outbox clear, key expiry)
//! and can be told to fail, to test the error paths of the write protocol.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use timeline_core::envelope::{CommitRecord, StreamKey};
use timeline_core::ports::{ArchiveError, ArchiveStore};
use timeline_core::ports::{
    Checkpoints, Clock, Commit, CommitError, EventLog, Head, IdempotencyRecord, LogError,
    LogRecord, Published, StoreError, StreamReader, WriteModelStore,
};
use timeline_core::ports::{ReadModelError, ReadModelStore, StoredView, ViewWrite};
use timeline_core::shards::{Page, PageEnd, ReadFrom, Shard};
use timeline_core::time::Timestamp;
use timeline_core::views::HistoryEntry;

#[derive(Default)]
struct StoreInner {
    heads: BTreeMap<StreamKey, Head>,
    idempotency: BTreeMap<String, IdempotencyRecord>,
}

/// The write model. `fail_next_confirms(n)` makes the next n outbox confirms fail (a
/// publisher that dies between publish and confirm).
#[derive(Clone, Default)]
pub struct MemoryStore {
    inner: Arc<Mutex<StoreInner>>,
    confirm_failures: Arc<AtomicUsize>,
}

impl MemoryStore {
    pub fn head(&self, key: &StreamKey) -> Option<Head> {
        self.inner.lock().unwrap().heads.get(key).cloned()
    }

    pub fn fail_next_confirms(&self, n: usize) {
        self.confirm_failures.store(n, Ordering::SeqCst);
    }
}

impl WriteModelStore for MemoryStore {
    async fn load_head(&self, key: &StreamKey) -> Result<Option<Head>, StoreError> {
        Ok(self.head(key))
    }

    async fn commit(&self, commit: Commit) -> Result<(), CommitError> {
        let mut inner = self.inner.lock().unwrap();
        let current = inner.heads.get(&commit.head.key).map_or(0, |h| h.version);
        if current != commit.expected_version {
            return Err(CommitError::HeadConflict);
        }
        if let Some(record) = &commit.idempotency {
            if let Some(existing) = inner.idempotency.get(&record.key) {
                if existing.expires_at > commit.now {
                    return Err(CommitError::IdempotencyConflict);
                }
            }
            inner.idempotency.insert(record.key.clone(), record.clone());
        }
        inner.heads.insert(commit.head.key.clone(), commit.head);
        Ok(())
    }

    async fn confirm_published(
        &self,
        key: &StreamKey,
        from: u64,
        through: u64,
    ) -> Result<(), StoreError> {
        let fails = self
            .confirm_failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if fails {
            return Err(StoreError::Unavailable("confirm failed (injected)".into()));
        }
        let mut inner = self.inner.lock().unwrap();
        if let Some(head) = inner.heads.get_mut(key) {
            if head.pending.first().map(|e| e.version) == Some(from) {
                head.pending.retain(|e| e.version > through);
            }
        }
        Ok(())
    }

    async fn remember(&self, record: IdempotencyRecord, now: Timestamp) -> Result<(), CommitError> {
        let mut inner = self.inner.lock().unwrap();
        if let Some(existing) = inner.idempotency.get(&record.key) {
            if existing.expires_at > now {
                return Err(CommitError::IdempotencyConflict);
            }
        }
        inner.idempotency.insert(record.key.clone(), record);
        Ok(())
    }

    async fn load_idempotency(
        &self,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .idempotency
            .get(key)
            .filter(|r| r.expires_at > now)
            .cloned())
    }

    async fn pending_heads(&self, limit: usize) -> Result<Vec<StreamKey>, StoreError> {
        let inner = self.inner.lock().unwrap();
        Ok(inner
            .heads
            .values()
            .filter(|h| !h.pending.is_empty())
            .take(limit)
            .map(|h| h.key.clone())
            .collect())
    }
}

/// An append-only log in one shard. `fail_next(n)` makes the next n publishes fail.
#[derive(Clone, Default)]
pub struct MemoryLog {
    records: Arc<Mutex<Vec<CommitRecord>>>,
    failures: Arc<AtomicUsize>,
}

impl MemoryLog {
    pub fn fail_next(&self, n: usize) {
        self.failures.store(n, Ordering::SeqCst);
    }

    pub fn records(&self) -> Vec<CommitRecord> {
        self.records.lock().unwrap().clone()
    }
}

impl EventLog for MemoryLog {
    async fn publish(&self, record: &CommitRecord) -> Result<Published, LogError> {
        let should_fail = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if should_fail {
            return Err(LogError::Unavailable("injected failure".into()));
        }
        let mut records = self.records.lock().unwrap();
        records.push(record.clone());
        Ok(Published {
            shard_id: "shardId-000000000000".into(),
            sequence_number: records.len().to_string(),
        })
    }
}

/// The log as a reader sees it: one shard holding every hash, sequence numbers counting
/// from 1, arrival at the time of the read (this log keeps no arrival times).
impl StreamReader for MemoryLog {
    async fn shards(&self) -> Result<Vec<Shard>, LogError> {
        Ok(vec![Shard {
            id: MEMORY_SHARD.into(),
            parents: vec![],
            hash_range: (0, u128::MAX),
            closed: false,
        }])
    }

    async fn read(&self, shard: &str, from: &ReadFrom, limit: usize) -> Result<Page, LogError> {
        if shard != MEMORY_SHARD {
            return Err(LogError::Unavailable(format!("no shard {shard}")));
        }
        let number = |seq: &str| {
            seq.parse::<usize>()
                .map_err(|_| LogError::Unavailable(format!("bad sequence number {seq:?}")))
        };
        let start = match from {
            ReadFrom::Oldest | ReadFrom::Time(_) => 0,
            ReadFrom::After(seq) => number(seq)?,
            ReadFrom::At(seq) => number(seq)?.saturating_sub(1),
        };
        let now = Timestamp::from_datetime(chrono::Utc::now());
        let all = self.records.lock().unwrap();
        let records: Vec<LogRecord> = all
            .iter()
            .enumerate()
            .skip(start)
            .take(limit)
            .map(|(i, r)| LogRecord {
                shard_id: MEMORY_SHARD.into(),
                sequence_number: (i + 1).to_string(),
                partition_key: r.partition_key().unwrap_or_default(),
                data: timeline_core::codec::encode_record(r),
                arrival: now,
            })
            .collect();
        let end = if start + records.len() >= all.len() {
            PageEnd::CaughtUp
        } else {
            PageEnd::Behind
        };
        Ok(Page { records, end })
    }

    fn key_hash(&self, _partition_key: &str) -> u128 {
        0
    }
}

const MEMORY_SHARD: &str = "shardId-000000000000";

/// An archive in memory: objects by key. `fail_next_puts(n)` makes the next n writes fail.
#[derive(Clone, Default)]
pub struct MemoryArchive {
    objects: Arc<Mutex<BTreeMap<String, Vec<u8>>>>,
    failures: Arc<AtomicUsize>,
}

impl MemoryArchive {
    pub fn fail_next_puts(&self, n: usize) {
        self.failures.store(n, Ordering::SeqCst);
    }

    pub fn keys(&self) -> Vec<String> {
        self.objects.lock().unwrap().keys().cloned().collect()
    }
}

impl ArchiveStore for MemoryArchive {
    fn prefix(&self) -> &str {
        crate::archive::DEFAULT_PREFIX
    }

    /// Every key (the range is not applied: a superset is what the contract allows).
    async fn list_keys(
        &self,
        _from: Option<Timestamp>,
        _to: Option<Timestamp>,
    ) -> Result<Vec<String>, ArchiveError> {
        Ok(self.keys())
    }

    async fn read_object(&self, key: &str) -> Result<Vec<CommitRecord>, ArchiveError> {
        let bytes = self.objects.lock().unwrap().get(key).cloned();
        match bytes {
            Some(bytes) => crate::archive::decode_object(key, &bytes),
            None => Err(ArchiveError::Unavailable {
                target: key.into(),
                message: "no such object".into(),
            }),
        }
    }

    async fn put_object(&self, key: &str, bytes: Vec<u8>) -> Result<(), ArchiveError> {
        let should_fail = self
            .failures
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
            .is_ok();
        if should_fail {
            return Err(ArchiveError::Unavailable {
                target: key.into(),
                message: "injected failure".into(),
            });
        }
        self.objects.lock().unwrap().insert(key.into(), bytes);
        Ok(())
    }
}

/// Checkpoints in memory, shared by clones: what a restarted follower would load.
#[derive(Clone, Default)]
pub struct MemoryCheckpoints(Arc<Mutex<HashMap<String, String>>>);

impl MemoryCheckpoints {
    pub fn saved(&self) -> HashMap<String, String> {
        self.0.lock().unwrap().clone()
    }
}

impl Checkpoints for MemoryCheckpoints {
    async fn load(&self) -> Result<HashMap<String, String>, LogError> {
        Ok(self.saved())
    }
    async fn save(&self, positions: &HashMap<String, String>) -> Result<(), LogError> {
        *self.0.lock().unwrap() = positions.clone();
        Ok(())
    }
}

/// A clock that stands still until moved.
#[derive(Clone)]
pub struct ManualClock {
    millis: Arc<AtomicI64>,
}

impl ManualClock {
    pub fn at(t: Timestamp) -> Self {
        ManualClock {
            millis: Arc::new(AtomicI64::new(t.as_millis())),
        }
    }

    pub fn advance_millis(&self, millis: i64) {
        self.millis.fetch_add(millis, Ordering::SeqCst);
    }

    pub fn set(&self, t: Timestamp) {
        self.millis.store(t.as_millis(), Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(self.millis.load(Ordering::SeqCst)).expect("clock in range")
    }
}

/// Read models in memory: views and history, with the same conditional write and the same
/// ordering (lists newest first, history oldest first) as the DynamoDB adapter.
#[derive(Clone, Default)]
pub struct MemoryReadModels {
    inner: Arc<Mutex<ReadInner>>,
}

#[derive(Default)]
struct ReadInner {
    /// Views only (no history): memory grows with entities, not events.
    views_only: bool,
    views: BTreeMap<StreamKey, ViewWrite>,
    /// (stream, occurred_at, version) -> entry
    history: BTreeMap<(StreamKey, Timestamp, u64), HistoryEntry>,
    parked: BTreeMap<String, timeline_core::park::Parked>,
}

impl MemoryReadModels {
    /// Keeps views and drops history entries.
    pub fn views_only() -> Self {
        let models = MemoryReadModels::default();
        models.inner.lock().unwrap().views_only = true;
        models
    }

    /// Every view as JSON, keyed by entity (for comparisons in tests).
    pub fn views(&self) -> BTreeMap<StreamKey, serde_json::Value> {
        let inner = self.inner.lock().unwrap();
        inner
            .views
            .iter()
            .map(|(k, w)| (k.clone(), w.view.clone()))
            .collect()
    }

    pub fn history_of(&self, key: &StreamKey) -> Vec<HistoryEntry> {
        let inner = self.inner.lock().unwrap();
        inner
            .history
            .iter()
            .filter(|((k, _, _), _)| k == key)
            .map(|(_, e)| e.clone())
            .collect()
    }
}

/// Reads for tests of what sits on the read models (time travel's index, mostly): history
/// in time order and views by key; lists newest first by update time. One page each (no
/// cursors: a memory store holds what a test puts in it).
impl timeline_core::ports::ReadModelQueries for MemoryReadModels {
    async fn view(&self, key: &StreamKey) -> Result<Option<serde_json::Value>, ReadModelError> {
        Ok(self
            .inner
            .lock()
            .unwrap()
            .views
            .get(key)
            .map(|w| w.view.clone()))
    }

    async fn list(
        &self,
        lookup: &timeline_core::ports::Lookup,
        page: &timeline_core::ports::PageRequest,
    ) -> Result<timeline_core::ports::Page<serde_json::Value>, ReadModelError> {
        let inner = self.inner.lock().unwrap();
        let mut found: Vec<&ViewWrite> = inner
            .views
            .values()
            .filter(|w| w.key.aggregate_type == lookup.aggregate_type)
            .filter(|w| match lookup.kind {
                timeline_core::ports::LookupKind::Status => w.status_family == lookup.value,
                kind => w
                    .lookups
                    .iter()
                    .any(|(name, value)| *name == kind.name() && *value == lookup.value),
            })
            .collect();
        found.sort_by_key(|w| std::cmp::Reverse(w.updated_at));
        Ok(timeline_core::ports::Page {
            items: found
                .into_iter()
                .take(timeline_core::ports::layout::page_limit(page))
                .map(|w| w.view.clone())
                .collect(),
            next_cursor: None,
        })
    }

    async fn history(
        &self,
        key: &StreamKey,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        page: &timeline_core::ports::PageRequest,
    ) -> Result<timeline_core::ports::Page<HistoryEntry>, ReadModelError> {
        Ok(timeline_core::ports::Page {
            items: self
                .history_of(key)
                .into_iter()
                .filter(|e| from.is_none_or(|f| e.occurred_at >= f))
                .filter(|e| to.is_none_or(|t| e.occurred_at <= t))
                .take(timeline_core::ports::layout::page_limit(page))
                .collect(),
            next_cursor: None,
        })
    }
}

impl ReadModelStore for MemoryReadModels {
    async fn load_views(
        &self,
        keys: &[StreamKey],
    ) -> Result<HashMap<StreamKey, StoredView>, ReadModelError> {
        let inner = self.inner.lock().unwrap();
        Ok(keys
            .iter()
            .filter_map(|k| {
                inner.views.get(k).map(|w| {
                    (
                        k.clone(),
                        StoredView {
                            version: w.version,
                            view: w.view.clone(),
                        },
                    )
                })
            })
            .collect())
    }

    async fn write(&self, write: ViewWrite) -> Result<(), ReadModelError> {
        let mut inner = self.inner.lock().unwrap();
        let keep = !inner.views_only;
        for entry in write.history.iter().filter(|_| keep) {
            inner.history.insert(
                (write.key.clone(), entry.occurred_at, entry.version),
                entry.clone(),
            );
        }
        let current = inner.views.get(&write.key).map_or(0, |w| w.version);
        if current != write.expected_version {
            return Err(ReadModelError::Conflict);
        }
        let mut write = write;
        if !keep {
            write.history.clear();
        }
        inner.views.insert(write.key.clone(), write);
        Ok(())
    }

    async fn park(&self, parked: &timeline_core::park::Parked) -> Result<(), ReadModelError> {
        let mut inner = self.inner.lock().unwrap();
        match inner.parked.get_mut(&parked.entity) {
            Some(existing) => existing.again(parked),
            None => {
                inner.parked.insert(parked.entity.clone(), parked.clone());
            }
        }
        Ok(())
    }

    async fn parked(&self) -> Result<Vec<timeline_core::park::Parked>, ReadModelError> {
        let mut all: Vec<_> = self
            .inner
            .lock()
            .unwrap()
            .parked
            .values()
            .cloned()
            .collect();
        timeline_core::park::Parked::sort(&mut all);
        Ok(all)
    }

    async fn parked_entity(
        &self,
        entity: &str,
    ) -> Result<Option<timeline_core::park::Parked>, ReadModelError> {
        Ok(self.inner.lock().unwrap().parked.get(entity).cloned())
    }

    async fn unpark(&self, entity: &str, seen: u64) -> Result<bool, ReadModelError> {
        let mut inner = self.inner.lock().unwrap();
        if inner
            .parked
            .get(entity)
            .is_some_and(|p| p.set_aside == seen)
        {
            inner.parked.remove(entity);
            return Ok(true);
        }
        Ok(false)
    }

    async fn attach_positions(
        &self,
        key: &StreamKey,
        positions: &[timeline_core::ports::PositionOf],
    ) -> Result<(), ReadModelError> {
        let mut inner = self.inner.lock().unwrap();
        for p in positions {
            if let Some(entry) = inner
                .history
                .get_mut(&(key.clone(), p.occurred_at, p.version))
            {
                entry.position.get_or_insert_with(|| p.position.clone());
            }
        }
        Ok(())
    }
}

/// An event bus in memory: keeps what it accepts, in order, and refuses entries on demand
/// (`refuse(id, times)`), as `PutEvents` refuses some entries of a call.
#[derive(Clone, Default)]
pub struct MemoryBus {
    inner: Arc<Mutex<BusInner>>,
}

#[derive(Default)]
struct BusInner {
    accepted: Vec<timeline_core::integration::IntegrationEvent>,
    refusals: HashMap<String, u32>,
    calls: Vec<Vec<String>>,
}

impl MemoryBus {
    /// Refuses the entry with this id the next `times` times it is put (u32::MAX: always).
    pub fn refuse(&self, id: &str, times: u32) {
        self.inner
            .lock()
            .unwrap()
            .refusals
            .insert(id.to_owned(), times);
    }

    pub fn accepted(&self) -> Vec<timeline_core::integration::IntegrationEvent> {
        self.inner.lock().unwrap().accepted.clone()
    }

    /// The ids of each call's entries, in order.
    pub fn calls(&self) -> Vec<Vec<String>> {
        self.inner.lock().unwrap().calls.clone()
    }
}

impl crate::distribute::EventBus for MemoryBus {
    async fn put(
        &self,
        entries: &[timeline_core::integration::IntegrationEvent],
    ) -> Result<Vec<Result<(), String>>, String> {
        let mut inner = self.inner.lock().unwrap();
        inner
            .calls
            .push(entries.iter().map(|e| e.id().to_owned()).collect());
        let mut results = Vec::with_capacity(entries.len());
        for e in entries {
            match inner.refusals.get_mut(e.id()) {
                Some(n) if *n > 0 => {
                    *n = n.saturating_sub(1);
                    results.push(Err("ThrottlingException".to_owned()));
                }
                _ => {
                    inner.accepted.push(e.clone());
                    results.push(Ok(()));
                }
            }
        }
        Ok(results)
    }
}
