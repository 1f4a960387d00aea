//! The local archive: Firehose's layout in a directory, listed and read as the S3 archive.

mod common;

use common::*;
use timeline_core::ports::ArchiveError;
use timeline_core::Timestamp;
use timeline_embedded::LocalArchive;
use timeline_engine::archive::{encode_object, object_key, DEFAULT_PREFIX};

const STREAM: &str = "ride-events";

fn key(arrival: &str, n: u128, gzip: bool) -> String {
    let id = uuid::Uuid::from_u128(n).to_string();
    object_key(DEFAULT_PREFIX, STREAM, at(arrival), &id, gzip)
}

#[test]
fn objects_round_trip_gzip_or_plain() {
    let dir = TempDir::new();
    let archive = LocalArchive::new(dir.path().join("archive"), DEFAULT_PREFIX);
    let records = vec![record(&ride("1"), 1..=2), record(&ride("2"), 1..=1)];
    let gz = key("2026-11-28T10:05:00.000Z", 1, true);
    let plain = key("2026-11-28T10:06:00.000Z", 2, false);
    archive
        .put_object(&gz, encode_object(&records, true))
        .unwrap();
    archive
        .put_object(&plain, encode_object(&records[..1], false))
        .unwrap();

    assert_eq!(archive.read_object(&gz).unwrap(), records);
    assert_eq!(archive.read_object(&plain).unwrap(), records[..1]);
    assert_eq!(
        archive.list_keys(None, None).unwrap(),
        [gz.clone(), plain.clone()]
    );
    assert!(dir.path().join("archive").join(&gz).is_file());
    // Putting again replaces the object whole.
    archive
        .put_object(&gz, encode_object(&records[1..], true))
        .unwrap();
    assert_eq!(archive.read_object(&gz).unwrap(), records[1..]);
    // No temporary file is left behind, nor listed.
    let folder = dir.path().join("archive/events/2026/11/28/10");
    assert_eq!(std::fs::read_dir(folder).unwrap().count(), 2);
}

#[test]
fn a_range_lists_only_the_hours_that_can_hold_it_widened_by_fifteen_minutes() {
    let dir = TempDir::new();
    let archive = LocalArchive::new(dir.path(), DEFAULT_PREFIX);
    let k0850 = key("2026-11-28T08:50:00.000Z", 1, true);
    let k0905 = key("2026-11-28T09:05:00.000Z", 2, true);
    let k1010 = key("2026-11-28T10:10:00.000Z", 3, true);
    let k1050 = key("2026-11-28T10:50:00.000Z", 4, false);
    let k1120 = key("2026-11-28T11:20:00.000Z", 5, true);
    let k1300 = key("2026-11-28T13:00:00.000Z", 6, true);
    let next_day = key("2026-11-29T00:10:00.000Z", 7, true);
    let odd = "events/2026/11/28/10/notes.txt".to_owned();
    let all = [
        &k0850, &k0905, &k1010, &k1050, &k1120, &k1300, &next_day, &odd,
    ];
    for k in all {
        archive
            .put_object(k, encode_object(&[record(&ride("1"), 1..=1)], true))
            .unwrap();
    }
    // Outside the prefix: never listed.
    archive
        .put_object("other/2026/11/28/10/x.gz", b"x")
        .unwrap();

    let list =
        |from: Option<&str>, to: Option<&str>| archive.list_keys(from.map(at), to.map(at)).unwrap();
    let mut sorted: Vec<String> = all.iter().map(|k| k.to_string()).collect();
    sorted.sort();
    assert_eq!(list(None, None), sorted);
    // 10:20..10:40 widens to 10:05..10:55: the hour 10 folder only (keys that are not in
    // Firehose's layout included).
    assert_eq!(
        list(Some("2026-11-28T10:20:00Z"), Some("2026-11-28T10:40:00Z")),
        [odd.clone(), k1010.clone(), k1050.clone()]
    );
    // 10:10 widens back to 09:55 (hour 09), 10:50 forward to 11:05 (hour 11).
    assert_eq!(
        list(Some("2026-11-28T10:10:00Z"), Some("2026-11-28T10:50:00Z")),
        [
            k0905.clone(),
            odd.clone(),
            k1010.clone(),
            k1050.clone(),
            k1120.clone()
        ]
    );
    // Open ends.
    assert_eq!(
        list(Some("2026-11-28T12:50:00Z"), None),
        [k1300.clone(), next_day.clone()]
    );
    assert_eq!(list(None, Some("2026-11-28T08:30:00Z")), [k0850.as_str()]);
    // Across midnight.
    assert_eq!(
        list(Some("2026-11-29T00:05:00Z"), Some("2026-11-29T00:05:00Z")),
        [next_day.as_str()]
    );
    // An empty or reversed range.
    assert!(list(Some("2026-11-28T16:00:00Z"), Some("2026-11-28T17:00:00Z")).is_empty());
    assert!(list(Some("2026-11-28T12:00:00Z"), Some("2026-11-28T09:00:00Z")).is_empty());
}

#[test]
fn a_missing_directory_is_an_empty_archive() {
    let dir = TempDir::new();
    let archive = LocalArchive::new(dir.path().join("never-written"), DEFAULT_PREFIX);
    assert!(archive.list_keys(None, None).unwrap().is_empty());
    let from: Timestamp = at("2026-11-28T10:00:00Z");
    assert!(archive
        .list_keys(Some(from), Some(from))
        .unwrap()
        .is_empty());
}

#[test]
fn corrupt_and_missing_objects_are_reported_with_their_key() {
    let dir = TempDir::new();
    let archive = LocalArchive::new(dir.path(), DEFAULT_PREFIX);
    let k = key("2026-11-28T10:05:00.000Z", 1, false);
    let mut body = encode_object(&[record(&ride("1"), 1..=1)], false);
    body.extend_from_slice(b"{not json\n");
    archive.put_object(&k, &body).unwrap();
    match archive.read_object(&k) {
        Err(ArchiveError::Corrupt {
            key,
            records_before,
            ..
        }) => {
            assert_eq!(key, k);
            assert_eq!(records_before, 1);
        }
        other => panic!("expected a corrupt object, got {other:?}"),
    }
    let lenient = archive.read_object_lenient(&k).unwrap();
    assert_eq!(lenient.records.len(), 1);
    assert!(lenient.error.is_some());
    let missing = key("2026-11-28T10:06:00.000Z", 2, true);
    assert!(matches!(
        archive.read_object(&missing),
        Err(ArchiveError::Unavailable { .. })
    ));
}

#[test]
fn keys_never_leave_the_directory() {
    let dir = TempDir::new();
    let archive = LocalArchive::new(dir.path().join("a"), DEFAULT_PREFIX);
    for bad in [
        "",
        "../x",
        "events/../../x",
        "/etc/x",
        "events//x",
        "events/x/",
        "events/.tmp-x",
    ] {
        assert!(
            matches!(
                archive.put_object(bad, b"x"),
                Err(ArchiveError::Unavailable { .. })
            ),
            "{bad:?}"
        );
    }
    assert!(!dir.path().join("x").exists());
}

#[test]
fn the_data_directory_has_an_archive() {
    let dir = TempDir::new();
    let archive = dir.open().archive(DEFAULT_PREFIX);
    assert_eq!(archive.dir, dir.path().join("archive"));
    assert_eq!(archive.prefix, DEFAULT_PREFIX);
}
