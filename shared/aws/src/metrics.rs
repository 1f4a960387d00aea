//! Metrics in CloudWatch embedded metric format: one JSON line on stdout per call, which
//! Lambda ships to CloudWatch Logs and CloudWatch turns into metrics (no API calls).

use serde_json::{json, Map, Value};

#[derive(Debug, Clone, Copy)]
pub enum Unit {
    Count,
    Milliseconds,
}

impl Unit {
    fn name(&self) -> &'static str {
        match self {
            Unit::Count => "Count",
            Unit::Milliseconds => "Milliseconds",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Metric {
    pub name: &'static str,
    pub unit: Unit,
    pub value: f64,
}

impl Metric {
    pub fn new(name: &'static str, unit: Unit, value: f64) -> Self {
        Metric { name, unit, value }
    }
}

/// The EMF document for these metrics, with the function name as the dimension.
pub fn document(namespace: &str, metrics: &[Metric], timestamp_ms: i64) -> Value {
    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_else(|_| "local".into());
    let mut root = Map::new();
    root.insert(
        "_aws".into(),
        json!({
            "Timestamp": timestamp_ms,
            "CloudWatchMetrics": [{
                "Namespace": namespace,
                "Dimensions": [["FunctionName"]],
                "Metrics": metrics.iter().map(|m| json!({ "Name": m.name, "Unit": m.unit.name() })).collect::<Vec<_>>(),
            }]
        }),
    );
    root.insert("FunctionName".into(), function.into());
    for m in metrics {
        root.insert(m.name.into(), json!(m.value));
    }
    Value::Object(root)
}

pub fn emit(namespace: &str, metrics: &[Metric]) {
    let now = chrono::Utc::now().timestamp_millis();
    println!("{}", document(namespace, metrics, now));
}
