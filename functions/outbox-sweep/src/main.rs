//! Builds the DynamoDB and Kinesis clients once and runs [`SweepHandler`] on each scheduled
//! (EventBridge) invocation.

use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use outbox_sweep::SweepHandler;
use timeline_aws::config::{required, EVENT_STREAM_NAME, WRITE_MODEL_TABLE};
use timeline_aws::{Clients, DynamoWriteStore, KinesisEventLog};
use timeline_core::ports::SystemClock;

#[tokio::main]
async fn main() -> Result<(), Error> {
    timeline_http::init_logging();
    let stream = required(EVENT_STREAM_NAME, "Kinesis event stream")?;
    let table = required(WRITE_MODEL_TABLE, "DynamoDB write-model table")?;
    let clients = Clients::from_env().await;
    let handler = SweepHandler::new(
        DynamoWriteStore::new(clients.dynamodb, table),
        KinesisEventLog::new(clients.kinesis, stream),
        SystemClock,
    );
    let handler = &handler;
    run(service_fn(move |_: LambdaEvent<CloudWatchEvent>| async move {
        Ok::<_, Error>(handler.handle().await?)
    }))
    .await
}
