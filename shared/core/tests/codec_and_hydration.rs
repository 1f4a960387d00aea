//! The wire contract (envelope fields, commit records, upcasting,
//! unknown events) and hydration (folding a stream, reporting incomplete history).

use serde_json::{json, Value};
use timeline_core::codec::{
    decode_event, decode_raw, decode_record, encode_event, encode_record, DecodeError, RecordError,
};
use timeline_core::envelope::CommitRecordError;
use timeline_core::hydrate::{apply, hydrate, HydrateError, Hydrated};
use timeline_core::ride::{CancelledBy, Location, RideAggregate, RideEvent};
use timeline_core::video::{VideoAggregate, VideoEvent};
use timeline_core::Aggregate;
use timeline_core::CommitRecord;
use timeline_core::EventEnvelope;
use timeline_core::Metadata;
use timeline_core::StreamKey;
use timeline_core::Timestamp;

fn t(rfc3339: &str) -> Timestamp {
    rfc3339.parse().unwrap()
}

/// An envelope as the write protocol would make it, for event `version` of `type#id`.
fn envelope<A: Aggregate>(id: &str, version: u64, event: &A::Event) -> EventEnvelope {
    let (event_type, schema_version, data) = encode_event::<A>(event);
    EventEnvelope {
        event_id: format!("{}-{id}-{version}", A::TYPE),
        aggregate_type: A::TYPE.into(),
        aggregate_id: id.into(),
        version,
        event_type,
        schema_version,
        occurred_at: t("2026-11-28T10:00:00.000Z").plus_millis(version as i64 * 1000),
        recorded_at: t("2026-11-28T10:00:00.250Z").plus_millis(version as i64 * 1000),
        metadata: Metadata {
            command_id: format!("command-{version}"),
            correlation_id: Some("correlation-1".into()),
            causation_id: Some("cause-1".into()),
            actor: "user:rider-1".into(),
        },
        data,
    }
}

/// Envelopes for a whole stream, versions 1, 2, 3, ...
fn stream<A: Aggregate>(id: &str, events: &[A::Event]) -> Vec<EventEnvelope> {
    events
        .iter()
        .enumerate()
        .map(|(i, e)| envelope::<A>(id, i as u64 + 1, e))
        .collect()
}

/// A stored envelope with a raw `type`, `schema_version` and `data`, as an old writer or a
/// newer one might have left it.
fn raw_envelope(aggregate_type: &str, event_type: &str, schema: u32, data: Value) -> EventEnvelope {
    serde_json::from_value(json!({
        "event_id": "raw-1",
        "aggregate_type": aggregate_type,
        "aggregate_id": "v-1",
        "version": 3,
        "type": event_type,
        "schema_version": schema,
        "occurred_at": "2026-11-28T10:00:00.000Z",
        "recorded_at": "2026-11-28T10:00:00.000Z",
        "command_id": "command-3",
        "actor": "worker:transcoder",
        "data": data,
    }))
    .unwrap()
}

fn place(address: &str, lat: f64, lon: f64) -> Location {
    Location {
        address: address.into(),
        lat,
        lon,
    }
}

fn every_ride_event() -> Vec<RideEvent> {
    let home = place("1 Rue de Rivoli, Paris", 48.8606, 2.3376);
    let office = place("5 Avenue Anatole France, Paris", 48.8584, 2.2945);
    let airport = place("Aéroport CDG, Terminal 2", 49.0097, 2.5479);
    vec![
        RideEvent::RideBooked {
            rider_id: "rider-1".into(),
            pickup: home,
            dropoff: office.clone(),
            fare_estimate_cents: Some(9000),
        },
        RideEvent::DriverAssigned {
            driver_id: "driver-1".into(),
            previous_driver_id: None,
        },
        RideEvent::DriverAssigned {
            driver_id: "driver-2".into(),
            previous_driver_id: Some("driver-1".into()),
        },
        RideEvent::RideStarted {
            driver_id: "driver-2".into(),
        },
        RideEvent::DestinationChanged {
            from: office,
            to: airport,
        },
        RideEvent::FareAdjusted {
            from_cents: Some(9000),
            to_cents: 10000,
            reason: "traffic".into(),
        },
        RideEvent::FareAdjusted {
            from_cents: Some(10000),
            to_cents: 11000,
            reason: "toll road".into(),
        },
        RideEvent::RideCompleted {
            final_fare_cents: 11500,
            distance_km: 31.2,
        },
        RideEvent::RideCancelled {
            by: CancelledBy::System,
            reason: "payment declined".into(),
        },
    ]
}

fn every_video_event() -> Vec<VideoEvent> {
    vec![
        VideoEvent::VideoUploaded {
            title: "Keynote".into(),
            source_uri: "s3://uploads/keynote.mp4".into(),
            uploaded_by: None,
        },
        VideoEvent::ProcessingStarted { attempt: 1 },
        VideoEvent::ProcessingProgressed { percent: 50 },
        VideoEvent::ProcessingFailed {
            error: "timeout".into(),
        },
        VideoEvent::ProcessingStarted { attempt: 2 },
        VideoEvent::ProcessingSucceeded {
            output_uri: Some("s3://out/keynote.m3u8".into()),
        },
        VideoEvent::ProcessingSucceeded { output_uri: None },
    ]
}

fn seed_video_events() -> Vec<VideoEvent> {
    vec![
        VideoEvent::VideoUploaded {
            title: "Keynote".into(),
            source_uri: "s3://uploads/keynote.mp4".into(),
            uploaded_by: None,
        },
        VideoEvent::ProcessingStarted { attempt: 1 },
        VideoEvent::ProcessingProgressed { percent: 50 },
        VideoEvent::ProcessingFailed {
            error: "timeout".into(),
        },
    ]
}

// The envelope on the wire

#[test]
fn an_envelope_is_serialized_with_exactly_the_fields_of_the_design() {
    let event = RideEvent::RideStarted {
        driver_id: "driver-1".into(),
    };
    let json = serde_json::to_value(envelope::<RideAggregate>("42", 4, &event)).unwrap();
    let object = json.as_object().expect("an envelope is a JSON object");
    let mut fields: Vec<&str> = object.keys().map(String::as_str).collect();
    fields.sort_unstable();
    let mut expected = vec![
        "event_id",
        "aggregate_type",
        "aggregate_id",
        "version",
        "type",
        "schema_version",
        "occurred_at",
        "recorded_at",
        "command_id",
        "correlation_id",
        "causation_id",
        "actor",
        "data",
    ];
    expected.sort_unstable();
    assert_eq!(fields, expected);

    assert_eq!(json["event_id"], "ride-42-4");
    assert_eq!(json["aggregate_type"], "ride");
    assert_eq!(json["aggregate_id"], "42");
    assert_eq!(json["version"], 4);
    assert_eq!(json["type"], "RideStarted");
    assert_eq!(json["schema_version"], 1);
    assert_eq!(json["occurred_at"], "2026-11-28T10:00:04.000Z");
    assert_eq!(json["recorded_at"], "2026-11-28T10:00:04.250Z");
    assert_eq!(json["command_id"], "command-4");
    assert_eq!(json["correlation_id"], "correlation-1");
    assert_eq!(json["causation_id"], "cause-1");
    assert_eq!(json["actor"], "user:rider-1");
    assert_eq!(json["data"], json!({ "driver_id": "driver-1" }));
}

#[test]
fn an_envelope_without_correlation_or_causation_still_decodes() {
    let mut original = envelope::<RideAggregate>(
        "42",
        1,
        &RideEvent::RideStarted {
            driver_id: "driver-1".into(),
        },
    );
    original.metadata.correlation_id = None;
    original.metadata.causation_id = None;
    let json = serde_json::to_value(&original).unwrap();
    let back: EventEnvelope = serde_json::from_value(json).unwrap();
    assert_eq!(back, original);
}

#[test]
fn the_partition_key_is_type_hash_id() {
    let e = envelope::<VideoAggregate>("v-7", 1, &VideoEvent::ProcessingStarted { attempt: 1 });
    assert_eq!(e.stream_key().partition_key(), "video#v-7");
    assert_eq!(
        StreamKey::parse_partition_key("video#v-7"),
        Some(StreamKey::new("video", "v-7"))
    );
    assert_eq!(StreamKey::parse_partition_key("video#"), None);
    assert_eq!(StreamKey::parse_partition_key("video"), None);
}

// Encoding and decoding events

#[test]
fn every_ride_event_survives_a_round_trip_through_a_commit_record() {
    let events = every_ride_event();
    let record = CommitRecord::new(stream::<RideAggregate>("42", &events)).unwrap();
    let bytes = encode_record(&record);
    assert!(!bytes.contains(&b'\n'), "a record is one line");
    let decoded = decode_record(&bytes).unwrap();
    assert_eq!(decoded, record);
    let back: Vec<RideEvent> = decoded
        .events
        .iter()
        .map(|e| decode_event::<RideAggregate>(e).unwrap())
        .collect();
    assert_eq!(back, events);
}

#[test]
fn every_video_event_survives_a_round_trip_through_a_commit_record() {
    let events = every_video_event();
    let record = CommitRecord::new(stream::<VideoAggregate>("v-1", &events)).unwrap();
    let decoded = decode_record(&encode_record(&record)).unwrap();
    assert_eq!(decoded, record);
    let back: Vec<VideoEvent> = decoded
        .events
        .iter()
        .map(|e| decode_event::<VideoAggregate>(e).unwrap())
        .collect();
    assert_eq!(back, events);
}

#[test]
fn an_event_is_written_as_its_type_and_its_payload_at_the_current_schema() {
    let (event_type, schema, data) =
        encode_event::<VideoAggregate>(&VideoEvent::ProcessingProgressed { percent: 50 });
    assert_eq!(event_type, "ProcessingProgressed");
    assert_eq!(schema, 2);
    assert_eq!(data, json!({ "percent": 50 }));

    let (event_type, schema, data) = encode_event::<RideAggregate>(&RideEvent::RideCancelled {
        by: CancelledBy::Rider,
        reason: "plans changed".into(),
    });
    assert_eq!(event_type, "RideCancelled");
    assert_eq!(schema, 1);
    assert_eq!(data, json!({ "by": "rider", "reason": "plans changed" }));
}

#[test]
fn a_v1_progress_event_with_a_fraction_is_upcast_to_a_percentage() {
    let old = raw_envelope(
        "video",
        "ProcessingProgressed",
        1,
        json!({ "progress": 0.5 }),
    );
    assert_eq!(
        decode_event::<VideoAggregate>(&old).unwrap(),
        VideoEvent::ProcessingProgressed { percent: 50 }
    );
    let done = raw_envelope(
        "video",
        "ProcessingProgressed",
        1,
        json!({ "progress": 1.0 }),
    );
    assert_eq!(
        decode_event::<VideoAggregate>(&done).unwrap(),
        VideoEvent::ProcessingProgressed { percent: 100 }
    );
}

/// Two events at the current schema, then a progress event at schema 1 (a fraction).
fn old_video_stream() -> Vec<EventEnvelope> {
    let mut events = stream::<VideoAggregate>("v-1", &seed_video_events()[..2]);
    let mut old = raw_envelope(
        "video",
        "ProcessingProgressed",
        1,
        json!({ "progress": 0.25 }),
    );
    old.aggregate_id = "v-1".into();
    old.version = 3;
    events.push(old);
    events
}

#[test]
fn an_old_video_stream_hydrates_through_the_upcaster() {
    let video = hydrate::<VideoAggregate>(&old_video_stream()).unwrap();
    assert_eq!(video.version, 3);
    assert_eq!(video.state.unwrap().status(), "processing:25%");
}

#[test]
fn history_shows_each_payload_at_the_current_schema_and_current_ones_as_recorded() {
    let events = old_video_stream();
    let (_, history) = timeline_core::views::fold::<VideoAggregate>(&events)
        .unwrap()
        .unwrap();
    assert_eq!(history[2].data, json!({ "percent": 25 }));
    for (entry, event) in history.iter().zip(&events).take(2) {
        assert_eq!(entry.data, event.data, "{}", event.event_type);
    }
}

#[test]
fn an_unknown_event_type_is_reported_not_dropped() {
    let unknown = raw_envelope("video", "VideoTeleported", 1, json!({ "to": "mars" }));
    match decode_event::<VideoAggregate>(&unknown) {
        Err(DecodeError::UnknownEventType {
            event_id,
            event_type,
        }) => {
            assert_eq!(event_id, "raw-1");
            assert_eq!(event_type, "VideoTeleported");
        }
        other => panic!("expected UnknownEventType, got {other:?}"),
    }
}

#[test]
fn a_schema_version_newer_than_the_code_is_reported_not_dropped() {
    let newer = raw_envelope("video", "ProcessingProgressed", 3, json!({ "pct": 50 }));
    match decode_event::<VideoAggregate>(&newer) {
        Err(DecodeError::UnknownSchemaVersion {
            event_type,
            found,
            known,
            ..
        }) => {
            assert_eq!(event_type, "ProcessingProgressed");
            assert_eq!((found, known), (3, 2));
        }
        other => panic!("expected UnknownSchemaVersion, got {other:?}"),
    }
}

/// `decode_raw` (the replay's path, from the payload's text) answers what `decode_event`
/// does, events and errors alike.
fn raw<A: Aggregate>(e: &EventEnvelope) -> Result<A::Event, DecodeError> {
    decode_raw::<A>(
        &e.event_id,
        &e.event_type,
        e.schema_version,
        &e.data.to_string(),
    )
}

#[test]
fn decoding_from_the_payload_text_agrees_with_decoding_the_envelope() {
    for e in stream::<RideAggregate>("42", &every_ride_event()) {
        assert_eq!(
            raw::<RideAggregate>(&e).unwrap(),
            decode_event::<RideAggregate>(&e).unwrap()
        );
    }
    for e in stream::<VideoAggregate>("v-1", &every_video_event()) {
        assert_eq!(
            raw::<VideoAggregate>(&e).unwrap(),
            decode_event::<VideoAggregate>(&e).unwrap()
        );
    }
    let old = raw_envelope(
        "video",
        "ProcessingProgressed",
        1,
        json!({ "progress": 0.5 }),
    );
    assert_eq!(
        raw::<VideoAggregate>(&old).unwrap(),
        VideoEvent::ProcessingProgressed { percent: 50 }
    );
    let wrong = [
        raw_envelope("video", "VideoTeleported", 1, json!({ "to": "mars" })),
        raw_envelope("video", "ProcessingProgressed", 3, json!({ "pct": 50 })),
        raw_envelope("video", "ProcessingStarted", 1, json!({})),
        raw_envelope("video", "ProcessingStarted", 1, json!({ "attempt": "one" })),
        raw_envelope("video", "ProcessingStarted", 0, json!({ "attempt": 1 })),
    ];
    for e in &wrong {
        let (fast, general) = (raw::<VideoAggregate>(e), decode_event::<VideoAggregate>(e));
        assert_eq!(
            fast.unwrap_err().to_string(),
            general.unwrap_err().to_string()
        );
    }
    // Text after the payload is not a payload.
    let e = &stream::<VideoAggregate>("v-1", &every_video_event())[1];
    let trailing = format!("{} {{}}", e.data);
    assert!(matches!(
        decode_raw::<VideoAggregate>(&e.event_id, &e.event_type, e.schema_version, &trailing),
        Err(DecodeError::BadPayload { .. })
    ));
}

#[test]
fn an_old_schema_with_no_upcaster_is_reported() {
    let ancient = raw_envelope("video", "ProcessingStarted", 0, json!({ "attempt": 1 }));
    assert!(matches!(
        decode_event::<VideoAggregate>(&ancient),
        Err(DecodeError::MissingUpcaster { from: 0, .. })
    ));
}

#[test]
fn a_known_event_with_a_malformed_payload_is_a_bad_payload_not_an_unknown_type() {
    let missing_field = raw_envelope("video", "ProcessingStarted", 1, json!({}));
    assert!(matches!(
        decode_event::<VideoAggregate>(&missing_field),
        Err(DecodeError::BadPayload { .. })
    ));
    // A value the payload's own enum does not know is still a bad payload of a known type.
    let unknown_canceller = raw_envelope(
        "ride",
        "RideCancelled",
        1,
        json!({ "by": "alien", "reason": "abducted" }),
    );
    match decode_event::<RideAggregate>(&unknown_canceller) {
        Err(DecodeError::BadPayload { event_type, .. }) => assert_eq!(event_type, "RideCancelled"),
        other => panic!("expected BadPayload, got {other:?}"),
    }
}

#[test]
fn an_event_of_another_aggregate_type_is_refused() {
    let ride_event = envelope::<RideAggregate>(
        "42",
        1,
        &RideEvent::RideStarted {
            driver_id: "driver-1".into(),
        },
    );
    match decode_event::<VideoAggregate>(&ride_event) {
        Err(DecodeError::WrongAggregate {
            expected, found, ..
        }) => {
            assert_eq!(expected, "video");
            assert_eq!(found, "ride");
        }
        other => panic!("expected WrongAggregate, got {other:?}"),
    }
}

// Commit records

#[test]
fn a_commit_record_holds_at_least_one_event() {
    assert_eq!(CommitRecord::new(vec![]), Err(CommitRecordError::Empty));
}

#[test]
fn a_commit_record_holds_events_of_one_entity_only() {
    let started = VideoEvent::ProcessingStarted { attempt: 1 };
    let events = vec![
        envelope::<VideoAggregate>("v-1", 1, &started),
        envelope::<VideoAggregate>("v-2", 2, &started),
    ];
    assert_eq!(
        CommitRecord::new(events),
        Err(CommitRecordError::MixedStreams(
            StreamKey::new("video", "v-1"),
            StreamKey::new("video", "v-2")
        ))
    );
}

#[test]
fn a_commit_record_holds_contiguous_ascending_versions() {
    let started = VideoEvent::ProcessingStarted { attempt: 1 };
    let at = |v| envelope::<VideoAggregate>("v-1", v, &started);
    assert_eq!(
        CommitRecord::new(vec![at(1), at(3)]),
        Err(CommitRecordError::NotContiguous(1, 3))
    );
    assert_eq!(
        CommitRecord::new(vec![at(2), at(1)]),
        Err(CommitRecordError::NotContiguous(2, 1))
    );
    assert_eq!(
        CommitRecord::new(vec![at(1), at(1)]),
        Err(CommitRecordError::NotContiguous(1, 1))
    );
    let record = CommitRecord::new(vec![at(4), at(5), at(6)]).unwrap();
    assert_eq!(record.first_version(), Some(4));
    assert_eq!(record.last_version(), Some(6));
    assert_eq!(record.partition_key().as_deref(), Some("video#v-1"));
}

#[test]
fn decoding_a_record_refuses_bytes_that_are_not_a_commit_record() {
    for bad in [
        &b"not json"[..],
        &b""[..],
        &b"{\"events\": "[..],
        &b"[1, 2, 3]"[..],
        &b"{\"events\": [{\"event_id\": \"x\"}]}"[..],
    ] {
        assert!(
            matches!(decode_record(bad), Err(RecordError::Json(_))),
            "{:?} should be refused as JSON",
            String::from_utf8_lossy(bad)
        );
    }
}

#[test]
fn decoding_a_record_checks_its_shape() {
    assert!(matches!(
        decode_record(br#"{"events": []}"#),
        Err(RecordError::Shape(CommitRecordError::Empty))
    ));
    let started = VideoEvent::ProcessingStarted { attempt: 1 };
    let gapped = CommitRecord {
        events: vec![
            envelope::<VideoAggregate>("v-1", 1, &started),
            envelope::<VideoAggregate>("v-1", 3, &started),
        ],
    };
    assert!(matches!(
        decode_record(&encode_record(&gapped)),
        Err(RecordError::Shape(CommitRecordError::NotContiguous(1, 3)))
    ));
}

#[test]
fn a_record_read_back_from_an_ndjson_line_decodes() {
    let record = CommitRecord::new(stream::<VideoAggregate>("v-1", &seed_video_events())).unwrap();
    let mut line = encode_record(&record);
    line.push(b'\n');
    assert_eq!(decode_record(&line).unwrap(), record);
}

// Hydration

#[test]
fn the_seed_video_reads_uploaded_processing_50_percent_then_failed_with_its_reason() {
    let events = stream::<VideoAggregate>("v-1", &seed_video_events());
    let mut current = Hydrated::default();
    let mut statuses = Vec::new();
    for event in &events {
        current = apply::<VideoAggregate>(current, [event]).unwrap();
        statuses.push(current.state.as_ref().unwrap().status());
    }
    assert_eq!(
        statuses,
        ["uploaded", "processing", "processing:50%", "failed"]
    );
    assert_eq!(current.version, 4);
    let video = current.state.unwrap();
    assert_eq!(video.failure_reason.as_deref(), Some("timeout"));

    let all_at_once = hydrate::<VideoAggregate>(&events).unwrap();
    assert_eq!(all_at_once.version, 4);
    assert_eq!(all_at_once.state.unwrap(), video);
}

#[test]
fn an_entity_with_no_events_hydrates_to_nothing_at_version_0() {
    let none = hydrate::<RideAggregate>(&[]).unwrap();
    assert_eq!(none.version, 0);
    assert_eq!(none.state, None);
}

#[test]
fn a_gap_in_versions_is_incomplete_history() {
    let events = stream::<VideoAggregate>("v-1", &seed_video_events());
    let gapped = [events[0].clone(), events[2].clone()];
    match hydrate::<VideoAggregate>(&gapped) {
        Err(HydrateError::Gap { expected, found }) => assert_eq!((expected, found), (2, 3)),
        other => panic!("expected a gap, got {other:?}"),
    }
}

#[test]
fn a_repeated_version_is_incomplete_history() {
    let events = stream::<VideoAggregate>("v-1", &seed_video_events());
    let repeated = [events[0].clone(), events[0].clone()];
    match hydrate::<VideoAggregate>(&repeated) {
        Err(HydrateError::Gap { expected, found }) => assert_eq!((expected, found), (2, 1)),
        other => panic!("expected a gap, got {other:?}"),
    }
}

#[test]
fn a_stream_that_does_not_start_at_version_1_is_incomplete_history() {
    let events = stream::<VideoAggregate>("v-1", &seed_video_events());
    assert!(matches!(
        hydrate::<VideoAggregate>(&events[1..]),
        Err(HydrateError::Gap {
            expected: 1,
            found: 2
        })
    ));
}

#[test]
fn applying_events_continues_from_the_hydrated_version() {
    let events = stream::<VideoAggregate>("v-1", &seed_video_events());
    let first_two = hydrate::<VideoAggregate>(&events[..2]).unwrap();
    assert!(matches!(
        apply::<VideoAggregate>(first_two.clone(), &events[3..]),
        Err(HydrateError::Gap {
            expected: 3,
            found: 4
        })
    ));
    let all = apply::<VideoAggregate>(first_two, &events[2..]).unwrap();
    assert_eq!(all.version, 4);
}

#[test]
fn events_of_another_entity_are_refused() {
    let events = stream::<VideoAggregate>("v-1", &seed_video_events());
    let mut intruder = events[1].clone();
    intruder.aggregate_id = "v-2".into();
    let mixed = [events[0].clone(), intruder];
    match hydrate::<VideoAggregate>(&mixed) {
        Err(HydrateError::WrongStream {
            event_id,
            expected,
            found,
        }) => {
            assert_eq!(event_id, "video-v-1-2");
            assert_eq!(expected, "video#v-1");
            assert_eq!(found, "video#v-2");
        }
        other => panic!("expected WrongStream, got {other:?}"),
    }
}

#[test]
fn hydration_reports_an_event_it_cannot_decode_instead_of_skipping_it() {
    let mut events = stream::<VideoAggregate>("v-1", &seed_video_events()[..2]);
    let mut unknown = raw_envelope("video", "VideoTeleported", 1, json!({}));
    unknown.aggregate_id = "v-1".into();
    unknown.version = 3;
    events.push(unknown);
    assert!(matches!(
        hydrate::<VideoAggregate>(&events),
        Err(HydrateError::Decode(DecodeError::UnknownEventType { .. }))
    ));
}

#[test]
fn a_ride_stream_hydrates_to_its_final_state() {
    let mut events = every_ride_event();
    events.pop(); // a completed ride is not also cancelled
    let ride = hydrate::<RideAggregate>(&stream::<RideAggregate>("42", &events)).unwrap();
    assert_eq!(ride.version, 8);
    let ride = ride.state.unwrap();
    assert_eq!(ride.driver_id.as_deref(), Some("driver-2"));
    assert_eq!(ride.dropoff.address, "Aéroport CDG, Terminal 2");
    assert_eq!(ride.fare_cents, Some(11500));
    assert_eq!(ride.distance_km, Some(31.2));
}
