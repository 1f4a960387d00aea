//! The processor's own CPU: events per second on one core folding Kinesis batches, exactly as
//! Lambda hands them over (JSON, base64 data), into view updates, with the store's calls
//! stubbed (views kept in a map, history and writes dropped), next to the baseline of only
//! decoding the same Lambda events, in one run. The aim: at least 200,000 events a second, so
//! that the Lambda's CPU is never what limits a shard (1,000 records a second).
//!
//! Run: `cargo bench -p processor --bench in_process` (or `infra/bench.sh processor`).
//! `PROCESSOR_BATCHES` (default 2000) sets the batches of 100 records.

use processor::{KinesisBatch, ProcessorHandler};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;
use timeline_aws::stream_reader::StreamRecord;
use timeline_core::ports::{
    Parked, PositionOf, ReadModelError, ReadModelStore, StoredView, SystemClock, ViewWrite,
};
use timeline_core::StreamKey;
use timeline_testkit::kinesis_event_json;

// The shard's batches; its timing helper is the other benchmarks'.
#[path = "shard.rs"]
#[allow(dead_code)]
mod shard;
use shard::{env_or, shard, BATCH};

const AIM: f64 = 200_000.0;

// The function's own allocator (its main.rs), so the figure is the deployed binary's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// A read store without I/O: the latest view of each entity in a map, everything else dropped.
/// A load hands the view over rather than copying it (a real store decodes a fresh one,
/// which is the store's cost, not the processor's); every batch here writes each entity it
/// loads, and a view lost on the way would come back as a gap, which the run asserts against.
#[derive(Default)]
struct Stub {
    views: Mutex<HashMap<StreamKey, StoredView>>,
}

impl ReadModelStore for Stub {
    async fn load_views(
        &self,
        keys: &[StreamKey],
    ) -> Result<HashMap<StreamKey, StoredView>, ReadModelError> {
        let mut views = self.views.lock().unwrap();
        Ok(keys.iter().filter_map(|k| views.remove_entry(k)).collect())
    }
    async fn write(&self, write: ViewWrite) -> Result<(), ReadModelError> {
        self.views.lock().unwrap().insert(
            write.key,
            StoredView {
                version: write.version,
                view: write.view,
            },
        );
        Ok(())
    }
    async fn attach_positions(
        &self,
        _: &StreamKey,
        _: &[PositionOf],
    ) -> Result<(), ReadModelError> {
        Ok(())
    }
    async fn park(&self, _: &Parked) -> Result<(), ReadModelError> {
        Ok(())
    }
    async fn parked(&self) -> Result<Vec<Parked>, ReadModelError> {
        Ok(Vec::new())
    }
    async fn parked_entity(&self, _: &str) -> Result<Option<Parked>, ReadModelError> {
        Ok(None)
    }
    async fn unpark(&self, _: &str, _: u64) -> Result<bool, ReadModelError> {
        Ok(false)
    }
}

/// The batches as the event source mapping delivers them to the function: JSON bytes.
fn lambda_events(batches: usize) -> Vec<Vec<u8>> {
    shard(batches)
        .into_iter()
        .map(|batch| {
            let records: Vec<StreamRecord> = batch
                .into_iter()
                .map(|r| StreamRecord {
                    shard_id: r.shard_id.unwrap_or_default(),
                    sequence_number: r.sequence_number,
                    partition_key: r.partition_key,
                    data: r.data,
                    approximate_arrival_millis: Some(1_796_205_600_000),
                })
                .collect();
            serde_json::to_vec(&kinesis_event_json(
                &records,
                "arn:aws:kinesis:us-east-1:000000000000:stream/timeline",
            ))
            .unwrap()
        })
        .collect()
}

fn main() {
    // One core: the runtime runs on this thread only.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let events = lambda_events(env_or("PROCESSOR_BATCHES", 2000) as usize);
    let total = (events.len() * BATCH) as f64;
    let bytes: usize = events.iter().map(Vec::len).sum();
    println!(
        "processor in process, one core: {} Lambda events of {BATCH} records ({:.1} MB of JSON), store calls stubbed",
        events.len(),
        bytes as f64 / 1e6
    );
    println!("{:<56} {:>14} {:>10}", "", "events/s", "µs/event");

    let started = Instant::now();
    let mut records = 0;
    for event in &events {
        let batch: KinesisBatch = serde_json::from_slice(event).unwrap();
        records += batch.records.len();
    }
    let decode = records as f64 / started.elapsed().as_secs_f64();
    println!(
        "{:<56} {decode:>14.0} {:>10.2}",
        "baseline: decode the Lambda events only",
        1e6 / decode
    );

    let handler = ProcessorHandler::new(Stub::default(), SystemClock);
    let started = Instant::now();
    runtime.block_on(async {
        for event in &events {
            let batch: KinesisBatch = serde_json::from_slice(event).unwrap();
            let outcome = handler.project(batch).await;
            assert_eq!(outcome.first_failure, None);
            assert_eq!(outcome.stats.records, BATCH);
        }
    });
    let full = total / started.elapsed().as_secs_f64();
    println!(
        "{:<56} {full:>14.0} {:>10.2}",
        "decode, fold and write the views (the processor)",
        1e6 / full
    );
    println!(
        "{:<56} {AIM:>14.0} {:>10.2}   ({})",
        "aim",
        1e6 / AIM,
        if full >= AIM { "met" } else { "not met" }
    );
}
