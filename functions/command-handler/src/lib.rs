//! The command-handler Lambda: API Gateway (REST proxy) -> decide -> DynamoDB -> Kinesis.

pub mod handler;
pub mod request;
pub mod routes;

pub use handler::CommandApi;
