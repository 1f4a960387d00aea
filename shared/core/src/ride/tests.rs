//! Given/when/then: the business rules, as examples.
use super::RideAggregate as R;
use super::*;
use crate::scenario::{given, given_no_history};

fn at(address: &str, lat: f64, lon: f64) -> Location {
    Location {
        address: address.into(),
        lat,
        lon,
    }
}
fn home() -> Location {
    at("1 Rue de Rivoli, Paris", 48.8606, 2.3376)
}
fn office() -> Location {
    at("5 Avenue Anatole France, Paris", 48.8584, 2.2945)
}
fn airport() -> Location {
    at("Aéroport CDG, Terminal 2", 49.0097, 2.5479)
}

fn book() -> RideCommand {
    RideCommand::Book {
        rider_id: "rider-1".into(),
        pickup: home(),
        dropoff: office(),
        fare_estimate_cents: Some(9000),
    }
}
fn book_with(pickup: Location, dropoff: Location, fare: Option<i64>) -> RideCommand {
    RideCommand::Book {
        rider_id: "rider-1".into(),
        pickup,
        dropoff,
        fare_estimate_cents: fare,
    }
}
fn assign(driver: &str) -> RideCommand {
    RideCommand::AssignDriver {
        driver_id: driver.into(),
    }
}
fn change_destination(to: Location) -> RideCommand {
    RideCommand::ChangeDestination { dropoff: to }
}
fn adjust_fare(cents: i64, reason: &str) -> RideCommand {
    RideCommand::AdjustFare {
        fare_cents: cents,
        reason: reason.into(),
    }
}
fn complete(cents: i64, km: f64) -> RideCommand {
    RideCommand::Complete {
        final_fare_cents: cents,
        distance_km: km,
    }
}
fn cancel(by: CancelledBy, reason: &str) -> RideCommand {
    RideCommand::Cancel {
        by,
        reason: reason.into(),
    }
}

fn booked() -> RideEvent {
    booked_with_fare(Some(9000))
}
fn booked_with_fare(fare: Option<i64>) -> RideEvent {
    RideEvent::RideBooked {
        rider_id: "rider-1".into(),
        pickup: home(),
        dropoff: office(),
        fare_estimate_cents: fare,
    }
}
fn assigned(driver: &str) -> RideEvent {
    RideEvent::DriverAssigned {
        driver_id: driver.into(),
        previous_driver_id: None,
    }
}
fn reassigned(driver: &str, previous: &str) -> RideEvent {
    RideEvent::DriverAssigned {
        driver_id: driver.into(),
        previous_driver_id: Some(previous.into()),
    }
}
fn started(driver: &str) -> RideEvent {
    RideEvent::RideStarted {
        driver_id: driver.into(),
    }
}
fn destination_changed(from: Location, to: Location) -> RideEvent {
    RideEvent::DestinationChanged { from, to }
}
fn fare_adjusted(from: Option<i64>, to: i64, reason: &str) -> RideEvent {
    RideEvent::FareAdjusted {
        from_cents: from,
        to_cents: to,
        reason: reason.into(),
    }
}
fn completed(cents: i64, km: f64) -> RideEvent {
    RideEvent::RideCompleted {
        final_fare_cents: cents,
        distance_km: km,
    }
}
fn cancelled(by: CancelledBy, reason: &str) -> RideEvent {
    RideEvent::RideCancelled {
        by,
        reason: reason.into(),
    }
}

/// Histories that end in each state of the lifecycle.
fn booked_ride() -> Vec<RideEvent> {
    vec![booked()]
}
fn assigned_ride() -> Vec<RideEvent> {
    vec![booked(), assigned("driver-1")]
}
fn ride_in_progress() -> Vec<RideEvent> {
    vec![booked(), assigned("driver-1"), started("driver-1")]
}
fn completed_ride() -> Vec<RideEvent> {
    let mut events = ride_in_progress();
    events.push(completed(9500, 12.5));
    events
}
fn cancelled_ride() -> Vec<RideEvent> {
    vec![booked(), cancelled(CancelledBy::Rider, "plans changed")]
}

// Booking

#[test]
fn a_ride_is_booked_by_a_rider_from_a_pickup_to_a_dropoff() {
    let ride = given_no_history::<R>()
        .when(book())
        .then(&[booked()])
        .unwrap();
    assert_eq!(ride.status, RideStatus::Booked);
    assert_eq!(ride.rider_id, "rider-1");
    assert_eq!(ride.pickup, home());
    assert_eq!(ride.dropoff, office());
    assert_eq!(ride.driver_id, None);
    assert_eq!(ride.fare_cents, Some(9000));
}

#[test]
fn a_ride_can_be_booked_without_a_fare_estimate_or_with_a_free_one() {
    let ride = given_no_history::<R>()
        .when(book_with(home(), office(), None))
        .then(&[booked_with_fare(None)])
        .unwrap();
    assert_eq!(ride.fare_cents, None);
    given_no_history::<R>()
        .when(book_with(home(), office(), Some(0)))
        .then(&[booked_with_fare(Some(0))]);
}

#[test]
fn a_ride_is_booked_only_once() {
    given::<R>(&booked_ride())
        .when(book())
        .then_error("ride.already_exists");
    given::<R>(&cancelled_ride())
        .when(book())
        .then_error("ride.already_exists");
}

#[test]
fn a_booking_needs_a_rider() {
    for rider in ["", "   "] {
        given_no_history::<R>()
            .when(RideCommand::Book {
                rider_id: rider.into(),
                pickup: home(),
                dropoff: office(),
                fare_estimate_cents: None,
            })
            .then_error("ride.field_required");
    }
}

#[test]
fn a_booking_needs_an_address_for_pickup_and_dropoff() {
    given_no_history::<R>()
        .when(book_with(at(" ", 48.0, 2.0), office(), None))
        .then_error("ride.field_required");
    given_no_history::<R>()
        .when(book_with(home(), at("", 48.0, 2.0), None))
        .then_error("ride.field_required");
}

#[test]
fn a_booking_needs_real_coordinates_for_pickup_and_dropoff() {
    let invalid = [
        (90.1, 2.0),
        (-90.1, 2.0),
        (48.0, 180.1),
        (48.0, -180.1),
        (f64::NAN, 2.0),
        (48.0, f64::INFINITY),
    ];
    for (lat, lon) in invalid {
        given_no_history::<R>()
            .when(book_with(at("Nowhere", lat, lon), office(), None))
            .then_error("ride.invalid_location");
        given_no_history::<R>()
            .when(book_with(home(), at("Nowhere", lat, lon), None))
            .then_error("ride.invalid_location");
    }
}

#[test]
fn coordinates_on_the_edge_of_the_map_are_valid() {
    let north_pole = at("North Pole", 90.0, 180.0);
    let south_pole = at("South Pole", -90.0, -180.0);
    given_no_history::<R>()
        .when(book_with(north_pole.clone(), south_pole.clone(), None))
        .then(&[RideEvent::RideBooked {
            rider_id: "rider-1".into(),
            pickup: north_pole,
            dropoff: south_pole,
            fare_estimate_cents: None,
        }]);
}

#[test]
fn pickup_and_dropoff_must_differ() {
    given_no_history::<R>()
        .when(book_with(home(), home(), Some(9000)))
        .then_error("ride.same_pickup_and_dropoff");
}

#[test]
fn a_fare_estimate_cannot_be_negative() {
    given_no_history::<R>()
        .when(book_with(home(), office(), Some(-1)))
        .then_error("ride.negative_fare");
}

// Assigning a driver

#[test]
fn a_driver_is_assigned_to_a_booked_ride() {
    let ride = given::<R>(&booked_ride())
        .when(assign("driver-1"))
        .then(&[assigned("driver-1")])
        .unwrap();
    assert_eq!(ride.status, RideStatus::DriverAssigned);
    assert_eq!(ride.driver_id.as_deref(), Some("driver-1"));
}

#[test]
fn a_driver_can_be_reassigned_before_the_ride_starts_and_the_previous_one_is_recorded() {
    let ride = given::<R>(&assigned_ride())
        .when(assign("driver-2"))
        .then(&[reassigned("driver-2", "driver-1")])
        .unwrap();
    assert_eq!(ride.status, RideStatus::DriverAssigned);
    assert_eq!(ride.driver_id.as_deref(), Some("driver-2"));
}

#[test]
fn the_assigned_driver_cannot_be_assigned_again() {
    given::<R>(&assigned_ride())
        .when(assign("driver-1"))
        .then_error("ride.driver_already_assigned");
}

#[test]
fn a_driver_assignment_needs_a_driver() {
    given::<R>(&booked_ride())
        .when(assign(" "))
        .then_error("ride.field_required");
}

#[test]
fn a_driver_cannot_be_assigned_once_the_ride_has_started() {
    given::<R>(&ride_in_progress())
        .when(assign("driver-2"))
        .then_error("ride.already_started");
}

#[test]
fn a_driver_cannot_be_assigned_to_a_closed_ride() {
    given::<R>(&completed_ride())
        .when(assign("driver-2"))
        .then_error("ride.closed");
    given::<R>(&cancelled_ride())
        .when(assign("driver-2"))
        .then_error("ride.closed");
}

// Starting

#[test]
fn a_ride_starts_with_its_assigned_driver() {
    let ride = given::<R>(&[
        booked(),
        assigned("driver-1"),
        reassigned("driver-2", "driver-1"),
    ])
    .when(RideCommand::Start)
    .then(&[started("driver-2")])
    .unwrap();
    assert_eq!(ride.status, RideStatus::InProgress);
}

#[test]
fn a_ride_cannot_start_before_a_driver_is_assigned() {
    given::<R>(&booked_ride())
        .when(RideCommand::Start)
        .then_error("ride.driver_not_assigned");
}

#[test]
fn a_ride_cannot_start_twice() {
    given::<R>(&ride_in_progress())
        .when(RideCommand::Start)
        .then_error("ride.already_started");
}

#[test]
fn a_closed_ride_cannot_start() {
    given::<R>(&completed_ride())
        .when(RideCommand::Start)
        .then_error("ride.closed");
    given::<R>(&[
        booked(),
        assigned("driver-1"),
        cancelled(CancelledBy::Driver, "flat tyre"),
    ])
    .when(RideCommand::Start)
    .then_error("ride.closed");
}

// Changing the destination

#[test]
fn the_destination_changes_from_the_current_dropoff_to_the_new_one() {
    let ride = given::<R>(&booked_ride())
        .when(change_destination(airport()))
        .then(&[destination_changed(office(), airport())])
        .unwrap();
    assert_eq!(ride.dropoff, airport());
    assert_eq!(ride.status, RideStatus::Booked);
}

#[test]
fn the_destination_can_change_during_the_ride() {
    let ride = given::<R>(&ride_in_progress())
        .when(change_destination(airport()))
        .then(&[destination_changed(office(), airport())])
        .unwrap();
    assert_eq!(ride.dropoff, airport());
    assert_eq!(ride.status, RideStatus::InProgress);
}

#[test]
fn a_destination_change_must_change_the_destination() {
    given::<R>(&assigned_ride())
        .when(change_destination(office()))
        .then_error("ride.destination_unchanged");
}

#[test]
fn the_new_destination_cannot_be_the_pickup() {
    given::<R>(&assigned_ride())
        .when(change_destination(home()))
        .then_error("ride.same_pickup_and_dropoff");
}

#[test]
fn the_new_destination_must_be_a_real_place() {
    given::<R>(&booked_ride())
        .when(change_destination(at("Nowhere", 123.0, 2.0)))
        .then_error("ride.invalid_location");
    given::<R>(&booked_ride())
        .when(change_destination(at("", 49.0, 2.0)))
        .then_error("ride.field_required");
}

#[test]
fn the_destination_cannot_change_once_the_ride_is_completed_or_cancelled() {
    given::<R>(&completed_ride())
        .when(change_destination(airport()))
        .then_error("ride.closed");
    given::<R>(&cancelled_ride())
        .when(change_destination(airport()))
        .then_error("ride.closed");
}

// Adjusting the fare

#[test]
fn a_fare_is_adjusted_from_its_current_value_with_a_reason() {
    let ride = given::<R>(&assigned_ride())
        .when(adjust_fare(10000, "traffic"))
        .then(&[fare_adjusted(Some(9000), 10000, "traffic")])
        .unwrap();
    assert_eq!(ride.fare_cents, Some(10000));
}

#[test]
fn a_fare_adjusted_twice_goes_from_90_to_100_to_110() {
    let after_first = given::<R>(&booked_ride())
        .when(adjust_fare(10000, "traffic"))
        .then(&[fare_adjusted(Some(9000), 10000, "traffic")])
        .unwrap();
    assert_eq!(after_first.fare_cents, Some(10000));
    let after_second = given::<R>(&[booked(), fare_adjusted(Some(9000), 10000, "traffic")])
        .when(adjust_fare(11000, "toll road"))
        .then(&[fare_adjusted(Some(10000), 11000, "toll road")])
        .unwrap();
    assert_eq!(after_second.fare_cents, Some(11000));
}

#[test]
fn a_fare_can_be_set_on_a_ride_booked_without_an_estimate() {
    given::<R>(&[booked_with_fare(None)])
        .when(adjust_fare(4500, "quoted by phone"))
        .then(&[fare_adjusted(None, 4500, "quoted by phone")]);
}

#[test]
fn the_fare_can_be_adjusted_during_the_ride() {
    given::<R>(&ride_in_progress())
        .when(adjust_fare(9900, "detour"))
        .then(&[fare_adjusted(Some(9000), 9900, "detour")]);
}

#[test]
fn an_adjusted_fare_cannot_be_negative() {
    given::<R>(&booked_ride())
        .when(adjust_fare(-100, "refund"))
        .then_error("ride.negative_fare");
}

#[test]
fn a_fare_adjustment_needs_a_reason() {
    given::<R>(&booked_ride())
        .when(adjust_fare(10000, ""))
        .then_error("ride.field_required");
    given::<R>(&booked_ride())
        .when(adjust_fare(10000, "  "))
        .then_error("ride.field_required");
}

#[test]
fn a_fare_adjustment_must_change_the_fare() {
    given::<R>(&booked_ride())
        .when(adjust_fare(9000, "no change"))
        .then_error("ride.fare_unchanged");
}

#[test]
fn the_fare_of_a_closed_ride_cannot_be_adjusted() {
    given::<R>(&completed_ride())
        .when(adjust_fare(12000, "late claim"))
        .then_error("ride.closed");
    given::<R>(&cancelled_ride())
        .when(adjust_fare(500, "cancellation fee"))
        .then_error("ride.closed");
}

// Completing

#[test]
fn a_started_ride_completes_with_its_final_fare_and_distance() {
    let ride = given::<R>(&ride_in_progress())
        .when(complete(9500, 12.5))
        .then(&[completed(9500, 12.5)])
        .unwrap();
    assert_eq!(ride.status, RideStatus::Completed);
    assert_eq!(ride.fare_cents, Some(9500));
    assert_eq!(ride.distance_km, Some(12.5));
}

#[test]
fn a_free_ride_over_no_distance_is_still_a_completed_ride() {
    given::<R>(&ride_in_progress())
        .when(complete(0, 0.0))
        .then(&[completed(0, 0.0)]);
}

#[test]
fn a_ride_cannot_complete_before_it_starts() {
    given::<R>(&booked_ride())
        .when(complete(9500, 12.5))
        .then_error("ride.not_started");
    given::<R>(&assigned_ride())
        .when(complete(9500, 12.5))
        .then_error("ride.not_started");
}

#[test]
fn a_final_fare_cannot_be_negative() {
    given::<R>(&ride_in_progress())
        .when(complete(-1, 12.5))
        .then_error("ride.negative_fare");
}

#[test]
fn a_distance_cannot_be_negative_or_not_a_number() {
    for km in [-0.1, f64::NAN, f64::INFINITY, f64::NEG_INFINITY] {
        given::<R>(&ride_in_progress())
            .when(complete(9500, km))
            .then_error("ride.negative_distance");
    }
}

#[test]
fn a_ride_completes_only_once() {
    given::<R>(&completed_ride())
        .when(complete(9500, 12.5))
        .then_error("ride.closed");
}

#[test]
fn a_cancelled_ride_cannot_complete() {
    given::<R>(&[
        booked(),
        assigned("driver-1"),
        started("driver-1"),
        cancelled(CancelledBy::System, "payment declined"),
    ])
    .when(complete(9500, 12.5))
    .then_error("ride.closed");
}

// Cancelling

#[test]
fn a_rider_can_cancel_a_booked_ride() {
    let ride = given::<R>(&booked_ride())
        .when(cancel(CancelledBy::Rider, "plans changed"))
        .then(&[cancelled(CancelledBy::Rider, "plans changed")])
        .unwrap();
    assert_eq!(ride.status, RideStatus::Cancelled);
    assert_eq!(ride.cancelled_by, Some(CancelledBy::Rider));
    assert_eq!(ride.cancel_reason.as_deref(), Some("plans changed"));
}

#[test]
fn a_driver_can_cancel_an_assigned_ride() {
    let ride = given::<R>(&assigned_ride())
        .when(cancel(CancelledBy::Driver, "flat tyre"))
        .then(&[cancelled(CancelledBy::Driver, "flat tyre")])
        .unwrap();
    assert_eq!(ride.status, RideStatus::Cancelled);
    assert_eq!(ride.cancelled_by, Some(CancelledBy::Driver));
}

#[test]
fn the_system_can_cancel_a_ride_in_progress() {
    let ride = given::<R>(&ride_in_progress())
        .when(cancel(CancelledBy::System, "payment declined"))
        .then(&[cancelled(CancelledBy::System, "payment declined")])
        .unwrap();
    assert_eq!(ride.status, RideStatus::Cancelled);
    assert_eq!(ride.cancelled_by, Some(CancelledBy::System));
}

#[test]
fn anyone_can_cancel_a_ride_that_is_not_closed() {
    for history in [booked_ride(), assigned_ride(), ride_in_progress()] {
        for by in [CancelledBy::Rider, CancelledBy::Driver, CancelledBy::System] {
            given::<R>(&history)
                .when(cancel(by, "no longer needed"))
                .then(&[cancelled(by, "no longer needed")]);
        }
    }
}

#[test]
fn a_completed_ride_cannot_be_cancelled() {
    given::<R>(&completed_ride())
        .when(cancel(CancelledBy::Rider, "too late"))
        .then_error("ride.already_completed");
}

#[test]
fn a_ride_cannot_be_cancelled_twice() {
    given::<R>(&cancelled_ride())
        .when(cancel(CancelledBy::Driver, "again"))
        .then_error("ride.already_cancelled");
}

#[test]
fn a_cancellation_needs_a_reason() {
    given::<R>(&assigned_ride())
        .when(cancel(CancelledBy::Rider, " "))
        .then_error("ride.field_required");
}

// A ride that does not exist

#[test]
fn commands_on_a_ride_never_booked_are_not_found() {
    let commands = [
        assign("driver-1"),
        RideCommand::Start,
        change_destination(airport()),
        adjust_fare(10000, "traffic"),
        complete(9500, 12.5),
        cancel(CancelledBy::Rider, "plans changed"),
    ];
    for command in commands {
        given_no_history::<R>()
            .when(command)
            .then_error("ride.not_found");
    }
}

#[test]
fn refusals_say_whether_the_ride_is_missing_already_exists_or_breaks_a_rule() {
    let refusal = |history: &[RideEvent], command| {
        let state = history.iter().fold(None, R::evolve);
        R::decide(&state, command).unwrap_err().kind()
    };
    assert_eq!(refusal(&[], RideCommand::Start), RefusalKind::NotFound);
    assert_eq!(refusal(&booked_ride(), book()), RefusalKind::AlreadyExists);
    assert_eq!(
        refusal(&booked_ride(), RideCommand::Start),
        RefusalKind::Rule
    );
}

#[test]
fn the_whole_lifecycle_folds_into_the_final_ride() {
    let history = [
        booked(),
        assigned("driver-1"),
        reassigned("driver-2", "driver-1"),
        started("driver-2"),
        destination_changed(office(), airport()),
        fare_adjusted(Some(9000), 10000, "traffic"),
        fare_adjusted(Some(10000), 11000, "toll road"),
        completed(11500, 31.2),
    ];
    let ride = given::<R>(&history).state().clone().unwrap();
    assert_eq!(
        ride,
        Ride {
            rider_id: "rider-1".into(),
            driver_id: Some("driver-2".into()),
            pickup: home(),
            dropoff: airport(),
            status: RideStatus::Completed,
            fare_cents: Some(11500),
            distance_km: Some(31.2),
            cancelled_by: None,
            cancel_reason: None,
        }
    );
}
