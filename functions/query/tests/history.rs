//! Per-entity history (audit trail) against moto: time ranges, order, paging.

mod support;

use serde_json::{json, Value};
use support::*;

fn steps(page: &Value) -> Vec<(u64, String)> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|e| {
            (
                e["version"].as_u64().unwrap(),
                e["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn history_between_two_times_returns_exactly_the_steps_in_between() {
    let Some((env, api)) = env().await else {
        return;
    };
    seed_ride(&read_models(&env), "ride-1").await;

    let (status, body, headers) = get(
        &api,
        "/rides/ride-1/history?from=2025-11-28T10:01:30Z&to=2025-11-28T10:02:30Z",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(headers["content-type"], "application/json");
    assert_eq!(
        body,
        json!({
            "items": [{
                "aggregate_type": "ride",
                "aggregate_id": "ride-1",
                "version": 4,
                "type": "FareAdjusted",
                "occurred_at": "2025-11-28T10:02:00.000Z",
                "recorded_at": "2025-11-28T10:02:00.005Z",
                "actor": "seed-user",
                "event_id": "ride-ride-1-4",
                "data": { "from_cents": 9000, "to_cents": 10000, "reason": "traffic" },
                "status_after": "driver_assigned"
            }],
            "next_cursor": null
        })
    );

    // Both bounds are inclusive, and any RFC 3339 offset means the same instant.
    let (_, body, _) = get(
        &api,
        "/rides/ride-1/history?from=2025-11-28T11:01:00%2B01:00&to=2025-11-28T10:02:00.000Z",
    )
    .await;
    assert_eq!(
        steps(&body),
        [(3, "FareAdjusted".into()), (4, "FareAdjusted".into())]
    );
    let (_, body, _) = get(&api, "/rides/ride-1/history?from=2025-11-28T10:03:00Z").await;
    assert_eq!(steps(&body), [(5, "FareAdjusted".into())]);
    let (_, body, _) = get(&api, "/rides/ride-1/history?to=2025-11-28T10:00:30Z").await;
    assert_eq!(
        steps(&body),
        [(1, "RideBooked".into()), (2, "DriverAssigned".into())]
    );
    // A range with nothing in it is an empty page, not a 404: the ride exists.
    let (status, body, _) = get(
        &api,
        "/rides/ride-1/history?from=2025-11-28T12:00:00Z&to=2025-11-28T12:00:00Z",
    )
    .await;
    assert_eq!(
        (status, body),
        (200, json!({ "items": [], "next_cursor": null }))
    );
}

#[tokio::test]
async fn the_seed_videos_history_shows_every_status_and_the_failure() {
    let Some((env, api)) = env().await else {
        return;
    };
    seed_video(&read_models(&env), "video-1").await;

    let (status, body, _) = get(&api, "/videos/video-1/history").await;
    assert_eq!(status, 200, "{body}");
    let items = body["items"].as_array().unwrap();
    let statuses: Vec<&str> = items
        .iter()
        .map(|e| e["status_after"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["uploaded", "processing", "processing:50%", "failed"]
    );
    let failure = &items[3];
    assert_eq!(failure["type"], "ProcessingFailed");
    assert_eq!(failure["data"]["error"], "timeout");
    assert_eq!(failure["occurred_at"], "2025-11-28T09:03:00.000Z");
    assert_eq!(body["next_cursor"], json!(null));
}

#[tokio::test]
async fn history_is_paged_oldest_first_within_the_range() {
    let Some((env, api)) = env().await else {
        return;
    };
    seed_ride(&read_models(&env), "ride-1").await;

    let base = "/rides/ride-1/history?from=2025-11-28T10:00:30Z&limit=2";
    let mut path = base.to_owned();
    let mut pages = Vec::new();
    loop {
        let (status, body, _) = get(&api, &path).await;
        assert_eq!(status, 200, "{body}");
        pages.push(steps(&body).into_iter().map(|(v, _)| v).collect::<Vec<_>>());
        match body["next_cursor"].as_str() {
            Some(cursor) => path = format!("{base}&cursor={cursor}"),
            None => break,
        }
        assert!(pages.len() <= 3, "{pages:?}");
    }
    // Versions 2..=5: two full pages, then (DynamoDB cannot know there is no more) possibly
    // an empty last one.
    let all: Vec<u64> = pages.iter().flatten().copied().collect();
    assert_eq!(all, [2, 3, 4, 5]);
    assert_eq!(pages[..2], [vec![2, 3], vec![4, 5]]);

    let answer = get(&api, &format!("{base}&cursor=e30")).await;
    assert_problem(&answer, 400, "invalid_cursor");
}
