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

use std::time::{Duration, Instant};
use timeline_core::codec::encode_record;
use timeline_core::scenario::sample_ride;
use timeline_core::CommitRecord;
use timeline_core::Timestamp;
use timeline_engine::memory::MemoryReadModels;
use timeline_engine::projection::{IncomingRecord, Processor, DEFAULT_CONCURRENCY};
use timeline_engine::testing::Latency;

const BATCH: usize = 100;
const KINESIS_RECORDS_PER_SHARD: f64 = 1_000.0;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `batches` batches of a shard's records: each ride's versions in order, 80 rides a batch
/// (20 of them with two records), every ride seen in several batches.
fn shard(batches: usize) -> Vec<Vec<IncomingRecord>> {
    let mut next_version = std::collections::HashMap::<String, u64>::new();
    let mut seq = 0u64;
    (0..batches)
        .map(|b| {
            let mut batch = Vec::with_capacity(BATCH);
            for slot in 0..BATCH {
                // 80 rides a batch: slots 80..100 repeat the first 20.
                let ride = format!("ride-{}", (b * 40 + slot % 80) % 400);
                let version = next_version.entry(ride.clone()).or_insert(0);
                *version += 1;
                let event = sample_ride(&ride, *version);
                seq += 1;
                batch.push(IncomingRecord {
                    sequence_number: format!("{seq:056}"),
                    partition_key: event.stream_key().partition_key(),
                    data: encode_record(&CommitRecord::new(vec![event]).unwrap()),
                    shard_id: Some("shardId-000000000000".into()),
                    arrival: Some(Timestamp::from_millis(0).unwrap()),
                });
            }
            batch
        })
        .collect()
}

async fn measure(concurrency: usize, latency: Duration, batches: &[Vec<IncomingRecord>]) -> f64 {
    let store = Latency {
        inner: MemoryReadModels::default(),
        per_call: latency,
    };
    let processor = Processor::new(store).with_concurrency(concurrency);
    let now = Timestamp::from_millis(0).unwrap();
    let started = Instant::now();
    let mut records = 0;
    for batch in batches {
        let outcome = processor.process(batch, now).await;
        assert_eq!(outcome.first_failure, None, "{:?}", outcome.failures);
        assert!(outcome.parked.is_empty());
        records += batch.len();
    }
    records as f64 / started.elapsed().as_secs_f64()
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
