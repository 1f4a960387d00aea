//! `timeline-local`: the system on one machine. Serves the HTTP API on 127.0.0.1 through the
//! real handler code (as API Gateway proxy events), against moto, LocalStack or AWS via the
//! SDK's standard endpoint settings, and runs the outbox sweep on a timer.

mod server;

use anyhow::Context;
use clap::Parser;
use command_handler::CommandApi;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use timeline_aws::{Clients, DynamoWriteStore, KinesisEventLog, ResourceNames};
use timeline_core::ports::{Clock, EventLog, SystemClock, WriteModelStore};

#[derive(Parser, Debug)]
#[command(version, about = "Run the timeline API locally on 127.0.0.1")]
struct Args {
    /// Port to listen on (127.0.0.1 only).
    #[arg(long, default_value_t = 3000, env = "TIMELINE_PORT")]
    port: u16,
    /// Seconds between outbox sweeps (0 turns the sweep off).
    #[arg(long, default_value_t = 5)]
    sweep_every: u64,
    /// Create the stream and tables first (default when AWS_ENDPOINT_URL points at an
    /// emulator; never needed against a deployed stack).
    #[arg(long)]
    bootstrap: Option<bool>,
}

impl<S: WriteModelStore + 'static, L: EventLog + 'static, C: Clock + 'static> server::Api
    for CommandApi<S, L, C>
{
    fn handle(
        &self,
        req: lambda_http::Request,
    ) -> impl std::future::Future<Output = lambda_http::Response<lambda_http::Body>> + Send {
        CommandApi::handle(self, req)
    }
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
                .unwrap_or_else(|_| "info,aws_config=warn,aws_smithy_runtime=warn".into()),
        )
        .with_target(false)
        .init();
    let args = Args::parse();
    let names = names_with_local_defaults();
    let endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
    let clients = Clients::from_env().await;

    if args.bootstrap.unwrap_or(endpoint.is_some()) {
        timeline_aws::resources::bootstrap(&clients, &names)
            .await
            .with_context(|| {
                format!(
                    "could not create the resources at {} (is the emulator running?)",
                    endpoint.as_deref().unwrap_or("AWS")
                )
            })?;
    }

    let addr = SocketAddr::from(([127, 0, 0, 1], args.port));
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (is the port in use? try --port)"))?;
    let api = Arc::new(CommandApi::new(
        DynamoWriteStore::new(clients.dynamodb.clone(), &names.write_model_table),
        KinesisEventLog::new(clients.kinesis.clone(), &names.event_stream),
        SystemClock,
    ));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);

    if args.sweep_every > 0 {
        let api = api.clone();
        let mut stop = stop_rx.clone();
        let every = Duration::from_secs(args.sweep_every);
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => break,
                }
                match api.service().sweep(500).await {
                    Ok(r) if r.examined > 0 => {
                        tracing::info!(published = r.published, failed = r.failed, "outbox sweep")
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "outbox sweep failed"),
                }
            }
        });
    }

    println!(
        "timeline API on http://{addr} (stream {}, table {}, endpoint {})",
        names.event_stream,
        names.write_model_table,
        endpoint.as_deref().unwrap_or("AWS")
    );
    let server = tokio::spawn(server::serve(listener, api, stop_rx));
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    println!("shutting down: finishing requests in flight");
    let _ = stop_tx.send(true);
    server.await.context("server task")?;
    Ok(())
}
