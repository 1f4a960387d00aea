//! Keys that spread: where a value shared by many items would put every write on one
//! DynamoDB partition (1,000 write units a second at most), the value is split into shards
//! by a stable hash of the item's own key, and readers ask every shard. See the README's
//! capacity model for what each choice sustains.

use md5::{Digest, Md5};

/// Shards of the write model's outbox index (`outbox = pending#<n>`).
pub const OUTBOX_SHARDS: u32 = 16;
/// Shards of each status family in the `by-status` index (`status_key = ride#booked#<n>`).
pub const STATUS_SHARDS: u32 = 16;
/// Shards of the parked-entity list (`pk = parked#<n>`).
pub const PARKED_SHARDS: u32 = 4;

/// The shard (0..shards) of an item whose own key is `key`: the same for the same key on
/// every machine and in every version (MD5, as Kinesis hashes partition keys).
pub fn shard_of(key: &str, shards: u32) -> u32 {
    let digest = Md5::digest(key.as_bytes());
    let low = u32::from_be_bytes([digest[12], digest[13], digest[14], digest[15]]);
    low % shards.max(1)
}

/// `<value>#<shard of key>`.
pub fn spread(value: &str, key: &str, shards: u32) -> String {
    format!("{value}#{}", shard_of(key, shards))
}

/// Every shard of `value`.
pub fn all_shards(value: &str, shards: u32) -> impl Iterator<Item = String> + '_ {
    (0..shards).map(move |n| format!("{value}#{n}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_keys_shard_is_fixed_and_within_range() {
        // Fixed forever: stored items carry it and readers find them by it (these are the
        // low 32 bits of the keys' MD5, modulo 16).
        assert_eq!(shard_of("ride#r1", 16), 0);
        assert_eq!(shard_of("video#v1", 16), 13);
        assert_eq!(spread("pending", "ride#r2", 16), "pending#4");
        assert!((0..10_000).all(|i| shard_of(&format!("ride#{i}"), 16) < 16));
        assert_eq!(
            all_shards("pending", 3).collect::<Vec<_>>(),
            ["pending#0", "pending#1", "pending#2"]
        );
        assert_eq!(shard_of("anything", 0), 0, "no shards is one shard");
    }
}
