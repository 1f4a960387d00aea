//! Time travel and replays across a reshard and the stream's retention, against moto behind
//! the fault proxy (whose resharding keeps a closed parent's records, as Kinesis does): one
//! ride's versions on a closed parent and its children are read in order, including versions
//! the processor has not indexed yet; an index without stream positions (read models rebuilt
//! from the archive) still finds recent versions on the ride's own shard; a replay resumed
//! from a shard that has since expired starts again rather than skipping.

use command_handler::CommandApi;
use hydrator::wiring::AwsStored;
use hydrator::Hydrator;
use processor::ProcessorHandler;
use serde_json::json;
use timeline_aws::archive::S3Archive;
use timeline_aws::event_source::{aws_event_source, AwsEventSource};
use timeline_aws::stream_reader::{read_all, KinesisReader};
use timeline_core::ports::EventSource;
use timeline_core::ports::{StreamReader, SystemClock};
use timeline_core::shards::lineage;
use timeline_core::time::Deadline;
use timeline_core::timetravel::AsOf;
use timeline_core::StreamKey;
use timeline_testkit::{kinesis_event, post, read, TestEnv};

mod support;
use support::{hydrator_for, project, source_for, Target, PREFIX};

type Api = CommandApi<timeline_aws::DynamoWriteStore, timeline_aws::KinesisEventLog, SystemClock>;

async fn adjust(api: &Api, id: &str, fares: std::ops::RangeInclusive<i64>) {
    for fare in fares {
        let (status, body, _) = read(
            api.handle(post(
                &format!("/rides/{id}/adjust-fare"),
                &json!({ "fare_cents": fare, "reason": "r" }),
                &[],
            ))
            .await,
        );
        assert_eq!(status, 200, "{body}");
    }
}

async fn book(api: &Api, id: &str) {
    let place = |a: &str| json!({ "address": a, "lat": 53.3, "lon": -6.2 });
    let (status, body, _) = read(
        api.handle(post(
            "/rides",
            &json!({ "id": id, "rider_id": "r", "pickup": place("A"), "dropoff": place("B") }),
            &[],
        ))
        .await,
    );
    assert_eq!(status, 201, "{body}");
}

fn hydrator(env: &TestEnv) -> Hydrator<AwsEventSource, AwsStored, Target> {
    hydrator_for(env, source_for(env, &env.names.event_stream, PREFIX))
}

/// Splits the shard that holds `id` at its hash, runs `between`, and merges the two children
/// back.
async fn split_and_merge(env: &TestEnv, id: &str, between: impl AsyncFnOnce()) {
    let parent = env.split_at(&format!("ride#{id}")).await;
    between().await;
    env.merge_children(&parent).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rides_versions_on_a_closed_parent_and_its_children_are_read_in_order() {
    let (env, _proxy) = timeline_testkit::proxy_env!();
    let api = CommandApi::new(env.store(), env.log(), SystemClock);
    book(&api, "x").await;
    adjust(&api, "x", 1001..=1003).await;
    project(&env).await;
    // Versions 5 and 6 on a child, 7 and 8 on the grandchild; none of them indexed yet.
    split_and_merge(&env, "x", async || adjust(&api, "x", 1004..=1005).await).await;
    adjust(&api, "x", 1006..=1007).await;
    let answer = hydrator(&env)
        .state(&StreamKey::new("ride", "x"), AsOf::Now, &Deadline::none())
        .await
        .unwrap();
    assert_eq!(answer["complete"], true, "{answer}");
    assert_eq!(answer["view"]["version"], 8);
    assert_eq!(answer["view"]["state"]["fare_cents"], 1007);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_index_without_stream_positions_still_finds_recent_versions_on_the_rides_shard() {
    let (env, proxy) = timeline_testkit::proxy_env!();
    let api = CommandApi::new(env.store(), env.log(), SystemClock);
    book(&api, "y").await;
    adjust(&api, "y", 1001..=1002).await;
    // Other rides' records on the stream.
    for i in 0..20 {
        book(&api, &format!("other-{i}")).await;
    }
    // The index as a rebuild from the archive leaves it: no stream positions.
    let h = ProcessorHandler::new(env.read_models(), SystemClock);
    let mut records = env.records().await;
    records.retain(|r| r.partition_key == "ride#y");
    let mut event: processor::KinesisBatch =
        kinesis_event(&records, "arn:aws:kinesis:us-east-1:000000000000:stream/t");
    for r in &mut event.records {
        r.event_id = None;
    }
    assert!(h.handle(event).await.batch_item_failures.is_empty());
    adjust(&api, "y", 1003..=1004).await;
    proxy.reset_requests();
    let answer = hydrator(&env)
        .state(&StreamKey::new("ride", "y"), AsOf::Now, &Deadline::none())
        .await
        .unwrap();
    assert_eq!(answer["complete"], true, "{answer}");
    assert_eq!(answer["view"]["version"], 5);
    // Read from when its last indexed event was recorded, on its shard: one page.
    let reads = proxy.requests()["kinesis:GetRecords"];
    assert!(reads <= 2, "{:?}", proxy.requests());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_resumed_on_a_shard_that_has_expired_starts_again_not_past_it() {
    let (env, proxy) = timeline_testkit::proxy_env!();
    let api = CommandApi::new(env.store(), env.log(), SystemClock);
    book(&api, "z").await;
    let reader = KinesisReader::new(env.clients.kinesis().clone(), &env.names.event_stream);
    let hash = reader.key_hash("ride#z");
    let parent = lineage(&reader.shards().await.unwrap(), hash)[0].id.clone();
    split_and_merge(&env, "z", async || adjust(&api, "z", 1001..=1002).await).await;
    adjust(&api, "z", 1003..=1003).await;
    let source: AwsEventSource = aws_event_source(
        S3Archive::new(
            env.clients.s3().clone(),
            &env.names.archive_bucket,
            "events/",
        ),
        env.clients.kinesis().clone(),
        &env.names.event_stream,
        None,
        None,
    );
    // A replay stopped on the parent; then the parent passes the stream's retention.
    let first = read_all(env.clients.kinesis(), &env.names.event_stream)
        .await
        .unwrap()
        .into_iter()
        .find(|r| r.shard_id == parent)
        .unwrap();
    let position = format!("tail:{parent}:{}", first.sequence_number);
    proxy.trim(&env.names.event_stream, &parent, &first.sequence_number);
    proxy.retire(&env.names.event_stream, &parent);
    let mut versions = Vec::new();
    let mut at = Some(position);
    while let Some(chunk) = source
        .next_chunk(at.as_deref(), &Deadline::none())
        .await
        .unwrap()
    {
        versions.extend(
            chunk
                .records
                .iter()
                .filter(|r| r.partition_key().as_deref() == Some("ride#z"))
                .flat_map(|r| r.events.iter().map(|e| e.version)),
        );
        at = Some(chunk.position);
    }
    // Everything still on the stream is read: the children's versions, in order.
    assert_eq!(versions, [2, 3, 4]);
}
