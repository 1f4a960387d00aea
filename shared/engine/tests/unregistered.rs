//! An event of a type no module registers is refused loudly everywhere it can arrive: the
//! live processor parks its entity (and projects the others), a rebuild (and so a verify)
//! reports it as a problem, the streaming fold lists it as unreadable, and a redrive says why the
//! entity is still parked. Nothing guesses which aggregate it might be.

use timeline_core::codec::encode_record;
use timeline_core::park::ParkReason;
use timeline_core::ports::{EventLog, ReadModelStore};
use timeline_core::registry::{dispatch, kind, Unregistered};
use timeline_core::scenario::sample_ride;
use timeline_core::time::Deadline;
use timeline_core::{CommitRecord, EventEnvelope, StreamKey, Timestamp};
use timeline_engine::fold::StateFold;
use timeline_engine::log_source::LogSource;
use timeline_engine::memory::{MemoryArchive, MemoryLog, MemoryReadModels, MemoryStore};
use timeline_engine::park::redrive;
use timeline_engine::projection::{IncomingRecord, Processor};
use timeline_engine::replay::rebuild;

fn now() -> Timestamp {
    "2026-11-28T11:00:00Z".parse().unwrap()
}

/// Version 1 of a "parcel": well formed, of a type nobody registered.
fn parcel() -> EventEnvelope {
    let mut e = sample_ride("p1", 1);
    e.aggregate_type = "parcel".into();
    e
}

fn incoming(events: &[EventEnvelope]) -> Vec<IncomingRecord> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| IncomingRecord {
            sequence_number: format!("{i:05}"),
            partition_key: e.stream_key().partition_key(),
            data: encode_record(&CommitRecord::new(vec![e.clone()]).unwrap()),
            shard_id: Some("shardId-000000000000".into()),
            arrival: Some(e.recorded_at),
        })
        .collect()
}

async fn log_with(events: &[EventEnvelope]) -> MemoryLog {
    let log = MemoryLog::default();
    for e in events {
        log.publish(&CommitRecord::new(vec![e.clone()]).unwrap())
            .await
            .unwrap();
    }
    log
}

fn source(log: &MemoryLog) -> LogSource<MemoryArchive, MemoryLog, MemoryReadModels, MemoryStore> {
    LogSource::new(MemoryArchive::default(), log.clone(), "s", None, None)
}

#[test]
fn the_registry_refuses_it() {
    assert_eq!(kind("parcel"), Err(Unregistered("parcel".into())));
    struct Any;
    impl timeline_core::Visitor for Any {
        type Output = ();
        fn visit<A: timeline_core::Entity>(self) {}
    }
    assert!(dispatch("parcel", Any).is_err());
}

#[tokio::test]
async fn the_live_processor_parks_it_and_projects_the_rest() {
    let models = MemoryReadModels::default();
    let processor = Processor::new(models.clone());
    let outcome = processor
        .process(&incoming(&[parcel(), sample_ride("r1", 1)]), now())
        .await;
    assert_eq!(
        outcome.first_failure, None,
        "nothing to retry: it never applies"
    );
    assert_eq!(outcome.parked.len(), 1);
    assert_eq!(outcome.parked[0].entity, "parcel#p1");
    assert_eq!(
        outcome.parked[0].reason,
        ParkReason::UnknownType {
            aggregate_type: "parcel".into()
        }
    );
    let views = models.views();
    assert!(views.contains_key(&StreamKey::new("ride", "r1")));
    assert!(!views.contains_key(&StreamKey::new("parcel", "p1")));
    assert_eq!(models.parked().await.unwrap().len(), 1);
}

#[tokio::test]
async fn a_rebuild_and_a_redrive_report_it() {
    let log = log_with(&[parcel(), sample_ride("r1", 1)]).await;
    let target = MemoryReadModels::default();
    let report = rebuild(
        &source(&log),
        &Processor::for_replay(target.clone()),
        None,
        &Deadline::none(),
        &mut |_, _, _| {},
    )
    .await
    .unwrap();
    assert!(report.finished);
    assert!(
        report.problems.iter().any(|p| p.reason.contains("parcel")),
        "{report:?}"
    );
    assert_eq!(target.views().len(), 1, "only the ride");

    // Parked by the live processor, then redriven: still unknown, still parked.
    let models = MemoryReadModels::default();
    let live = Processor::new(models.clone());
    live.process(&incoming(&[parcel()]), now()).await;
    let redriven = redrive(
        &source(&log),
        &Processor::for_redrive(models.clone()),
        "parcel#p1",
        now(),
        &Deadline::none(),
    )
    .await
    .unwrap();
    assert!(!redriven.unparked);
    assert_eq!(
        redriven.still,
        Some(ParkReason::UnknownType {
            aggregate_type: "parcel".into()
        })
    );
    assert_eq!(models.parked().await.unwrap().len(), 1);
}

#[test]
fn the_streaming_fold_lists_it_as_unreadable() {
    let mut fold = StateFold::default();
    fold.push(parcel());
    fold.push(sample_ride("r1", 1));
    let folded = fold.finish();
    assert_eq!(folded.events_applied, 1);
    assert_eq!(folded.states.len(), 1);
    assert_eq!(folded.unreadable.len(), 1);
    let (key, version, reason) = &folded.unreadable[0];
    assert_eq!((key, *version), (&StreamKey::new("parcel", "p1"), 1));
    assert!(
        reason.contains("no aggregate of type \"parcel\""),
        "{reason}"
    );
}
