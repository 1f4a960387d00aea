//! Given / when / then for aggregates, so domain tests read as the business rules:
//!
//! ```text
//! given::<Ride>(&[RideEvent::Booked(..)])
//!     .when(RideCommand::Start)
//!     .then_error("ride.driver_not_assigned");
//! ```

use crate::aggregate::{Aggregate, DomainError};

pub struct Given<A: Aggregate> {
    state: A::State,
}

/// Starts a scenario from the state those past events produce.
pub fn given<A: Aggregate>(events: &[A::Event]) -> Given<A> {
    Given {
        state: events.iter().fold(A::State::default(), A::evolve),
    }
}

/// Starts a scenario for an entity that does not exist yet.
pub fn given_no_history<A: Aggregate>() -> Given<A> {
    given::<A>(&[])
}

pub struct When<A: Aggregate> {
    before: A::State,
    result: Result<Vec<A::Event>, A::Error>,
}

impl<A: Aggregate> Given<A> {
    pub fn when(self, command: A::Command) -> When<A> {
        let result = A::decide(&self.state, command);
        When {
            before: self.state,
            result,
        }
    }

    pub fn state(&self) -> &A::State {
        &self.state
    }
}

impl<A: Aggregate> When<A> {
    /// The command is accepted and produces exactly these events.
    #[track_caller]
    pub fn then(self, expected: &[A::Event]) -> A::State {
        match self.result {
            Ok(events) => {
                assert_eq!(events, expected, "the command produced other events");
                events.iter().fold(self.before, A::evolve)
            }
            Err(e) => panic!(
                "expected events {expected:?}, but the command was refused: {e} ({})",
                e.code()
            ),
        }
    }

    /// The command is refused by the rule with this code.
    #[track_caller]
    pub fn then_error(self, code: &str) {
        match self.result {
            Ok(events) => panic!("expected refusal {code:?}, but the command produced {events:?}"),
            Err(e) => assert_eq!(e.code(), code, "refused by another rule: {e}"),
        }
    }
}

/// Version `version` of ride `id` as the command handler would record it (booked at
/// 2026-11-28T10:00:00Z, then one fare adjustment per version, a millisecond apart): a
/// fixture for tests of the log, the processor and replays.
pub fn sample_ride(id: &str, version: u64) -> crate::EventEnvelope {
    use crate::ride::{Location, RideAggregate, RideEvent};
    let at: crate::Timestamp = "2026-11-28T10:00:00Z".parse().expect("a time");
    let place = |address: &str, lat| Location {
        address: address.into(),
        lat,
        lon: -6.2,
    };
    let event = if version == 1 {
        RideEvent::RideBooked {
            rider_id: "rider-1".into(),
            pickup: place("A", 53.3),
            dropoff: place("B", 53.4),
            fare_estimate_cents: Some(1000),
        }
    } else {
        RideEvent::FareAdjusted {
            from_cents: Some(1000 + version as i64 - 1),
            to_cents: 1000 + version as i64,
            reason: "r".into(),
        }
    };
    let (event_type, schema_version, data) = crate::codec::encode_event::<RideAggregate>(&event);
    crate::EventEnvelope {
        event_id: format!("{id}-{version}"),
        aggregate_type: "ride".into(),
        aggregate_id: id.into(),
        version,
        event_type,
        schema_version,
        occurred_at: at.plus_millis(version as i64),
        recorded_at: at.plus_millis(version as i64),
        metadata: crate::Metadata {
            command_id: format!("c-{id}-{version}"),
            correlation_id: None,
            causation_id: None,
            actor: "t".into(),
        },
        data,
    }
}
