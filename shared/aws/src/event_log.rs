//! The event log on a Kinesis data stream: one `PutRecord` per commit, partition key
//! `<type>#<id>`, so all of an entity's records land on one shard in order.

use aws_sdk_kinesis::primitives::Blob;
use timeline_core::ports::{log_entry, EventLog, LogError, Published};
use timeline_core::CommitRecord;

pub use timeline_core::ports::MAX_RECORD_BYTES;

#[derive(Clone, Debug)]
pub struct KinesisEventLog {
    client: aws_sdk_kinesis::Client,
    stream_name: String,
}

impl KinesisEventLog {
    pub fn new(client: aws_sdk_kinesis::Client, stream_name: impl Into<String>) -> Self {
        KinesisEventLog {
            client,
            stream_name: stream_name.into(),
        }
    }
}

impl EventLog for KinesisEventLog {
    async fn publish(&self, record: &CommitRecord) -> Result<Published, LogError> {
        let (partition_key, data) = log_entry(record)?;
        let out = self
            .client
            .put_record()
            .stream_name(&self.stream_name)
            .partition_key(partition_key)
            .data(Blob::new(data))
            .send()
            .await
            .map_err(|e| {
                use aws_sdk_kinesis::error::ProvideErrorMetadata;
                let throttled = matches!(
                    e.code(),
                    Some("ProvisionedThroughputExceededException" | "KMSThrottlingException")
                );
                let message = aws_sdk_kinesis::error::DisplayErrorContext(e).to_string();
                // Over the shard's 1,000 records or 1 MB a second: the same call succeeds later.
                if throttled {
                    LogError::Throttled(message)
                } else {
                    LogError::Unavailable(message)
                }
            })?;
        Ok(Published {
            shard_id: out.shard_id,
            sequence_number: out.sequence_number,
        })
    }
}
