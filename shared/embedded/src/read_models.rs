//! Read models with the keys, ordering and paging of the DynamoDB adapter (`timeline-aws`'s
//! `read_models.rs`):
//! - a view per entity with its version, `status_key = <type>#<family>`, the lookup keys
//!   `rider_key` / `driver_key = <type>#<value>`, and the sort keys
//!   `created_sk` / `updated_sk = <time>#<id>`;
//! - lists by rider or driver newest first by `created_sk`, by status family newest first
//!   by `updated_sk`;
//! - history keyed by `h#<occurred_at>#<version, 20 digits>`, read oldest first between
//!   `from` and `to`, both inclusive.
//!
//! Cursors are what DynamoDB's would be (the last item's key attributes as base64url JSON)
//! and are checked the same way: a cursor from another query, or no cursor at all, is
//! `InvalidCursor`. A page is full when it holds `limit` items (clamped to 1..=1000); unlike
//! DynamoDB, which may end with an empty page, a cursor is only given when more items
//! follow.

use crate::Embedded;
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
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
use timeline_core::StreamKey;
use timeline_core::Timestamp;

fn unavailable(e: rusqlite::Error) -> ReadModelError {
    ReadModelError::Unavailable(format!("sqlite: {e}"))
}

fn corrupt(e: impl std::fmt::Display) -> ReadModelError {
    ReadModelError::Corrupt(e.to_string())
}

fn view_json(pk: &str, text: &str) -> Result<serde_json::Value, ReadModelError> {
    serde_json::from_str(text).map_err(|e| corrupt(format!("view of {pk}: {e}")))
}

fn load_views(
    conn: &Connection,
    keys: &[StreamKey],
) -> Result<HashMap<StreamKey, StoredView>, ReadModelError> {
    let mut statement = conn
        .prepare_cached("SELECT version, view FROM views WHERE pk = ?1")
        .map_err(unavailable)?;
    let mut found = HashMap::new();
    for key in keys {
        let pk = key.partition_key();
        let row: Option<(i64, String)> = statement
            .query_row([&pk], |row| Ok((row.get(0)?, row.get(1)?)))
            .optional()
            .map_err(unavailable)?;
        if let Some((version, view)) = row {
            found.insert(
                key.clone(),
                StoredView {
                    version: version as u64,
                    view: view_json(&pk, &view)?,
                },
            );
        }
    }
    Ok(found)
}

fn parked_entry(conn: &Connection, entity: &str) -> Result<Option<Parked>, ReadModelError> {
    let entry: Option<String> = conn
        .query_row(
            "SELECT entry FROM parked WHERE entity = ?1",
            [entity],
            |row| row.get(0),
        )
        .optional()
        .map_err(unavailable)?;
    entry
        .map(|e| serde_json::from_str(&e).map_err(corrupt))
        .transpose()
}

/// A view's write as rows: encoded before it is queued, so the writer's thread (which every
/// write in the database waits for) only runs the SQL.
struct ViewRows {
    keys: ViewKeys,
    /// Each history entry's sort key and JSON.
    history: Vec<(String, String)>,
    view: String,
    version: i64,
    expected_version: u64,
}

impl ViewRows {
    fn of(write: &ViewWrite) -> Result<ViewRows, ReadModelError> {
        let mut keys = ViewKeys::of(write);
        // The sort keys move into `history`, next to their entries.
        let history = std::mem::take(&mut keys.history_sks)
            .into_iter()
            .zip(&write.history)
            .map(|(sk, entry)| Ok((sk, serde_json::to_string(entry).map_err(corrupt)?)))
            .collect::<Result<Vec<_>, ReadModelError>>()?;
        Ok(ViewRows {
            history,
            view: serde_json::to_string(&write.view).map_err(corrupt)?,
            version: i64::try_from(write.version).map_err(corrupt)?,
            expected_version: write.expected_version,
            keys,
        })
    }
}

/// The view's write: `Ok(Err(Conflict))` when its condition fails, with the history entries
/// written all the same (re-putting an entry is harmless, as with the DynamoDB adapter's
/// separate writes); `Err` when nothing is to be kept.
fn write(tx: &Connection, rows: &ViewRows) -> Result<Result<(), ReadModelError>, ReadModelError> {
    let keys = &rows.keys;
    let pk = &keys.pk;
    // History first, and kept even if the view's condition fails.
    {
        let mut put = tx
            .prepare_cached("INSERT OR REPLACE INTO history (pk, sk, entry) VALUES (?1, ?2, ?3)")
            .map_err(unavailable)?;
        for (sk, entry) in &rows.history {
            put.execute(params![pk, sk, entry]).map_err(unavailable)?;
        }
    }
    let current: Option<i64> = tx
        .prepare_cached("SELECT version FROM views WHERE pk = ?1")
        .and_then(|mut s| s.query_row([pk], |row| row.get(0)).optional())
        .map_err(unavailable)?;
    if current.map_or(0, |v| v as u64) != rows.expected_version {
        return Ok(Err(ReadModelError::Conflict));
    }
    // In place when it exists, as the heads' upsert (write_store.rs).
    tx.prepare_cached(
        "INSERT INTO views (pk, version, view, status_key, rider_key, driver_key,
             created_sk, updated_sk)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
         ON CONFLICT (pk) DO UPDATE SET version = excluded.version, view = excluded.view,
             status_key = excluded.status_key, rider_key = excluded.rider_key,
             driver_key = excluded.driver_key, created_sk = excluded.created_sk,
             updated_sk = excluded.updated_sk",
    )
    .and_then(|mut s| {
        s.execute(params![
            pk,
            rows.version,
            rows.view,
            keys.status_key,
            keys.rider_key,
            keys.driver_key,
            keys.created_sk,
            keys.updated_sk,
        ])
    })
    .map_err(unavailable)?;
    Ok(Ok(()))
}

fn view(conn: &Connection, key: &StreamKey) -> Result<Option<serde_json::Value>, ReadModelError> {
    let pk = key.partition_key();
    let text: Option<String> = conn
        .query_row("SELECT view FROM views WHERE pk = ?1", [&pk], |row| {
            row.get(0)
        })
        .optional()
        .map_err(unavailable)?;
    text.map(|t| view_json(&pk, &t)).transpose()
}

fn list(
    conn: &Connection,
    lookup: &Lookup,
    page: &PageRequest,
) -> Result<Page<serde_json::Value>, ReadModelError> {
    let (column, sort, value) = lookup_key(lookup);
    let start = list_after(page, column, sort, &value)?;
    let limit = page_limit(page);
    // Newest first; the pk breaks ties so that the order, and so paging, is total.
    let mut sql = format!("SELECT pk, {sort}, view FROM views WHERE {column} = ?1");
    let mut args: Vec<SqlValue> = vec![SqlValue::Text(value.clone())];
    if let Some((pk, sort_value)) = start {
        sql.push_str(&format!(" AND ({sort} < ?2 OR ({sort} = ?2 AND pk < ?3))"));
        args.push(SqlValue::Text(sort_value));
        args.push(SqlValue::Text(pk));
    }
    sql.push_str(&format!(
        " ORDER BY {sort} DESC, pk DESC LIMIT {}",
        limit + 1
    ));
    let mut statement = conn.prepare_cached(&sql).map_err(unavailable)?;
    let rows = statement
        .query_map(params_from_iter(args), |row| {
            let pk = row.get::<_, String>(0)?;
            Ok((
                pk.clone(),
                row.get::<_, String>(1)?,
                (pk, row.get::<_, String>(2)?),
            ))
        })
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    let page = list_page(rows, limit, column, sort, &value);
    let items = page
        .items
        .iter()
        .map(|(pk, view)| view_json(pk, view))
        .collect::<Result<_, _>>()?;
    Ok(Page {
        items,
        next_cursor: page.next_cursor,
    })
}

fn history(
    conn: &Connection,
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
        "SELECT sk, entry FROM history WHERE pk = ?1 AND sk >= ?2 AND sk <= ?3
         ORDER BY sk LIMIT ?4"
    } else {
        "SELECT sk, entry FROM history WHERE pk = ?1 AND sk > ?2 AND sk <= ?3
         ORDER BY sk LIMIT ?4"
    };
    let mut statement = conn.prepare_cached(sql).map_err(unavailable)?;
    let rows = statement
        .query_map(params![pk, after, high, (limit + 1) as i64], |row| {
            Ok((row.get::<_, String>(0)?, row.get::<_, String>(1)?))
        })
        .map_err(unavailable)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(unavailable)?;
    let (rows, next_cursor) = history_page(rows, limit, &pk);
    let items = rows
        .iter()
        .map(|(sk, entry)| {
            serde_json::from_str::<HistoryEntry>(entry)
                .map_err(|e| corrupt(format!("history {pk} {sk}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    Ok(Page { items, next_cursor })
}

impl ReadModelStore for Embedded {
    async fn load_views(
        &self,
        keys: &[StreamKey],
    ) -> Result<HashMap<StreamKey, StoredView>, ReadModelError> {
        let keys = keys.to_vec();
        self.with_reader(move |conn| load_views(conn, &keys)).await
    }

    async fn write(&self, w: ViewWrite) -> Result<(), ReadModelError> {
        let rows = ViewRows::of(&w)?;
        self.write(move |conn| write(conn, &rows)).await?
    }

    async fn park(&self, parked: &Parked) -> Result<(), ReadModelError> {
        let parked = parked.clone();
        self.write(move |tx| {
            let entry = match parked_entry(tx, &parked.entity)? {
                Some(mut existing) => {
                    existing.again(&parked);
                    existing
                }
                None => parked,
            };
            tx.execute(
                "INSERT OR REPLACE INTO parked (entity, parked_at, entry) VALUES (?1, ?2, ?3)",
                params![
                    entry.entity,
                    entry.parked_at.to_string(),
                    serde_json::to_string(&entry).map_err(corrupt)?
                ],
            )
            .map(|_| ())
            .map_err(unavailable)
        })
        .await
    }

    async fn parked(&self) -> Result<Vec<Parked>, ReadModelError> {
        self.with_reader(|conn| {
            let mut statement = conn
                .prepare("SELECT entry FROM parked")
                .map_err(unavailable)?;
            let rows = statement
                .query_map([], |row| row.get::<_, String>(0))
                .map_err(unavailable)?;
            let mut all = Vec::new();
            for row in rows {
                all.push(serde_json::from_str(&row.map_err(unavailable)?).map_err(corrupt)?);
            }
            Parked::sort(&mut all);
            Ok(all)
        })
        .await
    }

    async fn parked_entity(&self, entity: &str) -> Result<Option<Parked>, ReadModelError> {
        let entity = entity.to_owned();
        self.read_now(move |conn| parked_entry(conn, &entity)).await
    }

    async fn unpark(&self, entity: &str, seen: u64) -> Result<bool, ReadModelError> {
        let entity = entity.to_owned();
        self.write(move |tx| {
            if parked_entry(tx, &entity)?.is_none_or(|p| p.set_aside != seen) {
                return Ok(false);
            }
            tx.execute("DELETE FROM parked WHERE entity = ?1", [&entity])
                .map_err(unavailable)?;
            Ok(true)
        })
        .await
    }

    async fn attach_positions(
        &self,
        key: &StreamKey,
        positions: &[PositionOf],
    ) -> Result<(), ReadModelError> {
        let pk = key.partition_key();
        let updates = positions
            .iter()
            .map(|p| {
                Ok((
                    history_sk(p.occurred_at, p.version),
                    serde_json::to_string(&p.position).map_err(corrupt)?,
                ))
            })
            .collect::<Result<Vec<_>, ReadModelError>>()?;
        self.write(move |tx| {
            {
                let mut update = tx
                    .prepare_cached(
                        "UPDATE history SET entry = json_set(entry, '$.position', json(?3))
                         WHERE pk = ?1 AND sk = ?2 AND json_extract(entry, '$.position') IS NULL",
                    )
                    .map_err(unavailable)?;
                for (sk, position) in &updates {
                    update
                        .execute(params![pk, sk, position])
                        .map_err(unavailable)?;
                }
            }
            Ok(())
        })
        .await
    }
}

impl ReadModelQueries for Embedded {
    async fn view(&self, key: &StreamKey) -> Result<Option<serde_json::Value>, ReadModelError> {
        let key = key.clone();
        self.read_now(move |conn| view(conn, &key)).await
    }

    async fn list(
        &self,
        lookup: &Lookup,
        page: &PageRequest,
    ) -> Result<Page<serde_json::Value>, ReadModelError> {
        let (lookup, page) = (lookup.clone(), page.clone());
        self.with_reader(move |conn| list(conn, &lookup, &page))
            .await
    }

    async fn history(
        &self,
        key: &StreamKey,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
        page: &PageRequest,
    ) -> Result<Page<HistoryEntry>, ReadModelError> {
        let (key, page) = (key.clone(), page.clone());
        self.with_reader(move |conn| history(conn, &key, from, to, &page))
            .await
    }
}
