//! Current views and lists against moto over HTTP: API Gateway event -> handler ->
//! DynamoDB read models (table and GSIs) -> JSON.

mod support;

use serde_json::json;
use std::collections::BTreeSet;
use support::*;
use timeline_core::video::VideoEvent;

#[tokio::test]
async fn a_view_is_answered_as_stored_with_its_version_as_etag() {
    let Some((env, api)) = env().await else {
        return;
    };
    let models = read_models(&env);
    let stored = seed_ride(&models, "ride-1").await;
    let video = seed_video(&models, "video-1").await;

    let (status, body, headers) = get(&api, "/rides/ride-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, stored);
    assert_eq!(headers["etag"], "\"5\"");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(body["status"], "driver_assigned");
    assert_eq!(body["state"]["fare_cents"], 11000);
    assert_eq!(body["updated_at"], "2025-11-28T10:03:00.000Z");

    let (status, body, headers) = get(&api, "/videos/video-1").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, video);
    assert_eq!(headers["etag"], "\"4\"");
    assert_eq!(body["status"], "failed");
}

#[tokio::test]
async fn unknown_entities_are_404_with_the_domain_code() {
    let Some((env, api)) = env().await else {
        return;
    };
    // A ride exists under this id; the video of the same id does not.
    seed_ride(&read_models(&env), "same-id").await;
    assert_problem(&get(&api, "/rides/nobody").await, 404, "ride.not_found");
    assert_problem(&get(&api, "/videos/same-id").await, 404, "video.not_found");
    assert_problem(
        &get(&api, "/rides/nobody/history").await,
        404,
        "ride.not_found",
    );
    assert_problem(
        &get(&api, "/videos/nobody/history?from=2025-11-28T00:00:00Z").await,
        404,
        "video.not_found",
    );
}

/// Five rides of one rider, booked a minute apart (plus another rider's).
async fn five_rides(env: &timeline_testkit::TestEnv) {
    let models = read_models(env);
    for n in 1..=5 {
        ride(
            &models,
            &format!("r{n}"),
            &[(&format!("10:0{n}:00"), booked("rider-a", 1000))],
        )
        .await;
    }
    ride(&models, "other", &[("10:03:30", booked("rider-b", 1000))]).await;
}

#[tokio::test]
async fn a_riders_rides_are_paged_newest_first_without_duplicates_or_misses() {
    let Some((env, api)) = env().await else {
        return;
    };
    five_rides(&env).await;

    let mut seen = Vec::new();
    let mut pages = Vec::new();
    let mut path = "/rides?rider_id=rider-a&limit=2".to_owned();
    loop {
        let (status, body, _) = get(&api, &path).await;
        assert_eq!(status, 200, "{body}");
        pages.push(ids(&body));
        seen.extend(ids(&body));
        match body["next_cursor"].as_str() {
            Some(cursor) => path = format!("/rides?rider_id=rider-a&limit=2&cursor={cursor}"),
            None => break,
        }
        assert!(pages.len() <= 3, "more pages than rides: {pages:?}");
    }
    assert_eq!(pages, [vec!["r5", "r4"], vec!["r3", "r2"], vec!["r1"]]);
    assert_eq!(seen.len(), seen.iter().collect::<BTreeSet<_>>().len());

    // The default limit takes them all in one page, still newest first.
    let (_, body, _) = get(&api, "/rides?rider_id=rider-a").await;
    assert_eq!(ids(&body), ["r5", "r4", "r3", "r2", "r1"]);
    assert_eq!(body["next_cursor"], json!(null));
    let (_, body, _) = get(&api, "/rides?rider_id=nobody").await;
    assert_eq!(body, json!({ "items": [], "next_cursor": null }));
}

#[tokio::test]
async fn rides_by_driver_and_by_status() {
    let Some((env, api)) = env().await else {
        return;
    };
    let models = read_models(&env);
    ride(
        &models,
        "booked-only",
        &[("10:00:00", booked("rider-a", 1000))],
    )
    .await;
    ride(
        &models,
        "assigned",
        &[
            ("10:01:00", booked("rider-a", 1000)),
            ("10:02:00", assigned("driver-x")),
        ],
    )
    .await;
    ride(
        &models,
        "running",
        &[
            ("10:03:00", booked("rider-b", 1000)),
            ("10:04:00", assigned("driver-x")),
            ("10:05:00", started("driver-x")),
        ],
    )
    .await;
    ride(
        &models,
        "running-too",
        &[
            ("10:01:30", booked("rider-c", 1000)),
            ("10:02:30", assigned("driver-y")),
            ("10:06:00", started("driver-y")),
        ],
    )
    .await;

    let (status, body, _) = get(&api, "/rides?driver_id=driver-x").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), ["running", "assigned"]);

    // By status: in_progress only, most recently updated first.
    let (status, body, _) = get(&api, "/rides?status=in_progress").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), ["running-too", "running"]);
    assert!(body["items"]
        .as_array()
        .unwrap()
        .iter()
        .all(|v| v["status"] == "in_progress"));
    let (_, body, _) = get(&api, "/rides?status=booked").await;
    assert_eq!(ids(&body), ["booked-only"]);
    let (_, body, _) = get(&api, "/rides?status=completed").await;
    assert_eq!(ids(&body), Vec::<String>::new());
}

#[tokio::test]
async fn videos_by_status_family_include_progress_statuses() {
    let Some((env, api)) = env().await else {
        return;
    };
    let models = read_models(&env);
    let uploaded = |title: &str| VideoEvent::VideoUploaded {
        title: title.to_owned(),
        source_uri: format!("s3://in/{title}.mp4"),
        uploaded_by: None,
    };
    seed_video(&models, "failed-one").await;
    video(&models, "fresh", &[("11:00:00", uploaded("fresh"))]).await;
    video(
        &models,
        "halfway",
        &[
            ("11:00:00", uploaded("halfway")),
            ("11:01:00", VideoEvent::ProcessingStarted { attempt: 1 }),
            ("11:05:00", VideoEvent::ProcessingProgressed { percent: 50 }),
        ],
    )
    .await;
    video(
        &models,
        "just-started",
        &[
            ("11:00:00", uploaded("just-started")),
            ("11:02:00", VideoEvent::ProcessingStarted { attempt: 1 }),
        ],
    )
    .await;

    let (status, body, _) = get(&api, "/videos?status=processing").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), ["halfway", "just-started"]);
    assert_eq!(body["items"][0]["status"], "processing:50%");
    assert_eq!(body["items"][1]["status"], "processing");
    let (_, body, _) = get(&api, "/videos?status=failed").await;
    assert_eq!(ids(&body), ["failed-one"]);
    let (_, body, _) = get(&api, "/videos?status=uploaded&limit=1").await;
    assert_eq!(ids(&body), ["fresh"]);
}

#[tokio::test]
async fn a_cursor_the_api_did_not_issue_is_invalid_cursor() {
    let Some((env, api)) = env().await else {
        return;
    };
    five_rides(&env).await;
    let (_, body, _) = get(&api, "/rides?rider_id=rider-a&limit=2").await;
    let cursor = body["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();

    let mut tampered = cursor.clone().into_bytes();
    tampered[0] = if tampered[0] == b'A' { b'B' } else { b'A' };
    let tampered = String::from_utf8(tampered).unwrap();
    let truncated = &cursor[..cursor.len() - 3];
    for bad in [tampered.as_str(), truncated, "not-a-cursor", "e30", "%00"] {
        let answer = get(
            &api,
            &format!("/rides?rider_id=rider-a&limit=2&cursor={bad}"),
        )
        .await;
        assert_problem(&answer, 400, "invalid_cursor");
    }
    let answer = get(&api, "/rides?rider_id=rider-a&cursor=").await;
    assert_problem(&answer, 400, "invalid_cursor");
    // The real one still works.
    let (status, body, _) = get(
        &api,
        &format!("/rides?rider_id=rider-a&limit=2&cursor={cursor}"),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), ["r3", "r2"]);
}

/// A cursor is only valid for the query that issued it: the adapter checks its key set and
/// values, so a foreign cursor is a 400, not a store error or a silently empty page.
#[tokio::test]
async fn a_cursor_from_another_query_is_invalid_cursor() {
    use base64::Engine;
    let Some((env, api)) = env().await else {
        return;
    };
    five_rides(&env).await;
    seed_ride(&read_models(&env), "seed").await;
    let (_, body, _) = get(&api, "/rides?rider_id=rider-a&limit=2").await;
    let cursor = body["next_cursor"].as_str().unwrap().to_owned();
    let (_, body, _) = get(&api, "/rides/seed/history?limit=2").await;
    let history = body["next_cursor"].as_str().unwrap().to_owned();
    let partial = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"pk":"ride#r4"}"#);
    for path in [
        format!("/rides?rider_id=rider-b&cursor={cursor}"),
        format!("/rides?rider_id=rider-a&cursor={partial}"),
        format!("/rides/r1/history?cursor={history}"),
        format!("/rides/seed/history?from=2025-11-28T10:02:30Z&cursor={history}"),
    ] {
        assert_problem(&get(&api, &path).await, 400, "invalid_cursor");
    }
}
