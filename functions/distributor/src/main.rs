//! Builds the EventBridge client once and distributes Kinesis batches with
//! [`DistributorHandler`].

use distributor::DistributorHandler;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use timeline_aws::config::{required, EVENT_BUS_NAME};
use timeline_aws::event_bus::EventBridgeBus;
use timeline_aws::kinesis_batch::KinesisBatch;
use timeline_aws::Clients;
use timeline_engine::distribute::Distributor;

#[tokio::main]
async fn main() -> Result<(), Error> {
    timeline_http::init_logging();
    let bus = required(EVENT_BUS_NAME, "EventBridge bus")?;
    let clients = Clients::from_env().await;
    let handler = DistributorHandler::new(Distributor::new(EventBridgeBus::new(
        clients.eventbridge().clone(),
        bus,
    )));
    let handler = &handler;
    run(service_fn(
        move |event: LambdaEvent<KinesisBatch>| async move {
            Ok::<_, Error>(handler.handle(event.payload).await)
        },
    ))
    .await
}
