//! The OpenAPI document (`shared/http/openapi.json`) against the routes and decoders the
//! functions really have: same paths and methods (POST: this handler, GET: the query
//! function and the time-travel routes), and every documented request example and required field means what the
//! decoder says.

use command_handler::request::{self, check_id};
use command_handler::routes::{routes, CommandRoute};
use serde_json::{Map, Value};
use std::collections::BTreeSet;
use timeline_testkit::openapi::{document, resolve};

fn decode(route: &CommandRoute, body: &Map<String, Value>) -> Result<(), String> {
    let mut body = body.clone();
    body.remove("expected_version");
    if route.creates {
        body.remove("id");
    }
    request::check(route, body).map_err(|p| p.detail)
}

#[test]
fn the_document_lists_exactly_the_routes_the_functions_serve() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let documented = |method: &str| -> BTreeSet<String> {
        doc["paths"]
            .as_object()
            .unwrap()
            .iter()
            .filter(|(_, item)| item.get(method).is_some())
            .map(|(path, _)| path.clone())
            .collect()
    };
    let methods: BTreeSet<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|item| item.as_object().unwrap().keys())
        .map(String::as_str)
        .filter(|k| {
            [
                "get", "put", "post", "patch", "delete", "head", "options", "trace",
            ]
            .contains(k)
        })
        .collect();
    assert_eq!(
        methods,
        BTreeSet::from(["get", "post"]),
        "commands are POST, queries GET"
    );
    // POST: the command handler's routes; GET: the query function's.
    let commands: BTreeSet<String> = routes().into_iter().map(|(p, _)| p).collect();
    let queries: BTreeSet<String> = query::routes().into_iter().map(|(p, _)| p).collect();
    assert_eq!(documented("post"), commands);
    let time_travel: BTreeSet<String> = hydrator::api::routes()
        .into_iter()
        .map(|(p, _, _)| p)
        .collect();
    assert_eq!(documented("get"), &queries | &time_travel);
}

#[test]
fn every_documented_example_is_accepted_and_every_required_field_is_needed() {
    let doc = document();
    for (path, route) in routes() {
        let path = path.as_str();
        let op = &doc["paths"][path]["post"];
        let content = &resolve(&doc, &op["requestBody"])["content"]["application/json"];
        let schema = resolve(&doc, &content["schema"]);
        assert_eq!(
            schema["additionalProperties"], false,
            "{path}: unknown fields are refused"
        );
        let example = content["example"].as_object().cloned().unwrap_or_default();
        decode(&route, &example)
            .unwrap_or_else(|e| panic!("{path}: documented example refused: {e}"));
        for field in schema["required"].as_array().into_iter().flatten() {
            let field = field.as_str().unwrap();
            if field == "id" || field == "expected_version" {
                continue;
            }
            let mut without = example.clone();
            without.remove(field);
            assert!(
                decode(&route, &without).is_err(),
                "{path}: {field} is documented as required but is not"
            );
        }
        let mut extra = example.clone();
        extra.insert("surprise".into(), Value::Bool(true));
        assert!(
            decode(&route, &extra).is_err(),
            "{path}: an unknown field must be refused"
        );
    }
}

#[test]
fn documented_statuses_and_the_id_pattern_match_the_handler() {
    let doc = document();
    let id_param = resolve(&doc, &doc["components"]["parameters"]["EntityId"]);
    let pattern = resolve(&doc, &id_param["schema"])["pattern"]
        .as_str()
        .unwrap();
    assert_eq!(pattern, "^[A-Za-z0-9_-]{1,64}$");
    assert!(check_id(&"a".repeat(64)).is_ok() && check_id(&"a".repeat(65)).is_err());
    assert!(check_id("a.b").is_err() && check_id("A_b-9").is_ok());
    for (path, route) in routes() {
        let responses = doc["paths"][path.as_str()]["post"]["responses"]
            .as_object()
            .unwrap();
        let success = if route.creates { "201" } else { "200" };
        for status in [
            success, "202", "400", "401", "403", "409", "413", "415", "422", "503",
        ] {
            assert!(
                responses.contains_key(status),
                "{path} documents no {status}"
            );
        }
        if !route.creates {
            assert!(responses.contains_key("404"), "{path} documents no 404");
        }
        // Users sign in with Cognito; the video pipeline signs its reports with IAM.
        let scheme = if route.service { "iam" } else { "cognito" };
        assert_eq!(
            doc["paths"][path.as_str()]["post"]["security"],
            serde_json::json!([{ scheme: [] }]),
            "{path}"
        );
        let problem = resolve(&doc, &responses["422"]);
        assert!(
            problem["content"]["application/problem+json"].is_object(),
            "{path}: errors are problem+json"
        );
    }
}
