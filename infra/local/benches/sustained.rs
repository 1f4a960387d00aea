//! Sustained commands per second through the local runner on the embedded backend, with
//! latency percentiles, side by side with a baseline in one run:
//! - baseline: a request the command handler refuses before any store work (a body that
//!   fails validation: 400), through the same HTTP server and API Gateway emulation;
//! - book: `POST /rides`, a new entity per command (a head insert, an idempotency-free
//!   commit, a log append);
//! - adjust fare: `POST /rides/{id}/adjust-fare` on existing rides (load head, decide,
//!   conditional commit, log append), the common case of a long-lived entity;
//!
//! the read side's freshness (from a command's 2xx to its version in the view) idle and under
//! the adjust-fare load, and, after the load, how long the read side (the event source
//! mapping and processor) took to catch up with every command accepted.
//!
//! Run: `cargo bench -p timeline-local --bench sustained` (or `infra/bench.sh sustained`).
//! Clients and server share this process and machine: compare the rows, not absolute figures
//! across machines. `SUSTAINED_SECS` (default 8) and `SUSTAINED_CLIENTS` (default 8) tune it.

use serde_json::{json, Value};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timeline_local::backend::EmbeddedBackend;
use timeline_local::demo::Http;
use timeline_local::runner::{run, RunOptions};

// The runner's allocator (see its main.rs), so the figures are the runner's.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env_or(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn booking(id: &str) -> Value {
    json!({
        "id": id,
        "rider_id": "rider-bench",
        "pickup": { "address": "1 Main St", "lat": 52.52, "lon": 13.40 },
        "dropoff": { "address": "9 Oak Ave", "lat": 52.50, "lon": 13.45 },
        "fare_estimate_cents": 9000
    })
}

struct Row {
    name: &'static str,
    requests: usize,
    /// Answers other than the expected status, by status (0: no answer).
    errors: std::collections::BTreeMap<u16, usize>,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Row {
    fn per_second(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// `clients` loops, each sending `request(client, n)` for `secs`; the status that counts
/// as success is `expect`.
async fn load<F, Fut>(name: &'static str, clients: usize, secs: u64, expect: u16, request: F) -> Row
where
    F: Fn(usize, usize) -> Fut + Send + Sync + 'static,
    Fut: std::future::Future<Output = anyhow::Result<(u16, Value)>> + Send,
{
    let request = Arc::new(request);
    let deadline = Instant::now() + Duration::from_secs(secs);
    let start = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for client in 0..clients {
        let request = request.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            let mut errors = std::collections::BTreeMap::new();
            let mut n = 0;
            while Instant::now() < deadline {
                let sent = Instant::now();
                match request(client, n).await {
                    Ok((status, _)) if status == expect => latencies.push(sent.elapsed()),
                    Ok((status, body)) => {
                        if !errors.contains_key(&status) {
                            eprintln!("{name}: HTTP {status} {body}");
                        }
                        *errors.entry(status).or_insert(0) += 1;
                    }
                    Err(_) => *errors.entry(0).or_insert(0) += 1,
                }
                n += 1;
            }
            (latencies, errors)
        });
    }
    let mut latencies = Vec::new();
    let mut errors = std::collections::BTreeMap::new();
    while let Some(done) = tasks.join_next().await {
        let (l, e) = done.expect("client task");
        latencies.extend(l);
        for (status, count) in e {
            *errors.entry(status).or_insert(0) += count;
        }
    }
    let elapsed = start.elapsed();
    latencies.sort();
    Row {
        name,
        requests: latencies.len(),
        errors,
        elapsed,
        latencies,
    }
}

/// How long after a command's 2xx its view shows that version: a probe adjusts a ride of its
/// own every 50 ms for `secs`, and after each 2xx polls the view every 2 ms until it shows
/// the version the answer gave (or 10 s pass: counted as 10 s).
async fn freshness(http: Arc<Http>, ride: &str, secs: u64) -> anyhow::Result<Vec<Duration>> {
    let (status, body) = http.post("/rides", booking(ride)).await?;
    anyhow::ensure!(status == 201, "probe setup: {status} {body}");
    let deadline = Instant::now() + Duration::from_secs(secs);
    let mut samples = Vec::new();
    let mut n = 0u64;
    while Instant::now() < deadline {
        n += 1;
        let body = json!({ "fare_cents": 9000 + n % 1000, "reason": "probe" });
        let (status, answer) = http
            .post(&format!("/rides/{ride}/adjust-fare"), body)
            .await?;
        let answered = Instant::now();
        anyhow::ensure!(status == 200, "probe: {status} {answer}");
        let version = answer["version"].as_u64().unwrap_or(u64::MAX);
        loop {
            let (_, view) = http.get(&format!("/rides/{ride}")).await?;
            if view["version"].as_u64().is_some_and(|v| v >= version)
                || answered.elapsed() > Duration::from_secs(10)
            {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        samples.push(answered.elapsed());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    samples.sort();
    Ok(samples)
}

fn print_freshness(rows: &[(&str, Vec<Duration>)]) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("read-side freshness: from a command's 2xx to its version in GET /rides/{{id}}");
    println!(
        "{:<44} {:>8} {:>8} {:>8} {:>8}",
        "", "samples", "p50 ms", "p99 ms", "max ms"
    );
    for (name, samples) in rows {
        println!(
            "{:<44} {:>8} {:>8.1} {:>8.1} {:>8.1}",
            name,
            samples.len(),
            ms(percentile(samples, 50.0)),
            ms(percentile(samples, 99.0)),
            ms(samples.last().copied().unwrap_or_default()),
        );
    }
}

fn print(rows: &[Row]) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "{:<36} {:>9} {:>7} {:>9} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "request", "done", "errors", "req/s", "p50 ms", "p90 ms", "p99 ms", "max ms", "vs base"
    );
    let base = rows[0].per_second();
    for r in rows {
        println!(
            "{:<36} {:>9} {:>7} {:>9.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>8.2}x",
            r.name,
            r.requests,
            r.errors.values().sum::<usize>(),
            r.per_second(),
            ms(percentile(&r.latencies, 50.0)),
            ms(percentile(&r.latencies, 90.0)),
            ms(percentile(&r.latencies, 99.0)),
            ms(r.latencies.last().copied().unwrap_or_default()),
            base / r.per_second()
        );
        if !r.errors.is_empty() {
            println!(
                "    not the expected status: {:?} (status: count; 0 = no answer)",
                r.errors
            );
        }
    }
}

#[tokio::main(flavor = "multi_thread")]
async fn main() -> anyhow::Result<()> {
    let secs = env_or("SUSTAINED_SECS", 8);
    let clients = env_or("SUSTAINED_CLIENTS", 8) as usize;
    let dir = std::env::temp_dir().join(format!("timeline-sustained-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let backend = EmbeddedBackend::open(&dir)?;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let issuer = Arc::new(timeline_local::auth::Issuer::open(&dir)?);
    let tokens = timeline_local::demo::Tokens::demo(&issuer)?;
    let options = RunOptions {
        sweep_every: Duration::from_secs(5),
        failures: dir.join("failed.jsonl"),
        issuer,
        subscribers: None,
        announce_deliveries: false,
        publish: timeline_core::write::PublishMode::Inline,
    };
    let runner = tokio::spawn(run(listener, backend.clone(), options, async {}, async {
        let _ = stop_rx.await;
    }));
    println!(
        "sustained load through the runner (embedded backend, SQLite WAL in {}): {clients} clients, {secs} s per row, {} cores",
        dir.display(),
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let http = Arc::new(Http::signed(base, tokens));
    let mut rows = Vec::new();
    {
        let http = http.clone();
        rows.push(
            load(
                "baseline: refused body (400)",
                clients,
                secs,
                400,
                move |_, _| {
                    let http = http.clone();
                    async move { http.post("/rides", json!({ "rider_id": 7 })).await }
                },
            )
            .await,
        );
    }
    {
        let http = http.clone();
        rows.push(
            load(
                "book a ride (POST /rides)",
                clients,
                secs,
                201,
                move |c, n| {
                    let http = http.clone();
                    async move { http.post("/rides", booking(&format!("b-{c}-{n}"))).await }
                },
            )
            .await,
        );
    }
    // Ten rides per client, adjusted over and over.
    for c in 0..clients {
        for r in 0..10 {
            let (status, body) = http.post("/rides", booking(&format!("a-{c}-{r}"))).await?;
            anyhow::ensure!(status == 201, "setup: {status} {body}");
        }
    }
    // Freshness with nothing else going on: the baseline of the figure under load.
    let idle = freshness(http.clone(), "probe-idle", secs.min(4)).await?;
    let under_load = {
        let clients_http = http.clone();
        let adjust = load(
            "adjust fare (POST .../adjust-fare)",
            clients,
            secs,
            200,
            move |c, n| {
                let http = clients_http.clone();
                async move {
                    let path = format!("/rides/a-{c}-{}/adjust-fare", n % 10);
                    let body = json!({ "fare_cents": 9001 + (n % 500) as u64, "reason": "bench" });
                    http.post(&path, body).await
                }
            },
        );
        let (row, probe) = tokio::join!(adjust, freshness(http.clone(), "probe-load", secs));
        rows.push(row);
        probe?
    };
    let accepted_at = Instant::now();
    print(&rows);
    print_freshness(&[
        ("idle (baseline)", idle),
        ("under the adjust-fare load above", under_load),
    ]);

    // The read side: wait until every adjusted ride's view shows its head's version.
    let ids: Vec<String> = (0..clients)
        .flat_map(|c| (0..10).map(move |r| format!("a-{c}-{r}")))
        .collect();
    let mut caught_up = false;
    for _ in 0..600 {
        let mut behind = 0;
        for id in &ids {
            let key = timeline_core::StreamKey::new("ride", id);
            let head = timeline_core::ports::WriteModelStore::load_head(&backend.db, &key)
                .await?
                .map_or(0, |h| h.version);
            let (_, view) = http.get(&format!("/rides/{id}")).await?;
            if view["version"].as_u64() != Some(head) {
                behind += 1;
            }
        }
        if behind == 0 {
            caught_up = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    println!(
        "read side caught up {} {:.2} s after the last command",
        if caught_up { "in" } else { "NOT within" },
        accepted_at.elapsed().as_secs_f64()
    );
    let db_bytes = std::fs::metadata(backend.db.database_path()).map_or(0, |m| m.len());
    println!("database file: {:.1} MB", db_bytes as f64 / 1e6);

    let _ = stop_tx.send(());
    runner.await??;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
