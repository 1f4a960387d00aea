//! The processor Lambda: a Kinesis batch in, read models updated, `batchItemFailures` out.
//! The projection rules live in `timeline_core::processor`; this is the Lambda edge.

pub use batch::KinesisBatch;
pub use timeline_aws::kinesis_batch as batch;

use aws_lambda_events::event::streams::KinesisEventResponse;
use timeline_aws::metrics::{emit, Metric, Unit};
use timeline_core::ports::Clock;
use timeline_core::ports::ReadModelStore;
use timeline_engine::projection::{BatchOutcome, IncomingRecord, Processor};

pub struct ProcessorHandler<R, C> {
    processor: Processor<R>,
    clock: C,
}

impl<R: ReadModelStore, C: Clock> ProcessorHandler<R, C> {
    pub fn new(store: R, clock: C) -> Self {
        Self::with_processor(Processor::new(store), clock)
    }

    pub fn with_processor(processor: Processor<R>, clock: C) -> Self {
        ProcessorHandler { processor, clock }
    }

    pub fn processor(&self) -> &Processor<R> {
        &self.processor
    }

    /// Applies a batch and says where Kinesis must resume: the first record that could not
    /// be applied, or nothing when all were.
    pub async fn handle(&self, event: KinesisBatch) -> KinesisEventResponse {
        let outcome = self.project(event).await;
        report(&outcome);
        timeline_aws::kinesis_batch::response(outcome.first_failure.map(|(_, seq)| seq))
    }

    /// Applies a batch and says what happened, without logging it.
    pub async fn project(&self, event: KinesisBatch) -> BatchOutcome {
        let records: Vec<IncomingRecord> = event
            .records
            .into_iter()
            .map(batch::BatchRecord::into_incoming)
            .collect();
        self.processor.process(&records, self.clock.now()).await
    }
}

fn report(outcome: &BatchOutcome) {
    let stats = &outcome.stats;
    for (index, failure) in &outcome.failures {
        tracing::error!(record = index, failure = %serde_json::to_string(failure).unwrap_or_default(), "record not applied; Kinesis retries from it");
    }
    for parked in &outcome.parked {
        tracing::error!(parked = %serde_json::to_string(parked).unwrap_or_default(), "entity parked: its records are set aside until it is redriven");
    }
    tracing::info!(
        records = stats.records,
        applied = stats.events_applied,
        duplicates = stats.duplicates_skipped,
        failures = stats.failures,
        entities = stats.entities_written,
        parked = stats.entities_parked,
        set_aside = stats.records_set_aside,
        "batch projected"
    );
    let mut metrics = vec![
        Metric::new("EventsApplied", Unit::Count, stats.events_applied as f64),
        Metric::new(
            "DuplicatesSkipped",
            Unit::Count,
            stats.duplicates_skipped as f64,
        ),
        Metric::new("RecordFailures", Unit::Count, stats.failures as f64),
        // The parked-entity alarm watches these.
        Metric::new("EntitiesParked", Unit::Count, stats.entities_parked as f64),
        Metric::new(
            "RecordsSetAside",
            Unit::Count,
            stats.records_set_aside as f64,
        ),
    ];
    if let Some(lag) = stats.max_lag_ms {
        metrics.push(Metric::new("ProjectionLag", Unit::Milliseconds, lag as f64));
    }
    emit("Timeline/Processor", &metrics);
}
