//! The engine both domains share: the machinery that runs the core's decisions against the
//! ports. The write service (commit, publish, settle, sweep, the stream relay), the projection of stream
//! batches into read models with parking and redrive, and the log machinery (the archive's
//! format and keys, the pump that archives the stream, the log source that reads an entity
//! or everything back, replays, sequence numbers), with retries and deadlines. The in-memory
//! ports are here too, for tests and tools. Adapters (`timeline-aws`, `timeline-embedded`)
//! implement the core's ports; functions wire them to this.

pub mod archive;
pub mod distribute;
pub mod fold;
pub mod log_source;
pub mod memory;
pub mod park;
pub mod projection;
pub mod pump;
pub mod relay;
pub mod replay;
pub mod retry;
pub mod sequence;
pub mod testing;
pub mod write;

mod record_scan;
