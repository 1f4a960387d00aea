//! Integration events through EventBridge on moto: commands through the real handler, the
//! stream read back, the distributor putting their integration events on a custom bus, and a
//! rule delivering `ride.completed` to an SQS queue as a billing consumer would read it. Each
//! event fits its JSON Schema; a bus that refuses entries loses nothing.

use serde_json::{json, Value};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use timeline_aws::event_bus::EventBridgeBus;
use timeline_core::integration::IntegrationEvent;
use timeline_core::ports::SystemClock;
use timeline_engine::distribute::{Distributor, EventBus};
use timeline_engine::projection::IncomingRecord;
use timeline_testkit::{post, read, unique, TestEnv};

fn place(a: &str) -> Value {
    json!({ "address": a, "lat": 53.34, "lon": -6.25 })
}

/// A bus that refuses each entry the first time it sees it (without putting it), as
/// `PutEvents` refuses entries of a call under throttling.
#[derive(Clone)]
struct RefusesFirst<B> {
    inner: B,
    seen: Arc<Mutex<BTreeSet<String>>>,
}

impl<B: EventBus> EventBus for RefusesFirst<B> {
    async fn put(&self, entries: &[IntegrationEvent]) -> Result<Vec<Result<(), String>>, String> {
        let (mut first, mut again) = (Vec::new(), Vec::new());
        {
            let mut seen = self.seen.lock().unwrap();
            for (i, e) in entries.iter().enumerate() {
                if seen.insert(e.id().to_owned()) {
                    first.push(i);
                } else {
                    again.push(i);
                }
            }
        }
        let put: Vec<IntegrationEvent> = again.iter().map(|&i| entries[i].clone()).collect();
        let answers = if put.is_empty() {
            vec![]
        } else {
            self.inner.put(&put).await?
        };
        let mut out: Vec<Result<(), String>> =
            vec![Err("ThrottlingException".into()); entries.len()];
        for (&i, answer) in again.iter().zip(answers) {
            out[i] = answer;
        }
        Ok(out)
    }
}

/// A bus, a queue for `ride.completed` (billing) and one for every ride event, and their rules.
async fn bus_with_queues(env: &TestEnv) -> (String, aws_sdk_sqs::Client, String, String) {
    let sdk = timeline_aws::config::load_sdk_config().await;
    let sqs = aws_sdk_sqs::Client::new(&sdk);
    let events = env.clients.eventbridge();
    let bus = unique("integration");
    events.create_event_bus().name(&bus).send().await.unwrap();
    let mut urls = Vec::new();
    for (name, pattern) in [
        (
            "billing",
            json!({ "source": ["timeline.rides"], "detail-type": ["ride.completed"] }),
        ),
        ("rides", json!({ "source": ["timeline.rides"] })),
    ] {
        let queue = unique(name);
        let url = sqs
            .create_queue()
            .queue_name(&queue)
            .send()
            .await
            .unwrap()
            .queue_url
            .unwrap();
        let arn = format!("arn:aws:sqs:us-east-1:123456789012:{queue}");
        events
            .put_rule()
            .event_bus_name(&bus)
            .name(&queue)
            .event_pattern(pattern.to_string())
            .send()
            .await
            .unwrap();
        events
            .put_targets()
            .event_bus_name(&bus)
            .rule(&queue)
            .targets(
                aws_sdk_eventbridge::types::Target::builder()
                    .id("queue")
                    .arn(arn)
                    .build()
                    .unwrap(),
            )
            .send()
            .await
            .unwrap();
        urls.push(url);
    }
    (bus, sqs, urls.remove(0), urls.remove(0))
}

/// Every message of a queue, as the EventBridge events they carry.
async fn drain(sqs: &aws_sdk_sqs::Client, url: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let page = sqs
            .receive_message()
            .queue_url(url)
            .max_number_of_messages(10)
            .wait_time_seconds(0)
            .send()
            .await
            .unwrap();
        let messages = page.messages.unwrap_or_default();
        if messages.is_empty() {
            return out;
        }
        for m in messages {
            out.push(serde_json::from_str(m.body().unwrap()).unwrap());
            sqs.delete_message()
                .queue_url(url)
                .receipt_handle(m.receipt_handle().unwrap())
                .send()
                .await
                .unwrap();
        }
    }
}

fn schema(detail_type: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(format!(
        "../../shared/core/schemas/integration/{detail_type}.v1.json"
    ));
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completed_ride_reaches_billing_through_the_bus_in_order_and_fits_its_schema() {
    let env = timeline_testkit::test_env!();
    let (bus, sqs, billing, rides) = bus_with_queues(&env).await;
    assert_eq!(book_assign_and_complete(&env).await, 2);
    let records: Vec<IncomingRecord> = env
        .records()
        .await
        .iter()
        .map(|r| IncomingRecord {
            sequence_number: r.sequence_number.clone(),
            partition_key: r.partition_key.clone(),
            data: r.data.clone(),
            shard_id: Some(r.shard_id.clone()),
            arrival: None,
        })
        .collect();
    let flaky = RefusesFirst {
        inner: EventBridgeBus::new(env.clients.eventbridge().clone(), &bus),
        seen: Arc::default(),
    };
    let distributor = Distributor::new(flaky).with_retries(3, Duration::from_millis(5));
    let out = distributor.distribute(&records).await;
    assert_eq!(out.first_failure, None, "{out:?}");
    assert!(out.retried > 0, "every entry was refused once and retried");

    let completed = drain(&sqs, &billing).await;
    let ids: BTreeSet<&str> = completed
        .iter()
        .map(|m| m["detail"]["entity"]["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, BTreeSet::from(["bill-a", "bill-b"]));
    for message in &completed {
        assert_eq!(message["detail-type"], "ride.completed");
        assert_eq!(message["source"], "timeline.rides");
        let mut errors = Vec::new();
        timeline_testkit::openapi::check(
            &json!({}),
            &schema("ride.completed"),
            &message["detail"],
            "detail",
            &mut errors,
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(message["detail"]["data"]["final_fare_cents"], 2500);
    }
    // Every ride fact, once each (nothing refused was lost), each ride's in version order.
    let all = drain(&sqs, &rides).await;
    let mut per_ride: BTreeMap<String, Vec<(u64, String)>> = BTreeMap::new();
    for m in &all {
        let d = &m["detail"];
        per_ride
            .entry(d["entity"]["id"].as_str().unwrap().to_owned())
            .or_default()
            .push((
                d["entity"]["version"].as_u64().unwrap(),
                d["type"].as_str().unwrap().to_owned(),
            ));
    }
    for (ride, facts) in per_ride {
        let types: Vec<&str> = facts.iter().map(|(_, t)| t.as_str()).collect();
        assert_eq!(
            types,
            ["ride.booked", "ride.driver-assigned", "ride.completed"],
            "{ride}"
        );
        assert!(
            facts.windows(2).all(|w| w[0].0 < w[1].0),
            "{ride}: {facts:?}"
        );
    }
}

/// Books, assigns, starts and completes two rides through the real command handler (the
/// start is internal: not published). Answers how many rides it ran.
async fn book_assign_and_complete(env: &TestEnv) -> usize {
    let api = command_handler::CommandApi::new(env.store(), env.log(), SystemClock);
    let mut ran = 0;
    for id in ["bill-a", "bill-b"] {
        for (path, body) in [
            (
                "/rides".to_owned(),
                json!({ "id": id, "rider_id": "rider-1", "pickup": place("A"), "dropoff": place("B") }),
            ),
            (
                format!("/rides/{id}/assign-driver"),
                json!({ "driver_id": "driver-1" }),
            ),
            (format!("/rides/{id}/start"), json!({})),
            (
                format!("/rides/{id}/complete"),
                json!({ "final_fare_cents": 2500, "distance_km": 5.5 }),
            ),
        ] {
            let (status, answer, _) = read(api.handle(post(&path, &body, &[])).await);
            assert!(status == 200 || status == 201, "{path}: {status} {answer}");
        }
        ran += 1;
    }
    ran
}
