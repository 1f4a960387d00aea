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

    /// `YYYY-MM-DDTHH:MM:SS.mmmZ` written into `buf`, without allocating: views and history
    /// entries carry several timestamps each, and chrono's general formatter (a `String`
    /// per call, then another for serde) was a tenth of the processor's time. Years outside
    /// 0..=9999 (which RFC 3339 does not cover) take chrono's path.
    fn write_rfc3339<'b>(&self, buf: &'b mut [u8; 24]) -> Option<&'b str> {
        use chrono::{Datelike, Timelike};
        let year = self.0.year();
        if !(0..=9999).contains(&year) {
            return None;
        }
        let fields = [
            (0, 4, year as u32),
            (5, 2, self.0.month()),
            (8, 2, self.0.day()),
            (11, 2, self.0.hour()),
            (14, 2, self.0.minute()),
            (17, 2, self.0.second()),
            // A leap second shows as 1,000+ milliseconds; chrono writes it as :60.
            (20, 3, self.0.timestamp_subsec_millis()),
        ];
        if fields[6].2 > 999 {
            return None;
        }
        *buf = *b"0000-00-00T00:00:00.000Z";
        for (at, width, mut value) in fields {
            for i in (at..at + width).rev() {
                buf[i] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        }
        std::str::from_utf8(buf).ok()
    }
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.write_rfc3339(&mut [0; 24]) {
            Some(text) => f.write_str(text),
            None => f.write_str(&self.0.to_rfc3339_opts(SecondsFormat::Millis, true)),
        }
    }
}

#[derive(Debug, thiserror::Error)]
#[error("not an RFC 3339 timestamp: {0:?}")]
pub struct TimestampError(String);

impl Timestamp {
    /// Reads the form [`Timestamp::write_rfc3339`] writes, `YYYY-MM-DDTHH:MM:SS.mmmZ`, which
    /// is every timestamp this project stores: chrono's general RFC 3339 parser was a twentieth
    /// of the processor's time. Anything else (other offsets, precisions, a leap second) is
    /// left to chrono.
    fn read_rfc3339(text: &str) -> Option<Self> {
        let b: &[u8; 24] = text.as_bytes().try_into().ok()?;
        if [b[4], b[7], b[10], b[13], b[16], b[19], b[23]] != *b"--T::.Z" {
            return None;
        }
        let number = |from: usize, to: usize| {
            b[from..to].iter().try_fold(0u32, |n, d| {
                d.is_ascii_digit().then(|| n * 10 + u32::from(d - b'0'))
            })
        };
        let date =
            chrono::NaiveDate::from_ymd_opt(number(0, 4)? as i32, number(5, 7)?, number(8, 10)?)?;
        let time = chrono::NaiveTime::from_hms_milli_opt(
            number(11, 13)?,
            number(14, 16)?,
            number(17, 19)?,
            number(20, 23)?,
        )?;
        // A leap second (:60) is refused here and left to chrono.
        Some(Timestamp(date.and_time(time).and_utc()))
    }
}

impl FromStr for Timestamp {
    type Err = TimestampError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(t) = Timestamp::read_rfc3339(s) {
            return Ok(t);
        }
        DateTime::parse_from_rfc3339(s)
            .map(|t| Timestamp::from_datetime(t.with_timezone(&Utc)))
            .map_err(|_| TimestampError(s.to_owned()))
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self.write_rfc3339(&mut [0; 24]) {
            Some(text) => s.serialize_str(text),
            None => s.collect_str(self),
        }
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
    fn the_fast_writer_says_exactly_what_chrono_says() {
        // Every field's edges, leap days, the far ends of the range, and a spread between.
        let mut millis: Vec<i64> = vec![
            0,
            -1,
            1,
            999,
            -62_167_219_200_000, // 0000-01-01T00:00:00.000Z
            253_402_300_799_999, // 9999-12-31T23:59:59.999Z
            951_782_400_000,     // 2000-02-29
            4_107_542_399_999,   // 2100-02-28T23:59:59.999Z
            1_796_205_600_123,
        ];
        let mut x: i64 = 0x2545_f491;
        for _ in 0..20_000 {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            millis.push(
                (x >> 16).rem_euclid(253_402_300_800_000 + 62_167_219_200_000) - 62_167_219_200_000,
            );
        }
        for m in millis {
            let t = Timestamp::from_millis(m).unwrap();
            let chrono = t.0.to_rfc3339_opts(SecondsFormat::Millis, true);
            assert_eq!(t.to_string(), chrono, "{m}");
            assert_eq!(
                serde_json::to_string(&t).unwrap(),
                format!("\"{chrono}\""),
                "{m}"
            );
            assert_eq!(chrono.parse::<Timestamp>().unwrap(), t, "{m}");
            assert_eq!(Timestamp::read_rfc3339(&chrono), Some(t), "{m}");
        }
        // Outside RFC 3339's years: chrono's own form, still round trips through serde.
        for m in [-62_167_219_200_001, 253_402_300_800_000] {
            let t = Timestamp::from_millis(m).unwrap();
            assert_eq!(
                t.to_string(),
                t.0.to_rfc3339_opts(SecondsFormat::Millis, true)
            );
        }
    }

    #[test]
    fn the_fast_reader_leaves_every_other_form_to_chrono() {
        for (text, millis) in [
            ("2026-11-28T10:01:02Z", Some(1_795_860_062_000)),
            ("2026-11-28T10:01:02.1Z", Some(1_795_860_062_100)),
            ("2026-11-28T12:01:02.123+02:00", Some(1_795_860_062_123)),
            ("2026-11-28t10:01:02.123z", Some(1_795_860_062_123)),
            // A leap second: chrono's reading, not the fast reader's.
            ("2016-12-31T23:59:60.500Z", None),
            ("2026-02-29T10:01:02.123Z", None),
            ("2026-11-28T24:01:02.123Z", None),
            ("2026-11-28T10:01:02.12xZ", None),
            ("2026-11-28T10:01:02.123Y", None),
            ("+026-11-28T10:01:02.123Z", None),
        ] {
            assert_eq!(Timestamp::read_rfc3339(text), None, "{text}");
            let chrono = DateTime::parse_from_rfc3339(text)
                .ok()
                .map(|t| Timestamp::from_datetime(t.with_timezone(&Utc)));
            assert_eq!(text.parse::<Timestamp>().ok(), chrono, "{text}");
            if let Some(millis) = millis {
                assert_eq!(chrono.unwrap().as_millis(), millis, "{text}");
            }
        }
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
