//! Builds the AWS clients once and serves API Gateway `GET` requests with [`QueryApi`].

use lambda_http::{run, service_fn, Error, Request};
use query::QueryApi;
use timeline_aws::config::{required, READ_MODEL_TABLE};
use timeline_aws::read_models::DynamoReadModels;
use timeline_aws::Clients;

#[tokio::main]
async fn main() -> Result<(), Error> {
    timeline_http::init_logging();
    let table = required(READ_MODEL_TABLE, "DynamoDB read-model table")?;
    let clients = Clients::from_env().await;
    let api = QueryApi::new(DynamoReadModels::new(clients.dynamodb, table));
    let api = &api;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(api.handle(req).await)
    }))
    .await
}
