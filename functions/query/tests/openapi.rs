//! The GET operations of the OpenAPI document (`shared/http/openapi.json`) against what the
//! handler really answers: every live answer validates against the documented schema of
//! its status, and every route documents the statuses it can answer.

mod support;

use timeline_core::registry;

fn templates() -> Vec<String> {
    query::routes().into_iter().map(|(t, _)| t).collect()
}
use serde_json::{json, Value};
use support::*;
use timeline_core::ride::{CancelledBy, RideEvent};
use timeline_core::video::VideoEvent;
use timeline_testkit::openapi::{assert_documented, check, document, resolve};

#[tokio::test]
async fn every_answer_fits_its_documented_schema() {
    let doc = document();
    let Some((env, api)) = env().await else {
        return;
    };
    let models = read_models(&env);
    seed_ride(&models, "ride-1").await;
    ride(
        &models,
        "ride-2",
        &[
            ("11:00:00", booked("rider-seed", 1000)),
            (
                "11:01:00",
                RideEvent::RideCancelled {
                    by: CancelledBy::Rider,
                    reason: "plans changed".into(),
                },
            ),
        ],
    )
    .await;
    ride(
        &models,
        "ride-3",
        &[
            ("12:00:00", booked("rider-seed", 1000)),
            ("12:01:00", assigned("driver-seed")),
            ("12:02:00", started("driver-seed")),
            (
                "12:30:00",
                RideEvent::RideCompleted {
                    final_fare_cents: 2500,
                    distance_km: 7.5,
                },
            ),
        ],
    )
    .await;
    seed_video(&models, "video-1").await;
    video(
        &models,
        "video-2",
        &[
            (
                "13:00:00",
                VideoEvent::VideoUploaded {
                    title: "Done".into(),
                    source_uri: "s3://in/done.mp4".into(),
                    uploaded_by: None,
                },
            ),
            ("13:01:00", VideoEvent::ProcessingStarted { attempt: 1 }),
            (
                "13:02:00",
                VideoEvent::ProcessingSucceeded {
                    output_uri: Some("s3://out/done.mp4".into()),
                },
            ),
        ],
    )
    .await;

    let cases = [
        ("/rides", "/rides?rider_id=rider-seed", 200),
        ("/rides", "/rides?rider_id=rider-seed&limit=1", 200),
        ("/rides", "/rides?driver_id=driver-seed", 200),
        ("/rides", "/rides?status=cancelled", 200),
        ("/rides", "/rides", 400),
        ("/rides", "/rides?status=booked&cursor=e30", 400),
        ("/rides/{id}", "/rides/ride-1", 200),
        ("/rides/{id}", "/rides/ride-2", 200),
        ("/rides/{id}", "/rides/ride-3", 200),
        ("/rides/{id}", "/rides/nobody", 404),
        ("/rides/{id}", "/rides/a.b", 400),
        ("/rides/{id}/history", "/rides/ride-3/history", 200),
        ("/rides/{id}/history", "/rides/ride-1/history?limit=2", 200),
        ("/rides/{id}/history", "/rides/ride-1/history?from=x", 400),
        ("/rides/{id}/history", "/rides/nobody/history", 404),
        ("/videos", "/videos?status=failed", 200),
        ("/videos", "/videos?status=success", 200),
        ("/videos", "/videos?status=nope", 400),
        ("/videos/{id}", "/videos/video-1", 200),
        ("/videos/{id}", "/videos/video-2", 200),
        ("/videos/{id}", "/videos/nobody", 404),
        ("/videos/{id}/history", "/videos/video-1/history", 200),
        ("/videos/{id}/history", "/videos/nobody/history", 404),
    ];
    for (template, path, status) in cases {
        let answer = get(&api, path).await;
        assert_eq!(answer.0, status, "{path}: {}", answer.1);
        if status == 200 {
            let items = answer.1.get("items").and_then(Value::as_array);
            assert!(
                items.is_none_or(|i| !i.is_empty()),
                "{path}: check a non-empty page"
            );
        }
        assert_documented(&doc, template, &answer);
    }
    assert!(templates()
        .iter()
        .all(|r| cases.iter().any(|(t, _, _)| t == r)));
}

#[test]
fn every_route_documents_its_statuses_and_parameters() {
    let doc = document();
    for template in templates() {
        let template = template.as_str();
        let op = &doc["paths"][template]["get"];
        let responses = op["responses"].as_object().unwrap();
        let mut statuses = vec!["200", "400", "401", "500", "503"];
        if !template.contains("{id}") {
            statuses.push("403");
        }
        assert_eq!(
            op["security"],
            serde_json::json!([{ "cognito": [] }]),
            "GET {template}"
        );
        if template.contains("{id}") {
            statuses.push("404");
        }
        for status in statuses {
            assert!(
                responses.contains_key(status),
                "GET {template} documents no {status}"
            );
        }
        let params: Vec<String> = op["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| resolve(&doc, p)["name"].as_str().unwrap().to_owned())
            .collect();
        let expected: &[&str] = match template {
            "/rides" => &["rider_id", "driver_id", "status", "limit", "cursor"],
            "/videos" => &["status", "limit", "cursor"],
            t if t.ends_with("/history") => &["id", "from", "to", "limit", "cursor"],
            _ => &["id"],
        };
        assert_eq!(params, expected, "GET {template}");
    }
    // The documented status values are exactly the ones the handler accepts.
    let statuses = |name: &str| {
        resolve(&doc, &doc["components"]["parameters"][name])["schema"]["enum"].clone()
    };
    assert_eq!(
        statuses("RideStatus"),
        json!(registry::kind("ride").unwrap().statuses)
    );
    assert_eq!(
        statuses("VideoStatus"),
        json!(registry::kind("video").unwrap().statuses)
    );
}

#[test]
fn the_checker_catches_answers_that_do_not_fit() {
    let doc = document();
    let page = json!({ "$ref": "#/components/schemas/HistoryPage" });
    let entry = json!({
        "aggregate_type": "boat", "aggregate_id": "r1", "version": 0, "type": "X",
        "occurred_at": "t", "recorded_at": "t", "actor": "a", "event_id": "e",
        "data": {}, "status_after": "booked"
    });
    let mut errors = Vec::new();
    check(
        &doc,
        &page,
        &json!({ "items": [entry], "next_cursor": 3 }),
        "$",
        &mut errors,
    );
    assert_eq!(errors.len(), 3, "{errors:#?}");
    let mut errors = Vec::new();
    let view = json!({ "$ref": "#/components/schemas/ViewPage" });
    check(
        &doc,
        &view,
        &json!({ "items": [{ "aggregate_type": "ride" }] }),
        "$",
        &mut errors,
    );
    assert!(
        errors.iter().any(|e| e.contains("next_cursor is required")),
        "{errors:#?}"
    );
    assert!(errors.iter().any(|e| e.contains("oneOf")), "{errors:#?}");
}
