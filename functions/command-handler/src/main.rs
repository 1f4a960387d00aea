//! Builds the AWS clients once and serves API Gateway requests with [`CommandApi`].

use command_handler::CommandApi;
use lambda_http::{run, service_fn, Error, Request};
use timeline_aws::config::{required, EVENT_STREAM_NAME, WRITE_MODEL_TABLE};
use timeline_aws::{Clients, DynamoWriteStore, KinesisEventLog};
use timeline_core::ports::SystemClock;

#[tokio::main]
async fn main() -> Result<(), Error> {
    timeline_http::init_logging();
    let stream = required(EVENT_STREAM_NAME, "Kinesis event stream")?;
    let table = required(WRITE_MODEL_TABLE, "DynamoDB write-model table")?;
    let clients = Clients::from_env().await;
    let api = CommandApi::new(
        DynamoWriteStore::new(clients.dynamodb, table),
        KinesisEventLog::new(clients.kinesis, stream),
        SystemClock,
    );
    let api = &api;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(api.handle(req).await)
    }))
    .await
}
