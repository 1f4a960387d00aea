//! The replay's fast path through an archive object: records read in the exact shape this
//! project writes them (`serde_json` of a commit record: no whitespace, strings without
//! escapes where a fold keeps them), taking only what a fold needs and checking the rest by
//! scanning, without serde's per-field machinery.
//!
//! It never decides alone what a record means: it reads exactly what serde_json would
//! read, or declines, and the caller reads that record with serde_json (which also says
//! what is wrong with a corrupt one). Declined: whitespace, escapes in keys and in the
//! strings kept, unknown or repeated keys, numbers other than plain integers where an
//! integer is expected, a payload nested more than 126 levels deep.

use crate::fold::LeanEvent;
use std::borrow::Cow;

/// The deepest nesting read here (deeper is declined, left to serde_json; it also bounds
/// the recursion). A record and its list of events are the first two levels.
const MAX_DEPTH: usize = 128;
const EVENT_DEPTH: usize = 2;

/// Reads the record starting at `at` into `events` and returns where it ends, or `None`
/// when it is not in the expected shape (then `events` holds nothing of it).
pub(crate) fn record<'t>(
    text: &'t [u8],
    at: usize,
    events: &mut Vec<LeanEvent<'t>>,
) -> Option<usize> {
    let before = events.len();
    let read = Cursor { b: text, i: at }.record(events);
    if read.is_none() {
        events.truncate(before);
    }
    read
}

/// Where the first quote, backslash or control character is: where a string ends, or has
/// an escape, or is not JSON. Eight bytes at a time (strings here are short: a call to a
/// vectorised search costs more than it saves).
fn special(bytes: &[u8]) -> Option<usize> {
    const ONES: u64 = u64::from_ne_bytes([1; 8]);
    const HIGH: u64 = u64::from_ne_bytes([0x80; 8]);
    let mut chunks = bytes.chunks_exact(8);
    let mut at = 0;
    for chunk in &mut chunks {
        let w = u64::from_le_bytes(chunk.try_into().expect("eight bytes"));
        // A byte is flagged if it is zero after the xor (equal), or below 0x20; the lowest
        // flag is exact (a borrow only flags bytes above a real one).
        let quote = w ^ (ONES * u64::from(b'"'));
        let backslash = w ^ (ONES * u64::from(b'\\'));
        let flags = (quote.wrapping_sub(ONES) & !quote)
            | (backslash.wrapping_sub(ONES) & !backslash)
            | (w.wrapping_sub(ONES * 0x20) & !w);
        let flags = flags & HIGH;
        if flags != 0 {
            return Some(at + (flags.trailing_zeros() / 8) as usize);
        }
        at += 8;
    }
    let tail = chunks.remainder();
    let found = tail
        .iter()
        .position(|&b| b == b'"' || b == b'\\' || b < 0x20)?;
    Some(at + found)
}

/// Sets a field read for the first time; `None` if it was already set.
fn fill<T>(slot: &mut Option<T>, value: T) -> Option<()> {
    slot.is_none().then(|| *slot = Some(value))
}

struct Cursor<'t> {
    b: &'t [u8],
    i: usize,
}

impl<'t> Cursor<'t> {
    fn record(mut self, events: &mut Vec<LeanEvent<'t>>) -> Option<usize> {
        self.literal(b"{\"events\":[")?;
        loop {
            events.push(self.event()?);
            match self.byte()? {
                b',' => continue,
                b']' => break,
                _ => return None,
            }
        }
        self.literal(b"}")?;
        Some(self.i)
    }

    fn event(&mut self) -> Option<LeanEvent<'t>> {
        self.literal(b"{")?;
        let (mut event_id, mut kind, mut id, mut event_type) = (None, None, None, None);
        let (mut version, mut schema_version, mut data) = (None, None, None);
        let mut next = 0;
        loop {
            let key = self.key(&mut next)?;
            // Each known field once: serde_json refuses a repeated one, so it is declined.
            match key {
                b"event_id" => fill(&mut event_id, self.kept_string()?)?,
                b"aggregate_type" => fill(&mut kind, self.kept_string()?)?,
                b"aggregate_id" => fill(&mut id, self.kept_string()?)?,
                b"type" => fill(&mut event_type, self.kept_string()?)?,
                b"version" => fill(&mut version, self.integer()?)?,
                b"schema_version" => {
                    fill(&mut schema_version, u32::try_from(self.integer()?).ok()?)?
                }
                b"data" => {
                    let start = self.i;
                    self.value(EVENT_DEPTH)?;
                    fill(&mut data, std::str::from_utf8(&self.b[start..self.i]).ok()?)?
                }
                // serde ignores the fields a fold does not read, whatever their value.
                _ => self.value(EVENT_DEPTH)?,
            }
            match self.byte()? {
                b',' => continue,
                b'}' => break,
                _ => return None,
            }
        }
        Some(LeanEvent {
            event_id: event_id?,
            aggregate_type: kind?,
            aggregate_id: id?,
            version: version?,
            event_type: event_type?,
            schema_version: schema_version?,
            data: data?,
        })
    }

    fn byte(&mut self) -> Option<u8> {
        let b = *self.b.get(self.i)?;
        self.i += 1;
        Some(b)
    }

    /// The bytes `expected` (of a length known when compiled: compared without a call).
    #[inline(always)]
    fn literal<const N: usize>(&mut self, expected: &[u8; N]) -> Option<()> {
        let end = self.i.checked_add(N)?;
        (self.b.get(self.i..end)? == expected).then(|| self.i = end)
    }

    /// A key and its colon. The `next` of an event's keys in the order this project writes
    /// them is tried first, so that a key usually costs one comparison; then any other.
    fn key(&mut self, next: &mut usize) -> Option<&'t [u8]> {
        macro_rules! written {
            ($($n:literal => $key:literal),* $(,)?) => {
                match *next {
                    // The name is the key without its quotes and colon.
                    $($n => self.literal($key).map(|()| &$key[1..$key.len() - 2]),)*
                    _ => None,
                }
            };
        }
        let expected: Option<&'static [u8]> = written! {
            0 => b"\"event_id\":",
            1 => b"\"aggregate_type\":",
            2 => b"\"aggregate_id\":",
            3 => b"\"version\":",
            4 => b"\"type\":",
            5 => b"\"schema_version\":",
            6 => b"\"occurred_at\":",
            7 => b"\"recorded_at\":",
            8 => b"\"command_id\":",
            9 => b"\"correlation_id\":",
            10 => b"\"causation_id\":",
            11 => b"\"actor\":",
            12 => b"\"data\":",
        };
        if expected.is_some() {
            *next += 1;
            return expected;
        }
        let key = self.plain_string()?;
        self.literal(b":")?;
        Some(key.as_bytes())
    }

    /// A string without escapes, between its quotes.
    fn plain_string(&mut self) -> Option<&'t str> {
        self.string(false)
    }

    /// A string a fold keeps, borrowed.
    fn kept_string(&mut self) -> Option<Cow<'t, str>> {
        self.plain_string().map(Cow::Borrowed)
    }

    /// A string, checked as serde_json checks one: no control characters, valid escapes
    /// (declined if `escapes` is false), UTF-8.
    fn string(&mut self, escapes: bool) -> Option<&'t str> {
        self.literal(b"\"")?;
        let start = self.i;
        loop {
            let rest = &self.b[self.i..];
            let end = special(rest)?;
            if rest[end] < 0x20 {
                return None;
            }
            self.i += end + 1;
            if rest[end] == b'"' {
                break;
            }
            if !escapes {
                return None;
            }
            match self.byte()? {
                b'"' | b'\\' | b'/' | b'b' | b'f' | b'n' | b'r' | b't' => {}
                b'u' => {
                    for _ in 0..4 {
                        self.byte()?.is_ascii_hexdigit().then_some(())?;
                    }
                }
                _ => return None,
            }
        }
        std::str::from_utf8(&self.b[start..self.i - 1]).ok()
    }

    /// A JSON integer that fits a u64: digits, no sign, no leading zero.
    fn integer(&mut self) -> Option<u64> {
        let start = self.i;
        let mut n: u64 = 0;
        while let Some(d @ b'0'..=b'9') = self.b.get(self.i).copied() {
            n = n.checked_mul(10)?.checked_add(u64::from(d - b'0'))?;
            self.i += 1;
        }
        let digits = self.i - start;
        let leading_zero = digits > 1 && self.b[start] == b'0';
        // A fraction or exponent makes it a float, which an integer field refuses.
        let float = matches!(self.b.get(self.i), Some(b'.' | b'e' | b'E'));
        (digits > 0 && !leading_zero && !float).then_some(n)
    }

    /// Skips one JSON value, checking its grammar as serde_json does (whitespace declined).
    fn value(&mut self, depth: usize) -> Option<()> {
        match *self.b.get(self.i)? {
            b'"' => self.string(true).map(drop),
            b'{' => self.members(b'}', depth, |c, depth| {
                c.string(true)?;
                c.literal(b":")?;
                c.value(depth)
            }),
            b'[' => self.members(b']', depth, Self::value),
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            _ => self.number(),
        }
    }

    /// The members of an object or array up to `close`, one nesting level deeper.
    fn members(
        &mut self,
        close: u8,
        depth: usize,
        mut member: impl FnMut(&mut Self, usize) -> Option<()>,
    ) -> Option<()> {
        let depth = (depth < MAX_DEPTH).then_some(depth + 1)?;
        self.i += 1;
        if self.b.get(self.i) == Some(&close) {
            self.i += 1;
            return Some(());
        }
        loop {
            member(self, depth)?;
            match self.byte()? {
                b',' => continue,
                b if b == close => return Some(()),
                _ => return None,
            }
        }
    }

    /// `-?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?`
    fn number(&mut self) -> Option<()> {
        if self.b.get(self.i) == Some(&b'-') {
            self.i += 1;
        }
        match self.byte()? {
            b'0' => {}
            b'1'..=b'9' => self.digits(),
            _ => return None,
        }
        if self.b.get(self.i) == Some(&b'.') {
            self.i += 1;
            self.byte()?.is_ascii_digit().then_some(())?;
            self.digits();
        }
        if matches!(self.b.get(self.i), Some(b'e' | b'E')) {
            self.i += 1;
            if matches!(self.b.get(self.i), Some(b'+' | b'-')) {
                self.i += 1;
            }
            self.byte()?.is_ascii_digit().then_some(())?;
            self.digits();
        }
        Some(())
    }

    fn digits(&mut self) {
        while self.b.get(self.i).is_some_and(u8::is_ascii_digit) {
            self.i += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fold::LeanRecord;
    use proptest::prelude::*;
    use serde_json::{json, Value};

    type Read = Vec<(String, String, String, u64, String, u32, String)>;

    fn owned(events: &[LeanEvent<'_>]) -> Read {
        events
            .iter()
            .map(|e| {
                (
                    e.event_id.to_string(),
                    e.aggregate_type.to_string(),
                    e.aggregate_id.to_string(),
                    e.version,
                    e.event_type.to_string(),
                    e.schema_version,
                    e.data.to_owned(),
                )
            })
            .collect()
    }

    /// What the fast path reads from a text that is one record, if it reads it.
    fn scanned(text: &[u8]) -> Option<Read> {
        let mut events = Vec::new();
        let end = record(text, 0, &mut events)?;
        (end == text.len()).then(|| owned(&events))
    }

    fn by_serde(text: &[u8]) -> Option<Read> {
        serde_json::from_slice::<LeanRecord<'_>>(text)
            .ok()
            .map(|r| owned(&r.events))
    }

    fn envelope(id: &str, version: u64, data: Value) -> Value {
        json!({
            "event_id": format!("{id}-{version}"),
            "aggregate_type": "ride",
            "aggregate_id": id,
            "version": version,
            "type": "FareAdjusted",
            "schema_version": 1,
            "occurred_at": "2026-11-02T23:20:00.000Z",
            "recorded_at": "2026-11-02T23:20:00.000Z",
            "command_id": "cmd-1",
            "correlation_id": "corr-1",
            "causation_id": null,
            "actor": "5f0c1d2e",
            "data": data,
        })
    }

    fn record_text(events: Vec<Value>) -> Vec<u8> {
        serde_json::to_vec(&json!({ "events": events })).unwrap()
    }

    /// Any JSON value, nested a few levels, with strings that need escapes.
    fn any_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::from),
            any::<i64>().prop_map(Value::from),
            any::<f64>()
                .prop_filter("finite", |f| f.is_finite())
                .prop_map(Value::from),
            any::<String>().prop_map(Value::from),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
                prop::collection::btree_map(any::<String>(), inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    #[test]
    fn the_records_this_project_writes_take_the_fast_path() {
        let text = record_text(vec![
            envelope(
                "ride-1",
                7,
                json!({ "from_cents": 9091, "reason": "a \"quoted\" \\ reason", "to_cents": 9092 }),
            ),
            envelope(
                "ride-1",
                8,
                json!({ "to": { "address": "10 Harbour Rd", "lat": 53.303999999999995, "lon": -6.25 } }),
            ),
        ]);
        let read = scanned(&text).expect("the fast path reads it");
        assert_eq!(Some(read.clone()), by_serde(&text));
        // The keys above are sorted; the project's encoder writes them in its own order.
        let written: timeline_core::EventEnvelope =
            serde_json::from_value(envelope("ride-9", 4, json!({ "to_cents": 5 }))).unwrap();
        let text = timeline_core::codec::encode_record(&timeline_core::CommitRecord {
            events: vec![written.clone(), written],
        });
        assert!(text.starts_with(br#"{"events":[{"event_id":"ride-9-4","aggregate_type""#));
        assert!(scanned(&text).is_some());
        assert_eq!(scanned(&text), by_serde(&text));
        assert_eq!(read[1].3, 8);
        assert_eq!(
            read[0].6,
            r#"{"from_cents":9091,"reason":"a \"quoted\" \\ reason","to_cents":9092}"#
        );
    }

    #[test]
    fn shapes_it_does_not_expect_are_declined_for_serde_to_read() {
        let plain = String::from_utf8(record_text(vec![envelope("r", 1, json!({}))])).unwrap();
        assert!(scanned(plain.as_bytes()).is_some(), "{plain}");
        for declined in [
            // Whitespace, an escaped id, a float or a leading zero where an integer goes.
            plain.replace(r#""version":1}"#, r#""version": 1}"#),
            plain.replace(r#""aggregate_id":"r""#, r#""aggregate_id":"\u0072""#),
            plain.replace(r#""version":1}"#, r#""version":1.0}"#),
            plain.replace(r#""version":1}"#, r#""version":01}"#),
            // A repeated field, a missing one, an empty record, an escaped key.
            plain.replace(
                r#""type":"FareAdjusted""#,
                r#""type":"FareAdjusted","type":"X""#,
            ),
            plain.replace(r#""schema_version":1,"#, ""),
            r#"{"events":[]}"#.to_owned(),
            plain.replace(r#""actor""#, r#""act\u006fr""#),
            // A schema version beyond u32, a version beyond u64.
            plain.replace(r#""schema_version":1"#, r#""schema_version":4294967296"#),
            plain.replace(r#""version":1}"#, r#""version":18446744073709551616}"#),
        ] {
            assert_ne!(declined, plain);
            assert_eq!(scanned(declined.as_bytes()), None, "{declined}");
        }
        // What serde refuses (a payload cut short, a bad escape) the fast path refuses too.
        for corrupt in [
            plain.replace(r#""data":{}"#, r#""data":{"a":}"#),
            plain.replace(r#""actor":"5f0c1d2e""#, r#""actor":"\x""#),
            plain.replace(r#""data":{}"#, r#""data":[1,]"#),
            plain.replace(r#""data":{}"#, r#""data":-"#),
        ] {
            assert_ne!(corrupt, plain);
            assert_eq!(by_serde(corrupt.as_bytes()), None, "{corrupt}");
            assert_eq!(scanned(corrupt.as_bytes()), None, "{corrupt}");
        }
    }

    #[test]
    fn deep_nesting_is_read_up_to_serdes_limit_and_declined_beyond() {
        let nested = |depth: usize| {
            let data = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            String::from_utf8(record_text(vec![envelope("r", 1, json!(null))]))
                .unwrap()
                .replace(r#""data":null"#, &format!(r#""data":{data}"#))
        };
        for depth in [1, 100, MAX_DEPTH - EVENT_DEPTH] {
            let text = nested(depth);
            assert!(scanned(text.as_bytes()).is_some(), "depth {depth}");
            assert_eq!(scanned(text.as_bytes()), by_serde(text.as_bytes()));
        }
        for depth in [MAX_DEPTH - EVENT_DEPTH + 1, 10_000] {
            assert_eq!(scanned(nested(depth).as_bytes()), None, "depth {depth}");
        }
    }

    #[test]
    fn the_first_quote_backslash_or_control_character_is_found_wherever_it_is() {
        for len in 0..40 {
            for at in 0..len {
                for special_byte in [b'"', b'\\', 0x00, 0x1f] {
                    // Bytes around the boundaries of the checks: 0x20, 0x21, 0x5b, 0x7f, 0x80.
                    let mut bytes: Vec<u8> = (0..len)
                        .map(|i| [0x20, 0x21, 0x5b, 0x7f, 0x80][i % 5])
                        .collect();
                    bytes[at] = special_byte;
                    if at + 1 < len {
                        bytes[at + 1] = b'"';
                    }
                    assert_eq!(special(&bytes), Some(at), "{bytes:?}");
                }
            }
            let plain: Vec<u8> = (0..len)
                .map(|i| [0x20, 0x21, 0x5b, 0x7f, 0xff][i % 5])
                .collect();
            assert_eq!(special(&plain), None);
        }
    }

    proptest! {
        /// Whatever the payload and ids, what the fast path reads is what serde_json reads,
        /// and it reads every record whose kept strings need no escapes.
        #[test]
        fn the_fast_path_reads_what_serde_reads(
            ids in prop::collection::vec(any::<String>(), 1..3),
            plain_id in "[a-z0-9-]{1,12}",
            version in any::<u64>(),
            data in any_json(),
        ) {
            let mut events: Vec<Value> =
                ids.iter().map(|id| envelope(id, version, data.clone())).collect();
            let text = record_text(events.clone());
            if let Some(read) = scanned(&text) {
                prop_assert_eq!(Some(read), by_serde(&text));
            }
            events = vec![envelope(&plain_id, version, data)];
            let text = record_text(events);
            prop_assert!(scanned(&text).is_some());
            prop_assert_eq!(scanned(&text), by_serde(&text));
        }

        /// Damage anywhere: the fast path either declines or reads what serde_json reads.
        #[test]
        fn a_damaged_record_is_declined_or_read_as_serde_reads_it(
            data in any_json(),
            at in any::<prop::sample::Index>(),
            byte in prop::sample::select(b"\"\\{}[],:0123456789.eE+-tfnu \n\x01\xff\xc3".to_vec()),
            how in 0..3u8,
        ) {
            let mut text = record_text(vec![envelope("ride-1", 3, data)]);
            let i = at.index(text.len());
            match how {
                0 => text[i] = byte,
                1 => text.insert(i, byte),
                _ => {
                    text.remove(i);
                }
            }
            if let Some(read) = scanned(&text) {
                prop_assert_eq!(Some(read), by_serde(&text));
            }
        }
    }
}
