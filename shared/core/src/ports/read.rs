//! Ports of the read side: the processor writes views and history, the query API reads them.

use crate::envelope::StreamKey;
pub use crate::park::Parked;
use crate::time::Timestamp;
use crate::views::HistoryEntry;
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::future::Future;

/// The version a stored view is at (what the processor needs to decide what to apply).
#[derive(Debug, Clone, PartialEq)]
pub struct StoredView {
    pub version: u64,
    pub view: serde_json::Value,
}

/// One entity's changes from one batch: written as one conditional view write plus the
/// history entries.
#[derive(Debug, Clone, PartialEq)]
pub struct ViewWrite {
    pub key: StreamKey,
    /// The version the view had when read (0: it did not exist).
    pub expected_version: u64,
    pub version: u64,
    /// The whole view, as JSON.
    pub view: serde_json::Value,
    pub status_family: String,
    pub lookups: Vec<(&'static str, String)>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub history: Vec<HistoryEntry>,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum ReadModelError {
    #[error("the view moved since it was read")]
    Conflict,
    #[error("read models unavailable: {0}")]
    Unavailable(String),
    #[error("read model item is corrupt: {0}")]
    Corrupt(String),
    #[error("the cursor is not one this API issued")]
    InvalidCursor,
    /// The store refuses the write for good (an item over its limits): retrying cannot help.
    #[error("read models refuse the write: {0}")]
    Refused(String),
}

pub trait ReadModelStore: Send + Sync {
    /// The stored views of these entities (absent ones are left out).
    fn load_views(
        &self,
        keys: &[StreamKey],
    ) -> impl Future<Output = Result<HashMap<StreamKey, StoredView>, ReadModelError>> + Send;

    /// Writes history entries (idempotent) then the view, conditional on its version.
    fn write(&self, write: ViewWrite) -> impl Future<Output = Result<(), ReadModelError>> + Send;

    /// Records where the records of history entries already written sit on the stream (a
    /// replay applies an event from the archive first, then meets it again on the stream).
    /// An entry keeps the first position it was given (a republished copy comes later);
    /// entries that do not exist are left alone.
    fn attach_positions(
        &self,
        key: &StreamKey,
        positions: &[PositionOf],
    ) -> impl Future<Output = Result<(), ReadModelError>> + Send;

    /// Parks an entity (see [`crate::park`]): the first parking of an entity is kept as it
    /// is; parking it again only adds `parked.set_aside` to the count of records set aside.
    fn park(&self, parked: &Parked) -> impl Future<Output = Result<(), ReadModelError>> + Send;

    /// Every parked entity, oldest parking first.
    fn parked(&self) -> impl Future<Output = Result<Vec<Parked>, ReadModelError>> + Send;

    /// One entity's parking (`entity` is a partition key, `ride#r1`), if parked.
    fn parked_entity(
        &self,
        entity: &str,
    ) -> impl Future<Output = Result<Option<Parked>, ReadModelError>> + Send;

    /// Ends an entity's parking if nothing was set aside since the count `seen` was read;
    /// false when the count moved (or the entity is no longer parked).
    fn unpark(
        &self,
        entity: &str,
        seen: u64,
    ) -> impl Future<Output = Result<bool, ReadModelError>> + Send;
}

/// The log position of one history entry (found by its time and version).
#[derive(Debug, Clone, PartialEq)]
pub struct PositionOf {
    pub occurred_at: Timestamp,
    pub version: u64,
    pub position: crate::ports::LogPosition,
}

/// Which list to read: by a lookup (`rider`, `driver`) or by status family.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lookup {
    pub aggregate_type: String,
    pub kind: LookupKind,
    pub value: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LookupKind {
    Rider,
    Driver,
    Status,
}

impl LookupKind {
    pub fn name(&self) -> &'static str {
        match self {
            LookupKind::Rider => "rider",
            LookupKind::Driver => "driver",
            LookupKind::Status => "status",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PageRequest {
    pub limit: usize,
    /// Opaque, from a previous page.
    pub cursor: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

pub trait ReadModelQueries: Send + Sync {
    fn view(
        &self,
        key: &StreamKey,
    ) -> impl Future<Output = Result<Option<serde_json::Value>, ReadModelError>> + Send;

    /// Views under a lookup, newest first.
    fn list(
        &self,
        lookup: &Lookup,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Page<serde_json::Value>, ReadModelError>> + Send;

    /// History entries with `from <= occurred_at <= to`, oldest first.
    fn history(
        &self,
        key: &StreamKey,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        page: &PageRequest,
    ) -> impl Future<Output = Result<Page<HistoryEntry>, ReadModelError>> + Send;
}

/// The layout both read-model stores share (DynamoDB items, SQLite rows), so their keys,
/// ranges, cursors and limits agree to the byte.
pub mod layout {
    use super::{PageRequest, ReadModelError};
    use crate::time::Timestamp;
    use base64::Engine;
    use std::collections::{BTreeMap, HashMap};

    /// The sort key of a view item.
    pub const VIEW_SK: &str = "view";

    /// `h#<occurred_at>#<version>`: fixed-width, so the sort key orders by time then version.
    pub fn history_sk(occurred_at: Timestamp, version: u64) -> String {
        format!("h#{occurred_at}#{version:020}")
    }

    /// The inclusive sort-key range of history entries with `from <= occurred_at <= to`.
    pub fn history_range(from: Option<Timestamp>, to: Option<Timestamp>) -> (String, String) {
        let low = from.map_or("h#".to_owned(), |t| format!("h#{t}"));
        // `~` sorts after every character of a version, so `to` is inclusive.
        let high = to.map_or("h#~".to_owned(), |t| format!("h#{t}#~"));
        (low, high)
    }

    /// Stores refuse a limit below 1 or above 1000; callers validate, this keeps them total.
    pub fn page_limit(page: &PageRequest) -> usize {
        page.limit.clamp(1, 1000)
    }

    /// A cursor: the last key read, all strings, as base64url JSON. Opaque to clients.
    pub fn encode_cursor(key: &BTreeMap<&str, &str>) -> String {
        let json = serde_json::to_vec(key).expect("strings serialize");
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(json)
    }

    /// The keys a view write is stored under (the same attributes and values in every store).
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct ViewKeys {
        pub pk: String,
        /// `<type>#<status family>`.
        pub status_key: String,
        /// `<type>#<rider>` and `<type>#<driver>`, when the view has them.
        pub rider_key: Option<String>,
        pub driver_key: Option<String>,
        /// `<time>#<id>`: the lists' sort keys.
        pub created_sk: String,
        pub updated_sk: String,
        /// Each history entry's sort key, in the write's order.
        pub history_sks: Vec<String>,
    }

    impl ViewKeys {
        pub fn of(write: &super::ViewWrite) -> ViewKeys {
            let kind = &write.key.aggregate_type;
            let id = &write.key.aggregate_id;
            let lookup = |name: &str| {
                write
                    .lookups
                    .iter()
                    .find(|(lookup, _)| *lookup == name)
                    .map(|(_, value)| format!("{kind}#{value}"))
            };
            ViewKeys {
                pk: write.key.partition_key(),
                status_key: format!("{kind}#{}", write.status_family),
                rider_key: lookup("rider"),
                driver_key: lookup("driver"),
                created_sk: format!("{}#{id}", write.created_at),
                updated_sk: format!("{}#{id}", write.updated_at),
                history_sks: write
                    .history
                    .iter()
                    .map(|e| history_sk(e.occurred_at, e.version))
                    .collect(),
            }
        }
    }

    /// A lookup's attribute, the attribute its list sorts on (newest first), and the value
    /// it holds for this lookup (`<type>#<value>`).
    pub fn lookup_key(lookup: &super::Lookup) -> (&'static str, &'static str, String) {
        use super::LookupKind;
        let value = format!("{}#{}", lookup.aggregate_type, lookup.value);
        match lookup.kind {
            LookupKind::Rider => ("rider_key", "created_sk", value),
            LookupKind::Driver => ("driver_key", "created_sk", value),
            LookupKind::Status => ("status_key", "updated_sk", value),
        }
    }

    /// Where a list's previous page ended, `(pk, sort value)`, if its cursor belongs to this
    /// list (the cursor of DynamoDB's index query: the view item's key and the index key).
    pub fn list_after(
        page: &PageRequest,
        column: &str,
        sort: &str,
        value: &str,
    ) -> Result<Option<(String, String)>, ReadModelError> {
        let start = decode_cursor(
            page.cursor.as_deref(),
            &[("sk", VIEW_SK), (column, value)],
            &["pk", sort],
            None,
        )?;
        Ok(start.map(|mut s| {
            (
                s.remove("pk").unwrap_or_default(),
                s.remove(sort).unwrap_or_default(),
            )
        }))
    }

    /// A list's page from rows `(pk, sort value, item)` fetched `limit + 1` at a time, with
    /// the cursor after it when more follow.
    pub fn list_page<T>(
        mut rows: Vec<(String, String, T)>,
        limit: usize,
        column: &str,
        sort: &str,
        value: &str,
    ) -> super::Page<T> {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = match rows.last() {
            Some((pk, sort_value, _)) if more => Some(encode_cursor(&BTreeMap::from([
                ("pk", pk.as_str()),
                ("sk", VIEW_SK),
                (column, value),
                (sort, sort_value.as_str()),
            ]))),
            _ => None,
        };
        super::Page {
            items: rows.into_iter().map(|(_, _, item)| item).collect(),
            next_cursor,
        }
    }

    /// Where a history read starts: after the cursor's key (false), or at `low` (true).
    pub fn history_start(
        page: &PageRequest,
        pk: &str,
        low: &str,
        high: &str,
    ) -> Result<(String, bool), ReadModelError> {
        let start = decode_cursor(
            page.cursor.as_deref(),
            &[("pk", pk)],
            &["sk"],
            Some((low, high)),
        )?;
        Ok(match start {
            Some(mut start) => (start.remove("sk").unwrap_or_default(), false),
            None => (low.to_owned(), true),
        })
    }

    /// A history page from rows `(sk, entry)` fetched `limit + 1` at a time, with the
    /// cursor after it when more follow.
    pub fn history_page<T>(
        mut rows: Vec<(String, T)>,
        limit: usize,
        pk: &str,
    ) -> (Vec<(String, T)>, Option<String>) {
        let more = rows.len() > limit;
        rows.truncate(limit);
        let next_cursor = match rows.last() {
            Some((sk, _)) if more => Some(encode_cursor(&BTreeMap::from([
                ("pk", pk),
                ("sk", sk.as_str()),
            ]))),
            _ => None,
        };
        (rows, next_cursor)
    }

    /// Decodes a cursor and checks it belongs to this very query: exactly the key attributes
    /// `fixed` and `free`, each fixed one equal to what the query fixes, `sk` within
    /// `sk_range` if given. Anything else is `InvalidCursor`, never a store error.
    pub fn decode_cursor(
        cursor: Option<&str>,
        fixed: &[(&str, &str)],
        free: &[&str],
        sk_range: Option<(&str, &str)>,
    ) -> Result<Option<HashMap<String, String>>, ReadModelError> {
        let Some(cursor) = cursor else {
            return Ok(None);
        };
        let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(cursor)
            .map_err(|_| ReadModelError::InvalidCursor)?;
        let flat: HashMap<String, String> =
            serde_json::from_slice(&bytes).map_err(|_| ReadModelError::InvalidCursor)?;
        let mut expected: Vec<&str> = fixed.iter().map(|(k, _)| *k).collect();
        expected.extend_from_slice(free);
        expected.sort_unstable();
        expected.dedup();
        let mut keys: Vec<&str> = flat.keys().map(String::as_str).collect();
        keys.sort_unstable();
        let fits = keys == expected
            && fixed
                .iter()
                .all(|(k, v)| flat.get(*k).map(String::as_str) == Some(*v))
            && sk_range.is_none_or(|(low, high)| {
                flat.get("sk")
                    .is_some_and(|sk| low <= sk.as_str() && sk.as_str() <= high)
            });
        if !fits {
            return Err(ReadModelError::InvalidCursor);
        }
        Ok(Some(flat))
    }
}
