//! Who may do what, as tables: every command and every read of both aggregates, for every
//! kind of caller. `A` allowed, `F` forbidden (403, the caller may see the entity), `H`
//! hidden (404, as if it did not exist).

use timeline_core::access::{Access, Caller, Policy, Role};
use timeline_core::ports::LookupKind;
use timeline_core::ride::{CancelledBy, Location, Ride, RideAggregate, RideCommand, RideStatus};
use timeline_core::video::{Video, VideoAggregate, VideoCommand, VideoPhase};

fn code(access: Access) -> char {
    match access {
        Access::Allowed => 'A',
        Access::Forbidden(_) => 'F',
        Access::Hidden => 'H',
    }
}

/// The callers, in the tables' column order.
fn ride_callers() -> Vec<(&'static str, Caller)> {
    vec![
        ("its rider", Caller::user("r-1", [Role::Rider])),
        ("another rider", Caller::user("r-2", [Role::Rider])),
        ("its driver", Caller::user("d-1", [Role::Driver])),
        ("another driver", Caller::user("d-2", [Role::Driver])),
        ("a dispatcher", Caller::user("disp", [Role::Dispatcher])),
        ("an operator", Caller::user("op", [Role::Operator])),
        ("a service", Caller::service("arn:aws:iam::1:role/pipeline")),
    ]
}

fn place(a: &str) -> Location {
    Location {
        address: a.into(),
        lat: 1.0,
        lon: 2.0,
    }
}

fn ride(status: RideStatus, driver: Option<&str>) -> Option<Ride> {
    Some(Ride {
        rider_id: "r-1".into(),
        driver_id: driver.map(str::to_owned),
        pickup: place("A"),
        dropoff: place("B"),
        status,
        fare_cents: Some(1000),
        distance_km: None,
        cancelled_by: None,
        cancel_reason: None,
    })
}

fn check_row(
    what: &str,
    expected: &str,
    callers: &[(&'static str, Caller)],
    answer: impl Fn(&Caller) -> Access,
) {
    let expected: Vec<char> = expected.chars().filter(|c| !c.is_whitespace()).collect();
    assert_eq!(
        expected.len(),
        callers.len(),
        "{what}: one answer per caller"
    );
    for ((who, caller), want) in callers.iter().zip(expected) {
        let got = code(answer(caller));
        assert_eq!(got, want, "{what}, asked by {who}");
    }
}

#[test]
fn commands_on_a_ride_with_a_driver() {
    let state = ride(RideStatus::DriverAssigned, Some("d-1"));
    let callers = ride_callers();
    //                     rider other driver other disp op  svc
    let table: Vec<(&str, &str, RideCommand)> = vec![
        (
            "assign another driver",
            "F H F H A A H",
            RideCommand::AssignDriver {
                driver_id: "d-9".into(),
            },
        ),
        ("start", "F H A H F A H", RideCommand::Start),
        (
            "change the destination",
            "A H F H A A H",
            RideCommand::ChangeDestination {
                dropoff: place("C"),
            },
        ),
        (
            "adjust the fare",
            "F H F H A A H",
            RideCommand::AdjustFare {
                fare_cents: 1,
                reason: "x".into(),
            },
        ),
        (
            "complete",
            "F H A H F A H",
            RideCommand::Complete {
                final_fare_cents: 1,
                distance_km: 1.0,
            },
        ),
        (
            "cancel as the rider",
            "A H F H A A H",
            RideCommand::Cancel {
                by: CancelledBy::Rider,
                reason: "x".into(),
            },
        ),
        (
            "cancel as the driver",
            "F H A H A A H",
            RideCommand::Cancel {
                by: CancelledBy::Driver,
                reason: "x".into(),
            },
        ),
        (
            "cancel as the system",
            "F H F H A A H",
            RideCommand::Cancel {
                by: CancelledBy::System,
                reason: "x".into(),
            },
        ),
    ];
    for (what, expected, command) in table {
        check_row(what, expected, &callers, |c| {
            RideAggregate::may_command(c, &state, &command)
        });
    }
}

#[test]
fn an_open_booking_is_taken_by_a_driver_as_themself_only() {
    let state = ride(RideStatus::Booked, None);
    let callers = ride_callers();
    // Any driver sees an open booking; each takes it only for themself.
    check_row("assign d-2", "F H F A A A H", &callers, |c| {
        RideAggregate::may_command(
            c,
            &state,
            &RideCommand::AssignDriver {
                driver_id: "d-2".into(),
            },
        )
    });
    check_row("read it", "A H A A A A H", &callers, |c| {
        RideAggregate::may_read(c, &state)
    });
    // Once taken, only its driver (and staff) see it.
    let taken = ride(RideStatus::DriverAssigned, Some("d-1"));
    check_row("read a taken ride", "A H A H A A H", &callers, |c| {
        RideAggregate::may_read(c, &taken)
    });
}

#[test]
fn booking_is_as_yourself_or_by_staff() {
    let callers = ride_callers();
    let book = |rider: &str| RideCommand::Book {
        rider_id: rider.into(),
        pickup: place("A"),
        dropoff: place("B"),
        fare_estimate_cents: None,
    };
    check_row("book for r-1", "A F F F A A F", &callers, |c| {
        RideAggregate::may_command(c, &None, &book("r-1"))
    });
    check_row("book for r-2", "F A F F A A F", &callers, |c| {
        RideAggregate::may_command(c, &None, &book("r-2"))
    });
    // A rider who names nobody books as themself.
    let mut body = serde_json::Map::new();
    RideAggregate::complete_from_identity(&callers[0].1, "book", &mut body);
    assert_eq!(body["rider_id"], "r-1");
    let mut staff_body = serde_json::Map::new();
    RideAggregate::complete_from_identity(&callers[4].1, "book", &mut staff_body);
    assert!(staff_body.is_empty(), "staff name the rider they book for");
}

#[test]
fn a_command_on_no_ride_is_left_to_the_rules_which_answer_404_to_all() {
    for (who, caller) in ride_callers() {
        assert_eq!(
            RideAggregate::may_command(&caller, &None, &RideCommand::Start),
            Access::Allowed,
            "{who}"
        );
    }
}

#[test]
fn lists_of_rides() {
    let callers = ride_callers();
    let rows = [
        ("rider_id=r-1", LookupKind::Rider, "r-1", "A F F F A A F"),
        ("rider_id=r-2", LookupKind::Rider, "r-2", "F A F F A A F"),
        ("driver_id=d-1", LookupKind::Driver, "d-1", "F F A F A A F"),
        (
            "status=booked",
            LookupKind::Status,
            "booked",
            "F F A A A A F",
        ),
        (
            "status=completed",
            LookupKind::Status,
            "completed",
            "F F F F A A F",
        ),
    ];
    for (what, lookup, value, expected) in rows {
        check_row(what, expected, &callers, |c| {
            RideAggregate::may_list(c, lookup, value)
        });
    }
}

fn video_callers() -> Vec<(&'static str, Caller)> {
    vec![
        ("its uploader", Caller::user("u-1", [])),
        (
            "another user",
            Caller::user("u-2", [Role::Rider, Role::Driver, Role::Dispatcher]),
        ),
        ("an operator", Caller::user("op", [Role::Operator])),
        (
            "the pipeline",
            Caller::service("arn:aws:iam::1:role/pipeline"),
        ),
    ]
}

fn video() -> Option<Video> {
    Some(Video {
        title: "t".into(),
        source_uri: "s3://in/t.mp4".into(),
        phase: VideoPhase::Processing,
        progress: None,
        output_uri: None,
        failure_reason: None,
        attempts: 1,
        uploaded_by: Some("u-1".into()),
    })
}

#[test]
fn videos_are_uploaded_by_users_and_reported_on_by_the_pipeline() {
    let callers = video_callers();
    let state = video();
    //                 uploader other operator pipeline
    let table: Vec<(&str, &str, VideoCommand)> = vec![
        ("start processing", "F H F A", VideoCommand::StartProcessing),
        (
            "report progress",
            "F H F A",
            VideoCommand::ReportProgress { percent: 50 },
        ),
        (
            "succeed",
            "F H F A",
            VideoCommand::Succeed { output_uri: None },
        ),
        (
            "fail",
            "F H F A",
            VideoCommand::Fail {
                error: "timeout".into(),
            },
        ),
    ];
    for (what, expected, command) in table {
        check_row(what, expected, &callers, |c| {
            VideoAggregate::may_command(c, &state, &command)
        });
    }
    let upload = |by: &str| VideoCommand::Upload {
        title: "t".into(),
        source_uri: "s3://in/t.mp4".into(),
        uploaded_by: Some(by.into()),
    };
    check_row("upload as u-1", "A F F F", &callers, |c| {
        VideoAggregate::may_command(c, &None, &upload("u-1"))
    });
    check_row("read", "A H A A", &callers, |c| {
        VideoAggregate::may_read(c, &state)
    });
    check_row("list by status", "F F A A", &callers, |c| {
        VideoAggregate::may_list(c, LookupKind::Status, "failed")
    });
    let mut body = serde_json::Map::new();
    VideoAggregate::complete_from_identity(&callers[0].1, "upload", &mut body);
    assert_eq!(body["uploaded_by"], "u-1");
}

#[test]
fn a_video_uploaded_before_uploaders_were_recorded_is_for_operators_and_the_pipeline() {
    let mut state = video();
    state.as_mut().unwrap().uploaded_by = None;
    check_row("read", "H H A A", &video_callers(), |c| {
        VideoAggregate::may_read(c, &state)
    });
}
