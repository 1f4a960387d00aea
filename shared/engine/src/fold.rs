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

use serde::Deserialize;
use serde_json::value::RawValue;
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::io::Read;
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

/// An event waiting for its predecessor.
#[derive(Debug, Clone)]
struct Waiting {
    event_id: String,
    event_type: String,
    schema_version: u32,
    data: String,
}

#[derive(Debug, Clone, Default)]
struct Folding<S> {
    version: u64,
    state: S,
    ahead: BTreeMap<u64, Waiting>,
}

#[derive(Default)]
pub struct StateFold {
    /// One typed fold per registered aggregate type met so far.
    kinds: HashMap<String, Box<dyn KindFold>>,
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
struct LeanEvent<'a> {
    #[serde(borrow)]
    event_id: Cow<'a, str>,
    #[serde(borrow)]
    aggregate_type: Cow<'a, str>,
    #[serde(borrow)]
    aggregate_id: Cow<'a, str>,
    version: u64,
    #[serde(rename = "type", borrow)]
    event_type: Cow<'a, str>,
    schema_version: u32,
    #[serde(borrow)]
    data: &'a RawValue,
}

#[derive(Deserialize)]
struct LeanRecord<'a> {
    #[serde(borrow)]
    events: Vec<LeanEvent<'a>>,
}

/// Applies `event` to one entity's fold, then any events that were waiting for it.
fn fold_into<A: Aggregate>(
    entity: &mut Folding<A::State>,
    event: Waiting,
    version: u64,
    stats: &mut (u64, u64),
) -> Result<(), (u64, String)> {
    if version <= entity.version || entity.ahead.contains_key(&version) {
        stats.1 += 1;
        return Ok(());
    }
    if version != entity.version + 1 {
        entity.ahead.insert(version, event);
        return Ok(());
    }
    let mut next = Some(event);
    let mut at = version;
    while let Some(e) = next {
        let decoded = decode_raw::<A>(&e.event_id, &e.event_type, e.schema_version, &e.data);
        match decoded {
            Ok(event) => {
                entity.state = A::evolve(std::mem::take(&mut entity.state), &event);
                entity.version = at;
                stats.0 += 1;
            }
            Err(err) => {
                // Stop this entity here: later events wait (and end as a gap).
                entity.ahead.insert(at, e);
                return Err((at, err.to_string()));
            }
        }
        at += 1;
        next = entity.ahead.remove(&at);
    }
    Ok(())
}

/// The entities of one aggregate type, folded with its own `evolve`.
trait KindFold: Send + Sync {
    fn push(
        &mut self,
        id: &str,
        version: u64,
        event: Waiting,
        stats: &mut (u64, u64),
    ) -> Result<(), (u64, String)>;
    fn len(&self) -> usize;
    fn absorb(&mut self, other: Box<dyn std::any::Any>);
    fn into_any(self: Box<Self>) -> Box<dyn std::any::Any>;
    fn finish(self: Box<Self>, kind: &str, folded: &mut Folded);
}

struct Typed<A: Aggregate>(HashMap<String, Folding<A::State>>);

impl<A: Aggregate> KindFold for Typed<A> {
    fn push(
        &mut self,
        id: &str,
        version: u64,
        event: Waiting,
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
        Box::new(Typed::<A>(HashMap::new()))
    }
}

impl StateFold {
    fn push_parts(
        &mut self,
        kind: &str,
        id: &str,
        version: u64,
        waiting: impl FnOnce() -> Waiting,
    ) {
        let fold = match self.kinds.get_mut(kind) {
            Some(fold) => Ok(fold),
            None => timeline_core::dispatch(kind, NewFold)
                .map(|fold| self.kinds.entry(kind.to_owned()).or_insert(fold)),
        };
        let mut stats = (self.events_applied, self.duplicates);
        let result = match fold {
            Ok(fold) => fold.push(id, version, waiting(), &mut stats),
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
        let EventEnvelope {
            event_id,
            aggregate_type,
            aggregate_id,
            version,
            event_type,
            schema_version,
            data,
            ..
        } = envelope;
        self.push_parts(&aggregate_type, &aggregate_id, version, || Waiting {
            event_id,
            event_type,
            schema_version,
            data: data.to_string(),
        });
    }

    /// Folds every record of an archive object (gzip or plain; NDJSON or concatenated).
    /// A corrupt object is reported with its key; the records before the corruption count.
    pub fn push_object(&mut self, key: &str, bytes: &[u8]) -> Result<usize, ArchiveError> {
        let mut records = 0;
        let result = parse_object(
            key,
            bytes,
            |e| {
                self.push_parsed(e);
            },
            &mut records,
        );
        result.map(|()| records)
    }

    /// Folds an event parsed by [`parse_object_partitioned`].
    pub fn push_parsed(&mut self, e: ParsedEvent) {
        let ParsedEvent {
            kind,
            id,
            version,
            waiting,
        } = e;
        self.push_parts(&kind, &id, version, || waiting);
    }

    pub fn entities(&self) -> usize {
        self.kinds.values().map(|k| k.len()).sum()
    }

    /// Combines folds over disjoint sets of entities (one per worker).
    pub fn absorb(&mut self, other: StateFold) {
        for (kind, fold) in other.kinds {
            match self.kinds.get_mut(&kind) {
                Some(mine) => mine.absorb(fold.into_any()),
                None => {
                    self.kinds.insert(kind, fold);
                }
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

/// One event parsed out of an archive object, owned, ready to fold on another thread.
#[derive(Debug, Clone)]
pub struct ParsedEvent {
    kind: String,
    id: String,
    version: u64,
    waiting: Waiting,
}

fn decompress<'b>(key: &str, bytes: &'b [u8]) -> Result<Cow<'b, [u8]>, ArchiveError> {
    if !is_gzip(bytes) {
        return Ok(Cow::Borrowed(bytes));
    }
    let mut out = Vec::with_capacity(bytes.len() * 8);
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

/// Parses every record of an object in place, handing each event to `sink`.
fn parse_object(
    key: &str,
    bytes: &[u8],
    mut sink: impl FnMut(ParsedEvent),
    records: &mut usize,
) -> Result<(), ArchiveError> {
    let text = decompress(key, bytes)?;
    let mut stream = serde_json::Deserializer::from_slice(&text).into_iter::<LeanRecord<'_>>();
    while let Some(record) = stream.next() {
        let record = record.map_err(|e| ArchiveError::Corrupt {
            key: key.to_owned(),
            offset: stream.byte_offset(),
            records_before: *records,
            reason: e.to_string(),
        })?;
        for e in record.events {
            sink(ParsedEvent {
                kind: e.aggregate_type.into_owned(),
                id: e.aggregate_id.into_owned(),
                version: e.version,
                waiting: Waiting {
                    event_id: e.event_id.into_owned(),
                    event_type: e.event_type.into_owned(),
                    schema_version: e.schema_version,
                    data: e.data.get().to_owned(),
                },
            });
        }
        *records += 1;
    }
    Ok(())
}

/// Parses an object's events into `partitions` buckets by entity, so several threads can
/// parse objects while each partition is folded by one [`StateFold`] at a time.
pub fn parse_object_partitioned(
    key: &str,
    bytes: &[u8],
    partitions: usize,
) -> Result<Vec<Vec<ParsedEvent>>, ArchiveError> {
    let mut out: Vec<Vec<ParsedEvent>> = (0..partitions.max(1)).map(|_| Vec::new()).collect();
    let mut records = 0;
    parse_object(
        key,
        bytes,
        |e| {
            let p = partition_of(&e.kind, &e.id, out.len());
            out[p].push(e);
        },
        &mut records,
    )?;
    Ok(out)
}

/// The partition an entity belongs to (stable; FNV-1a of `<type>#<id>`).
pub fn partition_of(kind: &str, id: &str, partitions: usize) -> usize {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in kind.bytes().chain([b'#']).chain(id.bytes()) {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
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
    }
}
