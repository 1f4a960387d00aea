//! The time-travel routes, served through API Gateway:
//! `GET /{rides|videos}/{id}/state?as_of=<RFC 3339>|version=<n>` and
//! `GET /{rides|videos}/{id}/timeline?from=&to=`. Rebuild and verify are not routed here.

use crate::{Hydrator, HydratorError};
use lambda_http::http::{header, Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use timeline_core::read_ports::ReadModelStore;
use timeline_core::replay::{EventSource, Stored};
use timeline_core::timetravel::AsOf;
use timeline_core::{StreamKey, Timestamp};
use timeline_http::Problem;

pub const ROUTES: &[&str] = &[
    "/rides/{id}/state",
    "/rides/{id}/timeline",
    "/videos/{id}/state",
    "/videos/{id}/timeline",
];

/// Built once: routing is on every request's path.
static ROUTER: std::sync::LazyLock<matchit::Router<&'static str>> =
    std::sync::LazyLock::new(|| {
        let mut router = matchit::Router::new();
        for route in ROUTES {
            router.insert(*route, *route).expect("distinct routes");
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
        let matched = ROUTER
            .at(path)
            .map_err(|_| Problem::not_found(format!("no route for {path}")))?;
        if req.method() != Method::GET {
            return Err(Problem::method_not_allowed(path, "GET"));
        }
        let template = *matched.value;
        let id = matched.params.get("id").unwrap_or_default();
        timeline_http::check_id(id)?;
        let kind = if template.starts_with("/rides") {
            "ride"
        } else {
            "video"
        };
        let key = StreamKey::new(kind, id);
        let answer = if template.ends_with("/state") {
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
            self.state(&key, point).await
        } else {
            let (from, to) = (time(req, "from")?, time(req, "to")?);
            if let (Some(f), Some(t)) = (from, to) {
                if f > t {
                    return Err(Problem::bad_request("invalid_query", "from is after to"));
                }
            }
            self.history(&key, from, to).await
        }
        .map_err(|e| match e {
            HydratorError::Source(e) => {
                tracing::error!(error = %e, "event log unreadable");
                Problem::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "log_unavailable",
                    "the event log could not be read; retry later",
                )
                .with_header(header::RETRY_AFTER, "5")
            }
            other => Problem::bad_request("invalid_query", other.to_string()),
        })?;
        if answer["exists"] != true {
            return Err(Problem::new(
                StatusCode::NOT_FOUND,
                format!("{kind}.not_found"),
                format!("no such {kind} at that point"),
            ));
        }
        Ok(timeline_http::json(StatusCode::OK, &answer))
    }
}
