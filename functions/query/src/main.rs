//! Opens the read store once (DynamoDB, or Aurora PostgreSQL with its schema checked) and
//! serves API Gateway `GET` requests with [`QueryApi`].

use lambda_http::{run, service_fn, Error, Request};
use query::QueryApi;
use timeline_aws::Clients;

#[tokio::main]
async fn main() -> Result<(), Error> {
    timeline_http::init_logging();
    let clients = Clients::from_env().await;
    let store = timeline_aws::read_store::open_from_env(&clients)
        .await
        .map_err(timeline_http::start_failed)?;
    let api = QueryApi::new(store);
    let api = &api;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(timeline_http::AsIs(api.handle(req).await))
    }))
    .await
}
