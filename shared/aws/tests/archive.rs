//! The archive path against moto over HTTP: Kinesis -> the Firehose pump -> S3 objects in
//! Firehose's layout -> `S3Archive` listing and reading them back, in every shape Firehose
//! writes, with corrupt objects reported and time ranges listing only the hours they need.

use futures::StreamExt;
use serde_json::json;
use std::collections::BTreeMap;
use std::time::Duration;
use timeline_aws::archive::S3Archive;
use timeline_aws::pump::{FirehosePump, PumpConfig, PumpError};
use timeline_core::codec::{decode_record, encode_record};
use timeline_core::ports::ArchiveError;
use timeline_core::ports::EventLog;
use timeline_core::CommitRecord;
use timeline_core::EventEnvelope;
use timeline_core::Metadata;
use timeline_core::Timestamp;
use timeline_engine::archive::{
    encode_object, is_gzip, object_key, pack_records, parse_object_key,
};
use timeline_testkit::{unique, TestEnv};

const PREFIX: &str = "events/";

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn event(kind: &str, id: &str, version: u64) -> EventEnvelope {
    let now = Timestamp::from_datetime(chrono::Utc::now());
    EventEnvelope {
        event_id: uuid::Uuid::new_v4().to_string(),
        aggregate_type: kind.into(),
        aggregate_id: id.into(),
        version,
        event_type: if kind == "ride" {
            "FareAdjusted"
        } else {
            "ProcessingProgressed"
        }
        .into(),
        schema_version: 1,
        occurred_at: now,
        recorded_at: now,
        metadata: Metadata {
            command_id: uuid::Uuid::new_v4().to_string(),
            correlation_id: Some("corr".into()),
            causation_id: None,
            actor: "test-user".into(),
        },
        data: json!({ "version": version, "note": "a line\nbreak and {braces}" }),
    }
}

/// Commit records of a few entities, interleaved, some holding a run of several events.
fn commits(entities: usize, per_entity: u64) -> Vec<CommitRecord> {
    let mut out = Vec::new();
    let mut next = vec![1u64; entities];
    for round in 0..per_entity {
        for (n, version) in next.iter_mut().enumerate() {
            let (kind, id) = if n % 2 == 0 {
                ("ride", format!("r{n}"))
            } else {
                ("video", format!("v{n}"))
            };
            let run = 1 + (round + n as u64) % 3;
            let events = (0..run).map(|i| event(kind, &id, *version + i)).collect();
            *version += run;
            out.push(CommitRecord::new(events).unwrap());
        }
    }
    out
}

async fn publish(env: &TestEnv, records: &[CommitRecord]) {
    let log = env.log();
    for record in records {
        log.publish(record).await.expect("publish to the stream");
    }
}

async fn bucket(env: &TestEnv) -> String {
    let name = unique("archive");
    env.clients
        .s3()
        .create_bucket()
        .bucket(&name)
        .send()
        .await
        .expect("create the archive bucket");
    name
}

fn archive(env: &TestEnv, bucket: &str) -> S3Archive {
    S3Archive::new(env.clients.s3().clone(), bucket, PREFIX)
}

fn pump(env: &TestEnv, bucket: &str, config: PumpConfig) -> FirehosePump {
    FirehosePump::with_bucket(
        env.clients.kinesis().clone(),
        env.clients.s3().clone(),
        &env.names.event_stream,
        bucket,
        config,
    )
}

/// The stream's records, decoded, in shard order.
async fn stream_records(env: &TestEnv) -> Vec<CommitRecord> {
    env.records()
        .await
        .iter()
        .map(|r| decode_record(&r.data).expect("stream records decode"))
        .collect()
}

/// Each entity's records, in the order given.
fn per_entity(records: &[CommitRecord]) -> BTreeMap<String, Vec<CommitRecord>> {
    let mut map: BTreeMap<String, Vec<CommitRecord>> = BTreeMap::new();
    for r in records {
        map.entry(r.partition_key().unwrap())
            .or_default()
            .push(r.clone());
    }
    map
}

async fn read_all(
    archive: &S3Archive,
    keys: Vec<String>,
) -> Vec<(String, Result<Vec<CommitRecord>, ArchiveError>)> {
    archive.read_objects(keys, 4).collect().await
}

async fn raw_object(env: &TestEnv, bucket: &str, key: &str) -> Vec<u8> {
    let out = env
        .clients
        .s3()
        .get_object()
        .bucket(bucket)
        .key(key)
        .send()
        .await
        .unwrap();
    out.body.collect().await.unwrap().into_bytes().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pump_moves_every_stream_record_into_firehose_objects_gzip_and_plain() {
    for gzip in [true, false] {
        let env = timeline_testkit::test_env!();
        let bucket = bucket(&env).await;
        let records = commits(4, 3);
        let before = Timestamp::from_datetime(chrono::Utc::now()).plus_millis(-1000);
        publish(&env, &records).await;
        let after = Timestamp::from_datetime(chrono::Utc::now()).plus_millis(1000);

        let mut config = PumpConfig::new("ride-events");
        config.gzip = gzip;
        let mut pump = pump(&env, &bucket, config);
        let polled = pump.poll().await.unwrap();
        assert_eq!(polled.records_read, records.len());
        assert_eq!(
            polled.objects_written, 0,
            "the buffer is neither full nor old yet"
        );
        let flushed = pump.flush().await.unwrap();
        assert_eq!(flushed.objects_written, 1);
        assert_eq!(flushed.keys.len(), 1);

        let key = &flushed.keys[0];
        let parsed =
            parse_object_key(PREFIX, key).unwrap_or_else(|| panic!("{key} is in the layout"));
        assert_eq!(parsed.gzip, gzip, "{key}");
        assert_eq!(key.ends_with(".gz"), gzip);
        assert_eq!(parsed.delivery_stream, "ride-events");
        assert_eq!(parsed.delivery_stream_version, 1);
        assert!(uuid::Uuid::parse_str(&parsed.id).is_ok_and(|u| u.get_version_num() == 4));
        // Named after the arrival of its first record (Kinesis' approximate arrival
        // timestamp, to the second), its folder the hour of that time.
        let first = env.records().await[0].approximate_arrival_millis.unwrap();
        assert_eq!(
            parsed.written_at,
            Timestamp::from_millis(first - first.rem_euclid(1000)).unwrap()
        );
        assert!(
            parsed.written_at >= before.plus_millis(-1000) && parsed.written_at <= after,
            "{key}"
        );
        assert_eq!(
            key,
            &object_key(PREFIX, "ride-events", parsed.written_at, &parsed.id, gzip)
        );

        let body = raw_object(&env, &bucket, key).await;
        assert_eq!(is_gzip(&body), gzip);
        assert_eq!(flushed.bytes_written, body.len());
        if !gzip {
            let text = String::from_utf8(body).unwrap();
            assert_eq!(text.lines().count(), records.len(), "one record a line");
            assert!(text.ends_with('\n'));
        }

        let archive = archive(&env, &bucket);
        assert_eq!(archive.list_keys(None, None).await.unwrap(), flushed.keys);
        let archived = archive.read_object(key).await.unwrap();
        assert_eq!(
            archived,
            stream_records(&env).await,
            "exactly the stream's records, in its order"
        );
        assert_eq!(per_entity(&archived), per_entity(&records));

        // Nothing new: polling again reads nothing and writes nothing.
        let again = pump.poll().await.unwrap();
        assert_eq!((again.records_read, again.objects_written), (0, 0));
        assert_eq!(pump.flush().await.unwrap().objects_written, 0);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_buffer_makes_several_objects_that_read_back_as_the_stream_per_entity() {
    let env = timeline_testkit::test_env!();
    let bucket = bucket(&env).await;
    let records = commits(6, 4);
    publish(&env, &records).await;
    let stream = stream_records(&env).await;

    let mut config = PumpConfig::new("ride-events");
    config.buffer_bytes = 3 * encode_record(&records[0]).len();
    let mut pump = pump(&env, &bucket, config);
    let mut report = pump.poll().await.unwrap();
    assert_eq!(report.records_read, records.len());
    assert!(report.objects_written >= 4, "{report:?}");
    report.add(pump.flush().await.unwrap());
    assert_eq!(report.keys.len(), report.objects_written);

    let archive = archive(&env, &bucket);
    let mut listed = archive.list_keys(None, None).await.unwrap();
    let mut written = report.keys.clone();
    written.sort();
    assert_eq!(
        listed, written,
        "every object written is listed, sorted by key"
    );

    // In the order they were written, the objects hold exactly the stream's records in its
    // order (shard after shard, each shard in order).
    let in_write_order: Vec<CommitRecord> = read_all(&archive, report.keys.clone())
        .await
        .into_iter()
        .flat_map(|(key, r)| r.unwrap_or_else(|e| panic!("{key}: {e}")))
        .collect();
    assert_eq!(in_write_order, stream);

    // In key order: keys name the second their first record arrived, so objects started
    // in the same second may list either way round (as with Firehose); per entity the
    // records are exactly the stream's, each once, and the written_at times never go back.
    let times: Vec<Timestamp> = listed
        .iter()
        .map(|k| parse_object_key(PREFIX, k).unwrap().written_at)
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{listed:?}");
    let results = read_all(&archive, std::mem::take(&mut listed)).await;
    let mut in_key_order = Vec::new();
    for (key, result) in results {
        let records = result.unwrap_or_else(|e| panic!("{key}: {e}"));
        assert!(!records.is_empty(), "{key}");
        in_key_order.extend(records);
    }
    let mut by_entity = per_entity(&in_key_order);
    for records in by_entity.values_mut() {
        records.sort_by_key(|r| r.first_version());
    }
    assert_eq!(by_entity, per_entity(&stream));
    assert_eq!(
        per_entity(&stream),
        per_entity(&records),
        "the stream keeps each entity's order"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_polls_continue_where_they_stopped_and_an_elapsed_interval_delivers() {
    let env = timeline_testkit::test_env!();
    let bucket = bucket(&env).await;
    let records = commits(3, 4);
    let (first, second) = records.split_at(5);

    let mut config = PumpConfig::new("s");
    config.buffer_interval = Duration::from_millis(300);
    let mut pump = pump(&env, &bucket, config);
    let empty = pump.poll().await.unwrap();
    assert_eq!(
        (empty.records_read, empty.objects_written),
        (0, 0),
        "an empty stream"
    );

    publish(&env, first).await;
    let one = pump.poll().await.unwrap();
    assert_eq!((one.records_read, one.objects_written), (first.len(), 0));
    assert_eq!(pump.buffered().0, first.len());
    tokio::time::sleep(Duration::from_millis(350)).await;
    publish(&env, second).await;
    let two = pump.poll().await.unwrap();
    assert_eq!(two.records_read, second.len(), "only what is new");
    assert_eq!(
        two.objects_written, 1,
        "the interval passed since the first buffered record"
    );
    assert_eq!(pump.buffered().0, 0);
    let three = pump.poll().await.unwrap();
    assert_eq!((three.records_read, three.objects_written), (0, 0));

    let archive = archive(&env, &bucket);
    let keys = archive.list_keys(None, None).await.unwrap();
    assert_eq!(keys, two.keys);
    let archived = archive.read_object(&keys[0]).await.unwrap();
    assert_eq!(archived, stream_records(&env).await, "each record once");
    assert_eq!(per_entity(&archived), per_entity(&records));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_delivery_is_kept_and_retried_on_the_next_poll() {
    let env = timeline_testkit::test_env!();
    let bucket = unique("later");
    let records = commits(2, 2);
    publish(&env, &records).await;

    let mut config = PumpConfig::new("s");
    config.buffer_interval = Duration::ZERO;
    let mut pump = pump(&env, &bucket, config);
    let failed = pump.poll().await;
    match failed {
        Err(PumpError::Archive(ArchiveError::Unavailable { target, .. })) => {
            assert!(
                target.starts_with(&format!("s3://{bucket}/{PREFIX}")),
                "{target}"
            )
        }
        other => panic!("the bucket does not exist yet: {other:?}"),
    }
    assert!(pump.poll().await.is_err(), "still failing, still kept");

    env.clients
        .s3()
        .create_bucket()
        .bucket(&bucket)
        .send()
        .await
        .unwrap();
    let retried = pump.poll().await.unwrap();
    assert_eq!(
        retried.records_read, 0,
        "the records were read once, before the failure"
    );
    assert_eq!(retried.objects_written, 1);
    let archive = archive(&env, &bucket);
    assert_eq!(archive.list_keys(None, None).await.unwrap(), retried.keys);
    assert_eq!(
        archive.read_object(&retried.keys[0]).await.unwrap(),
        stream_records(&env).await
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_in_every_format_firehose_writes_are_read() {
    let env = timeline_testkit::test_env!();
    let bucket = bucket(&env).await;
    let archive = archive(&env, &bucket);
    let records = commits(4, 2);
    let raw: Vec<Vec<u8>> = records.iter().map(encode_record).collect();
    let t = at("2026-03-01T10:00:00Z");
    // (newline, gzip): NDJSON and back-to-back records, each compressed and not.
    let formats = [(true, false), (true, true), (false, false), (false, true)];
    let mut keys = Vec::new();
    for (i, (newline, gzip)) in formats.into_iter().enumerate() {
        let chunk = &raw[i * 2..i * 2 + 2];
        let key = object_key(
            PREFIX,
            "s",
            t.plus_millis(i as i64 * 1000),
            &uuid::Uuid::new_v4().to_string(),
            gzip,
        );
        archive
            .put_object(&key, pack_records(chunk, newline, gzip))
            .await
            .unwrap();
        keys.push(key);
    }
    // The name does not decide: a gzip body under a plain name is still read.
    let misnamed = object_key(
        PREFIX,
        "s",
        t.plus_millis(5000),
        &uuid::Uuid::new_v4().to_string(),
        false,
    );
    archive
        .put_object(&misnamed, encode_object(&records[..1], true))
        .await
        .unwrap();
    keys.push(misnamed);

    assert_eq!(archive.list_keys(None, None).await.unwrap(), keys);
    let read = read_all(&archive, keys.clone()).await;
    assert_eq!(
        read.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>(),
        keys,
        "in key order"
    );
    let all: Vec<CommitRecord> = read
        .into_iter()
        .flat_map(|(k, r)| r.unwrap_or_else(|e| panic!("{k}: {e}")))
        .collect();
    let mut expected = records.clone();
    expected.push(records[0].clone());
    assert_eq!(all, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_object_is_reported_with_its_key_and_the_others_are_still_read() {
    let env = timeline_testkit::test_env!();
    let bucket = bucket(&env).await;
    let archive = archive(&env, &bucket);
    let records = commits(3, 2);
    let t = at("2026-03-01T10:00:00Z");
    let key = |second: i64| {
        object_key(
            PREFIX,
            "s",
            t.plus_millis(second * 1000),
            &uuid::Uuid::new_v4().to_string(),
            true,
        )
    };
    let (good1, bad, good2, partial) = (key(1), key(2), key(3), key(4));
    archive
        .put_object(&good1, encode_object(&records[..2], true))
        .await
        .unwrap();
    let truncated = encode_object(&records[2..4], true);
    archive
        .put_object(&bad, truncated[..truncated.len() / 2].to_vec())
        .await
        .unwrap();
    archive
        .put_object(&good2, encode_object(&records[4..], true))
        .await
        .unwrap();
    let mut half_line = encode_object(&records[..1], false);
    half_line.extend_from_slice(&encode_record(&records[1])[..20]);
    archive.put_object(&partial, half_line).await.unwrap();
    let missing = key(5);

    let mut keys = archive.list_keys(None, None).await.unwrap();
    assert_eq!(
        keys,
        vec![good1.clone(), bad.clone(), good2.clone(), partial.clone()]
    );
    keys.push(missing.clone());
    let read = read_all(&archive, keys.clone()).await;
    assert_eq!(read.len(), 5);
    assert_eq!(read[0].1.as_ref().unwrap(), &records[..2].to_vec());
    match &read[1] {
        (k, Err(ArchiveError::Corrupt { key, .. })) => assert!(k == &bad && key == &bad),
        other => panic!("expected {bad} reported corrupt: {other:?}"),
    }
    assert_eq!(read[2].1.as_ref().unwrap(), &records[4..].to_vec());
    match &read[3] {
        (
            _,
            Err(ArchiveError::Corrupt {
                key,
                records_before: 1,
                offset,
                ..
            }),
        ) => {
            assert_eq!(key, &partial);
            assert_eq!(*offset, encode_record(&records[0]).len());
        }
        other => panic!("expected {partial} reported corrupt after one record: {other:?}"),
    }
    match &read[4] {
        (_, Err(ArchiveError::Unavailable { target, .. })) => assert!(target.ends_with(&missing)),
        other => panic!("expected {missing} reported missing: {other:?}"),
    }

    // Leniently: the good records before the corruption, and the corruption.
    let lenient: Vec<_> = archive.read_objects_lenient(keys, 2).collect().await;
    let partial_read = lenient[3].1.as_ref().unwrap();
    assert_eq!(partial_read.records, records[..1].to_vec());
    assert_eq!(
        partial_read.error.as_ref().and_then(|e| e.corrupt_key()),
        Some(partial.as_str())
    );
    assert!(lenient[0].1.as_ref().unwrap().error.is_none());
    assert!(lenient[4].1.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_keys_with_a_time_range_lists_only_the_hours_that_can_hold_it() {
    let env = timeline_testkit::test_env!();
    let bucket = bucket(&env).await;
    let archive = archive(&env, &bucket);
    let body = encode_object(&commits(1, 1), true);
    let mut by_hour: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for time in [
        "2025-12-31T22:10:00Z",
        "2025-12-31T23:59:59Z",
        "2026-01-01T00:00:00Z",
        "2026-01-01T00:30:00Z",
        "2026-01-01T01:05:00Z",
        "2026-01-01T02:45:00Z",
        "2026-01-01T03:00:00Z",
        "2026-01-02T00:00:00Z",
    ] {
        let key = object_key(
            PREFIX,
            "s",
            at(time),
            &uuid::Uuid::new_v4().to_string(),
            true,
        );
        archive.put_object(&key, body.clone()).await.unwrap();
        by_hour.entry(time[..13].to_owned()).or_default().push(key);
    }
    // Outside the layout or the prefix.
    archive
        .put_object("events/manifest.json", b"{}".to_vec())
        .await
        .unwrap();
    archive
        .put_object(
            "other/2026/01/01/00/s-1-2026-01-01-00-00-00-x",
            body.clone(),
        )
        .await
        .unwrap();

    let hours = |hs: &[&str]| -> Vec<String> {
        let mut keys: Vec<String> = hs.iter().flat_map(|h| by_hour[*h].clone()).collect();
        keys.sort();
        keys
    };
    let list = |from: Option<&str>, to: Option<&str>| {
        let archive = archive.clone();
        let (from, to) = (from.map(at), to.map(at));
        async move { archive.list_keys(from, to).await.unwrap() }
    };

    // Inside one hour, more than 15 minutes from either end: that hour only.
    assert_eq!(
        list(Some("2026-01-01T00:20:00Z"), Some("2026-01-01T00:40:00Z")).await,
        hours(&["2026-01-01T00"])
    );
    // Near the start of an hour: the hour before may hold an object still buffering then.
    assert_eq!(
        list(Some("2026-01-01T00:10:00Z"), Some("2026-01-01T00:40:00Z")).await,
        hours(&["2025-12-31T23", "2026-01-01T00"])
    );
    // Near the end: the next hour too, across a day and a year boundary.
    assert_eq!(
        list(Some("2025-12-31T23:20:00Z"), Some("2025-12-31T23:50:00Z")).await,
        hours(&["2025-12-31T23", "2026-01-01T00"])
    );
    // Several hours, and an empty hour in between costs nothing.
    assert_eq!(
        list(Some("2026-01-01T00:20:00Z"), Some("2026-01-01T02:50:00Z")).await,
        hours(&[
            "2026-01-01T00",
            "2026-01-01T01",
            "2026-01-01T02",
            "2026-01-01T03"
        ])
    );
    // Open ends.
    assert_eq!(
        list(None, Some("2026-01-01T00:40:00Z")).await,
        hours(&["2025-12-31T22", "2025-12-31T23", "2026-01-01T00"])
    );
    assert_eq!(
        list(Some("2026-01-01T03:20:00Z"), None).await,
        [
            hours(&["2026-01-01T03", "2026-01-02T00"]),
            vec!["events/manifest.json".to_owned()]
        ]
        .concat()
    );
    // A range with no objects, and one that ends before it starts.
    assert!(
        list(Some("2026-01-01T10:00:00Z"), Some("2026-01-01T12:00:00Z"))
            .await
            .is_empty()
    );
    assert!(
        list(Some("2026-01-01T03:00:00Z"), Some("2026-01-01T01:00:00Z"))
            .await
            .is_empty()
    );
    // No range: everything under the prefix, the key outside the layout included.
    let everything = list(None, None).await;
    assert_eq!(everything.len(), 9);
    assert_eq!(everything.last().unwrap(), "events/manifest.json");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_pages_through_more_than_a_thousand_keys() {
    let env = timeline_testkit::test_env!();
    let bucket = bucket(&env).await;
    let archive = archive(&env, &bucket);
    let start = at("2026-05-01T10:00:00Z");
    let keys: Vec<String> = (0..1105)
        .map(|i| {
            object_key(
                PREFIX,
                "s",
                start.plus_millis(i * 7_000),
                &uuid::Uuid::new_v4().to_string(),
                false,
            )
        })
        .collect();
    futures::stream::iter(keys.clone())
        .for_each_concurrent(16, |key| {
            let archive = archive.clone();
            async move { archive.put_object(&key, Vec::new()).await.unwrap() }
        })
        .await;
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(archive.list_keys(None, None).await.unwrap(), sorted);
    // Objects from 10:00 to 12:08:48; from 12:05 (less 15 minutes): hours 11 and 12.
    let tail = archive
        .list_keys(Some(at("2026-05-01T12:05:00Z")), None)
        .await
        .unwrap();
    assert_eq!(
        tail,
        sorted
            .iter()
            .filter(|k| k.as_str() >= "events/2026/05/01/11/")
            .cloned()
            .collect::<Vec<_>>()
    );
    let empty_objects = archive
        .read_objects(tail, 8)
        .filter(|(_, r)| futures::future::ready(r.as_ref().is_ok_and(Vec::is_empty)))
        .count()
        .await;
    assert!(empty_objects > 100);
}

/// S3's checksums as the SDK checks them on the way back (S3 returns an object's checksum
/// when asked, and the SDK asks on every GetObject): for each CRC S3 offers, an object whose
/// stored checksum matches its bytes reads back, and one whose stored checksum does not is
/// refused instead of handed over; an archive object with a wrong checksum is not read as
/// records, and the same bytes stored by the archive itself read back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_read_back_only_when_their_stored_crc_matches_their_bytes() {
    use aws_sdk_s3::primitives::ByteStream;
    use aws_sdk_s3::types::{ChecksumAlgorithm, ChecksumMode};
    use base64::Engine;
    let env = timeline_testkit::test_env!();
    let bucket = bucket(&env).await;
    let s3 = env.clients.s3();
    let b64 = |bytes: &[u8]| base64::engine::general_purpose::STANDARD.encode(bytes);
    // The CRC catalogue's check values: each CRC of the ASCII digits "123456789".
    let cases = [
        (
            ChecksumAlgorithm::Crc32,
            b64(&0xcbf4_3926u32.to_be_bytes()),
            b64(&0xcbf4_3927u32.to_be_bytes()),
        ),
        (
            ChecksumAlgorithm::Crc32C,
            b64(&0xe306_9283u32.to_be_bytes()),
            b64(&0xe306_9282u32.to_be_bytes()),
        ),
        (
            ChecksumAlgorithm::Crc64Nvme,
            b64(&0xae8b_1486_0a79_9888u64.to_be_bytes()),
            b64(&0xae8b_1486_0a79_9889u64.to_be_bytes()),
        ),
    ];
    for (algorithm, right, wrong) in cases {
        for (stored, matches) in [(right, true), (wrong, false)] {
            let key = format!("check/{}-{matches}", algorithm.as_str());
            let put = s3
                .put_object()
                .bucket(&bucket)
                .key(&key)
                .body(ByteStream::from_static(b"123456789"))
                .checksum_algorithm(algorithm.clone());
            let put = match algorithm {
                ChecksumAlgorithm::Crc32 => put.checksum_crc32(&stored),
                ChecksumAlgorithm::Crc32C => put.checksum_crc32_c(&stored),
                _ => put.checksum_crc64_nvme(&stored),
            };
            put.send().await.expect("put the object");
            let got = s3
                .get_object()
                .bucket(&bucket)
                .key(&key)
                .checksum_mode(ChecksumMode::Enabled)
                .send()
                .await
                .expect("get the object");
            let returned = match algorithm {
                ChecksumAlgorithm::Crc32 => got.checksum_crc32(),
                ChecksumAlgorithm::Crc32C => got.checksum_crc32_c(),
                _ => got.checksum_crc64_nvme(),
            };
            assert_eq!(
                returned,
                Some(stored.as_str()),
                "{key}: S3 returns what it stored"
            );
            let body = got.body.collect().await;
            if matches {
                let body = body.unwrap_or_else(|e| panic!("{key}: {e}"));
                assert_eq!(body.into_bytes().as_ref(), b"123456789", "{key}");
            } else {
                assert!(
                    body.is_err(),
                    "{key}: a body that fails its checksum was handed over"
                );
            }
        }
    }

    // The archive's own read: an object whose checksum does not match is unavailable, not
    // records; the same bytes put through the archive (the SDK computes the checksum) read.
    let archive = archive(&env, &bucket);
    let records = commits(2, 2);
    let bytes = encode_object(&records, true);
    let wrong_key = "events/2026/05/01/10/ride-events-1-2026-05-01-10-00-00-wrong";
    s3.put_object()
        .bucket(&bucket)
        .key(wrong_key)
        .body(ByteStream::from(bytes.clone()))
        .checksum_algorithm(ChecksumAlgorithm::Crc64Nvme)
        .checksum_crc64_nvme(b64(&0u64.to_be_bytes()))
        .send()
        .await
        .unwrap();
    let read = archive.read_object(wrong_key).await;
    assert!(
        matches!(read, Err(ArchiveError::Unavailable { .. })),
        "{read:?}"
    );
    let right_key = "events/2026/05/01/10/ride-events-1-2026-05-01-10-00-00-right";
    archive.put_object(right_key, bytes).await.unwrap();
    assert_eq!(archive.read_object(right_key).await.unwrap(), records);
}
