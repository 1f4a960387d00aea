//! The read models' contract, one test code for every store (DynamoDB on moto, SQLite,
//! PostgreSQL): conditional view writes, idempotent history, lists newest first and history
//! oldest first with DynamoDB's keys, paging with cursors bound to their query, positions
//! kept as the in-memory models keep them. A store's test file runs it with
//! [`read_model_contract!`](crate::read_model_contract), given a function that makes a fresh,
//! empty store (None: skipped, said on stderr).

use timeline_core::ports::{
    Lookup, LookupKind, PageRequest, ReadModelError, ReadModelQueries, ReadModelStore, ViewWrite,
};
use timeline_core::views::HistoryEntry;
use timeline_core::StreamKey;
use timeline_core::Timestamp;
use timeline_engine::memory::MemoryReadModels;

/// What a read-model store is.
pub trait Models: ReadModelStore + ReadModelQueries {}
impl<T: ReadModelStore + ReadModelQueries> Models for T {}

fn at(s: &str) -> Timestamp {
    s.parse().unwrap()
}

pub fn noon() -> Timestamp {
    at("2026-11-28T12:00:00.000Z")
}

pub fn ride(id: &str) -> StreamKey {
    StreamKey::new("ride", id)
}

/// Runs every contract test against `$make()` (an async fn giving `Option<G>`, `G` derefs to
/// the store), one `#[tokio::test]` each.
#[macro_export]
macro_rules! read_model_contract {
    ($make:path) => {
        $crate::read_model_contract!(@each $make;
            a_view_write_is_conditional_on_the_version_read,
            writes_match_the_in_memory_read_models_conflicts_included,
            history_entries_are_upserted_not_duplicated,
            a_stream_position_once_attached_is_kept_as_the_memory_models_keep_it,
            lists_by_rider_are_newest_first_and_page_without_duplicates_or_misses,
            lists_by_status_family_are_newest_first_by_last_update_and_follow_changes,
            history_is_oldest_first_with_an_inclusive_time_range,
            a_cursor_from_another_query_is_refused,
            page_limits_are_clamped_to_1_through_1000);
    };
    (@each $make:path; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some(fresh) = $make().await else { return };
                $crate::read_model_contract::$name(&*fresh).await;
            }
        )*
    };
}

pub fn entry(key: &StreamKey, version: u64, occurred_at: Timestamp) -> HistoryEntry {
    HistoryEntry {
        aggregate_type: key.aggregate_type.clone(),
        aggregate_id: key.aggregate_id.clone(),
        version,
        event_type: "RideBooked".into(),
        occurred_at,
        recorded_at: occurred_at,
        actor: "rider-1".into(),
        event_id: format!("{key}-{version}"),
        data: serde_json::json!({ "v": version, "lat": 48.8606 }),
        status_after: "booked".into(),
        // Kept with the entry: where time travel finds the record on the stream.
        position: Some(timeline_core::ports::LogPosition {
            shard_id: "shardId-000000000001".into(),
            sequence_number: format!("{:020}", version * 7),
            arrival: occurred_at.plus_millis(5),
        }),
    }
}

pub struct W {
    pub key: StreamKey,
    pub expected: u64,
    pub version: u64,
    pub status: &'static str,
    pub rider: Option<&'static str>,
    pub driver: Option<&'static str>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl W {
    pub fn new(id: &str, expected: u64, version: u64) -> W {
        W {
            key: ride(id),
            expected,
            version,
            status: "booked",
            rider: Some("rider-1"),
            driver: None,
            created_at: noon(),
            updated_at: noon(),
        }
    }

    pub fn build(self) -> ViewWrite {
        let mut lookups = Vec::new();
        lookups.extend(self.rider.map(|r| ("rider", r.to_owned())));
        lookups.extend(self.driver.map(|d| ("driver", d.to_owned())));
        ViewWrite {
            view: serde_json::json!({
                "aggregate_id": self.key.aggregate_id,
                "version": self.version,
                "status": self.status,
                "updated_at": self.updated_at,
            }),
            history: (self.expected + 1..=self.version)
                .map(|v| entry(&self.key, v, self.updated_at))
                .collect(),
            key: self.key,
            expected_version: self.expected,
            version: self.version,
            status_family: self.status.split(':').next().unwrap().to_owned(),
            lookups,
            created_at: self.created_at,
            updated_at: self.updated_at,
        }
    }
}

pub fn page(limit: usize, cursor: Option<String>) -> PageRequest {
    PageRequest { limit, cursor }
}

pub fn lookup(kind: LookupKind, value: &str) -> Lookup {
    Lookup {
        aggregate_type: "ride".into(),
        kind,
        value: value.into(),
    }
}

pub fn ids(items: &[serde_json::Value]) -> Vec<String> {
    items
        .iter()
        .map(|v| v["aggregate_id"].as_str().unwrap().to_owned())
        .collect()
}

/// Every page of a list, following cursors.
pub async fn all_pages<M: Models>(
    models: &M,
    lookup: &Lookup,
    limit: usize,
) -> (Vec<String>, usize) {
    let (mut items, mut pages, mut cursor) = (Vec::new(), 0, None);
    loop {
        let p = models.list(lookup, &page(limit, cursor)).await.unwrap();
        pages += 1;
        assert!(p.items.len() <= limit);
        items.extend(ids(&p.items));
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => return (items, pages),
        }
    }
}

pub async fn a_view_write_is_conditional_on_the_version_read<M: Models>(models: &M) {
    let key = ride("1");
    models.write(W::new("1", 0, 2).build()).await.unwrap();
    assert_eq!(
        models.write(W::new("1", 0, 1).build()).await,
        Err(ReadModelError::Conflict)
    );
    assert_eq!(
        models.write(W::new("1", 1, 3).build()).await,
        Err(ReadModelError::Conflict)
    );
    models.write(W::new("1", 2, 3).build()).await.unwrap();

    let stored = models
        .load_views(&[key.clone(), ride("absent")])
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[&key].version, 3);
    assert_eq!(stored[&key].view["version"], 3);
    assert_eq!(
        models.view(&key).await.unwrap(),
        Some(stored[&key].view.clone())
    );
    assert_eq!(models.view(&ride("absent")).await.unwrap(), None);
}

pub async fn writes_match_the_in_memory_read_models_conflicts_included<M: Models>(models: &M) {
    let memory = MemoryReadModels::default();
    let writes = [
        ("a", 0, 2),
        ("a", 0, 1), // conflict, its history still written
        ("b", 0, 1),
        ("a", 2, 4),
        ("b", 2, 3), // conflict
        ("b", 1, 3),
        ("a", 4, 4), // a no-op write at the same version
    ];
    for (id, expected, version) in writes {
        let at = noon().plus_millis(version as i64 * 1000);
        let mut w = W::new(id, expected, version);
        w.updated_at = at;
        let write = w.build();
        assert_eq!(
            models.write(write.clone()).await,
            memory.write(write).await,
            "{id} {expected}->{version}"
        );
    }
    let keys = [ride("a"), ride("b")];
    assert_eq!(
        models.load_views(&keys).await.unwrap(),
        memory.load_views(&keys).await.unwrap()
    );
    for key in &keys {
        let history = models
            .history(key, None, None, &page(1000, None))
            .await
            .unwrap();
        assert_eq!(history.items, memory.history_of(key));
        assert_eq!(history.next_cursor, None);
    }
}

pub async fn history_entries_are_upserted_not_duplicated<M: Models>(models: &M) {
    let key = ride("h");
    models.write(W::new("h", 0, 3).build()).await.unwrap();
    // Redelivered: the view write conflicts, the history is put again.
    assert_eq!(
        models.write(W::new("h", 0, 3).build()).await,
        Err(ReadModelError::Conflict)
    );
    let history = models
        .history(&key, None, None, &page(100, None))
        .await
        .unwrap();
    let versions: Vec<u64> = history.items.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1, 2, 3]);
}

pub async fn a_stream_position_once_attached_is_kept_as_the_memory_models_keep_it<M: Models>(
    models: &M,
) {
    // A replay attaches where each record sits on the stream; a later replay that reads a
    // second copy (a Firehose retry, a redelivered batch) must not move it.
    let memory = MemoryReadModels::default();
    let key = ride("p");
    let mut write = W::new("p", 0, 2).build();
    for e in &mut write.history {
        e.position = None;
    }
    models.write(write.clone()).await.unwrap();
    memory.write(write).await.unwrap();
    let at = |seq: &str| timeline_core::ports::PositionOf {
        occurred_at: noon(),
        version: 2,
        position: timeline_core::ports::LogPosition {
            shard_id: "shardId-000000000003".into(),
            sequence_number: seq.into(),
            arrival: noon(),
        },
    };
    for seq in ["111", "222"] {
        models.attach_positions(&key, &[at(seq)]).await.unwrap();
        memory.attach_positions(&key, &[at(seq)]).await.unwrap();
    }
    let positions = |items: Vec<HistoryEntry>| -> Vec<Option<String>> {
        items
            .into_iter()
            .map(|e| e.position.map(|p| p.sequence_number))
            .collect()
    };
    let embedded = positions(
        models
            .history(&key, None, None, &page(10, None))
            .await
            .unwrap()
            .items,
    );
    assert_eq!(
        embedded,
        [None, Some("111".to_owned())],
        "the first one wins"
    );
    let expected = positions(
        memory
            .history(&key, None, None, &page(10, None))
            .await
            .unwrap()
            .items,
    );
    assert_eq!(embedded, expected);
}

pub async fn lists_by_rider_are_newest_first_and_page_without_duplicates_or_misses<M: Models>(
    models: &M,
) {
    // 25 rides of rider-1 created over time; three share a creation time; two of rider-2.
    for i in 0..25 {
        let mut w = W::new(&format!("r{i:02}"), 0, 1);
        w.created_at = noon().plus_millis(if i < 3 { 0 } else { i * 1000 });
        models.write(w.build()).await.unwrap();
    }
    for i in 0..2 {
        let mut w = W::new(&format!("other{i}"), 0, 1);
        w.rider = Some("rider-2");
        models.write(w.build()).await.unwrap();
    }
    let by_rider = lookup(LookupKind::Rider, "rider-1");
    let mut expected: Vec<String> = (3..25).rev().map(|i| format!("r{i:02}")).collect();
    // Same time: ordered by the id in the sort key (`<time>#<id>`), descending.
    expected.extend(["r02", "r01", "r00"].map(String::from));

    let (whole, pages) = all_pages(models, &by_rider, 1000).await;
    assert_eq!((whole.clone(), pages), (expected.clone(), 1));
    for limit in [1, 2, 7, 24, 25] {
        let (paged, pages) = all_pages(models, &by_rider, limit).await;
        assert_eq!(paged, expected, "limit {limit}");
        assert_eq!(pages, 25usize.div_ceil(limit), "limit {limit}");
    }
    let (others, _) = all_pages(models, &lookup(LookupKind::Rider, "rider-2"), 10).await;
    assert_eq!(others, ["other1", "other0"]);
    assert!(all_pages(models, &lookup(LookupKind::Rider, "nobody"), 10)
        .await
        .0
        .is_empty());
    // Another aggregate type never shares a lookup value.
    let video = Lookup {
        aggregate_type: "video".into(),
        ..by_rider.clone()
    };
    assert!(all_pages(models, &video, 10).await.0.is_empty());
}

pub async fn lists_by_status_family_are_newest_first_by_last_update_and_follow_changes<
    M: Models,
>(
    models: &M,
) {
    for (i, id) in ["a", "b", "c"].iter().enumerate() {
        let mut w = W::new(id, 0, 1);
        w.created_at = noon().plus_millis(i as i64 * 1000);
        w.updated_at = w.created_at;
        models.write(w.build()).await.unwrap();
    }
    // `a`, the oldest, moves on: it leaves `booked` and tops `driver_assigned`.
    let mut w = W::new("a", 1, 2);
    w.status = "driver_assigned";
    w.driver = Some("driver-9");
    w.updated_at = noon().plus_millis(10_000);
    models.write(w.build()).await.unwrap();
    let (booked, _) = all_pages(models, &lookup(LookupKind::Status, "booked"), 1).await;
    assert_eq!(booked, ["c", "b"]);
    let (assigned, _) = all_pages(models, &lookup(LookupKind::Status, "driver_assigned"), 10).await;
    assert_eq!(assigned, ["a"]);
    let (by_driver, _) = all_pages(models, &lookup(LookupKind::Driver, "driver-9"), 10).await;
    assert_eq!(by_driver, ["a"]);

    // `b` gets updated later than `c`: newest update first, not newest creation.
    let mut w = W::new("b", 1, 2);
    w.updated_at = noon().plus_millis(20_000);
    models.write(w.build()).await.unwrap();
    let (booked, _) = all_pages(models, &lookup(LookupKind::Status, "booked"), 10).await;
    assert_eq!(booked, ["b", "c"]);

    // Status families: `processing:50%` lists under `processing`.
    let mut w = W::new("v", 0, 1);
    w.status = "processing:50%";
    models.write(w.build()).await.unwrap();
    let (processing, _) = all_pages(models, &lookup(LookupKind::Status, "processing"), 10).await;
    assert_eq!(processing, ["v"]);

    // A driver reassigned away no longer lists the ride.
    let mut w = W::new("a", 2, 3);
    w.status = "driver_assigned";
    w.driver = Some("driver-7");
    models.write(w.build()).await.unwrap();
    assert!(
        all_pages(models, &lookup(LookupKind::Driver, "driver-9"), 10)
            .await
            .0
            .is_empty()
    );
}

pub async fn history_is_oldest_first_with_an_inclusive_time_range<M: Models>(models: &M) {
    let key = ride("h");
    let t = |s: i64| noon().plus_millis(s * 1000);
    // Versions 1..=6; 3 and 4 happened at the same millisecond.
    let times = [t(1), t(2), t(3), t(3), t(4), t(5)];
    let mut w = W::new("h", 0, 6).build();
    w.history = times
        .iter()
        .enumerate()
        .map(|(i, at)| entry(&key, i as u64 + 1, *at))
        .collect();
    models.write(w).await.unwrap();

    let versions = |items: &[HistoryEntry]| items.iter().map(|e| e.version).collect::<Vec<_>>();
    let all = models
        .history(&key, None, None, &page(100, None))
        .await
        .unwrap();
    assert_eq!(versions(&all.items), [1, 2, 3, 4, 5, 6]);
    let range = models
        .history(&key, Some(t(2)), Some(t(4)), &page(100, None))
        .await
        .unwrap();
    assert_eq!(versions(&range.items), [2, 3, 4, 5]);
    let point = models
        .history(&key, Some(t(3)), Some(t(3)), &page(100, None))
        .await
        .unwrap();
    assert_eq!(versions(&point.items), [3, 4]);
    let open_end = models
        .history(&key, Some(t(5)), None, &page(100, None))
        .await
        .unwrap();
    assert_eq!(versions(&open_end.items), [6]);
    let open_start = models
        .history(&key, None, Some(t(1)), &page(100, None))
        .await
        .unwrap();
    assert_eq!(versions(&open_start.items), [1]);
    let between = models
        .history(
            &key,
            Some(t(2).plus_millis(1)),
            Some(t(3).plus_millis(-1)),
            &page(100, None),
        )
        .await
        .unwrap();
    assert!(between.items.is_empty());

    // Paging through the range one entry at a time.
    let (mut seen, mut cursor) = (Vec::new(), None);
    loop {
        let p = models
            .history(&key, Some(t(2)), Some(t(4)), &page(1, cursor))
            .await
            .unwrap();
        seen.extend(versions(&p.items));
        match p.next_cursor {
            Some(c) => cursor = Some(c),
            None => break,
        }
    }
    assert_eq!(seen, [2, 3, 4, 5]);
    // The entries come back as written.
    assert_eq!(all.items[0], entry(&key, 1, t(1)));
    assert!(models
        .history(&ride("none"), None, None, &page(10, None))
        .await
        .unwrap()
        .items
        .is_empty());
}

pub async fn a_cursor_from_another_query_is_refused<M: Models>(models: &M) {
    for i in 0..3 {
        let mut w = W::new(&format!("r{i}"), 0, 3);
        w.driver = Some("driver-1");
        models.write(w.build()).await.unwrap();
    }
    let rider1 = lookup(LookupKind::Rider, "rider-1");
    let list_cursor = models
        .list(&rider1, &page(1, None))
        .await
        .unwrap()
        .next_cursor
        .unwrap();
    let history_cursor = models
        .history(&ride("r0"), None, None, &page(1, None))
        .await
        .unwrap()
        .next_cursor
        .unwrap();
    // The cursor works for its own query.
    assert_eq!(
        models
            .list(&rider1, &page(1, Some(list_cursor.clone())))
            .await
            .unwrap()
            .items
            .len(),
        1
    );

    fn refused<T>(r: Result<T, ReadModelError>) -> bool {
        matches!(r, Err(ReadModelError::InvalidCursor))
    }
    let c = |s: &str| page(10, Some(s.to_owned()));
    assert!(refused(
        models
            .list(&lookup(LookupKind::Rider, "rider-2"), &c(&list_cursor))
            .await
    ));
    assert!(refused(
        models
            .list(&lookup(LookupKind::Driver, "rider-1"), &c(&list_cursor))
            .await
    ));
    assert!(refused(
        models
            .list(&lookup(LookupKind::Status, "booked"), &c(&list_cursor))
            .await
    ));
    assert!(refused(models.list(&rider1, &c(&history_cursor)).await));
    assert!(refused(
        models
            .history(&ride("r1"), None, None, &c(&history_cursor))
            .await
    ));
    assert!(refused(
        models
            .history(&ride("r0"), None, None, &c(&list_cursor))
            .await
    ));
    // A cursor outside the asked range belongs to another query too.
    let later = noon().plus_millis(1);
    assert!(refused(
        models
            .history(&ride("r0"), Some(later), None, &c(&history_cursor))
            .await
    ));
    for garbage in ["", "!!!", "bm90IGpzb24", "e30", "eyJwayI6MX0"] {
        assert!(
            refused(models.list(&rider1, &c(garbage)).await),
            "{garbage:?}"
        );
        assert!(
            refused(models.history(&ride("r0"), None, None, &c(garbage)).await),
            "{garbage:?}"
        );
    }
}

pub async fn page_limits_are_clamped_to_1_through_1000<M: Models>(models: &M) {
    for i in 0..3 {
        models
            .write(W::new(&format!("r{i}"), 0, 1).build())
            .await
            .unwrap();
    }
    let rider1 = lookup(LookupKind::Rider, "rider-1");
    let zero = models.list(&rider1, &page(0, None)).await.unwrap();
    assert_eq!(zero.items.len(), 1);
    assert!(zero.next_cursor.is_some());
    let huge = models.list(&rider1, &page(usize::MAX, None)).await.unwrap();
    assert_eq!(huge.items.len(), 3);
    assert!(huge.next_cursor.is_none());
}
