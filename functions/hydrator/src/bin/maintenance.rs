//! Direct invocation, operators only: `{"mode": "rebuild" | "verify" | "parked" | "redrive",
//! ...}`. The read models' maintenance: the only hydrator binary that writes them.
// The replay futures nest deeply (source, archive stream, processor).
#![recursion_limit = "256"]

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    hydrator::wiring::serve_direct(|hydrator, request, deadline| {
        Box::pin(hydrator.maintain(request, deadline))
    })
    .await
}
