//! What a job has committed, as a start or a reader finds it: each
//! writer's progress (its group's offset on the epoch log, committed in
//! each epoch's transaction: everything up to the epoch whose record sits
//! just below it is committed), the view of the log those make, and
//! whether an epoch stopped in a way only the shape that cut it can
//! finish.

use super::epoch_log::{read_log_from, writer_index, writers_in, LogRecord};
use super::recovery::RecoveryError;
use crate::connectors::kafka_admin::{self, client_config};
use crate::plan::Plan;
use crate::runtime::planner;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use std::time::Duration;

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
    brokers: &crate::connectors::kafka_config::Brokers,
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

/// The epoch log and what every writer that counts has committed: the
/// writers of the start that logged the newest epoch (a cluster has one
/// per process; the progress of writers it retired is history).
pub struct CommittedView {
    /// The job's name.
    pub job: String,
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
            job: job.name.clone(),
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

/// Whether the job stopped between logging an epoch and committing it
/// in a way that only the shape that cut it can finish: some writers
/// committed it and others did not (each writer owns the partitions of
/// its process, by number), or processes of a cluster may have written
/// files or rows for it (each row goes to a process by its worker).
/// Then that epoch is cut again on that shape, where each record goes to
/// the same writer and a writer skips what it committed.
/// (epoch, processes, workers).
pub(super) fn in_doubt_of(
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

/// Fences writer `w` of the job: an instance of it that still runs can
/// commit nothing more, and a transaction it left open is ended.
pub(super) fn fence_writer(job: &crate::spec::JobConfig, w: u32) -> Result<(), RecoveryError> {
    if job.guarantee != crate::spec::Guarantee::ExactlyOnce {
        return Ok(());
    }
    let id = job.writer_id_of(w);
    crate::connectors::kafka_sink::KafkaWriter::new(&job.writer_brokers(), &id, 0, true)
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
