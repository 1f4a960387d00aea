//! The embedded, durable local backend: the same ports as the AWS
//! adapters, on one SQLite database in a directory the user chooses, so the local runner
//! needs no emulator, no Docker and no account, and keeps its data across restarts.
//!
//! - [`WriteModelStore`](timeline_core::ports::WriteModelStore): heads and idempotency records,
//!   committed in one transaction under the same conditions as DynamoDB (see `write_store`);
//! - [`EventLog`](timeline_core::ports::EventLog) and
//!   [`StreamReader`](timeline_core::ports::StreamReader): a durable log in shards, as Kinesis
//!   keeps one (see `log`);
//! - [`ReadModelStore`](timeline_core::ports::ReadModelStore) and
//!   [`ReadModelQueries`](timeline_core::ports::ReadModelQueries): views, lookups and
//!   history with DynamoDB's ordering and paging (see `read_models`);
//! - [`LocalArchive`]: Firehose's object layout in a directory, as the S3 archive has it.
//!
//! One writing connection, owned by a thread of its own, serves a handle and its clones: it
//! commits the writes queued while it was busy in one transaction, each write in a savepoint
//! of its own (group commit, see `writer`). Reads go to a small pool of reading connections,
//! which in WAL mode see the last committed state without waiting for the writer (so
//! queries, head loads and log reads never queue behind a commit); a lookup by key runs on the
//! calling thread, a scan on tokio's blocking pool when there is a runtime (inline
//! otherwise). Other processes may open the same directory (WAL mode and a busy timeout make them wait for each other's writes,
//! never corrupt them).

mod archive;
mod log;
mod read_models;
mod write_store;
mod writer;

pub use archive::LocalArchive;
pub use log::{shard_id, shard_of, MAX_RECORD_BYTES};

use rusqlite::{Connection, OptionalExtension};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;
use timeline_core::ports::{Checkpoints, LogError};
use writer::{Writer, Written};

/// The database file inside the data directory.
pub const DATABASE_FILE: &str = "timeline.sqlite3";
/// Where [`Embedded::archive`] keeps archive objects, inside the data directory.
pub const ARCHIVE_DIR: &str = "archive";
/// Shards of a new log unless told otherwise.
pub const DEFAULT_SHARD_COUNT: u32 = 2;
/// How long a write waits for another process's write before giving up.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// WAL pages past which the writer checkpoints in the middle of a commit (see `open_with`).
const WRITER_CHECKPOINT_PAGES: i64 = 16_384;

/// Bumped when the schema changes in a way older code cannot read.
const SCHEMA_VERSION: i64 = 4;

/// What brings a database written at version N-1 to N (a new database is created at the
/// latest version by [`SCHEMA`] directly).
const MIGRATIONS: &[(i64, &str)] = &[
    // Heads keep when the entity's first event was recorded (where its records start).
    (2, "ALTER TABLE heads ADD COLUMN created_at TEXT;"),
    // Expired idempotency records are found (and removed) by their expiry.
    (
        3,
        "CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_at);",
    ),
    // Entities the processor parked (created by SCHEMA, which runs after the migrations).
    (4, ""),
];

#[derive(Debug, thiserror::Error)]
pub enum EmbeddedError {
    /// The data directory cannot be created or written to.
    #[error("the data directory {} is not writable: {source}", dir.display())]
    Unwritable {
        dir: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// SQLite refused to open or set up the database.
    #[error("the embedded database {} could not be opened: {source}", path.display())]
    Database {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    /// The database is not in the shape this code writes.
    #[error("the embedded database {} is unusable: {reason}", path.display())]
    Unusable { path: PathBuf, reason: String },
    /// The directory holds a log with another number of shards: an entity's records would
    /// move to another shard and lose their order.
    #[error("the embedded database {} was created with {stored} shards, not {requested}", path.display())]
    ShardCountMismatch {
        path: PathBuf,
        stored: u32,
        requested: u32,
    },
    /// The directory was written by a newer version of this code.
    #[error("the embedded database {} has schema version {found}; this build knows up to {SCHEMA_VERSION}", path.display())]
    NewerSchema { path: PathBuf, found: i64 },
}

/// How to open a data directory.
#[derive(Debug, Clone, Default)]
pub struct EmbeddedOptions {
    /// Shards of the log. A new directory gets this many ([`DEFAULT_SHARD_COUNT`] if None);
    /// an existing one keeps its own, and asking for another number is an error.
    pub shard_count: Option<u32>,
}

/// Reading connections kept open for reuse; more may be open at once under load (each is
/// closed when the pool already holds this many).
const IDLE_READERS: usize = 4;

struct Inner {
    writer: Writer,
    /// Idle reading connections (see [`Embedded::with_reader`]).
    readers: Mutex<Vec<Connection>>,
    dir: PathBuf,
    shard_count: u32,
}

/// A handle on one data directory. Cheap to clone; clones share the connection.
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
    /// See [`Embedded::appending_on_commit`].
    append_on_commit: bool,
}

impl std::fmt::Debug for Embedded {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Embedded")
            .field("dir", &self.inner.dir)
            .field("shard_count", &self.inner.shard_count)
            .field("append_on_commit", &self.append_on_commit)
            .finish()
    }
}

impl Embedded {
    /// Opens (creating it if needed) the data directory `dir`.
    pub fn open(dir: &Path) -> Result<Embedded, EmbeddedError> {
        Self::open_with(dir, EmbeddedOptions::default())
    }

    pub fn open_with(dir: &Path, options: EmbeddedOptions) -> Result<Embedded, EmbeddedError> {
        let unwritable = |source| EmbeddedError::Unwritable {
            dir: dir.to_owned(),
            source,
        };
        std::fs::create_dir_all(dir).map_err(unwritable)?;
        probe_writable(dir).map_err(unwritable)?;
        let path = dir.join(DATABASE_FILE);
        let db = |source| EmbeddedError::Database {
            path: path.clone(),
            source,
        };
        let mut conn = Connection::open(&path).map_err(db)?;
        if conn.is_readonly(rusqlite::MAIN_DB).map_err(db)? {
            return Err(unwritable(std::io::Error::new(
                std::io::ErrorKind::PermissionDenied,
                format!("{} is read-only", path.display()),
            )));
        }
        conn.busy_timeout(BUSY_TIMEOUT).map_err(db)?;
        let mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |row| row.get(0))
            .map_err(db)?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(EmbeddedError::Unusable {
                path,
                reason: format!("journal mode is {mode}, WAL was asked for"),
            });
        }
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        // The checkpointing thread (see `writer`) keeps the WAL short; the writer checkpoints
        // itself only if the WAL grows past this many pages (64 MiB) regardless.
        conn.pragma_update(None, "wal_autocheckpoint", WRITER_CHECKPOINT_PAGES)
            .map_err(db)?;
        let shard_count = setup_schema(&mut conn, options.shard_count, &path)?;
        let checkpointer = Connection::open(&path).map_err(db)?;
        let writer =
            Writer::start(conn, Some(checkpointer)).map_err(|e| EmbeddedError::Unusable {
                path: path.clone(),
                reason: format!("no thread for its writer: {e}"),
            })?;
        Ok(Embedded {
            inner: Arc::new(Inner {
                writer,
                readers: Mutex::new(Vec::new()),
                dir: dir.to_owned(),
                shard_count,
            }),
            append_on_commit: false,
        })
    }

    /// This handle, as the write-model store of commands whose log is this database's own
    /// log: [`WriteModelStore::commit_and_append`](timeline_core::ports::WriteModelStore::commit_and_append)
    /// then commits a head and appends its outbox in one transaction (the engine asks for
    /// it when it publishes inline). Never use it with a log elsewhere: the record would
    /// land here instead.
    pub fn appending_on_commit(&self) -> Embedded {
        Embedded {
            append_on_commit: true,
            ..self.clone()
        }
    }

    pub fn appends_on_commit(&self) -> bool {
        self.append_on_commit
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.inner.dir
    }

    /// The SQLite database file.
    pub fn database_path(&self) -> PathBuf {
        self.inner.dir.join(DATABASE_FILE)
    }

    pub fn shard_count(&self) -> u32 {
        self.inner.shard_count
    }

    /// The archive that lives in this data directory (`<dir>/archive`, Firehose's layout
    /// under `prefix`).
    pub fn archive(&self, prefix: impl Into<String>) -> LocalArchive {
        LocalArchive::new(self.inner.dir.join(ARCHIVE_DIR), prefix)
    }

    /// Runs `work` on the writing connection, in a transaction with the other writes queued
    /// at the same time, its own writes kept if it succeeds and rolled back if it fails; the
    /// answer comes once the transaction is committed (see `writer`).
    async fn write<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: Unavailable + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.write_keeping(move |conn| Written::from(work(conn)))
            .await
    }

    /// [`Self::write`] for work that decides itself whether its writes are kept.
    async fn write_keeping<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: Unavailable + Send + 'static,
        F: FnOnce(&Connection) -> Written<Result<T, E>> + Send + 'static,
    {
        self.inner
            .writer
            .write(work, |reason| {
                Err(E::unavailable(format!("sqlite: {reason}")))
            })
            .await
    }

    /// Runs a read with a reading connection of the pool (opened when none is idle), on a
    /// blocking thread: for reads whose size the caller does not bound to a few rows (pages
    /// of the log, lists, histories). Each statement outside a transaction reads the last
    /// committed state, whoever wrote it, so a read after a write on this handle sees that
    /// write. If no reading connection can be opened, the writer reads instead (after the
    /// writes queued before it).
    async fn with_reader<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: Unavailable + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        let inner = self.inner.clone();
        match blocking(move || inner.read(work)).await {
            Ok(value) => value,
            Err(work) => self.read_by_writer(work).await,
        }
    }

    /// [`Embedded::with_reader`] on the calling thread, for lookups of a few rows by key
    /// (a head, a view, an idempotency record): they take tens of microseconds, less than
    /// handing them to a blocking thread and back, which under load was most of their cost.
    async fn read_now<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: Unavailable + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        match self.inner.read(work) {
            Ok(value) => value,
            Err(work) => self.read_by_writer(work).await,
        }
    }

    async fn read_by_writer<T, E, F>(&self, work: F) -> Result<T, E>
    where
        T: Send + 'static,
        E: Unavailable + Send + 'static,
        F: FnOnce(&Connection) -> Result<T, E> + Send + 'static,
    {
        self.write_keeping(move |conn| Written {
            answer: work(conn),
            keep: false,
        })
        .await
    }
}

impl Inner {
    /// `work` on an idle reading connection (or a new one); `Err(work)` when none opens.
    fn read<T, F: FnOnce(&Connection) -> T>(&self, work: F) -> Result<T, F> {
        let idle = self
            .readers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .pop();
        let Some(reader) = idle.or_else(|| open_reader(&self.dir.join(DATABASE_FILE))) else {
            return Err(work);
        };
        let value = work(&reader);
        let mut readers = self.readers.lock().unwrap_or_else(PoisonError::into_inner);
        if readers.len() < IDLE_READERS {
            readers.push(reader);
        }
        Ok(value)
    }
}

/// The error a store operation gives when the database cannot do the work (SQLite failed,
/// or the transaction its write was in could not be committed).
trait Unavailable {
    fn unavailable(reason: String) -> Self;
}

impl Unavailable for timeline_core::ports::StoreError {
    fn unavailable(reason: String) -> Self {
        Self::Unavailable(reason)
    }
}

impl Unavailable for timeline_core::ports::CommitError {
    fn unavailable(reason: String) -> Self {
        Self::Store(timeline_core::ports::StoreError::Unavailable(reason))
    }
}

impl Unavailable for timeline_core::ports::ReadModelError {
    fn unavailable(reason: String) -> Self {
        Self::Unavailable(reason)
    }
}

impl Unavailable for LogError {
    fn unavailable(reason: String) -> Self {
        Self::Unavailable(reason)
    }
}

/// Runs `run` on tokio's blocking pool inside a runtime, inline outside one.
async fn blocking<T: Send + 'static>(run: impl FnOnce() -> T + Send + 'static) -> T {
    if tokio::runtime::Handle::try_current().is_err() {
        return run();
    }
    match tokio::task::spawn_blocking(run).await {
        Ok(value) => value,
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        // Only happens when the runtime shuts down under us.
        Err(e) => panic!("embedded store task was cancelled: {e}"),
    }
}

/// A connection that only reads (`query_only`: a write through it is an error, not a write
/// that skipped the writer's lock). The database is already set up by the writer, so it is
/// opened without `CREATE`: were the file gone, a reader would otherwise make an empty one
/// and answer from it; instead it does not open, and the writer answers.
fn open_reader(path: &Path) -> Option<Connection> {
    let open = || -> rusqlite::Result<Connection> {
        let flags = rusqlite::OpenFlags::default() - rusqlite::OpenFlags::SQLITE_OPEN_CREATE;
        let conn = Connection::open_with_flags(path, flags)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    };
    open()
        .inspect_err(|e| tracing::warn!(path = %path.display(), error = %e, "no reading connection; reading through the writer"))
        .ok()
}

/// The positions of one follower of the log (the pump, the event source mapping), kept in
/// the database so a restart continues where it stopped.
#[derive(Clone, Debug)]
pub struct Checkpoint {
    db: Embedded,
    key: String,
}

impl Embedded {
    /// The checkpoint named `name` (one per follower).
    pub fn checkpoint(&self, name: &str) -> Checkpoint {
        Checkpoint {
            db: self.clone(),
            key: format!("checkpoint:{name}"),
        }
    }
}

impl Checkpoints for Checkpoint {
    async fn load(&self) -> Result<HashMap<String, String>, LogError> {
        let key = self.key.clone();
        let stored: Option<String> = self
            .db
            .with_reader(move |conn| {
                conn.query_row("SELECT value FROM meta WHERE key = ?1", [&key], |row| {
                    row.get(0)
                })
                .optional()
                .map_err(|e| LogError::Unavailable(e.to_string()))
            })
            .await?;
        match stored {
            None => Ok(HashMap::new()),
            Some(json) => serde_json::from_str(&json).map_err(|e| {
                LogError::Unavailable(format!("checkpoint {} is corrupt: {e}", self.key))
            }),
        }
    }

    async fn save(&self, positions: &HashMap<String, String>) -> Result<(), LogError> {
        let (key, json) = (
            self.key.clone(),
            serde_json::to_string(positions).expect("a map of strings serializes"),
        );
        self.db
            .write(move |conn| {
                conn.execute(
                    "INSERT INTO meta (key, value) VALUES (?1, ?2)
                     ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                    [&key, &json],
                )
                .map(|_| ())
                .map_err(|e| LogError::Unavailable(e.to_string()))
            })
            .await
    }
}

/// Creating and removing a file is the honest test: permission bits lie for root, and
/// read-only mounts say nothing until written to.
fn probe_writable(dir: &Path) -> std::io::Result<()> {
    let probe = dir.join(format!(".write-probe-{}", uuid::Uuid::new_v4()));
    std::fs::write(&probe, b"probe")?;
    std::fs::remove_file(&probe)
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;

-- Write model: one head per entity, as the DynamoDB item of write_store.rs.
CREATE TABLE IF NOT EXISTS heads (
    pk               TEXT PRIMARY KEY,
    aggregate_type   TEXT NOT NULL,
    aggregate_id     TEXT NOT NULL,
    version          INTEGER NOT NULL,
    state            TEXT NOT NULL,
    pending          TEXT NOT NULL,  -- JSON array of envelopes, in version order
    pending_from     INTEGER,        -- version of the first pending event; NULL when none
    pending_since    INTEGER,        -- millis; NULL when none (the sparse index key)
    last_occurred_at TEXT,
    updated_at       TEXT NOT NULL,
    created_at       TEXT            -- NULL on heads written before schema version 2
);
CREATE INDEX IF NOT EXISTS heads_pending ON heads (pending_since, pk)
    WHERE pending_since IS NOT NULL;

CREATE TABLE IF NOT EXISTS idempotency (
    key            TEXT PRIMARY KEY,
    fingerprint    TEXT NOT NULL,
    aggregate_type TEXT NOT NULL,
    aggregate_id   TEXT NOT NULL,
    version        INTEGER NOT NULL,
    outcome        TEXT NOT NULL,
    expires_at     INTEGER NOT NULL  -- millis
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS idempotency_expiry ON idempotency (expires_at);

-- The log: AUTOINCREMENT so a sequence number is never reused, even after deletes.
CREATE TABLE IF NOT EXISTS log (
    seq           INTEGER PRIMARY KEY AUTOINCREMENT,
    shard         INTEGER NOT NULL,
    partition_key TEXT NOT NULL,
    data          BLOB NOT NULL,
    arrival       INTEGER NOT NULL   -- millis
);
CREATE INDEX IF NOT EXISTS log_by_shard ON log (shard, seq);
CREATE INDEX IF NOT EXISTS log_by_key ON log (partition_key, seq);

-- Read models, as the DynamoDB items of read_models.rs.
CREATE TABLE IF NOT EXISTS views (
    pk         TEXT PRIMARY KEY,
    version    INTEGER NOT NULL,
    view       TEXT NOT NULL,
    status_key TEXT NOT NULL,
    rider_key  TEXT,
    driver_key TEXT,
    created_sk TEXT NOT NULL,
    updated_sk TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS views_by_rider ON views (rider_key, created_sk, pk)
    WHERE rider_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS views_by_driver ON views (driver_key, created_sk, pk)
    WHERE driver_key IS NOT NULL;
CREATE INDEX IF NOT EXISTS views_by_status ON views (status_key, updated_sk, pk);

-- Parked entities (see timeline_core::park), by partition key.
CREATE TABLE IF NOT EXISTS parked (
    entity    TEXT PRIMARY KEY,
    parked_at TEXT NOT NULL,
    entry     TEXT NOT NULL   -- the Parked, as JSON
) WITHOUT ROWID;

CREATE TABLE IF NOT EXISTS history (
    pk    TEXT NOT NULL,
    sk    TEXT NOT NULL,  -- h#<occurred_at>#<version, 20 digits>
    entry TEXT NOT NULL,
    PRIMARY KEY (pk, sk)
) WITHOUT ROWID;
";

/// Creates the schema if needed and settles the shard count. Idempotent, and safe when
/// several processes open the same directory at once (one immediate transaction).
fn setup_schema(
    conn: &mut Connection,
    requested: Option<u32>,
    path: &Path,
) -> Result<u32, EmbeddedError> {
    let db = |source| EmbeddedError::Database {
        path: path.to_owned(),
        source,
    };
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(db)?;
    let found: i64 = tx
        .query_row("PRAGMA user_version", [], |row| row.get(0))
        .map_err(db)?;
    if found > SCHEMA_VERSION {
        return Err(EmbeddedError::NewerSchema {
            path: path.to_owned(),
            found,
        });
    }
    if found > 0 {
        for (version, migration) in MIGRATIONS {
            if *version > found {
                tx.execute_batch(migration).map_err(db)?;
            }
        }
    }
    tx.execute_batch(SCHEMA).map_err(db)?;
    tx.pragma_update(None, "user_version", SCHEMA_VERSION)
        .map_err(db)?;
    let stored: Option<String> = tx
        .query_row(
            "SELECT value FROM meta WHERE key = 'shard_count'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(db)?;
    let shard_count = match stored {
        Some(stored) => {
            let stored: u32 = stored.parse().map_err(|_| EmbeddedError::Unusable {
                path: path.to_owned(),
                reason: format!("meta.shard_count is not a number: {stored:?}"),
            })?;
            if let Some(requested) = requested.filter(|r| *r != stored) {
                return Err(EmbeddedError::ShardCountMismatch {
                    path: path.to_owned(),
                    stored,
                    requested,
                });
            }
            stored
        }
        None => {
            let count = requested.unwrap_or(DEFAULT_SHARD_COUNT).max(1);
            tx.execute(
                "INSERT INTO meta (key, value) VALUES ('shard_count', ?1)",
                [count.to_string()],
            )
            .map_err(db)?;
            count
        }
    };
    tx.commit().map_err(db)?;
    Ok(shard_count)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Dir(PathBuf);
    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
    fn dir() -> Dir {
        Dir(std::env::temp_dir().join(format!("embedded-readers-{}", uuid::Uuid::new_v4())))
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_go_on_while_the_writer_is_busy() {
        let dir = dir();
        let db = Embedded::open(&dir.0).unwrap();
        let positions = HashMap::from([("shardId-000000000000".to_owned(), "7".to_owned())]);
        db.checkpoint("reader").save(&positions).await.unwrap();

        // The writer is busy (in a job that waits, as a long transaction would): a read
        // still answers, with what was committed.
        let (started, running) = std::sync::mpsc::channel();
        let (release, released) = std::sync::mpsc::channel::<()>();
        let holder = db.clone();
        let held = tokio::spawn(async move {
            holder
                .write(move |_| {
                    started.send(()).unwrap();
                    released
                        .recv()
                        .map_err(|e| LogError::Unavailable(e.to_string()))
                })
                .await
        });
        running.recv().unwrap();
        let read = tokio::time::timeout(Duration::from_secs(5), db.checkpoint("reader").load())
            .await
            .expect("the read did not wait for the writer")
            .unwrap();
        release.send(()).unwrap();
        held.await.unwrap().unwrap();
        assert_eq!(read, positions);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn committed_writes_reach_the_database_file_without_waiting_for_a_full_wal() {
        let dir = dir();
        let db = Embedded::open(&dir.0).unwrap();
        let positions = HashMap::from([("shardId-000000000000".to_owned(), "42".to_owned())]);
        db.checkpoint("follower").save(&positions).await.unwrap();
        // The database file alone, as if the WAL were not there (`immutable`): a write shows
        // in it only once a checkpoint copied it, which the writer itself would do only
        // after thousands of pages.
        let file =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_URI;
        let uri = format!("file:{}?immutable=1", dir.0.join(DATABASE_FILE).display());
        let mut in_file = None;
        for _ in 0..50 {
            tokio::time::sleep(writer::CHECKPOINT_EVERY).await;
            let conn = Connection::open_with_flags(&uri, file).unwrap();
            in_file = conn
                .query_row(
                    "SELECT value FROM meta WHERE key = 'checkpoint:follower'",
                    [],
                    |row| row.get::<_, String>(0),
                )
                .optional()
                // Not even the schema there yet: not checkpointed.
                .unwrap_or(None);
            if in_file.is_some() {
                break;
            }
        }
        let in_file: HashMap<String, String> =
            serde_json::from_str(&in_file.expect("checkpointed within 5 s")).unwrap();
        assert_eq!(in_file, positions);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn lookups_and_scans_read_through_the_writer_when_no_reading_connection_opens() {
        use timeline_core::park::{ParkReason, Parked};
        use timeline_core::ports::ReadModelStore;
        let dir = dir();
        let db = Embedded::open(&dir.0).unwrap();
        let positions = HashMap::from([("shardId-000000000000".to_owned(), "9".to_owned())]);
        db.checkpoint("follower").save(&positions).await.unwrap();
        let parked = Parked {
            entity: "ride#r1".into(),
            from_version: Some(2),
            shard_id: None,
            sequence_number: "5".into(),
            reason: ParkReason::Gap {
                expected: 2,
                found: 3,
            },
            parked_at: timeline_core::Timestamp::from_millis(1_000).unwrap(),
            set_aside: 1,
        };
        db.park(&parked).await.unwrap();
        // No reader was opened yet (the pool is empty), and none can be now: the path is a
        // directory. The writer still holds the database open and answers the reads.
        let file = dir.0.join(DATABASE_FILE);
        std::fs::rename(&file, dir.0.join("moved.db")).unwrap();
        std::fs::create_dir(&file).unwrap();
        assert!(open_reader(&file).is_none());

        let lookup = db.parked_entity("ride#r1").await.unwrap();
        assert_eq!(lookup, Some(parked));
        let scan = db.checkpoint("follower").load().await.unwrap();
        assert_eq!(scan, positions);
    }

    #[tokio::test]
    async fn a_reader_never_creates_the_database_file_it_reads() {
        use timeline_core::ports::ReadModelStore;
        let dir = dir();
        let db = Embedded::open(&dir.0).unwrap();
        let positions = HashMap::from([("shardId-000000000000".to_owned(), "7".to_owned())]);
        db.checkpoint("follower").save(&positions).await.unwrap();
        // The file goes away under a running store (the writer keeps it open): no reader
        // opens, none leaves an empty database behind, and the writer answers.
        let file = dir.0.join(DATABASE_FILE);
        std::fs::rename(&file, dir.0.join("moved.db")).unwrap();
        assert!(open_reader(&file).is_none());
        assert!(!file.exists(), "a reader created {}", file.display());
        assert_eq!(db.checkpoint("follower").load().await.unwrap(), positions);
        assert_eq!(db.parked_entity("ride#r1").await.unwrap(), None);
        assert!(!file.exists());
    }

    #[test]
    fn a_reading_connection_refuses_writes() {
        let dir = dir();
        let _db = Embedded::open(&dir.0).unwrap();
        let reader = open_reader(&dir.0.join(DATABASE_FILE)).expect("a reader opens");
        let write = reader.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')", []);
        assert!(write.is_err(), "{write:?}");
    }
}
