//! Local mode: one process, N timely worker threads, one writer thread.

use super::commit::{Committer, EpochOutput};
use super::coordinator::Completion;
pub use super::error::RunError;
use super::recovery;
use crate::connectors::file_sink::FileSink;
use crate::connectors::kafka_admin::{self, TopicKind};
use crate::connectors::kafka_sink::KafkaTopicSink;
use crate::connectors::kafka_source::KafkaSource;
use crate::connectors::memory::{MemorySink, MemorySource};
use crate::connectors::postgres_sink::{PostgresError, PostgresSink};
use crate::connectors::sink::{EpochSink, SinkError};
use crate::connectors::stdout_sink::StdoutSink;
use crate::connectors::SourceReader;
use crate::dataflow::output::{EpochCounts, WriterMsg};
use crate::dataflow::{self, Epoch, ReaderFactory, WorkerContext};
use crate::format::avro;
use crate::format::registry::RegistryClient;
use crate::plan::{Plan, SinkPlan};
use crate::record::RawRecord;
use crate::record::{DeadLetter, OutRecord};
use crate::spec::{Format, StartOffset};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::dataflow::ProbeHandle;

#[derive(Debug, Clone)]
pub struct RunOptions {
    pub workers: usize,
    pub until_caught_up: bool,
    pub trace_records: bool,
    /// Print a progress line per completed epoch (to stderr).
    pub progress: bool,
    /// Records per second the sources may read, for crash tests.
    pub max_rate: Option<f64>,
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
type Sinks = HashMap<usize, Box<dyn EpochSink>>;

/// Where the writer sends things: a Kafka producer, or memory.
enum Backend {
    Kafka(Box<Committer>),
    Memory { keep: bool },
}

struct Launch {
    readers: Vec<ReaderFactory>,
    registry: Option<RegistryClient>,
    sink_schema_ids: HashMap<usize, u32>,
    sink_partitions: HashMap<usize, i32>,
    source_topics: Vec<Arc<str>>,
    source_partitions: Vec<i32>,
    targets: Sinks,
    backend: Backend,
    scripted: bool,
    first_epoch: Epoch,
    resume_after: Epoch,
    changelog_topics: HashMap<String, Arc<str>>,
    restored: Arc<HashMap<String, Vec<crate::dataflow::state::StateEntry>>>,
}

/// Runs a job against its broker and registry until it is stopped (or,
/// with `until_caught_up`, until it has read what was there at start).
pub fn run(
    plan: Arc<Plan>,
    opts: RunOptions,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, RunError> {
    let job = &plan.job;
    kafka_admin::check_broker(&job.brokers)?;
    let needs_registry = plan.sources().any(|(_, _, s)| s.config.format == Format::Avro)
        || plan.sinks().any(|(_, _, s)| matches!(s, SinkPlan::Kafka { config, .. } if config.format == Format::Avro));
    let registry = needs_registry.then(|| RegistryClient::new(&job.registry_url));
    let (writer, attempt, start_offset) = Committer::fence(job, &plan)?;
    let recovered = recovery::recover(&plan, attempt)?;
    if recovered.committed > 0 || !recovered.replay.is_empty() {
        eprintln!(
            "resuming job {} after epoch {} (attempt {}): {} epochs to replay, state of {} keys restored",
            job.name,
            recovered.committed,
            recovered.attempt,
            recovered.replay.len(),
            recovered.state.values().map(Vec::len).sum::<usize>()
        );
    }
    let mut positions: BTreeMap<(u32, i32), i64> = BTreeMap::new();

    let mut readers: Vec<ReaderFactory> = Vec::new();
    let mut source_topics = Vec::new();
    let mut source_partitions = Vec::new();
    for (pos, (_, _, sp)) in plan.sources().enumerate() {
        let c = &sp.config;
        let n = kafka_admin::ensure_topic(
            &job.brokers,
            &c.topic,
            c.partitions,
            c.replication_factor,
            TopicKind::Data,
        )?;
        if let (Some(r), Format::Avro) = (&registry, c.format) {
            r.prefetch_subject(&format!("{}-value", c.topic))?;
        }
        let marks = kafka_admin::end_offsets(&job.brokers, &c.topic, n)?;
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
        let replay: Vec<(u64, HashMap<i32, i64>)> = recovered
            .replay
            .iter()
            .map(|(epoch, rs)| {
                (
                    *epoch,
                    rs.iter()
                        .filter(|r| r.source == pos as u32)
                        .map(|r| (r.partition, r.end))
                        .collect(),
                )
            })
            .collect();
        let brokers = job.brokers.clone();
        let topic = c.topic.clone();
        let bounded = opts.until_caught_up;
        source_topics.push(Arc::from(c.topic.as_str()));
        source_partitions.push(n);
        readers.push(Arc::new(move |index, peers| {
            let mine: Vec<_> = ranges
                .iter()
                .filter(|(p, _, _)| *p as usize % peers == index)
                .cloned()
                .collect();
            let reader = KafkaSource::new(&brokers, &topic, pos as u32, mine, bounded)
                .unwrap_or_else(|e| panic!("kafka consumer for {topic}: {e}"))
                .with_replay(replay.clone());
            Box::new(reader) as Box<dyn SourceReader>
        }));
    }

    let mut sink_schema_ids = HashMap::new();
    let mut sink_partitions = HashMap::new();
    let mut targets: Sinks = HashMap::new();
    for (i, node, sink) in plan.sinks() {
        match sink {
            SinkPlan::Kafka { config, .. } => {
                let n = kafka_admin::ensure_topic(
                    &job.brokers,
                    &config.topic,
                    config.partitions,
                    config.replication_factor,
                    TopicKind::Data,
                )?;
                sink_partitions.insert(i, n);
                if config.format == Format::Avro {
                    let schema = avro::schema_json(plan.input_schema(i));
                    let id = registry
                        .as_ref()
                        .unwrap()
                        .register(&format!("{}-value", config.topic), &schema)?;
                    sink_schema_ids.insert(i, id);
                }
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
                    config.batch_rows,
                    fallback_dir.clone(),
                    &job.name,
                    &job.writer_id(),
                );
                // A wrong table is reported now; a database that is down is
                // fine when the sink has a fallback.
                match pg.connect() {
                    Ok(()) => {}
                    Err(e @ PostgresError::Unreachable { .. }) if fallback_dir.is_some() => {
                        eprintln!(
                            "sink {}: {e}; epochs go to {} until it is back",
                            node.name,
                            fallback_dir.as_ref().unwrap().display()
                        )
                    }
                    Err(e) => return Err(e.into()),
                }
                targets.insert(i, Box::new(pg));
            }
            SinkPlan::File { config, dir } => {
                let sink = FileSink::new(&node.name, config, dir, plan.input_schema(i).clone())
                    .map_err(|e| SinkError::Files {
                        sink: node.name.clone(),
                        dir: dir.display().to_string(),
                        source: e,
                    })?;
                targets.insert(i, Box::new(sink));
            }
        }
    }
    let dead_letter_topic = match plan.dead_letter_sink.map(|i| &plan.nodes[i].kind) {
        Some(crate::plan::NodeKind::Sink(SinkPlan::Kafka { config, .. })) => config.topic.clone(),
        _ => job.dead_letter_topic(),
    };
    kafka_admin::ensure_topic(&job.brokers, &dead_letter_topic, 1, 1, TopicKind::Data)?;
    let mut changelog_topics = HashMap::new();
    for node in &plan.nodes {
        if matches!(node.kind, crate::plan::NodeKind::Aggregate(_)) {
            let topic = job.changelog_topic(&node.name);
            kafka_admin::ensure_topic(&job.brokers, &topic, 1, 1, TopicKind::Compacted)?;
            changelog_topics.insert(node.name.clone(), Arc::from(topic.as_str()));
        }
    }
    let committer = Committer::open(
        job,
        writer,
        &recovered,
        start_offset,
        positions,
        dead_letter_topic,
    )?;
    let launch = Launch {
        first_epoch: recovered.next_epoch,
        resume_after: recovered.committed,
        changelog_topics,
        restored: Arc::new(recovered.state),
        readers,
        registry,
        sink_schema_ids,
        sink_partitions,
        source_topics,
        source_partitions,
        targets,
        backend: Backend::Kafka(Box::new(committer)),
        scripted: false,
    };
    execute(plan, opts, stop, launch)
}

/// Input for [`run_in_memory`]: per source, its records, each optionally
/// with the epoch it is read in.
pub enum MemoryInput {
    Records(Arc<Vec<RawRecord>>),
    Scripted(Arc<Vec<(u64, RawRecord)>>),
}

/// Runs a job's engine on records held in memory, with sinks that keep
/// what they receive (`keep_output`) or only count it. For benchmarks and
/// engine tests: no broker, no registry.
pub fn run_in_memory(
    plan: Arc<Plan>,
    workers: usize,
    inputs: Vec<MemoryInput>,
    writer_schema_ids: Vec<(u32, String)>,
    keep_output: bool,
) -> Result<RunSummary, RunError> {
    run_in_memory_restarted(
        plan,
        workers,
        inputs,
        writer_schema_ids,
        keep_output,
        Restart::default(),
    )
}

/// What a restarted in-memory run resumes from: the last epoch committed
/// before it and the state as of that epoch, by transform.
#[derive(Default)]
pub struct Restart {
    pub after: Epoch,
    pub state: HashMap<String, Vec<crate::dataflow::state::StateEntry>>,
}

/// [`run_in_memory`] as a restart after `restart.after`: the scripted
/// input should hold only later epochs. With `keep_output`, the summary
/// holds the changelog, whose latest value per key is the next restart's
/// state.
pub fn run_in_memory_restarted(
    plan: Arc<Plan>,
    workers: usize,
    inputs: Vec<MemoryInput>,
    writer_schema_ids: Vec<(u32, String)>,
    keep_output: bool,
    restart: Restart,
) -> Result<RunSummary, RunError> {
    let scripted = inputs.iter().any(|i| matches!(i, MemoryInput::Scripted(_)));
    let partitions: Vec<i32> = inputs
        .iter()
        .map(|i| match i {
            MemoryInput::Records(r) => r.iter().map(|r| r.origin.partition + 1).max().unwrap_or(1),
            MemoryInput::Scripted(r) => r
                .iter()
                .map(|(_, r)| r.origin.partition + 1)
                .max()
                .unwrap_or(1),
        })
        .collect();
    let readers: Vec<ReaderFactory> = inputs
        .into_iter()
        .map(|input| match input {
            MemoryInput::Records(records) => Arc::new(move |index, peers| {
                Box::new(MemorySource::for_worker(&records, index, peers)) as Box<dyn SourceReader>
            }) as ReaderFactory,
            MemoryInput::Scripted(records) => Arc::new(move |index, peers| {
                Box::new(MemorySource::scripted(&records, index, peers)) as Box<dyn SourceReader>
            }) as ReaderFactory,
        })
        .collect();
    // A registry client whose cache already holds the writer schemas; it is
    // never asked over the network.
    let registry = RegistryClient::new("http://127.0.0.1:1");
    for (id, schema) in writer_schema_ids {
        registry.seed(id, &schema);
    }
    let mut targets: Sinks = HashMap::new();
    let mut sink_schema_ids = HashMap::new();
    for (i, _, _) in plan.sinks() {
        targets.insert(i, Box::new(MemorySink::new(keep_output)));
        sink_schema_ids.insert(i, 1);
    }
    let source_topics = plan
        .sources()
        .map(|(_, _, s)| Arc::from(s.config.topic.as_str()))
        .collect();
    let launch = Launch {
        source_partitions: partitions,
        readers,
        registry: Some(registry),
        sink_schema_ids,
        sink_partitions: HashMap::new(),
        source_topics,
        targets,
        backend: Backend::Memory { keep: keep_output },
        scripted,
        first_epoch: restart.after + 1,
        resume_after: restart.after,
        changelog_topics: plan
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, crate::plan::NodeKind::Aggregate(_)))
            .map(|n| (n.name.clone(), Arc::from(n.name.as_str())))
            .collect(),
        restored: Arc::new(restart.state),
    };
    let opts = RunOptions {
        workers,
        until_caught_up: true,
        trace_records: false,
        progress: false,
        max_rate: None,
    };
    execute(plan, opts, Arc::new(AtomicBool::new(false)), launch)
}

fn execute(
    plan: Arc<Plan>,
    opts: RunOptions,
    stop: Arc<AtomicBool>,
    launch: Launch,
) -> Result<RunSummary, RunError> {
    let workers = opts.workers.max(1);
    let (tx, rx) = crossbeam_channel::unbounded::<WriterMsg>();
    let in_flight = Arc::new(AtomicI64::new(0));
    let start = Instant::now();
    let interval = Duration::from_millis(plan.job.checkpoint_interval_ms.max(1));

    let writer_plan = plan.clone();
    let writer_in_flight = in_flight.clone();
    let Launch {
        readers,
        registry,
        sink_schema_ids,
        sink_partitions,
        source_topics,
        source_partitions,
        targets,
        backend,
        scripted,
        first_epoch,
        resume_after,
        changelog_topics,
        restored,
    } = launch;
    let max_rate = opts.max_rate;
    let bounded = opts.until_caught_up;
    let writer_opts = opts.clone();
    let writer_stop = stop.clone();
    let writer = std::thread::Builder::new()
        .name("rill-writer".into())
        .spawn(move || {
            let result = write_loop(
                &writer_plan,
                &writer_opts,
                workers,
                rx,
                targets,
                backend,
                writer_in_flight,
                start,
                resume_after,
            );
            // A writer that stops (fenced, or failing to commit) stops the
            // sources too, so the workers drain and the process exits.
            writer_stop.store(true, Ordering::SeqCst);
            result
        })
        .expect("spawn writer thread");

    let worker_plan = plan.clone();
    let trace = opts.trace_records;
    let guards = timely::execute(timely::Config::process(workers), move |worker| {
        let ctx = Rc::new(WorkerContext {
            index: worker.index(),
            peers: worker.peers(),
            writer: tx.clone(),
            counts: Rc::new(RefCell::new(BTreeMap::new())),
            trace,
            start,
            checkpoint_interval: interval,
            stop: stop.clone(),
            in_flight: in_flight.clone(),
            registry: registry.clone(),
            sink_schema_ids: sink_schema_ids.clone(),
            sink_partitions: sink_partitions.clone(),
            source_topics: source_topics.clone(),
            source_partitions: source_partitions.clone(),
            bounded,
            scripted,
            first_epoch,
            resume_after,
            max_rate,
            changelog_topics: changelog_topics.clone(),
            restored: restored.clone(),
        });
        let probe = ProbeHandle::<Epoch>::new();
        worker.dataflow::<Epoch, _, _>(|scope| {
            dataflow::build(scope, &worker_plan, &readers, &ctx, &probe)
        });
        let mut reported: Epoch = 0;
        loop {
            worker.step_or_park(Some(Duration::from_millis(20)));
            let frontier = probe.with_frontier(|f| f.first().copied());
            let upto = frontier.unwrap_or(Epoch::MAX);
            if upto > reported {
                let mut counts = ctx.counts.borrow_mut();
                let later = counts.split_off(&upto);
                let done = std::mem::replace(&mut *counts, later);
                let _ = ctx.writer.send(WriterMsg::Progress {
                    worker: ctx.index,
                    upto,
                    counts: done,
                });
                reported = upto;
            }
            if frontier.is_none() {
                break;
            }
        }
        let _ = ctx.writer.send(WriterMsg::Finished { worker: ctx.index });
    })
    .map_err(RunError::Workers)?;
    let results = guards.join();
    let written = writer
        .join()
        .map_err(|_| RunError::Workers("the writer thread panicked".into()))?;
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        return Err(RunError::Workers(e));
    }
    written
}

struct EpochTotals {
    counts: EpochCounts,
    out: Vec<u64>,
}

#[allow(clippy::too_many_arguments)]
fn write_loop(
    plan: &Plan,
    opts: &RunOptions,
    workers: usize,
    rx: Receiver<WriterMsg>,
    mut targets: Sinks,
    mut backend: Backend,
    in_flight: Arc<AtomicI64>,
    start: Instant,
    resume_after: Epoch,
) -> Result<RunSummary, RunError> {
    let sink_names: HashMap<usize, String> =
        plan.sinks().map(|(i, n, _)| (i, n.name.clone())).collect();
    let sink_order: Vec<usize> = plan.sinks().map(|(i, _, _)| i).collect();
    let source_names: Vec<String> = plan.sources().map(|(_, n, _)| n.name.clone()).collect();
    let mut summary = RunSummary::default();
    let mut completion = Completion::new(workers, resume_after);
    // Records staged per epoch, out of flight once the epoch commits.
    let mut staged: BTreeMap<Epoch, i64> = BTreeMap::new();
    // The dead-letter sink, unless dead letters go to a Kafka topic.
    let dead_letter_sink = plan.dead_letter_sink.filter(|i| {
        !matches!(
            plan.nodes[*i].kind,
            crate::plan::NodeKind::Sink(SinkPlan::Kafka { .. })
        )
    });
    let mut finished = 0;
    let mut epochs: BTreeMap<Epoch, EpochTotals> = BTreeMap::new();
    // Output held until its epoch is complete and can commit.
    let mut pending: BTreeMap<Epoch, EpochOutput> = BTreeMap::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut last_epoch_at = start;
    let interval_s = plan.job.checkpoint_interval_ms as f64 / 1000.0;
    let new_totals = || EpochTotals {
        counts: EpochCounts::default(),
        out: vec![0; sink_order.len()],
    };
    while finished < workers {
        let msg = match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                if let Backend::Kafka(c) = &backend {
                    c.poll();
                }
                let _ = out.flush();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // An epoch commits once: output for one already committed would
        // be committed under its number a second time.
        if let WriterMsg::Out { epoch, .. }
        | WriterMsg::Dead { epoch, .. }
        | WriterMsg::Changelog { epoch, .. } = &msg
        {
            if completion.is_stale(*epoch) {
                return Err(RunError::StaleEpoch {
                    epoch: *epoch,
                    complete: completion.complete(),
                });
            }
        }
        match msg {
            WriterMsg::Out {
                sink,
                epoch,
                records,
            } => {
                let n = records.len();
                let pos = sink_order.iter().position(|s| *s == sink).unwrap_or(0);
                epochs.entry(epoch).or_insert_with(new_totals).out[pos] += n as u64;
                targets.get_mut(&sink).unwrap().stage(epoch, records);
                *staged.entry(epoch).or_default() += n as i64;
            }
            WriterMsg::Dead { epoch, records } => match (&backend, dead_letter_sink) {
                (Backend::Memory { .. }, _) => summary.dead_letters.extend(records),
                // A dead-letter sink outside Kafka gets them as rows.
                (Backend::Kafka(_), Some(i)) => targets
                    .get_mut(&i)
                    .unwrap()
                    .stage(epoch, records.iter().map(dead_letter_record).collect()),
                (Backend::Kafka(_), None) => pending.entry(epoch).or_default().dead.extend(records),
            },
            WriterMsg::Changelog {
                epoch,
                topic,
                records,
            } => match &backend {
                Backend::Kafka(_) => pending
                    .entry(epoch)
                    .or_default()
                    .changelog
                    .push((topic, records)),
                Backend::Memory { keep: true } => summary.changelog.extend(
                    records
                        .into_iter()
                        .map(|(k, v)| (epoch, topic.to_string(), k, v)),
                ),
                Backend::Memory { keep: false } => {}
            },
            WriterMsg::Trace(lines) => {
                for l in lines {
                    let _ = writeln!(out, "{l}");
                }
            }
            WriterMsg::Progress {
                worker,
                upto: u,
                counts,
            } => {
                for (e, c) in counts {
                    epochs.entry(e).or_insert_with(new_totals).counts.add(&c);
                }
                if completion.report(worker, u).is_empty() {
                    continue;
                }
                let complete = completion.complete();
                let done_totals = {
                    let later = epochs.split_off(&complete);
                    std::mem::replace(&mut epochs, later)
                };
                let done_output = {
                    let later = pending.split_off(&complete);
                    std::mem::replace(&mut pending, later)
                };
                let mut done: BTreeMap<Epoch, (Option<EpochTotals>, EpochOutput)> = BTreeMap::new();
                for (e, t) in done_totals {
                    done.entry(e)
                        .or_insert_with(|| (None, EpochOutput::default()))
                        .0 = Some(t);
                }
                for (e, o) in done_output {
                    done.entry(e)
                        .or_insert_with(|| (None, EpochOutput::default()))
                        .1 = o;
                }
                for (e, (totals, mut output)) in done {
                    let read = totals
                        .as_ref()
                        .map(|t| t.counts.ranges.clone())
                        .unwrap_or_default();
                    for i in &sink_order {
                        if let Some(records) = targets.get_mut(i).unwrap().transactional(e) {
                            output.records.push(records);
                        }
                    }
                    // Files and rows need the epoch logged even when
                    // nothing else does, so its number is never reused.
                    let external = targets.values().any(|t| t.holds(e));
                    let _ = out.flush();
                    let mut write_files = || -> Result<(), RunError> {
                        for i in &sink_order {
                            targets.get_mut(i).unwrap().pre_commit(e)?;
                        }
                        for i in &sink_order {
                            let c = targets.get_mut(i).unwrap().commit(e)?;
                            summary.files.extend(c.files);
                            summary.postgres_rows += c.rows;
                            summary.postgres_time += c.time;
                            if let Some((path, n)) = c.fallback {
                                summary.fallback_rows += n;
                                eprintln!(
                                    "epoch {e}: postgres unreachable, sink {}: {n} rows written to {}",
                                    sink_names[i],
                                    path.display()
                                );
                            }
                        }
                        Ok(())
                    };
                    match &mut backend {
                        Backend::Kafka(committer) => committer.commit(
                            e,
                            output,
                            &read,
                            external,
                            write_files,
                            &plan.job.name,
                        )?,
                        Backend::Memory { .. } => write_files()?,
                    }
                    let sent = staged.split_off(&(e + 1));
                    let sent: i64 = std::mem::replace(&mut staged, sent).into_values().sum();
                    in_flight.fetch_sub(sent, Ordering::Relaxed);
                    let Some(t) = totals else { continue };
                    let records_in: u64 = t.counts.inputs.iter().sum();
                    let idle = records_in == 0
                        && t.out.iter().all(|n| *n == 0)
                        && t.counts.dead == 0
                        && t.counts.filtered == 0;
                    if idle {
                        continue;
                    }
                    summary.epochs += 1;
                    summary.records_in += records_in;
                    summary.dead_lettered += t.counts.dead;
                    summary.late += t.counts.late;
                    summary.filtered += t.counts.filtered;
                    for (pos, n) in t.out.iter().enumerate() {
                        *summary
                            .records_out
                            .entry(sink_names[&sink_order[pos]].clone())
                            .or_default() += n;
                    }
                    if opts.progress {
                        let _ = out.flush();
                        let elapsed = last_epoch_at.elapsed().as_secs_f64().max(interval_s);
                        last_epoch_at = Instant::now();
                        eprintln!(
                            "{}",
                            progress_line(
                                e,
                                &t,
                                records_in,
                                elapsed,
                                &source_names,
                                &sink_order,
                                &sink_names
                            )
                        );
                    }
                }
            }
            WriterMsg::Finished { .. } => finished += 1,
        }
    }
    let _ = out.flush();
    if let Backend::Kafka(c) = &backend {
        c.flush()?;
    }
    for (i, n, _) in plan.sinks() {
        summary.records_out.entry(n.name.clone()).or_default();
        let kept = targets.get_mut(&i).unwrap().kept();
        if !kept.is_empty() {
            summary
                .output
                .entry(n.name.clone())
                .or_default()
                .extend(kept);
        }
    }
    summary.elapsed = start.elapsed();
    Ok(summary)
}

/// A dead letter as a record of a dead-letter sink outside Kafka: a row
/// for tables and files, its JSON text for the console.
fn dead_letter_record(d: &DeadLetter) -> OutRecord {
    let row = dead_letter_row(d);
    let text = crate::format::json::row_to_string(&row, &crate::plan::dead_letter_schema(), true);
    OutRecord {
        key: d.key.clone(),
        value: Some(text.into_bytes()),
        partition: None,
        window: None,
        row: Some(row),
    }
}

/// A dead letter as a row of the dead-letter sink's table.
fn dead_letter_row(d: &DeadLetter) -> crate::record::Row {
    use crate::record::Value;
    vec![
        d.value.as_deref().map_or(Value::Null, |v| {
            Value::Str(String::from_utf8_lossy(v).as_ref().into())
        }),
        Value::Str(d.reason.as_str().into()),
        Value::Str(d.topic.as_ref().into()),
        Value::Int(d.partition as i64),
        Value::Int(d.offset),
    ]
}

fn progress_line(
    epoch: Epoch,
    t: &EpochTotals,
    records_in: u64,
    seconds: f64,
    sources: &[String],
    sink_order: &[usize],
    sink_names: &HashMap<usize, String>,
) -> String {
    let ins: Vec<String> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{s} {}", t.counts.inputs.get(i).copied().unwrap_or(0)))
        .collect();
    let outs: Vec<String> = sink_order
        .iter()
        .zip(&t.out)
        .map(|(s, n)| format!("{} {n}", sink_names[s]))
        .collect();
    format!(
        "epoch {epoch}: in {records_in} ({}) {:.0} rec/s | out {} | dead-lettered {} (late {}) | filtered {}",
        ins.join(", "),
        records_in as f64 / seconds,
        outs.join(", "),
        t.counts.dead,
        t.counts.late,
        t.counts.filtered
    )
}

impl RunSummary {
    /// The closing line `jobctl submit` prints.
    pub fn line(&self, job: &str) -> String {
        let outs: Vec<String> = self
            .records_out
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        format!(
            "job {job} stopped after {} epochs in {:.1} s: {} records in, out {}, {} dead-lettered, {} filtered{}",
            self.epochs,
            self.elapsed.as_secs_f64(),
            self.records_in,
            outs.join(", "),
            self.dead_lettered,
            self.filtered,
            if self.files.is_empty() { String::new() } else { format!(", {} files written", self.files.len()) }
        ) + &if self.postgres_rows > 0 {
            format!(
                ", postgres {} rows in {:.2} s of epoch transactions ({:.0} rows/s)",
                self.postgres_rows,
                self.postgres_time.as_secs_f64(),
                self.postgres_rows as f64 / self.postgres_time.as_secs_f64().max(1e-9)
            )
        } else {
            String::new()
        } + &if self.fallback_rows > 0 {
            format!(", {} rows to postgres fallback files (load them with `jobctl replay`)", self.fallback_rows)
        } else {
            String::new()
        }
    }
}
