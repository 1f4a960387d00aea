//! Every refusal and failure is an RFC 9457 problem with a stable code: bad ids, bad query
//! parameters, unknown routes, other methods, an unreachable or corrupt read model.

mod support;

use aws_sdk_dynamodb::types::AttributeValue;
use query::QueryApi;
use std::collections::HashMap;
use support::*;
use timeline_aws::read_models::DynamoReadModels;

#[tokio::test]
async fn bad_ids_are_invalid_id() {
    let Some((env, api)) = env().await else {
        return;
    };
    seed_ride(&read_models(&env), "ride-1").await;
    let long = "a".repeat(65);
    for path in [
        "/rides/a.b".to_owned(),
        "/rides/a%20b".to_owned(),
        format!("/rides/{long}"),
        format!("/videos/{long}/history"),
        "/videos/%C3%A9/history".to_owned(),
    ] {
        assert_problem(&get(&api, &path).await, 400, "invalid_id");
    }
    let (status, _, _) = get(&api, &format!("/rides/{}", "a".repeat(64))).await;
    assert_eq!(status, 404, "64 characters is a valid id");
}

#[tokio::test]
async fn bad_list_queries_are_invalid_query() {
    let Some((_env, api)) = env().await else {
        return;
    };
    for path in [
        // no filter, several filters, the same one twice
        "/rides",
        "/rides?limit=5",
        "/rides?rider_id=a&driver_id=b",
        "/rides?rider_id=a&status=booked",
        "/rides?rider_id=a&rider_id=b",
        "/videos",
        // filters the collection does not have, unknown parameters
        "/videos?rider_id=a",
        "/rides?rider=a",
        "/rides?status=booked&sort=asc",
        // bad limits
        "/rides?status=booked&limit=0",
        "/rides?status=booked&limit=101",
        "/rides?status=booked&limit=-1",
        "/rides?status=booked&limit=ten",
        "/rides?status=booked&limit=",
        // unknown statuses
        "/rides?status=processing",
        "/rides?status=BOOKED",
        "/rides?status=",
        "/videos?status=processing:50%25",
        "/videos?status=success:1",
        "/videos?status=booked",
        // blank lookup values
        "/rides?rider_id=",
        "/rides?driver_id=%20",
    ] {
        assert_problem(&get(&api, path).await, 400, "invalid_query");
    }
    let (_, body, _) = get(&api, "/rides?rider=a&zz=1").await;
    assert_eq!(
        body["unknown_parameters"],
        serde_json::json!(["rider", "zz"])
    );
    for path in [
        "/rides?status=booked&limit=1",
        "/rides?status=booked&limit=100",
    ] {
        let (status, body, _) = get(&api, path).await;
        assert_eq!(status, 200, "{path}: {body}");
    }
}

#[tokio::test]
async fn bad_history_and_view_queries_are_invalid_query() {
    let Some((env, api)) = env().await else {
        return;
    };
    seed_ride(&read_models(&env), "ride-1").await;
    for path in [
        "/rides/ride-1/history?from=yesterday",
        "/rides/ride-1/history?to=2025-11-28",
        "/rides/ride-1/history?from=2025-11-28%2010:00:00",
        "/rides/ride-1/history?from=2025-11-28T10:03:00Z&to=2025-11-28T10:02:00Z",
        "/rides/ride-1/history?from=2025-11-28T10:00:00Z&from=2025-11-28T10:01:00Z",
        "/rides/ride-1/history?limit=0",
        "/rides/ride-1/history?status=booked",
        "/rides/ride-1?limit=1",
        "/videos/v1?x=1",
    ] {
        assert_problem(&get(&api, path).await, 400, "invalid_query");
    }
}

#[tokio::test]
async fn unknown_routes_are_404_and_other_methods_405() {
    let Some((_env, api)) = env().await else {
        return;
    };
    for path in [
        "/",
        "/drivers",
        "/rides/",
        "/rides/r1/start",
        "/rides/r1/history/1",
        "/videos/v1/events",
    ] {
        assert_problem(&get(&api, path).await, 404, "not_found");
    }
    for (method, path) in [
        ("POST", "/rides"),
        ("POST", "/rides/r1"),
        ("PUT", "/rides/r1"),
        ("DELETE", "/videos/v1"),
        ("PATCH", "/videos/v1/history"),
        ("POST", "/videos"),
    ] {
        let answer = call(&api, method, path).await;
        assert_problem(&answer, 405, "method_not_allowed");
        assert_eq!(answer.2["allow"], "GET");
    }
}

#[tokio::test]
async fn an_unreachable_read_model_is_503_with_retry_after() {
    let env = timeline_testkit::test_env!();
    let missing = DynamoReadModels::new(env.clients.dynamodb().clone(), "no-such-table");
    let api = QueryApi::new(missing);
    for path in ["/rides/r1", "/rides?status=booked", "/videos/v1/history"] {
        let answer = get(&api, path).await;
        assert_problem(&answer, 503, "store_unavailable");
        assert_eq!(answer.2["retry-after"], "1");
    }
}

#[tokio::test]
async fn a_corrupt_view_is_500() {
    let Some((env, api)) = env().await else {
        return;
    };
    let put = |pk: &str, view: Option<AttributeValue>| {
        let mut item = HashMap::from([
            ("pk".to_owned(), AttributeValue::S(pk.to_owned())),
            ("sk".to_owned(), AttributeValue::S("view".to_owned())),
            ("version".to_owned(), AttributeValue::N("1".to_owned())),
        ]);
        item.extend(view.map(|v| ("view".to_owned(), v)));
        env.clients
            .dynamodb()
            .put_item()
            .table_name(&env.names.read_model_table)
            .set_item(Some(item))
            .send()
    };
    // No view attribute at all, and a view without a version.
    put("ride#no-view", None).await.unwrap();
    put(
        "ride#no-version",
        Some(AttributeValue::M(
            [("status".to_owned(), AttributeValue::S("booked".to_owned()))].into(),
        )),
    )
    .await
    .unwrap();
    assert_problem(&get(&api, "/rides/no-view").await, 500, "internal");
    assert_problem(&get(&api, "/rides/no-view/history").await, 500, "internal");
    assert_problem(&get(&api, "/rides/no-version").await, 500, "internal");
}
