//! The whole log in AWS for the hydrator: the S3 archive (Firehose's layout) plus the
//! Kinesis stream tail, with the DynamoDB history read model as the index of where an
//! entity's events are. The logic is `timeline_core::log_source`, shared with the local
//! runner's embedded backend.

use crate::archive::S3Archive;
use crate::read_models::DynamoReadModels;
use crate::stream_reader::KinesisReader;
use crate::write_store::DynamoWriteStore;
use timeline_engine::log_source::LogSource;

pub use timeline_engine::log_source::PARALLELISM;

pub type AwsEventSource = LogSource<S3Archive, KinesisReader, DynamoReadModels, DynamoWriteStore>;

/// The log of `stream` and the archive, indexed by the history read model and the write
/// model's heads when given.
pub fn aws_event_source<I: timeline_core::ports::ReadModelQueries>(
    archive: S3Archive,
    kinesis: aws_sdk_kinesis::Client,
    stream: impl Into<String>,
    index: Option<I>,
    heads: Option<DynamoWriteStore>,
) -> LogSource<S3Archive, KinesisReader, I, DynamoWriteStore> {
    let stream = stream.into();
    LogSource::new(
        archive,
        KinesisReader::new(kinesis, stream.clone()),
        stream,
        index,
        heads,
    )
}
