//! One read store chosen at start: the deployment's native one (DynamoDB on AWS, SQLite in
//! the embedded runner) or PostgreSQL, as the template's `ReadStore` and the runner's
//! `--read-store` choose. Everything else (the write model, the log, the archive) stays where
//! it is.

use crate::PgReadModels;
use std::collections::HashMap;
use timeline_core::ports::{
    Lookup, Page, PageRequest, Parked, PositionOf, ReadModelError, ReadModelQueries,
    ReadModelStore, StoredView, ViewWrite,
};
use timeline_core::views::HistoryEntry;
use timeline_core::{StreamKey, Timestamp};

#[derive(Clone, Debug)]
pub enum ReadStore<N> {
    Native(N),
    Postgres(PgReadModels),
}

impl<N> ReadStore<N> {
    pub fn new(native: N, postgres: Option<&PgReadModels>) -> Self {
        match postgres {
            Some(pg) => ReadStore::Postgres(pg.clone()),
            None => ReadStore::Native(native),
        }
    }
}

/// Calls the same method on whichever store it is.
macro_rules! either {
    ($self:ident, $store:ident => $call:expr) => {
        match $self {
            ReadStore::Native($store) => $call,
            ReadStore::Postgres($store) => $call,
        }
    };
}

impl<N: ReadModelStore> ReadModelStore for ReadStore<N> {
    async fn load_views(
        &self,
        keys: &[StreamKey],
    ) -> Result<HashMap<StreamKey, StoredView>, ReadModelError> {
        either!(self, s => s.load_views(keys).await)
    }
    async fn write(&self, write: ViewWrite) -> Result<(), ReadModelError> {
        either!(self, s => s.write(write).await)
    }
    async fn attach_positions(
        &self,
        key: &StreamKey,
        positions: &[PositionOf],
    ) -> Result<(), ReadModelError> {
        either!(self, s => s.attach_positions(key, positions).await)
    }
    async fn park(&self, parked: &Parked) -> Result<(), ReadModelError> {
        either!(self, s => s.park(parked).await)
    }
    async fn parked(&self) -> Result<Vec<Parked>, ReadModelError> {
        either!(self, s => s.parked().await)
    }
    async fn parked_entity(&self, entity: &str) -> Result<Option<Parked>, ReadModelError> {
        either!(self, s => s.parked_entity(entity).await)
    }
    async fn unpark(&self, entity: &str, seen: u64) -> Result<bool, ReadModelError> {
        either!(self, s => s.unpark(entity, seen).await)
    }
}

impl<N: ReadModelQueries> ReadModelQueries for ReadStore<N> {
    async fn view(&self, key: &StreamKey) -> Result<Option<serde_json::Value>, ReadModelError> {
        either!(self, s => s.view(key).await)
    }
    async fn list(
        &self,
        lookup: &Lookup,
        page: &PageRequest,
    ) -> Result<Page<serde_json::Value>, ReadModelError> {
        either!(self, s => s.list(lookup, page).await)
    }
    async fn history(
        &self,
        key: &StreamKey,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        page: &PageRequest,
    ) -> Result<Page<HistoryEntry>, ReadModelError> {
        either!(self, s => s.history(key, from, to, page).await)
    }
}
