//! Parking, as business rules: a record the processor can never apply parks its entity and
//! sets its later records aside, every other entity goes on, nothing is retried to
//! exhaustion or discarded; a redrive re-projects the entity from the log once the cause is
//! fixed, and a redrive racing the live processor loses nothing.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use timeline_core::codec::encode_record;
use timeline_core::park::ParkReason;
use timeline_core::ports::EventLog;
use timeline_core::ports::{ReadModelError, ReadModelStore, ViewWrite};
use timeline_core::scenario::sample_ride;
use timeline_core::time::Deadline;
use timeline_core::CommitRecord;
use timeline_core::EventEnvelope;
use timeline_core::StreamKey;
use timeline_core::Timestamp;
use timeline_engine::log_source::LogSource;
use timeline_engine::memory::{MemoryArchive, MemoryLog, MemoryReadModels, MemoryStore};
use timeline_engine::park::redrive;
use timeline_engine::projection::{IncomingRecord, Processor, DEFAULT_CONCURRENCY};
use timeline_engine::testing::WriteCheck;

fn now() -> Timestamp {
    "2026-11-28T11:00:00Z".parse().unwrap()
}

fn incoming(events: &[EventEnvelope]) -> Vec<IncomingRecord> {
    events
        .iter()
        .map(|e| IncomingRecord {
            sequence_number: format!("{}-{:05}", e.aggregate_id, e.version),
            partition_key: e.stream_key().partition_key(),
            data: encode_record(&CommitRecord::new(vec![e.clone()]).unwrap()),
            shard_id: Some("shardId-000000000000".into()),
            arrival: Some(e.recorded_at),
        })
        .collect()
}

/// The log (no archive, no index, no heads) as a redrive reads it.
fn source(log: &MemoryLog) -> impl timeline_core::ports::EventSource {
    LogSource::new(
        MemoryArchive::default(),
        log.clone(),
        "s",
        None::<MemoryReadModels>,
        None::<MemoryStore>,
    )
}

fn versions(id: &str, range: std::ops::RangeInclusive<u64>) -> Vec<EventEnvelope> {
    range.map(|v| sample_ride(id, v)).collect()
}

/// Version `v` of ride `id` as a newer command handler writes it: a schema this processor
/// does not know yet.
fn from_the_future(id: &str, v: u64) -> EventEnvelope {
    let mut e = sample_ride(id, v);
    e.schema_version = 99;
    e
}

async fn view_version(models: &MemoryReadModels, id: &str) -> u64 {
    let key = StreamKey::new("ride", id);
    models
        .load_views(std::slice::from_ref(&key))
        .await
        .unwrap()
        .get(&key)
        .map_or(0, |v| v.version)
}

#[tokio::test]
async fn an_event_of_a_newer_schema_parks_its_entity_and_the_others_go_on() {
    // Given ride a at version 2, and ride b new.
    let models = MemoryReadModels::default();
    let processor = Processor::new(models.clone());
    processor
        .process(&incoming(&versions("a", 1..=2)), now())
        .await;

    // When a batch holds a's version 3 in a schema from the future, then a's version 4,
    // and b's first two versions.
    let mut batch = vec![
        from_the_future("a", 3),
        sample_ride("b", 1),
        sample_ride("a", 4),
    ];
    batch.push(sample_ride("b", 2));
    let outcome = processor.process(&incoming(&batch), now()).await;

    // Then nothing is left for Kinesis to retry, b is applied, a stays whole at version 2,
    // and a is parked from version 3 with both its records set aside.
    assert_eq!(outcome.first_failure, None, "{:?}", outcome.failures);
    assert_eq!(view_version(&models, "b").await, 2);
    assert_eq!(view_version(&models, "a").await, 2);
    let parked = models.parked_entity("ride#a").await.unwrap().unwrap();
    assert_eq!(parked.from_version, Some(3));
    assert!(
        matches!(&parked.reason, ParkReason::UnreadableEvent { version: 3, reason } if reason.contains("99")),
        "{parked:?}"
    );
    assert_eq!(parked.set_aside, 2);
    assert_eq!(parked.sequence_number, "a-00003");
    assert_eq!(
        (
            outcome.stats.entities_parked,
            outcome.stats.records_set_aside
        ),
        (1, 2)
    );

    // And a's next record, in a later batch, is set aside at once: it meets the gap.
    let later = processor
        .process(&incoming(&[sample_ride("a", 5)]), now())
        .await;
    assert_eq!(later.first_failure, None);
    let parked = models.parked_entity("ride#a").await.unwrap().unwrap();
    assert_eq!(parked.set_aside, 3);
    assert_eq!(parked.from_version, Some(3), "the first parking stays");
}

#[tokio::test]
async fn a_write_the_store_refuses_parks_and_a_redrive_after_the_fix_brings_the_entity_back() {
    // Given a log holding ride r's five versions and ride s's two, and read models that
    // refuse r's view for now.
    let log = MemoryLog::default();
    let mut events = versions("r", 1..=5);
    events.extend(versions("s", 1..=2));
    for e in &events {
        log.publish(&CommitRecord::new(vec![e.clone()]).unwrap())
            .await
            .unwrap();
    }
    let models = MemoryReadModels::default();
    let refusing = Arc::new(AtomicBool::new(true));
    // As DynamoDB refuses an item over its limits.
    let refuses = refusing.clone();
    let store = WriteCheck {
        inner: models.clone(),
        check: move |w: &ViewWrite| {
            let refused = w.key == StreamKey::new("ride", "r") && refuses.load(Ordering::SeqCst);
            std::future::ready(
                refused.then(|| ReadModelError::Refused("item over 400 KB (injected)".into())),
            )
        },
    };
    let processor = Processor::new(store.clone());

    // When the processor gets them in two batches.
    for part in [&events[..3], &events[3..]] {
        let outcome = processor.process(&incoming(part), now()).await;
        assert_eq!(outcome.first_failure, None, "{:?}", outcome.failures);
    }

    // Then r is parked, refused, from version 1; s is whole.
    let parked = models.parked().await.unwrap();
    assert_eq!(parked.len(), 1);
    assert_eq!(parked[0].entity, "ride#r");
    assert!(matches!(parked[0].reason, ParkReason::Refused { .. }));
    assert_eq!(parked[0].from_version, Some(1));
    assert_eq!(view_version(&models, "s").await, 2);

    // A redrive while the cause is still there changes nothing and says why.
    let source = source(&log);
    let redriver = Processor::for_redrive(store.clone());
    let deadline = Deadline::none();
    let still = redrive(&source, &redriver, "ride#r", now(), &deadline)
        .await
        .unwrap();
    assert!(!still.unparked);
    assert!(matches!(still.still, Some(ParkReason::Refused { .. })));
    assert_eq!(models.parked().await.unwrap().len(), 1);

    // When the store accepts r's view again and the operator redrives r.
    refusing.store(false, Ordering::SeqCst);
    let report = redrive(&source, &redriver, "ride#r", now(), &deadline)
        .await
        .unwrap();

    // Then r holds every version from the log, and is parked no longer.
    assert!(report.unparked, "{report:?}");
    assert_eq!((report.events_applied, report.view_version), (5, 5));
    assert_eq!(view_version(&models, "r").await, 5);
    assert!(models.parked().await.unwrap().is_empty());
    // Redriving an entity that is not parked does nothing.
    let again = redrive(&source, &redriver, "ride#r", now(), &deadline)
        .await
        .unwrap();
    assert_eq!((again.parked, again.events_applied), (None, 0));
}

#[tokio::test]
async fn a_record_set_aside_while_a_redrive_runs_is_not_lost() {
    // Given ride q parked at version 2 (its version 2 never reached the processor), with
    // versions 1 to 3 on the log.
    let log = MemoryLog::default();
    for e in versions("q", 1..=3) {
        log.publish(&CommitRecord::new(vec![e]).unwrap())
            .await
            .unwrap();
    }
    let models = MemoryReadModels::default();
    let processor = Processor::new(models.clone());
    processor
        .process(&incoming(&versions("q", 1..=1)), now())
        .await;
    processor
        .process(&incoming(&versions("q", 3..=3)), now())
        .await;
    assert!(models.parked_entity("ride#q").await.unwrap().is_some());

    // When, while the redrive reads the log, version 4 is committed and the live processor
    // sets it aside (the parking's count moves under the redrive).
    let raced = Arc::new(AtomicBool::new(false));
    let (inner, log_now) = (models.clone(), log.clone());
    let racing = WriteCheck {
        inner: models.clone(),
        check: move |_: &ViewWrite| {
            let (raced, models, log) = (raced.clone(), inner.clone(), log_now.clone());
            async move {
                if !raced.swap(true, Ordering::SeqCst) {
                    log.publish(&CommitRecord::new(vec![sample_ride("q", 4)]).unwrap())
                        .await
                        .unwrap();
                    // What the live processor does with a record of a parked entity.
                    let mut aside = models.parked_entity("ride#q").await.unwrap().unwrap();
                    aside.set_aside = 1;
                    models.park(&aside).await.unwrap();
                }
                None
            }
        },
    };
    let source = source(&log);
    let report = redrive(
        &source,
        &Processor::for_redrive(racing),
        "ride#q",
        now(),
        &Deadline::none(),
    )
    .await
    .unwrap();

    // Then the redrive read the log again, and version 4 is in the view.
    assert!(report.unparked, "{report:?}");
    assert_eq!(view_version(&models, "q").await, 4);
    assert!(models.parked().await.unwrap().is_empty());
}

#[tokio::test]
async fn a_batchs_entities_are_written_concurrently_within_a_bound() {
    for (concurrency, expected) in [(None, DEFAULT_CONCURRENCY), (Some(1), 1)] {
        let (now_in, most) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
        let (n, m) = (now_in.clone(), most.clone());
        let store = WriteCheck {
            inner: MemoryReadModels::default(),
            check: move |_: &ViewWrite| {
                let (n, m) = (n.clone(), m.clone());
                async move {
                    let in_flight = n.fetch_add(1, Ordering::SeqCst) + 1;
                    m.fetch_max(in_flight, Ordering::SeqCst);
                    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
                    n.fetch_sub(1, Ordering::SeqCst);
                    None
                }
            },
        };
        let mut processor = Processor::new(store);
        if let Some(n) = concurrency {
            processor = processor.with_concurrency(n);
        }
        let batch: Vec<EventEnvelope> =
            (0..100).map(|i| sample_ride(&format!("c{i}"), 1)).collect();
        let outcome = processor.process(&incoming(&batch), now()).await;
        assert_eq!(outcome.stats.entities_written, 100);
        assert_eq!(most.load(Ordering::SeqCst), expected);
    }
}
