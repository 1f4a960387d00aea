//! The whole log for the hydrator: the archive (Firehose's layout, in S3 or a directory) plus
//! the stream (Kinesis or the embedded log), whatever stores them.
//!
//! One entity's answer reads one entity's part of the log:
//! 1. its head in the write model (the latest committed version, and events still in its
//!    outbox) and its history index entries (when each event happened, and where its record
//!    sits on the stream). An entity neither knows did not exist: nothing else is read;
//! 2. for each version the answer needs that arrived long enough ago to be archived, the
//!    archive objects that can hold it (an object is named by the arrival of its oldest
//!    record and holds at most 15 minutes of arrivals);
//! 3. the versions still missing from the stream, on the key's own shards only (its lineage
//!    across reshards, parents first): straight to each indexed record's position, and after
//!    the last indexed one for versions not indexed yet, until every version is found or
//!    the shard's tip is reached (an empty page is not the end);
//! 4. versions still missing from a wider window of the archive (Firehose writes late after
//!    throttling); whatever is still missing is reported by the answer, never invented.
//!
//! A replay (rebuild, verify) reads the archive object by object, then the stream shard by
//! shard, parents first, each part resumable from its position. Throttled stream reads are
//! retried with backoff within the caller's deadline; a read that still fails, or runs out
//! of time, is an error ("retry later"), never a partial answer marked complete.

use crate::archive::{parse_object_key, MAX_BUFFER_MILLIS};

use crate::retry::retry_throttled;
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timeline_core::codec::decode_record;
use timeline_core::ports::{ArchiveError, ArchiveStore};
use timeline_core::ports::{
    EntityEvents, EntityRead, EventSource, ReplayChunk, SourceError, SourceProblem,
};
use timeline_core::ports::{Head, LogError, LogRecord, StreamReader, WriteModelStore};
use timeline_core::ports::{PageRequest, ReadModelQueries};
use timeline_core::shards::{lineage, parents_first, PageEnd, ReadFrom, Shard};
use timeline_core::time::Deadline;
use timeline_core::timetravel::{merge, AsOf};
use timeline_core::views::HistoryEntry;
use timeline_core::EventEnvelope;
use timeline_core::StreamKey;
use timeline_core::Timestamp;

/// Archive objects fetched and decoded at once.
pub const PARALLELISM: usize = 4;
/// How long after arriving on the stream an event is looked for in the archive rather than
/// on the stream: Firehose's longest buffer interval and a margin.
pub const ARCHIVE_DELAY_MS: i64 = MAX_BUFFER_MILLIS + 5 * 60_000;
/// How far the clock that stamped `recorded_at` (the command handler's) may be from the
/// stream's arrival clock, plus the time between commit and publish.
pub const CLOCK_SKEW_MS: i64 = 60_000;
/// How late Firehose may write an object after its records arrived (it retries a failed
/// delivery to S3 for up to 24 hours).
pub const LATE_ARCHIVE_MS: i64 = 24 * 3_600_000;
/// Records per read when looking for one entity's records (its read takes little of the
/// shard's 2 MB/s, shared with the processor and Firehose).
pub const ENTITY_PAGE: usize = 1_000;
/// Records per part of the stream tail in a replay.
pub const TAIL_CHUNK: usize = 10_000;
/// How long a listing of the shards is reused by entity reads.
const SHARD_LIST_TTL: Duration = Duration::from_secs(60);
const TAIL_DONE: &str = "tail";
const TAIL_PREFIX: &str = "tail:";

/// See the module documentation. `index` is the history read model and `heads` the write
/// model; without them an entity read cannot tell what it needs and reads every archive
/// object and the key's whole lineage on the stream.
pub struct LogSource<A, R, I, H> {
    archive: A,
    stream: R,
    /// A name for the stream in problem reports.
    stream_name: String,
    index: Option<I>,
    heads: Option<H>,
    /// Records per part of the tail (see [`LogSource::with_tail_chunk`]).
    tail_chunk: usize,
    /// How long after arriving an event is looked for in the archive first.
    archive_delay_ms: i64,
    /// The archive's keys, listed once per replay.
    keys: Mutex<Option<Arc<Vec<String>>>>,
    /// The stream's shards, listed at most every [`SHARD_LIST_TTL`] by entity reads.
    shards: Mutex<Option<(Instant, Arc<Vec<Shard>>)>>,
}

impl<A, R, I, H> std::fmt::Debug for LogSource<A, R, I, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogSource")
            .field("stream", &self.stream_name)
            .finish_non_exhaustive()
    }
}

fn problem(location: impl Into<String>, reason: impl ToString) -> SourceProblem {
    SourceProblem {
        location: location.into(),
        reason: reason.to_string(),
    }
}

fn now() -> Timestamp {
    Timestamp::from_datetime(chrono::Utc::now())
}

/// An inclusive span of arrival times whose archive objects to read (None: every object).
type Window = Option<(Timestamp, Timestamp)>;

/// Merges overlapping spans; "every object" swallows the rest.
fn merge_windows(mut windows: Vec<Window>) -> Vec<Window> {
    if windows.iter().any(Option::is_none) {
        return vec![None];
    }
    windows.sort();
    let mut merged: Vec<(Timestamp, Timestamp)> = Vec::new();
    for (from, to) in windows.into_iter().flatten() {
        match merged.last_mut() {
            Some(last) if from <= last.1 => last.1 = last.1.max(to),
            _ => merged.push((from, to)),
        }
    }
    merged.into_iter().map(Some).collect()
}

/// Copies of one entity's events gathered from every place, by version, and what is still
/// wanted.
struct Gathered {
    key: StreamKey,
    partition_key: String,
    found: BTreeMap<u64, EventEnvelope>,
    /// Copies that claim a version another event already claims: passed on, so the merge
    /// reports the conflict and no answer built on either is marked complete.
    conflicting: Vec<EventEnvelope>,
    wanted: BTreeSet<u64>,
    problems: Vec<SourceProblem>,
}

impl Gathered {
    fn keep(&mut self, events: impl IntoIterator<Item = EventEnvelope>) {
        for event in events {
            if event.aggregate_type == self.key.aggregate_type
                && event.aggregate_id == self.key.aggregate_id
            {
                self.wanted.remove(&event.version);
                // Copies of one version are kept apart only when they differ (merge reports it).
                match self.found.get(&event.version) {
                    Some(existing) if existing.event_id != event.event_id => {
                        if !self
                            .conflicting
                            .iter()
                            .any(|c| c.event_id == event.event_id)
                        {
                            self.conflicting.push(event);
                        }
                    }
                    Some(_) => {}
                    None => {
                        self.found.insert(event.version, event);
                    }
                }
            }
        }
    }

    /// Decodes stream records of this entity; the undecodable are reported with where.
    fn keep_records(&mut self, stream: &str, records: Vec<LogRecord>) {
        for r in records {
            if r.partition_key != self.partition_key {
                continue;
            }
            match decode_record(&r.data) {
                Ok(commit) => self.keep(commit.events),
                Err(e) => self.problems.push(problem(
                    format!("stream {stream} {}:{}", r.shard_id, r.sequence_number),
                    e,
                )),
            }
        }
    }
}

fn unavailable(e: impl ToString) -> SourceError {
    SourceError::Unavailable(e.to_string())
}

fn out_of_time(what: &str) -> SourceError {
    SourceError::OutOfTime(format!("the time budget ran out {what}"))
}

/// Awaits a call for no longer than the deadline allows: a slow store becomes "out of
/// time" (retry later) before the function's own timeout, never after it.
async fn within<T>(
    deadline: &Deadline,
    what: &str,
    call: impl std::future::Future<Output = Result<T, SourceError>>,
) -> Result<T, SourceError> {
    match deadline.remaining() {
        None => call.await,
        Some(left) => tokio::time::timeout(left, call)
            .await
            .map_err(|_| out_of_time(what))?,
    }
}

impl<A, R, I, H> LogSource<A, R, I, H>
where
    A: ArchiveStore,
    R: StreamReader,
    I: ReadModelQueries,
    H: WriteModelStore,
{
    pub fn new(
        archive: A,
        stream: R,
        stream_name: impl Into<String>,
        index: Option<I>,
        heads: Option<H>,
    ) -> Self {
        LogSource {
            archive,
            stream,
            stream_name: stream_name.into(),
            index,
            heads,
            tail_chunk: TAIL_CHUNK,
            archive_delay_ms: ARCHIVE_DELAY_MS,
            keys: Mutex::new(None),
            shards: Mutex::new(None),
        }
    }

    /// Reads the tail of a replay in parts of `records` (tests use small ones).
    pub fn with_tail_chunk(mut self, records: usize) -> Self {
        self.tail_chunk = records.max(1);
        self
    }

    /// Looks for events in the archive first once they arrived `delay` ago (default
    /// [`ARCHIVE_DELAY_MS`]: Firehose's longest buffer interval and a margin). Tests set it
    /// to zero to read fresh events from an archive pumped at once.
    pub fn with_archive_delay(mut self, delay: std::time::Duration) -> Self {
        self.archive_delay_ms = delay.as_millis() as i64;
        self
    }

    pub fn archive(&self) -> &A {
        &self.archive
    }

    pub fn stream(&self) -> &R {
        &self.stream
    }

    fn stream_failed(&self, e: LogError) -> SourceError {
        SourceError::Unavailable(format!("reading stream {}: {e}", self.stream_name))
    }

    async fn head(&self, key: &StreamKey) -> Result<Option<Head>, SourceError> {
        match &self.heads {
            None => Ok(None),
            Some(heads) => heads.load_head(key).await.map_err(unavailable),
        }
    }

    /// Every history entry of the entity, oldest first (None without an index).
    async fn indexed(&self, key: &StreamKey) -> Result<Option<Vec<HistoryEntry>>, SourceError> {
        let Some(index) = &self.index else {
            return Ok(None);
        };
        let mut entries = Vec::new();
        let mut cursor = None;
        loop {
            let page = index
                .history(
                    key,
                    None,
                    None,
                    &PageRequest {
                        limit: 1000,
                        cursor,
                    },
                )
                .await
                .map_err(unavailable)?;
            entries.extend(page.items);
            cursor = page.next_cursor;
            if cursor.is_none() {
                return Ok(Some(entries));
            }
        }
    }

    /// The shards, listed afresh when asked or when the last listing is old.
    async fn shard_list(
        &self,
        fresh: bool,
        deadline: &Deadline,
    ) -> Result<Arc<Vec<Shard>>, SourceError> {
        if !fresh {
            let cached = self.shards.lock().expect("not poisoned").clone();
            if let Some((at, shards)) = cached.filter(|(at, _)| at.elapsed() < SHARD_LIST_TTL) {
                let _ = at;
                return Ok(shards);
            }
        }
        let listed = async {
            retry_throttled(deadline, || self.stream.shards(), LogError::is_throttled)
                .await
                .map_err(|e| self.stream_failed(e))
        };
        let shards = Arc::new(within(deadline, "listing the shards", listed).await?);
        *self.shards.lock().expect("not poisoned") = Some((Instant::now(), shards.clone()));
        Ok(shards)
    }

    /// One page of a shard, retrying throttling within the deadline.
    async fn page(
        &self,
        shard: &str,
        from: &ReadFrom,
        limit: usize,
        deadline: &Deadline,
    ) -> Result<timeline_core::shards::Page, SourceError> {
        if deadline.passed() {
            return Err(out_of_time("reading the stream"));
        }
        let read = async {
            retry_throttled(
                deadline,
                || self.stream.read(shard, from, limit),
                LogError::is_throttled,
            )
            .await
            .map_err(|e| match e {
                LogError::Throttled(_) if deadline.passed() => {
                    out_of_time("while the stream was throttled")
                }
                e => self.stream_failed(e),
            })
        };
        within(deadline, "reading the stream", read).await
    }

    /// The archive keys whose objects can hold records that arrived within `window`.
    async fn keys_in(
        &self,
        window: Window,
        deadline: &Deadline,
    ) -> Result<Vec<String>, SourceError> {
        let (from, to) = window.map_or((None, None), |(f, t)| (Some(f), Some(t)));
        let listed = async { self.archive.list_keys(from, to).await.map_err(unavailable) };
        let keys = within(deadline, "listing the archive", listed).await?;
        let Some((from, to)) = window else {
            return Ok(keys);
        };
        Ok(keys
            .into_iter()
            .filter(|k| match parse_object_key(self.archive.prefix(), k) {
                Some(p) => p.written_at >= from.plus_millis(-999) && p.written_at <= to,
                // Not in Firehose's layout: read it, so nothing is skipped in silence.
                None => true,
            })
            .collect())
    }

    /// Reads objects `PARALLELISM` at once, giving each one's records to `each` in key
    /// order. A corrupt object is a problem of the answer; one that cannot be fetched makes
    /// the read fail (retry later).
    async fn read_objects(
        &self,
        keys: Vec<String>,
        deadline: &Deadline,
        mut each: impl FnMut(Vec<timeline_core::CommitRecord>),
        problems: &mut Vec<SourceProblem>,
    ) -> Result<(), SourceError> {
        let mut objects = stream::iter(keys)
            .map(|key| async move {
                let read = async { Ok(self.archive.read_object(&key).await) };
                let result = within(deadline, "reading the archive", read).await;
                (key, result)
            })
            .buffered(PARALLELISM);
        while let Some((key, result)) = objects.next().await {
            match result? {
                Ok(records) => each(records),
                Err(e @ ArchiveError::Corrupt { .. }) => problems.push(problem(key, e)),
                Err(e) => return Err(unavailable(e)),
            }
        }
        Ok(())
    }

    /// Reads the objects of `windows` not read yet into `gathered`.
    async fn read_windows(
        &self,
        windows: Vec<Window>,
        read: &mut HashSet<String>,
        gathered: &mut Gathered,
        deadline: &Deadline,
    ) -> Result<(), SourceError> {
        for window in merge_windows(windows) {
            let keys: Vec<String> = self
                .keys_in(window, deadline)
                .await?
                .into_iter()
                .filter(|k| read.insert(k.clone()))
                .collect();
            let mut problems = Vec::new();
            let mut events = Vec::new();
            let (kind, id) = (&gathered.key.aggregate_type, &gathered.key.aggregate_id);
            self.read_objects(
                keys,
                deadline,
                |records| {
                    // Only this entity's events are kept: memory grows with the entity.
                    events.extend(
                        records
                            .into_iter()
                            .flat_map(|r| r.events)
                            .filter(|e| e.aggregate_type == *kind && e.aggregate_id == *id),
                    )
                },
                &mut problems,
            )
            .await?;
            gathered.keep(events);
            gathered.problems.extend(problems);
        }
        Ok(())
    }

    /// Where in the archive each wanted version can be, for versions that arrived long
    /// enough ago to be there (`late`: allowing for Firehose writing them late).
    fn archive_windows(
        &self,
        wanted: &BTreeSet<u64>,
        indexed: &BTreeMap<u64, HistoryEntry>,
        head: Option<&Head>,
        now: Timestamp,
        late: bool,
    ) -> Vec<Window> {
        let settled =
            |at: Timestamp| late || now.as_millis() - at.as_millis() >= self.archive_delay_ms;
        let after = if late { LATE_ARCHIVE_MS } else { 0 };
        let mut windows = Vec::new();
        for version in wanted {
            match indexed.get(version) {
                Some(entry) => {
                    // Arrived at a known time, or soon after it was recorded.
                    let (arrival, skew) = match &entry.position {
                        Some(p) => (p.arrival, 0),
                        None => (entry.recorded_at, CLOCK_SKEW_MS),
                    };
                    if settled(arrival) {
                        windows.push(Some((
                            arrival.plus_millis(-MAX_BUFFER_MILLIS - skew),
                            arrival.plus_millis(skew + after),
                        )));
                    }
                }
                None => {
                    // Not indexed (the processor is behind, or the read models were
                    // rebuilt): recorded after the indexed version before it and by the
                    // head's last change.
                    let lower = indexed
                        .range(..version)
                        .next_back()
                        .map(|(_, e)| e.position.as_ref().map_or(e.recorded_at, |p| p.arrival))
                        .or(head.and_then(|h| h.created_at));
                    let upper = head.map(|h| h.updated_at);
                    match (lower, upper) {
                        (Some(lower), Some(upper)) if settled(upper) => windows.push(Some((
                            lower.plus_millis(-MAX_BUFFER_MILLIS - CLOCK_SKEW_MS),
                            upper.plus_millis(CLOCK_SKEW_MS + after),
                        ))),
                        (None, Some(upper)) if settled(upper) => windows.push(None),
                        _ => {}
                    }
                }
            }
        }
        windows
    }

    /// Reads the wanted versions from the stream: the key's shards only, from the oldest
    /// wanted version's record (or after the last indexed one before it), jumping to each
    /// indexed record, until all are found or the tip is reached.
    async fn read_stream(
        &self,
        gathered: &mut Gathered,
        indexed: &BTreeMap<u64, HistoryEntry>,
        head: Option<&Head>,
        deadline: &Deadline,
    ) -> Result<(), SourceError> {
        let Some(first) = gathered.wanted.first().copied() else {
            return Ok(());
        };
        let position_of = |version: u64| indexed.get(&version).and_then(|e| e.position.clone());
        // Where to start: the oldest wanted version's record; else just after the last
        // indexed record before it; else when the last indexed event before it (or the
        // entity) was recorded, less the clocks' skew.
        let recorded_before = indexed
            .range(..first)
            .next_back()
            .map(|(_, e)| e.position.as_ref().map_or(e.recorded_at, |p| p.arrival))
            .or(head.and_then(|h| h.created_at))
            .map(|t| ReadFrom::Time(t.plus_millis(-CLOCK_SKEW_MS)));
        let (start, mut from) = match position_of(first) {
            Some(p) => (Some(p.clone()), ReadFrom::At(p.sequence_number)),
            None => match indexed
                .range(..first)
                .rev()
                .find_map(|(_, e)| e.position.clone())
            {
                Some(p) => (Some(p.clone()), ReadFrom::After(p.sequence_number)),
                None => (None, recorded_before.unwrap_or(ReadFrom::Oldest)),
            },
        };
        let partition_key = gathered.partition_key.clone();
        // A log with an index on keys reads exactly this key's records.
        let indexed_read = async {
            retry_throttled(
                deadline,
                || self.stream.read_key(&partition_key, &from),
                LogError::is_throttled,
            )
            .await
            .map_err(|e| self.stream_failed(e))
        };
        if let Some(records) = within(deadline, "reading the stream", indexed_read).await? {
            gathered.keep_records(&self.stream_name, records);
            return Ok(());
        }

        let mut shards = self.shard_list(false, deadline).await?;
        let hash = self.stream.key_hash(&partition_key);
        let mut line: Vec<Shard> = lineage(&shards, hash).into_iter().cloned().collect();
        let find = |line: &[Shard], id: &str| line.iter().position(|l| l.id == id);
        let mut at = match &start {
            None => 0,
            Some(p) => {
                if find(&line, &p.shard_id).is_none() {
                    // A listing from before the record's shard was made: list again.
                    shards = self.shard_list(true, deadline).await?;
                    line = lineage(&shards, hash).into_iter().cloned().collect();
                }
                match find(&line, &p.shard_id) {
                    Some(i) => i,
                    None => {
                        // The shard is gone (past the stream's retention): from the start of
                        // the lineage, at the time the record arrived.
                        from = ReadFrom::Time(p.arrival.plus_millis(-CLOCK_SKEW_MS));
                        0
                    }
                }
            }
        };
        let mut refreshed = false;
        while let Some(shard) = line.get(at).cloned() {
            let page = self.page(&shard.id, &from, ENTITY_PAGE, deadline).await?;
            let next = page.next_from(&from);
            let last = page.records.last().map(|r| r.sequence_number.clone());
            let found_any = page
                .records
                .iter()
                .any(|r| r.partition_key == partition_key);
            gathered.keep_records(&self.stream_name, page.records);
            if gathered.wanted.is_empty() {
                return Ok(());
            }
            // Jump straight to the next wanted record when the index knows where it is.
            let jump = gathered
                .wanted
                .first()
                .and_then(|v| position_of(*v))
                .filter(|p| {
                    line.iter()
                        .position(|l| l.id == p.shard_id)
                        .is_some_and(|i| {
                            i > at
                                || i == at
                                    && last.as_deref().is_some_and(|last| {
                                        crate::sequence::compare(&p.sequence_number, last)
                                            == std::cmp::Ordering::Greater
                                    })
                        })
                });
            if let Some(p) = jump {
                at = line
                    .iter()
                    .position(|l| l.id == p.shard_id)
                    .expect("checked");
                from = ReadFrom::At(p.sequence_number);
                continue;
            }
            // Caught up with a shard that has children (closed) is its end; only the tip of
            // the key's open shard, the last of its lineage, means nothing more exists yet.
            let open_tip = !shard.closed && at + 1 >= line.len();
            match page.end {
                PageEnd::Behind => from = next,
                PageEnd::CaughtUp if open_tip => return Ok(()),
                PageEnd::CaughtUp | PageEnd::Closed => {
                    at += 1;
                    // Children start at their oldest record, unless no record of the key
                    // was met yet and the read started at a time.
                    from = match &from {
                        ReadFrom::Time(t) if !found_any && last.is_none() => ReadFrom::Time(*t),
                        _ => ReadFrom::Oldest,
                    };
                    if at == line.len() && !refreshed {
                        // A reshard after the listing: its children are not in it.
                        refreshed = true;
                        shards = self.shard_list(true, deadline).await?;
                        line = lineage(&shards, hash).into_iter().cloned().collect();
                        at = line
                            .iter()
                            .position(|l| l.id == shard.id)
                            .map_or(line.len(), |i| i + 1);
                    }
                }
            }
        }
        Ok(())
    }

    /// Every record of the key from the start of its lineage (a source with neither index
    /// nor heads cannot tell where its records are).
    async fn read_whole_lineage(
        &self,
        gathered: &mut Gathered,
        deadline: &Deadline,
    ) -> Result<(), SourceError> {
        let partition_key = gathered.partition_key.clone();
        if let Some(records) = retry_throttled(
            deadline,
            || self.stream.read_key(&partition_key, &ReadFrom::Oldest),
            LogError::is_throttled,
        )
        .await
        .map_err(|e| self.stream_failed(e))?
        {
            gathered.keep_records(&self.stream_name, records);
            return Ok(());
        }
        let shards = self.shard_list(true, deadline).await?;
        for shard in lineage(&shards, self.stream.key_hash(&partition_key)) {
            let mut from = ReadFrom::Oldest;
            loop {
                let page = self
                    .page(&shard.id, &from, self.tail_chunk, deadline)
                    .await?;
                from = page.next_from(&from);
                let end = page.end;
                gathered.keep_records(&self.stream_name, page.records);
                if end != PageEnd::Behind {
                    break;
                }
            }
        }
        Ok(())
    }

    /// The next part of the stream tail after `position` (`tail:<shard id>:<sequence
    /// number>`, or the start): up to `tail_chunk` records of one shard, shards parents
    /// first; an empty part at the end.
    async fn tail_part(
        &self,
        position: Option<&str>,
        archive_parts: usize,
        deadline: &Deadline,
    ) -> Result<ReplayChunk, SourceError> {
        let shards = self.shard_list(true, deadline).await?;
        let order = parents_first(&shards);
        let (mut at, mut from) = match position.and_then(|p| p.strip_prefix(TAIL_PREFIX)) {
            Some(rest) => {
                let (id, seq) = rest
                    .rsplit_once(':')
                    .ok_or_else(|| unavailable(format!("not a replay position: {rest:?}")))?;
                // A shard no longer listed (expired) is finished: start again with the first
                // listed, from its oldest record (copies are skipped by the replay).
                match order.iter().position(|s| s.id == id) {
                    Some(at) if !seq.is_empty() => (at, ReadFrom::After(seq.to_owned())),
                    Some(at) => (at, ReadFrom::Oldest),
                    None => (0, ReadFrom::Oldest),
                }
            }
            None => (0, ReadFrom::Oldest),
        };
        while let Some(shard) = order.get(at) {
            loop {
                let page = self
                    .page(&shard.id, &from, self.tail_chunk, deadline)
                    .await?;
                if let Some(last) = page.records.last() {
                    let position = format!("{TAIL_PREFIX}{}:{}", shard.id, last.sequence_number);
                    let mut gathered_problems = Vec::new();
                    let mut records = Vec::with_capacity(page.records.len());
                    let mut positions = Vec::with_capacity(page.records.len());
                    for r in page.records {
                        match decode_record(&r.data) {
                            Ok(c) => {
                                records.push(c);
                                positions.push(timeline_core::ports::LogPosition {
                                    shard_id: r.shard_id,
                                    sequence_number: r.sequence_number,
                                    arrival: r.arrival,
                                });
                            }
                            Err(e) => gathered_problems.push(problem(
                                format!(
                                    "stream {} {}:{}",
                                    self.stream_name, r.shard_id, r.sequence_number
                                ),
                                e,
                            )),
                        }
                    }
                    return Ok(ReplayChunk {
                        records,
                        positions,
                        position,
                        problems: gathered_problems,
                        done: archive_parts,
                        total: Some(archive_parts + 1),
                        arrived: None,
                    });
                }
                match page.end {
                    PageEnd::Behind => from = page.next_from(&from),
                    PageEnd::CaughtUp | PageEnd::Closed => break,
                }
            }
            at += 1;
            from = ReadFrom::Oldest;
        }
        Ok(ReplayChunk {
            records: Vec::new(),
            positions: Vec::new(),
            position: TAIL_DONE.into(),
            problems: Vec::new(),
            done: archive_parts + 1,
            total: Some(archive_parts + 1),
            arrived: None,
        })
    }
}

impl<A, R, I, H> EventSource for LogSource<A, R, I, H>
where
    A: ArchiveStore,
    R: StreamReader,
    I: ReadModelQueries,
    H: WriteModelStore,
{
    async fn entity_events(
        &self,
        key: &StreamKey,
        as_of: AsOf,
        deadline: &Deadline,
    ) -> Result<EntityRead, SourceError> {
        let (head, indexed) = futures::future::join(
            within(deadline, "reading the head", self.head(key)),
            within(deadline, "reading the history index", self.indexed(key)),
        )
        .await;
        let head = head?;
        let indexed: BTreeMap<u64, HistoryEntry> = indexed?
            .unwrap_or_default()
            .into_iter()
            .map(|e| (e.version, e))
            .collect();
        // A head is written before anything else of an entity: none, and nothing indexed,
        // means it never existed.
        if self.heads.is_some() && head.is_none() && indexed.is_empty() {
            return Ok(EntityRead::Absent);
        }
        let known_times: BTreeMap<u64, Timestamp> =
            indexed.iter().map(|(v, e)| (*v, e.occurred_at)).collect();
        let latest = head
            .as_ref()
            .map(|h| h.version)
            .or_else(|| indexed.keys().next_back().copied());
        let mut gathered = Gathered {
            key: key.clone(),
            partition_key: key.partition_key(),
            found: BTreeMap::new(),
            conflicting: Vec::new(),
            wanted: BTreeSet::new(),
            problems: Vec::new(),
        };
        let mut read = HashSet::new();
        match latest {
            Some(latest) => {
                let plan =
                    merge(key.clone(), Vec::new()).knowing(Some(latest), known_times.clone());
                match as_of {
                    AsOf::Version(0) => return Ok(EntityRead::Absent),
                    AsOf::Version(v) if v > latest => {
                        return Ok(EntityRead::Found(EntityEvents {
                            latest: Some(latest),
                            known_times,
                            ..Default::default()
                        }))
                    }
                    AsOf::Time(t) if known_times.get(&1).is_some_and(|first| *first > t) => {
                        return Ok(EntityRead::Absent)
                    }
                    _ => {}
                }
                gathered.wanted = (1..=plan.target(as_of)).collect();
                if let Some(head) = &head {
                    gathered.keep(head.pending.iter().cloned());
                }
                let windows =
                    self.archive_windows(&gathered.wanted, &indexed, head.as_ref(), now(), false);
                self.read_windows(windows, &mut read, &mut gathered, deadline)
                    .await?;
                self.read_stream(&mut gathered, &indexed, head.as_ref(), deadline)
                    .await?;
                if !gathered.wanted.is_empty() {
                    tracing::warn!(entity = %key, missing = ?gathered.wanted, "versions outside their archive window and not on the stream; reading a wider window");
                    let windows = self.archive_windows(
                        &gathered.wanted,
                        &indexed,
                        head.as_ref(),
                        now(),
                        true,
                    );
                    self.read_windows(windows, &mut read, &mut gathered, deadline)
                        .await?;
                }
            }
            None => {
                // Neither heads nor an index: every object, and the key's whole lineage.
                self.read_windows(vec![None], &mut read, &mut gathered, deadline)
                    .await?;
                self.read_whole_lineage(&mut gathered, deadline).await?;
            }
        }
        let mut events: Vec<EventEnvelope> = gathered.found.into_values().collect();
        events.extend(gathered.conflicting);
        Ok(EntityRead::Found(EntityEvents {
            events,
            latest,
            known_times,
            problems: gathered.problems,
        }))
    }

    async fn next_chunk(
        &self,
        position: Option<&str>,
        deadline: &Deadline,
    ) -> Result<Option<ReplayChunk>, SourceError> {
        if position == Some(TAIL_DONE) {
            return Ok(None);
        }
        // Listed at the start of each replay (a warm hydrator serves many), then reused
        // while it walks the chunks.
        let cached = self
            .keys
            .lock()
            .expect("not poisoned")
            .clone()
            .filter(|_| position.is_some());
        let keys = match cached {
            Some(keys) => keys,
            None => {
                let listed = Arc::new(self.keys_in(None, deadline).await?);
                *self.keys.lock().expect("not poisoned") = Some(listed.clone());
                listed
            }
        };
        let total = keys.len();
        let in_tail = position.is_some_and(|p| p.starts_with(TAIL_PREFIX));
        let start = match position {
            None => 0,
            Some(_) if in_tail => total,
            Some(after) => keys.partition_point(|k| k.as_str() <= after),
        };
        if start < total {
            let batch: Vec<String> = keys[start..(start + PARALLELISM).min(total)].to_vec();
            let last = batch.last().cloned().expect("non-empty");
            let mut records = Vec::new();
            let mut problems = Vec::new();
            self.read_objects(batch, deadline, |r| records.extend(r), &mut problems)
                .await?;
            let done = keys.partition_point(|k| k.as_str() <= last.as_str());
            return Ok(Some(ReplayChunk {
                records,
                positions: Vec::new(),
                arrived: parse_object_key(self.archive.prefix(), &last).map(|k| k.written_at),
                position: last,
                problems,
                done,
                total: Some(total + 1),
            }));
        }
        let from = position.filter(|_| in_tail);
        self.tail_part(from, total, deadline).await.map(Some)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn overlapping_windows_merge_and_every_object_swallows_the_rest() {
        let w = |a: &str, b: &str| Some((at(a), at(b)));
        assert_eq!(
            merge_windows(vec![
                w("2026-01-01T10:10:00Z", "2026-01-01T10:20:00Z"),
                w("2026-01-01T10:00:00Z", "2026-01-01T10:15:00Z"),
                w("2026-01-01T11:00:00Z", "2026-01-01T11:05:00Z"),
            ]),
            vec![
                w("2026-01-01T10:00:00Z", "2026-01-01T10:20:00Z"),
                w("2026-01-01T11:00:00Z", "2026-01-01T11:05:00Z"),
            ]
        );
        assert_eq!(
            merge_windows(vec![
                w("2026-01-01T10:00:00Z", "2026-01-01T10:20:00Z"),
                None
            ]),
            vec![None]
        );
    }
}
