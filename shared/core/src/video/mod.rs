//! Video processing: `uploaded` -> `processing` -> `processing:50%` -> `success` | `failed`.
//!
//! Rules:
//! - a video is uploaded once, with a title and a source;
//! - processing starts from `uploaded`, or again after a failure (a retry);
//! - progress is 0..=100, only while processing, and never goes backwards (a repeat of the
//!   current percentage is accepted and changes nothing);
//! - success and failure end a processing run; a failure keeps its reason.

use crate::aggregate::{Aggregate, DomainError, DomainEvent, RefusalKind};
use serde::{Deserialize, Serialize};

mod integration;
mod policy;
mod read_model;

pub struct VideoAggregate;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum VideoPhase {
    Uploaded,
    Processing,
    Succeeded,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Video {
    pub title: String,
    pub source_uri: String,
    pub phase: VideoPhase,
    /// Last reported percentage of the current processing run.
    pub progress: Option<u8>,
    pub output_uri: Option<String>,
    /// Why the last run failed; kept after a retry starts, for the record.
    pub failure_reason: Option<String>,
    pub attempts: u32,
    #[serde(default)]
    pub uploaded_by: Option<String>,
}

impl Video {
    /// The status as users read it: `uploaded`, `processing`, `processing:50%`, `success`,
    /// `failed`.
    pub fn status(&self) -> String {
        match (self.phase, self.progress) {
            (VideoPhase::Uploaded, _) => "uploaded".into(),
            (VideoPhase::Processing, None) => "processing".into(),
            (VideoPhase::Processing, Some(p)) => format!("processing:{p}%"),
            (VideoPhase::Succeeded, _) => "success".into(),
            (VideoPhase::Failed, _) => "failed".into(),
        }
    }
}

/// `None` until the video is uploaded.
pub type VideoState = Option<Video>;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "command", rename_all = "snake_case")]
pub enum VideoCommand {
    Upload {
        title: String,
        source_uri: String,
        /// Who uploads it: the caller, filled from their identity at the edge.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uploaded_by: Option<String>,
    },
    StartProcessing,
    ReportProgress {
        percent: u8,
    },
    Succeed {
        output_uri: Option<String>,
    },
    Fail {
        error: String,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", content = "data")]
pub enum VideoEvent {
    VideoUploaded {
        title: String,
        source_uri: String,
        /// Absent on videos uploaded before uploaders were recorded (only operators and the
        /// pipeline read those).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        uploaded_by: Option<String>,
    },
    ProcessingStarted {
        attempt: u32,
    },
    ProcessingProgressed {
        percent: u8,
    },
    ProcessingSucceeded {
        output_uri: Option<String>,
    },
    ProcessingFailed {
        error: String,
    },
}

impl DomainEvent for VideoEvent {
    fn event_type(&self) -> &'static str {
        match self {
            VideoEvent::VideoUploaded { .. } => "VideoUploaded",
            VideoEvent::ProcessingStarted { .. } => "ProcessingStarted",
            VideoEvent::ProcessingProgressed { .. } => "ProcessingProgressed",
            VideoEvent::ProcessingSucceeded { .. } => "ProcessingSucceeded",
            VideoEvent::ProcessingFailed { .. } => "ProcessingFailed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum VideoError {
    #[error("no such video")]
    NotFound,
    #[error("the video already exists")]
    AlreadyExists,
    #[error("{0} must not be empty")]
    Required(&'static str),
    #[error("{0} is too long (at most {1} characters)")]
    TooLong(&'static str, usize),
    #[error("the video is already being processed")]
    AlreadyProcessing,
    #[error("the video was already processed successfully")]
    AlreadySucceeded,
    #[error("the video is not being processed")]
    NotProcessing,
    #[error("progress must be between 0 and 100, got {0}")]
    ProgressOutOfRange(u8),
    #[error("progress never goes backwards: at {current}%, got {requested}%")]
    ProgressBackwards { current: u8, requested: u8 },
}

impl DomainError for VideoError {
    fn code(&self) -> &'static str {
        match self {
            VideoError::NotFound => "video.not_found",
            VideoError::AlreadyExists => "video.already_exists",
            VideoError::Required(_) => "video.field_required",
            VideoError::TooLong(..) => "video.field_too_long",
            VideoError::AlreadyProcessing => "video.already_processing",
            VideoError::AlreadySucceeded => "video.already_succeeded",
            VideoError::NotProcessing => "video.not_processing",
            VideoError::ProgressOutOfRange(_) => "video.progress_out_of_range",
            VideoError::ProgressBackwards { .. } => "video.progress_backwards",
        }
    }

    fn kind(&self) -> RefusalKind {
        match self {
            VideoError::NotFound => RefusalKind::NotFound,
            VideoError::AlreadyExists => RefusalKind::AlreadyExists,
            _ => RefusalKind::Rule,
        }
    }
}

fn text(field: &'static str, value: &str, max: usize) -> Result<(), VideoError> {
    if value.trim().is_empty() {
        return Err(VideoError::Required(field));
    }
    if value.chars().count() > max {
        return Err(VideoError::TooLong(field, max));
    }
    Ok(())
}

impl Aggregate for VideoAggregate {
    const TYPE: &'static str = "video";
    type State = VideoState;
    type Command = VideoCommand;
    type Event = VideoEvent;
    type Error = VideoError;

    fn decide(state: &VideoState, command: VideoCommand) -> Result<Vec<VideoEvent>, VideoError> {
        use VideoCommand as C;
        use VideoEvent as E;
        let video = match (state, &command) {
            (Some(_), C::Upload { .. }) => return Err(VideoError::AlreadyExists),
            (
                None,
                C::Upload {
                    title,
                    source_uri,
                    uploaded_by,
                },
            ) => {
                text("title", title, 200)?;
                text("source_uri", source_uri, 2048)?;
                return Ok(vec![E::VideoUploaded {
                    title: title.clone(),
                    source_uri: source_uri.clone(),
                    uploaded_by: uploaded_by.clone(),
                }]);
            }
            (None, _) => return Err(VideoError::NotFound),
            (Some(video), _) => video,
        };
        match command {
            C::Upload { .. } => unreachable!("handled above"),
            C::StartProcessing => match video.phase {
                VideoPhase::Uploaded | VideoPhase::Failed => Ok(vec![E::ProcessingStarted {
                    attempt: video.attempts + 1,
                }]),
                VideoPhase::Processing => Err(VideoError::AlreadyProcessing),
                VideoPhase::Succeeded => Err(VideoError::AlreadySucceeded),
            },
            C::ReportProgress { percent } => {
                if percent > 100 {
                    return Err(VideoError::ProgressOutOfRange(percent));
                }
                if video.phase != VideoPhase::Processing {
                    return Err(VideoError::NotProcessing);
                }
                match video.progress {
                    Some(current) if percent < current => Err(VideoError::ProgressBackwards {
                        current,
                        requested: percent,
                    }),
                    Some(current) if percent == current => Ok(vec![]),
                    _ => Ok(vec![E::ProcessingProgressed { percent }]),
                }
            }
            C::Succeed { output_uri } => {
                if video.phase != VideoPhase::Processing {
                    return Err(VideoError::NotProcessing);
                }
                if let Some(uri) = &output_uri {
                    text("output_uri", uri, 2048)?;
                }
                Ok(vec![E::ProcessingSucceeded { output_uri }])
            }
            C::Fail { error } => {
                if video.phase != VideoPhase::Processing {
                    return Err(VideoError::NotProcessing);
                }
                text("error", &error, 2000)?;
                Ok(vec![E::ProcessingFailed { error }])
            }
        }
    }

    fn evolve(state: VideoState, event: &VideoEvent) -> VideoState {
        use VideoEvent as E;
        let video = match (state, event) {
            (
                _,
                E::VideoUploaded {
                    title,
                    source_uri,
                    uploaded_by,
                },
            ) => {
                return Some(Video {
                    title: title.clone(),
                    source_uri: source_uri.clone(),
                    phase: VideoPhase::Uploaded,
                    progress: None,
                    output_uri: None,
                    failure_reason: None,
                    attempts: 0,
                    uploaded_by: uploaded_by.clone(),
                })
            }
            (None, _) => return None,
            (Some(video), _) => video,
        };
        Some(match event {
            E::VideoUploaded { .. } => unreachable!("handled above"),
            E::ProcessingStarted { attempt } => Video {
                phase: VideoPhase::Processing,
                progress: None,
                attempts: *attempt,
                ..video
            },
            E::ProcessingProgressed { percent } => Video {
                progress: Some(*percent),
                ..video
            },
            E::ProcessingSucceeded { output_uri } => Video {
                phase: VideoPhase::Succeeded,
                output_uri: output_uri.clone(),
                ..video
            },
            E::ProcessingFailed { error } => Video {
                phase: VideoPhase::Failed,
                failure_reason: Some(error.clone()),
                ..video
            },
        })
    }

    fn schema_version(event_type: &str) -> u32 {
        match event_type {
            // v1 reported progress as a fraction (`{"progress": 0.5}`); v2 as a percentage.
            "ProcessingProgressed" => 2,
            _ => 1,
        }
    }

    fn upcast(event_type: &str, from: u32, data: serde_json::Value) -> Option<serde_json::Value> {
        match (event_type, from) {
            ("ProcessingProgressed", 1) => {
                let fraction = data.get("progress")?.as_f64()?;
                let percent = (fraction * 100.0).round().clamp(0.0, 100.0) as u8;
                Some(serde_json::json!({ "percent": percent }))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests;
