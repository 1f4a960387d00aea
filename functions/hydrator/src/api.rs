//! The time-travel routes, served through API Gateway:
//! `GET /{rides|videos}/{id}/state?as_of=<RFC 3339>|version=<n>` and
//! `GET /{rides|videos}/{id}/timeline?from=&to=`. Rebuild and verify are not routed here.

use crate::{Hydrator, HydratorError};
use lambda_http::http::{header, Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use std::time::Duration;
use timeline_core::ports::ReadModelStore;
use timeline_core::ports::{EventSource, SourceError, Stored};
use timeline_core::registry::Kind;
use timeline_core::time::Deadline;
use timeline_core::timetravel::AsOf;
use timeline_core::StreamKey;
use timeline_core::Timestamp;
use timeline_http::Problem;

/// Time kept back from the invocation's deadline to answer (a clear 503, not a timeout).
pub const ANSWER_MARGIN: Duration = Duration::from_millis(1500);
/// API Gateway waits 29 s for an integration; an answer takes at most this long.
pub const API_BUDGET: Duration = Duration::from_secs(25);
/// Seconds a client is asked to wait before retrying an answer the log could not give.
pub const RETRY_AFTER_SECS: u32 = 5;

/// How long this request may take: the Lambda's remaining time less a margin, at most
/// [`API_BUDGET`] (the local runner has no Lambda context: the budget alone).
pub fn deadline(req: &Request) -> Deadline {
    match req.lambda_context_ref() {
        Some(context) => Deadline::lambda(context.deadline, ANSWER_MARGIN, API_BUDGET),
        None => Deadline::after(API_BUDGET),
    }
}

/// 503 with `Retry-After`: the log could not be read in time; nothing is wrong with the
/// request, and the same request may succeed later.
pub fn log_unavailable(e: &SourceError) -> Problem {
    tracing::error!(error = %e, "event log unreadable");
    let detail = match e {
        SourceError::OutOfTime(_) => "the event log could not be read in time; retry later",
        SourceError::Unavailable(_) => "the event log could not be read; retry later",
    };
    Problem::new(StatusCode::SERVICE_UNAVAILABLE, "log_unavailable", detail)
        .with_header(header::RETRY_AFTER, RETRY_AFTER_SECS.to_string())
}

/// What a time-travel route answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    State,
    Timeline,
}

/// Every path template served, for each registered aggregate: `/{collection}/{id}/state`
/// and `/{collection}/{id}/timeline`.
pub fn routes() -> Vec<(String, &'static Kind, Answer)> {
    timeline_core::registry::KINDS
        .iter()
        .flat_map(|kind| {
            [("state", Answer::State), ("timeline", Answer::Timeline)].map(|(suffix, answer)| {
                (
                    format!("/{}/{{id}}/{suffix}", kind.collection),
                    kind,
                    answer,
                )
            })
        })
        .collect()
}

/// Built once: routing is on every request's path.
static ROUTER: std::sync::LazyLock<matchit::Router<(&'static Kind, Answer)>> =
    std::sync::LazyLock::new(|| {
        let mut router = matchit::Router::new();
        for (template, kind, answer) in routes() {
            router
                .insert(template, (kind, answer))
                .expect("distinct routes");
        }
        router
    });

fn param(req: &Request, name: &str) -> Option<String> {
    req.query_string_parameters_ref()
        .and_then(|q| q.first(name).map(str::to_owned))
}

fn time(req: &Request, name: &str) -> Result<Option<Timestamp>, Problem> {
    param(req, name)
        .map(|v| {
            v.parse().map_err(|_| {
                Problem::bad_request("invalid_query", format!("{name} must be an RFC 3339 time"))
            })
        })
        .transpose()
}

impl<S, T, F, R> Hydrator<S, T, F>
where
    S: EventSource,
    T: Stored,
    F: Fn(Option<&str>) -> R + Send + Sync,
    R: ReadModelStore,
{
    pub async fn handle_http(&self, req: Request) -> Response<Body> {
        let path = timeline_http::path(&req).to_owned();
        timeline_http::answer("time travel", &req, &path, self.route(&req, &path)).await
    }

    async fn route(&self, req: &Request, path: &str) -> Result<Response<Body>, Problem> {
        let caller = timeline_http::caller(req)?;
        let matched = ROUTER
            .at(path)
            .map_err(|_| Problem::not_found(format!("no route for {path}")))?;
        if req.method() != Method::GET {
            return Err(Problem::method_not_allowed(path, "GET"));
        }
        let (kind, answer) = *matched.value;
        let id = matched.params.get("id").unwrap_or_default();
        timeline_http::check_id(id)?;
        let key = StreamKey::new(kind.aggregate_type, id);
        // Who may travel through an entity is decided on its current state, whatever the
        // point asked for; one the caller may not read answers as missing.
        let not_found = || {
            Problem::new(
                StatusCode::NOT_FOUND,
                format!("{kind}.not_found"),
                format!("no such {kind} at that point"),
            )
        };
        if !self.readable_by(&caller, &key).await.map_err(|e| match e {
            HydratorError::Source(e) => log_unavailable(&e),
            other => Problem::bad_request("invalid_query", other.to_string()),
        })? {
            return Err(not_found());
        }
        let deadline = deadline(req);
        let answer = if answer == Answer::State {
            let version = param(req, "version")
                .map(|v| {
                    v.parse::<u64>().map_err(|_| {
                        Problem::bad_request(
                            "invalid_query",
                            "version must be a non-negative integer",
                        )
                    })
                })
                .transpose()?;
            let point = match (time(req, "as_of")?, version) {
                (Some(_), Some(_)) => {
                    return Err(Problem::bad_request(
                        "invalid_query",
                        "give as_of or version, not both",
                    ))
                }
                (Some(t), None) => AsOf::Time(t),
                (None, Some(v)) => AsOf::Version(v),
                (None, None) => AsOf::Now,
            };
            self.state(&key, point, &deadline).await
        } else {
            let (from, to) = (time(req, "from")?, time(req, "to")?);
            if let (Some(f), Some(t)) = (from, to) {
                if f > t {
                    return Err(Problem::bad_request("invalid_query", "from is after to"));
                }
            }
            self.history(&key, from, to, &deadline).await
        }
        .map_err(|e| match e {
            HydratorError::Source(e) => log_unavailable(&e),
            other => Problem::bad_request("invalid_query", other.to_string()),
        })?;
        if answer["version_not_found"] == true {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                format!("{kind}.version_not_found"),
                format!(
                    "no such version: the {kind} is at version {}",
                    answer["latest_version"]
                ),
            )
            .with("latest_version", answer["latest_version"].clone()));
        }
        if answer["exists"] != true {
            return Err(not_found());
        }
        Ok(timeline_http::json(StatusCode::OK, &answer))
    }
}
