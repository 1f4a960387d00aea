//! Who may do what with videos (the shared terms are in `crate::access`):
//! - any signed-in user uploads videos as themself and reads their own;
//! - the processing pipeline, a **service identity** (IAM-signed requests), reports start,
//!   progress, success and failure, reads every video and lists them by status; no user may
//!   report for it;
//! - an **operator** reads and lists every video.

use super::{VideoAggregate, VideoCommand, VideoState};
use crate::access::{Access, Caller, Policy, Role};
use crate::ports::LookupKind;

impl Policy for VideoAggregate {
    fn may_read(caller: &Caller, state: &VideoState) -> Access {
        let Some(video) = state else {
            return Access::Hidden;
        };
        let own = matches!(caller, Caller::User { subject, .. }
            if video.uploaded_by.as_deref() == Some(subject.as_str()));
        if own || caller.is_service() || caller.has(Role::Operator) {
            Access::Allowed
        } else {
            Access::Hidden
        }
    }

    fn may_command(caller: &Caller, state: &VideoState, command: &VideoCommand) -> Access {
        match command {
            VideoCommand::Upload { uploaded_by, .. } => match caller {
                Caller::Service { .. } => Access::Forbidden("video.users_upload"),
                Caller::User { subject, .. } => Access::allow_if(
                    uploaded_by.as_deref() == Some(subject.as_str()),
                    "video.upload_as_yourself",
                ),
            },
            _ if caller.is_service() || state.is_none() => Access::Allowed,
            _ => match Self::may_read(caller, state) {
                Access::Hidden => Access::Hidden,
                _ => Access::Forbidden("video.pipeline_reports"),
            },
        }
    }

    fn may_list(caller: &Caller, _lookup: LookupKind, _value: &str) -> Access {
        Access::allow_if(
            caller.is_service() || caller.has(Role::Operator),
            "video.operators_list",
        )
    }

    fn complete_from_identity(
        caller: &Caller,
        command: &str,
        body: &mut serde_json::Map<String, serde_json::Value>,
    ) {
        if let (Caller::User { subject, .. }, "upload") = (caller, command) {
            body.entry("uploaded_by")
                .or_insert_with(|| subject.as_str().into());
        }
    }
}
