//! Integration events: the public contract other teams build on (billing, notifications,
//! analytics, the video pipeline's next stage). A small set of domain facts, versioned apart
//! from the internal events, so an internal change cannot break a consumer unnoticed: each
//! aggregate maps its internal events to these in one place (`ride/integration.rs`,
//! `video/integration.rs`), and every published type has a JSON Schema under
//! `shared/core/schemas/integration/`, checked against the mapping by the tests.
//!
//! Every integration event carries the id consumers dedupe on (the internal event's id, so a
//! redelivered record yields the same id), the entity and its version (order per entity), and
//! the correlation and causation ids of the request that caused it.

use crate::aggregate::Aggregate;
use crate::codec::{decode_event, DecodeError};
use crate::envelope::EventEnvelope;
use crate::registry::{dispatch, Entity, Unregistered, Visitor};
use serde::Serialize;
use serde_json::{json, Value};

/// The contract's version, in every event's `contract_version` (a breaking change to any
/// published type is a new version, published next to the old one).
pub const CONTRACT_VERSION: u32 = 1;

/// What an aggregate publishes.
pub trait Publishes: Aggregate {
    /// Every integration event type it may publish (`ride.completed`, ...).
    const PUBLISHED: &'static [&'static str];

    /// The integration event an internal event is, as (type, data), or None when it is an
    /// internal step other teams do not see.
    fn integration(event: &Self::Event) -> Option<(&'static str, Value)>;
}

/// Why an internal event has no integration event to give.
#[derive(Debug, thiserror::Error)]
pub enum IntegrationError {
    #[error(transparent)]
    Unregistered(#[from] Unregistered),
    #[error(transparent)]
    Undecodable(#[from] DecodeError),
}

/// One integration event, as EventBridge takes it (`source`, `detail-type`, `detail`).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct IntegrationEvent {
    /// `timeline.rides`, `timeline.videos`.
    pub source: String,
    /// `ride.completed`, ...
    pub detail_type: &'static str,
    pub detail: Value,
}

impl IntegrationEvent {
    /// The id consumers dedupe on.
    pub fn id(&self) -> &str {
        self.detail["id"].as_str().unwrap_or_default()
    }
}

/// The integration event of an internal event, if it has one; an event this build cannot
/// decode, or of an unregistered type, is an error (never skipped silently).
pub fn integration_event(
    envelope: &EventEnvelope,
) -> Result<Option<IntegrationEvent>, IntegrationError> {
    struct Map<'a>(&'a EventEnvelope);
    impl Visitor for Map<'_> {
        type Output = Result<Option<IntegrationEvent>, DecodeError>;
        fn visit<A: Entity>(self) -> Self::Output {
            let e = self.0;
            let event = decode_event::<A>(e)?;
            Ok(A::integration(&event).map(|(detail_type, data)| IntegrationEvent {
                source: format!("timeline.{}", A::COLLECTION),
                detail_type,
                detail: json!({
                    "id": e.event_id,
                    "type": detail_type,
                    "contract_version": CONTRACT_VERSION,
                    "entity": { "type": e.aggregate_type, "id": e.aggregate_id, "version": e.version },
                    "occurred_at": e.occurred_at,
                    "correlation_id": e.metadata.correlation_id,
                    "causation_id": e.metadata.causation_id,
                    "data": data,
                }),
            }))
        }
    }
    Ok(dispatch(&envelope.aggregate_type, Map(envelope))??)
}

/// Every integration event type any registered aggregate publishes.
pub fn published_types() -> Vec<&'static str> {
    struct Types;
    impl Visitor for Types {
        type Output = &'static [&'static str];
        fn visit<A: Entity>(self) -> Self::Output {
            A::PUBLISHED
        }
    }
    crate::registry::KINDS
        .iter()
        .flat_map(|k| dispatch(k.aggregate_type, Types).expect("registered"))
        .copied()
        .collect()
}
