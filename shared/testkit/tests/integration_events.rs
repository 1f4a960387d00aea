//! The integration events are a published contract: every type an aggregate publishes has
//! its JSON Schema in `shared/core/schemas/integration/`, and the mapping of a known internal
//! event gives exactly the schema's example. A change to the internal events or the mapping
//! that would change what consumers receive fails here first.

use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::path::PathBuf;
use timeline_core::codec::encode_event;
use timeline_core::integration::{integration_event, published_types};
use timeline_core::ride::{CancelledBy, Location, RideAggregate, RideEvent};
use timeline_core::video::{VideoAggregate, VideoEvent};
use timeline_core::{Aggregate, EventEnvelope, Metadata};
use timeline_testkit::openapi::check;

fn schemas_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../core/schemas/integration")
}

fn schema(event_type: &str) -> Value {
    let path = schemas_dir().join(format!("{event_type}.v1.json"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap()
}

fn envelope<A: Aggregate>(id: &str, version: u64, event: &A::Event) -> EventEnvelope {
    let (event_type, schema_version, data) = encode_event::<A>(event);
    EventEnvelope {
        event_id: "e-1".into(),
        aggregate_type: A::TYPE.into(),
        aggregate_id: id.into(),
        version,
        event_type,
        schema_version,
        occurred_at: "2026-11-28T10:07:00Z".parse().unwrap(),
        recorded_at: "2026-11-28T10:07:00Z".parse().unwrap(),
        metadata: Metadata {
            command_id: "cmd-1".into(),
            correlation_id: Some("c-1".into()),
            causation_id: None,
            actor: "someone".into(),
        },
        data,
    }
}

fn place(address: &str, lat: f64, lon: f64) -> Location {
    Location {
        address: address.into(),
        lat,
        lon,
    }
}

/// One internal event of each published kind, as the schemas' examples describe them.
fn published_examples() -> Vec<EventEnvelope> {
    vec![
        envelope::<RideAggregate>(
            "r-1",
            1,
            &RideEvent::RideBooked {
                rider_id: "rider-42".into(),
                pickup: place("A", 53.34, -6.25),
                dropoff: place("B", 53.35, -6.26),
                fare_estimate_cents: Some(9000),
            },
        ),
        envelope::<RideAggregate>(
            "r-1",
            2,
            &RideEvent::DriverAssigned {
                driver_id: "driver-7".into(),
                previous_driver_id: None,
            },
        ),
        envelope::<RideAggregate>(
            "r-1",
            7,
            &RideEvent::RideCompleted {
                final_fare_cents: 11000,
                distance_km: 13.8,
            },
        ),
        envelope::<RideAggregate>(
            "r-1",
            3,
            &RideEvent::RideCancelled {
                by: CancelledBy::Rider,
                reason: "plans changed".into(),
            },
        ),
        envelope::<VideoAggregate>(
            "v-1",
            4,
            &VideoEvent::ProcessingSucceeded {
                output_uri: Some("s3://out/v-1.mp4".into()),
            },
        ),
        envelope::<VideoAggregate>(
            "v-1",
            4,
            &VideoEvent::ProcessingFailed {
                error: "timeout".into(),
            },
        ),
    ]
}

#[test]
fn every_published_type_has_a_schema_and_every_schema_a_published_type() {
    let published: BTreeSet<String> = published_types().into_iter().map(str::to_owned).collect();
    let files: BTreeSet<String> = std::fs::read_dir(schemas_dir())
        .unwrap()
        .map(|f| f.unwrap().file_name().into_string().unwrap())
        .map(|f| {
            f.strip_suffix(".v1.json")
                .expect("<type>.v1.json")
                .to_owned()
        })
        .collect();
    assert_eq!(published, files);
}

#[test]
fn each_internal_event_maps_to_exactly_its_schemas_example() {
    let mut seen = BTreeSet::new();
    for e in published_examples() {
        let event = integration_event(&e).unwrap().expect("a published fact");
        let schema = schema(event.detail_type);
        let mut errors = Vec::new();
        check(
            &json!({}),
            &schema,
            &event.detail,
            event.detail_type,
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(event.detail, schema["examples"][0], "{}", event.detail_type);
        assert_eq!(event.id(), "e-1");
        assert_eq!(
            event.source,
            format!("timeline.{}s", e.aggregate_type),
            "the source names the collection"
        );
        seen.insert(event.detail_type);
    }
    let all: BTreeSet<&str> = published_types().into_iter().collect();
    assert_eq!(seen, all, "an example for every published type");
}

#[test]
fn internal_steps_publish_nothing_and_the_schemas_refuse_a_changed_shape() {
    let started = envelope::<RideAggregate>(
        "r-1",
        3,
        &RideEvent::RideStarted {
            driver_id: "driver-7".into(),
        },
    );
    assert_eq!(integration_event(&started).unwrap(), None);
    let schema = schema("ride.completed");
    let mut renamed = schema["examples"][0].clone();
    let fare = renamed["data"]["final_fare_cents"].take();
    renamed["data"]
        .as_object_mut()
        .unwrap()
        .remove("final_fare_cents");
    renamed["data"]["fare_cents"] = fare;
    let mut errors = Vec::new();
    check(&json!({}), &schema, &renamed, "renamed", &mut errors);
    assert!(
        errors.len() >= 2,
        "a missing and an unknown field: {errors:?}"
    );
    let mut unregistered = started;
    unregistered.aggregate_type = "parcel".into();
    assert!(integration_event(&unregistered).is_err());
}
