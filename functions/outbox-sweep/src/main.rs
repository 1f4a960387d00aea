//! Scheduled (EventBridge) sweep: publishes outbox events that a failed publish left behind.
//! Safe to run at any time; each record still carries the entity's whole pending run.

use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use timeline_aws::config::{required, EVENT_STREAM_NAME, WRITE_MODEL_TABLE};
use timeline_aws::{Clients, DynamoWriteStore, KinesisEventLog};
use timeline_core::ports::SystemClock;
use timeline_engine::write::{CommandService, SweepReport};

/// Heads examined per invocation; the schedule runs again soon after.
const BATCH: usize = 500;

#[tokio::main]
async fn main() -> Result<(), Error> {
    timeline_http::init_logging();
    let stream = required(EVENT_STREAM_NAME, "Kinesis event stream")?;
    let table = required(WRITE_MODEL_TABLE, "DynamoDB write-model table")?;
    let clients = Clients::from_env().await;
    let service = CommandService::new(
        DynamoWriteStore::new(clients.dynamodb, table),
        KinesisEventLog::new(clients.kinesis, stream),
        SystemClock,
    );
    let service = &service;
    run(service_fn(
        move |_: LambdaEvent<CloudWatchEvent>| async move {
            let report: SweepReport = service.sweep(BATCH).await?;
            tracing::info!(
                examined = report.examined,
                published = report.published,
                failed = report.failed,
                "outbox sweep"
            );
            Ok::<_, Error>(report)
        },
    ))
    .await
}
