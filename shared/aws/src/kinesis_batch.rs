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

/// Decodes the base64 text where it lies in the event (no copy of it first). Asked for as
/// bytes, so the JSON parser does not check the text is UTF-8 first: the decoder refuses
/// anything that is not base64 anyway, and that check was a tenth of reading the event.
/// Decoded with SIMD (a quarter of reading the event with a scalar decoder); the scalar
/// one only says where text that is not base64 goes wrong.
fn base64_data<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    struct Base64;
    impl serde::de::Visitor<'_> for Base64 {
        type Value = Vec<u8>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("base64 text")
        }
        fn visit_bytes<E: serde::de::Error>(self, text: &[u8]) -> Result<Vec<u8>, E> {
            use base64::Engine;
            base64_simd::STANDARD.decode_to_vec(text).or_else(|_| {
                base64::engine::general_purpose::STANDARD
                    .decode(text)
                    .map_err(E::custom)
            })
        }
        fn visit_str<E: serde::de::Error>(self, text: &str) -> Result<Vec<u8>, E> {
            self.visit_bytes(text.as_bytes())
        }
    }
    d.deserialize_bytes(Base64)
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

    #[test]
    fn data_of_every_length_decodes_to_what_was_sent() {
        use base64::Engine;
        // Across the SIMD decoder's block sizes, and its tail.
        for len in 0..=200usize {
            let data: Vec<u8> = (0..len).map(|i| (i * 37 + len) as u8).collect();
            let text = base64::engine::general_purpose::STANDARD.encode(&data);
            let batch: KinesisBatch = serde_json::from_str(&format!(
                r#"{{"Records":[{{"kinesis":{{"sequenceNumber":"1","partitionKey":"p","data":"{text}"}}}}]}}"#
            ))
            .unwrap();
            assert_eq!(batch.records[0].kinesis.data, data, "{len} bytes");
        }
    }

    #[test]
    fn data_that_is_not_base64_is_refused_with_the_reason() {
        let bad = r#"{"Records":[{"kinesis":{"sequenceNumber":"1","partitionKey":"ride#1","data":"not base64!"}}]}"#;
        let err = serde_json::from_str::<KinesisBatch>(bad).unwrap_err();
        assert!(err.to_string().contains("Invalid"), "{err}");
        // A JSON escape inside the text (legal, if unusual) still decodes.
        let escaped = r#"{"Records":[{"kinesis":{"sequenceNumber":"1","partitionKey":"ride#1","data":"eyJhIjoxfQ\u003d\u003d"}}]}"#;
        let batch: KinesisBatch = serde_json::from_str(escaped).unwrap();
        assert_eq!(batch.records[0].kinesis.data, br#"{"a":1}"#);
        // Read from a parsed value (text, not bytes) as well.
        let value: serde_json::Value = serde_json::from_str(escaped).unwrap();
        let batch: KinesisBatch = serde_json::from_value(value).unwrap();
        assert_eq!(batch.records[0].kinesis.data, br#"{"a":1}"#);
        // Neither text that is not UTF-8 nor an array of numbers passes for base64.
        let not_utf8 = r#"{"Records":[{"kinesis":{"sequenceNumber":"1","partitionKey":"ride#1","data":"eyJh\udc00"}}]}"#;
        assert!(serde_json::from_str::<KinesisBatch>(not_utf8).is_err());
        let numbers = r#"{"Records":[{"kinesis":{"sequenceNumber":"1","partitionKey":"ride#1","data":[101,121]}}]}"#;
        assert!(serde_json::from_str::<KinesisBatch>(numbers).is_err());
    }
}
