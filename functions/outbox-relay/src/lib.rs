//! The outbox relay of `PublishMode: stream`: Lambda hands it batches of the write-model
//! table's change stream; it publishes the outbox of every head a commit filled, in the
//! stream's order, and names the first record it could not relay so the event source
//! mapping retries from there (`ReportBatchItemFailures`). Records that are not such a
//! change (confirms, idempotency records, removals) are skipped.

use aws_lambda_events::event::dynamodb::{Event, EventRecord};
use aws_lambda_events::event::streams::{DynamoDbBatchItemFailure, DynamoDbEventResponse};
use timeline_aws::table_stream::relay_change;
use timeline_core::ports::{Clock, EventLog, LogRecord, WriteModelStore};
use timeline_engine::relay::{relay, Change, RelayReport};
use timeline_engine::write::CommandService;

/// One invocation's work, generic over the ports (the Lambda passes DynamoDB and Kinesis).
pub struct RelayHandler<S, L, C> {
    service: CommandService<S, L, C>,
}

impl<S: WriteModelStore, L: EventLog, C: Clock> RelayHandler<S, L, C> {
    pub fn new(store: S, log: L, clock: C) -> Self {
        RelayHandler {
            service: CommandService::new(store, log, clock),
        }
    }

    pub fn service(&self) -> &CommandService<S, L, C> {
        &self.service
    }

    /// A batch as Lambda delivers it.
    pub async fn handle(&self, event: &Event) -> DynamoDbEventResponse {
        let report = self.relay(&event.records).await;
        let mut response = DynamoDbEventResponse::default();
        if let Some(seq) = report.first_failure {
            let mut failure = DynamoDbBatchItemFailure::default();
            failure.item_identifier = Some(seq);
            response.batch_item_failures.push(failure);
        }
        response
    }

    /// A batch the local runner read from the stream (each record's data is Lambda's JSON);
    /// returns the first record not relayed. A record that does not decode names itself:
    /// the mapping stops there instead of passing over a change.
    pub async fn handle_read(&self, records: &[LogRecord]) -> Option<String> {
        let mut decoded = Vec::with_capacity(records.len());
        for record in records {
            match timeline_aws::table_stream::decode(record) {
                Ok(event) => decoded.push(event),
                Err(e) => {
                    tracing::error!(sequence_number = %record.sequence_number, error = %e, "a stream record did not decode");
                    let done = self.relay(&decoded).await;
                    return done.first_failure.or(Some(record.sequence_number.clone()));
                }
            }
        }
        self.relay(&decoded).await.first_failure
    }

    async fn relay(&self, records: &[EventRecord]) -> RelayReport {
        let changes: Vec<Change> = records.iter().filter_map(relay_change).collect();
        let report = relay(&self.service, &changes).await;
        tracing::info!(
            records = records.len(),
            changes = changes.len(),
            heads = report.heads,
            published = report.published,
            failed_at = report.first_failure.as_deref().unwrap_or(""),
            "relayed"
        );
        report
    }
}
