//! Time travel over one entity's events, whatever mix of archive and stream tail they came
//! from: merge (dedupe on version, order, report gaps), then the state as of a time or a
//! version, and the history between two times with the state after each step and the reason
//! behind every failure, cancellation or adjustment.

use crate::codec::decode_event;
use crate::envelope::{EventEnvelope, StreamKey};
use crate::time::Timestamp;
use crate::views::{project, ReadModel, View};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One entity's events, deduplicated and in version order, with what is known to be missing.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityLog {
    pub key: StreamKey,
    /// Contiguous from version 1 up to the first gap.
    pub events: Vec<EventEnvelope>,
    pub issues: Vec<LogIssue>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogIssue {
    /// A version is missing: the history after it is incomplete and not used.
    Gap { expected: u64, found: u64 },
    /// Two different events claim the same version (should never happen).
    Conflict {
        version: u64,
        event_ids: Vec<String>,
    },
    /// An event this code cannot read (unknown type or schema): reported, never dropped.
    Unreadable { version: u64, reason: String },
}

/// Merges copies of an entity's events from any sources.
pub fn merge(key: StreamKey, events: impl IntoIterator<Item = EventEnvelope>) -> EntityLog {
    let mut by_version: BTreeMap<u64, EventEnvelope> = BTreeMap::new();
    let mut issues = Vec::new();
    for event in events {
        if event.stream_key() != key {
            continue;
        }
        match by_version.get(&event.version) {
            Some(existing) if existing.event_id != event.event_id => {
                issues.push(LogIssue::Conflict {
                    version: event.version,
                    event_ids: vec![existing.event_id.clone(), event.event_id.clone()],
                })
            }
            Some(_) => {}
            None => {
                by_version.insert(event.version, event);
            }
        }
    }
    let mut contiguous = Vec::with_capacity(by_version.len());
    for (expected, (version, event)) in (1u64..).zip(by_version) {
        if version != expected {
            issues.push(LogIssue::Gap {
                expected,
                found: version,
            });
            break;
        }
        contiguous.push(event);
    }
    EntityLog {
        key,
        events: contiguous,
        issues,
    }
}

/// Which point of an entity's timeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AsOf {
    Now,
    /// Every event with `occurred_at <= T`.
    Time(Timestamp),
    /// Every event up to this version.
    Version(u64),
}

/// One step of a history: the event, the status and state right after it, and why.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Step<S> {
    pub version: u64,
    #[serde(rename = "type")]
    pub event_type: String,
    pub occurred_at: Timestamp,
    pub actor: String,
    pub data: serde_json::Value,
    pub status_after: String,
    /// The reason given for a failure, cancellation or adjustment, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub state_after: S,
}

/// What the log says about an entity at a point in time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: serde::de::DeserializeOwned"))]
pub struct StateAt<S> {
    /// None when the entity did not exist yet at that point.
    pub view: Option<View<S>>,
    /// True when the log had no gap or unreadable event up to that point.
    pub complete: bool,
    pub issues: Vec<LogIssue>,
}

fn reason_of(data: &serde_json::Value) -> Option<String> {
    ["error", "reason"]
        .iter()
        .find_map(|k| data.get(*k).and_then(|v| v.as_str()).map(str::to_owned))
}

/// Folds the log up to `as_of`, stopping (and reporting) at an event it cannot read.
pub fn state_at<A: ReadModel>(log: &EntityLog, as_of: AsOf) -> StateAt<A::State> {
    let mut view = None;
    let mut issues = log.issues.clone();
    let mut readable_to = 0;
    for envelope in &log.events {
        let within = match as_of {
            AsOf::Now => true,
            AsOf::Time(t) => envelope.occurred_at <= t,
            AsOf::Version(v) => envelope.version <= v,
        };
        if !within {
            break;
        }
        match decode_event::<A>(envelope) {
            Ok(event) => view = Some(project::<A>(view, envelope, &event).0),
            Err(e) => {
                issues.push(LogIssue::Unreadable {
                    version: envelope.version,
                    reason: e.to_string(),
                });
                break;
            }
        }
        readable_to = envelope.version;
    }
    // A gap only matters if the requested point lies beyond it.
    let wanted_beyond_gap = |expected: u64| match as_of {
        AsOf::Version(v) => v >= expected,
        _ => true,
    };
    let complete = issues.iter().all(|i| match i {
        LogIssue::Gap { expected, .. } => !wanted_beyond_gap(*expected),
        LogIssue::Unreadable { version, .. } => {
            *version > readable_to && !wanted_beyond_gap(*version)
        }
        LogIssue::Conflict { .. } => false,
    });
    StateAt {
        view,
        complete,
        issues,
    }
}

/// The steps with `from <= occurred_at <= to`, each with the state right after it.
pub fn history<A: ReadModel>(
    log: &EntityLog,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> (Vec<Step<A::State>>, Vec<LogIssue>) {
    let mut view: Option<View<A::State>> = None;
    let mut steps = Vec::new();
    let mut issues = log.issues.clone();
    for envelope in &log.events {
        if to.is_some_and(|to| envelope.occurred_at > to) {
            break;
        }
        let event = match decode_event::<A>(envelope) {
            Ok(event) => event,
            Err(e) => {
                issues.push(LogIssue::Unreadable {
                    version: envelope.version,
                    reason: e.to_string(),
                });
                break;
            }
        };
        let (next, entry) = project::<A>(view, envelope, &event);
        if from.is_none_or(|from| envelope.occurred_at >= from) {
            steps.push(Step {
                version: entry.version,
                event_type: entry.event_type,
                occurred_at: entry.occurred_at,
                actor: entry.actor,
                reason: reason_of(&entry.data),
                data: entry.data,
                status_after: entry.status_after,
                state_after: next.state.clone(),
            });
        }
        view = Some(next);
    }
    (steps, issues)
}
