//! The event archive in S3, in Firehose's layout (see `timeline_core::archive`): listing
//! by arrival hour, fetching and decoding objects in parallel (bounded), and writing objects
//! (the pump and tests).

use aws_sdk_s3::primitives::{AggregatedBytes, ByteStream};
use futures::stream::{self, Stream, StreamExt};
use timeline_core::ports::ArchiveError;
use timeline_core::CommitRecord;
use timeline_core::Timestamp;
use timeline_engine::archive::{
    decode_object, decode_object_lenient, key_range, DecodedObject, KeyRange,
};

/// One archive: a bucket and the prefix Firehose writes under (`events/` by default).
#[derive(Clone, Debug)]
pub struct S3Archive {
    pub client: aws_sdk_s3::Client,
    pub bucket: String,
    pub prefix: String,
}

fn unavailable(target: String, e: impl std::error::Error) -> ArchiveError {
    ArchiveError::Unavailable {
        target,
        message: aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
    }
}

impl S3Archive {
    pub fn new(
        client: aws_sdk_s3::Client,
        bucket: impl Into<String>,
        prefix: impl Into<String>,
    ) -> Self {
        S3Archive {
            client,
            bucket: bucket.into(),
            prefix: prefix.into(),
        }
    }

    fn target(&self, key: &str) -> String {
        format!("s3://{}/{key}", self.bucket)
    }

    /// The keys of the objects that can hold records that arrived between `from` and `to`
    /// (either end open), sorted by key, which is the order their first records arrived in.
    ///
    /// An object sits in the hour its oldest record arrived and holds records that arrived
    /// up to 15 minutes (Firehose's largest buffer interval) later, so the listing starts
    /// at the hour of `from - 15 min`. It ends with the hour of `to + 15 min`, a margin for
    /// readers that bound by event time: a record can reach the stream a little after the
    /// time it carries. Each hour folder is named so that keys sort by time, so the hours
    /// are listed with one paginated `ListObjectsV2` over the prefix, starting after the
    /// first hour's folder name and stopping at the first key past the last hour: empty
    /// hours cost nothing and a range of months is as cheap as its objects. Without a range,
    /// everything under the prefix. Keys in the hour folders that are not in Firehose's
    /// layout are listed too (decoding reports them), never skipped in silence.
    pub async fn list_keys(
        &self,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<Vec<String>, ArchiveError> {
        let Some(KeyRange { start, end }) = key_range(&self.prefix, from, to) else {
            return Ok(Vec::new());
        };
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        'pages: loop {
            let out = self
                .client
                .list_objects_v2()
                .bucket(&self.bucket)
                .prefix(&self.prefix)
                // Every key of the first hour is longer than its folder name, so it sorts
                // after it: starting *after* the folder name starts at that hour.
                .set_start_after(start.clone())
                .set_continuation_token(token.take())
                .send()
                .await
                .map_err(|e| unavailable(self.target(&self.prefix), e))?;
            for object in out.contents() {
                let Some(key) = object.key() else { continue };
                if end.as_ref().is_some_and(|end| key >= end.as_str()) {
                    break 'pages;
                }
                keys.push(key.to_owned());
            }
            token = out.next_continuation_token;
            if token.is_none() {
                break;
            }
        }
        keys.sort();
        keys.dedup();
        Ok(keys)
    }

    async fn fetch(&self, key: &str) -> Result<AggregatedBytes, ArchiveError> {
        let out = self
            .client
            .get_object()
            .bucket(&self.bucket)
            .key(key)
            .send()
            .await
            .map_err(|e| unavailable(self.target(key), e))?;
        let body = out
            .body
            .collect()
            .await
            .map_err(|e| unavailable(self.target(key), e))?;
        Ok(body)
    }

    /// Fetches one object and decodes it on the blocking pool (decompression and JSON are
    /// CPU work: kept off the async workers so several objects decode on several cores).
    async fn read_with<T: Send + 'static>(
        &self,
        key: &str,
        decode: fn(&str, &[u8]) -> T,
    ) -> Result<T, ArchiveError> {
        let bytes = self.fetch(key).await?;
        let owned_key = key.to_owned();
        match tokio::task::spawn_blocking(move || decode(&owned_key, &bytes.into_bytes())).await {
            Ok(decoded) => Ok(decoded),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => Err(ArchiveError::Unavailable {
                target: self.target(key),
                message: format!("decoding was cancelled: {e}"),
            }),
        }
    }

    /// Every record of one object, or why it could not be read.
    pub async fn read_object(&self, key: &str) -> Result<Vec<CommitRecord>, ArchiveError> {
        self.read_with(key, decode_object).await?
    }

    /// The records of one object up to any corruption, with the corruption; `Err` only when
    /// the object could not be fetched.
    pub async fn read_object_lenient(&self, key: &str) -> Result<DecodedObject, ArchiveError> {
        self.read_with(key, decode_object_lenient).await
    }

    /// Fetches and decodes the objects, at most `parallelism` at once, yielding each with its
    /// key in the order of `keys` (so in arrival order for keys from [`Self::list_keys`]).
    /// A corrupt or missing object is yielded as an error with its key; the others are
    /// still read.
    pub fn read_objects(
        &self,
        keys: Vec<String>,
        parallelism: usize,
    ) -> impl Stream<Item = (String, Result<Vec<CommitRecord>, ArchiveError>)> + Send + 'static
    {
        let archive = self.clone();
        stream::iter(keys)
            .map(move |key| {
                let archive = archive.clone();
                async move {
                    let result = archive.read_object(&key).await;
                    (key, result)
                }
            })
            .buffered(parallelism.max(1))
    }

    /// As [`Self::read_objects`], keeping the good records that come before a corruption.
    pub fn read_objects_lenient(
        &self,
        keys: Vec<String>,
        parallelism: usize,
    ) -> impl Stream<Item = (String, Result<DecodedObject, ArchiveError>)> + Send + 'static {
        let archive = self.clone();
        stream::iter(keys)
            .map(move |key| {
                let archive = archive.clone();
                async move {
                    let result = archive.read_object_lenient(&key).await;
                    (key, result)
                }
            })
            .buffered(parallelism.max(1))
    }

    /// Writes one object (the pump's delivery; tests writing objects by hand).
    pub async fn put_object(&self, key: &str, bytes: Vec<u8>) -> Result<(), ArchiveError> {
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(key)
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| unavailable(self.target(key), e))?;
        Ok(())
    }
}

impl timeline_core::ports::ArchiveStore for S3Archive {
    fn prefix(&self) -> &str {
        &self.prefix
    }
    async fn list_keys(
        &self,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> Result<Vec<String>, ArchiveError> {
        S3Archive::list_keys(self, from, to).await
    }
    async fn read_object(&self, key: &str) -> Result<Vec<CommitRecord>, ArchiveError> {
        S3Archive::read_object(self, key).await
    }
    async fn put_object(&self, key: &str, bytes: Vec<u8>) -> Result<(), ArchiveError> {
        S3Archive::put_object(self, key, bytes).await
    }
}
