//! The operator commands' answers as text for people: a state as its fields, a history as a
//! timeline (who, why, what changed), verify's drift as a table, rebuild and replay as a
//! summary. Anything incomplete is said first. `--json` prints the JSON answer instead.

use crate::operate::Operation;
use serde_json::Value;
use std::collections::BTreeMap;
use std::fmt::Write;

/// The answer of `operation` as text.
pub fn render(operation: &Operation, answer: &Value) -> String {
    let mut out = String::new();
    match operation {
        Operation::State { .. } => state(&mut out, answer),
        Operation::History { .. } => history(&mut out, answer),
        Operation::Verify => verify(&mut out, answer),
        Operation::Rebuild { .. } => rebuild(&mut out, answer),
        Operation::ReplayArchive { .. } => replay(&mut out, answer),
        Operation::Parked | Operation::Redrive { .. } => fields(&mut out, "", answer),
    }
    out
}

/// A JSON value as one short piece of text (strings unquoted, null as `-`).
fn short(value: &Value) -> String {
    match value {
        Value::Null => "-".into(),
        Value::String(s) => s.clone(),
        Value::Object(map) => {
            // A tagged item (`kind`) reads as "kind: field=value, ...".
            let tag = map.get("kind").and_then(Value::as_str);
            let rest: Vec<String> = map
                .iter()
                .filter(|(k, _)| k.as_str() != "kind")
                .map(|(k, v)| format!("{k}={}", short(v)))
                .collect();
            match tag {
                Some(tag) => format!("{tag}: {}", rest.join(", ")),
                None => rest.join(", "),
            }
        }
        Value::Array(items) => items.iter().map(short).collect::<Vec<_>>().join(", "),
        other => other.to_string(),
    }
}

/// Nested objects as dotted paths to their leaves, in key order.
fn flatten(prefix: &str, value: &Value, into: &mut BTreeMap<String, Value>) {
    match value {
        Value::Object(map) if !map.is_empty() => {
            for (k, v) in map {
                let path = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&path, v, into);
            }
        }
        other => {
            into.insert(prefix.to_owned(), other.clone());
        }
    }
}

fn fields(out: &mut String, indent: &str, value: &Value) {
    let mut flat = BTreeMap::new();
    flatten("", value, &mut flat);
    let width = flat.keys().map(String::len).max().unwrap_or(0);
    for (k, v) in flat {
        let _ = writeln!(out, "{indent}{k:<width$}  {}", short(&v));
    }
}

/// Says plainly what an answer misses: versions, unreadable events, parts of the log.
fn gaps(out: &mut String, answer: &Value) {
    if answer["complete"] == Value::Bool(true) {
        return;
    }
    let _ = writeln!(
        out,
        "INCOMPLETE: this answer does not hold every version up to its point"
    );
    let missing = answer["missing_versions"]
        .as_array()
        .filter(|m| !m.is_empty());
    if let Some(missing) = missing {
        let _ = writeln!(
            out,
            "  missing versions: {}",
            short(&Value::Array(missing.clone()))
        );
    }
    for issue in answer["issues"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "  {}", short(issue));
    }
    problems(out, answer);
}

fn problems(out: &mut String, answer: &Value) {
    for p in answer["problems"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "  log unreadable at {}: {}",
            short(&p["location"]),
            short(&p["reason"])
        );
    }
}

fn point(as_of: &Value) -> String {
    match as_of {
        Value::String(s) if s == "now" => "now".into(),
        Value::Object(m) if m.contains_key("version") => {
            format!("at version {}", short(&m["version"]))
        }
        Value::Object(m) if m.contains_key("time") => format!("as of {}", short(&m["time"])),
        other => format!("as of {}", short(other)),
    }
}

fn state(out: &mut String, answer: &Value) {
    let entity = short(&answer["entity"]);
    let at = point(&answer["as_of"]);
    if answer["exists"] != Value::Bool(true) {
        let _ = writeln!(out, "{entity} does not exist {at}");
        gaps(out, answer);
        return;
    }
    let view = &answer["view"];
    let latest = match answer["latest_version"].as_u64() {
        Some(latest) => format!(" of {latest}"),
        None => String::new(),
    };
    let _ = writeln!(
        out,
        "{entity} {at}: version {}{latest}, status {}, updated {}",
        short(&view["version"]),
        short(&view["status"]),
        short(&view["updated_at"])
    );
    gaps(out, answer);
    fields(out, "  ", &view["state"]);
}

fn history(out: &mut String, answer: &Value) {
    let entity = short(&answer["entity"]);
    let steps = answer["steps"].as_array().cloned().unwrap_or_default();
    let range = match (&answer["from"], &answer["to"]) {
        (Value::Null, Value::Null) => String::new(),
        (from, to) => format!(" from {} to {}", short(from), short(to)),
    };
    let _ = writeln!(out, "{entity}{range}: {} events", steps.len());
    gaps(out, answer);
    let actor_width = steps
        .iter()
        .map(|s| short(&s["actor"]).len())
        .max()
        .unwrap_or(0)
        .min(40);
    let mut before = BTreeMap::new();
    for step in &steps {
        let mut after = BTreeMap::new();
        flatten("", &step["state_after"], &mut after);
        let reason = match step.get("reason").filter(|r| !r.is_null()) {
            Some(r) => format!(" ({})", short(r)),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "  {} v{:<3} {:<22} by {:<actor_width$} -> {}{reason}",
            short(&step["occurred_at"]),
            short(&step["version"]),
            short(&step["type"]),
            short(&step["actor"]),
            short(&step["status_after"]),
        );
        if !before.is_empty() {
            let changed: Vec<String> = after
                .iter()
                .filter(|(k, v)| before.get(*k) != Some(*v))
                .map(|(k, v)| {
                    let was = before.get(k).map_or("-".into(), short);
                    format!("{k} {was} -> {}", short(v))
                })
                .collect();
            if !changed.is_empty() {
                let _ = writeln!(out, "        changed: {}", changed.join("; "));
            }
        }
        before = after;
    }
}

fn verify(out: &mut String, answer: &Value) {
    let drift = answer["drift"].as_array().cloned().unwrap_or_default();
    let _ = writeln!(
        out,
        "verified {} entities ({} records of the log): {}",
        short(&answer["entities"]),
        short(&answer["records"]),
        if drift.is_empty() {
            "no drift".to_owned()
        } else {
            format!("{} differences", drift.len())
        }
    );
    if !drift.is_empty() {
        let width = drift
            .iter()
            .map(|d| short(&d["entity"]).len())
            .max()
            .unwrap_or(6)
            .max(6);
        let _ = writeln!(out, "  {:<width$}  {:<16}  detail", "entity", "difference");
        for d in &drift {
            let detail: Vec<String> = d
                .as_object()
                .into_iter()
                .flatten()
                .filter(|(k, _)| !matches!(k.as_str(), "kind" | "entity"))
                .map(|(k, v)| format!("{k}={}", short(v)))
                .collect();
            let _ = writeln!(
                out,
                "  {:<width$}  {:<16}  {}",
                short(&d["entity"]),
                short(&d["kind"]),
                detail.join(", ")
            );
        }
    }
    problems(out, answer);
}

fn rebuild(out: &mut String, answer: &Value) {
    let _ = writeln!(
        out,
        "rebuilt the read models from {} records of the log: {} events applied, {} copies skipped",
        short(&answer["records"]),
        short(&answer["events_applied"]),
        short(&answer["duplicates_skipped"]),
    );
    if answer["finished"] != Value::Bool(true) {
        let position = short(&answer["position"]);
        let _ = writeln!(
            out,
            "NOT FINISHED: it stopped at {position}; continue with --resume-after {position}"
        );
    }
    for (k, v) in answer.as_object().into_iter().flatten() {
        if !matches!(
            k.as_str(),
            "records"
                | "events_applied"
                | "duplicates_skipped"
                | "finished"
                | "position"
                | "problems"
                | "chunks"
        ) && !v.is_null()
            && v.as_array().is_none_or(|a| !a.is_empty())
        {
            let _ = writeln!(out, "  {k}: {}", short(v));
        }
    }
    problems(out, answer);
}

fn replay(out: &mut String, answer: &Value) {
    let _ = writeln!(
        out,
        "published {} records ({} events) from {} archive objects; {} copies skipped",
        short(&answer["records_published"]),
        short(&answer["events"]),
        short(&answer["objects"]),
        short(&answer["duplicates_skipped"]),
    );
    problems(out, answer);
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn state_op() -> Operation {
        Operation::State {
            kind: "ride".into(),
            id: "r".into(),
            as_of: None,
            version: Some(5),
        }
    }

    #[test]
    fn a_state_reads_as_its_fields() {
        let answer = json!({"as_of":{"version":5},"complete":true,"entity":"ride#r","exists":true,
            "issues":[],"latest_version":7,"missing_versions":[],"problems":[],
            "view":{"status":"in_progress","updated_at":"2026-12-02T12:51:39.290Z","version":5,
                "state":{"driver_id":"driver-7","fare_cents":10000,"cancel_reason":null,
                    "pickup":{"address":"Trinity College, Dublin","lat":53.3438}}}});
        let text = render(&state_op(), &answer);
        assert!(
            text.starts_with("ride#r at version 5: version 5 of 7, status in_progress"),
            "{text}"
        );
        assert!(text.contains("\n  fare_cents      10000\n"), "{text}");
        assert!(
            text.contains("\n  pickup.address  Trinity College, Dublin\n"),
            "{text}"
        );
        assert!(text.contains("\n  cancel_reason   -\n"), "{text}");
        assert!(!text.contains('{'), "no JSON: {text}");
    }

    #[test]
    fn an_incomplete_state_says_so_first() {
        let answer = json!({"as_of":"now","complete":false,"entity":"ride#r","exists":true,
            "issues":[{"kind":"gap","expected":3,"found":4}],"missing_versions":[3],
            "problems":[{"location":"events/2026/11/28/10/x.gz","reason":"corrupt gzip"}],
            "view":{"status":"booked","version":2,"state":{}}});
        let text = render(&state_op(), &answer);
        let lines: Vec<&str> = text.lines().collect();
        assert!(lines[1].starts_with("INCOMPLETE"), "{text}");
        assert!(text.contains("missing versions: 3"), "{text}");
        assert!(text.contains("gap: expected=3, found=4"), "{text}");
        assert!(
            text.contains("log unreadable at events/2026/11/28/10/x.gz: corrupt gzip"),
            "{text}"
        );
    }

    #[test]
    fn a_state_before_the_entity_existed_says_it_did_not() {
        let answer = json!({"as_of":"now","complete":true,"entity":"ride#nope","exists":false,
            "issues":[],"missing_versions":[],"problems":[],"view":null});
        assert_eq!(
            render(&state_op(), &answer),
            "ride#nope does not exist now\n"
        );
    }

    #[test]
    fn a_history_reads_as_a_timeline_with_who_why_and_what_changed() {
        let answer = json!({"complete":true,"entity":"video#v","from":null,"to":null,"issues":[],
            "missing_versions":[],"problems":[],"steps":[
            {"actor":"operator-1","occurred_at":"2026-12-02T12:51:39.434Z","status_after":"uploaded",
             "type":"VideoUploaded","version":1,"state_after":{"phase":"uploaded","progress":null}},
            {"actor":"pipeline","occurred_at":"2026-12-02T12:51:39.482Z","status_after":"processing:50%",
             "type":"ProcessingProgressed","version":3,"state_after":{"phase":"processing","progress":50}},
            {"actor":"pipeline","occurred_at":"2026-12-02T12:51:39.510Z","reason":"timeout",
             "status_after":"failed","type":"ProcessingFailed","version":4,
             "state_after":{"phase":"failed","progress":50}}]});
        let op = Operation::History {
            kind: "video".into(),
            id: "v".into(),
            from: None,
            to: None,
        };
        let text = render(&op, &answer);
        assert!(text.starts_with("video#v: 3 events\n"), "{text}");
        assert!(
            text.contains("v1   VideoUploaded          by operator-1 -> uploaded\n"),
            "{text}"
        );
        assert!(text.contains("-> failed (timeout)"), "{text}");
        assert!(
            text.contains("changed: phase uploaded -> processing; progress - -> 50"),
            "{text}"
        );
        assert!(!text.contains('{'), "{text}");
    }

    #[test]
    fn verify_is_a_line_without_drift_and_a_table_with_it() {
        let clean = json!({"drift":[],"entities":3,"problems":[],"records":26});
        assert_eq!(
            render(&Operation::Verify, &clean),
            "verified 3 entities (26 records of the log): no drift\n"
        );
        let drifted = json!({"drift":[
            {"kind":"stale_view","entity":"ride#r1","log_version":7,"view_version":5},
            {"kind":"missing_view","entity":"video#v2","log_version":4}],
            "entities":3,"problems":[],"records":26});
        let text = render(&Operation::Verify, &drifted);
        assert!(text.contains("2 differences"), "{text}");
        assert!(
            text.contains("  entity    difference        detail\n"),
            "{text}"
        );
        assert!(
            text.contains("  ride#r1   stale_view        log_version=7, view_version=5\n"),
            "{text}"
        );
        assert!(
            text.contains("  video#v2  missing_view      log_version=4\n"),
            "{text}"
        );
    }

    #[test]
    fn rebuild_and_replay_are_summaries_and_an_unfinished_rebuild_says_how_to_go_on() {
        let done = json!({"chunks":4,"duplicates_skipped":13,"events_applied":13,"finished":true,
            "position":"tail","problems":[],"records":26});
        let op = Operation::Rebuild {
            into: None,
            resume_after: None,
        };
        assert_eq!(
            render(&op, &done),
            "rebuilt the read models from 26 records of the log: 13 events applied, 13 copies skipped\n"
        );
        let stopped = json!({"duplicates_skipped":0,"events_applied":5,"finished":false,
            "position":"archive:events/2026/x.gz","problems":[],"records":5});
        assert!(
            render(&op, &stopped).contains("continue with --resume-after archive:events/2026/x.gz")
        );
        let replay = json!({"duplicates_skipped":0,"events":13,"objects":1,"problems":[],
            "records_published":13});
        let op = Operation::ReplayArchive {
            since: None,
            until: None,
        };
        assert_eq!(
            render(&op, &replay),
            "published 13 records (13 events) from 1 archive objects; 0 copies skipped\n"
        );
    }
}
