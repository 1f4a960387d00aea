//! Who may do what with rides (the shared terms are in `crate::access`):
//! - a **rider** books only as themself, changes the destination of and cancels only their
//!   own rides (as the rider), and reads and lists only their own rides;
//! - a **driver** takes an open booking (assigns it to themself), starts, completes and may
//!   cancel (as the driver) only the rides assigned to them; reads those and the open
//!   bookings, and lists their own rides and the open bookings (`?status=booked`);
//! - a **dispatcher** books on a rider's behalf, assigns drivers, changes destinations,
//!   adjusts fares, cancels any ride, and reads and lists every ride;
//! - an **operator** may do all of that and also start and complete a ride (to put right what
//!   a driver could not);
//! - a service identity has no part in rides.

use super::{CancelledBy, RideAggregate, RideCommand, RideState, RideStatus};
use crate::access::{Access, Caller, Policy, Role};
use crate::ports::LookupKind;

fn staff(caller: &Caller) -> bool {
    caller.has(Role::Dispatcher) || caller.has(Role::Operator)
}

impl Policy for RideAggregate {
    fn may_read(caller: &Caller, state: &RideState) -> Access {
        let Some(ride) = state else {
            return Access::Hidden;
        };
        let own = caller.as_role(Role::Rider) == Some(ride.rider_id.as_str());
        let driving = caller
            .as_role(Role::Driver)
            .is_some_and(|d| ride.driver_id.as_deref() == Some(d));
        let open = caller.has(Role::Driver) && ride.status == RideStatus::Booked;
        if staff(caller) || own || driving || open {
            Access::Allowed
        } else {
            Access::Hidden
        }
    }

    fn may_command(caller: &Caller, state: &RideState, command: &RideCommand) -> Access {
        if let RideCommand::Book { rider_id, .. } = command {
            // Whether the id is taken is `decide`'s answer (409), whoever asks.
            let as_themself = caller.as_role(Role::Rider) == Some(rider_id.as_str());
            return if staff(caller) || as_themself {
                Access::Allowed
            } else if caller.has(Role::Rider) {
                Access::Forbidden("ride.book_as_yourself")
            } else {
                Access::Forbidden("ride.riders_book")
            };
        }
        let Some(ride) = state else {
            // No such ride: `decide` answers 404, the same for everyone.
            return Access::Allowed;
        };
        if Self::may_read(caller, state) == Access::Hidden {
            return Access::Hidden;
        }
        let rider = caller.as_role(Role::Rider) == Some(ride.rider_id.as_str());
        let driver = caller
            .as_role(Role::Driver)
            .is_some_and(|d| ride.driver_id.as_deref() == Some(d));
        let operator = caller.has(Role::Operator);
        let staff = staff(caller);
        match command {
            RideCommand::Book { .. } => unreachable!("answered above"),
            RideCommand::AssignDriver { driver_id } => {
                let takes_open_booking = caller.as_role(Role::Driver) == Some(driver_id.as_str())
                    && ride.status == RideStatus::Booked
                    && ride.driver_id.is_none();
                Access::allow_if(staff || takes_open_booking, "ride.dispatch_assigns")
            }
            RideCommand::Start | RideCommand::Complete { .. } => {
                Access::allow_if(driver || operator, "ride.assigned_driver_only")
            }
            RideCommand::ChangeDestination { .. } => {
                Access::allow_if(rider || staff, "ride.own_rides_only")
            }
            RideCommand::AdjustFare { .. } => Access::allow_if(staff, "ride.dispatch_prices"),
            RideCommand::Cancel { by, .. } => Access::allow_if(
                staff
                    || (rider && *by == CancelledBy::Rider)
                    || (driver && *by == CancelledBy::Driver),
                "ride.cancel_as_yourself",
            ),
        }
    }

    fn may_list(caller: &Caller, lookup: LookupKind, value: &str) -> Access {
        let allowed = staff(caller)
            || match lookup {
                LookupKind::Rider => caller.as_role(Role::Rider) == Some(value),
                LookupKind::Driver => caller.as_role(Role::Driver) == Some(value),
                LookupKind::Status => {
                    caller.has(Role::Driver) && value == RideStatus::Booked.as_str()
                }
            };
        Access::allow_if(allowed, "ride.list_own_rides")
    }

    fn complete_from_identity(
        caller: &Caller,
        command: &str,
        body: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        if command == "book" && !body.contains_key("rider_id") {
            if let Some(rider) = caller.as_role(Role::Rider) {
                body.insert("rider_id".into(), rider.into());
            }
        }
    }
}
