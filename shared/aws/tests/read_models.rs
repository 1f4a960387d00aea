//! The DynamoDB read models against moto: the read-model contract every store runs
//! (`timeline_testkit::read_model_contract`), and a stream position attached to a history
//! entry is kept; a later copy's position never moves it (a reader would skip the records
//! between).

use timeline_core::ports::LogPosition;
use timeline_core::ports::{PageRequest, PositionOf, ReadModelQueries, ReadModelStore, ViewWrite};
use timeline_core::views::HistoryEntry;
use timeline_core::StreamKey;
use timeline_core::Timestamp;

/// Fresh tables in moto for each test.
async fn fresh() -> Option<Box<timeline_aws::read_models::DynamoReadModels>> {
    let env = timeline_testkit::TestEnv::try_new().await?;
    Some(Box::new(env.read_models()))
}

timeline_testkit::read_model_contract!(fresh);

fn entry(key: &StreamKey, version: u64, at: Timestamp) -> HistoryEntry {
    HistoryEntry {
        aggregate_type: key.aggregate_type.clone(),
        aggregate_id: key.aggregate_id.clone(),
        version,
        event_type: "RideBooked".into(),
        occurred_at: at,
        recorded_at: at,
        actor: "rider-1".into(),
        event_id: format!("{key}-{version}"),
        data: serde_json::json!({ "v": version }),
        status_after: "booked".into(),
        position: None,
    }
}

#[tokio::test]
async fn a_stream_position_once_attached_is_kept() {
    let env = timeline_testkit::test_env!();
    let models = env.read_models();
    let key = StreamKey::new("ride", "p");
    let at: Timestamp = "2026-11-28T12:00:00.000Z".parse().unwrap();
    models
        .write(ViewWrite {
            key: key.clone(),
            expected_version: 0,
            version: 2,
            view: serde_json::json!({ "aggregate_id": "p", "version": 2, "status": "booked" }),
            status_family: "booked".into(),
            lookups: vec![],
            created_at: at,
            updated_at: at,
            history: vec![entry(&key, 1, at), entry(&key, 2, at)],
        })
        .await
        .unwrap();
    let position = |seq: &str, version| PositionOf {
        occurred_at: at,
        version,
        position: LogPosition {
            shard_id: "shardId-000000000003".into(),
            sequence_number: seq.into(),
            arrival: at,
        },
    };
    models
        .attach_positions(&key, &[position("111", 2)])
        .await
        .unwrap();
    // A second copy, and an entry that does not exist (nothing is created for it).
    models
        .attach_positions(&key, &[position("222", 2), position("333", 9)])
        .await
        .unwrap();
    let history = models
        .history(
            &key,
            None,
            None,
            &PageRequest {
                limit: 10,
                cursor: None,
            },
        )
        .await
        .unwrap();
    let positions: Vec<(u64, Option<String>)> = history
        .items
        .into_iter()
        .map(|e| (e.version, e.position.map(|p| p.sequence_number)))
        .collect();
    assert_eq!(positions, [(1, None), (2, Some("111".to_owned()))]);
}
