//! The local event bus: integration events delivered to subscribers configured in
//! `<data dir>/subscribers.json`, as EventBridge rules deliver them to targets. Each
//! subscriber has an event pattern and a target: a JSON-lines file (relative to the data
//! directory) or an HTTP POST to a 127.0.0.1 URL. Patterns match as EventBridge's do for what
//! they use here: each field lists the values it may have (`{"detail-type": ["ride.completed"]}`),
//! nested objects match nested fields (`{"detail": {"entity": {"type": ["ride"]}}}`), and
//! `{"prefix": "..."}` matches the start of a string. Every field named must match.

use anyhow::Context;
use http_body_util::Full;
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde::Deserialize;
use serde_json::{json, Value};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use timeline_core::integration::IntegrationEvent;
use timeline_engine::distribute::EventBus;

pub const FILE: &str = "subscribers.json";

#[derive(Debug, Clone, Deserialize)]
struct Subscriber {
    name: String,
    pattern: Value,
    target: Target,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Target {
    /// A JSON-lines file, relative to the data directory.
    File(PathBuf),
    /// An HTTP POST of each event to a 127.0.0.1 URL.
    Url(String),
}

/// What a new data directory gets: a billing consumer of completed rides and an operators'
/// feed of failed videos, each a file.
fn example() -> Value {
    json!([
        {
            "name": "billing",
            "pattern": { "source": ["timeline.rides"], "detail-type": ["ride.completed"] },
            "target": { "file": "subscribers/billing.jsonl" }
        },
        {
            "name": "video-failures",
            "pattern": { "source": ["timeline.videos"], "detail-type": ["video.failed"] },
            "target": { "file": "subscribers/video-failures.jsonl" }
        }
    ])
}

pub struct LocalBus {
    dir: PathBuf,
    subscribers: Vec<Subscriber>,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    lock: Mutex<()>,
    /// Say each delivery on stdout (the runner's own console).
    announce: bool,
}

impl LocalBus {
    /// The subscribers of `dir` (the example ones are written on first use).
    pub fn open(dir: &Path, announce: bool) -> anyhow::Result<LocalBus> {
        let file = dir.join(FILE);
        if !file.exists() {
            std::fs::create_dir_all(dir)?;
            std::fs::write(&file, serde_json::to_vec_pretty(&example())?)
                .with_context(|| format!("cannot write {}", file.display()))?;
        }
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let subscribers: Vec<Subscriber> = serde_json::from_str(&text)
            .with_context(|| format!("{} is not a list of subscribers", file.display()))?;
        for s in &subscribers {
            if let Target::Url(url) = &s.target {
                anyhow::ensure!(
                    url.starts_with("http://127.0.0.1:") || url.starts_with("http://127.0.0.1/"),
                    "subscriber {}: only http://127.0.0.1 URLs are delivered to, not {url}",
                    s.name
                );
            }
        }
        Ok(LocalBus {
            dir: dir.to_owned(),
            subscribers,
            client: Client::builder(TokioExecutor::new()).build_http(),
            lock: Mutex::new(()),
            announce,
        })
    }

    async fn deliver(&self, s: &Subscriber, event: &Value) -> Result<(), String> {
        match &s.target {
            Target::File(path) => {
                let path = self.dir.join(path);
                let _guard = self.lock.lock().expect("not poisoned");
                if let Some(parent) = path.parent() {
                    std::fs::create_dir_all(parent).map_err(|e| e.to_string())?;
                }
                let mut file = std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(&path)
                    .map_err(|e| format!("{}: {e}", path.display()))?;
                writeln!(file, "{event}").map_err(|e| e.to_string())
            }
            Target::Url(url) => {
                let request = hyper::Request::post(url)
                    .header("content-type", "application/json")
                    .body(Full::new(Bytes::from(event.to_string())))
                    .map_err(|e| e.to_string())?;
                let response = self
                    .client
                    .request(request)
                    .await
                    .map_err(|e| e.to_string())?;
                if response.status().is_success() {
                    Ok(())
                } else {
                    Err(format!("{url} answered {}", response.status()))
                }
            }
        }
    }
}

/// The event as EventBridge hands it to a target.
fn as_delivered(e: &IntegrationEvent) -> Value {
    json!({
        "version": "0",
        "id": uuid::Uuid::new_v4().to_string(),
        "detail-type": e.detail_type,
        "source": e.source,
        "account": "000000000000",
        "time": e.detail["occurred_at"],
        "region": "local",
        "resources": [],
        "detail": e.detail,
    })
}

/// Whether `event` matches an EventBridge pattern (the subset described above).
pub fn matches(pattern: &Value, event: &Value) -> bool {
    let Some(fields) = pattern.as_object() else {
        return false;
    };
    fields.iter().all(|(key, want)| {
        let got = &event[key.as_str()];
        match want {
            Value::Object(_) => matches(want, got),
            Value::Array(options) => options.iter().any(|o| match o {
                Value::Object(rule) => match (rule.get("prefix"), got.as_str()) {
                    (Some(Value::String(p)), Some(s)) => s.starts_with(p.as_str()),
                    _ => false,
                },
                literal => literal == got,
            }),
            _ => false,
        }
    })
}

impl EventBus for LocalBus {
    async fn put(&self, entries: &[IntegrationEvent]) -> Result<Vec<Result<(), String>>, String> {
        let mut answers = Vec::with_capacity(entries.len());
        for e in entries {
            let event = as_delivered(e);
            let mut answer = Ok(());
            for s in self
                .subscribers
                .iter()
                .filter(|s| matches(&s.pattern, &event))
            {
                match self.deliver(s, &event).await {
                    Ok(()) if self.announce => println!(
                        "  subscriber {} <- {} {}#{} v{}",
                        s.name,
                        e.detail_type,
                        e.detail["entity"]["type"].as_str().unwrap_or_default(),
                        e.detail["entity"]["id"].as_str().unwrap_or_default(),
                        e.detail["entity"]["version"]
                    ),
                    Ok(()) => {}
                    Err(why) => answer = Err(format!("subscriber {}: {why}", s.name)),
                }
            }
            answers.push(answer);
        }
        Ok(answers)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_eventbridges_do_for_lists_nesting_and_prefixes() {
        let event = json!({
            "source": "timeline.rides",
            "detail-type": "ride.completed",
            "detail": { "entity": { "type": "ride", "id": "r-1" }, "data": { "final_fare_cents": 10 } }
        });
        let yes = [
            json!({ "source": ["timeline.rides"] }),
            json!({ "source": ["timeline.videos", "timeline.rides"], "detail-type": ["ride.completed"] }),
            json!({ "detail": { "entity": { "type": ["ride"] } } }),
            json!({ "detail-type": [{ "prefix": "ride." }] }),
            json!({ "detail": { "data": { "final_fare_cents": [10] } } }),
        ];
        let no = [
            json!({ "source": ["timeline.videos"] }),
            json!({ "source": ["timeline.rides"], "detail-type": ["ride.booked"] }),
            json!({ "detail": { "entity": { "type": ["video"] } } }),
            json!({ "detail-type": [{ "prefix": "video." }] }),
            json!({ "missing": ["x"] }),
            json!({ "source": "timeline.rides" }),
        ];
        for p in yes {
            assert!(matches(&p, &event), "{p}");
        }
        for p in no {
            assert!(!matches(&p, &event), "{p}");
        }
    }

    #[test]
    fn only_loopback_urls_are_delivered_to() {
        let dir = std::env::temp_dir().join(format!("subs-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join(FILE),
            r#"[{"name":"x","pattern":{},"target":{"url":"http://example.com/hook"}}]"#,
        )
        .unwrap();
        let err = LocalBus::open(&dir, false).err().expect("refused");
        assert!(err.to_string().contains("127.0.0.1"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
