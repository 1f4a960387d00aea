//! The whole log for the hydrator: the archive (Firehose's layout, in S3 or a directory) plus
//! the stream tail, whatever stores them. One entity's events are found without reading the
//! whole archive: the history read model says when the entity's events were recorded, and
//! only the archive hours that can hold them are read. The stream tail is always read, so an
//! event archived late (a delayed publish) is still found while the stream retains it: only
//! the entity's records when the stream has an index for them (the embedded log, which keeps
//! everything), the whole tail otherwise (Kinesis, which keeps 24 hours by default).

use crate::archive::{parse_object_key, ArchiveStore, MAX_BUFFER_MILLIS};
use crate::codec::decode_record;
use crate::ports::{LogRecord, StreamReader};
use crate::read_ports::{PageRequest, ReadModelQueries};
use crate::replay::{EventSource, ReplayChunk, SourceError, SourceProblem};
use crate::{CommitRecord, EventEnvelope, StreamKey, Timestamp};
use futures::stream::{self, StreamExt};
use std::sync::Arc;

/// How long after being recorded an event is normally on its way to the archive (Firehose
/// buffers up to 15 minutes). A later one (a publish retried by the outbox sweep) is still on
/// the stream tail, and if the index says versions are missing, the whole archive is read.
pub const ARCHIVE_SLACK_MS: i64 = MAX_BUFFER_MILLIS;
/// Archive objects fetched and decoded at once.
pub const PARALLELISM: usize = 4;
const TAIL_POSITION: &str = "tail";
const TAIL_PREFIX: &str = "tail:";
/// Records per part of the stream tail in a replay.
pub const TAIL_CHUNK: usize = 10_000;

/// See the module documentation. `index` is the history read model; without one, every
/// entity read scans the whole archive.
#[derive(Debug)]
pub struct LogSource<A, R, I> {
    archive: A,
    stream: R,
    /// A name for the stream in problem reports.
    stream_name: String,
    index: Option<I>,
    /// Records per part of the tail (see [`LogSource::with_tail_chunk`]).
    tail_chunk: usize,
    /// The archive's keys, listed once per replay.
    keys: tokio::sync::Mutex<Option<Arc<Vec<String>>>>,
}

fn problem(location: impl Into<String>, reason: impl ToString) -> SourceProblem {
    SourceProblem {
        location: location.into(),
        reason: reason.to_string(),
    }
}

fn unreadable(e: impl ToString) -> SourceError {
    SourceError(e.to_string())
}

impl<A: ArchiveStore, R: StreamReader, I: ReadModelQueries> LogSource<A, R, I> {
    pub fn new(archive: A, stream: R, stream_name: impl Into<String>, index: Option<I>) -> Self {
        LogSource {
            archive,
            stream,
            stream_name: stream_name.into(),
            index,
            keys: tokio::sync::Mutex::new(None),
            tail_chunk: TAIL_CHUNK,
        }
    }

    /// Reads the tail of a replay in parts of `records` (tests use small ones).
    pub fn with_tail_chunk(mut self, records: usize) -> Self {
        self.tail_chunk = records.max(1);
        self
    }

    pub fn archive(&self) -> &A {
        &self.archive
    }

    /// The time window of archive objects that can hold the entity's events up to `until`,
    /// and the highest version the index knows in it.
    async fn window(
        &self,
        key: &StreamKey,
        until: Option<Timestamp>,
    ) -> Option<(Timestamp, Timestamp, u64)> {
        let index = self.index.as_ref()?;
        let page = PageRequest {
            limit: 1000,
            cursor: None,
        };
        let history = index.history(key, None, until, &page).await.ok()?;
        if history.next_cursor.is_some() {
            // A very long history: no cheap window, read the archive whole.
            return None;
        }
        let first = history.items.first()?.recorded_at;
        let last = history.items.iter().map(|e| e.recorded_at).max()?;
        let highest = history.items.iter().map(|e| e.version).max()?;
        let end = until.map_or(last, |t| t.max(last));
        Some((first, end.plus_millis(ARCHIVE_SLACK_MS), highest))
    }

    /// The keys of the objects whose records can have arrived in `[from, to]`: objects are
    /// named by the arrival of their first record and hold at most 15 minutes of arrivals.
    async fn keys_overlapping(
        &self,
        from: Timestamp,
        to: Timestamp,
    ) -> Result<Vec<String>, SourceError> {
        let keys = self
            .archive
            .list_keys(Some(from), Some(to))
            .await
            .map_err(unreadable)?;
        Ok(keys
            .into_iter()
            .filter(|k| match parse_object_key(self.archive.prefix(), k) {
                Some(p) => {
                    p.written_at.as_millis() >= from.as_millis() - MAX_BUFFER_MILLIS
                        && p.written_at <= to
                }
                // Not in Firehose's layout: read it, so nothing is skipped in silence.
                None => true,
            })
            .collect())
    }

    /// The records of these objects, read `PARALLELISM` at once and kept in key order, and
    /// the problems met.
    async fn read_objects(&self, keys: Vec<String>) -> (Vec<CommitRecord>, Vec<SourceProblem>) {
        let mut objects = stream::iter(keys)
            .map(|key| async move {
                let result = self.archive.read_object(&key).await;
                (key, result)
            })
            .buffered(PARALLELISM);
        let mut records = Vec::new();
        let mut problems = Vec::new();
        while let Some((key, result)) = objects.next().await {
            match result {
                Ok(r) => records.extend(r),
                Err(e) => problems.push(problem(key, e)),
            }
        }
        (records, problems)
    }

    /// Every record on the stream now (all shards; only `key`'s when given and the stream
    /// can find them), decoded; undecodable ones are reported.
    async fn tail(
        &self,
        key: Option<&StreamKey>,
    ) -> Result<(Vec<CommitRecord>, Vec<SourceProblem>), SourceError> {
        let failed = |e: crate::ports::LogError| {
            SourceError(format!("reading stream {}: {e}", self.stream_name))
        };
        let one = match key {
            Some(key) => self
                .stream
                .read_partition(&key.partition_key())
                .await
                .map_err(failed)?,
            None => None,
        };
        let records = match one {
            Some(records) => records,
            None => self.stream.read_all().await.map_err(failed)?,
        };
        Ok(self.decode(records))
    }

    /// Log records as commit records; undecodable ones are reported with where they are.
    fn decode(&self, records: Vec<LogRecord>) -> (Vec<CommitRecord>, Vec<SourceProblem>) {
        let mut out = Vec::with_capacity(records.len());
        let mut problems = Vec::new();
        for r in records {
            match decode_record(&r.data) {
                Ok(c) => out.push(c),
                Err(e) => problems.push(problem(
                    format!(
                        "stream {} {}:{}",
                        self.stream_name, r.shard_id, r.sequence_number
                    ),
                    e,
                )),
            }
        }
        (out, problems)
    }

    /// The next part of the stream tail after `position` (`tail:<shard index>:<sequence
    /// number>`, or the start), at most `tail_chunk` records of one shard; an empty part at
    /// the end. Only for streams whose reads page reliably (see
    /// [`StreamReader::empty_read_is_the_end`]).
    async fn tail_part(
        &self,
        position: Option<&str>,
        archive_parts: usize,
    ) -> Result<ReplayChunk, SourceError> {
        let failed = |e: crate::ports::LogError| {
            SourceError(format!("reading stream {}: {e}", self.stream_name))
        };
        let (mut shard, mut after) = match position.and_then(|p| p.strip_prefix(TAIL_PREFIX)) {
            Some(rest) => {
                let (index, seq) = rest
                    .split_once(':')
                    .ok_or_else(|| SourceError(format!("not a replay position: {rest:?}")))?;
                let index = index
                    .parse::<usize>()
                    .map_err(|_| SourceError(format!("not a replay position: {rest:?}")))?;
                (index, Some(seq.to_owned()))
            }
            None => (0, None),
        };
        let shards = self.stream.shards().await.map_err(failed)?;
        while let Some(id) = shards.get(shard) {
            let records = self
                .stream
                .read(id, after.as_deref(), self.tail_chunk)
                .await
                .map_err(failed)?;
            let Some(last) = records.last().map(|r| r.sequence_number.clone()) else {
                shard += 1;
                after = None;
                continue;
            };
            let (records, problems) = self.decode(records);
            return Ok(ReplayChunk {
                records,
                position: format!("{TAIL_PREFIX}{shard}:{last}"),
                problems,
                done: archive_parts,
                total: Some(archive_parts + 1),
            });
        }
        Ok(ReplayChunk {
            records: Vec::new(),
            position: TAIL_POSITION.into(),
            problems: Vec::new(),
            done: archive_parts + 1,
            total: Some(archive_parts + 1),
        })
    }
}

impl<A: ArchiveStore, R: StreamReader, I: ReadModelQueries> EventSource for LogSource<A, R, I> {
    async fn entity_events(
        &self,
        key: &StreamKey,
        until: Option<Timestamp>,
    ) -> Result<(Vec<EventEnvelope>, Vec<SourceProblem>), SourceError> {
        let window = self.window(key, until).await;
        let listed = match window {
            Some((from, to, _)) => self.keys_overlapping(from, to).await?,
            None => self
                .archive
                .list_keys(None, None)
                .await
                .map_err(unreadable)?,
        };
        let wanted =
            |e: &EventEnvelope| e.stream_key() == *key && until.is_none_or(|t| e.occurred_at <= t);
        let keep = |records: Vec<CommitRecord>| {
            records
                .into_iter()
                .flat_map(|r| r.events)
                .filter(|e| wanted(e))
                .collect::<Vec<_>>()
        };
        let (records, mut problems) = self.read_objects(listed.clone()).await;
        let mut events = keep(records);
        let (tail, tail_problems) = self.tail(Some(key)).await?;
        events.extend(keep(tail));
        problems.extend(tail_problems);
        if let Some((_, _, highest)) = window {
            let found = events.iter().map(|e| e.version).max().unwrap_or(0);
            if found < highest {
                // Published late and no longer on the stream: read the rest of the archive.
                tracing::warn!(entity = %key, found, highest, "events outside the indexed window; reading the whole archive");
                let all = self
                    .archive
                    .list_keys(None, None)
                    .await
                    .map_err(unreadable)?;
                let rest: Vec<String> = all.into_iter().filter(|k| !listed.contains(k)).collect();
                let (records, more_problems) = self.read_objects(rest).await;
                events.extend(keep(records));
                problems.extend(more_problems);
            }
        }
        Ok((events, problems))
    }

    async fn next_chunk(&self, position: Option<&str>) -> Result<Option<ReplayChunk>, SourceError> {
        if position == Some(TAIL_POSITION) {
            return Ok(None);
        }
        // Listed at the start of each replay (a warm hydrator serves many), then reused
        // while it walks the chunks.
        let cached = self
            .keys
            .lock()
            .await
            .clone()
            .filter(|_| position.is_some());
        let keys = match cached {
            Some(keys) => keys,
            None => {
                let listed = Arc::new(
                    self.archive
                        .list_keys(None, None)
                        .await
                        .map_err(unreadable)?,
                );
                *self.keys.lock().await = Some(listed.clone());
                listed
            }
        };
        let total = keys.len();
        let in_tail = position.is_some_and(|p| p.starts_with(TAIL_PREFIX));
        let start = match position {
            None => 0,
            Some(_) if in_tail => total,
            Some(after) => keys.partition_point(|k| k.as_str() <= after),
        };
        if start < total {
            let batch: Vec<String> = keys[start..(start + PARALLELISM).min(total)].to_vec();
            let last = batch.last().cloned().expect("non-empty");
            let (records, problems) = self.read_objects(batch).await;
            let done = keys.partition_point(|k| k.as_str() <= last.as_str());
            return Ok(Some(ReplayChunk {
                records,
                position: last,
                problems,
                done,
                total: Some(total + 1),
            }));
        }
        if self.stream.empty_read_is_the_end() {
            // One shard's part at a time: a log that keeps everything (the embedded one) is
            // never held in memory whole.
            let from = position.filter(|_| in_tail);
            return self.tail_part(from, total).await.map(Some);
        }
        let (records, problems) = self.tail(None).await?;
        Ok(Some(ReplayChunk {
            records,
            position: TAIL_POSITION.into(),
            problems,
            done: total + 1,
            total: Some(total + 1),
        }))
    }
}
