//! A small stand-in for Firehose where none runs (moto, the local runner): it moves the
//! records of a Kinesis stream into S3 objects in Firehose's own layout, so the archive
//! reader is exercised against what Firehose writes (DESIGN sections 6 and 7).
//!
//! What it does as Firehose does:
//! - reads every shard from `TRIM_HORIZON`, each in its own order, a child shard only once
//!   its parents are read to their end, and continues where it stopped on the next
//!   [`FirehosePump::poll`] (it keeps each shard's iterator and last sequence number, and
//!   starts again after that number when an iterator is gone or expired);
//! - writes each record's bytes exactly as they were put, followed by a newline when
//!   `newline_delimiter` is set (Firehose's "new line delimiter"), gzip-compressed or not;
//! - buffers, and delivers one object when the uncompressed buffer reaches `buffer_bytes`
//!   or `buffer_interval` has passed since the first buffered record (Firehose's buffering
//!   hints; the size counts before compression, as Firehose's does), or on
//!   [`FirehosePump::flush`];
//! - names each object `<prefix>YYYY/MM/DD/HH/<delivery stream>-1-YYYY-MM-DD-HH-MM-SS-<uuid v4>[.gz]`
//!   from the approximate arrival timestamp of its oldest record, in UTC;
//! - delivers at least once: an object whose `PutObject` fails is kept, with its key, and
//!   retried before anything else on the next poll, and no more is read until it is
//!   delivered.
//!
//! What it does not: it is not durable (buffer and positions live in memory, so a restarted
//! pump starts again from `TRIM_HORIZON` and writes duplicates, which readers dedupe on
//! `(aggregate, version)`: at least once, never less); it reads only when polled, one shard
//! after another (Firehose reads continuously and in parallel, so its objects interleave
//! shards); no custom prefixes or time zones, error output prefix, transformation, format
//! conversion, dynamic partitioning, encryption settings, retry time budget or metrics.

use crate::archive::S3Archive;
use aws_sdk_kinesis::types::ShardIteratorType;
use std::collections::HashMap;
use timeline_core::archive::DEFAULT_PREFIX;
use timeline_core::pump::ObjectBuffer;
use timeline_core::Timestamp;

pub use timeline_core::pump::{PumpConfig, PumpError, PumpReport};

#[derive(Debug, Default)]
struct ShardState {
    iterator: Option<String>,
    last_sequence: Option<String>,
    /// Closed and read to its end.
    finished: bool,
}

struct ShardInfo {
    id: String,
    parents: Vec<String>,
}

/// See the module documentation.
pub struct FirehosePump {
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
    archive: S3Archive,
    shards: HashMap<String, ShardState>,
    buffer: ObjectBuffer,
}

/// Records asked for per `GetRecords` call (the Kinesis maximum).
const GET_RECORDS_LIMIT: i32 = 10_000;

impl FirehosePump {
    /// A pump from `stream` into `archive` (its bucket and prefix; see [`DEFAULT_PREFIX`]).
    pub fn new(
        kinesis: aws_sdk_kinesis::Client,
        stream: impl Into<String>,
        archive: S3Archive,
        config: PumpConfig,
    ) -> Self {
        FirehosePump {
            kinesis,
            stream: stream.into(),
            archive,
            shards: HashMap::new(),
            buffer: ObjectBuffer::new(config),
        }
    }

    /// A pump writing under the default prefix (`events/`) of `bucket`.
    pub fn with_bucket(
        kinesis: aws_sdk_kinesis::Client,
        s3: aws_sdk_s3::Client,
        stream: impl Into<String>,
        bucket: impl Into<String>,
        config: PumpConfig,
    ) -> Self {
        FirehosePump::new(
            kinesis,
            stream,
            S3Archive::new(s3, bucket, DEFAULT_PREFIX),
            config,
        )
    }

    pub fn config(&self) -> &PumpConfig {
        self.buffer.config()
    }

    /// Records and bytes buffered and not yet sealed into an object.
    pub fn buffered(&self) -> (usize, usize) {
        self.buffer.buffered()
    }

    fn stream_error(&self, e: impl std::error::Error) -> PumpError {
        PumpError::Stream {
            stream: self.stream.clone(),
            message: aws_sdk_kinesis::error::DisplayErrorContext(e).to_string(),
        }
    }

    /// Delivers what failed before, reads what is new on every shard, and delivers every
    /// buffer that reached its size, and the buffer if its interval has passed.
    pub async fn poll(&mut self) -> Result<PumpReport, PumpError> {
        let mut report = PumpReport::default();
        self.deliver(&mut report).await?;
        for shard in self.list_shards().await? {
            let parents_done = shard
                .parents
                .iter()
                .all(|p| self.shards.get(p).is_none_or(|s| s.finished));
            let state = self.shards.entry(shard.id.clone()).or_default();
            if state.finished || !parents_done {
                continue;
            }
            self.read_shard(&shard.id, &mut report).await?;
        }
        if self.buffer.interval_passed() {
            self.seal();
            self.deliver(&mut report).await?;
        }
        Ok(report)
    }

    /// Delivers whatever is buffered now, whatever its size or age.
    pub async fn flush(&mut self) -> Result<PumpReport, PumpError> {
        let mut report = PumpReport::default();
        self.seal();
        self.deliver(&mut report).await?;
        Ok(report)
    }

    async fn list_shards(&self) -> Result<Vec<ShardInfo>, PumpError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = self.kinesis.list_shards();
            let request = match &token {
                Some(t) => request.next_token(t),
                None => request.stream_name(&self.stream),
            };
            let out = request.send().await.map_err(|e| self.stream_error(e))?;
            shards.extend(out.shards().iter().map(|s| {
                ShardInfo {
                    id: s.shard_id().to_owned(),
                    parents: s
                        .parent_shard_id()
                        .into_iter()
                        .chain(s.adjacent_parent_shard_id())
                        .map(str::to_owned)
                        .collect(),
                }
            }));
            token = out.next_token;
            if token.is_none() {
                return Ok(shards);
            }
        }
    }

    /// A fresh iterator: after the last record read, or from the oldest one.
    async fn iterator(&self, shard_id: &str) -> Result<Option<String>, PumpError> {
        let last = self
            .shards
            .get(shard_id)
            .and_then(|s| s.last_sequence.clone());
        let request = self
            .kinesis
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(shard_id);
        let request = match last {
            Some(sequence) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(sequence),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let out = request.send().await.map_err(|e| self.stream_error(e))?;
        Ok(out.shard_iterator)
    }

    /// Reads one shard up to its tip, buffering (and delivering full buffers) as it goes.
    async fn read_shard(
        &mut self,
        shard_id: &str,
        report: &mut PumpReport,
    ) -> Result<(), PumpError> {
        let mut expired_retries = 0;
        loop {
            let taken = self
                .shards
                .get_mut(shard_id)
                .and_then(|s| s.iterator.take());
            let iterator = match taken {
                Some(iterator) => iterator,
                None => match self.iterator(shard_id).await? {
                    Some(iterator) => iterator,
                    None => {
                        // No iterator: the shard is closed and nothing is left to read.
                        self.state(shard_id).finished = true;
                        return Ok(());
                    }
                },
            };
            let out = match self
                .kinesis
                .get_records()
                .shard_iterator(iterator)
                .limit(GET_RECORDS_LIMIT)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e)
                    if expired_retries < 3
                        && e.as_service_error()
                            .is_some_and(|s| s.is_expired_iterator_exception()) =>
                {
                    // Iterators live five minutes; start again after the last record read.
                    expired_retries += 1;
                    continue;
                }
                Err(e) => return Err(self.stream_error(e)),
            };
            let caught_up = out.records().is_empty() || out.millis_behind_latest() == Some(0);
            for record in out.records() {
                let arrival = record
                    .approximate_arrival_timestamp()
                    .and_then(|t| t.to_millis().ok())
                    .and_then(Timestamp::from_millis);
                if !self.buffer.fits(arrival) {
                    self.seal();
                    self.deliver(report).await?;
                }
                let full = self.buffer.push(record.data().as_ref().to_vec(), arrival);
                self.state(shard_id).last_sequence = Some(record.sequence_number().to_owned());
                report.records_read += 1;
                if full {
                    self.seal();
                    // On failure the rest of this batch is read again, after the last
                    // sequence number kept above.
                    self.deliver(report).await?;
                }
            }
            match out.next_shard_iterator {
                Some(next) => self.state(shard_id).iterator = Some(next),
                None => {
                    // A closed shard read to its end (its children come next).
                    self.state(shard_id).finished = true;
                    return Ok(());
                }
            }
            if caught_up {
                return Ok(());
            }
        }
    }

    fn state(&mut self, shard_id: &str) -> &mut ShardState {
        self.shards.entry(shard_id.to_owned()).or_default()
    }

    fn seal(&mut self) {
        self.buffer.seal(&self.archive.prefix);
    }

    async fn deliver(&mut self, report: &mut PumpReport) -> Result<(), PumpError> {
        self.buffer.deliver(&self.archive, report).await
    }
}

impl timeline_core::pump::Pump for FirehosePump {
    async fn poll(&mut self) -> Result<PumpReport, PumpError> {
        FirehosePump::poll(self).await
    }
    async fn flush(&mut self) -> Result<PumpReport, PumpError> {
        FirehosePump::flush(self).await
    }
}
