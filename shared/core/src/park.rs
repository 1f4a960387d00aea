//! Parking: a record the processor can never apply (undecodable, an event or schema this
//! processor does not know yet, a gap, a write the store refuses) is not retried to
//! exhaustion and discarded. Its entity is parked instead: a marker says from which version
//! the entity's view is behind and why, the entity's later records are set aside as they
//! come (each fails at once the same way, as the first missing version never arrives), and
//! every other entity goes on. Once the cause is fixed (a newer processor deployed, a value
//! the store accepts), a redrive re-projects the entity from the log itself (archive and
//! stream) and ends the parking (`timeline_engine::park`). These are the parking's terms,
//! as every store keeps them.

use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Why an entity is parked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ParkReason {
    /// The record is not a commit record this processor can read.
    Undecodable { reason: String },
    /// An entity type no part of this processor projects.
    UnknownType { aggregate_type: String },
    /// An event this processor cannot decode: an event type or a schema version it does not
    /// know yet (a newer command handler wrote it), or data that does not fit the type.
    UnreadableEvent { version: u64, reason: String },
    /// A version is missing before this record: it never reached the processor.
    Gap { expected: u64, found: u64 },
    /// The stored view cannot be read by this processor (a newer one wrote it).
    UnreadableView { reason: String },
    /// The read models refuse the write for good (an item over their limits).
    Refused { reason: String },
}

impl std::fmt::Display for ParkReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ParkReason::Undecodable { reason } => write!(f, "undecodable record: {reason}"),
            ParkReason::UnknownType { aggregate_type } => {
                write!(f, "no aggregate of type {aggregate_type:?} is registered")
            }
            ParkReason::UnreadableEvent { version, reason } => {
                write!(f, "version {version} unreadable: {reason}")
            }
            ParkReason::Gap { expected, found } => {
                write!(f, "version {expected} missing before version {found}")
            }
            ParkReason::UnreadableView { reason } => write!(f, "stored view unreadable: {reason}"),
            ParkReason::Refused { reason } => write!(f, "the read models refused it: {reason}"),
        }
    }
}

/// An entity's parking, as stored and listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parked {
    /// The entity's partition key (`ride#r1`), or the key of a record that names none.
    pub entity: String,
    /// The first version its view lacks (none when the record could not be read at all).
    pub from_version: Option<u64>,
    /// Where the record that parked it is on the stream.
    pub shard_id: Option<String>,
    pub sequence_number: String,
    pub reason: ParkReason,
    pub parked_at: Timestamp,
    /// Records set aside since (a redelivered batch counts again): a redrive ends the
    /// parking only if this did not move while it read the log.
    pub set_aside: u64,
}

impl Parked {
    /// The same entity parked again: the first parking stays, the count grows.
    pub fn again(&mut self, later: &Parked) {
        self.set_aside += later.set_aside;
    }

    /// Every parking, oldest first (then by entity), as each store lists them.
    pub fn sort(parked: &mut [Parked]) {
        parked.sort_by(|a, b| (a.parked_at, &a.entity).cmp(&(b.parked_at, &b.entity)));
    }
}
