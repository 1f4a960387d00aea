//! Direct invocation: `{"mode": "state" | "history", ...}`; reads only. The other modes are
//! the `maintenance` function's.
// The replay futures nest deeply (source, archive stream, processor).
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hydrator::wiring::serve_direct(|hydrator, request, deadline| {
        Box::pin(hydrator.travel(request, deadline))
    })
    .await
}
