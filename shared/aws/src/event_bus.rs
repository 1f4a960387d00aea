//! The EventBridge bus: integration events as `PutEvents` entries (`source`,
//! `detail-type`, `detail`), with each entry's own answer, since a call may accept some
//! entries and refuse others.

use aws_sdk_eventbridge::types::PutEventsRequestEntry;
use timeline_core::integration::IntegrationEvent;
use timeline_engine::distribute::EventBus;

#[derive(Clone, Debug)]
pub struct EventBridgeBus {
    client: aws_sdk_eventbridge::Client,
    bus_name: String,
}

impl EventBridgeBus {
    pub fn new(client: aws_sdk_eventbridge::Client, bus_name: impl Into<String>) -> Self {
        EventBridgeBus {
            client,
            bus_name: bus_name.into(),
        }
    }
}

impl EventBus for EventBridgeBus {
    async fn put(&self, entries: &[IntegrationEvent]) -> Result<Vec<Result<(), String>>, String> {
        let request: Vec<PutEventsRequestEntry> = entries
            .iter()
            .map(|e| {
                PutEventsRequestEntry::builder()
                    .event_bus_name(&self.bus_name)
                    .source(&e.source)
                    .detail_type(e.detail_type)
                    .detail(e.detail.to_string())
                    .build()
            })
            .collect();
        let output = self
            .client
            .put_events()
            .set_entries(Some(request))
            .send()
            .await
            // Whether a failed call put anything is unknown: all its entries are sent again,
            // and a copy is harmless (consumers dedupe on the event's id).
            .map_err(|e| format!("{}", aws_sdk_eventbridge::error::DisplayErrorContext(e)))?;
        let answers = output.entries();
        if answers.len() != entries.len() {
            return Err(format!(
                "{} answers for {} entries",
                answers.len(),
                entries.len()
            ));
        }
        Ok(answers
            .iter()
            .map(|a| match a.error_code() {
                None => Ok(()),
                Some(code) => Err(format!("{code}: {}", a.error_message().unwrap_or_default())),
            })
            .collect())
    }
}
