//! The write-model table's change stream (DynamoDB Streams), for `PublishMode: stream`.
//!
//! On AWS, Lambda's event source mapping reads the stream and hands the relay batches of
//! records in its own JSON shape ([`EventRecord`]); [`relay_change`] says which of them left
//! a head with an outbox to publish. The template's filter drops the rest before they cost
//! an invocation; this check is the same rule, so the relay is right without the filter.
//!
//! Locally (tests, the runner) nothing invokes the relay, so [`TableStreamReader`] reads the
//! stream as a [`StreamReader`] and each record's data is that same JSON, for the runner's
//! event source mapping. As DynamoDB Streams documents it:
//! - `DescribeStream` (paged by the last shard id) gives the shards with their parents; a
//!   shard with an ending sequence number is closed (shards roll over about every 4 hours);
//! - `GetRecords` says nothing about how far behind a read is, and may answer an empty page
//!   while the shard holds more further on: an empty page of an open shard counts as caught
//!   up, and the next read goes on with the iterator it returned, so it moves forward;
//! - an iterator lives 15 minutes (renewed once when expired); a position older than the
//!   24-hour retention (`TrimmedDataAccessException`) is read from the oldest record kept.

use crate::stream_reader::{read_on, Got, Iterators};
use aws_lambda_events::event::dynamodb::EventRecord;
use aws_sdk_dynamodbstreams::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodbstreams::types::ShardIteratorType;
use std::sync::{Arc, Mutex};
use timeline_core::ports::{LogError, LogRecord, StreamReader};
use timeline_core::shards::{Page, PageEnd, ReadFrom, Shard};
use timeline_core::{StreamKey, Timestamp};
use timeline_engine::relay::Change;

/// The stream view the relay needs: its filter and [`relay_change`] read the new image.
pub const STREAM_VIEW: &str = "NEW_IMAGE";

/// The change a stream record stands for, if it left a head with events to publish: an
/// insert or update of a head item (not an idempotency record) whose new image carries the
/// outbox marker. Removals, confirms (which clear the marker) and other items are not.
pub fn relay_change(record: &EventRecord) -> Option<Change> {
    if !matches!(record.event_name.as_str(), "INSERT" | "MODIFY") {
        return None;
    }
    let text = |item: &serde_dynamo::Item, name: &str| match item.get(name) {
        Some(serde_dynamo::AttributeValue::S(s)) => Some(s.clone()),
        _ => None,
    };
    text(&record.change.new_image, "outbox")?;
    let head = StreamKey::parse_partition_key(&text(&record.change.keys, "pk")?)?;
    Some(Change {
        sequence_number: record.change.sequence_number.clone()?,
        head,
    })
}

/// A record the [`TableStreamReader`] read, back in Lambda's shape.
pub fn decode(record: &LogRecord) -> Result<EventRecord, serde_json::Error> {
    serde_json::from_slice(&record.data)
}

/// The table's stream as a [`StreamReader`] (see the module documentation). Clones share
/// their iterators.
#[derive(Clone, Debug)]
pub struct TableStreamReader {
    client: aws_sdk_dynamodbstreams::Client,
    stream_arn: String,
    iterators: Arc<Mutex<Iterators>>,
}

fn log_error<E, R>(e: SdkError<E, R>) -> LogError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    if e.code() == Some("LimitExceededException") {
        LogError::Throttled(DisplayErrorContext(e).to_string())
    } else {
        LogError::Unavailable(DisplayErrorContext(e).to_string())
    }
}

impl TableStreamReader {
    /// The reader of `table`'s latest stream; an error when the table has none (it was
    /// deployed with `PublishMode: inline`).
    pub async fn of_table(
        dynamodb: &aws_sdk_dynamodb::Client,
        streams: aws_sdk_dynamodbstreams::Client,
        table: &str,
    ) -> Result<Self, LogError> {
        let described = dynamodb
            .describe_table()
            .table_name(table)
            .send()
            .await
            .map_err(|e| LogError::Unavailable(DisplayErrorContext(e).to_string()))?;
        let arn = described
            .table()
            .and_then(|t| t.latest_stream_arn())
            .ok_or_else(|| {
                LogError::Unavailable(format!(
                    "table {table} has no stream (PublishMode stream turns it on)"
                ))
            })?;
        Ok(TableStreamReader {
            client: streams,
            stream_arn: arn.to_owned(),
            iterators: Arc::default(),
        })
    }

    async fn iterator(&self, shard: &str, from: &ReadFrom) -> Result<Option<String>, LogError> {
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(&self.stream_arn)
            .shard_id(shard);
        let request = match from {
            ReadFrom::Oldest => request.shard_iterator_type(ShardIteratorType::TrimHorizon),
            ReadFrom::At(seq) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .sequence_number(seq),
            ReadFrom::After(seq) => request
                .shard_iterator_type(ShardIteratorType::AfterSequenceNumber)
                .sequence_number(seq),
            ReadFrom::Time(_) => {
                return Err(LogError::Unavailable(
                    "DynamoDB Streams cannot be read from a time".into(),
                ))
            }
        };
        match request.send().await {
            Ok(out) => Ok(out.shard_iterator),
            Err(e)
                if !matches!(from, ReadFrom::Oldest)
                    && e.code() == Some("TrimmedDataAccessException") =>
            {
                tracing::warn!(
                    shard,
                    ?from,
                    "position past the stream's retention; reading from the oldest record"
                );
                Box::pin(self.iterator(shard, &ReadFrom::Oldest)).await
            }
            Err(e) => Err(log_error(e)),
        }
    }

    /// One stream record as Lambda would deliver it.
    fn lambda_record(
        &self,
        shard: &str,
        r: &aws_sdk_dynamodbstreams::types::Record,
    ) -> Result<LogRecord, LogError> {
        let change = r
            .dynamodb()
            .ok_or_else(|| LogError::Unavailable("a stream record without its change".into()))?;
        let sequence = change.sequence_number().unwrap_or_default().to_owned();
        let item = |image: Option<&std::collections::HashMap<String, _>>| {
            serde_dynamo::Item::from(image.cloned().unwrap_or_default())
        };
        let keys = item(change.keys());
        let pk = match keys.get("pk") {
            Some(serde_dynamo::AttributeValue::S(pk)) => pk.clone(),
            _ => String::new(),
        };
        let created = change
            .approximate_creation_date_time()
            .and_then(|t| t.to_millis().ok())
            .unwrap_or_else(|| chrono::Utc::now().timestamp_millis());
        let json = serde_json::json!({
            "eventID": r.event_id().unwrap_or_default(),
            "eventName": r.event_name().map(|n| n.as_str()).unwrap_or_default(),
            "eventVersion": r.event_version(),
            "eventSource": "aws:dynamodb",
            "awsRegion": r.aws_region().unwrap_or_default(),
            "eventSourceARN": self.stream_arn,
            "dynamodb": {
                "ApproximateCreationDateTime": created as f64 / 1000.0,
                "Keys": keys,
                "NewImage": item(change.new_image()),
                "SequenceNumber": sequence,
                "SizeBytes": change.size_bytes().unwrap_or_default(),
                "StreamViewType": change.stream_view_type().map(|v| v.as_str()),
            },
        });
        let data = serde_json::to_vec(&json).expect("JSON values serialize");
        let arrival = Timestamp::from_millis(created)
            .unwrap_or_else(|| Timestamp::from_datetime(chrono::Utc::now()));
        Ok(LogRecord {
            shard_id: shard.to_owned(),
            sequence_number: sequence,
            partition_key: pk,
            data,
            arrival,
        })
    }
}

impl StreamReader for TableStreamReader {
    async fn shards(&self) -> Result<Vec<Shard>, LogError> {
        let mut shards = Vec::new();
        let mut last: Option<String> = None;
        loop {
            let out = self
                .client
                .describe_stream()
                .stream_arn(&self.stream_arn)
                .set_exclusive_start_shard_id(last.clone())
                .send()
                .await
                .map_err(log_error)?;
            let Some(description) = out.stream_description else {
                return Ok(shards);
            };
            for s in description.shards() {
                shards.push(Shard {
                    id: s.shard_id().unwrap_or_default().to_owned(),
                    parents: s.parent_shard_id().into_iter().map(str::to_owned).collect(),
                    // One key's changes stay in one shard lineage; there are no hash ranges.
                    hash_range: (0, u128::MAX),
                    closed: s
                        .sequence_number_range()
                        .and_then(|r| r.ending_sequence_number())
                        .is_some(),
                });
            }
            last = description.last_evaluated_shard_id;
            if last.is_none() {
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
                .limit(limit.clamp(1, 1000) as i32)
                .send()
                .await
            {
                Ok(out) => out,
                Err(e) if e.code() == Some("ExpiredIteratorException") => return Got::Expired,
                Err(e) => return Got::Failed(log_error(e)),
            };
            let records = match out
                .records()
                .iter()
                .map(|r| self.lambda_record(shard, r))
                .collect::<Result<Vec<_>, _>>()
            {
                Ok(records) => records,
                Err(e) => return Got::Failed(e),
            };
            Got::Page {
                end: match (&out.next_shard_iterator, records.is_empty()) {
                    (None, _) => PageEnd::Closed,
                    (Some(_), true) => PageEnd::CaughtUp,
                    (Some(_), false) => PageEnd::Behind,
                },
                records,
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

    fn key_hash(&self, _partition_key: &str) -> u128 {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(name: &str, pk: &str, outbox: bool) -> EventRecord {
        let mut image = serde_json::json!({ "pk": { "S": pk }, "version": { "N": "3" } });
        if outbox {
            image["outbox"] = serde_json::json!({ "S": "pending#4" });
        }
        serde_json::from_value(serde_json::json!({
            "eventID": "1",
            "eventName": name,
            "awsRegion": "eu-west-1",
            "dynamodb": {
                "Keys": { "pk": { "S": pk } },
                "NewImage": image,
                "SequenceNumber": "400000000000000000001",
                "SizeBytes": 120,
            },
        }))
        .unwrap()
    }

    #[test]
    fn only_heads_left_with_an_outbox_are_relayed() {
        assert_eq!(
            relay_change(&record("INSERT", "ride#r1", true)),
            Some(Change {
                sequence_number: "400000000000000000001".into(),
                head: StreamKey::new("ride", "r1"),
            })
        );
        assert!(relay_change(&record("MODIFY", "video#v1", true)).is_some());
        // The confirm clears the marker; idempotency records and removals are not heads.
        assert_eq!(relay_change(&record("MODIFY", "ride#r1", false)), None);
        assert_eq!(relay_change(&record("INSERT", "idem#k1", false)), None);
        assert_eq!(relay_change(&record("REMOVE", "ride#r1", true)), None);
    }
}
