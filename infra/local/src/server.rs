//! A plain HTTP server on 127.0.0.1 that turns each request into the API Gateway proxy
//! event Lambda would receive and hands it to the same handler code.

use crate::auth::Issuer;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::sync::Arc;
use timeline_http::apigw::{self, ProxyRequest};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// API Gateway's own payload limit; the handlers apply their tighter limits themselves.
const MAX_BODY: usize = 10 * 1024 * 1024;

/// Something that answers API Gateway proxy requests (the Lambda handlers).
pub trait Api: Send + Sync + 'static {
    fn handle(
        &self,
        req: lambda_http::Request,
    ) -> impl Future<Output = lambda_http::Response<lambda_http::Body>> + Send;
}

/// Serves until `shutdown` flips; in-flight requests finish first.
pub async fn serve<A: Api>(
    listener: TcpListener,
    api: Arc<A>,
    issuer: Arc<Issuer>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = tokio::task::JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let Ok((stream, _)) = accepted else { continue };
                let api = api.clone();
                let issuer = issuer.clone();
                let mut stop = shutdown.clone();
                connections.spawn(async move {
                    let service = service_fn(move |req| {
                        let (api, issuer) = (api.clone(), issuer.clone());
                        async move { Ok::<_, std::convert::Infallible>(answer(api.as_ref(), &issuer, req).await) }
                    });
                    let conn = http1::Builder::new().serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stop.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = conn.await;
                        }
                    }
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    while connections.join_next().await.is_some() {}
}

async fn answer<A: Api>(api: &A, issuer: &Issuer, req: Request<Incoming>) -> Response<Full<Bytes>> {
    let (parts, body) = req.into_parts();
    // The timeline page's files (no data in them; the page calls the API with a token).
    if parts.method == hyper::Method::GET && parts.uri.path().starts_with("/ui") {
        return page(parts.uri.path());
    }
    // As API Gateway's authorizer does: a verified token becomes the request's identity;
    // without one the handlers see nobody and answer 401.
    let caller = issuer.caller_of(
        parts
            .headers
            .get(hyper::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok()),
    );
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(_) => return plain(StatusCode::PAYLOAD_TOO_LARGE, "request body over 10 MB"),
    };
    let headers: Vec<(String, String)> = parts
        .headers
        .iter()
        .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
        .collect();
    let header_refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let text = (!body.is_empty()).then(|| String::from_utf8_lossy(&body).into_owned());
    let request_id = uuid::Uuid::new_v4().to_string();
    let proxy = ProxyRequest {
        method: parts.method.as_str(),
        path: parts.uri.path(),
        query: parts.uri.query(),
        headers: &header_refs,
        body: text.as_deref(),
        request_id: &request_id,
        stage: "local",
        caller: caller.as_ref(),
    };
    let request = match apigw::request(&proxy) {
        Ok(r) => r,
        Err(e) => {
            return plain(
                StatusCode::BAD_REQUEST,
                &format!("cannot form an API Gateway event: {e}"),
            )
        }
    };
    let response = api.handle(request).await;
    let (parts, body) = response.into_parts();
    let bytes = match body {
        lambda_http::Body::Empty => Bytes::new(),
        lambda_http::Body::Text(t) => Bytes::from(t),
        lambda_http::Body::Binary(b) => Bytes::from(b),
        _ => Bytes::new(),
    };
    let mut out = Response::new(Full::new(bytes));
    *out.status_mut() = parts.status;
    *out.headers_mut() = parts.headers;
    tracing::debug!(method = %proxy.method, path = %proxy.path, status = out.status().as_u16(), "request");
    out
}

fn page(path: &str) -> Response<Full<Bytes>> {
    if path == "/ui" {
        let mut out = plain(StatusCode::PERMANENT_REDIRECT, "");
        out.headers_mut()
            .insert(hyper::header::LOCATION, "/ui/".parse().expect("a header"));
        return out;
    }
    let Some((kind, body)) = crate::ui::asset(path) else {
        return plain(StatusCode::NOT_FOUND, "no such file");
    };
    let mut out = Response::new(Full::new(Bytes::from_static(body.as_bytes())));
    let headers = out.headers_mut();
    for (name, value) in [
        ("content-type", kind),
        // Only its own files and the API on this origin.
        (
            "content-security-policy",
            "default-src 'self'; frame-ancestors 'none'",
        ),
        ("x-content-type-options", "nosniff"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-cache"),
    ] {
        headers.insert(name, value.parse().expect("a header"));
    }
    out
}

fn plain(status: StatusCode, text: &str) -> Response<Full<Bytes>> {
    let mut out = Response::new(Full::new(Bytes::from(text.to_owned())));
    *out.status_mut() = status;
    out
}
