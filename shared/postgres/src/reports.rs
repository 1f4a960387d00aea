//! What a relational read store is for: questions DynamoDB makes hard, answered in SQL over
//! the same views the query API serves (each with the partial index its migration adds).

use crate::PgReadModels;
use serde::Serialize;
use timeline_core::ports::ReadModelError;
use timeline_core::Timestamp;

async fn rows(
    models: &PgReadModels,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>, ReadModelError> {
    let unavailable =
        |e: &dyn std::fmt::Display| ReadModelError::Unavailable(format!("postgres: {e}"));
    let client = models.pool().get().await.map_err(|e| unavailable(&e))?;
    client.query(sql, params).await.map_err(|e| unavailable(&e))
}

/// One driver's completed rides on one day (UTC), by the time each was completed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DriverDay {
    pub day: String,
    pub driver_id: String,
    pub rides: i64,
    pub fares_cents: i64,
}

/// Fares per driver per day, newest day first, between `from` and `to` (inclusive).
pub async fn fares_per_driver_per_day(
    models: &PgReadModels,
    from: Option<Timestamp>,
    to: Option<Timestamp>,
) -> Result<Vec<DriverDay>, ReadModelError> {
    let (from, to) = (from.map(|t| t.as_datetime()), to.map(|t| t.as_datetime()));
    let rows = rows(
        models,
        "SELECT to_char(date_trunc('day', updated_at AT TIME ZONE 'UTC'), 'YYYY-MM-DD'),
                    view -> 'state' ->> 'driver_id',
                    count(*),
                    coalesce(sum((view -> 'state' ->> 'fare_cents')::bigint), 0)::bigint
             FROM views
             WHERE aggregate_type = 'ride' AND status_family = 'completed'
               AND ($1::timestamptz IS NULL OR updated_at >= $1)
               AND ($2::timestamptz IS NULL OR updated_at <= $2)
             GROUP BY 1, 2
             ORDER BY 1 DESC, 2",
        &[&from, &to],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| DriverDay {
            day: r.get(0),
            driver_id: r.get::<_, Option<String>>(1).unwrap_or_default(),
            rides: r.get(2),
            fares_cents: r.get(3),
        })
        .collect())
}

/// Why videos failed, with how many failed so, most frequent first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailureReason {
    pub reason: String,
    pub videos: i64,
}

pub async fn video_failure_reasons(
    models: &PgReadModels,
) -> Result<Vec<FailureReason>, ReadModelError> {
    let rows = rows(
        models,
        "SELECT coalesce(view -> 'state' ->> 'failure_reason', ''), count(*)
             FROM views
             WHERE aggregate_type = 'video' AND status_family = 'failed'
             GROUP BY 1
             ORDER BY 2 DESC, 1",
        &[],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| FailureReason {
            reason: r.get(0),
            videos: r.get(1),
        })
        .collect())
}
