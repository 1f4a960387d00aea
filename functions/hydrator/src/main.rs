//! Direct invocation: `{"mode": "state" | "history" | "rebuild" | "verify", ...}`.
// The replay futures nest deeply (source, archive stream, processor).
#![recursion_limit = "256"]

use hydrator::HydratorRequest;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};

#[tokio::main]
async fn main() -> Result<(), Error> {
    timeline_http::init_logging();
    let hydrator = hydrator::wiring::hydrator_from_env().await?;
    let hydrator = &hydrator;
    run(service_fn(
        move |event: LambdaEvent<HydratorRequest>| async move {
            Ok::<_, Error>(hydrator.handle(event.payload).await?)
        },
    ))
    .await
}
