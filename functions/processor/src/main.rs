//! Opens the read store once (DynamoDB, or Aurora PostgreSQL with its schema checked: an
//! older schema fails the start) and projects Kinesis batches with [`ProcessorHandler`].

use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use processor::{KinesisBatch, ProcessorHandler};
use timeline_aws::Clients;
use timeline_core::ports::SystemClock;

// See the workspace manifest: allocation is most of what a batch costs besides parsing.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> Result<(), Error> {
    timeline_http::init_logging();
    let clients = Clients::from_env().await;
    let store = timeline_aws::read_store::open_from_env(&clients)
        .await
        .map_err(timeline_http::start_failed)?;
    let handler = ProcessorHandler::new(store, SystemClock);
    let handler = &handler;
    run(service_fn(
        move |event: LambdaEvent<KinesisBatch>| async move {
            Ok::<_, Error>(handler.handle(event.payload).await)
        },
    ))
    .await
}
