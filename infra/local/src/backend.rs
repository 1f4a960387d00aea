//! Where the runner keeps the system: the embedded backend (SQLite and a directory, the
//! default: no emulator, no Docker, no account) or the AWS adapters (moto, LocalStack or
//! AWS). Both give the same ports, so the runner and the operator commands are written once.

use crate::system::ARCHIVE_PREFIX;
use hydrator::wiring::HeadsAndViews;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;
use timeline_aws::archive::S3Archive;
use timeline_aws::pump::FirehosePump;
use timeline_aws::read_models::DynamoReadModels;
use timeline_aws::stream_reader::KinesisReader;
use timeline_aws::table_stream::TableStreamReader;
use timeline_aws::{Clients, DynamoWriteStore, KinesisEventLog, ResourceNames};
use timeline_core::ports::{
    Checkpoints, EventLog, LogError, NoCheckpoints, StreamReader, WriteModelStore,
};
use timeline_core::ports::{EventSource, Stored};
use timeline_core::ports::{
    Parked, PositionOf, ReadModelError, ReadModelQueries, ReadModelStore, StoredView, ViewWrite,
};
use timeline_core::StreamKey;
use timeline_embedded::{Checkpoint, Embedded, EmbeddedError, LocalArchive};
use timeline_engine::log_source::LogSource;
use timeline_engine::pump::{Pump, PumpConfig, StreamPump};
use timeline_postgres::PgReadModels;
use timeline_postgres::ReadStore;

/// Firehose's delivery stream name in archive object keys.
pub const DELIVERY_STREAM: &str = "timeline-archive";
/// The runner buffers briefly so time travel sees the archive fill soon.
pub const PUMP_INTERVAL: Duration = Duration::from_secs(5);

/// The stores one backend gives the system.
pub trait Backend: Clone + Send + Sync + 'static {
    type Write: WriteModelStore + 'static;
    type Log: EventLog + 'static;
    type Views: ReadModelStore + ReadModelQueries + Clone + 'static;
    type Reader: StreamReader + 'static;
    type Source: EventSource + 'static;
    type Stored: Stored + 'static;
    /// Read models a rebuild writes into.
    type Rebuild: ReadModelStore + 'static;
    type Pump: Pump + 'static;
    /// Where the event source mapping keeps its positions.
    type Checkpoints: Checkpoints + 'static;
    type TableStream: StreamReader + 'static;

    fn write_store(&self) -> Self::Write;
    fn event_log(&self) -> Self::Log;
    fn views(&self) -> Self::Views;
    fn reader(&self) -> Self::Reader;
    fn source(&self) -> Self::Source;
    fn stored(&self) -> Self::Stored;
    /// The live read models (None) or the ones `into` names.
    fn rebuild_target(&self, into: Option<&str>) -> Self::Rebuild;
    fn pump(&self) -> Self::Pump;
    fn mapping_checkpoints(&self) -> Self::Checkpoints;
    /// Where the distributor's event source mapping keeps its positions.
    fn distributor_checkpoints(&self) -> Self::Checkpoints;
    /// The write-model table's change stream, which the outbox relay follows with
    /// `PublishMode: stream`; None where there is none (the embedded backend: its relay
    /// polls the outbox).
    fn table_stream(
        &self,
    ) -> impl std::future::Future<Output = Result<Option<Self::TableStream>, LogError>> + Send;
    /// Where the data lives, for people.
    fn describe(&self) -> String;
}

fn pump_config() -> PumpConfig {
    let mut config = PumpConfig::new(DELIVERY_STREAM);
    config.buffer_interval = PUMP_INTERVAL;
    config
}

/// The embedded backend: one data directory with the SQLite database and the archive.
#[derive(Clone, Debug)]
pub struct EmbeddedBackend {
    pub db: Embedded,
    /// PostgreSQL for the read models instead of SQLite (`--read-store`).
    pub read_store: Option<PgReadModels>,
}

impl EmbeddedBackend {
    pub fn open(dir: &Path) -> Result<Self, EmbeddedError> {
        Ok(EmbeddedBackend {
            db: Embedded::open(dir)?,
            read_store: None,
        })
    }

    /// The same backend with its read models in PostgreSQL.
    pub fn with_read_store(mut self, read_store: PgReadModels) -> Self {
        self.read_store = Some(read_store);
        self
    }

    pub fn archive(&self) -> LocalArchive {
        self.db.archive(ARCHIVE_PREFIX)
    }
}

impl Backend for EmbeddedBackend {
    type Write = Embedded;
    type Log = Embedded;
    type Views = ReadStore<Embedded>;
    type Reader = Embedded;
    type Source = LogSource<LocalArchive, Embedded, ReadStore<Embedded>, Embedded>;
    type Stored = HeadsAndViews<Embedded, ReadStore<Embedded>>;
    type Rebuild = ReadStore<EmbeddedTarget>;
    type Pump = StreamPump<Embedded, LocalArchive, Checkpoint>;
    type Checkpoints = Checkpoint;
    type TableStream = Embedded;

    /// The log is this database's own: a command's head and record go in one transaction.
    fn write_store(&self) -> Embedded {
        self.db.appending_on_commit()
    }
    fn event_log(&self) -> Embedded {
        self.db.clone()
    }
    fn views(&self) -> ReadStore<Embedded> {
        ReadStore::new(self.db.clone(), self.read_store.as_ref())
    }
    fn reader(&self) -> Embedded {
        self.db.clone()
    }
    fn source(&self) -> Self::Source {
        LogSource::new(
            self.archive(),
            self.db.clone(),
            self.db.database_path().display().to_string(),
            Some(self.views()),
            Some(self.db.clone()),
        )
    }
    fn stored(&self) -> Self::Stored {
        HeadsAndViews {
            heads: self.db.clone(),
            views: self.views(),
        }
    }
    /// `into` is another data directory (its read models are written; its log is not).
    fn rebuild_target(&self, into: Option<&str>) -> ReadStore<EmbeddedTarget> {
        match into {
            None => ReadStore::new(
                EmbeddedTarget(Ok(self.db.clone())),
                self.read_store.as_ref(),
            ),
            Some(dir) => ReadStore::Native(EmbeddedTarget(
                Embedded::open(Path::new(dir)).map_err(Arc::new),
            )),
        }
    }
    fn pump(&self) -> Self::Pump {
        StreamPump::with_checkpoints(
            self.db.clone(),
            self.db.database_path().display().to_string(),
            self.archive(),
            pump_config(),
            self.db.checkpoint("archive-pump"),
        )
    }
    /// Kept per read store: the position belongs with the views it produced.
    fn mapping_checkpoints(&self) -> Checkpoint {
        match &self.read_store {
            None => self.db.checkpoint("processor-mapping"),
            Some(pg) => self
                .db
                .checkpoint(&format!("processor-mapping@{}", pg.identity())),
        }
    }
    fn distributor_checkpoints(&self) -> Checkpoint {
        self.db.checkpoint("distributor-mapping")
    }
    async fn table_stream(&self) -> Result<Option<Embedded>, LogError> {
        Ok(None)
    }
    fn describe(&self) -> String {
        format!(
            "embedded backend in {} (database {}, archive {}/{ARCHIVE_PREFIX}){}",
            self.db.dir().display(),
            self.db.database_path().display(),
            self.archive().dir.display(),
            read_store_note(self.read_store.as_ref()),
        )
    }
}

/// The read models of a rebuild into another data directory, or why it could not be opened
/// (reported by every write, so the rebuild fails with the reason).
pub struct EmbeddedTarget(Result<Embedded, Arc<EmbeddedError>>);

impl EmbeddedTarget {
    fn db(&self) -> Result<&Embedded, ReadModelError> {
        self.0
            .as_ref()
            .map_err(|e| ReadModelError::Unavailable(e.to_string()))
    }
}

impl ReadModelStore for EmbeddedTarget {
    async fn load_views(
        &self,
        keys: &[StreamKey],
    ) -> Result<std::collections::HashMap<StreamKey, StoredView>, ReadModelError> {
        self.db()?.load_views(keys).await
    }
    async fn write(&self, write: ViewWrite) -> Result<(), ReadModelError> {
        self.db()?.write(write).await
    }
    async fn attach_positions(
        &self,
        key: &StreamKey,
        positions: &[PositionOf],
    ) -> Result<(), ReadModelError> {
        self.db()?.attach_positions(key, positions).await
    }
    async fn park(&self, parked: &Parked) -> Result<(), ReadModelError> {
        self.db()?.park(parked).await
    }
    async fn parked(&self) -> Result<Vec<Parked>, ReadModelError> {
        self.db()?.parked().await
    }
    async fn parked_entity(&self, entity: &str) -> Result<Option<Parked>, ReadModelError> {
        self.db()?.parked_entity(entity).await
    }
    async fn unpark(&self, entity: &str, seen: u64) -> Result<bool, ReadModelError> {
        self.db()?.unpark(entity, seen).await
    }
}

fn read_store_note(read_store: Option<&PgReadModels>) -> &'static str {
    match read_store {
        Some(_) => ", read models in PostgreSQL",
        None => "",
    }
}

/// The AWS adapters, on the endpoint the SDK's standard settings name.
#[derive(Clone, Debug)]
pub struct AwsBackend {
    /// PostgreSQL for the read models instead of DynamoDB (`--read-store`).
    pub read_store: Option<PgReadModels>,
    pub clients: Clients,
    /// The write-model table's change stream (DynamoDB Streams).
    pub streams: aws_sdk_dynamodbstreams::Client,
    pub names: ResourceNames,
    /// `AWS_ENDPOINT_URL`, when set (an emulator); None is AWS itself.
    pub endpoint: Option<String>,
}

impl AwsBackend {
    pub fn archive(&self) -> S3Archive {
        S3Archive::new(
            self.clients.s3().clone(),
            &self.names.archive_bucket,
            ARCHIVE_PREFIX,
        )
    }
}

impl Backend for AwsBackend {
    type Write = DynamoWriteStore;
    type Log = KinesisEventLog;
    type Views = ReadStore<DynamoReadModels>;
    type Reader = KinesisReader;
    type Source =
        LogSource<S3Archive, KinesisReader, ReadStore<DynamoReadModels>, DynamoWriteStore>;
    type Stored = HeadsAndViews<DynamoWriteStore, ReadStore<DynamoReadModels>>;
    type Rebuild = ReadStore<DynamoReadModels>;
    type Pump = FirehosePump;
    /// A mapping restarted against a stream starts from its oldest record again: the
    /// processor skips what the read models already hold.
    type Checkpoints = NoCheckpoints;
    type TableStream = TableStreamReader;

    fn write_store(&self) -> DynamoWriteStore {
        DynamoWriteStore::new(
            self.clients.dynamodb().clone(),
            &self.names.write_model_table,
        )
    }
    fn event_log(&self) -> KinesisEventLog {
        KinesisEventLog::new(self.clients.kinesis().clone(), &self.names.event_stream)
    }
    fn views(&self) -> ReadStore<DynamoReadModels> {
        ReadStore::new(
            DynamoReadModels::new(
                self.clients.dynamodb().clone(),
                &self.names.read_model_table,
            ),
            self.read_store.as_ref(),
        )
    }
    fn reader(&self) -> KinesisReader {
        KinesisReader::new(self.clients.kinesis().clone(), &self.names.event_stream)
    }
    fn source(&self) -> Self::Source {
        LogSource::new(
            self.archive(),
            self.reader(),
            self.names.event_stream.clone(),
            Some(self.views()),
            Some(self.write_store()),
        )
    }
    fn stored(&self) -> Self::Stored {
        HeadsAndViews {
            heads: self.write_store(),
            views: self.views(),
        }
    }
    /// `into` is another read-model table.
    fn rebuild_target(&self, into: Option<&str>) -> ReadStore<DynamoReadModels> {
        let table = DynamoReadModels::new(
            self.clients.dynamodb().clone(),
            into.unwrap_or(&self.names.read_model_table),
        );
        match into {
            None => ReadStore::new(table, self.read_store.as_ref()),
            Some(_) => ReadStore::Native(table),
        }
    }
    fn pump(&self) -> FirehosePump {
        FirehosePump::new(
            self.clients.kinesis().clone(),
            &self.names.event_stream,
            self.archive(),
            pump_config(),
        )
    }
    fn mapping_checkpoints(&self) -> NoCheckpoints {
        NoCheckpoints
    }
    fn distributor_checkpoints(&self) -> NoCheckpoints {
        NoCheckpoints
    }
    async fn table_stream(&self) -> Result<Option<TableStreamReader>, LogError> {
        TableStreamReader::of_table(
            self.clients.dynamodb(),
            self.streams.clone(),
            &self.names.write_model_table,
        )
        .await
        .map(Some)
    }
    fn describe(&self) -> String {
        format!(
            "AWS adapters at {}: stream {}, tables {} and {}, archive s3://{}/{ARCHIVE_PREFIX}{}",
            self.endpoint.as_deref().unwrap_or("AWS"),
            self.names.event_stream,
            self.names.write_model_table,
            self.names.read_model_table,
            self.names.archive_bucket,
            read_store_note(self.read_store.as_ref()),
        )
    }
}
