//! The OpenAPI document (`shared/http/openapi.json`) as tests read it: references
//! resolved, answers checked against the schema documented for their status.

use serde_json::Value;

/// The document.
pub fn document() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../http/openapi.json");
    serde_json::from_str(&std::fs::read_to_string(path).expect("the OpenAPI document"))
        .expect("the OpenAPI document is JSON")
}

pub fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => {
            let pointer = r.strip_prefix('#').expect("local refs only");
            resolve(
                doc,
                doc.pointer(pointer)
                    .unwrap_or_else(|| panic!("dangling {r}")),
            )
        }
        None => node,
    }
}

/// The subset of OpenAPI 3.0 schemas the document uses (and of JSON Schema the integration
/// events' schemas use: a list of types, `null`): type, nullable, enum, required,
/// properties, additionalProperties, items, oneOf, allOf, minimum, maximum. Returns what
/// does not fit, with where.
pub fn check(doc: &Value, schema: &Value, value: &Value, at: &str, errors: &mut Vec<String>) {
    let schema = resolve(doc, schema);
    if value.is_null() && schema["nullable"] == true {
        return;
    }
    if let Some(all) = schema["allOf"].as_array() {
        for s in all {
            check(doc, s, value, at, errors);
        }
    }
    if let Some(any) = schema["oneOf"].as_array() {
        let fits = any
            .iter()
            .filter(|s| {
                let mut e = Vec::new();
                check(doc, s, value, at, &mut e);
                e.is_empty()
            })
            .count();
        if fits != 1 {
            errors.push(format!("{at}: fits {fits} of the oneOf schemas"));
        }
    }
    if let Some(allowed) = schema["enum"].as_array() {
        if !allowed.contains(value) {
            errors.push(format!("{at}: {value} is not one of {allowed:?}"));
        }
    }
    // One type, or several (JSON Schema's `["string", "null"]`).
    let fits = |t: &str| match t {
        "object" => value.is_object(),
        "array" => value.is_array(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "null" => value.is_null(),
        other => panic!("unknown type {other}"),
    };
    let fits_type = match &schema["type"] {
        Value::String(t) => fits(t),
        Value::Array(ts) => ts.iter().filter_map(Value::as_str).any(fits),
        _ => true,
    };
    if !fits_type {
        errors.push(format!("{at}: {value} is not of type {}", schema["type"]));
        return;
    }
    if let (Some(min), Some(n)) = (schema["minimum"].as_f64(), value.as_f64()) {
        if n < min {
            errors.push(format!("{at}: {n} is below {min}"));
        }
    }
    if let (Some(max), Some(n)) = (schema["maximum"].as_f64(), value.as_f64()) {
        if n > max {
            errors.push(format!("{at}: {n} is above {max}"));
        }
    }
    if let Some(items) = value.as_array() {
        if let Some(item_schema) = schema.get("items") {
            for (i, item) in items.iter().enumerate() {
                check(doc, item_schema, item, &format!("{at}[{i}]"), errors);
            }
        }
    }
    if let Some(object) = value.as_object() {
        for field in schema["required"].as_array().into_iter().flatten() {
            let field = field.as_str().unwrap();
            if !object.contains_key(field) {
                errors.push(format!("{at}: {field} is required but missing"));
            }
        }
        let properties = schema["properties"].as_object();
        for (k, v) in object {
            let at = format!("{at}.{k}");
            match properties.and_then(|p| p.get(k)) {
                Some(s) => check(doc, s, v, &at, errors),
                None => match &schema["additionalProperties"] {
                    Value::Bool(false) => errors.push(format!("{at}: not documented")),
                    s @ Value::Object(_) => check(doc, s, v, &at, errors),
                    _ => {}
                },
            }
        }
    }
}

/// Checks an answer against the documented response of `GET template` for its status, and
/// that it carries the headers documented with it.
pub fn assert_documented(
    doc: &Value,
    template: &str,
    answer: &(u16, Value, lambda_http::http::HeaderMap),
) {
    let (status, body, headers) = answer;
    let op = &doc["paths"][template]["get"];
    assert!(op.is_object(), "GET {template} is not documented");
    let response = resolve(doc, &op["responses"][status.to_string()]);
    assert!(response.is_object(), "GET {template} documents no {status}");
    let content_type = headers["content-type"].to_str().unwrap();
    let schema = &response["content"][content_type]["schema"];
    assert!(
        schema.is_object(),
        "GET {template} {status} documents no {content_type}"
    );
    let mut errors = Vec::new();
    check(doc, schema, body, "$", &mut errors);
    assert!(
        errors.is_empty(),
        "GET {template} {status}: {errors:#?}\n{body:#}"
    );
    for name in response["headers"]
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, _)| k)
    {
        assert!(
            headers.contains_key(name.as_str()),
            "GET {template} {status}: no {name} header"
        );
    }
}
