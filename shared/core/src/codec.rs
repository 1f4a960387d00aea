//! Encoding domain events into envelope payloads and back, with upcasting of old schemas,
//! and the wire form of commit records (one JSON object a record, NDJSON in the archive).

use crate::aggregate::{Aggregate, DomainEvent};
use crate::envelope::{CommitRecord, CommitRecordError, EventEnvelope};
use serde_json::{json, Value};

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("event {event_id} is for aggregate type {found:?}, expected {expected:?}")]
    WrongAggregate {
        event_id: String,
        expected: &'static str,
        found: String,
    },
    #[error("unknown event type {event_type:?} (event {event_id})")]
    UnknownEventType {
        event_id: String,
        event_type: String,
    },
    #[error("event {event_id} of type {event_type:?} has schema version {found}, newer than the {known} this code knows")]
    UnknownSchemaVersion {
        event_id: String,
        event_type: String,
        found: u32,
        known: u32,
    },
    #[error("no upcaster for {event_type:?} from schema version {from} (event {event_id})")]
    MissingUpcaster {
        event_id: String,
        event_type: String,
        from: u32,
    },
    #[error("payload of event {event_id} ({event_type:?}) does not match its schema: {source}")]
    BadPayload {
        event_id: String,
        event_type: String,
        source: serde_json::Error,
    },
}

/// Splits a domain event into its envelope `type`, current schema version and `data`.
pub fn encode_event<A: Aggregate>(event: &A::Event) -> (String, u32, Value) {
    let event_type = event.event_type();
    let mut tagged = serde_json::to_value(event).expect("domain events always serialize");
    let data = tagged
        .get_mut("data")
        .map(Value::take)
        .unwrap_or_else(|| json!({}));
    (event_type.to_owned(), A::schema_version(event_type), data)
}

/// Turns an envelope back into a domain event, upcasting old payload schemas on the way.
pub fn decode_event<A: Aggregate>(envelope: &EventEnvelope) -> Result<A::Event, DecodeError> {
    if envelope.aggregate_type != A::TYPE {
        return Err(DecodeError::WrongAggregate {
            event_id: envelope.event_id.clone(),
            expected: A::TYPE,
            found: envelope.aggregate_type.clone(),
        });
    }
    let known = A::schema_version(&envelope.event_type);
    let mut version = envelope.schema_version;
    if version > known {
        return Err(DecodeError::UnknownSchemaVersion {
            event_id: envelope.event_id.clone(),
            event_type: envelope.event_type.clone(),
            found: version,
            known,
        });
    }
    // Borrowed when already at the current schema (the common case): no copy of the payload.
    let mut data = std::borrow::Cow::Borrowed(&envelope.data);
    while version < known {
        data = std::borrow::Cow::Owned(
            A::upcast(&envelope.event_type, version, data.into_owned()).ok_or_else(|| {
                DecodeError::MissingUpcaster {
                    event_id: envelope.event_id.clone(),
                    event_type: envelope.event_type.clone(),
                    from: version,
                }
            })?,
        );
        version += 1;
    }
    let tagged = tagged::Tagged {
        event_type: &envelope.event_type,
        data: &*data,
    };
    <A::Event as serde::Deserialize>::deserialize(tagged).map_err(|source| {
        // serde says "unknown variant `T`" for a type T the enum does not have. Match the
        // envelope's own type: an unknown value of an enum inside a known event's payload
        // also says "unknown variant", and that is a bad payload, not an unknown type.
        let unknown_type = format!("unknown variant `{}`", envelope.event_type);
        if source.to_string().starts_with(&unknown_type) {
            DecodeError::UnknownEventType {
                event_id: envelope.event_id.clone(),
                event_type: envelope.event_type.clone(),
            }
        } else {
            DecodeError::BadPayload {
                event_id: envelope.event_id.clone(),
                event_type: envelope.event_type.clone(),
                source,
            }
        }
    })
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error("commit record is not valid JSON of the expected shape: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Shape(#[from] CommitRecordError),
}

/// The bytes of one Kinesis record: a single JSON object on one line, no trailing newline
/// (Firehose adds the delimiter when it archives).
pub fn encode_record(record: &CommitRecord) -> Vec<u8> {
    serde_json::to_vec(record).expect("commit records always serialize")
}

pub fn decode_record(bytes: &[u8]) -> Result<CommitRecord, RecordError> {
    let record: CommitRecord = serde_json::from_slice(bytes)?;
    record.validate()?;
    Ok(record)
}

/// Decodes an event straight from its payload's JSON text (the replay's fast path: when the
/// payload is already at the current schema, neither copied nor held as a `Value`).
pub fn decode_raw<A: Aggregate>(
    event_id: &str,
    event_type: &str,
    schema_version: u32,
    data: &str,
) -> Result<A::Event, DecodeError> {
    let known = A::schema_version(event_type);
    if schema_version == known {
        let mut payload = serde_json::Deserializer::from_str(data);
        let tagged = tagged::Tagged {
            event_type,
            data: &mut payload,
        };
        if let Ok(event) = <A::Event as serde::Deserialize>::deserialize(tagged) {
            if payload.end().is_ok() {
                return Ok(event);
            }
        }
    }
    // Old schemas (upcast) and every error go through the general path, which says why.
    let data: Value = serde_json::from_str(data).map_err(|source| DecodeError::BadPayload {
        event_id: event_id.to_owned(),
        event_type: event_type.to_owned(),
        source,
    })?;
    let envelope = EventEnvelope {
        event_id: event_id.to_owned(),
        aggregate_type: A::TYPE.to_owned(),
        aggregate_id: String::new(),
        version: 0,
        event_type: event_type.to_owned(),
        schema_version,
        occurred_at: crate::Timestamp::from_millis(0).expect("epoch"),
        recorded_at: crate::Timestamp::from_millis(0).expect("epoch"),
        metadata: Default::default(),
        data,
    };
    decode_event::<A>(&envelope)
}

/// `{"type": <event type>, "data": <payload>}`, as the event enums are tagged, read from
/// borrowed parts: the payload (a `Value` or JSON text) is read where it is, not copied.
mod tagged {
    use serde::de::value::BorrowedStrDeserializer;
    use serde::de::{DeserializeSeed, Deserializer, MapAccess, Visitor};

    pub struct Tagged<'a, D> {
        pub event_type: &'a str,
        pub data: D,
    }

    impl<'de, D: Deserializer<'de, Error = serde_json::Error>> Deserializer<'de> for Tagged<'de, D> {
        type Error = serde_json::Error;

        fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Self::Error> {
            visitor.visit_map(Fields {
                event_type: self.event_type,
                data: Some(self.data),
                next: 0,
            })
        }

        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map struct
            enum identifier ignored_any
        }
    }

    struct Fields<'a, D> {
        event_type: &'a str,
        data: Option<D>,
        next: u8,
    }

    impl<'de, D: Deserializer<'de, Error = serde_json::Error>> MapAccess<'de> for Fields<'de, D> {
        type Error = serde_json::Error;

        fn next_key_seed<K: DeserializeSeed<'de>>(
            &mut self,
            seed: K,
        ) -> Result<Option<K::Value>, Self::Error> {
            let key = match self.next {
                0 => "type",
                1 => "data",
                _ => return Ok(None),
            };
            seed.deserialize(BorrowedStrDeserializer::new(key))
                .map(Some)
        }

        fn next_value_seed<V: DeserializeSeed<'de>>(
            &mut self,
            seed: V,
        ) -> Result<V::Value, Self::Error> {
            self.next += 1;
            if self.next == 1 {
                return seed.deserialize(BorrowedStrDeserializer::new(self.event_type));
            }
            match self.data.take() {
                Some(data) => seed.deserialize(data),
                None => Err(serde::de::Error::custom("the payload was already read")),
            }
        }
    }
}
