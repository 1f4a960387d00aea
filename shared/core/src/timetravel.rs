//! Time travel over one entity's events, whatever mix of archive and stream tail they came
//! from: merge (dedupe on version, order, report gaps), then the state as of a time or a
//! version, and the history between two times with the state after each step and the reason
//! behind every failure, cancellation or adjustment.

use crate::codec::decode_event;
use crate::envelope::{EventEnvelope, StreamKey};
use crate::time::Timestamp;
use crate::views::{project, HistoryEntry, ReadModel, View};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// One entity's events, deduplicated and in version order, with what is known to be missing.
#[derive(Debug, Clone, PartialEq)]
pub struct EntityLog {
    pub key: StreamKey,
    /// Contiguous from version 1 up to the first gap.
    pub events: Vec<EventEnvelope>,
    /// Copies found after the first gap (never folded: the state before them is unknown),
    /// by version; they still tell when those versions happened.
    pub beyond_gap: BTreeMap<u64, EventEnvelope>,
    pub issues: Vec<LogIssue>,
    /// The latest version committed, when known (the write model's head): an answer about
    /// "now" is complete only if it holds every version up to it.
    pub latest: Option<u64>,
    /// When versions happened, from an index, for versions the log copies did not give:
    /// tells whether a missing version lies before or after a point in time.
    pub known_times: BTreeMap<u64, Timestamp>,
}

impl EntityLog {
    /// Adds what is known besides the copies: the latest committed version and the times of
    /// indexed versions.
    pub fn knowing(mut self, latest: Option<u64>, known_times: BTreeMap<u64, Timestamp>) -> Self {
        self.latest = latest;
        self.known_times = known_times;
        self
    }

    /// The highest version this log has a copy of.
    pub fn highest_found(&self) -> u64 {
        let prefix = self.events.last().map_or(0, |e| e.version);
        self.beyond_gap
            .keys()
            .next_back()
            .copied()
            .unwrap_or(0)
            .max(prefix)
    }

    /// When `version` happened, if any copy or the index says.
    fn time_of(&self, version: u64) -> Option<Timestamp> {
        let in_prefix = version
            .checked_sub(1)
            .and_then(|i| self.events.get(i as usize))
            .filter(|e| e.version == version)
            .map(|e| e.occurred_at);
        in_prefix
            .or_else(|| self.beyond_gap.get(&version).map(|e| e.occurred_at))
            .or_else(|| self.known_times.get(&version).copied())
    }

    fn has(&self, version: u64) -> bool {
        version >= 1 && (version as usize) <= self.events.len()
            || self.beyond_gap.contains_key(&version)
    }

    /// The last version an answer about `as_of` must hold: the latest (now), the one asked
    /// for, or the last one that happened by then. Versions are in time order, so the last
    /// one by T is the one before the first known to be after T.
    pub fn target(&self, as_of: AsOf) -> u64 {
        let latest = self.latest.unwrap_or_else(|| self.highest_found());
        match as_of {
            AsOf::Now => latest,
            AsOf::Version(v) => v.min(latest.max(self.highest_found())),
            AsOf::Time(t) => {
                let versions = self
                    .events
                    .iter()
                    .map(|e| e.version)
                    .chain(self.beyond_gap.keys().copied())
                    .chain(self.known_times.keys().copied());
                versions
                    .filter(|v| self.time_of(*v).is_some_and(|at| at > t))
                    .min()
                    .map_or(latest, |after| after - 1)
            }
        }
    }

    /// Versions up to `target` the log has no copy of.
    pub fn missing_up_to(&self, target: u64) -> Vec<u64> {
        (1..=target).filter(|v| !self.has(*v)).collect()
    }
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
    let mut beyond_gap = BTreeMap::new();
    for (expected, (version, event)) in (1u64..).zip(by_version) {
        if !beyond_gap.is_empty() || version != expected {
            if beyond_gap.is_empty() {
                issues.push(LogIssue::Gap {
                    expected,
                    found: version,
                });
            }
            beyond_gap.insert(version, event);
            continue;
        }
        contiguous.push(event);
    }
    EntityLog {
        key,
        events: contiguous,
        beyond_gap,
        issues,
        latest: None,
        known_times: BTreeMap::new(),
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
    /// The state as far as the log is whole: None when the entity did not exist yet at that
    /// point, or when its first version is missing.
    pub view: Option<View<S>>,
    /// True only when the view holds every version up to that point (the latest committed
    /// one for "now") and each was readable.
    pub complete: bool,
    /// Versions up to that point with no copy in the log.
    pub missing_versions: Vec<u64>,
    pub issues: Vec<LogIssue>,
}

fn reason_of(data: &serde_json::Value) -> Option<String> {
    ["error", "reason"]
        .iter()
        .find_map(|k| data.get(*k).and_then(|v| v.as_str()).map(str::to_owned))
}

/// A fold of the log up to a target version: the view after each readable step, and
/// whether the answer is whole.
struct Folded<S> {
    view: Option<View<S>>,
    complete: bool,
    missing_versions: Vec<u64>,
    issues: Vec<LogIssue>,
}

/// Folds the contiguous log up to `target`, calling `step` after each event with the view
/// it made, stopping (and reporting) at an event it cannot read. Complete only when every
/// version up to `target` is there and readable, and none is claimed twice.
fn fold_to<A: ReadModel>(
    log: &EntityLog,
    target: u64,
    mut step: impl FnMut(&View<A::State>, HistoryEntry),
) -> Folded<A::State> {
    let mut view = None;
    let mut issues = log.issues.clone();
    let mut unreadable = false;
    for envelope in log.events.iter().take_while(|e| e.version <= target) {
        match decode_event::<A>(envelope) {
            Ok(event) => {
                let (next, entry) = project::<A>(view, envelope, &event);
                step(&next, entry);
                view = Some(next);
            }
            Err(e) => {
                issues.push(LogIssue::Unreadable {
                    version: envelope.version,
                    reason: e.to_string(),
                });
                unreadable = true;
                break;
            }
        }
    }
    let missing_versions = log.missing_up_to(target);
    let conflict = issues
        .iter()
        .any(|i| matches!(i, LogIssue::Conflict { version, .. } if *version <= target));
    Folded {
        view,
        complete: missing_versions.is_empty() && !unreadable && !conflict,
        missing_versions,
        issues,
    }
}

/// Folds the log up to `as_of`. The answer is complete only when every version up to the
/// point is there and readable (see [`EntityLog::target`]); a gap is listed in
/// `missing_versions`, never papered over.
pub fn state_at<A: ReadModel>(log: &EntityLog, as_of: AsOf) -> StateAt<A::State> {
    let folded = fold_to::<A>(log, log.target(as_of), |_, _| {});
    StateAt {
        view: folded.view,
        complete: folded.complete,
        missing_versions: folded.missing_versions,
        issues: folded.issues,
    }
}

/// The steps of a history, with whether they are all there.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(bound(deserialize = "S: serde::de::DeserializeOwned"))]
pub struct HistoryAt<S> {
    pub steps: Vec<Step<S>>,
    /// True only when every version up to `to` (the latest committed one without `to`) is
    /// there and readable.
    pub complete: bool,
    pub missing_versions: Vec<u64>,
    pub issues: Vec<LogIssue>,
}

/// The steps with `from <= occurred_at <= to`, each with the state right after it (folded
/// from version 1, so every step's state is whole).
pub fn history<A: ReadModel>(
    log: &EntityLog,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> HistoryAt<A::State> {
    let mut steps = Vec::new();
    let target = log.target(to.map_or(AsOf::Now, AsOf::Time));
    let folded = fold_to::<A>(log, target, |view, entry| {
        if from.is_none_or(|from| entry.occurred_at >= from) {
            steps.push(Step {
                version: entry.version,
                event_type: entry.event_type,
                occurred_at: entry.occurred_at,
                actor: entry.actor,
                reason: reason_of(&entry.data),
                data: entry.data,
                status_after: entry.status_after,
                state_after: view.state.clone(),
            });
        }
    });
    HistoryAt {
        steps,
        complete: folded.complete,
        missing_versions: folded.missing_versions,
        issues: folded.issues,
    }
}
