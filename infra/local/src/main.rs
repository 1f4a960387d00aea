//! `timeline-local`: the system on one machine, and the operator's tool.
//!
//! `timeline-local serve` runs the HTTP API on 127.0.0.1 through the real handler code (as
//! API Gateway proxy events), with the event source mapping into the processor, the
//! Firehose-style pump into the archive and the outbox sweep running alongside.
//! `timeline-local demo` plays the guided demo against it. The operator commands (`state`,
//! `history`, `rebuild`, `verify`, `replay-archive`, `parked`, `redrive`) run in-process
//! against the same data.
//!
//! The data lives in the embedded backend (a directory) unless `AWS_ENDPOINT_URL` is set or
//! `--backend aws` is given: then in the stream, tables and bucket of that endpoint.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;
use timeline_aws::Clients;
use timeline_core::access::{Caller, Role};
use timeline_core::ports::ArchiveStore;
use timeline_core::Timestamp;
use timeline_embedded::LocalArchive;
use timeline_local::auth::Issuer;
use timeline_local::backend::{AwsBackend, Backend, EmbeddedBackend};
use timeline_local::demo::Tokens;
use timeline_local::demo::{self, Http};
use timeline_local::operate::{
    found_problems, operate, stream_holds_records, Operation, Output, FOUND_PROBLEMS,
};
use timeline_local::runner::{run, RunOptions};
use timeline_local::system::ARCHIVE_PREFIX;

// Every request allocates (JSON, rows, views) on several threads at once: glibc's malloc cost
// a fifth of the runner's CPU under load (infra/docs/benchmarks.md, "Sustained commands").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser, Debug)]
#[command(
    version,
    about = "Run the timeline locally, play the demo, or operate on the log"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Print machine-readable JSON instead of text (operator commands).
    #[arg(long, global = true)]
    json: bool,
    /// Where the data lives: `embedded` (a directory, the default) or `aws` (the endpoint in
    /// AWS_ENDPOINT_URL: moto, LocalStack, or AWS itself when unset). `auto` picks `aws` when
    /// AWS_ENDPOINT_URL is set.
    #[arg(long, global = true, value_enum, default_value_t = BackendKind::Auto, env = "TIMELINE_BACKEND")]
    backend: BackendKind,
    /// The embedded backend's data directory (`serve` creates it; delete it to start over).
    #[arg(
        long,
        global = true,
        default_value = ".local/data",
        env = "TIMELINE_DATA_DIR"
    )]
    data_dir: PathBuf,
    /// Keep the read models (views, lookups, history) in PostgreSQL instead of the backend's
    /// own store, e.g. postgres://postgres@127.0.0.1:5432/timeline (apply its schema first
    /// with `migrate`).
    #[arg(long, global = true, env = "TIMELINE_READ_STORE")]
    read_store: Option<String>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum BackendKind {
    Auto,
    Embedded,
    Aws,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum RoleArg {
    Rider,
    Driver,
    Dispatcher,
    Operator,
}

impl From<RoleArg> for Role {
    fn from(r: RoleArg) -> Role {
        match r {
            RoleArg::Rider => Role::Rider,
            RoleArg::Driver => Role::Driver,
            RoleArg::Dispatcher => Role::Dispatcher,
            RoleArg::Operator => Role::Operator,
        }
    }
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the API on 127.0.0.1 with the processor, the archive pump and the sweep.
    Serve(ServeArgs),
    /// Play the guided demo against a running API (signed with tokens of the data
    /// directory's issuer).
    Demo {
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
    },
    /// Print a bearer token from the data directory's local issuer, for curl and clients:
    /// a user's (`--sub` with `--role`s) or a service's (`--service`).
    Token {
        /// The user's subject, e.g. rider-42.
        #[arg(long, required_unless_present = "service", conflicts_with = "service")]
        sub: Option<String>,
        /// A role of the user: rider, driver, dispatcher or operator (repeatable).
        #[arg(long, value_enum)]
        role: Vec<RoleArg>,
        /// A service identity instead, e.g. video-pipeline (reports processing of videos).
        #[arg(long)]
        service: Option<String>,
        /// Seconds the token is valid.
        #[arg(long, default_value_t = 3600)]
        ttl: u64,
    },
    /// Apply the PostgreSQL read store's schema migrations (`--read-store`); says which ran.
    Migrate,
    /// A report only SQL answers (needs `--read-store`): `fares` (per driver per day, over
    /// completed rides) or `video-failures` (reasons with counts).
    Report {
        #[arg(value_enum)]
        report: ReportArg,
        /// From this time (RFC 3339), for `fares`.
        #[arg(long, value_parser = parse_time)]
        from: Option<Timestamp>,
        /// Up to this time, for `fares`.
        #[arg(long, value_parser = parse_time)]
        to: Option<Timestamp>,
    },
    /// An entity's state now, as of a time, or as of a version (from the log).
    State {
        /// `ride` or `video`.
        kind: String,
        id: String,
        /// An RFC 3339 time, e.g. 2026-11-28T10:02:00Z.
        #[arg(long, value_parser = parse_time, conflicts_with = "version")]
        as_of: Option<Timestamp>,
        #[arg(long)]
        version: Option<u64>,
    },
    /// An entity's history between two times, with the state after each step.
    History {
        /// `ride` or `video`.
        kind: String,
        id: String,
        #[arg(long, value_parser = parse_time)]
        from: Option<Timestamp>,
        #[arg(long, value_parser = parse_time)]
        to: Option<Timestamp>,
    },
    /// Rebuild the read models from the log (archive + stream tail), into the live ones or
    /// `--into` (another table on AWS, another data directory for the embedded backend).
    Rebuild {
        #[arg(long)]
        into: Option<String>,
        /// Continue a stopped rebuild after this position (from its report).
        #[arg(long)]
        resume_after: Option<String>,
    },
    /// Compare the log with the heads and the read models; changes nothing.
    Verify,
    /// List the entities the processor parked (records it can never apply: a newer event
    /// schema, a gap, a value the store refuses); exits 3 when there are any.
    Parked,
    /// Re-project a parked entity (e.g. `ride#r1`) from the log once the cause is fixed (a
    /// newer processor, a missing record back in the log), and end its parking.
    Redrive { entity: String },
    /// Publish the archive's records into the stream again (a new or recreated stream gets
    /// the timeline back; readers dedupe what the stream already holds).
    ReplayArchive {
        /// A directory in Firehose's layout (e.g. `aws s3 sync s3://<bucket> <dir>`);
        /// the backend's own archive when omitted.
        #[arg(long)]
        from_dir: Option<PathBuf>,
        /// The key prefix the archive in --from-dir was written under.
        #[arg(long, default_value = ARCHIVE_PREFIX, requires = "from_dir")]
        prefix: String,
        /// Replay even if the stream already holds records (they get copies, which readers
        /// skip, and which the archive then holds twice).
        #[arg(long)]
        allow_copies: bool,
        /// Skip the archive's hour folders that end more than 15 minutes before this time
        /// (objects are filed by the arrival hour of their first record).
        #[arg(long, value_parser = parse_time)]
        since: Option<Timestamp>,
        /// Skip the archive's hour folders that start more than 15 minutes after this time.
        #[arg(long, value_parser = parse_time)]
        until: Option<Timestamp>,
    },
}

#[derive(Parser, Debug, Clone)]
struct ServeArgs {
    /// Port to listen on (127.0.0.1 only).
    #[arg(long, default_value_t = 3000, env = "TIMELINE_PORT")]
    port: u16,
    /// Seconds between outbox sweeps (0 turns the sweep off).
    #[arg(long, default_value_t = 5)]
    sweep_every: u64,
    /// With the AWS backend, create the stream, tables and bucket first (the default when
    /// AWS_ENDPOINT_URL points at an emulator; never needed against a deployed stack).
    #[arg(long)]
    bootstrap: Option<bool>,
    /// Play the guided demo once the server is up, then keep serving.
    #[arg(long)]
    demo: bool,
    /// With --demo: shut down once the demo has played (exits non-zero if it failed); the
    /// test command uses it to check the first step of the README.
    #[arg(long, requires = "demo")]
    exit_after_demo: bool,
    /// Who publishes committed events, as the template's `PublishMode`: `inline` (the
    /// command handler) or `stream` (a relay on the write-model table's change stream; on the
    /// embedded backend, which has none, the relay polls the outboxes).
    #[arg(long, value_enum, default_value_t = PublishArg::Inline)]
    publish_mode: PublishArg,
    /// Where discarded records (the on-failure destination) are written
    /// [default: <data-dir>/failed-records.jsonl].
    #[arg(long)]
    failures: Option<PathBuf>,
}

#[derive(ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum ReportArg {
    Fares,
    VideoFailures,
}

#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq)]
enum PublishArg {
    Inline,
    Stream,
}

impl From<PublishArg> for timeline_core::write::PublishMode {
    fn from(arg: PublishArg) -> Self {
        match arg {
            PublishArg::Inline => timeline_core::write::PublishMode::Inline,
            PublishArg::Stream => timeline_core::write::PublishMode::Stream,
        }
    }
}

fn parse_time(s: &str) -> Result<Timestamp, String> {
    s.parse()
        .map_err(|_| format!("{s:?} is not an RFC 3339 time (e.g. 2026-11-28T10:02:00Z)"))
}

/// Exit statuses: 0 done, 1 failed (the error is printed), 3 done but found problems (drift,
/// unreadable parts of the log; see the JSON answer).
#[tokio::main]
async fn main() -> anyhow::Result<ExitCode> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,timeline_local=info".into()),
        )
        .with_target(false)
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let command = cli
        .command
        .unwrap_or_else(|| Command::Serve(ServeArgs::parse_from(["serve"])));
    if let Command::Demo { url } = command {
        let issuer = Issuer::open(&cli.data_dir)?;
        let http = Http::signed(url, Tokens::demo(&issuer)?);
        demo::run(&http, &suffix(), |line| println!("{line}")).await?;
        return Ok(ExitCode::SUCCESS);
    }
    if let Command::Token {
        sub,
        role,
        service,
        ttl,
    } = command
    {
        let issuer = Issuer::open(&cli.data_dir)?;
        let caller = match (sub, service) {
            (_, Some(service)) => Caller::service(format!(
                "arn:aws:sts::000000000000:assumed-role/{service}/local"
            )),
            (Some(sub), None) => Caller::user(sub, role.into_iter().map(Role::from)),
            (None, None) => anyhow::bail!("give --sub (with --role) or --service"),
        };
        println!("{}", issuer.mint(&caller, ttl)?);
        return Ok(ExitCode::SUCCESS);
    }
    let read_store = match &cli.read_store {
        Some(url) => Some(open_read_store(url, &command).await?),
        None => None,
    };
    match (&command, &read_store) {
        (Command::Migrate, Some(_)) | (Command::Report { .. }, Some(_)) => {
            return read_store_command(command, read_store.expect("given"), cli.json).await;
        }
        (Command::Migrate | Command::Report { .. }, None) => {
            anyhow::bail!("give the PostgreSQL read store with --read-store postgres://...")
        }
        _ => {}
    }
    let endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
    let use_aws = match cli.backend {
        BackendKind::Auto => endpoint.is_some(),
        BackendKind::Embedded => false,
        BackendKind::Aws => true,
    };
    let output = if cli.json { Output::Json } else { Output::Text };
    if use_aws {
        let sdk = timeline_aws::config::load_sdk_config().await;
        let backend = AwsBackend {
            read_store,
            clients: Clients::new(&sdk),
            streams: aws_sdk_dynamodbstreams::Client::new(&sdk),
            names: timeline_aws::resources::definitions().names_from_env(),
            endpoint,
        };
        if let Command::Serve(args) = &command {
            if args.bootstrap.unwrap_or(backend.endpoint.is_some()) {
                bootstrap(&backend).await?;
            }
        }
        let archive = backend.archive();
        go(backend, archive, command, &cli.data_dir, output).await
    } else {
        let creates = matches!(command, Command::Serve(_) | Command::ReplayArchive { .. });
        let database = cli.data_dir.join(timeline_embedded::DATABASE_FILE);
        anyhow::ensure!(
            creates || database.exists(),
            "no data in {} (no {}): give the directory `serve` uses with --data-dir",
            cli.data_dir.display(),
            database.display()
        );
        let mut backend = EmbeddedBackend::open(&cli.data_dir).with_context(|| {
            format!(
                "cannot use the data directory {} (choose another with --data-dir)",
                cli.data_dir.display()
            )
        })?;
        backend.read_store = read_store;
        let archive = backend.archive();
        go(backend, archive, command, &cli.data_dir, output).await
    }
}

/// The PostgreSQL read store at `url`. Every command but `migrate` needs its schema to be the
/// one this build needs, and refuses to start otherwise.
async fn open_read_store(
    url: &str,
    command: &Command,
) -> anyhow::Result<timeline_postgres::PgReadModels> {
    let pool = timeline_postgres::pool(url)?;
    if !matches!(command, Command::Migrate) {
        timeline_postgres::check_schema(&pool)
            .await
            .with_context(|| format!("the read store at {} is not ready", redact(url)))?;
    }
    timeline_postgres::PgReadModels::connect(pool)
        .await
        .with_context(|| format!("cannot reach the read store at {}", redact(url)))
}

/// A URL without its password, for messages.
fn redact(url: &str) -> String {
    match (url.split_once("://"), url.rsplit_once('@')) {
        (Some((scheme, rest)), Some((_, host))) if rest.contains('@') => {
            let user = rest.split(['@', ':']).next().unwrap_or_default();
            format!("{scheme}://{user}@{host}")
        }
        _ => url.to_owned(),
    }
}

async fn read_store_command(
    command: Command,
    store: timeline_postgres::PgReadModels,
    json: bool,
) -> anyhow::Result<ExitCode> {
    use timeline_postgres::reports;
    match command {
        Command::Migrate => {
            let applied = timeline_postgres::migrate(store.pool()).await?;
            if json {
                println!("{}", serde_json::json!({ "applied": applied }));
            } else if applied.is_empty() {
                println!("the read store's schema is up to date");
            } else {
                println!("applied migrations {applied:?}");
            }
        }
        Command::Report {
            report: ReportArg::Fares,
            from,
            to,
        } => {
            let days = reports::fares_per_driver_per_day(&store, from, to).await?;
            if json {
                println!("{}", serde_json::to_string(&days)?);
            } else {
                println!(
                    "{:<10}  {:<16}  {:>5}  {:>10}",
                    "day", "driver", "rides", "fares"
                );
                for d in days {
                    let fares = format!("{}.{:02}", d.fares_cents / 100, d.fares_cents % 100);
                    println!(
                        "{:<10}  {:<16}  {:>5}  {:>10}",
                        d.day, d.driver_id, d.rides, fares
                    );
                }
            }
        }
        Command::Report {
            report: ReportArg::VideoFailures,
            ..
        } => {
            let reasons = reports::video_failure_reasons(&store).await?;
            if json {
                println!("{}", serde_json::to_string(&reasons)?);
            } else {
                println!("{:>6}  reason", "videos");
                for r in reasons {
                    println!("{:>6}  {}", r.videos, r.reason);
                }
            }
        }
        _ => unreachable!("only read-store commands come here"),
    }
    Ok(ExitCode::SUCCESS)
}

async fn bootstrap(backend: &AwsBackend) -> anyhow::Result<()> {
    timeline_aws::resources::bootstrap(&backend.clients, &backend.names)
        .await
        .with_context(|| {
            format!(
                "could not create the resources at {} (is the endpoint reachable? is the emulator running?)",
                backend.endpoint.as_deref().unwrap_or("AWS")
            )
        })
}

async fn go<B: Backend, A: ArchiveStore>(
    backend: B,
    own_archive: A,
    command: Command,
    data_dir: &std::path::Path,
    output: Output,
) -> anyhow::Result<ExitCode> {
    let operation = match command {
        Command::Serve(args) => {
            serve(args, backend, data_dir).await?;
            return Ok(ExitCode::SUCCESS);
        }
        Command::Demo { .. }
        | Command::Token { .. }
        | Command::Migrate
        | Command::Report { .. } => {
            unreachable!("answered before a backend is opened")
        }
        Command::State {
            kind,
            id,
            as_of,
            version,
        } => Operation::State {
            kind,
            id,
            as_of,
            version,
        },
        Command::History { kind, id, from, to } => Operation::History { kind, id, from, to },
        Command::Rebuild { into, resume_after } => Operation::Rebuild { into, resume_after },
        Command::Verify => Operation::Verify,
        Command::Parked => Operation::Parked,
        Command::Redrive { entity } => Operation::Redrive { entity },
        Command::ReplayArchive {
            from_dir,
            prefix,
            allow_copies,
            since,
            until,
        } => {
            if !allow_copies && stream_holds_records(&backend.reader()).await? {
                anyhow::bail!(
                    "the stream already holds records: replaying the archive would add copies \
                     of them (readers skip copies, the archive keeps them). Replay into a new \
                     stream, or pass --allow-copies"
                );
            }
            let operation = Operation::ReplayArchive { since, until };
            if let Some(dir) = from_dir {
                anyhow::ensure!(dir.is_dir(), "{} is not a directory", dir.display());
                let archive = LocalArchive::new(dir, prefix);
                return exit_code(operate(&backend, operation, &archive, output).await?);
            }
            operation
        }
    };
    exit_code(operate(&backend, operation, &own_archive, output).await?)
}

fn exit_code(answer: serde_json::Value) -> anyhow::Result<ExitCode> {
    Ok(if found_problems(&answer) {
        ExitCode::from(FOUND_PROBLEMS as u8)
    } else {
        ExitCode::SUCCESS
    })
}

fn suffix() -> String {
    chrono::Utc::now().format("%H%M%S").to_string()
}

async fn serve<B: Backend>(
    args: ServeArgs,
    backend: B,
    data_dir: &std::path::Path,
) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (is the port in use? try --port)"))?;
    // Port 0 asks the system for a free port: use the one it gave.
    let addr = listener.local_addr()?;
    let issuer = Arc::new(Issuer::open(data_dir)?);
    let tokens = Tokens::demo(&issuer)?;
    let options = RunOptions {
        sweep_every: Duration::from_secs(args.sweep_every),
        failures: args
            .failures
            .clone()
            .unwrap_or_else(|| data_dir.join("failed-records.jsonl")),
        issuer,
        subscribers: Some(data_dir.to_owned()),
        announce_deliveries: true,
        publish: args.publish_mode.into(),
    };
    let port = addr.port();
    let (demo, exit_after_demo) = (args.demo, args.exit_after_demo);
    let demo_failed = std::sync::atomic::AtomicBool::new(false);
    let (demo_done, demo_played) = tokio::sync::oneshot::channel::<()>();
    let page = timeline_local::ui::url(&format!("http://{addr}"), &tokens.user);
    let after_start = async {
        println!("  timeline page (as an operator): {page}");
        if !demo {
            return;
        }
        let http = Http::signed(format!("http://{addr}"), tokens);
        println!();
        if let Err(e) = demo::run(&http, &suffix(), |line| println!("{line}")).await {
            eprintln!("the demo failed: {e:#}");
            demo_failed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        if exit_after_demo {
            let _ = demo_done.send(());
            return;
        }
        println!("\nThe server keeps running. Try:");
        println!("  T=$(target/debug/timeline-local token --sub rider-42 --role rider)");
        println!(
            "  curl -s 'localhost:{port}/rides?rider_id=rider-42' -H \"Authorization: Bearer $T\""
        );
        println!("  curl -s -XPOST localhost:{port}/rides -H \"Authorization: Bearer $T\" -H 'Content-Type: application/json' -d '{{\"pickup\":{{\"address\":\"A\",\"lat\":53.34,\"lon\":-6.25}},\"dropoff\":{{\"address\":\"B\",\"lat\":53.42,\"lon\":-6.25}}}}'");
        println!("  curl -s 'localhost:{port}/rides/<id>/history' -H \"Authorization: Bearer $T\"");
        println!("  curl -s 'localhost:{port}/rides/<id>/state?as_of=2026-11-28T10:02:00Z' -H \"Authorization: Bearer $T\"");
        println!("  target/debug/timeline-local state ride <id> --as-of 2026-11-28T10:02:00Z");
        println!("Open the timeline page: {page}");
        println!("Ctrl-C stops it.");
    };
    let shutdown = async {
        // Ctrl-C, or a TERM from a supervisor (a script, a container runtime).
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let terminated = async {
            match term.as_mut() {
                Some(t) => {
                    t.recv().await;
                }
                None => std::future::pending::<()>().await,
            }
        };
        let played = async {
            if !exit_after_demo || demo_played.await.is_err() {
                std::future::pending::<()>().await
            }
        };
        tokio::select! {
            _ = played => return,
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated => {}
        }
        println!("shutting down: finishing requests in flight, flushing the archive");
    };
    run(listener, backend, options, after_start, shutdown).await?;
    anyhow::ensure!(
        !demo_failed.load(std::sync::atomic::Ordering::SeqCst),
        "the demo failed"
    );
    Ok(())
}
