//! The HTTP edge shared by the API functions: RFC 9457 problem details, JSON responses,
//! request helpers for API Gateway proxy events, and logging set-up.

use lambda_http::http::{header, HeaderValue, StatusCode};
use lambda_http::request::RequestContext;
use lambda_http::{Body, Request, RequestExt, Response};
use serde::Serialize;
use serde_json::{Map, Value};
use tracing_subscriber::filter::{LevelFilter, Targets};

pub const PROBLEM_JSON: &str = "application/problem+json";
pub const JSON: &str = "application/json";

/// An RFC 9457 problem. `code` is a stable machine-readable name (also in `type`).
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    pub status: StatusCode,
    pub code: String,
    pub detail: String,
    pub extensions: Map<String, Value>,
    pub headers: Vec<(header::HeaderName, String)>,
}

impl Problem {
    pub fn new(status: StatusCode, code: impl Into<String>, detail: impl Into<String>) -> Self {
        Problem {
            status,
            code: code.into(),
            detail: detail.into(),
            extensions: Map::new(),
            headers: Vec::new(),
        }
    }

    pub fn bad_request(code: &str, detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::BAD_REQUEST, code, detail)
    }

    pub fn not_found(detail: impl Into<String>) -> Self {
        Problem::new(StatusCode::NOT_FOUND, "not_found", detail)
    }

    /// 405, with the `Allow` header: `path` accepts only `allowed`.
    pub fn method_not_allowed(path: &str, allowed: &'static str) -> Self {
        Problem::new(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            format!("{path} accepts {allowed}"),
        )
        .with_header(header::ALLOW, allowed)
    }

    /// Adds an extension member (e.g. `current_version`).
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.extensions.insert(key.to_owned(), value.into());
        self
    }

    pub fn with_header(mut self, name: header::HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    pub fn body(&self, instance: Option<&str>) -> Value {
        let mut body = Map::new();
        body.insert(
            "type".into(),
            format!("urn:problem:timeline:{}", self.code).into(),
        );
        body.insert(
            "title".into(),
            self.status.canonical_reason().unwrap_or("Error").into(),
        );
        body.insert("status".into(), self.status.as_u16().into());
        body.insert("detail".into(), self.detail.clone().into());
        body.insert("code".into(), self.code.clone().into());
        if let Some(instance) = instance {
            body.insert("instance".into(), instance.into());
        }
        for (k, v) in &self.extensions {
            body.insert(k.clone(), v.clone());
        }
        Value::Object(body)
    }

    pub fn into_response(self, instance: Option<&str>) -> Response<Body> {
        let body = self.body(instance);
        let mut response = respond(self.status, PROBLEM_JSON, &body);
        for (name, value) in self.headers {
            if let Ok(v) = HeaderValue::from_str(&value) {
                response.headers_mut().append(name, v);
            }
        }
        response
    }
}

fn respond(
    status: StatusCode,
    content_type: &'static str,
    body: &impl Serialize,
) -> Response<Body> {
    let bytes = serde_json::to_string(body).expect("response bodies serialize");
    let mut response = Response::new(Body::Text(bytes));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

/// A response handed to the Lambda runtime as it was built. Given a `Response<Body>`,
/// `lambda_http` re-reads every body and decodes it again by the charset of its
/// Content-Type, which links `encoding_rs` and its tables for every legacy encoding (0.14
/// MB of each API function's zip). Every body here is already text (JSON or
/// problem+json, built by [`json`] or [`Problem::into_response`]), which that conversion
/// hands back unchanged.
pub struct AsIs(pub Response<Body>);

impl lambda_http::IntoResponse for AsIs {
    fn into_response(
        self,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Response<Body>> + Send>> {
        Box::pin(std::future::ready(self.0))
    }
}

/// A JSON response.
pub fn json(status: StatusCode, body: &impl Serialize) -> Response<Body> {
    respond(status, JSON, body)
}

/// The request body as bytes, whatever encoding API Gateway used.
pub fn body_bytes(req: &Request) -> &[u8] {
    match req.body() {
        Body::Empty => &[],
        Body::Text(s) => s.as_bytes(),
        Body::Binary(b) => b,
        _ => &[],
    }
}

/// API Gateway's request id (or the Lambda one), for logs and problem `instance`s.
pub fn request_id(req: &Request) -> Option<String> {
    match req.request_context_ref() {
        Some(RequestContext::ApiGatewayV1(ctx)) => ctx.request_id.clone(),
        _ => req.lambda_context_ref().map(|c| c.request_id.clone()),
    }
}

/// The caller API Gateway authenticated: a Cognito user (`claims.sub`, roles from
/// `cognito:groups`), or an IAM principal on an IAM-authorized route (`identity.userArn`).
/// Anything else is 401: the handlers never run for nobody.
pub fn caller(req: &Request) -> Result<timeline_core::access::Caller, Problem> {
    use timeline_core::access::{Caller, Role};
    let unauthenticated = |why: &str| {
        Problem::new(
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
            format!("sign in first: {why}"),
        )
        .with_header(lambda_http::http::header::WWW_AUTHENTICATE, "Bearer")
    };
    let Some(RequestContext::ApiGatewayV1(ctx)) = req.request_context_ref() else {
        return Err(unauthenticated("no request context"));
    };
    if let Some(claims) = ctx.authorizer.fields.get("claims").filter(|c| !c.is_null()) {
        let subject = claims
            .get("sub")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty() && s.len() <= 256 && !s.chars().any(char::is_control))
            .ok_or_else(|| unauthenticated("the token names no subject"))?;
        let roles = match claims.get("cognito:groups") {
            None | Some(Value::Null) => vec![],
            // REST APIs pass a list as "a,b"; JWT authorizers as "[a b]"; tokens as an array.
            Some(Value::String(s)) => s
                .trim_matches(|c| c == '[' || c == ']')
                .split(|c: char| c == ',' || c.is_whitespace())
                .filter_map(Role::from_group)
                .collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .filter_map(Role::from_group)
                .collect(),
            Some(_) => return Err(unauthenticated("malformed groups claim")),
        };
        return Ok(Caller::user(subject, roles));
    }
    match ctx.identity.user_arn.as_deref() {
        Some(arn) if arn.starts_with("arn:") && arn.len() <= 2048 => Ok(Caller::service(arn)),
        _ => Err(unauthenticated("no identity")),
    }
}

/// Runs one request's work (`what`: `command`, `query`, ...) in a span with its request id,
/// method and path, and answers its problem as problem+json, logged once: an error for a 5xx
/// (with its detail), a refusal at info level otherwise.
pub async fn answer(
    what: &'static str,
    req: &Request,
    path: &str,
    work: impl std::future::Future<Output = Result<Response<Body>, Problem>>,
) -> Response<Body> {
    use tracing::Instrument;
    let request_id = request_id(req);
    let span = tracing::info_span!(
        "request",
        handler = what,
        request_id = request_id.as_deref().unwrap_or("-"),
        method = %req.method(),
        %path
    );
    async {
        match work.await {
            Ok(response) => response,
            Err(problem) => {
                if problem.status.is_server_error() {
                    tracing::error!(status = problem.status.as_u16(), code = %problem.code, detail = %problem.detail, "{what} failed");
                } else {
                    tracing::info!(status = problem.status.as_u16(), code = %problem.code, "{what} refused");
                }
                problem.into_response(Some(path))
            }
        }
    }
    .instrument(span)
    .await
}

/// Structured logs as Lambda expects: JSON when `AWS_LAMBDA_LOG_FORMAT=JSON`, without time
/// (Lambda stamps each line), target or colour codes; the level from `AWS_LAMBDA_LOG_LEVEL`
/// (Lambda's advanced logging controls), else `RUST_LOG`, else INFO. The runtime's default
/// subscriber does the same with `EnvFilter`, which brings a regex engine (0.3 MB) for
/// directives a Lambda never gets; `RUST_LOG` here takes levels and per-target levels
/// (`info,aws_smithy_runtime=debug`), no span or field filters.
pub fn init_logging() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    let json = std::env::var("AWS_LAMBDA_LOG_FORMAT").is_ok_and(|f| f.eq_ignore_ascii_case("json"));
    let filter = log_filter(
        std::env::var("AWS_LAMBDA_LOG_LEVEL").ok().as_deref(),
        std::env::var("RUST_LOG").ok().as_deref(),
    );
    let logs = tracing_subscriber::fmt()
        .with_target(false)
        .without_time()
        .with_ansi(false)
        .with_max_level(tracing::Level::TRACE);
    // Already set (a test, the local runner): keep the one there.
    let _ = if json {
        logs.json().finish().with(filter).try_init()
    } else {
        logs.finish().with(filter).try_init()
    };
}

/// Which logs pass: Lambda's level when it sets one (its FATAL is tracing's ERROR), else
/// `RUST_LOG`'s directives, else INFO (also when `RUST_LOG` does not parse: a bad variable
/// must not stop a function).
fn log_filter(lambda_level: Option<&str>, rust_log: Option<&str>) -> Targets {
    let level = |text: &str| match text.trim() {
        fatal if fatal.eq_ignore_ascii_case("fatal") => Some(LevelFilter::ERROR),
        other => other.parse::<LevelFilter>().ok(),
    };
    if let Some(level) = lambda_level.and_then(level) {
        return Targets::new().with_default(level);
    }
    rust_log
        .and_then(|directives| directives.parse::<Targets>().ok())
        .unwrap_or_else(|| Targets::new().with_default(LevelFilter::INFO))
}

/// A function that cannot start (its configuration, or a read store it must refuse): said in
/// the log in words (the process's exit shows only the error's debug form), then returned.
pub fn start_failed<E>(error: E) -> lambda_runtime::Error
where
    E: std::fmt::Display + Into<lambda_runtime::Error>,
{
    tracing::error!(error = %error, "cannot start");
    error.into()
}

/// Entity ids are at most this long.
pub const MAX_ID_CHARS: usize = 64;

/// Entity ids: 1 to 64 of `A-Z a-z 0-9 _ -`, so they are safe in keys, paths and logs. Every
/// route that takes an id checks it with this one function.
pub fn check_id(id: &str) -> Result<(), Problem> {
    let ok = !id.is_empty()
        && id.len() <= MAX_ID_CHARS
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
    if ok {
        Ok(())
    } else {
        Err(Problem::bad_request(
            "invalid_id",
            format!("an id is 1 to {MAX_ID_CHARS} characters of A-Z, a-z, 0-9, '-' and '_'"),
        ))
    }
}

/// The resource path as the client sent it, without the stage prefix `lambda_http` adds.
pub fn path(req: &Request) -> &str {
    let raw = req.raw_http_path();
    if raw.is_empty() {
        req.uri().path()
    } else {
        raw
    }
}

/// API Gateway REST (v1) proxy events, built the way API Gateway builds them, so local
/// servers and tests drive the handlers with the same payloads Lambda receives.
pub mod apigw {
    use serde_json::{json, Map, Value};

    /// What a proxy event is made of.
    pub struct ProxyRequest<'a> {
        pub method: &'a str,
        pub path: &'a str,
        pub query: Option<&'a str>,
        pub headers: &'a [(&'a str, &'a str)],
        pub body: Option<&'a str>,
        pub request_id: &'a str,
        pub stage: &'a str,
        /// The authenticated caller: a user as a Cognito authorizer passes one (`claims` with
        /// `sub` and `cognito:groups`), a service as an IAM-authorized route does
        /// (`identity.userArn`), or nobody.
        pub caller: Option<&'a timeline_core::access::Caller>,
    }

    pub fn event(r: &ProxyRequest<'_>) -> Value {
        let mut headers = Map::new();
        let mut multi = Map::new();
        for (k, v) in r.headers {
            headers.insert((*k).to_owned(), Value::from(*v));
            multi
                .entry((*k).to_owned())
                .or_insert_with(|| Value::Array(vec![]))
                .as_array_mut()
                .expect("array")
                .push(Value::from(*v));
        }
        let (query, multi_query) = match r.query.filter(|q| !q.is_empty()) {
            None => (Value::Null, Value::Null),
            Some(q) => {
                let mut single = Map::new();
                let mut many = Map::new();
                for (k, v) in url_pairs(q) {
                    single.insert(k.clone(), Value::from(v.clone()));
                    many.entry(k)
                        .or_insert_with(|| Value::Array(vec![]))
                        .as_array_mut()
                        .expect("array")
                        .push(Value::from(v));
                }
                (Value::Object(single), Value::Object(many))
            }
        };
        use timeline_core::access::Caller;
        let (authorizer, user_arn) = match r.caller {
            Some(Caller::User { subject, roles }) => {
                let groups: Vec<&str> = roles.iter().map(|r| r.group()).collect();
                let mut claims = json!({ "sub": subject });
                if !groups.is_empty() {
                    claims["cognito:groups"] = Value::from(groups.join(","));
                }
                (json!({ "claims": claims }), Value::Null)
            }
            Some(Caller::Service { principal }) => (Value::Null, Value::from(principal.as_str())),
            None => (Value::Null, Value::Null),
        };
        json!({
            "resource": r.path,
            "path": r.path,
            "httpMethod": r.method,
            "headers": headers,
            "multiValueHeaders": multi,
            "queryStringParameters": query,
            "multiValueQueryStringParameters": multi_query,
            "pathParameters": null,
            "stageVariables": null,
            "requestContext": {
                "accountId": "000000000000",
                "resourceId": "local",
                "stage": r.stage,
                "requestId": r.request_id,
                "identity": { "sourceIp": "127.0.0.1", "userArn": user_arn },
                "authorizer": authorizer,
                "resourcePath": r.path,
                "httpMethod": r.method,
                "path": format!("/{}{}", r.stage, r.path),
                "requestTimeEpoch": 0,
                "protocol": "HTTP/1.1",
                "apiId": "local"
            },
            "body": r.body,
            "isBase64Encoded": false
        })
    }

    /// Decodes `a=1&b=x%20y` the way API Gateway does for `queryStringParameters`.
    fn url_pairs(query: &str) -> Vec<(String, String)> {
        form_urlencoded::parse(query.as_bytes())
            .map(|(k, v)| (k.into_owned(), v.into_owned()))
            .collect()
    }

    /// The proxy event decoded by `lambda_http`, exactly as in Lambda.
    pub fn request(r: &ProxyRequest<'_>) -> Result<lambda_http::Request, serde_json::Error> {
        lambda_http::request::from_str(&event(r).to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use timeline_core::access::{Caller, Role};
    use tracing::Level;

    /// What the runtime sends for a response built here is what `lambda_http`'s own
    /// conversion would have sent: same status, headers and text body.
    #[tokio::test]
    async fn responses_go_out_as_lambda_http_would_send_them() {
        use lambda_http::IntoResponse;
        let built = || {
            [
                json(
                    StatusCode::CREATED,
                    &json!({"ride": "r-1", "name": "Zoë ✓"}),
                ),
                Problem::bad_request("invalid_body", "not JSON").into_response(Some("/rides")),
                Problem::method_not_allowed("/rides", "GET, POST").into_response(None),
            ]
        };
        for (ours, theirs) in built().into_iter().zip(built()) {
            let (ours, theirs) = (
                AsIs(ours).into_response().await,
                theirs.into_response().await,
            );
            assert_eq!(ours.status(), theirs.status());
            assert_eq!(ours.headers(), theirs.headers());
            assert_eq!(ours.body(), theirs.body());
            assert!(matches!(ours.body(), Body::Text(t) if t.starts_with('{')));
        }
    }

    #[test]
    fn logs_at_info_unless_told_otherwise() {
        for rust_log in [None, Some("not a = directive = list")] {
            let filter = log_filter(None, rust_log);
            assert!(filter.would_enable("processor", &Level::INFO));
            assert!(!filter.would_enable("processor", &Level::DEBUG));
        }
    }

    #[test]
    fn lambdas_log_level_wins_over_rust_log_and_fatal_means_error() {
        let filter = log_filter(Some("DEBUG"), Some("error"));
        assert!(filter.would_enable("aws_smithy_runtime", &Level::DEBUG));
        assert!(!filter.would_enable("aws_smithy_runtime", &Level::TRACE));
        let filter = log_filter(Some("FATAL"), None);
        assert!(filter.would_enable("processor", &Level::ERROR));
        assert!(!filter.would_enable("processor", &Level::WARN));
        // A level Lambda does not define is not taken: RUST_LOG decides.
        let filter = log_filter(Some("LOUD"), Some("warn"));
        assert!(filter.would_enable("processor", &Level::WARN));
        assert!(!filter.would_enable("processor", &Level::INFO));
    }

    #[test]
    fn rust_log_sets_levels_per_target() {
        let filter = log_filter(None, Some("warn,aws_smithy_runtime=debug"));
        assert!(filter.would_enable("aws_smithy_runtime::client::orchestrator", &Level::DEBUG));
        assert!(!filter.would_enable("aws_smithy_runtime", &Level::TRACE));
        assert!(!filter.would_enable("processor", &Level::INFO));
        assert!(filter.would_enable("processor", &Level::WARN));
    }

    /// A proxy event whose request context carries `authorizer` and `identity` as given.
    fn with_context(authorizer: Value, identity: Value) -> Request {
        let mut event = apigw::event(&apigw::ProxyRequest {
            method: "GET",
            path: "/rides",
            query: None,
            headers: &[],
            body: None,
            request_id: "r",
            stage: "prod",
            caller: None,
        });
        event["requestContext"]["authorizer"] = authorizer;
        event["requestContext"]["identity"] = identity;
        lambda_http::request::from_str(&event.to_string()).unwrap()
    }

    fn status(r: Result<Caller, Problem>) -> u16 {
        r.map_or_else(|p| p.status.as_u16(), |_| 200)
    }

    #[test]
    fn a_cognito_user_is_its_sub_with_the_roles_of_its_groups_in_any_spelling() {
        for groups in [
            json!("riders,drivers"),
            json!("[riders drivers]"),
            json!(["riders", "drivers", "admins"]),
        ] {
            let req = with_context(
                json!({ "claims": { "sub": "u-1", "cognito:groups": groups } }),
                json!({ "sourceIp": "1.2.3.4" }),
            );
            assert_eq!(
                caller(&req).unwrap(),
                Caller::user("u-1", [Role::Rider, Role::Driver])
            );
        }
        let no_groups = with_context(json!({ "claims": { "sub": "u-2" } }), json!({}));
        assert_eq!(caller(&no_groups).unwrap(), Caller::user("u-2", []));
    }

    #[test]
    fn an_iam_caller_is_a_service() {
        let arn = "arn:aws:sts::123456789012:assumed-role/video-pipeline/worker-1";
        let req = with_context(
            Value::Null,
            json!({ "userArn": arn, "caller": "AROA:worker-1" }),
        );
        assert_eq!(caller(&req).unwrap(), Caller::service(arn));
    }

    #[test]
    fn no_identity_or_a_malformed_one_is_401() {
        for (authorizer, identity) in [
            (Value::Null, json!({ "sourceIp": "1.2.3.4" })),
            (json!({ "claims": {} }), json!({})),
            (json!({ "claims": { "sub": "" } }), json!({})),
            (json!({ "claims": { "sub": 42 } }), json!({})),
            (json!({ "claims": { "sub": "a\u{0}b" } }), json!({})),
            (
                json!({ "claims": { "sub": "u", "cognito:groups": 7 } }),
                json!({}),
            ),
            (Value::Null, json!({ "userArn": "not-an-arn" })),
        ] {
            let req = with_context(authorizer.clone(), identity.clone());
            assert_eq!(status(caller(&req)), 401, "{authorizer} {identity}");
        }
    }
}
