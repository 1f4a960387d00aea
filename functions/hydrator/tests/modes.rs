//! Two functions share one request shape: `hydrator` answers `state` and `history` (it only
//! reads), `maintenance` answers `rebuild`, `verify`, `parked` and `redrive`. Each refuses the
//! other's modes before touching anything, and says which function to invoke instead.

mod local;

use hydrator::{Function, HydratorError, HydratorRequest};
use local::{hydrator, Dir};
use serde_json::json;
use timeline_core::ports::{EventLog, ReadModelStore};
use timeline_core::scenario::sample_ride;
use timeline_core::time::Deadline;
use timeline_core::{CommitRecord, StreamKey};
use timeline_embedded::Embedded;

fn request(value: serde_json::Value) -> HydratorRequest {
    serde_json::from_value(value).unwrap()
}

#[test]
fn each_mode_belongs_to_one_function() {
    let state = json!({ "mode": "state", "aggregate_type": "ride", "aggregate_id": "r1" });
    let history = json!({ "mode": "history", "aggregate_type": "ride", "aggregate_id": "r1" });
    for (sent, mode, function) in [
        (state, "state", Function::Hydrator),
        (history, "history", Function::Hydrator),
        (
            json!({ "mode": "rebuild" }),
            "rebuild",
            Function::Maintenance,
        ),
        (json!({ "mode": "verify" }), "verify", Function::Maintenance),
        (json!({ "mode": "parked" }), "parked", Function::Maintenance),
        (
            json!({ "mode": "redrive", "entity": "ride#r1" }),
            "redrive",
            Function::Maintenance,
        ),
    ] {
        let request = request(sent);
        assert_eq!(request.mode(), mode);
        assert_eq!(request.function(), function, "{mode}");
    }
    assert_eq!(Function::Hydrator.binary(), "hydrator");
    assert_eq!(Function::Maintenance.binary(), "maintenance");
}

#[tokio::test]
async fn each_function_refuses_the_others_modes_and_touches_nothing() {
    let dir = Dir::new("modes");
    let db = Embedded::open(&dir.0).unwrap();
    db.publish(&CommitRecord::new(vec![sample_ride("r1", 1)]).unwrap())
        .await
        .unwrap();
    let h = hydrator(&db);
    let deadline = Deadline::none();
    let elsewhere = Dir::new("modes-target");
    let into = elsewhere.0.to_str().unwrap().to_owned();
    let rebuild = json!({ "mode": "rebuild", "target_table": into });

    // Time travel refuses to rebuild: no target is opened, nothing is written.
    match h.travel(request(rebuild.clone()), &deadline).await {
        Err(e @ HydratorError::OtherFunction { .. }) => {
            assert_eq!(
                e.to_string(),
                "the hydrator function does not serve mode \"rebuild\": invoke the maintenance function"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(!elsewhere.0.exists(), "a refused rebuild opened its target");
    // The other maintenance modes to time travel, and time travel to maintenance.
    for (sent, asked, serves) in [
        (
            json!({ "mode": "verify" }),
            Function::Hydrator,
            "maintenance",
        ),
        (
            json!({ "mode": "parked" }),
            Function::Hydrator,
            "maintenance",
        ),
        (
            json!({ "mode": "redrive", "entity": "ride#r1" }),
            Function::Hydrator,
            "maintenance",
        ),
        (
            json!({ "mode": "state", "aggregate_type": "ride", "aggregate_id": "r1" }),
            Function::Maintenance,
            "hydrator",
        ),
        (
            json!({ "mode": "history", "aggregate_type": "ride", "aggregate_id": "r1" }),
            Function::Maintenance,
            "hydrator",
        ),
    ] {
        let answer = match asked {
            Function::Hydrator => h.travel(request(sent.clone()), &deadline).await,
            Function::Maintenance => h.maintain(request(sent.clone()), &deadline).await,
        };
        match answer {
            Err(HydratorError::OtherFunction {
                asked: refused_by,
                serves: pointed_to,
                ..
            }) => {
                assert_eq!(refused_by, asked.binary(), "{sent}");
                assert_eq!(pointed_to, serves, "{sent}");
            }
            other => panic!("{sent}: expected a refusal, got {other:?}"),
        }
    }
    let live = db
        .load_views(&[StreamKey::new("ride", "r1")])
        .await
        .unwrap();
    assert!(live.is_empty(), "nothing was projected: {live:?}");

    // The same rebuild, sent to the function that serves it, writes its target.
    let report = h.maintain(request(rebuild), &deadline).await.unwrap();
    assert_eq!(report["events_applied"], 1, "{report}");
    let rebuilt = Embedded::open(&elsewhere.0).unwrap();
    let views = rebuilt
        .load_views(&[StreamKey::new("ride", "r1")])
        .await
        .unwrap();
    assert_eq!(views.len(), 1, "{views:?}");
    // And both functions' own modes answer.
    let state = json!({ "mode": "state", "aggregate_type": "ride", "aggregate_id": "r1" });
    h.travel(request(state), &deadline).await.unwrap();
    h.maintain(request(json!({ "mode": "verify" })), &deadline)
        .await
        .unwrap();
}
