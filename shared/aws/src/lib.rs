//! AWS adapters for the timeline ports: the write model in DynamoDB, the event log on
//! Kinesis, configuration from the environment, and the resource bootstrap used locally.

pub mod archive;
pub mod config;
pub mod event_bus;
pub mod event_log;
pub mod event_source;
pub mod https_client;
pub mod keys;
pub mod kinesis_batch;
pub mod metrics;
pub mod pump;
pub mod rds_auth;
pub mod read_models;
pub mod read_store;
pub mod resources;
pub mod stream_reader;
pub mod table_stream;
pub mod write_store;

pub use config::{Clients, ResourceNames};
pub use event_log::KinesisEventLog;
pub use write_store::DynamoWriteStore;

/// The write side's ports, named by the environment as the template passes them: the
/// write-model table and the event stream (the command handler, the sweep, the relay).
pub fn write_ports(
    clients: &Clients,
) -> Result<(DynamoWriteStore, KinesisEventLog), config::ConfigError> {
    use config::{required, EVENT_STREAM_NAME, WRITE_MODEL_TABLE};
    let stream = required(EVENT_STREAM_NAME, "Kinesis event stream")?;
    let table = required(WRITE_MODEL_TABLE, "DynamoDB write-model table")?;
    Ok((
        DynamoWriteStore::new(clients.dynamodb().clone(), table),
        KinesisEventLog::new(clients.kinesis().clone(), stream),
    ))
}
