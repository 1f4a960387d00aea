//! Moving the stream into the archive as Firehose does, where no
//! Firehose runs (moto, the local runner): records are buffered, and one object in Firehose's
//! key layout and body format is delivered when the buffer reaches its size or its interval.
//!
//! [`ObjectBuffer`] is Firehose's buffering and delivery; [`StreamPump`] reads any
//! [`StreamReader`] (Kinesis, the embedded log) into any [`ArchiveStore`] (S3, a directory),
//! following resharding as Firehose does: a child shard after its parents.
//!
//! Delivery is at least once: an object whose write fails is kept, with its key, and retried
//! before anything else, and no more is read until it is delivered. Without checkpoints a
//! restarted pump reads from the oldest record again and writes duplicates, which readers
//! dedupe on `(aggregate, version)`; with them it re-reads at most what was buffered and not
//! yet delivered, or delivered just before a crash and not yet checkpointed: at least once,
//! never less.

use crate::archive::{object_key, pack_records, MAX_BUFFER_MILLIS};

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::time::{Duration, Instant};
use timeline_core::ports::{ArchiveError, ArchiveStore};
use timeline_core::ports::{Checkpoints, LogError, NoCheckpoints, StreamReader};
use timeline_core::shards::{Follower, PageEnd};
use timeline_core::Timestamp;

/// How a pump buffers and writes, as a Firehose delivery stream is configured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PumpConfig {
    /// The name in every object key (Firehose's delivery stream name).
    pub delivery_stream: String,
    pub gzip: bool,
    pub newline_delimiter: bool,
    /// Deliver once this many uncompressed bytes are buffered (Firehose: 1 to 128 MiB).
    pub buffer_bytes: usize,
    /// Deliver once the oldest buffered record has waited this long (Firehose: 0 to 900 s).
    pub buffer_interval: Duration,
}

impl PumpConfig {
    /// Firehose's defaults (5 MiB, 300 s), gzip, a newline after each record.
    pub fn new(delivery_stream: impl Into<String>) -> Self {
        PumpConfig {
            delivery_stream: delivery_stream.into(),
            gzip: true,
            newline_delimiter: true,
            buffer_bytes: 5 * 1024 * 1024,
            buffer_interval: Duration::from_secs(300),
        }
    }
}

/// What one call did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PumpReport {
    /// Records read from the stream.
    pub records_read: usize,
    pub objects_written: usize,
    /// Bytes of the objects written (compressed when gzip).
    pub bytes_written: usize,
    /// The keys of the objects written, in the order they were written.
    pub keys: Vec<String>,
}

impl PumpReport {
    pub fn add(&mut self, other: PumpReport) {
        self.records_read += other.records_read;
        self.objects_written += other.objects_written;
        self.bytes_written += other.bytes_written;
        self.keys.extend(other.keys);
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PumpError {
    #[error("reading stream {stream}: {message}")]
    Stream { stream: String, message: String },
    /// Delivery failed; the object is kept and retried on the next poll.
    #[error("delivering to the archive: {0}")]
    Archive(#[from] ArchiveError),
}

/// A pump the runner drives: read what is new, deliver what is due; flush on shutdown.
pub trait Pump: Send {
    fn poll(&mut self) -> impl Future<Output = Result<PumpReport, PumpError>> + Send;
    fn flush(&mut self) -> impl Future<Output = Result<PumpReport, PumpError>> + Send;
}

/// An object sealed for delivery (kept until its write succeeds).
struct Sealed {
    key: String,
    body: Vec<u8>,
}

struct Span {
    earliest: Timestamp,
    latest: Timestamp,
    since: Instant,
}

/// Firehose's buffer: records in, objects out when full, due, or flushed.
pub struct ObjectBuffer {
    config: PumpConfig,
    records: Vec<Vec<u8>>,
    bytes: usize,
    /// The earliest and latest arrivals buffered, and when the first record was buffered.
    span: Option<Span>,
    undelivered: VecDeque<Sealed>,
}

impl ObjectBuffer {
    pub fn new(config: PumpConfig) -> Self {
        ObjectBuffer {
            config,
            records: Vec::new(),
            bytes: 0,
            span: None,
            undelivered: VecDeque::new(),
        }
    }

    pub fn config(&self) -> &PumpConfig {
        &self.config
    }

    /// Records and bytes buffered and not yet sealed into an object.
    pub fn buffered(&self) -> (usize, usize) {
        (self.records.len(), self.bytes)
    }

    /// Can a record that arrived at `arrival` join the buffer? Only while every buffered
    /// record arrived within [`MAX_BUFFER_MILLIS`] of the earliest: an object is named by the
    /// arrival of its oldest record and holds at most 15 minutes of arrivals (readers rely on
    /// it). Seal first when it cannot: a pump catching up on a backlog then writes an object
    /// per 15 minutes of arrivals, not one for all of it.
    pub fn fits(&self, arrival: Option<Timestamp>) -> bool {
        let (Some(span), Some(arrival)) = (&self.span, arrival) else {
            return true;
        };
        let earliest = span.earliest.as_millis().min(arrival.as_millis());
        let latest = span.latest.as_millis().max(arrival.as_millis());
        latest - earliest < MAX_BUFFER_MILLIS
    }

    /// Buffers one record; true when the buffer has reached its size.
    pub fn push(&mut self, data: Vec<u8>, arrival: Option<Timestamp>) -> bool {
        let arrival = arrival.unwrap_or_else(|| Timestamp::from_datetime(chrono::Utc::now()));
        match &mut self.span {
            None => {
                self.span = Some(Span {
                    earliest: arrival,
                    latest: arrival,
                    since: Instant::now(),
                })
            }
            Some(span) => {
                span.earliest = span.earliest.min(arrival);
                span.latest = span.latest.max(arrival);
            }
        }
        self.bytes += data.len() + usize::from(self.config.newline_delimiter);
        self.records.push(data);
        self.bytes >= self.config.buffer_bytes
    }

    /// Has the first buffered record waited the buffer interval?
    pub fn interval_passed(&self) -> bool {
        self.span
            .as_ref()
            .is_some_and(|span| span.since.elapsed() >= self.config.buffer_interval)
    }

    /// Turns the buffer into an object waiting for delivery, named after `prefix` and the
    /// arrival of its oldest record (as Firehose names its objects).
    pub fn seal(&mut self, prefix: &str) {
        let Some(Span {
            earliest: arrival, ..
        }) = self.span.take()
        else {
            return;
        };
        let records = std::mem::take(&mut self.records);
        self.bytes = 0;
        let id = uuid::Uuid::new_v4().to_string();
        let key = object_key(
            prefix,
            &self.config.delivery_stream,
            arrival,
            &id,
            self.config.gzip,
        );
        let body = pack_records(&records, self.config.newline_delimiter, self.config.gzip);
        self.undelivered.push_back(Sealed { key, body });
    }

    /// Writes every sealed object, oldest first; stops at the first failure, keeping it.
    pub async fn deliver<A: ArchiveStore>(
        &mut self,
        archive: &A,
        report: &mut PumpReport,
    ) -> Result<(), PumpError> {
        while let Some(object) = self.undelivered.front() {
            archive.put_object(&object.key, object.body.clone()).await?;
            let object = self.undelivered.pop_front().expect("front exists");
            report.objects_written += 1;
            report.bytes_written += object.body.len();
            report.keys.push(object.key);
        }
        Ok(())
    }
}

/// Records read per call to the reader.
const READ_LIMIT: usize = 10_000;
/// Empty pages in a row after which a poll leaves a shard for the next poll (a reader that
/// keeps iterators goes on from there).
const EMPTY_PAGES_PER_POLL: usize = 5;

/// A pump from any [`StreamReader`] into any [`ArchiveStore`] (see the module documentation).
/// It reads every shard to its tip, a child only once its parents are read to their end
/// (one key's records stay in order across a reshard). With [`Checkpoints`] it saves, after
/// each delivery, the positions up to which everything is in the archive, and a restarted
/// pump continues from there.
pub struct StreamPump<R, A, P = NoCheckpoints> {
    reader: R,
    stream: String,
    archive: A,
    buffer: ObjectBuffer,
    /// Where each shard is read up to, and which closed shards are read to their end.
    follower: Follower,
    /// The positions as of the last object sealed: once it is delivered, all of it is
    /// archived.
    sealed: HashMap<String, String>,
    checkpoints: P,
    /// Whether the saved positions have been loaded (on the first poll).
    resumed: bool,
}

impl<R: StreamReader, A: ArchiveStore> StreamPump<R, A> {
    pub fn new(reader: R, stream: impl Into<String>, archive: A, config: PumpConfig) -> Self {
        StreamPump::with_checkpoints(reader, stream, archive, config, NoCheckpoints)
    }
}

impl<R: StreamReader, A: ArchiveStore, P: Checkpoints> StreamPump<R, A, P> {
    pub fn with_checkpoints(
        reader: R,
        stream: impl Into<String>,
        archive: A,
        config: PumpConfig,
        checkpoints: P,
    ) -> Self {
        StreamPump {
            reader,
            stream: stream.into(),
            archive,
            buffer: ObjectBuffer::new(config),
            follower: Follower::default(),
            sealed: HashMap::new(),
            checkpoints,
            resumed: false,
        }
    }

    pub fn config(&self) -> &PumpConfig {
        self.buffer.config()
    }

    pub fn archive(&self) -> &A {
        &self.archive
    }

    fn seal(&mut self) {
        self.buffer.seal(self.archive.prefix());
        self.sealed.clone_from(self.follower.positions());
    }

    /// Delivers every sealed object, then saves the positions they cover. A failed save
    /// only means a restart archives some records again.
    async fn deliver(&mut self, report: &mut PumpReport) -> Result<(), PumpError> {
        let before = report.objects_written;
        self.buffer.deliver(&self.archive, report).await?;
        if report.objects_written > before {
            if let Err(e) = self.checkpoints.save(&self.sealed).await {
                tracing::warn!(stream = %self.stream, error = %e, "could not save the archive pump's positions");
            }
        }
        Ok(())
    }

    pub fn buffered(&self) -> (usize, usize) {
        self.buffer.buffered()
    }

    fn stream_error(&self, e: LogError) -> PumpError {
        PumpError::Stream {
            stream: self.stream.clone(),
            message: e.to_string(),
        }
    }

    /// Reads one shard up to its tip (or its end), buffering and delivering as it goes.
    async fn read_shard(
        &mut self,
        shard: &str,
        closed: bool,
        report: &mut PumpReport,
    ) -> Result<(), PumpError> {
        let mut empty = 0;
        loop {
            let from = self.follower.from(shard);
            let page = self
                .reader
                .read(shard, &from, READ_LIMIT)
                .await
                .map_err(|e| self.stream_error(e))?;
            if page.records.is_empty() {
                empty += 1;
            } else {
                empty = 0;
            }
            for record in page.records {
                if !self.buffer.fits(Some(record.arrival)) {
                    self.seal();
                    self.deliver(report).await?;
                }
                let full = self.buffer.push(record.data, Some(record.arrival));
                self.follower.done_up_to(shard, &record.sequence_number);
                report.records_read += 1;
                if full {
                    self.seal();
                    // On failure the rest of this page is read again, after the last
                    // sequence number kept above.
                    self.deliver(report).await?;
                }
            }
            match page.end {
                // A closed shard read to its end (a reader may also say so as "caught up").
                PageEnd::Closed => {
                    self.follower.finish(shard);
                    return Ok(());
                }
                PageEnd::CaughtUp if closed => {
                    self.follower.finish(shard);
                    return Ok(());
                }
                PageEnd::CaughtUp => return Ok(()),
                // An empty page is not the end on Kinesis; after a few, the next poll goes on.
                PageEnd::Behind if empty >= EMPTY_PAGES_PER_POLL => return Ok(()),
                PageEnd::Behind => {}
            }
        }
    }
}

impl<R: StreamReader, A: ArchiveStore, P: Checkpoints> Pump for StreamPump<R, A, P> {
    /// Delivers what failed before, reads every shard to its tip (parents before children),
    /// delivering each buffer that fills, and the buffer if its interval has passed.
    async fn poll(&mut self) -> Result<PumpReport, PumpError> {
        let mut report = PumpReport::default();
        if !self.resumed {
            let positions = self
                .checkpoints
                .load()
                .await
                .map_err(|e| self.stream_error(e))?;
            self.follower = Follower::resume(positions);
            self.sealed.clone_from(self.follower.positions());
            self.resumed = true;
        }
        self.deliver(&mut report).await?;
        let shards = self
            .reader
            .shards()
            .await
            .map_err(|e| self.stream_error(e))?;
        // Finishing a parent makes its children ready in the same poll.
        let mut visited: HashSet<String> = HashSet::new();
        loop {
            let next = self
                .follower
                .ready(&shards)
                .into_iter()
                .find(|s| !visited.contains(&s.id))
                .map(|s| (s.id.clone(), s.closed));
            let Some((shard, closed)) = next else { break };
            visited.insert(shard.clone());
            self.read_shard(&shard, closed, &mut report).await?;
        }
        if self.buffer.interval_passed() {
            self.seal();
            self.deliver(&mut report).await?;
        }
        Ok(report)
    }

    /// Delivers whatever is buffered now, whatever its size or age.
    async fn flush(&mut self) -> Result<PumpReport, PumpError> {
        let mut report = PumpReport::default();
        self.seal();
        self.deliver(&mut report).await?;
        Ok(report)
    }
}
