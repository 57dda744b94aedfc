//! The epoch log and recovery.
//!
//! The epoch log (`<job>.epochs`, one partition, written without a
//! transaction) holds a record per epoch with the offset range every source
//! partition contributed to it, written before the epoch commits, and a
//! record per start of the writer. The writer's progress is the offset of
//! its consumer group `<job>-w0` on that log, committed inside each epoch's
//! transaction: "everything up to the epoch whose record sits just below
//! this offset is committed".
//!
//! On start, recovery reads the committed progress r, replays the epochs
//! logged after r with their logged boundaries, and rebuilds each stateful
//! transform's state from its changelog as of r.

use crate::connectors::bounded_read::{BoundedRead, Event};
use crate::connectors::kafka_admin::{self, client_config, KafkaAdminError};
use crate::dataflow::state::StateEntry;
use crate::fault;
use crate::plan::{NodeKind, Plan};
use crate::runtime::{planner, restore, snapshot};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Kafka(#[from] KafkaAdminError),
    #[error("epoch log {topic}: {reason}")]
    Log { topic: String, reason: String },
    #[error("changelog {topic} at offset {offset}: {reason}; it was not written by this version of rill or is damaged, and the job does not start rather than lose state (to start the job from nothing, delete its changelog and epoch log topics)")]
    Changelog {
        topic: String,
        offset: i64,
        reason: String,
    },
    #[error("job {job} has committed epochs up to at least {epoch} (its epoch log {log} says so), but the broker no longer has its progress (the offsets of group {group} on {log}): they expired (raise the broker's offsets.retention.minutes) or were deleted; rill does not start such a job from nothing (to do that on purpose, delete its epoch log and changelog topics)")]
    ProgressLost {
        job: String,
        epoch: u64,
        group: String,
        log: String,
    },
    #[error("another instance of job {job} started after this one, so this one stops without committing")]
    Superseded { job: String },
    #[error("job {job} stopped in the middle of epoch {epoch}, which some of its writers committed, or whose files and rows its processes may have written, in part; it is finished on the shape that cut it, {processes} processes of {workers} workers (records go to workers by their number): start the job so once, then at the new size")]
    InDoubt {
        job: String,
        epoch: u64,
        processes: u32,
        workers: u32,
    },
}

/// The part of an epoch one source partition holds: offsets [start, end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRange {
    pub source: u32,
    pub partition: i32,
    pub start: i64,
    pub end: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogRecord {
    /// A start of the job; its attempt is one past this record's offset.
    /// A cluster logs one start for all its processes, with its shape: an
    /// epoch it logged and did not commit, whose files and rows its
    /// processes may have written, is finished on that shape (records
    /// route to workers by their number).
    Start {
        #[serde(default = "one")]
        processes: u32,
        /// Worker threads per process (0: not recorded).
        #[serde(default)]
        workers: u32,
    },
    /// An epoch's boundaries, for every partition of every source.
    ///
    /// `committed` is the last epoch the writer had committed when it
    /// logged this one: should the committed progress ever vanish from
    /// the broker, the log still says that there was some.
    Epoch {
        epoch: u64,
        attempt: u32,
        ranges: Vec<PartitionRange>,
        #[serde(default)]
        committed: u64,
    },
    /// An attempt commits an epoch it replayed (logged before). It marks
    /// the log so the writer can see whether a later instance started
    /// before it writes the epoch's files and rows.
    Replayed {
        epoch: u64,
        attempt: u32,
        #[serde(default)]
        committed: u64,
        /// Writers that had committed the epoch already and skip it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        skipped: Vec<u32>,
    },
    /// A first start resolved where its sources begin (`latest` is where
    /// the topic ends at that moment): `start` of each range. A restart
    /// before anything committed begins there too, not at a later end.
    Begin {
        attempt: u32,
        ranges: Vec<PartitionRange>,
    },
}

fn one() -> u32 {
    1
}

impl LogRecord {
    /// The start of a single process, its worker count unrecorded.
    pub fn start() -> LogRecord {
        LogRecord::Start {
            processes: 1,
            workers: 0,
        }
    }
}

/// What a starting job resumes from.
#[derive(Debug, Default)]
pub struct Recovered {
    /// This start's attempt number (stamped on every record it writes).
    pub attempt: u32,
    /// The last epoch the writer committed (0: none).
    pub committed: u64,
    /// The first epoch number free for new epochs.
    pub next_epoch: u64,
    /// How many epochs the job has committed (progress lines count on).
    pub committed_epochs: u64,
    /// Where each source partition resumes; None on a first start.
    pub start_offsets: Option<HashMap<(u32, i32), i64>>,
    /// Epochs logged after the committed one, to be cut again exactly so.
    pub replay: Vec<(u64, Vec<PartitionRange>)>,
    /// Offset of each logged epoch's record in the log.
    pub log_offsets: HashMap<u64, i64>,
    /// Per replayed epoch, the writers that committed it already: they cut
    /// it again for their state but send nothing of it.
    pub skip: std::collections::BTreeMap<u64, Vec<u32>>,
    /// Offset of the committed epoch's record in the log.
    pub committed_offset: Option<i64>,
    /// The writers whose progress counted: those of the start that logged
    /// the newest epoch. A writer past them joins at the committed epoch.
    pub writers_before: u32,
    /// Per stateful transform, its state as of the committed epoch.
    pub state: HashMap<String, Vec<StateEntry>>,
    /// The transforms whose state came from a local snapshot: the epoch
    /// it was of and the changelog records read after it.
    pub from_snapshot: Vec<(String, u64, usize)>,
}

/// Produces to the epoch log and waits for each record to be stored.
pub struct EpochLog {
    producer: BaseProducer<LastOffset>,
    topic: String,
}

#[derive(Default)]
struct LastOffset(Mutex<Option<Result<i64, String>>>);
impl ClientContext for LastOffset {}
impl ProducerContext for LastOffset {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        *self.0.lock().unwrap() = Some(match r {
            Ok(m) => Ok(rdkafka::Message::offset(m)),
            Err((e, _)) => Err(e.to_string()),
        });
    }
}

impl EpochLog {
    pub fn open(brokers: &str, topic: &str) -> Result<Self, RecoveryError> {
        // Not idempotent: librdkafka asks for an idempotent producer's id
        // before it has a connection, fails, and asks again only after
        // 500 ms, which every start waited out before logging its start.
        // Without retries an append is stored once or fails, and a failed
        // append is a failed attempt, as a crash in the middle of one is.
        let producer = client_config(brokers)
            .set("enable.idempotence", "false")
            .set("message.send.max.retries", "0")
            .set("max.in.flight.requests.per.connection", "1")
            .set("acks", "all")
            .set("linger.ms", "0")
            .create_with_context(LastOffset::default())
            .map_err(|e| RecoveryError::Log {
                topic: topic.into(),
                reason: e.to_string(),
            })?;
        Ok(EpochLog {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Appends a record and returns its offset once the broker has it.
    pub fn append(
        &self,
        record: &LogRecord,
        headers: rdkafka::message::OwnedHeaders,
    ) -> Result<i64, RecoveryError> {
        let err = |reason: String| RecoveryError::Log {
            topic: self.topic.clone(),
            reason,
        };
        let value = serde_json::to_vec(record).unwrap();
        *self.producer.context().0.lock().unwrap() = None;
        self.producer
            .send(
                BaseRecord::<[u8], [u8]>::to(&self.topic)
                    .payload(&value)
                    .partition(0)
                    .headers(headers),
            )
            .map_err(|(e, _)| err(e.to_string()))?;
        crate::connectors::kafka_sink::flush_promptly(&self.producer, Duration::from_secs(30))
            .map_err(|e| err(e.to_string()))?;
        match self.producer.context().0.lock().unwrap().take() {
            Some(Ok(offset)) => Ok(offset),
            Some(Err(e)) => Err(err(e)),
            None => Err(err("no delivery report within 30 s".into())),
        }
    }
}

impl EpochLog {
    /// The records at offsets [from, to), which the caller knows exist.
    pub fn read_range(
        &self,
        brokers: &str,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, LogRecord)>, RecoveryError> {
        use rdkafka::Message;
        let err = |reason: String| RecoveryError::Log {
            topic: self.topic.clone(),
            reason,
        };
        let config = kafka_admin::bounded_reader_config(brokers, "rill-epoch-log");
        let mut read = BoundedRead::open(
            config,
            brokers,
            &self.topic,
            vec![Some(Offset::Offset(from))],
        )
        .map_err(|e| err(e.to_string()))?;
        let mut out = Vec::new();
        let mut next = from;
        while next < to {
            // The caller knows the records are there: an end is a fetch
            // that has not brought them yet.
            let Some(Event::Record(m)) = read.poll().map_err(|e| err(e.to_string()))? else {
                continue;
            };
            next = m.offset() + 1;
            if m.offset() >= to {
                break;
            }
            if let Some(r) = m.payload().and_then(|v| serde_json::from_slice(v).ok()) {
                out.push((m.offset(), r));
            }
        }
        Ok(out)
    }
}

/// What a start has open already, for recovery to use instead of opening
/// its own: a read of the epoch log begun while it fenced, and the
/// writer's progress consumer.
#[derive(Default)]
pub struct Begun<'a> {
    pub log: Option<kafka_admin::Prefetch>,
    pub progress: Option<&'a BaseConsumer>,
    /// A start fences every other writer the job has had before reading
    /// their progress (a reader such as `verify` fences nothing).
    pub fence: bool,
}

/// The offset writer `writer`'s group has committed on the epoch log, if
/// any.
pub fn committed_progress(
    brokers: &str,
    job: &crate::spec::JobConfig,
    writer: u32,
) -> Result<Option<i64>, RecoveryError> {
    let consumer: BaseConsumer = client_config(brokers)
        .set("group.id", job.writer_id_of(writer))
        .set("enable.auto.commit", "false")
        .create()
        .map_err(|e| RecoveryError::Log {
            topic: job.epoch_log_topic(),
            reason: e.to_string(),
        })?;
    // Closing a client can take 100 ms, which a start need not wait for.
    let consumer = crate::connectors::DropAside::new(consumer);
    progress_of(&consumer, &job.epoch_log_topic())
}

/// The offset the group of `consumer` has committed on the epoch log `log`.
fn progress_of(consumer: &BaseConsumer, log: &str) -> Result<Option<i64>, RecoveryError> {
    let err = |reason: String| RecoveryError::Log {
        topic: log.into(),
        reason,
    };
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition(log, 0);
    let committed = consumer
        .committed_offsets(tpl, Duration::from_secs(15))
        .map_err(|e| err(format!("reading committed progress: {e}")))?;
    Ok(committed.elements().first().and_then(|e| match e.offset() {
        Offset::Offset(n) => Some(n),
        _ => None,
    }))
}

/// The writer index a record's `rill-writer` header names (`<job>-w<i>`);
/// records without one were written by a single process, writer 0.
pub fn writer_index(header: Option<&str>) -> u32 {
    header
        .and_then(|w| w.rsplit_once("-w"))
        .and_then(|(_, i)| i.parse().ok())
        .unwrap_or(0)
}

/// The epoch log and what every writer that counts has committed: the
/// writers of the start that logged the newest epoch (a cluster has one
/// per process; the progress of writers it retired is history).
pub struct CommittedView {
    pub records: Vec<(i64, LogRecord)>,
    /// The committed progress of each writer that counts.
    pub progress: Vec<i64>,
    /// Per writer the job has had, the attempt whose copy of each
    /// committed epoch counts.
    pub copies: Vec<std::collections::BTreeMap<u64, u32>>,
    /// Processes and workers per process of the start that logged the
    /// newest epoch.
    pub decided_by: Option<(u32, u32)>,
}

impl CommittedView {
    pub fn read(job: &crate::spec::JobConfig) -> Result<Self, RecoveryError> {
        Self::read_from(job, Begun::default())
    }

    /// [`CommittedView::read`], with what the start has open already.
    pub fn read_from(job: &crate::spec::JobConfig, begun: Begun) -> Result<Self, RecoveryError> {
        // The log and writer 0's progress are read side by side: both
        // come after the start was logged, neither needs the other. The
        // log says which other writers count.
        let (records, first) = std::thread::scope(|s| {
            let own = begun.progress;
            let progress = s.spawn(move || match own {
                Some(consumer) => progress_of(consumer, &job.epoch_log_topic()),
                None => committed_progress(&job.brokers, job, 0),
            });
            let records = read_log_from(&job.brokers, &job.epoch_log_topic(), begun.log);
            (records, progress.join().expect("progress thread"))
        });
        let (records, first) = (records?, first?);
        let decided_by = planner::decided_by(&records);
        // The writers of the start that logged the newest epoch say where
        // the job resumes; every writer it has had says which copies of
        // the output it wrote count.
        let writers = decided_by.map_or(1, |(p, _)| p.max(1));
        let ever = writers_in(&records).max(writers);
        let fence = if begun.fence { ever } else { 1 };
        let rest = std::thread::scope(|s| {
            let fenced: Vec<_> = (1..fence)
                .map(|w| s.spawn(move || fence_writer(job, w)))
                .collect();
            for f in fenced {
                f.join().expect("fencing thread")?;
            }
            let readers: Vec<_> = (1..ever)
                .map(|w| s.spawn(move || committed_progress(&job.brokers, job, w)))
                .collect();
            readers
                .into_iter()
                .map(|r| r.join().expect("progress thread"))
                .collect::<Result<Vec<_>, _>>()
        })?;
        let mut progress: Vec<i64> = std::iter::once(first)
            .chain(rest)
            .map(|p| p.unwrap_or(0))
            .collect();
        let copies = (0..ever)
            .map(|w| planner::committed_copies(&records, progress[w as usize], w))
            .collect();
        progress.truncate(writers as usize);
        Ok(CommittedView {
            records,
            progress,
            copies,
            decided_by,
        })
    }

    /// Whether a record of `epoch`, written by `attempt` of the writer its
    /// `rill-writer` header names, is part of the committed output.
    pub fn counts(&self, writer: Option<&str>, epoch: u64, attempt: u32) -> bool {
        self.copies
            .get(writer_index(writer) as usize)
            .is_some_and(|c| c.get(&epoch) == Some(&attempt))
    }
}

/// The epoch log's records, in order, with their offsets; see
/// [`planner::live`] for those that count.
pub fn read_log(brokers: &str, log: &str) -> Result<Vec<(i64, LogRecord)>, RecoveryError> {
    read_log_from(brokers, log, None)
}

/// [`read_log`], going on from a read begun earlier when there is one.
fn read_log_from(
    brokers: &str,
    log: &str,
    begun: Option<kafka_admin::Prefetch>,
) -> Result<Vec<(i64, LogRecord)>, RecoveryError> {
    let mut records: Vec<(i64, LogRecord)> = Vec::new();
    let each = |m: kafka_admin::Borrowed<'_>| {
        if let Some(r) = m
            .value()
            .and_then(|v| serde_json::from_slice::<LogRecord>(v).ok())
        {
            records.push((m.offset(), r));
        }
    };
    match begun {
        Some(begun) => begun.read_to_end(each)?,
        None => kafka_admin::read_each(brokers, log, None, each)?,
    }
    Ok(records)
}

/// Whether the job stopped between logging an epoch and committing it
/// in a way that only the shape that cut it can finish: some writers
/// committed it and others did not (each writer owns the partitions of
/// its process, by number), or processes of a cluster may have written
/// files or rows for it (each row goes to a process by its worker).
/// Then that epoch is cut again on that shape, where each record goes to
/// the same writer and a writer skips what it committed.
/// (epoch, processes, workers).
fn in_doubt_of(
    plan: &Plan,
    resume: &planner::Resume,
    decided_by: Option<(u32, u32)>,
    shape: (u32, u32),
) -> Option<(u64, u32, u32)> {
    let (epoch, _) = resume.replay.first()?;
    let (processes, workers) = decided_by?;
    let external = plan.sinks().any(|(_, _, s)| {
        matches!(
            s,
            crate::plan::SinkPlan::File { .. } | crate::plan::SinkPlan::Postgres { .. }
        )
    });
    let split = resume.skip.contains_key(epoch);
    let alone = processes == 1 && shape.0 == 1;
    let same = processes == shape.0 && (workers == 0 || workers == shape.1);
    ((external || split) && !alone && !same).then_some((*epoch, processes, workers))
}

/// How many writers the job has ever had: the most processes any start
/// in its log had (1 for a new job). Every one of them is fenced at a
/// start, used now or not: a writer of a larger cluster killed with a
/// transaction open would otherwise keep it open.
pub(crate) fn writers_in(records: &[(i64, LogRecord)]) -> u32 {
    records
        .iter()
        .filter_map(|(_, r)| match r {
            LogRecord::Start { processes, .. } => Some((*processes).max(1)),
            _ => None,
        })
        .max()
        .unwrap_or(1)
}

/// Fences writer `w` of the job: an instance of it that still runs can
/// commit nothing more, and a transaction it left open is ended.
fn fence_writer(job: &crate::spec::JobConfig, w: u32) -> Result<(), RecoveryError> {
    if job.guarantee != crate::spec::Guarantee::ExactlyOnce {
        return Ok(());
    }
    let id = job.writer_id_of(w);
    crate::connectors::kafka_sink::KafkaWriter::new(&job.brokers, &id, 0, true)
        .map(crate::connectors::DropAside::new)
        .map(drop)
        .map_err(|e| RecoveryError::Log {
            topic: job.epoch_log_topic(),
            reason: format!("fencing writer {id}: {e}"),
        })
}

/// The epoch [`recover`] would refuse to start at `shape`, read without
/// fencing: a commit may still be landing, so a caller asks after a start
/// failed.
pub fn in_doubt(plan: &Plan, shape: (u32, u32)) -> Result<Option<(u64, u32, u32)>, RecoveryError> {
    let view = CommittedView::read(&plan.job)?;
    let resume = planner::resume_writers(&view.records, &view.progress);
    Ok(in_doubt_of(plan, &resume, view.decided_by, shape))
}

/// The attempt of the newest start in the epoch log.
pub fn newest_attempt(brokers: &str, log: &str) -> Result<u32, RecoveryError> {
    Ok(planner::resume(&read_log(brokers, log)?, 0).last_attempt)
}

/// Reads the epoch log and the changelogs and says where to resume. The
/// caller has fenced earlier instances and logged its start (`attempt`),
/// so what a fenced instance appends from now on is ignored. `shape` is
/// this start's processes and workers per process: an epoch some writers
/// committed and others did not is finished on the shape that decided it.
/// `begun`: what the start has open already (the writer's progress
/// consumer; a read of the epoch log begun before the start was logged).
pub fn recover(
    plan: &Plan,
    attempt: u32,
    shape: (u32, u32),
    begun: Begun,
) -> Result<Recovered, RecoveryError> {
    let job = &plan.job;
    let brokers = &job.brokers;
    let log = job.epoch_log_topic();
    let t0 = std::time::Instant::now();
    let transforms: Vec<String> = plan
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, NodeKind::Aggregate(_)))
        .map(|n| n.name.clone())
        .collect();
    let prepared = {
        let (job, transforms) = (job.clone(), transforms.clone());
        std::thread::spawn(move || prepare(&job, &transforms))
    };
    let view = CommittedView::read_from(job, begun)?;
    tracing::debug!(
        "recovery: epoch log and progress read after {} ms",
        t0.elapsed().as_millis()
    );
    let records = &view.records;
    let resume = planner::resume_writers(records, &view.progress);
    if let Some((writer, epoch)) = resume.progress_lost {
        return Err(RecoveryError::ProgressLost {
            job: job.name.clone(),
            epoch,
            group: job.writer_id_of(writer),
            log: log.clone(),
        });
    }
    if resume.last_attempt > attempt {
        return Err(RecoveryError::Superseded {
            job: job.name.clone(),
        });
    }
    if let Some((epoch, processes, workers)) = in_doubt_of(plan, &resume, view.decided_by, shape) {
        return Err(RecoveryError::InDoubt {
            job: job.name.clone(),
            epoch,
            processes,
            workers,
        });
    }
    let mut out = Recovered {
        attempt,
        committed: resume.committed,
        next_epoch: resume.next_epoch,
        committed_epochs: resume.committed_epochs,
        start_offsets: resume.start_offsets,
        replay: resume.replay,
        log_offsets: resume.log_offsets,
        skip: resume.skip,
        committed_offset: resume.committed_offset,
        writers_before: view.progress.len() as u32,
        state: HashMap::new(),
        from_snapshot: Vec::new(),
    };

    // State as of the committed epoch, transform by transform.
    let prepared = prepared.join().expect("snapshot thread");
    for (name, prepared) in transforms.iter().zip(prepared) {
        let topic = job.changelog_topic(name);
        let Prepared {
            partitions,
            snapshot,
            marks,
        } = prepared;
        let partitions = partitions?;
        let snapshot = usable_snapshot(job, name, &topic, snapshot, marks, &view, out.committed);
        let from = snapshot.as_ref().map(|s| s.header.offsets.clone());
        // A key always lands in the same partition, so each partition is
        // read and folded on a thread of its own and the results joined.
        let committed = out.committed;
        let view = &view;
        let read: Vec<Result<(Changes, usize, usize), RecoveryError>> = std::thread::scope(|s| {
            let readers: Vec<_> = (0..partitions)
                .map(|p| {
                    let (topic, from) = (
                        &topic,
                        from.as_ref().and_then(|f| f.get(p as usize).copied()),
                    );
                    s.spawn(move || read_partition(brokers, topic, p, from, view, committed))
                })
                .collect();
            readers
                .into_iter()
                .map(|r| r.join().expect("changelog reader"))
                .collect()
        });
        let (mut seen, mut kept) = (0, 0);
        let mut changes = Vec::new();
        for r in read {
            let (c, s, k) = r?;
            (seen, kept) = (seen + s, kept + k);
            changes.extend(c);
        }
        tracing::debug!(
            "recovery: {kept} of {seen} records of {topic} count, read after {} ms",
            t0.elapsed().as_millis()
        );
        let state = match snapshot {
            None => changes.into_iter().filter_map(|(_, e)| e).collect(),
            Some(snap) => {
                out.from_snapshot
                    .push((name.clone(), snap.header.epoch, kept));
                over_snapshot(snap.groups, changes)
            }
        };
        tracing::debug!(
            "recovery: state of {} rebuilt after {} ms",
            name,
            t0.elapsed().as_millis()
        );
        out.state.insert(name.clone(), state);
    }
    Ok(out)
}

/// The state of stateful transform `transform` as of the job's last
/// committed epoch, read from its changelog without fencing anything (a
/// pull query): (that epoch, its entries). Any process of a cluster can
/// read it, whichever worker holds a key.
pub fn committed_state(
    plan: &Plan,
    transform: &str,
) -> Result<(u64, Vec<StateEntry>), RecoveryError> {
    let job = &plan.job;
    let view = CommittedView::read(job)?;
    let committed = planner::resume_writers(&view.records, &view.progress).committed;
    let topic = job.changelog_topic(transform);
    let partitions = kafka_admin::partition_count(&job.brokers, &topic)?.unwrap_or(0);
    let mut entries = Vec::new();
    for p in 0..partitions {
        let (changes, _, _) = read_partition(&job.brokers, &topic, p, None, &view, committed)?;
        entries.extend(changes.into_iter().filter_map(|(_, e)| e));
    }
    Ok((committed, entries))
}

/// Per changelog key, its state as of the resumed epoch (None: none).
type Changes = Vec<(Vec<u8>, Option<StateEntry>)>;

/// One changelog partition folded as of epoch `committed`: each key's
/// state, the records read and those that count. Only the copy of a
/// committed epoch that committed counts: the broker may deliver aborted
/// copies and a fenced instance's records.
fn read_partition(
    brokers: &str,
    topic: &str,
    partition: i32,
    from: Option<i64>,
    view: &CommittedView,
    committed: u64,
) -> Result<(Changes, usize, usize), RecoveryError> {
    let mut state = restore::StateAsOf::new(committed);
    let (mut seen, mut kept) = (0usize, 0usize);
    kafka_admin::read_partition_each(brokers, topic, partition, from, |m| {
        seen += 1;
        if seen == 2 {
            fault::point("restore");
        }
        let epoch = m.header("rill-epoch").and_then(|e| e.parse::<u64>().ok());
        let attempt = m.header("rill-attempt").and_then(|a| a.parse::<u32>().ok());
        let counts = matches!((epoch, attempt),
            (Some(e), Some(a)) if view.counts(m.header("rill-writer"), e, a));
        if let (true, Some(epoch), Some(key)) = (counts, epoch, m.key()) {
            kept += 1;
            state.add((
                epoch,
                m.offset(),
                key.to_vec(),
                m.value().map(<[u8]>::to_vec),
            ));
        }
    })?;
    let changes = state.changes().map_err(|e| RecoveryError::Changelog {
        topic: topic.to_string(),
        offset: e.offset,
        reason: e.error.to_string(),
    })?;
    Ok((changes, seen, kept))
}

/// The local snapshot of `transform`, if there is one this start can
/// build on: of a committed epoch of this job, no later than the one it
/// resumes after, of this build's state format, and with offsets its
/// changelog still has. Otherwise the changelog is read whole, and a
/// snapshot left aside says why.
fn usable_snapshot(
    job: &crate::spec::JobConfig,
    transform: &str,
    topic: &str,
    read: Result<Option<snapshot::Snapshot>, String>,
    marks: Result<Vec<(i64, i64)>, String>,
    view: &CommittedView,
    committed: u64,
) -> Option<Snapshotted> {
    let check = |h: &snapshot::Header| -> Result<(), String> {
        if h.epoch == 0 {
            return Err("it holds no committed epoch".into());
        }
        if h.epoch > committed {
            return Err(format!(
                "it is of epoch {}, after the last committed one ({committed})",
                h.epoch
            ));
        }
        if view.copies.first().and_then(|c| c.get(&h.epoch)) != Some(&h.attempt) {
            return Err(format!(
                "the epoch log does not say that attempt {} committed epoch {}: it is of another run of a job of this name",
                h.attempt, h.epoch
            ));
        }
        // The checksum and the format's version stand for the groups;
        // they are not decoded one by one.
        if h.state_format != crate::dataflow::state::VERSION {
            return Err(format!(
                "its states are of format {}, not {}",
                h.state_format,
                crate::dataflow::state::VERSION
            ));
        }
        let marks = marks.clone()?;
        if marks.len() != h.offsets.len()
            || marks.iter().zip(&h.offsets).any(|((_, high), o)| o > high)
        {
            return Err(format!("{topic} does not have the offsets it was taken at"));
        }
        Ok(())
    };
    let why = match read {
        Ok(None) => return None,
        Ok(Some(snap)) => match check(&snap.header) {
            Ok(()) => {
                return Some(Snapshotted {
                    header: snap.header,
                    groups: snap
                        .groups
                        .into_iter()
                        .map(|(k, s)| StateEntry::Packed(k, s))
                        .collect(),
                })
            }
            Err(why) => why,
        },
        Err(why) => why,
    };
    tracing::info!(
        "the local snapshot of {transform} in {} is not used ({why}); reading its changelog instead",
        snapshot::dir(job).display()
    );
    None
}

/// What a start learns of a transform while it reads the epoch log: how
/// many partitions its changelog has (0: none yet), its snapshot as read
/// from the file, and, when there is one, each changelog partition's low
/// and high offsets.
struct Prepared {
    partitions: Result<i32, KafkaAdminError>,
    snapshot: Result<Option<snapshot::Snapshot>, String>,
    marks: Result<Vec<(i64, i64)>, String>,
}

fn prepare(job: &crate::spec::JobConfig, transforms: &[String]) -> Vec<Prepared> {
    let dir = snapshot::dir(job);
    transforms
        .iter()
        .map(|t| {
            let topic = job.changelog_topic(t);
            let partitions =
                kafka_admin::partition_count(&job.brokers, &topic).map(|n| n.unwrap_or(0));
            let snapshot = snapshot::read(&dir, t);
            let marks = match (&snapshot, &partitions) {
                (Ok(Some(_)), Ok(n)) => {
                    kafka_admin::watermarks(&job.brokers, &topic, *n).map_err(|e| e.to_string())
                }
                (_, Err(e)) => Err(e.to_string()),
                _ => Ok(Vec::new()),
            };
            Prepared {
                partitions,
                snapshot,
                marks,
            }
        })
        .collect()
}

/// A snapshot, its groups as restored entries.
struct Snapshotted {
    header: snapshot::Header,
    groups: Vec<StateEntry>,
}

/// A snapshot's groups with what the changelog after it says: a key the
/// changelog names takes the changelog's state (or none).
fn over_snapshot(
    groups: Vec<StateEntry>,
    changes: Vec<(Vec<u8>, Option<StateEntry>)>,
) -> Vec<StateEntry> {
    use crate::dataflow::store::pack_key;
    // A changelog key is a tag byte, then the group's packed key.
    let named: std::collections::HashSet<&[u8]> =
        changes.iter().filter_map(|(k, _)| k.get(1..)).collect();
    let mut out: Vec<StateEntry> = groups
        .into_iter()
        .filter(|entry| match entry {
            StateEntry::Packed(key, _) => !named.contains(key.as_bytes()),
            StateEntry::Group(key, _) => !named.contains(pack_key(key).as_bytes()),
            _ => true,
        })
        .collect();
    out.extend(changes.into_iter().filter_map(|(_, e)| e));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::state::{group_key_bytes, Acc, AggState};
    use crate::record::Value;

    fn group(key: i64, n: i64) -> StateEntry {
        StateEntry::Group(
            vec![Value::Int(key)],
            AggState {
                rows: n,
                accs: vec![Acc::Count(n)],
            },
        )
    }

    #[test]
    fn the_changelog_after_a_snapshot_updates_adds_and_removes_its_groups() {
        let base = (1..=3).map(|k| group(k, 1)).collect();
        let changes = vec![
            (group_key_bytes(&[Value::Int(2)]), Some(group(2, 5))),
            (group_key_bytes(&[Value::Int(3)]), None),
            (group_key_bytes(&[Value::Int(4)]), Some(group(4, 1))),
        ];
        let mut got = over_snapshot(base, changes);
        got.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(got, vec![group(1, 1), group(2, 5), group(4, 1)]);
    }
}
