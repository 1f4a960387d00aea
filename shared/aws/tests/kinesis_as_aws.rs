//! The Kinesis and S3 adapters against moto behind the fault proxy, which makes the stream
//! behave as Kinesis documents: empty pages while the shard holds more, expiring iterators,
//! throttling, resharding with closed parents, paginated listings, 56-digit sequence numbers.
//! Each test first shows the fault is real (a naive read meets it), then that the adapter
//! reads everything anyway.

use std::collections::BTreeMap;
use std::time::Duration;
use timeline_aws::archive::S3Archive;
use timeline_aws::stream_reader::{read_all, KinesisReader};
use timeline_core::ports::{EventLog, LogError, StreamReader};
use timeline_core::shards::{lineage, PageEnd, ReadFrom};
use timeline_core::CommitRecord;
use timeline_core::EventEnvelope;
use timeline_core::Metadata;
use timeline_core::Timestamp;
use timeline_testkit::faults::Faults;
use timeline_testkit::TestEnv;

fn event(id: &str, version: u64) -> EventEnvelope {
    let at: Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
    EventEnvelope {
        event_id: format!("{id}-{version}"),
        aggregate_type: "ride".into(),
        aggregate_id: id.into(),
        version,
        event_type: "RideBooked".into(),
        schema_version: 1,
        occurred_at: at.plus_millis(version as i64),
        recorded_at: at.plus_millis(version as i64),
        metadata: Metadata {
            command_id: format!("c-{id}-{version}"),
            correlation_id: None,
            causation_id: None,
            actor: "t".into(),
        },
        data: serde_json::json!({ "n": version }),
    }
}

async fn publish(env: &TestEnv, id: &str, versions: std::ops::RangeInclusive<u64>) {
    for v in versions {
        env.log()
            .publish(&CommitRecord::new(vec![event(id, v)]).unwrap())
            .await
            .unwrap();
    }
}

/// Each key's versions, in the order the stream gave them.
fn versions(records: &[timeline_aws::stream_reader::StreamRecord]) -> BTreeMap<String, Vec<u64>> {
    let mut by_key: BTreeMap<String, Vec<u64>> = BTreeMap::new();
    for r in records {
        let commit = timeline_core::codec::decode_record(&r.data).unwrap();
        by_key
            .entry(r.partition_key.clone())
            .or_default()
            .extend(commit.events.iter().map(|e| e.version));
    }
    by_key
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_page_is_not_the_end_of_a_shard() {
    let (env, proxy) = timeline_testkit::proxy_env!();
    for id in 0..6 {
        publish(&env, &format!("e{id}"), 1..=3).await;
    }
    let everything = read_all(env.clients.kinesis(), &env.names.event_stream)
        .await
        .unwrap();
    assert_eq!(everything.len(), 18);

    proxy.set(Faults {
        empty_page: 1.0,
        ..Faults::none()
    });
    // The fault is real: a fresh iterator's first page is empty, and says more follows.
    let reader = KinesisReader::new(env.clients.kinesis().clone(), &env.names.event_stream);
    let shard = &reader.shards().await.unwrap()[0];
    let client = env.clients.kinesis();
    let iterator = client
        .get_shard_iterator()
        .stream_name(&env.names.event_stream)
        .shard_id(&shard.id)
        .shard_iterator_type(aws_sdk_kinesis::types::ShardIteratorType::TrimHorizon)
        .send()
        .await
        .unwrap()
        .shard_iterator
        .unwrap();
    let first = client
        .get_records()
        .shard_iterator(iterator)
        .send()
        .await
        .unwrap();
    assert!(first.records().is_empty());
    assert!(first.millis_behind_latest().unwrap() > 0, "more follows");
    // The adapter reads past every empty page.
    let read = read_all(env.clients.kinesis(), &env.names.event_stream)
        .await
        .unwrap();
    assert_eq!(versions(&read), versions(&everything));
    assert!(proxy.injected()["empty_page"] > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_iterator_is_renewed_from_where_the_read_was() {
    let (env, proxy) = timeline_testkit::proxy_env!();
    publish(&env, "x", 1..=5).await;
    let reader = KinesisReader::new(env.clients.kinesis().clone(), &env.names.event_stream);
    let shards = reader.shards().await.unwrap();
    let shard = lineage(&shards, reader.key_hash("ride#x"))[0].id.clone();
    // Two at a time: the reader keeps the next iterator for the next page.
    let page = reader.read(&shard, &ReadFrom::Oldest, 2).await.unwrap();
    assert_eq!(page.records.len(), 2);
    // The kept iterator outlives its life, as one does after 5 minutes idle.
    proxy.set(Faults {
        iterator_life: Duration::from_millis(50),
        ..Faults::none()
    });
    tokio::time::sleep(Duration::from_millis(120)).await;
    let next = page.next_from(&ReadFrom::Oldest);
    let rest = reader.read(&shard, &next, 10).await.unwrap();
    let versions: Vec<u64> = rest
        .records
        .iter()
        .map(|r| timeline_core::codec::decode_record(&r.data).unwrap().events[0].version)
        .collect();
    assert_eq!(versions, [3, 4, 5], "nothing skipped, nothing twice");
    assert_eq!(rest.end, PageEnd::CaughtUp);
    assert!(proxy.requests()["kinesis:GetShardIterator"] >= 2, "renewed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_reads_come_back_as_throttling_and_are_retried() {
    let (env, proxy) = timeline_testkit::proxy_env!();
    publish(&env, "t", 1..=4).await;
    let reader = KinesisReader::new(env.clients.kinesis().clone(), &env.names.event_stream);
    let shard = reader.shards().await.unwrap()[0].id.clone();
    proxy.set(Faults {
        throttle: 1.0,
        only: vec!["GetRecords".into()],
        ..Faults::none()
    });
    // Once the SDK's own retries are spent, the caller is told it was throttled.
    match reader.read(&shard, &ReadFrom::Oldest, 10).await {
        Err(LogError::Throttled(_)) => {}
        other => panic!("expected throttling, got {other:?}"),
    }
    // At a rate where retries succeed, everything is read.
    proxy.set(Faults {
        throttle: 0.6,
        ..Faults::none()
    });
    let read = read_all(env.clients.kinesis(), &env.names.event_stream)
        .await
        .unwrap();
    assert_eq!(read.len(), 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_keys_records_go_on_in_the_child_after_a_split_and_a_merge() {
    let (env, proxy) = timeline_testkit::proxy_env!();
    let client = env.clients.kinesis();
    let stream = &env.names.event_stream;
    let reader = KinesisReader::new(client.clone(), stream);
    let key = "ride#k";
    let hash = reader.key_hash(key);
    publish(&env, "k", 1..=3).await;
    publish(&env, "other", 1..=2).await;

    // Split the key's shard at its hash: the key goes on in the upper child.
    let parent = env.split_at(key).await;
    publish(&env, "k", 4..=5).await;
    // Merge the two children back: the key goes on in the grandchild.
    env.merge_children(&parent).await;
    publish(&env, "k", 6..=7).await;

    let shards = reader.shards().await.unwrap();
    let line: Vec<&str> = lineage(&shards, hash)
        .iter()
        .map(|s| s.id.as_str())
        .collect();
    assert_eq!(line.len(), 3, "parent, child, grandchild: {line:?}");
    assert!(shards.iter().filter(|s| s.closed).count() >= 3);
    // A closed parent keeps its records, and its read ends (no next iterator).
    let first = reader.read(line[0], &ReadFrom::Oldest, 100).await.unwrap();
    assert_eq!(first.end, PageEnd::Closed);
    assert!(first.records.iter().any(|r| r.partition_key == key));
    // Parents first, the key's versions come in order across the three shards.
    let read = read_all(client, stream).await.unwrap();
    assert_eq!(versions(&read)[key], (1..=7).collect::<Vec<_>>());
    assert_eq!(versions(&read)["ride#other"], [1, 2]);
    let _ = proxy;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shard_listings_and_archive_listings_page_and_are_read_whole() {
    let (env, proxy) = timeline_testkit::proxy_env!();
    let reader = KinesisReader::new(env.clients.kinesis().clone(), &env.names.event_stream);
    let all = reader.shards().await.unwrap();
    let archive = S3Archive::new(
        env.clients.s3().clone(),
        &env.names.archive_bucket,
        "events/",
    );
    let at: Timestamp = "2026-11-28T10:00:00Z".parse().unwrap();
    let mut keys = Vec::new();
    for i in 0..7 {
        let key = timeline_engine::archive::object_key(
            "events/",
            "t",
            at.plus_millis(i * 60_000),
            &format!("o{i}"),
            false,
        );
        archive.put_object(&key, b"".to_vec()).await.unwrap();
        keys.push(key);
    }
    proxy.set(Faults {
        s3_page: Some(2),
        shards_page: Some(1),
        ..Faults::none()
    });
    proxy.reset_requests();
    assert_eq!(reader.shards().await.unwrap(), all);
    assert_eq!(archive.list_keys(None, None).await.unwrap(), keys);
    let requests = proxy.requests();
    assert_eq!(requests["s3:ListObjectsV2"], 4, "7 keys in pages of 2");
    assert_eq!(
        requests["kinesis:ListShards"],
        all.len(),
        "one shard a page"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sequence_numbers_are_as_long_as_kinesiss_and_order_within_a_shard() {
    let (env, _proxy) = timeline_testkit::proxy_env!();
    let mut last = None::<(String, String)>;
    for v in 1..=3 {
        let published = env
            .log()
            .publish(&CommitRecord::new(vec![event("s", v)]).unwrap())
            .await
            .unwrap();
        assert_eq!(published.sequence_number.len(), 56);
        if let Some((shard, seq)) = &last {
            assert_eq!(shard, &published.shard_id);
            assert_eq!(
                timeline_engine::sequence::compare(seq, &published.sequence_number),
                std::cmp::Ordering::Less
            );
        }
        last = Some((published.shard_id, published.sequence_number));
    }
    // Read back from a position given as a 56-digit number.
    let reader = KinesisReader::new(env.clients.kinesis().clone(), &env.names.event_stream);
    let (shard, seq) = last.unwrap();
    let page = reader
        .read(&shard, &ReadFrom::At(seq.clone()), 10)
        .await
        .unwrap();
    assert_eq!(page.records[0].sequence_number, seq);
}
