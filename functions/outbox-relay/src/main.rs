//! Builds the DynamoDB and Kinesis clients once and relays each batch of the write-model
//! table's stream with [`RelayHandler`].

use aws_lambda_events::event::dynamodb::Event;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use outbox_relay::RelayHandler;
use timeline_aws::{write_ports, Clients};
use timeline_core::ports::SystemClock;

#[tokio::main]
async fn main() -> Result<(), Error> {
    timeline_http::init_logging();
    let (store, log) = write_ports(&Clients::from_env().await)?;
    let handler = RelayHandler::new(store, log, SystemClock);
    let handler = &handler;
    run(service_fn(move |event: LambdaEvent<Event>| async move {
        Ok::<_, Error>(handler.handle(&event.payload).await)
    }))
    .await
}
