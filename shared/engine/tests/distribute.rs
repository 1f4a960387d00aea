//! Distribution onto the bus, as business rules: every published fact reaches the bus once
//! per delivery, each entity's in version order, in calls EventBridge accepts (at most 10
//! entries, no entity twice); refused entries are retried before anything after them; an
//! entry that keeps failing stops the batch at its record, and the redelivery from there
//! loses nothing (copies only, which consumers dedupe on `id`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;
use timeline_core::codec::{encode_event, encode_record};
use timeline_core::ride::{RideAggregate, RideEvent};
use timeline_core::scenario::sample_ride;
use timeline_core::{CommitRecord, EventEnvelope};
use timeline_engine::distribute::Distributor;
use timeline_engine::memory::MemoryBus;
use timeline_engine::projection::IncomingRecord;

/// Version `v` of ride `id`: booked, a driver assigned, completed (all published), and a fare
/// adjustment at 4 (internal).
fn ride(id: &str, v: u64) -> EventEnvelope {
    let mut e = sample_ride(id, v);
    let event = match v {
        1 => return e,
        2 => RideEvent::DriverAssigned {
            driver_id: "d".into(),
            previous_driver_id: None,
        },
        3 => RideEvent::RideCompleted {
            final_fare_cents: 1200,
            distance_km: 4.0,
        },
        _ => return e,
    };
    let (event_type, schema_version, data) = encode_event::<RideAggregate>(&event);
    (e.event_type, e.schema_version, e.data) = (event_type, schema_version, data);
    e
}

fn record(i: usize, events: Vec<EventEnvelope>) -> IncomingRecord {
    let commit = CommitRecord::new(events).unwrap();
    IncomingRecord {
        sequence_number: format!("{i:05}"),
        partition_key: commit.partition_key().unwrap(),
        data: encode_record(&commit),
        shard_id: None,
        arrival: None,
    }
}

/// 12 rides, versions 1 to 4 each, interleaved on the shard as concurrent writers leave them.
fn batch() -> Vec<IncomingRecord> {
    let mut records = Vec::new();
    for v in 1..=4 {
        for r in 0..12 {
            let i = records.len();
            records.push(record(i, vec![ride(&format!("r{r}"), v)]));
        }
    }
    records
}

fn fast(bus: MemoryBus) -> Distributor<MemoryBus> {
    Distributor::new(bus).with_retries(3, Duration::from_millis(1))
}

/// Each entity's versions as the bus received them.
fn per_entity(bus: &MemoryBus) -> BTreeMap<String, Vec<u64>> {
    let mut out: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for e in bus.accepted() {
        out.entry(e.detail["entity"]["id"].as_str().unwrap().to_owned())
            .or_default()
            .push(e.detail["entity"]["version"].as_u64().unwrap());
    }
    out
}

#[tokio::test]
async fn every_fact_reaches_the_bus_in_each_entitys_order_in_calls_the_bus_accepts() {
    let bus = MemoryBus::default();
    let out = fast(bus.clone()).distribute(&batch()).await;
    assert_eq!((out.published, out.internal), (36, 12));
    assert_eq!(out.first_failure, None);
    for (entity, versions) in per_entity(&bus) {
        assert_eq!(versions, [1, 2, 3], "{entity}");
    }
    for call in bus.calls() {
        assert!(call.len() <= 10);
        let entities: BTreeSet<&str> = call
            .iter()
            .map(|id| id.split('-').next().unwrap())
            .collect();
        assert_eq!(
            entities.len(),
            call.len(),
            "no entity twice in a call: {call:?}"
        );
    }
}

#[tokio::test]
async fn refused_entries_are_retried_before_anything_after_them() {
    let bus = MemoryBus::default();
    bus.refuse("r3-1", 2);
    bus.refuse("r7-2", 1);
    let out = fast(bus.clone()).distribute(&batch()).await;
    assert_eq!(out.first_failure, None);
    assert_eq!((out.published, out.retried), (36, 3));
    for (entity, versions) in per_entity(&bus) {
        assert_eq!(versions, [1, 2, 3], "{entity}");
    }
}

#[tokio::test]
async fn an_entry_that_keeps_failing_stops_the_batch_and_the_redelivery_loses_nothing() {
    let bus = MemoryBus::default();
    bus.refuse("r5-2", 10);
    let records = batch();
    let out = fast(bus.clone()).distribute(&records).await;
    // r5's version 2 is in record 12 + 5.
    assert_eq!(out.first_failure, Some((17, "00017".to_owned())));
    let before: BTreeSet<String> = bus.accepted().iter().map(|e| e.id().to_owned()).collect();
    for r in &records[..17] {
        let commit = timeline_core::codec::decode_record(&r.data).unwrap();
        for e in commit.events.iter().filter(|e| e.version < 4) {
            assert!(before.contains(&e.event_id), "{} was published", e.event_id);
        }
    }
    assert!(
        !before.contains("r5-2") && !before.contains("r5-3"),
        "never ahead of r5's version 2"
    );

    // The event source mapping delivers from the failed record again, the bus now takes it.
    bus.refuse("r5-2", 0);
    let again = fast(bus.clone()).distribute(&records[17..]).await;
    assert_eq!(again.first_failure, None);
    let ids: Vec<String> = bus.accepted().iter().map(|e| e.id().to_owned()).collect();
    let unique: BTreeSet<&String> = ids.iter().collect();
    assert_eq!(
        unique.len(),
        36,
        "every fact, some twice (consumers dedupe on id)"
    );
    let mut seen: BTreeMap<String, u64> = BTreeMap::new();
    for e in bus.accepted() {
        let entity = e.detail["entity"]["id"].as_str().unwrap().to_owned();
        let version = e.detail["entity"]["version"].as_u64().unwrap();
        let last = seen.entry(entity.clone()).or_default();
        // A copy (a version already seen) may come again; a new one is always the next.
        if version > *last {
            assert_eq!(
                version,
                *last + 1,
                "{entity}: never a version ahead of a missing one"
            );
            *last = version;
        }
    }
}

#[tokio::test]
async fn a_record_that_cannot_be_distributed_is_counted_and_passed_over() {
    let bus = MemoryBus::default();
    let mut records = batch();
    records[3].data = b"not a record".to_vec();
    let mut parcel = ride("p1", 1);
    parcel.aggregate_type = "parcel".into();
    records.push(record(48, vec![parcel]));
    let out = fast(bus.clone()).distribute(&records).await;
    assert_eq!(out.first_failure, None);
    assert_eq!(out.unpublishable.len(), 2);
    assert_eq!(out.unpublishable[0].0, 3);
    assert!(
        out.unpublishable[1].1.contains("parcel"),
        "{:?}",
        out.unpublishable
    );
    assert_eq!(out.published, 35);
}
