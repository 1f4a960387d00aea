//! Builds the DynamoDB client once and projects Kinesis batches with [`ProcessorHandler`].

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use processor::{KinesisBatch, ProcessorHandler};
use timeline_aws::config::{required, READ_MODEL_TABLE};
use timeline_aws::read_models::DynamoReadModels;
use timeline_aws::Clients;
use timeline_core::ports::SystemClock;

#[tokio::main]
async fn main() -> Result<(), Error> {
    timeline_http::init_logging();
    let table = required(READ_MODEL_TABLE, "DynamoDB read-model table")?;
    let clients = Clients::from_env().await;
    let handler =
        ProcessorHandler::new(DynamoReadModels::new(clients.dynamodb, table), SystemClock);
    let handler = &handler;
    run(service_fn(
        move |event: LambdaEvent<KinesisBatch>| async move {
            Ok::<_, Error>(handler.handle(event.payload).await)
        },
    ))
    .await
}
