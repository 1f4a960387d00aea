//! Time travel, history, rebuild and verify under the faults AWS documents, on both backends.
//! For every random fault schedule drawn, each answer equals the answer without faults, or
//! says plainly that it is incomplete (the versions it lacks) or that the log could not be
//! read (a "retry later"): never a different answer marked complete. A rebuild under faults,
//! resumed without them from where it said, gives the read models byte for byte.
//!
//! The AWS backend runs against moto behind the fault proxy (empty pages, expiring
//! iterators, throttling, 500s, slow answers, lost answers, partial batches, small listing
//! pages); the embedded backend behind port wrappers with the same schedules.

mod local;
mod support;

use hydrator::{Hydrator, HydratorError, HydratorRequest};
use local::Dir;
use serde_json::Value;
use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use support::*;
use timeline_core::ports::ReadModelStore;
use timeline_core::ports::{EventSource, Stored};
use timeline_core::ports::{StreamReader, SystemClock};
use timeline_core::shards::{PageEnd, ReadFrom};
use timeline_core::time::Deadline;
use timeline_core::EventEnvelope;
use timeline_core::StreamKey;
use timeline_embedded::{Embedded, LocalArchive};
use timeline_engine::log_source::LogSource;
use timeline_engine::projection::{IncomingRecord, Processor};
use timeline_engine::pump::{Pump, PumpConfig, StreamPump};
use timeline_testkit::faults::{Faults, Faulty, Schedule};
use timeline_testkit::{post, read, scan_sorted, unique, TestEnv};

/// Fault schedules drawn per backend (the first has every kind of fault on), and the most
/// any fault happens. moto is slow enough that its run is the shorter.
const AWS_SCHEDULES: u64 = 4;
const EMBEDDED_SCHEDULES: u64 = 10;
const MAX_RATE: f64 = 0.3;

/// What each request is asked, for every entity: the state now, at each version, at each
/// event's time and just before it; the whole history and the part from its second event;
/// and two entities that do not exist.
fn requests(events: &[EventEnvelope]) -> Vec<HydratorRequest> {
    let mut by_entity: BTreeMap<StreamKey, Vec<&EventEnvelope>> = BTreeMap::new();
    for e in events {
        by_entity.entry(e.stream_key()).or_default().push(e);
    }
    let mut requests = Vec::new();
    let state = |key: &StreamKey, as_of, version| HydratorRequest::State {
        aggregate_type: key.aggregate_type.clone(),
        aggregate_id: key.aggregate_id.clone(),
        as_of,
        version,
    };
    for (key, mut events) in by_entity {
        events.sort_by_key(|e| e.version);
        events.dedup_by_key(|e| e.version);
        requests.push(state(&key, None, None));
        for e in &events {
            requests.push(state(&key, None, Some(e.version)));
            requests.push(state(&key, Some(e.occurred_at), None));
            requests.push(state(&key, Some(e.occurred_at.plus_millis(-1)), None));
        }
        requests.push(state(&key, None, Some(events.len() as u64 + 1)));
        requests.push(HydratorRequest::History {
            aggregate_type: key.aggregate_type.clone(),
            aggregate_id: key.aggregate_id.clone(),
            from: None,
            to: None,
        });
        requests.push(HydratorRequest::History {
            aggregate_type: key.aggregate_type.clone(),
            aggregate_id: key.aggregate_id.clone(),
            from: events.get(1).map(|e| e.occurred_at),
            to: events.last().map(|e| e.occurred_at),
        });
    }
    requests.push(state(&StreamKey::new("ride", "nobody"), None, None));
    requests.push(state(&StreamKey::new("video", "nothing"), None, Some(1)));
    requests
}

#[derive(Debug, Default)]
struct Tally {
    same: usize,
    incomplete: usize,
    unavailable: usize,
}

impl Tally {
    /// Judges one answer against the answer without faults.
    fn judge(&mut self, what: &str, baseline: &Value, answer: Result<Value, HydratorError>) {
        match answer {
            Err(HydratorError::Source(_)) => self.unavailable += 1,
            Err(e) => panic!("{what}: {e}"),
            Ok(answer) if answer == *baseline => self.same += 1,
            Ok(answer) => {
                assert_ne!(
                    answer["complete"], true,
                    "{what}: a different answer marked complete under faults:\n{answer}\nwithout faults:\n{baseline}"
                );
                let says_why = answer["missing_versions"]
                    .as_array()
                    .is_some_and(|m| !m.is_empty())
                    || answer["issues"].as_array().is_some_and(|i| !i.is_empty());
                assert!(says_why, "{what}: incomplete without saying why: {answer}");
                self.incomplete += 1;
            }
        }
    }
}

/// Every request's answer within a 10 s budget each.
async fn answers<S, T, F, R>(
    h: &Hydrator<S, T, F>,
    requests: &[HydratorRequest],
) -> Vec<Result<Value, HydratorError>>
where
    S: EventSource,
    T: Stored,
    F: Fn(Option<&str>) -> R + Send + Sync,
    R: ReadModelStore,
{
    let mut out = Vec::with_capacity(requests.len());
    for request in requests {
        let deadline = Deadline::after(Duration::from_secs(10));
        out.push(h.handle(request.clone(), &deadline).await);
    }
    out
}

/// Rebuilds with faults until it stops (finished, out of time, or failed), then resumes
/// without faults from the last position it gave; a run that reported problems is run again
/// from the start without faults (what an operator does with such a report).
async fn rebuild_with_faults_then_resume<S, T, F, R>(
    h: &Hydrator<S, T, F>,
    into: &str,
    faults_off: impl Fn(),
) where
    S: EventSource,
    T: Stored,
    F: Fn(Option<&str>) -> R + Send + Sync,
    R: ReadModelStore,
{
    let mut last = None;
    let faulty = h
        .rebuild(
            Some(into),
            None,
            &Deadline::after(Duration::from_secs(60)),
            &mut |report, _, _| last = report.position.clone(),
        )
        .await;
    faults_off();
    let resume = match faulty {
        Ok(report) if report.finished && report.problems.is_empty() => return,
        Ok(report) if report.finished => None,
        Ok(report) => report.position,
        Err(_) => last,
    };
    let report = h
        .rebuild(Some(into), resume, &Deadline::none(), &mut |_, _, _| {})
        .await
        .unwrap();
    assert!(report.finished && report.problems.is_empty(), "{report:?}");
}

async fn fresh_table(env: &TestEnv) -> String {
    let table = unique("rebuilt");
    timeline_aws::resources::create_table(
        env.clients.dynamodb(),
        &table,
        &timeline_aws::resources::read_model_table(),
    )
    .await
    .unwrap();
    table
}

/// Runs one backend through fault schedules: its two hydrators (reading fresh events from
/// the stream, and from the archive first, as older ones are) answer every request without
/// faults (the baseline, whole), then under each schedule (read faults for answers and
/// verify, every fault for a rebuild into a fresh target, resumed without faults).
/// `every` asks every request under each schedule, else each schedule asks its share.
#[allow(clippy::too_many_arguments)]
async fn exercise<S, T, F, R, NewTarget, Rows>(
    backend: &str,
    hydrators: &[Hydrator<S, T, F>; 2],
    requests: &[HydratorRequest],
    schedules: u64,
    every: bool,
    set_faults: impl Fn(Faults),
    fresh_target: impl Fn() -> NewTarget,
    rows: impl Fn(String) -> Rows,
) -> Tally
where
    S: EventSource,
    T: Stored,
    F: Fn(Option<&str>) -> R + Send + Sync,
    R: ReadModelStore,
    NewTarget: std::future::Future<Output = String>,
    Rows: std::future::Future<Output = Vec<String>>,
{
    let mut baselines = Vec::new();
    for h in hydrators {
        let answers: Vec<Value> = answers(h, requests)
            .await
            .into_iter()
            .map(|a| a.unwrap())
            .collect();
        assert!(
            answers.iter().all(|a| a["complete"] == true),
            "{backend}: whole without faults"
        );
        baselines.push(answers);
    }
    assert_eq!(
        baselines[0], baselines[1],
        "{backend}: stream and archive agree"
    );
    let verify = hydrators[0]
        .handle(HydratorRequest::Verify {}, &Deadline::none())
        .await
        .unwrap();
    let reference = fresh_target().await;
    hydrators[0]
        .rebuild(Some(&reference), None, &Deadline::none(), &mut |_, _, _| {})
        .await
        .unwrap();
    let reference = rows(reference).await;

    let mut tally = Tally::default();
    for seed in 0..schedules {
        let faults = Faults::random(seed, MAX_RATE);
        eprintln!("{backend} schedule {seed}: {faults:?}");
        set_faults(faults.clone().reads_only());
        let picked: Vec<usize> = (0..requests.len())
            .filter(|i| every || (*i as u64) % schedules == seed)
            .collect();
        let asked: Vec<HydratorRequest> = picked.iter().map(|i| requests[*i].clone()).collect();
        for (h, baseline) in hydrators.iter().zip(&baselines) {
            for ((i, answer), request) in picked.iter().zip(answers(h, &asked).await).zip(&asked) {
                tally.judge(
                    &format!("{backend} schedule {seed} {request:?}"),
                    &baseline[*i],
                    answer,
                );
            }
        }
        match hydrators[0]
            .handle(
                HydratorRequest::Verify {},
                &Deadline::after(Duration::from_secs(30)),
            )
            .await
        {
            Ok(report) => assert_eq!(report, verify, "{backend} schedule {seed}: verify"),
            Err(HydratorError::Source(_)) => tally.unavailable += 1,
            Err(e) => panic!("{e}"),
        }
        // A rebuild meets write faults too (lost answers, partial batches).
        set_faults(Faults::none());
        let into = fresh_target().await;
        set_faults(faults);
        rebuild_with_faults_then_resume(&hydrators[0], &into, || set_faults(Faults::none())).await;
        assert_eq!(
            rows(into).await,
            reference,
            "{backend} schedule {seed}: rebuilt read models differ"
        );
    }
    // Faults that only reshape reads (empty pages, expiring iterators, small listings, a
    // little slowness) are survived whole: every answer is the fault-free one.
    set_faults(Faults {
        empty_page: 0.5,
        expire_iterator: 0.2,
        slow: 0.2,
        delay: std::time::Duration::from_millis(5),
        s3_page: Some(1),
        shards_page: Some(1),
        ..Faults::none()
    });
    for (h, baseline) in hydrators.iter().zip(&baselines) {
        for ((request, answer), expected) in requests
            .iter()
            .zip(answers(h, requests).await)
            .zip(baseline)
        {
            assert_eq!(
                &answer.unwrap_or_else(|e| panic!("{backend} {request:?}: {e}")),
                expected,
                "{backend} {request:?} under survivable faults"
            );
        }
    }
    match hydrators[0]
        .handle(HydratorRequest::Verify {}, &Deadline::none())
        .await
    {
        Ok(report) => assert_eq!(report, verify, "{backend}: verify under survivable faults"),
        Err(e) => panic!("{backend}: verify under survivable faults: {e}"),
    }
    set_faults(Faults::none());
    eprintln!("{backend}: {tally:?}");
    // The log is whole: an answer may be unavailable under faults, never incomplete.
    assert_eq!(tally.incomplete, 0, "{backend}: {tally:?}");
    // The faults are survivable: many answers come through whole despite them (on the
    // embedded backend a fault is one the SDK's retries did not get past).
    assert!(
        tally.same * 3 > tally.same + tally.incomplete + tally.unavailable,
        "{backend}: {tally:?}"
    );
    tally
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_the_log_cannot_give_in_time_is_out_of_time_not_late() {
    let (env, proxy) = timeline_testkit::proxy_env!();
    let w = World::build(env).await;
    let h = w.hydrator(
        w.source(&w.env.names.event_stream, PREFIX)
            .with_archive_delay(Duration::ZERO),
    );
    // Every archive read stalls for 6 s; the answer has 1 s.
    proxy.set(Faults {
        slow: 1.0,
        delay: Duration::from_secs(6),
        only: vec!["GetObject".into()],
        ..Faults::none()
    });
    let started = std::time::Instant::now();
    let answer = h
        .handle(
            HydratorRequest::State {
                aggregate_type: "video".into(),
                aggregate_id: "seed".into(),
                as_of: None,
                version: None,
            },
            &Deadline::after(Duration::from_secs(1)),
        )
        .await;
    let took = started.elapsed();
    proxy.set(Faults::none());
    assert!(
        matches!(
            answer,
            Err(HydratorError::Source(
                timeline_core::ports::SourceError::OutOfTime(_)
            ))
        ),
        "{answer:?}"
    );
    // Answered around its deadline, not after the stalled call.
    assert!(took < Duration::from_secs(4), "{took:?}");
}

fn assert_met(backend: &str, injected: &BTreeMap<String, usize>) {
    eprintln!("{backend} faults injected: {injected:?}");
    for kind in [
        "throttle",
        "server_error",
        "empty_page",
        "slow",
        "lost_answer",
    ] {
        assert!(
            injected.get(kind).is_some_and(|n| *n > 0),
            "{backend}: no {kind} fault was drawn: {injected:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_aws_every_answer_under_faults_is_right_or_says_it_is_not_whole() {
    let (env, proxy) = timeline_testkit::proxy_env!();
    let w = World::build(env).await;
    let hydrators = [
        w.full(),
        w.hydrator(
            w.source(&w.env.names.event_stream, PREFIX)
                .with_archive_delay(Duration::ZERO),
        ),
    ];
    exercise(
        "aws",
        &hydrators,
        &requests(&w.events),
        AWS_SCHEDULES,
        false,
        |faults| proxy.set(faults),
        || fresh_table(&w.env),
        |table| {
            let dynamodb = w.env.clients.dynamodb().clone();
            async move { scan_sorted(&dynamodb, &table).await }
        },
    )
    .await;
    assert_met("aws", &proxy.injected());
}

/// The world's commands on the embedded backend, the log pumped into the local archive in
/// small objects and projected into the read models.
async fn embedded_world(dir: &Path) -> (Embedded, Vec<EventEnvelope>) {
    let db = Embedded::open(dir).unwrap();
    let api = command_handler::CommandApi::new(db.clone(), db.clone(), SystemClock);
    for (path, body) in steps() {
        let (status, answer, _) = read(api.handle(post(&path, &body, &[])).await);
        assert!(status == 200 || status == 201, "{path}: {status} {answer}");
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let mut config = PumpConfig::new("timeline-archive");
    config.buffer_bytes = 1500;
    let mut pump = StreamPump::new(db.clone(), "log", db.archive(PREFIX), config);
    pump.poll().await.unwrap();
    pump.flush().await.unwrap();
    let processor = Processor::new(db.clone());
    let mut events = Vec::new();
    for shard in db.shards().await.unwrap() {
        let page = db.read(&shard.id, &ReadFrom::Oldest, 10_000).await.unwrap();
        assert_eq!(page.end, PageEnd::CaughtUp);
        let incoming: Vec<IncomingRecord> = page.records.iter().map(IncomingRecord::from).collect();
        let outcome = processor
            .process(
                &incoming,
                timeline_core::Timestamp::from_datetime(chrono::Utc::now()),
            )
            .await;
        assert!(outcome.failures.is_empty(), "{:?}", outcome.failures);
        for r in page.records {
            events.extend(timeline_core::codec::decode_record(&r.data).unwrap().events);
        }
    }
    (db, events)
}

type EmbeddedSource =
    LogSource<Faulty<LocalArchive>, Faulty<Embedded>, Faulty<Embedded>, Faulty<Embedded>>;
type EmbeddedTarget = Box<dyn Fn(Option<&str>) -> Faulty<Embedded> + Send + Sync>;

fn embedded_hydrator(
    db: &Embedded,
    schedule: &Arc<Schedule>,
    archive_delay: Option<Duration>,
) -> Hydrator<EmbeddedSource, Faulty<Embedded>, EmbeddedTarget> {
    let faulty = |db: &Embedded| Faulty::new(db.clone(), schedule.clone());
    let mut source = LogSource::new(
        Faulty::new(db.archive(PREFIX), schedule.clone()),
        faulty(db),
        "log",
        Some(faulty(db)),
        Some(faulty(db)),
    )
    .with_tail_chunk(4);
    if let Some(delay) = archive_delay {
        source = source.with_archive_delay(delay);
    }
    let (live, schedule) = (db.clone(), schedule.clone());
    let target: EmbeddedTarget = Box::new(move |into| {
        let db = match into {
            None => live.clone(),
            Some(dir) => Embedded::open(Path::new(dir)).unwrap(),
        };
        Faulty::new(db, schedule.clone())
    });
    Hydrator::new(source, faulty(db), target)
}

/// The read-model rows of a data directory, in order.
fn read_model_rows(dir: &Path) -> Vec<String> {
    let conn = rusqlite::Connection::open(dir.join(timeline_embedded::DATABASE_FILE)).unwrap();
    let mut rows = Vec::new();
    for query in [
        "SELECT pk || ' ' || version || ' ' || view || ' ' || status_key || ' ' || coalesce(rider_key, '') || ' ' || coalesce(driver_key, '') FROM views ORDER BY pk",
        "SELECT pk || ' ' || sk || ' ' || entry FROM history ORDER BY pk, sk",
    ] {
        let mut statement = conn.prepare(query).unwrap();
        rows.extend(
            statement
                .query_map([], |row| row.get::<_, String>(0))
                .unwrap()
                .map(Result::unwrap),
        );
    }
    rows
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_the_embedded_backend_every_answer_under_faults_is_right_or_says_it_is_not_whole() {
    let dir = Dir::new("timeline-faults");
    let targets = Dir::new("timeline-faults");
    let (db, events) = embedded_world(&dir.0).await;
    let schedule = Schedule::new(0, Faults::none());
    let hydrators = [
        embedded_hydrator(&db, &schedule, None),
        embedded_hydrator(&db, &schedule, Some(Duration::ZERO)),
    ];
    exercise(
        "embedded",
        &hydrators,
        &requests(&events),
        EMBEDDED_SCHEDULES,
        true,
        |faults| schedule.set(faults),
        || async {
            let into = targets.0.join(unique("rebuilt"));
            into.display().to_string()
        },
        |into| async move { read_model_rows(Path::new(&into)) },
    )
    .await;
    // A rebuild is byte for byte what live processing wrote.
    let rebuilt = targets.0.join("live");
    hydrators[0]
        .rebuild(
            Some(rebuilt.to_str().unwrap()),
            None,
            &Deadline::none(),
            &mut |_, _, _| {},
        )
        .await
        .unwrap();
    assert_eq!(read_model_rows(&rebuilt), read_model_rows(&dir.0));
    assert_met("embedded", &schedule.injected());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rebuild_killed_at_random_points_resumes_to_the_same_read_models() {
    let dir = Dir::new("timeline-faults");
    let targets = Dir::new("timeline-faults");
    let (db, _) = embedded_world(&dir.0).await;
    // Every call a little slow, so a run lasts long enough to be killed many times.
    let h = embedded_hydrator(
        &db,
        &Schedule::new(
            0,
            Faults {
                slow: 0.5,
                delay: Duration::from_millis(2),
                ..Faults::none()
            },
        ),
        None,
    );
    let reference = targets.0.join("reference");
    let whole_run = std::time::Instant::now();
    h.rebuild(
        Some(reference.to_str().unwrap()),
        None,
        &Deadline::none(),
        &mut |_, _, _| {},
    )
    .await
    .unwrap();
    // Kills land within the time a whole run takes.
    let whole_run = whole_run.elapsed().as_millis() as u64;
    let expected = read_model_rows(&reference);

    let mut rng = fastrand::Rng::with_seed(5);
    for round in 0..3 {
        let into = targets.0.join(format!("killed-{round}"));
        let into = into.to_str().unwrap().to_owned();
        // The position each finished part reports, kept where a killed run leaves it.
        let last = std::sync::Mutex::new(None::<String>);
        let mut kills = 0;
        loop {
            let from = last.lock().unwrap().clone();
            let none = Deadline::none();
            let mut keep = |report: &timeline_engine::replay::RebuildReport, _, _| {
                *last.lock().unwrap() = report.position.clone();
            };
            let run = h.rebuild(Some(&into), from, &none, &mut keep);
            // Killed mid-read, mid-write, between parts; the first try of a round (the
            // whole work) within a third of a whole run, so every round is killed.
            let most = if kills == 0 { whole_run / 3 } else { whole_run };
            let budget = Duration::from_millis(rng.u64(1..most.max(2)));
            match tokio::time::timeout(budget, run).await {
                Ok(report) => {
                    let report = report.unwrap();
                    assert!(report.finished && report.problems.is_empty(), "{report:?}");
                    break;
                }
                Err(_) => kills += 1,
            }
            assert!(kills < 500, "never finished");
        }
        eprintln!("round {round}: killed {kills} times");
        assert!(kills >= 1, "{kills}");
        assert_eq!(
            read_model_rows(Path::new(&into)),
            expected,
            "round {round}: killed {kills} times"
        );
    }
}
