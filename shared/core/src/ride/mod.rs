//! Ride booking, the primary domain.
//!
//! Lifecycle: `booked` -> `driver_assigned` -> `in_progress` -> `completed`, and `cancelled`
//! from any state before completion. Rules:
//! - a ride is booked once, by a rider, with a pickup and a dropoff that differ;
//! - a driver can be (re)assigned until the ride starts;
//! - a ride starts only once a driver is assigned, and completes only once started;
//! - the destination can change and the fare can be adjusted (with a reason) until the ride
//!   is closed (completed or cancelled); a closed ride accepts no change;
//! - a completed ride cannot be cancelled;
//! - fares (estimate, adjusted, final) and distances are never negative.

use crate::aggregate::{Aggregate, DomainError, DomainEvent, RefusalKind};
use serde::{Deserialize, Serialize};

mod integration;
mod policy;
mod read_model;

pub struct RideAggregate;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Location {
    pub address: String,
    pub lat: f64,
    pub lon: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RideStatus {
    Booked,
    DriverAssigned,
    InProgress,
    Completed,
    Cancelled,
}

impl RideStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            RideStatus::Booked => "booked",
            RideStatus::DriverAssigned => "driver_assigned",
            RideStatus::InProgress => "in_progress",
            RideStatus::Completed => "completed",
            RideStatus::Cancelled => "cancelled",
        }
    }

    fn is_closed(&self) -> bool {
        matches!(self, RideStatus::Completed | RideStatus::Cancelled)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CancelledBy {
    Rider,
    Driver,
    System,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Ride {
    pub rider_id: String,
    pub driver_id: Option<String>,
    pub pickup: Location,
    pub dropoff: Location,
    pub status: RideStatus,
    /// The current fare in minor units (cents): the estimate, then any adjustment, then the
    /// final fare.
    pub fare_cents: Option<i64>,
    pub distance_km: Option<f64>,
    pub cancelled_by: Option<CancelledBy>,
    pub cancel_reason: Option<String>,
}

/// `None` until the ride is booked.
pub type RideState = Option<Ride>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum RideCommand {
    Book {
        rider_id: String,
        pickup: Location,
        dropoff: Location,
        fare_estimate_cents: Option<i64>,
    },
    AssignDriver {
        driver_id: String,
    },
    Start,
    ChangeDestination {
        dropoff: Location,
    },
    AdjustFare {
        fare_cents: i64,
        reason: String,
    },
    Complete {
        final_fare_cents: i64,
        distance_km: f64,
    },
    Cancel {
        by: CancelledBy,
        reason: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum RideEvent {
    RideBooked {
        rider_id: String,
        pickup: Location,
        dropoff: Location,
        fare_estimate_cents: Option<i64>,
    },
    DriverAssigned {
        driver_id: String,
        previous_driver_id: Option<String>,
    },
    RideStarted {
        driver_id: String,
    },
    DestinationChanged {
        from: Location,
        to: Location,
    },
    FareAdjusted {
        from_cents: Option<i64>,
        to_cents: i64,
        reason: String,
    },
    RideCompleted {
        final_fare_cents: i64,
        distance_km: f64,
    },
    RideCancelled {
        by: CancelledBy,
        reason: String,
    },
}

impl DomainEvent for RideEvent {
    fn event_type(&self) -> &'static str {
        match self {
            RideEvent::RideBooked { .. } => "RideBooked",
            RideEvent::DriverAssigned { .. } => "DriverAssigned",
            RideEvent::RideStarted { .. } => "RideStarted",
            RideEvent::DestinationChanged { .. } => "DestinationChanged",
            RideEvent::FareAdjusted { .. } => "FareAdjusted",
            RideEvent::RideCompleted { .. } => "RideCompleted",
            RideEvent::RideCancelled { .. } => "RideCancelled",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RideError {
    #[error("no such ride")]
    NotFound,
    #[error("the ride already exists")]
    AlreadyExists,
    #[error("{0} must not be empty")]
    Required(&'static str),
    #[error("{0} is too long (at most {1} characters)")]
    TooLong(&'static str, usize),
    #[error("{0} is not a valid location (latitude -90..90, longitude -180..180)")]
    InvalidLocation(&'static str),
    #[error("pickup and dropoff must differ")]
    SamePickupAndDropoff,
    #[error("a fare cannot be negative")]
    NegativeFare,
    #[error("a distance cannot be negative")]
    NegativeDistance,
    #[error("the ride is {0} and accepts no more changes")]
    Closed(&'static str),
    #[error("the ride has already started")]
    AlreadyStarted,
    #[error("the ride has no driver assigned")]
    DriverNotAssigned,
    #[error("this driver is already assigned")]
    DriverAlreadyAssigned,
    #[error("the ride has not started")]
    NotStarted,
    #[error("the new destination is the current one")]
    DestinationUnchanged,
    #[error("the fare is already {0}")]
    FareUnchanged(i64),
    #[error("a completed ride cannot be cancelled")]
    AlreadyCompleted,
    #[error("the ride is already cancelled")]
    AlreadyCancelled,
}

impl DomainError for RideError {
    fn code(&self) -> &'static str {
        match self {
            RideError::NotFound => "ride.not_found",
            RideError::AlreadyExists => "ride.already_exists",
            RideError::Required(_) => "ride.field_required",
            RideError::TooLong(..) => "ride.field_too_long",
            RideError::InvalidLocation(_) => "ride.invalid_location",
            RideError::SamePickupAndDropoff => "ride.same_pickup_and_dropoff",
            RideError::NegativeFare => "ride.negative_fare",
            RideError::NegativeDistance => "ride.negative_distance",
            RideError::Closed(_) => "ride.closed",
            RideError::AlreadyStarted => "ride.already_started",
            RideError::DriverNotAssigned => "ride.driver_not_assigned",
            RideError::DriverAlreadyAssigned => "ride.driver_already_assigned",
            RideError::NotStarted => "ride.not_started",
            RideError::DestinationUnchanged => "ride.destination_unchanged",
            RideError::FareUnchanged(_) => "ride.fare_unchanged",
            RideError::AlreadyCompleted => "ride.already_completed",
            RideError::AlreadyCancelled => "ride.already_cancelled",
        }
    }

    fn kind(&self) -> RefusalKind {
        match self {
            RideError::NotFound => RefusalKind::NotFound,
            RideError::AlreadyExists => RefusalKind::AlreadyExists,
            _ => RefusalKind::Rule,
        }
    }
}

fn text(field: &'static str, value: &str, max: usize) -> Result<(), RideError> {
    if value.trim().is_empty() {
        return Err(RideError::Required(field));
    }
    if value.chars().count() > max {
        return Err(RideError::TooLong(field, max));
    }
    Ok(())
}

fn location(field: &'static str, at: &Location) -> Result<(), RideError> {
    text(field, &at.address, 300)?;
    let valid = (-90.0..=90.0).contains(&at.lat) && (-180.0..=180.0).contains(&at.lon);
    valid.then_some(()).ok_or(RideError::InvalidLocation(field))
}

fn fare(cents: i64) -> Result<(), RideError> {
    (cents >= 0).then_some(()).ok_or(RideError::NegativeFare)
}

impl Aggregate for RideAggregate {
    const TYPE: &'static str = "ride";
    type State = RideState;
    type Command = RideCommand;
    type Event = RideEvent;
    type Error = RideError;

    fn decide(state: &RideState, command: RideCommand) -> Result<Vec<RideEvent>, RideError> {
        use RideCommand as C;
        use RideEvent as E;
        let ride = match (state, command) {
            (Some(_), C::Book { .. }) => return Err(RideError::AlreadyExists),
            (
                None,
                C::Book {
                    rider_id,
                    pickup,
                    dropoff,
                    fare_estimate_cents,
                },
            ) => {
                text("rider_id", &rider_id, 128)?;
                location("pickup", &pickup)?;
                location("dropoff", &dropoff)?;
                if pickup == dropoff {
                    return Err(RideError::SamePickupAndDropoff);
                }
                if let Some(cents) = fare_estimate_cents {
                    fare(cents)?;
                }
                return Ok(vec![E::RideBooked {
                    rider_id,
                    pickup,
                    dropoff,
                    fare_estimate_cents,
                }]);
            }
            (None, _) => return Err(RideError::NotFound),
            (Some(ride), command) => (ride, command),
        };
        let (ride, command) = ride;

        // Closed rides accept nothing; cancelling says precisely why not.
        match (&command, ride.status) {
            (C::Cancel { .. }, RideStatus::Completed) => return Err(RideError::AlreadyCompleted),
            (C::Cancel { .. }, RideStatus::Cancelled) => return Err(RideError::AlreadyCancelled),
            (_, status) if status.is_closed() => return Err(RideError::Closed(status.as_str())),
            _ => {}
        }

        match command {
            C::Book { .. } => unreachable!("handled above"),
            C::AssignDriver { driver_id } => {
                text("driver_id", &driver_id, 128)?;
                if ride.status == RideStatus::InProgress {
                    return Err(RideError::AlreadyStarted);
                }
                if ride.driver_id.as_deref() == Some(driver_id.as_str()) {
                    return Err(RideError::DriverAlreadyAssigned);
                }
                Ok(vec![E::DriverAssigned {
                    driver_id,
                    previous_driver_id: ride.driver_id.clone(),
                }])
            }
            C::Start => match (ride.status, &ride.driver_id) {
                (RideStatus::InProgress, _) => Err(RideError::AlreadyStarted),
                (RideStatus::DriverAssigned, Some(driver_id)) => Ok(vec![E::RideStarted {
                    driver_id: driver_id.clone(),
                }]),
                _ => Err(RideError::DriverNotAssigned),
            },
            C::ChangeDestination { dropoff } => {
                location("dropoff", &dropoff)?;
                if dropoff == ride.dropoff {
                    return Err(RideError::DestinationUnchanged);
                }
                if dropoff == ride.pickup {
                    return Err(RideError::SamePickupAndDropoff);
                }
                Ok(vec![E::DestinationChanged {
                    from: ride.dropoff.clone(),
                    to: dropoff,
                }])
            }
            C::AdjustFare { fare_cents, reason } => {
                fare(fare_cents)?;
                text("reason", &reason, 500)?;
                if ride.fare_cents == Some(fare_cents) {
                    return Err(RideError::FareUnchanged(fare_cents));
                }
                Ok(vec![E::FareAdjusted {
                    from_cents: ride.fare_cents,
                    to_cents: fare_cents,
                    reason,
                }])
            }
            C::Complete {
                final_fare_cents,
                distance_km,
            } => {
                if ride.status != RideStatus::InProgress {
                    return Err(RideError::NotStarted);
                }
                fare(final_fare_cents)?;
                if !(distance_km >= 0.0 && distance_km.is_finite()) {
                    return Err(RideError::NegativeDistance);
                }
                Ok(vec![E::RideCompleted {
                    final_fare_cents,
                    distance_km,
                }])
            }
            C::Cancel { by, reason } => {
                text("reason", &reason, 500)?;
                Ok(vec![E::RideCancelled { by, reason }])
            }
        }
    }

    fn evolve(state: RideState, event: &RideEvent) -> RideState {
        use RideEvent as E;
        let ride = match (state, event) {
            (
                _,
                E::RideBooked {
                    rider_id,
                    pickup,
                    dropoff,
                    fare_estimate_cents,
                },
            ) => {
                return Some(Ride {
                    rider_id: rider_id.clone(),
                    driver_id: None,
                    pickup: pickup.clone(),
                    dropoff: dropoff.clone(),
                    status: RideStatus::Booked,
                    fare_cents: *fare_estimate_cents,
                    distance_km: None,
                    cancelled_by: None,
                    cancel_reason: None,
                })
            }
            (None, _) => return None,
            (Some(ride), _) => ride,
        };
        Some(match event {
            E::RideBooked { .. } => unreachable!("handled above"),
            E::DriverAssigned { driver_id, .. } => Ride {
                driver_id: Some(driver_id.clone()),
                status: RideStatus::DriverAssigned,
                ..ride
            },
            E::RideStarted { .. } => Ride {
                status: RideStatus::InProgress,
                ..ride
            },
            E::DestinationChanged { to, .. } => Ride {
                dropoff: to.clone(),
                ..ride
            },
            E::FareAdjusted { to_cents, .. } => Ride {
                fare_cents: Some(*to_cents),
                ..ride
            },
            E::RideCompleted {
                final_fare_cents,
                distance_km,
            } => Ride {
                status: RideStatus::Completed,
                fare_cents: Some(*final_fare_cents),
                distance_km: Some(*distance_km),
                ..ride
            },
            E::RideCancelled { by, reason } => Ride {
                status: RideStatus::Cancelled,
                cancelled_by: Some(*by),
                cancel_reason: Some(reason.clone()),
                ..ride
            },
        })
    }
}

#[cfg(test)]
mod tests;
