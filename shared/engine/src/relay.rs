//! The outbox relay of `PublishMode: stream`. The write-model table's change stream says
//! which heads a commit left with an outbox; for each one the relay reads the head (strongly
//! consistent), publishes its whole pending run as one record and confirms it, exactly as
//! the command handler does inline. So the log's ordering invariant holds whoever publishes
//! (the relay, a redelivery of its batch, the sweep): every record carries all of its
//! entity's events not yet confirmed when its head was read.

use crate::write::{CommandService, Delivery};
use timeline_core::ports::{Clock, EventLog, WriteModelStore};
use timeline_core::StreamKey;

/// One change on the table's stream that left a head with events to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// The stream record's sequence number: what a partial batch failure names.
    pub sequence_number: String,
    pub head: StreamKey,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RelayReport {
    /// Heads read (a head changed twice in a batch is read once).
    pub heads: usize,
    /// Heads whose outbox this batch published.
    pub published: usize,
    /// The first change not relayed: the event source mapping resumes from it.
    pub first_failure: Option<String>,
}

/// Relays a batch of changes in stream order; stops at the first head it cannot publish and
/// confirm (the changes after it come again with the retry, and finding their outbox empty
/// costs a read).
///
/// A head that appears twice is read once: the read comes after the batch was written, so
/// it sees the later commit too.
pub async fn relay<S: WriteModelStore, L: EventLog, C: Clock>(
    service: &CommandService<S, L, C>,
    changes: &[Change],
) -> RelayReport {
    let mut report = RelayReport::default();
    let mut seen = std::collections::HashSet::new();
    for change in changes {
        if !seen.insert(&change.head) {
            continue;
        }
        report.heads += 1;
        let relayed = match service.store().load_head(&change.head).await {
            // Published already (the next command, the sweep, an earlier delivery).
            Ok(None) => true,
            Ok(Some(head)) if head.pending.is_empty() => true,
            // Only a confirmed outbox is done: a head whose confirm failed is retried (and
            // published again), so the outbox is empty once the relay caught up, and the
            // sweep stays a safety net.
            Ok(Some(head)) => match service.deliver(&head).await {
                Delivery::Confirmed => {
                    report.published += 1;
                    true
                }
                Delivery::Published => {
                    report.published += 1;
                    false
                }
                Delivery::Unpublished => false,
            },
            Err(e) => {
                tracing::warn!(stream = %change.head, error = %e, "relay could not read a head");
                false
            }
        };
        if !relayed {
            report.first_failure = Some(change.sequence_number.clone());
            break;
        }
    }
    report
}
