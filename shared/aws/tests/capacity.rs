//! The capacity model, checked: a million commands of a realistic mix (rides booked,
//! assigned, started, re-priced and completed or cancelled; videos processed), their keys
//! computed by the adapters' own functions, and the writes each table, index and stream
//! shard takes counted per key. DynamoDB serves at most 1,000 write units a second per
//! partition key value, and a Kinesis shard 1,000 records (1 MB) a second in: the busiest
//! key of each decides the commands a second the design sustains. Printed side by side with
//! the design before the keys were spread (one outbox partition, one partition per status).
//! A model, not a benchmark: no emulator, no clock.
//!
//! Units per write (items up to 1 KB, views up to 2 KB): the commit is a transaction of the
//! head and the idempotency record (2 items, 2 units each, the record under a key of its
//! own); clearing the outbox 1; the outbox index 1 as a head enters it and 1 as it leaves;
//! a view 2 and each of its index copies 2 (a status change also deletes the copy under the
//! old status, 2); a history entry 1.

use std::collections::HashMap;
use timeline_aws::keys::{shard_of, spread, OUTBOX_SHARDS, STATUS_SHARDS};
use timeline_aws::stream_reader::key_hash;

const COMMANDS: usize = 1_000_000;
const RIDERS: u32 = 100_000;
const DRIVERS: u32 = 20_000;
/// What one key takes per second (DynamoDB partition, Kinesis shard).
const PER_KEY: f64 = 1_000.0;
/// The stream's shards at the start of on-demand capacity.
const STREAM_SHARDS: u32 = 4;

/// Write units (or records) per key.
#[derive(Default)]
struct Load(HashMap<String, f64>);

impl Load {
    fn add(&mut self, key: impl Into<String>, units: f64) {
        *self.0.entry(key.into()).or_default() += units;
    }

    /// Commands a second before the busiest key reaches `PER_KEY`.
    fn sustains(&self, commands: usize) -> f64 {
        let busiest = self.0.values().cloned().fold(0.0, f64::max);
        PER_KEY * commands as f64 / busiest
    }

    fn busiest_share(&self) -> f64 {
        let total: f64 = self.0.values().sum();
        self.0.values().cloned().fold(0.0, f64::max) / total
    }
}

/// The writes of every command, by key, under the spread keys or the former ones.
#[derive(Default)]
struct Model {
    /// Units a command puts on one entity's own key, in the busier of the two tables.
    per_entity: f64,
    outbox: Load,
    by_status: Load,
    by_rider: Load,
    by_driver: Load,
    stream: Load,
}

/// Where an entity's writes go (its keys are hashed once).
struct Entity {
    kind: &'static str,
    /// The outbox partition and status shard of its key, when spread.
    outbox_shard: String,
    status_shard: u32,
    stream_shard: u128,
    rider: Option<String>,
    driver: Option<String>,
}

impl Model {
    fn command(&mut self, spread_keys: bool, e: &Entity, status: &str, previous: Option<&str>) {
        // In the write table, its head: its part of the transaction (the other item is the
        // idempotency record, under a key of its own), then the outbox cleared. In the read
        // table, its view and one history entry. Each table has its own limit.
        self.per_entity = self.per_entity.max((2.0 + 1.0_f64).max(2.0 + 1.0));
        self.outbox.add(
            if spread_keys {
                e.outbox_shard.clone()
            } else {
                "pending".to_owned()
            },
            2.0,
        );
        let status_key = |status: &str| {
            if spread_keys {
                format!("{}#{status}#{}", e.kind, e.status_shard)
            } else {
                format!("{}#{status}", e.kind)
            }
        };
        self.by_status.add(status_key(status), 2.0);
        if let Some(previous) = previous.filter(|p| *p != status) {
            self.by_status.add(status_key(previous), 2.0);
        }
        if let Some(rider) = &e.rider {
            self.by_rider.add(rider.clone(), 2.0);
        }
        if let Some(driver) = &e.driver {
            self.by_driver.add(driver.clone(), 2.0);
        }
        self.stream.add(e.stream_shard.to_string(), 1.0);
    }
}

/// The statuses an entity goes through, one per command.
fn lifecycle(kind: &str) -> Vec<&'static str> {
    if kind == "video" {
        let end = if fastrand::u8(..10) == 0 {
            "failed"
        } else {
            "succeeded"
        };
        return vec!["uploaded", "processing", "processing", "processing", end];
    }
    let mut steps = vec!["booked"];
    if fastrand::u8(..10) == 0 {
        steps.push("cancelled");
        return steps;
    }
    steps.extend(["driver_assigned", "in_progress"]);
    steps.extend(std::iter::repeat_n("in_progress", fastrand::usize(..3)));
    steps.push("completed");
    steps
}

/// Runs the workload under both key designs.
fn simulate() -> (Model, Model) {
    fastrand::seed(16);
    let (mut spread_keys, mut former) = (Model::default(), Model::default());
    let mut done = 0;
    while done < COMMANDS {
        let kind = if fastrand::u8(..10) == 0 {
            "video"
        } else {
            "ride"
        };
        let pk = format!("{kind}#{}", uuid::Uuid::from_u128(fastrand::u128(..)));
        let mut entity = Entity {
            kind,
            outbox_shard: spread("pending", &pk, OUTBOX_SHARDS),
            status_shard: shard_of(&pk, STATUS_SHARDS),
            // Kinesis: shards split the hash range evenly.
            stream_shard: key_hash(&pk) / (u128::MAX / STREAM_SHARDS as u128 + 1),
            rider: (kind == "ride").then(|| format!("ride#rider-{}", fastrand::u32(..RIDERS))),
            driver: None,
        };
        let mut previous = None;
        for status in lifecycle(kind) {
            if status == "driver_assigned" {
                entity.driver = Some(format!("ride#driver-{}", fastrand::u32(..DRIVERS)));
            }
            spread_keys.command(true, &entity, status, previous);
            former.command(false, &entity, status, previous);
            previous = Some(status);
            done += 1;
        }
    }
    (spread_keys, former)
}

#[test]
fn a_million_commands_spread_so_no_partition_or_shard_limits_the_system_first() {
    let (now, before) = simulate();
    println!("commands/s before the busiest key reaches 1,000 units (or records) a second:");
    println!(
        "{:<20} {:>12} {:>12} {:>12}",
        "", "spread keys", "former keys", "busiest key"
    );
    for (name, now, before) in [
        ("outbox index", &now.outbox, &before.outbox),
        ("by-status index", &now.by_status, &before.by_status),
        ("by-rider index", &now.by_rider, &before.by_rider),
        ("by-driver index", &now.by_driver, &before.by_driver),
        ("stream (4 shards)", &now.stream, &before.stream),
    ] {
        println!(
            "{name:<20} {:>12.0} {:>12.0} {:>11.2}%",
            now.sustains(COMMANDS),
            before.sustains(COMMANDS),
            now.busiest_share() * 100.0
        );
    }
    println!(
        "one entity's own commands/s: {:.0} (its items take {} units a command)",
        PER_KEY / now.per_entity,
        now.per_entity
    );

    // The former design throttled at a few hundred commands a second, on its indexes.
    assert!(before.outbox.sustains(COMMANDS) < 600.0);
    assert!(before.by_status.sustains(COMMANDS) < 3_000.0);
    // Spread, each index takes at least its shard count times more, within 15% of an even
    // spread...
    let outbox_gain = now.outbox.sustains(COMMANDS) / before.outbox.sustains(COMMANDS);
    assert!(outbox_gain > OUTBOX_SHARDS as f64 * 0.85, "{outbox_gain}");
    let status_gain = now.by_status.sustains(COMMANDS) / before.by_status.sustains(COMMANDS);
    assert!(status_gain > STATUS_SHARDS as f64 * 0.85, "{status_gain}");
    // ...so the stream's shards, not a table key, are what a deployment scales first: every
    // index sustains more commands a second than 4 Kinesis shards take.
    let stream = now.stream.sustains(COMMANDS);
    for (name, load) in [
        ("outbox", &now.outbox),
        ("by-status", &now.by_status),
        ("by-rider", &now.by_rider),
        ("by-driver", &now.by_driver),
    ] {
        assert!(load.sustains(COMMANDS) > stream, "{name} limits first");
    }
    // Shards and spread keys stay where they are for a key forever.
    assert_eq!(shard_of("ride#r1", OUTBOX_SHARDS), 0);
}
