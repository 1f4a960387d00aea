//! `PublishMode: stream`: the command handler only commits, and the relay on the table's
//! change stream publishes each head's pending run and confirms it. The log's ordering
//! invariant holds through redeliveries, a relay that dies between publish and confirm, and
//! the sweep publishing alongside.

use timeline_core::envelope::{CommitRecord, StreamKey};
use timeline_core::ports::SystemClock;
use timeline_core::ride::{Location, RideAggregate, RideCommand, RideError};
use timeline_core::write::{
    CommandError, CommandOutcome, CommandRequest, IdempotencyKey, PublishMode, RequestContext,
    WriteConfig,
};
use timeline_engine::memory::{MemoryLog, MemoryStore};
use timeline_engine::relay::{relay, Change};
use timeline_engine::write::CommandService;

type Service = CommandService<MemoryStore, MemoryLog, SystemClock>;

fn handler_and_relay(config: WriteConfig) -> (Service, Service, MemoryStore, MemoryLog) {
    let (store, log) = (MemoryStore::default(), MemoryLog::default());
    let handler = CommandService::with_config(
        store.clone(),
        log.clone(),
        SystemClock,
        WriteConfig {
            publish: PublishMode::Stream,
            ..config
        },
    );
    let relay = CommandService::new(store.clone(), log.clone(), SystemClock);
    (handler, relay, store, log)
}

fn place(address: &str) -> Location {
    Location {
        address: address.into(),
        lat: 48.86,
        lon: 2.34,
    }
}

fn book() -> RideCommand {
    RideCommand::Book {
        rider_id: "rider-1".into(),
        pickup: place("A"),
        dropoff: place("B"),
        fare_estimate_cents: Some(1200),
    }
}

fn adjust(cents: i64) -> RideCommand {
    RideCommand::AdjustFare {
        fare_cents: cents,
        reason: "traffic".into(),
    }
}

async fn command(
    service: &Service,
    ride: &str,
    command: RideCommand,
    key: Option<&str>,
) -> Result<CommandOutcome, CommandError<RideError>> {
    service
        .execute::<RideAggregate>(CommandRequest {
            aggregate_id: ride.into(),
            command,
            expected_version: None,
            idempotency: key.map(|k| IdempotencyKey::given(k, "same")),
            context: RequestContext::default(),
        })
        .await
}

/// What the table's stream says after commits on these rides, in order.
fn changes(rides: &[&str]) -> Vec<Change> {
    rides
        .iter()
        .enumerate()
        .map(|(n, ride)| Change {
            sequence_number: format!("{:021}", n + 1),
            head: StreamKey::new("ride", *ride),
        })
        .collect()
}

fn versions(records: &[CommitRecord]) -> Vec<Vec<u64>> {
    records
        .iter()
        .map(|r| r.events.iter().map(|e| e.version).collect())
        .collect()
}

/// The invariant: in log order, each version of an entity first appears after every lower
/// one, and every record is a contiguous run.
fn in_order(records: &[CommitRecord]) -> bool {
    let mut highest = std::collections::HashMap::new();
    records.iter().all(|r| {
        let contiguous = r
            .events
            .windows(2)
            .all(|w| w[1].version == w[0].version + 1);
        r.events.iter().all(|e| {
            let seen = highest.entry(e.aggregate_id.clone()).or_insert(0);
            let fine = e.version <= *seen + 1;
            *seen = (*seen).max(e.version);
            fine
        }) && contiguous
    })
}

#[tokio::test]
async fn given_stream_mode_when_a_command_commits_then_it_answers_without_publishing() {
    let (handler, _, store, log) = handler_and_relay(WriteConfig::default());
    let outcome = command(&handler, "r1", book(), None).await.unwrap();
    assert_eq!((outcome.version, outcome.created), (1, true));
    assert!(outcome.relayed, "the answer says the relay publishes");
    assert!(!outcome.published);
    assert!(
        log.records().is_empty(),
        "nothing published on the request path"
    );
    let head = store.head(&StreamKey::new("ride", "r1")).unwrap();
    assert_eq!(head.pending.len(), 1, "the event waits in the outbox");
}

#[tokio::test]
async fn given_committed_heads_when_the_relay_takes_the_batch_then_each_pending_run_is_published_once(
) {
    let (handler, relayer, store, log) = handler_and_relay(WriteConfig::default());
    command(&handler, "r1", book(), None).await.unwrap();
    command(&handler, "r2", book(), None).await.unwrap();
    command(&handler, "r1", adjust(1500), None).await.unwrap();

    let report = relay(&relayer, &changes(&["r1", "r2", "r1"])).await;
    assert_eq!((report.heads, report.published), (2, 2));
    assert_eq!(report.first_failure, None);
    assert_eq!(versions(&log.records()), [vec![1, 2], vec![1]]);
    for ride in ["r1", "r2"] {
        let head = store.head(&StreamKey::new("ride", ride)).unwrap();
        assert!(head.pending.is_empty(), "{ride} confirmed");
    }

    // The event source mapping redelivers the batch: nothing is published twice.
    let again = relay(&relayer, &changes(&["r1", "r2", "r1"])).await;
    assert_eq!((again.heads, again.published), (2, 0));
    assert_eq!(log.records().len(), 2);
}

#[tokio::test]
async fn given_a_relay_that_dies_between_publish_and_confirm_then_the_retry_republishes_the_whole_run_in_order(
) {
    let (handler, relayer, store, log) = handler_and_relay(WriteConfig::default());
    command(&handler, "r1", book(), None).await.unwrap();
    store.fail_next_confirms(1);

    // Published, not confirmed: the relay names the change, so the mapping retries it (as
    // it retries a crashed invocation whole).
    let report = relay(&relayer, &changes(&["r1"])).await;
    assert_eq!(report.published, 1);
    assert!(report.first_failure.is_some(), "not confirmed: retried");
    let head = store.head(&StreamKey::new("ride", "r1")).unwrap();
    assert_eq!(head.pending.len(), 1, "still pending: the confirm was lost");

    // A crashed invocation is retried with the same batch; a later commit comes too.
    relay(&relayer, &changes(&["r1"])).await;
    command(&handler, "r1", adjust(1500), None).await.unwrap();
    relay(&relayer, &changes(&["r1"])).await;

    let records = log.records();
    assert_eq!(versions(&records), [vec![1], vec![1], vec![2]]);
    assert!(in_order(&records), "{:?}", versions(&records));
}

#[tokio::test]
async fn given_a_log_that_is_down_then_the_relay_names_the_first_change_it_could_not_publish() {
    let (handler, relayer, _, log) = handler_and_relay(WriteConfig::default());
    command(&handler, "r1", book(), None).await.unwrap();
    command(&handler, "r2", book(), None).await.unwrap();
    log.fail_next(1);

    let report = relay(&relayer, &changes(&["r1", "r2"])).await;
    assert_eq!(
        report.first_failure.as_deref(),
        Some(changes(&["r1"])[0].sequence_number.as_str())
    );
    assert!(log.records().is_empty(), "it stopped at the failure");

    // The mapping retries from that change; so does the sweep, and both are harmless.
    let retried = relay(&relayer, &changes(&["r1", "r2"])).await;
    assert_eq!((retried.published, retried.first_failure), (2, None));
    let swept = relayer.sweep(10).await.unwrap();
    assert_eq!(swept.published, 0, "nothing left for the safety net");
    assert_eq!(versions(&log.records()), [vec![1], vec![1]]);
}

#[tokio::test]
async fn given_stream_mode_a_full_outbox_is_refused_without_touching_the_log() {
    let (handler, relayer, _, log) = handler_and_relay(WriteConfig {
        max_pending: 1,
        ..WriteConfig::default()
    });
    command(&handler, "r1", book(), None).await.unwrap();
    let refused = command(&handler, "r1", adjust(1500), None).await;
    assert!(
        matches!(refused, Err(CommandError::OutboxFull { pending: 1 })),
        "{refused:?}"
    );
    assert!(log.records().is_empty(), "the handler never publishes");

    // Once the relay caught up, the command goes through.
    relay(&relayer, &changes(&["r1"])).await;
    let outcome = command(&handler, "r1", adjust(1500), None).await.unwrap();
    assert_eq!(outcome.version, 2);
}

#[tokio::test]
async fn given_stream_mode_a_repeated_key_says_whether_the_relay_published_it_yet() {
    let (handler, relayer, _, _) = handler_and_relay(WriteConfig::default());
    command(&handler, "r1", book(), Some("k1")).await.unwrap();
    let before = command(&handler, "r1", book(), Some("k1")).await.unwrap();
    assert!(before.replayed && before.relayed && !before.published);

    relay(&relayer, &changes(&["r1"])).await;
    let after = command(&handler, "r1", book(), Some("k1")).await.unwrap();
    assert!(after.replayed && after.relayed && after.published);
}
