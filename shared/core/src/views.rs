//! Read-model views: the current state of an entity as the read side shows it, built by
//! folding the same `evolve` the write side uses, plus what readers need around it (the
//! version, when each step happened, the last event id). One generic projection serves every
//! aggregate; each aggregate only says its status and its lookups.

use crate::aggregate::Aggregate;
use crate::envelope::{EventEnvelope, StreamKey};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// What an aggregate's read model needs to know beyond `evolve`.
pub trait ReadModel: Aggregate {
    /// The status users filter by (`in_progress`, `processing:50%`, ...).
    fn status(state: &Self::State) -> Option<String>;
    /// Secondary lookups this entity appears under, e.g. `("rider", "rider-42")`.
    fn lookups(state: &Self::State) -> Vec<(&'static str, String)>;
    /// The status family used by the by-status lookup (`processing:50%` lists under
    /// `processing`).
    fn status_family(status: &str) -> String {
        status.split(':').next().unwrap_or(status).to_owned()
    }
}

/// The current view of one entity.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: serde::de::DeserializeOwned"))]
pub struct View<S> {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: u64,
    pub status: String,
    pub state: S,
    /// When each kind of step last happened (event type -> `occurred_at`).
    pub steps: BTreeMap<String, Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub last_event_id: String,
}

/// One history (audit trail) entry: the event and the status right after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HistoryEntry {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: Timestamp,
    pub recorded_at: Timestamp,
    pub actor: String,
    pub event_id: String,
    pub data: serde_json::Value,
    pub status_after: String,
    /// Where its record was on the log (None when projected from the archive, which does not
    /// keep positions).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub position: Option<crate::ports::LogPosition>,
}

/// Applies one decoded event to a view (None: the entity is not in the read model yet).
/// The caller has checked the version is exactly the next one.
pub fn project<A: ReadModel>(
    view: Option<View<A::State>>,
    envelope: &EventEnvelope,
    event: &A::Event,
) -> (View<A::State>, HistoryEntry) {
    let (state, mut steps, created_at) = match view {
        Some(v) => (v.state, v.steps, v.created_at),
        None => (A::State::default(), BTreeMap::new(), envelope.occurred_at),
    };
    let state = A::evolve(state, event);
    steps.insert(envelope.event_type.clone(), envelope.occurred_at);
    let status = A::status(&state).unwrap_or_default();
    let entry = HistoryEntry {
        aggregate_type: envelope.aggregate_type.clone(),
        aggregate_id: envelope.aggregate_id.clone(),
        version: envelope.version,
        event_type: envelope.event_type.clone(),
        occurred_at: envelope.occurred_at,
        recorded_at: envelope.recorded_at,
        actor: envelope.metadata.actor.clone(),
        event_id: envelope.event_id.clone(),
        // The payload at the current schema, as the view was built from it: as recorded
        // when it was written at that schema (the common case: no second encoding), else
        // the upcast event's.
        data: if envelope.schema_version == A::schema_version(&envelope.event_type) {
            envelope.data.clone()
        } else {
            crate::codec::encode_event::<A>(event).2
        },
        status_after: status.clone(),
        position: None,
    };
    let view = View {
        aggregate_type: envelope.aggregate_type.clone(),
        aggregate_id: envelope.aggregate_id.clone(),
        version: envelope.version,
        status,
        state,
        steps,
        created_at,
        updated_at: envelope.occurred_at,
        last_event_id: envelope.event_id.clone(),
    };
    (view, entry)
}

/// A view and the history that built it.
pub type Folded<S> = Option<(View<S>, Vec<HistoryEntry>)>;

/// Folds a whole, ordered, gap-free stream into its view and history (the reference the
/// processor's incremental result must always equal).
pub fn fold<A: ReadModel>(
    events: &[EventEnvelope],
) -> Result<Folded<A::State>, crate::hydrate::HydrateError> {
    let mut view = None;
    let mut history = Vec::with_capacity(events.len());
    for (expected, envelope) in (1u64..).zip(events) {
        if envelope.version != expected {
            return Err(crate::hydrate::HydrateError::Gap {
                expected,
                found: envelope.version,
            });
        }
        let event = crate::codec::decode_event::<A>(envelope)?;
        let (next, entry) = project::<A>(view, envelope, &event);
        view = Some(next);
        history.push(entry);
    }
    Ok(view.map(|v| (v, history)))
}

impl<S> View<S> {
    pub fn key(&self) -> StreamKey {
        StreamKey::new(&self.aggregate_type, &self.aggregate_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::envelope::Metadata;
    use crate::video::VideoAggregate;

    fn envelope(
        version: u64,
        event_type: &str,
        schema_version: u32,
        data: serde_json::Value,
    ) -> EventEnvelope {
        let at: Timestamp = format!("2026-11-28T10:0{version}:00Z").parse().unwrap();
        EventEnvelope {
            event_id: format!("e{version}"),
            aggregate_type: "video".into(),
            aggregate_id: "v1".into(),
            version,
            event_type: event_type.into(),
            schema_version,
            occurred_at: at,
            recorded_at: at,
            metadata: Metadata {
                command_id: "c".into(),
                correlation_id: None,
                causation_id: None,
                actor: "a".into(),
            },
            data,
        }
    }

    #[test]
    fn history_shows_each_status_and_payloads_at_the_current_schema() {
        let events = [
            envelope(
                1,
                "VideoUploaded",
                1,
                serde_json::json!({ "title": "t", "source_uri": "s3://x" }),
            ),
            envelope(
                2,
                "ProcessingStarted",
                1,
                serde_json::json!({ "attempt": 1 }),
            ),
            // Written by an older version: a fraction, not a percentage.
            envelope(
                3,
                "ProcessingProgressed",
                1,
                serde_json::json!({ "progress": 0.5 }),
            ),
            envelope(
                4,
                "ProcessingFailed",
                1,
                serde_json::json!({ "error": "timeout" }),
            ),
        ];
        let (view, history) = fold::<VideoAggregate>(&events).unwrap().unwrap();
        let statuses: Vec<&str> = history.iter().map(|h| h.status_after.as_str()).collect();
        assert_eq!(
            statuses,
            ["uploaded", "processing", "processing:50%", "failed"]
        );
        assert_eq!(history[2].data, serde_json::json!({ "percent": 50 }));
        assert_eq!(view.status, "failed");
        assert_eq!(view.version, 4);
        assert_eq!(view.created_at.to_string(), "2026-11-28T10:01:00.000Z");
        assert_eq!(view.steps.len(), 4);
    }

    #[test]
    fn a_fold_refuses_a_gap() {
        let events = [
            envelope(
                1,
                "VideoUploaded",
                1,
                serde_json::json!({ "title": "t", "source_uri": "s3://x" }),
            ),
            envelope(
                3,
                "ProcessingStarted",
                1,
                serde_json::json!({ "attempt": 1 }),
            ),
        ];
        assert!(matches!(
            fold::<VideoAggregate>(&events),
            Err(crate::hydrate::HydrateError::Gap {
                expected: 2,
                found: 3
            })
        ));
    }
}
