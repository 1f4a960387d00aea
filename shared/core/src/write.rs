//! The write protocol of DESIGN section 4, generic over the ports:
//!
//! 1. strongly consistent read of the head;
//! 2. `decide` (or 409 if the caller's expected version is not the head's);
//! 3. one conditional commit: new head + events appended to the outbox + idempotency record;
//! 4. publish the whole outbox as one record, then confirm (clear) what was published.
//!
//! If the process dies between any two steps nothing is lost: committed events wait in the
//! outbox until the next command on that entity or the sweep publishes them, and readers
//! dedupe on `(aggregate, version)` so a republish is harmless.

use crate::aggregate::Aggregate;
use crate::codec::encode_event;
use crate::envelope::{CommitRecord, EventEnvelope, Metadata, StreamKey};
use crate::hydrate::Hydrated;
use crate::ports::{
    Clock, Commit, CommitError, EventLog, Head, IdempotencyRecord, StoreError, WriteModelStore,
};
use crate::time::Timestamp;
use serde::{Deserialize, Serialize};

/// Namespace for deterministic event ids (UUID v5 of command id and index).
const EVENT_ID_NAMESPACE: uuid::Uuid =
    uuid::Uuid::from_u128(0x6c1d_6a7e_4f0b_4b8e_9d0e_7a54_e3f1_2c90);

#[derive(Debug, Clone)]
pub struct WriteConfig {
    /// Outbox events one head may hold before new commands wait for a publish (keeps the
    /// head item and the Kinesis record far below their 400 KB / 1 MiB limits).
    pub max_pending: usize,
    /// Optimistic retries when the caller gave no expected version.
    pub max_attempts: u32,
    /// How long a stored idempotent response is replayed.
    pub idempotency_ttl_secs: i64,
}

impl Default for WriteConfig {
    fn default() -> Self {
        WriteConfig {
            max_pending: 100,
            max_attempts: 5,
            idempotency_ttl_secs: 24 * 3600,
        }
    }
}

/// Who asked, for the audit fields of the envelope.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    pub actor: String,
    pub correlation_id: Option<String>,
    pub causation_id: Option<String>,
}

/// An `Idempotency-Key` and the fingerprint of the request it came with.
#[derive(Debug, Clone)]
pub struct IdempotencyKey {
    pub key: String,
    pub fingerprint: String,
}

#[derive(Debug, Clone)]
pub struct CommandRequest<C> {
    pub aggregate_id: String,
    pub command: C,
    pub expected_version: Option<u64>,
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
    /// False when the events are committed but still in the outbox (the log was down).
    pub published: bool,
    /// True when this is a stored response replayed for a repeated `Idempotency-Key`.
    #[serde(skip)]
    pub replayed: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CommandError<E: std::error::Error + 'static> {
    #[error(transparent)]
    Domain(E),
    #[error("expected version {expected}, but the entity is at version {actual}")]
    VersionConflict { expected: u64, actual: u64 },
    #[error("too many concurrent writers; the entity is at version {actual}")]
    Contention { actual: u64 },
    #[error("this Idempotency-Key was used with a different request")]
    IdempotencyKeyReused,
    #[error("{pending} events are waiting to be published for this entity; retry later")]
    OutboxFull { pending: usize },
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Result of a sweep over heads with pending outbox events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    pub examined: usize,
    pub published: usize,
    pub failed: usize,
}

pub struct CommandService<S, L, C> {
    store: S,
    log: L,
    clock: C,
    config: WriteConfig,
}

impl<S: WriteModelStore, L: EventLog, C: Clock> CommandService<S, L, C> {
    pub fn new(store: S, log: L, clock: C) -> Self {
        Self::with_config(store, log, clock, WriteConfig::default())
    }

    pub fn with_config(store: S, log: L, clock: C, config: WriteConfig) -> Self {
        CommandService {
            store,
            log,
            clock,
            config,
        }
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    pub fn log(&self) -> &L {
        &self.log
    }

    /// Runs one command through the whole write protocol.
    ///
    /// An `Idempotency-Key` costs no extra request on the happy path: the commit's condition
    /// on the key catches a repeat, and a refusal looks the key up before answering (the
    /// original request may be why the command is now refused).
    pub async fn execute<A: Aggregate>(
        &self,
        request: CommandRequest<A::Command>,
    ) -> Result<CommandOutcome, CommandError<A::Error>> {
        match self.run::<A>(&request).await {
            Err(
                refusal @ (CommandError::Domain(_)
                | CommandError::VersionConflict { .. }
                | CommandError::Contention { .. }),
            ) => {
                if let Some(idem) = &request.idempotency {
                    let now = self.clock.now();
                    if let Some(record) = self.store.load_idempotency(&idem.key, now).await? {
                        return self.replay(record, idem).await;
                    }
                }
                Err(refusal)
            }
            other => other,
        }
    }

    async fn run<A: Aggregate>(
        &self,
        request: &CommandRequest<A::Command>,
    ) -> Result<CommandOutcome, CommandError<A::Error>> {
        let key = StreamKey::new(A::TYPE, &request.aggregate_id);
        let command_id = match &request.idempotency {
            // Key and fingerprint: a retry gets the same ids, and a key reused for another
            // request after its record expired does not.
            Some(idem) => uuid::Uuid::new_v5(
                &EVENT_ID_NAMESPACE,
                format!("{}\n{}", idem.key, idem.fingerprint).as_bytes(),
            ),
            None => uuid::Uuid::new_v4(),
        }
        .to_string();

        let mut attempt = 0;
        loop {
            attempt += 1;
            let head = self.store.load_head(&key).await?;
            let current = restore::<A>(head.as_ref())?;
            if let Some(expected) = request.expected_version {
                if expected != current.version {
                    return Err(CommandError::VersionConflict {
                        expected,
                        actual: current.version,
                    });
                }
            }
            let pending_before = head.as_ref().map_or(0, |h| h.pending.len());
            if pending_before >= self.config.max_pending {
                // Drain the outbox first; if the log is still down, refuse for now. Draining
                // counts as an attempt: if the outbox cannot be cleared (confirm keeps
                // failing) this must not republish the same record forever.
                if attempt <= self.config.max_attempts
                    && self
                        .publish_outbox(head.as_ref().expect("pending implies a head"))
                        .await
                {
                    continue;
                }
                return Err(CommandError::OutboxFull {
                    pending: pending_before,
                });
            }

            let events =
                A::decide(&current.state, request.command.clone()).map_err(CommandError::Domain)?;
            let now = self.clock.now();
            let current_version = current.version;
            let (new_state, envelopes) = self.envelopes::<A>(
                &key,
                current,
                head.as_ref(),
                &events,
                &command_id,
                request,
                now,
            );
            // A command that decides no events leaves the entity at its current version.
            let version = envelopes.last().map_or(current_version, |e| e.version);
            let created = head.is_none() && !envelopes.is_empty();
            let mut outcome = CommandOutcome {
                aggregate_type: key.aggregate_type.clone(),
                aggregate_id: key.aggregate_id.clone(),
                version,
                events: envelopes.clone(),
                created,
                published: true,
                replayed: false,
            };
            if envelopes.is_empty() {
                // Nothing happened: nothing to write. Events an earlier publish left in the
                // outbox still go out, so the answer is true about where they are.
                if let Some(head) = head.as_ref() {
                    outcome.published = self.publish_outbox(head).await;
                }
                return Ok(outcome);
            }

            let mut pending = head.as_ref().map(|h| h.pending.clone()).unwrap_or_default();
            pending.extend(envelopes.iter().cloned());
            let new_head = Head {
                key: key.clone(),
                version,
                state: serde_json::to_value(&new_state).expect("state always serializes"),
                pending,
                last_occurred_at: envelopes.last().map(|e| e.occurred_at),
                updated_at: now,
                created_at: match head.as_ref() {
                    Some(h) => h.created_at,
                    None => Some(now),
                },
            };
            let idempotency = request.idempotency.as_ref().map(|idem| IdempotencyRecord {
                key: idem.key.clone(),
                fingerprint: idem.fingerprint.clone(),
                stream: key.clone(),
                version,
                outcome: serde_json::to_value(&outcome).expect("outcome always serializes"),
                expires_at: now.plus_millis(self.config.idempotency_ttl_secs * 1000),
            });
            let commit = Commit {
                expected_version: head.as_ref().map_or(0, |h| h.version),
                head: new_head.clone(),
                idempotency,
                now,
            };
            match self.store.commit(commit).await {
                Ok(()) => {
                    outcome.published = self.publish_outbox(&new_head).await;
                    return Ok(outcome);
                }
                Err(CommitError::IdempotencyConflict) => {
                    // A twin request with the same key won the race: answer as it did.
                    let idem = request
                        .idempotency
                        .as_ref()
                        .expect("conflict implies a key");
                    let record = self
                        .store
                        .load_idempotency(&idem.key, now)
                        .await?
                        .ok_or_else(|| {
                            StoreError::Unavailable("idempotency record vanished".into())
                        })?;
                    return self.replay(record, idem).await;
                }
                Err(CommitError::HeadConflict) => {
                    let actual = self.store.load_head(&key).await?.map_or(0, |h| h.version);
                    if let Some(expected) = request.expected_version {
                        return Err(CommandError::VersionConflict { expected, actual });
                    }
                    if attempt >= self.config.max_attempts {
                        return Err(CommandError::Contention { actual });
                    }
                    tracing::debug!(stream = %key, attempt, "head moved; deciding again");
                }
                Err(CommitError::Store(e)) => return Err(e.into()),
            }
        }
    }

    /// Wraps decided events in envelopes and folds them into the state.
    #[allow(clippy::too_many_arguments)]
    fn envelopes<A: Aggregate>(
        &self,
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

    /// Answers a repeated key with the stored outcome; publishes its events first if they
    /// are still in the outbox, so the answer says where they are now.
    async fn replay<E: std::error::Error + 'static>(
        &self,
        record: IdempotencyRecord,
        idem: &IdempotencyKey,
    ) -> Result<CommandOutcome, CommandError<E>> {
        if record.fingerprint != idem.fingerprint {
            return Err(CommandError::IdempotencyKeyReused);
        }
        let mut outcome: CommandOutcome = serde_json::from_value(record.outcome)
            .map_err(|e| StoreError::Corrupt(format!("idempotency record {}: {e}", record.key)))?;
        outcome.replayed = true;
        let head = self.store.load_head(&record.stream).await?;
        outcome.published = match head {
            Some(h)
                if h.pending
                    .first()
                    .is_some_and(|e| e.version <= record.version) =>
            {
                self.publish_outbox(&h).await
            }
            _ => true,
        };
        Ok(outcome)
    }

    /// Publishes the head's whole outbox as one record and confirms it. Returns whether the
    /// events are now on the log.
    pub async fn publish_outbox(&self, head: &Head) -> bool {
        let (Some(first), Some(last)) = (head.pending.first(), head.pending.last()) else {
            return true;
        };
        let (from, through) = (first.version, last.version);
        let record = match CommitRecord::new(head.pending.clone()) {
            Ok(record) => record,
            Err(e) => {
                tracing::error!(stream = %head.key, error = %e, "outbox is malformed; not publishing");
                return false;
            }
        };
        match self.log.publish(&record).await {
            Ok(published) => {
                tracing::info!(
                    stream = %head.key, from, through,
                    shard_id = %published.shard_id,
                    sequence_number = %published.sequence_number,
                    "published"
                );
                if let Err(e) = self.store.confirm_published(&head.key, from, through).await {
                    // Harmless: the events stay pending and are published again later;
                    // readers dedupe on (aggregate, version).
                    tracing::warn!(stream = %head.key, error = %e, "could not clear the outbox");
                }
                true
            }
            Err(e) => {
                tracing::warn!(stream = %head.key, from, through, error = %e, "publish failed; events stay in the outbox");
                false
            }
        }
    }

    /// Publishes what failed publishes left in outboxes. Safe to run at any time and
    /// concurrently with commands: every record still carries the whole pending run.
    pub async fn sweep(&self, limit: usize) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        for key in self.store.pending_heads(limit).await? {
            report.examined += 1;
            // The index is eventually consistent: read the head itself.
            let Some(head) = self.store.load_head(&key).await? else {
                continue;
            };
            if head.pending.is_empty() {
                continue;
            }
            if self.publish_outbox(&head).await {
                report.published += 1;
            } else {
                report.failed += 1;
            }
        }
        Ok(report)
    }
}

/// The state and version a head holds (a new entity if there is none).
fn restore<A: Aggregate>(head: Option<&Head>) -> Result<Hydrated<A::State>, StoreError> {
    match head {
        None => Ok(Hydrated::default()),
        Some(h) => Ok(Hydrated {
            version: h.version,
            state: serde_json::from_value(h.state.clone())
                .map_err(|e| StoreError::Corrupt(format!("state of {}: {e}", h.key)))?,
        }),
    }
}
