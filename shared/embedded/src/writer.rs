//! The database's one writer: a thread that owns the writing connection and commits the
//! writes queued while it was busy in one transaction (group commit).
//!
//! Every write (a command's commit and log append, a view, a checkpoint) is a job: a closure
//! run on the connection inside a savepoint of its own, whose writes are kept if it says so
//! and rolled back alone otherwise. The thread takes every job waiting when it is free (up to
//! [`MAX_GROUP`]), runs them in order in one `BEGIN IMMEDIATE` transaction, commits once, and
//! only then answers each job: an answer is never given for a write that is not committed,
//! and if the commit fails every job that wrote gets the failure. Under load one commit
//! (its locks, its WAL frames for the pages several jobs share) serves many writes; idle,
//! a group is one job and nothing waits for company.

use rusqlite::Connection;
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::mpsc;
use tokio::sync::oneshot;

/// Jobs in one transaction at most: bounds how long the first of them waits for its answer.
pub(crate) const MAX_GROUP: usize = 64;

/// What a job's closure gives back: its answer, and whether its writes are kept.
pub(crate) struct Written<T> {
    pub answer: T,
    pub keep: bool,
}

impl<T, E> From<Result<T, E>> for Written<Result<T, E>> {
    /// The usual rule: the writes of a job that succeeded are kept, those of one that
    /// failed are rolled back.
    fn from(answer: Result<T, E>) -> Self {
        Written {
            keep: answer.is_ok(),
            answer,
        }
    }
}

/// A job as the thread sees it.
trait Job: Send {
    /// Runs the work in the group's transaction; true if its writes are to be kept.
    fn run(&mut self, conn: &Connection) -> bool;
    /// Answers, once the group's transaction is committed (`None`) or failed (the reason).
    fn finish(self: Box<Self>, failed: Option<&str>);
}

struct Pending<T, F> {
    work: Option<F>,
    /// The work's answer, or its panic, once run.
    outcome: Option<std::thread::Result<Written<T>>>,
    reply: oneshot::Sender<std::thread::Result<T>>,
    /// The answer for a job whose writes were lost (or never made) because the
    /// transaction failed.
    failure: fn(String) -> T,
}

impl<T, F> Job for Pending<T, F>
where
    T: Send + 'static,
    F: FnOnce(&Connection) -> Written<T> + Send + 'static,
{
    fn run(&mut self, conn: &Connection) -> bool {
        let work = self.work.take().expect("a job runs once");
        let outcome = catch_unwind(AssertUnwindSafe(|| work(conn)));
        let keep = matches!(&outcome, Ok(w) if w.keep);
        self.outcome = Some(outcome);
        keep
    }

    fn finish(self: Box<Self>, failed: Option<&str>) {
        let answer = match (self.outcome, failed) {
            // Rolled back on its own: its answer stands whatever became of the others.
            (Some(Ok(w)), _) if !w.keep => Ok(w.answer),
            (Some(Ok(w)), None) => Ok(w.answer),
            (Some(Err(panic)), _) => Err(panic),
            (_, Some(reason)) => Ok((self.failure)(reason.to_owned())),
            (None, None) => unreachable!("a committed group ran every job"),
        };
        // The caller may have gone (its future dropped): nothing to tell.
        let _ = self.reply.send(answer);
    }
}

/// The handle on the writer thread; dropping it ends the thread (after the jobs already
/// queued) and closes the connection before `drop` returns.
pub(crate) struct Writer {
    jobs: Option<mpsc::Sender<Box<dyn Job>>>,
    thread: Option<std::thread::JoinHandle<()>>,
    /// Ends the checkpointing thread when dropped.
    checkpoints: Option<(mpsc::Sender<()>, std::thread::JoinHandle<()>)>,
}

/// How often the checkpointing thread copies the WAL's committed pages into the database.
pub(crate) const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_millis(100);

impl Writer {
    /// The writer on `conn`; with `checkpointer` (another connection to the same database
    /// file), WAL checkpoints are made on a thread of their own, so the writer never stops
    /// to copy pages and sync files in the middle of a commit (SQLite's automatic checkpoint
    /// runs in the committing connection).
    pub fn start(conn: Connection, checkpointer: Option<Connection>) -> std::io::Result<Writer> {
        let checkpoints = checkpointer
            .map(|conn| -> std::io::Result<_> {
                let (stop, stopped) = mpsc::channel::<()>();
                let thread = std::thread::Builder::new()
                    .name("sqlite-checkpoint".into())
                    .spawn(move || checkpoint(conn, stopped))?;
                Ok((stop, thread))
            })
            .transpose()?;
        let (jobs, queue) = mpsc::channel();
        let thread = std::thread::Builder::new()
            .name("sqlite-writer".into())
            .spawn(move || run(conn, queue))?;
        Ok(Writer {
            jobs: Some(jobs),
            thread: Some(thread),
            checkpoints,
        })
    }

    /// Queues `work` and waits for its answer (awaiting inside a runtime, blocking the
    /// thread outside one). `failure` makes the answer of a job whose transaction failed.
    /// A panic in `work` rolls back its writes and is resumed here.
    pub async fn write<T, F>(&self, work: F, failure: fn(String) -> T) -> T
    where
        T: Send + 'static,
        F: FnOnce(&Connection) -> Written<T> + Send + 'static,
    {
        let (reply, answer) = oneshot::channel();
        let job = Box::new(Pending {
            work: Some(work),
            outcome: None,
            reply,
            failure,
        });
        let queued = self.jobs.as_ref().map(|jobs| jobs.send(job));
        if !matches!(queued, Some(Ok(()))) {
            return failure("the database's writer has stopped".into());
        }
        let answer = if tokio::runtime::Handle::try_current().is_ok() {
            answer.await
        } else {
            answer.blocking_recv()
        };
        match answer {
            Ok(Ok(value)) => value,
            Ok(Err(panic)) => resume_unwind(panic),
            Err(_) => failure("the database's writer stopped before answering".into()),
        }
    }
}

impl Drop for Writer {
    fn drop(&mut self) {
        if let Some((stop, thread)) = self.checkpoints.take() {
            drop(stop);
            let _ = thread.join();
        }
        drop(self.jobs.take());
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Passive checkpoints (they copy what no reader still needs and never wait for, or block,
/// the writer or the readers) until `stop` is dropped.
fn checkpoint(conn: Connection, stop: mpsc::Receiver<()>) {
    while let Err(mpsc::RecvTimeoutError::Timeout) = stop.recv_timeout(CHECKPOINT_EVERY) {
        if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(())) {
            tracing::warn!(error = %e, "WAL checkpoint failed; the writer's own checkpoints remain");
        }
    }
}

fn run(conn: Connection, queue: mpsc::Receiver<Box<dyn Job>>) {
    let mut group: Vec<Box<dyn Job>> = Vec::with_capacity(MAX_GROUP);
    while let Ok(first) = queue.recv() {
        group.push(first);
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        let failed = commit_group(&conn, &mut group).err();
        for job in group.drain(..) {
            job.finish(failed.as_deref());
        }
    }
}

/// Runs the jobs in one transaction, each in a savepoint; `Err` (and nothing written) if
/// the transaction could not be begun or committed.
fn commit_group(conn: &Connection, group: &mut [Box<dyn Job>]) -> Result<(), String> {
    // IMMEDIATE: the write lock before the first read, so another process cannot slip a
    // write in between a job's checks and its writes.
    conn.execute_batch("BEGIN IMMEDIATE")
        .map_err(|e| e.to_string())?;
    let ran = group.iter_mut().try_for_each(|job| {
        conn.execute_batch("SAVEPOINT job")?;
        let end = if job.run(conn) {
            "RELEASE job"
        } else {
            "ROLLBACK TO job; RELEASE job"
        };
        conn.execute_batch(end)
    });
    let committed = ran.and_then(|()| conn.execute_batch("COMMIT"));
    committed.map_err(|e| {
        // Whatever was written goes: the answers will say so.
        let _ = conn.execute_batch("ROLLBACK");
        e.to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::{channel, Receiver};
    use std::sync::Arc;

    /// Drives a write outside any runtime (it blocks inside, so one poll finishes it).
    fn now<T>(write: impl std::future::Future<Output = T>) -> T {
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match std::pin::pin!(write).poll(&mut cx) {
            std::task::Poll::Ready(value) => value,
            std::task::Poll::Pending => panic!("a write outside a runtime did not block"),
        }
    }

    fn failure(reason: String) -> Result<i64, String> {
        Err(reason)
    }

    fn writer() -> Writer {
        let conn = Connection::open_in_memory().unwrap();
        conn.execute_batch(
            "PRAGMA foreign_keys = ON;
             CREATE TABLE t (n INTEGER PRIMARY KEY);
             CREATE TABLE child (n INTEGER REFERENCES t (n) DEFERRABLE INITIALLY DEFERRED);",
        )
        .unwrap();
        Writer::start(conn, None).unwrap()
    }

    /// Blocks the writer in a job until the returned sender is dropped or sent to, so that
    /// the jobs queued meanwhile run as one group.
    fn hold(writer: &Arc<Writer>) -> std::sync::mpsc::Sender<()> {
        let (started, running) = channel();
        let (release, released): (_, Receiver<()>) = channel();
        queue_now(writer, move |_: &Connection| {
            started.send(()).unwrap();
            let _ = released.recv();
            Written::from(Ok(0))
        });
        running.recv().unwrap();
        release
    }

    /// Queues `work` from a task of its own; its answer comes through the handle.
    fn queue_now<F>(writer: &Arc<Writer>, work: F) -> tokio::task::JoinHandle<Result<i64, String>>
    where
        F: FnOnce(&Connection) -> Written<Result<i64, String>> + Send + 'static,
    {
        let writer = writer.clone();
        tokio::spawn(async move { writer.write(work, failure).await })
    }

    /// [`queue_now`], then a moment for the job to reach the queue before the next one.
    async fn queue<F>(writer: &Arc<Writer>, work: F) -> tokio::task::JoinHandle<Result<i64, String>>
    where
        F: FnOnce(&Connection) -> Written<Result<i64, String>> + Send + 'static,
    {
        let answer = queue_now(writer, work);
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        answer
    }

    fn insert(n: i64) -> impl FnOnce(&Connection) -> Written<Result<i64, String>> + Send {
        move |conn| {
            Written::from(
                conn.execute("INSERT INTO t (n) VALUES (?1)", [n])
                    .map(|_| n)
                    .map_err(|e| e.to_string()),
            )
        }
    }

    async fn rows(writer: &Writer) -> Vec<i64> {
        let read = |conn: &Connection| {
            let mut s = conn.prepare("SELECT n FROM t ORDER BY n").unwrap();
            let all: Vec<i64> = s
                .query_map([], |r| r.get(0))
                .unwrap()
                .map(Result::unwrap)
                .collect();
            Written {
                answer: Ok(all),
                keep: false,
            }
        };
        writer.write(read, Err).await.unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn in_one_group_a_failed_write_is_rolled_back_alone() {
        let writer = Arc::new(writer());
        let release = hold(&writer);
        // Queued while the writer is busy: one group. 2 is inserted twice: the second fails
        // (primary key) and only its own write goes.
        let mut answers = Vec::new();
        for n in [1, 2, 2, 3] {
            answers.push(queue(&writer, insert(n)).await);
        }
        release.send(()).unwrap();
        let mut got = Vec::new();
        for answer in answers {
            got.push(answer.await.unwrap());
        }
        let failed: Vec<bool> = got.iter().map(Result::is_err).collect();
        assert_eq!(failed, [false, false, true, false], "{got:?}");
        assert_eq!(rows(&writer).await, [1, 2, 3]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_panicking_write_is_rolled_back_and_its_caller_sees_the_panic() {
        let writer = Arc::new(writer());
        let release = hold(&writer);
        let first = queue(&writer, insert(1)).await;
        let panicking = queue(
            &writer,
            |conn: &Connection| -> Written<Result<i64, String>> {
                conn.execute("INSERT INTO t (n) VALUES (5)", []).unwrap();
                panic!("a bug in the middle of a write");
            },
        )
        .await;
        let last = queue(&writer, insert(9)).await;
        release.send(()).unwrap();
        assert_eq!(first.await.unwrap(), Ok(1));
        let panicked = panicking.await.unwrap_err();
        assert!(panicked.is_panic());
        assert_eq!(last.await.unwrap(), Ok(9));
        assert_eq!(rows(&writer).await, [1, 9]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn when_the_commit_fails_every_write_of_the_group_is_told_and_nothing_stays() {
        let writer = Arc::new(writer());
        let release = hold(&writer);
        let good = queue(&writer, insert(1)).await;
        // A deferred constraint: checked only by the COMMIT, which then fails.
        let orphan = queue(&writer, |conn: &Connection| {
            Written::from(
                conn.execute("INSERT INTO child (n) VALUES (42)", [])
                    .map(|_| 42)
                    .map_err(|e| e.to_string()),
            )
        })
        .await;
        release.send(()).unwrap();
        let (good, orphan) = (good.await.unwrap(), orphan.await.unwrap());
        assert!(
            good.as_ref().is_err_and(|e| e.contains("FOREIGN KEY")),
            "{good:?}"
        );
        assert!(orphan.is_err(), "{orphan:?}");
        assert_eq!(rows(&writer).await, Vec::<i64>::new());
        // The writer goes on: the next write commits.
        assert_eq!(writer.write(insert(7), failure).await, Ok(7));
        assert_eq!(rows(&writer).await, [7]);
    }

    #[test]
    fn outside_a_runtime_a_write_blocks_until_committed() {
        let writer = writer();
        assert_eq!(now(writer.write(insert(3), failure)), Ok(3));
        assert_eq!(now(rows(&writer)), [3]);
    }

    #[test]
    fn dropping_the_writer_closes_its_connection() {
        let dir = std::env::temp_dir().join(format!("embedded-writer-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("db.sqlite3");
        let conn = Connection::open(&path).unwrap();
        conn.execute_batch("PRAGMA journal_mode = WAL; CREATE TABLE t (n INTEGER PRIMARY KEY);")
            .unwrap();
        let writer = Writer::start(conn, None).unwrap();
        now(writer.write(insert(1), failure)).unwrap();
        assert!(path.with_extension("sqlite3-wal").exists());
        drop(writer);
        // The last connection to close checkpoints and removes the WAL file.
        let wal_left = path.with_extension("sqlite3-wal").exists();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(!wal_left);
    }
}
