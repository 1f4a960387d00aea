//! Distribution: the stream's events, as integration events (`timeline_core::integration`),
//! onto an event bus for other teams, in each entity's order and with nothing lost.
//!
//! `PutEvents` takes at most 10 entries and 256 KB a call, may accept some entries and refuse
//! others, and does not order the entries of one call. So a batch is sent in calls of
//! consecutive entries holding **at most one entry per entity**, one call after another: an
//! entry a call refused is retried (with backoff) before any later entry is sent, so an
//! entity's events reach the bus in version order even through partial failures. When an entry
//! still fails, the batch stops there and names the record it came from: the event source
//! mapping sends that record and the ones after it again. Entries sent before are not lost;
//! some after it may be sent twice, which is why consumers dedupe on the event's `id`.

use crate::projection::IncomingRecord;
use std::future::Future;
use std::time::Duration;
use timeline_core::codec::decode_record;
use timeline_core::integration::{integration_event, IntegrationEvent};

/// EventBridge's limits on one `PutEvents` call.
pub const MAX_ENTRIES: usize = 10;
pub const MAX_CALL_BYTES: usize = 256 * 1024;

/// A bus that takes integration events (EventBridge, or a local one).
pub trait EventBus: Send + Sync {
    /// Puts the entries in one call; answers, per entry in order, whether it was accepted
    /// (Err with the bus's reason otherwise). An Err for the whole call means none was.
    fn put(
        &self,
        entries: &[IntegrationEvent],
    ) -> impl Future<Output = Result<Vec<Result<(), String>>, String>> + Send;
}

/// What one batch's distribution did.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Distribution {
    /// Integration events the bus accepted.
    pub published: usize,
    /// Internal events with no public counterpart (internal steps).
    pub internal: usize,
    /// Entries retried after the bus refused them.
    pub retried: usize,
    /// Records that cannot be distributed at all (undecodable, an unregistered type, an
    /// event over the bus's size limit): logged, counted, and passed over, as retrying would
    /// only hold the shard.
    pub unpublishable: Vec<(usize, String)>,
    /// The first record not fully published: the event source mapping resumes from it.
    pub first_failure: Option<(usize, String)>,
}

/// The size EventBridge counts for an entry (its fields' bytes).
fn entry_size(e: &IntegrationEvent) -> usize {
    e.source.len() + e.detail_type.len() + e.detail.to_string().len()
}

pub struct Distributor<B> {
    bus: B,
    attempts: u32,
    backoff: Duration,
}

impl<B: EventBus> Distributor<B> {
    pub fn new(bus: B) -> Self {
        Distributor {
            bus,
            attempts: 5,
            backoff: Duration::from_millis(50),
        }
    }

    /// How many times an entry is tried in one invocation, and the first pause between tries
    /// (doubled each time).
    pub fn with_retries(mut self, attempts: u32, backoff: Duration) -> Self {
        self.attempts = attempts.max(1);
        self.backoff = backoff;
        self
    }

    pub fn bus(&self) -> &B {
        &self.bus
    }

    /// Publishes a batch's integration events in order.
    pub async fn distribute(&self, records: &[IncomingRecord]) -> Distribution {
        let mut out = Distribution::default();
        // (record index, entity, event), in stream order.
        let mut pending: Vec<(usize, String, IntegrationEvent)> = Vec::new();
        for (index, record) in records.iter().enumerate() {
            let commit = match decode_record(&record.data) {
                Ok(c) => c,
                Err(e) => {
                    out.unpublishable.push((index, e.to_string()));
                    continue;
                }
            };
            for envelope in &commit.events {
                match integration_event(envelope) {
                    Ok(Some(event)) if entry_size(&event) > MAX_CALL_BYTES => {
                        out.unpublishable.push((
                            index,
                            format!("{} is over the bus's size limit", event.id()),
                        ))
                    }
                    Ok(Some(event)) => {
                        pending.push((index, envelope.stream_key().to_string(), event))
                    }
                    Ok(None) => out.internal += 1,
                    Err(e) => out.unpublishable.push((index, e.to_string())),
                }
            }
        }
        for (index, why) in &out.unpublishable {
            tracing::error!(record = index, %why, "a record that cannot be distributed is passed over");
        }
        let mut start = 0;
        while start < pending.len() {
            let end = call_end(&pending, start);
            let call: Vec<&(usize, String, IntegrationEvent)> =
                pending[start..end].iter().collect();
            if let Err(index) = self.put_all(&call, &mut out).await {
                out.first_failure = Some((index, records[index].sequence_number.clone()));
                return out;
            }
            start = end;
        }
        out
    }

    /// Puts one call's entries, retrying the refused ones; Err with the record index of the
    /// first entry still refused.
    async fn put_all(
        &self,
        call: &[&(usize, String, IntegrationEvent)],
        out: &mut Distribution,
    ) -> Result<(), usize> {
        let mut left: Vec<&(usize, String, IntegrationEvent)> = call.to_vec();
        let mut pause = self.backoff;
        for attempt in 1..=self.attempts {
            let entries: Vec<IntegrationEvent> = left.iter().map(|(_, _, e)| e.clone()).collect();
            let refused: Vec<&(usize, String, IntegrationEvent)> = match self.bus.put(&entries).await
            {
                Ok(results) => left
                    .iter()
                    .zip(results.iter().chain(std::iter::repeat(&Err("no answer".into()))))
                    .filter_map(|(entry, result)| match result {
                        Ok(()) => {
                            out.published += 1;
                            None
                        }
                        Err(why) => {
                            tracing::warn!(id = entry.2.id(), %why, attempt, "entry refused; retrying");
                            Some(*entry)
                        }
                    })
                    .collect(),
                Err(why) => {
                    tracing::warn!(%why, attempt, "put failed; retrying");
                    left.clone()
                }
            };
            if refused.is_empty() {
                return Ok(());
            }
            out.retried += refused.len();
            left = refused;
            if attempt < self.attempts {
                tokio::time::sleep(pause).await;
                pause *= 2;
            }
        }
        Err(left
            .iter()
            .map(|(i, _, _)| *i)
            .min()
            .expect("something is left"))
    }
}

/// Where the call starting at `start` ends: at most 10 entries and 256 KB, and no entity twice.
fn call_end(pending: &[(usize, String, IntegrationEvent)], start: usize) -> usize {
    let mut entities = std::collections::HashSet::new();
    let mut bytes = 0;
    let mut end = start;
    while end < pending.len() && end - start < MAX_ENTRIES {
        let (_, entity, event) = &pending[end];
        let size = entry_size(event);
        if entities.contains(entity) || (end > start && bytes + size > MAX_CALL_BYTES) {
            break;
        }
        entities.insert(entity.clone());
        bytes += size;
        end += 1;
    }
    end
}
