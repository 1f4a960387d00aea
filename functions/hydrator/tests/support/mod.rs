//! The world the hydrator tests share: commands through the real command handler, the
//! stream pumped into S3 in Firehose's layout, the read models filled by the real processor.

#![allow(dead_code)]

use command_handler::CommandApi;
use hydrator::wiring::AwsStored;
use hydrator::{Hydrator, HydratorRequest};
use processor::ProcessorHandler;
use serde_json::{json, Value};
use timeline_aws::archive::S3Archive;
use timeline_aws::event_source::AwsEventSource;
use timeline_aws::pump::{FirehosePump, PumpConfig};
use timeline_aws::read_models::DynamoReadModels;
use timeline_core::ports::SystemClock;
use timeline_core::time::Deadline;
use timeline_core::EventEnvelope;
use timeline_core::StreamKey;
use timeline_core::Timestamp;
use timeline_testkit::{kinesis_event, post, read, TestEnv};

pub const PREFIX: &str = "events/";

pub struct World {
    pub env: TestEnv,
    pub events: Vec<EventEnvelope>,
}

pub type Target = Box<dyn Fn(Option<&str>) -> DynamoReadModels + Send + Sync>;

pub fn location(address: &str, lat: f64) -> Value {
    json!({ "address": address, "lat": lat, "lon": -6.26 })
}

/// The processor fills the read models from every record on the stream now (the hydrator's
/// index of when events happened and where their records are).
pub async fn project(env: &TestEnv) {
    let h = ProcessorHandler::new(env.read_models(), SystemClock);
    let records = env.records().await;
    let response = h
        .handle(kinesis_event(
            &records,
            "arn:aws:kinesis:us-east-1:000000000000:stream/t",
        ))
        .await;
    assert!(response.batch_item_failures.is_empty());
}

/// None without an emulator.
pub async fn world() -> Option<World> {
    Some(World::build(TestEnv::try_new().await?).await)
}

/// The commands every world runs: three fare adjustments, the seed video failing with a
/// timeout, six rides assigned (half of them started).
pub fn steps() -> Vec<(String, Value)> {
    let mut steps = vec![
        (
            "/rides".to_owned(),
            json!({ "id": "fare", "rider_id": "alice", "pickup": location("A", 53.34), "dropoff": location("B", 53.42), "fare_estimate_cents": 9000 }),
        ),
        (
            "/rides/fare/adjust-fare".into(),
            json!({ "fare_cents": 10000, "reason": "detour" }),
        ),
        (
            "/rides/fare/adjust-fare".into(),
            json!({ "fare_cents": 11000, "reason": "toll" }),
        ),
        (
            "/videos".into(),
            json!({ "id": "seed", "title": "Keynote", "source_uri": "s3://in/k.mp4" }),
        ),
        ("/videos/seed/start-processing".into(), json!({})),
        ("/videos/seed/progress".into(), json!({ "percent": 50 })),
        ("/videos/seed/fail".into(), json!({ "error": "timeout" })),
    ];
    for i in 0..6 {
        steps.push(("/rides".into(), json!({ "id": format!("r{i}"), "rider_id": format!("rider-{i}"), "pickup": location("C", 53.3), "dropoff": location("D", 53.4) })));
        steps.push((
            format!("/rides/r{i}/assign-driver"),
            json!({ "driver_id": "d1" }),
        ));
        if i % 2 == 0 {
            steps.push((format!("/rides/r{i}/start"), json!({})));
        }
    }
    steps
}

impl World {
    /// Runs [`steps`] through the command handler on `env`, archives the stream in small
    /// gzip objects and projects it into the read models.
    pub async fn build(env: TestEnv) -> World {
        let api = CommandApi::new(env.store(), env.log(), SystemClock);
        for (path, body) in steps() {
            let (status, answer, _) = read(api.handle(post(&path, &body, &[])).await);
            assert!(status == 200 || status == 201, "{path}: {status} {answer}");
            // Distinct times, so "as of" probes land between steps.
            tokio::time::sleep(std::time::Duration::from_millis(3)).await;
        }
        // Firehose: small buffers, so the archive has several gzip objects.
        let mut config = PumpConfig::new("timeline-archive");
        config.buffer_bytes = 1500;
        let mut pump = FirehosePump::with_bucket(
            env.clients.kinesis().clone(),
            env.clients.s3().clone(),
            &env.names.event_stream,
            &env.names.archive_bucket,
            config,
        );
        pump.poll().await.unwrap();
        pump.flush().await.unwrap();
        project(&env).await;
        let events = env.events().await;
        World { env, events }
    }
}

/// The event source of `env`'s archive (under `prefix`) and `stream`, with its index and heads.
pub fn source_for(env: &TestEnv, stream: &str, prefix: &str) -> AwsEventSource {
    timeline_aws::event_source::aws_event_source(
        S3Archive::new(env.clients.s3().clone(), &env.names.archive_bucket, prefix),
        env.clients.kinesis().clone(),
        stream,
        Some(env.read_models()),
        Some(env.store()),
    )
}

/// A hydrator over `source` that rebuilds into `env`'s read-model table (or another one).
pub fn hydrator_for(
    env: &TestEnv,
    source: AwsEventSource,
) -> Hydrator<AwsEventSource, AwsStored, Target> {
    let dynamodb = env.clients.dynamodb().clone();
    let live = env.names.read_model_table.clone();
    let target: Target =
        Box::new(move |t| DynamoReadModels::new(dynamodb.clone(), t.unwrap_or(&live)));
    let stored = AwsStored {
        heads: env.store(),
        views: env.read_models(),
    };
    Hydrator::new(source, stored, target)
}

impl World {
    pub fn source(&self, stream: &str, prefix: &str) -> AwsEventSource {
        source_for(&self.env, stream, prefix)
    }

    pub fn hydrator(&self, source: AwsEventSource) -> Hydrator<AwsEventSource, AwsStored, Target> {
        hydrator_for(&self.env, source)
    }

    pub fn full(&self) -> Hydrator<AwsEventSource, AwsStored, Target> {
        self.hydrator(self.source(&self.env.names.event_stream, PREFIX))
    }

    pub fn entities(&self) -> Vec<StreamKey> {
        let mut keys: Vec<StreamKey> = self.events.iter().map(|e| e.stream_key()).collect();
        keys.sort();
        keys.dedup();
        keys
    }
}

impl World {
    pub async fn archive_objects(&self) -> Vec<String> {
        S3Archive::new(
            self.env.clients.s3().clone(),
            &self.env.names.archive_bucket,
            PREFIX,
        )
        .list_keys(None, None)
        .await
        .unwrap()
    }
}
impl World {
    /// The archive object that holds the seed video's last event, with its records.
    pub async fn object_with_seeds_last(&self) -> (String, Vec<timeline_core::CommitRecord>) {
        let archive = S3Archive::new(
            self.env.clients.s3().clone(),
            &self.env.names.archive_bucket,
            PREFIX,
        );
        let last = self
            .events
            .iter()
            .filter(|e| e.aggregate_id == "seed")
            .map(|e| e.version)
            .max()
            .unwrap();
        for key in self.archive_objects().await {
            // Objects a test has broken on purpose are passed over.
            let Ok(records) = archive.read_object(&key).await else {
                continue;
            };
            if records
                .iter()
                .flat_map(|r| &r.events)
                .any(|e| e.aggregate_id == "seed" && e.version == last)
            {
                return (key, records);
            }
        }
        panic!("no object holds the seed video's version {last}")
    }
}
pub async fn state(
    h: &Hydrator<AwsEventSource, AwsStored, Target>,
    key: &StreamKey,
    as_of: Option<Timestamp>,
) -> Value {
    h.handle(
        HydratorRequest::State {
            aggregate_type: key.aggregate_type.clone(),
            aggregate_id: key.aggregate_id.clone(),
            as_of,
            version: None,
        },
        &Deadline::none(),
    )
    .await
    .unwrap()
}

pub async fn history(h: &Hydrator<AwsEventSource, AwsStored, Target>, key: &StreamKey) -> Value {
    h.handle(
        HydratorRequest::History {
            aggregate_type: key.aggregate_type.clone(),
            aggregate_id: key.aggregate_id.clone(),
            from: None,
            to: None,
        },
        &Deadline::none(),
    )
    .await
    .unwrap()
}
