//! The hydrator: answers from the log itself (archive + stream tail), not from the read
//! models. Three Lambda binaries (besides `read-store-migrate`, Aurora's schema): `hydrator`
//! (direct invocation: `state`, `history`), `hydrator-api`
//! (the same two as time-travel routes) and `maintenance` (direct invocation, operators only:
//! `rebuild`, `verify`, `parked`, `redrive`). The request is one JSON shape with a `mode`;
//! each binary refuses the modes of the other (see [`Function`]).

pub mod api;
pub mod wiring;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use timeline_core::access::{Access, Caller};
use timeline_core::ports::SourceError;
use timeline_core::ports::{Clock, SystemClock};
use timeline_core::ports::{EntityEvents, EntityRead, EventSource, Stored};
use timeline_core::ports::{ReadModelError, ReadModelStore};
use timeline_core::registry;
use timeline_core::time::Deadline;
use timeline_core::timetravel::{history, merge, state_at, AsOf};
use timeline_core::StreamKey;
use timeline_core::Timestamp;
use timeline_core::{Entity, Visitor};
use timeline_engine::park::{redrive, RedriveError, RedriveReport};
use timeline_engine::projection::Processor;
use timeline_engine::replay::{rebuild, verify, RebuildReport};

/// A direct invocation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "mode", rename_all = "snake_case", deny_unknown_fields)]
pub enum HydratorRequest {
    /// The state now, as of a time (`occurred_at <= as_of`) or as of a version.
    State {
        aggregate_type: String,
        aggregate_id: String,
        #[serde(default)]
        as_of: Option<Timestamp>,
        #[serde(default)]
        version: Option<u64>,
    },
    /// The steps between two times, with the state after each and the reasons.
    History {
        aggregate_type: String,
        aggregate_id: String,
        #[serde(default)]
        from: Option<Timestamp>,
        #[serde(default)]
        to: Option<Timestamp>,
    },
    /// Replays the whole log into the read models (the live table, or `target_table`),
    /// resumable from a previous report's `position`.
    Rebuild {
        #[serde(default)]
        target_table: Option<String>,
        #[serde(default)]
        resume_after: Option<String>,
    },
    /// Replays the log and reports every drift from the heads and the views; writes nothing.
    Verify {},
    /// The entities the processor parked (records it can never apply), oldest first.
    Parked {},
    /// Re-projects one parked entity (`ride#r1`) from the log into the live read models and
    /// ends its parking once its view holds every committed version.
    Redrive { entity: String },
}

/// The deployed function that serves a mode. Two, so that each carries only its own code
/// (the deployment zip) and its own permissions: time travel reads; maintenance writes the
/// read models and reads all of the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Function {
    /// `state`, `history`.
    Hydrator,
    /// `rebuild`, `verify`, `parked`, `redrive`.
    Maintenance,
}

impl Function {
    /// Its binary (and the name SAM builds and the stack outputs).
    pub fn binary(self) -> &'static str {
        match self {
            Function::Hydrator => "hydrator",
            Function::Maintenance => "maintenance",
        }
    }
}

impl HydratorRequest {
    /// The request's `mode`, as sent.
    pub fn mode(&self) -> &'static str {
        match self {
            HydratorRequest::State { .. } => "state",
            HydratorRequest::History { .. } => "history",
            HydratorRequest::Rebuild { .. } => "rebuild",
            HydratorRequest::Verify {} => "verify",
            HydratorRequest::Parked {} => "parked",
            HydratorRequest::Redrive { .. } => "redrive",
        }
    }

    /// The function that serves this mode.
    pub fn function(&self) -> Function {
        match self {
            HydratorRequest::State { .. } | HydratorRequest::History { .. } => Function::Hydrator,
            _ => Function::Maintenance,
        }
    }

    fn served_elsewhere(&self, asked: Function) -> HydratorError {
        HydratorError::OtherFunction {
            mode: self.mode(),
            asked: asked.binary(),
            serves: self.function().binary(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum HydratorError {
    /// A mode sent to the function that does not serve it; nothing was read or written.
    #[error("the {asked} function does not serve mode {mode:?}: invoke the {serves} function")]
    OtherFunction {
        mode: &'static str,
        asked: &'static str,
        serves: &'static str,
    },
    #[error("no aggregate of type {0:?} is registered")]
    UnknownType(String),
    #[error("give as_of or version, not both")]
    BothPoints,
    #[error("from is after to")]
    EmptyRange,
    /// The log could not be read now (unavailable, throttled past the time budget, or out
    /// of time): retry later.
    #[error(transparent)]
    Source(#[from] timeline_core::ports::SourceError),
    #[error(transparent)]
    Redrive(#[from] RedriveError),
    #[error("read models: {0}")]
    Store(#[from] ReadModelError),
    #[error("this read store is rebuilt in place only: leave out target_table (a named table is for the DynamoDB read store)")]
    NamedTarget,
}

pub struct Hydrator<S, T, F> {
    source: S,
    stored: T,
    /// Read models to rebuild into: the live table (None) or a named one.
    target: F,
    /// Whether `target` takes a name (DynamoDB tables do; a PostgreSQL store does not).
    named_targets: bool,
}

impl<S, T, F, R> Hydrator<S, T, F>
where
    S: EventSource,
    T: Stored,
    F: Fn(Option<&str>) -> R + Send + Sync,
    R: ReadModelStore,
{
    pub fn new(source: S, stored: T, target: F) -> Self {
        Hydrator {
            source,
            stored,
            target,
            named_targets: true,
        }
    }

    /// A hydrator whose read store is rebuilt only in place: a named target is refused.
    pub fn without_named_targets(mut self) -> Self {
        self.named_targets = false;
        self
    }

    /// Answers a direct invocation of any mode within `deadline` (a rebuild that runs out of
    /// time stops cleanly and says where to resume).
    pub async fn handle(
        &self,
        request: HydratorRequest,
        deadline: &Deadline,
    ) -> Result<Value, HydratorError> {
        match request.function() {
            Function::Hydrator => self.travel(request, deadline).await,
            Function::Maintenance => self.maintain(request, deadline).await,
        }
    }

    /// What the `hydrator` function answers: `state` and `history`, reading only. The other
    /// modes are refused, naming the function that serves them.
    pub async fn travel(
        &self,
        request: HydratorRequest,
        deadline: &Deadline,
    ) -> Result<Value, HydratorError> {
        match request {
            HydratorRequest::State {
                aggregate_type,
                aggregate_id,
                as_of,
                version,
            } => {
                let point = match (as_of, version) {
                    (Some(_), Some(_)) => return Err(HydratorError::BothPoints),
                    (Some(t), None) => AsOf::Time(t),
                    (None, Some(v)) => AsOf::Version(v),
                    (None, None) => AsOf::Now,
                };
                self.state(
                    &StreamKey::new(aggregate_type, aggregate_id),
                    point,
                    deadline,
                )
                .await
            }
            HydratorRequest::History {
                aggregate_type,
                aggregate_id,
                from,
                to,
            } => {
                if let (Some(f), Some(t)) = (from, to) {
                    if f > t {
                        return Err(HydratorError::EmptyRange);
                    }
                }
                self.history(
                    &StreamKey::new(aggregate_type, aggregate_id),
                    from,
                    to,
                    deadline,
                )
                .await
            }
            other => Err(other.served_elsewhere(Function::Hydrator)),
        }
    }

    /// What the `maintenance` function answers: `rebuild`, `verify`, `parked` and `redrive`,
    /// the modes that write the read models or read all of the log. The others are refused,
    /// naming the function that serves them.
    pub async fn maintain(
        &self,
        request: HydratorRequest,
        deadline: &Deadline,
    ) -> Result<Value, HydratorError> {
        match request {
            HydratorRequest::Rebuild {
                target_table,
                resume_after,
            } => {
                let report = self
                    .rebuild(
                        target_table.as_deref(),
                        resume_after,
                        deadline,
                        &mut |r, done, total| {
                            tracing::info!(
                                done,
                                total = total.unwrap_or(0),
                                records = r.records,
                                applied = r.events_applied,
                                "rebuild progress"
                            );
                        },
                    )
                    .await?;
                Ok(serde_json::to_value(report).expect("reports serialize"))
            }
            HydratorRequest::Verify {} => {
                let report = verify(&self.source, &self.stored, deadline).await?;
                Ok(serde_json::to_value(report).expect("reports serialize"))
            }
            HydratorRequest::Parked {} => {
                let parked = (self.target)(None).parked().await?;
                Ok(json!({ "parked": parked }))
            }
            HydratorRequest::Redrive { entity } => {
                let report = self.redrive(&entity, deadline).await?;
                Ok(serde_json::to_value(report).expect("reports serialize"))
            }
            other => Err(other.served_elsewhere(Function::Maintenance)),
        }
    }

    /// Whether `caller` may read the entity, decided on its current state (the write model's
    /// head); an entity that does not exist is left to the answer itself (404).
    pub async fn readable_by(
        &self,
        caller: &Caller,
        key: &StreamKey,
    ) -> Result<bool, HydratorError> {
        let head = self
            .stored
            .head(key)
            .await
            .map_err(|e| HydratorError::Source(SourceError::Unavailable(e.to_string())))?;
        Ok(match head {
            None => true,
            Some(head) => {
                registry::may_read(caller, &key.aggregate_type, &head.state) == Access::Allowed
            }
        })
    }

    /// Re-projects one parked entity from the log (see [`timeline_core::park`]).
    pub async fn redrive(
        &self,
        entity: &str,
        deadline: &Deadline,
    ) -> Result<RedriveReport, HydratorError> {
        let processor = Processor::for_redrive((self.target)(None));
        Ok(redrive(
            &self.source,
            &processor,
            entity,
            SystemClock.now(),
            deadline,
        )
        .await?)
    }

    /// Replays the log into the read models (`target_table`, or the live ones), calling
    /// `progress` after each chunk with the report so far and the chunks done of the total.
    pub async fn rebuild(
        &self,
        target_table: Option<&str>,
        resume_after: Option<String>,
        deadline: &Deadline,
        progress: &mut (dyn FnMut(&RebuildReport, usize, Option<usize>) + Send),
    ) -> Result<RebuildReport, HydratorError> {
        if target_table.is_some() && !self.named_targets {
            return Err(HydratorError::NamedTarget);
        }
        let processor = Processor::for_replay((self.target)(target_table));
        Ok(rebuild(&self.source, &processor, resume_after, deadline, progress).await?)
    }

    /// The state of one entity at a point: `exists` is false when it did not exist then;
    /// `complete` is true only when the view holds every version up to that point (the latest
    /// committed one for "now"), else `missing_versions` lists what the log lacks.
    /// `latest_version` is the latest committed version; a version past it is answered with
    /// `exists: false` and `version_not_found: true`.
    pub async fn state(
        &self,
        key: &StreamKey,
        point: AsOf,
        deadline: &Deadline,
    ) -> Result<Value, HydratorError> {
        let read = StateOf {
            hydrator: self,
            key,
            point,
            deadline,
        };
        timeline_core::dispatch(&key.aggregate_type, read)
            .map_err(|e| HydratorError::UnknownType(e.0))?
            .await
    }

    pub async fn history(
        &self,
        key: &StreamKey,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        deadline: &Deadline,
    ) -> Result<Value, HydratorError> {
        let read = HistoryOf {
            hydrator: self,
            key,
            from,
            to,
            deadline,
        };
        timeline_core::dispatch(&key.aggregate_type, read)
            .map_err(|e| HydratorError::UnknownType(e.0))?
            .await
    }

    async fn state_of<A: Entity>(
        &self,
        key: &StreamKey,
        point: AsOf,
        deadline: &Deadline,
    ) -> Result<Value, HydratorError> {
        let found = // Boxed: reading one entity's log is a large future (archive, index and stream
        // reads); on the heap it cannot overflow a worker thread's stack.
        match Box::pin(self.source.entity_events(key, point, deadline)).await? {
            EntityRead::Absent => {
                return Ok(json!({
                    "entity": key.to_string(),
                    "as_of": point,
                    "exists": false,
                    "view": null,
                    "complete": true,
                    "missing_versions": [],
                    "issues": [],
                    "problems": [],
                }))
            }
            EntityRead::Found(found) => found,
        };
        let EntityEvents {
            events,
            latest,
            known_times,
            problems,
        } = found;
        if let (AsOf::Version(v), Some(latest)) = (point, latest) {
            if v > latest {
                return Ok(json!({
                    "entity": key.to_string(),
                    "as_of": point,
                    "exists": false,
                    "version_not_found": true,
                    "latest_version": latest,
                    "view": null,
                    "complete": true,
                    "missing_versions": [],
                    "issues": [],
                    "problems": [],
                }));
            }
        }
        let log = merge(key.clone(), events).knowing(latest, known_times);
        let answer = state_at::<A>(&log, point);
        // It existed at that point if the log or the index shows a version by then.
        let exists = answer.view.is_some() || log.target(point) > 0;
        Ok(json!({
            "entity": key.to_string(),
            "as_of": point,
            "exists": exists,
            "latest_version": latest,
            "view": answer.view,
            "complete": answer.complete,
            "missing_versions": answer.missing_versions,
            "issues": answer.issues,
            "problems": problems,
        }))
    }

    async fn history_of<A: Entity>(
        &self,
        key: &StreamKey,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        deadline: &Deadline,
    ) -> Result<Value, HydratorError> {
        let point = to.map_or(AsOf::Now, AsOf::Time);
        let found = match Box::pin(self.source.entity_events(key, point, deadline)).await? {
            EntityRead::Absent => EntityEvents::default(),
            EntityRead::Found(found) => found,
        };
        let log = merge(key.clone(), found.events).knowing(found.latest, found.known_times);
        let exists = log.target(point) > 0;
        let answer = history::<A>(&log, from, to);
        Ok(json!({
            "entity": key.to_string(),
            "exists": exists,
            "from": from,
            "to": to,
            "latest_version": found.latest,
            "steps": answer.steps,
            "complete": answer.complete,
            "missing_versions": answer.missing_versions,
            "issues": answer.issues,
            "problems": found.problems,
        }))
    }
}

type Answer<'a> = futures::future::BoxFuture<'a, Result<Value, HydratorError>>;

/// [`Hydrator::state`] for the aggregate type the key names.
struct StateOf<'a, H> {
    hydrator: &'a H,
    key: &'a StreamKey,
    point: AsOf,
    deadline: &'a Deadline,
}

impl<'a, S, T, F, R> Visitor for StateOf<'a, Hydrator<S, T, F>>
where
    S: EventSource,
    T: Stored,
    F: Fn(Option<&str>) -> R + Send + Sync,
    R: ReadModelStore + 'a,
{
    type Output = Answer<'a>;
    fn visit<A: Entity>(self) -> Answer<'a> {
        Box::pin(
            self.hydrator
                .state_of::<A>(self.key, self.point, self.deadline),
        )
    }
}

/// [`Hydrator::history`] for the aggregate type the key names.
struct HistoryOf<'a, H> {
    hydrator: &'a H,
    key: &'a StreamKey,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
    deadline: &'a Deadline,
}

impl<'a, S, T, F, R> Visitor for HistoryOf<'a, Hydrator<S, T, F>>
where
    S: EventSource,
    T: Stored,
    F: Fn(Option<&str>) -> R + Send + Sync,
    R: ReadModelStore + 'a,
{
    type Output = Answer<'a>;
    fn visit<A: Entity>(self) -> Answer<'a> {
        Box::pin(
            self.hydrator
                .history_of::<A>(self.key, self.from, self.to, self.deadline),
        )
    }
}
