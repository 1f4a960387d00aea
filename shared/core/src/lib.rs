//! The pure core of the timeline: event envelope and codec, the aggregate abstraction,
//! hydration, the ports and the write protocol, and the two domains (rides, videos).
//! No AWS, tokio or HTTP dependency.

pub mod aggregate;
pub mod archive;
pub mod codec;
pub mod envelope;
pub mod fold;
pub mod hydrate;
pub mod log_source;
pub mod memory;
pub mod park;
pub mod ports;
pub mod processor;
pub mod pump;
pub mod read_ports;
pub mod replay;
pub mod retry;
pub mod ride;
pub mod sequence;
pub mod shards;
pub mod storable;
pub mod testkit;
pub mod time;
pub mod timetravel;
pub mod video;
pub mod views;
pub mod write;

pub use aggregate::{Aggregate, DomainError, DomainEvent, RefusalKind};
pub use envelope::{CommitRecord, EventEnvelope, Metadata, StreamKey};
pub use time::Timestamp;
