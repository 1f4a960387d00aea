//! A Kinesis batch as the event source mapping hands it to Lambda. Read here rather than
//! with `aws_lambda_events::KinesisEvent`: its parser reads `approximateArrivalTimestamp`
//! from the fraction's digits as written by a float (`1764324060.25` becomes .025 s, not
//! .250 s), and the arrival is kept as the record's position for time travel.

use serde::{Deserialize, Deserializer};
use timeline_core::Timestamp;
use timeline_engine::projection::IncomingRecord;

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct KinesisBatch {
    #[serde(rename = "Records")]
    pub records: Vec<BatchRecord>,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct BatchRecord {
    /// `<shard id>:<sequence number>`.
    #[serde(rename = "eventID", default)]
    pub event_id: Option<String>,
    pub kinesis: KinesisData,
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KinesisData {
    pub sequence_number: String,
    pub partition_key: String,
    #[serde(deserialize_with = "base64_data")]
    pub data: Vec<u8>,
    /// Seconds since the epoch, with milliseconds as a fraction.
    #[serde(default)]
    pub approximate_arrival_timestamp: Option<f64>,
}

fn base64_data<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    use base64::Engine;
    let text = String::deserialize(d)?;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .map_err(serde::de::Error::custom)
}

impl BatchRecord {
    pub fn shard_id(&self) -> Option<&str> {
        self.event_id
            .as_deref()
            .and_then(|id| id.split_once(':'))
            .map(|(shard, _)| shard)
    }

    pub fn arrival(&self) -> Option<Timestamp> {
        let seconds = self.kinesis.approximate_arrival_timestamp?;
        Timestamp::from_millis((seconds * 1000.0).round() as i64).filter(|t| t.as_millis() > 0)
    }

    pub fn into_incoming(self) -> IncomingRecord {
        IncomingRecord {
            shard_id: self.shard_id().map(str::to_owned),
            arrival: self.arrival(),
            sequence_number: self.kinesis.sequence_number,
            partition_key: self.kinesis.partition_key,
            data: self.kinesis.data,
        }
    }
}

/// The answer to the event source mapping: resume from `first_failure` (a record's sequence
/// number), or nothing when the whole batch is done (never an empty identifier).
pub fn response(
    first_failure: Option<String>,
) -> aws_lambda_events::event::streams::KinesisEventResponse {
    let mut response = aws_lambda_events::event::streams::KinesisEventResponse::default();
    if let Some(sequence_number) = first_failure {
        let mut failure = aws_lambda_events::event::streams::KinesisBatchItemFailure::default();
        failure.item_identifier = Some(sequence_number);
        response.batch_item_failures.push(failure);
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(arrival: &str) -> BatchRecord {
        serde_json::from_str(&format!(
            r#"{{"eventID":"shardId-000000000003:4959","kinesis":{{"sequenceNumber":"4959",
                "partitionKey":"ride#1","data":"eyJhIjoxfQ==","approximateArrivalTimestamp":{arrival}}}}}"#
        ))
        .unwrap()
    }

    #[test]
    fn the_arrival_keeps_its_milliseconds_whatever_digits_the_float_has() {
        for (json, millis) in [
            ("1764324060.25", 1_764_324_060_250),
            ("1764324060.025", 1_764_324_060_025),
            ("1764324060.5", 1_764_324_060_500),
            ("1764324060.123", 1_764_324_060_123),
            ("1764324060", 1_764_324_060_000),
        ] {
            assert_eq!(
                record(json).arrival().unwrap().as_millis(),
                millis,
                "{json}"
            );
        }
    }

    #[test]
    fn the_shard_and_data_come_from_the_event() {
        let r = record("1764324060.1").into_incoming();
        assert_eq!(r.shard_id.as_deref(), Some("shardId-000000000003"));
        assert_eq!(r.sequence_number, "4959");
        assert_eq!(r.data, br#"{"a":1}"#);
    }
}
