//! The write protocol, generic over the ports:
//!
//! 1. strongly consistent read of the head;
//! 2. `decide` (or 409 if the caller's expected version is not the head's): [`plan`], pure;
//! 3. one conditional commit: new head + events appended to the outbox + the idempotency
//!    record of the request's key (every commit has one: the caller's key, or one made for
//!    the request, so a commit whose answer was lost can be told apart from one that did
//!    not happen);
//! 4. publish the whole outbox as one record, then confirm (clear) what was published.
//!
//! If the process dies between any two steps nothing is lost: committed events wait in the
//! outbox until the next command on that entity or the sweep publishes them, and readers
//! dedupe on `(aggregate, version)` so a republish is harmless. Every answer is true: a
//! refusal for a store error says nothing was written only when the store said so; a commit
//! whose answer was lost is looked up by its key, and when that cannot tell, the answer says
//! the outcome is unknown and names the key to retry with.

use crate::access::{Access, Caller, Policy};
use crate::aggregate::{Aggregate, RefusalKind};
use crate::codec::encode_event;
use crate::envelope::{EventEnvelope, Metadata, StreamKey};
use crate::hydrate::Hydrated;
use crate::ports::{Commit, Head, IdempotencyRecord, StoreError};
use crate::storable::Unstorable;
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Namespace for deterministic event ids (UUID v5 of command id and index).
const EVENT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6c1d_6a7e_4f0b_4b8e_9d0e_7a54_e3f1_2c90);

#[derive(Debug, Clone)]
pub struct WriteConfig {
    /// Outbox events one head may hold before new commands wait for a publish.
    pub max_pending: usize,
    /// Bytes of outbox events one head may hold (its item is at most 400 KB in DynamoDB and
    /// its record at most 1 MiB on Kinesis, with the state beside it).
    pub max_pending_bytes: usize,
    /// Optimistic retries when the caller gave no expected version, and tries of a commit
    /// the store was too busy for.
    pub max_attempts: u32,
    /// How long a stored answer is replayed for a key the caller gave.
    pub idempotency_ttl_secs: i64,
    /// How long the record of a key made for a request (the caller gave none) is kept: long
    /// enough for a retry after an answer that said the outcome was unknown.
    pub made_key_ttl_secs: i64,
    /// Who publishes a commit's outbox to the log.
    pub publish: PublishMode,
}

/// Who publishes a committed outbox (the template's `PublishMode`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PublishMode {
    /// The command handler publishes right after its commit; a failed publish answers 202
    /// and the next command or the sweep publishes it.
    #[default]
    Inline,
    /// A relay on the write-model table's change stream publishes every head whose outbox
    /// the commit filled; the command handler only commits, and never answers 202.
    Stream,
}

impl PublishMode {
    /// `inline` or `stream`, as the template and the runner spell it.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "inline" => Some(PublishMode::Inline),
            "stream" => Some(PublishMode::Stream),
            _ => None,
        }
    }
}

impl Default for WriteConfig {
    fn default() -> Self {
        WriteConfig {
            max_pending: 100,
            max_pending_bytes: 256 * 1024,
            max_attempts: 5,
            idempotency_ttl_secs: 24 * 3600,
            made_key_ttl_secs: 3600,
            publish: PublishMode::Inline,
        }
    }
}

/// Who asked: for the aggregate's policy, and the audit fields of the envelope.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub actor: String,
    /// The authenticated caller, checked against the aggregate's [`Policy`] before `decide`.
    /// The HTTP edge always sets it; None is a trusted caller inside the system (the
    /// operator's tools, tests of the protocol itself).
    pub caller: Option<Caller>,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
}

/// An `Idempotency-Key` and the fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: String,
    /// Made for the request, not given by the caller: kept for a shorter time, and only
    /// for commits (a refusal or a command that changed nothing is not stored under it).
    pub made: bool,
}

impl IdempotencyKey {
    /// A key the caller gave.
    pub fn given(key: impl Into<String>, fingerprint: impl Into<String>) -> Self {
        IdempotencyKey {
            key: key.into(),
            fingerprint: fingerprint.into(),
            made: false,
        }
    }

    /// The command id of the request under this key: a retry gets the same ids, and a key
    /// reused for another request after its record expired does not.
    pub fn command_id(&self) -> String {
        uuid::Uuid::new_v5(
            &EVENT_ID_NAMESPACE,
            format!("{}\n{}", self.key, self.fingerprint).as_bytes(),
        )
        .to_string()
    }

    /// A key made for a request that came without one.
    pub fn made(key: impl Into<String>, fingerprint: impl Into<String>) -> Self {
        IdempotencyKey {
            key: key.into(),
            fingerprint: fingerprint.into(),
            made: true,
        }
    }
}

#[derive(Debug, Clone)]
pub struct CommandRequest<C> {
    pub aggregate_id: String,
    pub command: C,
    pub expected_version: Option<u64>,
    /// None: the service makes a key for the request.
    pub idempotency: Option<IdempotencyKey>,
    pub context: RequestContext,
}

/// What a command did. Stored with the idempotency record and replayed for a repeated key.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CommandOutcome {
    pub aggregate_type: String,
    pub aggregate_id: String,
    pub version: u64,
    pub events: Vec<EventEnvelope>,
    /// True when this command created the entity.
    pub created: bool,
    /// False when the events are committed but still in the outbox (the log was down, or
    /// the relay has not published them yet).
    pub published: bool,
    /// True when the table's stream relay publishes the events (`PublishMode: stream`): they
    /// are committed, and on their way to the log without the caller doing anything.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub relayed: bool,
    /// True when this is a stored response replayed for a repeated `Idempotency-Key`.
    #[serde(skip)]
    pub replayed: bool,
}

/// A refusal as stored under a key, so the same request gets the same refusal.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredRefusal {
    pub kind: RefusalKind,
    pub code: String,
    pub message: String,
}

/// What a key's record holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum StoredAnswer {
    Refused { refused: StoredRefusal },
    Done(CommandOutcome),
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Domain(E),
    /// A refusal replayed from the record of a repeated key.
    #[error("{}", .0.message)]
    Refused(StoredRefusal),
    #[error("expected version {expected}, but the entity is at version {actual}")]
    VersionConflict { expected: u64, actual: u64 },
    #[error("too many concurrent writers; the entity is at version {actual}")]
    Contention { actual: u64 },
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("{pending} events are waiting to be published for this entity; retry later")]
    OutboxFull { pending: usize },
    /// The entity's head stayed locked by other transactions; nothing was written.
    #[error("the entity is being written by other transactions; nothing was written")]
    Busy,
    /// A value no store can hold; nothing was written.
    #[error(transparent)]
    Unstorable(#[from] Unstorable),
    /// The commit's answer was lost and its key could not say whether it happened: retrying
    /// with `key` gives the answer (the original one if it did happen).
    #[error("the outcome is unknown; retry with the same Idempotency-Key")]
    OutcomeUnknown { key: String },
    /// The caller may see the entity but not do this (403), naming the rule.
    #[error("not allowed: {0}")]
    Forbidden(&'static str),
    /// The caller may not know the entity exists: answered as not found (404).
    #[error("no such entity")]
    Hidden,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// What one attempt of the protocol decided, before any effect.
#[derive(Debug)]
pub enum Plan {
    /// Nothing to write: the command changed nothing.
    Nothing(CommandOutcome),
    /// Commit this; the outcome is the answer once it is committed.
    Commit {
        commit: Box<Commit>,
        outcome: CommandOutcome,
    },
}

/// Why an attempt cannot be planned.
#[derive(Debug)]
pub enum Blocked<E: std::error::Error + 'static> {
    /// The outbox must be drained first.
    OutboxFull {
        pending: usize,
    },
    Refused(CommandError<E>),
}

/// The head's outbox as bytes on the wire.
fn pending_bytes(events: &[EventEnvelope]) -> usize {
    events
        .iter()
        .map(|e| serde_json::to_vec(e).map_or(0, |b| b.len()))
        .sum()
}

/// Step 2, pure: the head as read, the request, the command id and the time in; what to
/// commit (or that nothing changes, or why not) out.
pub fn plan<A: Policy>(
    key: &StreamKey,
    head: Option<&Head>,
    request: &CommandRequest<A::Command>,
    idempotency: &IdempotencyKey,
    command_id: &str,
    now: Timestamp,
    config: &WriteConfig,
) -> Result<Plan, Blocked<A::Error>> {
    let current = restore::<A>(head).map_err(|e| Blocked::Refused(e.into()))?;
    if let Some(caller) = &request.context.caller {
        match A::may_command(caller, &current.state, &request.command) {
            Access::Allowed => {}
            Access::Forbidden(rule) => return Err(Blocked::Refused(CommandError::Forbidden(rule))),
            Access::Hidden => return Err(Blocked::Refused(CommandError::Hidden)),
        }
    }
    if let Some(expected) = request.expected_version {
        if expected != current.version {
            return Err(Blocked::Refused(CommandError::VersionConflict {
                expected,
                actual: current.version,
            }));
        }
    }
    let pending = head.map(|h| h.pending.as_slice()).unwrap_or_default();
    if pending.len() >= config.max_pending || pending_bytes(pending) >= config.max_pending_bytes {
        return Err(Blocked::OutboxFull {
            pending: pending.len(),
        });
    }
    let events = A::decide(&current.state, request.command.clone())
        .map_err(|e| Blocked::Refused(CommandError::Domain(e)))?;
    let current_version = current.version;
    let (new_state, envelopes) =
        envelopes::<A>(key, current, head, &events, command_id, request, now);
    // A command that decides no events leaves the entity at its current version.
    let version = envelopes.last().map_or(current_version, |e| e.version);
    let outcome = CommandOutcome {
        aggregate_type: key.aggregate_type.clone(),
        aggregate_id: key.aggregate_id.clone(),
        version,
        events: envelopes.clone(),
        created: head.is_none() && !envelopes.is_empty(),
        published: true,
        relayed: false,
        replayed: false,
    };
    if envelopes.is_empty() {
        return Ok(Plan::Nothing(outcome));
    }
    let mut pending = pending.to_vec();
    pending.extend(envelopes.iter().cloned());
    if pending.len() > 1 && pending_bytes(&pending) > config.max_pending_bytes {
        return Err(Blocked::OutboxFull {
            pending: pending.len() - envelopes.len(),
        });
    }
    let ttl = if idempotency.made {
        config.made_key_ttl_secs
    } else {
        config.idempotency_ttl_secs
    };
    let commit = Commit {
        expected_version: head.map_or(0, |h| h.version),
        head: Head {
            key: key.clone(),
            version,
            state: serde_json::to_value(&new_state).expect("state always serializes"),
            pending,
            last_occurred_at: envelopes.last().map(|e| e.occurred_at),
            updated_at: now,
            created_at: match head {
                Some(h) => h.created_at,
                None => Some(now),
            },
        },
        idempotency: Some(record(idempotency, key, version, &outcome, now, ttl)),
        now,
    };
    Ok(Plan::Commit {
        commit: Box::new(commit),
        outcome,
    })
}

/// The record of an answer under a key, expiring at a whole second.
pub fn record<T: Serialize>(
    idempotency: &IdempotencyKey,
    key: &StreamKey,
    version: u64,
    answer: &T,
    now: Timestamp,
    ttl_secs: i64,
) -> IdempotencyRecord {
    let expires = now.plus_millis(ttl_secs * 1000).as_millis();
    IdempotencyRecord {
        key: idempotency.key.clone(),
        fingerprint: idempotency.fingerprint.clone(),
        stream: key.clone(),
        version,
        outcome: serde_json::to_value(answer).expect("answers serialize"),
        expires_at: Timestamp::from_millis(expires - expires.rem_euclid(1000)).expect("in range"),
    }
}

/// Wraps decided events in envelopes and folds them into the state.
fn envelopes<A: Aggregate>(
    key: &StreamKey,
    current: Hydrated<A::State>,
    head: Option<&Head>,
    events: &[A::Event],
    command_id: &str,
    request: &CommandRequest<A::Command>,
    now: Timestamp,
) -> (A::State, Vec<EventEnvelope>) {
    // occurred_at never goes backwards within an entity, so "as of T" and "up to
    // version N" agree even if clocks differ between Lambda instances.
    let occurred_at = match head.and_then(|h| h.last_occurred_at) {
        Some(last) if last > now => last,
        _ => now,
    };
    let mut state = current.state;
    let mut envelopes = Vec::with_capacity(events.len());
    for (index, event) in events.iter().enumerate() {
        let (event_type, schema_version, data) = encode_event::<A>(event);
        envelopes.push(EventEnvelope {
            event_id: uuid::Uuid::new_v5(
                &EVENT_ID_NAMESPACE,
                format!("{command_id}:{index}").as_bytes(),
            )
            .to_string(),
            aggregate_type: key.aggregate_type.clone(),
            aggregate_id: key.aggregate_id.clone(),
            version: current.version + 1 + index as u64,
            event_type,
            schema_version,
            occurred_at,
            recorded_at: now,
            metadata: Metadata {
                command_id: command_id.to_owned(),
                correlation_id: request.context.correlation_id.clone(),
                causation_id: request.context.causation_id.clone(),
                actor: request.context.actor.clone(),
            },
            data,
        });
        state = A::evolve(state, event);
    }
    (state, envelopes)
}

/// The state and version a head holds (a new entity if there is none).
pub fn restore<A: Aggregate>(head: Option<&Head>) -> Result<Hydrated<A::State>, StoreError> {
    match head {
        None => Ok(Hydrated::default()),
        Some(h) => Ok(Hydrated {
            version: h.version,
            state: serde_json::from_value(h.state.clone())
                .map_err(|e| StoreError::Corrupt(format!("state of {}: {e}", h.key)))?,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_outcome_from_before_refusals_were_stored_still_reads() {
        let outcome = CommandOutcome {
            aggregate_type: "ride".into(),
            aggregate_id: "1".into(),
            version: 1,
            events: vec![],
            created: true,
            published: true,
            relayed: false,
            replayed: false,
        };
        let json = serde_json::to_value(&outcome).unwrap();
        assert_eq!(
            serde_json::from_value::<StoredAnswer>(json).unwrap(),
            StoredAnswer::Done(outcome)
        );
        let refused = serde_json::json!({ "refused": { "kind": "rule", "code": "ride.closed", "message": "m" } });
        assert!(matches!(
            serde_json::from_value::<StoredAnswer>(refused).unwrap(),
            StoredAnswer::Refused { .. }
        ));
    }
}
