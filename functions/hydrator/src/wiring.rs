//! The AWS implementations the hydrator binaries are built from, configured by environment.

use std::time::Duration;
use timeline_aws::archive::S3Archive;
use timeline_aws::config::{
    required, Clients, ARCHIVE_BUCKET, ARCHIVE_PREFIX, EVENT_STREAM_NAME, WRITE_MODEL_TABLE,
};
use timeline_aws::read_models::DynamoReadModels;
use timeline_aws::read_store::ReadStoreSettings;
use timeline_aws::stream_reader::KinesisReader;
use timeline_aws::write_store::DynamoWriteStore;
use timeline_core::ports::Stored;
use timeline_core::ports::{Head, StoreError, WriteModelStore};
use timeline_core::ports::{ReadModelError, ReadModelStore, StoredView};
use timeline_core::time::Deadline;
use timeline_core::StreamKey;
use timeline_engine::log_source::LogSource;
use timeline_postgres::ReadStore;

/// Heads from a write model and views from a read store, read-only, for verify.
pub struct HeadsAndViews<H, V> {
    pub heads: H,
    pub views: V,
}

/// What the hydrator reads on AWS.
pub type AwsStored = HeadsAndViews<DynamoWriteStore, DynamoReadModels>;

impl<H: WriteModelStore, V: ReadModelStore> Stored for HeadsAndViews<H, V> {
    async fn views(
        &self,
        keys: &[StreamKey],
    ) -> Result<std::collections::HashMap<StreamKey, StoredView>, ReadModelError> {
        self.views.load_views(keys).await
    }
    async fn head(&self, key: &StreamKey) -> Result<Option<Head>, StoreError> {
        self.heads.load_head(key).await
    }
}

pub type Target = Box<dyn Fn(Option<&str>) -> DynamoReadModels + Send + Sync>;

/// The read store a deployment chose (the template's `ReadStore`).
pub type Views = ReadStore<DynamoReadModels>;
/// What the deployed hydrator reads the log through: the archive and the stream, indexed by
/// the history in the deployment's read store.
pub type DeployedSource = LogSource<S3Archive, KinesisReader, Views, DynamoWriteStore>;
pub type DeployedStored = HeadsAndViews<DynamoWriteStore, Views>;
pub type DeployedTarget = Box<dyn Fn(Option<&str>) -> Views + Send + Sync>;
pub type Deployed = crate::Hydrator<DeployedSource, DeployedStored, DeployedTarget>;

#[derive(Debug, thiserror::Error)]
pub enum WiringError {
    #[error(transparent)]
    Config(#[from] timeline_aws::config::ConfigError),
    #[error(transparent)]
    ReadStore(#[from] timeline_aws::read_store::OpenError),
}

/// The hydrator both binaries serve, on the resources the environment names.
pub async fn hydrator_from_env() -> Result<Deployed, WiringError> {
    let stream = required(EVENT_STREAM_NAME, "Kinesis event stream")?;
    let write_table = required(WRITE_MODEL_TABLE, "DynamoDB write-model table")?;
    let bucket = required(ARCHIVE_BUCKET, "S3 archive bucket")?;
    let prefix = std::env::var(ARCHIVE_PREFIX).unwrap_or_else(|_| "events/".into());
    let clients = Clients::from_env().await;
    let settings = ReadStoreSettings::from_env()?;
    let views = settings.open(&clients).await?;
    let heads = DynamoWriteStore::new(clients.dynamodb().clone(), write_table);
    let source = timeline_aws::event_source::aws_event_source(
        S3Archive::new(clients.s3().clone(), bucket, prefix),
        clients.kinesis().clone(),
        stream,
        Some(views.clone()),
        Some(heads.clone()),
    );
    let stored = HeadsAndViews {
        heads,
        views: views.clone(),
    };
    let hydrator = match settings {
        ReadStoreSettings::DynamoDb { table } => {
            let dynamodb = clients.dynamodb().clone();
            let target: DeployedTarget = Box::new(move |name| {
                ReadStore::Native(DynamoReadModels::new(
                    dynamodb.clone(),
                    name.unwrap_or(&table),
                ))
            });
            crate::Hydrator::new(source, stored, target)
        }
        ReadStoreSettings::AuroraPostgres { .. } => {
            let target: DeployedTarget = Box::new(move |_| views.clone());
            crate::Hydrator::new(source, stored, target).without_named_targets()
        }
    };
    Ok(hydrator)
}

/// Kept back from a direct invocation's deadline: a rebuild stops cleanly and reports where
/// to resume, and an answer the log could not give in time says so, instead of the function
/// being killed mid-write or timing out.
pub const STOP_MARGIN: Duration = Duration::from_secs(10);

/// Logging on, then the deployed hydrator; a failure is logged as the reason it cannot start.
pub async fn start() -> Result<Deployed, lambda_runtime::Error> {
    timeline_http::init_logging();
    hydrator_from_env()
        .await
        .map_err(timeline_http::start_failed)
}

/// A direct invocation's answer (boxed: the replay futures are large and nest deeply).
pub type Answer<'a> =
    futures::future::BoxFuture<'a, Result<serde_json::Value, crate::HydratorError>>;

/// Serves direct invocations until the runtime stops: the hydrator is built once, and each
/// request is answered by `answer` (a plain function, so that each binary links only the
/// modes it serves) within the invocation's deadline less [`STOP_MARGIN`].
pub async fn serve_direct(
    answer: for<'a> fn(&'a Deployed, crate::HydratorRequest, &'a Deadline) -> Answer<'a>,
) -> Result<(), lambda_runtime::Error> {
    use lambda_runtime::{run, service_fn, Error, LambdaEvent};
    let hydrator = start().await?;
    let hydrator = &hydrator;
    run(service_fn(
        move |event: LambdaEvent<crate::HydratorRequest>| async move {
            let deadline = Deadline::lambda(event.context.deadline, STOP_MARGIN, Duration::MAX);
            Ok::<_, Error>(answer(hydrator, event.payload, &deadline).await?)
        },
    ))
    .await
}
