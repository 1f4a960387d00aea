//! Ports of the read side: the processor writes views and history, the query API reads them.

use crate::envelope::StreamKey;
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
}

pub trait ReadModelStore: Send + Sync {
    /// The stored views of these entities (absent ones are left out).
    fn load_views(
        &self,
        keys: &[StreamKey],
    ) -> impl Future<Output = Result<HashMap<StreamKey, StoredView>, ReadModelError>> + Send;

    /// Writes history entries (idempotent) then the view, conditional on its version.
    fn write(&self, write: ViewWrite) -> impl Future<Output = Result<(), ReadModelError>> + Send;
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
