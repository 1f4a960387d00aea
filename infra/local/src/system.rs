//! The whole system in one process, on either backend (see `backend`): the
//! same handlers as the Lambda functions behind one HTTP server, plus the parts AWS runs for
//! us (the event source mapping into the processor, Firehose into the archive, the outbox
//! sweep on a schedule).

use crate::backend::Backend;
use crate::esm::{BatchHandler, FailureSink};
use command_handler::CommandApi;
use hydrator::Hydrator;
use query::QueryApi;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;
use timeline_core::ports::{Clock, LogRecord, SystemClock};
use timeline_core::ports::{EventLog, ReadModelStore, WriteModelStore};
use timeline_core::write::{PublishMode, WriteConfig};
use timeline_engine::projection::{IncomingRecord, Processor};

/// Where rebuilds write: the live read models or the ones named.
pub type Target<B> = Box<dyn Fn(Option<&str>) -> <B as Backend>::Rebuild + Send + Sync>;

pub struct LocalSystem<B: Backend> {
    pub commands: CommandApi<B::Write, B::Log, SystemClock>,
    pub queries: QueryApi<B::Views>,
    pub hydrator: Hydrator<B::Source, B::Stored, Target<B>>,
}

pub const ARCHIVE_PREFIX: &str = timeline_engine::archive::DEFAULT_PREFIX;

impl<B: Backend> LocalSystem<B> {
    /// The system with the command handler deployed with `publish` (the template's
    /// `PublishMode`).
    pub fn new(backend: &B, publish: PublishMode) -> Self {
        let for_target = backend.clone();
        let target: Target<B> = Box::new(move |into| for_target.rebuild_target(into));
        let config = WriteConfig {
            publish,
            ..WriteConfig::default()
        };
        LocalSystem {
            commands: CommandApi::with_config(
                backend.write_store(),
                backend.event_log(),
                SystemClock,
                config,
            ),
            queries: QueryApi::new(backend.views()),
            hydrator: Hydrator::new(backend.source(), backend.stored(), target),
        }
    }
}

/// Routes as API Gateway does in `template.yaml`: commands (POST) to the command handler,
/// time travel (`/state`, `/timeline`) to the hydrator, other reads to the query function.
impl<B: Backend> crate::server::Api for LocalSystem<B> {
    async fn handle(&self, req: lambda_http::Request) -> lambda_http::Response<lambda_http::Body> {
        let path = timeline_http::path(&req).to_owned();
        if req.method() == lambda_http::http::Method::POST {
            self.commands.handle(req).await
        } else if path.ends_with("/state") || path.ends_with("/timeline") {
            self.hydrator.handle_http(req).await
        } else {
            self.queries.handle(req).await
        }
    }
}

/// The processor as the mapping invokes it.
pub struct ProcessorFunction<R>(pub Processor<R>);

impl<R: ReadModelStore> BatchHandler for ProcessorFunction<R> {
    async fn handle(&self, records: &[LogRecord]) -> Option<String> {
        let incoming: Vec<IncomingRecord> = records.iter().map(IncomingRecord::from).collect();
        let outcome = self.0.process(&incoming, SystemClock.now()).await;
        for (index, failure) in &outcome.failures {
            tracing::warn!(record = %records[*index].sequence_number, ?failure, "processor could not apply a record");
        }
        outcome.first_failure.map(|(_, seq)| seq)
    }
}

/// The outbox relay as the write-model table's stream mapping invokes it.
pub struct RelayFunction<S, L>(pub outbox_relay::RelayHandler<S, L, SystemClock>);

impl<S: WriteModelStore, L: EventLog> BatchHandler for RelayFunction<S, L> {
    async fn handle(&self, records: &[LogRecord]) -> Option<String> {
        self.0.handle_read(records).await
    }
}

/// The distributor as its mapping invokes it.
pub struct DistributorFunction<B>(pub timeline_engine::distribute::Distributor<B>);

impl<B: timeline_engine::distribute::EventBus> BatchHandler for DistributorFunction<B> {
    async fn handle(&self, records: &[LogRecord]) -> Option<String> {
        let incoming: Vec<IncomingRecord> = records.iter().map(IncomingRecord::from).collect();
        let out = self.0.distribute(&incoming).await;
        for (index, why) in &out.unpublishable {
            tracing::warn!(record = %records[*index].sequence_number, %why, "not distributable");
        }
        out.first_failure.map(|(_, seq)| seq)
    }
}

/// The on-failure destination: one JSON line per discarded record.
pub struct FailureFile {
    path: PathBuf,
    lock: Mutex<()>,
}

impl FailureFile {
    pub fn new(path: PathBuf) -> Self {
        FailureFile {
            path,
            lock: Mutex::new(()),
        }
    }
}

impl FailureSink for FailureFile {
    fn discard(&self, shard: &str, records: &[LogRecord], attempts: u32) -> std::io::Result<()> {
        let _guard = self
            .lock
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        for r in records {
            let line = serde_json::json!({
                "shard_id": shard,
                "sequence_number": r.sequence_number,
                "partition_key": r.partition_key,
                "attempts": attempts,
                "arrival": r.arrival,
                "data": String::from_utf8_lossy(&r.data),
            });
            writeln!(file, "{line}")?;
        }
        // On disk before the mapping moves past these records for good.
        file.sync_data()
    }
}
