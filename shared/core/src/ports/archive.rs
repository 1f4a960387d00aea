//! The archive port: where the log is kept forever (S3, or a directory for the local
//! runner), and how reading it can fail.

use crate::envelope::CommitRecord;
use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ArchiveError {
    /// The object's bytes are not a sequence of valid commit records.
    #[error("archive object {key} is corrupt at byte {offset} of its decompressed body, after {records_before} good records: {reason}")]
    Corrupt {
        key: String,
        /// Where the bad part starts, in bytes into the decompressed body: just after the
        /// last good record (0 when there is none).
        offset: usize,
        records_before: usize,
        reason: String,
    },
    /// The store could not be reached or refused the request.
    #[error("archive store: {target}: {message}")]
    Unavailable { target: String, message: String },
}

impl ArchiveError {
    /// The object a corruption was found in.
    pub fn corrupt_key(&self) -> Option<&str> {
        match self {
            ArchiveError::Corrupt { key, .. } => Some(key),
            ArchiveError::Unavailable { .. } => None,
        }
    }
}

/// Where archive objects live (S3, or a directory for the local runner): the operations the
/// archive pump and the log reader need, with S3's meaning.
pub trait ArchiveStore: Send + Sync {
    /// The prefix objects are written under (`events/` by default).
    fn prefix(&self) -> &str;

    /// The keys of the objects that can hold records that arrived between `from` and `to`
    /// (either end open), sorted, so in the order their first records arrived.
    fn list_keys(
        &self,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    ) -> impl std::future::Future<Output = Result<Vec<String>, ArchiveError>> + Send;

    /// Every record of one object, or why it could not be read.
    fn read_object(
        &self,
        key: &str,
    ) -> impl std::future::Future<Output = Result<Vec<CommitRecord>, ArchiveError>> + Send;

    /// Writes one object whole (a reader never sees part of it).
    fn put_object(
        &self,
        key: &str,
        bytes: Vec<u8>,
    ) -> impl std::future::Future<Output = Result<(), ArchiveError>> + Send;
}
