//! One shard's batches, shared by the processor's benchmarks.

use timeline_core::codec::encode_record;
use timeline_core::ports::ReadModelStore;
use timeline_core::scenario::sample_ride;
use timeline_core::CommitRecord;
use timeline_core::Timestamp;
use timeline_engine::projection::{IncomingRecord, Processor};

pub const BATCH: usize = 100;

pub fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// `batches` batches of a shard's records: each ride's versions in order, 80 rides a batch
/// (20 of them with two records), every ride seen in several batches.
pub fn shard(batches: usize) -> Vec<Vec<IncomingRecord>> {
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

/// Records per second of `processor` through `batches`, one batch after another (none may
/// fail or park).
pub async fn records_per_second<R: ReadModelStore>(
    processor: &Processor<R>,
    batches: &[Vec<IncomingRecord>],
) -> f64 {
    let now = Timestamp::from_millis(0).unwrap();
    let started = std::time::Instant::now();
    let mut records = 0;
    for batch in batches {
        let outcome = processor.process(batch, now).await;
        assert_eq!(outcome.first_failure, None, "{:?}", outcome.failures);
        assert!(outcome.parked.is_empty());
        records += batch.len();
    }
    records as f64 / started.elapsed().as_secs_f64()
}
