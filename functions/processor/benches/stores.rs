//! The processor's records per second into each real read store, side by side in one run:
//! in-memory read models (the baseline: the processor's own cost), SQLite (the embedded
//! backend), PostgreSQL (a local server, as the Aurora read store) and DynamoDB on moto.
//! The same shard's batches as `throughput` (100 records, 80 rides, each the next version of
//! a view already projected or a new one), one batch at a time, 32 entities at once.
//!
//! Run: `cargo bench -p processor --bench stores` (or `infra/bench.sh stores`). Needs
//! `.venv` (made by `infra/test.sh`) for moto and PostgreSQL; a store without its server is
//! reported as skipped. Every store runs on this machine's loopback, so the figures compare
//! the adapters' work, not network round trips (a DynamoDB call on AWS takes milliseconds;
//! see `throughput` for that model). `PROCESSOR_BATCHES` (default 10) tunes it.

#[path = "shard.rs"]
mod shard;

use timeline_core::ports::ReadModelStore;
use timeline_engine::memory::MemoryReadModels;
use timeline_engine::projection::{IncomingRecord, Processor};

async fn measure<R: ReadModelStore>(store: R, batches: &[Vec<IncomingRecord>]) -> f64 {
    shard::records_per_second(&Processor::new(store), batches).await
}

fn row(label: &str, rate: Option<f64>, baseline: f64) {
    match rate {
        Some(rate) => println!("{label:<36} {rate:>12.0} {:>11.1}x", baseline / rate),
        None => println!("{label:<36} {:>12} {:>12}", "skipped", ""),
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let batches = shard::shard(shard::env_or("PROCESSOR_BATCHES", 10) as usize);
    println!(
        "processor into each read store, {} batches of {} records, 32 entities at once:",
        batches.len(),
        shard::BATCH
    );
    println!("{:<36} {:>12} {:>12}", "", "records/s", "slower by");
    let baseline = measure(MemoryReadModels::default(), &batches).await;
    row("baseline: in-memory read models", Some(baseline), baseline);

    let dir = std::env::temp_dir().join(timeline_testkit::unique("bench-stores"));
    let sqlite = timeline_embedded::Embedded::open(&dir).unwrap();
    row(
        "SQLite (embedded backend)",
        Some(measure(sqlite, &batches).await),
        baseline,
    );
    let _ = std::fs::remove_dir_all(&dir);

    let postgres = match timeline_testkit::postgres_database().await {
        Some(url) => {
            let pool = timeline_postgres::pool(&url).unwrap();
            timeline_postgres::migrate(&pool).await.unwrap();
            let store = timeline_postgres::PgReadModels::new(pool);
            Some(measure(store, &batches).await)
        }
        None => None,
    };
    row("PostgreSQL (local server)", postgres, baseline);

    let dynamodb = match timeline_testkit::TestEnv::try_new().await {
        Some(env) => Some(measure(env.read_models(), &batches).await),
        None => None,
    };
    row("DynamoDB (moto, one request at a time)", dynamodb, baseline);
}
