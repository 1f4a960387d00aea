//! The write protocol, the outbox sweep and the processor under the faults AWS documents,
//! on both backends: throttling, 500s before and after the work is done (the caller cannot
//! tell), transactions cancelled by conflicts, slow answers, partial batches, empty pages
//! and expired iterators. Clients retry with the same Idempotency-Key until they get a
//! definitive answer, the sweep and the processor run alongside; then the faults stop and
//! everything drains. For every random fault schedule drawn:
//! - nothing is lost: every command answered as done is on the log, once, in its version;
//! - nothing is duplicated: no version is two events, no key is two commands, no view
//!   holds a version twice;
//! - no entity is stuck: every view reaches its head's version, nothing is parked, no
//!   outbox is left;
//! - every answer is true: an attempt that said "nothing was written" wrote nothing (the
//!   event that key committed was recorded during another attempt), and a command done is
//!   answered with the events the log holds.
//!
//! The AWS backend is moto behind the fault proxy; the embedded backend sits behind the
//! port wrappers with the same schedules. A stalled publish after a commit answers 202.

use outbox_relay::RelayHandler;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use timeline_aws::stream_reader::KinesisReader;
use timeline_core::codec::decode_record;
use timeline_core::ports::{
    Clock, EventLog, LogRecord, StreamReader, SystemClock, WriteModelStore,
};
use timeline_core::ports::{PageRequest, ReadModelQueries, ReadModelStore};
use timeline_core::ride::{Location, RideAggregate, RideCommand};
use timeline_core::shards::{Follower, PageEnd};
use timeline_core::views::fold;
use timeline_core::write::{
    CommandError, CommandRequest, IdempotencyKey, PublishMode, RequestContext, WriteConfig,
};
use timeline_core::EventEnvelope;
use timeline_core::StreamKey;
use timeline_core::Timestamp;
use timeline_embedded::Embedded;
use timeline_engine::projection::{IncomingRecord, Processor};
use timeline_engine::write::CommandService;
use timeline_testkit::faults::{Faults, Faulty, Schedule};
use timeline_testkit::{post, read, unique};

/// Fault schedules drawn per backend (seed 0 has every kind of fault on), and the most any
/// fault happens.
const AWS_SCHEDULES: u64 = 3;
const EMBEDDED_SCHEDULES: u64 = 8;
/// Schedules per backend with the stream relay publishing.
const STREAM_SCHEDULES: u64 = 2;
const MAX_RATE: f64 = 0.3;
const RIDES: usize = 4;

/// What one attempt of a client answered.
#[derive(Debug, Clone, PartialEq)]
enum Answer {
    Done {
        version: u64,
        event_ids: Vec<String>,
    },
    /// Refused, and said nothing was written (throttled, busy, unavailable, contention).
    NothingWritten(String),
    /// The outcome is unknown: retry with the key.
    Unknown,
}

/// One client request: its key, and each attempt's window and answer.
#[derive(Debug)]
struct Asked {
    key: String,
    attempts: Vec<(Timestamp, Timestamp, Answer)>,
}

fn place(address: &str, lat: f64) -> Location {
    Location {
        address: address.into(),
        lat,
        lon: -6.2,
    }
}

/// A ride's life: booked, assigned, started, re-priced twice, completed.
fn script(n: usize) -> Vec<RideCommand> {
    vec![
        RideCommand::Book {
            rider_id: format!("rider-{n}"),
            pickup: place("A", 53.3),
            dropoff: place("B", 53.4),
            fare_estimate_cents: Some(9000),
        },
        RideCommand::AssignDriver {
            driver_id: "driver-1".into(),
        },
        RideCommand::Start,
        RideCommand::AdjustFare {
            fare_cents: 9500,
            reason: "detour".into(),
        },
        RideCommand::AdjustFare {
            fare_cents: 9900,
            reason: "toll".into(),
        },
        RideCommand::Complete {
            final_fare_cents: 9900,
            distance_km: 8.5,
        },
    ]
}

/// Sends one command until it gets a definitive answer, with the same key each time.
async fn ask<S: WriteModelStore, L: EventLog>(
    service: &CommandService<S, L, SystemClock>,
    id: &str,
    command: RideCommand,
    key: String,
) -> Asked {
    let mut asked = Asked {
        key: key.clone(),
        attempts: Vec::new(),
    };
    for _ in 0..60 {
        let start = SystemClock.now();
        let result = service
            .execute::<RideAggregate>(CommandRequest {
                aggregate_id: id.into(),
                command: command.clone(),
                expected_version: None,
                idempotency: Some(IdempotencyKey::given(key.clone(), format!("{command:?}"))),
                context: RequestContext {
                    caller: None,
                    actor: "client".into(),
                    ..Default::default()
                },
            })
            .await;
        let answer = match result {
            Ok(outcome) => Answer::Done {
                version: outcome.version,
                event_ids: outcome.events.iter().map(|e| e.event_id.clone()).collect(),
            },
            Err(CommandError::OutcomeUnknown { .. }) => Answer::Unknown,
            Err(
                e @ (CommandError::Store(timeline_core::ports::StoreError::Unavailable(_))
                | CommandError::Busy
                | CommandError::Contention { .. }
                | CommandError::OutboxFull { .. }),
            ) => Answer::NothingWritten(e.to_string()),
            Err(other) => panic!("{id}: {command:?} was refused for good: {other}"),
        };
        let done = matches!(answer, Answer::Done { .. });
        asked.attempts.push((start, SystemClock.now(), answer));
        if done {
            return asked;
        }
        // Attempts do not share a millisecond: an event's time says which one recorded it.
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    panic!("{id}: {command:?} never got an answer: {asked:?}");
}

/// Follows every shard into a function, as the event source mapping does: `handle` takes a
/// batch and names the index of the first record it could not take. Returns whether there
/// was work (or a failure to retry).
async fn follow<Rd: StreamReader>(
    reader: &Rd,
    follower: &mut Follower,
    handle: impl AsyncFn(&[LogRecord]) -> Option<usize>,
) -> bool {
    let Ok(shards) = reader.shards().await else {
        return true;
    };
    let ready: Vec<(String, bool)> = follower
        .ready(&shards)
        .into_iter()
        .map(|s| (s.id.clone(), s.closed))
        .collect();
    let mut busy = false;
    for (shard, closed) in ready {
        let Ok(page) = reader.read(&shard, &follower.from(&shard), 100).await else {
            busy = true;
            continue;
        };
        if page.records.is_empty() {
            busy |= page.end == PageEnd::Behind;
            if page.end == PageEnd::Closed || closed && page.end == PageEnd::CaughtUp {
                follower.finish(&shard);
                busy = true;
            }
            continue;
        }
        busy = true;
        let done = match handle(&page.records).await {
            None => page.records.last(),
            Some(0) => None,
            Some(at) => page.records.get(at - 1),
        };
        if let Some(done) = done {
            follower.done_up_to(&shard, &done.sequence_number);
        }
    }
    busy
}

/// The processor as the Kinesis mapping's function.
async fn project<R: ReadModelStore>(
    processor: &Processor<R>,
    records: &[LogRecord],
) -> Option<usize> {
    let incoming: Vec<IncomingRecord> = records.iter().map(IncomingRecord::from).collect();
    let outcome = processor.process(&incoming, SystemClock.now()).await;
    outcome.first_failure.map(|(at, _)| at)
}

/// The outbox relay as the table stream mapping's function.
async fn relay<S: WriteModelStore, L: EventLog>(
    relay: &RelayHandler<S, L, SystemClock>,
    records: &[LogRecord],
) -> Option<usize> {
    let failed = relay.handle_read(records).await?;
    Some(
        records
            .iter()
            .position(|r| r.sequence_number == failed)
            .unwrap_or(0),
    )
}

/// Every event on the log, read without faults, in shard order.
async fn log_events<Rd: StreamReader>(reader: &Rd) -> Vec<EventEnvelope> {
    let mut follower = Follower::default();
    let mut events = Vec::new();
    loop {
        let shards = reader.shards().await.unwrap();
        let ready: Vec<(String, bool)> = follower
            .ready(&shards)
            .into_iter()
            .map(|s| (s.id.clone(), s.closed))
            .collect();
        if ready.is_empty() {
            return events;
        }
        let mut moved = false;
        for (shard, closed) in ready {
            let page = reader
                .read(&shard, &follower.from(&shard), 1000)
                .await
                .unwrap();
            if let Some(last) = page.records.last() {
                follower.done_up_to(&shard, &last.sequence_number);
                moved = true;
            }
            for r in &page.records {
                events.extend(decode_record(&r.data).unwrap().events);
            }
            if page.records.is_empty() && (page.end != PageEnd::Behind || closed) {
                follower.finish(&shard);
                moved = true;
            }
        }
        if !moved {
            return events;
        }
    }
}

/// The ports a run uses, with the faults behind them; `faults` turns them on and off.
struct Ports<S, L, R, Rd, Tr> {
    store: S,
    log: L,
    views: R,
    reader: Rd,
    /// Who publishes; with the stream relay, the table's stream it follows (None on the
    /// embedded backend, whose relay polls the outbox as the sweep does).
    publish: PublishMode,
    table_stream: Option<Tr>,
}

async fn exercise<S, L, R, Rd, Tr>(ports: Ports<S, L, R, Rd, Tr>, faults: impl Fn(bool), run: &str)
where
    S: WriteModelStore + Clone,
    L: EventLog + Clone,
    R: ReadModelStore + ReadModelQueries + Clone,
    Rd: StreamReader,
    Tr: StreamReader,
{
    let config = WriteConfig {
        publish: ports.publish,
        ..WriteConfig::default()
    };
    let service =
        CommandService::with_config(ports.store.clone(), ports.log.clone(), SystemClock, config);
    let processor = Processor::new(ports.views.clone());
    let relayer = RelayHandler::new(ports.store.clone(), ports.log.clone(), SystemClock);
    let mut follower = Follower::default();
    let mut relay_follower = Follower::default();
    let rides: Vec<String> = (0..RIDES).map(|n| format!("{run}-r{n}")).collect();

    faults(true);
    let clients_done = AtomicBool::new(false);
    let clients = async {
        let per_ride = rides.iter().enumerate().map(|(n, id)| {
            let service = &service;
            async move {
                let mut asked = Vec::new();
                for (step, command) in script(n).into_iter().enumerate() {
                    asked.push(ask(service, id, command, format!("{id}-step-{step}")).await);
                }
                asked
            }
        });
        let asked: Vec<Asked> = futures::future::join_all(per_ride)
            .await
            .into_iter()
            .flatten()
            .collect();
        clients_done.store(true, Ordering::SeqCst);
        asked
    };
    let alongside = async {
        while !clients_done.load(Ordering::SeqCst) {
            if let Some(table) = &ports.table_stream {
                follow(table, &mut relay_follower, async |r| {
                    relay(&relayer, r).await
                })
                .await;
            }
            let _ = service.sweep(100).await;
            follow(&ports.reader, &mut follower, async |r| {
                project(&processor, r).await
            })
            .await;
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    let (asked, ()) = futures::join!(clients, alongside);

    // The faults stop; the relay, the sweep and the processor catch up.
    faults(false);
    if let Some(table) = &ports.table_stream {
        for _ in 0..200 {
            if !follow(table, &mut relay_follower, async |r| {
                relay(&relayer, r).await
            })
            .await
            {
                break;
            }
        }
        // The relay alone empties every outbox once it caught up: the sweep is only the
        // safety net.
        for id in &rides {
            let head = ports
                .store
                .load_head(&StreamKey::new("ride", id))
                .await
                .unwrap();
            assert_eq!(head.unwrap().pending, [], "{run}: {id} left in the outbox");
        }
    }
    for _ in 0..50 {
        let swept = service.sweep(100).await.unwrap();
        if swept.examined == 0 {
            break;
        }
    }
    for _ in 0..200 {
        if !follow(&ports.reader, &mut follower, async |r| {
            project(&processor, r).await
        })
        .await
        {
            break;
        }
    }

    // The log: per ride, versions 1.. each one event; no command twice.
    // (Earlier runs share the backend: only this run's rides count.)
    let events: Vec<EventEnvelope> = log_events(&ports.reader)
        .await
        .into_iter()
        .filter(|e| e.aggregate_id.starts_with(&format!("{run}-")))
        .collect();
    let mut by_version: BTreeMap<(String, u64), &EventEnvelope> = BTreeMap::new();
    for e in &events {
        let kept = by_version
            .entry((e.aggregate_id.clone(), e.version))
            .or_insert(e);
        assert_eq!(
            kept.event_id, e.event_id,
            "{run}: {} v{} is two events",
            e.aggregate_id, e.version
        );
    }
    let mut commands: BTreeMap<&str, BTreeSet<u64>> = BTreeMap::new();
    for e in by_version.values() {
        commands
            .entry(e.metadata.command_id.as_str())
            .or_default()
            .insert(e.version);
    }
    assert_eq!(commands.len(), RIDES * 6, "{run}: one commit per command");
    assert!(
        commands.values().all(|v| v.len() == 1),
        "{run}: {commands:?}"
    );

    for id in &rides {
        let key = StreamKey::new("ride", id);
        let mine: Vec<EventEnvelope> = by_version
            .range((id.clone(), 0)..=(id.clone(), u64::MAX))
            .map(|(_, e)| (*e).clone())
            .collect();
        let versions: Vec<u64> = mine.iter().map(|e| e.version).collect();
        assert_eq!(versions, (1..=6).collect::<Vec<_>>(), "{run}: {id}");
        // The head agrees, with nothing left in its outbox.
        let head = ports.store.load_head(&key).await.unwrap().unwrap();
        assert_eq!((head.version, head.pending.len()), (6, 0), "{run}: {id}");
        // The view is the fold of the log; its history holds each version once.
        let view = ports.views.view(&key).await.unwrap().expect("a view");
        let folded = fold::<RideAggregate>(&mine).unwrap().unwrap().0;
        assert_eq!(view, serde_json::to_value(&folded).unwrap(), "{run}: {id}");
        assert_eq!(view["status"], "completed");
        let history = ports
            .views
            .history(
                &key,
                None,
                None,
                &PageRequest {
                    limit: 100,
                    cursor: None,
                },
            )
            .await
            .unwrap();
        let seen: Vec<u64> = history.items.iter().map(|h| h.version).collect();
        assert_eq!(seen, (1..=6).collect::<Vec<_>>(), "{run}: {id} history");
    }
    assert_eq!(
        ports.views.parked().await.unwrap(),
        [],
        "{run}: nothing parked"
    );

    // Every answer is true.
    for a in &asked {
        let (_, _, last) = a.attempts.last().unwrap();
        let Answer::Done { version, event_ids } = last else {
            unreachable!()
        };
        // The answer names the events the log holds at that version.
        let logged = by_version
            .iter()
            .find(|(_, e)| event_ids.contains(&e.event_id))
            .map(|((_, v), e)| (*v, e.recorded_at));
        let (logged_version, recorded_at) =
            logged.unwrap_or_else(|| panic!("{run}: {} answered done, not on the log", a.key));
        assert_eq!(logged_version, *version, "{run}: {}", a.key);
        // The attempt that committed it did not say nothing was written.
        for (start, end, answer) in &a.attempts {
            if *start <= recorded_at && recorded_at <= *end {
                assert!(
                    !matches!(answer, Answer::NothingWritten(_)),
                    "{run}: {} committed during an attempt that said {answer:?}",
                    a.key
                );
            }
        }
    }
}

/// Runs `schedules` fault schedules on AWS (moto behind the proxy); with the stream relay,
/// it follows the write-model table's DynamoDB stream through the proxy, faults and all.
async fn on_aws(publish: PublishMode, schedules: u64, prefix: &str) {
    let (env, proxy) = timeline_testkit::proxy_env!();
    for seed in 0..schedules {
        let faults = Faults::random(seed, MAX_RATE);
        let table_stream = match publish {
            PublishMode::Inline => None,
            PublishMode::Stream => Some(env.table_stream().await),
        };
        let ports = Ports {
            store: env.store(),
            log: env.log(),
            views: env.read_models(),
            reader: KinesisReader::new(env.clients.kinesis().clone(), &env.names.event_stream),
            publish,
            table_stream,
        };
        exercise(
            ports,
            |on| proxy.set(if on { faults.clone() } else { Faults::none() }),
            &format!("{prefix}{seed}"),
        )
        .await;
    }
    let injected = proxy.injected();
    for kind in [
        "throttle",
        "server_error",
        "lost_answer",
        "transaction_conflict",
    ] {
        assert!(
            injected.get(kind).copied().unwrap_or(0) > 0,
            "no {kind}: {injected:?}"
        );
    }
    if publish == PublishMode::Stream {
        let requests = proxy.requests();
        assert!(
            requests.contains_key("dynamodb:GetRecords"),
            "the relay read the table stream: {requests:?}"
        );
    }
}

/// Runs `schedules` fault schedules on the embedded backend behind the port wrappers. It
/// has no change stream: its relay is the outbox poll the runner does (the sweep here).
async fn on_embedded(publish: PublishMode, schedules: u64, prefix: &str) {
    let dir = std::env::temp_dir().join(unique(prefix));
    let db = Embedded::open(&dir).unwrap();
    for seed in 0..schedules {
        let schedule = Schedule::new(seed, Faults::none());
        let faulty = Faulty::new(db.clone(), schedule.clone());
        let faults = Faults::random(seed, MAX_RATE);
        let ports = Ports {
            store: faulty.clone(),
            log: faulty.clone(),
            views: faulty.clone(),
            reader: faulty.clone(),
            publish,
            table_stream: None::<Faulty<Embedded>>,
        };
        exercise(
            ports,
            |on| schedule.set(if on { faults.clone() } else { Faults::none() }),
            &format!("{prefix}{seed}"),
        )
        .await;
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_aws_commands_the_sweep_and_the_processor_lose_and_duplicate_nothing_under_faults() {
    on_aws(PublishMode::Inline, AWS_SCHEDULES, "aws").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_backend_commands_the_sweep_and_the_processor_lose_and_duplicate_nothing_under_faults(
) {
    on_embedded(PublishMode::Inline, EMBEDDED_SCHEDULES, "emb").await;
}

/// `PublishMode: stream`: the command service only commits; the relay publishes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_aws_with_the_stream_relay_commands_the_relay_and_the_processor_lose_and_duplicate_nothing_under_faults(
) {
    on_aws(PublishMode::Stream, STREAM_SCHEDULES, "aws-relay").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_backend_with_the_polling_relay_nothing_is_lost_or_duplicated_under_faults()
{
    on_embedded(PublishMode::Stream, STREAM_SCHEDULES, "emb-relay").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_that_stalls_after_the_commit_answers_202_and_the_sweep_publishes_it() {
    let (env, proxy) = timeline_testkit::proxy_env!();
    let api = command_handler::CommandApi::new(env.store(), env.log(), SystemClock);
    let body = serde_json::json!({
        "id": "stalled", "rider_id": "r",
        "pickup": { "address": "A", "lat": 53.3, "lon": -6.2 },
        "dropoff": { "address": "B", "lat": 53.4, "lon": -6.2 },
    });
    // Kinesis answers nothing for a minute; the SDK's operation timeout ends the wait.
    proxy.set(Faults {
        slow: 1.0,
        delay: Duration::from_secs(60),
        only: vec!["PutRecord".into(), "PutRecords".into()],
        ..Faults::none()
    });
    let started = std::time::Instant::now();
    let (status, answer, _) = read(api.handle(post("/rides", &body, &[])).await);
    let took = started.elapsed();
    assert_eq!(status, 202, "{answer}");
    assert_eq!(answer["published"], false);
    // Well inside the function's timeout (it would have waited the full minute).
    assert!(took < Duration::from_secs(20), "{took:?}");
    let key = StreamKey::new("ride", "stalled");
    let head = env.store().load_head(&key).await.unwrap().unwrap();
    assert_eq!(head.pending.len(), 1, "committed, in the outbox");

    proxy.set(Faults::none());
    let service = CommandService::new(env.store(), env.log(), SystemClock);
    assert_eq!(service.sweep(100).await.unwrap().published, 1);
    assert!(env
        .store()
        .load_head(&key)
        .await
        .unwrap()
        .unwrap()
        .pending
        .is_empty());
    assert_eq!(env.events().await.len(), 1);
}

fn booking(id: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "rider_id": "r",
        "pickup": { "address": "A", "lat": 53.3, "lon": -6.2 },
        "dropoff": { "address": "B", "lat": 53.4, "lon": -6.2 },
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_whose_answer_is_lost_is_answered_truly_over_http() {
    let (env, proxy) = timeline_testkit::proxy_env!();
    let api = command_handler::CommandApi::new(env.store(), env.log(), SystemClock);
    let only = |op: &str| vec![op.to_owned()];

    // Every commit fails with a 500 before doing anything, and the key is not there: the
    // outcome is unknown (a commit may still be in flight), and the answer gives the key.
    proxy.set(Faults {
        server_error: 1.0,
        only: only("TransactWriteItems"),
        ..Faults::none()
    });
    let (status, problem, headers) = read(api.handle(post("/rides", &booking("u1"), &[])).await);
    assert_eq!(
        (status, problem["code"].as_str()),
        (503, Some("outcome_unknown")),
        "{problem}"
    );
    let key = problem["idempotency_key"].as_str().unwrap().to_owned();
    assert_eq!(headers["idempotency-key"], key.as_str());
    assert!(headers.contains_key("retry-after"));
    // Retried with that key once the store answers: done, and done once.
    proxy.set(Faults::none());
    let retry = [("Idempotency-Key", key.as_str())];
    let (status, body, _) = read(api.handle(post("/rides", &booking("u1"), &retry)).await);
    assert_eq!(status, 201, "{body}");

    // Every commit is done and its answer lost: the SDK's retry meets the commit, the key
    // says it was this request's, and the answer is the commit's.
    proxy.set(Faults {
        lost_answer: 1.0,
        only: only("TransactWriteItems"),
        ..Faults::none()
    });
    let (status, body, headers) = read(api.handle(post("/rides", &booking("u2"), &[])).await);
    assert_eq!(status, 201, "{body}");
    assert_eq!(headers["idempotent-replayed"], "true");
    assert_eq!(body["version"], 1);

    // Every commit is cancelled (another transaction on the item, or throttled): nothing
    // was written, and it says so.
    proxy.set(Faults {
        transaction_conflict: 1.0,
        only: only("TransactWriteItems"),
        ..Faults::none()
    });
    let before = env.table_items().await;
    let (status, problem, _) = read(api.handle(post("/rides", &booking("u3"), &[])).await);
    assert_eq!(status, 503, "{problem}");
    assert!(
        ["store_busy", "store_unavailable"].contains(&problem["code"].as_str().unwrap()),
        "{problem}"
    );
    assert!(problem["detail"]
        .as_str()
        .unwrap()
        .contains("nothing was written"));
    proxy.set(Faults::none());
    assert_eq!(env.table_items().await, before, "nothing was written");
    let ids: Vec<String> = env
        .events()
        .await
        .into_iter()
        .map(|e| e.aggregate_id)
        .collect();
    assert_eq!(ids, ["u1", "u2"]);
}
