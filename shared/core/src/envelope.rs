//! The event envelope and the commit record that carries a run of them.

use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::fmt;

/// Which entity a stream of events belongs to: `ride#42`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct StreamKey {
    pub aggregate_type: String,
    pub aggregate_id: String,
}

impl StreamKey {
    pub fn new(aggregate_type: impl Into<String>, aggregate_id: impl Into<String>) -> Self {
        StreamKey {
            aggregate_type: aggregate_type.into(),
            aggregate_id: aggregate_id.into(),
        }
    }

    /// The Kinesis partition key, and the key of the entity's items in DynamoDB.
    pub fn partition_key(&self) -> String {
        format!("{}#{}", self.aggregate_type, self.aggregate_id)
    }

    /// Whether `key` is this entity's partition key (without building it).
    pub fn is_partition_key(&self, key: &str) -> bool {
        key.strip_prefix(self.aggregate_type.as_str())
            .and_then(|rest| rest.strip_prefix('#'))
            == Some(self.aggregate_id.as_str())
    }

    pub fn parse_partition_key(key: &str) -> Option<Self> {
        let (t, id) = key.split_once('#')?;
        (!t.is_empty() && !id.is_empty()).then(|| StreamKey::new(t, id))
    }
}

impl fmt::Display for StreamKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}#{}", self.aggregate_type, self.aggregate_id)
    }
}

/// Audit metadata of the command that produced an event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Metadata {
    pub command_id: String,
    #[serde(default)]
    pub correlation_id: Option<String>,
    #[serde(default)]
    pub causation_id: Option<String>,
    pub actor: String,
}

/// One immutable event, as stored on the stream, in the archive and in the outbox.
///
/// Read through [`wire::Envelope`], the same fields flat: serde's `flatten` buffers every
/// field of the object before it can read the metadata (about 3% of the processor's
/// instructions an event).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(from = "wire::Envelope")]
pub struct EventEnvelope {
    pub event_id: String,
    pub aggregate_type: String,
    pub aggregate_id: String,
    /// 1-based position in the entity's stream: contiguous, no gaps, no repeats.
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub schema_version: u32,
    pub occurred_at: Timestamp,
    pub recorded_at: Timestamp,
    #[serde(flatten)]
    pub metadata: Metadata,
    pub data: serde_json::Value,
}

mod wire {
    use super::{EventEnvelope, Metadata, Timestamp};
    use serde::Deserialize;

    /// An [`EventEnvelope`] as written: the metadata's fields beside the others.
    #[derive(Deserialize)]
    pub struct Envelope {
        event_id: String,
        aggregate_type: String,
        aggregate_id: String,
        version: u64,
        #[serde(rename = "type")]
        event_type: String,
        schema_version: u32,
        occurred_at: Timestamp,
        recorded_at: Timestamp,
        command_id: String,
        #[serde(default)]
        correlation_id: Option<String>,
        #[serde(default)]
        causation_id: Option<String>,
        actor: String,
        data: serde_json::Value,
    }

    impl From<Envelope> for EventEnvelope {
        fn from(e: Envelope) -> Self {
            EventEnvelope {
                event_id: e.event_id,
                aggregate_type: e.aggregate_type,
                aggregate_id: e.aggregate_id,
                version: e.version,
                event_type: e.event_type,
                schema_version: e.schema_version,
                occurred_at: e.occurred_at,
                recorded_at: e.recorded_at,
                metadata: Metadata {
                    command_id: e.command_id,
                    correlation_id: e.correlation_id,
                    causation_id: e.causation_id,
                    actor: e.actor,
                },
                data: e.data,
            }
        }
    }
}

impl EventEnvelope {
    /// Whether two events belong to the same entity (no key is built to compare them).
    pub fn same_stream(&self, other: &EventEnvelope) -> bool {
        self.aggregate_type == other.aggregate_type && self.aggregate_id == other.aggregate_id
    }

    pub fn stream_key(&self) -> StreamKey {
        StreamKey::new(&self.aggregate_type, &self.aggregate_id)
    }
}

/// What one Kinesis record (and so one archive line) carries: a run of one entity's events
/// in version order. Why a record holds the whole pending run: ARCHITECTURE.md, the ordering invariant.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommitRecord {
    pub events: Vec<EventEnvelope>,
}

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum CommitRecordError {
    #[error("a commit record holds no events")]
    Empty,
    #[error("a commit record mixes entities: {0} and {1}")]
    MixedStreams(StreamKey, StreamKey),
    #[error("versions in a commit record must be contiguous and ascending: {0} then {1}")]
    NotContiguous(u64, u64),
}

impl CommitRecord {
    /// Builds a record, checking the shape every consumer relies on.
    pub fn new(events: Vec<EventEnvelope>) -> Result<Self, CommitRecordError> {
        let record = CommitRecord { events };
        record.validate()?;
        Ok(record)
    }

    pub fn validate(&self) -> Result<(), CommitRecordError> {
        let first = self.events.first().ok_or(CommitRecordError::Empty)?;
        for pair in self.events.windows(2) {
            if !pair[1].same_stream(first) {
                return Err(CommitRecordError::MixedStreams(
                    first.stream_key(),
                    pair[1].stream_key(),
                ));
            }
            if pair[1].version != pair[0].version + 1 {
                return Err(CommitRecordError::NotContiguous(
                    pair[0].version,
                    pair[1].version,
                ));
            }
        }
        Ok(())
    }

    /// The entity this record belongs to (records are never empty once validated).
    pub fn stream_key(&self) -> Option<StreamKey> {
        self.events.first().map(EventEnvelope::stream_key)
    }

    pub fn partition_key(&self) -> Option<String> {
        self.stream_key().map(|k| k.partition_key())
    }

    pub fn first_version(&self) -> Option<u64> {
        self.events.first().map(|e| e.version)
    }

    pub fn last_version(&self) -> Option<u64> {
        self.events.last().map(|e| e.version)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const WRITTEN: &str = r#"{"event_id":"e-1","aggregate_type":"ride","aggregate_id":"r-1","version":1,"type":"RideBooked","schema_version":1,"occurred_at":"2026-12-03T10:01:00.000Z","recorded_at":"2026-12-03T10:01:00.250Z","command_id":"c-1","correlation_id":null,"causation_id":null,"actor":"rider-1","data":{"fare":12}}"#;

    #[test]
    fn an_envelope_reads_its_metadata_from_beside_the_other_fields_and_writes_it_back_there() {
        let e: EventEnvelope = serde_json::from_str(WRITTEN).unwrap();
        assert_eq!(e.metadata.command_id, "c-1");
        assert_eq!(e.metadata.actor, "rider-1");
        assert_eq!(e.data["fare"], 12);
        // Byte for byte, in the same order: the archive and the stream keep this text.
        assert_eq!(serde_json::to_string(&e).unwrap(), WRITTEN);
    }

    #[test]
    fn optional_metadata_may_be_absent_and_unknown_fields_are_ignored_but_required_ones_are_not() {
        let trimmed = WRITTEN.replace(
            r#""correlation_id":null,"causation_id":null,"#,
            r#""later":true,"#,
        );
        let e: EventEnvelope = serde_json::from_str(&trimmed).unwrap();
        assert_eq!(e.metadata.correlation_id, None);
        let no_actor = WRITTEN.replace(r#""actor":"rider-1","#, "");
        let err = serde_json::from_str::<EventEnvelope>(&no_actor).unwrap_err();
        assert!(err.to_string().contains("missing field `actor`"), "{err}");
    }

    #[test]
    fn a_partition_key_is_recognised_exactly() {
        let key = StreamKey::new("ride", "r-1");
        assert!(key.is_partition_key("ride#r-1"));
        for other in [
            "ride#r-10",
            "ride#r-",
            "rides#r-1",
            "ride-r-1",
            "ride#",
            "#r-1",
            "",
        ] {
            assert!(!key.is_partition_key(other), "{other}");
        }
        assert!(StreamKey::new("ride", "a#b").is_partition_key("ride#a#b"));
    }

    #[test]
    fn a_record_refuses_a_second_entity_and_names_both() {
        let a: EventEnvelope = serde_json::from_str(WRITTEN).unwrap();
        let mut b = a.clone();
        b.version = 2;
        b.aggregate_id = "r-2".into();
        assert_eq!(
            CommitRecord::new(vec![a, b]).unwrap_err(),
            CommitRecordError::MixedStreams(
                StreamKey::new("ride", "r-1"),
                StreamKey::new("ride", "r-2")
            )
        );
    }
}
