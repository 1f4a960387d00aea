//! What other teams learn about rides: booked, a driver assigned, completed with the final
//! fare, cancelled with who and why. Starting, a changed destination and fare adjustments are
//! internal steps (the completion carries the fare that resulted).

use super::{RideAggregate, RideEvent};
use crate::integration::Publishes;
use serde_json::{json, Value};

impl Publishes for RideAggregate {
    const PUBLISHED: &'static [&'static str] = &[
        "ride.booked",
        "ride.driver-assigned",
        "ride.completed",
        "ride.cancelled",
    ];

    fn integration(event: &RideEvent) -> Option<(&'static str, Value)> {
        Some(match event {
            RideEvent::RideBooked {
                rider_id,
                pickup,
                dropoff,
                fare_estimate_cents,
            } => (
                "ride.booked",
                json!({
                    "rider_id": rider_id,
                    "pickup": { "address": pickup.address, "lat": pickup.lat, "lon": pickup.lon },
                    "dropoff": { "address": dropoff.address, "lat": dropoff.lat, "lon": dropoff.lon },
                    "fare_estimate_cents": fare_estimate_cents,
                }),
            ),
            RideEvent::DriverAssigned {
                driver_id,
                previous_driver_id,
            } => (
                "ride.driver-assigned",
                json!({ "driver_id": driver_id, "previous_driver_id": previous_driver_id }),
            ),
            RideEvent::RideCompleted {
                final_fare_cents,
                distance_km,
            } => (
                "ride.completed",
                json!({ "final_fare_cents": final_fare_cents, "distance_km": distance_km }),
            ),
            RideEvent::RideCancelled { by, reason } => (
                "ride.cancelled",
                json!({ "cancelled_by": by, "reason": reason }),
            ),
            RideEvent::RideStarted { .. }
            | RideEvent::DestinationChanged { .. }
            | RideEvent::FareAdjusted { .. } => return None,
        })
    }
}
