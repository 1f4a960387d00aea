//! The command handler: an API Gateway request in, the write protocol, a response out.
//! Generic over the ports, so tests and the local runner pass other implementations.

use crate::request::{self, check_id};
use crate::routes::{CommandRoute, Routes};
use lambda_http::http::{header, Method, StatusCode};
use lambda_http::{Body, Request, Response};
use timeline_core::aggregate::{DomainError, RefusalKind};
use timeline_core::ports::{Clock, EventLog, StoreError, WriteModelStore};
use timeline_core::write::{
    CommandError, CommandOutcome, CommandRequest, IdempotencyKey, RequestContext, WriteConfig,
};
use timeline_core::{Entity, Visitor};
use timeline_engine::write::CommandService;
use timeline_http::Problem;

pub struct CommandApi<S, L, C> {
    service: CommandService<S, L, C>,
    routes: Routes,
}

impl<S: WriteModelStore, L: EventLog, C: Clock> CommandApi<S, L, C> {
    pub fn new(store: S, log: L, clock: C) -> Self {
        Self::with_config(store, log, clock, WriteConfig::default())
    }

    pub fn with_config(store: S, log: L, clock: C, config: WriteConfig) -> Self {
        CommandApi {
            service: CommandService::with_config(store, log, clock, config),
            routes: Routes::default(),
        }
    }

    pub fn service(&self) -> &CommandService<S, L, C> {
        &self.service
    }

    /// Handles one request; never fails (errors are problem+json responses).
    pub async fn handle(&self, req: Request) -> Response<Body> {
        let path = timeline_http::path(&req).to_owned();
        timeline_http::answer("command", &req, &path, self.dispatch(&req, &path)).await
    }

    async fn dispatch(&self, req: &Request, path: &str) -> Result<Response<Body>, Problem> {
        // Nobody gets past here unauthenticated, whatever the path (API Gateway's authorizer
        // refuses them first on AWS).
        let caller = timeline_http::caller(req)?;
        let (route, id) = self
            .routes
            .find(path)
            .ok_or_else(|| Problem::not_found(format!("no route for {path}")))?;
        if req.method() != Method::POST {
            return Err(Problem::method_not_allowed(path, "POST"));
        }
        let mut envelope = request::parse(
            req.method().as_str(),
            path,
            req.headers(),
            timeline_http::body_bytes(req),
        )?;
        let id = match id {
            Some(id) => id.to_owned(),
            // Creating routes take an optional client-chosen id (a retry then cannot
            // create a twin); otherwise the server picks one.
            None => match envelope.body.remove("id") {
                None | Some(serde_json::Value::Null) => uuid::Uuid::new_v4().to_string(),
                Some(serde_json::Value::String(id)) => id,
                Some(_) => return Err(Problem::bad_request("invalid_id", "id must be a string")),
            },
        };
        check_id(&id)?;
        let actor = caller.actor().to_owned();
        let context = RequestContext {
            actor: actor.clone(),
            caller: Some(caller),
            correlation_id: req
                .headers()
                .get("x-correlation-id")
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty() && v.len() <= 128)
                .map(str::to_owned)
                .or_else(|| timeline_http::request_id(req)),
            causation_id: None,
        };
        // Keys are scoped to the caller: one client's key never replays another's answer.
        // A request without one gets one made for it: every commit is recorded under a key,
        // so a commit whose answer is lost can be looked up, or retried safely with it.
        let (visible_key, idempotency) = match envelope.idempotency_key {
            Some(key) => (
                key.clone(),
                IdempotencyKey::given(format!("{actor}:{key}"), envelope.fingerprint.clone()),
            ),
            None => {
                let key = format!("made-{}", uuid::Uuid::new_v4());
                (
                    key.clone(),
                    IdempotencyKey::made(format!("{actor}:{key}"), envelope.fingerprint.clone()),
                )
            }
        };
        let idempotency = Some(idempotency);
        let run = Run {
            api: self,
            route,
            id,
            body: envelope.body,
            expected_version: envelope.expected_version,
            idempotency,
            context,
        };
        timeline_core::dispatch(route.kind.aggregate_type, run)
            .expect("routes come from the registry")
            .await
            .map_err(|e| e.answer(&visible_key))
    }

    async fn run<A>(
        &self,
        route: CommandRoute,
        id: String,
        body: serde_json::Map<String, serde_json::Value>,
        expected_version: Option<u64>,
        idempotency: Option<IdempotencyKey>,
        context: RequestContext,
    ) -> Result<Response<Body>, Refusal>
    where
        A: Entity,
    {
        let mut body = body;
        if let Some(caller) = &context.caller {
            A::complete_from_identity(caller, route.command, &mut body);
        }
        let command: A::Command = request::command(&route, body).map_err(Refusal::Problem)?;
        let outcome = self
            .service
            .execute::<A>(CommandRequest {
                aggregate_id: id,
                command,
                expected_version,
                idempotency,
                context,
            })
            .await
            .map_err(|e| match e {
                CommandError::OutcomeUnknown { .. } => Refusal::OutcomeUnknown,
                other => Refusal::Problem(problem(other, A::TYPE)),
            })?;
        tracing::info!(
            stream = %format!("{}#{}", outcome.aggregate_type, outcome.aggregate_id),
            version = outcome.version,
            events = outcome.events.len(),
            published = outcome.published,
            replayed = outcome.replayed,
            "command accepted"
        );
        Ok(accepted(route, &outcome))
    }
}

/// [`CommandApi::run`] for the aggregate type a route names.
struct Run<'a, S, L, C> {
    api: &'a CommandApi<S, L, C>,
    route: CommandRoute,
    id: String,
    body: serde_json::Map<String, serde_json::Value>,
    expected_version: Option<u64>,
    idempotency: Option<IdempotencyKey>,
    context: RequestContext,
}

impl<'a, S: WriteModelStore, L: EventLog, C: Clock> Visitor for Run<'a, S, L, C> {
    type Output = futures::future::BoxFuture<'a, Result<Response<Body>, Refusal>>;

    fn visit<A: Entity>(self) -> Self::Output {
        Box::pin(self.api.run::<A>(
            self.route,
            self.id,
            self.body,
            self.expected_version,
            self.idempotency,
            self.context,
        ))
    }
}

fn accepted(route: CommandRoute, outcome: &CommandOutcome) -> Response<Body> {
    // 202 only when the publish failed: with the stream relay, a commit is the whole job.
    let status = if !outcome.published && !outcome.relayed {
        StatusCode::ACCEPTED
    } else if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    let mut response = timeline_http::json(status, outcome);
    let headers = response.headers_mut();
    headers.insert(
        header::ETAG,
        format!("\"{}\"", outcome.version)
            .parse()
            .expect("valid header"),
    );
    if route.creates {
        headers.insert(
            header::LOCATION,
            format!("/{}/{}", route.kind.collection, outcome.aggregate_id)
                .parse()
                .expect("ids are header-safe"),
        );
    }
    if outcome.replayed {
        headers.insert("idempotent-replayed", "true".parse().expect("valid header"));
    }
    response
}

/// Why a command was not answered with its outcome.
enum Refusal {
    Problem(Problem),
    /// The commit's answer was lost: the caller needs the key to retry with.
    OutcomeUnknown,
}

impl Refusal {
    /// The problem, with the key to retry with when the outcome is unknown.
    fn answer(self, key: &str) -> Problem {
        match self {
            Refusal::Problem(p) => p,
            Refusal::OutcomeUnknown => Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome_unknown",
                "the command may or may not have been recorded (the store's answer was lost); \
                 retry with the same Idempotency-Key to get its answer",
            )
            .with("idempotency_key", key)
            .with_header(header::HeaderName::from_static("idempotency-key"), key)
            .with_header(header::RETRY_AFTER, "1"),
        }
    }
}

fn refusal_status(kind: RefusalKind) -> StatusCode {
    match kind {
        RefusalKind::Rule => StatusCode::UNPROCESSABLE_ENTITY,
        RefusalKind::NotFound => StatusCode::NOT_FOUND,
        RefusalKind::AlreadyExists => StatusCode::CONFLICT,
    }
}

/// The HTTP meaning of a refused or failed command.
fn problem<E: DomainError>(error: CommandError<E>, aggregate_type: &str) -> Problem {
    match error {
        // Exactly what a missing entity answers: existence does not leak.
        CommandError::Hidden => Problem::new(
            StatusCode::NOT_FOUND,
            format!("{aggregate_type}.not_found"),
            format!("no such {aggregate_type}"),
        ),
        CommandError::Forbidden(rule) => Problem::new(
            StatusCode::FORBIDDEN,
            "forbidden",
            format!("you may not do this ({rule})"),
        )
        .with("rule", rule),
        CommandError::Domain(e) => Problem::new(refusal_status(e.kind()), e.code(), e.to_string()),
        CommandError::Refused(stored) => {
            Problem::new(refusal_status(stored.kind), stored.code, stored.message)
        }
        CommandError::VersionConflict { expected, actual } => {
            Problem::new(StatusCode::CONFLICT, "version_conflict", error.to_string())
                .with("expected_version", expected)
                .with("current_version", actual)
                .with_header(header::ETAG, format!("\"{actual}\""))
        }
        CommandError::Contention { actual } => {
            Problem::new(StatusCode::CONFLICT, "contention", error.to_string())
                .with("current_version", actual)
                .with_header(header::ETAG, format!("\"{actual}\""))
        }
        CommandError::IdempotencyKeyReused => Problem::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "idempotency_key_reused",
            error.to_string(),
        ),
        CommandError::OutboxFull { .. } => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "outbox_full",
            error.to_string(),
        )
        .with_header(header::RETRY_AFTER, "5"),
        CommandError::Store(StoreError::Unavailable(detail)) => {
            tracing::error!(%detail, "store unavailable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the write model is unavailable; nothing was written, retry later",
            )
            .with_header(header::RETRY_AFTER, "1")
        }
        CommandError::Busy => Problem::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "store_busy",
            "the entity is being written by other requests; nothing was written, retry later",
        )
        .with_header(header::RETRY_AFTER, "1"),
        CommandError::Unstorable(e) => Problem::bad_request(
            "invalid_body",
            format!("a number no store can hold: {e}"),
        )
        .with("field", e.field),
        // Settled by the service: the key answers, or this says it cannot.
        CommandError::OutcomeUnknown { .. } | CommandError::Store(StoreError::Uncertain(_)) => {
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "outcome_unknown",
                "the command may or may not have been recorded; retry with the same Idempotency-Key",
            )
            .with_header(header::RETRY_AFTER, "1")
        }
        CommandError::Store(StoreError::Corrupt(detail)) => {
            tracing::error!(%detail, "write model corrupt");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the write model for this entity could not be read",
            )
        }
    }
}
