//! The processor's own binary deployed with `ReadStore: aurora-postgresql`, run as Lambda runs
//! it (a Runtime API on loopback): it refuses to start on a schema older than it needs, and
//! once migrated projects the Kinesis batches Lambda hands it into PostgreSQL, a redelivered
//! batch changing nothing.

use command_handler::CommandApi;
use serde_json::{json, Value};
use std::time::Duration;
use timeline_core::ports::{ReadModelQueries, SystemClock};
use timeline_core::StreamKey;
use timeline_testkit::lambda_process::LambdaProcess;
use timeline_testkit::{kinesis_event_json, post, read, ride_booking};

const ARN: &str = "arn:aws:kinesis:us-east-1:000000000000:stream/test";

fn processor(url: &str) -> LambdaProcess {
    LambdaProcess::spawn(
        env!("CARGO_BIN_EXE_processor").as_ref(),
        &[
            ("READ_STORE", "aurora-postgresql"),
            ("READ_STORE_URL", url),
            ("AWS_REGION", "us-east-1"),
        ],
    )
}

#[tokio::test]
async fn the_processor_refuses_an_old_schema_then_projects_into_postgres() {
    let env = timeline_testkit::test_env!();
    let url = timeline_testkit::postgres_database!();

    let mut refused = processor(&url);
    let status = refused
        .exit(Duration::from_secs(30))
        .expect("a processor on an unmigrated store stops at start");
    assert!(!status.success());
    let said = refused.log();
    assert!(
        said.contains("at schema version 0, this code needs 2") && said.contains("migrate"),
        "{said}"
    );

    let pool = timeline_postgres::pool(&url).unwrap();
    timeline_postgres::migrate(&pool).await.unwrap();
    let api = CommandApi::new(env.store(), env.log(), SystemClock);
    for (path, body) in [
        ("/rides", ride_booking("r1", "alice")),
        ("/rides/r1/assign-driver", json!({ "driver_id": "d1" })),
    ] {
        let (status, answer, _) = read(api.handle(post(path, &body, &[])).await);
        assert!(status == 200 || status == 201, "{path}: {status} {answer}");
    }
    let batch = kinesis_event_json(&env.records().await, ARN);

    let running = processor(&url);
    let store = timeline_postgres::PgReadModels::new(pool);
    let key = StreamKey::new("ride", "r1");
    for delivery in 1..=2 {
        let answer = running.invoke(&batch).expect("the batch is handled");
        assert_eq!(
            answer["batchItemFailures"],
            json!([]),
            "delivery {delivery}"
        );
        let view: Value = store.view(&key).await.unwrap().expect("the ride's view");
        assert_eq!(view["version"], 2, "delivery {delivery}: {view}");
        assert_eq!(view["state"]["driver_id"], "d1", "{view}");
    }
}
