//! Timestamps as the envelope carries them: RFC 3339, UTC, millisecond precision.
//!
//! Values are truncated to milliseconds when made, so a timestamp survives a round trip
//! through JSON unchanged and comparisons agree before and after encoding.

use chrono::{DateTime, SecondsFormat, SubsecRound, Utc};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Timestamp(DateTime<Utc>);

impl Timestamp {
    pub fn from_datetime(at: DateTime<Utc>) -> Self {
        Timestamp(at.trunc_subsecs(3))
    }

    pub fn from_millis(millis: i64) -> Option<Self> {
        DateTime::from_timestamp_millis(millis).map(Timestamp)
    }

    pub fn as_millis(&self) -> i64 {
        self.0.timestamp_millis()
    }

    pub fn as_datetime(&self) -> DateTime<Utc> {
        self.0
    }

    /// Adds whole milliseconds (negative values go back in time).
    pub fn plus_millis(&self, millis: i64) -> Self {
        Timestamp(self.0 + chrono::Duration::milliseconds(millis))
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not an RFC 3339 timestamp: {0:?}")]
pub struct TimestampError(String);

impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        DateTime::parse_from_rfc3339(s)
            .map(|t| Timestamp::from_datetime(t.with_timezone(&Utc)))
            .map_err(|_| TimestampError(s.to_owned()))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = std::borrow::Cow::<str>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_utc_with_milliseconds_and_round_trips() {
        let t: Timestamp = "2026-11-28T10:01:02.123456+02:00".parse().unwrap();
        assert_eq!(t.to_string(), "2026-11-28T08:01:02.123Z");
        let json = serde_json::to_string(&t).unwrap();
        assert_eq!(json, "\"2026-11-28T08:01:02.123Z\"");
        assert_eq!(serde_json::from_str::<Timestamp>(&json).unwrap(), t);
    }

    #[test]
    fn rejects_what_is_not_rfc3339() {
        assert!("2026-11-28 10:01".parse::<Timestamp>().is_err());
        assert!(serde_json::from_str::<Timestamp>("12").is_err());
    }
}

/// The moment by which an answer must be given (None: no limit).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Deadline(Option<std::time::Instant>);

impl Deadline {
    /// No time limit (tools, tests, followers that run until stopped).
    pub fn none() -> Self {
        Deadline(None)
    }

    pub fn after(budget: std::time::Duration) -> Self {
        Deadline(std::time::Instant::now().checked_add(budget))
    }

    pub fn at(instant: std::time::Instant) -> Self {
        Deadline(Some(instant))
    }

    /// The time left, or None without a limit.
    pub fn remaining(&self) -> Option<std::time::Duration> {
        self.0
            .map(|at| at.saturating_duration_since(std::time::Instant::now()))
    }

    pub fn passed(&self) -> bool {
        self.remaining().is_some_and(|left| left.is_zero())
    }

    /// The deadline of a Lambda invocation (milliseconds since the epoch, as the runtime gives
    /// it), less `margin` for answering, and no later than `cap` from now.
    pub fn lambda(
        deadline_epoch_millis: u64,
        margin: std::time::Duration,
        cap: std::time::Duration,
    ) -> Self {
        let now_millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        let left =
            std::time::Duration::from_millis(deadline_epoch_millis.saturating_sub(now_millis));
        Deadline::after(left.saturating_sub(margin).min(cap))
    }

    /// Is there at least `needed` left?
    pub fn allows(&self, needed: std::time::Duration) -> bool {
        self.remaining().is_none_or(|left| left >= needed)
    }
}
