//! Hydration: folding an entity's ordered events into its state, checking that the versions
//! are exactly 1, 2, 3, ... so a gap is reported as incomplete history, never papered over.

use crate::aggregate::Aggregate;
use crate::codec::{decode_event, DecodeError};
use crate::envelope::EventEnvelope;

#[derive(Debug, thiserror::Error)]
pub enum HydrateError {
    #[error("incomplete history: expected version {expected}, found {found}")]
    Gap { expected: u64, found: u64 },
    #[error("event {event_id} belongs to {found}, not {expected}")]
    WrongStream {
        event_id: String,
        expected: String,
        found: String,
    },
    #[error(transparent)]
    Decode(#[from] DecodeError),
}

/// State plus the version it reflects.
#[derive(Debug, Clone, PartialEq)]
pub struct Hydrated<S> {
    pub version: u64,
    pub state: S,
}

impl<S: Default> Default for Hydrated<S> {
    fn default() -> Self {
        Hydrated {
            version: 0,
            state: S::default(),
        }
    }
}

/// Applies events to an already-hydrated state; each must be exactly the next version.
pub fn apply<'a, A: Aggregate>(
    mut current: Hydrated<A::State>,
    events: impl IntoIterator<Item = &'a EventEnvelope>,
) -> Result<Hydrated<A::State>, HydrateError> {
    let mut stream: Option<String> = None;
    for envelope in events {
        let key = envelope.stream_key().to_string();
        match &stream {
            Some(expected) if *expected != key => {
                return Err(HydrateError::WrongStream {
                    event_id: envelope.event_id.clone(),
                    expected: expected.clone(),
                    found: key,
                })
            }
            None => stream = Some(key),
            _ => {}
        }
        let expected = current.version + 1;
        if envelope.version != expected {
            return Err(HydrateError::Gap {
                expected,
                found: envelope.version,
            });
        }
        let event = decode_event::<A>(envelope)?;
        current.state = A::evolve(current.state, &event);
        current.version = envelope.version;
    }
    Ok(current)
}

/// Folds a whole stream from version 1.
pub fn hydrate<'a, A: Aggregate>(
    events: impl IntoIterator<Item = &'a EventEnvelope>,
) -> Result<Hydrated<A::State>, HydrateError> {
    apply::<A>(Hydrated::default(), events)
}
