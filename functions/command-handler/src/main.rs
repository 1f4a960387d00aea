//! Builds the AWS clients once and serves API Gateway requests with [`CommandApi`].

use command_handler::CommandApi;
use lambda_http::{run, service_fn, Error, Request};
use timeline_aws::config::publish_mode;
use timeline_aws::{write_ports, Clients};
use timeline_core::ports::SystemClock;
use timeline_core::write::WriteConfig;

#[tokio::main]
async fn main() -> Result<(), Error> {
    timeline_http::init_logging();
    let (store, log) = write_ports(&Clients::from_env().await)?;
    // With `PublishMode: stream` the log is never written from here (the relay does it);
    // the stream name stays for the inline mode.
    let config = WriteConfig {
        publish: publish_mode()?,
        ..WriteConfig::default()
    };
    let api = CommandApi::with_config(store, log, SystemClock, config);
    let api = &api;
    run(service_fn(move |req: Request| async move {
        Ok::<_, Error>(timeline_http::AsIs(api.handle(req).await))
    }))
    .await
}
