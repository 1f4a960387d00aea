//! The read models on a real PostgreSQL server: the contract every store runs
//! (`timeline_testkit::read_model_contract`), the schema's migrations and their guard, the
//! reporting queries, and a connection lost in the middle of a write.

use timeline_postgres::{check_schema, migrate, pool, PgReadModels, SchemaError};

/// A migrated, empty database of its own for each test.
async fn fresh() -> Option<Box<PgReadModels>> {
    let url = timeline_testkit::postgres_database().await?;
    let pool = pool(&url).unwrap();
    migrate(&pool).await.unwrap();
    Some(Box::new(PgReadModels::new(pool)))
}

timeline_testkit::read_model_contract!(fresh);

#[tokio::test]
async fn migrations_apply_once_and_the_schema_guard_says_what_to_run() {
    let url = timeline_testkit::postgres_database!();
    let pool = pool(&url).unwrap();
    let behind = check_schema(&pool).await;
    assert!(
        matches!(behind, Err(SchemaError::Behind { have: 0, need: 2 })),
        "{behind:?}"
    );
    assert!(behind
        .unwrap_err()
        .to_string()
        .contains("timeline-local migrate"));
    assert_eq!(migrate(&pool).await.unwrap(), [1, 2]);
    assert_eq!(
        migrate(&pool).await.unwrap(),
        Vec::<i32>::new(),
        "nothing twice"
    );
    check_schema(&pool).await.unwrap();

    // A migration edited after it ran is refused, by the guard and by the migrator.
    pool.get()
        .await
        .unwrap()
        .execute(
            "UPDATE schema_migrations SET checksum = 'edited' WHERE version = 1",
            &[],
        )
        .await
        .unwrap();
    for refused in [check_schema(&pool).await, migrate(&pool).await.map(drop)] {
        assert!(
            matches!(refused, Err(SchemaError::Edited { version: 1, .. })),
            "{refused:?}"
        );
    }
}

#[tokio::test]
async fn two_migrators_at_once_apply_each_migration_once() {
    let url = timeline_testkit::postgres_database!();
    let (a, b) = (pool(&url).unwrap(), pool(&url).unwrap());
    let (ra, rb) = tokio::join!(migrate(&a), migrate(&b));
    let mut applied = ra.unwrap();
    applied.extend(rb.unwrap());
    applied.sort();
    assert_eq!(applied, [1, 2]);
}

/// One entity's write is one transaction: a connection lost in the middle of it (after the
/// history was put, while the view waits on a lock) leaves neither, and the write says the
/// store was unavailable, so the processor reports the batch's records as failed and the
/// retry applies them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_lost_in_the_middle_of_a_write_leaves_nothing_half_written() {
    use timeline_core::ports::{ReadModelError, ReadModelQueries, ReadModelStore};
    use timeline_testkit::read_model_contract::{page, ride, W};
    let Some(models) = fresh().await else { return };
    models.write(W::new("c", 0, 1).build()).await.unwrap();

    // Another session holds the view's row: the write's update waits on it.
    let url = models_url(&models).await;
    let (blocker, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    blocker
        .batch_execute("BEGIN; SELECT 1 FROM views WHERE pk = 'ride#c' FOR UPDATE")
        .await
        .unwrap();

    let writer = {
        let models = models.clone();
        tokio::spawn(async move { models.write(W::new("c", 1, 3).build()).await })
    };
    // Once the write waits on the lock, its connection is cut.
    let mut cut = 0;
    for _ in 0..200 {
        cut = blocker
            .query_one(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
                 WHERE wait_event_type = 'Lock' AND datname = current_database()",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0);
        if cut > 0 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    assert_eq!(cut, 1, "the write was waiting on the lock");
    let lost = writer.await.unwrap();
    assert!(
        matches!(lost, Err(ReadModelError::Unavailable(_))),
        "{lost:?}"
    );
    blocker.batch_execute("ROLLBACK").await.unwrap();

    // Nothing of it: the view at version 1, no history past it.
    assert_eq!(
        models.load_views(&[ride("c")]).await.unwrap()[&ride("c")].version,
        1
    );
    let history = models
        .history(&ride("c"), None, None, &page(10, None))
        .await
        .unwrap();
    let versions: Vec<u64> = history.items.iter().map(|e| e.version).collect();
    assert_eq!(versions, [1]);
    // The retry (a new connection from the pool) applies it.
    models.write(W::new("c", 1, 3).build()).await.unwrap();
    assert_eq!(
        models.load_views(&[ride("c")]).await.unwrap()[&ride("c")].version,
        3
    );
}

/// The URL of the database a store's pool connects to.
async fn models_url(models: &PgReadModels) -> String {
    let name: String = models
        .pool()
        .get()
        .await
        .unwrap()
        .query_one("SELECT current_database()", &[])
        .await
        .unwrap()
        .get(0);
    let server = timeline_testkit::postgres_server().unwrap();
    let base = server.rsplit_once('/').unwrap().0.to_owned();
    format!("{base}/{name}")
}

/// What SQL is for: fares per driver per day over completed rides, and why videos failed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_sum_fares_per_driver_per_day_and_count_failure_reasons() {
    use timeline_core::ports::{ReadModelStore, ViewWrite};
    use timeline_core::StreamKey;
    use timeline_postgres::reports::{
        fares_per_driver_per_day, video_failure_reasons, DriverDay, FailureReason,
    };
    let Some(models) = fresh().await else { return };
    let day1: timeline_core::Timestamp = "2026-11-28T09:00:00.000Z".parse().unwrap();
    let day2: timeline_core::Timestamp = "2026-11-29T23:59:00.000Z".parse().unwrap();
    let write = |kind: &str, id: &str, family: &str, state: serde_json::Value, at| ViewWrite {
        key: StreamKey::new(kind, id),
        expected_version: 0,
        version: 1,
        view: serde_json::json!({ "aggregate_id": id, "status": family, "state": state }),
        status_family: family.into(),
        lookups: vec![],
        created_at: at,
        updated_at: at,
        history: vec![],
    };
    let completed = |driver: &str, fare: i64| serde_json::json!({ "driver_id": driver, "fare_cents": fare, "status": "completed" });
    for (id, driver, fare, at) in [
        ("r1", "driver-7", 1100, day1),
        ("r2", "driver-7", 900, day1),
        ("r3", "driver-9", 2500, day1),
        ("r4", "driver-7", 1000, day2),
    ] {
        let w = write("ride", id, "completed", completed(driver, fare), at);
        models.write(w).await.unwrap();
    }
    // Not completed: not counted.
    let open = write(
        "ride",
        "r5",
        "in_progress",
        completed("driver-7", 5000),
        day1,
    );
    models.write(open).await.unwrap();
    for (id, reason) in [("v1", "timeout"), ("v2", "codec"), ("v3", "timeout")] {
        let state = serde_json::json!({ "failure_reason": reason });
        models
            .write(write("video", id, "failed", state, day1))
            .await
            .unwrap();
    }

    let day = |d: &str, driver: &str, rides, fares_cents| DriverDay {
        day: d.into(),
        driver_id: driver.into(),
        rides,
        fares_cents,
    };
    assert_eq!(
        fares_per_driver_per_day(&models, None, None).await.unwrap(),
        [
            day("2026-11-29", "driver-7", 1, 1000),
            day("2026-11-28", "driver-7", 2, 2000),
            day("2026-11-28", "driver-9", 1, 2500),
        ]
    );
    assert_eq!(
        fares_per_driver_per_day(&models, Some(day2), None)
            .await
            .unwrap(),
        [day("2026-11-29", "driver-7", 1, 1000)]
    );
    let reason = |reason: &str, videos| FailureReason {
        reason: reason.into(),
        videos,
    };
    assert_eq!(
        video_failure_reasons(&models).await.unwrap(),
        [reason("timeout", 2), reason("codec", 1)]
    );
}

/// A server that takes the connection and never answers (a proxy during a failover, a rule
/// that drops packets): opening fails within the connect timeout, it never hangs.
#[tokio::test]
async fn a_server_that_never_answers_is_an_error_within_the_connect_timeout() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let held = tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((stream, _)) = listener.accept().await {
            open.push(stream);
        }
    });
    for mode in ["disable", "require"] {
        let options = timeline_postgres::ConnectOptions {
            connect_timeout: Some(std::time::Duration::from_millis(300)),
            ..Default::default()
        };
        let url = format!("postgres://timeline@127.0.0.1:{port}/timeline?sslmode={mode}");
        let pool = timeline_postgres::pool_with(&url, options).unwrap();
        // The outer bound only stops a hang from stalling the suite; the error says which
        // timeout ended it.
        let opened = tokio::time::timeout(std::time::Duration::from_secs(30), pool.get())
            .await
            .expect("the pool gives up by itself");
        let error = opened.expect_err("nothing answers");
        assert!(error.to_string().contains("Timeout"), "{mode}: {error}");
    }
    held.abort();
}
