//! Direct invocation: `{"mode": "state" | "history" | "rebuild" | "verify", ...}`.
// The replay futures nest deeply (source, archive stream, processor).
#![recursion_limit = "256"]

use hydrator::HydratorRequest;
use lambda_runtime::{run, service_fn, Error, LambdaEvent};
use std::time::Duration;
use timeline_core::time::Deadline;

/// Kept back from the invocation's deadline: a rebuild stops cleanly and reports where to
/// resume, instead of being killed mid-write.
const STOP_MARGIN: Duration = Duration::from_secs(10);

#[tokio::main]
async fn main() -> Result<(), Error> {
    timeline_http::init_logging();
    let hydrator = hydrator::wiring::hydrator_from_env()
        .await
        .map_err(timeline_http::start_failed)?;
    let hydrator = &hydrator;
    run(service_fn(
        move |event: LambdaEvent<HydratorRequest>| async move {
            let deadline = Deadline::lambda(event.context.deadline, STOP_MARGIN, Duration::MAX);
            Ok::<_, Error>(hydrator.handle(event.payload, &deadline).await?)
        },
    ))
    .await
}
