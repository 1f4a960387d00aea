//! Given/when/then: the business rules, as examples.
use super::VideoAggregate as V;
use super::*;
use crate::scenario::{given, given_no_history};

fn uploaded() -> VideoEvent {
    VideoEvent::VideoUploaded {
        title: "Keynote".into(),
        source_uri: "s3://uploads/keynote.mp4".into(),
        uploaded_by: None,
    }
}
fn started(attempt: u32) -> VideoEvent {
    VideoEvent::ProcessingStarted { attempt }
}
fn progressed(percent: u8) -> VideoEvent {
    VideoEvent::ProcessingProgressed { percent }
}
fn failed(error: &str) -> VideoEvent {
    VideoEvent::ProcessingFailed {
        error: error.into(),
    }
}

#[test]
fn a_video_is_uploaded_once() {
    let state = given_no_history::<V>()
        .when(VideoCommand::Upload {
            title: "Keynote".into(),
            source_uri: "s3://uploads/keynote.mp4".into(),
            uploaded_by: None,
        })
        .then(&[uploaded()]);
    assert_eq!(state.unwrap().status(), "uploaded");
    given::<V>(&[uploaded()])
        .when(VideoCommand::Upload {
            title: "Again".into(),
            source_uri: "s3://x".into(),
            uploaded_by: None,
        })
        .then_error("video.already_exists");
}

#[test]
fn an_upload_needs_a_title_and_a_source() {
    given_no_history::<V>()
        .when(VideoCommand::Upload {
            title: " ".into(),
            source_uri: "s3://x".into(),
            uploaded_by: None,
        })
        .then_error("video.field_required");
    given_no_history::<V>()
        .when(VideoCommand::Upload {
            title: "t".repeat(201),
            source_uri: "s3://x".into(),
            uploaded_by: None,
        })
        .then_error("video.field_too_long");
}

#[test]
fn commands_on_a_video_never_uploaded_are_not_found() {
    given_no_history::<V>()
        .when(VideoCommand::StartProcessing)
        .then_error("video.not_found");
}

#[test]
fn processing_starts_from_uploaded() {
    let state = given::<V>(&[uploaded()])
        .when(VideoCommand::StartProcessing)
        .then(&[started(1)]);
    assert_eq!(state.unwrap().status(), "processing");
}

#[test]
fn processing_does_not_start_twice_or_after_success() {
    given::<V>(&[uploaded(), started(1)])
        .when(VideoCommand::StartProcessing)
        .then_error("video.already_processing");
    given::<V>(&[
        uploaded(),
        started(1),
        VideoEvent::ProcessingSucceeded { output_uri: None },
    ])
    .when(VideoCommand::StartProcessing)
    .then_error("video.already_succeeded");
}

#[test]
fn a_failed_video_can_be_retried_and_keeps_the_reason_of_the_last_failure() {
    let state = given::<V>(&[uploaded(), started(1), failed("timeout")])
        .when(VideoCommand::StartProcessing)
        .then(&[started(2)])
        .unwrap();
    assert_eq!(state.status(), "processing");
    assert_eq!(state.attempts, 2);
    assert_eq!(state.failure_reason.as_deref(), Some("timeout"));
}

#[test]
fn progress_is_reported_as_a_percentage_while_processing() {
    let state = given::<V>(&[uploaded(), started(1)])
        .when(VideoCommand::ReportProgress { percent: 50 })
        .then(&[progressed(50)]);
    assert_eq!(state.unwrap().status(), "processing:50%");
}

#[test]
fn progress_never_goes_backwards() {
    given::<V>(&[uploaded(), started(1), progressed(50)])
        .when(VideoCommand::ReportProgress { percent: 40 })
        .then_error("video.progress_backwards");
}

#[test]
fn a_repeated_progress_report_changes_nothing() {
    given::<V>(&[uploaded(), started(1), progressed(50)])
        .when(VideoCommand::ReportProgress { percent: 50 })
        .then(&[]);
}

#[test]
fn progress_stays_within_0_to_100() {
    given::<V>(&[uploaded(), started(1)])
        .when(VideoCommand::ReportProgress { percent: 101 })
        .then_error("video.progress_out_of_range");
    given::<V>(&[uploaded(), started(1)])
        .when(VideoCommand::ReportProgress { percent: 0 })
        .then(&[progressed(0)]);
}

#[test]
fn progress_needs_a_processing_run() {
    given::<V>(&[uploaded()])
        .when(VideoCommand::ReportProgress { percent: 10 })
        .then_error("video.not_processing");
}

#[test]
fn a_run_succeeds_only_while_processing() {
    let state = given::<V>(&[uploaded(), started(1), progressed(90)])
        .when(VideoCommand::Succeed {
            output_uri: Some("s3://out/keynote.m3u8".into()),
        })
        .then(&[VideoEvent::ProcessingSucceeded {
            output_uri: Some("s3://out/keynote.m3u8".into()),
        }]);
    assert_eq!(state.unwrap().status(), "success");
    given::<V>(&[uploaded()])
        .when(VideoCommand::Succeed { output_uri: None })
        .then_error("video.not_processing");
}

#[test]
fn a_run_fails_with_its_reason() {
    let state = given::<V>(&[uploaded(), started(1), progressed(50)])
        .when(VideoCommand::Fail {
            error: "timeout".into(),
        })
        .then(&[failed("timeout")])
        .unwrap();
    assert_eq!(state.status(), "failed");
    assert_eq!(state.failure_reason.as_deref(), Some("timeout"));
    given::<V>(&[uploaded(), started(1)])
        .when(VideoCommand::Fail { error: "".into() })
        .then_error("video.field_required");
    given::<V>(&[uploaded()])
        .when(VideoCommand::Fail {
            error: "timeout".into(),
        })
        .then_error("video.not_processing");
}
