//! The write model: one row per entity in `heads` (version, state snapshot, outbox) and one
//! per key in `idempotency`, with the conditions of the DynamoDB store (`timeline-aws`'s
//! `write_store.rs`) and of `timeline_engine::memory::MemoryStore`:
//!
//! - a commit is all or nothing (a savepoint of the writer's transaction, see `writer`): the
//!   head moves from the version read (absent counts as 0) and the idempotency record goes
//!   in only if its key is unused or expired, else nothing is written (`HeadConflict` /
//!   `IdempotencyConflict`; the key is checked first, as the DynamoDB transaction reports it);
//! - `confirm_published` drops the published prefix of the outbox only if the outbox still
//!   starts at `from`;
//! - `pending_since` (the recorded time of the oldest pending event, NULL when the outbox is
//!   empty) is the key of the sparse index the sweep reads, oldest first.

use crate::Embedded;
use rusqlite::{params, Connection, OptionalExtension};
use timeline_core::ports::Stored;
use timeline_core::ports::{
    log_entry, Commit, CommitError, Head, IdempotencyRecord, Published, StoreError, WriteModelStore,
};
use timeline_core::ports::{ReadModelError, StoredView};
use timeline_core::StreamKey;
use timeline_core::Timestamp;
use timeline_core::{CommitRecord, EventEnvelope};

fn unavailable(e: rusqlite::Error) -> StoreError {
    StoreError::Unavailable(format!("sqlite: {e}"))
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

fn timestamp(text: &str, what: &str) -> Result<Timestamp, StoreError> {
    text.parse()
        .map_err(|_| corrupt(format!("{what} is not a timestamp: {text:?}")))
}

fn millis(at: i64, what: &str) -> Result<Timestamp, StoreError> {
    Timestamp::from_millis(at).ok_or_else(|| corrupt(format!("{what} out of range: {at}")))
}

struct HeadRow {
    pk: String,
    aggregate_type: String,
    aggregate_id: String,
    version: i64,
    state: String,
    pending: String,
    last_occurred_at: Option<String>,
    updated_at: String,
    created_at: Option<String>,
}

impl HeadRow {
    fn into_head(self) -> Result<Head, StoreError> {
        let pending: Vec<EventEnvelope> = serde_json::from_str(&self.pending)
            .map_err(|e| corrupt(format!("outbox of {}: {e}", self.pk)))?;
        Ok(Head {
            key: StreamKey::new(self.aggregate_type, self.aggregate_id),
            version: self.version as u64,
            state: serde_json::from_str(&self.state)
                .map_err(|e| corrupt(format!("state of {}: {e}", self.pk)))?,
            pending,
            last_occurred_at: self
                .last_occurred_at
                .as_deref()
                .map(|t| timestamp(t, "last_occurred_at"))
                .transpose()?,
            updated_at: timestamp(&self.updated_at, "updated_at")?,
            created_at: self
                .created_at
                .as_deref()
                .map(|t| timestamp(t, "created_at"))
                .transpose()?,
        })
    }
}

fn load_head(conn: &Connection, key: &StreamKey) -> Result<Option<Head>, StoreError> {
    conn.prepare_cached(
        "SELECT pk, aggregate_type, aggregate_id, version, state, pending, last_occurred_at,
                updated_at, created_at
         FROM heads WHERE pk = ?1",
    )
    .and_then(|mut s| {
        s.query_row([key.partition_key()], |row| {
            Ok(HeadRow {
                pk: row.get(0)?,
                aggregate_type: row.get(1)?,
                aggregate_id: row.get(2)?,
                version: row.get(3)?,
                state: row.get(4)?,
                pending: row.get(5)?,
                last_occurred_at: row.get(6)?,
                updated_at: row.get(7)?,
                created_at: row.get(8)?,
            })
        })
        .optional()
    })
    .map_err(unavailable)?
    .map(HeadRow::into_head)
    .transpose()
}

fn version_param(version: u64) -> Result<i64, StoreError> {
    i64::try_from(version).map_err(|_| corrupt(format!("version {version} is out of range")))
}

/// A commit as rows: encoded before it is queued, so the writer's thread (which every write
/// in the database waits for) only runs the SQL.
struct CommitRows {
    pk: String,
    aggregate_type: String,
    aggregate_id: String,
    expected_version: u64,
    version: i64,
    state: String,
    pending: String,
    pending_from: Option<i64>,
    pending_since: Option<i64>,
    last_occurred_at: Option<String>,
    updated_at: String,
    created_at: Option<String>,
    idempotency: Option<IdempotencyRow>,
    now: Timestamp,
    /// The log's shard count and the record (partition key, data, arrival) appended with
    /// the head.
    append: Option<(u32, String, Vec<u8>, Timestamp)>,
}

impl CommitRows {
    /// With `log` (a shard count: this database's log is the commands' log), the new head's
    /// whole outbox also goes onto the log as one record in the same transaction and the
    /// head is stored with nothing pending. A record the log would refuse (too large) stays
    /// in the outbox for the publish step to report.
    fn of(commit: &Commit, log: Option<u32>) -> Result<CommitRows, CommitError> {
        let head = &commit.head;
        let entry = match log {
            Some(_) if !head.pending.is_empty() => CommitRecord::new(head.pending.clone())
                .ok()
                .and_then(|record| log_entry(&record).ok()),
            _ => None,
        };
        let pending: &[EventEnvelope] = if entry.is_some() { &[] } else { &head.pending };
        let first = pending.first();
        Ok(CommitRows {
            pk: head.key.partition_key(),
            aggregate_type: head.key.aggregate_type.clone(),
            aggregate_id: head.key.aggregate_id.clone(),
            expected_version: commit.expected_version,
            version: version_param(head.version)?,
            state: serde_json::to_string(&head.state).map_err(corrupt)?,
            pending: serde_json::to_string(pending).map_err(corrupt)?,
            pending_from: first.map(|e| version_param(e.version)).transpose()?,
            pending_since: first.map(|e| e.recorded_at.as_millis()),
            last_occurred_at: head.last_occurred_at.map(|t| t.to_string()),
            updated_at: head.updated_at.to_string(),
            created_at: head.created_at.map(|t| t.to_string()),
            idempotency: commit
                .idempotency
                .as_ref()
                .map(IdempotencyRow::of)
                .transpose()?,
            now: commit.now,
            append: log.zip(entry).map(|(shard_count, (partition_key, data))| {
                let arrival = Timestamp::from_datetime(chrono::Utc::now());
                (shard_count, partition_key, data, arrival)
            }),
        })
    }
}

/// The conditional commit (and the append, if the rows carry one).
fn commit(conn: &Connection, rows: &CommitRows) -> Result<Option<Published>, CommitError> {
    // The key first, as the DynamoDB transaction reports it.
    if let Some(record) = &rows.idempotency {
        put_idempotency(conn, record, rows.now)?;
    }
    let current: Option<i64> = conn
        .prepare_cached("SELECT version FROM heads WHERE pk = ?1")
        .and_then(|mut s| s.query_row([&rows.pk], |row| row.get(0)).optional())
        .map_err(unavailable)?;
    if current.map_or(0, |v| v as u64) != rows.expected_version {
        return Err(CommitError::HeadConflict);
    }
    // An upsert updates a known head in place: its row and the index whose key changed. A
    // REPLACE would delete it and insert it again under a new rowid, dirtying the primary-key
    // index and the table's last page too (pages the WAL writes out in full).
    conn.prepare_cached(
        "INSERT INTO heads (pk, aggregate_type, aggregate_id, version, state, pending,
             pending_from, pending_since, last_occurred_at, updated_at, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)
         ON CONFLICT (pk) DO UPDATE SET aggregate_type = excluded.aggregate_type,
             aggregate_id = excluded.aggregate_id, version = excluded.version,
             state = excluded.state, pending = excluded.pending,
             pending_from = excluded.pending_from, pending_since = excluded.pending_since,
             last_occurred_at = excluded.last_occurred_at, updated_at = excluded.updated_at,
             created_at = excluded.created_at",
    )
    .and_then(|mut s| {
        s.execute(params![
            rows.pk,
            rows.aggregate_type,
            rows.aggregate_id,
            rows.version,
            rows.state,
            rows.pending,
            rows.pending_from,
            rows.pending_since,
            rows.last_occurred_at,
            rows.updated_at,
            rows.created_at,
        ])
    })
    .map_err(unavailable)?;
    rows.append
        .as_ref()
        .map(|(shard_count, partition_key, data, arrival)| {
            crate::log::append(conn, *shard_count, partition_key, data, *arrival)
                .map_err(|e| CommitError::Store(StoreError::Unavailable(e.to_string())))
        })
        .transpose()
}

fn confirm_published(
    tx: &Connection,
    key: &StreamKey,
    from: u64,
    through: u64,
) -> Result<(), StoreError> {
    let pk = key.partition_key();
    let row: Option<(Option<i64>, String)> = tx
        .query_row(
            "SELECT pending_from, pending FROM heads WHERE pk = ?1",
            [&pk],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .optional()
        .map_err(unavailable)?;
    // Only if the outbox still starts where the published record started: otherwise
    // someone else confirmed these events already (or the head is gone).
    let Some((Some(pending_from), pending)) = row else {
        return Ok(());
    };
    if pending_from as u64 != from {
        return Ok(());
    }
    let mut pending: Vec<EventEnvelope> =
        serde_json::from_str(&pending).map_err(|e| corrupt(format!("outbox of {pk}: {e}")))?;
    pending.retain(|e| e.version > through);
    match pending.first() {
        // The whole outbox went: the head leaves the sparse index.
        None => tx.execute(
            "UPDATE heads SET pending = '[]', pending_from = NULL, pending_since = NULL
             WHERE pk = ?1",
            [&pk],
        ),
        // A later commit appended events: keep them, and the head stays pending since it
        // was first pending (as the DynamoDB store leaves `pending_since` alone).
        Some(first) => tx.execute(
            "UPDATE heads SET pending = ?2, pending_from = ?3 WHERE pk = ?1",
            params![
                pk,
                serde_json::to_string(&pending).map_err(corrupt)?,
                version_param(first.version)?,
            ],
        ),
    }
    .map(|_| ())
    .map_err(unavailable)
}

/// An idempotency record as its row (see [`CommitRows`]).
struct IdempotencyRow {
    key: String,
    fingerprint: String,
    aggregate_type: String,
    aggregate_id: String,
    version: i64,
    outcome: String,
    expires_at: i64,
}

impl IdempotencyRow {
    fn of(record: &IdempotencyRecord) -> Result<IdempotencyRow, StoreError> {
        Ok(IdempotencyRow {
            key: record.key.clone(),
            fingerprint: record.fingerprint.clone(),
            aggregate_type: record.stream.aggregate_type.clone(),
            aggregate_id: record.stream.aggregate_id.clone(),
            version: version_param(record.version)?,
            outcome: serde_json::to_string(&record.outcome).map_err(corrupt)?,
            expires_at: record.expires_at.as_millis(),
        })
    }
}

/// The key's record, unless the key is live (`IdempotencyConflict`); and a few expired
/// records go, so the table holds the live keys and little more (a TTL, as DynamoDB's).
fn put_idempotency(
    tx: &Connection,
    record: &IdempotencyRow,
    now: Timestamp,
) -> Result<(), CommitError> {
    let live: Option<i64> = tx
        .prepare_cached("SELECT expires_at FROM idempotency WHERE key = ?1")
        .and_then(|mut s| s.query_row([&record.key], |row| row.get(0)).optional())
        .map_err(unavailable)?;
    if live.is_some_and(|expires_at| expires_at > now.as_millis()) {
        return Err(CommitError::IdempotencyConflict);
    }
    tx.prepare_cached(
        "DELETE FROM idempotency WHERE key IN
             (SELECT key FROM idempotency WHERE expires_at <= ?1 LIMIT 16)",
    )
    .and_then(|mut s| s.execute([now.as_millis()]))
    .map_err(unavailable)?;
    tx.prepare_cached(
        "INSERT OR REPLACE INTO idempotency (key, fingerprint, aggregate_type, aggregate_id,
             version, outcome, expires_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![
            record.key,
            record.fingerprint,
            record.aggregate_type,
            record.aggregate_id,
            record.version,
            record.outcome,
            record.expires_at,
        ])
    })
    .map_err(unavailable)?;
    Ok(())
}

fn load_idempotency(
    conn: &Connection,
    key: &str,
    now: Timestamp,
) -> Result<Option<IdempotencyRecord>, StoreError> {
    type Row = (String, String, String, i64, String, i64);
    let row: Option<Row> = conn
        .query_row(
            "SELECT fingerprint, aggregate_type, aggregate_id, version, outcome, expires_at
             FROM idempotency WHERE key = ?1 AND expires_at > ?2",
            params![key, now.as_millis()],
            |row| {
                Ok((
                    row.get(0)?,
                    row.get(1)?,
                    row.get(2)?,
                    row.get(3)?,
                    row.get(4)?,
                    row.get(5)?,
                ))
            },
        )
        .optional()
        .map_err(unavailable)?;
    let Some((fingerprint, aggregate_type, aggregate_id, version, outcome, expires_at)) = row
    else {
        return Ok(None);
    };
    Ok(Some(IdempotencyRecord {
        key: key.to_owned(),
        fingerprint,
        stream: StreamKey::new(aggregate_type, aggregate_id),
        version: version as u64,
        outcome: serde_json::from_str(&outcome)
            .map_err(|e| corrupt(format!("idempotency record {key}: {e}")))?,
        expires_at: millis(expires_at, "expires_at")?,
    }))
}

fn pending_heads(conn: &Connection, limit: usize) -> Result<Vec<StreamKey>, StoreError> {
    let mut statement = conn
        .prepare_cached(
            "SELECT pk FROM heads WHERE pending_since IS NOT NULL
             ORDER BY pending_since, pk LIMIT ?1",
        )
        .map_err(unavailable)?;
    let keys = statement
        .query_map([limit.clamp(1, 1000) as i64], |row| row.get::<_, String>(0))
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    keys.iter()
        .map(|pk| {
            StreamKey::parse_partition_key(pk).ok_or_else(|| corrupt(format!("bad pk {pk:?}")))
        })
        .collect()
}

impl WriteModelStore for Embedded {
    async fn load_head(&self, key: &StreamKey) -> Result<Option<Head>, StoreError> {
        let key = key.clone();
        self.read_now(move |conn| load_head(conn, &key)).await
    }

    async fn commit(&self, c: Commit) -> Result<(), CommitError> {
        let rows = CommitRows::of(&c, None)?;
        self.write(move |conn| commit(conn, &rows).map(|_| ()))
            .await
    }

    /// Appends in the commit's transaction only on a handle made by
    /// [`Embedded::appending_on_commit`] (this database's log is the commands' log).
    async fn commit_and_append(&self, c: Commit) -> Result<Option<Published>, CommitError> {
        let log = self.appends_on_commit().then(|| self.shard_count());
        let rows = CommitRows::of(&c, log)?;
        self.write(move |conn| commit(conn, &rows)).await
    }

    async fn confirm_published(
        &self,
        key: &StreamKey,
        from: u64,
        through: u64,
    ) -> Result<(), StoreError> {
        let key = key.clone();
        self.write(move |conn| confirm_published(conn, &key, from, through))
            .await
    }

    async fn remember(&self, record: IdempotencyRecord, now: Timestamp) -> Result<(), CommitError> {
        // Stores the answer under a key unused or expired at `now`.
        let row = IdempotencyRow::of(&record)?;
        self.write(move |conn| put_idempotency(conn, &row, now))
            .await
    }

    async fn load_idempotency(
        &self,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let key = key.to_owned();
        self.read_now(move |conn| load_idempotency(conn, &key, now))
            .await
    }

    /// Heads with pending events, oldest pending first; `limit` is clamped to 1..=1000 as
    /// the DynamoDB query's is.
    async fn pending_heads(&self, limit: usize) -> Result<Vec<StreamKey>, StoreError> {
        self.with_reader(move |conn| pending_heads(conn, limit))
            .await
    }
}

/// What verify reads: the stored views and the heads.
impl Stored for Embedded {
    async fn views(
        &self,
        keys: &[StreamKey],
    ) -> Result<std::collections::HashMap<StreamKey, StoredView>, ReadModelError> {
        timeline_core::ports::ReadModelStore::load_views(self, keys).await
    }

    async fn head(&self, key: &StreamKey) -> Result<Option<Head>, StoreError> {
        self.load_head(key).await
    }
}
