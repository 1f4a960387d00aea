//! The query handler: an API Gateway `GET` in, one or two read-model reads, a response out.
//! Generic over [`ReadModelQueries`], so tests and the local runner pass other
//! implementations.

use crate::params::{self, Range};
use crate::routes::{QueryRoute, Resource, Routes};
use lambda_http::http::{header, Method, StatusCode};
use lambda_http::{Body, Request, RequestExt, Response};
use serde_json::{json, Value};
use timeline_core::access::{Access, Caller};
use timeline_core::ports::{PageRequest, ReadModelError, ReadModelQueries};
use timeline_core::registry::{self, Kind};
use timeline_core::StreamKey;
use timeline_http::Problem;

pub use timeline_http::MAX_ID_CHARS;

pub struct QueryApi<Q> {
    queries: Q,
    routes: Routes,
}

pub use timeline_http::check_id;

impl<Q: ReadModelQueries> QueryApi<Q> {
    pub fn new(queries: Q) -> Self {
        QueryApi {
            queries,
            routes: Routes::default(),
        }
    }

    pub fn queries(&self) -> &Q {
        &self.queries
    }

    /// Handles one request; never fails (errors are problem+json responses).
    pub async fn handle(&self, req: Request) -> Response<Body> {
        let path = timeline_http::path(&req).to_owned();
        timeline_http::answer("query", &req, &path, self.dispatch(&req, &path)).await
    }

    async fn dispatch(&self, req: &Request, path: &str) -> Result<Response<Body>, Problem> {
        let caller = timeline_http::caller(req)?;
        let (QueryRoute { kind, resource }, id) = self
            .routes
            .find(path)
            .ok_or_else(|| Problem::not_found(format!("no route for {path}")))?;
        if req.method() != Method::GET {
            return Err(Problem::method_not_allowed(path, "GET"));
        }
        let query = req.query_string_parameters();
        let key = match id {
            Some(id) => {
                check_id(id)?;
                Some(StreamKey::new(kind.aggregate_type, id))
            }
            None => None,
        };
        match (resource, key) {
            (Resource::Collection, _) => {
                let (lookup, page) = params::list(kind, query.iter())?;
                let value = lookup.value.as_str();
                let access = registry::may_list(&caller, kind.aggregate_type, lookup.kind, value);
                if access != Access::Allowed {
                    return Err(forbidden(rule_of(access)));
                }
                let mut page = self.queries.list(&lookup, &page).await.map_err(problem)?;
                // The lookup is allowed; each item is still checked (defence in depth).
                page.items.retain(|view| readable(&caller, kind, view));
                tracing::info!(
                    lookup = lookup.kind.name(),
                    items = page.items.len(),
                    more = page.next_cursor.is_some(),
                    "list answered"
                );
                Ok(timeline_http::json(
                    StatusCode::OK,
                    &json!({ "items": page.items, "next_cursor": page.next_cursor }),
                ))
            }
            (Resource::Entity, Some(key)) => {
                params::none(query.iter())?;
                self.view(&caller, kind, &key).await
            }
            (Resource::History, Some(key)) => {
                let (range, page) = params::history(query.iter())?;
                self.history(&caller, kind, &key, range, &page).await
            }
            (_, None) => unreachable!("entity routes have an id"),
        }
    }

    async fn view(
        &self,
        caller: &Caller,
        kind: &Kind,
        key: &StreamKey,
    ) -> Result<Response<Body>, Problem> {
        let view = self
            .queries
            .view(key)
            .await
            .map_err(problem)?
            .ok_or_else(|| not_found(kind))?;
        let version = view.get("version").and_then(Value::as_u64).ok_or_else(|| {
            problem(ReadModelError::Corrupt(format!(
                "the view of {key} has no version"
            )))
        })?;
        if !readable(caller, kind, &view) {
            return Err(not_found(kind));
        }
        tracing::info!(stream = %key, version, "view answered");
        let mut response = timeline_http::json(StatusCode::OK, &view);
        response.headers_mut().insert(
            header::ETAG,
            format!("\"{version}\"").parse().expect("valid header"),
        );
        Ok(response)
    }

    /// The entity must exist (404 otherwise, even for an empty range); its view and the
    /// history page are read concurrently.
    async fn history(
        &self,
        caller: &Caller,
        kind: &Kind,
        key: &StreamKey,
        range: Range,
        page: &PageRequest,
    ) -> Result<Response<Body>, Problem> {
        let (view, history) = tokio::join!(
            self.queries.view(key),
            self.queries.history(key, range.from, range.to, page)
        );
        view.map_err(problem)?
            .filter(|view| readable(caller, kind, view))
            .ok_or_else(|| not_found(kind))?;
        let mut history = history.map_err(problem)?;
        tracing::info!(stream = %key, items = history.items.len(), more = history.next_cursor.is_some(), "history answered");
        // Where a record sat on the stream is the hydrator's business, not the API's.
        for item in &mut history.items {
            item.position = None;
        }
        Ok(timeline_http::json(
            StatusCode::OK,
            &json!({ "items": history.items, "next_cursor": history.next_cursor }),
        ))
    }
}

/// Whether the caller may read the entity a view shows (hidden ones answer as missing).
fn readable(caller: &Caller, kind: &Kind, view: &Value) -> bool {
    let state = view.get("state").unwrap_or(&Value::Null);
    registry::may_read(caller, kind.aggregate_type, state) == Access::Allowed
}

fn rule_of(access: Access) -> &'static str {
    match access {
        Access::Forbidden(rule) => rule,
        _ => "not_yours",
    }
}

fn forbidden(rule: &'static str) -> Problem {
    Problem::new(
        StatusCode::FORBIDDEN,
        "forbidden",
        format!("you may not list these ({rule})"),
    )
    .with("rule", rule)
}

fn not_found(kind: &Kind) -> Problem {
    Problem::new(
        StatusCode::NOT_FOUND,
        kind.not_found_code(),
        format!("no such {kind}"),
    )
}

/// The HTTP meaning of a failed read.
fn problem(error: ReadModelError) -> Problem {
    match error {
        ReadModelError::InvalidCursor => params::invalid_cursor(),
        ReadModelError::Unavailable(detail) => {
            tracing::error!(%detail, "read models unavailable");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the read models are unavailable; retry later",
            )
            .with_header(header::RETRY_AFTER, "1")
        }
        ReadModelError::Corrupt(detail) => {
            tracing::error!(%detail, "read model corrupt");
            Problem::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                "the read model for this request could not be read",
            )
        }
        // Reads never write, so a conflict or a refused write here is a bug in the adapter.
        ReadModelError::Conflict | ReadModelError::Refused(_) => Problem::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the read model for this request could not be read",
        ),
    }
}
