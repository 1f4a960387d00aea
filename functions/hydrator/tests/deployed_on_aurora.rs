//! The operators' binaries deployed with `ReadStore: aurora-postgresql`, run as Lambda runs
//! them (a Runtime API on loopback), the log on moto: `read-store-migrate` applies the schema
//! once, `maintenance` finds the empty store drifted, rebuilds it from the log, then finds no
//! drift; a rebuild into a named table is refused (it is a DynamoDB notion). `hydrator` then
//! answers time travel through the rebuilt store; each of the two refuses the other's modes.

use command_handler::CommandApi;
use serde_json::json;
use timeline_core::ports::SystemClock;
use timeline_testkit::lambda_process::LambdaProcess;
use timeline_testkit::{post, read, ride_booking, TestEnv};

fn aws_env(env: &TestEnv) -> Vec<(String, String)> {
    let mut vars: Vec<(String, String)> = [
        "AWS_ENDPOINT_URL",
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_REGION",
    ]
    .iter()
    .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
    .collect();
    vars.extend([
        ("EVENT_STREAM_NAME".into(), env.names.event_stream.clone()),
        (
            "WRITE_MODEL_TABLE".into(),
            env.names.write_model_table.clone(),
        ),
        ("ARCHIVE_BUCKET".into(), env.names.archive_bucket.clone()),
    ]);
    vars
}

fn spawn(binary: &str, url: &str, env: &TestEnv) -> LambdaProcess {
    let mut vars = aws_env(env);
    vars.push(("READ_STORE".into(), "aurora-postgresql".into()));
    vars.push(("READ_STORE_URL".into(), url.into()));
    let vars: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    LambdaProcess::spawn(binary.as_ref(), &vars)
}

#[tokio::test]
async fn migrate_then_rebuild_and_verify_the_postgres_read_store_from_the_log() {
    let env = timeline_testkit::test_env!();
    let url = timeline_testkit::postgres_database!();

    let migrate = spawn(env!("CARGO_BIN_EXE_read-store-migrate"), &url, &env);
    let first = migrate.invoke(&json!({})).unwrap();
    assert_eq!(
        first,
        json!({ "read_store": "aurora-postgresql", "applied": [1, 2], "schema": 2 })
    );
    let again = migrate.invoke(&json!({})).unwrap();
    assert_eq!(again["applied"], json!([]), "a migration runs once");

    let api = CommandApi::new(env.store(), env.log(), SystemClock);
    for ride in ["r1", "r2"] {
        let (status, answer, _) = read(
            api.handle(post("/rides", &ride_booking(ride, "alice"), &[]))
                .await,
        );
        assert_eq!(status, 201, "{answer}");
    }

    let maintenance = spawn(env!("CARGO_BIN_EXE_maintenance"), &url, &env);
    let before = maintenance.invoke(&json!({ "mode": "verify" })).unwrap();
    assert_eq!(before["entities"], 2, "{before}");
    assert_eq!(before["drift"].as_array().unwrap().len(), 2, "{before}");

    let refused = maintenance
        .invoke(&json!({ "mode": "rebuild", "target_table": "elsewhere" }))
        .expect_err("a named target is refused");
    assert!(refused.contains("rebuilt in place only"), "{refused}");

    let hydrator = spawn(env!("CARGO_BIN_EXE_hydrator"), &url, &env);
    let refused = hydrator
        .invoke(&json!({ "mode": "rebuild" }))
        .expect_err("time travel does not rebuild");
    assert!(
        refused.contains("invoke the maintenance function"),
        "{refused}"
    );
    let refused = maintenance
        .invoke(&json!({ "mode": "state", "aggregate_type": "ride", "aggregate_id": "r1" }))
        .expect_err("maintenance does not travel");
    assert!(
        refused.contains("invoke the hydrator function"),
        "{refused}"
    );

    let rebuilt = maintenance.invoke(&json!({ "mode": "rebuild" })).unwrap();
    assert_eq!(rebuilt["finished"], true, "{rebuilt}");
    assert_eq!(rebuilt["events_applied"], 2, "{rebuilt}");
    let after = maintenance.invoke(&json!({ "mode": "verify" })).unwrap();
    assert_eq!(after["drift"], json!([]), "{after}");
    assert_eq!(after["problems"], json!([]), "{after}");

    let state = hydrator
        .invoke(&json!({ "mode": "state", "aggregate_type": "ride", "aggregate_id": "r1" }))
        .unwrap();
    assert_eq!(state["exists"], true, "{state}");
    assert_eq!(state["complete"], true, "{state}");
    assert_eq!(state["latest_version"], 1, "{state}");
    assert_eq!(state["view"]["state"]["rider_id"], "alice", "{state}");
}
