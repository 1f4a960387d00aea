//! The read store a function was deployed with (the template's `ReadStore`), opened once at
//! start: the DynamoDB read-model table, or Aurora PostgreSQL through RDS Proxy with IAM
//! authentication over TLS. A PostgreSQL store whose schema is older than this build needs is
//! refused at start, with the way to migrate it.

use crate::config::{required, Clients, ConfigError, READ_MODEL_TABLE};
use crate::rds_auth::{AuthTokenError, IamPassword};
use crate::read_models::DynamoReadModels;
use std::sync::Arc;
use timeline_postgres::{ConnectOptions, PgReadModels, ReadStore};

/// `dynamodb` (the default) or `aurora-postgresql`, as the template's parameter.
pub const READ_STORE: &str = "READ_STORE";
/// `postgres://user@host:port/database?sslmode=require` (with Aurora).
pub const READ_STORE_URL: &str = "READ_STORE_URL";
/// `iam`: a token per connection signed with the function's role (the template's choice);
/// unset: the URL's own password, if any (a local or self-managed server).
pub const READ_STORE_AUTH: &str = "READ_STORE_AUTH";
/// PEM roots trusted besides the system's (the RDS CA bundle, to reach Aurora directly).
pub const READ_STORE_CA_FILE: &str = "READ_STORE_CA_FILE";

/// Where the read models are, as the environment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReadStoreSettings {
    DynamoDb {
        table: String,
    },
    AuroraPostgres {
        url: String,
        /// A token per connection (IAM authentication) instead of the URL's password.
        iam: bool,
        /// Roots trusted besides the system's, PEM.
        extra_roots_pem: Option<Vec<u8>>,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Connect(#[from] timeline_postgres::ConnectError),
    #[error(transparent)]
    Token(#[from] AuthTokenError),
    #[error("cannot read {READ_STORE_CA_FILE} ({0}): {1}")]
    CaFile(String, std::io::Error),
    #[error("the read store is not ready: {0}")]
    Schema(#[from] timeline_postgres::SchemaError),
    #[error("cannot reach the read store: {0}")]
    Unreachable(String),
}

impl ReadStoreSettings {
    /// From `READ_STORE` (anything but `dynamodb` or `aurora-postgresql` is refused) and the
    /// variables that store needs.
    pub fn from_env() -> Result<Self, OpenError> {
        match std::env::var(READ_STORE).as_deref() {
            Err(_) | Ok("") | Ok("dynamodb") => Ok(ReadStoreSettings::DynamoDb {
                table: required(READ_MODEL_TABLE, "DynamoDB read-model table")?,
            }),
            Ok("aurora-postgresql") => {
                let iam = match std::env::var(READ_STORE_AUTH).as_deref() {
                    Err(_) | Ok("") => false,
                    Ok("iam") => true,
                    Ok(_) => {
                        return Err(ConfigError::Invalid(READ_STORE_AUTH, "iam or unset").into())
                    }
                };
                let extra_roots_pem = match std::env::var(READ_STORE_CA_FILE) {
                    Ok(path) => Some(std::fs::read(&path).map_err(|e| OpenError::CaFile(path, e))?),
                    Err(_) => None,
                };
                Ok(ReadStoreSettings::AuroraPostgres {
                    url: required(READ_STORE_URL, "PostgreSQL read store")?,
                    iam,
                    extra_roots_pem,
                })
            }
            Ok(_) => Err(ConfigError::Invalid(READ_STORE, "dynamodb or aurora-postgresql").into()),
        }
    }

    /// A pool to the PostgreSQL store, authenticated as the settings say (None for DynamoDB).
    pub fn postgres_pool(
        &self,
        clients: &Clients,
    ) -> Result<Option<deadpool_postgres::Pool>, OpenError> {
        match self {
            ReadStoreSettings::DynamoDb { .. } => Ok(None),
            ReadStoreSettings::AuroraPostgres {
                url,
                iam,
                extra_roots_pem,
            } => Ok(Some(postgres_pool(clients, url, *iam, extra_roots_pem)?)),
        }
    }

    /// The read store, its schema checked.
    pub async fn open(&self, clients: &Clients) -> Result<ReadStore<DynamoReadModels>, OpenError> {
        match self {
            ReadStoreSettings::DynamoDb { table } => Ok(ReadStore::Native(DynamoReadModels::new(
                clients.dynamodb().clone(),
                table,
            ))),
            ReadStoreSettings::AuroraPostgres {
                url,
                iam,
                extra_roots_pem,
            } => {
                let pool = postgres_pool(clients, url, *iam, extra_roots_pem)?;
                timeline_postgres::check_schema(&pool).await?;
                let store = PgReadModels::connect(pool)
                    .await
                    .map_err(|e| OpenError::Unreachable(e.to_string()))?;
                Ok(ReadStore::Postgres(store))
            }
        }
    }
}

fn postgres_pool(
    clients: &Clients,
    url: &str,
    iam: bool,
    extra_roots_pem: &Option<Vec<u8>>,
) -> Result<deadpool_postgres::Pool, OpenError> {
    let password = match iam {
        true => Some(Arc::new(IamPassword::from_sdk(&clients.sdk)?) as _),
        false => None,
    };
    let options = ConnectOptions {
        extra_roots_pem: extra_roots_pem.clone(),
        password,
        connect_timeout: None,
    };
    Ok(timeline_postgres::pool_with(url, options)?)
}

/// The read store this function serves from, as its environment says, its schema checked.
pub async fn open_from_env(clients: &Clients) -> Result<ReadStore<DynamoReadModels>, OpenError> {
    ReadStoreSettings::from_env()?.open(clients).await
}
