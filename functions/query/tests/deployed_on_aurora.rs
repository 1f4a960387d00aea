//! The query API's own binary deployed with `ReadStore: aurora-postgresql`, run as Lambda runs
//! it (a Runtime API on loopback) behind API Gateway's proxy events: it serves the views and
//! lists the processor projected into PostgreSQL, with the same problems for what is not there.

use command_handler::CommandApi;
use processor::ProcessorHandler;
use serde_json::Value;
use timeline_core::access::{Caller, Role};
use timeline_core::ports::SystemClock;
use timeline_http::apigw::{event, ProxyRequest};
use timeline_testkit::lambda_process::LambdaProcess;
use timeline_testkit::{kinesis_event, post, read, ride_booking};

fn get(path: &str, query: Option<&str>) -> Value {
    let caller = Caller::user("test-user", [Role::Operator]);
    event(&ProxyRequest {
        method: "GET",
        path,
        query,
        headers: &[("Accept", "application/json")],
        body: None,
        request_id: "req-1",
        stage: "prod",
        caller: Some(&caller),
    })
}

fn body(answer: &Value) -> Value {
    serde_json::from_str(answer["body"].as_str().expect("a body")).expect("JSON")
}

#[tokio::test]
async fn the_query_binary_serves_the_postgres_read_store() {
    let env = timeline_testkit::test_env!();
    let url = timeline_testkit::postgres_database!();
    let pool = timeline_postgres::pool(&url).unwrap();
    timeline_postgres::migrate(&pool).await.unwrap();
    let api = CommandApi::new(env.store(), env.log(), SystemClock);
    for ride in ["r1", "r2"] {
        let (status, answer, _) = read(
            api.handle(post("/rides", &ride_booking(ride, "alice"), &[]))
                .await,
        );
        assert_eq!(status, 201, "{answer}");
    }
    let store = timeline_postgres::PgReadModels::new(pool);
    let processed = ProcessorHandler::new(store, SystemClock)
        .handle(kinesis_event(
            &env.records().await,
            "arn:aws:kinesis:us-east-1:000000000000:stream/test",
        ))
        .await;
    assert!(processed.batch_item_failures.is_empty());

    let query = LambdaProcess::spawn(
        env!("CARGO_BIN_EXE_query").as_ref(),
        &[
            ("READ_STORE", "aurora-postgresql"),
            ("READ_STORE_URL", url.as_str()),
            ("AWS_REGION", "us-east-1"),
        ],
    );
    let one = query.invoke(&get("/rides/r1", None)).unwrap();
    assert_eq!(one["statusCode"], 200, "{one}");
    assert_eq!(body(&one)["aggregate_id"], "r1");
    let list = query
        .invoke(&get("/rides", Some("rider_id=alice")))
        .unwrap();
    assert_eq!(list["statusCode"], 200, "{list}");
    let mut ids: Vec<String> = body(&list)["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["aggregate_id"].as_str().unwrap().to_owned())
        .collect();
    ids.sort();
    assert_eq!(ids, ["r1", "r2"], "{list}");
    let missing = query.invoke(&get("/rides/nobody", None)).unwrap();
    assert_eq!(missing["statusCode"], 404, "{missing}");
    assert_eq!(body(&missing)["status"], 404);
}
