//! Shared by the contract tests: throwaway data directories and small builders.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use timeline_core::ports::{Commit, Head, IdempotencyRecord};
use timeline_core::CommitRecord;
use timeline_core::EventEnvelope;
use timeline_core::Metadata;
use timeline_core::StreamKey;
use timeline_core::Timestamp;
use timeline_embedded::Embedded;

/// A fresh directory under the system temp dir, removed when dropped.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new() -> TempDir {
        let dir = std::env::temp_dir().join(format!("timeline-embedded-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn open(&self) -> Embedded {
        Embedded::open(&self.0).unwrap()
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub fn noon() -> Timestamp {
    at("2026-11-28T12:00:00.000Z")
}

pub fn ride(id: &str) -> StreamKey {
    StreamKey::new("ride", id)
}

pub fn event(key: &StreamKey, version: u64, recorded_at: Timestamp) -> EventEnvelope {
    EventEnvelope {
        event_id: format!("{key}-{version}"),
        aggregate_type: key.aggregate_type.clone(),
        aggregate_id: key.aggregate_id.clone(),
        version,
        event_type: "RideBooked".into(),
        schema_version: 1,
        occurred_at: recorded_at,
        recorded_at,
        metadata: Metadata {
            command_id: format!("c-{version}"),
            correlation_id: None,
            causation_id: None,
            actor: "rider-1".into(),
        },
        data: serde_json::json!({ "n": version }),
    }
}

/// A head at `version` whose outbox holds `pending` (versions ending at `version`).
pub fn head(
    key: &StreamKey,
    version: u64,
    pending: std::ops::RangeInclusive<u64>,
    at: Timestamp,
) -> Head {
    Head {
        key: key.clone(),
        version,
        state: serde_json::json!({ "version": version }),
        pending: pending.map(|v| event(key, v, at)).collect(),
        last_occurred_at: Some(at),
        updated_at: at,
        created_at: Some(at),
    }
}

/// A commit from `expected` to `version`, the new events pending on top of `still_pending`.
pub fn commit(
    key: &StreamKey,
    expected: u64,
    version: u64,
    first_pending: u64,
    now: Timestamp,
) -> Commit {
    Commit {
        expected_version: expected,
        head: head(key, version, first_pending..=version, now),
        idempotency: None,
        now,
    }
}

pub fn idempotency(
    key: &str,
    stream: &StreamKey,
    version: u64,
    expires_at: Timestamp,
) -> IdempotencyRecord {
    IdempotencyRecord {
        key: key.into(),
        fingerprint: format!("fp-{key}"),
        stream: stream.clone(),
        version,
        outcome: serde_json::json!({ "version": version }),
        expires_at,
    }
}

pub fn record(key: &StreamKey, versions: std::ops::RangeInclusive<u64>) -> CommitRecord {
    CommitRecord::new(versions.map(|v| event(key, v, noon())).collect()).unwrap()
}
