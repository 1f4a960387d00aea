//! The write protocol's effects, around the decision of `timeline_core::write::plan`: load
//! the head, plan, commit (conditional on the version read and the idempotency key), publish
//! the outbox and confirm; settle a failure by the key; sweep outboxes a failed publish left.

use serde::{Deserialize, Serialize};
use timeline_core::access::Policy;
use timeline_core::aggregate::DomainError;
use timeline_core::envelope::{CommitRecord, StreamKey};
use timeline_core::ports::{
    Clock, Commit, CommitError, EventLog, Head, IdempotencyRecord, StoreError, WriteModelStore,
};
use timeline_core::time::Timestamp;
use timeline_core::write::*;

/// Result of a sweep over heads with pending outbox events.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SweepReport {
    pub examined: usize,
    pub published: usize,
    pub failed: usize,
    /// Heads that could not be read (the sweep went on past them).
    pub unreadable: usize,
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
    /// A key costs no extra request on the happy path: the commit's condition on the key
    /// catches a repeat, and a refusal looks the key up before answering (the original
    /// request may be why the command is now refused).
    pub async fn execute<A: Policy>(
        &self,
        request: CommandRequest<A::Command>,
    ) -> Result<CommandOutcome, CommandError<A::Error>> {
        timeline_core::storable::check(
            &serde_json::to_value(&request.command).expect("commands serialize"),
        )?;
        let idempotency = request.idempotency.clone().unwrap_or_else(|| {
            IdempotencyKey::made(format!("made:{}", uuid::Uuid::new_v4()), "made")
        });
        let mut committed_once = false;
        match self
            .run::<A>(&request, &idempotency, &mut committed_once)
            .await
        {
            Ok(outcome) => Ok(outcome),
            Err(e) => {
                self.settle::<A>(e, &request, &idempotency, committed_once)
                    .await
            }
        }
    }

    /// What a failed run answers: a refusal may be the answer to an earlier request with the
    /// same key (which may be why it is refused now); a commit whose answer was lost is
    /// looked up by its key.
    async fn settle<A: Policy>(
        &self,
        error: CommandError<A::Error>,
        request: &CommandRequest<A::Command>,
        idempotency: &IdempotencyKey,
        committed_once: bool,
    ) -> Result<CommandOutcome, CommandError<A::Error>> {
        let now = self.clock.now();
        match error {
            // A commit was tried and refused, then a read failed: the refusal may have
            // followed our own write (the SDK retries a write whose answer was lost, and
            // the retry meets the write). Only the key can tell.
            CommandError::Store(StoreError::Unavailable(detail)) if committed_once => {
                match self.store.load_idempotency(&idempotency.key, now).await {
                    Ok(Some(record)) => self.replay(record, idempotency).await,
                    Ok(None) => Err(CommandError::Store(StoreError::Unavailable(detail))),
                    Err(_) => Err(CommandError::OutcomeUnknown {
                        key: idempotency.key.clone(),
                    }),
                }
            }
            CommandError::Domain(_)
            | CommandError::VersionConflict { .. }
            | CommandError::Contention { .. }
            | CommandError::OutboxFull { .. }
            | CommandError::Forbidden(_)
            | CommandError::Hidden
            | CommandError::Busy => {
                if let Some(record) = self.store.load_idempotency(&idempotency.key, now).await? {
                    return self.replay(record, idempotency).await;
                }
                if let CommandError::Domain(e) = &error {
                    if let Some(answer) = self
                        .remember_refusal::<A>(e, request, idempotency, now)
                        .await
                    {
                        return answer;
                    }
                }
                Err(error)
            }
            CommandError::Store(StoreError::Uncertain(detail)) => {
                tracing::warn!(%detail, key = %idempotency.key, "commit answer lost; looking the key up");
                match self.store.load_idempotency(&idempotency.key, now).await {
                    Ok(Some(record)) => self.replay(record, idempotency).await,
                    // Not there yet may still mean a commit in flight: only a retry knows.
                    Ok(None) | Err(_) => Err(CommandError::OutcomeUnknown {
                        key: idempotency.key.clone(),
                    }),
                }
            }
            other => Err(other),
        }
    }

    /// Stores a refusal under the caller's key, so the same request keeps its answer. Some
    /// answer when a twin request stored another under the key meanwhile (that one is the
    /// answer); None when the refusal stands (stored, or not storable: it is still true).
    async fn remember_refusal<A: Policy>(
        &self,
        refusal: &A::Error,
        request: &CommandRequest<A::Command>,
        idempotency: &IdempotencyKey,
        now: Timestamp,
    ) -> Option<Result<CommandOutcome, CommandError<A::Error>>> {
        if idempotency.made {
            return None;
        }
        let key = StreamKey::new(A::TYPE, &request.aggregate_id);
        let answer = StoredAnswer::Refused {
            refused: StoredRefusal {
                kind: refusal.kind(),
                code: refusal.code().to_owned(),
                message: refusal.to_string(),
            },
        };
        let ttl = self.config.idempotency_ttl_secs;
        let remembered = self
            .store
            .remember(record(idempotency, &key, 0, &answer, now, ttl), now)
            .await;
        match remembered {
            Err(CommitError::IdempotencyConflict) => Some(self.replay_key(idempotency, now).await),
            _ => None,
        }
    }

    /// Steps 1 to 4, retried while the head moves (without an expected version) or the store
    /// is busy with another transaction on it.
    async fn run<A: Policy>(
        &self,
        request: &CommandRequest<A::Command>,
        idempotency: &IdempotencyKey,
        committed_once: &mut bool,
    ) -> Result<CommandOutcome, CommandError<A::Error>> {
        let key = StreamKey::new(A::TYPE, &request.aggregate_id);
        let command_id = idempotency.command_id();

        let mut attempt = 0;
        loop {
            attempt += 1;
            let head = self.store.load_head(&key).await?;
            let now = self.clock.now();
            let planned = plan::<A>(
                &key,
                head.as_ref(),
                request,
                idempotency,
                &command_id,
                now,
                &self.config,
            );
            let (commit, outcome) = match planned {
                Err(Blocked::Refused(e)) => return Err(e),
                Err(Blocked::OutboxFull { pending }) => {
                    // Drain the outbox first; if the log is still down, refuse for now.
                    // Draining counts as an attempt: if the outbox cannot be cleared (confirm
                    // keeps failing) this must not republish the same record forever.
                    let head = head.as_ref().expect("pending implies a head");
                    // With the stream relay, publishing is its job alone (the handler holds
                    // no right to the log): the caller retries once the relay caught up.
                    let drains = self.config.publish == PublishMode::Inline;
                    if drains
                        && attempt <= self.config.max_attempts
                        && self.publish_outbox(head).await
                    {
                        continue;
                    }
                    return Err(CommandError::OutboxFull { pending });
                }
                Ok(Plan::Nothing(outcome)) => {
                    return self
                        .answer_nothing(&key, head.as_ref(), outcome, idempotency, now)
                        .await
                }
                Ok(Plan::Commit { commit, outcome }) => (commit, outcome),
            };
            *committed_once = true;
            match self
                .commit::<A>(&key, *commit, outcome, request, idempotency, attempt, now)
                .await
            {
                Step::Done(answer) => return answer,
                Step::Again => {}
            }
        }
    }

    /// Nothing happened, so nothing is written: events an earlier publish left in the outbox
    /// still go out (the answer is true about where they are), and a caller's key remembers
    /// the answer.
    async fn answer_nothing<E: std::error::Error + 'static>(
        &self,
        key: &StreamKey,
        head: Option<&Head>,
        mut outcome: CommandOutcome,
        idempotency: &IdempotencyKey,
        now: Timestamp,
    ) -> Result<CommandOutcome, CommandError<E>> {
        if let Some(head) = head {
            self.hand_over(head, head.version, &mut outcome).await;
        }
        if !idempotency.made {
            let ttl = self.config.idempotency_ttl_secs;
            let answer = StoredAnswer::Done(outcome.clone());
            let stored = record(idempotency, key, outcome.version, &answer, now, ttl);
            if let Err(CommitError::IdempotencyConflict) = self.store.remember(stored, now).await {
                return self.replay_key(idempotency, now).await;
            }
        }
        Ok(outcome)
    }

    /// Step 3 and 4: the conditional commit, then the publish; or why to decide again.
    #[allow(clippy::too_many_arguments)]
    async fn commit<A: Policy>(
        &self,
        key: &StreamKey,
        commit: Commit,
        mut outcome: CommandOutcome,
        request: &CommandRequest<A::Command>,
        idempotency: &IdempotencyKey,
        attempt: u32,
        now: Timestamp,
    ) -> Step<Result<CommandOutcome, CommandError<A::Error>>> {
        let new_head = commit.head.clone();
        // Inline, a store that holds the log too appends in the commit's own transaction.
        let committed = match self.config.publish {
            PublishMode::Inline => self.store.commit_and_append(commit).await,
            PublishMode::Stream => self.store.commit(commit).await.map(|()| None),
        };
        match committed {
            Ok(Some(published)) => {
                tracing::info!(
                    stream = %key, through = new_head.version,
                    shard_id = %published.shard_id,
                    sequence_number = %published.sequence_number,
                    "committed and published"
                );
                outcome.published = true;
                Step::Done(Ok(outcome))
            }
            Ok(None) => {
                self.hand_over(&new_head, new_head.version, &mut outcome)
                    .await;
                Step::Done(Ok(outcome))
            }
            // A twin request with the same key won the race: answer as it did.
            Err(CommitError::IdempotencyConflict) => {
                Step::Done(self.replay_key(idempotency, now).await)
            }
            Err(CommitError::HeadConflict) => {
                let actual = match self.store.load_head(key).await {
                    Ok(head) => head.map_or(0, |h| h.version),
                    Err(e) => return Step::Done(Err(e.into())),
                };
                if let Some(expected) = request.expected_version {
                    return Step::Done(Err(CommandError::VersionConflict { expected, actual }));
                }
                if attempt >= self.config.max_attempts {
                    return Step::Done(Err(CommandError::Contention { actual }));
                }
                tracing::debug!(stream = %key, attempt, "head moved; deciding again");
                Step::Again
            }
            Err(CommitError::Busy) => {
                if attempt >= self.config.max_attempts {
                    return Step::Done(Err(CommandError::Busy));
                }
                tracing::debug!(stream = %key, attempt, "head busy; trying again");
                tokio::time::sleep(std::time::Duration::from_millis(10 << attempt.min(6))).await;
                Step::Again
            }
            Err(CommitError::Store(e)) => Step::Done(Err(e.into())),
        }
    }

    /// Answers with what is stored under a key in use.
    async fn replay_key<E: std::error::Error + 'static>(
        &self,
        idempotency: &IdempotencyKey,
        now: Timestamp,
    ) -> Result<CommandOutcome, CommandError<E>> {
        let record = self
            .store
            .load_idempotency(&idempotency.key, now)
            .await?
            .ok_or_else(|| StoreError::Unavailable("idempotency record vanished".into()))?;
        self.replay(record, idempotency).await
    }

    /// Answers a repeated key with the stored answer; publishes its events first if they
    /// are still in the outbox, so the answer says where they are now.
    async fn replay<E: std::error::Error + 'static>(
        &self,
        record: IdempotencyRecord,
        idem: &IdempotencyKey,
    ) -> Result<CommandOutcome, CommandError<E>> {
        if record.fingerprint != idem.fingerprint {
            return Err(CommandError::IdempotencyKeyReused);
        }
        let answer: StoredAnswer = serde_json::from_value(record.outcome)
            .map_err(|e| StoreError::Corrupt(format!("idempotency record {}: {e}", record.key)))?;
        let mut outcome = match answer {
            StoredAnswer::Refused { refused } => return Err(CommandError::Refused(refused)),
            StoredAnswer::Done(outcome) => outcome,
        };
        outcome.replayed = true;
        match self.store.load_head(&record.stream).await {
            Ok(Some(h)) => self.hand_over(&h, record.version, &mut outcome).await,
            Ok(None) => outcome.published = true,
            // The command was done; only whether it is published yet is not known.
            Err(_) => {
                outcome.published = false;
                outcome.relayed = self.config.publish == PublishMode::Stream;
            }
        }
        Ok(outcome)
    }

    /// Says in `outcome` where the events up to `through` stand: published now (inline; a
    /// failed publish leaves them in the outbox), or left to the stream relay.
    async fn hand_over(&self, head: &Head, through: u64, outcome: &mut CommandOutcome) {
        let waiting = head.pending.first().is_some_and(|e| e.version <= through);
        match self.config.publish {
            PublishMode::Inline => {
                outcome.published = !waiting || self.publish_outbox(head).await;
            }
            PublishMode::Stream => {
                outcome.relayed = true;
                outcome.published = !waiting;
            }
        }
    }

    /// Publishes the head's whole outbox as one record and confirms it. Returns whether the
    /// events are now on the log.
    pub async fn publish_outbox(&self, head: &Head) -> bool {
        self.deliver(head).await != Delivery::Unpublished
    }

    /// Publishes the head's whole outbox as one record and confirms it; says how far it got.
    pub async fn deliver(&self, head: &Head) -> Delivery {
        let (Some(first), Some(last)) = (head.pending.first(), head.pending.last()) else {
            return Delivery::Confirmed;
        };
        let (from, through) = (first.version, last.version);
        let record = match CommitRecord::new(head.pending.clone()) {
            Ok(record) => record,
            Err(e) => {
                tracing::error!(stream = %head.key, error = %e, "outbox is malformed; not publishing");
                return Delivery::Unpublished;
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
                    return Delivery::Published;
                }
                Delivery::Confirmed
            }
            Err(e) => {
                tracing::warn!(stream = %head.key, from, through, error = %e, "publish failed; events stay in the outbox");
                Delivery::Unpublished
            }
        }
    }

    /// Publishes what failed publishes left in outboxes. Safe to run at any time and
    /// concurrently with commands: every record still carries the whole pending run. A head
    /// that cannot be read is counted and passed over, so one bad item never stops the rest.
    pub async fn sweep(&self, limit: usize) -> Result<SweepReport, StoreError> {
        let mut report = SweepReport::default();
        for key in self.store.pending_heads(limit).await? {
            report.examined += 1;
            // The index is eventually consistent: read the head itself.
            let head = match self.store.load_head(&key).await {
                Ok(Some(head)) => head,
                Ok(None) => continue,
                Err(e) => {
                    tracing::error!(stream = %key, error = %e, "sweep could not read a head");
                    report.unreadable += 1;
                    continue;
                }
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

/// How far the publish of an outbox got.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Delivery {
    /// Not on the log: the events wait in the outbox.
    Unpublished,
    /// On the log, but the outbox could not be cleared: they will be published again.
    Published,
    /// On the log and cleared from the outbox (or there was nothing to publish).
    Confirmed,
}

/// What the command loop does next.
enum Step<T> {
    Done(T),
    Again,
}
