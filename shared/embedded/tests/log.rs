//! The log's contract: Kinesis semantics (partition key, one shard per entity, records in
//! order within a shard, opaque sequence numbers, reads after a position), kept on disk.

mod common;

use common::*;
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};
use timeline_core::codec::{decode_record, encode_record};
use timeline_core::ports::{EventLog, LogError, LogRecord, StreamReader};
use timeline_core::shards::{PageEnd, ReadFrom};
use timeline_embedded::{Embedded, EmbeddedError, EmbeddedOptions};
use timeline_engine::sequence::compare;

async fn read_all(log: &Embedded) -> Vec<LogRecord> {
    let mut all = Vec::new();
    for shard in log.shards().await.unwrap() {
        all.extend(read(log, &shard.id, None, 10_000).await);
    }
    all
}

fn from_after(seq: Option<&str>) -> ReadFrom {
    seq.map_or(ReadFrom::Oldest, |s| ReadFrom::After(s.to_owned()))
}

async fn read(log: &Embedded, shard: &str, seq: Option<&str>, limit: usize) -> Vec<LogRecord> {
    log.read(shard, &from_after(seq), limit)
        .await
        .unwrap()
        .records
}

async fn shard_ids(log: &Embedded) -> Vec<String> {
    log.shards()
        .await
        .unwrap()
        .into_iter()
        .map(|s| s.id)
        .collect()
}

#[tokio::test]
async fn each_entity_stays_on_one_shard_in_publish_order() {
    let dir = TempDir::new();
    let log = dir.open();
    assert_eq!(
        shard_ids(&log).await,
        ["shardId-000000000000", "shardId-000000000001"]
    );
    // Interleaved: version 1 of every ride, then version 2 of every ride, ...
    let mut published = BTreeMap::new();
    for version in 1..=3 {
        for id in 0..20 {
            let record = record(&ride(&id.to_string()), version..=version);
            let at = log.publish(&record).await.unwrap();
            published.insert(at.sequence_number.clone(), (at.shard_id, record));
        }
    }
    let all = read_all(&log).await;
    assert_eq!(all.len(), 60);
    let mut shard_of_key: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for record in &all {
        shard_of_key
            .entry(record.partition_key.clone())
            .or_default()
            .insert(record.shard_id.clone());
        // What publish answered is where the record is, and the bytes are the record's.
        let (shard, sent) = &published[&record.sequence_number];
        assert_eq!(shard, &record.shard_id);
        assert_eq!(record.data, encode_record(sent));
        assert_eq!(record.partition_key, sent.partition_key().unwrap());
    }
    assert!(shard_of_key.values().all(|shards| shards.len() == 1));
    let used: BTreeSet<&String> = shard_of_key.values().flatten().collect();
    assert_eq!(used.len(), 2, "20 entities use both shards");
    for shard in shard_ids(&log).await {
        let records = read(&log, &shard, None, 10_000).await;
        // Strictly increasing sequence numbers, as Kinesis compares them.
        assert!(records
            .windows(2)
            .all(|w| compare(&w[0].sequence_number, &w[1].sequence_number) == Ordering::Less));
        // Each entity's versions in order.
        let mut last: BTreeMap<String, u64> = BTreeMap::new();
        for r in &records {
            let version = decode_record(&r.data).unwrap().first_version().unwrap();
            let previous = last.insert(r.partition_key.clone(), version).unwrap_or(0);
            assert_eq!(version, previous + 1);
        }
    }
}

#[tokio::test]
async fn reads_go_on_after_a_position_a_page_at_a_time() {
    let dir = TempDir::new();
    let log = Embedded::open_with(
        dir.path(),
        EmbeddedOptions {
            shard_count: Some(1),
        },
    )
    .unwrap();
    for v in 1..=7 {
        log.publish(&record(&ride("r"), v..=v)).await.unwrap();
    }
    let shard = "shardId-000000000000";
    let mut after: Option<String> = None;
    let mut versions = Vec::new();
    let mut pages = 0;
    let mut ends = Vec::new();
    loop {
        let page = log
            .read(shard, &from_after(after.as_deref()), 3)
            .await
            .unwrap();
        ends.push(page.end);
        if page.records.is_empty() {
            break;
        }
        pages += 1;
        assert!(page.records.len() <= 3);
        versions.extend(
            page.records
                .iter()
                .map(|r| decode_record(&r.data).unwrap().first_version().unwrap()),
        );
        after = Some(page.records.last().unwrap().sequence_number.clone());
    }
    assert_eq!(versions, (1..=7).collect::<Vec<_>>());
    assert_eq!(pages, 3);
    // Full pages may have more behind them; the short one is the tip, and so is nothing.
    assert_eq!(
        ends,
        [
            PageEnd::Behind,
            PageEnd::Behind,
            PageEnd::CaughtUp,
            PageEnd::CaughtUp
        ]
    );

    let all = read(&log, shard, None, 100).await;
    assert!(all.iter().all(|r| r.sequence_number.len() == 20));
    // After the first record, written the way an emulator would (no padding).
    let first = all[0].sequence_number.trim_start_matches('0');
    assert_eq!(read(&log, shard, Some(first), 100).await, all[1..]);
    assert_eq!(read(&log, shard, Some("0"), 100).await, all);
    // At a record includes it; at a time starts with the first record that arrived then.
    let at = log
        .read(shard, &ReadFrom::At(all[2].sequence_number.clone()), 100)
        .await
        .unwrap();
    assert_eq!(at.records, all[2..]);
    let at_time = log
        .read(shard, &ReadFrom::Time(all[0].arrival), 100)
        .await
        .unwrap();
    assert_eq!(at_time.records, all);
    let later = all[6].arrival.plus_millis(1);
    assert!(log
        .read(shard, &ReadFrom::Time(later), 100)
        .await
        .unwrap()
        .records
        .is_empty());
    // A 56-digit number is after everything this log has written.
    let real = "49590338271490256608559692538361571095921575989136588898";
    assert!(read(&log, shard, Some(real), 100).await.is_empty());
    // A limit of 0 reads one record, as GetRecords' smallest page.
    assert_eq!(read(&log, shard, None, 0).await.len(), 1);
}

#[tokio::test]
async fn an_unknown_shard_or_position_is_refused() {
    let dir = TempDir::new();
    let log = dir.open();
    for shard in ["shardId-000000000002", "shard-0", "shardId-0"] {
        assert!(matches!(
            log.read(shard, &ReadFrom::Oldest, 10).await,
            Err(LogError::Unavailable(_))
        ));
    }
    assert!(matches!(
        log.read("shardId-000000000000", &from_after(Some("LATEST")), 10)
            .await,
        Err(LogError::Unavailable(_))
    ));
}

#[tokio::test]
async fn a_record_over_one_mebibyte_is_refused() {
    let dir = TempDir::new();
    let log = dir.open();
    let mut big = record(&ride("big"), 1..=1);
    big.events[0].data = serde_json::json!({ "blob": "x".repeat(1024 * 1024) });
    assert!(matches!(
        log.publish(&big).await,
        Err(LogError::TooLarge(_))
    ));
    assert!(read_all(&log).await.is_empty());
}

#[tokio::test]
async fn records_carry_their_arrival_time() {
    let dir = TempDir::new();
    let log = dir.open();
    let before = chrono::Utc::now().timestamp_millis();
    log.publish(&record(&ride("t"), 1..=1)).await.unwrap();
    let after = chrono::Utc::now().timestamp_millis();
    let arrival = read_all(&log).await[0].arrival.as_millis();
    assert!(before <= arrival && arrival <= after);
}

#[tokio::test]
async fn the_log_survives_reopening_and_sequence_numbers_keep_growing() {
    let dir = TempDir::new();
    let before = {
        let log = dir.open();
        for id in 0..10 {
            log.publish(&record(&ride(&id.to_string()), 1..=1))
                .await
                .unwrap();
        }
        read_all(&log).await
    };
    let log = dir.open();
    assert_eq!(read_all(&log).await, before);
    let last = before
        .iter()
        .map(|r| r.sequence_number.clone())
        .max_by(|a, b| compare(a, b))
        .unwrap();
    let next = log.publish(&record(&ride("0"), 2..=2)).await.unwrap();
    assert_eq!(compare(&last, &next.sequence_number), Ordering::Less);
    // Same entity, same shard as before the restart.
    let shard_before = &before
        .iter()
        .find(|r| r.partition_key == "ride#0")
        .unwrap()
        .shard_id;
    assert_eq!(&next.shard_id, shard_before);
}

#[tokio::test]
async fn a_directory_keeps_its_shard_count() {
    let dir = TempDir::new();
    let four = Embedded::open_with(
        dir.path(),
        EmbeddedOptions {
            shard_count: Some(4),
        },
    )
    .unwrap();
    assert_eq!(shard_ids(&four).await.len(), 4);
    drop(four);
    // Opening without a count keeps the directory's; asking for another is refused.
    assert_eq!(dir.open().shard_count(), 4);
    match Embedded::open_with(
        dir.path(),
        EmbeddedOptions {
            shard_count: Some(2),
        },
    ) {
        Err(EmbeddedError::ShardCountMismatch {
            stored: 4,
            requested: 2,
            ..
        }) => {}
        other => panic!("expected a shard count mismatch, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_handles_on_one_directory_write_one_log() {
    // As two processes would (a runner and an operator CLI): separate connections.
    let dir = TempDir::new();
    let (a, b) = (dir.open(), dir.open());
    let mut tasks = Vec::new();
    for (n, log) in [a.clone(), b.clone()].into_iter().enumerate() {
        tasks.push(tokio::spawn(async move {
            for v in 1..=50 {
                log.publish(&record(&ride(&format!("w{n}")), v..=v))
                    .await
                    .unwrap();
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let all = read_all(&a).await;
    assert_eq!(all.len(), 100);
    let unique: BTreeSet<&String> = all.iter().map(|r| &r.sequence_number).collect();
    assert_eq!(unique.len(), 100);
    assert_eq!(read_all(&b).await, all);
}

#[tokio::test]
async fn one_entity_is_read_through_its_index_in_order_and_alone() {
    let dir = TempDir::new();
    let log = dir.open();
    for version in 1..=3 {
        for id in ["a", "b", "c"] {
            log.publish(&record(&ride(id), version..=version))
                .await
                .unwrap();
        }
    }
    let b = log
        .read_key("ride#b", &ReadFrom::Oldest)
        .await
        .unwrap()
        .expect("indexed");
    let versions: Vec<u64> = b
        .iter()
        .map(|r| decode_record(&r.data).unwrap().events[0].version)
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    assert!(b.iter().all(|r| r.partition_key == "ride#b"));
    // Same records, same positions as a shard read gives.
    let all = read_all(&log).await;
    let from_shards: Vec<&LogRecord> = all.iter().filter(|r| r.partition_key == "ride#b").collect();
    assert_eq!(b.iter().collect::<Vec<_>>(), from_shards);
    assert_eq!(
        log.read_key("ride#none", &ReadFrom::Oldest).await.unwrap(),
        Some(vec![])
    );
    // From a position: at a record, or after one.
    let from_second = log
        .read_key("ride#b", &ReadFrom::At(b[1].sequence_number.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(from_second, b[1..]);
    let after_second = log
        .read_key("ride#b", &ReadFrom::After(b[1].sequence_number.clone()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(after_second, b[2..]);
}

#[tokio::test]
async fn every_key_hashes_into_the_range_of_the_shard_it_is_on() {
    for count in [1, 2, 3, 4, 7] {
        let dir = TempDir::new();
        let log = Embedded::open_with(
            dir.path(),
            EmbeddedOptions {
                shard_count: Some(count),
            },
        )
        .unwrap();
        let shards = log.shards().await.unwrap();
        // The ranges cover the hash space without a hole or an overlap.
        assert_eq!(shards[0].hash_range.0, 0);
        assert_eq!(shards.last().unwrap().hash_range.1, u128::MAX);
        for pair in shards.windows(2) {
            assert_eq!(pair[0].hash_range.1 + 1, pair[1].hash_range.0);
        }
        for id in 0..200 {
            let key = format!("ride#{id}");
            let published = log
                .publish(&record(&ride(&id.to_string()), 1..=1))
                .await
                .unwrap();
            let holder = timeline_core::shards::lineage(&shards, log.key_hash(&key));
            assert_eq!(holder.len(), 1, "{key}");
            assert_eq!(
                holder[0].id, published.shard_id,
                "{key} with {count} shards"
            );
        }
    }
}
