//! Builds the DynamoDB and Kinesis clients once and runs [`SweepHandler`] on each scheduled
//! (EventBridge) invocation.

use aws_lambda_events::event::cloudwatch_events::CloudWatchEvent;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use outbox_sweep::SweepHandler;
use timeline_aws::{write_ports, Clients};
use timeline_core::ports::SystemClock;

#[tokio::main]
async fn main() -> Result<(), Error> {
    timeline_http::init_logging();
    let (store, log) = write_ports(&Clients::from_env().await)?;
    let handler = SweepHandler::new(store, log, SystemClock);
    let handler = &handler;
    run(service_fn(move |_: LambdaEvent<CloudWatchEvent>| async move {
        Ok::<_, Error>(handler.handle().await?)
    }))
    .await
}
