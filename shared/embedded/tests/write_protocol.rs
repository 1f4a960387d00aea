//! The core's write protocol and processor on the embedded backend, end to end: commands
//! through `CommandService`, the log read shard by shard into `Processor`, and the views and
//! history compared with `views::fold` of the log; across a restart of the directory.

mod common;

use common::*;
use std::collections::BTreeMap;
use timeline_core::codec::decode_record;
use timeline_core::ports::{LogRecord, StreamReader, SystemClock, WriteModelStore};
use timeline_core::ports::{Lookup, LookupKind, PageRequest, ReadModelQueries};
use timeline_core::ride::{CancelledBy, Location, RideAggregate, RideCommand};
use timeline_core::shards::ReadFrom;
use timeline_core::video::{VideoAggregate, VideoCommand};
use timeline_core::views::{fold, ReadModel};
use timeline_core::write::{CommandError, CommandRequest, IdempotencyKey, RequestContext};
use timeline_core::EventEnvelope;
use timeline_core::StreamKey;
use timeline_core::Timestamp;
use timeline_embedded::Embedded;
use timeline_engine::projection::{IncomingRecord, Processor};
use timeline_engine::write::CommandService;

type Service = CommandService<Embedded, Embedded, SystemClock>;

/// Commands on `store`; with `appending`, each commit and its record go in one transaction
/// (as the local runner writes), else the protocol's commit, publish and confirm.
fn service(store: &Embedded, appending: bool) -> Service {
    let write = if appending {
        store.appending_on_commit()
    } else {
        store.clone()
    };
    CommandService::new(write, store.clone(), SystemClock)
}

fn place(address: &str, lat: f64, lon: f64) -> Location {
    Location {
        address: address.into(),
        lat,
        lon,
    }
}

fn request<C>(id: &str, command: C) -> CommandRequest<C> {
    CommandRequest {
        aggregate_id: id.into(),
        command,
        expected_version: None,
        idempotency: None,
        context: RequestContext {
            caller: None,
            actor: "user:test".into(),
            correlation_id: Some("scenario".into()),
            causation_id: None,
        },
    }
}

fn book(rider: &str) -> RideCommand {
    RideCommand::Book {
        rider_id: rider.into(),
        pickup: place("1 Rue de Rivoli, Paris", 48.8606, 2.3376),
        dropoff: place("5 Avenue Anatole France, Paris", 48.8584, 2.2945),
        fare_estimate_cents: Some(9000),
    }
}

async fn ride_cmd(service: &Service, id: &str, command: RideCommand) {
    service
        .execute::<RideAggregate>(request(id, command))
        .await
        .unwrap_or_else(|e| panic!("ride {id}: {e}"));
}

async fn video_cmd(service: &Service, id: &str, command: VideoCommand) {
    service
        .execute::<VideoAggregate>(request(id, command))
        .await
        .unwrap_or_else(|e| panic!("video {id}: {e}"));
}

/// Rides through every step of their lifecycle, and a video that fails.
async fn first_half(service: &Service) {
    for (id, rider) in [("r1", "rider-1"), ("r2", "rider-1"), ("r3", "rider-2")] {
        ride_cmd(service, id, book(rider)).await;
    }
    ride_cmd(
        service,
        "r1",
        RideCommand::AssignDriver {
            driver_id: "driver-1".into(),
        },
    )
    .await;
    ride_cmd(
        service,
        "r2",
        RideCommand::AssignDriver {
            driver_id: "driver-1".into(),
        },
    )
    .await;
    ride_cmd(
        service,
        "r2",
        RideCommand::AssignDriver {
            driver_id: "driver-2".into(),
        },
    )
    .await;
    ride_cmd(service, "r1", RideCommand::Start).await;
    ride_cmd(
        service,
        "r1",
        RideCommand::ChangeDestination {
            dropoff: place("Gare du Nord, Paris", 48.8809, 2.3553),
        },
    )
    .await;
    video_cmd(
        service,
        "v1",
        VideoCommand::Upload {
            title: "demo".into(),
            source_uri: "s3://in/demo.mp4".into(),
            uploaded_by: None,
        },
    )
    .await;
    video_cmd(service, "v1", VideoCommand::StartProcessing).await;
    video_cmd(service, "v1", VideoCommand::ReportProgress { percent: 50 }).await;
}

async fn second_half(service: &Service) {
    ride_cmd(
        service,
        "r1",
        RideCommand::AdjustFare {
            fare_cents: 11_000,
            reason: "traffic".into(),
        },
    )
    .await;
    ride_cmd(
        service,
        "r1",
        RideCommand::Complete {
            final_fare_cents: 11_000,
            distance_km: 7.5,
        },
    )
    .await;
    ride_cmd(
        service,
        "r3",
        RideCommand::Cancel {
            by: CancelledBy::Rider,
            reason: "changed plans".into(),
        },
    )
    .await;
    video_cmd(
        service,
        "v1",
        VideoCommand::Fail {
            error: "timeout".into(),
        },
    )
    .await;
}

/// Every record of every shard, read in small batches after a position, as the event source
/// mapping does, each batch given to the processor (twice, to show redelivery is harmless).
async fn process_log(store: &Embedded, positions: &mut BTreeMap<String, String>) -> usize {
    let processor = Processor::new(store.clone());
    let mut records = 0;
    for shard in store.shards().await.unwrap() {
        let shard = shard.id;
        loop {
            let from = positions
                .get(&shard)
                .map_or(ReadFrom::Oldest, |s| ReadFrom::After(s.clone()));
            let batch: Vec<LogRecord> = store.read(&shard, &from, 3).await.unwrap().records;
            let Some(last) = batch.last() else { break };
            let incoming: Vec<IncomingRecord> = batch
                .iter()
                .map(|r| IncomingRecord {
                    sequence_number: r.sequence_number.clone(),
                    shard_id: None,
                    arrival: None,
                    partition_key: r.partition_key.clone(),
                    data: r.data.clone(),
                })
                .collect();
            let now = Timestamp::from_datetime(chrono::Utc::now());
            for _delivery in 0..2 {
                let outcome = processor.process(&incoming, now).await;
                assert_eq!(outcome.first_failure, None, "{:?}", outcome.failures);
            }
            records += batch.len();
            positions.insert(shard.clone(), last.sequence_number.clone());
        }
    }
    records
}

/// Each entity's events as the log holds them, in version order, deduplicated.
async fn log_events(store: &Embedded) -> BTreeMap<StreamKey, Vec<EventEnvelope>> {
    let mut by_entity: BTreeMap<StreamKey, BTreeMap<u64, EventEnvelope>> = BTreeMap::new();
    for shard in store.shards().await.unwrap() {
        for record in store
            .read(&shard.id, &ReadFrom::Oldest, 10_000)
            .await
            .unwrap()
            .records
        {
            for event in decode_record(&record.data).unwrap().events {
                by_entity
                    .entry(event.stream_key())
                    .or_default()
                    .insert(event.version, event);
            }
        }
    }
    by_entity
        .into_iter()
        .map(|(k, events)| (k, events.into_values().collect()))
        .collect()
}

/// The stored view and history of each entity equal a fold of its events from the log.
async fn assert_views_equal_the_fold_of_the_log(store: &Embedded) -> usize {
    let log = log_events(store).await;
    for (key, events) in &log {
        match key.aggregate_type.as_str() {
            "ride" => assert_matches_fold::<RideAggregate>(store, key, events).await,
            "video" => assert_matches_fold::<VideoAggregate>(store, key, events).await,
            other => panic!("unexpected entity type {other}"),
        }
    }
    log.len()
}

async fn assert_matches_fold<A: ReadModel>(
    store: &Embedded,
    key: &StreamKey,
    events: &[EventEnvelope],
) where
    A::State: serde::Serialize,
{
    let (view, history) = fold::<A>(events).unwrap().expect("the entity has events");
    assert_eq!(
        store.view(key).await.unwrap(),
        Some(serde_json::to_value(&view).unwrap()),
        "view of {key}"
    );
    let stored = store
        .history(
            key,
            None,
            None,
            &PageRequest {
                limit: 1000,
                cursor: None,
            },
        )
        .await
        .unwrap();
    assert_eq!(stored.items, history, "history of {key}");
    // The head agrees with the log: same version, nothing left in the outbox.
    let head = store.load_head(key).await.unwrap().unwrap();
    assert_eq!(head.version, events.len() as u64);
    assert!(head.pending.is_empty());
    assert_eq!(A::TYPE, key.aggregate_type);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commands_then_the_processor_give_the_views_a_fold_of_the_log_gives_across_a_restart() {
    scenario(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn appending_on_commit_gives_the_same_log_views_and_history() {
    scenario(true).await;
}

/// The same record counts either way: one record per commit, none doubled.
async fn scenario(appending: bool) {
    let dir = TempDir::new();
    let mut positions = BTreeMap::new();
    {
        let store = dir.open();
        let service = service(&store, appending);
        first_half(&service).await;
        assert_eq!(process_log(&store, &mut positions).await, 11);
        assert_eq!(assert_views_equal_the_fold_of_the_log(&store).await, 4);
    }
    // Restart: the same directory, a new handle, the reader resuming from its positions.
    let store = dir.open();
    let service = service(&store, appending);
    second_half(&service).await;
    assert_eq!(process_log(&store, &mut positions).await, 4);
    assert_eq!(assert_views_equal_the_fold_of_the_log(&store).await, 4);

    let r1 = store.view(&ride("r1")).await.unwrap().unwrap();
    assert_eq!(r1["status"], "completed");
    assert_eq!(r1["version"], 6);
    let v1 = store
        .view(&StreamKey::new("video", "v1"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(v1["status"], "failed");

    let list = |kind, value: &str| Lookup {
        aggregate_type: "ride".into(),
        kind,
        value: value.into(),
    };
    let page = PageRequest {
        limit: 10,
        cursor: None,
    };
    let ids = |items: Vec<serde_json::Value>| -> Vec<String> {
        items
            .iter()
            .map(|v| v["aggregate_id"].as_str().unwrap().to_owned())
            .collect()
    };
    let by_rider = store
        .list(&list(LookupKind::Rider, "rider-1"), &page)
        .await
        .unwrap();
    assert_eq!(ids(by_rider.items), ["r2", "r1"]);
    let by_driver = store
        .list(&list(LookupKind::Driver, "driver-1"), &page)
        .await
        .unwrap();
    assert_eq!(ids(by_driver.items), ["r1"], "r2 moved to driver-2");
    let cancelled = store
        .list(&list(LookupKind::Status, "cancelled"), &page)
        .await
        .unwrap();
    assert_eq!(ids(cancelled.items), ["r3"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_commands_on_one_ride_keep_versions_contiguous_on_the_log() {
    concurrent_commands(false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_appending_commands_leave_nothing_pending_and_one_record_each() {
    concurrent_commands(true).await;
}

async fn concurrent_commands(appending: bool) {
    let dir = TempDir::new();
    let store = dir.open();
    let service = std::sync::Arc::new(service(&store, appending));
    ride_cmd(&service, "busy", book("rider-1")).await;
    // Ten fare adjustments at once: every one lands (retrying on conflicts) or reports
    // contention; none is lost or duplicated.
    let tasks: Vec<_> = (0..10)
        .map(|i| {
            let service = service.clone();
            tokio::spawn(async move {
                service
                    .execute::<RideAggregate>(request(
                        "busy",
                        RideCommand::AdjustFare {
                            fare_cents: 10_000 + i,
                            reason: format!("n{i}"),
                        },
                    ))
                    .await
            })
        })
        .collect();
    let mut landed = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => landed += 1,
            Err(CommandError::Contention { .. }) => {}
            Err(e) => panic!("{e}"),
        }
    }
    if appending {
        // Each commit carried its own record: nothing for a sweep, no record twice.
        assert!(store.pending_heads(100).await.unwrap().is_empty());
        let mut records = 0;
        for shard in store.shards().await.unwrap() {
            records += store
                .read(&shard.id, &ReadFrom::Oldest, 1000)
                .await
                .unwrap()
                .records
                .len();
        }
        assert_eq!(records, 1 + landed);
    }
    // Two publishes can race to confirm: the later one's condition (the outbox still starts
    // where its record started) may fail, leaving published events pending, as with every
    // store. The sweep republishes them and readers dedupe.
    let swept = service.sweep(100).await.unwrap();
    assert_eq!(swept.failed, 0);
    assert!(store.pending_heads(100).await.unwrap().is_empty());
    let events = &log_events(&store).await[&ride("busy")];
    assert_eq!(events.len(), 1 + landed);
    assert!(events.iter().zip(1..).all(|(e, v)| e.version == v));
    let mut positions = BTreeMap::new();
    process_log(&store, &mut positions).await;
    assert_views_equal_the_fold_of_the_log(&store).await;
}

#[tokio::test]
async fn a_repeated_idempotency_key_replays_from_the_embedded_store() {
    repeated_key(false).await;
}

#[tokio::test]
async fn a_repeated_idempotency_key_replays_when_appending_on_commit() {
    repeated_key(true).await;
}

async fn repeated_key(appending: bool) {
    let dir = TempDir::new();
    let store = dir.open();
    let service = service(&store, appending);
    let keyed = |fingerprint: &str| {
        let mut r = request("idem", book("rider-1"));
        r.idempotency = Some(IdempotencyKey::given("k-1", fingerprint));
        r
    };
    let first = service.execute::<RideAggregate>(keyed("fp")).await.unwrap();
    let again = service.execute::<RideAggregate>(keyed("fp")).await.unwrap();
    assert!(again.replayed);
    assert_eq!(again.events, first.events);
    assert!(matches!(
        service.execute::<RideAggregate>(keyed("other")).await,
        Err(CommandError::IdempotencyKeyReused)
    ));
    // Still one record on the log; and after a restart the key still replays.
    assert_eq!(log_events(&store).await[&ride("idem")].len(), 1);
    drop(service);
    drop(store);
    let store = dir.open();
    let service = self::service(&store, appending);
    assert!(
        service
            .execute::<RideAggregate>(keyed("fp"))
            .await
            .unwrap()
            .replayed
    );
}
