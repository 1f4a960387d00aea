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
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
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

impl EventEnvelope {
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
        let key = first.stream_key();
        for pair in self.events.windows(2) {
            let next_key = pair[1].stream_key();
            if next_key != key {
                return Err(CommitRecordError::MixedStreams(key, next_key));
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
