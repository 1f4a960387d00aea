//! The operator's commands, on either backend: an entity's state (now, at a time, at a
//! version), its history, rebuilding the read models, verifying the log against the stored
//! heads and views, and replaying an archive into the stream. Long work shows a progress
//! bar on a terminal and ends with a summary; `--json` prints one JSON document instead.

use crate::backend::Backend;
use crate::system::LocalSystem;
use hydrator::HydratorRequest;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;
use std::time::Duration;
use timeline_core::ports::ArchiveError;
use timeline_core::ports::ArchiveStore;
use timeline_core::ports::SourceProblem;
use timeline_core::ports::{EventLog, LogError, StreamReader};
use timeline_core::time::Deadline;
use timeline_engine::retry::{retry_throttled, retry_transient};

/// Tries of a call that failed in a way worth trying again (a 500, a lost answer).
const ATTEMPTS: usize = 5;
use timeline_core::shards::{PageEnd, ReadFrom};
use timeline_core::CommitRecord;
use timeline_core::Timestamp;

const READING_LOG: &str = "reading the log (archive + stream tail)";

/// One operator command, with its arguments parsed.
#[derive(Debug, Clone)]
pub enum Operation {
    State {
        kind: String,
        id: String,
        as_of: Option<Timestamp>,
        version: Option<u64>,
    },
    History {
        kind: String,
        id: String,
        from: Option<Timestamp>,
        to: Option<Timestamp>,
    },
    Rebuild {
        into: Option<String>,
        resume_after: Option<String>,
    },
    Verify,
    ReplayArchive {
        since: Option<Timestamp>,
        until: Option<Timestamp>,
    },
    /// The entities the processor parked.
    Parked,
    /// Re-projects one parked entity from the log and ends its parking.
    Redrive {
        entity: String,
    },
}

/// Runs `operation` on `backend` (`ReplayArchive` reads `archive`), shows it as `output`
/// says, and returns the answer.
pub async fn operate<B: Backend, A: ArchiveStore>(
    backend: &B,
    operation: Operation,
    archive: &A,
    output: Output,
) -> anyhow::Result<Value> {
    let system = LocalSystem::new(backend, timeline_core::write::PublishMode::Inline);
    let asked = operation.clone();
    let answer = match operation {
        Operation::State {
            kind,
            id,
            as_of,
            version,
        } => {
            let request = HydratorRequest::State {
                aggregate_type: kind,
                aggregate_id: id,
                as_of,
                version,
            };
            output
                .while_spinning(
                    READING_LOG,
                    system.hydrator.handle(request, &Deadline::none()),
                )
                .await?
        }
        Operation::History { kind, id, from, to } => {
            let request = HydratorRequest::History {
                aggregate_type: kind,
                aggregate_id: id,
                from,
                to,
            };
            output
                .while_spinning(
                    READING_LOG,
                    system.hydrator.handle(request, &Deadline::none()),
                )
                .await?
        }
        Operation::Rebuild { into, resume_after } => {
            let bar = output.bar("rebuilding the read models", "parts of the log");
            let report = system
                .hydrator
                .rebuild(
                    into.as_deref(),
                    resume_after,
                    &Deadline::none(),
                    &mut |r, done, total| {
                        if let Some(total) = total {
                            bar.set_length(total as u64);
                        }
                        bar.set_position(done as u64);
                        bar.set_message(format!(
                            "{} records, {} events applied",
                            r.records, r.events_applied
                        ));
                    },
                )
                .await;
            bar.finish_and_clear();
            let report = report?;
            output.summary(format_args!(
                "rebuilt {}: {} records read, {} events applied, {} duplicates skipped, {} problems",
                into.as_deref().unwrap_or("the live read models"),
                report.records,
                report.events_applied,
                report.duplicates_skipped,
                report.problems.len()
            ));
            serde_json::to_value(report)?
        }
        Operation::Verify => {
            output
                .while_spinning(
                    "comparing the log with the heads and the views",
                    system
                        .hydrator
                        .handle(HydratorRequest::Verify {}, &Deadline::none()),
                )
                .await?
        }
        Operation::ReplayArchive { since, until } => {
            let bar = output.bar("replaying the archive into the stream", "objects");
            let report = replay_archive(
                archive,
                &backend.event_log(),
                since,
                until,
                &mut |done, total| {
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                },
            )
            .await;
            bar.finish_and_clear();
            let report = report?;
            output.summary(format_args!(
                "replayed {} objects: {} records published ({} events), {} duplicates skipped, {} problems",
                report.objects,
                report.records_published,
                report.events,
                report.duplicates_skipped,
                report.problems.len()
            ));
            serde_json::to_value(report)?
        }
        Operation::Parked => {
            let answer = system
                .hydrator
                .handle(HydratorRequest::Parked {}, &Deadline::none())
                .await?;
            let parked = answer["parked"].as_array().map_or(0, Vec::len);
            output.summary(format_args!(
                "{parked} parked entities{}",
                if parked > 0 {
                    " (redrive each once the cause is fixed)"
                } else {
                    ""
                }
            ));
            answer
        }
        Operation::Redrive { entity } => {
            let report = output
                .while_spinning(
                    READING_LOG,
                    system.hydrator.redrive(&entity, &Deadline::none()),
                )
                .await?;
            let line = match (&report.parked, report.unparked) {
                (None, _) => format!("{entity} is not parked: nothing done"),
                (Some(_), true) => format!(
                    "{entity} redriven: {} events applied, view at version {}; parking ended",
                    report.events_applied, report.view_version
                ),
                (Some(_), false) => format!(
                    "{entity} is still parked ({} events applied): see `still`",
                    report.events_applied
                ),
            };
            output.summary(format_args!("{line}"));
            serde_json::to_value(report)?
        }
    };
    output.answer(&asked, &answer)?;
    Ok(answer)
}

/// How results are shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Output {
    /// Progress on a terminal, a summary line, then the answer as text for people.
    Text,
    /// Only the answer, as one line of JSON.
    Json,
    /// Nothing (tests, callers that print themselves).
    Quiet,
}

impl Output {
    /// Awaits `work` with a spinner on a terminal.
    async fn while_spinning<T>(
        self,
        message: &str,
        work: impl std::future::Future<Output = T>,
    ) -> T {
        let spinner = if self == Output::Text {
            let bar = indicatif::ProgressBar::new_spinner();
            bar.set_message(format!("{message}..."));
            bar.enable_steady_tick(Duration::from_millis(120));
            bar
        } else {
            indicatif::ProgressBar::hidden()
        };
        let answer = work.await;
        spinner.finish_and_clear();
        answer
    }

    fn bar(self, title: &'static str, unit: &'static str) -> indicatif::ProgressBar {
        if self != Output::Text {
            return indicatif::ProgressBar::hidden();
        }
        // Not empty (a bar of 0/0 draws as full); the real length comes with the first report.
        let bar = indicatif::ProgressBar::new(1);
        let style = indicatif::ProgressStyle::with_template(&format!(
            "{title} [{{bar:30}}] {{pos}}/{{len}} {unit} ({{elapsed}}) {{msg}}"
        ))
        .expect("a valid template")
        .progress_chars("=> ");
        bar.set_style(style);
        bar.enable_steady_tick(Duration::from_millis(200));
        bar
    }

    fn summary(self, line: std::fmt::Arguments<'_>) {
        if self == Output::Text {
            eprintln!("{line}");
        }
    }

    fn answer(self, operation: &Operation, answer: &Value) -> anyhow::Result<()> {
        match self {
            Output::Text => print!("{}", crate::text::render(operation, answer)),
            Output::Json => println!("{}", serde_json::to_string(answer)?),
            Output::Quiet => {}
        }
        Ok(())
    }
}

/// What a replay of the archive into the stream did.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct ReplayArchiveReport {
    pub objects: usize,
    pub records_published: usize,
    pub events: usize,
    /// Copies of records already read (the archive holds copies when a pump restarted
    /// before its checkpoint, and Firehose delivers at least once).
    pub duplicates_skipped: usize,
    /// Objects that could not be read; none of their records are published (use `verify`
    /// and the archive's own tools to inspect them).
    pub problems: Vec<SourceProblem>,
}

/// Publishes every commit record of the archive's objects whose records can have arrived
/// between `since` and `until` (either end open), each once, every entity's records in
/// version order (objects named in the same second sort by a random id, so key order alone
/// could put an entity's later versions first, and the processor would see a gap). The
/// records are gathered first, so this holds the selected part of the archive in memory.
///
/// Readers dedupe on `(aggregate, version)`, so replaying records a stream already holds
/// changes no read model; it is how a new stream (another region, a stream recreated after
/// an incident, an embedded database deleted but its archive kept) gets the timeline back.
pub async fn replay_archive<A: ArchiveStore, L: EventLog>(
    archive: &A,
    log: &L,
    since: Option<Timestamp>,
    until: Option<Timestamp>,
    progress: &mut (dyn FnMut(usize, usize) + Send),
) -> anyhow::Result<ReplayArchiveReport> {
    let deadline = Deadline::none();
    let archive_transient = |e: &ArchiveError| matches!(e, ArchiveError::Unavailable { .. });
    let keys = retry_transient(
        &deadline,
        ATTEMPTS,
        || archive.list_keys(since, until),
        |_| false,
        archive_transient,
    )
    .await?;
    let total = keys.len();
    let mut report = ReplayArchiveReport::default();
    // Keyed by entity then first version: iteration order is the publishing order.
    let mut records: BTreeMap<(String, u64), CommitRecord> = BTreeMap::new();
    progress(0, total * 2);
    for key in keys {
        report.objects += 1;
        let read = retry_transient(
            &deadline,
            ATTEMPTS,
            || archive.read_object(&key),
            |_| false,
            archive_transient,
        )
        .await;
        match read {
            Ok(found) => {
                for record in found {
                    let identity = (
                        record.partition_key().unwrap_or_default(),
                        record.first_version().unwrap_or(0),
                    );
                    match records.entry(identity) {
                        std::collections::btree_map::Entry::Occupied(_) => {
                            report.duplicates_skipped += 1
                        }
                        std::collections::btree_map::Entry::Vacant(slot) => {
                            slot.insert(record);
                        }
                    }
                }
            }
            // A corrupt object is reported (its records cannot be read, now or later); one
            // that could not be fetched stops the replay, to be run again.
            Err(e @ ArchiveError::Corrupt { .. }) => report.problems.push(SourceProblem {
                location: key.clone(),
                reason: e.to_string(),
            }),
            Err(e) => return Err(e.into()),
        }
        progress(report.objects, total * 2);
    }
    let count = records.len().max(1);
    for (i, ((partition_key, version), record)) in records.into_iter().enumerate() {
        // A shard takes 1,000 records a second: throttling is waited out, not a failure; a
        // publish whose answer was lost is published again (readers skip the copy).
        retry_transient(
            &deadline,
            ATTEMPTS,
            || log.publish(&record),
            LogError::is_throttled,
            |e| matches!(e, LogError::Unavailable(_)),
        )
        .await
        .map_err(|e| anyhow::anyhow!("publishing {partition_key} from version {version}: {e}"))?;
        report.records_published += 1;
        report.events += record.events.len();
        progress(total + (i + 1) * total / count, total * 2);
    }
    progress(total * 2, total * 2);
    Ok(report)
}

/// Does the stream hold any record? (Replaying an archive into it would add copies.) An
/// empty page is not the end of a shard: each is read until a record, its tip or its end.
pub async fn stream_holds_records<R: StreamReader>(reader: &R) -> anyhow::Result<bool> {
    let deadline = Deadline::none();
    for shard in reader.shards().await? {
        let mut from = ReadFrom::Oldest;
        loop {
            let page = retry_throttled(
                &deadline,
                || reader.read(&shard.id, &from, 1),
                LogError::is_throttled,
            )
            .await?;
            if !page.records.is_empty() {
                return Ok(true);
            }
            if page.end != PageEnd::Behind {
                break;
            }
            from = page.next_from(&from);
        }
    }
    Ok(false)
}

/// Did the operation find something wrong (drift, unreadable parts of the log)? The CLI
/// exits with [`FOUND_PROBLEMS`] then, so scripts can tell.
pub fn found_problems(answer: &Value) -> bool {
    let nonempty = |field: &str| answer[field].as_array().is_some_and(|a| !a.is_empty());
    // A parked entity listed, or one a redrive could not end.
    nonempty("drift") || nonempty("problems") || nonempty("parked") || !answer["still"].is_null()
}

/// The exit status of an operator command that ran but found problems.
pub const FOUND_PROBLEMS: i32 = 3;
