//! The aggregate abstraction: a pure `decide` and a pure `evolve`.
//!
//! `decide(&State, Command) -> Result<Vec<Event>, Error>` checks the business rules and says
//! what happened; `evolve(State, &Event) -> State` applies one fact. Neither does I/O, reads a
//! clock or generates ids: the write protocol adds those in the envelope.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::fmt::Debug;

/// How the edge should treat a refused command.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RefusalKind {
    /// A business rule failed (HTTP 422).
    Rule,
    /// The entity does not exist (HTTP 404).
    NotFound,
    /// The entity already exists (HTTP 409).
    AlreadyExists,
}

/// A refused command: a stable machine-readable rule name and a human sentence.
pub trait DomainError: std::error::Error + Send + Sync + 'static {
    /// A stable name for the rule that failed, e.g. `ride.driver_not_assigned`.
    fn code(&self) -> &'static str;
    fn kind(&self) -> RefusalKind {
        RefusalKind::Rule
    }
}

/// A domain event enum. Encoded with serde as `{"type": ..., "data": ...}` (adjacently
/// tagged), so the variant name is the event type on the wire.
pub trait DomainEvent:
    Serialize + DeserializeOwned + Clone + Debug + PartialEq + Send + Sync
{
    /// The event type as written in the envelope's `type` field.
    fn event_type(&self) -> &'static str;
}

pub trait Aggregate: 'static {
    /// The `aggregate_type` in envelopes and the first half of the partition key.
    const TYPE: &'static str;
    /// `Default` is the state of an entity with no events.
    type State: Default + Clone + Debug + PartialEq + Serialize + DeserializeOwned + Send + Sync;
    /// Serialize: its numbers are checked against what the stores hold before it is decided.
    type Command: Clone + Debug + Serialize + DeserializeOwned + Send + Sync;
    type Event: DomainEvent;
    type Error: DomainError;

    fn decide(state: &Self::State, command: Self::Command)
        -> Result<Vec<Self::Event>, Self::Error>;

    fn evolve(state: Self::State, event: &Self::Event) -> Self::State;

    /// The payload schema version written for new events of this type.
    fn schema_version(_event_type: &str) -> u32 {
        1
    }

    /// Upcasting hook: turns the payload of `event_type` at `from_version` into the payload
    /// at `from_version + 1`, or `None` if that step is unknown. The codec calls it
    /// repeatedly until the payload reaches [`Aggregate::schema_version`].
    fn upcast(
        _event_type: &str,
        _from_version: u32,
        _data: serde_json::Value,
    ) -> Option<serde_json::Value> {
        None
    }
}
