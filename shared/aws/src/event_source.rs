//! The whole log in AWS: the S3 archive (Firehose's layout) plus the Kinesis stream tail,
//! for the hydrator. One entity's events are found without scanning the whole archive: the
//! history read model says when the entity's events were recorded, and only the archive
//! hours that can hold them are read; the stream tail is always read, so an event archived
//! late (a delayed publish) is still found while the stream retains it.

use crate::archive::S3Archive;
use crate::read_models::DynamoReadModels;
use crate::stream_reader::read_all;
use futures::StreamExt;
use timeline_core::archive::{parse_object_key, MAX_BUFFER_MILLIS};
use timeline_core::codec::decode_record;
use timeline_core::read_ports::{PageRequest, ReadModelQueries};
use timeline_core::replay::{EventSource, ReplayChunk, SourceError, SourceProblem};
use timeline_core::{CommitRecord, EventEnvelope, StreamKey, Timestamp};

/// How long after being recorded an event is normally on its way to the archive (Firehose
/// buffers up to 15 minutes). A later one (a publish retried by the outbox sweep) is still on
/// the stream tail, and if the index says versions are missing, the whole archive is read.
pub const ARCHIVE_SLACK_MS: i64 = timeline_core::archive::MAX_BUFFER_MILLIS;
/// Archive objects fetched and decoded at once.
pub const PARALLELISM: usize = 4;
const TAIL_POSITION: &str = "tail";

#[derive(Debug)]
pub struct AwsEventSource {
    archive: S3Archive,
    kinesis: aws_sdk_kinesis::Client,
    stream: String,
    /// The history read model, used as the index of where an entity's events are.
    index: Option<DynamoReadModels>,
    /// The archive's keys, listed once per replay.
    keys: tokio::sync::OnceCell<Vec<String>>,
}

fn problem(location: impl Into<String>, reason: impl ToString) -> SourceProblem {
    SourceProblem {
        location: location.into(),
        reason: reason.to_string(),
    }
}

impl AwsEventSource {
    pub fn new(
        archive: S3Archive,
        kinesis: aws_sdk_kinesis::Client,
        stream: impl Into<String>,
        index: Option<DynamoReadModels>,
    ) -> Self {
        AwsEventSource {
            archive,
            kinesis,
            stream: stream.into(),
            index,
            keys: tokio::sync::OnceCell::new(),
        }
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

    /// The entity's events in these archive objects (and the problems met).
    async fn read_archive(
        &self,
        keys: Vec<String>,
        wanted: &(dyn Fn(&EventEnvelope) -> bool + Sync),
        events: &mut Vec<EventEnvelope>,
        problems: &mut Vec<SourceProblem>,
    ) {
        let mut objects = self.archive.read_objects(keys, PARALLELISM);
        while let Some((object, result)) = objects.next().await {
            match result {
                Ok(records) => events.extend(
                    records
                        .into_iter()
                        .flat_map(|r| r.events)
                        .filter(|e| wanted(e)),
                ),
                Err(e) => problems.push(problem(object, e)),
            }
        }
    }

    /// Every record on the stream now (all shards), decoded; undecodable ones are reported.
    async fn tail(&self) -> Result<(Vec<CommitRecord>, Vec<SourceProblem>), SourceError> {
        let records = read_all(&self.kinesis, &self.stream)
            .await
            .map_err(|e| SourceError(e.to_string()))?;
        let mut out = Vec::with_capacity(records.len());
        let mut problems = Vec::new();
        for r in records {
            match decode_record(&r.data) {
                Ok(c) => out.push(c),
                Err(e) => problems.push(problem(
                    format!(
                        "stream {} {}:{}",
                        self.stream, r.shard_id, r.sequence_number
                    ),
                    e,
                )),
            }
        }
        Ok((out, problems))
    }
}

impl EventSource for AwsEventSource {
    async fn entity_events(
        &self,
        key: &StreamKey,
        until: Option<Timestamp>,
    ) -> Result<(Vec<EventEnvelope>, Vec<SourceProblem>), SourceError> {
        let window = self.window(key, until).await;
        let listed = match window {
            Some((from, to, _)) => {
                // Objects are named by the arrival of their first record and hold at most
                // 15 minutes of arrivals: keep those that can overlap [from, to].
                let keys = self.archive.list_keys(Some(from), Some(to)).await;
                keys.map(|keys| {
                    keys.into_iter()
                        .filter(|k| match parse_object_key(&self.archive.prefix, k) {
                            Some(p) => {
                                p.written_at.as_millis() >= from.as_millis() - MAX_BUFFER_MILLIS
                                    && p.written_at <= to
                            }
                            // Not in Firehose's layout: read it, so nothing is skipped in silence.
                            None => true,
                        })
                        .collect::<Vec<_>>()
                })
            }
            None => self.archive.list_keys(None, None).await,
        }
        .map_err(|e| SourceError(e.to_string()))?;
        let wanted =
            |e: &EventEnvelope| e.stream_key() == *key && until.is_none_or(|t| e.occurred_at <= t);
        let mut events = Vec::new();
        let mut problems = Vec::new();
        self.read_archive(listed.clone(), &wanted, &mut events, &mut problems)
            .await;
        let (tail, tail_problems) = self.tail().await?;
        events.extend(
            tail.into_iter()
                .flat_map(|r| r.events)
                .filter(|e| wanted(e)),
        );
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
                    .map_err(|e| SourceError(e.to_string()))?;
                let rest: Vec<String> = all.into_iter().filter(|k| !listed.contains(k)).collect();
                self.read_archive(rest, &wanted, &mut events, &mut problems)
                    .await;
            }
        }
        Ok((events, problems))
    }

    async fn next_chunk(&self, position: Option<&str>) -> Result<Option<ReplayChunk>, SourceError> {
        if position == Some(TAIL_POSITION) {
            return Ok(None);
        }
        let keys = self
            .keys
            .get_or_try_init(|| async {
                self.archive
                    .list_keys(None, None)
                    .await
                    .map_err(|e| SourceError(e.to_string()))
            })
            .await?;
        let total = keys.len();
        let start = match position {
            None => 0,
            Some(after) => keys.partition_point(|k| k.as_str() <= after),
        };
        if start < total {
            let batch: Vec<String> = keys[start..(start + PARALLELISM).min(total)].to_vec();
            let last = batch.last().cloned().expect("non-empty");
            let mut records = Vec::new();
            let mut problems = Vec::new();
            let mut objects = self.archive.read_objects(batch, PARALLELISM);
            while let Some((object, result)) = objects.next().await {
                match result {
                    Ok(r) => records.extend(r),
                    Err(e) => problems.push(problem(object, e)),
                }
            }
            let done = keys.partition_point(|k| k.as_str() <= last.as_str());
            return Ok(Some(ReplayChunk {
                records,
                position: last,
                problems,
                done,
                total: Some(total + 1),
            }));
        }
        let (records, problems) = self.tail().await?;
        Ok(Some(ReplayChunk {
            records,
            position: TAIL_POSITION.into(),
            problems,
            done: total + 1,
            total: Some(total + 1),
        }))
    }
}
