//! Where a starting job resumes. It reads the committed progress r (see
//! `committed.rs`), replays the epochs logged after r with their logged
//! boundaries (`epoch_log.rs`), and rebuilds each stateful transform's
//! state from its changelog as of r (`state_read.rs`).

use super::committed::{self, Begun, CommittedView};
use super::epoch_log::PartitionRange;
use super::state_read;
use crate::connectors::kafka_admin::KafkaAdminError;
use crate::dataflow::state::StateEntry;
use crate::plan::{NodeKind, Plan};
use crate::runtime::planner;
use std::collections::HashMap;

#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error(transparent)]
    Kafka(#[from] KafkaAdminError),
    #[error("epoch log {topic}: {reason}")]
    Log { topic: String, reason: String },
    #[error("changelog {topic} at offset {offset}: {reason}; it was not written by this version of rill or is damaged, and the job does not start rather than lose state (to start the job from nothing, run `jobctl reset {job}`)")]
    Changelog {
        job: String,
        topic: String,
        offset: i64,
        reason: String,
    },
    #[error("job {job} has committed epochs up to at least {epoch} (its epoch log {log} says so), but the broker no longer has its progress (the offsets of group {group} on {log}): they expired (raise the broker's offsets.retention.minutes) or were deleted; rill does not start such a job from nothing (to do that on purpose, run `jobctl reset {job}`)")]
    ProgressLost {
        job: String,
        epoch: u64,
        group: String,
        log: String,
    },
    #[error("job {job} keeps state that its job file now means otherwise: {changes}; read as the new job file means it, the committed state would be wrong, so the job does not start. Run `jobctl reset {job}` to start it over from nothing, or run the new job file under another name; changes that keep state (a sink, filter, map or route added or removed, a `having`, an emit mode, a new aggregate) start as they are")]
    StateChanged { job: String, changes: String },
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
    /// This run of the job, which every sink claims (see
    /// `LogRecord::Incarnation`); None for a log from before runs were
    /// named.
    pub incarnation: Option<String>,
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
        std::thread::spawn(move || state_read::prepare(&job, &transforms))
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
    if let Some((epoch, processes, workers)) =
        committed::in_doubt_of(plan, &resume, view.decided_by, shape)
    {
        return Err(RecoveryError::InDoubt {
            job: job.name.clone(),
            epoch,
            processes,
            workers,
        });
    }
    // The committed state is read as this job file means it: a start that
    // means something else by it is refused, and one that changes what
    // it may logs the new meaning.
    let meaning = plan.state_meaning();
    let holds_state = resume.committed > 0 || !resume.replay.is_empty();
    if let (true, Some(old)) = (holds_state, &resume.state) {
        let changes = planner::state_changes(old, &meaning);
        if !changes.is_empty() {
            return Err(RecoveryError::StateChanged {
                job: job.name.clone(),
                changes: changes.join("; "),
            });
        }
    }
    if !meaning.is_empty() && resume.state.as_ref() != Some(&meaning) {
        super::epoch_log::EpochLog::open(&job.brokers, &log)?.append(
            &super::epoch_log::LogRecord::State {
                transforms: meaning,
            },
            rdkafka::message::OwnedHeaders::new(),
        )?;
    }
    // A first start on an empty log names this run of the job.
    let incarnation = match (&resume.incarnation, resume.fresh) {
        (Some(id), _) => Some(id.clone()),
        (None, true) => Some(super::epoch_log::name_run(&job.brokers, &log, 0)?),
        (None, false) => None,
    };
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
        incarnation,
    };

    // State as of the committed epoch, transform by transform.
    let prepared = prepared.join().expect("snapshot thread");
    (out.state, out.from_snapshot) =
        state_read::restore_all(job, &transforms, prepared, &view, out.committed, t0)?;
    Ok(out)
}
