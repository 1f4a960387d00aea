//! The distributor Lambda: a Kinesis batch in (its own event source mapping on the stream),
//! the integration events of its records onto the EventBridge bus in each entity's order
//! (`timeline_engine::distribute`), `batchItemFailures` out naming the first record not fully
//! published.

use aws_lambda_events::event::streams::KinesisEventResponse;
use timeline_aws::kinesis_batch::{BatchRecord, KinesisBatch};
use timeline_aws::metrics::{emit, Metric, Unit};
use timeline_engine::distribute::{Distribution, Distributor, EventBus};
use timeline_engine::projection::IncomingRecord;

pub struct DistributorHandler<B> {
    distributor: Distributor<B>,
}

impl<B: EventBus> DistributorHandler<B> {
    pub fn new(distributor: Distributor<B>) -> Self {
        DistributorHandler { distributor }
    }

    pub async fn handle(&self, event: KinesisBatch) -> KinesisEventResponse {
        let records: Vec<IncomingRecord> = event
            .records
            .into_iter()
            .map(BatchRecord::into_incoming)
            .collect();
        let out = self.distributor.distribute(&records).await;
        report(&out);
        timeline_aws::kinesis_batch::response(out.first_failure.map(|(_, seq)| seq))
    }
}

fn report(out: &Distribution) {
    tracing::info!(
        published = out.published,
        internal = out.internal,
        retried = out.retried,
        unpublishable = out.unpublishable.len(),
        stopped_at = ?out.first_failure,
        "batch distributed"
    );
    emit(
        "Timeline/Distributor",
        &[
            Metric::new("Published", Unit::Count, out.published as f64),
            Metric::new("Retried", Unit::Count, out.retried as f64),
            // The distributor's alarm watches these: a record that can never go out.
            Metric::new("Unpublishable", Unit::Count, out.unpublishable.len() as f64),
        ],
    );
}
