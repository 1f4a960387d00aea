//! The time-travel routes behind API Gateway.
// The replay futures nest deeply (source, archive stream, processor).
#![recursion_limit = "256"]

use lambda_http::{run, service_fn, Error, Request};

#[tokio::main]
async fn main() -> Result<(), Error> {
    let hydrator = hydrator::wiring::start().await?;
    let hydrator = &hydrator;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(timeline_http::AsIs(hydrator.handle_http(req).await))
    }))
    .await
}
