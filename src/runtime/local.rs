//! Local mode: one process, N timely worker threads, one writer thread.

use super::commit::Committer;
pub use super::error::RunError;
use super::lookups::{lookup, Lookups};
use super::{committed, epoch_log, recovery};
use crate::connectors::file_sink::FileSink;
use crate::connectors::kafka_admin;
use crate::connectors::kafka_sink::KafkaTopicSink;
use crate::connectors::kafka_source::KafkaSource;
use crate::connectors::postgres_epochs::PostgresEpochSink;
use crate::connectors::postgres_sink::{PostgresError, PostgresSink};
use crate::connectors::sink::{EpochSink, SinkError};
use crate::connectors::stdout_sink::StdoutSink;
use crate::connectors::SourceReader;
use crate::dataflow::{Epoch, ReaderFactory};
use crate::format::registry::RegistryClient;
use crate::plan::{Plan, SinkPlan};
use crate::record::{DeadLetter, OutRecord};
use crate::spec::{Format, StartOffset};
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub workers: usize,
    pub until_caught_up: bool,
    /// Read only the epochs to replay, and stop (finishing an epoch in
    /// doubt): no window fires for the end of input.
    pub replay_only: bool,
    pub trace_records: bool,
    /// Print a progress line per completed epoch (to stderr).
    pub progress: bool,
    /// Records per second the sources may read, for crash tests.
    pub max_rate: Option<f64>,
    /// Where the job's metrics and recent epochs are recorded, for its
    /// HTTP endpoint.
    pub observer: Option<Arc<super::observe::Observer>>,
}

/// What a run did, summed over its epochs.
#[derive(Debug, Clone, Default)]
pub struct RunSummary {
    pub epochs: u64,
    pub records_in: u64,
    /// Records written, by sink name.
    pub records_out: BTreeMap<String, u64>,
    pub dead_lettered: u64,
    pub filtered: u64,
    pub elapsed: Duration,
    /// In memory mode: the records each sink received, with their epoch,
    /// by sink name.
    pub output: BTreeMap<String, Vec<(Epoch, OutRecord)>>,
    /// In memory mode: the dead letters.
    pub dead_letters: Vec<DeadLetter>,
    /// In memory mode: the state changes, as (epoch, transform, key,
    /// value) in the order they were sent.
    pub changelog: Vec<(Epoch, String, Vec<u8>, Option<Vec<u8>>)>,
    /// Files the file sinks wrote.
    pub files: Vec<std::path::PathBuf>,
    /// Of the dead letters, those too late for their window.
    pub late: u64,
    /// Rows written to Postgres tables, and rows written to fallback files
    /// instead because Postgres was unreachable.
    pub postgres_rows: u64,
    pub fallback_rows: u64,
    /// Time spent in Postgres epoch transactions.
    pub postgres_time: Duration,
}

/// Every sink of the job, by node, each speaking the epoch-sink protocol.
pub(super) type Sinks = HashMap<usize, Box<dyn EpochSink>>;

/// Where the writer sends things: a Kafka producer, or memory.
pub(super) enum Backend {
    Kafka(Box<Committer>),
    /// Process 0 of a cluster: its writer appends each epoch to the log
    /// once every writer has prepared it, and sends every process's dead
    /// letters and changelog records with its own output.
    Lead(Box<Committer>, super::member::Member, super::member::Peers),
    /// Another process of a cluster: its writer sends the output for the
    /// partitions it owns and commits once process 0 has decided.
    Follow(Box<Committer>, super::member::Member),
    Memory {
        keep: bool,
    },
}

pub(super) struct Launch {
    pub(super) readers: Vec<ReaderFactory>,
    pub(super) registry: Option<RegistryClient>,
    pub(super) sink_schema_ids: HashMap<usize, u32>,
    pub(super) sink_partitions: HashMap<usize, i32>,
    pub(super) sink_limits: HashMap<usize, crate::dataflow::SinkLimits>,
    pub(super) source_topics: Vec<Arc<str>>,
    pub(super) source_partitions: Vec<i32>,
    pub(super) targets: Sinks,
    pub(super) backend: Backend,
    pub(super) scripted: bool,
    pub(super) first_epoch: Epoch,
    pub(super) resume_after: Epoch,
    pub(super) changelog_topics: HashMap<String, Arc<str>>,
    pub(super) restored: crate::dataflow::RestoredState,
    /// This process's sockets to the other processes of its cluster, its
    /// index, and where its workers report their frontier; none for a
    /// process of its own.
    pub(super) cluster: Option<(
        Vec<Option<std::net::TcpStream>>,
        usize,
        Arc<super::liveness::Pulse>,
    )>,
}

/// Starts again, at most this often, an instance fenced by one that
/// started at the same moment but lost the race to the newest start.
const RACE_RESTARTS: u32 = 3;

/// Runs a job against its broker and registry until it is stopped (or,
/// with `until_caught_up`, until it has read what was there at start).
pub fn run(
    plan: Arc<Plan>,
    opts: RunOptions,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, RunError> {
    let mut restarts = 0;
    loop {
        let mut attempt = 0;
        // An attempt has a stop flag of its own, which its writer sets when
        // it fails; Ctrl-C (`stop`) is passed on to it.
        let attempt_stop = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(AtomicBool::new(false));
        let forward = {
            let (user, inner, ended) = (stop.clone(), attempt_stop.clone(), ended.clone());
            std::thread::spawn(move || {
                while !ended.load(Ordering::SeqCst) {
                    if user.load(Ordering::SeqCst) {
                        inner.store(true, Ordering::SeqCst);
                    }
                    std::thread::sleep(Duration::from_millis(20));
                }
            })
        };
        let result = run_attempt(plan.clone(), opts.clone(), attempt_stop, &mut attempt);
        ended.store(true, Ordering::SeqCst);
        let _ = forward.join();
        // Fencing and the start record are two steps: of two instances
        // started at once, one may hold the newest start while the other
        // fenced it last. The newest start is the one to carry on; the
        // other stops when it reads that start. The pause lets an instance
        // that fenced this one log its start first: fencing and logging
        // the start take it milliseconds.
        let newest_start_is_ours = || -> Result<bool, RunError> {
            std::thread::sleep(Duration::from_secs(3));
            let log = plan.job.epoch_log_topic();
            Ok(epoch_log::newest_attempt(&plan.job.brokers, &log)? == attempt)
        };
        match result {
            Err(e @ (RunError::Fenced { .. } | RunError::CommitTimeout { .. }))
                if restarts < RACE_RESTARTS
                    && attempt > 0
                    && !stop.load(Ordering::SeqCst)
                    && newest_start_is_ours()? =>
            {
                restarts += 1;
                tracing::warn!(
                    "{e}\nyet no instance started after this one: one that started at the same moment fenced it, and stops on reading this one's start; starting again ({restarts} of {RACE_RESTARTS})"
                );
            }
            r => return r,
        }
    }
}

fn run_attempt(
    plan: Arc<Plan>,
    opts: RunOptions,
    stop: Arc<AtomicBool>,
    attempt_out: &mut u32,
) -> Result<RunSummary, RunError> {
    let job = &plan.job;
    let t0 = std::time::Instant::now();
    // `RILL_LOG=rill=debug` shows where a start spends its time.
    let step = |done: &str| tracing::debug!("start: {done} after {} ms", t0.elapsed().as_millis());
    kafka_admin::check_broker(&job.brokers)?;
    step("broker found");
    let registry = registry_for(&plan)?;
    // Fencing and recovery are one step after another; what the start
    // asks the broker and registry about its topics goes on beside them.
    let (fenced, mut recovered, lookups) = std::thread::scope(|s| {
        let lookups = s.spawn(|| lookup(&plan, registry.as_ref(), None, 1));
        // The epoch log is read from its beginning while the start fences;
        // recovery reads on to the end, the start record included.
        let log_begun = s.spawn(|| kafka_admin::prefetch(&job.brokers, &job.epoch_log_topic()));
        let fenced = Committer::fence(job)?;
        step("fenced earlier instances, start logged");
        *attempt_out = fenced.attempt;
        Committer::check_not_fenced(job, &fenced)?;
        // A log missing before the start (a first start) is read anew.
        let log_begun = log_begun.join().expect("epoch log thread").ok().flatten();
        let begun = committed::Begun {
            log: log_begun,
            progress: Some(fenced.progress_consumer()),
            fence: true,
        };
        let recovered = recovery::recover(&plan, fenced.attempt, (1, opts.workers as u32), begun)?;
        step("recovered");
        let lookups = lookups.join().expect("lookup thread")?;
        step("topics looked up");
        Ok::<_, RunError>((fenced, recovered, lookups))
    })?;
    say_resuming(job, &recovered);
    let (mut launch, positions, dead_letter_topic) =
        wire(&plan, &opts, &mut recovered, registry, 0, lookups)?;
    step("sources and sinks wired");
    let resumed = positions.clone();
    let mut committer = Committer::open(job, fenced, &recovered, positions, dead_letter_topic)?;
    if recovered.start_offsets.is_none() {
        committer.log_begin(&job.name)?;
    }
    step("committer open");
    if let Some(o) = &opts.observer {
        o.started(recovered.attempt, recovered.committed);
        o.resumed_at(resumed);
    }
    launch.backend = Backend::Kafka(Box::new(committer));
    super::workers::execute(plan, opts, stop, launch)
}

/// The registry client, when a source or sink speaks Avro. A registry
/// that refuses the job's credentials or certificate stops the start: no
/// wait would mend it. One that does not answer is waited for, record by
/// record, as when it goes down later.
pub(super) fn registry_for(plan: &Plan) -> Result<Option<RegistryClient>, RunError> {
    let needs_registry = plan.sources().any(|(_, _, s)| s.config.format == Format::Avro)
        || plan.sinks().any(|(_, _, s)| matches!(s, SinkPlan::Kafka { config, .. } if config.format == Format::Avro));
    if !needs_registry {
        return Ok(None);
    }
    let registry = plan.job.registry();
    match registry.subjects() {
        Err(e @ crate::format::registry::RegistryError::Refused { .. }) => Err(e.into()),
        _ => Ok(Some(registry)),
    }
}

pub(super) fn say_resuming(job: &crate::spec::JobConfig, recovered: &recovery::Recovered) {
    if recovered.committed > 0 || !recovered.replay.is_empty() {
        crate::log::say(&format!(
            "resuming job {} after epoch {} (attempt {}): {} epochs to replay, state of {} keys restored",
            job.name,
            recovered.committed,
            recovered.attempt,
            recovered.replay.len(),
            recovered.state.values().map(Vec::len).sum::<usize>()
        ));
        for (transform, epoch, records) in &recovered.from_snapshot {
            crate::log::say(&format!(
                "state of {transform} loaded from its local snapshot of epoch {epoch}, with {records} changelog records after it"
            ));
        }
    }
}

/// Readers, sinks and topics for a start that resumes as `recovered`
/// says, on process `process` (0 alone), from what `lookups` found: the
/// launch without its backend, where every source partition stands, and
/// the dead-letter topic.
#[allow(clippy::type_complexity)]
pub(super) fn wire(
    plan: &Plan,
    opts: &RunOptions,
    recovered: &mut recovery::Recovered,
    registry: Option<RegistryClient>,
    process: u32,
    lookups: Lookups,
) -> Result<(Launch, BTreeMap<(u32, i32), i64>, String), RunError> {
    let job = &plan.job;
    let mut positions: BTreeMap<(u32, i32), i64> = BTreeMap::new();
    let Lookups {
        dead_letter_topic,
        partitions,
        marks: source_marks,
        compacted,
        schema_ids,
    } = lookups;

    let mut readers: Vec<ReaderFactory> = Vec::new();
    // Sources skip the copies of other rill jobs' output that never
    // committed; one follower per upstream job, for the whole process.
    let upstreams: Arc<dyn crate::connectors::written_by::Upstream> =
        super::upstream::Upstreams::new(&job.brokers);
    let mut source_topics = Vec::new();
    let mut source_partitions = Vec::new();
    for (pos, (_, _, sp)) in plan.sources().enumerate() {
        let c = &sp.config;
        let n = partitions[&c.topic];
        let marks = &source_marks[pos];
        let ranges: Vec<(i32, i64, Option<i64>)> = marks
            .iter()
            .enumerate()
            .map(|(p, (low, high))| {
                let start = match (&recovered.start_offsets, c.start_offset) {
                    (Some(committed), _) => committed
                        .get(&(pos as u32, p as i32))
                        .copied()
                        .unwrap_or(*low),
                    (None, StartOffset::Earliest) => *low,
                    (None, StartOffset::Latest) => *high,
                };
                (p as i32, start, Some(*high))
            })
            .collect();
        // Offsets the job still has to read (from where it resumes, and
        // the epochs it replays) must still be in the topic: skipping
        // records that retention deleted would lose them without a word.
        for (p, start, _) in &ranges {
            let low = marks[*p as usize].0;
            if let Some(first) =
                super::planner::first_deleted(&recovered.replay, pos as u32, *p, *start, low)
            {
                return Err(RunError::OffsetsGone {
                    topic: c.topic.clone(),
                    partition: *p,
                    from: first,
                    low,
                });
            }
        }
        for (p, start, _) in &ranges {
            positions.insert((pos as u32, *p), *start);
        }
        tracing::debug!("source {}: (partition, start, end) {ranges:?}", c.topic);
        let replay: Vec<(u64, HashMap<i32, i64>, Vec<i32>)> = recovered
            .replay
            .iter()
            .map(|(epoch, rs)| {
                let of_source = || rs.iter().filter(|r| r.source == pos as u32);
                (
                    *epoch,
                    of_source().map(|r| (r.partition, r.end)).collect(),
                    of_source()
                        .filter(|r| r.waiting)
                        .map(|r| r.partition)
                        .collect(),
                )
            })
            .collect();
        let brokers = crate::spec::kafka::source_brokers(job, c);
        let topic = c.topic.clone();
        let bounded = opts.until_caught_up;
        let interval_ms = job.checkpoint_interval_ms;
        let replay_only = opts.replay_only;
        let upstreams = upstreams.clone();
        source_topics.push(Arc::from(c.topic.as_str()));
        source_partitions.push(n);
        readers.push(Arc::new(move |index, peers| {
            let mine: Vec<_> = ranges
                .iter()
                .filter(|(p, _, _)| *p as usize % peers == index)
                .cloned()
                .collect();
            let reader = KafkaSource::new(&brokers, &topic, pos as u32, mine, bounded, interval_ms)
                .unwrap_or_else(|e| panic!("kafka consumer for {topic}: {e}"))
                .with_replay(replay.clone(), replay_only)
                .with_upstream(upstreams.clone());
            Box::new(reader) as Box<dyn SourceReader>
        }));
    }

    let mut sink_partitions = HashMap::new();
    let mut sink_limits = HashMap::new();
    let mut targets: Sinks = HashMap::new();
    for (i, node, sink) in plan.sinks() {
        match sink {
            SinkPlan::Kafka { config, .. } => {
                sink_partitions.insert(i, partitions[&config.topic]);
                sink_limits.insert(
                    i,
                    crate::dataflow::SinkLimits {
                        key_required: compacted.contains(&config.topic),
                        ..Default::default()
                    },
                );
                targets.insert(i, Box::new(KafkaTopicSink::new(&config.topic)));
            }
            SinkPlan::Stdout => {
                targets.insert(i, Box::new(StdoutSink::default()));
            }
            SinkPlan::Postgres {
                config,
                fallback_dir,
            } => {
                let mut pg = PostgresSink::new(
                    &node.name,
                    &config.url,
                    &config.table,
                    plan.input_schema(i).clone(),
                    fallback_dir.clone(),
                    &job.name,
                    &job.writer_id_of(process),
                );
                // A wrong table is reported now; a database that is down is
                // fine when the sink has a fallback, and waited for when not.
                match pg.connect() {
                    Ok(()) => {}
                    Err(e @ PostgresError::Unreachable { .. }) if fallback_dir.is_some() => {
                        tracing::warn!(
                            "sink {}: {e}; epochs go to {} until it is back",
                            node.name,
                            fallback_dir.as_ref().unwrap().display()
                        )
                    }
                    Err(e @ PostgresError::Unreachable { .. }) => {
                        wait_for_postgres(&mut pg, &node.name, e)?
                    }
                    Err(e) => return Err(e.into()),
                }
                // A database that is down (with a fallback) is claimed
                // when the fallback files are replayed into it.
                if let (Some(run), true) = (&recovered.incarnation, pg.is_connected()) {
                    pg.claim(run)?;
                }
                sink_limits.insert(
                    i,
                    crate::dataflow::SinkLimits {
                        not_null: pg.not_null(),
                        text_without_nul: true,
                        ..Default::default()
                    },
                );
                targets.insert(i, Box::new(PostgresEpochSink::start(pg)));
            }
            SinkPlan::File { config, dir } => {
                let sink = FileSink::new(
                    &node.name,
                    config,
                    dir,
                    plan.input_schema(i).clone(),
                    process,
                )
                .map_err(|e| SinkError::Files {
                    sink: node.name.clone(),
                    dir: dir.display().to_string(),
                    source: e,
                })?;
                if let Some(run) = &recovered.incarnation {
                    sink.claim(&job.name, run)?;
                }
                targets.insert(i, Box::new(sink));
            }
        }
    }
    let mut changelog_topics = HashMap::new();
    for node in &plan.nodes {
        if matches!(node.kind, crate::plan::NodeKind::Aggregate(_)) {
            let topic = job.changelog_topic(&node.name);
            changelog_topics.insert(node.name.clone(), Arc::from(topic.as_str()));
        }
    }
    let launch = Launch {
        first_epoch: recovered.next_epoch,
        resume_after: recovered.committed,
        changelog_topics,
        restored: Arc::new(std::sync::Mutex::new(std::mem::take(&mut recovered.state))),
        cluster: None,
        readers,
        registry,
        sink_schema_ids: schema_ids,
        sink_partitions,
        sink_limits,
        source_topics,
        source_partitions,
        targets,
        backend: Backend::Memory { keep: false },
        scripted: false,
    };
    Ok((launch, positions, dead_letter_topic))
}

/// A Postgres sink without a fallback waits for its database at start as
/// it does mid-run: nothing can be written elsewhere, and a job that gave
/// up would only be started again. It says so, and again every 30 s.
/// (Ctrl-C twice quits a start that waits.)
fn wait_for_postgres(
    pg: &mut PostgresSink,
    sink: &str,
    first: PostgresError,
) -> Result<(), RunError> {
    let say = |e: &PostgresError| {
        tracing::warn!(
            "sink {sink}: {e}; the job waits for it (a sink with a `fallback_dir` would go on without it)"
        )
    };
    say(&first);
    let mut told = std::time::Instant::now();
    let mut wait = std::time::Duration::from_millis(250);
    loop {
        std::thread::sleep(wait);
        wait = (wait * 2).min(std::time::Duration::from_secs(5));
        match pg.connect() {
            Ok(()) => {
                tracing::info!("sink {sink}: postgres answers; the job goes on");
                return Ok(());
            }
            Err(e @ PostgresError::Unreachable { .. }) => {
                if told.elapsed() >= std::time::Duration::from_secs(30) {
                    say(&e);
                    told = std::time::Instant::now();
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}
