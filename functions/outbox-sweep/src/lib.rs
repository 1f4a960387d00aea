//! The scheduled outbox sweep: publishes outbox events that a failed publish left behind.
//! Safe to run at any time; each record still carries the entity's whole pending run.

use timeline_core::ports::{Clock, EventLog, StoreError, WriteModelStore};
use timeline_engine::write::{CommandService, SweepReport};

/// Heads examined per invocation; the schedule runs again soon after.
pub const BATCH: usize = 500;

/// One scheduled run, generic over the ports (the Lambda passes DynamoDB and Kinesis).
pub struct SweepHandler<S, L, C> {
    service: CommandService<S, L, C>,
}

impl<S: WriteModelStore, L: EventLog, C: Clock> SweepHandler<S, L, C> {
    pub fn new(store: S, log: L, clock: C) -> Self {
        SweepHandler {
            service: CommandService::new(store, log, clock),
        }
    }

    /// Publishes up to [`BATCH`] pending outboxes and says what it did.
    pub async fn handle(&self) -> Result<SweepReport, StoreError> {
        let report = self.service.sweep(BATCH).await?;
        tracing::info!(
            examined = report.examined,
            published = report.published,
            failed = report.failed,
            unreadable = report.unreadable,
            "outbox sweep"
        );
        Ok(report)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use timeline_core::ports::SystemClock;
    use timeline_core::ride::{Location, RideAggregate, RideCommand};
    use timeline_core::write::{CommandRequest, RequestContext};
    use timeline_engine::memory::{MemoryLog, MemoryStore};

    fn place(address: &str) -> Location {
        Location {
            address: address.into(),
            lat: 52.5,
            lon: 13.4,
        }
    }

    #[tokio::test]
    async fn a_commit_whose_publish_failed_is_published_by_the_next_sweep_once() {
        let (store, log) = (MemoryStore::default(), MemoryLog::default());
        let service = CommandService::new(store.clone(), log.clone(), SystemClock);
        log.fail_next(1);
        let outcome = service
            .execute::<RideAggregate>(CommandRequest {
                aggregate_id: "r1".into(),
                command: RideCommand::Book {
                    rider_id: "rider-1".into(),
                    pickup: place("A"),
                    dropoff: place("B"),
                    fare_estimate_cents: Some(1000),
                },
                expected_version: None,
                idempotency: None,
                context: RequestContext::default(),
            })
            .await
            .unwrap();
        assert!(!outcome.published);
        assert!(log.records().is_empty());

        let sweep = SweepHandler::new(store.clone(), log.clone(), SystemClock);
        let report = sweep.handle().await.unwrap();
        assert_eq!(
            (report.examined, report.published, report.failed),
            (1, 1, 0)
        );
        assert_eq!(log.records().len(), 1);
        assert_eq!(log.records()[0].events[0].version, 1);

        let again = sweep.handle().await.unwrap();
        assert_eq!(again.published, 0, "nothing left pending");
        assert_eq!(log.records().len(), 1);
    }
}
