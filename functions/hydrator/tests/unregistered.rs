//! The hydrator's entry points refuse an aggregate type no module registers, and its verify
//! names such an event in the log as a problem: on the embedded backend, no emulator.

mod local;

use hydrator::{HydratorError, HydratorRequest};
use local::{hydrator, Dir};
use timeline_core::ports::EventLog;
use timeline_core::scenario::sample_ride;
use timeline_core::time::Deadline;
use timeline_core::CommitRecord;
use timeline_embedded::Embedded;

#[tokio::test]
async fn state_history_and_verify_refuse_or_report_an_unregistered_type() {
    let dir = Dir::new("unregistered");
    let db = Embedded::open(&dir.0).unwrap();
    let mut parcel = sample_ride("p1", 1);
    parcel.aggregate_type = "parcel".into();
    db.publish(&CommitRecord::new(vec![parcel]).unwrap())
        .await
        .unwrap();
    let h = hydrator(&db);
    let deadline = Deadline::none();
    for request in [
        serde_json::json!({ "mode": "state", "aggregate_type": "parcel", "aggregate_id": "p1" }),
        serde_json::json!({ "mode": "history", "aggregate_type": "parcel", "aggregate_id": "p1" }),
    ] {
        let request: HydratorRequest = serde_json::from_value(request).unwrap();
        match h.handle(request, &deadline).await {
            Err(HydratorError::UnknownType(t)) => assert_eq!(t, "parcel"),
            other => panic!("expected an unknown type, got {other:?}"),
        }
    }
    let report = h
        .handle(
            serde_json::from_value(serde_json::json!({ "mode": "verify" })).unwrap(),
            &deadline,
        )
        .await
        .unwrap();
    let problems = report["problems"].to_string();
    assert!(
        problems.contains("parcel#p1") && problems.contains("no aggregate of type"),
        "{report}"
    );
}
