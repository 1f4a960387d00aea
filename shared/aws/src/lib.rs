//! AWS adapters for the timeline ports: the write model in DynamoDB, the event log on
//! Kinesis, configuration from the environment, and the resource bootstrap used locally.

pub mod archive;
pub mod config;
pub mod event_bus;
pub mod event_log;
pub mod event_source;
pub mod keys;
pub mod kinesis_batch;
pub mod metrics;
pub mod pump;
pub mod read_models;
pub mod resources;
pub mod stream_reader;
pub mod write_store;

pub use config::{Clients, ResourceNames};
pub use event_log::KinesisEventLog;
pub use write_store::DynamoWriteStore;
