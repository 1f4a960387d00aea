//! The resources the system needs, defined once in `infra/resources.json`: the local bootstrap
//! (moto, LocalStack, the local runner) creates them from that file, compiled in here, and
//! `infra/tests/test_template.py` checks that `template.yaml` declares exactly the same keys,
//! indexes and TTLs, so local and deployed cannot drift. LocalStack's init hook
//! (`infra/localstack/bootstrap.py`) reads the same file.

use crate::config::ResourceNames;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, StreamSpecification, StreamViewType,
    TimeToLiveSpecification,
};
use serde::Deserialize;
use std::sync::LazyLock;

/// The definitions file, as compiled into every binary.
pub const RESOURCES_JSON: &str = include_str!("../../../infra/resources.json");

/// A DynamoDB table as this project uses it: string keys only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub hash_key: &'static str,
    pub range_key: Option<&'static str>,
    pub indexes: Vec<IndexSpec>,
    pub ttl_attribute: Option<&'static str>,
    /// The change stream's view type, when the table has one (see `infra/resources.json`).
    pub stream_view: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    pub name: &'static str,
    pub hash_key: &'static str,
    pub range_key: Option<&'static str>,
    pub keys_only: bool,
}

/// Everything `infra/resources.json` defines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resources {
    pub stream: StreamDef,
    pub bucket: BucketDef,
    pub tables: Vec<TableDef>,
}

/// The Kinesis stream: its name in `template.yaml`, the variable that carries its name, its
/// name on an emulator, and how many shards it gets there (on AWS it is on demand by default).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamDef {
    pub logical_id: &'static str,
    pub env: &'static str,
    pub local_name: &'static str,
    pub local_shards: i32,
}

/// The archive bucket and the prefix Firehose writes under.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BucketDef {
    pub logical_id: &'static str,
    pub env: &'static str,
    pub local_name: &'static str,
    pub prefix_env: &'static str,
    pub prefix: &'static str,
}

/// A table with its names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    pub logical_id: &'static str,
    pub env: &'static str,
    pub local_name: &'static str,
    pub spec: TableSpec,
}

// Every string borrows from the compiled-in file, so the definitions live for 'static.
#[derive(Deserialize)]
#[serde(bound(deserialize = "'de: 'static"))]
struct RawResources {
    stream: StreamDef,
    bucket: BucketDef,
    tables: Vec<RawTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTable {
    logical_id: &'static str,
    env: &'static str,
    local_name: &'static str,
    hash_key: &'static str,
    #[serde(borrow)]
    range_key: Option<&'static str>,
    #[serde(borrow)]
    ttl_attribute: Option<&'static str>,
    #[serde(borrow)]
    stream_view: Option<&'static str>,
    indexes: Vec<RawIndex>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIndex {
    name: &'static str,
    hash_key: &'static str,
    #[serde(borrow)]
    range_key: Option<&'static str>,
    projection: RawProjection,
}

#[derive(Deserialize)]
enum RawProjection {
    #[serde(rename = "KEYS_ONLY")]
    KeysOnly,
    #[serde(rename = "ALL")]
    All,
}

static DEFINITIONS: LazyLock<Resources> = LazyLock::new(|| {
    let raw: RawResources = serde_json::from_str(RESOURCES_JSON)
        .unwrap_or_else(|e| panic!("infra/resources.json is invalid: {e}"));
    Resources {
        stream: raw.stream,
        bucket: raw.bucket,
        tables: raw
            .tables
            .into_iter()
            .map(|t| TableDef {
                logical_id: t.logical_id,
                env: t.env,
                local_name: t.local_name,
                spec: TableSpec {
                    hash_key: t.hash_key,
                    range_key: t.range_key,
                    ttl_attribute: t.ttl_attribute,
                    stream_view: t.stream_view,
                    indexes: t
                        .indexes
                        .into_iter()
                        .map(|i| IndexSpec {
                            name: i.name,
                            hash_key: i.hash_key,
                            range_key: i.range_key,
                            keys_only: matches!(i.projection, RawProjection::KeysOnly),
                        })
                        .collect(),
                },
            })
            .collect(),
    }
});

/// The definitions of `infra/resources.json` (parsed once; a unit test proves it parses).
pub fn definitions() -> &'static Resources {
    &DEFINITIONS
}

impl Resources {
    /// The table named `logical_id` in `template.yaml`.
    pub fn table(&self, logical_id: &str) -> Option<&TableDef> {
        self.tables.iter().find(|t| t.logical_id == logical_id)
    }

    /// The names an emulator uses when the environment names nothing.
    pub fn local_names(&self) -> ResourceNames {
        ResourceNames {
            event_stream: self.stream.local_name.to_owned(),
            write_model_table: self.table_def(WRITE_MODEL).local_name.to_owned(),
            read_model_table: self.table_def(READ_MODEL).local_name.to_owned(),
            archive_bucket: self.bucket.local_name.to_owned(),
        }
    }

    /// The names the environment gives (the variables `template.yaml` passes to the
    /// functions), each falling back to its local name.
    pub fn names_from_env(&self) -> ResourceNames {
        let var = |name: &str, default: String| std::env::var(name).unwrap_or(default);
        let local = self.local_names();
        ResourceNames {
            event_stream: var(self.stream.env, local.event_stream),
            write_model_table: var(self.table_def(WRITE_MODEL).env, local.write_model_table),
            read_model_table: var(self.table_def(READ_MODEL).env, local.read_model_table),
            archive_bucket: var(self.bucket.env, local.archive_bucket),
        }
    }

    fn table_def(&self, logical_id: &str) -> &TableDef {
        self.table(logical_id)
            .unwrap_or_else(|| panic!("infra/resources.json defines no table {logical_id}"))
    }
}

const WRITE_MODEL: &str = "WriteModelTable";
const READ_MODEL: &str = "ReadModelTable";

/// Heads, outboxes and idempotency records.
pub fn write_model_table() -> TableSpec {
    definitions().table_def(WRITE_MODEL).spec.clone()
}

/// Views and history of every entity, with the lookup indexes.
pub fn read_model_table() -> TableSpec {
    definitions().table_def(READ_MODEL).spec.clone()
}

/// Shards of the local stream: more than one, so per-shard ordering is exercised (the same
/// number as `local_shards` in `infra/resources.json`; a test keeps them equal).
pub const LOCAL_SHARDS: i32 = 2;

#[derive(Debug, thiserror::Error)]
#[error("could not create {resource}: {message}")]
pub struct BootstrapError {
    pub resource: String,
    pub message: String,
}

fn failed(resource: &str, e: impl std::fmt::Display) -> BootstrapError {
    BootstrapError {
        resource: resource.to_owned(),
        message: e.to_string(),
    }
}

fn key(name: &str, kind: KeyType) -> KeySchemaElement {
    KeySchemaElement::builder()
        .attribute_name(name)
        .key_type(kind)
        .build()
        .expect("key schema is complete")
}

fn keys(hash: &str, range: Option<&str>) -> Vec<KeySchemaElement> {
    let mut k = vec![key(hash, KeyType::Hash)];
    k.extend(range.map(|r| key(r, KeyType::Range)));
    k
}

/// Creates a table from its spec (on-demand billing); an existing table is left as it is.
pub async fn create_table(
    client: &aws_sdk_dynamodb::Client,
    name: &str,
    spec: &TableSpec,
) -> Result<(), BootstrapError> {
    let mut attributes: Vec<&str> = vec![spec.hash_key];
    attributes.extend(spec.range_key);
    for index in &spec.indexes {
        attributes.push(index.hash_key);
        attributes.extend(index.range_key);
    }
    attributes.sort_unstable();
    attributes.dedup();
    let mut request = client
        .create_table()
        .table_name(name)
        .billing_mode(BillingMode::PayPerRequest)
        .set_key_schema(Some(keys(spec.hash_key, spec.range_key)));
    for attribute in attributes {
        request = request.attribute_definitions(
            AttributeDefinition::builder()
                .attribute_name(attribute)
                .attribute_type(ScalarAttributeType::S)
                .build()
                .expect("attribute definition is complete"),
        );
    }
    for index in &spec.indexes {
        let projection = if index.keys_only {
            ProjectionType::KeysOnly
        } else {
            ProjectionType::All
        };
        request = request.global_secondary_indexes(
            GlobalSecondaryIndex::builder()
                .index_name(index.name)
                .set_key_schema(Some(keys(index.hash_key, index.range_key)))
                .projection(Projection::builder().projection_type(projection).build())
                .build()
                .expect("index is complete"),
        );
    }
    if let Some(view) = spec.stream_view {
        request = request.stream_specification(
            StreamSpecification::builder()
                .stream_enabled(true)
                .stream_view_type(StreamViewType::from(view))
                .build()
                .expect("stream spec is complete"),
        );
    }
    match request.send().await {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) =>
        {
            return Ok(())
        }
        Err(e) => {
            return Err(failed(
                name,
                aws_sdk_dynamodb::error::DisplayErrorContext(e),
            ))
        }
    }
    if let Some(ttl) = spec.ttl_attribute {
        client
            .update_time_to_live()
            .table_name(name)
            .time_to_live_specification(
                TimeToLiveSpecification::builder()
                    .attribute_name(ttl)
                    .enabled(true)
                    .build()
                    .expect("ttl spec is complete"),
            )
            .send()
            .await
            .map_err(|e| failed(name, aws_sdk_dynamodb::error::DisplayErrorContext(e)))?;
    }
    Ok(())
}

/// Creates the stream; an existing stream is left as it is. Waits until it is active.
pub async fn create_stream(
    client: &aws_sdk_kinesis::Client,
    name: &str,
    shards: i32,
) -> Result<(), BootstrapError> {
    match client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
    {
        Ok(_) => {}
        Err(e)
            if e.as_service_error()
                .is_some_and(|s| s.is_resource_in_use_exception()) => {}
        Err(e) => return Err(failed(name, aws_sdk_kinesis::error::DisplayErrorContext(e))),
    }
    for _ in 0..100 {
        let out = client
            .describe_stream_summary()
            .stream_name(name)
            .send()
            .await
            .map_err(|e| failed(name, aws_sdk_kinesis::error::DisplayErrorContext(e)))?;
        let status = out
            .stream_description_summary()
            .map(|s| s.stream_status().clone());
        if status == Some(aws_sdk_kinesis::types::StreamStatus::Active) {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    Err(failed(name, "stream did not become active"))
}

/// Creates every resource the functions use, as `template.yaml` does in AWS.
pub async fn bootstrap(
    clients: &crate::config::Clients,
    names: &ResourceNames,
) -> Result<(), BootstrapError> {
    create_stream(
        clients.kinesis(),
        &names.event_stream,
        definitions().stream.local_shards,
    )
    .await?;
    create_table(
        clients.dynamodb(),
        &names.write_model_table,
        &write_model_table(),
    )
    .await?;
    create_table(
        clients.dynamodb(),
        &names.read_model_table,
        &read_model_table(),
    )
    .await?;
    create_bucket(clients.s3(), &names.archive_bucket).await?;
    Ok(())
}

/// Creates the archive bucket; an existing one (ours) is left as it is.
pub async fn create_bucket(client: &aws_sdk_s3::Client, name: &str) -> Result<(), BootstrapError> {
    match client.create_bucket().bucket(name).send().await {
        Ok(_) => Ok(()),
        Err(e)
            if e.as_service_error().is_some_and(|s| {
                s.is_bucket_already_owned_by_you() || s.is_bucket_already_exists()
            }) =>
        {
            Ok(())
        }
        Err(e) => Err(failed(name, aws_sdk_s3::error::DisplayErrorContext(e))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config;

    #[test]
    fn the_definitions_parse_and_name_each_table_once() {
        let defs = definitions();
        let mut ids: Vec<_> = defs.tables.iter().map(|t| t.logical_id).collect();
        ids.sort_unstable();
        ids.dedup();
        assert_eq!(ids, ["ReadModelTable", "WriteModelTable"]);
        let mut locals: Vec<_> = defs.tables.iter().map(|t| t.local_name).collect();
        locals.sort_unstable();
        locals.dedup();
        assert_eq!(locals.len(), defs.tables.len());
    }

    #[test]
    fn the_variables_are_the_ones_the_functions_read() {
        let defs = definitions();
        assert_eq!(defs.stream.env, config::EVENT_STREAM_NAME);
        assert_eq!(defs.bucket.env, config::ARCHIVE_BUCKET);
        assert_eq!(defs.bucket.prefix_env, config::ARCHIVE_PREFIX);
        assert_eq!(
            defs.table(WRITE_MODEL).unwrap().env,
            config::WRITE_MODEL_TABLE
        );
        assert_eq!(
            defs.table(READ_MODEL).unwrap().env,
            config::READ_MODEL_TABLE
        );
        // The archive layout the hydrator and the pump assume.
        assert_eq!(defs.bucket.prefix, timeline_engine::archive::DEFAULT_PREFIX);
        assert_eq!(defs.stream.local_shards, LOCAL_SHARDS);
        const { assert!(LOCAL_SHARDS > 1, "local ordering tests need several shards") };
    }

    #[test]
    fn the_write_model_has_the_keys_the_store_writes() {
        let spec = write_model_table();
        assert_eq!((spec.hash_key, spec.range_key), ("pk", None));
        // `expires_at` is the idempotency record's field in write_store.rs.
        assert_eq!(spec.ttl_attribute, Some("expires_at"));
        let outbox = spec
            .indexes
            .iter()
            .find(|i| i.name == crate::write_store::OUTBOX_INDEX)
            .expect("the sweep's sparse index");
        // The head fields `outbox` and `pending_since` of write_store.rs.
        assert_eq!(
            (outbox.hash_key, outbox.range_key, outbox.keys_only),
            ("outbox", Some("pending_since"), true)
        );
        assert_eq!(spec.indexes.len(), 1);
    }

    #[test]
    fn the_read_model_has_the_indexes_the_queries_use() {
        use crate::read_models::{BY_DRIVER, BY_RIDER, BY_STATUS};
        let spec = read_model_table();
        assert_eq!((spec.hash_key, spec.range_key), ("pk", Some("sk")));
        assert_eq!(spec.ttl_attribute, None, "views and history are kept");
        // The attributes read_models.rs writes and queries on.
        for (name, hash, range) in [
            (BY_RIDER, "rider_key", "created_sk"),
            (BY_DRIVER, "driver_key", "created_sk"),
            (BY_STATUS, "status_key", "updated_sk"),
        ] {
            let index = spec
                .indexes
                .iter()
                .find(|i| i.name == name)
                .unwrap_or_else(|| panic!("index {name}"));
            assert_eq!(
                (index.hash_key, index.range_key, index.keys_only),
                (hash, Some(range), false),
                "{name}"
            );
        }
        assert_eq!(spec.indexes.len(), 3);
    }

    #[test]
    fn local_names_come_from_the_file() {
        let names = definitions().local_names();
        assert_eq!(names.event_stream, "timeline-events");
        assert_eq!(names.write_model_table, "timeline-write-model");
        assert_eq!(names.read_model_table, "timeline-read-models");
        assert_eq!(names.archive_bucket, "timeline-archive");
    }
}
