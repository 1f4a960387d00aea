//! Read models in DynamoDB, one table keyed by `pk`/`sk`:
//! - the view of an entity: `pk = <type>#<id>`, `sk = view`, the view as a native map, its
//!   `version`, and the keys of the lookup indexes (`rider_key`, `driver_key`, `status_key`);
//! - its history: `pk = <type>#<id>`, `sk = h#<occurred_at>#<version>`, one item per event,
//!   so a time range is one `Query` on the sort key.

use crate::keys::{all_shards, spread, PARKED_SHARDS, STATUS_SHARDS};
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::types::{AttributeValue, KeysAndAttributes, PutRequest, WriteRequest};
use serde_dynamo::aws_sdk_dynamodb_1::{from_item, to_attribute_value, to_item};
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;
use timeline_core::ports::layout;
use timeline_core::ports::{
    Lookup, LookupKind, Page, PageRequest, Parked, PositionOf, ReadModelError, ReadModelQueries,
    ReadModelStore, StoredView, ViewWrite,
};
use timeline_core::views::HistoryEntry;
use timeline_core::StreamKey;
use timeline_core::Timestamp;

pub const BY_RIDER: &str = "by-rider";
pub const BY_DRIVER: &str = "by-driver";
pub const BY_STATUS: &str = "by-status";
const MAX_ATTEMPTS: u32 = 8;

type Item = HashMap<String, AttributeValue>;

#[derive(Clone, Debug)]
pub struct DynamoReadModels {
    client: aws_sdk_dynamodb::Client,
    table: String,
}

fn unavailable<E, R>(e: SdkError<E, R>) -> ReadModelError
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    ReadModelError::Unavailable(DisplayErrorContext(e).to_string())
}

/// A failed write: refused for good when DynamoDB rejects the item itself (over 400 KB, a
/// number out of range), else worth retrying.
fn write_failed<E, R>(e: SdkError<E, R>) -> ReadModelError
where
    E: std::error::Error + ProvideErrorMetadata + 'static,
    R: std::fmt::Debug,
{
    if e.code() == Some("ValidationException") {
        return ReadModelError::Refused(DisplayErrorContext(e).to_string());
    }
    unavailable(e)
}

fn corrupt(e: impl std::fmt::Display) -> ReadModelError {
    ReadModelError::Corrupt(e.to_string())
}

fn s(v: impl Into<String>) -> AttributeValue {
    AttributeValue::S(v.into())
}

pub use timeline_core::ports::layout::{history_sk, VIEW_SK};

/// The index and partition value of a lookup.
fn index_of(lookup: &Lookup) -> (&'static str, &'static str, String) {
    let value = format!("{}#{}", lookup.aggregate_type, lookup.value);
    match lookup.kind {
        LookupKind::Rider => (BY_RIDER, "rider_key", value),
        LookupKind::Driver => (BY_DRIVER, "driver_key", value),
        LookupKind::Status => (BY_STATUS, "status_key", value),
    }
}

/// Cursors are the last evaluated key (all of whose attributes are strings) in the shared
/// layout's encoding.
fn encode_cursor(key: Option<&Item>) -> Option<String> {
    let flat: BTreeMap<&str, &str> = key?
        .iter()
        .filter_map(|(k, v)| Some((k.as_str(), v.as_s().ok()?.as_str())))
        .collect();
    Some(layout::encode_cursor(&flat))
}

/// The exclusive start key of a cursor that belongs to this query (see
/// [`layout::decode_cursor`]).
fn decode_cursor(
    cursor: Option<&str>,
    fixed: &[(&str, &str)],
    free: &[&str],
    sk_range: Option<(&str, &str)>,
) -> Result<Option<Item>, ReadModelError> {
    let flat = layout::decode_cursor(cursor, fixed, free, sk_range)?;
    Ok(flat.map(|flat| flat.into_iter().map(|(k, v)| (k, s(v))).collect()))
}

fn limit(page: &PageRequest) -> i32 {
    layout::page_limit(page) as i32
}

impl DynamoReadModels {
    pub fn new(client: aws_sdk_dynamodb::Client, table: impl Into<String>) -> Self {
        DynamoReadModels {
            client,
            table: table.into(),
        }
    }

    fn view_item(&self, write: &ViewWrite) -> Result<Item, ReadModelError> {
        let id = &write.key.aggregate_id;
        let kind = &write.key.aggregate_type;
        let mut item: Item = HashMap::new();
        item.insert("pk".into(), s(write.key.partition_key()));
        item.insert("sk".into(), s(VIEW_SK));
        item.insert(
            "version".into(),
            AttributeValue::N(write.version.to_string()),
        );
        item.insert(
            "view".into(),
            to_attribute_value(&write.view).map_err(corrupt)?,
        );
        // Spread over shards: a status family is shared by many entities, and every view
        // write of one of them writes the index (see `keys`).
        item.insert(
            "status_key".into(),
            s(spread(
                &format!("{kind}#{}", write.status_family),
                &write.key.partition_key(),
                STATUS_SHARDS,
            )),
        );
        item.insert("updated_sk".into(), s(format!("{}#{id}", write.updated_at)));
        item.insert("created_sk".into(), s(format!("{}#{id}", write.created_at)));
        for (lookup, value) in &write.lookups {
            item.insert(format!("{lookup}_key"), s(format!("{kind}#{value}")));
        }
        Ok(item)
    }

    fn history_item(key: &StreamKey, entry: &HistoryEntry) -> Result<Item, ReadModelError> {
        let mut item: Item = to_item(entry).map_err(corrupt)?;
        item.insert("pk".into(), s(key.partition_key()));
        item.insert("sk".into(), s(history_sk(entry.occurred_at, entry.version)));
        Ok(item)
    }

    /// BatchWriteItem in chunks of 25, retrying unprocessed items with backoff.
    async fn put_all(&self, items: Vec<Item>) -> Result<(), ReadModelError> {
        for chunk in items.chunks(25) {
            let mut pending: Vec<WriteRequest> = chunk
                .iter()
                .map(|item| {
                    WriteRequest::builder()
                        .put_request(
                            PutRequest::builder()
                                .set_item(Some(item.clone()))
                                .build()
                                .expect("item set"),
                        )
                        .build()
                })
                .collect();
            let mut attempt = 0;
            while !pending.is_empty() {
                attempt += 1;
                if attempt > MAX_ATTEMPTS {
                    return Err(ReadModelError::Unavailable(format!(
                        "{} history items still unprocessed after {MAX_ATTEMPTS} attempts",
                        pending.len()
                    )));
                }
                if attempt > 1 {
                    tokio::time::sleep(Duration::from_millis(20 << attempt.min(6))).await;
                }
                let out = self
                    .client
                    .batch_write_item()
                    .request_items(&self.table, pending)
                    .send()
                    .await
                    .map_err(write_failed)?;
                pending = out
                    .unprocessed_items
                    .and_then(|mut u| u.remove(&self.table))
                    .unwrap_or_default();
            }
        }
        Ok(())
    }
}

impl ReadModelStore for DynamoReadModels {
    /// One conditional `UpdateItem` per entry (only entries that exist get a position).
    async fn attach_positions(
        &self,
        key: &StreamKey,
        positions: &[PositionOf],
    ) -> Result<(), ReadModelError> {
        for p in positions {
            let result = self
                .client
                .update_item()
                .table_name(&self.table)
                .key("pk", s(key.partition_key()))
                .key("sk", s(history_sk(p.occurred_at, p.version)))
                // The first position stays: a republished copy's later one would send a
                // reader past the records in between.
                .update_expression("SET #p = if_not_exists(#p, :p)")
                .condition_expression("attribute_exists(pk)")
                .expression_attribute_names("#p", "position")
                .expression_attribute_values(
                    ":p",
                    to_attribute_value(&p.position).map_err(corrupt)?,
                )
                .send()
                .await;
            match result {
                Ok(_) => {}
                Err(e)
                    if e.as_service_error()
                        .is_some_and(|s| s.is_conditional_check_failed_exception()) => {}
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }

    async fn load_views(
        &self,
        keys: &[StreamKey],
    ) -> Result<HashMap<StreamKey, StoredView>, ReadModelError> {
        let mut found = HashMap::new();
        for chunk in keys.chunks(100) {
            let mut request: Vec<Item> = chunk
                .iter()
                .map(|k| {
                    HashMap::from([
                        ("pk".to_owned(), s(k.partition_key())),
                        ("sk".to_owned(), s(VIEW_SK)),
                    ])
                })
                .collect();
            let mut attempt = 0;
            while !request.is_empty() {
                attempt += 1;
                if attempt > MAX_ATTEMPTS {
                    return Err(ReadModelError::Unavailable(
                        "views still unprocessed after retries".into(),
                    ));
                }
                if attempt > 1 {
                    tokio::time::sleep(Duration::from_millis(20 << attempt.min(6))).await;
                }
                let out = self
                    .client
                    .batch_get_item()
                    .request_items(
                        &self.table,
                        KeysAndAttributes::builder()
                            .set_keys(Some(request))
                            .consistent_read(true)
                            .build()
                            .expect("keys set"),
                    )
                    .send()
                    .await
                    .map_err(unavailable)?;
                for item in out
                    .responses
                    .and_then(|mut r| r.remove(&self.table))
                    .unwrap_or_default()
                {
                    let pk = item
                        .get("pk")
                        .and_then(|v| v.as_s().ok())
                        .cloned()
                        .unwrap_or_default();
                    let key = StreamKey::parse_partition_key(&pk)
                        .ok_or_else(|| corrupt(format!("bad pk {pk}")))?;
                    let version = item
                        .get("version")
                        .and_then(|v| v.as_n().ok())
                        .and_then(|n| n.parse().ok())
                        .ok_or_else(|| corrupt(format!("view of {pk} has no version")))?;
                    let view = item
                        .get("view")
                        .cloned()
                        .ok_or_else(|| corrupt(format!("view of {pk} missing")))?;
                    let view: serde_json::Value =
                        serde_dynamo::aws_sdk_dynamodb_1::from_attribute_value(view)
                            .map_err(corrupt)?;
                    found.insert(key, StoredView { version, view });
                }
                request = out
                    .unprocessed_keys
                    .and_then(|mut u| u.remove(&self.table))
                    .map(|k| k.keys)
                    .unwrap_or_default();
            }
        }
        Ok(found)
    }

    async fn write(&self, write: ViewWrite) -> Result<(), ReadModelError> {
        // History first: re-putting an entry is harmless, so a crash between the two
        // writes is repaired by the redelivery.
        let history = write
            .history
            .iter()
            .map(|e| Self::history_item(&write.key, e))
            .collect::<Result<Vec<_>, _>>()?;
        self.put_all(history).await?;
        let item = self.view_item(&write)?;
        let put = self
            .client
            .put_item()
            .table_name(&self.table)
            .set_item(Some(item));
        let put = if write.expected_version == 0 {
            put.condition_expression("attribute_not_exists(pk)")
        } else {
            put.condition_expression("version = :v")
                .expression_attribute_values(
                    ":v",
                    AttributeValue::N(write.expected_version.to_string()),
                )
        };
        match put.send().await {
            Ok(_) => Ok(()),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Err(ReadModelError::Conflict)
            }
            Err(e) => Err(write_failed(e)),
        }
    }

    async fn park(&self, parked: &Parked) -> Result<(), ReadModelError> {
        let mut first: Item = to_item(parked).map_err(corrupt)?;
        first.remove("set_aside");
        // The first parking stays as it was; a later one only adds to the count.
        self.client
            .update_item()
            .table_name(&self.table)
            .key("pk", s(spread(PARKED_PK, &parked.entity, PARKED_SHARDS)))
            .key("sk", s(&parked.entity))
            .update_expression(
                "SET parking = if_not_exists(parking, :first), parked_at = if_not_exists(parked_at, :at) ADD set_aside :n",
            )
            .expression_attribute_values(":first", AttributeValue::M(first))
            .expression_attribute_values(":at", s(parked.parked_at.to_string()))
            .expression_attribute_values(":n", AttributeValue::N(parked.set_aside.to_string()))
            .send()
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn parked(&self) -> Result<Vec<Parked>, ReadModelError> {
        let mut all = Vec::new();
        for pk in all_shards(PARKED_PK, PARKED_SHARDS) {
            let mut pages = self
                .client
                .query()
                .table_name(&self.table)
                .key_condition_expression("pk = :pk")
                .expression_attribute_values(":pk", s(pk))
                .consistent_read(true)
                .into_paginator()
                .items()
                .send();
            while let Some(item) = pages.next().await {
                all.push(parked_of(item.map_err(unavailable)?)?);
            }
        }
        Parked::sort(&mut all);
        Ok(all)
    }

    async fn parked_entity(&self, entity: &str) -> Result<Option<Parked>, ReadModelError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(spread(PARKED_PK, entity, PARKED_SHARDS)))
            .key("sk", s(entity))
            .consistent_read(true)
            .send()
            .await
            .map_err(unavailable)?;
        out.item.map(parked_of).transpose()
    }

    async fn unpark(&self, entity: &str, seen: u64) -> Result<bool, ReadModelError> {
        let result = self
            .client
            .delete_item()
            .table_name(&self.table)
            .key("pk", s(spread(PARKED_PK, entity, PARKED_SHARDS)))
            .key("sk", s(entity))
            .condition_expression("set_aside = :seen")
            .expression_attribute_values(":seen", AttributeValue::N(seen.to_string()))
            .send()
            .await;
        match result {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_conditional_check_failed_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(unavailable(e)),
        }
    }
}

/// The partition of the parked-entity list (spread over [`PARKED_SHARDS`]).
const PARKED_PK: &str = "parked";

fn parked_of(mut item: Item) -> Result<Parked, ReadModelError> {
    let Some(AttributeValue::M(mut parking)) = item.remove("parking") else {
        return Err(corrupt("a parked item without its parking"));
    };
    parking.insert(
        "set_aside".into(),
        item.remove("set_aside")
            .unwrap_or(AttributeValue::N("0".into())),
    );
    from_item(parking).map_err(corrupt)
}

fn view_of(item: Item) -> Result<serde_json::Value, ReadModelError> {
    let view = item
        .get("view")
        .cloned()
        .ok_or_else(|| corrupt("view item without a view"))?;
    serde_dynamo::aws_sdk_dynamodb_1::from_attribute_value(view).map_err(corrupt)
}

/// Where a status list stands in one shard of its family.
#[derive(Debug, Clone, PartialEq)]
enum ShardAt {
    /// Not read yet: from its newest item.
    Top,
    /// After this item (its `updated_sk` and `pk`).
    After(String, String),
    /// Read to its end.
    Done,
}

impl ShardAt {
    fn encode(&self) -> String {
        match self {
            ShardAt::Top => String::new(),
            ShardAt::After(sort, pk) => format!("{sort}\n{pk}"),
            ShardAt::Done => "-".into(),
        }
    }

    fn decode(text: &str) -> Result<ShardAt, ReadModelError> {
        Ok(match text {
            "" => ShardAt::Top,
            "-" => ShardAt::Done,
            _ => {
                let (sort, pk) = text.split_once('\n').ok_or(ReadModelError::InvalidCursor)?;
                ShardAt::After(sort.to_owned(), pk.to_owned())
            }
        })
    }
}

impl DynamoReadModels {
    /// Views in one status family, newest update first, across the family's shards: each
    /// page asks every shard not read to its end for up to a page of its newest items after
    /// where the cursor left it, and keeps the newest `limit` of them all. The cursor holds
    /// where each shard stands.
    async fn list_by_status(
        &self,
        family: &str,
        page: &PageRequest,
    ) -> Result<Page<serde_json::Value>, ReadModelError> {
        let names: Vec<String> = (0..STATUS_SHARDS).map(|n| format!("s{n}")).collect();
        let free: Vec<&str> = names.iter().map(String::as_str).collect();
        let at: Vec<ShardAt> = match layout::decode_cursor(
            page.cursor.as_deref(),
            &[("status", family)],
            &free,
            None,
        )? {
            None => vec![ShardAt::Top; STATUS_SHARDS as usize],
            Some(flat) => names
                .iter()
                .map(|n| ShardAt::decode(&flat[n]))
                .collect::<Result<_, _>>()?,
        };
        let limit = limit(page);
        let reads = all_shards(family, STATUS_SHARDS)
            .zip(&at)
            .map(|(shard, at)| async move {
                let start = match at {
                    ShardAt::Done => return Ok((Vec::new(), true)),
                    ShardAt::Top => None,
                    ShardAt::After(sort, pk) => Some(HashMap::from([
                        ("status_key".to_owned(), s(&shard)),
                        ("updated_sk".to_owned(), s(sort)),
                        ("pk".to_owned(), s(pk)),
                        ("sk".to_owned(), s(VIEW_SK)),
                    ])),
                };
                let out = self
                    .client
                    .query()
                    .table_name(&self.table)
                    .index_name(BY_STATUS)
                    .key_condition_expression("status_key = :v")
                    .expression_attribute_values(":v", s(&shard))
                    .scan_index_forward(false)
                    .limit(limit)
                    .set_exclusive_start_key(start)
                    .send()
                    .await
                    .map_err(unavailable)?;
                let ended = out.last_evaluated_key().is_none();
                Ok::<_, ReadModelError>((out.items.unwrap_or_default(), ended))
            });
        let read = futures::future::try_join_all(reads).await?;
        // Every shard's items, newest first (`updated_sk` ends with the id: no two equal).
        let sort_of = |item: &Item| {
            item.get("updated_sk")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default()
        };
        let mut merged: Vec<(String, usize, Item)> = read
            .iter()
            .enumerate()
            .flat_map(|(n, (items, _))| items.iter().map(move |i| (sort_of(i), n, i.clone())))
            .collect();
        merged.sort_by(|a, b| b.0.cmp(&a.0));
        merged.truncate(limit as usize);
        let mut at = at;
        let mut taken = vec![0usize; at.len()];
        for (sort, n, item) in &merged {
            taken[*n] += 1;
            let pk = item
                .get("pk")
                .and_then(|v| v.as_s().ok())
                .cloned()
                .unwrap_or_default();
            at[*n] = ShardAt::After(sort.clone(), pk);
        }
        for (n, (items, ended)) in read.iter().enumerate() {
            if *ended && taken[n] == items.len() {
                at[n] = ShardAt::Done;
            }
        }
        let next_cursor = (!at.iter().all(|a| *a == ShardAt::Done)).then(|| {
            let encoded: Vec<String> = at.iter().map(ShardAt::encode).collect();
            let mut flat: BTreeMap<&str, &str> = names
                .iter()
                .map(String::as_str)
                .zip(encoded.iter().map(String::as_str))
                .collect();
            flat.insert("status", family);
            layout::encode_cursor(&flat)
        });
        let items = merged
            .into_iter()
            .map(|(_, _, item)| view_of(item))
            .collect::<Result<_, _>>()?;
        Ok(Page { items, next_cursor })
    }
}

impl ReadModelQueries for DynamoReadModels {
    async fn view(&self, key: &StreamKey) -> Result<Option<serde_json::Value>, ReadModelError> {
        let out = self
            .client
            .get_item()
            .table_name(&self.table)
            .key("pk", s(key.partition_key()))
            .key("sk", s(VIEW_SK))
            .send()
            .await
            .map_err(unavailable)?;
        out.item.map(view_of).transpose()
    }

    async fn list(
        &self,
        lookup: &Lookup,
        page: &PageRequest,
    ) -> Result<Page<serde_json::Value>, ReadModelError> {
        let (index, attribute, value) = index_of(lookup);
        if lookup.kind == LookupKind::Status {
            return self.list_by_status(&value, page).await;
        }
        let sort = "created_sk";
        // An index cursor holds the view item's key (pk varies, sk is `view`) and the index
        // key (this lookup's value, and the sort attribute).
        let start = decode_cursor(
            page.cursor.as_deref(),
            &[("sk", VIEW_SK), (attribute, value.as_str())],
            &["pk", sort],
            None,
        )?;
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .index_name(index)
            .key_condition_expression("#k = :v")
            .expression_attribute_names("#k", attribute)
            .expression_attribute_values(":v", s(value))
            .scan_index_forward(false)
            .limit(limit(page))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(unavailable)?;
        let next_cursor = encode_cursor(out.last_evaluated_key());
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(view_of)
            .collect::<Result<_, _>>()?;
        Ok(Page { items, next_cursor })
    }

    async fn history(
        &self,
        key: &StreamKey,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        page: &PageRequest,
    ) -> Result<Page<HistoryEntry>, ReadModelError> {
        let (low, high) = layout::history_range(from, to);
        let pk = key.partition_key();
        let start = decode_cursor(
            page.cursor.as_deref(),
            &[("pk", pk.as_str())],
            &["sk"],
            Some((low.as_str(), high.as_str())),
        )?;
        let out = self
            .client
            .query()
            .table_name(&self.table)
            .key_condition_expression("pk = :pk AND sk BETWEEN :low AND :high")
            .expression_attribute_values(":pk", s(key.partition_key()))
            .expression_attribute_values(":low", s(low))
            .expression_attribute_values(":high", s(high))
            .limit(limit(page))
            .set_exclusive_start_key(start)
            .send()
            .await
            .map_err(unavailable)?;
        let next_cursor = encode_cursor(out.last_evaluated_key());
        let items = out
            .items
            .unwrap_or_default()
            .into_iter()
            .map(|item| from_item::<HistoryEntry>(item).map_err(corrupt))
            .collect::<Result<_, _>>()?;
        Ok(Page { items, next_cursor })
    }
}
