//! The time-travel routes of the OpenAPI document against what the hydrator really answers:
//! every answer (200, 400, 404, and the 503 of a log that cannot be read in time) fits the
//! schema documented for its status, with the documented headers; every route documents its
//! statuses and exactly its parameters.

mod support;

use hydrator::api::routes;
use support::*;
use timeline_testkit::faults::Faults;
use timeline_testkit::openapi::{assert_documented, document, resolve};
use timeline_testkit::read;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_time_travel_answer_fits_its_documented_schema() {
    let doc = document();
    let (env, proxy) = timeline_testkit::proxy_env!();
    let w = World::build(env).await;
    let h = w.full();
    let fare = w
        .events
        .iter()
        .find(|e| e.aggregate_id == "fare")
        .unwrap()
        .occurred_at;
    let get = |path: &str| timeline_testkit::api_request("GET", path, &[], None);
    let cases = [
        ("/rides/{id}/state", "/rides/fare/state".to_owned(), 200),
        (
            "/rides/{id}/state",
            format!("/rides/fare/state?as_of={fare}"),
            200,
        ),
        (
            "/rides/{id}/state",
            "/rides/fare/state?version=2".into(),
            200,
        ),
        (
            "/rides/{id}/state",
            "/rides/fare/state?version=9".into(),
            404,
        ),
        ("/rides/{id}/state", "/rides/nobody/state".into(), 404),
        (
            "/rides/{id}/state",
            "/rides/fare/state?version=2&as_of=2020-01-01T00:00:00Z".into(),
            400,
        ),
        ("/rides/{id}/state", "/rides/a.b/state".into(), 400),
        ("/rides/{id}/timeline", "/rides/fare/timeline".into(), 200),
        (
            "/rides/{id}/timeline",
            format!("/rides/fare/timeline?from={fare}"),
            200,
        ),
        (
            "/rides/{id}/timeline",
            "/rides/fare/timeline?from=soon".into(),
            400,
        ),
        ("/videos/{id}/state", "/videos/seed/state".into(), 200),
        ("/videos/{id}/timeline", "/videos/seed/timeline".into(), 200),
        ("/videos/{id}/timeline", "/videos/none/timeline".into(), 404),
    ];
    for (template, path, status) in &cases {
        let answer = read(h.handle_http(get(path)).await);
        assert_eq!(answer.0, *status, "{path}: {}", answer.1);
        assert_documented(&doc, template, &answer);
    }
    let past = read(h.handle_http(get("/rides/fare/state?version=9")).await);
    assert_eq!(past.1["code"], "ride.version_not_found");
    assert_eq!(past.1["latest_version"], 3);

    // The log unreadable within the budget: 503 with Retry-After, as documented.
    proxy.set(Faults {
        throttle: 1.0,
        ..Faults::none()
    });
    for (template, _, _) in routes() {
        let path = template.replace("{id}", "seed");
        let answer = read(h.handle_http(get(&path)).await);
        assert_eq!(answer.0, 503, "{path}: {}", answer.1);
        assert_eq!(answer.1["code"], "log_unavailable");
        assert_documented(&doc, &template, &answer);
    }
    proxy.set(Faults::none());
}

#[test]
fn every_time_travel_route_documents_its_statuses_and_parameters() {
    let doc = document();
    for (template, _, _) in routes() {
        let op = &doc["paths"][template.as_str()]["get"];
        let responses = op["responses"].as_object().unwrap();
        for status in ["200", "400", "401", "404", "503"] {
            assert!(
                responses.contains_key(status),
                "GET {template} documents no {status}"
            );
        }
        let params: Vec<&str> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| resolve(&doc, p)["name"].as_str().unwrap())
            .collect();
        let expected: &[&str] = if template.ends_with("/state") {
            &["id", "as_of", "version"]
        } else {
            &["id", "from", "to"]
        };
        assert_eq!(params, expected, "GET {template}");
    }
}
