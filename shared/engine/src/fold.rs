//! A streaming fold of the whole log into the current state of every entity. Memory grows
//! with the number of entities (plus the few events that arrive ahead of a missing
//! predecessor), never with the number of events: each event is applied and dropped.
//!
//! Copies are skipped on `(aggregate, version)`, an event that arrives before its
//! predecessor waits until it comes (archive objects can be read out of order), and
//! whatever still waits at the end is reported as a gap.
//!
//! Archive objects can be folded straight from their bytes ([`StateFold::push_object`]):
//! records are parsed in place, reading only the fields a fold needs, and each payload is
//! decoded directly into its domain event. That is what makes a full replay cheap.

use crate::archive::is_gzip;
use crate::record_scan;

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
use std::sync::Mutex;
use timeline_core::codec::decode_raw;
use timeline_core::envelope::{EventEnvelope, StreamKey};
use timeline_core::ports::ArchiveError;
use timeline_core::{Aggregate, Entity, Visitor};

/// The state of one entity of any registered type; [`AnyState::get`] reads it as its type.
pub struct AnyState(Box<dyn std::any::Any + Send + Sync>);

impl AnyState {
    /// The state, if the entity is an `A`.
    pub fn get<A: Aggregate>(&self) -> Option<&A::State> {
        self.0.downcast_ref::<A::State>()
    }
}

impl std::fmt::Debug for AnyState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AnyState(..)")
    }
}

/// An event waiting for its predecessor (owned: the object it came from is gone by then).
#[derive(Debug, Clone)]
struct Waiting {
    event_id: String,
    event_type: String,
    schema_version: u32,
    data: String,
}

impl Waiting {
    fn text(&self) -> EventText<'_> {
        EventText {
            event_id: &self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            data: &self.data,
        }
    }
}

/// One event's text as a fold reads it, borrowed from wherever it was parsed: an event is
/// copied only if it has to wait for its predecessor.
#[derive(Clone, Copy)]
struct EventText<'a> {
    event_id: &'a str,
    event_type: &'a str,
    schema_version: u32,
    data: &'a str,
}

impl EventText<'_> {
    fn to_waiting(self) -> Waiting {
        Waiting {
            event_id: self.event_id.to_owned(),
            event_type: self.event_type.to_owned(),
            schema_version: self.schema_version,
            data: self.data.to_owned(),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Folding<S> {
    version: u64,
    state: S,
    ahead: BTreeMap<u64, Waiting>,
}

#[derive(Default)]
pub struct StateFold {
    /// One typed fold per registered aggregate type met so far (a handful: a list is quicker
    /// to search than a map).
    kinds: Vec<(String, Box<dyn KindFold>)>,
    pub events_applied: u64,
    pub duplicates: u64,
    /// Events that could not be decoded (unknown type, schema or entity type).
    pub unreadable: Vec<(StreamKey, u64, String)>,
}

/// What a finished fold knows.
#[derive(Debug, Default)]
pub struct Folded {
    pub states: HashMap<StreamKey, (u64, AnyState)>,
    pub events_applied: u64,
    pub duplicates: u64,
    /// Entities whose history stops before a missing version: (entity, first missing).
    pub gaps: Vec<(StreamKey, u64)>,
    pub unreadable: Vec<(StreamKey, u64, String)>,
}

/// One event as a fold reads it, borrowed from the record's bytes.
#[derive(Deserialize)]
pub(crate) struct LeanEvent<'a> {
    #[serde(borrow)]
    pub(crate) event_id: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) aggregate_type: Cow<'a, str>,
    #[serde(borrow)]
    pub(crate) aggregate_id: Cow<'a, str>,
    pub(crate) version: u64,
    #[serde(rename = "type", borrow)]
    pub(crate) event_type: Cow<'a, str>,
    pub(crate) schema_version: u32,
    /// The payload's JSON text.
    #[serde(borrow, deserialize_with = "raw_text")]
    pub(crate) data: &'a str,
}

fn raw_text<'de, D: serde::Deserializer<'de>>(d: D) -> Result<&'de str, D::Error> {
    <&RawValue>::deserialize(d).map(RawValue::get)
}

impl LeanEvent<'_> {
    fn text(&self) -> EventText<'_> {
        EventText {
            event_id: &self.event_id,
            event_type: &self.event_type,
            schema_version: self.schema_version,
            data: self.data,
        }
    }
}

#[derive(Deserialize)]
pub(crate) struct LeanRecord<'a> {
    #[serde(borrow)]
    pub(crate) events: Vec<LeanEvent<'a>>,
}

/// Applies `event` to one entity's fold, then any events that were waiting for it.
fn fold_into<A: Aggregate>(
    entity: &mut Folding<A::State>,
    event: EventText<'_>,
    version: u64,
    stats: &mut (u64, u64),
) -> Result<(), (u64, String)> {
    if version <= entity.version || entity.ahead.contains_key(&version) {
        stats.1 += 1;
        return Ok(());
    }
    if version != entity.version + 1 {
        entity.ahead.insert(version, event.to_waiting());
        return Ok(());
    }
    apply::<A>(entity, event, version, stats)?;
    let mut at = version + 1;
    while let Some(waiting) = entity.ahead.remove(&at) {
        apply::<A>(entity, waiting.text(), at, stats)?;
        at += 1;
    }
    Ok(())
}

/// Decodes and applies the entity's next event; one that cannot be decoded stops the entity
/// there (it and later events wait, and end as a gap).
fn apply<A: Aggregate>(
    entity: &mut Folding<A::State>,
    e: EventText<'_>,
    at: u64,
    stats: &mut (u64, u64),
) -> Result<(), (u64, String)> {
    match decode_raw::<A>(e.event_id, e.event_type, e.schema_version, e.data) {
        Ok(event) => {
            entity.state = A::evolve(std::mem::take(&mut entity.state), &event);
            entity.version = at;
            stats.0 += 1;
            Ok(())
        }
        Err(err) => {
            entity.ahead.insert(at, e.to_waiting());
            Err((at, err.to_string()))
        }
    }
}

/// The entities of one aggregate type, folded with its own `evolve`.
trait KindFold: Send + Sync {
    fn push(
        &mut self,
        id: &str,
        version: u64,
        event: EventText<'_>,
        stats: &mut (u64, u64),
    ) -> Result<(), (u64, String)>;
    fn len(&self) -> usize;
    fn absorb(&mut self, other: Box<dyn std::any::Any>);
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any>;
    fn finish(self: Box<Self>, kind: &str, folded: &mut Folded);
}

/// Entity ids are ours, not an attacker's: a fast hash (SipHash was a tenth of a replay).
type Ids<S> = HashMap<String, Folding<S>, foldhash::fast::RandomState>;

struct Typed<A: Aggregate>(Ids<A::State>);

impl<A: Aggregate> KindFold for Typed<A> {
    fn push(
        &mut self,
        id: &str,
        version: u64,
        event: EventText<'_>,
        stats: &mut (u64, u64),
    ) -> Result<(), (u64, String)> {
        let entity = match self.0.get_mut(id) {
            Some(e) => e,
            None => self.0.entry(id.to_owned()).or_default(),
        };
        fold_into::<A>(entity, event, version, stats)
    }

    fn len(&self) -> usize {
        self.0.len()
    }

    fn absorb(&mut self, other: Box<dyn std::any::Any>) {
        let other = other
            .downcast::<Typed<A>>()
            .expect("folds of one type name hold one type");
        self.0.extend(other.0);
    }

    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any> {
        self
    }

    fn finish(self: Box<Self>, kind: &str, folded: &mut Folded) {
        for (id, e) in self.0 {
            let key = StreamKey::new(kind, id);
            if !e.ahead.is_empty() {
                folded.gaps.push((key.clone(), e.version + 1));
            }
            folded
                .states
                .insert(key, (e.version, AnyState(Box::new(e.state))));
        }
    }
}

/// A new, empty fold for the registered type.
struct NewFold;

impl Visitor for NewFold {
    type Output = Box<dyn KindFold>;
    fn visit<A: Entity>(self) -> Box<dyn KindFold> {
        Box::new(Typed::<A>(Ids::default()))
    }
}

impl StateFold {
    fn push_parts(&mut self, kind: &str, id: &str, version: u64, event: EventText<'_>) {
        let fold = match self.kinds.iter().position(|(k, _)| k == kind) {
            Some(i) => Ok(&mut self.kinds[i].1),
            None => timeline_core::dispatch(kind, NewFold).map(|fold| {
                self.kinds.push((kind.to_owned(), fold));
                &mut self.kinds.last_mut().expect("just pushed").1
            }),
        };
        let mut stats = (self.events_applied, self.duplicates);
        let result = match fold {
            Ok(fold) => fold.push(id, version, event, &mut stats),
            Err(unregistered) => Err((version, unregistered.to_string())),
        };
        (self.events_applied, self.duplicates) = stats;
        if let Err((version, reason)) = result {
            self.unreadable
                .push((StreamKey::new(kind, id), version, reason));
        }
    }

    /// Folds one event.
    pub fn push(&mut self, envelope: EventEnvelope) {
        let data = envelope.data.to_string();
        let text = EventText {
            event_id: &envelope.event_id,
            event_type: &envelope.event_type,
            schema_version: envelope.schema_version,
            data: &data,
        };
        self.push_parts(
            &envelope.aggregate_type,
            &envelope.aggregate_id,
            envelope.version,
            text,
        );
    }

    fn push_lean(&mut self, e: &LeanEvent<'_>) {
        self.push_parts(&e.aggregate_type, &e.aggregate_id, e.version, e.text());
    }

    /// Folds every record of an archive object (gzip or plain; NDJSON or concatenated).
    /// A corrupt object is reported with its key; the records before the corruption count.
    pub fn push_object(&mut self, key: &str, bytes: &[u8]) -> Result<usize, ArchiveError> {
        let text = decompress(key, bytes)?;
        let mut records = 0;
        let result = parse_records(key, &text, |e| self.push_lean(&e), &mut records);
        result.map(|()| records)
    }

    pub fn entities(&self) -> usize {
        self.kinds.iter().map(|(_, k)| k.len()).sum()
    }

    /// Combines folds over disjoint sets of entities (one per worker).
    pub fn absorb(&mut self, other: StateFold) {
        for (kind, fold) in other.kinds {
            match self.kinds.iter_mut().find(|(k, _)| *k == kind) {
                Some((_, mine)) => mine.absorb(fold.into_any()),
                None => self.kinds.push((kind, fold)),
            }
        }
        self.events_applied += other.events_applied;
        self.duplicates += other.duplicates;
        self.unreadable.extend(other.unreadable);
    }

    pub fn finish(self) -> Folded {
        let mut folded = Folded {
            events_applied: self.events_applied,
            duplicates: self.duplicates,
            unreadable: self.unreadable,
            ..Default::default()
        };
        for (kind, fold) in self.kinds {
            fold.finish(&kind, &mut folded);
        }
        folded.gaps.sort();
        folded
    }
}

/// Folds every record of an archive object into `folds`, each entity always into the same
/// one (by [`partition_of`]), so several threads can fold objects at once: a thread parses
/// its object in place, then takes each fold's lock once for that fold's share of the
/// events. Nothing is copied out of the object unless it has to wait for a predecessor.
/// A corrupt object is reported with its key; the records before the corruption count.
pub fn fold_object_partitioned(
    key: &str,
    bytes: &[u8],
    folds: &[Mutex<StateFold>],
) -> Result<usize, ArchiveError> {
    let text = decompress(key, bytes)?;
    let mut parts: Vec<Vec<LeanEvent<'_>>> = (0..folds.len()).map(|_| Vec::new()).collect();
    let mut records = 0;
    let result = parse_records(
        key,
        &text,
        |e| {
            let p = partition_of(&e.aggregate_type, &e.aggregate_id, parts.len());
            parts[p].push(e);
        },
        &mut records,
    );
    for (fold, events) in folds.iter().zip(parts) {
        if events.is_empty() {
            continue;
        }
        let mut fold = fold.lock().expect("no fold panics");
        for e in &events {
            fold.push_lean(e);
        }
    }
    result.map(|()| records)
}

fn decompress<'b>(key: &str, bytes: &'b [u8]) -> Result<Cow<'b, [u8]>, ArchiveError> {
    if !is_gzip(bytes) {
        return Ok(Cow::Borrowed(bytes));
    }
    // Sized once from the gzip trailer (the last member's length; Firehose writes one),
    // bounded by deflate's densest ratio so a forged trailer cannot ask for more.
    let trailer = bytes[bytes.len().saturating_sub(4)..]
        .try_into()
        .map_or(0, u32::from_le_bytes) as usize;
    let mut out =
        Vec::with_capacity(trailer.clamp(bytes.len(), bytes.len().saturating_mul(1032)) + 1);
    flate2::read::MultiGzDecoder::new(bytes)
        .read_to_end(&mut out)
        .map_err(|e| ArchiveError::Corrupt {
            key: key.to_owned(),
            offset: out.len(),
            records_before: 0,
            reason: format!("gzip: {e}"),
        })?;
    Ok(Cow::Owned(out))
}

/// Parses every record of an object's text in place, handing each event to `sink`: each
/// record through the fast path when it has the shape this project writes, through
/// serde_json otherwise (which also says what is wrong with a corrupt one).
fn parse_records<'t>(
    key: &str,
    text: &'t [u8],
    mut sink: impl FnMut(LeanEvent<'t>),
    records: &mut usize,
) -> Result<(), ArchiveError> {
    let mut events = Vec::new();
    let mut at = 0;
    loop {
        // Between records: JSON whitespace (NDJSON's newlines), or nothing (concatenated).
        while text
            .get(at)
            .is_some_and(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
        {
            at += 1;
        }
        if at == text.len() {
            return Ok(());
        }
        at = match record_scan::record(text, at, &mut events) {
            Some(end) => end,
            None => {
                let mut stream =
                    serde_json::Deserializer::from_slice(&text[at..]).into_iter::<LeanRecord<'t>>();
                match stream.next() {
                    Some(Ok(record)) => events.extend(record.events),
                    Some(Err(e)) => {
                        return Err(ArchiveError::Corrupt {
                            key: key.to_owned(),
                            offset: at,
                            records_before: *records,
                            reason: e.to_string(),
                        })
                    }
                    None => return Ok(()),
                }
                at + stream.byte_offset()
            }
        };
        events.drain(..).for_each(&mut sink);
        *records += 1;
    }
}

/// The partition an entity belongs to (the same for the whole run; a fixed-seed hash).
pub fn partition_of(kind: &str, id: &str, partitions: usize) -> usize {
    use std::hash::BuildHasher;
    let h = foldhash::fast::FixedState::with_seed(0).hash_one((kind, id));
    (h % partitions.max(1) as u64) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::archive::encode_object;
    use timeline_core::codec::encode_event;
    use timeline_core::video::{VideoAggregate, VideoEvent};
    use timeline_core::CommitRecord;
    use timeline_core::Metadata;
    use timeline_core::Timestamp;

    fn video(version: u64, event: VideoEvent) -> EventEnvelope {
        let (event_type, schema_version, data) = encode_event::<VideoAggregate>(&event);
        let at = Timestamp::from_millis(version as i64 * 1000).unwrap();
        EventEnvelope {
            event_id: format!("e{version}"),
            aggregate_type: "video".into(),
            aggregate_id: "v1".into(),
            version,
            event_type,
            schema_version,
            occurred_at: at,
            recorded_at: at,
            metadata: Metadata::default(),
            data,
        }
    }

    fn seed() -> Vec<EventEnvelope> {
        vec![
            video(
                1,
                VideoEvent::VideoUploaded {
                    title: "t".into(),
                    source_uri: "s".into(),
                    uploaded_by: None,
                },
            ),
            video(2, VideoEvent::ProcessingStarted { attempt: 1 }),
            video(3, VideoEvent::ProcessingProgressed { percent: 50 }),
        ]
    }

    fn status(folded: &Folded) -> String {
        let state = &folded.states[&StreamKey::new("video", "v1")].1;
        let video = state.get::<VideoAggregate>().expect("a video");
        assert!(state.get::<timeline_core::ride::RideAggregate>().is_none());
        video.as_ref().expect("uploaded").status()
    }

    #[test]
    fn out_of_order_and_repeated_events_fold_to_the_same_state() {
        let events = seed();
        let mut fold = StateFold::default();
        for i in [2, 0, 2, 1, 0] {
            fold.push(events[i].clone());
        }
        let folded = fold.finish();
        assert!(folded.gaps.is_empty());
        assert_eq!((folded.events_applied, folded.duplicates), (3, 2));
        assert_eq!(folded.states[&StreamKey::new("video", "v1")].0, 3);
        assert_eq!(status(&folded), "processing:50%");
    }

    #[test]
    fn a_missing_version_is_reported_as_a_gap() {
        let events = seed();
        let mut fold = StateFold::default();
        fold.push(events[0].clone());
        fold.push(events[2].clone());
        let folded = fold.finish();
        assert_eq!(folded.gaps, [(StreamKey::new("video", "v1"), 2)]);
        assert_eq!(folded.states[&StreamKey::new("video", "v1")].0, 1);
    }

    #[test]
    fn objects_fold_from_their_bytes_in_every_format_and_old_schemas_are_upcast() {
        let mut events = seed();
        // Written by an older version: a fraction, not a percentage.
        events[2].schema_version = 1;
        events[2].data = serde_json::json!({ "progress": 0.5 });
        let records: Vec<CommitRecord> = events
            .iter()
            .map(|e| CommitRecord {
                events: vec![e.clone()],
            })
            .collect();
        let concatenated: Vec<u8> = records
            .iter()
            .flat_map(|r| serde_json::to_vec(r).unwrap())
            .collect();
        for bytes in [
            encode_object(&records, true),
            encode_object(&records, false),
            concatenated,
        ] {
            let mut fold = StateFold::default();
            assert_eq!(fold.push_object("k", &bytes).unwrap(), 3);
            let folded = fold.finish();
            assert_eq!(status(&folded), "processing:50%");
        }
    }

    #[test]
    fn partitioned_folds_of_objects_read_in_any_order_agree_with_one_fold() {
        // Three videos over two objects, the later object read first, one event repeated.
        let mut first = seed();
        let mut second = vec![video(4, VideoEvent::ProcessingProgressed { percent: 90 })];
        for id in ["v2", "v3"] {
            let mut more = seed();
            more.iter_mut().for_each(|e| e.aggregate_id = id.into());
            second.extend(more.drain(1..));
            first.extend(more);
        }
        second.push(first[0].clone());
        let objects: Vec<Vec<u8>> = [second, first]
            .iter()
            .map(|events| {
                let records: Vec<CommitRecord> = events
                    .iter()
                    .map(|e| CommitRecord {
                        events: vec![e.clone()],
                    })
                    .collect();
                encode_object(&records, true)
            })
            .collect();
        let folds: Vec<Mutex<StateFold>> = (0..4).map(|_| Mutex::default()).collect();
        let mut one = StateFold::default();
        for bytes in &objects {
            fold_object_partitioned("k", bytes, &folds).unwrap();
            one.push_object("k", bytes).unwrap();
        }
        let mut all = StateFold::default();
        for fold in folds {
            all.absorb(fold.into_inner().unwrap());
        }
        let (all, one) = (all.finish(), one.finish());
        assert_eq!((all.events_applied, all.duplicates), (10, 1));
        assert_eq!((one.events_applied, one.duplicates), (10, 1));
        assert!(all.gaps.is_empty() && one.gaps.is_empty());
        for folded in [&all, &one] {
            let version = |id: &str| folded.states[&StreamKey::new("video", id)].0;
            assert_eq!([version("v1"), version("v2"), version("v3")], [4, 3, 3]);
        }
        assert_eq!(status(&all), "processing:90%");
    }

    #[test]
    fn a_corrupt_object_is_reported_with_its_key() {
        let mut bytes = encode_object(&[CommitRecord { events: seed() }], false);
        bytes.extend_from_slice(br#"{"events":[{"event_id""#);
        let mut fold = StateFold::default();
        let err = fold.push_object("events/2026/x", &bytes).unwrap_err();
        assert_eq!(err.corrupt_key(), Some("events/2026/x"));
        assert_eq!(
            fold.finish().events_applied,
            3,
            "the records before it still count"
        );
        let folds = [Mutex::default()];
        let err = fold_object_partitioned("events/2026/x", &bytes, &folds).unwrap_err();
        assert_eq!(err.corrupt_key(), Some("events/2026/x"));
        let [fold] = folds;
        assert_eq!(fold.into_inner().unwrap().finish().events_applied, 3);
    }
}
