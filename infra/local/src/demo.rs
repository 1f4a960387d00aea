//! The guided demo: plays a short story against a running API over HTTP and prints what
//! happened, the views, a history and a state at an earlier time.

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{json, Value};
use std::time::Duration;

pub struct Http {
    base: String,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    tokens: Option<Tokens>,
}

/// The bearer tokens a client sends: the video pipeline's on its routes, the other one
/// everywhere else.
#[derive(Clone)]
pub struct Tokens {
    pub user: String,
    pub pipeline: String,
}

impl Tokens {
    /// An operator's and the pipeline's, from the local issuer, valid for a day.
    pub fn demo(issuer: &crate::auth::Issuer) -> anyhow::Result<Tokens> {
        Ok(Tokens {
            user: issuer.mint(&crate::auth::operator(), 86_400)?,
            pipeline: issuer.mint(&crate::auth::pipeline(), 86_400)?,
        })
    }

    fn for_path(&self, path: &str) -> &str {
        if timeline_core::registry::service_route(path.split('?').next().unwrap_or(path)) {
            &self.pipeline
        } else {
            &self.user
        }
    }
}

impl Http {
    /// A client that sends no token (the API answers it 401).
    pub fn new(base: impl Into<String>) -> Self {
        Http {
            base: base.into(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            tokens: None,
        }
    }

    /// A client that signs its requests with `tokens`.
    pub fn signed(base: impl Into<String>, tokens: Tokens) -> Self {
        Http {
            tokens: Some(tokens),
            ..Http::new(base)
        }
    }

    pub async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> anyhow::Result<(u16, Value)> {
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(format!("{}{}", self.base, path));
        let explicit = headers
            .iter()
            .any(|(k, _)| k.eq_ignore_ascii_case("authorization"));
        if let (Some(tokens), false) = (&self.tokens, explicit) {
            req = req.header("authorization", format!("Bearer {}", tokens.for_path(path)));
        }
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let body = match body {
            Some(b) => {
                req = req.header("content-type", "application/json");
                Full::new(Bytes::from(b.to_string()))
            }
            None => Full::new(Bytes::new()),
        };
        let response = self.client.request(req.body(body)?).await?;
        let status = response.status().as_u16();
        let bytes = response.into_body().collect().await?.to_bytes();
        let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Ok((status, value))
    }

    pub async fn post(&self, path: &str, body: Value) -> anyhow::Result<(u16, Value)> {
        self.call("POST", path, Some(&body), &[]).await
    }

    pub async fn get(&self, path: &str) -> anyhow::Result<(u16, Value)> {
        self.call("GET", path, None, &[]).await
    }
}

fn place(address: &str, lat: f64, lon: f64) -> Value {
    json!({ "address": address, "lat": lat, "lon": lon })
}

/// What the demo saw, for tests.
#[derive(Debug, Default)]
pub struct DemoOutcome {
    pub steps: usize,
    pub ride_view: Value,
    pub ride_history: Value,
    pub video_timeline: Value,
    pub fare_earlier: Value,
}

/// Plays the story, printing as it goes; ids are suffixed so the demo can run again.
pub async fn run(
    http: &Http,
    suffix: &str,
    mut print: impl FnMut(String),
) -> anyhow::Result<DemoOutcome> {
    let ride = format!("ride-{suffix}");
    let other = format!("ride-{suffix}-b");
    let video = format!("video-{suffix}");
    let mut outcome = DemoOutcome::default();
    async fn step(
        http: &Http,
        path: &str,
        body: Value,
        what: &str,
    ) -> anyhow::Result<(u16, Value)> {
        let (status, answer) = http.post(path, body).await?;
        anyhow::ensure!(status < 300, "{what}: HTTP {status} {answer}");
        Ok((status, answer))
    }
    print("Commands go in (POST), events land on the timeline:".into());
    let story: Vec<(String, Value, &'static str)> = vec![
        (
            "/rides".into(),
            json!({ "id": ride, "rider_id": "rider-42", "pickup": place("Trinity College, Dublin", 53.3438, -6.2546), "dropoff": place("Dublin Airport", 53.4264, -6.2499), "fare_estimate_cents": 9000 }),
            "book a ride",
        ),
        (
            format!("/rides/{ride}/assign-driver"),
            json!({ "driver_id": "driver-7" }),
            "assign a driver",
        ),
        (format!("/rides/{ride}/start"), json!({}), "start the ride"),
        (
            format!("/rides/{ride}/change-destination"),
            json!({ "dropoff": place("Dublin Port", 53.3478, -6.1960) }),
            "change the destination",
        ),
        (
            format!("/rides/{ride}/adjust-fare"),
            json!({ "fare_cents": 10000, "reason": "detour" }),
            "adjust the fare to 100.00",
        ),
        (
            format!("/rides/{ride}/adjust-fare"),
            json!({ "fare_cents": 11000, "reason": "port tunnel toll" }),
            "adjust the fare to 110.00",
        ),
        (
            format!("/rides/{ride}/complete"),
            json!({ "final_fare_cents": 11000, "distance_km": 9.4 }),
            "complete the ride",
        ),
        (
            "/rides".into(),
            json!({ "id": other, "rider_id": "rider-42", "pickup": place("Grafton St", 53.3415, -6.2600), "dropoff": place("Howth", 53.3786, -6.0576) }),
            "book another ride",
        ),
        (
            format!("/rides/{other}/cancel"),
            json!({ "by": "rider", "reason": "plans changed" }),
            "cancel it",
        ),
        (
            "/videos".into(),
            json!({ "id": video, "title": "Keynote", "source_uri": "s3://uploads/keynote.mp4" }),
            "upload a video",
        ),
        (
            format!("/videos/{video}/start-processing"),
            json!({}),
            "start processing",
        ),
        (
            format!("/videos/{video}/progress"),
            json!({ "percent": 50 }),
            "report 50%",
        ),
        (
            format!("/videos/{video}/fail"),
            json!({ "error": "timeout" }),
            "fail with a timeout",
        ),
    ];
    let mut fare_at = None;
    for (path, body, what) in story {
        let (status, answer) = step(http, &path, body, what).await?;
        let event = &answer["events"][0];
        print(format!(
            "  {what:<26} POST {path:<40} {status}  v{} {}",
            answer["version"],
            event["type"].as_str().unwrap_or("")
        ));
        if what == "adjust the fare to 100.00" {
            fare_at = event["occurred_at"].as_str().map(str::to_owned);
        }
        outcome.steps += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    print("\nThe read side catches up (processor through the event source mapping):".into());
    let mut view = Value::Null;
    for _ in 0..100 {
        let (status, v) = http.get(&format!("/rides/{ride}")).await?;
        if status == 200 && v["version"] == 7 {
            view = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::ensure!(!view.is_null(), "the ride's view never reached version 7");
    print(format!(
        "  GET /rides/{ride}: status {}, driver {}, fare {}, version {}",
        view["status"], view["state"]["driver_id"], view["state"]["fare_cents"], view["version"]
    ));
    let (_, rides) = http.get("/rides?rider_id=rider-42").await?;
    print(format!(
        "  GET /rides?rider_id=rider-42: {} rides",
        rides["items"].as_array().map_or(0, Vec::len)
    ));
    let (_, history) = http.get(&format!("/rides/{ride}/history")).await?;
    print(format!("\nHistory of {ride} (audit trail):"));
    for entry in history["items"].as_array().into_iter().flatten() {
        print(format!(
            "  {} v{} {:<20} -> {}",
            entry["occurred_at"].as_str().unwrap_or(""),
            entry["version"],
            entry["type"].as_str().unwrap_or(""),
            entry["status_after"].as_str().unwrap_or("")
        ));
    }

    print("\nTime travel (from the log itself: archive + stream):".into());
    let (_, timeline) = http.get(&format!("/videos/{video}/timeline")).await?;
    let statuses: Vec<String> = timeline["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| match s["reason"].as_str() {
            Some(r) => format!("{} ({r})", s["status_after"].as_str().unwrap_or("")),
            None => s["status_after"].as_str().unwrap_or("").to_owned(),
        })
        .collect();
    print(format!("  video {video}: {}", statuses.join(" -> ")));
    let fare_at = fare_at.unwrap_or_default();
    let (_, earlier) = http
        .get(&format!("/rides/{ride}/state?as_of={fare_at}"))
        .await?;
    print(format!(
        "  ride {ride} as of {fare_at}: status {}, fare {}",
        earlier["view"]["status"], earlier["view"]["state"]["fare_cents"]
    ));
    outcome.ride_view = view;
    outcome.ride_history = history;
    outcome.video_timeline = timeline;
    outcome.fare_earlier = earlier;
    Ok(outcome)
}
