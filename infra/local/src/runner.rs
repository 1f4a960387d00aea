//! Runs the whole system in one process: the API through the real handlers, and what AWS
//! runs around them (the event source mapping into the processor, Firehose into the
//! archive, the scheduled outbox sweep). Shutting down finishes requests in flight and
//! flushes the archive pump, so nothing accepted is left behind.

use crate::esm::{EventSourceMapping, MappingConfig};
use crate::system::{FailureFile, LocalSystem, ProcessorFunction, ARCHIVE_PREFIX};
use anyhow::Context;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use timeline_aws::archive::S3Archive;
use timeline_aws::pump::{FirehosePump, PumpConfig};
use timeline_aws::stream_reader::KinesisReader;
use timeline_aws::{Clients, ResourceNames};
use timeline_core::processor::Processor;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub sweep_every: Duration,
    pub bootstrap: Option<bool>,
    pub failures: PathBuf,
}

/// Runs the system until `shutdown` completes: the API on `listener`, the event source
/// mapping, the archive pump and the sweep; `after_start` runs once everything is up.
pub async fn run(
    listener: tokio::net::TcpListener,
    clients: Clients,
    names: ResourceNames,
    args: RunOptions,
    after_start: impl Future<Output = ()>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let endpoint = std::env::var("AWS_ENDPOINT_URL").ok();
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
    if let Some(dir) = args.failures.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot write to {}", dir.display()))?;
    }
    let addr = listener.local_addr()?;
    let system = Arc::new(LocalSystem::new(&clients, &names));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    // The event source mapping: follows every shard into the processor.
    {
        let reader = KinesisReader {
            client: clients.kinesis.clone(),
            stream: names.event_stream.clone(),
        };
        let processor = ProcessorFunction(Processor::new(
            timeline_aws::read_models::DynamoReadModels::new(
                clients.dynamodb.clone(),
                &names.read_model_table,
            ),
        ));
        let mut esm = EventSourceMapping::new(
            reader,
            processor,
            FailureFile::new(args.failures.clone()),
            MappingConfig::default(),
        );
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            loop {
                match esm.poll().await {
                    Ok(r) if r.batches > 0 => tracing::debug!(
                        records = r.records_done,
                        discarded = r.records_discarded,
                        "projected"
                    ),
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "event source mapping"),
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                    _ = stop.changed() => break,
                }
            }
        });
    }
    // Firehose: the stream into the archive, buffered briefly so time travel sees it soon.
    {
        let mut config = PumpConfig::new("timeline-archive");
        config.buffer_interval = Duration::from_secs(5);
        let mut pump = FirehosePump::new(
            clients.kinesis.clone(),
            &names.event_stream,
            S3Archive::new(clients.s3.clone(), &names.archive_bucket, ARCHIVE_PREFIX),
            config,
        );
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            loop {
                if let Err(e) = pump.poll().await {
                    tracing::warn!(error = %e, "archive pump");
                }
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = stop.changed() => break,
                }
            }
            // Read what arrived since the last poll and deliver everything buffered before
            // stopping: nothing accepted is left out of the archive.
            if let Err(e) = pump.poll().await {
                tracing::warn!(error = %e, "archive pump final read");
            }
            if let Err(e) = pump.flush().await {
                tracing::warn!(error = %e, "archive pump final flush");
            }
        });
    }
    // The scheduled outbox sweep.
    if !args.sweep_every.is_zero() {
        let system = system.clone();
        let mut stop = stop_rx.clone();
        let every = args.sweep_every;
        tasks.spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(every) => {}
                    _ = stop.changed() => break,
                }
                match system.commands.service().sweep(500).await {
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
        "timeline API on http://{addr}\n  stream {}, tables {} and {}, archive s3://{}/{ARCHIVE_PREFIX}, endpoint {}",
        names.event_stream,
        names.write_model_table,
        names.read_model_table,
        names.archive_bucket,
        endpoint.as_deref().unwrap_or("AWS")
    );
    let server = tokio::spawn(crate::server::serve(
        listener,
        system.clone(),
        stop_rx.clone(),
    ));
    after_start.await;
    shutdown.await;
    let _ = stop_tx.send(true);
    server.await.context("server task")?;
    while tasks.join_next().await.is_some() {}
    Ok(())
}
