//! The event log on a Kinesis data stream: one `PutRecord` per commit, partition key
//! `<type>#<id>`, so all of an entity's records land on one shard in order.

use aws_sdk_kinesis::primitives::Blob;
use timeline_core::codec::encode_record;
use timeline_core::ports::{EventLog, LogError, Published};
use timeline_core::CommitRecord;

/// Kinesis refuses records over 1 MiB (data plus partition key).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

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
        let partition_key = record
            .partition_key()
            .ok_or_else(|| LogError::Unavailable("empty commit record".into()))?;
        let data = encode_record(record);
        if data.len() + partition_key.len() > MAX_RECORD_BYTES {
            return Err(LogError::TooLarge(data.len()));
        }
        let out = self
            .client
            .put_record()
            .stream_name(&self.stream_name)
            .partition_key(partition_key)
            .data(Blob::new(data))
            .send()
            .await
            .map_err(|e| {
                LogError::Unavailable(aws_sdk_kinesis::error::DisplayErrorContext(e).to_string())
            })?;
        Ok(Published {
            shard_id: out.shard_id,
            sequence_number: out.sequence_number,
        })
    }
}
