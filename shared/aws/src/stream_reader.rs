//! The Kinesis stream as a [`StreamReader`]: what the local runner's event source mapping and
//! archive pump follow, and what replays and time travel read, as Kinesis documents it:
//!
//! - `ListShards` (paginated) gives every shard with its hash-key range, its parents, and
//!   whether it is closed (an ending sequence number);
//! - a read goes on with the iterator the previous page returned for the same place (kept
//!   here, keyed by shard and position), so a run of empty pages moves forward instead of
//!   starting over: `GetRecords` may answer an empty page while the shard holds more, and
//!   only `MillisBehindLatest == 0` (caught up) or no next iterator (a closed shard read to
//!   its end) says a read is done;
//! - an iterator lives 5 minutes: an expired one is renewed from the same position;
//! - `ProvisionedThroughputExceededException` (5 reads or 2 MB per second per shard, shared by
//!   every consumer) comes back as [`LogError::Throttled`] once the SDK's own retries are
//!   spent, for the caller to retry within its time budget;
//! - a partition key's shard is the one whose range holds the MD5 of the key.

use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_kinesis::types::ShardIteratorType;
use md5::{Digest, Md5};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timeline_core::ports::{LogError, LogRecord, StreamReader, MAX_READ};
use timeline_core::shards::{parents_first, Page, PageEnd, ReadFrom, Shard};
use timeline_core::Timestamp;

/// One record as Kinesis returns it. The sequence number stays an opaque string.
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRecord {
    pub shard_id: String,
    pub sequence_number: String,
    pub partition_key: String,
    pub data: Vec<u8>,
    pub approximate_arrival_millis: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
#[error("reading stream {stream}: {message}")]
pub struct ReadError {
    pub stream: String,
    pub message: String,
}

/// Every record of every shard (parents before children), each shard read to its end or
/// its tip: for tests and tools.
pub async fn read_all(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<StreamRecord>, ReadError> {
    let reader = KinesisReader::new(client.clone(), stream);
    let fail = |e: LogError| ReadError {
        stream: stream.to_owned(),
        message: e.to_string(),
    };
    let shards = reader.shards().await.map_err(fail)?;
    let mut records = Vec::new();
    for shard in parents_first(&shards) {
        let mut from = ReadFrom::Oldest;
        loop {
            let page = timeline_engine::retry::retry_throttled(
                &timeline_core::time::Deadline::none(),
                || reader.read(&shard.id, &from, MAX_READ),
                LogError::is_throttled,
            )
            .await
            .map_err(fail)?;
            from = page.next_from(&from);
            let end = page.end;
            records.extend(page.records.into_iter().map(|r| StreamRecord {
                shard_id: r.shard_id,
                sequence_number: r.sequence_number,
                partition_key: r.partition_key,
                data: r.data,
                approximate_arrival_millis: Some(r.arrival.as_millis()),
            }));
            if end != PageEnd::Behind {
                break;
            }
        }
    }
    Ok(records)
}

/// Iterators are good for 5 minutes; one older than this is not used.
const ITERATOR_LIFE: Duration = Duration::from_secs(270);
/// Positions whose iterators are kept at once (a follower needs one per shard).
const ITERATORS_KEPT: usize = 1024;

#[derive(Debug, Default)]
pub(crate) struct Iterators(HashMap<(String, ReadFrom), (String, Instant)>);

impl Iterators {
    pub(crate) fn take(&mut self, shard: &str, from: &ReadFrom) -> Option<String> {
        let (iterator, at) = self.0.remove(&(shard.to_owned(), from.clone()))?;
        (at.elapsed() < ITERATOR_LIFE).then_some(iterator)
    }

    pub(crate) fn keep(&mut self, shard: &str, from: ReadFrom, iterator: String) {
        if self.0.len() >= ITERATORS_KEPT {
            self.0.retain(|_, (_, at)| at.elapsed() < ITERATOR_LIFE);
            if self.0.len() >= ITERATORS_KEPT {
                self.0.clear();
            }
        }
        self.0
            .insert((shard.to_owned(), from), (iterator, Instant::now()));
    }
}

/// What one `GetRecords` call answered, for [`read_on`].
pub(crate) enum Got {
    Page {
        records: Vec<LogRecord>,
        next: Option<String>,
        end: PageEnd,
    },
    /// The iterator expired: get a new one at the same place.
    Expired,
    Failed(LogError),
}

/// One read of a shard that goes on with the iterator the previous page left for this
/// place (so a run of empty pages moves forward), renews an expired iterator once, and
/// keeps a throttled read's iterator: the shared loop of the Kinesis and DynamoDB Streams
/// readers, which differ only in their calls.
pub(crate) async fn read_on<I, IF, G, GF>(
    iterators: &Mutex<Iterators>,
    shard: &str,
    from: &ReadFrom,
    new_iterator: I,
    get: G,
) -> Result<Page, LogError>
where
    I: Fn() -> IF,
    IF: std::future::Future<Output = Result<Option<String>, LogError>>,
    G: Fn(String) -> GF,
    GF: std::future::Future<Output = Got>,
{
    let cache = || {
        iterators
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    };
    let mut renewed = false;
    loop {
        let cached = cache().take(shard, from);
        let iterator = match cached {
            Some(iterator) => iterator,
            // No iterator at all: a closed shard with nothing left.
            None => match new_iterator().await? {
                Some(iterator) => iterator,
                None => {
                    return Ok(Page {
                        records: Vec::new(),
                        end: PageEnd::Closed,
                    })
                }
            },
        };
        match get(iterator.clone()).await {
            Got::Page { records, next, end } => {
                let page = Page { records, end };
                if let Some(next) = next {
                    cache().keep(shard, page.next_from(from), next);
                }
                return Ok(page);
            }
            Got::Expired if !renewed => renewed = true,
            Got::Expired => {
                return Err(LogError::Unavailable(format!(
                    "shard {shard}: a new iterator expired at once"
                )))
            }
            Got::Failed(e) => {
                // Throttled: the iterator is still good (and past any empty pages).
                if e.is_throttled() {
                    cache().keep(shard, from.clone(), iterator);
                }
                return Err(e);
            }
        }
    }
}

/// The Kinesis stream as a [`StreamReader`] (see the module documentation). Clones share
/// their iterators.
#[derive(Clone, Debug)]
pub struct KinesisReader {
    pub client: aws_sdk_kinesis::Client,
    pub stream: String,
    iterators: Arc<Mutex<Iterators>>,
}

/// Codes Kinesis answers when a call is over a documented rate.
fn throttled(code: Option<&str>) -> bool {
    matches!(
        code,
        Some(
            "ProvisionedThroughputExceededException"
                | "LimitExceededException"
                | "KMSThrottlingException"
        )
    )
}

fn log_error<E, R>(e: SdkError<E, R>) -> LogError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if throttled(e.code()) {
        LogError::Throttled(DisplayErrorContext(e).to_string())
    } else {
        LogError::Unavailable(DisplayErrorContext(e).to_string())
    }
}

fn hash_key(text: &str) -> Result<u128, LogError> {
    text.parse()
        .map_err(|_| LogError::Unavailable(format!("not a hash key: {text:?}")))
}

impl KinesisReader {
    pub fn new(client: aws_sdk_kinesis::Client, stream: impl Into<String>) -> Self {
        KinesisReader {
            client,
            stream: stream.into(),
            iterators: Arc::new(Mutex::new(Iterators::default())),
        }
    }

    /// A new iterator at `from`. A sequence number Kinesis no longer holds (past the
    /// retention) is refused; the oldest record it holds comes after it anyway.
    async fn iterator(&self, shard: &str, from: &ReadFrom) -> Result<Option<String>, LogError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(shard);
        let request = match from {
            ReadFrom::Oldest => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            ReadFrom::At(seq) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(seq),
            ReadFrom::After(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            ReadFrom::Time(t) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(aws_smithy_types::DateTime::from_millis(t.as_millis())),
        };
        match request.send().await {
            Ok(out) => Ok(out.shard_iterator),
            Err(e)
                if matches!(from, ReadFrom::At(_) | ReadFrom::After(_))
                    && e.code() == Some("InvalidArgumentException") =>
            {
                tracing::warn!(shard, ?from, error = %DisplayErrorContext(&e), "position refused; reading from the oldest record");
                Box::pin(self.iterator(shard, &ReadFrom::Oldest)).await
            }
            Err(e) => Err(log_error(e)),
        }
    }
}

impl StreamReader for KinesisReader {
    async fn shards(&self) -> Result<Vec<Shard>, LogError> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = self.client.list_shards();
            // With a token, the stream name must not be given again.
            let request = match &token {
                Some(token) => request.next_token(token),
                None => request.stream_name(&self.stream),
            };
            let out = request.send().await.map_err(log_error)?;
            for s in out.shards() {
                let range = s.hash_key_range();
                shards.push(Shard {
                    id: s.shard_id().to_owned(),
                    parents: s
                        .parent_shard_id()
                        .into_iter()
                        .chain(s.adjacent_parent_shard_id())
                        .map(str::to_owned)
                        .collect(),
                    hash_range: match range {
                        Some(r) => (
                            hash_key(r.starting_hash_key())?,
                            hash_key(r.ending_hash_key())?,
                        ),
                        None => (0, u128::MAX),
                    },
                    closed: s
                        .sequence_number_range()
                        .and_then(|r| r.ending_sequence_number())
                        .is_some(),
                });
            }
            token = out.next_token;
            if token.is_none() {
                return Ok(shards);
            }
        }
    }

    async fn read(&self, shard: &str, from: &ReadFrom, limit: usize) -> Result<Page, LogError> {
        let get = |iterator: String| async move {
            let out = match self
                .client
                .get_records()
                .shard_iterator(iterator)
                .limit(limit.clamp(1, MAX_READ) as i32)
                .send()
                .await
            {
                Ok(out) => out,
                // Iterators live 5 minutes: start again from the same place, once.
                Err(e) if e.code() == Some("ExpiredIteratorException") => return Got::Expired,
                Err(e) => return Got::Failed(log_error(e)),
            };
            let records = out
                .records()
                .iter()
                .map(|r| LogRecord {
                    shard_id: shard.to_owned(),
                    sequence_number: r.sequence_number().to_owned(),
                    partition_key: r.partition_key().unwrap_or_default().to_owned(),
                    data: r.data().as_ref().to_vec(),
                    arrival: arrival(
                        r.approximate_arrival_timestamp()
                            .and_then(|t| t.to_millis().ok()),
                    ),
                })
                .collect();
            Got::Page {
                records,
                end: match (&out.next_shard_iterator, out.millis_behind_latest()) {
                    (None, _) => PageEnd::Closed,
                    (Some(_), Some(0)) => PageEnd::CaughtUp,
                    (Some(_), _) => PageEnd::Behind,
                },
                next: out.next_shard_iterator,
            }
        };
        read_on(
            &self.iterators,
            shard,
            from,
            || self.iterator(shard, from),
            get,
        )
        .await
    }

    fn key_hash(&self, partition_key: &str) -> u128 {
        key_hash(partition_key)
    }
}

/// The MD5 of a partition key as a 128-bit number: where Kinesis puts it among the
/// shards' hash-key ranges.
pub fn key_hash(partition_key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(partition_key.as_bytes()).into())
}

/// A record's arrival, or now when Kinesis gave none.
fn arrival(millis: Option<i64>) -> Timestamp {
    millis
        .and_then(Timestamp::from_millis)
        .unwrap_or_else(|| Timestamp::from_datetime(chrono::Utc::now()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_hash_is_its_md5_as_kinesis_computes_it() {
        let reader = KinesisReader::new(
            aws_sdk_kinesis::Client::from_conf(
                aws_sdk_kinesis::Config::builder()
                    .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
                    .build(),
            ),
            "s",
        );
        // MD5("") = d41d8cd98f00b204e9800998ecf8427e
        assert_eq!(reader.key_hash(""), 0xd41d8cd98f00b204e9800998ecf8427e);
        assert_eq!(
            reader.key_hash("ride#42"),
            u128::from_be_bytes(Md5::digest(b"ride#42").into())
        );
    }

    #[test]
    fn only_rate_limit_codes_are_throttling() {
        assert!(throttled(Some("ProvisionedThroughputExceededException")));
        assert!(throttled(Some("LimitExceededException")));
        assert!(!throttled(Some("ResourceNotFoundException")));
        assert!(!throttled(None));
    }

    #[test]
    fn an_iterator_is_used_once_and_not_when_old() {
        let mut cache = Iterators::default();
        cache.keep("s", ReadFrom::Oldest, "it-1".into());
        assert_eq!(cache.take("s", &ReadFrom::Oldest), Some("it-1".into()));
        assert_eq!(cache.take("s", &ReadFrom::Oldest), None);
        cache.0.insert(
            ("s".into(), ReadFrom::Oldest),
            ("old".into(), Instant::now() - ITERATOR_LIFE),
        );
        assert_eq!(cache.take("s", &ReadFrom::Oldest), None);
    }
}
