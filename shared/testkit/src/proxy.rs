//! An HTTP proxy on 127.0.0.1 in front of the emulator (moto) that makes it behave as AWS
//! documents, not as kindly as moto does. Point a client at [`FaultProxy::url`] (or one
//! service at it, with `AWS_ENDPOINT_URL_KINESIS`) and every call goes through it:
//!
//! - **faults** from a [`Schedule`]: throttling, 500s, lost answers (the work done, the
//!   caller told it failed), slow answers, `TransactionCanceledException` with each reason that leaves nothing written (a
//!   conflict, throttling),
//!   `TransactionConflictException`, partial `BatchWriteItem` / `BatchGetItem` /
//!   `PutRecords` results, S3 listings in small pages, `ListShards` in small pages;
//! - **Kinesis reads as AWS serves them**: shard iterators are the proxy's own tokens, so a
//!   chain of them can hold empty pages while the shard has more (`MillisBehindLatest` > 0),
//!   expire (after `iterator_life`, or at random), and end (`NextShardIterator` null) when a
//!   closed shard is read to its end; `MillisBehindLatest` is 0 only at the tip (moto says 0
//!   whenever its last two records were made in the same millisecond); the per-shard rate
//!   of 5 reads a second can be enforced;
//! - **resharding**: a stream created through the proxy has a shard map of its own over a
//!   moto stream with spare shards: `SplitShard` and `MergeShards` close the parents (which
//!   keep their records) and open children that take the parents' hash keys from then on,
//!   as Kinesis does (moto moves a split parent's records into the children and keeps
//!   writing to closed shards);
//! - **sequence numbers as long as Kinesis's**: 56 digits, for streams created through it.
//!
//! Requests are counted by service and operation ([`FaultProxy::requests`]).

use crate::faults::{Before, Faults, Schedule};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use md5::{Digest, Md5};
use serde_json::{json, Value};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Shards of the moto stream behind a stream created through the proxy: the most its
/// shards, children included, can number.
pub const PHYSICAL_SHARDS: usize = 16;
/// A 56-digit sequence number is this prefix, the moto shard (two digits) and the moto
/// number (zero-padded), so a number from one shard is refused on another, as Kinesis does.
const SEQUENCE_PREFIX: &str = "495903382714902566085596";
const SEQUENCE_DIGITS: usize = 30;

type Body = Full<Bytes>;
type Upstream = Client<hyper_util::client::legacy::connect::HttpConnector, Body>;

/// One shard as the proxy shows it.
#[derive(Debug, Clone)]
struct VShard {
    id: String,
    parents: Vec<String>,
    range: (u128, u128),
    /// The moto shard that holds its records.
    physical: String,
    /// The first hash of the moto shard (an explicit hash key that lands in it).
    physical_start: u128,
    /// The moto shard's number (in sequence numbers).
    physical_index: usize,
    /// Records up to this moto number are past the stream's retention.
    trimmed_through: Option<u64>,
    /// Past the retention itself: no longer listed (a closed shard, once its records expire).
    retired: bool,
    /// The last sequence number written to it, once closed.
    ending: Option<String>,
    closed: bool,
    /// The last sequence number written (moto's).
    last_written: Option<u64>,
}

#[derive(Debug, Clone)]
struct VStream {
    shards: Vec<VShard>,
    next_physical: usize,
}

impl VStream {
    fn open_for(&self, hash: u128) -> Option<&VShard> {
        self.shards
            .iter()
            .find(|s| !s.closed && s.range.0 <= hash && hash <= s.range.1)
    }
    fn shard(&self, id: &str) -> Option<&VShard> {
        self.shards.iter().find(|s| s.id == id)
    }
    fn shard_mut(&mut self, id: &str) -> Option<&mut VShard> {
        self.shards.iter_mut().find(|s| s.id == id)
    }
}

/// A shard iterator the proxy gave out.
#[derive(Debug, Clone)]
struct Token {
    stream: String,
    /// The shard as the client named it.
    shard: String,
    /// moto's iterator.
    upstream: String,
    issued: Instant,
    /// Empty pages still to give on this chain.
    empties: usize,
    /// Straight from `GetShardIterator` (such an iterator does not expire at once).
    fresh: bool,
}

#[derive(Debug, Default)]
struct State {
    streams: HashMap<String, VStream>,
    tokens: HashMap<String, Token>,
    next_token: u64,
    requests: BTreeMap<String, usize>,
    /// Recent reads per shard, for the per-shard rate.
    reads: HashMap<String, VecDeque<Instant>>,
}

struct Shared {
    upstream: String,
    client: Upstream,
    schedule: Arc<Schedule>,
    state: Mutex<State>,
}

/// See the module documentation. Stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl FaultProxy {
    /// A proxy to `upstream` (moto's URL) on a free loopback port, with no fault yet.
    pub async fn start(upstream: &str) -> FaultProxy {
        Self::with_schedule(upstream, Schedule::new(1, Faults::none())).await
    }

    pub async fn with_schedule(upstream: &str, schedule: Arc<Schedule>) -> FaultProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a free loopback port");
        let addr = listener.local_addr().expect("bound");
        let shared = Arc::new(Shared {
            upstream: upstream.trim_end_matches('/').to_owned(),
            client: Client::builder(TokioExecutor::new()).build_http(),
            schedule,
            state: Mutex::new(State::default()),
        });
        let serving = shared.clone();
        let task = tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    continue;
                };
                let shared = serving.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| {
                        let shared = shared.clone();
                        async move { Ok::<_, std::convert::Infallible>(shared.handle(req).await) }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        FaultProxy { addr, shared, task }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn schedule(&self) -> &Arc<Schedule> {
        &self.shared.schedule
    }

    /// Replaces the faults in force.
    pub fn set(&self, faults: Faults) {
        self.shared.schedule.set(faults);
    }

    /// Requests received, by `<service>:<operation>` (`kinesis:GetRecords`, `s3:GetObject`).
    pub fn requests(&self) -> BTreeMap<String, usize> {
        self.shared.state.lock().unwrap().requests.clone()
    }

    pub fn reset_requests(&self) {
        self.shared.state.lock().unwrap().requests.clear();
    }

    /// Faults injected so far, by kind.
    pub fn injected(&self) -> BTreeMap<String, usize> {
        self.shared.schedule.injected()
    }

    /// The stream's retention passes over `shard`'s records up to `through` (a sequence
    /// number the proxy gave): they can no longer be read, and a read from before them starts
    /// at the oldest record left. Streams created through the proxy only.
    pub fn trim(&self, stream: &str, shard: &str, through: &str) {
        let (_, n) = short_sequence(through).expect("a sequence number the proxy gave");
        self.with_shard(stream, shard, |s| {
            s.trimmed_through = Some(s.trimmed_through.unwrap_or(0).max(n))
        });
    }

    /// A closed shard passes its retention: it is no longer listed, nor readable.
    pub fn retire(&self, stream: &str, shard: &str) {
        self.with_shard(stream, shard, |s| {
            assert!(s.closed, "only a closed shard expires whole");
            s.retired = true;
        });
    }

    fn with_shard(&self, stream: &str, shard: &str, change: impl FnOnce(&mut VShard)) {
        let mut state = self.shared.state.lock().unwrap();
        change(
            state
                .streams
                .get_mut(stream)
                .and_then(|v| v.shard_mut(shard))
                .expect("a shard of a stream created through the proxy"),
        );
    }
}

/// Which service a request is for, and its operation.
fn classify(req: &hyper::http::request::Parts) -> (&'static str, String) {
    if let Some(target) = req
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
    {
        let (prefix, op) = target.split_once('.').unwrap_or(("", target));
        let service = if prefix.starts_with("Kinesis") {
            "kinesis"
        } else if prefix.starts_with("DynamoDB") {
            "dynamodb"
        } else {
            "other"
        };
        return (service, op.to_owned());
    }
    let query = req.uri.query().unwrap_or("");
    let path = req.uri.path().trim_start_matches('/');
    let has_key = path.split_once('/').is_some_and(|(_, k)| !k.is_empty());
    let op = match (req.method.as_str(), has_key) {
        ("GET", false) if query.contains("list-type=2") => "ListObjectsV2",
        ("GET", false) => "ListObjects",
        ("GET", true) => "GetObject",
        ("PUT", true) => "PutObject",
        ("PUT", false) => "CreateBucket",
        ("HEAD", true) => "HeadObject",
        ("HEAD", false) => "HeadBucket",
        ("DELETE", true) => "DeleteObject",
        ("POST", _) => "Post",
        _ => "Other",
    };
    ("s3", op.to_owned())
}

fn response(status: StatusCode, content_type: &str, body: impl Into<Bytes>) -> Response<Body> {
    Response::builder()
        .status(status)
        .header("content-type", content_type)
        .body(Full::new(body.into()))
        .expect("a valid response")
}

/// An error answer in the service's own format.
fn error(service: &str, status: StatusCode, code: &str, message: &str) -> Response<Body> {
    match service {
        "s3" => response(
            status,
            "application/xml",
            format!(
                "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault-proxy</RequestId></Error>"
            ),
        ),
        "dynamodb" => {
            let mut r = response(
                status,
                "application/x-amz-json-1.0",
                json!({ "__type": format!("com.amazonaws.dynamodb.v20120810#{code}"), "message": message })
                    .to_string(),
            );
            r.headers_mut()
                .insert("x-amzn-errortype", code.parse().expect("a header value"));
            r
        }
        _ => {
            let mut r = response(
                status,
                "application/x-amz-json-1.1",
                json!({ "__type": code, "message": message }).to_string(),
            );
            r.headers_mut()
                .insert("x-amzn-errortype", code.parse().expect("a header value"));
            r
        }
    }
}

fn throttled(service: &str) -> Response<Body> {
    match service {
        "s3" => error(
            service,
            StatusCode::SERVICE_UNAVAILABLE,
            "SlowDown",
            "Please reduce your request rate.",
        ),
        "dynamodb" => error(
            service,
            StatusCode::BAD_REQUEST,
            "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded.",
        ),
        _ => error(
            service,
            StatusCode::BAD_REQUEST,
            "ProvisionedThroughputExceededException",
            "Rate exceeded for shard in stream under account.",
        ),
    }
}

fn server_error(service: &str) -> Response<Body> {
    let code = match service {
        "s3" => "InternalError",
        "dynamodb" => "InternalServerError",
        _ => "InternalFailure",
    };
    error(
        service,
        StatusCode::INTERNAL_SERVER_ERROR,
        code,
        "We encountered an internal error. Please try again.",
    )
}

/// The emulator's error answer, passed on in the service's format.
fn upstream_error(service: &str, status: StatusCode, answer: &Value) -> Response<Body> {
    let code = answer["__type"]
        .as_str()
        .and_then(|t| t.rsplit('#').next())
        .unwrap_or(if service == "dynamodb" {
            "InternalServerError"
        } else {
            "InternalFailure"
        });
    error(
        service,
        status,
        code,
        answer["message"].as_str().unwrap_or(""),
    )
}

fn json_response(service: &str, body: &Value) -> Response<Body> {
    let content_type = if service == "dynamodb" {
        "application/x-amz-json-1.0"
    } else {
        "application/x-amz-json-1.1"
    };
    response(StatusCode::OK, content_type, body.to_string())
}

fn md5_hash(key: &str) -> u128 {
    u128::from_be_bytes(Md5::digest(key.as_bytes()).into())
}

fn long_sequence(shard: usize, n: u64) -> String {
    format!(
        "{SEQUENCE_PREFIX}{shard:02}{n:0width$}",
        width = SEQUENCE_DIGITS
    )
}

/// The moto shard and number of one of ours; None for any other form.
fn short_sequence(seq: &str) -> Option<(usize, u64)> {
    let rest = seq.strip_prefix(SEQUENCE_PREFIX)?;
    if rest.len() != SEQUENCE_DIGITS + 2 || !rest.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let (shard, n) = rest.split_at(2);
    Some((shard.parse().ok()?, n.parse().ok()?))
}

fn stream_name(body: &Value) -> Option<String> {
    body["StreamName"].as_str().map(str::to_owned).or_else(|| {
        body["StreamARN"]
            .as_str()
            .and_then(|arn| arn.rsplit_once("stream/"))
            .map(|(_, name)| name.to_owned())
    })
}

/// The first hash key of moto's shard `i` of `PHYSICAL_SHARDS` (moto splits evenly).
fn physical_start(i: usize) -> u128 {
    let step = u128::MAX / PHYSICAL_SHARDS as u128 + 1;
    step * i as u128
}

fn physical_id(i: usize) -> String {
    format!("shardId-{i:012}")
}

fn shard_json(s: &VShard) -> Value {
    let first = s.trimmed_through.map_or(0, |t| t + 1);
    let mut range = json!({ "StartingSequenceNumber": long_sequence(s.physical_index, first) });
    if let Some(ending) = &s.ending {
        range["EndingSequenceNumber"] = json!(ending);
    }
    let mut shard = json!({
        "ShardId": s.id,
        "HashKeyRange": {
            "StartingHashKey": s.range.0.to_string(),
            "EndingHashKey": s.range.1.to_string(),
        },
        "SequenceNumberRange": range,
    });
    if let Some(parent) = s.parents.first() {
        shard["ParentShardId"] = json!(parent);
    }
    if let Some(adjacent) = s.parents.get(1) {
        shard["AdjacentParentShardId"] = json!(adjacent);
    }
    shard
}

impl Shared {
    async fn handle(self: &Arc<Self>, req: Request<Incoming>) -> Response<Body> {
        let (mut parts, body) = req.into_parts();
        let body = match body.collect().await {
            Ok(b) => b.to_bytes(),
            Err(e) => {
                return error(
                    "other",
                    StatusCode::BAD_REQUEST,
                    "BadRequest",
                    &e.to_string(),
                )
            }
        };
        let (service, op) = classify(&parts);
        *self
            .state
            .lock()
            .unwrap()
            .requests
            .entry(format!("{service}:{op}"))
            .or_default() += 1;
        match self.schedule.before(&op).await {
            Before::Throttled => return throttled(service),
            Before::Failed => return server_error(service),
            Before::Go => {}
        }
        match service {
            "kinesis" => self.kinesis(&op, parts, body).await,
            "dynamodb" => self.dynamodb(&op, parts, body).await,
            "s3" => {
                if op == "ListObjectsV2" {
                    if let Some(page) = self.schedule.faults().s3_page {
                        parts.uri = with_max_keys(&parts.uri, page);
                    }
                }
                let lose = matches!(op.as_str(), "PutObject") && self.schedule.lose_answer(&op);
                let answer = self.forward(parts, body).await;
                if lose && answer.status().is_success() {
                    return server_error(service);
                }
                answer
            }
            _ => self.forward(parts, body).await,
        }
    }

    /// Sends the request on to the emulator as it is and gives back its answer.
    async fn forward(&self, parts: hyper::http::request::Parts, body: Bytes) -> Response<Body> {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        let uri: hyper::Uri = format!("{}{}", self.upstream, path)
            .parse()
            .expect("a valid upstream URI");
        let mut req = Request::from_parts(parts, Full::new(body));
        *req.uri_mut() = uri;
        req.headers_mut().remove("content-length");
        let head = req.method() == hyper::Method::HEAD;
        match self.client.request(req).await {
            Ok(answer) => {
                let (mut parts, body) = answer.into_parts();
                let body = body
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                parts.headers.remove("transfer-encoding");
                if !head {
                    parts.headers.remove("content-length");
                }
                Response::from_parts(parts, Full::new(body))
            }
            Err(e) => error(
                "other",
                StatusCode::BAD_GATEWAY,
                "UpstreamUnreachable",
                &e.to_string(),
            ),
        }
    }

    /// A JSON call to the emulator (`x-amz-target` given), with its answer parsed.
    async fn call(
        &self,
        parts: &hyper::http::request::Parts,
        target: &str,
        body: &Value,
    ) -> (StatusCode, Value) {
        let mut req = Request::builder()
            .method("POST")
            .uri(format!("{}/", self.upstream))
            .header("x-amz-target", target)
            .header(
                "content-type",
                parts
                    .headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("application/x-amz-json-1.1"),
            );
        if let Some(auth) = parts.headers.get("authorization") {
            req = req.header("authorization", auth);
        }
        let req = req
            .body(Full::new(Bytes::from(body.to_string())))
            .expect("a valid request");
        match self.client.request(req).await {
            Ok(answer) => {
                let status = answer.status();
                let bytes = answer
                    .into_body()
                    .collect()
                    .await
                    .map(|b| b.to_bytes())
                    .unwrap_or_default();
                (
                    status,
                    serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                )
            }
            Err(e) => (StatusCode::BAD_GATEWAY, json!({ "message": e.to_string() })),
        }
    }

    async fn dynamodb(
        &self,
        op: &str,
        parts: hyper::http::request::Parts,
        body: Bytes,
    ) -> Response<Body> {
        let conflict = || {
            self.schedule
                .roll(op, "transaction_conflict", |f| f.transaction_conflict)
        };
        match op {
            "TransactWriteItems" if conflict() => {
                let items = serde_json::from_slice::<Value>(&body)
                    .ok()
                    .and_then(|b| b["TransactItems"].as_array().map(Vec::len))
                    .unwrap_or(1)
                    .max(1);
                // Each reason DynamoDB gives for a transaction cancelled with nothing written
                // (a failed condition comes from moto itself).
                let mut reasons = vec![json!({ "Code": "None" }); items];
                let (code, message) = [
                    ("TransactionConflict", "Transaction is ongoing for the item"),
                    ("ThrottlingError", "Throughput exceeds the current capacity for one or more global secondary indexes"),
                    ("ProvisionedThroughputExceeded", "The level of configured provisioned throughput for the table was exceeded"),
                ][self.schedule.draw(0..3)];
                let at = self.schedule.draw(0..items);
                reasons[at] = json!({ "Code": code, "Message": message });
                let codes: Vec<&str> = reasons
                    .iter()
                    .map(|r| r["Code"].as_str().unwrap_or("None"))
                    .collect();
                let body = json!({
                    "__type": "com.amazonaws.dynamodb.v20120810#TransactionCanceledException",
                    "message": format!(
                        "Transaction cancelled, please refer cancellation reasons for specific reasons [{}]",
                        codes.join(", ")
                    ),
                    "CancellationReasons": reasons,
                });
                let mut answer = response(
                    StatusCode::BAD_REQUEST,
                    "application/x-amz-json-1.0",
                    body.to_string(),
                );
                answer.headers_mut().insert(
                    "x-amzn-errortype",
                    "TransactionCanceledException"
                        .parse()
                        .expect("a header value"),
                );
                answer
            }
            "PutItem" | "UpdateItem" | "DeleteItem" if conflict() => error(
                "dynamodb",
                StatusCode::BAD_REQUEST,
                "TransactionConflictException",
                "Transaction is ongoing for the item",
            ),
            "BatchWriteItem" | "BatchGetItem"
                if self.schedule.roll(op, "partial_batch", |f| f.partial_batch) =>
            {
                self.partial_dynamodb_batch(op, parts, body).await
            }
            "PutItem" | "UpdateItem" | "DeleteItem" | "TransactWriteItems" | "BatchWriteItem" => {
                let lose = self.schedule.lose_answer(op);
                let answer = self.forward(parts, body).await;
                if lose && answer.status().is_success() {
                    return server_error("dynamodb");
                }
                answer
            }
            _ => self.forward(parts, body).await,
        }
    }

    /// Sends part of a batch on and answers the rest as unprocessed, as DynamoDB does when a
    /// partition is busy.
    async fn partial_dynamodb_batch(
        &self,
        op: &str,
        parts: hyper::http::request::Parts,
        body: Bytes,
    ) -> Response<Body> {
        let Ok(mut request) = serde_json::from_slice::<Value>(&body) else {
            return self.forward(parts, body).await;
        };
        let mut left = serde_json::Map::new();
        if let Some(tables) = request["RequestItems"].as_object_mut() {
            for (table, items) in tables.iter_mut() {
                let list = if op == "BatchWriteItem" {
                    items.as_array_mut()
                } else {
                    items["Keys"].as_array_mut()
                };
                let Some(list) = list else { continue };
                if list.len() < 2 {
                    continue;
                }
                let keep = self.schedule.draw(1..list.len());
                let rest: Vec<Value> = list.split_off(keep);
                let value = if op == "BatchWriteItem" {
                    json!(rest)
                } else {
                    let mut spec = items.clone();
                    spec["Keys"] = json!(rest);
                    spec
                };
                left.insert(table.clone(), value);
            }
        }
        let target = parts
            .headers
            .get("x-amz-target")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        let (status, mut answer) = self.call(&parts, &target, &request).await;
        if !status.is_success() {
            return upstream_error("dynamodb", status, &answer);
        }
        let field = if op == "BatchWriteItem" {
            "UnprocessedItems"
        } else {
            "UnprocessedKeys"
        };
        if !left.is_empty() {
            answer[field] = Value::Object(left);
        }
        json_response("dynamodb", &answer)
    }

    async fn kinesis(
        &self,
        op: &str,
        parts: hyper::http::request::Parts,
        body: Bytes,
    ) -> Response<Body> {
        let Ok(request) = serde_json::from_slice::<Value>(&body) else {
            return self.forward(parts, body).await;
        };
        match op {
            "CreateStream" => self.create_stream(parts, request).await,
            "ListShards" => self.list_shards(parts, request, body).await,
            "DescribeStream" | "DescribeStreamSummary" => {
                self.describe_stream(op, parts, request, body).await
            }
            "PutRecord" => self.put_record(parts, request).await,
            "PutRecords" => self.put_records(parts, request).await,
            "GetShardIterator" => self.get_shard_iterator(parts, request).await,
            "GetRecords" => self.get_records(parts, request).await,
            "SplitShard" => self.split_shard(request),
            "MergeShards" => self.merge_shards(request),
            "UpdateShardCount" => error(
                "kinesis",
                StatusCode::BAD_REQUEST,
                "InvalidArgumentException",
                "the fault proxy reshards with SplitShard and MergeShards only",
            ),
            _ => self.forward(parts, body).await,
        }
    }

    fn virtual_stream(&self, name: &str) -> Option<VStream> {
        self.state.lock().unwrap().streams.get(name).cloned()
    }

    async fn create_stream(
        &self,
        parts: hyper::http::request::Parts,
        mut request: Value,
    ) -> Response<Body> {
        let Some(name) = stream_name(&request) else {
            return error(
                "kinesis",
                StatusCode::BAD_REQUEST,
                "ValidationException",
                "no stream name",
            );
        };
        let wanted = request["ShardCount"]
            .as_u64()
            .unwrap_or(4)
            .clamp(1, PHYSICAL_SHARDS as u64 / 2) as usize;
        request["ShardCount"] = json!(PHYSICAL_SHARDS);
        request["StreamModeDetails"] = json!({ "StreamMode": "PROVISIONED" });
        let (status, answer) = self
            .call(&parts, "Kinesis_20131202.CreateStream", &request)
            .await;
        if !status.is_success() {
            return upstream_error("kinesis", status, &answer);
        }
        let shards = split_evenly(wanted)
            .into_iter()
            .enumerate()
            .map(|(i, range)| VShard {
                id: physical_id(i),
                parents: vec![],
                range,
                physical: physical_id(i),
                physical_start: physical_start(i),
                physical_index: i,
                trimmed_through: None,
                retired: false,
                ending: None,
                closed: false,
                last_written: None,
            })
            .collect();
        self.state.lock().unwrap().streams.insert(
            name,
            VStream {
                shards,
                next_physical: wanted,
            },
        );
        json_response("kinesis", &json!({}))
    }

    async fn list_shards(
        &self,
        parts: hyper::http::request::Parts,
        request: Value,
        body: Bytes,
    ) -> Response<Body> {
        // A token of ours: `<stream>\n<offset>`.
        let (name, offset) = match request["NextToken"].as_str() {
            Some(token) => match token.split_once('\n') {
                Some((name, offset)) => (Some(name.to_owned()), offset.parse().unwrap_or(0)),
                None => (None, 0),
            },
            None => (stream_name(&request), 0),
        };
        let page = self.schedule.faults().shards_page;
        let Some(stream) = name.as_deref().and_then(|n| self.virtual_stream(n)) else {
            if let Some(page) = page.filter(|_| request["NextToken"].is_null()) {
                // Not one of ours: moto pages when asked to.
                let mut request = request;
                request["MaxResults"] = json!(page);
                let (status, answer) = self
                    .call(&parts, "Kinesis_20131202.ListShards", &request)
                    .await;
                return if status.is_success() {
                    json_response("kinesis", &answer)
                } else {
                    self.forward(parts, body).await
                };
            }
            return self.forward(parts, body).await;
        };
        let name = name.expect("named");
        let size = page
            .or_else(|| request["MaxResults"].as_u64().map(|m| m as usize))
            .unwrap_or(1000)
            .max(1);
        let all: Vec<Value> = stream
            .shards
            .iter()
            .filter(|s| !s.retired)
            .map(shard_json)
            .collect();
        let end = (offset + size).min(all.len());
        let mut answer = json!({ "Shards": all[offset.min(all.len())..end] });
        if end < all.len() {
            answer["NextToken"] = json!(format!("{name}\n{end}"));
        }
        json_response("kinesis", &answer)
    }

    async fn describe_stream(
        &self,
        op: &str,
        parts: hyper::http::request::Parts,
        request: Value,
        body: Bytes,
    ) -> Response<Body> {
        let Some(stream) = stream_name(&request).and_then(|n| self.virtual_stream(&n)) else {
            return self.forward(parts, body).await;
        };
        let (status, mut answer) = self
            .call(&parts, &format!("Kinesis_20131202.{op}"), &request)
            .await;
        if !status.is_success() {
            return self.forward(parts, body).await;
        }
        let open = stream.shards.iter().filter(|s| !s.closed).count();
        if op == "DescribeStreamSummary" {
            answer["StreamDescriptionSummary"]["OpenShardCount"] = json!(open);
        } else {
            answer["StreamDescription"]["Shards"] = json!(stream
                .shards
                .iter()
                .filter(|s| !s.retired)
                .map(shard_json)
                .collect::<Vec<_>>());
            answer["StreamDescription"]["HasMoreShards"] = json!(false);
        }
        json_response("kinesis", &answer)
    }

    /// Where a record goes: the open shard holding its hash (its id, the hash key that lands
    /// it in its moto shard, and that shard's number).
    fn route(&self, stream: &str, record: &Value) -> Option<(String, u128, usize)> {
        let state = self.state.lock().unwrap();
        let vstream = state.streams.get(stream)?;
        let hash = record["ExplicitHashKey"]
            .as_str()
            .and_then(|h| h.parse().ok())
            .unwrap_or_else(|| md5_hash(record["PartitionKey"].as_str().unwrap_or_default()));
        let shard = vstream.open_for(hash)?;
        Some((shard.id.clone(), shard.physical_start, shard.physical_index))
    }

    fn written(&self, stream: &str, shard: &str, seq: &str) {
        if let Some(s) = self
            .state
            .lock()
            .unwrap()
            .streams
            .get_mut(stream)
            .and_then(|v| v.shard_mut(shard))
        {
            let n: u64 = seq.parse().unwrap_or(0);
            s.last_written = Some(s.last_written.unwrap_or(0).max(n));
        }
    }

    async fn put_record(
        &self,
        parts: hyper::http::request::Parts,
        mut request: Value,
    ) -> Response<Body> {
        let Some(name) = stream_name(&request) else {
            return self.forward(parts, Bytes::from(request.to_string())).await;
        };
        let routed = self.route(&name, &request);
        if let Some((_, start, _)) = &routed {
            request["ExplicitHashKey"] = json!(start.to_string());
        }
        let lose = self.schedule.lose_answer("PutRecord");
        let (status, mut answer) = self
            .call(&parts, "Kinesis_20131202.PutRecord", &request)
            .await;
        if !status.is_success() {
            return upstream_error("kinesis", status, &answer);
        }
        if let Some((shard, _, index)) = routed {
            let seq = answer["SequenceNumber"].as_str().unwrap_or("0").to_owned();
            self.written(&name, &shard, &seq);
            answer["ShardId"] = json!(shard);
            answer["SequenceNumber"] = json!(long_sequence(index, seq.parse().unwrap_or(0)));
        }
        if lose {
            return server_error("kinesis");
        }
        json_response("kinesis", &answer)
    }

    async fn put_records(
        &self,
        parts: hyper::http::request::Parts,
        request: Value,
    ) -> Response<Body> {
        let Some(name) = stream_name(&request) else {
            return self.forward(parts, Bytes::from(request.to_string())).await;
        };
        let records = request["Records"].as_array().cloned().unwrap_or_default();
        let partial = self
            .schedule
            .roll("PutRecords", "partial_batch", |f| f.partial_batch);
        // Some records refused (every other one, when the fault is drawn); the rest sent on
        // in one call, each with the hash key that lands it in its shard.
        let refused = |i: usize| partial && (i % 2 == 1 || records.len() == 1);
        let mut routes = Vec::new();
        let mut sent = Vec::new();
        for (i, record) in records.iter().enumerate() {
            if refused(i) {
                continue;
            }
            let mut one = record.clone();
            let routed = self.route(&name, &one);
            if let Some((_, start, _)) = &routed {
                one["ExplicitHashKey"] = json!(start.to_string());
            }
            routes.push(routed);
            sent.push(one);
        }
        let mut answers = Vec::new().into_iter();
        if !sent.is_empty() {
            let mut batch = request.clone();
            batch["Records"] = json!(sent);
            let (status, answer) = self
                .call(&parts, "Kinesis_20131202.PutRecords", &batch)
                .await;
            if !status.is_success() {
                return upstream_error("kinesis", status, &answer);
            }
            answers = answer["Records"]
                .as_array()
                .cloned()
                .unwrap_or_default()
                .into_iter();
        }
        let mut routes = routes.into_iter();
        let mut failed = 0;
        let mut results = Vec::with_capacity(records.len());
        for i in 0..records.len() {
            if refused(i) {
                failed += 1;
                results.push(json!({
                    "ErrorCode": "ProvisionedThroughputExceededException",
                    "ErrorMessage": "Rate exceeded for shard in stream (injected).",
                }));
                continue;
            }
            let answer = answers.next().unwrap_or_default();
            if answer.get("ErrorCode").is_some() {
                failed += 1;
                results.push(answer);
                continue;
            }
            let seq = answer["SequenceNumber"].as_str().unwrap_or("0").to_owned();
            match routes.next().flatten() {
                Some((shard, _, index)) => {
                    self.written(&name, &shard, &seq);
                    results.push(json!({
                        "ShardId": shard,
                        "SequenceNumber": long_sequence(index, seq.parse().unwrap_or(0)),
                    }));
                }
                None => results.push(answer),
            }
        }
        json_response(
            "kinesis",
            &json!({ "FailedRecordCount": failed, "Records": results }),
        )
    }

    fn issue(&self, stream: &str, shard: &str, upstream: String, fresh: bool) -> String {
        let empties = if fresh
            && self
                .schedule
                .roll("GetRecords", "empty_page", |f| f.empty_page)
        {
            self.schedule.draw(1..4)
        } else {
            0
        };
        let mut state = self.state.lock().unwrap();
        state.next_token += 1;
        let token = format!("fault-proxy-iterator-{}", state.next_token);
        state.tokens.insert(
            token.clone(),
            Token {
                stream: stream.to_owned(),
                shard: shard.to_owned(),
                upstream,
                issued: Instant::now(),
                empties,
                fresh,
            },
        );
        token
    }

    async fn get_shard_iterator(
        &self,
        parts: hyper::http::request::Parts,
        mut request: Value,
    ) -> Response<Body> {
        let name = stream_name(&request).unwrap_or_default();
        let shard = request["ShardId"].as_str().unwrap_or_default().to_owned();
        let vstream = self.virtual_stream(&name);
        if let Some(vstream) = &vstream {
            let Some(v) = vstream.shard(&shard).filter(|v| !v.retired) else {
                return error(
                    "kinesis",
                    StatusCode::BAD_REQUEST,
                    "ResourceNotFoundException",
                    &format!("Shard {shard} in stream {name} does not exist"),
                );
            };
            request["ShardId"] = json!(v.physical);
            let invalid = |seq: &str| {
                error(
                    "kinesis",
                    StatusCode::BAD_REQUEST,
                    "InvalidArgumentException",
                    &format!("StartingSequenceNumber {seq} used in GetShardIterator on shard {shard} in stream {name} is invalid because it did not come from this stream."),
                )
            };
            let kind = request["ShardIteratorType"]
                .as_str()
                .unwrap_or("")
                .to_owned();
            if let Some(seq) = request["StartingSequenceNumber"].as_str() {
                match short_sequence(seq) {
                    Some((index, n)) if index == v.physical_index => {
                        // Past the retention: the read starts at the oldest record held.
                        match v.trimmed_through.filter(|t| n <= *t) {
                            Some(t) => {
                                request["ShardIteratorType"] = json!("AFTER_SEQUENCE_NUMBER");
                                request["StartingSequenceNumber"] = json!(t.to_string());
                            }
                            None => request["StartingSequenceNumber"] = json!(n.to_string()),
                        }
                    }
                    _ => return invalid(seq),
                }
            } else if let (Some(t), "TRIM_HORIZON") = (v.trimmed_through, kind.as_str()) {
                request["ShardIteratorType"] = json!("AFTER_SEQUENCE_NUMBER");
                request["StartingSequenceNumber"] = json!(t.to_string());
            }
        }
        let (status, answer) = self
            .call(&parts, "Kinesis_20131202.GetShardIterator", &request)
            .await;
        if !status.is_success() {
            return upstream_error("kinesis", status, &answer);
        }
        let upstream = answer["ShardIterator"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let token = self.issue(&name, &shard, upstream, true);
        json_response("kinesis", &json!({ "ShardIterator": token }))
    }

    /// Counts a read of `shard`; true when it is over the per-second rate.
    fn over_rate(&self, shard_key: &str) -> bool {
        let Some(rate) = self.schedule.faults().shard_reads_per_second else {
            return false;
        };
        let mut state = self.state.lock().unwrap();
        let reads = state.reads.entry(shard_key.to_owned()).or_default();
        let now = Instant::now();
        while reads
            .front()
            .is_some_and(|t| now.duration_since(*t).as_secs_f64() >= 1.0)
        {
            reads.pop_front();
        }
        if reads.len() >= rate {
            self.schedule.count("shard_rate");
            return true;
        }
        reads.push_back(now);
        false
    }

    async fn get_records(
        &self,
        parts: hyper::http::request::Parts,
        request: Value,
    ) -> Response<Body> {
        let token_id = request["ShardIterator"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let token = self.state.lock().unwrap().tokens.get(&token_id).cloned();
        let Some(token) = token else {
            return error(
                "kinesis",
                StatusCode::BAD_REQUEST,
                "InvalidArgumentException",
                "Invalid ShardIterator.",
            );
        };
        let life = self.schedule.faults().iterator_life;
        // Expired by age, or (drawn) as if the reader had held it too long: only an iterator
        // handed on from a previous page, never one just obtained.
        if token.issued.elapsed() >= life
            || !token.fresh
                && self
                    .schedule
                    .roll("GetRecords", "expire_iterator", |f| f.expire_iterator)
        {
            return error(
                "kinesis",
                StatusCode::BAD_REQUEST,
                "ExpiredIteratorException",
                "Iterator expired. The iterator was created at time ... while right now it is ...",
            );
        }
        if self.over_rate(&format!("{}/{}", token.stream, token.shard)) {
            return throttled("kinesis");
        }
        let vstream = self.virtual_stream(&token.stream);
        let closed = vstream
            .as_ref()
            .and_then(|v| v.shard(&token.shard))
            .is_some_and(|s| s.closed);
        let limit = request["Limit"].as_u64().unwrap_or(10_000);
        let empty_now = token.empties > 0
            || self
                .schedule
                .roll("GetRecords", "empty_page", |f| f.empty_page * 0.5);
        let (records, upstream_next) = if empty_now {
            (Vec::new(), token.upstream.clone())
        } else {
            let (status, answer) = self
                .call(
                    &parts,
                    "Kinesis_20131202.GetRecords",
                    &json!({ "ShardIterator": token.upstream, "Limit": limit }),
                )
                .await;
            if !status.is_success() {
                return upstream_error("kinesis", status, &answer);
            }
            (
                answer["Records"].as_array().cloned().unwrap_or_default(),
                answer["NextShardIterator"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            )
        };
        // What follows: moto's iterators are positions, so a look ahead costs nothing.
        let (status, peek) = self
            .call(
                &parts,
                "Kinesis_20131202.GetRecords",
                &json!({ "ShardIterator": upstream_next, "Limit": 1 }),
            )
            .await;
        let more = status.is_success() && peek["Records"].as_array().is_some_and(|r| !r.is_empty());
        let behind = if more {
            let arrival = peek["Records"][0]["ApproximateArrivalTimestamp"]
                .as_f64()
                .unwrap_or(0.0);
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0.0, |d| d.as_secs_f64());
            (((now - arrival) * 1000.0) as i64).max(1)
        } else {
            0
        };
        let physical = vstream
            .as_ref()
            .and_then(|v| v.shard(&token.shard))
            .map(|s| s.physical_index);
        let records: Vec<Value> = records
            .into_iter()
            .map(|mut r| {
                if let Some(index) = physical {
                    let seq = r["SequenceNumber"]
                        .as_str()
                        .unwrap_or("0")
                        .parse()
                        .unwrap_or(0);
                    r["SequenceNumber"] = json!(long_sequence(index, seq));
                }
                r
            })
            .collect();
        let mut answer = json!({ "Records": records, "MillisBehindLatest": behind });
        // A closed shard with nothing after this page ends here, whatever else was drawn.
        if closed && !more {
            // A closed shard read to its end: no next iterator, and its children.
            let children: Vec<Value> = vstream
                .iter()
                .flat_map(|v| v.shards.iter())
                .filter(|s| s.parents.contains(&token.shard))
                .map(|s| {
                    json!({
                        "ShardId": s.id,
                        "ParentShards": s.parents,
                        "HashKeyRange": {
                            "StartingHashKey": s.range.0.to_string(),
                            "EndingHashKey": s.range.1.to_string(),
                        }
                    })
                })
                .collect();
            answer["ChildShards"] = json!(children);
        } else {
            let next = self.issue(&token.stream, &token.shard, upstream_next, false);
            if empty_now {
                if let Some(t) = self.state.lock().unwrap().tokens.get_mut(&next) {
                    t.empties = token.empties.saturating_sub(1);
                }
            }
            answer["NextShardIterator"] = json!(next);
        }
        // Iterators stay usable for their life (a retried call sends the same one again);
        // old ones are forgotten.
        let life = life * 2;
        self.state
            .lock()
            .unwrap()
            .tokens
            .retain(|_, t| t.issued.elapsed() < life);
        json_response("kinesis", &answer)
    }

    fn split_shard(&self, request: Value) -> Response<Body> {
        let name = stream_name(&request).unwrap_or_default();
        let parent = request["ShardToSplit"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let at: Option<u128> = request["NewStartingHashKey"]
            .as_str()
            .and_then(|h| h.parse().ok());
        let mut state = self.state.lock().unwrap();
        let Some(stream) = state.streams.get_mut(&name) else {
            return error(
                "kinesis",
                StatusCode::BAD_REQUEST,
                "ResourceNotFoundException",
                "not a stream created through the fault proxy",
            );
        };
        let Some(shard) = stream.shard(&parent).cloned().filter(|s| !s.closed) else {
            return error(
                "kinesis",
                StatusCode::BAD_REQUEST,
                "InvalidArgumentException",
                &format!("{parent} is not an open shard"),
            );
        };
        let Some(at) = at.filter(|at| shard.range.0 < *at && *at <= shard.range.1) else {
            return error(
                "kinesis",
                StatusCode::BAD_REQUEST,
                "InvalidArgumentException",
                "NewStartingHashKey is outside the shard",
            );
        };
        if stream.next_physical + 2 > PHYSICAL_SHARDS {
            return error(
                "kinesis",
                StatusCode::BAD_REQUEST,
                "LimitExceededException",
                "no spare shard left behind the fault proxy",
            );
        }
        let ranges = [(shard.range.0, at - 1), (at, shard.range.1)];
        close(stream, &parent);
        for range in ranges {
            open(stream, vec![parent.clone()], range);
        }
        json_response("kinesis", &json!({}))
    }

    fn merge_shards(&self, request: Value) -> Response<Body> {
        let name = stream_name(&request).unwrap_or_default();
        let a = request["ShardToMerge"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let b = request["AdjacentShardToMerge"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let mut state = self.state.lock().unwrap();
        let Some(stream) = state.streams.get_mut(&name) else {
            return error(
                "kinesis",
                StatusCode::BAD_REQUEST,
                "ResourceNotFoundException",
                "not a stream created through the fault proxy",
            );
        };
        let (Some(sa), Some(sb)) = (
            stream.shard(&a).cloned().filter(|s| !s.closed),
            stream.shard(&b).cloned().filter(|s| !s.closed),
        ) else {
            return error(
                "kinesis",
                StatusCode::BAD_REQUEST,
                "InvalidArgumentException",
                "both shards must be open",
            );
        };
        let adjacent = sa.range.1.checked_add(1) == Some(sb.range.0)
            || sb.range.1.checked_add(1) == Some(sa.range.0);
        if !adjacent {
            return error(
                "kinesis",
                StatusCode::BAD_REQUEST,
                "InvalidArgumentException",
                "the shards are not adjacent",
            );
        }
        if stream.next_physical + 1 > PHYSICAL_SHARDS {
            return error(
                "kinesis",
                StatusCode::BAD_REQUEST,
                "LimitExceededException",
                "no spare shard left behind the fault proxy",
            );
        }
        close(stream, &a);
        close(stream, &b);
        let range = (sa.range.0.min(sb.range.0), sa.range.1.max(sb.range.1));
        open(stream, vec![a, b], range);
        json_response("kinesis", &json!({}))
    }
}

fn close(stream: &mut VStream, id: &str) {
    if let Some(s) = stream.shard_mut(id) {
        s.closed = true;
        s.ending = Some(long_sequence(s.physical_index, s.last_written.unwrap_or(0)));
    }
}

/// A new shard (Kinesis numbers them on from the last), on the next spare moto shard.
fn open(stream: &mut VStream, parents: Vec<String>, range: (u128, u128)) {
    let i = stream.next_physical;
    stream.next_physical += 1;
    stream.shards.push(VShard {
        id: physical_id(stream.shards.len()),
        parents,
        range,
        physical: physical_id(i),
        physical_start: physical_start(i),
        physical_index: i,
        trimmed_through: None,
        retired: false,
        ending: None,
        closed: false,
        last_written: None,
    });
}

/// The hash space in `n` equal ranges, as a new stream's shards have it.
fn split_evenly(n: usize) -> Vec<(u128, u128)> {
    if n <= 1 {
        return vec![(0, u128::MAX)];
    }
    let step = u128::MAX / n as u128 + 1;
    (0..n)
        .map(|i| {
            let start = step * i as u128;
            let end = if i + 1 == n {
                u128::MAX
            } else {
                step * (i as u128 + 1) - 1
            };
            (start, end)
        })
        .collect()
}

/// The same URI with `max-keys` no higher than `page`.
fn with_max_keys(uri: &hyper::Uri, page: usize) -> hyper::Uri {
    let path = uri.path();
    let mut pairs: Vec<String> = uri
        .query()
        .unwrap_or("")
        .split('&')
        .filter(|p| !p.is_empty() && !p.starts_with("max-keys="))
        .map(str::to_owned)
        .collect();
    let asked = uri
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|p| p.strip_prefix("max-keys="))
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(1000);
    pairs.push(format!("max-keys={}", asked.min(page)));
    format!("{path}?{}", pairs.join("&"))
        .parse()
        .unwrap_or_else(|_| uri.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_sequence_numbers_have_56_digits_name_their_shard_and_map_back() {
        let long = long_sequence(3, 42);
        assert_eq!(long.len(), 56);
        assert_eq!(short_sequence(&long), Some((3, 42)));
        assert_eq!(short_sequence("17"), None);
        assert!(
            timeline_engine::sequence::compare(&long_sequence(3, 9), &long_sequence(3, 10))
                == std::cmp::Ordering::Less
        );
    }

    #[test]
    fn physical_shards_start_where_moto_splits_the_hash_space() {
        assert_eq!(physical_start(0), 0);
        assert_eq!(physical_start(1), 1u128 << 124);
        assert_eq!(physical_start(15), 15u128 << 124);
    }

    #[test]
    fn a_listing_is_capped_at_the_page_size() {
        let uri: hyper::Uri = "/bucket?list-type=2&prefix=events%2F&max-keys=1000"
            .parse()
            .unwrap();
        let capped = with_max_keys(&uri, 3);
        assert_eq!(
            capped.query(),
            Some("list-type=2&prefix=events%2F&max-keys=3")
        );
        let none: hyper::Uri = "/bucket?list-type=2".parse().unwrap();
        assert_eq!(
            with_max_keys(&none, 2).query(),
            Some("list-type=2&max-keys=2")
        );
    }
}
