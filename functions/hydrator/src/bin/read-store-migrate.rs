//! Direct invocation, once after each deploy that brings a migration (any payload): applies
//! what the Aurora PostgreSQL read store lacks, under the migrations' advisory lock, and
//! answers which ones ran. With the DynamoDB read store there is nothing to apply.

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use serde_json::{json, Value};
use timeline_aws::read_store::ReadStoreSettings;
use timeline_aws::Clients;

#[tokio::main]
async fn main() -> Result<(), Error> {
    timeline_http::init_logging();
    let clients = Clients::from_env().await;
    let pool = ReadStoreSettings::from_env()
        .and_then(|settings| settings.postgres_pool(&clients))
        .map_err(timeline_http::start_failed)?;
    let pool = &pool;
    run(service_fn(move |_: LambdaEvent<Value>| async move {
        let Some(pool) = pool else {
            return Ok::<_, Error>(json!({ "read_store": "dynamodb", "applied": [] }));
        };
        let applied = timeline_postgres::migrate(pool).await?;
        Ok(json!({
            "read_store": "aurora-postgresql",
            "applied": applied,
            "schema": timeline_postgres::migrations::REQUIRED,
        }))
    }))
    .await
}
