//! The schema, as numbered migrations kept in `migrations/` and compiled in. [`migrate`]
//! applies the ones a database lacks, each in its own transaction (PostgreSQL's DDL is
//! transactional: a failed migration leaves nothing behind), under an advisory lock so two
//! migrators never race. A migration that has run is never edited: each one's SHA-256 is
//! recorded, and a database whose recorded migration differs from the file is refused.

use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};

pub struct Migration {
    pub version: i32,
    pub name: &'static str,
    pub sql: &'static str,
}

/// Every migration, in order.
pub const MIGRATIONS: &[Migration] = &[
    Migration {
        version: 1,
        name: "read_models",
        sql: include_str!("../migrations/0001_read_models.sql"),
    },
    Migration {
        version: 2,
        name: "reports",
        sql: include_str!("../migrations/0002_reports.sql"),
    },
];

/// The schema this code needs: the processor and the query API refuse an older one.
pub const REQUIRED: i32 = 2;

/// Any number: the advisory lock migrators take.
const LOCK: i64 = 0x7469_6d65_6c69_6e65;

#[derive(Debug, thiserror::Error)]
pub enum SchemaError {
    #[error("the read store is at schema version {have}, this code needs {need}: run `timeline-local migrate --read-store <url>` (on AWS, the stack's migrate function)")]
    Behind { have: i32, need: i32 },
    #[error("migration {version} ({name}) was edited after it ran: a migration that has run is never changed, add a new one")]
    Edited { version: i32, name: &'static str },
    #[error("postgres: {0}")]
    Unavailable(String),
}

fn unavailable(e: impl std::error::Error) -> SchemaError {
    SchemaError::Unavailable(crate::connect::describe(&e))
}

fn checksum(sql: &str) -> String {
    Sha256::digest(sql.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

const LEDGER: &str = "CREATE TABLE IF NOT EXISTS schema_migrations (
    version integer PRIMARY KEY,
    name text NOT NULL,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)";

/// Applies what the database lacks; returns the versions applied now.
pub async fn migrate(pool: &Pool) -> Result<Vec<i32>, SchemaError> {
    let mut client = pool.get().await.map_err(unavailable)?;
    let mut applied = Vec::new();
    for migration in MIGRATIONS {
        let tx = client.transaction().await.map_err(unavailable)?;
        tx.execute("SELECT pg_advisory_xact_lock($1)", &[&LOCK])
            .await
            .map_err(unavailable)?;
        tx.batch_execute(LEDGER).await.map_err(unavailable)?;
        let recorded = tx
            .query_opt(
                "SELECT checksum FROM schema_migrations WHERE version = $1",
                &[&migration.version],
            )
            .await
            .map_err(unavailable)?;
        match recorded {
            Some(row) => {
                if row.get::<_, String>(0) != checksum(migration.sql) {
                    return Err(SchemaError::Edited {
                        version: migration.version,
                        name: migration.name,
                    });
                }
            }
            None => {
                tx.batch_execute(migration.sql).await.map_err(unavailable)?;
                tx.execute(
                    "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                    &[
                        &migration.version,
                        &migration.name,
                        &checksum(migration.sql),
                    ],
                )
                .await
                .map_err(unavailable)?;
                applied.push(migration.version);
            }
        }
        tx.commit().await.map_err(unavailable)?;
    }
    if !applied.is_empty() {
        tracing::info!(?applied, "read store migrated");
    }
    Ok(applied)
}

/// Refuses a database older than [`REQUIRED`] (or one whose migrations were edited), with
/// the command that fixes it.
pub async fn check_schema(pool: &Pool) -> Result<(), SchemaError> {
    let client = pool.get().await.map_err(unavailable)?;
    let exists = client
        .query_one("SELECT to_regclass('schema_migrations') IS NOT NULL", &[])
        .await
        .map_err(unavailable)?
        .get::<_, bool>(0);
    let rows = if exists {
        client
            .query("SELECT version, checksum FROM schema_migrations", &[])
            .await
            .map_err(unavailable)?
    } else {
        Vec::new()
    };
    let recorded: std::collections::HashMap<i32, String> =
        rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    for migration in MIGRATIONS {
        match recorded.get(&migration.version) {
            Some(sum) if *sum != checksum(migration.sql) => {
                return Err(SchemaError::Edited {
                    version: migration.version,
                    name: migration.name,
                })
            }
            Some(_) => {}
            None if migration.version <= REQUIRED => {
                return Err(SchemaError::Behind {
                    have: recorded.keys().copied().max().unwrap_or(0),
                    need: REQUIRED,
                })
            }
            None => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_in_order_and_the_code_needs_the_last() {
        let versions: Vec<i32> = MIGRATIONS.iter().map(|m| m.version).collect();
        assert_eq!(versions, (1..=MIGRATIONS.len() as i32).collect::<Vec<_>>());
        assert_eq!(REQUIRED, MIGRATIONS.len() as i32);
    }

    #[test]
    fn a_migrations_file_name_carries_its_number_and_name() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        let mut files: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        let expected: Vec<String> = MIGRATIONS
            .iter()
            .map(|m| format!("{:04}_{}.sql", m.version, m.name))
            .collect();
        assert_eq!(files, expected, "every file is listed, in order");
    }
}
