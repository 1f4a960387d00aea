//! Time travel over one entity: merge from any sources, state as of a time or version,
//! history with the state after each step.

use proptest::prelude::*;
use timeline_core::codec::encode_event;
use timeline_core::ride::{Location, RideAggregate, RideEvent};
use timeline_core::timetravel::{history, merge, state_at, AsOf, LogIssue};
use timeline_core::video::{VideoAggregate, VideoEvent};
use timeline_core::views::fold;
use timeline_core::Aggregate;
use timeline_core::EventEnvelope;
use timeline_core::Metadata;
use timeline_core::StreamKey;
use timeline_core::Timestamp;

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

fn envelopes<A: Aggregate>(id: &str, events: &[(A::Event, &str)]) -> Vec<EventEnvelope> {
    events
        .iter()
        .enumerate()
        .map(|(i, (event, time))| {
            let (event_type, schema_version, data) = encode_event::<A>(event);
            EventEnvelope {
                event_id: format!("{id}-{}", i + 1),
                aggregate_type: A::TYPE.into(),
                aggregate_id: id.into(),
                version: i as u64 + 1,
                event_type,
                schema_version,
                occurred_at: at(time),
                recorded_at: at(time),
                metadata: Metadata {
                    command_id: format!("c{i}"),
                    correlation_id: None,
                    causation_id: None,
                    actor: "ops".into(),
                },
                data,
            }
        })
        .collect()
}

fn place(a: &str) -> Location {
    Location {
        address: a.into(),
        lat: 53.3,
        lon: -6.2,
    }
}

fn fare_ride() -> Vec<EventEnvelope> {
    envelopes::<RideAggregate>(
        "r1",
        &[
            (
                RideEvent::RideBooked {
                    rider_id: "rider-42".into(),
                    pickup: place("A"),
                    dropoff: place("B"),
                    fare_estimate_cents: Some(9000),
                },
                "2026-11-28T10:01:00Z",
            ),
            (
                RideEvent::FareAdjusted {
                    from_cents: Some(9000),
                    to_cents: 10000,
                    reason: "detour".into(),
                },
                "2026-11-28T10:02:00Z",
            ),
            (
                RideEvent::FareAdjusted {
                    from_cents: Some(10000),
                    to_cents: 11000,
                    reason: "toll".into(),
                },
                "2026-11-28T10:03:00Z",
            ),
        ],
    )
}

#[test]
fn the_fare_90_100_110_reads_right_at_any_time_in_between() {
    let log = merge(StreamKey::new("ride", "r1"), fare_ride());
    let fare_at = |t: &str| {
        state_at::<RideAggregate>(&log, AsOf::Time(at(t)))
            .view
            .map(|v| v.state.unwrap().fare_cents.unwrap())
    };
    assert_eq!(fare_at("2026-11-28T10:00:59Z"), None, "not booked yet");
    assert_eq!(fare_at("2026-11-28T10:01:00Z"), Some(9000));
    assert_eq!(fare_at("2026-11-28T10:01:59.999Z"), Some(9000));
    assert_eq!(fare_at("2026-11-28T10:02:00Z"), Some(10000));
    assert_eq!(fare_at("2026-11-28T10:02:30Z"), Some(10000));
    assert_eq!(fare_at("2026-11-28T10:03:00Z"), Some(11000));
    let v2 = state_at::<RideAggregate>(&log, AsOf::Version(2));
    assert!(v2.complete);
    assert_eq!(v2.view.unwrap().state.unwrap().fare_cents, Some(10000));
    let between = history::<RideAggregate>(
        &log,
        Some(at("2026-11-28T10:01:30Z")),
        Some(at("2026-11-28T10:02:30Z")),
    );
    assert!(between.issues.is_empty());
    assert!(between.complete);
    let steps = between.steps;
    assert_eq!(steps.len(), 1);
    assert_eq!(steps[0].event_type, "FareAdjusted");
    assert_eq!(steps[0].reason.as_deref(), Some("detour"));
    assert_eq!(
        steps[0].state_after.as_ref().unwrap().fare_cents,
        Some(10000)
    );
}

#[test]
fn the_seed_video_history_reads_uploaded_processing_50_failed_with_the_reason() {
    let events = envelopes::<VideoAggregate>(
        "v1",
        &[
            (
                VideoEvent::VideoUploaded {
                    title: "Keynote".into(),
                    source_uri: "s3://in/k.mp4".into(),
                    uploaded_by: None,
                },
                "2026-11-28T10:00:00Z",
            ),
            (
                VideoEvent::ProcessingStarted { attempt: 1 },
                "2026-11-28T10:01:00Z",
            ),
            (
                VideoEvent::ProcessingProgressed { percent: 50 },
                "2026-11-28T10:02:00Z",
            ),
            (
                VideoEvent::ProcessingFailed {
                    error: "timeout".into(),
                },
                "2026-11-28T10:03:00Z",
            ),
        ],
    );
    let log = merge(StreamKey::new("video", "v1"), events);
    let steps = history::<VideoAggregate>(&log, None, None).steps;
    let statuses: Vec<&str> = steps.iter().map(|s| s.status_after.as_str()).collect();
    assert_eq!(
        statuses,
        ["uploaded", "processing", "processing:50%", "failed"]
    );
    assert_eq!(steps[3].reason.as_deref(), Some("timeout"));
    assert_eq!(
        steps[3]
            .state_after
            .as_ref()
            .unwrap()
            .failure_reason
            .as_deref(),
        Some("timeout")
    );
}

#[test]
fn copies_from_archive_and_stream_in_any_order_merge_to_one_timeline() {
    let events = fare_ride();
    let mut mixed: Vec<EventEnvelope> = events.iter().rev().cloned().collect();
    mixed.extend(events.iter().cloned());
    mixed.push(events[1].clone());
    let log = merge(StreamKey::new("ride", "r1"), mixed);
    assert_eq!(log.events, events);
    assert!(log.issues.is_empty());
}

#[test]
fn a_missing_version_is_incomplete_history_not_invented_state() {
    let events = fare_ride();
    let log = merge(
        StreamKey::new("ride", "r1"),
        [events[0].clone(), events[2].clone()],
    );
    assert_eq!(
        log.issues,
        [LogIssue::Gap {
            expected: 2,
            found: 3
        }]
    );
    let now = state_at::<RideAggregate>(&log, AsOf::Now);
    assert!(!now.complete);
    assert_eq!(now.missing_versions, [2]);
    assert_eq!(now.view.unwrap().version, 1, "nothing past the gap is used");
    // Version 1 itself is fully known.
    assert!(state_at::<RideAggregate>(&log, AsOf::Version(1)).complete);
}

#[test]
fn now_is_complete_only_up_to_the_latest_committed_version() {
    // Given the log holds versions 1 and 2, and the write model says 3 is committed
    let events = fare_ride();
    let log = merge(StreamKey::new("ride", "r1"), events[..2].to_vec())
        .knowing(Some(3), Default::default());
    // When asked for now, then the answer is version 2 and says 3 is missing
    let now = state_at::<RideAggregate>(&log, AsOf::Now);
    assert!(!now.complete);
    assert_eq!(now.missing_versions, [3]);
    assert_eq!(now.view.unwrap().version, 2);
    // And as of version 2 it is whole.
    assert!(state_at::<RideAggregate>(&log, AsOf::Version(2)).complete);
}

#[test]
fn a_gap_at_version_one_is_incomplete_not_absent() {
    // Given only versions 2 and 3 were found, of 3 committed
    let events = fare_ride();
    let log = merge(StreamKey::new("ride", "r1"), events[1..].to_vec())
        .knowing(Some(3), Default::default());
    let now = state_at::<RideAggregate>(&log, AsOf::Now);
    // Then there is no state to show, and the answer says why
    assert!(now.view.is_none());
    assert!(!now.complete);
    assert_eq!(now.missing_versions, [1]);
    assert_eq!(
        log.target(AsOf::Now),
        3,
        "it exists: three versions are committed"
    );
}

#[test]
fn a_missing_version_just_before_a_time_makes_that_answer_incomplete() {
    // Given versions 1 and 3 are found, 2 is missing, and nothing says when 2 happened
    let events = fare_ride();
    let log = merge(
        StreamKey::new("ride", "r1"),
        [events[0].clone(), events[2].clone()],
    )
    .knowing(Some(3), Default::default());
    // As of 10:02:30 (after 2 would be, before 3): version 2 may be in, so not complete
    let mid = state_at::<RideAggregate>(&log, AsOf::Time(at("2026-11-28T10:02:30Z")));
    assert!(!mid.complete);
    assert_eq!(mid.missing_versions, [2]);
    // As of 10:01:30 (before 3, and version 2 cannot be before version 1): 1 alone would be
    // the answer only if 2 happened later, which is not known either.
    let early = state_at::<RideAggregate>(&log, AsOf::Time(at("2026-11-28T10:01:30Z")));
    assert!(!early.complete);
    // When the index says version 2 happened at 10:02, the early answer is whole.
    let indexed = merge(
        StreamKey::new("ride", "r1"),
        [events[0].clone(), events[2].clone()],
    )
    .knowing(
        Some(3),
        [(2, at("2026-11-28T10:02:00Z"))].into_iter().collect(),
    );
    let early = state_at::<RideAggregate>(&indexed, AsOf::Time(at("2026-11-28T10:01:30Z")));
    assert!(early.complete, "{early:?}");
    assert_eq!(early.view.unwrap().version, 1);
    let mid = state_at::<RideAggregate>(&indexed, AsOf::Time(at("2026-11-28T10:02:30Z")));
    assert!(!mid.complete);
    assert_eq!(mid.missing_versions, [2]);
}

#[test]
fn a_history_with_a_missing_step_says_so() {
    let events = fare_ride();
    let log = merge(
        StreamKey::new("ride", "r1"),
        [events[0].clone(), events[2].clone()],
    )
    .knowing(Some(3), Default::default());
    let all = history::<RideAggregate>(&log, None, None);
    assert!(!all.complete);
    assert_eq!(all.missing_versions, [2]);
    // Steps only up to the gap: a state after version 3 cannot be known without 2.
    assert_eq!(all.steps.len(), 1);
}

#[test]
fn an_unknown_event_type_is_reported_and_stops_the_fold_there() {
    let mut events = fare_ride();
    events[2].event_type = "RideTeleported".into();
    let log = merge(StreamKey::new("ride", "r1"), events);
    let now = state_at::<RideAggregate>(&log, AsOf::Now);
    assert!(!now.complete);
    assert!(matches!(
        now.issues.as_slice(),
        [LogIssue::Unreadable { version: 3, .. }]
    ));
    assert_eq!(now.view.unwrap().version, 2);
}

proptest! {
    /// As of T is the fold of exactly the events with occurred_at <= T; as of N likewise.
    #[test]
    fn state_as_of_time_or_version_is_the_fold_of_exactly_those_events(
        gaps in prop::collection::vec(0..5_000i64, 1..30),
        probe in 0..200_000i64,
        n in 0..35u64,
    ) {
        let base = at("2026-11-28T10:00:00Z");
        let mut t = base;
        let mut list: Vec<(RideEvent, String)> = vec![(RideEvent::RideBooked { rider_id: "r".into(), pickup: place("A"), dropoff: place("B"), fare_estimate_cents: None }, t.to_string())];
        for (i, g) in gaps.iter().enumerate() {
            t = t.plus_millis(*g);
            list.push((RideEvent::FareAdjusted { from_cents: None, to_cents: i as i64, reason: "x".into() }, t.to_string()));
        }
        let pairs: Vec<(RideEvent, &str)> = list.iter().map(|(e, s)| (e.clone(), s.as_str())).collect();
        let events = envelopes::<RideAggregate>("r1", &pairs);
        let log = merge(StreamKey::new("ride", "r1"), events.clone());
        let time = base.plus_millis(probe);
        let upto: Vec<EventEnvelope> = events.iter().filter(|e| e.occurred_at <= time).cloned().collect();
        let expected = fold::<RideAggregate>(&upto).unwrap().map(|(v, _)| v);
        prop_assert_eq!(state_at::<RideAggregate>(&log, AsOf::Time(time)).view, expected);
        let upto: Vec<EventEnvelope> = events.iter().filter(|e| e.version <= n).cloned().collect();
        let expected = fold::<RideAggregate>(&upto).unwrap().map(|(v, _)| v);
        prop_assert_eq!(state_at::<RideAggregate>(&log, AsOf::Version(n)).view, expected);
    }
}
