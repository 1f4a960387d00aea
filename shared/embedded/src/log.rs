//! The event log, kept as Kinesis keeps a stream: one record per commit under the partition
//! key `<type>#<id>`, in a fixed number of shards. A record's shard comes from a hash of its
//! partition key placed in equal ranges of the hash space, as Kinesis places the MD5 of the
//! key among evenly split shards (here the first 64 bits of SHA-256), so all of an entity's
//! records are on one shard, in the order they were published.
//!
//! Sequence numbers come from one `AUTOINCREMENT` counter for the whole log, rendered as
//! 20-digit decimal strings: increasing within each shard (not contiguous), never reused,
//! and opaque to readers, who compare them with [`timeline_engine::sequence::compare`].

use crate::Embedded;
use rusqlite::{params, Connection};
use sha2::{Digest, Sha256};
use timeline_core::ports::{
    log_entry, EventLog, LogError, LogRecord, Published, StreamReader, MAX_READ,
};
use timeline_core::shards::{Page, PageEnd, ReadFrom, Shard};
use timeline_core::CommitRecord;
use timeline_core::Timestamp;

pub use timeline_core::ports::MAX_RECORD_BYTES;

fn unavailable(e: rusqlite::Error) -> LogError {
    LogError::Unavailable(format!("sqlite: {e}"))
}

/// The first 64 bits of the SHA-256 of a partition key, big-endian: stable across builds,
/// platforms and Rust versions (the shard of a key must never change while a data
/// directory lives), and well mixed in its high bits, which pick the range.
fn hash_key(partition_key: &str) -> u64 {
    let digest = Sha256::digest(partition_key.as_bytes());
    u64::from_be_bytes(
        digest[..8]
            .try_into()
            .expect("a SHA-256 digest has 32 bytes"),
    )
}

/// The shard (0-based) of a partition key in a log of `shard_count` shards: the hash space
/// split into `shard_count` equal ranges, in order.
pub fn shard_of(partition_key: &str, shard_count: u32) -> u32 {
    let hash = u128::from(hash_key(partition_key));
    ((hash * u128::from(shard_count.max(1))) >> 64) as u32
}

/// Kinesis's name for shard `index`: `shardId-000000000000`.
pub fn shard_id(index: u32) -> String {
    format!("shardId-{index:012}")
}

fn sequence_number(seq: i64) -> String {
    format!("{seq:020}")
}

impl Embedded {
    fn shard_index(&self, shard: &str) -> Result<u32, LogError> {
        shard
            .strip_prefix("shardId-")
            .filter(|n| n.len() == 12 && n.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|n| n.parse::<u32>().ok())
            .filter(|i| *i < self.shard_count())
            .ok_or_else(|| LogError::Unavailable(format!("the log has no shard {shard:?}")))
    }
}

/// Where a read starts.
enum After {
    Start,
    Seq(i64),
    /// Past every record this log can hold.
    End,
}

fn position(after: Option<&str>) -> Result<After, LogError> {
    let Some(after) = after else {
        return Ok(After::Start);
    };
    if after.is_empty() || !after.bytes().all(|b| b.is_ascii_digit()) {
        return Err(LogError::Unavailable(format!(
            "{after:?} is not a sequence number"
        )));
    }
    // Sequence numbers are compared as numbers of any length: one longer than this log
    // writes is after all of its records.
    let digits = after.trim_start_matches('0');
    match digits.parse::<i64>() {
        Ok(seq) => Ok(After::Seq(seq)),
        Err(_) if digits.is_empty() => Ok(After::Seq(0)),
        Err(_) => Ok(After::End),
    }
}

/// Appends one record (inside the caller's transaction, if any).
pub(crate) fn append(
    conn: &Connection,
    shard_count: u32,
    partition_key: &str,
    data: &[u8],
    arrival: Timestamp,
) -> Result<Published, LogError> {
    let shard = shard_of(partition_key, shard_count);
    let mut statement = conn
        .prepare_cached(
            "INSERT INTO log (shard, partition_key, data, arrival) VALUES (?1, ?2, ?3, ?4)
             RETURNING seq",
        )
        .map_err(unavailable)?;
    let seq: i64 = statement
        .query_row(
            params![shard, partition_key, data, arrival.as_millis()],
            |row| row.get(0),
        )
        .map_err(unavailable)?;
    Ok(Published {
        shard_id: shard_id(shard),
        sequence_number: sequence_number(seq),
    })
}

/// Where a read starts: at a sequence number, or (as Kinesis's `AT_TIMESTAMP`) at the first
/// record that arrived at or after a time, and every record after it whatever its arrival
/// (arrivals are stamped before the write lock, so they are not strictly in order).
enum Bounds {
    Seq(i64),
    Since(i64),
}

fn bounds(from: &ReadFrom) -> Result<Option<Bounds>, LogError> {
    let seq = |s: &str, next: i64| match position(Some(s))? {
        After::Seq(seq) => Ok(Some(Bounds::Seq(seq.saturating_add(next)))),
        After::End => Ok(None),
        After::Start => unreachable!("a position was given"),
    };
    match from {
        ReadFrom::Oldest => Ok(Some(Bounds::Seq(0))),
        ReadFrom::Time(t) => Ok(Some(Bounds::Since(t.as_millis()))),
        ReadFrom::After(s) => seq(s, 1),
        ReadFrom::At(s) => seq(s, 0),
    }
}

type Row = (i64, String, Vec<u8>, i64);

fn row(row: &rusqlite::Row<'_>) -> rusqlite::Result<Row> {
    Ok((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?))
}

/// Runs a read query; `params` fill the query's parameters.
fn query(
    conn: &Connection,
    sql: &str,
    params: impl rusqlite::Params,
) -> rusqlite::Result<Vec<Row>> {
    conn.prepare_cached(sql)?.query_map(params, row)?.collect()
}

fn read(
    conn: &Connection,
    shard: u32,
    from: &Bounds,
    limit: usize,
) -> Result<Vec<LogRecord>, LogError> {
    let rows = match from {
        Bounds::Seq(low) => query(
            conn,
            "SELECT seq, partition_key, data, arrival FROM log
             WHERE shard = ?1 AND seq >= ?2 ORDER BY seq LIMIT ?3",
            params![shard, low, limit as i64],
        ),
        Bounds::Since(t) => query(
            conn,
            "SELECT seq, partition_key, data, arrival FROM log
             WHERE shard = ?1
               AND seq >= (SELECT MIN(seq) FROM log WHERE shard = ?1 AND arrival >= ?2)
             ORDER BY seq LIMIT ?3",
            params![shard, t, limit as i64],
        ),
    };
    collect(rows, shard)
}

/// One partition key's records from a position, in order (through the `log_by_key` index).
fn read_key(
    conn: &Connection,
    shard: u32,
    partition_key: &str,
    from: &Bounds,
) -> Result<Vec<LogRecord>, LogError> {
    let rows = match from {
        Bounds::Seq(low) => query(
            conn,
            "SELECT seq, partition_key, data, arrival FROM log
             WHERE partition_key = ?1 AND seq >= ?2 ORDER BY seq",
            params![partition_key, low],
        ),
        Bounds::Since(t) => query(
            conn,
            "SELECT seq, partition_key, data, arrival FROM log
             WHERE partition_key = ?1
               AND seq >= (SELECT MIN(seq) FROM log WHERE partition_key = ?1 AND arrival >= ?2)
             ORDER BY seq",
            params![partition_key, t],
        ),
    };
    collect(rows, shard)
}

fn collect(rows: rusqlite::Result<Vec<Row>>, shard: u32) -> Result<Vec<LogRecord>, LogError> {
    rows.map_err(unavailable)?
        .into_iter()
        .map(|(seq, partition_key, data, arrival)| {
            Ok(LogRecord {
                shard_id: shard_id(shard),
                sequence_number: sequence_number(seq),
                partition_key,
                data,
                arrival: Timestamp::from_millis(arrival).ok_or_else(|| {
                    LogError::Unavailable(format!("record {seq} has an arrival out of range"))
                })?,
            })
        })
        .collect()
}

impl EventLog for Embedded {
    async fn publish(&self, record: &CommitRecord) -> Result<Published, LogError> {
        let (partition_key, data) = log_entry(record)?;
        let shard_count = self.shard_count();
        let arrival = Timestamp::from_datetime(chrono::Utc::now());
        self.write(move |conn| append(conn, shard_count, &partition_key, &data, arrival))
            .await
    }
}

impl StreamReader for Embedded {
    /// Fixed shards, each an equal part of the hash space; never closed (this log is not
    /// resharded).
    async fn shards(&self) -> Result<Vec<Shard>, LogError> {
        let count = u128::from(self.shard_count());
        Ok((0..self.shard_count())
            .map(|i| {
                let i = u128::from(i);
                // The 64-bit hash placed in the top of the 128-bit space (see `shard_of`).
                let low = (i << 64).div_ceil(count) << 64;
                let high = (((i + 1) << 64).div_ceil(count) << 64).wrapping_sub(1);
                Shard {
                    id: shard_id(i as u32),
                    parents: vec![],
                    hash_range: (low, if i + 1 == count { u128::MAX } else { high }),
                    closed: false,
                }
            })
            .collect())
    }

    /// Up to `limit` (clamped to 1..=10000, as `GetRecords`) records of `shard` from
    /// `from`, in order. This log answers from an index, so a page shorter than asked for
    /// is the tip. An unknown shard or a position that is not a sequence number is an
    /// error, as Kinesis refuses them.
    async fn read(&self, shard: &str, from: &ReadFrom, limit: usize) -> Result<Page, LogError> {
        let index = self.shard_index(shard)?;
        let Some(from) = bounds(from)? else {
            return Ok(Page {
                records: Vec::new(),
                end: PageEnd::CaughtUp,
            });
        };
        let limit = limit.clamp(1, MAX_READ);
        let records = self
            .with_reader(move |conn| read(conn, index, &from, limit))
            .await?;
        let end = if records.len() < limit {
            PageEnd::CaughtUp
        } else {
            PageEnd::Behind
        };
        Ok(Page { records, end })
    }

    /// The top 64 bits are the key's SHA-256 prefix, as `shard_of` places it.
    fn key_hash(&self, partition_key: &str) -> u128 {
        u128::from(hash_key(partition_key)) << 64
    }

    /// One entity's records through an index, not the whole log (which this log keeps
    /// forever, unlike a stream's 24-hour tail).
    async fn read_key(
        &self,
        partition_key: &str,
        from: &ReadFrom,
    ) -> Result<Option<Vec<LogRecord>>, LogError> {
        let shard = shard_of(partition_key, self.shard_count());
        let Some(from) = bounds(from)? else {
            return Ok(Some(Vec::new()));
        };
        let key = partition_key.to_owned();
        self.with_reader(move |conn| read_key(conn, shard, &key, &from))
            .await
            .map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_sha256_and_never_changes() {
        // SHA-256("abc") = ba7816bf8f01cfea 414140de5dae2223 ...
        assert_eq!(hash_key("abc"), 0xba78_16bf_8f01_cfea);
        // Pinned: a data directory's records stay where these say.
        assert_eq!(shard_of("abc", 2), 1);
        assert_eq!(shard_of("abc", 1), 0);
    }

    #[test]
    fn keys_spread_over_every_shard() {
        for count in [1, 2, 3, 4, 8] {
            let mut seen = vec![0usize; count as usize];
            for i in 0..1000 {
                seen[shard_of(&format!("ride#{i}"), count) as usize] += 1;
            }
            assert!(
                seen.iter().all(|n| *n > 1000 / count as usize / 2),
                "{count}: {seen:?}"
            );
        }
    }

    #[test]
    fn positions_read_as_numbers_of_any_length() {
        assert!(matches!(position(None), Ok(After::Start)));
        assert!(matches!(
            position(Some("00000000000000000007")),
            Ok(After::Seq(7))
        ));
        assert!(matches!(position(Some("0")), Ok(After::Seq(0))));
        assert!(matches!(
            position(Some(
                "49590338271490256608559692538361571095921575989136588898"
            )),
            Ok(After::End)
        ));
        assert!(position(Some("")).is_err());
        assert!(position(Some("12a")).is_err());
    }
}
