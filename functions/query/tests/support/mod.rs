//! Seeding read models in moto the way the processor writes them: envelopes folded with
//! the same projection, written through `ReadModelStore::write`.

#![allow(dead_code)]

use query::QueryApi;
use serde_json::Value;
use timeline_aws::read_models::DynamoReadModels;
use timeline_aws::resources::{create_table, read_model_table};
use timeline_core::codec::encode_event;
use timeline_core::ports::{ReadModelStore, ViewWrite};
use timeline_core::ride::{Location, RideAggregate, RideEvent};
use timeline_core::video::{VideoAggregate, VideoEvent};
use timeline_core::views::{fold, ReadModel, View};
use timeline_core::Aggregate;
use timeline_core::EventEnvelope;
use timeline_core::Metadata;
use timeline_core::Timestamp;
use timeline_testkit::{api_request, read, TestEnv};

pub type Api = QueryApi<DynamoReadModels>;

/// A fresh environment with its read-model table (created by the same spec the bootstrap
/// and `template.yaml` use; an existing table is left as it is). None without an emulator.
pub async fn env() -> Option<(TestEnv, Api)> {
    let env = TestEnv::try_new().await?;
    create_table(
        env.clients.dynamodb(),
        &env.names.read_model_table,
        &read_model_table(),
    )
    .await
    .expect("create the read-model table");
    let api = QueryApi::new(read_models(&env));
    Some((env, api))
}

pub fn read_models(env: &TestEnv) -> DynamoReadModels {
    DynamoReadModels::new(env.clients.dynamodb().clone(), &env.names.read_model_table)
}

/// `2025-11-28T<hh:mm:ss>Z`.
pub fn at(time: &str) -> Timestamp {
    format!("2025-11-28T{time}Z")
        .parse()
        .expect("a time of day")
}

pub fn envelope<A: Aggregate>(
    id: &str,
    version: u64,
    time: &str,
    event: &A::Event,
) -> EventEnvelope {
    let (event_type, schema_version, data) = encode_event::<A>(event);
    EventEnvelope {
        event_id: format!("{}-{id}-{version}", A::TYPE),
        aggregate_type: A::TYPE.to_owned(),
        aggregate_id: id.to_owned(),
        version,
        event_type,
        schema_version,
        occurred_at: at(time),
        recorded_at: at(time).plus_millis(5),
        metadata: Metadata {
            command_id: format!("cmd-{id}-{version}"),
            correlation_id: None,
            causation_id: None,
            actor: "seed-user".to_owned(),
        },
        data,
    }
}

/// Writes the view and history of `id` after these events (at these times of day), as one
/// processor batch would, and returns the view as JSON.
pub async fn seed<A: ReadModel>(
    models: &DynamoReadModels,
    id: &str,
    events: &[(&str, A::Event)],
) -> Value {
    let envelopes: Vec<EventEnvelope> = events
        .iter()
        .enumerate()
        .map(|(i, (time, event))| envelope::<A>(id, i as u64 + 1, time, event))
        .collect();
    let (view, history): (View<A::State>, _) = fold::<A>(&envelopes)
        .expect("the seed folds")
        .expect("at least one event");
    let json = serde_json::to_value(&view).expect("views serialize");
    let status_family = A::status_family(&view.status);
    models
        .write(ViewWrite {
            key: view.key(),
            expected_version: 0,
            version: view.version,
            view: json.clone(),
            status_family,
            lookups: A::lookups(&view.state),
            created_at: view.created_at,
            updated_at: view.updated_at,
            history,
        })
        .await
        .expect("write the read model");
    json
}

fn place(address: &str, lat: f64) -> Location {
    Location {
        address: address.to_owned(),
        lat,
        lon: 13.4,
    }
}

pub fn booked(rider: &str, fare: i64) -> RideEvent {
    RideEvent::RideBooked {
        rider_id: rider.to_owned(),
        pickup: place("1 Main St", 52.52),
        dropoff: place("9 Oak Ave", 52.50),
        fare_estimate_cents: Some(fare),
    }
}

pub fn assigned(driver: &str) -> RideEvent {
    RideEvent::DriverAssigned {
        driver_id: driver.to_owned(),
        previous_driver_id: None,
    }
}

pub fn started(driver: &str) -> RideEvent {
    RideEvent::RideStarted {
        driver_id: driver.to_owned(),
    }
}

pub fn fare(from: i64, to: i64) -> RideEvent {
    RideEvent::FareAdjusted {
        from_cents: Some(from),
        to_cents: to,
        reason: "traffic".to_owned(),
    }
}

pub async fn ride(models: &DynamoReadModels, id: &str, events: &[(&str, RideEvent)]) -> Value {
    seed::<RideAggregate>(models, id, events).await
}

pub async fn video(models: &DynamoReadModels, id: &str, events: &[(&str, VideoEvent)]) -> Value {
    seed::<VideoAggregate>(models, id, events).await
}

/// The seed ride: booked at 10:00 (fare 80), driver at 10:00:30, then the fare goes
/// 90 -> 100 -> 110 at 10:01, 10:02, 10:03.
pub async fn seed_ride(models: &DynamoReadModels, id: &str) -> Value {
    ride(
        models,
        id,
        &[
            ("10:00:00", booked("rider-seed", 8000)),
            ("10:00:30", assigned("driver-seed")),
            ("10:01:00", fare(8000, 9000)),
            ("10:02:00", fare(9000, 10000)),
            ("10:03:00", fare(10000, 11000)),
        ],
    )
    .await
}

/// The seed video: uploaded, processing, processing:50%, failed ("timeout").
pub async fn seed_video(models: &DynamoReadModels, id: &str) -> Value {
    video(
        models,
        id,
        &[
            (
                "09:00:00",
                VideoEvent::VideoUploaded {
                    title: "Holiday".to_owned(),
                    source_uri: "s3://in/holiday.mp4".to_owned(),
                    uploaded_by: None,
                },
            ),
            ("09:01:00", VideoEvent::ProcessingStarted { attempt: 1 }),
            ("09:02:00", VideoEvent::ProcessingProgressed { percent: 50 }),
            (
                "09:03:00",
                VideoEvent::ProcessingFailed {
                    error: "timeout".to_owned(),
                },
            ),
        ],
    )
    .await
}

/// `GET path` through the handler: status, JSON body, headers.
pub async fn get(api: &Api, path: &str) -> (u16, Value, lambda_http::http::HeaderMap) {
    call(api, "GET", path).await
}

pub async fn call(
    api: &Api,
    method: &str,
    path: &str,
) -> (u16, Value, lambda_http::http::HeaderMap) {
    read(api.handle(api_request(method, path, &[], None)).await)
}

/// The ids of the views in a list page.
pub fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|v| v["aggregate_id"].as_str().expect("an id").to_owned())
        .collect()
}

/// Asserts a problem+json answer with this status and code.
#[track_caller]
pub fn assert_problem(
    answer: &(u16, Value, lambda_http::http::HeaderMap),
    status: u16,
    code: &str,
) {
    let (got, body, headers) = answer;
    assert_eq!(*got, status, "{body}");
    assert_eq!(body["code"], code, "{body}");
    assert_eq!(body["status"], status, "{body}");
    assert_eq!(
        body["type"],
        format!("urn:problem:timeline:{code}"),
        "{body}"
    );
    assert_eq!(
        headers["content-type"], "application/problem+json",
        "errors are problem+json"
    );
}
