//! Builds the AWS clients once and serves API Gateway requests with [`CommandApi`].

use command_handler::CommandApi;
use lambda_http::{run, service_fn, Error, Request};
use timeline_aws::{Clients, DynamoWriteStore, KinesisEventLog, ResourceNames};
use timeline_core::ports::SystemClock;

#[tokio::main]
async fn main() -> Result<(), Error> {
    timeline_http::init_logging();
    let names = ResourceNames::from_env()?;
    let clients = Clients::from_env().await;
    let api = CommandApi::new(
        DynamoWriteStore::new(clients.dynamodb, names.write_model_table),
        KinesisEventLog::new(clients.kinesis, names.event_stream),
        SystemClock,
    );
    let api = &api;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(api.handle(req).await)
    }))
    .await
}
