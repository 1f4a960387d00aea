//! A sharded log as Kinesis documents it, for every reader of it (the event source mapping,
//! the archive pump, replays and time travel):
//!
//! - shards hold ranges of the partition-key hash space; a split or a merge *closes* its
//!   parents and opens children, and one key's records go on in the child that holds its
//!   hash, so a reader finishes a parent before it reads its children;
//! - a read starts at the oldest record, at or after a sequence number, or at a time, and a
//!   page says what follows it: more right now (an empty page of that kind is *not* the
//!   end), nothing yet (caught up with the tip), or nothing ever (a closed shard read to its
//!   end).
//!
//! [`Follower`] keeps where a reader stands on each shard and which shards it may read next.

use crate::time::Timestamp;
use std::collections::{HashMap, HashSet};

/// One shard of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Shard {
    pub id: String,
    /// The shards this one was split or merged from: read them to their end first.
    pub parents: Vec<String>,
    /// The partition-key hashes it holds, inclusive.
    pub hash_range: (u128, u128),
    /// Closed by a split or merge: it holds no new records, and a read of it ends.
    pub closed: bool,
}

impl Shard {
    pub fn holds(&self, hash: u128) -> bool {
        self.hash_range.0 <= hash && hash <= self.hash_range.1
    }
}

/// Where a read of one shard starts.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ReadFrom {
    /// The oldest record the shard still holds (Kinesis `TRIM_HORIZON`).
    Oldest,
    /// The record with this sequence number, or the next one if it is gone.
    At(String),
    /// The first record after this sequence number.
    After(String),
    /// The first record that arrived at or after this time.
    Time(Timestamp),
}

/// What the shard says follows a page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PageEnd {
    /// More records may follow right away (Kinesis: `MillisBehindLatest` > 0). An empty page
    /// of this kind is not the end: read again from the same place.
    Behind,
    /// Nothing follows yet: the page reached the shard's tip (`MillisBehindLatest` == 0).
    CaughtUp,
    /// The shard is closed and every record of it is read: go on with its children.
    Closed,
}

/// One read of one shard.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub records: Vec<crate::ports::LogRecord>,
    pub end: PageEnd,
}

impl Page {
    /// Where the next read of the same shard starts, after a read from `from`.
    pub fn next_from(&self, from: &ReadFrom) -> ReadFrom {
        match self.records.last() {
            Some(last) => ReadFrom::After(last.sequence_number.clone()),
            None => from.clone(),
        }
    }
}

/// Every shard in an order where parents come before their children: the shards with no
/// unread parent first (by id), then their children, generation by generation.
pub fn parents_first(shards: &[Shard]) -> Vec<&Shard> {
    let known: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
    let mut done: HashSet<&str> = HashSet::new();
    let mut order = Vec::with_capacity(shards.len());
    let mut left: Vec<&Shard> = shards.iter().collect();
    left.sort_by(|a, b| a.id.cmp(&b.id));
    while !left.is_empty() {
        // A parent the listing no longer shows (expired) does not hold its children up.
        let (ready, waiting): (Vec<&Shard>, Vec<&Shard>) = left.into_iter().partition(|s| {
            s.parents
                .iter()
                .all(|p| done.contains(p.as_str()) || !known.contains(p.as_str()))
        });
        if ready.is_empty() {
            // A cycle (never from Kinesis): keep the rest in id order rather than loop.
            order.extend(waiting);
            break;
        }
        done.extend(ready.iter().map(|s| s.id.as_str()));
        order.extend(ready);
        left = waiting;
    }
    order
}

/// The shards that hold one key's hash, parents first: where its records are, oldest shard
/// first. Each split or merge adds one shard to a key's lineage.
pub fn lineage(shards: &[Shard], hash: u128) -> Vec<&Shard> {
    parents_first(shards)
        .into_iter()
        .filter(|s| s.holds(hash))
        .collect()
}

/// Where a follower of the whole log stands: the last sequence number it finished on each
/// shard, and the closed shards it has read to their end. Children are read only after
/// their parents, as Lambda's event source mapping and Firehose do, so one key's records
/// are followed in order across a reshard.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Follower {
    positions: HashMap<String, String>,
    finished: HashSet<String>,
}

impl Follower {
    /// A follower that resumes from saved positions.
    pub fn resume(positions: HashMap<String, String>) -> Self {
        Follower {
            positions,
            finished: HashSet::new(),
        }
    }

    pub fn positions(&self) -> &HashMap<String, String> {
        &self.positions
    }

    /// The shards to read now, parents first: not finished, every listed parent finished.
    pub fn ready<'a>(&self, shards: &'a [Shard]) -> Vec<&'a Shard> {
        let listed: HashSet<&str> = shards.iter().map(|s| s.id.as_str()).collect();
        parents_first(shards)
            .into_iter()
            .filter(|s| !self.finished.contains(&s.id))
            .filter(|s| {
                s.parents
                    .iter()
                    .all(|p| self.finished.contains(p) || !listed.contains(p.as_str()))
            })
            .collect()
    }

    /// Where the next read of `shard` starts.
    pub fn from(&self, shard: &str) -> ReadFrom {
        match self.positions.get(shard) {
            Some(seq) => ReadFrom::After(seq.clone()),
            None => ReadFrom::Oldest,
        }
    }

    /// Records that `shard` is done up to `sequence_number`.
    pub fn done_up_to(&mut self, shard: &str, sequence_number: &str) {
        self.positions
            .insert(shard.to_owned(), sequence_number.to_owned());
    }

    /// Records that a closed `shard` is read to its end.
    pub fn finish(&mut self, shard: &str) {
        self.finished.insert(shard.to_owned());
    }

    pub fn is_finished(&self, shard: &str) -> bool {
        self.finished.contains(shard)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shard(id: &str, parents: &[&str], range: (u128, u128), closed: bool) -> Shard {
        Shard {
            id: id.into(),
            parents: parents.iter().map(|p| p.to_string()).collect(),
            hash_range: range,
            closed,
        }
    }

    /// 0 split into 1 and 2; 1 and 2 merged into 3; 4 is unrelated.
    fn resharded() -> Vec<Shard> {
        vec![
            shard("shardId-3", &["shardId-1", "shardId-2"], (0, 99), false),
            shard("shardId-2", &["shardId-0"], (50, 99), true),
            shard("shardId-1", &["shardId-0"], (0, 49), true),
            shard("shardId-0", &[], (0, 99), true),
            shard("shardId-4", &[], (100, 199), false),
        ]
    }

    #[test]
    fn parents_come_before_children_whatever_the_listing_order() {
        let shards = resharded();
        let ids: Vec<&str> = parents_first(&shards)
            .iter()
            .map(|s| s.id.as_str())
            .collect();
        assert_eq!(
            ids,
            [
                "shardId-0",
                "shardId-4",
                "shardId-1",
                "shardId-2",
                "shardId-3"
            ]
        );
    }

    #[test]
    fn a_keys_lineage_is_every_shard_that_held_its_hash_oldest_first() {
        let shards = resharded();
        let ids = |hash| -> Vec<String> {
            lineage(&shards, hash)
                .iter()
                .map(|s| s.id.clone())
                .collect()
        };
        assert_eq!(ids(10), ["shardId-0", "shardId-1", "shardId-3"]);
        assert_eq!(ids(60), ["shardId-0", "shardId-2", "shardId-3"]);
        assert_eq!(ids(150), ["shardId-4"]);
        assert!(ids(500).is_empty());
    }

    #[test]
    fn a_follower_reads_children_only_once_their_parents_are_finished() {
        let shards = resharded();
        let mut follower = Follower::default();
        let ready = |f: &Follower| -> Vec<String> {
            f.ready(&shards).iter().map(|s| s.id.clone()).collect()
        };
        assert_eq!(ready(&follower), ["shardId-0", "shardId-4"]);
        follower.finish("shardId-0");
        assert_eq!(ready(&follower), ["shardId-4", "shardId-1", "shardId-2"]);
        follower.finish("shardId-1");
        // A merge waits for both parents.
        assert_eq!(ready(&follower), ["shardId-4", "shardId-2"]);
        follower.finish("shardId-2");
        assert_eq!(ready(&follower), ["shardId-4", "shardId-3"]);
    }

    #[test]
    fn a_parent_the_listing_no_longer_shows_does_not_block_its_children() {
        let shards = vec![shard("shardId-1", &["shardId-0"], (0, 99), false)];
        let follower = Follower::default();
        assert_eq!(follower.ready(&shards).len(), 1);
        assert_eq!(parents_first(&shards).len(), 1);
    }

    #[test]
    fn a_follower_continues_after_its_positions() {
        let mut follower = Follower::resume(HashMap::from([("a".into(), "7".into())]));
        assert_eq!(follower.from("a"), ReadFrom::After("7".into()));
        assert_eq!(follower.from("b"), ReadFrom::Oldest);
        follower.done_up_to("b", "3");
        assert_eq!(follower.from("b"), ReadFrom::After("3".into()));
    }
}
