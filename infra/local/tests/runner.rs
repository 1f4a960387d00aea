//! The local runner end to end over HTTP, on both backends: the guided demo drives the real
//! API (commands in, views and history out, time travel from the log), exactly as the
//! README's first command does; the embedded backend keeps everything across a restart; and
//! the binary reports start-up problems clearly.

use serde_json::json;
use std::collections::BTreeSet;
use std::time::Duration;
use timeline_core::ports::{ArchiveStore, WriteModelStore};
use timeline_core::write::PublishMode;
use timeline_local::backend::{AwsBackend, Backend, EmbeddedBackend};
use timeline_local::demo::{self, DemoOutcome, Http};
use timeline_local::operate::{operate, Operation, Output};
use timeline_local::runner::{run, RunOptions};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A runner serving on a free port until `stop` is sent.
struct Running {
    http: Http,
    /// The API's address, and an operator's token for it.
    base: String,
    token: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<anyhow::Result<()>>,
}

impl Running {
    async fn start<B: Backend>(backend: B, failures: std::path::PathBuf) -> Running {
        Self::publishing(backend, failures, PublishMode::Inline).await
    }

    async fn publishing<B: Backend>(
        backend: B,
        failures: std::path::PathBuf,
        publish: PublishMode,
    ) -> Running {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let issuer = std::sync::Arc::new(
            timeline_local::auth::Issuer::open(failures.parent().expect("a directory")).unwrap(),
        );
        let tokens = timeline_local::demo::Tokens::demo(&issuer).unwrap();
        // The data directory's subscribers (the example billing and video-failure files).
        let subscribers = failures.parent().map(std::path::Path::to_owned);
        let options = RunOptions {
            sweep_every: Duration::from_secs(1),
            failures,
            issuer,
            subscribers,
            announce_deliveries: false,
            publish,
        };
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            run(listener, backend, options, async {}, async {
                let _ = stopped.await;
            })
            .await
        });
        let (base, token) = (format!("http://{addr}"), tokens.user.clone());
        Running {
            http: Http::signed(base.clone(), tokens),
            base,
            token,
            stop,
            task,
        }
    }

    async fn stop(self) {
        self.stop.send(()).unwrap();
        self.task.await.unwrap().unwrap();
    }
}

/// What the demo must have shown, on any backend.
fn check_demo(outcome: &DemoOutcome, lines: &[String]) {
    assert_eq!(outcome.steps, 13);
    assert_eq!(outcome.ride_view["status"], "completed");
    assert_eq!(outcome.ride_view["state"]["fare_cents"], 11000);
    let statuses: Vec<&str> = outcome.video_timeline["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["status_after"].as_str().unwrap())
        .collect();
    assert_eq!(
        statuses,
        ["uploaded", "processing", "processing:50%", "failed"]
    );
    assert_eq!(outcome.video_timeline["steps"][3]["reason"], "timeout");
    // The state as of the first fare adjustment: 100.00, not 90.00 or 110.00.
    assert_eq!(outcome.fare_earlier["view"]["state"]["fare_cents"], 10000);
    assert!(lines.iter().any(|l| l.contains("processing:50%")));
}

async fn play_demo(http: &Http, suffix: &str) -> DemoOutcome {
    let mut lines = Vec::new();
    let outcome = demo::run(http, suffix, |l| lines.push(l))
        .await
        .expect("the demo runs");
    check_demo(&outcome, &lines);
    outcome
}

/// Every event in the archive, as (entity, version), with copies counted.
async fn archived<A: ArchiveStore>(archive: &A) -> Vec<(String, u64)> {
    let mut out = Vec::new();
    for key in archive.list_keys(None, None).await.unwrap() {
        for record in archive.read_object(&key).await.unwrap() {
            out.extend(
                record
                    .events
                    .into_iter()
                    .map(|e| (e.stream_key().to_string(), e.version)),
            );
        }
    }
    out
}

/// What a subscriber's file received, one event a line.
fn delivered(dir: &std::path::Path, name: &str) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join(format!("subscribers/{name}.jsonl")))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Polls `path` until `check` holds (the read side is eventually consistent).
async fn eventually(http: &Http, path: &str, check: impl Fn(&serde_json::Value) -> bool) {
    let mut last = json!(null);
    for _ in 0..100 {
        let (status, body) = http.get(path).await.unwrap();
        if status == 200 && check(&body) {
            return;
        }
        last = body;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{path} never matched; last answer {last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_backend_runs_the_demo_and_keeps_everything_across_a_restart() {
    let dir_guard = timeline_testkit::tempdir("runner-embedded");
    let dir = dir_guard.path().to_path_buf();
    let backend = EmbeddedBackend::open(&dir).unwrap();
    let runner = Running::start(backend.clone(), dir.join("failed.jsonl")).await;
    play_demo(&runner.http, "e").await;
    // Bad input through the runner is the same problem+json as in Lambda, and changes nothing.
    let (status, problem) = runner
        .http
        .post("/rides/ride-e/start", json!({ "x": 1 }))
        .await
        .unwrap();
    assert_eq!(
        (status, problem["code"].as_str()),
        (400, Some("invalid_body"))
    );
    runner.stop().await;

    // After shutdown the archive holds every accepted event exactly once: the pump flushed
    // on the way out.
    let before = archived(&backend.archive()).await;
    let distinct: BTreeSet<_> = before.iter().cloned().collect();
    assert_eq!(distinct.len(), 13, "the demo's 13 events");
    assert_eq!(before.len(), 13, "each once: {before:?}");
    // The subscribers got the demo's integration events: billing the completed ride, the
    // operators' feed the failed video, each once.
    let billing = delivered(&dir, "billing");
    assert_eq!(billing.len(), 1, "{billing:?}");
    assert_eq!(billing[0]["detail-type"], "ride.completed");
    assert_eq!(billing[0]["detail"]["entity"]["id"], "ride-e");
    assert_eq!(billing[0]["detail"]["data"]["final_fare_cents"], 11000);
    let failures = delivered(&dir, "video-failures");
    assert_eq!(failures.len(), 1, "{failures:?}");
    assert_eq!(failures[0]["detail"]["data"]["reason"], "timeout");
    drop(backend);

    // A new process on the same directory: the views, the history and time travel are there.
    let backend = EmbeddedBackend::open(&dir).unwrap();
    let runner = Running::start(backend.clone(), dir.join("failed.jsonl")).await;
    let (status, view) = runner.http.get("/rides/ride-e").await.unwrap();
    assert_eq!((status, view["version"].as_u64()), (200, Some(7)), "{view}");
    let (_, history) = runner.http.get("/rides/ride-e/history").await.unwrap();
    assert_eq!(
        history["items"].as_array().map(Vec::len),
        Some(7),
        "{history}"
    );
    let (_, at_v5) = runner
        .http
        .get("/rides/ride-e/state?version=5")
        .await
        .unwrap();
    assert_eq!(at_v5["view"]["state"]["fare_cents"], 10000, "{at_v5}");

    // New work continues the same timeline.
    let (status, booked) = runner
        .http
        .post(
            "/rides",
            json!({ "id": "ride-after", "rider_id": "rider-42",
                    "pickup": { "address": "A", "lat": 53.34, "lon": -6.25 },
                    "dropoff": { "address": "B", "lat": 53.42, "lon": -6.25 } }),
        )
        .await
        .unwrap();
    assert_eq!(status, 201, "{booked}");
    eventually(&runner.http, "/rides?rider_id=rider-42", |page| {
        page["items"].as_array().map(Vec::len) == Some(3)
    })
    .await;
    runner.stop().await;

    // The restarted pump continued where it stopped: nothing archived twice, nothing missed.
    let after = archived(&backend.archive()).await;
    let distinct: BTreeSet<_> = after.iter().cloned().collect();
    assert_eq!(after.len(), distinct.len(), "no copies: {after:?}");
    assert_eq!(distinct.len(), 14);
    // The restarted distributor continued from its checkpoint: nothing delivered twice.
    assert_eq!(delivered(&dir, "billing").len(), 1);

    // The operator commands see the same data: no drift between the log and the views.
    let verified = verify_no_drift(&backend).await;
    assert_eq!(verified["entities"], 4, "{verified}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_aws_backend_runs_the_demo_against_moto() {
    let env = timeline_testkit::test_env!();
    let backend = aws_backend(&env);
    let failures_guard = timeline_testkit::tempdir("runner-aws");
    let failures = failures_guard.path().join("failed.jsonl");
    let runner = Running::start(backend.clone(), failures).await;
    play_demo(&runner.http, "t").await;
    runner.stop().await;

    // After shutdown the archive holds every event that was accepted.
    let archived: BTreeSet<_> = archived(&backend.archive()).await.into_iter().collect();
    let accepted: BTreeSet<(String, u64)> = env
        .events()
        .await
        .iter()
        .map(|e| (e.stream_key().to_string(), e.version))
        .collect();
    assert_eq!(archived, accepted);
}

/// `PublishMode: stream` on the embedded backend: no change stream, so the relay polls the
/// outboxes; every command is still published, archived, distributed and projected.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_polling_relay_the_embedded_backend_plays_the_demo_and_nothing_drifts() {
    let dir_guard = timeline_testkit::tempdir("runner-relay-embedded");
    let dir = dir_guard.path().to_path_buf();
    let backend = EmbeddedBackend::open(&dir).unwrap();
    let failures = dir.join("failed.jsonl");
    let runner = Running::publishing(backend.clone(), failures, PublishMode::Stream).await;
    play_demo(&runner.http, "s").await;
    runner.stop().await;

    let distinct: BTreeSet<_> = archived(&backend.archive()).await.into_iter().collect();
    assert_eq!(distinct.len(), 13, "the demo's 13 events: {distinct:?}");
    let billing = delivered(&dir, "billing");
    assert_eq!(
        billing[0]["detail"]["entity"]["id"], "ride-s",
        "{billing:?}"
    );
    verify_no_drift(&backend).await;
}

/// `PublishMode: stream` on moto: the relay follows the write-model table's DynamoDB stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_stream_relay_the_aws_backend_plays_the_demo_against_moto() {
    let env = timeline_testkit::test_env!();
    let backend = aws_backend(&env);
    let failures_guard = timeline_testkit::tempdir("runner-relay-aws");
    let failures = failures_guard.path().join("failed.jsonl");
    let runner = Running::publishing(backend.clone(), failures, PublishMode::Stream).await;
    play_demo(&runner.http, "s").await;
    runner.stop().await;

    // Every commit reached the stream through the relay (the table stream was read), and the
    // archive holds all of it.
    assert!(env.counter.snapshot().contains_key("GetRecords"));
    let accepted: BTreeSet<(String, u64)> = env
        .events()
        .await
        .iter()
        .map(|e| (e.stream_key().to_string(), e.version))
        .collect();
    assert_eq!(accepted.len(), 13, "{accepted:?}");
    let archived: BTreeSet<_> = archived(&backend.archive()).await.into_iter().collect();
    assert_eq!(archived, accepted);
    let head = env
        .store()
        .load_head(&timeline_core::StreamKey::new("ride", "ride-s"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(head.pending, [], "the relay confirmed every outbox");
}

/// The AWS backend on a test's own resources in the emulator.
fn aws_backend(env: &timeline_testkit::TestEnv) -> AwsBackend {
    AwsBackend {
        read_store: None,
        clients: env.clients.clone(),
        streams: env.streams.clone(),
        names: env.names.clone(),
        endpoint: std::env::var("AWS_ENDPOINT_URL").ok(),
    }
}

/// Runs the binary with `args` (the AWS endpoint variables cleared unless given) and returns
/// its exit success and its stderr.
fn cli(args: &[&str], env: &[(&str, &str)]) -> (bool, String) {
    let (ok, _, stderr) = cli_out(args, env);
    (ok, stderr)
}

/// As [`cli`], with its standard output too.
fn cli_out(args: &[&str], env: &[(&str, &str)]) -> (bool, String, String) {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_timeline-local"));
    command
        .args(args)
        .env_remove("AWS_ENDPOINT_URL")
        .env_remove("TIMELINE_READ_STORE");
    for (k, v) in env {
        command.env(k, v);
    }
    let out = command.output().unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// Each operator command prints text for people, and with `--json` exactly one JSON
/// document (and nothing else on stdout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn operator_commands_print_text_and_with_json_one_json_document() {
    let dir_guard = timeline_testkit::tempdir("runner-text");
    let dir = dir_guard.path().to_path_buf();
    let backend = EmbeddedBackend::open(&dir).unwrap();
    let runner = Running::start(backend.clone(), dir.join("failed.jsonl")).await;
    play_demo(&runner.http, "x").await;
    runner.stop().await;
    drop(backend);
    let data = dir.display().to_string();
    let into = dir.join("rebuilt").display().to_string();
    let archive = dir.join("archive").display().to_string();
    let other = dir.join("replayed").display().to_string();
    let commands: [(&[&str], &str, &str); 6] = [
        (
            &["state", "ride", "ride-x", "--version", "5"],
            &data,
            "fare_cents",
        ),
        (
            &["history", "video", "video-x"],
            &data,
            "-> failed (timeout)",
        ),
        (
            &["history", "ride", "ride-x"],
            &data,
            "changed: fare_cents 9000 -> 10000",
        ),
        (&["verify"], &data, "verified 3 entities"),
        (&["rebuild", "--into", &into], &data, "events applied"),
        (
            &["replay-archive", "--from-dir", &archive],
            &other,
            "published 13 records",
        ),
    ];
    for (args, data_dir, expected) in commands {
        let mut text_args = vec!["--data-dir", data_dir];
        text_args.extend_from_slice(args);
        let (ok, text, stderr) = cli_out(&text_args, &[]);
        assert!(ok, "{args:?}: {stderr}");
        assert!(text.contains(expected), "{args:?}: {text}");
        assert!(
            serde_json::from_str::<serde_json::Value>(&text).is_err() && !text.contains("\"view\""),
            "{args:?} printed JSON: {text}"
        );
        if args[0] == "replay-archive" {
            continue; // it fills its stream once
        }
        text_args.push("--json");
        let (ok, json, stderr) = cli_out(&text_args, &[]);
        assert!(ok, "{args:?} --json: {stderr}");
        let mut documents =
            serde_json::Deserializer::from_str(&json).into_iter::<serde_json::Value>();
        assert!(documents.next().unwrap().is_ok(), "{args:?}: {json}");
        assert!(
            documents.next().is_none(),
            "{args:?}: one document, got {json}"
        );
    }
}

#[test]
fn start_up_problems_are_reported_clearly() {
    // The port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let dir_guard = timeline_testkit::tempdir("runner-cli");
    let dir = dir_guard.path().to_path_buf();
    let data = dir.join("data");
    let data = data.to_str().unwrap();
    let (ok, err) = cli(&["serve", "--port", &port, "--data-dir", data], &[]);
    assert!(!ok);
    assert!(err.contains("is the port in use"), "{err}");

    // The data directory cannot be written (a file stands where it should be).
    let file = dir.join("a-file");
    std::fs::write(&file, b"x").unwrap();
    let (ok, err) = cli(
        &["serve", "--port", "0", "--data-dir", file.to_str().unwrap()],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("cannot use the data directory"), "{err}");

    // The endpoint does not answer.
    let (ok, err) = cli(
        &["serve", "--port", "0", "--data-dir", data],
        &[
            ("AWS_ENDPOINT_URL", "http://127.0.0.1:1"),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_MAX_ATTEMPTS", "1"),
        ],
    );
    assert!(!ok);
    assert!(
        err.contains("could not create the resources at http://127.0.0.1:1"),
        "{err}"
    );

    // Operator input is checked before anything is read.
    let (ok, err) = cli(
        &["--data-dir", data, "state", "ride", "r1", "--as-of", "noon"],
        &[],
    );
    assert!(!ok);
    assert!(err.contains("is not an RFC 3339 time"), "{err}");
}

#[test]
fn every_command_has_help() {
    for command in [
        "serve",
        "demo",
        "state",
        "history",
        "rebuild",
        "verify",
        "replay-archive",
    ] {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_timeline-local"))
            .args([command, "--help"])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{command}");
        assert!(text.contains("Usage: timeline-local"), "{command}: {text}");
        if command != "serve" && command != "demo" {
            assert!(text.contains("--json"), "{command}: {text}");
        }
    }
}

/// Runs the binary in `dir`'s data directory; returns (exit code, stdout, stderr).
fn cli_in(data_dir: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_timeline-local"))
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .env_remove("AWS_ENDPOINT_URL")
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_operator_cli_answers_json_and_replays_an_archive_into_a_new_data_directory() {
    let dir_guard = timeline_testkit::tempdir("runner-ops");
    let dir = dir_guard.path().to_path_buf();
    let (original, restored) = (dir.join("original"), dir.join("restored"));

    // The README's first command, to its end, on a fresh directory.
    let (code, demo, err) = cli_in(
        &original,
        &["serve", "--demo", "--exit-after-demo", "--port", "0"],
    );
    assert_eq!(code, 0, "{demo}\n{err}");
    let ride = demo
        .split_whitespace()
        .find_map(|w| w.strip_prefix("/rides/")?.split('/').next())
        .expect("the demo names its ride")
        .to_owned();

    // --json: exactly one JSON document on stdout, whatever is logged.
    let (code, out, err) = cli_in(&original, &["--json", "verify"]);
    assert_eq!(code, 0, "{err}");
    let verified: serde_json::Value = serde_json::from_str(&out).expect("one JSON document");
    assert_eq!(verified["drift"], json!([]));
    assert_eq!(verified["entities"], 3);

    // No database there: refused, not an empty answer.
    let (code, _, err) = cli_in(&dir.join("typo"), &["state", "ride", &ride]);
    assert_eq!(code, 1);
    assert!(err.contains("no data in"), "{err}");

    // The original's stream holds the records: replaying into it is refused.
    let (code, _, err) = cli_in(&original, &["replay-archive"]);
    assert_eq!(code, 1);
    assert!(err.contains("already holds records"), "{err}");

    // Into a new directory, from the original's archive: the whole timeline comes back.
    let archive = original.join("archive");
    let (code, out, err) = cli_in(
        &restored,
        &[
            "--json",
            "replay-archive",
            "--from-dir",
            archive.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let replayed: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(replayed["records_published"], 13, "{replayed}");
    let (code, out, err) = cli_in(&restored, &["--json", "rebuild"]);
    assert_eq!(code, 0, "{err}");
    let rebuilt: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(rebuilt["events_applied"], 13, "{rebuilt}");
    for at in [
        vec!["state", "ride", &ride],
        vec!["state", "ride", &ride, "--version", "5"],
    ] {
        let mut args = vec!["--json"];
        args.extend(at.iter().copied());
        let (_, a, _) = cli_in(&original, &args);
        let (_, b, _) = cli_in(&restored, &args);
        let (a, b): (serde_json::Value, serde_json::Value) = (
            serde_json::from_str(&a).unwrap(),
            serde_json::from_str(&b).unwrap(),
        );
        assert_eq!(a["view"]["state"], b["view"]["state"], "{at:?}");
        assert_eq!(a["view"]["version"], b["view"]["version"], "{at:?}");
    }
}

/// Verifies the log against the heads and views; asserts there is no drift.
async fn verify_no_drift(backend: &EmbeddedBackend) -> serde_json::Value {
    let verified = operate(
        backend,
        Operation::Verify,
        &backend.archive(),
        Output::Quiet,
    )
    .await
    .unwrap();
    assert_eq!(verified["drift"], json!([]), "{verified}");
    verified
}

/// A command through the runner's API that must be accepted.
async fn command(http: &Http, path: &str, body: serde_json::Value) {
    let (status, answer) = http.post(path, body).await.unwrap();
    assert!(status == 200 || status == 201, "{path}: {status} {answer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_entity_the_processor_cannot_apply_is_parked_listed_and_redriven_by_the_operator() {
    use timeline_core::ports::{Checkpoints, StreamReader};
    let dir_guard = timeline_testkit::tempdir("runner-park");
    let dir = dir_guard.path().to_path_buf();
    let backend = EmbeddedBackend::open(&dir).unwrap();
    let (a, b) = (
        json!({ "address": "A", "lat": 53.34, "lon": -6.25 }),
        json!({ "address": "B", "lat": 53.42, "lon": -6.25 }),
    );
    let book = |id: &str| json!({ "id": id, "rider_id": "rider-9", "pickup": a, "dropoff": b });
    let fare = |cents: u32| json!({ "fare_cents": cents, "reason": "detour" });

    let runner = Running::start(backend.clone(), dir.join("failed.jsonl")).await;
    command(&runner.http, "/rides", book("p1")).await;
    command(&runner.http, "/rides", book("p2")).await;
    command(&runner.http, "/rides/p1/adjust-fare", fare(1000)).await;
    eventually(&runner.http, "/rides/p1", |v| v["version"] == 2).await;
    runner.stop().await;

    // While the system is down, p1's version 3 is committed; then the mapping loses it (as a
    // mapping replaced at LATEST, or an age limit, would): its checkpoint moves past it.
    let system = timeline_local::system::LocalSystem::new(
        &backend,
        timeline_core::write::PublishMode::Inline,
    );
    let (status, _, _) = timeline_testkit::read(
        system
            .commands
            .handle(timeline_testkit::post(
                "/rides/p1/adjust-fare",
                &fare(2000),
                &[],
            ))
            .await,
    );
    assert_eq!(status, 200);
    let reader = backend.reader();
    let mut lost = None;
    for shard in reader.shards().await.unwrap() {
        let page = reader
            .read(&shard.id, &timeline_core::shards::ReadFrom::Oldest, 1000)
            .await
            .unwrap();
        lost = lost.or(page
            .records
            .iter()
            .rfind(|r| r.partition_key == "ride#p1")
            .map(|r| (shard.id.clone(), r.sequence_number.clone())));
    }
    let (shard, seq) = lost.unwrap();
    let checkpoints = backend.mapping_checkpoints();
    let mut positions = checkpoints.load().await.unwrap();
    positions.insert(shard, seq);
    checkpoints.save(&positions).await.unwrap();

    // Back up: p1's next version meets a gap and parks p1; p2 goes on; p1's later
    // records are set aside, its view stays whole at version 2.
    let runner = Running::start(backend.clone(), dir.join("failed.jsonl")).await;
    command(&runner.http, "/rides/p1/adjust-fare", fare(3000)).await;
    command(&runner.http, "/rides/p2/adjust-fare", fare(500)).await;
    eventually(&runner.http, "/rides/p2", |v| v["version"] == 2).await;
    command(&runner.http, "/rides/p1/adjust-fare", fare(4000)).await;
    let parked = |dir: &std::path::Path| {
        let (code, out, err) = cli_in(dir, &["--json", "parked"]);
        let answer: serde_json::Value =
            serde_json::from_str(&out).unwrap_or_else(|_| panic!("{err}"));
        (code, answer)
    };
    let mut listed = json!(null);
    for _ in 0..100 {
        let (code, answer) = parked(&dir);
        if answer["parked"][0]["set_aside"] == 2 {
            assert_eq!(code, 3, "parked entities are a finding");
            listed = answer;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let one = &listed["parked"][0];
    assert_eq!(one["entity"], "ride#p1", "{listed}");
    assert_eq!(one["reason"]["kind"], "gap", "{listed}");
    assert_eq!(one["from_version"], 3, "{listed}");
    assert_eq!(listed["parked"].as_array().unwrap().len(), 1);
    let (_, view) = runner.http.get("/rides/p1").await.unwrap();
    assert_eq!(view["version"], 2, "{view}");
    assert!(
        std::fs::read_to_string(dir.join("failed.jsonl"))
            .unwrap_or_default()
            .is_empty(),
        "nothing discarded"
    );

    // The operator redrives p1 from the log: every version, and the parking ends.
    let (code, out, err) = cli_in(&dir, &["--json", "redrive", "ride#p1"]);
    assert_eq!(code, 0, "{out}\n{err}");
    let report: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(report["unparked"], true, "{report}");
    assert_eq!(report["view_version"], 5, "{report}");
    assert_eq!(parked(&dir), (0, json!({ "parked": [] })));
    // Live processing takes p1 up again.
    command(&runner.http, "/rides/p1/adjust-fare", fare(5000)).await;
    eventually(&runner.http, "/rides/p1", |v| {
        v["version"] == 6 && v["state"]["fare_cents"] == 5000
    })
    .await;
    runner.stop().await;
    verify_no_drift(&backend).await;
}

/// `--read-store postgres://...`: the demo plays with the read models in PostgreSQL, verify
/// finds no drift, and the query API answers exactly as from SQLite: the same log rebuilt
/// into a SQLite directory gives the same views, lists, pages and history.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_a_postgres_read_store_the_demo_plays_and_the_api_answers_as_from_sqlite() {
    let url = timeline_testkit::postgres_database!();
    let pool = timeline_postgres::pool(&url).unwrap();
    timeline_postgres::migrate(&pool).await.unwrap();
    let pg = timeline_postgres::PgReadModels::connect(pool)
        .await
        .unwrap();
    let dir_guard = timeline_testkit::tempdir("runner-postgres");
    let dir = dir_guard.path().to_path_buf();
    let backend = EmbeddedBackend::open(&dir)
        .unwrap()
        .with_read_store(pg.clone());
    let runner = Running::start(backend.clone(), dir.join("failed.jsonl")).await;
    play_demo(&runner.http, "p").await;
    runner.stop().await;
    let verified = verify_no_drift(&backend).await;
    assert_eq!(verified["entities"], 3, "{verified}");
    // Nothing went to SQLite's read models: they are all in PostgreSQL.
    use timeline_core::ports::ReadModelQueries;
    let ride = timeline_core::StreamKey::new("ride", "ride-p");
    assert_eq!(backend.db.view(&ride).await.unwrap(), None);

    // The same log, rebuilt into SQLite.
    let sqlite_dir_guard = timeline_testkit::tempdir("runner-postgres-sqlite");
    let sqlite_dir = sqlite_dir_guard.path().to_path_buf();
    let into = sqlite_dir.display().to_string();
    operate(
        &backend,
        Operation::Rebuild {
            into: Some(into),
            resume_after: None,
        },
        &backend.archive(),
        Output::Quiet,
    )
    .await
    .unwrap();
    let sqlite = timeline_embedded::Embedded::open(&sqlite_dir).unwrap();
    let (from_pg, from_sqlite) = (query::QueryApi::new(pg), query::QueryApi::new(sqlite));
    let mut paths = vec![
        "/rides/ride-p".to_owned(),
        "/rides/ride-p/history".to_owned(),
        "/rides/ride-p/history?limit=2".to_owned(),
        "/videos/video-p".to_owned(),
        "/rides?rider_id=rider-42".to_owned(),
        "/rides?status=completed".to_owned(),
        "/rides?rider_id=rider-42&limit=1".to_owned(),
        "/videos?status=failed".to_owned(),
    ];
    let mut compared = 0;
    while let Some(path) = paths.pop() {
        let get = || timeline_testkit::api_request("GET", &path, &[], None);
        let a = timeline_testkit::read(from_pg.handle(get()).await);
        let b = timeline_testkit::read(from_sqlite.handle(get()).await);
        assert_eq!((a.0, &a.1), (b.0, &b.1), "{path}");
        assert_eq!(a.0, 200, "{path}: {}", a.1);
        compared += 1;
        // Follow the cursors: the next pages must agree too.
        if let Some(cursor) = a.1["next_cursor"].as_str() {
            let base = path.split("&cursor=").next().unwrap();
            paths.push(format!("{base}&cursor={cursor}"));
        }
    }
    assert!(compared > 8, "pages followed: {compared}");

    // Another, empty read store on the same data directory is filled from the oldest record
    // (the processor's position is kept per store).
    let other = timeline_testkit::postgres_database().await.unwrap();
    let pool = timeline_postgres::pool(&other).unwrap();
    timeline_postgres::migrate(&pool).await.unwrap();
    let other = timeline_postgres::PgReadModels::connect(pool)
        .await
        .unwrap();
    assert_ne!(
        other.identity(),
        backend.read_store.as_ref().unwrap().identity()
    );
    let backend = EmbeddedBackend::open(&dir).unwrap().with_read_store(other);
    let runner = Running::start(backend, dir.join("failed.jsonl")).await;
    eventually(&runner.http, "/rides/ride-p", |view| view["version"] == 7).await;
    runner.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_store_without_its_schema_is_refused_until_migrated() {
    let url = timeline_testkit::postgres_database!();
    let dir_guard = timeline_testkit::tempdir("runner-postgres-cli");
    let dir = dir_guard.path().to_path_buf();
    let data = dir.display().to_string();
    let (ok, stderr) = cli(&["--data-dir", &data, "--read-store", &url, "parked"], &[]);
    assert!(!ok);
    assert!(stderr.contains("timeline-local migrate"), "{stderr}");
    let (ok, stderr) = cli(&["--read-store", &url, "migrate"], &[]);
    assert!(ok, "{stderr}");
    let (ok, stderr) = cli(&["--read-store", &url, "report", "video-failures"], &[]);
    assert!(ok, "{stderr}");
    let (ok, stderr) = cli(&["migrate"], &[]);
    assert!(!ok);
    assert!(stderr.contains("--read-store"), "{stderr}");
}

/// The browser the page test drives: Debian's `chromium` (the test command installs it), or
/// another Chromium named by `TIMELINE_CHROMIUM`.
fn chromium() -> Option<String> {
    if let Ok(path) = std::env::var("TIMELINE_CHROMIUM") {
        return Some(path);
    }
    ["chromium", "chromium-browser", "google-chrome"]
        .into_iter()
        .find(|name| {
            std::process::Command::new(name)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .map(str::to_owned)
}

/// Headless Chromium on `url`: the DOM once the page's requests are done, and a screenshot
/// at `screenshot` when given.
fn browse(browser: &str, url: &str, screenshot: Option<&std::path::Path>) -> String {
    let profile_guard = timeline_testkit::tempdir("chromium-profile");
    let profile = profile_guard.path().to_path_buf();
    let mut command = std::process::Command::new(browser);
    command.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--no-first-run",
        "--window-size=1200,860",
        "--virtual-time-budget=15000",
        &format!("--user-data-dir={}", profile.display()),
    ]);
    match screenshot {
        Some(path) => command.arg(format!("--screenshot={}", path.display())),
        None => command.arg("--dump-dom"),
    };
    let out = command.arg(url).output().expect("run chromium");
    assert!(
        out.status.success(),
        "chromium: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The timeline page in a real browser against the runner after the demo: stepped to the
/// first fare adjustment it shows the state then, with the fare marked as changed; the
/// video's status path ends in its failure and reason; a screenshot goes to `target/`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_timeline_page_shows_a_ride_at_its_first_fare_adjustment_and_why_a_video_failed() {
    let Some(browser) = chromium() else {
        eprintln!("skipped the page test: no Chromium (infra/test.sh installs Debian's chromium)");
        return;
    };
    let dir_guard = timeline_testkit::tempdir("runner-page");
    let dir = dir_guard.path().to_path_buf();
    let backend = EmbeddedBackend::open(&dir).unwrap();
    let db = backend.db.clone();
    let runner = Running::start(backend, dir.join("failed.jsonl")).await;
    play_demo(&runner.http, "w").await;
    let page = timeline_local::ui::url(&runner.base, &runner.token);

    // The first fare adjustment is version 5 (90.00 -> 100.00).
    let ride = format!("{page}&entity=ride/ride-w&version=5");
    let dom = browse(&browser, &ride, None);
    assert!(dom.contains("ride ride-w: 7 events"), "{dom}");
    assert!(dom.contains("v5 FareAdjusted"), "{dom}");
    let fare = dom
        .split("data-field=\"fare_cents\"")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap_or_else(|| panic!("no fare row: {dom}"));
    assert!(fare.contains("class=\"changed\""), "{fare}");
    assert!(fare.contains("10000  (was 9000)"), "{fare}");
    let status = dom
        .split("data-field=\"status\"")
        .nth(1)
        .and_then(|rest| rest.split("</tr>").next())
        .unwrap();
    assert!(
        !status.contains("changed"),
        "unchanged fields are not marked: {status}"
    );
    assert!(!dom.contains("Incomplete history"), "{dom}");

    let video = format!("{page}&entity=video/video-w");
    let dom = browse(&browser, &video, None);
    assert!(dom.contains("failed (timeout)"), "{dom}");
    assert!(dom.contains("processing:50%"), "{dom}");
    // Each event is listed with who did it and why.
    assert!(
        dom.contains("v4 ProcessingFailed by arn:aws:sts::000000000000:assumed-role/video-pipeline/local -&gt; failed (timeout)"),
        "{dom}"
    );

    // A ride whose first record is missing from the log (its head is at version 2): the
    // page says so at the top instead of showing a history that looks whole.
    {
        use timeline_core::ports::{Commit, EventLog, Head};
        let events = [
            timeline_core::scenario::sample_ride("ride-gap", 1),
            timeline_core::scenario::sample_ride("ride-gap", 2),
        ];
        let folded = timeline_core::views::fold::<timeline_core::ride::RideAggregate>(&events);
        let (view, _) = folded.unwrap().unwrap();
        let head = Head {
            key: timeline_core::StreamKey::new("ride", "ride-gap"),
            version: 2,
            state: serde_json::to_value(&view.state).unwrap(),
            pending: vec![],
            last_occurred_at: Some(events[1].occurred_at),
            updated_at: events[1].recorded_at,
            created_at: Some(events[0].recorded_at),
        };
        let now = events[1].recorded_at;
        let commit = Commit {
            expected_version: 0,
            head,
            idempotency: None,
            now,
        };
        WriteModelStore::commit(&db, commit).await.unwrap();
        let record = timeline_core::CommitRecord::new(vec![events[1].clone()]).unwrap();
        db.publish(&record).await.unwrap();
    }
    let dom = browse(&browser, &format!("{page}&entity=ride/ride-gap"), None);
    let banner = dom
        .split("id=\"incomplete\"")
        .nth(1)
        .and_then(|rest| rest.split("</div>").next())
        .unwrap_or_default();
    assert!(!banner.contains("hidden"), "the banner shows: {dom}");
    assert!(
        banner.contains("Incomplete history: missing versions 1"),
        "{banner}"
    );

    let shot =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/timeline-page.png");
    browse(&browser, &ride, Some(&shot));
    assert!(
        std::fs::metadata(&shot).is_ok_and(|m| m.len() > 10_000),
        "a screenshot"
    );
    runner.stop().await;
}
