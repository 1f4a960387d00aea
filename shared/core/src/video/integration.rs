//! What other teams learn about videos: a run succeeded (with its output) or failed (with the
//! reason). Uploads and progress are for the uploader and the pipeline itself.

use super::{VideoAggregate, VideoEvent};
use crate::integration::Publishes;
use serde_json::{json, Value};

impl Publishes for VideoAggregate {
    const PUBLISHED: &'static [&'static str] = &["video.succeeded", "video.failed"];

    fn integration(event: &VideoEvent) -> Option<(&'static str, Value)> {
        Some(match event {
            VideoEvent::ProcessingSucceeded { output_uri } => {
                ("video.succeeded", json!({ "output_uri": output_uri }))
            }
            VideoEvent::ProcessingFailed { error } => ("video.failed", json!({ "reason": error })),
            VideoEvent::VideoUploaded { .. }
            | VideoEvent::ProcessingStarted { .. }
            | VideoEvent::ProcessingProgressed { .. } => return None,
        })
    }
}
