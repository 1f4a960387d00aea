//! The write model in DynamoDB: one head item per entity (version, state snapshot, outbox)
//! and one item per idempotency key, in a single table keyed by `pk`.
//!
//! Heads whose outbox is non-empty carry `outbox = "pending#<n>"` (one of
//! [`OUTBOX_SHARDS`] by the head's key, so the index's writes spread over partitions) and
//! `pending_since`, the keys of the sparse index the sweep reads; clearing the outbox
//! removes both. Heads written before the shards carry `outbox = "pending"`, read too.

use crate::keys::{all_shards, spread, OUTBOX_SHARDS};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{
    AttributeValue, Put, ReturnValuesOnConditionCheckFailure, TransactWriteItem,
};
use serde::{Deserialize, Serialize};
use serde_dynamo::aws_sdk_dynamodb_1::{from_item, to_item};
use std::collections::HashMap;
use timeline_core::ports::{
    Commit, CommitError, Head, IdempotencyRecord, StoreError, WriteModelStore,
};
use timeline_core::EventEnvelope;
use timeline_core::StreamKey;
use timeline_core::Timestamp;

/// The sparse index of heads with pending outbox events.
pub const OUTBOX_INDEX: &str = "outbox-index";
const OUTBOX_PENDING: &str = "pending";
const IDEMPOTENCY_PREFIX: &str = "idem#";

#[derive(Clone, Debug)]
pub struct DynamoWriteStore {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

/// A head as stored. State and events are JSON strings: they are opaque to DynamoDB and
/// stay byte-exact (DynamoDB numbers would not round-trip every JSON number).
#[derive(Debug, Serialize, Deserialize)]
struct HeadItem {
    pk: String,
    aggregate_type: String,
    aggregate_id: String,
    version: u64,
    state: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pending: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_from: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    outbox: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pending_since: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    last_occurred_at: Option<Timestamp>,
    updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    created_at: Option<Timestamp>,
}

#[derive(Debug, Serialize, Deserialize)]
struct IdempotencyItem {
    pk: String,
    fingerprint: String,
    aggregate_type: String,
    aggregate_id: String,
    version: u64,
    outcome: String,
    /// Epoch seconds: the table's TTL attribute.
    expires_at: i64,
}

fn unavailable<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    StoreError::Unavailable(DisplayErrorContext(e).to_string())
}

/// Codes with which DynamoDB refuses a write without doing it.
const REFUSED: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "RequestLimitExceeded",
    "ValidationException",
    "ResourceNotFoundException",
    "ItemCollectionSizeLimitExceededException",
    "ConditionalCheckFailedException",
    "TransactionCanceledException",
    "TransactionConflictException",
];

/// A failed write: refused (nothing written) when DynamoDB said so, else uncertain (a 500,
/// a timeout, a dropped connection: it may have been done).
fn write_failed<E, R>(e: SdkError<E, R>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    let refused = match &e {
        SdkError::ConstructionFailure(_) => true,
        SdkError::ServiceError(_) => e.code().is_some_and(|code| REFUSED.contains(&code)),
        _ => false,
    };
    let detail = DisplayErrorContext(e).to_string();
    if refused {
        StoreError::Unavailable(detail)
    } else {
        StoreError::Uncertain(detail)
    }
}

/// Whole seconds since the epoch: how the TTL attribute holds expiry, and how both the
/// condition of a write and a read compare it (a record is expired from its second on).
fn epoch_seconds(at: Timestamp) -> i64 {
    at.as_millis().div_euclid(1000)
}

fn corrupt(what: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(what.to_string())
}

impl HeadItem {
    fn from_head(head: &Head) -> HeadItem {
        let pending_since = head.pending.first().map(|e| e.recorded_at.to_string());
        HeadItem {
            pk: head.key.partition_key(),
            aggregate_type: head.key.aggregate_type.clone(),
            aggregate_id: head.key.aggregate_id.clone(),
            version: head.version,
            state: head.state.to_string(),
            pending: head
                .pending
                .iter()
                .map(|e| serde_json::to_string(e).expect("envelopes serialize"))
                .collect(),
            pending_from: head.pending.first().map(|e| e.version),
            outbox: pending_since
                .as_ref()
                .map(|_| spread(OUTBOX_PENDING, &head.key.partition_key(), OUTBOX_SHARDS)),
            pending_since,
            last_occurred_at: head.last_occurred_at,
            updated_at: head.updated_at,
            created_at: head.created_at,
        }
    }

    fn into_head(self) -> Result<Head, StoreError> {
        let pending = self
            .pending
            .iter()
            .map(|s| serde_json::from_str::<EventEnvelope>(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| corrupt(format!("outbox of {}: {e}", self.pk)))?;
        Ok(Head {
            key: StreamKey::new(self.aggregate_type, self.aggregate_id),
            version: self.version,
            state: serde_json::from_str(&self.state)
                .map_err(|e| corrupt(format!("state of {}: {e}", self.pk)))?,
            pending,
            last_occurred_at: self.last_occurred_at,
            updated_at: self.updated_at,
            created_at: self.created_at,
        })
    }
}

impl DynamoWriteStore {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoWriteStore {
            client,
            table: table.into(),
        }
    }

    fn head_put(&self, commit: &Commit) -> Result<Put, StoreError> {
        let item = to_item(HeadItem::from_head(&commit.head)).map_err(corrupt)?;
        let put = Put::builder().table_name(&self.table).set_item(Some(item));
        let put = if commit.expected_version == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("version = :v")
                .expression_attribute_values(
                    ":v",
                    AttributeValue::N(commit.expected_version.to_string()),
                )
        };
        put.build().map_err(corrupt)
    }

    fn idempotency_put(
        &self,
        record: &IdempotencyRecord,
        now: Timestamp,
    ) -> Result<Put, StoreError> {
        let item = to_item(IdempotencyItem {
            pk: format!("{IDEMPOTENCY_PREFIX}{}", record.key),
            fingerprint: record.fingerprint.clone(),
            aggregate_type: record.stream.aggregate_type.clone(),
            aggregate_id: record.stream.aggregate_id.clone(),
            version: record.version,
            outcome: record.outcome.to_string(),
            expires_at: epoch_seconds(record.expires_at),
        })
        .map_err(corrupt)?;
        // TTL deletion is lazy: an expired record still in the table may be replaced.
        Put::builder()
            .table_name(&self.table)
            .set_item(Some(item))
            .condition_expression("attribute_not_exists(pk) OR expires_at <= :now")
            .expression_attribute_values(":now", AttributeValue::N(epoch_seconds(now).to_string()))
            .return_values_on_condition_check_failure(ReturnValuesOnConditionCheckFailure::None)
            .build()
            .map_err(corrupt)
    }

    /// One conditional `PutItem`; a failed condition is `conflict`.
    async fn put_if(&self, put: Put, conflict: CommitError) -> Result<(), CommitError> {
        let result = self
            .client
            .put_item()
            .table_name(put.table_name)
            .set_item(Some(put.item))
            .set_condition_expression(put.condition_expression)
            .set_expression_attribute_values(put.expression_attribute_values)
            .send()
            .await;
        match result {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(conflict)
            }
            // The item is in another transaction: nothing was written; try again soon.
            Err(e) if e.code() == Some("TransactionConflictException") => Err(CommitError::Busy),
            Err(e) => Err(write_failed(e).into()),
        }
    }

    async fn commit_with_key(&self, head: Put, key: Put) -> Result<(), CommitError> {
        // Concurrent transactions on one item can be cancelled with TransactionConflict
        // although no condition failed; the conditions make a retry safe.
        let mut attempt = 0;
        loop {
            attempt += 1;
            let result = self
                .client
                .transact_write_items()
                .transact_items(TransactWriteItem::builder().put(head.clone()).build())
                .transact_items(TransactWriteItem::builder().put(key.clone()).build())
                .send()
                .await;
            let err = match result {
                Ok(_) => return Ok(()),
                Err(e) => e,
            };
            let Some(canceled) = err.as_service_error().and_then(|s| match s {
                aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError::TransactionCanceledException(c) => Some(c),
                _ => None,
            }) else {
                return Err(write_failed(err).into());
            };
            let codes: Vec<&str> = canceled
                .cancellation_reasons()
                .iter()
                .map(|r| r.code().unwrap_or("None"))
                .collect();
            match cancelled(&codes) {
                Err(CommitError::Busy) if attempt < 4 => {
                    tokio::time::sleep(std::time::Duration::from_millis(10 * attempt)).await;
                }
                other => return other,
            }
        }
    }
}

/// What a cancelled transaction of (head, idempotency record) means, from its reasons in
/// item order. Nothing of a cancelled transaction was written, whatever the reason.
fn cancelled(codes: &[&str]) -> Result<(), CommitError> {
    let failed = |i: usize| codes.get(i) == Some(&"ConditionalCheckFailed");
    if failed(1) {
        return Err(CommitError::IdempotencyConflict);
    }
    if failed(0) {
        return Err(CommitError::HeadConflict);
    }
    if codes.contains(&"TransactionConflict") {
        // Another transaction held an item; the conditions make a retry safe.
        return Err(CommitError::Busy);
    }
    if codes.is_empty() {
        // Some emulators omit the reasons: the head condition is the likely one.
        return Err(CommitError::HeadConflict);
    }
    // Throttled, or refused as invalid.
    Err(StoreError::Unavailable(format!("transaction cancelled: {codes:?}")).into())
}

impl WriteModelStore for DynamoWriteStore {
    async fn load_head(&self, key: &StreamKey) -> Result<Option<Head>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", AttributeValue::S(key.partition_key()))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        match out.item {
            None => Ok(None),
            Some(item) => from_item::<HeadItem>(item)
                .map_err(corrupt)?
                .into_head()
                .map(Some),
        }
    }

    async fn commit(&self, commit: Commit) -> Result<(), CommitError> {
        let head = self.head_put(&commit)?;
        match &commit.idempotency {
            None => self.put_if(head, CommitError::HeadConflict).await,
            Some(record) => {
                let key = self.idempotency_put(record, commit.now)?;
                self.commit_with_key(head, key).await
            }
        }
    }

    async fn confirm_published(
        &self,
        key: &StreamKey,
        from: u64,
        through: u64,
    ) -> Result<(), StoreError> {
        let pk = AttributeValue::S(key.partition_key());
        let n = |v: u64| AttributeValue::N(v.to_string());
        // Usual case: nothing was committed since, so the whole outbox goes (and the head
        // leaves the sparse index).
        let whole = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", pk.clone())
            .update_expression("REMOVE pending, pending_from, outbox, pending_since")
            .condition_expression("version = :through AND pending_from = :from")
            .expression_attribute_values(":through", n(through))
            .expression_attribute_values(":from", n(from))
            .send()
            .await;
        match whole {
            Ok(_) => return Ok(()),
            Err(e)
                if !e
                    .as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                return Err(unavailable(e));
            }
            Err(_) => {}
        }
        // A later commit appended events: drop only the published prefix.
        let count = through.saturating_sub(from) + 1;
        let removes: Vec<String> = (0..count).map(|i| format!("pending[{i}]")).collect();
        let prefix = self
            .client
            .update_item()
            .table_name(&self.table)
            .key("pk", pk)
            .update_expression(format!(
                "REMOVE {} SET pending_from = :next",
                removes.join(", ")
            ))
            .condition_expression("pending_from = :from AND version > :through")
            .expression_attribute_values(":from", n(from))
            .expression_attribute_values(":through", n(through))
            .expression_attribute_values(":next", n(through + 1))
            .send()
            .await;
        match prefix {
            Ok(_) => Ok(()),
            // Someone else already confirmed these events: nothing left to do.
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(())
            }
            Err(e) => Err(unavailable(e)),
        }
    }

    async fn remember(&self, record: IdempotencyRecord, now: Timestamp) -> Result<(), CommitError> {
        let put = self.idempotency_put(&record, now)?;
        self.put_if(put, CommitError::IdempotencyConflict).await
    }

    async fn load_idempotency(
        &self,
        key: &str,
        now: Timestamp,
    ) -> Result<Option<IdempotencyRecord>, StoreError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key(
                "pk",
                AttributeValue::S(format!("{IDEMPOTENCY_PREFIX}{key}")),
            )
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        let Some(item) = out.item else {
            return Ok(None);
        };
        let item: IdempotencyItem = from_item(item).map_err(corrupt)?;
        if item.expires_at <= epoch_seconds(now) {
            return Ok(None);
        }
        Ok(Some(IdempotencyRecord {
            key: key.to_owned(),
            fingerprint: item.fingerprint,
            stream: StreamKey::new(item.aggregate_type, item.aggregate_id),
            version: item.version,
            outcome: serde_json::from_str(&item.outcome)
                .map_err(|e| corrupt(format!("idempotency record {key}: {e}")))?,
            expires_at: Timestamp::from_millis(item.expires_at * 1000)
                .ok_or_else(|| corrupt("expires_at out of range"))?,
        }))
    }

    /// The oldest pending heads across the index's shards (and the unsharded partition
    /// older heads used): up to `limit` from each, merged oldest first.
    async fn pending_heads(&self, limit: usize) -> Result<Vec<StreamKey>, StoreError> {
        let limit = limit.clamp(1, 1000);
        let partitions = all_shards(OUTBOX_PENDING, OUTBOX_SHARDS)
            .chain(std::iter::once(OUTBOX_PENDING.to_owned()));
        let reads = partitions.map(|partition| async move {
            let out = self
                .client
                .query()
                .table_name(&self.table)
                .index_name(OUTBOX_INDEX)
                .key_condition_expression("outbox = :pending")
                .expression_attribute_values(":pending", AttributeValue::S(partition))
                .limit(limit as i32)
                .send()
                .await
                .map_err(unavailable)?;
            Ok::<_, StoreError>(out.items.unwrap_or_default())
        });
        let mut pending: Vec<(String, String)> = futures::future::try_join_all(reads)
            .await?
            .into_iter()
            .flatten()
            .filter_map(|item| {
                let text = |name: &str| Some(item.get(name)?.as_s().ok()?.clone());
                Some((text("pending_since")?, text("pk")?))
            })
            .collect();
        pending.sort();
        Ok(pending
            .into_iter()
            .take(limit)
            .filter_map(|(_, pk)| StreamKey::parse_partition_key(&pk))
            .collect())
    }
}

/// For tests and tools: the raw item of a head, as DynamoDB holds it.
pub async fn raw_item(
    client: &aws_sdk_dynamodb::Client,
    table: &str,
    pk: &str,
) -> Result<Option<HashMap<String, AttributeValue>>, StoreError> {
    let out = client
        .get_item()
        .table_name(table)
        .key("pk", AttributeValue::S(pk.to_owned()))
        .consistent_read(true)
        .send()
        .await
        .map_err(unavailable)?;
    Ok(out.item)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cancellation_reason_means_what_dynamodb_says() {
        let none = "None";
        let is = |codes: &[&str], expected: CommitError| {
            assert_eq!(cancelled(codes), Err(expected), "{codes:?}")
        };
        is(&["ConditionalCheckFailed", none], CommitError::HeadConflict);
        is(
            &[none, "ConditionalCheckFailed"],
            CommitError::IdempotencyConflict,
        );
        // Both failed (our own earlier write met again): the key says whose it was.
        is(
            &["ConditionalCheckFailed", "ConditionalCheckFailed"],
            CommitError::IdempotencyConflict,
        );
        is(&["TransactionConflict", none], CommitError::Busy);
        is(&[none, "TransactionConflict"], CommitError::Busy);
        is(&[], CommitError::HeadConflict);
        for code in [
            "ThrottlingError",
            "ProvisionedThroughputExceeded",
            "ValidationError",
            "ItemCollectionSizeLimitExceeded",
        ] {
            assert!(
                matches!(
                    cancelled(&[code, none]),
                    Err(CommitError::Store(StoreError::Unavailable(_)))
                ),
                "{code}"
            );
        }
    }
}
