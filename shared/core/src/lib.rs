//! The core of the timeline: what the system is, with no I/O. The event envelope and its
//! codec, the aggregate abstraction and the two domains (rides, videos) with their read
//! models, hydration, time travel's pure folds, the write protocol's decision, and the ports
//! every effect goes through. No AWS, tokio, futures or HTTP crate: the machinery that runs
//! effects is `timeline-engine`.

pub mod access;
pub mod aggregate;
pub mod codec;
pub mod envelope;
pub mod hydrate;
pub mod integration;
pub mod park;
pub mod ports;
pub mod registry;
pub mod ride;
pub mod scenario;
pub mod shards;
pub mod storable;
pub mod time;
pub mod timetravel;
pub mod video;
pub mod views;
pub mod write;

pub use aggregate::{Aggregate, DomainError, DomainEvent, RefusalKind};
pub use envelope::{CommitRecord, EventEnvelope, Metadata, StreamKey};
pub use registry::{dispatch, Entity, Kind, Unregistered, Visitor};
pub use time::{Deadline, Timestamp};
