//! Reads a Kinesis stream back, every shard from its oldest record: used by tests, and by
//! tools that need the stream tail.

use aws_sdk_kinesis::types::ShardIteratorType;

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

/// Every record of every shard, each shard in its own order, shards one after another.
pub async fn read_all(
    client: &aws_sdk_kinesis::Client,
    stream: &str,
) -> Result<Vec<StreamRecord>, ReadError> {
    let fail = |e: &dyn std::fmt::Display| ReadError {
        stream: stream.to_owned(),
        message: e.to_string(),
    };
    let mut shard_ids = Vec::new();
    let mut next_token: Option<String> = None;
    loop {
        let mut request = client.list_shards();
        request = match &next_token {
            Some(token) => request.next_token(token),
            None => request.stream_name(stream),
        };
        let out = request
            .send()
            .await
            .map_err(|e| fail(&aws_sdk_kinesis::error::DisplayErrorContext(e)))?;
        shard_ids.extend(out.shards().iter().map(|s| s.shard_id().to_owned()));
        next_token = out.next_token;
        if next_token.is_none() {
            break;
        }
    }

    let mut records = Vec::new();
    for shard_id in shard_ids {
        let mut iterator = client
            .get_shard_iterator()
            .stream_name(stream)
            .shard_id(&shard_id)
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .map_err(|e| fail(&aws_sdk_kinesis::error::DisplayErrorContext(e)))?
            .shard_iterator;
        while let Some(it) = iterator {
            let out = client
                .get_records()
                .shard_iterator(it)
                .limit(10_000)
                .send()
                .await
                .map_err(|e| fail(&aws_sdk_kinesis::error::DisplayErrorContext(e)))?;
            let caught_up = out.records().is_empty() || out.millis_behind_latest() == Some(0);
            records.extend(out.records().iter().map(|r| {
                StreamRecord {
                    shard_id: shard_id.clone(),
                    sequence_number: r.sequence_number().to_owned(),
                    partition_key: r.partition_key().unwrap_or_default().to_owned(),
                    data: r.data().as_ref().to_vec(),
                    approximate_arrival_millis: r
                        .approximate_arrival_timestamp()
                        .and_then(|t| t.to_millis().ok()),
                }
            }));
            iterator = if caught_up {
                None
            } else {
                out.next_shard_iterator
            };
        }
    }
    Ok(records)
}

/// The Kinesis stream as a [`timeline_core::ports::StreamReader`]: what the local runner's
/// event source mapping and archive pump follow.
#[derive(Clone, Debug)]
pub struct KinesisReader {
    pub client: aws_sdk_kinesis::Client,
    pub stream: String,
}

impl timeline_core::ports::StreamReader for KinesisReader {
    async fn shards(&self) -> Result<Vec<String>, timeline_core::ports::LogError> {
        let out = self
            .client
            .list_shards()
            .stream_name(&self.stream)
            .send()
            .await
            .map_err(|e| {
                timeline_core::ports::LogError::Unavailable(
                    aws_sdk_kinesis::error::DisplayErrorContext(e).to_string(),
                )
            })?;
        Ok(out
            .shards()
            .iter()
            .map(|s| s.shard_id().to_owned())
            .collect())
    }

    fn empty_read_is_the_end(&self) -> bool {
        false
    }

    /// Follows each shard's iterators until Kinesis says it is caught up (an empty read
    /// alone does not mean the end on Kinesis).
    async fn read_all(
        &self,
    ) -> Result<Vec<timeline_core::ports::LogRecord>, timeline_core::ports::LogError> {
        let records = read_all(&self.client, &self.stream)
            .await
            .map_err(|e| timeline_core::ports::LogError::Unavailable(e.to_string()))?;
        Ok(records
            .into_iter()
            .map(|r| timeline_core::ports::LogRecord {
                arrival: arrival(r.approximate_arrival_millis),
                shard_id: r.shard_id,
                sequence_number: r.sequence_number,
                partition_key: r.partition_key,
                data: r.data,
            })
            .collect())
    }

    async fn read(
        &self,
        shard: &str,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<timeline_core::ports::LogRecord>, timeline_core::ports::LogError> {
        let fail =
            |e: &dyn std::fmt::Display| timeline_core::ports::LogError::Unavailable(e.to_string());
        let request = self
            .client
            .get_shard_iterator()
            .stream_name(&self.stream)
            .shard_id(shard);
        let request = match after {
            Some(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .starting_sequence_number(seq),
            None => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
        };
        let iterator = request
            .send()
            .await
            .map_err(|e| fail(&aws_sdk_kinesis::error::DisplayErrorContext(e)))?
            .shard_iterator;
        let Some(iterator) = iterator else {
            return Ok(vec![]);
        };
        let out = self
            .client
            .get_records()
            .shard_iterator(iterator)
            .limit(limit.clamp(1, 10_000) as i32)
            .send()
            .await
            .map_err(|e| fail(&aws_sdk_kinesis::error::DisplayErrorContext(e)))?;
        Ok(out
            .records()
            .iter()
            .map(|r| timeline_core::ports::LogRecord {
                shard_id: shard.to_owned(),
                sequence_number: r.sequence_number().to_owned(),
                partition_key: r.partition_key().unwrap_or_default().to_owned(),
                data: r.data().as_ref().to_vec(),
                arrival: arrival(
                    r.approximate_arrival_timestamp()
                        .and_then(|t| t.to_millis().ok()),
                ),
            })
            .collect())
    }
}

/// A record's arrival, or now when Kinesis gave none.
fn arrival(millis: Option<i64>) -> timeline_core::Timestamp {
    millis
        .and_then(timeline_core::Timestamp::from_millis)
        .unwrap_or_else(|| timeline_core::Timestamp::from_datetime(chrono::Utc::now()))
}
