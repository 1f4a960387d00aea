//! The S3 archive as Firehose writes it (a contract: see ARCHITECTURE.md): the object key layout, and the
//! object bodies in every shape Firehose produces.
//!
//! Keys: `<prefix>YYYY/MM/DD/HH/<delivery stream>-<version>-YYYY-MM-DD-HH-MM-SS-<uuid>[.gz]`,
//! all in UTC. Firehose evaluates both times from the approximate arrival timestamp of the
//! oldest record in the object, so keys sort by the arrival of their first record (to the
//! second; two objects opened in the same second sort by their random id).
//!
//! Bodies: each Kinesis record's bytes as they were put, one after another, with a newline
//! after each when the delivery stream appends a delimiter and with nothing in between when
//! it does not, gzip-compressed or not. One record is one [`CommitRecord`]. Decoding streams
//! through the object (never holding the decompressed text) and reports a corrupt object
//! with its key, where the corruption starts and how many good records came before it.

use chrono::{NaiveDate, NaiveDateTime, TimeZone, Utc};
use std::io::{BufReader, Read, Write};
use timeline_core::envelope::CommitRecord;
use timeline_core::ports::ArchiveError;
use timeline_core::time::Timestamp;

/// The version every key this project writes carries (Firehose starts at 1 and counts
/// configuration changes).
pub const DELIVERY_STREAM_VERSION: u32 = 1;

/// The prefix the archive uses unless configured otherwise.
pub const DEFAULT_PREFIX: &str = "events/";

/// How long Firehose may hold a record before it writes it (its largest buffer interval).
pub const MAX_BUFFER_MILLIS: i64 = 900_000;

const HOUR_MILLIS: i64 = 3_600_000;

/// What an object key says, read back by [`parse_object_key`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchiveKey {
    /// The start of the hour of the key's `YYYY/MM/DD/HH/` folder.
    pub hour_start: Timestamp,
    /// The time in the object's name (whole seconds): the arrival of its first record.
    pub written_at: Timestamp,
    /// The name ends in `.gz` (the body is detected by its bytes, not by this).
    pub gzip: bool,
    pub delivery_stream: String,
    pub delivery_stream_version: u32,
    /// The random part of the name (a UUID when Firehose or the pump wrote it).
    pub id: String,
}

fn hour_floor(at: Timestamp) -> Timestamp {
    let millis = at.as_millis();
    Timestamp::from_millis(millis - millis.rem_euclid(HOUR_MILLIS)).unwrap_or(at)
}

/// `<prefix>YYYY/MM/DD/HH/` of the hour `at` falls in.
pub fn hour_prefix(prefix: &str, at: Timestamp) -> String {
    format!("{prefix}{}", at.as_datetime().format("%Y/%m/%d/%H/"))
}

/// The key Firehose gives an object whose first record arrived at `arrival`.
pub fn object_key(
    prefix: &str,
    delivery_stream: &str,
    arrival: Timestamp,
    id: &str,
    gzip: bool,
) -> String {
    format!(
        "{}{delivery_stream}-{DELIVERY_STREAM_VERSION}-{}-{id}{}",
        hour_prefix(prefix, arrival),
        arrival.as_datetime().format("%Y-%m-%d-%H-%M-%S"),
        if gzip { ".gz" } else { "" }
    )
}

fn digits(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// `YYYY/MM/DD/HH` -> the start of that hour.
fn parse_hour_folder(folder: &str) -> Option<Timestamp> {
    let parts: Vec<&str> = folder.split('/').collect();
    let [y, m, d, h] = parts.as_slice() else {
        return None;
    };
    if y.len() != 4 || m.len() != 2 || d.len() != 2 || h.len() != 2 {
        return None;
    }
    if ![y, m, d, h].iter().all(|p| digits(p)) {
        return None;
    }
    let date = NaiveDate::from_ymd_opt(y.parse().ok()?, m.parse().ok()?, d.parse().ok()?)?;
    let at = date.and_hms_opt(h.parse().ok()?, 0, 0)?;
    Some(Timestamp::from_datetime(Utc.from_utc_datetime(&at)))
}

/// `YYYY-MM-DD-HH-MM-SS` (exactly 19 bytes).
fn parse_name_time(s: &str) -> Option<Timestamp> {
    let b = s.as_bytes();
    if b.len() != 19 {
        return None;
    }
    for (i, c) in b.iter().enumerate() {
        let dash = matches!(i, 4 | 7 | 10 | 13 | 16);
        if dash != (*c == b'-') || (!dash && !c.is_ascii_digit()) {
            return None;
        }
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d-%H-%M-%S")
        .ok()
        .map(|t| Timestamp::from_datetime(Utc.from_utc_datetime(&t)))
}

/// Reads a key written in Firehose's layout under `prefix`; `None` for any other key.
pub fn parse_object_key(prefix: &str, key: &str) -> Option<ArchiveKey> {
    let rest = key.strip_prefix(prefix)?;
    // The hour folder is the first 13 bytes: YYYY/MM/DD/HH, then '/'.
    let (folder, name) = (rest.get(..13)?, rest.get(13..)?);
    let name = name.strip_prefix('/')?;
    if name.contains('/') {
        return None;
    }
    let hour_start = parse_hour_folder(folder)?;
    let (stem, gzip) = match name.strip_suffix(".gz") {
        Some(stem) => (stem, true),
        None => (name, false),
    };
    // `<stream>-<version>-<time>-<id>`: the stream name may hold dashes and digits, and the
    // id holds dashes, so find the time: the rightmost spot that reads as one, with a
    // numeric version before it (a UUID cannot contain a 19-byte time).
    let bytes = stem.as_bytes();
    for start in (1..stem.len().saturating_sub(20)).rev() {
        if bytes[start - 1] != b'-' || bytes.get(start + 19) != Some(&b'-') {
            continue;
        }
        let Some(written_at) = stem.get(start..start + 19).and_then(parse_name_time) else {
            continue;
        };
        let id = &stem[start + 20..];
        let Some((stream, version)) = stem[..start - 1].rsplit_once('-') else {
            continue;
        };
        if stream.is_empty() || id.is_empty() || !digits(version) {
            continue;
        }
        let Ok(delivery_stream_version) = version.parse() else {
            continue;
        };
        return Some(ArchiveKey {
            hour_start,
            written_at,
            gzip,
            delivery_stream: stream.to_owned(),
            delivery_stream_version,
            id: id.to_owned(),
        });
    }
    None
}

/// Every `<prefix>YYYY/MM/DD/HH/` from the hour of `from` to the hour of `to`, inclusive, in
/// order (empty when `from` is after `to`).
pub fn hour_prefixes(prefix: &str, from: Timestamp, to: Timestamp) -> Vec<String> {
    let mut hours = Vec::new();
    let last = hour_floor(to);
    let mut hour = hour_floor(from);
    while hour <= last {
        hours.push(hour_prefix(prefix, hour));
        hour = hour.plus_millis(HOUR_MILLIS);
    }
    hours
}

/// The start of the hour after the one `at` falls in.
pub fn next_hour(at: Timestamp) -> Timestamp {
    hour_floor(at).plus_millis(HOUR_MILLIS)
}

/// An object body from raw record bytes, as Firehose writes them: each record as it is,
/// followed by a newline when `newline` (Firehose's "add a new line delimiter"), compressed
/// when `gzip`.
pub fn pack_records<R: AsRef<[u8]>>(records: &[R], newline: bool, gzip: bool) -> Vec<u8> {
    let mut body = Vec::new();
    let write = |out: &mut dyn Write| {
        for record in records {
            out.write_all(record.as_ref()).expect("writing to memory");
            if newline {
                out.write_all(b"\n").expect("writing to memory");
            }
        }
    };
    if gzip {
        let mut encoder = flate2::write::GzEncoder::new(&mut body, flate2::Compression::default());
        write(&mut encoder);
        encoder.finish().expect("writing to memory");
    } else {
        write(&mut body);
    }
    body
}

/// NDJSON of the records (one a line, each line ending in a newline), gzip-compressed or not.
pub fn encode_object(records: &[CommitRecord], gzip: bool) -> Vec<u8> {
    let lines: Vec<Vec<u8>> = records
        .iter()
        .map(timeline_core::codec::encode_record)
        .collect();
    pack_records(&lines, true, gzip)
}

/// Is this a gzip stream (by its magic bytes, whatever the key says)?
pub fn is_gzip(bytes: &[u8]) -> bool {
    bytes.starts_with(&[0x1f, 0x8b])
}

/// The records of one object, one at a time, decoded while the body is decompressed.
///
/// Yields `Ok(record)` for each good record, then at most one `Err(Corrupt)`, after which it
/// ends. Accepts newline-delimited and back-to-back records, any whitespace between them,
/// gzip (every member of a multi-member stream) or plain.
pub struct ObjectRecords<'a> {
    key: String,
    stream: serde_json::StreamDeserializer<
        'static,
        serde_json::de::IoRead<BufReader<Box<dyn Read + Send + 'a>>>,
        CommitRecord,
    >,
    records: usize,
    done: bool,
}

/// Decodes an object's body record by record (see [`ObjectRecords`]).
pub fn object_records<'a>(key: &str, bytes: &'a [u8]) -> ObjectRecords<'a> {
    let reader: Box<dyn Read + Send + 'a> = if is_gzip(bytes) {
        Box::new(flate2::read::MultiGzDecoder::new(bytes))
    } else {
        Box::new(bytes)
    };
    ObjectRecords {
        key: key.to_owned(),
        stream: serde_json::Deserializer::from_reader(BufReader::new(reader)).into_iter(),
        records: 0,
        done: false,
    }
}

impl ObjectRecords<'_> {
    fn corrupt(&mut self, offset: usize, reason: String) -> ArchiveError {
        self.done = true;
        ArchiveError::Corrupt {
            key: self.key.clone(),
            offset,
            records_before: self.records,
            reason,
        }
    }
}

impl Iterator for ObjectRecords<'_> {
    type Item = Result<CommitRecord, ArchiveError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let offset = self.stream.byte_offset();
        match self.stream.next()? {
            Ok(record) => match record.validate() {
                Ok(()) => {
                    self.records += 1;
                    Some(Ok(record))
                }
                Err(e) => Some(Err(
                    self.corrupt(offset, format!("invalid commit record: {e}"))
                )),
            },
            Err(e) => {
                let reason = if e.is_io() {
                    format!("unreadable body (truncated or damaged gzip?): {e}")
                } else if e.is_eof() {
                    format!("the body ends inside a record: {e}")
                } else {
                    format!("not a commit record: {e}")
                };
                Some(Err(self.corrupt(offset, reason)))
            }
        }
    }
}

/// Every record of an object, or the first corruption in it.
pub fn decode_object(key: &str, bytes: &[u8]) -> Result<Vec<CommitRecord>, ArchiveError> {
    object_records(key, bytes).collect()
}

/// What a lenient read of an object gives: the records before any corruption, and the
/// corruption itself, so a reader can report it and go on.
#[derive(Debug, Clone, PartialEq)]
pub struct DecodedObject {
    pub records: Vec<CommitRecord>,
    pub error: Option<ArchiveError>,
}

/// Every good record up to the first corruption, with the corruption (if any).
pub fn decode_object_lenient(key: &str, bytes: &[u8]) -> DecodedObject {
    let mut records = Vec::new();
    for item in object_records(key, bytes) {
        match item {
            Ok(record) => records.push(record),
            Err(error) => {
                return DecodedObject {
                    records,
                    error: Some(error),
                }
            }
        }
    }
    DecodedObject {
        records,
        error: None,
    }
}

/// The keys a listing of the objects that can hold records that arrived between `from` and
/// `to` (either end open) must read: those after `start` (the hour folder of `from - 15
/// min`; every key in it is longer, so sorts after it) and before `end` (the folder of the
/// hour after `to + 15 min`). None when the range holds no hour.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRange {
    pub start: Option<String>,
    pub end: Option<String>,
}

pub fn key_range(prefix: &str, from: Option<Timestamp>, to: Option<Timestamp>) -> Option<KeyRange> {
    let start = from.map(|f| hour_prefix(prefix, f.plus_millis(-MAX_BUFFER_MILLIS)));
    let end = to.map(|t| hour_prefix(prefix, next_hour(t.plus_millis(MAX_BUFFER_MILLIS))));
    match (&start, &end) {
        (Some(start), Some(end)) if start >= end => None,
        _ => Some(KeyRange { start, end }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use timeline_core::codec::encode_record;
    use timeline_core::envelope::{EventEnvelope, Metadata};

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    fn event(id: &str, version: u64) -> EventEnvelope {
        EventEnvelope {
            event_id: format!("{id}-{version}"),
            aggregate_type: "ride".into(),
            aggregate_id: id.into(),
            version,
            event_type: "RideBooked".into(),
            schema_version: 1,
            occurred_at: at("2026-11-28T10:00:00.000Z"),
            recorded_at: at("2026-11-28T10:00:00.000Z"),
            metadata: Metadata {
                command_id: format!("c-{id}-{version}"),
                correlation_id: None,
                causation_id: None,
                actor: "rider-1".into(),
            },
            data: json!({ "note": "héllo \n {braces} in a string" }),
        }
    }

    fn records() -> Vec<CommitRecord> {
        vec![
            CommitRecord::new(vec![event("r1", 1)]).unwrap(),
            CommitRecord::new(vec![event("r2", 1), event("r2", 2)]).unwrap(),
            CommitRecord::new(vec![event("r1", 2), event("r1", 3), event("r1", 4)]).unwrap(),
        ]
    }

    fn raw(records: &[CommitRecord]) -> Vec<Vec<u8>> {
        records.iter().map(encode_record).collect()
    }

    fn gzip(bytes: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(bytes).unwrap();
        e.finish().unwrap()
    }

    fn corrupt(result: Result<Vec<CommitRecord>, ArchiveError>) -> (usize, usize, String) {
        match result {
            Err(ArchiveError::Corrupt {
                key,
                offset,
                records_before,
                reason,
            }) => {
                assert_eq!(key, "k");
                (offset, records_before, reason)
            }
            other => panic!("expected a corrupt object, got {other:?}"),
        }
    }

    const UUID: &str = "c7b5fd4b-aa34-4fd2-8a7e-9b4cdc6ab39c";

    #[test]
    fn object_keys_follow_firehose_layout_and_parse_back() {
        let arrival = at("2026-11-28T09:05:07.123Z");
        let key = object_key("events/", "ride-events", arrival, UUID, true);
        assert_eq!(
            key,
            format!("events/2026/11/28/09/ride-events-1-2026-11-28-09-05-07-{UUID}.gz")
        );
        let parsed = parse_object_key("events/", &key).unwrap();
        assert_eq!(
            parsed,
            ArchiveKey {
                hour_start: at("2026-11-28T09:00:00Z"),
                written_at: at("2026-11-28T09:05:07Z"),
                gzip: true,
                delivery_stream: "ride-events".into(),
                delivery_stream_version: 1,
                id: UUID.into(),
            }
        );

        let plain = object_key("", "s", arrival, UUID, false);
        assert_eq!(
            plain,
            format!("2026/11/28/09/s-1-2026-11-28-09-05-07-{UUID}")
        );
        let parsed = parse_object_key("", &plain).unwrap();
        assert!(!parsed.gzip);
        assert_eq!(parsed.delivery_stream, "s");
    }

    #[test]
    fn keys_parse_with_digits_and_dashes_in_the_stream_name_and_any_version() {
        let key = format!("a/b/2025/01/31/23/my-stream-2-7-12-2025-01-31-23-59-59-{UUID}");
        let parsed = parse_object_key("a/b/", &key).unwrap();
        assert_eq!(parsed.delivery_stream, "my-stream-2-7");
        assert_eq!(parsed.delivery_stream_version, 12);
        assert_eq!(parsed.written_at, at("2025-01-31T23:59:59Z"));
        assert_eq!(parsed.hour_start, at("2025-01-31T23:00:00Z"));
        assert_eq!(parsed.id, UUID);
    }

    #[test]
    fn keys_outside_the_layout_do_not_parse() {
        let good = format!("events/2026/11/28/09/s-1-2026-11-28-09-05-07-{UUID}.gz");
        assert!(parse_object_key("events/", &good).is_some());
        for bad in [
            format!("other/2026/11/28/09/s-1-2026-11-28-09-05-07-{UUID}"),
            format!("events/2026/13/28/09/s-1-2026-11-28-09-05-07-{UUID}"),
            format!("events/2026/11/28/24/s-1-2026-11-28-09-05-07-{UUID}"),
            format!("events/2026/11/28/9/s-1-2026-11-28-09-05-07-{UUID}"),
            format!("events/2026/11/28/09/x/s-1-2026-11-28-09-05-07-{UUID}"),
            format!("events/2026/11/28/09/s-2026-11-28-09-05-07-{UUID}"),
            format!("events/2026/11/28/09/s-1-2026-11-28-09-05-{UUID}"),
            format!("events/2026/11/28/09/-1-2026-11-28-09-05-07-{UUID}"),
            "events/2026/11/28/09/s-1-2026-11-28-09-05-07-".to_owned(),
            "events/2026/11/28/09/".to_owned(),
            "events/processing-failed/x".to_owned(),
            "events/".to_owned(),
            "".to_owned(),
        ] {
            assert_eq!(parse_object_key("events/", &bad), None, "{bad}");
        }
    }

    #[test]
    fn hour_prefixes_cover_every_hour_inclusive_across_a_day_and_year_boundary() {
        let hours = hour_prefixes(
            "events/",
            at("2025-12-31T22:59:59.999Z"),
            at("2026-01-01T01:00:00.000Z"),
        );
        assert_eq!(
            hours,
            vec![
                "events/2025/12/31/22/",
                "events/2025/12/31/23/",
                "events/2026/01/01/00/",
                "events/2026/01/01/01/",
            ]
        );
        let same = hour_prefixes("", at("2026-02-28T10:01:00Z"), at("2026-02-28T10:59:00Z"));
        assert_eq!(same, vec!["2026/02/28/10/"]);
        assert!(
            hour_prefixes("", at("2026-02-28T11:00:00Z"), at("2026-02-28T10:00:00Z")).is_empty()
        );
        assert_eq!(
            next_hour(at("2026-02-28T23:30:00Z")),
            at("2026-03-01T00:00:00Z")
        );
    }

    #[test]
    fn ndjson_round_trips_plain_and_gzip() {
        for gzip in [false, true] {
            let body = encode_object(&records(), gzip);
            assert_eq!(is_gzip(&body), gzip);
            assert_eq!(decode_object("k", &body).unwrap(), records());
        }
        let text = String::from_utf8(encode_object(&records(), false)).unwrap();
        assert_eq!(text.lines().count(), 3);
        assert!(text.ends_with("}\n"));
    }

    #[test]
    fn records_concatenated_without_a_delimiter_are_read_plain_and_gzip() {
        for gzip in [false, true] {
            let body = pack_records(&raw(&records()), false, gzip);
            if !gzip {
                assert!(!body.contains(&b'\n'), "no delimiter at all");
            }
            assert_eq!(decode_object("k", &body).unwrap(), records());
        }
    }

    #[test]
    fn any_whitespace_between_records_is_accepted() {
        let r = raw(&records());
        let mut body = b"\n \t".to_vec();
        body.extend_from_slice(&r[0]);
        body.extend_from_slice(b"\r\n\r\n");
        body.extend_from_slice(&r[1]);
        body.extend_from_slice(&r[2]);
        body.extend_from_slice(b"  \n\n");
        assert_eq!(decode_object("k", &body).unwrap(), records());
        assert_eq!(decode_object("k", &gzip(&body)).unwrap(), records());
    }

    #[test]
    fn gzip_is_detected_by_its_bytes_not_the_key() {
        let body = encode_object(&records(), true);
        assert_eq!(
            decode_object("plain-looking-key", &body).unwrap(),
            records()
        );
        let plain = encode_object(&records(), false);
        assert_eq!(decode_object("key.gz", &plain).unwrap(), records());
    }

    #[test]
    fn several_gzip_members_back_to_back_are_one_body() {
        let r = raw(&records());
        let mut body = pack_records(&r[..1], true, true);
        body.extend(pack_records(&r[1..], true, true));
        assert_eq!(decode_object("k", &body).unwrap(), records());
    }

    #[test]
    fn empty_objects_hold_no_records() {
        assert_eq!(decode_object("k", b"").unwrap(), vec![]);
        assert_eq!(decode_object("k", b" \n\n").unwrap(), vec![]);
        assert_eq!(decode_object("k", &gzip(b"")).unwrap(), vec![]);
        assert_eq!(
            decode_object("k", &encode_object(&[], true)).unwrap(),
            vec![]
        );
    }

    #[test]
    fn a_trailing_partial_record_is_corrupt_after_the_good_ones() {
        let full = encode_object(&records(), false);
        let cut = &full[..full.len() - 10];
        let (offset, before, reason) = corrupt(decode_object("k", cut));
        assert_eq!(before, 2);
        let first_two = encode_object(&records()[..2], false);
        assert_eq!(offset, first_two.len() - 1, "just after the second record");
        assert!(reason.contains("ends inside a record"), "{reason}");

        let lenient = decode_object_lenient("k", cut);
        assert_eq!(lenient.records, records()[..2].to_vec());
        assert!(lenient.error.is_some());
    }

    #[test]
    fn invalid_json_is_corrupt_with_its_offset() {
        let r = raw(&records());
        let mut body = r[0].clone();
        body.push(b'\n');
        let offset_of_bad = body.len() - 1;
        body.extend_from_slice(b"{\"events\": [oops]}\n");
        body.extend_from_slice(&r[1]);
        let (offset, before, reason) = corrupt(decode_object("k", &body));
        assert_eq!((offset, before), (offset_of_bad, 1));
        assert!(reason.contains("not a commit record"), "{reason}");

        let (offset, before, _) = corrupt(decode_object("k", b"garbage"));
        assert_eq!((offset, before), (0, 0));
        // JSON, but not a commit record.
        let (_, before, _) = corrupt(decode_object("k", b"{\"events\": 3}"));
        assert_eq!(before, 0);
        let (_, before, _) = corrupt(decode_object("k", b"[1, 2]"));
        assert_eq!(before, 0);
        // Not UTF-8 inside a string.
        let mut bad_utf8 = r[0].clone();
        bad_utf8.extend_from_slice(b"{\"events\":[{\"event_id\":\"\xff\xfe\"}]}");
        let (_, before, _) = corrupt(decode_object("k", &bad_utf8));
        assert_eq!(before, 1);
    }

    #[test]
    fn a_record_that_breaks_the_commit_shape_is_corrupt() {
        let mut gap = records();
        gap[2].events.remove(1); // r1 versions 2, 4
        let body = encode_object(&gap, true);
        let (offset, before, reason) = corrupt(decode_object("k", &body));
        assert_eq!(before, 2);
        assert_eq!(offset, encode_object(&gap[..2], false).len() - 1);
        assert!(reason.contains("contiguous"), "{reason}");

        let (_, before, reason) = corrupt(decode_object("k", b"{\"events\": []}"));
        assert_eq!(before, 0);
        assert!(reason.contains("no events"), "{reason}");
    }

    #[test]
    fn a_truncated_or_damaged_gzip_is_corrupt_never_a_panic() {
        let body = encode_object(&records(), true);
        for cut in [body.len() - 1, body.len() - 8, body.len() / 2, 11, 3, 2] {
            let lenient = decode_object_lenient("k", &body[..cut]);
            let Some(ArchiveError::Corrupt { records_before, .. }) = lenient.error else {
                panic!("cut at {cut}: {:?}", lenient.error);
            };
            assert_eq!(records_before, lenient.records.len());
            assert_eq!(lenient.records, records()[..records_before].to_vec());
        }
        let mut damaged = body.clone();
        let middle = damaged.len() / 2;
        damaged[middle] ^= 0xff;
        assert!(decode_object("k", &damaged).is_err());
        let mut trailing_garbage = body;
        trailing_garbage.extend_from_slice(b"not gzip");
        let (_, before, _) = corrupt(decode_object("k", &trailing_garbage));
        assert_eq!(before, 3);
    }

    #[test]
    fn the_iterator_stops_after_the_first_corruption() {
        let mut body = encode_object(&records()[..1], false);
        body.extend_from_slice(b"}}}\n");
        body.extend(encode_object(&records()[1..], false));
        let items: Vec<_> = object_records("k", &body).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(items[1].is_err());
        assert_eq!(items[1].as_ref().unwrap_err().corrupt_key(), Some("k"));
    }
}
