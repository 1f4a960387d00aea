//! The write protocol (ARCHITECTURE.md, "What must always hold") against the in-memory ports: versions,
//! optimistic concurrency, idempotency, the outbox and its publication, and time.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use timeline_core::envelope::{CommitRecord, StreamKey};
use timeline_core::ports::{
    Commit, CommitError, EventLog, Head, IdempotencyRecord, LogError, Published, StoreError,
    WriteModelStore,
};
use timeline_core::ride::{Location, Ride, RideAggregate, RideCommand, RideError, RideStatus};
use timeline_core::video::{VideoAggregate, VideoCommand};
use timeline_core::write::{
    CommandError, CommandOutcome, CommandRequest, IdempotencyKey, RequestContext, WriteConfig,
};
use timeline_core::DomainError;
use timeline_core::Timestamp;
use timeline_engine::memory::{ManualClock, MemoryLog, MemoryStore};
use timeline_engine::write::{CommandService, SweepReport};

type Service = CommandService<MemoryStore, MemoryLog, ManualClock>;

fn noon() -> Timestamp {
    "2026-11-28T12:00:00.000Z".parse().unwrap()
}

fn service() -> Service {
    service_with(WriteConfig::default())
}

fn service_with(config: WriteConfig) -> Service {
    CommandService::with_config(
        MemoryStore::default(),
        MemoryLog::default(),
        ManualClock::at(noon()),
        config,
    )
}

fn place(address: &str, lat: f64, lon: f64) -> Location {
    Location {
        address: address.into(),
        lat,
        lon,
    }
}

fn book() -> RideCommand {
    RideCommand::Book {
        rider_id: "rider-1".into(),
        pickup: place("1 Rue de Rivoli, Paris", 48.8606, 2.3376),
        dropoff: place("5 Avenue Anatole France, Paris", 48.8584, 2.2945),
        fare_estimate_cents: Some(9000),
    }
}

fn assign(driver: &str) -> RideCommand {
    RideCommand::AssignDriver {
        driver_id: driver.into(),
    }
}

fn adjust_fare(cents: i64) -> RideCommand {
    RideCommand::AdjustFare {
        fare_cents: cents,
        reason: "traffic".into(),
    }
}

fn request<C>(ride: &str, command: C) -> CommandRequest<C> {
    CommandRequest {
        aggregate_id: ride.into(),
        command,
        expected_version: None,
        idempotency: None,
        context: RequestContext {
            caller: None,
            actor: "user:rider-1".into(),
            correlation_id: Some("correlation-1".into()),
            causation_id: None,
        },
    }
}

fn at_version<C>(mut request: CommandRequest<C>, version: u64) -> CommandRequest<C> {
    request.expected_version = Some(version);
    request
}

fn with_key<C>(mut request: CommandRequest<C>, key: &str, fingerprint: &str) -> CommandRequest<C> {
    request.idempotency = Some(IdempotencyKey::given(key, fingerprint));
    request
}

fn ride_key(id: &str) -> StreamKey {
    StreamKey::new("ride", id)
}

fn head(service: &Service, ride: &str) -> Head {
    service
        .store()
        .head(&ride_key(ride))
        .expect("the ride has a head")
}

fn ride_state(service: &Service, ride: &str) -> Ride {
    serde_json::from_value::<Option<Ride>>(head(service, ride).state)
        .unwrap()
        .expect("the ride exists")
}

fn versions(record: &CommitRecord) -> Vec<u64> {
    record.events.iter().map(|e| e.version).collect()
}

async fn run(
    service: &Service,
    request: CommandRequest<RideCommand>,
) -> Result<CommandOutcome, CommandError<RideError>> {
    service.execute::<RideAggregate>(request).await
}

// The happy path

#[tokio::test]
async fn a_first_command_creates_the_entity_at_version_1_and_publishes_it_as_one_record() {
    let service = service();
    let outcome = run(&service, request("42", book())).await.unwrap();

    assert_eq!(outcome.aggregate_type, "ride");
    assert_eq!(outcome.aggregate_id, "42");
    assert_eq!(outcome.version, 1);
    assert!(outcome.created);
    assert!(outcome.published);
    assert!(!outcome.replayed);
    assert_eq!(outcome.events.len(), 1);
    let event = &outcome.events[0];
    assert_eq!(event.version, 1);
    assert_eq!(event.event_type, "RideBooked");
    assert_eq!(event.stream_key(), ride_key("42"));
    assert_eq!(event.occurred_at, noon());
    assert_eq!(event.recorded_at, noon());
    assert_eq!(event.metadata.actor, "user:rider-1");
    assert_eq!(
        event.metadata.correlation_id.as_deref(),
        Some("correlation-1")
    );

    let records = service.log().records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].events, outcome.events);

    let head = head(&service, "42");
    assert_eq!(head.version, 1);
    assert!(head.pending.is_empty(), "published events leave the outbox");
    assert_eq!(head.last_occurred_at, Some(noon()));
    assert_eq!(ride_state(&service, "42").status, RideStatus::Booked);
}

#[tokio::test]
async fn the_next_command_appends_the_next_version_in_its_own_record() {
    let service = service();
    run(&service, request("42", book())).await.unwrap();
    let outcome = run(&service, at_version(request("42", assign("driver-1")), 1))
        .await
        .unwrap();
    assert_eq!(outcome.version, 2);
    assert!(!outcome.created);
    assert!(outcome.published);
    assert_eq!(outcome.events[0].event_type, "DriverAssigned");

    let records = service.log().records();
    assert_eq!(
        records.iter().map(versions).collect::<Vec<_>>(),
        [vec![1], vec![2]]
    );
    assert_eq!(
        ride_state(&service, "42").driver_id.as_deref(),
        Some("driver-1")
    );
}

// Optimistic concurrency

#[tokio::test]
async fn an_expected_version_that_is_not_the_current_one_is_a_conflict_that_writes_nothing() {
    let service = service();
    run(&service, request("42", book())).await.unwrap();
    let before = head(&service, "42");

    let refused = run(&service, at_version(request("42", assign("driver-1")), 0)).await;
    assert!(
        matches!(
            refused,
            Err(CommandError::VersionConflict {
                expected: 0,
                actual: 1
            })
        ),
        "got {refused:?}"
    );
    let refused = run(&service, at_version(request("42", assign("driver-1")), 2)).await;
    assert!(
        matches!(
            refused,
            Err(CommandError::VersionConflict {
                expected: 2,
                actual: 1
            })
        ),
        "got {refused:?}"
    );
    assert_eq!(head(&service, "42"), before);
    assert_eq!(service.log().records().len(), 1);
}

#[tokio::test]
async fn expecting_an_existing_version_of_an_entity_that_does_not_exist_is_a_conflict() {
    let service = service();
    let refused = run(&service, at_version(request("42", book()), 3)).await;
    assert!(
        matches!(
            refused,
            Err(CommandError::VersionConflict {
                expected: 3,
                actual: 0
            })
        ),
        "got {refused:?}"
    );
    assert!(service.store().head(&ride_key("42")).is_none());
    assert!(service.log().records().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 8)]
async fn of_50_concurrent_commands_at_the_same_version_exactly_one_wins() {
    let service = Arc::new(service());
    run(&service, request("42", book())).await.unwrap();
    let start = Arc::new(tokio::sync::Barrier::new(50));

    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let service = Arc::clone(&service);
            let start = Arc::clone(&start);
            tokio::spawn(async move {
                start.wait().await;
                let command = at_version(request("42", assign(&format!("driver-{i}"))), 1);
                service.execute::<RideAggregate>(command).await
            })
        })
        .collect();
    let mut won = Vec::new();
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(outcome) => won.push(outcome),
            Err(CommandError::VersionConflict {
                expected: 1,
                actual: 2,
            }) => conflicts += 1,
            Err(other) => panic!("unexpected refusal: {other:?}"),
        }
    }
    assert_eq!(won.len(), 1);
    assert_eq!(conflicts, 49);
    assert_eq!(won[0].version, 2);

    assert_eq!(head(&service, "42").version, 2);
    let records = service.log().records();
    assert_eq!(
        records.iter().map(versions).collect::<Vec<_>>(),
        [vec![1], vec![2]]
    );
    assert_eq!(records[1].events, won[0].events);
}

/// A store that lets other tasks run right after every head read, so concurrent commands
/// all read the same head before any of them commits, and counts commit attempts.
#[derive(Clone, Default)]
struct Interleaving {
    inner: MemoryStore,
    commits: Arc<AtomicUsize>,
}

impl WriteModelStore for Interleaving {
    async fn load_head(&self, key: &StreamKey) -> Result<Option<Head>, StoreError> {
        let head = self.inner.load_head(key).await;
        tokio::task::yield_now().await;
        head
    }
    async fn commit(&self, commit: Commit) -> Result<(), CommitError> {
        self.commits.fetch_add(1, Ordering::SeqCst);
        self.inner.commit(commit).await
    }
    async fn confirm_published(
        &self,
        key: &StreamKey,
        from: u64,
        through: u64,
    ) -> Result<(), StoreError> {
        self.inner.confirm_published(key, from, through).await
    }
    async fn remember(&self, record: IdempotencyRecord, now: Timestamp) -> Result<(), CommitError> {
        self.inner.remember(record, now).await
    }
    async fn load_idempotency(
        &self,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        self.inner.load_idempotency(key, now).await
    }
    async fn pending_heads(&self, limit: usize) -> Result<Vec<StreamKey>, StoreError> {
        self.inner.pending_heads(limit).await
    }
}

type InterleavingService = CommandService<Interleaving, MemoryLog, ManualClock>;

fn interleaving_service(config: WriteConfig) -> (Arc<InterleavingService>, Interleaving) {
    let store = Interleaving::default();
    let service = CommandService::with_config(
        store.clone(),
        MemoryLog::default(),
        ManualClock::at(noon()),
        config,
    );
    (Arc::new(service), store)
}

#[tokio::test]
async fn when_50_commands_read_the_same_head_the_conditional_commit_lets_only_one_through() {
    let (service, store) = interleaving_service(WriteConfig::default());
    service
        .execute::<RideAggregate>(request("42", book()))
        .await
        .unwrap();
    store.commits.store(0, Ordering::SeqCst);

    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let service = Arc::clone(&service);
            tokio::spawn(async move {
                let command = at_version(request("42", assign(&format!("driver-{i}"))), 1);
                service.execute::<RideAggregate>(command).await
            })
        })
        .collect();
    let mut won = 0;
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(outcome) => {
                assert_eq!(outcome.version, 2);
                won += 1;
            }
            Err(CommandError::VersionConflict {
                expected: 1,
                actual: 2,
            }) => conflicts += 1,
            Err(other) => panic!("unexpected refusal: {other:?}"),
        }
    }
    assert_eq!(
        store.commits.load(Ordering::SeqCst),
        50,
        "every command got as far as the conditional commit"
    );
    assert_eq!((won, conflicts), (1, 49));
    let records = service.log().records();
    assert_eq!(
        records.iter().map(versions).collect::<Vec<_>>(),
        [vec![1], vec![2]]
    );
}

#[tokio::test]
async fn concurrent_commands_without_an_expected_version_retry_and_never_share_a_version() {
    let (service, store) = interleaving_service(WriteConfig {
        max_attempts: 50,
        ..WriteConfig::default()
    });
    service
        .execute::<RideAggregate>(request("42", book()))
        .await
        .unwrap();
    store.commits.store(0, Ordering::SeqCst);

    let tasks: Vec<_> = (0..20)
        .map(|i| {
            let service = Arc::clone(&service);
            tokio::spawn(async move {
                let command = request("42", adjust_fare(10_000 + i));
                service.execute::<RideAggregate>(command).await
            })
        })
        .collect();
    let mut won: Vec<u64> = Vec::new();
    for task in tasks {
        won.push(
            task.await
                .unwrap()
                .expect("every writer gets through")
                .version,
        );
    }
    won.sort_unstable();
    assert_eq!(won, (2..=21).collect::<Vec<u64>>());

    assert!(
        store.commits.load(Ordering::SeqCst) > 20,
        "losers of a commit race decided again and retried"
    );

    let mut published: Vec<u64> = service.log().records().iter().flat_map(versions).collect();
    published.sort_unstable();
    assert_eq!(published, (1..=21).collect::<Vec<u64>>());
}

// Domain refusals

#[tokio::test]
async fn a_refused_command_writes_nothing() {
    let service = service();
    run(&service, request("42", book())).await.unwrap();
    let before = head(&service, "42");

    match run(&service, request("42", RideCommand::Start)).await {
        Err(CommandError::Domain(e)) => assert_eq!(e.code(), "ride.driver_not_assigned"),
        other => panic!("expected a domain refusal, got {other:?}"),
    }
    assert_eq!(head(&service, "42"), before);
    assert_eq!(service.log().records().len(), 1);
}

#[tokio::test]
async fn a_command_on_a_ride_never_booked_is_not_found_and_creates_nothing() {
    let service = service();
    match run(&service, request("7", assign("driver-1"))).await {
        Err(CommandError::Domain(e)) => assert_eq!(e.code(), "ride.not_found"),
        other => panic!("expected ride.not_found, got {other:?}"),
    }
    assert!(service.store().head(&ride_key("7")).is_none());
    assert!(service.log().records().is_empty());
}

#[tokio::test]
async fn a_command_that_changes_nothing_writes_nothing_and_answers_the_current_version() {
    let service = service();
    let video = |command| CommandRequest {
        aggregate_id: "v-1".into(),
        command,
        expected_version: None,
        idempotency: None,
        context: RequestContext::default(),
    };
    for command in [
        VideoCommand::Upload {
            title: "Keynote".into(),
            source_uri: "s3://uploads/keynote.mp4".into(),
            uploaded_by: None,
        },
        VideoCommand::StartProcessing,
        VideoCommand::ReportProgress { percent: 50 },
    ] {
        service
            .execute::<VideoAggregate>(video(command))
            .await
            .unwrap();
    }
    let key = StreamKey::new("video", "v-1");
    let before = service.store().head(&key).unwrap();
    assert_eq!(before.version, 3);

    let repeat = service
        .execute::<VideoAggregate>(video(VideoCommand::ReportProgress { percent: 50 }))
        .await
        .unwrap();
    assert!(repeat.events.is_empty());
    assert_eq!(
        repeat.version, 3,
        "a no-op answers the entity's current version"
    );
    assert!(!repeat.created);
    assert_eq!(service.store().head(&key).unwrap(), before);
    assert_eq!(service.log().records().len(), 3);
}

// Idempotency

#[tokio::test]
async fn the_same_idempotency_key_yields_the_same_command_and_event_ids() {
    let first = service();
    let second = service();
    let a = run(&first, with_key(request("42", book()), "key-1", "fp-book"))
        .await
        .unwrap();
    let b = run(&second, with_key(request("42", book()), "key-1", "fp-book"))
        .await
        .unwrap();
    assert!(
        !b.replayed,
        "separate stores: each one really ran the command"
    );
    assert_eq!(
        a.events[0].metadata.command_id,
        b.events[0].metadata.command_id
    );
    assert_eq!(a.events[0].event_id, b.events[0].event_id);
    assert_eq!(a.events, b.events);

    let other = service();
    let c = run(&other, with_key(request("42", book()), "key-2", "fp-book"))
        .await
        .unwrap();
    assert_ne!(c.events[0].event_id, a.events[0].event_id);
    assert_ne!(
        c.events[0].metadata.command_id,
        a.events[0].metadata.command_id
    );
}

#[tokio::test]
async fn without_an_idempotency_key_every_command_gets_fresh_ids() {
    let first = service();
    let second = service();
    let a = run(&first, request("42", book())).await.unwrap();
    let b = run(&second, request("42", book())).await.unwrap();
    assert_ne!(a.events[0].event_id, b.events[0].event_id);
    assert_ne!(
        a.events[0].metadata.command_id,
        b.events[0].metadata.command_id
    );
}

#[tokio::test]
async fn events_of_different_commands_never_share_an_id() {
    let service = service();
    let a = run(&service, with_key(request("42", book()), "k-a", "fp-a"))
        .await
        .unwrap();
    let b = run(
        &service,
        with_key(request("42", assign("d-1")), "k-b", "fp-b"),
    )
    .await
    .unwrap();
    assert_ne!(a.events[0].event_id, b.events[0].event_id);
    assert!(uuid_like(&a.events[0].event_id));
}

fn uuid_like(id: &str) -> bool {
    id.len() == 36 && id.chars().filter(|c| *c == '-').count() == 4
}

#[tokio::test]
async fn a_repeated_request_replays_the_stored_outcome_without_committing_again() {
    let service = service();
    let first = run(
        &service,
        with_key(request("42", book()), "key-1", "fp-book"),
    )
    .await
    .unwrap();
    // Later, and after the ride moved on, the client retries the same request.
    run(&service, request("42", assign("driver-1")))
        .await
        .unwrap();
    let clock_moved = Service::with_config(
        service.store().clone(),
        service.log().clone(),
        ManualClock::at(noon().plus_millis(60_000)),
        WriteConfig::default(),
    );
    let again = run(
        &clock_moved,
        with_key(request("42", book()), "key-1", "fp-book"),
    )
    .await
    .unwrap();

    assert!(again.replayed);
    let mut expected = first.clone();
    expected.replayed = true;
    assert_eq!(again, expected);
    assert_eq!(head(&service, "42").version, 2);
    assert_eq!(service.log().records().len(), 2);
}

#[tokio::test]
async fn a_replayed_key_is_answered_even_if_its_command_would_now_be_refused() {
    let service = service();
    let first = run(
        &service,
        with_key(request("42", book()), "key-1", "fp-book"),
    )
    .await
    .unwrap();
    // Booking again would be ride.already_exists; the retry gets the original answer.
    let again = run(
        &service,
        with_key(request("42", book()), "key-1", "fp-book"),
    )
    .await
    .unwrap();
    assert!(again.replayed);
    assert_eq!(again.version, first.version);
    assert_eq!(again.events, first.events);
}

#[tokio::test]
async fn the_same_key_with_another_request_is_refused_and_writes_nothing() {
    let service = service();
    run(
        &service,
        with_key(request("42", book()), "key-1", "fp-book"),
    )
    .await
    .unwrap();
    let refused = run(
        &service,
        with_key(request("42", assign("driver-1")), "key-1", "fp-assign"),
    )
    .await;
    assert!(
        matches!(refused, Err(CommandError::IdempotencyKeyReused)),
        "got {refused:?}"
    );
    assert_eq!(head(&service, "42").version, 1);
    assert_eq!(service.log().records().len(), 1);
}

#[tokio::test]
async fn an_expired_key_runs_the_request_again() {
    let service = service_with(WriteConfig {
        idempotency_ttl_secs: 60,
        ..WriteConfig::default()
    });
    run(
        &service,
        with_key(request("42", book()), "key-1", "fp-book"),
    )
    .await
    .unwrap();
    let later = Service::with_config(
        service.store().clone(),
        service.log().clone(),
        ManualClock::at(noon().plus_millis(61_000)),
        WriteConfig::default(),
    );
    match run(&later, with_key(request("42", book()), "key-1", "fp-book")).await {
        Err(CommandError::Domain(e)) => assert_eq!(e.code(), "ride.already_exists"),
        other => panic!("an expired key is not replayed, got {other:?}"),
    }
}

// The outbox

#[tokio::test]
async fn when_publishing_fails_the_command_is_committed_and_its_events_wait_in_the_outbox() {
    let service = service();
    service.log().fail_next(1);
    let booked = run(&service, request("42", book())).await.unwrap();

    assert_eq!(booked.version, 1);
    assert!(booked.created);
    assert!(!booked.published);
    assert!(service.log().records().is_empty());
    let head = head(&service, "42");
    assert_eq!(head.version, 1);
    assert_eq!(head.pending, booked.events);
}

#[tokio::test]
async fn the_next_command_publishes_the_pending_events_and_its_own_in_one_record() {
    let service = service();
    service.log().fail_next(1);
    let booked = run(&service, request("42", book())).await.unwrap();
    let assigned = run(&service, request("42", assign("driver-1")))
        .await
        .unwrap();

    assert!(assigned.published);
    assert_eq!(assigned.version, 2);
    assert_eq!(
        assigned.events.len(),
        1,
        "the outcome lists this command's events"
    );
    let records = service.log().records();
    assert_eq!(records.len(), 1, "one record holds the whole pending run");
    assert_eq!(versions(&records[0]), [1, 2]);
    assert_eq!(records[0].events[0], booked.events[0]);
    assert_eq!(records[0].events[1], assigned.events[0]);
    assert!(head(&service, "42").pending.is_empty());
}

#[tokio::test]
async fn several_failed_publishes_are_carried_by_the_next_record_in_version_order() {
    let service = service();
    service.log().fail_next(3);
    run(&service, request("42", book())).await.unwrap();
    run(&service, request("42", assign("driver-1")))
        .await
        .unwrap();
    run(&service, request("42", adjust_fare(10_000)))
        .await
        .unwrap();
    assert_eq!(head(&service, "42").pending.len(), 3);
    run(&service, request("42", adjust_fare(11_000)))
        .await
        .unwrap();

    let records = service.log().records();
    assert_eq!(records.len(), 1);
    assert_eq!(versions(&records[0]), [1, 2, 3, 4]);
    assert!(head(&service, "42").pending.is_empty());
}

#[tokio::test]
async fn a_replayed_request_whose_events_are_still_pending_publishes_them() {
    let service = service();
    service.log().fail_next(1);
    let first = run(
        &service,
        with_key(request("42", book()), "key-1", "fp-book"),
    )
    .await
    .unwrap();
    assert!(!first.published);

    let again = run(
        &service,
        with_key(request("42", book()), "key-1", "fp-book"),
    )
    .await
    .unwrap();
    assert!(again.replayed);
    assert!(again.published);
    let records = service.log().records();
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].events, first.events);
    assert!(head(&service, "42").pending.is_empty());
}

#[tokio::test]
async fn the_sweep_publishes_what_failed_publishes_left_behind() {
    let service = service();
    run(&service, request("published", book())).await.unwrap();
    service.log().fail_next(2);
    run(&service, request("stuck", book())).await.unwrap();
    run(&service, request("stuck", assign("driver-1")))
        .await
        .unwrap();
    assert_eq!(head(&service, "stuck").pending.len(), 2);

    let report = service.sweep(10).await.unwrap();
    assert_eq!(
        report,
        SweepReport {
            examined: 1,
            published: 1,
            failed: 0,
            unreadable: 0,
        }
    );
    let records = service.log().records();
    assert_eq!(records.len(), 2);
    assert_eq!(records[1].stream_key(), Some(ride_key("stuck")));
    assert_eq!(versions(&records[1]), [1, 2]);
    assert!(head(&service, "stuck").pending.is_empty());

    assert_eq!(service.sweep(10).await.unwrap(), SweepReport::default());
}

#[tokio::test]
async fn the_sweep_reports_what_it_could_not_publish_and_keeps_it_pending() {
    let service = service();
    service.log().fail_next(1);
    run(&service, request("a", book())).await.unwrap();
    service.log().fail_next(1);
    run(&service, request("b", book())).await.unwrap();

    service.log().fail_next(1);
    let report = service.sweep(10).await.unwrap();
    assert_eq!(
        report,
        SweepReport {
            examined: 2,
            published: 1,
            failed: 1,
            unreadable: 0,
        }
    );
    let still_pending = ["a", "b"]
        .iter()
        .filter(|id| !head(&service, id).pending.is_empty())
        .count();
    assert_eq!(still_pending, 1);
    assert_eq!(service.log().records().len(), 1);

    let limited = service.sweep(0).await.unwrap();
    assert_eq!(limited.examined, 0);
}

#[tokio::test]
async fn a_full_outbox_refuses_new_commands_while_the_log_is_down() {
    let service = service_with(WriteConfig {
        max_pending: 2,
        ..WriteConfig::default()
    });
    service.log().fail_next(usize::MAX);
    run(&service, request("42", book())).await.unwrap();
    run(&service, request("42", assign("driver-1")))
        .await
        .unwrap();

    let refused = run(&service, request("42", RideCommand::Start)).await;
    assert!(
        matches!(refused, Err(CommandError::OutboxFull { pending: 2 })),
        "got {refused:?}"
    );
    let head_now = head(&service, "42");
    assert_eq!(head_now.version, 2);
    assert_eq!(head_now.pending.len(), 2);
    assert!(service.log().records().is_empty());

    // The log is back: the outbox drains first, then the command goes through.
    service.log().fail_next(0);
    let started = run(&service, request("42", RideCommand::Start))
        .await
        .unwrap();
    assert_eq!(started.version, 3);
    assert!(started.published);
    let records = service.log().records();
    assert_eq!(
        records.iter().map(versions).collect::<Vec<_>>(),
        [vec![1, 2], vec![3]]
    );
    assert!(head(&service, "42").pending.is_empty());
}

/// A log that fails every publish after its first `allowed` ones, counting them all.
#[derive(Clone)]
struct LogThatGivesUp {
    inner: MemoryLog,
    allowed: usize,
    calls: Arc<AtomicUsize>,
}

impl EventLog for LogThatGivesUp {
    async fn publish(&self, record: &CommitRecord) -> Result<Published, LogError> {
        if self.calls.fetch_add(1, Ordering::SeqCst) >= self.allowed {
            return Err(LogError::Unavailable("gave up".into()));
        }
        self.inner.publish(record).await
    }
}

#[tokio::test]
async fn a_full_outbox_that_cannot_be_cleared_is_retried_a_bounded_number_of_times() {
    // The outbox can never be cleared: every confirm fails.
    let store = MemoryStore::default();
    store.fail_next_confirms(usize::MAX);
    let log = LogThatGivesUp {
        inner: MemoryLog::default(),
        allowed: 1000,
        calls: Arc::default(),
    };
    let config = WriteConfig {
        max_pending: 1,
        max_attempts: 5,
        ..WriteConfig::default()
    };
    let service = CommandService::with_config(store, log.clone(), ManualClock::at(noon()), config);
    service
        .execute::<RideAggregate>(request("42", book()))
        .await
        .unwrap();
    let published_so_far = log.calls.load(Ordering::SeqCst);

    // Every drain "succeeds" on the log but the outbox stays full.
    let refused = service
        .execute::<RideAggregate>(request("42", assign("driver-1")))
        .await;
    assert!(
        matches!(refused, Err(CommandError::OutboxFull { pending: 1 })),
        "got {refused:?}"
    );
    let drains = log.calls.load(Ordering::SeqCst) - published_so_far;
    assert!(
        drains <= 5,
        "the same record was published {drains} times for one command"
    );
}

// Time

#[tokio::test]
async fn occurred_at_never_goes_backwards_when_the_clock_does() {
    let clock = ManualClock::at(noon());
    let service = CommandService::new(MemoryStore::default(), MemoryLog::default(), clock.clone());
    let booked = run(&service, request("42", book())).await.unwrap();
    assert_eq!(booked.events[0].occurred_at, noon());

    let an_hour_earlier = noon().plus_millis(-3_600_000);
    clock.set(an_hour_earlier);
    let assigned = run(&service, request("42", assign("driver-1")))
        .await
        .unwrap();
    assert_eq!(assigned.events[0].occurred_at, noon());
    assert_eq!(assigned.events[0].recorded_at, an_hour_earlier);
    assert_eq!(head(&service, "42").last_occurred_at, Some(noon()));

    clock.set(noon().plus_millis(1_500));
    let adjusted = run(&service, request("42", adjust_fare(10_000)))
        .await
        .unwrap();
    assert_eq!(adjusted.events[0].occurred_at, noon().plus_millis(1_500));

    // Another entity has its own timeline.
    clock.set(an_hour_earlier);
    let other = run(&service, request("43", book())).await.unwrap();
    assert_eq!(other.events[0].occurred_at, an_hour_earlier);
}
