//! The AWS implementations the hydrator binaries are built from, configured by environment.

use timeline_aws::archive::S3Archive;
use timeline_aws::config::{
    required, Clients, ARCHIVE_BUCKET, ARCHIVE_PREFIX, EVENT_STREAM_NAME, READ_MODEL_TABLE,
    WRITE_MODEL_TABLE,
};
use timeline_aws::event_source::AwsEventSource;
use timeline_aws::read_models::DynamoReadModels;
use timeline_aws::write_store::DynamoWriteStore;
use timeline_core::ports::Stored;
use timeline_core::ports::{Head, StoreError, WriteModelStore};
use timeline_core::ports::{ReadModelError, ReadModelStore, StoredView};
use timeline_core::StreamKey;

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

pub async fn from_env(
) -> Result<(AwsEventSource, AwsStored, Target), timeline_aws::config::ConfigError> {
    let stream = required(EVENT_STREAM_NAME, "Kinesis event stream")?;
    let write_table = required(WRITE_MODEL_TABLE, "DynamoDB write-model table")?;
    let read_table = required(READ_MODEL_TABLE, "DynamoDB read-model table")?;
    let bucket = required(ARCHIVE_BUCKET, "S3 archive bucket")?;
    let prefix = std::env::var(ARCHIVE_PREFIX).unwrap_or_else(|_| "events/".into());
    let clients = Clients::from_env().await;
    let views = DynamoReadModels::new(clients.dynamodb.clone(), &read_table);
    let heads = DynamoWriteStore::new(clients.dynamodb.clone(), write_table);
    let source = timeline_aws::event_source::aws_event_source(
        S3Archive::new(clients.s3.clone(), bucket, prefix),
        clients.kinesis.clone(),
        stream,
        Some(views.clone()),
        Some(heads.clone()),
    );
    let stored = AwsStored { heads, views };
    let dynamodb = clients.dynamodb.clone();
    let target: Target = Box::new(move |table| {
        DynamoReadModels::new(dynamodb.clone(), table.unwrap_or(&read_table))
    });
    Ok((source, stored, target))
}

/// The hydrator both binaries serve, on the resources the environment names.
pub async fn hydrator_from_env(
) -> Result<crate::Hydrator<AwsEventSource, AwsStored, Target>, timeline_aws::config::ConfigError> {
    let (source, stored, target) = from_env().await?;
    Ok(crate::Hydrator::new(source, stored, target))
}
