//! The read models in PostgreSQL (Aurora PostgreSQL on AWS, a local server for tests and the
//! runner), behind the same ports as the DynamoDB and SQLite adapters and with their keys,
//! ordering, paging and cursors (`timeline_core::ports::layout`), so the query API answers
//! identically from any of them:
//! - a view per entity with its version, `status_key = <type>#<family>`, the lookup keys
//!   `rider_key` / `driver_key = <type>#<value>`, and the sort keys `created_sk` /
//!   `updated_sk = <time>#<id>`; lists newest first, the pk breaking ties;
//! - history keyed by `h#<occurred_at>#<version, 20 digits>`, oldest first, both ends of a
//!   time range inclusive;
//! - an event applies only as the next version: the view's upsert is conditional on the
//!   version the processor read (`ON CONFLICT ... WHERE version = $expected`), and one entity's
//!   batch (history and view) is one transaction, so a connection lost mid-batch leaves
//!   nothing half-written and the batch is retried.
//!
//! The schema is in `migrations/` and applied by [`migrate`]; [`check_schema`] refuses a
//! database older than this code needs. [`reports`] holds what SQL is for.

pub mod connect;
pub mod migrations;
pub mod read_store;
pub mod reports;

use deadpool_postgres::Pool;
use std::collections::HashMap;
use timeline_core::ports::layout::{
    history_page, history_range, history_sk, history_start, list_after, list_page, lookup_key,
    page_limit, ViewKeys,
};
use timeline_core::ports::{
    Lookup, Page, PageRequest, Parked, PositionOf, ReadModelError, ReadModelQueries,
    ReadModelStore, StoredView, ViewWrite,
};
use timeline_core::views::HistoryEntry;
use timeline_core::{StreamKey, Timestamp};
use tokio_postgres::types::ToSql;

pub use connect::{pool, pool_with, ConnectError, ConnectOptions, PasswordSource, POOL_SIZE};
pub use migrations::{check_schema, migrate, SchemaError};
pub use read_store::ReadStore;

fn unavailable(e: impl std::error::Error) -> ReadModelError {
    ReadModelError::Unavailable(format!("postgres: {}", connect::describe(&e)))
}

fn corrupt(e: impl std::fmt::Display) -> ReadModelError {
    ReadModelError::Corrupt(e.to_string())
}

/// The read models in one PostgreSQL database. Clones share the pool.
#[derive(Clone)]
pub struct PgReadModels {
    pool: Pool,
    identity: String,
}

impl std::fmt::Debug for PgReadModels {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgReadModels").finish_non_exhaustive()
    }
}

fn version_of(v: i64) -> u64 {
    u64::try_from(v).unwrap_or_default()
}

fn time(t: Timestamp) -> chrono::DateTime<chrono::Utc> {
    t.as_datetime()
}

impl PgReadModels {
    pub fn new(pool: Pool) -> Self {
        PgReadModels {
            pool,
            identity: "postgres".into(),
        }
    }

    /// The store with its [`identity`](Self::identity) read from the server: a fresh
    /// server or another database is another store.
    pub async fn connect(pool: Pool) -> Result<Self, ReadModelError> {
        let row = pool
            .get()
            .await
            .map_err(unavailable)?
            .query_one(
                "SELECT system_identifier::text, current_database() FROM pg_control_system()",
                &[],
            )
            .await
            .map_err(unavailable)?;
        let (system, database): (String, String) = (row.get(0), row.get(1));
        Ok(PgReadModels {
            pool,
            identity: format!("postgres:{system}/{database}"),
        })
    }

    /// Which database this is (`postgres:<system identifier>/<database>`): a follower of the
    /// log keeps its position per store, so a new store is filled from the oldest record.
    pub fn identity(&self) -> &str {
        &self.identity
    }

    pub fn pool(&self) -> &Pool {
        &self.pool
    }

    async fn client(&self) -> Result<deadpool_postgres::Object, ReadModelError> {
        self.pool.get().await.map_err(unavailable)
    }

    async fn parked_entry(
        client: &impl deadpool_postgres::GenericClient,
        entity: &str,
        lock: bool,
    ) -> Result<Option<Parked>, ReadModelError> {
        let sql = if lock {
            "SELECT entry FROM parked WHERE entity = $1 FOR UPDATE"
        } else {
            "SELECT entry FROM parked WHERE entity = $1"
        };
        let row = client
            .query_opt(sql, &[&entity])
            .await
            .map_err(unavailable)?;
        row.map(|r| serde_json::from_value(r.get(0)).map_err(corrupt))
            .transpose()
    }
}

impl ReadModelStore for PgReadModels {
    async fn load_views(
        &self,
        keys: &[StreamKey],
    ) -> Result<HashMap<StreamKey, StoredView>, ReadModelError> {
        let pks: Vec<String> = keys.iter().map(StreamKey::partition_key).collect();
        let rows = self
            .client()
            .await?
            .query(
                "SELECT pk, version, view FROM views WHERE pk = ANY($1)",
                &[&pks],
            )
            .await
            .map_err(unavailable)?;
        let by_pk: HashMap<String, &StreamKey> = pks.iter().cloned().zip(keys).collect();
        let mut found = HashMap::new();
        for row in rows {
            let pk: String = row.get(0);
            if let Some(key) = by_pk.get(&pk) {
                found.insert(
                    (*key).clone(),
                    StoredView {
                        version: version_of(row.get(1)),
                        view: row.get(2),
                    },
                );
            }
        }
        Ok(found)
    }

    async fn write(&self, write: ViewWrite) -> Result<(), ReadModelError> {
        let keys = ViewKeys::of(&write);
        let (kind, id) = (&write.key.aggregate_type, &write.key.aggregate_id);
        let version = i64::try_from(write.version).map_err(corrupt)?;
        let expected = i64::try_from(write.expected_version).map_err(corrupt)?;
        let history = keys
            .history_sks
            .iter()
            .zip(&write.history)
            .map(|(sk, entry)| Ok((sk, serde_json::to_value(entry).map_err(corrupt)?)))
            .collect::<Result<Vec<_>, ReadModelError>>()?;

        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        // History first, kept even when the view's condition fails: putting an entry again
        // is harmless, as with the other adapters.
        let put = tx
            .prepare_cached(
                "INSERT INTO history (pk, sk, entry) VALUES ($1, $2, $3)
                 ON CONFLICT (pk, sk) DO UPDATE SET entry = EXCLUDED.entry",
            )
            .await
            .map_err(unavailable)?;
        for (sk, entry) in &history {
            tx.execute(&put, &[&keys.pk, sk, entry])
                .await
                .map_err(unavailable)?;
        }
        // The view only as the next version: inserted when none was read, updated only from
        // the version read.
        let upsert = if expected == 0 {
            "INSERT INTO views (pk, aggregate_type, aggregate_id, version, view, status_family,
                 status_key, rider_key, driver_key, created_sk, updated_sk, created_at, updated_at)
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13 WHERE $14::bigint = 0
             ON CONFLICT (pk) DO NOTHING"
        } else {
            "UPDATE views SET aggregate_type = $2, aggregate_id = $3, version = $4, view = $5,
                 status_family = $6, status_key = $7, rider_key = $8, driver_key = $9,
                 created_sk = $10, updated_sk = $11, created_at = $12, updated_at = $13
             WHERE pk = $1 AND version = $14"
        };
        let (created_at, updated_at) = (time(write.created_at), time(write.updated_at));
        let params: [&(dyn ToSql + Sync); 14] = [
            &keys.pk,
            kind,
            id,
            &version,
            &write.view,
            &write.status_family,
            &keys.status_key,
            &keys.rider_key,
            &keys.driver_key,
            &keys.created_sk,
            &keys.updated_sk,
            &created_at,
            &updated_at,
            &expected,
        ];
        let written = tx.execute(upsert, &params).await.map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        if written == 1 {
            Ok(())
        } else {
            Err(ReadModelError::Conflict)
        }
    }

    async fn attach_positions(
        &self,
        key: &StreamKey,
        positions: &[PositionOf],
    ) -> Result<(), ReadModelError> {
        let pk = key.partition_key();
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        for p in positions {
            let sk = history_sk(p.occurred_at, p.version);
            let position = serde_json::to_value(&p.position).map_err(corrupt)?;
            // The first position given is kept.
            tx.execute(
                "UPDATE history SET entry = jsonb_set(entry, '{position}', $3)
                 WHERE pk = $1 AND sk = $2
                   AND coalesce(entry -> 'position', 'null'::jsonb) = 'null'::jsonb",
                &[&pk, &sk, &position],
            )
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)
    }

    async fn park(&self, parked: &Parked) -> Result<(), ReadModelError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        // Serialises parkings of one entity (the row lock), and of a first parking (the
        // insert's conflict).
        let entry = match Self::parked_entry(&tx, &parked.entity, true).await? {
            Some(mut existing) => {
                existing.again(parked);
                existing
            }
            None => parked.clone(),
        };
        let json = serde_json::to_value(&entry).map_err(corrupt)?;
        tx.execute(
            "INSERT INTO parked (entity, parked_at, entry) VALUES ($1, $2, $3)
             ON CONFLICT (entity) DO UPDATE SET entry = EXCLUDED.entry",
            &[&entry.entity, &entry.parked_at.to_string(), &json],
        )
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)
    }

    async fn parked(&self) -> Result<Vec<Parked>, ReadModelError> {
        let rows = self
            .client()
            .await?
            .query("SELECT entry FROM parked", &[])
            .await
            .map_err(unavailable)?;
        let mut all = rows
            .into_iter()
            .map(|r| serde_json::from_value(r.get(0)).map_err(corrupt))
            .collect::<Result<Vec<Parked>, _>>()?;
        Parked::sort(&mut all);
        Ok(all)
    }

    async fn parked_entity(&self, entity: &str) -> Result<Option<Parked>, ReadModelError> {
        Self::parked_entry(&self.client().await?, entity, false).await
    }

    async fn unpark(&self, entity: &str, seen: u64) -> Result<bool, ReadModelError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(unavailable)?;
        if Self::parked_entry(&tx, entity, true)
            .await?
            .is_none_or(|p| p.set_aside != seen)
        {
            return Ok(false);
        }
        tx.execute("DELETE FROM parked WHERE entity = $1", &[&entity])
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        Ok(true)
    }
}

impl ReadModelQueries for PgReadModels {
    async fn view(&self, key: &StreamKey) -> Result<Option<serde_json::Value>, ReadModelError> {
        let row = self
            .client()
            .await?
            .query_opt(
                "SELECT view FROM views WHERE pk = $1",
                &[&key.partition_key()],
            )
            .await
            .map_err(unavailable)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn list(
        &self,
        lookup: &Lookup,
        page: &PageRequest,
    ) -> Result<Page<serde_json::Value>, ReadModelError> {
        let (column, sort, value) = lookup_key(lookup);
        let start = list_after(page, column, sort, &value)?;
        let limit = page_limit(page);
        let fetch = (limit + 1) as i64;
        let client = self.client().await?;
        // Newest first; the pk breaks ties so that the order, and so paging, is total.
        let rows = match &start {
            None => {
                let sql = format!(
                    "SELECT pk, {sort}, view FROM views WHERE {column} = $1
                     ORDER BY {sort} DESC, pk DESC LIMIT $2"
                );
                client.query(&sql, &[&value, &fetch]).await
            }
            Some((pk, sort_value)) => {
                let sql = format!(
                    "SELECT pk, {sort}, view FROM views WHERE {column} = $1
                       AND ({sort}, pk) < ($2, $3)
                     ORDER BY {sort} DESC, pk DESC LIMIT $4"
                );
                client.query(&sql, &[&value, sort_value, pk, &fetch]).await
            }
        }
        .map_err(unavailable)?;
        let rows = rows
            .into_iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        Ok(list_page(rows, limit, column, sort, &value))
    }

    async fn history(
        &self,
        key: &StreamKey,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        page: &PageRequest,
    ) -> Result<Page<HistoryEntry>, ReadModelError> {
        let (low, high) = history_range(from, to);
        let pk = key.partition_key();
        let (after, inclusive) = history_start(page, &pk, &low, &high)?;
        let limit = page_limit(page);
        let sql = if inclusive {
            "SELECT sk, entry FROM history WHERE pk = $1 AND sk >= $2 AND sk <= $3
             ORDER BY sk LIMIT $4"
        } else {
            "SELECT sk, entry FROM history WHERE pk = $1 AND sk > $2 AND sk <= $3
             ORDER BY sk LIMIT $4"
        };
        let rows = self
            .client()
            .await?
            .query(sql, &[&pk, &after, &high, &((limit + 1) as i64)])
            .await
            .map_err(unavailable)?;
        let rows: Vec<(String, serde_json::Value)> =
            rows.into_iter().map(|r| (r.get(0), r.get(1))).collect();
        let (rows, next_cursor) = history_page(rows, limit, &pk);
        let items = rows
            .into_iter()
            .map(|(sk, entry)| {
                serde_json::from_value::<HistoryEntry>(entry)
                    .map_err(|e| corrupt(format!("history {pk} {sk}: {e}")))
            })
            .collect::<Result<_, _>>()?;
        Ok(Page { items, next_cursor })
    }
}
