//! Kinesis sequence numbers: opaque decimal strings (real ones have 56 digits, emulators
//! use small ones). They are compared as numbers of any length, never parsed into a
//! fixed-width integer.

use std::cmp::Ordering;

/// Compares two sequence numbers numerically. Non-numeric input (which Kinesis never
/// produces) sorts by its bytes after every numeric one, so the order stays total.
pub fn compare(a: &str, b: &str) -> Ordering {
    let numeric = |s: &str| !s.is_empty() && s.bytes().all(|c| c.is_ascii_digit());
    match (numeric(a), numeric(b)) {
        (true, true) => {
            let (a, b) = (a.trim_start_matches('0'), b.trim_start_matches('0'));
            a.len().cmp(&b.len()).then_with(|| a.cmp(b))
        }
        (true, false) => Ordering::Less,
        (false, true) => Ordering::Greater,
        (false, false) => a.cmp(b),
    }
}

/// A sequence number that orders as Kinesis defines.
#[derive(Debug, Clone, PartialEq, Eq, Hash, serde::Serialize, serde::Deserialize)]
#[serde(transparent)]
pub struct SequenceNumber(pub String);

impl Ord for SequenceNumber {
    fn cmp(&self, other: &Self) -> Ordering {
        compare(&self.0, &other.0)
    }
}

impl PartialOrd for SequenceNumber {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // 56-digit sequence numbers shaped like real ones from one shard, in arrival order.
    const REAL: [&str; 3] = [
        "49590338271490256608559692538361571095921575989136588898",
        "49590338271490256608559692540925702759324208523137515618",
        "49590338271490256608559692541187217462457349716473577570",
    ];

    #[test]
    fn real_56_digit_sequence_numbers_order_as_kinesis_defines() {
        assert_eq!(REAL[0].len(), 56);
        assert_eq!(compare(REAL[0], REAL[1]), Ordering::Less);
        assert_eq!(compare(REAL[2], REAL[1]), Ordering::Greater);
        assert_eq!(compare(REAL[1], REAL[1]), Ordering::Equal);
        // They do not fit any fixed-width integer.
        assert!(REAL[0].parse::<u128>().is_err());
    }

    #[test]
    fn short_emulator_numbers_compare_numerically_not_as_text() {
        assert_eq!(compare("9", "10"), Ordering::Less);
        assert_eq!(compare("10", REAL[0]), Ordering::Less);
        assert_eq!(compare("007", "7"), Ordering::Equal);
    }

    #[test]
    fn sorting_a_shuffled_shard_restores_arrival_order() {
        let mut shuffled: Vec<SequenceNumber> = [REAL[2], "12", REAL[0], REAL[1], "9"]
            .iter()
            .map(|s| SequenceNumber(s.to_string()))
            .collect();
        shuffled.sort();
        let sorted: Vec<&str> = shuffled.iter().map(|s| s.0.as_str()).collect();
        assert_eq!(sorted, ["9", "12", REAL[0], REAL[1], REAL[2]]);
    }
}
