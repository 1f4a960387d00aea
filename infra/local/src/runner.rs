//! Runs the whole system in one process: the API through the real handlers, and what AWS
//! runs around them (the event source mapping into the processor, Firehose into the
//! archive, the scheduled outbox sweep). Shutting down finishes requests in flight and
//! flushes the archive pump, so nothing accepted is left behind.

use crate::backend::Backend;
use crate::esm::{EventSourceMapping, MappingConfig};
use crate::system::{
    DistributorFunction, FailureFile, LocalSystem, ProcessorFunction, RelayFunction,
};
use anyhow::Context;
use outbox_relay::RelayHandler;
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use timeline_core::ports::SystemClock;
use timeline_core::write::PublishMode;
use timeline_engine::distribute::Distributor;
use timeline_engine::projection::Processor;
use timeline_engine::pump::Pump;

/// How long the event source mapping may keep projecting after the API has stopped.
const FINAL_DRAIN: Duration = Duration::from_secs(10);

#[derive(Clone)]
pub struct RunOptions {
    pub sweep_every: Duration,
    /// The on-failure destination of the event source mapping (a JSON-lines file).
    pub failures: PathBuf,
    /// Verifies the requests' bearer tokens.
    pub issuer: Arc<crate::auth::Issuer>,
    /// The data directory whose `subscribers.json` receives the integration events (none:
    /// no distribution).
    pub subscribers: Option<PathBuf>,
    /// Print each delivery to a subscriber.
    pub announce_deliveries: bool,
    /// Who publishes committed events (the template's `PublishMode`).
    pub publish: PublishMode,
}

/// How often the embedded backend's relay looks for outboxes (it has no change stream).
const RELAY_POLL: Duration = Duration::from_millis(50);

/// Runs the system on `backend` until `shutdown` completes: the API on `listener`, the event
/// source mapping, the archive pump and the sweep; `after_start` runs once everything is up.
pub async fn run<B: Backend>(
    listener: tokio::net::TcpListener,
    backend: B,
    args: RunOptions,
    after_start: impl Future<Output = ()>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    if let Some(dir) = args.failures.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("cannot write to {}", dir.display()))?;
    }
    let addr = listener.local_addr()?;
    let system = Arc::new(LocalSystem::new(&backend, args.publish));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();

    // The event source mapping: follows every shard into the processor.
    let processor = ProcessorFunction(Processor::new(backend.views()));
    follow(
        &mut tasks,
        EventSourceMapping::with_checkpoints(
            backend.reader(),
            processor,
            FailureFile::new(args.failures.clone()),
            MappingConfig::default(),
            backend.mapping_checkpoints(),
        ),
        stop_rx.clone(),
    );
    // The distributor's own mapping: integration events to the local subscribers.
    if let Some(dir) = &args.subscribers {
        let bus = crate::subscribers::LocalBus::open(dir, args.announce_deliveries)?;
        follow(
            &mut tasks,
            EventSourceMapping::with_checkpoints(
                backend.reader(),
                DistributorFunction(Distributor::new(bus)),
                FailureFile::new(args.failures.clone()),
                MappingConfig::default(),
                backend.distributor_checkpoints(),
            ),
            stop_rx.clone(),
        );
    }
    // PublishMode stream: the outbox relay, on the write-model table's change stream where
    // the backend has one, else polling the outboxes.
    if args.publish == PublishMode::Stream {
        let relay = RelayHandler::new(backend.write_store(), backend.event_log(), SystemClock);
        match backend.table_stream().await? {
            Some(table) => follow(
                &mut tasks,
                EventSourceMapping::new(
                    table,
                    RelayFunction(relay),
                    FailureFile::new(args.failures.clone()),
                    MappingConfig::default(),
                ),
                stop_rx.clone(),
            ),
            None => {
                let mut stop = stop_rx.clone();
                tasks.spawn(async move {
                    loop {
                        if let Err(e) = relay.service().sweep(500).await {
                            tracing::warn!(error = %e, "outbox relay");
                        }
                        tokio::select! {
                            _ = tokio::time::sleep(RELAY_POLL) => {}
                            _ = stop.changed() => break,
                        }
                    }
                });
            }
        }
    }
    // Firehose: the stream into the archive, buffered briefly so time travel sees it soon.
    {
        let mut pump = backend.pump();
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

    println!("timeline API on http://{addr}\n  {}", backend.describe());
    if args.publish == PublishMode::Stream {
        println!("  publish mode: stream (commits are published by the outbox relay)");
    }
    let (server_stop_tx, server_stop_rx) = tokio::sync::watch::channel(false);
    let server = tokio::spawn(crate::server::serve(
        listener,
        system.clone(),
        args.issuer.clone(),
        server_stop_rx,
    ));
    // A shutdown while `after_start` runs (Ctrl-C during the demo) stops it there.
    tokio::pin!(shutdown);
    tokio::select! {
        _ = after_start => shutdown.as_mut().await,
        _ = shutdown.as_mut() => {}
    }
    // The API first, so every request accepted is on the log before the mapping and the
    // pump take their last look at it.
    let _ = server_stop_tx.send(true);
    if let Err(e) = server.await {
        // Still stop the rest properly: the pump must flush.
        tracing::error!(error = %e, "the API server task failed");
    }
    // Publish what a failed publish left in an outbox, so it is on the stream as well.
    if let Err(e) = system.commands.service().sweep(500).await {
        tracing::warn!(error = %e, "final outbox sweep failed");
    }
    let _ = stop_tx.send(true);
    while tasks.join_next().await.is_some() {}
    Ok(())
}

/// Runs an event source mapping until `stop` flips, then takes a last, bounded look.
fn follow<R, H, S, P>(
    tasks: &mut tokio::task::JoinSet<()>,
    mut esm: EventSourceMapping<R, H, S, P>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) where
    R: timeline_core::ports::StreamReader + 'static,
    H: crate::esm::BatchHandler + 'static,
    S: crate::esm::FailureSink + 'static,
    P: timeline_core::ports::Checkpoints + 'static,
{
    tasks.spawn(async move {
        loop {
            let busy = match esm.poll().await {
                Ok(r) => {
                    if r.batches > 0 {
                        tracing::debug!(
                            records = r.records_done,
                            discarded = r.records_discarded,
                            "projected"
                        );
                    }
                    r.busy()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "event source mapping");
                    false
                }
            };
            // As Lambda's mapping does, invoke again at once while a shard has records;
            // wait only when every shard is caught up.
            if busy && !*stop.borrow() {
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                _ = stop.changed() => break,
            }
        }
        // A last look, bounded: project what the final sweep published; anything left
        // is projected on the next start, from the checkpoint.
        let deadline = tokio::time::Instant::now() + FINAL_DRAIN;
        while tokio::time::Instant::now() < deadline {
            match esm.poll().await {
                Ok(r) if r.busy() => {}
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "event source mapping, last look");
                    break;
                }
            }
        }
    });
}
