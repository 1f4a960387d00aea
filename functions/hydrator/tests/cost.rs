//! What one entity's answer costs: the requests of "state now" for a ride with 100 events,
//! on an archive of 1,000,000 events (a week of objects) and a stream tail of 100,000
//! records, counted at the fault proxy in front of moto. The ride's first 90 events are
//! archived (they arrived an hour or two ago), its last 10 are on the stream only (the last
//! 2 not yet projected into the history index). The answer reads the ride's part of the log
//! and nothing else: its head and index, the archive objects of its hours, and its records on
//! its own shard.

use hydrator::wiring::AwsStored;
use hydrator::Hydrator;
use processor::ProcessorHandler;
use std::collections::BTreeMap;
use std::sync::Arc;
use timeline_aws::archive::S3Archive;
use timeline_aws::event_source::{aws_event_source, AwsEventSource};
use timeline_aws::read_models::DynamoReadModels;
use timeline_aws::stream_reader::StreamRecord;
use timeline_core::codec::{encode_event, encode_record};
use timeline_core::ports::{Commit, EventLog, Head, SystemClock, WriteModelStore};
use timeline_core::ride::{Location, RideAggregate, RideEvent};
use timeline_core::time::Deadline;
use timeline_core::timetravel::AsOf;
use timeline_core::CommitRecord;
use timeline_core::EventEnvelope;
use timeline_core::Metadata;
use timeline_core::StreamKey;
use timeline_core::Timestamp;
use timeline_engine::archive::{encode_object, object_key, parse_object_key};
use timeline_testkit::kinesis_event;

const ARCHIVE_EVENTS: usize = 1_000_000;
const TAIL_RECORDS: usize = 100_000;
const RIDE_EVENTS: u64 = 100;
const ARCHIVED: u64 = 90;
const INDEXED: u64 = 98;
/// Firehose's default buffer interval: an object every 5 minutes, for a week.
const OBJECT_EVERY_MS: i64 = 300_000;
const WEEK_MS: i64 = 7 * 24 * 3_600_000;

fn now() -> Timestamp {
    Timestamp::from_datetime(chrono::Utc::now())
}

fn envelope(key: &StreamKey, version: u64, at: Timestamp, event: &RideEvent) -> EventEnvelope {
    let (event_type, schema_version, data) = encode_event::<RideAggregate>(event);
    EventEnvelope {
        event_id: format!("{key}-{version}"),
        aggregate_type: key.aggregate_type.clone(),
        aggregate_id: key.aggregate_id.clone(),
        version,
        event_type,
        schema_version,
        occurred_at: at,
        recorded_at: at,
        metadata: Metadata {
            command_id: format!("c-{key}-{version}"),
            correlation_id: None,
            causation_id: None,
            actor: "dispatcher".into(),
        },
        data,
    }
}

fn place(address: &str) -> Location {
    Location {
        address: address.into(),
        lat: 53.35,
        lon: -6.26,
    }
}

/// The ride: booked, then its fare adjusted 99 times.
fn ride_events(key: &StreamKey, times: &[Timestamp]) -> Vec<EventEnvelope> {
    (1..=RIDE_EVENTS)
        .map(|v| {
            let event = if v == 1 {
                RideEvent::RideBooked {
                    rider_id: "rider-1".into(),
                    pickup: place("A"),
                    dropoff: place("B"),
                    fare_estimate_cents: Some(1000),
                }
            } else {
                RideEvent::FareAdjusted {
                    from_cents: Some(1000 + v as i64 - 1),
                    to_cents: 1000 + v as i64,
                    reason: format!("adjustment {v}"),
                }
            };
            envelope(key, v, times[v as usize - 1], &event)
        })
        .collect()
}

/// A small event of another ride (the archive's and the tail's filler).
fn filler(n: usize, at: Timestamp) -> CommitRecord {
    let key = StreamKey::new("ride", format!("f{n}"));
    CommitRecord::new(vec![envelope(
        &key,
        1,
        at,
        &RideEvent::RideStarted {
            driver_id: format!("d{}", n % 97),
        },
    )])
    .unwrap()
}

/// A week of objects, one every 5 minutes, `ARCHIVE_EVENTS` events among them, the ride's
/// archived events in the objects of the minutes they arrived in. Built on both cores.
fn archive_objects(start: Timestamp, ride: &[(Timestamp, CommitRecord)]) -> Vec<(String, Vec<u8>)> {
    let objects = (WEEK_MS / OBJECT_EVERY_MS) as usize;
    let per_object = ARCHIVE_EVENTS / objects;
    let ride = Arc::new(ride.to_vec());
    let workers: Vec<_> = (0..2)
        .map(|worker| {
            let ride = ride.clone();
            std::thread::spawn(move || {
                let mut out = Vec::new();
                for i in (worker..objects).step_by(2) {
                    let opened = start.plus_millis(i as i64 * OBJECT_EVERY_MS);
                    let closes = opened.plus_millis(OBJECT_EVERY_MS);
                    let mut records: Vec<CommitRecord> = (0..per_object)
                        .map(|j| {
                            let at = opened
                                .plus_millis((j as i64 * OBJECT_EVERY_MS) / per_object as i64);
                            filler(i * per_object + j, at)
                        })
                        .collect();
                    records.extend(
                        ride.iter()
                            .filter(|(at, _)| *at >= opened && *at < closes)
                            .map(|(_, r)| r.clone()),
                    );
                    let key = object_key(
                        "events/",
                        "timeline-archive",
                        opened,
                        &format!("o{i:05}"),
                        true,
                    );
                    out.push((key, encode_object(&records, true)));
                }
                out
            })
        })
        .collect();
    workers
        .into_iter()
        .flat_map(|w| w.join().unwrap())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_now_reads_one_rides_part_of_a_week_of_log() {
    let (mut env, proxy) = timeline_testkit::proxy_env!();
    // Bulk loading goes straight to moto; the answer goes through the proxy, which counts.
    let direct = timeline_aws::Clients::new(&timeline_aws::config::load_sdk_config().await);
    let key = StreamKey::new("ride", "the-ride");
    // A stream of 64 shards, made in moto directly (moto's time to write a record grows with
    // its shard, so 100,000 records on few shards take minutes); the proxy passes it through.
    env.names.event_stream = timeline_testkit::unique("tail");
    timeline_aws::resources::create_stream(direct.kinesis(), &env.names.event_stream, 64)
        .await
        .unwrap();
    let started = std::time::Instant::now();

    // When each version happened: 1..90 between two hours and an hour ago, 91..100 in the
    // last minute.
    let now = now();
    let t0 = now.plus_millis(-2 * 3_600_000);
    let mut times: Vec<Timestamp> = (0..ARCHIVED)
        .map(|i| t0.plus_millis(i as i64 * 40_000))
        .collect();
    times.extend((0..RIDE_EVENTS - ARCHIVED).map(|i| now.plus_millis(-60_000 + i as i64 * 1_000)));
    let events = ride_events(&key, &times);
    let archived: Vec<(Timestamp, CommitRecord)> = events[..ARCHIVED as usize]
        .iter()
        .map(|e| (e.recorded_at, CommitRecord::new(vec![e.clone()]).unwrap()))
        .collect();

    // The archive: a week of objects, ending now.
    let objects = archive_objects(now.plus_millis(-WEEK_MS), &archived);
    let object_count = objects.len();
    let archive = S3Archive::new(direct.s3().clone(), &env.names.archive_bucket, "events/");
    let uploads = futures::stream::iter(objects)
        .map(|(key, bytes)| {
            let archive = archive.clone();
            async move { archive.put_object(&key, bytes).await.unwrap() }
        })
        .buffer_unordered(8);
    futures::StreamExt::collect::<Vec<()>>(uploads).await;
    eprintln!(
        "archive of {ARCHIVE_EVENTS} events in {object_count} objects written in {:?}",
        started.elapsed()
    );

    // The stream tail: 100,000 records of other rides, the ride's last 10 among the last
    // of them.
    let kinesis = direct.kinesis();
    let ride_recent = &events[ARCHIVED as usize..];
    let mut published: BTreeMap<u64, StreamRecord> = BTreeMap::new();
    let batches = TAIL_RECORDS / 500;
    for b in 0..batches {
        let entries: Vec<_> = (0..500)
            .map(|j| {
                let record = filler(ARCHIVE_EVENTS + b * 500 + j, now);
                aws_sdk_kinesis::types::PutRecordsRequestEntry::builder()
                    .partition_key(record.partition_key().unwrap())
                    .data(aws_sdk_kinesis::primitives::Blob::new(encode_record(
                        &record,
                    )))
                    .build()
                    .unwrap()
            })
            .collect();
        let out = kinesis
            .put_records()
            .stream_name(&env.names.event_stream)
            .set_records(Some(entries))
            .send()
            .await
            .unwrap();
        assert_eq!(out.failed_record_count(), Some(0));
        // One of the ride's records every ~100 filler batches near the end of the tail.
        let from_end = batches - b;
        if from_end <= ride_recent.len() {
            let e = &ride_recent[ride_recent.len() - from_end];
            let record = CommitRecord::new(vec![e.clone()]).unwrap();
            let at = env.log().publish(&record).await.unwrap();
            published.insert(
                e.version,
                StreamRecord {
                    shard_id: at.shard_id,
                    sequence_number: at.sequence_number,
                    partition_key: key.partition_key(),
                    data: encode_record(&record),
                    approximate_arrival_millis: Some(
                        Timestamp::from_datetime(chrono::Utc::now()).as_millis(),
                    ),
                },
            );
        }
    }
    eprintln!(
        "stream tail of {TAIL_RECORDS} records written in {:?}",
        started.elapsed()
    );

    // The write model's head: version 100, created two hours ago.
    let state = timeline_core::hydrate::hydrate::<RideAggregate>(&events).unwrap();
    env.store()
        .commit(Commit {
            expected_version: 0,
            head: Head {
                key: key.clone(),
                version: RIDE_EVENTS,
                state: serde_json::to_value(&state.state).unwrap(),
                pending: vec![],
                last_occurred_at: times.last().copied(),
                updated_at: *times.last().unwrap(),
                created_at: Some(t0),
            },
            idempotency: None,
            now,
        })
        .await
        .unwrap();
    // The history index, as the processor left it: the archived events with the positions
    // they had on the stream (long expired), the recent ones up to version 98.
    let processor = ProcessorHandler::new(env.read_models(), SystemClock);
    let old: Vec<StreamRecord> = archived
        .iter()
        .enumerate()
        .map(|(i, (at, record))| StreamRecord {
            shard_id: "shardId-000000000000".into(),
            sequence_number: format!("{}", 1_000 + i),
            partition_key: key.partition_key(),
            data: encode_record(record),
            approximate_arrival_millis: Some(at.as_millis()),
        })
        .collect();
    let recent: Vec<StreamRecord> = published
        .range(..=INDEXED)
        .map(|(_, r)| r.clone())
        .collect();
    for batch in [old, recent] {
        let response = processor
            .handle(kinesis_event(
                &batch,
                "arn:aws:kinesis:us-east-1:000000000000:stream/t",
            ))
            .await;
        assert!(response.batch_item_failures.is_empty());
    }

    // The answer, counted.
    let source: AwsEventSource = aws_event_source(
        S3Archive::new(
            env.clients.s3().clone(),
            &env.names.archive_bucket,
            "events/",
        ),
        env.clients.kinesis().clone(),
        &env.names.event_stream,
        Some(env.read_models()),
        Some(env.store()),
    );
    let table = env.names.read_model_table.clone();
    let dynamodb = env.clients.dynamodb().clone();
    let target: hydrator::wiring::Target =
        Box::new(move |t| DynamoReadModels::new(dynamodb.clone(), t.unwrap_or(&table)));
    let h = Hydrator::new(
        source,
        AwsStored {
            heads: env.store(),
            views: env.read_models(),
        },
        target,
    );
    proxy.reset_requests();
    let answered = std::time::Instant::now();
    let answer = h.state(&key, AsOf::Now, &Deadline::none()).await.unwrap();
    let took = answered.elapsed();
    let requests = proxy.requests();
    assert_eq!(answer["complete"], true, "{answer}");
    assert_eq!(answer["view"]["version"], RIDE_EVENTS);
    assert_eq!(
        answer["view"]["state"]["fare_cents"],
        1000 + RIDE_EVENTS as i64
    );

    // The bound: the head and the index; the objects whose first record arrived within 15
    // minutes before one of the archived events (listed in one go); and, on the ride's own
    // shard only, a read at each indexed record not in the archive plus the reads after the
    // last indexed one to the tip.
    let window_from = times[0].plus_millis(-timeline_engine::archive::MAX_BUFFER_MILLIS);
    let window_to = times[ARCHIVED as usize - 1];
    let in_window = S3Archive::new(direct.s3().clone(), &env.names.archive_bucket, "events/")
        .list_keys(None, None)
        .await
        .unwrap()
        .iter()
        .filter(|k| {
            parse_object_key("events/", k).is_some_and(|p| {
                p.written_at >= window_from.plus_millis(-999) && p.written_at <= window_to
            })
        })
        .count();
    let count = |op: &str| requests.get(op).copied().unwrap_or(0);
    eprintln!(
        "state now of a ride with {RIDE_EVENTS} events ({ARCHIVED} archived, {} only on the stream, {} not yet indexed), \
         on a {ARCHIVE_EVENTS}-event archive ({object_count} objects) and a {TAIL_RECORDS}-record stream tail, in {took:?}: {requests:?}",
        RIDE_EVENTS - ARCHIVED,
        RIDE_EVENTS - INDEXED,
    );
    assert_eq!(count("dynamodb:GetItem"), 1, "the head");
    assert_eq!(count("dynamodb:Query"), 1, "the history index");
    assert!(count("s3:ListObjectsV2") <= 2, "{requests:?}");
    assert!(
        count("s3:GetObject") <= in_window,
        "{requests:?}, {in_window} objects in the window"
    );
    assert!(count("s3:GetObject") >= in_window - 1);
    let stream_reads = count("kinesis:GetRecords");
    assert!(count("kinesis:ListShards") <= 1);
    assert!(
        count("kinesis:GetShardIterator") <= (RIDE_EVENTS - ARCHIVED) as usize,
        "{requests:?}"
    );
    // Not a read of the tail: 100,000 records are 10 or more full pages per shard.
    assert!(
        stream_reads <= 2 * (RIDE_EVENTS - ARCHIVED) as usize,
        "{requests:?}"
    );
    let total: usize = requests.values().sum();
    assert!(
        total < object_count / 20,
        "{total} requests, against {object_count} objects"
    );
}

use futures::StreamExt as _;
