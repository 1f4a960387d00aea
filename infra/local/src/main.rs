//! `timeline-local`: the system on one machine, and the operator's tool.
//!
//! `timeline-local serve` runs the HTTP API on 127.0.0.1 through the real handler code (as
//! API Gateway proxy events), with the event source mapping into the processor, the
//! Firehose-style pump into the archive and the outbox sweep running alongside.
//! `timeline-local demo` plays the guided demo against it. The operator commands (`state`,
//! `history`, `rebuild`, `verify`) run the hydrator in-process against the same resources.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use timeline_aws::{Clients, ResourceNames};
use timeline_local::demo::{self, Http};
use timeline_local::runner::{run, RunOptions};
use timeline_local::system::LocalSystem;

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
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Serve the API on 127.0.0.1 with the processor, the archive pump and the sweep.
    Serve(ServeArgs),
    /// Play the guided demo against a running API.
    Demo {
        #[arg(long, default_value = "http://127.0.0.1:3000")]
        url: String,
    },
    /// An entity's state now, as of a time, or as of a version (from the log).
    State {
        /// `ride` or `video`.
        kind: String,
        id: String,
        #[arg(long)]
        as_of: Option<String>,
        #[arg(long)]
        version: Option<u64>,
    },
    /// An entity's history between two times, with the state after each step.
    History {
        kind: String,
        id: String,
        #[arg(long)]
        from: Option<String>,
        #[arg(long)]
        to: Option<String>,
    },
    /// Rebuild the read models from the log (into the live table or `--into`).
    Rebuild {
        #[arg(long)]
        into: Option<String>,
        #[arg(long)]
        resume_after: Option<String>,
    },
    /// Compare the log with the heads and the read models; changes nothing.
    Verify,
}

#[derive(Parser, Debug, Clone)]
struct ServeArgs {
    /// Port to listen on (127.0.0.1 only).
    #[arg(long, default_value_t = 3000, env = "TIMELINE_PORT")]
    port: u16,
    /// Seconds between outbox sweeps (0 turns the sweep off).
    #[arg(long, default_value_t = 5)]
    sweep_every: u64,
    /// Create the stream, tables and bucket first (default when AWS_ENDPOINT_URL points at
    /// an emulator; never needed against a deployed stack).
    #[arg(long)]
    bootstrap: Option<bool>,
    /// Play the guided demo once the server is up, then keep serving.
    #[arg(long)]
    demo: bool,
    /// Where discarded records (the on-failure destination) are written.
    #[arg(long, default_value = ".local/failed-records.jsonl")]
    failures: PathBuf,
}

/// The names `template.yaml` uses by default, unless the environment says otherwise.
fn names_with_local_defaults() -> ResourceNames {
    let var =
        |name: &str, default: &str| std::env::var(name).unwrap_or_else(|_| default.to_owned());
    ResourceNames {
        event_stream: var(timeline_aws::config::EVENT_STREAM_NAME, "timeline-events"),
        write_model_table: var(
            timeline_aws::config::WRITE_MODEL_TABLE,
            "timeline-write-model",
        ),
        read_model_table: var(
            timeline_aws::config::READ_MODEL_TABLE,
            "timeline-read-models",
        ),
        archive_bucket: var(timeline_aws::config::ARCHIVE_BUCKET, "timeline-archive"),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,timeline_local=info".into()),
        )
        .with_target(false)
        .init();
    let cli = Cli::parse();
    let names = names_with_local_defaults();
    let clients = Clients::from_env().await;
    match cli
        .command
        .unwrap_or(Command::Serve(ServeArgs::parse_from(["serve"])))
    {
        Command::Serve(args) => serve(args, clients, names).await,
        Command::Demo { url } => {
            let http = Http::new(url);
            demo::run(&http, &suffix(), |line| println!("{line}"))
                .await
                .map(|_| ())
        }
        other => operate(other, cli.json, clients, names).await,
    }
}

fn suffix() -> String {
    chrono::Utc::now().format("%H%M%S").to_string()
}

async fn operate(
    command: Command,
    json: bool,
    clients: Clients,
    names: ResourceNames,
) -> anyhow::Result<()> {
    use hydrator::HydratorRequest as R;
    let system = LocalSystem::new(&clients, &names);
    let time = |s: Option<String>| -> anyhow::Result<Option<timeline_core::Timestamp>> {
        s.map(|s| {
            s.parse()
                .with_context(|| format!("{s:?} is not an RFC 3339 time"))
        })
        .transpose()
    };
    let request = match command {
        Command::State {
            kind,
            id,
            as_of,
            version,
        } => R::State {
            aggregate_type: kind,
            aggregate_id: id,
            as_of: time(as_of)?,
            version,
        },
        Command::History { kind, id, from, to } => R::History {
            aggregate_type: kind,
            aggregate_id: id,
            from: time(from)?,
            to: time(to)?,
        },
        Command::Rebuild { into, resume_after } => R::Rebuild {
            target_table: into,
            resume_after,
        },
        Command::Verify => R::Verify {},
        Command::Serve(_) | Command::Demo { .. } => unreachable!("handled by main"),
    };
    let spinner = (!json).then(|| {
        let bar = indicatif::ProgressBar::new_spinner();
        bar.set_message("reading the log (archive + stream tail)...");
        bar.enable_steady_tick(Duration::from_millis(120));
        bar
    });
    let answer = system.hydrator.handle(request).await;
    if let Some(bar) = spinner {
        bar.finish_and_clear();
    }
    let answer = answer?;
    if json {
        println!("{}", serde_json::to_string(&answer)?);
    } else {
        println!("{}", serde_json::to_string_pretty(&answer)?);
    }
    Ok(())
}

async fn serve(args: ServeArgs, clients: Clients, names: ResourceNames) -> anyhow::Result<()> {
    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (is the port in use? try --port)"))?;
    let options = RunOptions {
        sweep_every: Duration::from_secs(args.sweep_every),
        bootstrap: args.bootstrap,
        failures: args.failures.clone(),
    };
    let port = args.port;
    let demo = args.demo;
    let after_start = async move {
        if demo {
            let http = Http::new(format!("http://{addr}"));
            println!();
            if let Err(e) = demo::run(&http, &suffix(), |line| println!("{line}")).await {
                eprintln!("the demo failed: {e:#}");
            }
            println!("\nThe server keeps running. Try:");
            println!("  curl -s 'localhost:{port}/rides?rider_id=rider-42'");
            println!("  curl -s -XPOST localhost:{port}/rides -H 'Content-Type: application/json' -d '{{\"rider_id\":\"rider-1\",\"pickup\":{{\"address\":\"A\",\"lat\":53.34,\"lon\":-6.25}},\"dropoff\":{{\"address\":\"B\",\"lat\":53.42,\"lon\":-6.25}}}}'");
            println!("  curl -s 'localhost:{port}/rides/<id>/history'");
            println!("  curl -s 'localhost:{port}/rides/<id>/state?as_of=2026-11-28T10:02:00Z'");
            println!("Ctrl-C stops it.");
        }
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
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminated => {}
        }
        println!("shutting down: finishing requests in flight, flushing the archive");
    };
    run(listener, clients, names, options, after_start, shutdown).await
}
