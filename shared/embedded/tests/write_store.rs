//! The write model's contract: the conditions of `MemoryStore` and the DynamoDB store.

mod common;

use common::*;
use std::sync::Arc;
use timeline_core::ports::{Commit, CommitError, WriteModelStore};

fn versions(head: &timeline_core::ports::Head) -> Vec<u64> {
    head.pending.iter().map(|e| e.version).collect()
}

#[tokio::test]
async fn a_commit_creates_the_head_then_moves_it_only_from_the_version_read() {
    let dir = TempDir::new();
    let store = dir.open();
    let key = ride("1");
    assert_eq!(store.load_head(&key).await.unwrap(), None);

    store.commit(commit(&key, 0, 1, 1, noon())).await.unwrap();
    let head = store.load_head(&key).await.unwrap().unwrap();
    assert_eq!(head, common::head(&key, 1, 1..=1, noon()));

    // Creating it again, or moving it from a version it is not at, is refused.
    assert_eq!(
        store.commit(commit(&key, 0, 1, 1, noon())).await,
        Err(CommitError::HeadConflict)
    );
    assert_eq!(
        store.commit(commit(&key, 2, 3, 1, noon())).await,
        Err(CommitError::HeadConflict)
    );
    store.commit(commit(&key, 1, 3, 1, noon())).await.unwrap();
    let head = store.load_head(&key).await.unwrap().unwrap();
    assert_eq!(head.version, 3);
    assert_eq!(versions(&head), [1, 2, 3]);
}

/// `store` for even `i`, for odd `i` a second handle on its database opened the same way
/// (connections of its own, as a second process would have).
fn alternating(
    store: &timeline_embedded::Embedded,
) -> impl Fn(usize) -> timeline_embedded::Embedded {
    let other = timeline_embedded::Embedded::open(store.dir()).unwrap();
    let other = if store.appends_on_commit() {
        other.appending_on_commit()
    } else {
        other
    };
    let store = store.clone();
    move |i| {
        if i % 2 == 0 {
            store.clone()
        } else {
            other.clone()
        }
    }
}

/// Fifty commits at once, alternating between two handles on the directory.
async fn race(
    store: &timeline_embedded::Embedded,
    make: impl Fn(usize) -> Commit,
) -> Vec<Result<(), CommitError>> {
    let handle = alternating(store);
    let barrier = Arc::new(tokio::sync::Barrier::new(50));
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = handle(i);
            let barrier = barrier.clone();
            let commit = make(i);
            tokio::spawn(async move {
                barrier.wait().await;
                store.commit(commit).await
            })
        })
        .collect();
    let mut results = Vec::new();
    for task in tasks {
        results.push(task.await.unwrap());
    }
    results
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_commits_at_one_version_exactly_one_wins() {
    let dir = TempDir::new();
    let store = dir.open();
    let key = ride("race");
    store.commit(commit(&key, 0, 1, 1, noon())).await.unwrap();

    let results = race(&store, |i| {
        let mut c = commit(&key, 1, 2, 1, noon());
        c.head.state = serde_json::json!({ "writer": i });
        c
    })
    .await;
    let winners: Vec<usize> = (0..50).filter(|i| results[*i].is_ok()).collect();
    assert_eq!(winners.len(), 1, "{results:?}");
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(()) | Err(CommitError::HeadConflict))));
    let head = store.load_head(&key).await.unwrap().unwrap();
    assert_eq!(head.version, 2);
    assert_eq!(head.state, serde_json::json!({ "writer": winners[0] }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_creations_of_one_entity_exactly_one_wins() {
    let dir = TempDir::new();
    let store = dir.open();
    let key = ride("new");
    let results = race(&store, |_| commit(&key, 0, 1, 1, noon())).await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn fifty_concurrent_commits_with_one_idempotency_key_exactly_one_wins() {
    let dir = TempDir::new();
    let store = dir.open();
    let expires = noon().plus_millis(60_000);
    let results = race(&store, |i| {
        let key = ride(&format!("k{i}"));
        let mut c = commit(&key, 0, 1, 1, noon());
        c.idempotency = Some(idempotency("same-key", &key, 1, expires));
        c
    })
    .await;
    assert_eq!(results.iter().filter(|r| r.is_ok()).count(), 1);
    assert!(results
        .iter()
        .all(|r| matches!(r, Ok(()) | Err(CommitError::IdempotencyConflict))));
    // The losers wrote nothing: exactly one head exists.
    let mut heads = 0;
    for i in 0..50 {
        heads += store
            .load_head(&ride(&format!("k{i}")))
            .await
            .unwrap()
            .is_some() as usize;
    }
    assert_eq!(heads, 1);
}

#[tokio::test]
async fn a_live_key_refuses_the_commit_and_nothing_is_written() {
    let dir = TempDir::new();
    let store = dir.open();
    let (a, b) = (ride("a"), ride("b"));
    let expires = noon().plus_millis(1000);
    let mut first = commit(&a, 0, 1, 1, noon());
    first.idempotency = Some(idempotency("k", &a, 1, expires));
    store.commit(first).await.unwrap();

    let mut second = commit(&b, 0, 1, 1, noon().plus_millis(999));
    second.idempotency = Some(idempotency("k", &b, 1, expires.plus_millis(1000)));
    assert_eq!(
        store.commit(second).await,
        Err(CommitError::IdempotencyConflict)
    );
    assert_eq!(store.load_head(&b).await.unwrap(), None);
    let kept = store.load_idempotency("k", noon()).await.unwrap().unwrap();
    assert_eq!(kept, idempotency("k", &a, 1, expires));
}

#[tokio::test]
async fn a_key_conflict_is_reported_before_a_head_conflict() {
    // As the DynamoDB transaction reports it when both conditions fail.
    let dir = TempDir::new();
    let store = dir.open();
    let key = ride("a");
    let mut first = commit(&key, 0, 1, 1, noon());
    first.idempotency = Some(idempotency("k", &key, 1, noon().plus_millis(1000)));
    store.commit(first.clone()).await.unwrap();
    assert_eq!(
        store.commit(first).await,
        Err(CommitError::IdempotencyConflict)
    );
}

#[tokio::test]
async fn an_expired_key_reads_as_absent_and_may_be_used_again() {
    let dir = TempDir::new();
    let store = dir.open();
    let (a, b) = (ride("a"), ride("b"));
    let expires = noon().plus_millis(1000);
    let mut first = commit(&a, 0, 1, 1, noon());
    first.idempotency = Some(idempotency("k", &a, 1, expires));
    store.commit(first).await.unwrap();

    assert!(store
        .load_idempotency("k", expires.plus_millis(-1))
        .await
        .unwrap()
        .is_some());
    // Live while `expires_at > now`, as in MemoryStore.
    assert_eq!(store.load_idempotency("k", expires).await.unwrap(), None);
    assert_eq!(store.load_idempotency("other", noon()).await.unwrap(), None);

    let mut again = commit(&b, 0, 1, 1, expires);
    let replacement = idempotency("k", &b, 1, expires.plus_millis(5000));
    again.idempotency = Some(replacement.clone());
    store.commit(again).await.unwrap();
    assert_eq!(
        store.load_idempotency("k", expires).await.unwrap(),
        Some(replacement)
    );
}

#[tokio::test]
async fn confirming_the_whole_outbox_clears_it_and_leaves_the_index() {
    let dir = TempDir::new();
    let store = dir.open();
    let key = ride("a");
    store.commit(commit(&key, 0, 3, 1, noon())).await.unwrap();
    assert_eq!(
        store.pending_heads(10).await.unwrap(),
        std::slice::from_ref(&key)
    );

    store.confirm_published(&key, 1, 3).await.unwrap();
    let head = store.load_head(&key).await.unwrap().unwrap();
    assert!(head.pending.is_empty());
    assert_eq!(head.version, 3);
    assert!(store.pending_heads(10).await.unwrap().is_empty());
    // Confirming again changes nothing.
    store.confirm_published(&key, 1, 3).await.unwrap();
    assert_eq!(store.load_head(&key).await.unwrap().unwrap(), head);
}

#[tokio::test]
async fn confirming_a_prefix_keeps_the_events_committed_since() {
    let dir = TempDir::new();
    let store = dir.open();
    let key = ride("a");
    store.commit(commit(&key, 0, 2, 1, noon())).await.unwrap();
    // A later commit appended 3..=4 before the publish of 1..=2 was confirmed.
    store.commit(commit(&key, 2, 4, 1, noon())).await.unwrap();
    store.confirm_published(&key, 1, 2).await.unwrap();
    let head = store.load_head(&key).await.unwrap().unwrap();
    assert_eq!(versions(&head), [3, 4]);
    assert_eq!(
        store.pending_heads(10).await.unwrap(),
        std::slice::from_ref(&key)
    );

    // A stale confirmation (the outbox no longer starts at 1) drops nothing.
    store.confirm_published(&key, 1, 4).await.unwrap();
    assert_eq!(
        versions(&store.load_head(&key).await.unwrap().unwrap()),
        [3, 4]
    );
    store.confirm_published(&key, 3, 4).await.unwrap();
    assert!(store
        .load_head(&key)
        .await
        .unwrap()
        .unwrap()
        .pending
        .is_empty());
    // Confirming for an entity that does not exist is harmless.
    store.confirm_published(&ride("none"), 1, 1).await.unwrap();
}

#[tokio::test]
async fn the_pending_index_is_sparse_and_oldest_first() {
    let dir = TempDir::new();
    let store = dir.open();
    // Committed in this order, pending since these times.
    let entries = [("c", 3_000), ("a", 1_000), ("d", 4_000), ("b", 2_000)];
    for (id, offset) in entries {
        store
            .commit(commit(&ride(id), 0, 1, 1, noon().plus_millis(offset)))
            .await
            .unwrap();
    }
    store
        .commit(commit(&ride("clean"), 0, 1, 1, noon()))
        .await
        .unwrap();
    store.confirm_published(&ride("clean"), 1, 1).await.unwrap();

    assert_eq!(
        store.pending_heads(10).await.unwrap(),
        [ride("a"), ride("b"), ride("c"), ride("d")]
    );
    assert_eq!(
        store.pending_heads(2).await.unwrap(),
        [ride("a"), ride("b")]
    );
    store.confirm_published(&ride("a"), 1, 1).await.unwrap();
    assert_eq!(store.pending_heads(1).await.unwrap(), [ride("b")]);
}

#[tokio::test]
async fn heads_and_keys_survive_reopening_the_directory() {
    let dir = TempDir::new();
    let key = ride("durable");
    let expires = noon().plus_millis(60_000);
    {
        let store = dir.open();
        let mut c = commit(&key, 0, 2, 1, noon());
        c.idempotency = Some(idempotency("k", &key, 2, expires));
        store.commit(c).await.unwrap();
    }
    let store = dir.open();
    let head = store.load_head(&key).await.unwrap().unwrap();
    assert_eq!(head, common::head(&key, 2, 1..=2, noon()));
    assert_eq!(
        store.load_idempotency("k", noon()).await.unwrap(),
        Some(idempotency("k", &key, 2, expires))
    );
    assert_eq!(store.pending_heads(5).await.unwrap(), [key]);
}

#[test]
fn the_ports_work_without_a_tokio_runtime() {
    // Outside a runtime the store runs inline (a CLI may drive it with any executor).
    let dir = TempDir::new();
    let store = dir.open();
    let key = ride("sync");
    let future = store.commit(commit(&key, 0, 1, 1, noon()));
    futures_lite_block_on(future).unwrap();
    let head = futures_lite_block_on(store.load_head(&key)).unwrap();
    assert_eq!(head.map(|h| h.version), Some(1));
}

/// A minimal executor: the store's futures are ready on their first poll outside tokio.
fn futures_lite_block_on<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(value) => value,
        std::task::Poll::Pending => {
            panic!("the store's futures complete on their first poll outside a runtime")
        }
    }
}

/// Every record on the log, oldest first, with the versions it carries.
async fn log_versions(store: &timeline_embedded::Embedded) -> Vec<(String, Vec<u64>)> {
    use timeline_core::ports::StreamReader;
    let mut records = Vec::new();
    for shard in store.shards().await.unwrap() {
        let page = store
            .read(&shard.id, &timeline_core::shards::ReadFrom::Oldest, 100)
            .await
            .unwrap();
        for r in page.records {
            let events = timeline_core::codec::decode_record(&r.data).unwrap().events;
            records.push((
                r.sequence_number,
                events.iter().map(|e| e.version).collect(),
            ));
        }
    }
    records.sort();
    records
}

#[tokio::test]
async fn appending_on_commit_puts_the_head_and_its_whole_outbox_on_the_log_in_one_step() {
    let dir = TempDir::new();
    let plain = dir.open();
    let appending = plain.appending_on_commit();
    let key = ride("1");

    // A handle not made for it keeps the protocol's two steps: the events wait in the outbox.
    let published = plain
        .commit_and_append(commit(&key, 0, 1, 1, noon()))
        .await
        .unwrap();
    assert_eq!(published, None);
    assert_eq!(
        versions(&plain.load_head(&key).await.unwrap().unwrap()),
        [1]
    );
    assert!(log_versions(&plain).await.is_empty());

    // Appending, the record holds every pending event (v1 left over, v2 new), in order, and
    // the head keeps none.
    let published = appending
        .commit_and_append(commit(&key, 1, 2, 1, noon()))
        .await
        .unwrap()
        .expect("appended");
    let head = appending.load_head(&key).await.unwrap().unwrap();
    assert_eq!((head.version, versions(&head)), (2, vec![]));
    assert_eq!(
        log_versions(&plain).await,
        [(published.sequence_number.clone(), vec![1, 2])]
    );
    assert_eq!(
        published.shard_id,
        timeline_embedded::shard_id(timeline_embedded::shard_of(
            &key.partition_key(),
            plain.shard_count()
        ))
    );
    // The head left the sweep's index.
    assert!(plain.pending_heads(10).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_refused_commit_appends_nothing() {
    let dir = TempDir::new();
    let store = dir.open().appending_on_commit();
    let (a, b) = (ride("a"), ride("b"));
    let expires = noon().plus_millis(60_000);
    let mut first = commit(&a, 0, 1, 1, noon());
    first.idempotency = Some(idempotency("k", &a, 1, expires));
    store.commit_and_append(first).await.unwrap().unwrap();
    let before = log_versions(&store).await;
    assert_eq!(before.len(), 1);

    // A head that moved, and a key in use: refused, and the log is as it was.
    assert_eq!(
        store.commit_and_append(commit(&a, 0, 1, 1, noon())).await,
        Err(CommitError::HeadConflict)
    );
    let mut reused = commit(&b, 0, 1, 1, noon());
    reused.idempotency = Some(idempotency("k", &b, 1, expires));
    assert_eq!(
        store.commit_and_append(reused).await,
        Err(CommitError::IdempotencyConflict)
    );
    assert_eq!(log_versions(&store).await, before);
    assert_eq!(store.load_head(&b).await.unwrap(), None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn racing_appending_commits_put_one_record_per_winner_in_version_order() {
    let dir = TempDir::new();
    let store = dir.open().appending_on_commit();
    let key = ride("hot");
    // Fifty writers, each reading the head and committing the next version until it wins
    // once, on two handles (two connections).
    let handle = alternating(&store);
    let tasks: Vec<_> = (0..50)
        .map(|i| {
            let store = handle(i);
            let key = key.clone();
            tokio::spawn(async move {
                loop {
                    let at = store
                        .load_head(&key)
                        .await
                        .unwrap()
                        .map_or(0, |h| h.version);
                    match store
                        .commit_and_append(commit(&key, at, at + 1, at + 1, noon()))
                        .await
                    {
                        Ok(published) => return published.expect("appended"),
                        Err(CommitError::HeadConflict | CommitError::Busy) => continue,
                        Err(e) => panic!("{e}"),
                    }
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    let log = log_versions(&store).await;
    let versions: Vec<Vec<u64>> = log.into_iter().map(|(_, v)| v).collect();
    assert_eq!(versions, (1..=50).map(|v| vec![v]).collect::<Vec<_>>());
}
