//! What the read side and the HTTP edge know about videos: the status path, and the names of
//! the routes the uploader and the processing pipeline call.

use super::VideoAggregate;
use crate::ports::LookupKind;
use crate::registry::{CommandRoute, Entity};
use crate::views::ReadModel;

impl ReadModel for VideoAggregate {
    fn status(state: &Self::State) -> Option<String> {
        state.as_ref().map(|v| v.status())
    }

    fn lookups(_: &Self::State) -> Vec<(&'static str, String)> {
        vec![]
    }
}

impl Entity for VideoAggregate {
    const COLLECTION: &'static str = "videos";
    /// Status families: `processing:50%` lists under `processing`.
    const STATUSES: &'static [&'static str] = &["uploaded", "processing", "success", "failed"];
    const FILTERS: &'static [(&'static str, LookupKind)] = &[];
    /// The processing reports are the pipeline's (a service identity), not users'.
    const COMMANDS: &'static [CommandRoute] = &[
        CommandRoute::creates("upload"),
        CommandRoute::for_service("start-processing", "start_processing"),
        CommandRoute::for_service("progress", "report_progress"),
        CommandRoute::for_service("succeed", "succeed"),
        CommandRoute::for_service("fail", "fail"),
    ];
}
