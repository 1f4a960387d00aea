//! The resources the system needs, defined once: the local bootstrap (moto, LocalStack, the
//! local runner) creates them from here, and a test checks `template.yaml` declares the same
//! keys and indexes, so local and deployed cannot drift.

use crate::config::ResourceNames;
use aws_sdk_dynamodb::types::{
    AttributeDefinition, BillingMode, GlobalSecondaryIndex, KeySchemaElement, KeyType, Projection,
    ProjectionType, ScalarAttributeType, TimeToLiveSpecification,
};

/// A DynamoDB table as this project uses it: string keys only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableSpec {
    pub hash_key: &'static str,
    pub range_key: Option<&'static str>,
    pub indexes: Vec<IndexSpec>,
    pub ttl_attribute: Option<&'static str>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IndexSpec {
    pub name: &'static str,
    pub hash_key: &'static str,
    pub range_key: Option<&'static str>,
    pub keys_only: bool,
}

/// Heads, outboxes and idempotency records.
pub fn write_model_table() -> TableSpec {
    TableSpec {
        hash_key: "pk",
        range_key: None,
        indexes: vec![IndexSpec {
            name: crate::write_store::OUTBOX_INDEX,
            hash_key: "outbox",
            range_key: Some("pending_since"),
            keys_only: true,
        }],
        ttl_attribute: Some("expires_at"),
    }
}

/// Views and history of every entity, with the lookup indexes.
pub fn read_model_table() -> TableSpec {
    use crate::read_models::{BY_DRIVER, BY_RIDER, BY_STATUS};
    let index = |name, hash_key, range_key| IndexSpec {
        name,
        hash_key,
        range_key: Some(range_key),
        keys_only: false,
    };
    TableSpec {
        hash_key: "pk",
        range_key: Some("sk"),
        indexes: vec![
            index(BY_RIDER, "rider_key", "created_sk"),
            index(BY_DRIVER, "driver_key", "created_sk"),
            index(BY_STATUS, "status_key", "updated_sk"),
        ],
        ttl_attribute: None,
    }
}

/// Shards of the local stream: more than one, so per-shard ordering is exercised.
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
    create_stream(&clients.kinesis, &names.event_stream, LOCAL_SHARDS).await?;
    create_table(
        &clients.dynamodb,
        &names.write_model_table,
        &write_model_table(),
    )
    .await?;
    create_table(
        &clients.dynamodb,
        &names.read_model_table,
        &read_model_table(),
    )
    .await?;
    create_bucket(&clients.s3, &names.archive_bucket).await?;
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
