//! The Lambda event source mapping for Kinesis, emulated for the local runner: it follows
//! every shard of the log and hands batches to the processor with the semantics the
//! template configures in AWS:
//!
//! - `ReportBatchItemFailures`: when the function names a failed record, the records before
//!   it are done and the batch is retried from that record;
//! - `BisectBatchOnFunctionError`: a batch that keeps failing at its first record is split in
//!   two halves, each retried on its own, until the failing record stands alone;
//! - `MaximumRetryAttempts: -1` (what the template sets): a failed record is retried until
//!   it succeeds, never discarded; the processor only fails a record a retry may fix (it
//!   parks an entity it can never apply), so the shard waits out an outage and goes on.
//!   A few tries per poll, then the shard stays at the failed record until the next poll;
//! - `MaximumRetryAttempts: n`: a record that still fails after n retries is sent to the
//!   on-failure destination (here a sink the runner writes to a JSON-lines file) and the
//!   shard moves on;
//! - a failure identifier that is not in the batch fails the whole batch, as in AWS;
//! - a child shard is read only once its parents are read to their end, so one key's
//!   records reach the function in order across a reshard; an empty page is not the end of
//!   a shard (the next poll goes on from there).
//!
//! Not emulated: `MaximumRecordAgeInSeconds` (the template sets none: a record is never
//! discarded for its age), `ParallelizationFactor` (one batch per shard
//! at a time, which keeps per-key order as AWS does), tumbling windows.

use std::future::Future;
use timeline_core::ports::{Checkpoints, LogError, LogRecord, NoCheckpoints, StreamReader};
use timeline_core::shards::{Follower, PageEnd};

#[derive(Debug, Clone)]
pub struct MappingConfig {
    pub batch_size: usize,
    /// Retries before a record goes to the on-failure destination; None: retried forever.
    pub max_retries: Option<u32>,
    pub bisect: bool,
}

impl Default for MappingConfig {
    /// What `template.yaml` sets.
    fn default() -> Self {
        MappingConfig {
            batch_size: 100,
            max_retries: None,
            bisect: true,
        }
    }
}

/// With retries forever, the tries of a failing batch in one poll before the shard waits
/// for the next poll at the failed record.
const TRIES_PER_POLL: u32 = 3;

/// The function: returns the sequence number of the first record it could not apply.
pub trait BatchHandler: Send + Sync {
    fn handle(&self, records: &[LogRecord]) -> impl Future<Output = Option<String>> + Send;
}

/// The on-failure destination. A record it could not take is not discarded: the mapping
/// stops that shard there and tries again on the next poll.
pub trait FailureSink: Send + Sync {
    fn discard(&self, shard: &str, records: &[LogRecord], attempts: u32) -> std::io::Result<()>;
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MappingReport {
    pub batches: usize,
    pub invocations: usize,
    pub records_done: usize,
    pub records_discarded: usize,
    /// Empty pages that were not the end of their shard.
    pub empty_pages: usize,
    /// Closed shards read to their end in this poll (their children come next).
    pub shards_finished: usize,
    /// Batches that kept failing: their shard waits at the failed record for the next poll.
    pub stalled: usize,
}

impl MappingReport {
    /// Is there more to read at once (records delivered, an empty page that was not the
    /// end, or children opened by a finished parent)? A stalled shard is not: it waits.
    pub fn busy(&self) -> bool {
        self.batches > self.stalled || self.empty_pages > 0 || self.shards_finished > 0
    }
}

pub struct EventSourceMapping<R, H, S, P = NoCheckpoints> {
    reader: R,
    handler: H,
    sink: S,
    config: MappingConfig,
    /// The last sequence number done per shard (the mapping's checkpoint), and the closed
    /// shards read to their end.
    follower: Follower,
    /// Where the positions outlive the process (the embedded backend); loaded on the first
    /// poll, saved after each poll that did something.
    checkpoints: P,
    resumed: bool,
}

impl<R: StreamReader, H: BatchHandler, S: FailureSink> EventSourceMapping<R, H, S> {
    pub fn new(reader: R, handler: H, sink: S, config: MappingConfig) -> Self {
        EventSourceMapping::with_checkpoints(reader, handler, sink, config, NoCheckpoints)
    }
}

impl<R: StreamReader, H: BatchHandler, S: FailureSink, P: Checkpoints>
    EventSourceMapping<R, H, S, P>
{
    pub fn with_checkpoints(
        reader: R,
        handler: H,
        sink: S,
        config: MappingConfig,
        checkpoints: P,
    ) -> Self {
        EventSourceMapping {
            reader,
            handler,
            sink,
            config,
            follower: Follower::default(),
            checkpoints,
            resumed: false,
        }
    }

    pub fn handler(&self) -> &H {
        &self.handler
    }

    /// Reads one batch from each shard that may be read now (a child once its parents are
    /// finished) and delivers it; returns what happened.
    pub async fn poll(&mut self) -> Result<MappingReport, LogError> {
        let mut report = MappingReport::default();
        if !self.resumed {
            self.follower = Follower::resume(self.checkpoints.load().await?);
            self.resumed = true;
        }
        let shards = self.reader.shards().await?;
        let ready: Vec<(String, bool)> = self
            .follower
            .ready(&shards)
            .into_iter()
            .map(|s| (s.id.clone(), s.closed))
            .collect();
        for (shard, closed) in ready {
            let from = self.follower.from(&shard);
            let page = self
                .reader
                .read(&shard, &from, self.config.batch_size)
                .await?;
            let end = page.end;
            if let Some(last) = page.records.last().map(|r| r.sequence_number.clone()) {
                report.batches += 1;
                match self.deliver(&shard, page.records, &mut report).await? {
                    Delivered::All => self.follower.done_up_to(&shard, &last),
                    Delivered::UpTo(done) => {
                        // The rest waits for the next poll; the shard is not finished.
                        report.stalled += 1;
                        if let Some(done) = done {
                            self.follower.done_up_to(&shard, &done);
                        }
                        continue;
                    }
                }
            } else if end == PageEnd::Behind {
                // Not the end: the shard has more after an empty page; read on at once.
                report.empty_pages += 1;
            }
            // A closed shard read to its end (a reader may also say so as "caught up").
            if end == PageEnd::Closed || closed && end == PageEnd::CaughtUp {
                // Its children are read from the next poll on.
                self.follower.finish(&shard);
                report.shards_finished += 1;
            }
        }
        if report.batches > 0 {
            // Lost on a crash before this: the batch is delivered again, and the processor
            // skips what it already applied.
            if let Err(e) = self.checkpoints.save(self.follower.positions()).await {
                tracing::warn!(error = %e, "could not save the event source mapping's positions");
            }
        }
        Ok(report)
    }

    /// Polls until every shard is drained.
    pub async fn drain(&mut self) -> Result<MappingReport, LogError> {
        let mut total = MappingReport::default();
        loop {
            let r = self.poll().await?;
            total.batches += r.batches;
            total.invocations += r.invocations;
            total.records_done += r.records_done;
            total.records_discarded += r.records_discarded;
            total.empty_pages += r.empty_pages;
            total.shards_finished += r.shards_finished;
            total.stalled += r.stalled;
            if !r.busy() {
                return Ok(total);
            }
        }
    }

    /// Delivers one batch until every record is done or discarded, or (retrying forever)
    /// until it has failed [`TRIES_PER_POLL`] times in a row; an error (the on-failure
    /// destination refused a record) leaves the shard's position where it was.
    async fn deliver(
        &self,
        shard: &str,
        batch: Vec<LogRecord>,
        report: &mut MappingReport,
    ) -> Result<Delivered, LogError> {
        let order: Vec<String> = batch.iter().map(|r| r.sequence_number.clone()).collect();
        // Work list of sub-batches, each with the retries it has used. Sub-batches run in
        // the shard's order, so what is done is always a prefix of the batch.
        let mut work: Vec<(Vec<LogRecord>, u32)> = vec![(batch, 0)];
        while let Some((records, attempts)) = work.pop() {
            if records.is_empty() {
                continue;
            }
            report.invocations += 1;
            let failed = self.handler.handle(&records).await;
            let Some(seq) = failed else {
                report.records_done += records.len();
                continue;
            };
            // Records before the failed one are done; an unknown id fails the whole batch.
            let at = records
                .iter()
                .position(|r| r.sequence_number == seq)
                .unwrap_or(0);
            report.records_done += at;
            let rest: Vec<LogRecord> = records[at..].to_vec();
            let retry = match self.config.max_retries {
                Some(max) => attempts < max,
                None if attempts + 1 < TRIES_PER_POLL => true,
                None => {
                    let failed = order
                        .iter()
                        .position(|s| *s == rest[0].sequence_number)
                        .unwrap_or(0);
                    tracing::warn!(shard, sequence_number = %rest[0].sequence_number, "batch still failing; the shard waits there for the next poll");
                    return Ok(Delivered::UpTo(
                        failed.checked_sub(1).map(|i| order[i].clone()),
                    ));
                }
            };
            if retry {
                if at == 0 && self.config.bisect && rest.len() > 1 {
                    // Failing at its first record again: split to isolate it. The second
                    // half runs after the first, keeping the shard's order.
                    let half = rest.len() / 2;
                    work.push((rest[half..].to_vec(), 0));
                    work.push((rest[..half].to_vec(), attempts + 1));
                } else {
                    work.push((rest, attempts + 1));
                }
                continue;
            }
            // Out of retries: the failing record goes to the on-failure destination, the
            // rest of the batch is tried again.
            let (poison, after) = rest.split_at(1);
            tracing::error!(shard, sequence_number = %poison[0].sequence_number, attempts, "record sent to the on-failure destination");
            self.sink.discard(shard, poison, attempts).map_err(|e| {
                LogError::Unavailable(format!(
                    "the on-failure destination refused record {} of {shard}: {e}",
                    poison[0].sequence_number
                ))
            })?;
            report.records_discarded += 1;
            work.push((after.to_vec(), 0));
        }
        Ok(Delivered::All)
    }
}

/// How far a batch got.
enum Delivered {
    All,
    /// Up to and including this record (none: not even the first); the rest waits.
    UpTo(Option<String>),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// A shard in memory.
    struct Log(Vec<LogRecord>);

    impl StreamReader for Log {
        async fn shards(&self) -> Result<Vec<timeline_core::shards::Shard>, LogError> {
            Ok(vec![timeline_core::shards::Shard {
                id: "shardId-0".into(),
                parents: vec![],
                hash_range: (0, u128::MAX),
                closed: false,
            }])
        }
        async fn read(
            &self,
            _: &str,
            from: &timeline_core::shards::ReadFrom,
            limit: usize,
        ) -> Result<timeline_core::shards::Page, LogError> {
            let start = match from {
                timeline_core::shards::ReadFrom::After(a) => {
                    self.0.iter().position(|r| &r.sequence_number == a).unwrap() + 1
                }
                _ => 0,
            };
            let records: Vec<LogRecord> = self.0.iter().skip(start).take(limit).cloned().collect();
            let end = if start + records.len() >= self.0.len() {
                PageEnd::CaughtUp
            } else {
                PageEnd::Behind
            };
            Ok(timeline_core::shards::Page { records, end })
        }
        fn key_hash(&self, _: &str) -> u128 {
            0
        }
    }

    /// Applies records in order; a record in `poison` always fails, one in `flaky` fails
    /// once. Records every invocation.
    #[derive(Default)]
    struct Script {
        poison: Vec<String>,
        flaky: Mutex<Vec<String>>,
        applied: Mutex<Vec<String>>,
        calls: Mutex<Vec<Vec<String>>>,
    }

    impl BatchHandler for Script {
        async fn handle(&self, records: &[LogRecord]) -> Option<String> {
            self.calls
                .lock()
                .unwrap()
                .push(records.iter().map(|r| r.sequence_number.clone()).collect());
            for r in records {
                let mut flaky = self.flaky.lock().unwrap();
                if self.poison.contains(&r.sequence_number) || flaky.contains(&r.sequence_number) {
                    flaky.retain(|s| s != &r.sequence_number);
                    return Some(r.sequence_number.clone());
                }
                let mut applied = self.applied.lock().unwrap();
                if !applied.contains(&r.sequence_number) {
                    applied.push(r.sequence_number.clone());
                }
            }
            None
        }
    }

    /// Keeps what it is given, unless told to refuse the next `refuse` records.
    #[derive(Default)]
    struct Sink(Mutex<Vec<String>>, std::sync::atomic::AtomicUsize);

    impl FailureSink for Sink {
        fn discard(&self, _: &str, records: &[LogRecord], _: u32) -> std::io::Result<()> {
            let refused = self
                .1
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok();
            if refused {
                return Err(std::io::Error::other("disk full"));
            }
            self.0
                .lock()
                .unwrap()
                .extend(records.iter().map(|r| r.sequence_number.clone()));
            Ok(())
        }
    }

    fn log(n: usize) -> Log {
        Log((1..=n)
            .map(|i| LogRecord {
                shard_id: "shardId-0".into(),
                sequence_number: format!("{i:03}"),
                partition_key: "ride#r".into(),
                data: vec![],
                arrival: timeline_core::Timestamp::from_millis(0).unwrap(),
            })
            .collect())
    }

    fn seqs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[tokio::test]
    async fn a_partial_failure_retries_from_the_reported_record_not_the_whole_batch() {
        let script = Script {
            flaky: Mutex::new(seqs(&["003"])),
            ..Default::default()
        };
        let mut esm = EventSourceMapping::new(
            log(5),
            script,
            Sink::default(),
            MappingConfig {
                batch_size: 10,
                max_retries: Some(5),
                bisect: false,
            },
        );
        let report = esm.drain().await.unwrap();
        let calls = esm.handler().calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            [
                seqs(&["001", "002", "003", "004", "005"]),
                seqs(&["003", "004", "005"])
            ]
        );
        assert_eq!(
            *esm.handler().applied.lock().unwrap(),
            seqs(&["001", "002", "003", "004", "005"])
        );
        assert_eq!((report.records_done, report.records_discarded), (5, 0));
    }

    #[tokio::test]
    async fn a_poison_record_is_retried_a_bounded_number_of_times_then_discarded_and_the_shard_moves_on(
    ) {
        let script = Script {
            poison: seqs(&["002"]),
            ..Default::default()
        };
        let sink = Sink::default();
        let mut esm = EventSourceMapping::new(
            log(4),
            script,
            sink,
            MappingConfig {
                batch_size: 10,
                max_retries: Some(2),
                bisect: false,
            },
        );
        let report = esm.drain().await.unwrap();
        assert_eq!(*esm.sink.0.lock().unwrap(), seqs(&["002"]));
        assert_eq!(
            *esm.handler().applied.lock().unwrap(),
            seqs(&["001", "003", "004"])
        );
        // First call, 2 retries from 002, then the rest after the discard.
        assert_eq!(esm.handler().calls.lock().unwrap().len(), 4);
        assert_eq!((report.records_done, report.records_discarded), (3, 1));
    }

    #[tokio::test]
    async fn retrying_forever_a_shard_waits_at_the_failed_record_and_discards_nothing() {
        // 003 fails as long as the store is down (ten tries), then applies.
        struct Outage(Script, std::sync::atomic::AtomicU32);
        impl BatchHandler for Outage {
            async fn handle(&self, records: &[LogRecord]) -> Option<String> {
                let down = self.1.load(std::sync::atomic::Ordering::SeqCst) > 0;
                if down && records.iter().any(|r| r.sequence_number == "003") {
                    self.1.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                    let before: Vec<LogRecord> = records
                        .iter()
                        .take_while(|r| r.sequence_number != "003")
                        .cloned()
                        .collect();
                    self.0.handle(&before).await;
                    return Some("003".into());
                }
                self.0.handle(records).await
            }
        }
        let checkpoints = timeline_engine::memory::MemoryCheckpoints::default();
        let mut esm = EventSourceMapping::with_checkpoints(
            log(5),
            Outage(Script::default(), 10.into()),
            Sink::default(),
            MappingConfig::default(),
            checkpoints.clone(),
        );
        let report = esm.drain().await.unwrap();
        assert_eq!(report.stalled, 1, "{report:?}");
        assert_eq!(checkpoints.saved()["shardId-0"], "002", "waits at 003");
        for _ in 0..3 {
            esm.drain().await.unwrap();
        }
        assert_eq!(
            *esm.handler().0.applied.lock().unwrap(),
            seqs(&["001", "002", "003", "004", "005"]),
            "every record, in order, once the store is back"
        );
        assert!(esm.sink.0.lock().unwrap().is_empty(), "nothing discarded");
        assert_eq!(checkpoints.saved()["shardId-0"], "005");
    }

    #[tokio::test]
    async fn bisect_isolates_a_poison_record_in_the_middle_of_a_batch() {
        let script = Script {
            poison: seqs(&["005"]),
            ..Default::default()
        };
        let mut esm = EventSourceMapping::new(
            log(8),
            script,
            Sink::default(),
            MappingConfig {
                batch_size: 8,
                max_retries: Some(3),
                bisect: true,
            },
        );
        let report = esm.drain().await.unwrap();
        assert_eq!(*esm.sink.0.lock().unwrap(), seqs(&["005"]));
        let applied = esm.handler().applied.lock().unwrap().clone();
        assert_eq!(
            applied,
            seqs(&["001", "002", "003", "004", "006", "007", "008"]),
            "order kept"
        );
        assert_eq!((report.records_done, report.records_discarded), (7, 1));
        // Some invocation held the poison record alone before it was discarded.
        assert!(esm
            .handler()
            .calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c == &seqs(&["005"])));
    }

    #[tokio::test]
    async fn an_identifier_not_in_the_batch_fails_the_whole_batch() {
        struct Liar(Mutex<u32>);
        impl BatchHandler for Liar {
            async fn handle(&self, _: &[LogRecord]) -> Option<String> {
                let mut n = self.0.lock().unwrap();
                *n += 1;
                (*n == 1).then(|| "not-a-sequence-number".into())
            }
        }
        let mut esm = EventSourceMapping::new(
            log(3),
            Liar(Mutex::new(0)),
            Sink::default(),
            MappingConfig {
                batch_size: 10,
                max_retries: Some(5),
                bisect: false,
            },
        );
        let report = esm.drain().await.unwrap();
        assert_eq!(report.invocations, 2, "the whole batch again");
        assert_eq!(report.records_done, 3);
    }

    #[tokio::test]
    async fn batches_follow_the_shard_and_its_checkpoint() {
        let script = Script::default();
        let mut esm = EventSourceMapping::new(
            log(5),
            script,
            Sink::default(),
            MappingConfig {
                batch_size: 2,
                max_retries: Some(1),
                bisect: true,
            },
        );
        let report = esm.drain().await.unwrap();
        assert_eq!(report.batches, 3);
        let calls = esm.handler().calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            [seqs(&["001", "002"]), seqs(&["003", "004"]), seqs(&["005"])]
        );
    }

    #[tokio::test]
    async fn a_record_the_failure_destination_refuses_is_not_skipped() {
        let script = Script {
            poison: seqs(&["002"]),
            ..Default::default()
        };
        let sink = Sink::default();
        sink.1.store(1, std::sync::atomic::Ordering::SeqCst);
        let checkpoints = timeline_engine::memory::MemoryCheckpoints::default();
        let config = MappingConfig {
            batch_size: 10,
            max_retries: Some(0),
            bisect: false,
        };
        let mut esm =
            EventSourceMapping::with_checkpoints(log(3), script, sink, config, checkpoints.clone());
        assert!(esm.poll().await.is_err(), "the sink refused 002");
        assert!(checkpoints.saved().is_empty(), "the shard did not move");
        let report = esm.drain().await.unwrap();
        assert_eq!(*esm.sink.0.lock().unwrap(), seqs(&["002"]));
        assert_eq!(report.records_discarded, 1);
        assert_eq!(
            *esm.handler().applied.lock().unwrap(),
            seqs(&["001", "003"])
        );
    }

    #[tokio::test]
    async fn a_restarted_mapping_continues_from_its_checkpoint() {
        let checkpoints = timeline_engine::memory::MemoryCheckpoints::default();
        let config = MappingConfig {
            batch_size: 2,
            max_retries: Some(0),
            bisect: false,
        };
        let mut first = EventSourceMapping::with_checkpoints(
            log(3),
            Script::default(),
            Sink::default(),
            config.clone(),
            checkpoints.clone(),
        );
        first.drain().await.unwrap();
        assert_eq!(checkpoints.saved()["shardId-0"], "003");
        let mut second = EventSourceMapping::with_checkpoints(
            log(5),
            Script::default(),
            Sink::default(),
            config,
            checkpoints.clone(),
        );
        second.drain().await.unwrap();
        assert_eq!(
            *second.handler().applied.lock().unwrap(),
            seqs(&["004", "005"]),
            "only what came after the checkpoint"
        );
        assert_eq!(checkpoints.saved()["shardId-0"], "005");
    }
}
