//! The processor's records per second on one shard, against read models whose every call
//! takes a DynamoDB round trip (5 ms by default), side by side with the baseline of one
//! entity written after another, and with what a Kinesis shard takes in (1,000 records a
//! second). One shard's batches reach the processor one at a time (ParallelizationFactor 1;
//! the template's 2 doubles it), so records per second per shard is batch size over the
//! time of one batch.
//!
//! A batch of 100 records is what a shard under load delivers: some rides booked, most
//! records the next step of a ride already projected, a few rides with two records in the
//! batch (coalesced into one write).
//!
//! Run: `cargo bench -p processor --bench throughput` (or `infra/bench.sh processor`).
//! `PROCESSOR_LATENCY_MS` (default 5) and `PROCESSOR_BATCHES` (default 20) tune it.

use std::time::Duration;
use timeline_engine::memory::MemoryReadModels;
use timeline_engine::projection::{IncomingRecord, Processor, DEFAULT_CONCURRENCY};
use timeline_engine::testing::Latency;

#[path = "shard.rs"]
mod shard;
use shard::{env_or, shard, BATCH};

const KINESIS_RECORDS_PER_SHARD: f64 = 1_000.0;

async fn measure(concurrency: usize, latency: Duration, batches: &[Vec<IncomingRecord>]) -> f64 {
    let store = Latency {
        inner: MemoryReadModels::default(),
        per_call: latency,
    };
    let processor = Processor::new(store).with_concurrency(concurrency);
    shard::records_per_second(&processor, batches).await
}

#[tokio::main]
async fn main() {
    let latency = Duration::from_millis(env_or("PROCESSOR_LATENCY_MS", 5));
    let batches = shard(env_or("PROCESSOR_BATCHES", 20) as usize);
    println!(
        "processor, one shard, batches of {BATCH} records, {} ms per read-model call:",
        latency.as_millis()
    );
    println!("{:<42} {:>14}", "", "records/s");
    let sequential = measure(1, latency, &batches).await;
    println!(
        "{:<42} {:>14.0}",
        "baseline: one entity after another", sequential
    );
    for n in [8, DEFAULT_CONCURRENCY] {
        let label = format!(
            "{n} entities at once{}",
            if n == DEFAULT_CONCURRENCY {
                " (default)"
            } else {
                ""
            }
        );
        println!("{label:<42} {:>14.0}", measure(n, latency, &batches).await);
    }
    println!(
        "{:<42} {:>14.0}",
        "what one Kinesis shard takes in", KINESIS_RECORDS_PER_SHARD
    );
}
