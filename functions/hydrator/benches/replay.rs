//! Archive replay benchmark, figures side by side in one run (not a timed test):
//! - the outside baseline: `zcat | wc -l` over the objects on disk (one thread);
//! - the floor: the same gzip objects merely decompressed and split into lines (both cores);
//! - a full replay into the state of every entity (decode, dedupe, order, fold), both cores;
//! - one entity's state as of a time, on a 10,000-event and a 1,000,000-event archive.
//!
//! The archives are generated in Firehose's layout (gzip NDJSON, `events/YYYY/MM/DD/HH/...`),
//! on local disk under `target/bench-archive/`, and, when `AWS_ENDPOINT_URL` points at an
//! emulator (`infra/bench.sh` starts moto), uploaded to S3 and read back through `S3Archive`.
//!
//! Run: `infra/bench.sh` (or `cargo bench -p hydrator --bench replay` for the local-disk part).

use futures::StreamExt;
use std::collections::{BinaryHeap, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};
use timeline_core::codec::encode_event;
use timeline_core::ride::{Location, RideAggregate, RideEvent};
use timeline_core::timetravel::{merge, state_at, AsOf};
use timeline_core::video::{VideoAggregate, VideoEvent};
use timeline_core::Aggregate;
use timeline_core::CommitRecord;
use timeline_core::EventEnvelope;
use timeline_core::Metadata;
use timeline_core::StreamKey;
use timeline_core::Timestamp;
use timeline_engine::archive::{
    decode_object, encode_object, object_key, parse_object_key, MAX_BUFFER_MILLIS,
};
use timeline_engine::fold::{fold_object_partitioned, StateFold};

const PREFIX: &str = "events/";
const STREAM: &str = "timeline-archive";
const STEP_MS: i64 = 10_000;
const BUFFER_MS: i64 = 300_000;
const BUFFER_BYTES: usize = 5 * 1024 * 1024;
const WORKERS: usize = 2;

struct Archive {
    dir: PathBuf,
    keys: Vec<String>,
    /// When each entity's events were recorded (the history read model gives this).
    index: HashMap<StreamKey, (Timestamp, Timestamp)>,
    events: usize,
    bytes: u64,
}

fn place(n: u64) -> Location {
    Location {
        address: format!("{n} Harbour Rd"),
        lat: 53.30 + (n % 50) as f64 / 1000.0,
        lon: -6.25,
    }
}

fn envelope<A: Aggregate>(
    id: &str,
    version: u64,
    event: &A::Event,
    at: Timestamp,
) -> EventEnvelope {
    let (event_type, schema_version, data) = encode_event::<A>(event);
    EventEnvelope {
        event_id: format!("{id}-{version:04}-0000-5000-8000-000000000000"),
        aggregate_type: A::TYPE.into(),
        aggregate_id: id.into(),
        version,
        event_type,
        schema_version,
        occurred_at: at,
        recorded_at: at,
        metadata: Metadata {
            command_id: format!("cmd-{id}-{version}"),
            correlation_id: Some(format!("corr-{id}")),
            causation_id: None,
            actor: "5f0c1d2e-3a4b-4c5d-8e9f-0a1b2c3d4e5f".into(),
        },
        data,
    }
}

/// The k-th of `per` events of entity `e`: rides book, get a driver, start, then change
/// destination and fare and complete; videos upload, start, progress and succeed.
fn event(e: u64, k: u64, per: u64, at: Timestamp) -> EventEnvelope {
    let version = k + 1;
    if e.is_multiple_of(2) {
        let id = format!("ride-{e:06}");
        let ev = match k {
            0 => RideEvent::RideBooked {
                rider_id: format!("rider-{}", e % 997),
                pickup: place(e),
                dropoff: place(e + 1),
                fare_estimate_cents: Some(9000),
            },
            1 => RideEvent::DriverAssigned {
                driver_id: format!("driver-{}", e % 101),
                previous_driver_id: None,
            },
            2 => RideEvent::RideStarted {
                driver_id: format!("driver-{}", e % 101),
            },
            k if k == per - 1 => RideEvent::RideCompleted {
                final_fare_cents: 12_000,
                distance_km: 11.5,
            },
            k if k % 2 == 0 => RideEvent::DestinationChanged {
                from: place(e + k),
                to: place(e + k + 1),
            },
            k => RideEvent::FareAdjusted {
                from_cents: Some(9000 + k as i64),
                to_cents: 9001 + k as i64,
                reason: "traffic".into(),
            },
        };
        envelope::<RideAggregate>(&id, version, &ev, at)
    } else {
        let id = format!("video-{e:06}");
        let ev = match k {
            0 => VideoEvent::VideoUploaded {
                title: format!("Talk {e}"),
                source_uri: format!("s3://uploads/{e}.mp4"),
                uploaded_by: None,
            },
            1 => VideoEvent::ProcessingStarted { attempt: 1 },
            k if k == per - 1 => VideoEvent::ProcessingSucceeded {
                output_uri: Some(format!("s3://out/{e}.m3u8")),
            },
            k => VideoEvent::ProcessingProgressed {
                percent: (k * 100 / per) as u8,
            },
        };
        envelope::<VideoAggregate>(&id, version, &ev, at)
    }
}

/// Writes `entities * per` events as Firehose would have archived them: entities start one
/// after another over the span, each lives `per * 10 s`, records are buffered by 300 s / 5 MiB.
fn generate(dir: &Path, entities: u64, per: u64) -> Archive {
    let base: Timestamp = "2026-11-01T00:00:00Z".parse().unwrap();
    let span_ms = (entities as i64) * 17_000;
    let mut heap = BinaryHeap::new();
    let mut index = HashMap::new();
    for e in 0..entities {
        let t0 = base.plus_millis(e as i64 * span_ms / entities as i64);
        heap.push(std::cmp::Reverse((t0.as_millis(), e, 0u64)));
    }
    let _ = std::fs::remove_dir_all(dir);
    let mut keys = Vec::new();
    let mut buffer: Vec<CommitRecord> = Vec::new();
    let (mut buffered, mut first_at, mut bytes, mut events) = (0usize, 0i64, 0u64, 0usize);
    let flush =
        |buffer: &mut Vec<CommitRecord>, first_at: i64, keys: &mut Vec<String>, bytes: &mut u64| {
            let arrival = Timestamp::from_millis(first_at).unwrap();
            let key = object_key(
                PREFIX,
                STREAM,
                arrival,
                &format!("{:08x}-0000-4000-8000-{:012x}", keys.len(), first_at),
                true,
            );
            let data = encode_object(buffer, true);
            let path = dir.join(&key);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &data).unwrap();
            *bytes += data.len() as u64;
            keys.push(key);
            buffer.clear();
        };
    while let Some(std::cmp::Reverse((at, e, k))) = heap.pop() {
        let t = Timestamp::from_millis(at).unwrap();
        let env = event(e, k, per, t);
        let key = env.stream_key();
        let entry = index.entry(key).or_insert((t, t));
        entry.1 = t;
        if buffer.is_empty() {
            first_at = at;
            buffered = 0;
        } else if at - first_at >= BUFFER_MS || buffered >= BUFFER_BYTES {
            flush(&mut buffer, first_at, &mut keys, &mut bytes);
            first_at = at;
            buffered = 0;
        }
        buffered += 450;
        buffer.push(CommitRecord { events: vec![env] });
        events += 1;
        if k + 1 < per {
            heap.push(std::cmp::Reverse((at + STEP_MS, e, k + 1)));
        }
    }
    if !buffer.is_empty() {
        flush(&mut buffer, first_at, &mut keys, &mut bytes);
    }
    Archive {
        dir: dir.to_owned(),
        keys,
        index,
        events,
        bytes,
    }
}

fn read_all(archive: &Archive) -> Vec<(String, Vec<u8>)> {
    archive
        .keys
        .iter()
        .map(|k| (k.clone(), std::fs::read(archive.dir.join(k)).unwrap()))
        .collect()
}

/// Work over objects shared by `WORKERS` threads.
fn parallel<T: Send>(
    objects: &[(String, Vec<u8>)],
    work: impl Fn(&str, &[u8]) -> T + Sync,
) -> Vec<T> {
    let next = AtomicUsize::new(0);
    let out = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for _ in 0..WORKERS {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                let Some((key, bytes)) = objects.get(i) else {
                    break;
                };
                let r = work(key, bytes);
                out.lock().unwrap().push(r);
            });
        }
    });
    out.into_inner().unwrap()
}

fn floor(objects: &[(String, Vec<u8>)]) -> (usize, u64) {
    let counts = parallel(objects, |_, bytes| {
        let mut decoder = flate2::read::MultiGzDecoder::new(bytes);
        let mut buf = vec![0u8; 256 * 1024];
        let (mut lines, mut raw) = (0usize, 0u64);
        loop {
            let n = decoder.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            raw += n as u64;
            lines += buf[..n].iter().filter(|b| **b == b'\n').count();
        }
        (lines, raw)
    });
    counts
        .into_iter()
        .fold((0, 0), |(l, r), (a, b)| (l + a, r + b))
}

/// The outside baseline: `zcat | wc -l` over the same objects on disk, one thread each (the
/// system's gzip). None if there is no `zcat` here.
fn zcat(archive: &Archive) -> Option<(usize, f64)> {
    let paths: Vec<PathBuf> = archive.keys.iter().map(|k| archive.dir.join(k)).collect();
    let t = Instant::now();
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg("zcat \"$@\" | wc -l")
        .arg("sh")
        .args(&paths)
        .output()
        .ok()
        .filter(|o| o.status.success())?;
    let seconds = t.elapsed().as_secs_f64();
    let lines = String::from_utf8_lossy(&out.stdout).trim().parse().ok()?;
    Some((lines, seconds))
}

/// Full replay, the fold's way: each worker parses an object in place (only the fields a
/// fold needs) and folds its events into the partition of their entity, so both workers
/// parse and fold at once.
fn replay(objects: &[(String, Vec<u8>)]) -> (u64, usize, usize) {
    const PARTITIONS: usize = 64;
    let folds: Vec<Mutex<StateFold>> = (0..PARTITIONS)
        .map(|_| Mutex::new(StateFold::default()))
        .collect();
    parallel(objects, |key, bytes| {
        fold_object_partitioned(key, bytes, &folds).unwrap();
    });
    let mut all = StateFold::default();
    for f in folds {
        all.absorb(f.into_inner().unwrap());
    }
    let folded = all.finish();
    (
        folded.events_applied,
        folded.states.len(),
        folded.gaps.len(),
    )
}

/// The same replay through full envelopes (every field decoded, payloads through `Value`):
/// the general decoder, for comparison.
fn replay_envelopes(objects: &[(String, Vec<u8>)]) -> (u64, usize, usize) {
    const PARTITIONS: usize = 64;
    let folds: Vec<Mutex<StateFold>> = (0..PARTITIONS)
        .map(|_| Mutex::new(StateFold::default()))
        .collect();
    parallel(objects, |key, bytes| {
        let mut parts: Vec<Vec<EventEnvelope>> = vec![Vec::new(); PARTITIONS];
        for record in decode_object(key, bytes).unwrap() {
            for e in record.events {
                let h = e
                    .aggregate_id
                    .bytes()
                    .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize));
                parts[h % PARTITIONS].push(e);
            }
        }
        for (p, events) in parts.into_iter().enumerate() {
            if events.is_empty() {
                continue;
            }
            let mut fold = folds[p].lock().unwrap();
            for e in events {
                fold.push(e);
            }
        }
    });
    let mut all = StateFold::default();
    for f in folds {
        all.absorb(f.into_inner().unwrap());
    }
    let folded = all.finish();
    (
        folded.events_applied,
        folded.states.len(),
        folded.gaps.len(),
    )
}

/// Keys whose objects can hold records that arrived between `from` and `to`.
fn window(keys: &[String], from: Timestamp, to: Timestamp) -> Vec<String> {
    keys.iter()
        .filter(|k| {
            parse_object_key(PREFIX, k).is_some_and(|p| {
                p.written_at.as_millis() >= from.as_millis() - MAX_BUFFER_MILLIS
                    && p.written_at <= to
            })
        })
        .cloned()
        .collect()
}

fn probes(archive: &Archive, n: usize) -> Vec<(StreamKey, Timestamp, Timestamp)> {
    let mut keys: Vec<&StreamKey> = archive.index.keys().collect();
    keys.sort();
    (0..n)
        .map(|i| {
            let key = keys[(i * 7919) % keys.len()];
            let (first, last) = archive.index[key];
            let mid = Timestamp::from_millis((first.as_millis() + last.as_millis()) / 2).unwrap();
            (key.clone(), first, mid)
        })
        .collect()
}

fn point_query_local(archive: &Archive) -> (Duration, usize) {
    let probes = probes(archive, 20);
    let start = Instant::now();
    let mut objects_read = 0;
    for (key, first, as_of) in &probes {
        let keys = window(&archive.keys, *first, as_of.plus_millis(MAX_BUFFER_MILLIS));
        objects_read += keys.len();
        let events: Vec<EventEnvelope> = keys
            .iter()
            .flat_map(|k| decode_object(k, &std::fs::read(archive.dir.join(k)).unwrap()).unwrap())
            .flat_map(|r| r.events)
            .filter(|e| e.stream_key() == *key && e.occurred_at <= *as_of)
            .collect();
        let log = merge(key.clone(), events);
        let answer = if key.aggregate_type == "ride" {
            state_at::<RideAggregate>(&log, AsOf::Time(*as_of))
                .view
                .map(|v| v.version)
        } else {
            state_at::<VideoAggregate>(&log, AsOf::Time(*as_of))
                .view
                .map(|v| v.version)
        };
        assert!(answer.is_some_and(|v| v > 1), "{key} as of {as_of}");
    }
    (
        start.elapsed() / probes.len() as u32,
        objects_read / probes.len(),
    )
}

fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../target/bench-archive");
    println!(
        "machine: {} cores; archives in {}",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        root.display()
    );

    let t = Instant::now();
    let small = generate(&root.join("small"), 100, 100);
    let big = generate(&root.join("big"), 10_000, 100);
    println!(
        "generated: {} events in {} objects ({:.1} MB gzip) and {} events in {} objects ({:.1} MB gzip) in {:.1} s",
        small.events, small.keys.len(), small.bytes as f64 / 1e6, big.events, big.keys.len(), big.bytes as f64 / 1e6, t.elapsed().as_secs_f64()
    );

    let zcat = zcat(&big);
    if let Some((lines, _)) = zcat {
        assert_eq!(lines, big.events, "zcat | wc -l counts one line per event");
    }
    let objects = read_all(&big);
    let rss_before = rss_mib();
    let t = Instant::now();
    let (lines, raw) = floor(&objects);
    let floor_s = t.elapsed().as_secs_f64();
    assert_eq!(lines, big.events);
    let t = Instant::now();
    let (applied, entities, gaps) = replay(&objects);
    let replay_s = t.elapsed().as_secs_f64();
    assert_eq!((applied as usize, entities, gaps), (big.events, 10_000, 0));
    let t = Instant::now();
    let (applied_full, _, _) = replay_envelopes(&objects);
    let envelopes_s = t.elapsed().as_secs_f64();
    assert_eq!(applied_full, applied);
    println!();
    println!(
        "full archive, {} events, {:.0} MB of NDJSON, {WORKERS} workers:",
        big.events,
        raw as f64 / 1e6
    );
    println!("  {:<52} {:>12} {:>14}", "", "events/s", "seconds");
    match zcat {
        Some((lines, zcat_s)) => println!(
            "  {:<52} {:>12.0} {:>14.2}",
            "baseline: zcat | wc -l (one thread, from disk)",
            lines as f64 / zcat_s,
            zcat_s
        ),
        None => println!("  baseline: zcat | wc -l: no zcat on this machine"),
    }
    println!(
        "  {:<52} {:>12.0} {:>14.2}",
        "floor: decompress + split lines",
        lines as f64 / floor_s,
        floor_s
    );
    println!(
        "  {:<52} {:>12.0} {:>14.2}",
        "full replay into state for every entity",
        applied as f64 / replay_s,
        replay_s
    );
    println!(
        "  {:<52} {:>12.0} {:>14.2}",
        "  (same, decoding full envelopes through Value)",
        applied as f64 / envelopes_s,
        envelopes_s
    );
    println!("  replay / floor: {:.2}x the time", replay_s / floor_s);
    if let Some((_, zcat_s)) = zcat {
        println!("  replay / zcat: {:.2}x the time", replay_s / zcat_s);
    }
    println!("  peak memory: {:.0} MiB with the archive's {:.0} MB held in memory ({:.0} MiB before the replay)", rss_mib(), big.bytes as f64 / 1e6, rss_before);
    drop(objects);

    println!();
    println!("one entity's state as of a time (mean of 20, objects read from local disk):");
    for (name, archive) in [
        ("10,000-event archive", &small),
        ("1,000,000-event archive", &big),
    ] {
        let (per, objects) = point_query_local(archive);
        println!(
            "  {name:<26} {:>8.2} ms   {objects} objects read of {}",
            per.as_secs_f64() * 1000.0,
            archive.keys.len()
        );
    }

    if std::env::var("AWS_ENDPOINT_URL").is_ok() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(WORKERS)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(emulator(&small, &big));
    } else {
        println!(
            "\n(AWS_ENDPOINT_URL not set: the S3 part needs infra/bench.sh, which starts moto)"
        );
    }
}

async fn emulator(small: &Archive, big: &Archive) {
    let clients = timeline_aws::Clients::from_env().await;
    println!();
    println!("the same archives in S3 (moto over HTTP on 127.0.0.1):");
    for (name, archive) in [
        ("10,000-event archive", small),
        ("1,000,000-event archive", big),
    ] {
        let bucket = format!("bench-{}", archive.events);
        timeline_aws::resources::create_bucket(clients.s3(), &bucket)
            .await
            .unwrap();
        let s3 = timeline_aws::archive::S3Archive::new(clients.s3().clone(), &bucket, PREFIX);
        let t = Instant::now();
        let uploads = futures::stream::iter(archive.keys.clone())
            .map(|k| {
                let s3 = s3.clone();
                let path = archive.dir.join(&k);
                async move {
                    s3.put_object(&k, std::fs::read(path).unwrap())
                        .await
                        .unwrap()
                }
            })
            .buffer_unordered(8);
        uploads.collect::<Vec<_>>().await;
        let upload_s = t.elapsed().as_secs_f64();
        let probes = probes(archive, 10);
        let t = Instant::now();
        let mut objects = 0;
        for (key, first, as_of) in &probes {
            let listed = s3
                .list_keys(Some(*first), Some(as_of.plus_millis(MAX_BUFFER_MILLIS)))
                .await
                .unwrap();
            let keys = window(&listed, *first, as_of.plus_millis(MAX_BUFFER_MILLIS));
            objects += keys.len();
            let mut events = Vec::new();
            let mut stream = s3.read_objects(keys, 4);
            while let Some((_, records)) = stream.next().await {
                events.extend(
                    records
                        .unwrap()
                        .into_iter()
                        .flat_map(|r| r.events)
                        .filter(|e| e.stream_key() == *key && e.occurred_at <= *as_of),
                );
            }
            assert!(!merge(key.clone(), events).events.is_empty());
        }
        let per = t.elapsed().as_secs_f64() * 1000.0 / probes.len() as f64;
        println!(
            "  {name:<26} point query {per:>8.1} ms ({} objects read of {}); upload of {} objects {:.1} s",
            objects / probes.len(),
            archive.keys.len(),
            archive.keys.len(),
            upload_s
        );
    }
    // Full replay straight from S3: list, fetch 4 at a time, decode, fold.
    let s3 = timeline_aws::archive::S3Archive::new(
        clients.s3().clone(),
        format!("bench-{}", big.events),
        PREFIX,
    );
    let t = Instant::now();
    let keys = s3.list_keys(None, None).await.unwrap();
    let mut fold = StateFold::default();
    let fetched = futures::stream::iter(keys)
        .map(|k| {
            let s3 = s3.clone();
            async move {
                let body = s3
                    .client
                    .get_object()
                    .bucket(&s3.bucket)
                    .key(&k)
                    .send()
                    .await
                    .unwrap()
                    .body
                    .collect()
                    .await
                    .unwrap();
                (k, body.into_bytes())
            }
        })
        .buffered(4);
    let mut fetched = Box::pin(fetched);
    while let Some((key, bytes)) = fetched.next().await {
        fold.push_object(&key, &bytes).unwrap();
    }
    let folded = fold.finish();
    let s = t.elapsed().as_secs_f64();
    println!(
        "  full replay from S3: {} events in {:.1} s = {:.0} events/s",
        folded.events_applied,
        s,
        folded.events_applied as f64 / s
    );
}
