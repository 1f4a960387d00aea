//! Turning an API Gateway request into a command request: headers, body, limits. Every
//! rejection here is a 4xx problem and happens before anything is read or written.

use crate::routes::CommandRoute;
use lambda_http::http::{header, HeaderMap, StatusCode};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use timeline_http::Problem;

/// Commands are small; anything larger is a mistake or an attack.
pub const MAX_BODY_BYTES: usize = 16 * 1024;
pub use timeline_http::MAX_ID_CHARS;
pub const MAX_IDEMPOTENCY_KEY_CHARS: usize = 255;
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";

/// What the edge extracts before the command is decoded.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    pub body: Map<String, Value>,
    pub expected_version: Option<u64>,
    pub idempotency_key: Option<String>,
    /// SHA-256 of method, path and the canonical JSON body.
    pub fingerprint: String,
}

pub use timeline_http::check_id;

fn header_str<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Problem> {
    match headers.get(name) {
        None => Ok(None),
        Some(v) => v.to_str().map(|s| Some(s.trim())).map_err(|_| {
            Problem::bad_request("invalid_header", format!("{name} must be visible ASCII"))
        }),
    }
}

/// `If-Match: "3"`, `W/"3"` or `3`; `*` asks for no particular version.
fn if_match(headers: &HeaderMap) -> Result<Option<u64>, Problem> {
    let Some(raw) = header_str(headers, header::IF_MATCH.as_str())? else {
        return Ok(None);
    };
    if raw == "*" {
        return Ok(None);
    }
    let tag = raw.strip_prefix("W/").unwrap_or(raw);
    let tag = match tag.strip_prefix('"') {
        Some(quoted) => quoted.strip_suffix('"').unwrap_or("not a version"),
        None => tag,
    };
    tag.parse().map(Some).map_err(|_| {
        Problem::bad_request(
            "invalid_if_match",
            "If-Match must be the entity version as an ETag, e.g. \"3\"",
        )
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Problem> {
    let Some(key) = header_str(headers, IDEMPOTENCY_KEY)? else {
        return Ok(None);
    };
    let ok = !key.is_empty()
        && key.len() <= MAX_IDEMPOTENCY_KEY_CHARS
        && key.bytes().all(|b| b.is_ascii_graphic());
    if ok {
        Ok(Some(key.to_owned()))
    } else {
        Err(Problem::bad_request(
            "invalid_idempotency_key",
            format!("Idempotency-Key is 1 to {MAX_IDEMPOTENCY_KEY_CHARS} visible ASCII characters"),
        ))
    }
}

/// Checks size, content type and JSON shape, and pulls out the concurrency and
/// idempotency controls.
pub fn parse(
    method: &str,
    path: &str,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Envelope, Problem> {
    if body.len() > MAX_BODY_BYTES {
        return Err(Problem::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("a command body is at most {MAX_BODY_BYTES} bytes"),
        )
        .with("max_bytes", MAX_BODY_BYTES));
    }
    if let Some(ct) = header_str(headers, header::CONTENT_TYPE.as_str())? {
        let essence = ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if essence != "application/json" && !essence.ends_with("+json") {
            return Err(Problem::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                "commands are application/json",
            ));
        }
    }
    let value: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Map::new())
    } else {
        serde_json::from_slice(body).map_err(|e| {
            Problem::bad_request("malformed_json", format!("the body is not valid JSON: {e}"))
        })?
    };
    let Value::Object(mut body) = value else {
        return Err(Problem::bad_request(
            "invalid_body",
            "the body must be a JSON object",
        ));
    };
    let fingerprint = {
        let mut hash = Sha256::new();
        hash.update(method.as_bytes());
        hash.update(b"\n");
        hash.update(path.as_bytes());
        hash.update(b"\n");
        // serde_json's maps are sorted, so this is canonical whatever the key order sent.
        hash.update(Value::Object(body.clone()).to_string().as_bytes());
        // The version precondition is part of the request too.
        hash.update(b"\n");
        hash.update(
            header_str(headers, header::IF_MATCH.as_str())?
                .unwrap_or("")
                .as_bytes(),
        );
        format!("{:x}", hash.finalize())
    };
    let from_body = match body.remove("expected_version") {
        None | Some(Value::Null) => None,
        Some(v) => Some(v.as_u64().ok_or_else(|| {
            Problem::bad_request(
                "invalid_body",
                "expected_version must be a non-negative integer",
            )
        })?),
    };
    let from_header = if_match(headers)?;
    let expected_version = match (from_header, from_body) {
        (Some(h), Some(b)) if h != b => {
            return Err(Problem::bad_request(
                "conflicting_versions",
                "If-Match and expected_version disagree",
            ))
        }
        (h, b) => h.or(b),
    };
    Ok(Envelope {
        body,
        expected_version,
        idempotency_key: idempotency_key(headers)?,
        fingerprint,
    })
}

/// Decodes the body into the route's command (the domain's command enum, tagged by
/// `command`), refusing unknown fields so a typo is an error, not a silent default.
pub fn command<C>(route: &CommandRoute, body: Map<String, Value>) -> Result<C, Problem>
where
    C: serde::de::DeserializeOwned + serde::Serialize,
{
    if body.contains_key("command") {
        return Err(unknown_fields(vec!["command".into()]));
    }
    let mut tagged = body.clone();
    tagged.insert("command".into(), route.command.into());
    let command: C = serde_json::from_value(Value::Object(tagged)).map_err(|e| {
        Problem::bad_request(
            "invalid_body",
            format!("the body does not fit this command: {e}"),
        )
    })?;
    // Fields the command does not have (serde ignores them on field-less commands).
    let known = serde_json::to_value(&command).expect("commands serialize");
    let unknown: Vec<String> = body
        .keys()
        .filter(|k| known.get(k.as_str()).is_none())
        .cloned()
        .collect();
    if unknown.is_empty() {
        Ok(command)
    } else {
        Err(unknown_fields(unknown))
    }
}

/// Whether a body decodes into the route's command, without running it (the OpenAPI
/// document's examples are checked with it).
pub fn check(route: &CommandRoute, body: Map<String, Value>) -> Result<(), Problem> {
    struct Check<'a>(&'a CommandRoute, Map<String, Value>);
    impl timeline_core::Visitor for Check<'_> {
        type Output = Result<(), Problem>;
        fn visit<A: timeline_core::Entity>(self) -> Self::Output {
            command::<A::Command>(self.0, self.1).map(|_| ())
        }
    }
    timeline_core::dispatch(route.kind.aggregate_type, Check(route, body))
        .expect("routes come from the registry")
}

fn unknown_fields(fields: Vec<String>) -> Problem {
    Problem::bad_request(
        "invalid_body",
        format!("unknown field(s) for this command: {}", fields.join(", ")),
    )
    .with("unknown_fields", fields)
}
