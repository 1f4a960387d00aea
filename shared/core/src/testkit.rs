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
