//! In-process cost of one command, side by side with a baseline, in one run:
//! - baseline: parse the JSON body and write the response JSON (the floor any handler pays);
//! - decode + decide + encode: the domain work of one command on a hydrated state;
//! - whole handler: API Gateway event -> routing, validation, decide, envelope, commit and
//!   publish on in-memory ports -> response (no network).
//!
//! Run: `cargo bench -p command-handler --bench command`. Figures are ns per command on
//! this machine; compare the columns, not absolute numbers across machines.

use command_handler::CommandApi;
use serde_json::{json, Value};
use std::hint::black_box;
use std::time::{Duration, Instant};
use timeline_core::codec::encode_event;
use timeline_core::ports::SystemClock;
use timeline_core::ride::{RideAggregate, RideCommand};
use timeline_core::Aggregate;
use timeline_engine::memory::{MemoryLog, MemoryStore};
use timeline_http::apigw::{self, ProxyRequest};

fn measure(name: &str, mut f: impl FnMut(u64)) -> f64 {
    // Warm up, then run for about a second.
    for i in 0..2_000 {
        f(i);
    }
    let budget = Duration::from_secs(1);
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < budget {
        for _ in 0..500 {
            f(n);
            n += 1;
        }
    }
    let per = start.elapsed().as_nanos() as f64 / n as f64;
    println!("{name:<44} {per:>10.0} ns/command  ({n} runs)");
    per
}

fn main() {
    let body = json!({ "fare_cents": 10_500, "reason": "detour around roadworks" });
    let body_text = body.to_string();
    let booking = json!({
        "rider_id": "rider-1",
        "pickup": { "address": "1 Main St", "lat": 52.52, "lon": 13.40 },
        "dropoff": { "address": "9 Oak Ave", "lat": 52.50, "lon": 13.45 },
        "fare_estimate_cents": 9000
    });

    println!("one AdjustFare command, {} byte body", body_text.len());
    let baseline = measure("baseline: JSON parse + response JSON", |_| {
        let v: Value = serde_json::from_str(black_box(&body_text)).unwrap();
        black_box(serde_json::to_string(&v).unwrap());
    });

    let state = RideAggregate::evolve(
        None,
        &timeline_core::ride::RideEvent::RideBooked {
            rider_id: "rider-1".into(),
            pickup: serde_json::from_value(booking["pickup"].clone()).unwrap(),
            dropoff: serde_json::from_value(booking["dropoff"].clone()).unwrap(),
            fare_estimate_cents: Some(9000),
        },
    );
    let domain = measure("decode + decide + encode (pure core)", |_| {
        let mut v: serde_json::Map<String, Value> =
            serde_json::from_str(black_box(&body_text)).unwrap();
        v.insert("command".into(), "adjust_fare".into());
        let command: RideCommand = serde_json::from_value(Value::Object(v)).unwrap();
        let events = RideAggregate::decide(&state, command).unwrap();
        let encoded: Vec<_> = events.iter().map(encode_event::<RideAggregate>).collect();
        black_box(serde_json::to_string(&encoded[0].2).unwrap());
    });

    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let api = CommandApi::new(MemoryStore::default(), MemoryLog::default(), SystemClock);
    // Many rides, one command each after booking, so heads stay small as in production.
    let rides = 5_000u64;
    runtime.block_on(async {
        for i in 0..rides {
            let mut b = booking.clone();
            b["id"] = json!(format!("r{i}"));
            let text = b.to_string();
            let req = proxy("POST", "/rides", &text);
            assert_eq!(api.handle(req).await.status(), 201);
        }
    });
    let mut fare = 10_000u64;
    let handler = measure("whole handler on in-memory ports", |i| {
        fare += 1;
        let path = format!("/rides/r{}/adjust-fare", i % rides);
        let text = json!({ "fare_cents": fare, "reason": "detour around roadworks" }).to_string();
        let response = runtime.block_on(api.handle(proxy("POST", &path, &text)));
        assert_eq!(response.status(), 200);
    });

    println!();
    println!(
        "ratio to baseline: decide path {:.1}x, whole handler {:.1}x",
        domain / baseline,
        handler / baseline
    );
}

fn proxy(method: &str, path: &str, body: &str) -> lambda_http::Request {
    apigw::request(&ProxyRequest {
        method,
        path,
        query: None,
        headers: &[("content-type", "application/json")],
        body: Some(body),
        request_id: "bench",
        stage: "bench",
        caller: Some(&timeline_core::access::Caller::user(
            "bench-user",
            [timeline_core::access::Role::Operator],
        )),
    })
    .unwrap()
}
