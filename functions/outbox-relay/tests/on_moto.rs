//! The relay on moto's DynamoDB Streams: commits made in `PublishMode: stream` reach Kinesis
//! only through the write-model table's stream, in Lambda's event shape; a relay that dies
//! between publish and confirm is retried from the record it names, and the log keeps its
//! order.

use aws_lambda_events::event::dynamodb::Event;
use timeline_aws::table_stream::{decode, TableStreamReader};
use timeline_core::ports::{LogRecord, StreamReader, SystemClock, WriteModelStore};
use timeline_core::ride::{Location, RideAggregate, RideCommand};
use timeline_core::shards::{PageEnd, ReadFrom};
use timeline_core::write::{CommandRequest, PublishMode, RequestContext, WriteConfig};
use timeline_core::StreamKey;
use timeline_engine::write::CommandService;
use timeline_testkit::faults::Faults;
use timeline_testkit::TestEnv;

fn place(address: &str) -> Location {
    Location {
        address: address.into(),
        lat: 53.3,
        lon: -6.2,
    }
}

async fn command(env: &TestEnv, ride: &str, command: RideCommand) {
    let service = CommandService::with_config(
        env.store(),
        env.log(),
        SystemClock,
        WriteConfig {
            publish: PublishMode::Stream,
            ..WriteConfig::default()
        },
    );
    let outcome = service
        .execute::<RideAggregate>(CommandRequest {
            aggregate_id: ride.into(),
            command,
            expected_version: None,
            idempotency: None,
            context: RequestContext::default(),
        })
        .await
        .unwrap();
    assert!(outcome.relayed && !outcome.published);
}

fn book() -> RideCommand {
    RideCommand::Book {
        rider_id: "rider-1".into(),
        pickup: place("A"),
        dropoff: place("B"),
        fare_estimate_cents: Some(1000),
    }
}

fn adjust(cents: i64) -> RideCommand {
    RideCommand::AdjustFare {
        fare_cents: cents,
        reason: "traffic".into(),
    }
}

/// Every record of every shard from `from` (moto's table stream has one shard).
async fn read_stream(reader: &TableStreamReader, from: ReadFrom) -> Vec<LogRecord> {
    let mut records = Vec::new();
    for shard in reader.shards().await.unwrap() {
        let mut at = from.clone();
        loop {
            let page = reader.read(&shard.id, &at, 100).await.unwrap();
            at = page.next_from(&at);
            let end = page.end;
            records.extend(page.records);
            if end != PageEnd::Behind {
                break;
            }
        }
    }
    records
}

/// The batch Lambda would deliver for these records.
fn lambda_event(records: &[LogRecord]) -> Event {
    let decoded: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::to_value(decode(r).unwrap()).unwrap())
        .collect();
    serde_json::from_value(serde_json::json!({ "Records": decoded })).unwrap()
}

fn relay_handler(
    env: &TestEnv,
) -> outbox_relay::RelayHandler<
    timeline_aws::DynamoWriteStore,
    timeline_aws::KinesisEventLog,
    SystemClock,
> {
    outbox_relay::RelayHandler::new(env.store(), env.log(), SystemClock)
}

/// Each Kinesis record's (ride, version) pairs, in shard order.
async fn log_records(env: &TestEnv) -> Vec<Vec<(String, u64)>> {
    env.records()
        .await
        .iter()
        .map(|r| {
            timeline_core::codec::decode_record(&r.data)
                .unwrap()
                .events
                .iter()
                .map(|e| (e.aggregate_id.clone(), e.version))
                .collect()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn commits_reach_the_log_only_through_the_table_stream_and_the_relay() {
    let env = timeline_testkit::test_env!();
    command(&env, "r1", book()).await;
    command(&env, "r1", adjust(1500)).await;
    command(&env, "r2", book()).await;
    assert!(
        env.records().await.is_empty(),
        "nothing on the request path"
    );

    let reader = env.table_stream().await;
    let records = read_stream(&reader, ReadFrom::Oldest).await;
    // Three commits, each a head and an idempotency record (made keys are stored too).
    assert!(records.len() >= 3, "{} records", records.len());
    let relay = relay_handler(&env);
    let response = relay.handle(&lambda_event(&records)).await;
    assert!(response.batch_item_failures.is_empty());

    // One record per head, carrying its whole pending run.
    let mut logged = log_records(&env).await;
    logged.sort();
    assert_eq!(
        logged,
        [
            vec![("r1".to_owned(), 1), ("r1".to_owned(), 2)],
            vec![("r2".to_owned(), 1)]
        ]
    );
    for ride in ["r1", "r2"] {
        let head = env.store().load_head(&StreamKey::new("ride", ride)).await;
        assert_eq!(head.unwrap().unwrap().pending, [], "{ride} confirmed");
    }

    // The confirms are changes too; they leave no outbox, so relaying them does nothing.
    let last = records.last().unwrap().sequence_number.clone();
    let confirms = read_stream(&reader, ReadFrom::After(last)).await;
    assert_eq!(confirms.len(), 2, "one confirm per head");
    let response = relay.handle(&lambda_event(&confirms)).await;
    assert!(response.batch_item_failures.is_empty());
    assert_eq!(env.records().await.len(), 2, "nothing published again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_that_dies_between_publish_and_confirm_is_retried_from_its_record_and_order_holds()
{
    let (env, proxy) = timeline_testkit::proxy_env!();
    command(&env, "r1", book()).await;
    let reader = env.table_stream().await;
    let first = read_stream(&reader, ReadFrom::Oldest).await;

    // The confirm (an UpdateItem) never gets through: published, not confirmed.
    proxy.set(Faults {
        server_error: 1.0,
        only: vec!["UpdateItem".into()],
        ..Faults::none()
    });
    let relay = relay_handler(&env);
    let response = relay.handle(&lambda_event(&first)).await;
    let failed = response.batch_item_failures[0]
        .item_identifier
        .clone()
        .expect("the failed record is named");
    assert_eq!(failed, first[0].sequence_number, "the head's own change");
    assert_eq!(log_records(&env).await, [vec![("r1".to_owned(), 1)]]);

    // Another commit lands meanwhile; then Lambda retries from the named record.
    proxy.set(Faults::none());
    command(&env, "r1", adjust(1500)).await;
    let retry = read_stream(&reader, ReadFrom::At(failed)).await;
    let response = relay.handle(&lambda_event(&retry)).await;
    assert!(response.batch_item_failures.is_empty());

    // Version 1 twice (readers dedupe on it), never version 2 before it, nothing pending.
    assert_eq!(
        log_records(&env).await,
        [
            vec![("r1".to_owned(), 1)],
            vec![("r1".to_owned(), 1), ("r1".to_owned(), 2)]
        ]
    );
    let head = env.store().load_head(&StreamKey::new("ride", "r1")).await;
    assert_eq!(head.unwrap().unwrap().pending, []);
}
