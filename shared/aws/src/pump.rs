//! Firehose where none runs (moto, the local runner): the records of a Kinesis stream moved
//! into S3 objects in Firehose's own layout, so the archive reader is exercised against what
//! Firehose writes. It is `timeline_engine::pump::StreamPump` over the Kinesis reader (which
//! follows resharding: a child shard after its parents, iterators renewed when they expire,
//! empty pages read past) and the S3 archive.
//!
//! What it does as Firehose does:
//! - reads every shard, each in its own order, and continues where it stopped on the next
//!   [`FirehosePump::poll`];
//! - writes each record's bytes exactly as they were put, followed by a newline when
//!   `newline_delimiter` is set (Firehose's "new line delimiter"), gzip-compressed or not;
//! - buffers, and delivers one object when the uncompressed buffer reaches `buffer_bytes`
//!   or `buffer_interval` has passed since the first buffered record, or on
//!   [`FirehosePump::flush`]; an object holds at most 15 minutes of arrivals;
//! - names each object `<prefix>YYYY/MM/DD/HH/<delivery stream>-1-YYYY-MM-DD-HH-MM-SS-<uuid v4>[.gz]`
//!   from the approximate arrival timestamp of its oldest record, in UTC;
//! - delivers at least once: an object whose `PutObject` fails is kept and retried before
//!   anything else on the next poll.
//!
//! What it does not: it is not durable (a restarted pump starts again from `TRIM_HORIZON`
//! and writes duplicates, which readers dedupe on `(aggregate, version)`); it reads only when
//! polled, one shard after another; no custom prefixes, error output, transformation, format
//! conversion, dynamic partitioning, encryption settings or metrics.

use crate::archive::S3Archive;
use crate::stream_reader::KinesisReader;
use timeline_engine::archive::DEFAULT_PREFIX;
use timeline_engine::pump::{Pump, StreamPump};

pub use timeline_engine::pump::{PumpConfig, PumpError, PumpReport};

/// See the module documentation.
pub struct FirehosePump(StreamPump<KinesisReader, S3Archive>);

impl FirehosePump {
    /// A pump from `stream` into `archive` (its bucket and prefix; see [`DEFAULT_PREFIX`]).
    pub fn new(
        kinesis: aws_sdk_kinesis::Client,
        stream: impl Into<String>,
        archive: S3Archive,
        config: PumpConfig,
    ) -> Self {
        let stream = stream.into();
        FirehosePump(StreamPump::new(
            KinesisReader::new(kinesis, stream.clone()),
            stream,
            archive,
            config,
        ))
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
        self.0.config()
    }

    /// Records and bytes buffered and not yet sealed into an object.
    pub fn buffered(&self) -> (usize, usize) {
        self.0.buffered()
    }

    /// Delivers what failed before, reads what is new on every shard, and delivers every
    /// buffer that reached its size, and the buffer if its interval has passed.
    pub async fn poll(&mut self) -> Result<PumpReport, PumpError> {
        self.0.poll().await
    }

    /// Delivers whatever is buffered now, whatever its size or age.
    pub async fn flush(&mut self) -> Result<PumpReport, PumpError> {
        self.0.flush().await
    }
}

impl Pump for FirehosePump {
    async fn poll(&mut self) -> Result<PumpReport, PumpError> {
        self.0.poll().await
    }
    async fn flush(&mut self) -> Result<PumpReport, PumpError> {
        self.0.flush().await
    }
}
