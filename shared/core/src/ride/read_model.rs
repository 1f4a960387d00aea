//! What the read side and the HTTP edge know about rides: the status users filter by, the
//! lookups a ride is listed under, and the names of its routes and commands.

use super::RideAggregate;
use crate::ports::LookupKind;
use crate::registry::{CommandRoute, Entity};
use crate::views::ReadModel;

impl ReadModel for RideAggregate {
    fn status(state: &Self::State) -> Option<String> {
        state.as_ref().map(|r| r.status.as_str().to_owned())
    }

    fn lookups(state: &Self::State) -> Vec<(&'static str, String)> {
        let Some(ride) = state else { return vec![] };
        let mut out = vec![("rider", ride.rider_id.clone())];
        out.extend(ride.driver_id.clone().map(|d| ("driver", d)));
        out
    }
}

impl Entity for RideAggregate {
    const COLLECTION: &'static str = "rides";
    const STATUSES: &'static [&'static str] = &[
        "booked",
        "driver_assigned",
        "in_progress",
        "completed",
        "cancelled",
    ];
    const FILTERS: &'static [(&'static str, LookupKind)] = &[
        ("rider_id", LookupKind::Rider),
        ("driver_id", LookupKind::Driver),
    ];
    const COMMANDS: &'static [CommandRoute] = &[
        CommandRoute::creates("book"),
        CommandRoute::on("assign-driver", "assign_driver"),
        CommandRoute::on("start", "start"),
        CommandRoute::on("change-destination", "change_destination"),
        CommandRoute::on("adjust-fare", "adjust_fare"),
        CommandRoute::on("complete", "complete"),
        CommandRoute::on("cancel", "cancel"),
    ];
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ride::RideStatus;

    #[test]
    fn every_status_a_ride_can_reach_is_listed() {
        for status in [
            RideStatus::Booked,
            RideStatus::DriverAssigned,
            RideStatus::InProgress,
            RideStatus::Completed,
            RideStatus::Cancelled,
        ] {
            assert!(
                RideAggregate::STATUSES.contains(&status.as_str()),
                "{status:?}"
            );
        }
    }
}
