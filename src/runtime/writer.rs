//! The process's writer thread: it takes everything the workers send,
//! stages each epoch's records in the sinks, and once every worker is
//! past an epoch, commits it through the epoch-sink protocol in the order
//! the coordinator gives.

use super::commit::EpochOutput;
use super::control::{EpochReport, KafkaShare, Share, ToLeader};
use super::coordinator::Completion;
use super::local::{Backend, RunOptions, RunSummary, Sinks};
use super::observe::EpochDone;
use super::report::progress_line;
use super::RunError;
use crate::dataflow::output::{EpochCounts, WriterMsg};
use crate::dataflow::Epoch;
use crate::plan::{Plan, SinkPlan};
use crate::record::{DeadLetter, OutRecord};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct EpochTotals {
    pub(super) counts: EpochCounts,
    pub(super) out: Vec<u64>,
    /// Bytes of keys and values out, per sink.
    pub(super) bytes_out: Vec<u64>,
}

/// An epoch the workers have finished: its counts and its output.
type Finished = (Option<EpochTotals>, EpochOutput);

/// The writer thread's state between messages.
struct Writer<'p> {
    plan: &'p Plan,
    opts: &'p RunOptions,
    sink_names: HashMap<usize, String>,
    sink_order: Vec<usize>,
    source_names: Vec<String>,
    /// The transforms' names, in plan order.
    transform_names: Vec<String>,
    summary: RunSummary,
    targets: Sinks,
    backend: Backend,
    in_flight: Arc<AtomicI64>,
    /// What the stateful transforms hold, for the metrics.
    state_held: Arc<crate::dataflow::output::Held>,
    /// Records and bytes staged per epoch, out of flight once the epoch
    /// commits.
    staged: BTreeMap<Epoch, (i64, u64)>,
    out: std::io::BufWriter<std::io::StdoutLock<'static>>,
    last_epoch_at: Instant,
    /// When the last epoch was recorded for the metrics.
    last_epoch_observed: Instant,
    /// In a cluster: finished epochs waiting for the leader to name them.
    held: BTreeMap<Epoch, Finished>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn write_loop(
    plan: &Plan,
    opts: &RunOptions,
    workers: usize,
    rx: Receiver<WriterMsg>,
    targets: Sinks,
    backend: Backend,
    (in_flight, held, fill): (
        Arc<AtomicI64>,
        Arc<crate::dataflow::output::Held>,
        Arc<crate::dataflow::EpochFill>,
    ),
    start: Instant,
    resume_after: Epoch,
) -> Result<RunSummary, RunError> {
    let mut w = Writer {
        state_held: held,
        plan,
        opts,
        sink_names: plan.sinks().map(|(i, n, _)| (i, n.name.clone())).collect(),
        sink_order: plan.sinks().map(|(i, _, _)| i).collect(),
        source_names: plan.sources().map(|(_, n, _)| n.name.clone()).collect(),
        transform_names: plan.transforms().map(|n| n.name.clone()).collect(),
        summary: RunSummary::default(),
        targets,
        backend,
        in_flight,
        staged: BTreeMap::new(),
        out: std::io::BufWriter::new(std::io::stdout().lock()),
        last_epoch_at: start,
        last_epoch_observed: start,
        held: BTreeMap::new(),
    };
    let mut completion = Completion::new(workers, resume_after);
    for t in w.targets.values_mut() {
        t.frontier(completion.complete());
    }
    // The dead-letter sink, unless dead letters go to a Kafka topic.
    let dead_letter_sink = plan.dead_letter_sink.filter(|i| {
        !matches!(
            plan.nodes[*i].kind,
            crate::plan::NodeKind::Sink(SinkPlan::Kafka { .. })
        )
    });
    // Only the console shows a dead letter as text; tables and files take
    // its row, and the text of each (its payload escaped) was a tenth of
    // the writer's time in a run with many malformed records.
    let dead_letter_text = dead_letter_sink.is_some_and(|i| {
        matches!(
            plan.nodes[i].kind,
            crate::plan::NodeKind::Sink(SinkPlan::Stdout)
        )
    });
    let cluster = w.member().is_some();
    let mut finished = 0;
    let mut workers_gone = false;
    let mut share_sent = false;
    let mut epochs: BTreeMap<Epoch, EpochTotals> = BTreeMap::new();
    // Output held until its epoch is complete and can commit.
    let mut pending: BTreeMap<Epoch, EpochOutput> = BTreeMap::new();
    let mut snapshots: BTreeMap<String, Vec<Vec<_>>> = BTreeMap::new();
    let sinks = w.sink_order.len();
    let new_totals = || EpochTotals {
        counts: EpochCounts::default(),
        out: vec![0; sinks],
        bytes_out: vec![0; sinks],
    };
    loop {
        if cluster {
            w.member().unwrap().poll()?;
            while let Some(e) = w.member().unwrap().next_epoch() {
                let (totals, output) = w.held.remove(&e).unwrap_or_default();
                w.commit_epoch(e, totals, output)?;
            }
            // Every epoch of this process committed: its share of the
            // summary goes to the leader, which ends the run for all.
            let all_done = (finished >= workers || workers_gone)
                && completion.complete() == Epoch::MAX
                && w.held.is_empty()
                && w.member().unwrap().all_named_committed();
            if all_done && !share_sent {
                share_sent = true;
                let share = w.share();
                w.member().unwrap().send(&ToLeader::Finished { share })?;
            }
            if w.member().unwrap().is_done() {
                break;
            }
        } else if finished >= workers || workers_gone {
            break;
        }
        // Every epoch below the lowest one complete or held for the
        // leader has committed by now: the sources may close the next.
        let uncommitted = w
            .held
            .keys()
            .next()
            .copied()
            .unwrap_or(Epoch::MAX)
            .min(completion.complete());
        fill.committed_below(uncommitted);
        let msg = match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                if let Backend::Kafka(c) | Backend::Lead(c, ..) | Backend::Follow(c, _) = &w.backend
                {
                    c.poll();
                }
                let _ = w.out.flush();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => {
                workers_gone = true;
                if cluster {
                    std::thread::sleep(Duration::from_millis(20));
                }
                continue;
            }
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
                let pos = w.sink_order.iter().position(|s| *s == sink).unwrap_or(0);
                let bytes: usize = records
                    .iter()
                    .map(|r| {
                        r.key.as_ref().map_or(0, |k| k.len())
                            + r.value.as_ref().map_or(0, |v| v.len())
                    })
                    .sum();
                let totals = epochs.entry(epoch).or_insert_with(new_totals);
                totals.out[pos] += n as u64;
                totals.bytes_out[pos] += bytes as u64;
                w.targets.get_mut(&sink).unwrap().stage(epoch, records);
                let staged = w.staged.entry(epoch).or_default();
                staged.0 += n as i64;
                staged.1 += bytes as u64;
            }
            WriterMsg::Dead { epoch, records } => {
                if let Some(o) = &w.opts.observer {
                    o.dead_letters(epoch, &records);
                }
                match (&w.backend, dead_letter_sink) {
                    (Backend::Memory { .. }, _) => w.summary.dead_letters.extend(records),
                    // A dead-letter sink outside Kafka gets them as rows,
                    // and counts them as its output.
                    (_, Some(i)) => {
                        if let Some(pos) = w.sink_order.iter().position(|s| *s == i) {
                            epochs.entry(epoch).or_insert_with(new_totals).out[pos] +=
                                records.len() as u64;
                        }
                        w.targets.get_mut(&i).unwrap().stage(
                            epoch,
                            records
                                .iter()
                                .map(|d| dead_letter_record(d, dead_letter_text))
                                .collect(),
                        )
                    }
                    (_, None) => pending.entry(epoch).or_default().dead.extend(records),
                }
            }
            WriterMsg::Changelog {
                epoch,
                topic,
                records,
            } => {
                // Out of flight with the epoch's commit, as output is.
                let bytes: usize = records
                    .iter()
                    .map(|(k, v)| k.len() + v.as_ref().map_or(0, Vec::len))
                    .sum();
                let staged = w.staged.entry(epoch).or_default();
                staged.0 += records.len() as i64;
                staged.1 += bytes as u64;
                match &w.backend {
                    Backend::Memory { keep: true } => w.summary.changelog.extend(
                        records
                            .into_iter()
                            .map(|(k, v)| (epoch, topic.to_string(), k, v)),
                    ),
                    Backend::Memory { keep: false } => {}
                    _ => pending
                        .entry(epoch)
                        .or_default()
                        .changelog
                        .push((topic, records)),
                }
            }
            WriterMsg::Trace(lines) => {
                for l in lines {
                    let _ = writeln!(w.out, "{l}");
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
                for t in w.targets.values_mut() {
                    t.frontier(complete);
                }
                let done_totals = {
                    let later = epochs.split_off(&complete);
                    std::mem::replace(&mut epochs, later)
                };
                let done_output = {
                    let later = pending.split_off(&complete);
                    std::mem::replace(&mut pending, later)
                };
                let mut done: BTreeMap<Epoch, Finished> = BTreeMap::new();
                for (e, t) in done_totals {
                    done.entry(e).or_default().0 = Some(t);
                }
                for (e, o) in done_output {
                    done.entry(e).or_default().1 = o;
                }
                if cluster {
                    // The leader names the epochs to commit: those that
                    // hold something in any process.
                    let active = done.keys().copied().collect();
                    w.held.extend(done);
                    w.member().unwrap().send(&ToLeader::Frontier {
                        upto: complete,
                        active,
                    })?;
                    continue;
                }
                for (e, (totals, output)) in done {
                    w.commit_epoch(e, totals, output)?;
                }
            }
            WriterMsg::Finished { .. } => finished += 1,
            // Nothing more commits: the open epochs lack that worker's
            // share, and a start resumes after the last committed one.
            WriterMsg::SourceGone { topic, what } => {
                return Err(RunError::SourceTopicGone {
                    topic,
                    what,
                    committed: committed_epoch(&w.backend),
                })
            }
            WriterMsg::Panicked { worker, message } => {
                // In a cluster, a worker's panic may be timely's answer to
                // a peer that is gone: the loss, if the control link tells
                // of it within a moment, is the cause to report.
                if cluster {
                    let until = Instant::now() + Duration::from_secs(2);
                    while Instant::now() < until {
                        w.member().unwrap().poll()?;
                        std::thread::sleep(Duration::from_millis(50));
                    }
                }
                return Err(RunError::WorkerPanicked {
                    worker,
                    message,
                    committed: committed_epoch(&w.backend),
                });
            }
            WriterMsg::Snapshot { transform, groups } => {
                snapshots.entry(transform).or_default().push(groups)
            }
        }
    }
    tracing::debug!(
        "run: writer's loop done after {} ms",
        start.elapsed().as_millis()
    );
    // Every epoch this run processed has committed: the state the workers
    // handed over is that of the last committed epoch.
    if let Backend::Kafka(c) = &w.backend {
        if completion.complete() == Epoch::MAX {
            snapshots.retain(|_, parts| parts.len() == workers);
            super::snapshot::keep(plan, c.committed_epoch(), c.attempt(), snapshots);
        }
    }
    w.finish(start)
}

impl Writer<'_> {
    fn member(&mut self) -> Option<&mut crate::runtime::member::Member> {
        match &mut self.backend {
            Backend::Lead(_, m, _) | Backend::Follow(_, m) => Some(m),
            Backend::Kafka(_) | Backend::Memory { .. } => None,
        }
    }

    /// What this process did beyond its epochs' counts.
    fn share(&self) -> Share {
        Share {
            files: self.summary.files.clone(),
            postgres_rows: self.summary.postgres_rows,
            fallback_rows: self.summary.fallback_rows,
            postgres_ms: self.summary.postgres_time.as_millis() as u64,
        }
    }

    /// Commits one complete epoch through the epoch-sink protocol and
    /// counts it.
    fn commit_epoch(
        &mut self,
        e: Epoch,
        totals: Option<EpochTotals>,
        mut output: EpochOutput,
    ) -> Result<(), RunError> {
        let read = totals
            .as_ref()
            .map(|t| (t.counts.ranges.clone(), t.counts.waiting.clone()))
            .unwrap_or_default();
        // This process's own counts, before process 0 adds the others':
        // every process's metrics count what it did.
        let own = totals.as_ref().map(EpochTotals::report);
        let observer = self.opts.observer.clone();
        for i in &self.sink_order {
            output
                .records
                .extend(self.targets.get_mut(i).unwrap().transactional(e));
        }
        // Files and rows need the epoch logged even when nothing else
        // does, so its number is never reused.
        let external = self.targets.values().any(|t| t.holds(e));
        let _ = self.out.flush();
        let report = totals.as_ref().map(EpochTotals::report).unwrap_or_default();
        let Writer {
            targets,
            summary,
            sink_order,
            sink_names,
            backend,
            plan,
            ..
        } = self;
        let mut write_files = || -> Result<(), RunError> {
            for i in sink_order.iter() {
                targets.get_mut(i).unwrap().pre_commit(e)?;
            }
            for i in sink_order.iter() {
                let c = targets.get_mut(i).unwrap().commit(e)?;
                summary.files.extend(c.files);
                summary.postgres_rows += c.rows;
                summary.postgres_time += c.time;
                let falls_back = matches!(
                    &plan.nodes[*i].kind,
                    crate::plan::NodeKind::Sink(SinkPlan::Postgres {
                        fallback_dir: Some(_),
                        ..
                    })
                );
                if let (Some(o), true) = (&observer, falls_back) {
                    o.postgres_fallback(&sink_names[i], c.fallback.is_some());
                }
                if let Some((path, n)) = c.fallback {
                    summary.fallback_rows += n;
                    tracing::warn!(
                        "epoch {e}: postgres unreachable, sink {}: {n} rows written to {}",
                        sink_names[i],
                        path.display()
                    );
                }
            }
            Ok(())
        };
        let job = &plan.job.name;
        let mut totals = totals;
        let follower = matches!(backend, Backend::Follow(..));
        crate::last_words::doing(crate::last_words::Doing::Committing);
        let committed_before = committed_epochs(backend);
        let commit_started = Instant::now();
        match backend {
            Backend::Kafka(committer) => {
                committer.commit(e, output, &read, external, |_| write_files(), job)?
            }
            Backend::Memory { .. } => write_files()?,
            // Process 0 sends every process's dead letters and changelog
            // records with its own output, appends the epoch once every
            // writer has prepared it, lets the others write their files
            // and rows and commit, and commits last.
            Backend::Lead(committer, _, peers) => {
                let merged = totals.get_or_insert_with(|| EpochTotals {
                    counts: EpochCounts::default(),
                    out: vec![0; sink_order.len()],
                    bytes_out: vec![0; sink_order.len()],
                });
                for share in peers.shares_of(e)? {
                    merged.add_share(&share.report, share.read);
                    merged.counts.waiting.extend(share.waiting);
                    share.share.add_to(&mut output);
                }
                let read = (merged.counts.ranges.clone(), merged.counts.waiting.clone());
                let write_all = |offset| -> Result<(), RunError> {
                    write_files()?;
                    peers.decided(e, offset)
                };
                // Every writer commits every epoch the leader names, so
                // each has an offset to commit its progress with.
                committer.commit(e, output, &read, true, write_all, job)?
            }
            Backend::Follow(committer, member) => {
                let prepared = ToLeader::Prepared {
                    epoch: e,
                    read: read
                        .0
                        .iter()
                        .map(|((s, p), (a, b))| (*s, *p, *a, *b))
                        .collect(),
                    waiting: read.1.iter().copied().collect(),
                    report,
                    share: KafkaShare::take_from(&mut output),
                };
                let decide = || {
                    member.send(&prepared)?;
                    member.await_decision(e)
                };
                committer.commit_share(e, &output, decide, write_files, job)?;
                member.send(&ToLeader::Written { epoch: e })?;
            }
        }
        let commit_time = commit_started.elapsed();
        crate::last_words::committed(e);
        crate::last_words::doing(crate::last_words::Doing::Running);
        let sent = self.staged.split_off(&(e + 1));
        let sent: i64 = std::mem::replace(&mut self.staged, sent)
            .into_values()
            .map(|(records, _)| records)
            .sum();
        self.in_flight.fetch_sub(sent, Ordering::Relaxed);
        let committed = committed_epochs(&self.backend);
        // Every epoch the log holds gets a line, so their numbers have no
        // gaps, across restarts too.
        let logged = committed > committed_before;
        if let (Some(o), Some(own)) = (&self.opts.observer, &own) {
            let duration = self.last_epoch_observed.elapsed();
            self.last_epoch_observed = Instant::now();
            o.committed(EpochDone {
                epoch: e,
                inputs: self
                    .source_names
                    .iter()
                    .map(String::as_str)
                    .zip(own.inputs.iter().copied())
                    .collect(),
                transforms: self
                    .transform_names
                    .iter()
                    .map(String::as_str)
                    .zip(own.through.iter().copied().chain(std::iter::repeat(0)))
                    .collect(),
                outputs: self
                    .sink_order
                    .iter()
                    .map(|i| self.sink_names[i].as_str())
                    .zip(own.out.iter().copied())
                    .collect(),
                bytes_in: own.bytes_in.clone(),
                bytes_out: own.bytes_out.clone(),
                partitions: &own.partitions,
                dead: own.dead,
                late: own.late,
                filtered: own.filtered,
                duration,
                commit: commit_time,
                read: &read.0,
                timestamps: &own.timestamps,
            });
            o.open_epoch_records(self.in_flight.load(Ordering::Relaxed));
            o.open_epoch_bytes(self.staged.values().map(|(_, b)| *b).sum());
            o.held(self.state_held.keys(), self.state_held.totals());
            o.blocked(self.state_held.blocked_ns.load(Ordering::Relaxed));
        }
        let Some(t) = totals else { return Ok(()) };
        let records_in: u64 = t.counts.inputs.iter().sum();
        if t.is_idle() && !logged {
            return Ok(());
        }
        self.summary.epochs += 1;
        self.summary.records_in += records_in;
        self.summary.dead_lettered += t.counts.dead;
        self.summary.late += t.counts.late;
        self.summary.filtered += t.counts.filtered;
        for (pos, n) in t.out.iter().enumerate() {
            *self
                .summary
                .records_out
                .entry(self.sink_names[&self.sink_order[pos]].clone())
                .or_default() += n;
        }
        // Process 0 prints one line for the whole cluster.
        if self.opts.progress && !follower {
            let _ = self.out.flush();
            let interval_s = self.plan.job.checkpoint_interval_ms as f64 / 1000.0;
            let elapsed = self.last_epoch_at.elapsed().as_secs_f64().max(interval_s);
            self.last_epoch_at = Instant::now();
            crate::log::say(&progress_line(
                committed.unwrap_or(self.summary.epochs),
                e,
                &t,
                records_in,
                elapsed,
                commit_time,
                &self.source_names,
                &self.sink_order,
                &self.sink_names,
            ));
        }
        Ok(())
    }

    fn finish(mut self, start: Instant) -> Result<RunSummary, RunError> {
        let _ = self.out.flush();
        if let Backend::Kafka(c) | Backend::Lead(c, ..) | Backend::Follow(c, _) = &self.backend {
            c.flush()?;
        }
        for (i, n, _) in self.plan.sinks() {
            self.summary.records_out.entry(n.name.clone()).or_default();
            let kept = self.targets.get_mut(&i).unwrap().kept();
            if !kept.is_empty() {
                self.summary
                    .output
                    .entry(n.name.clone())
                    .or_default()
                    .extend(kept);
            }
        }
        self.summary.elapsed = start.elapsed();
        // Everything is flushed and committed; librdkafka takes about
        // 100 ms to take a client down, which the end of a run need not
        // wait for.
        let backend = std::mem::replace(&mut self.backend, Backend::Memory { keep: false });
        std::thread::spawn(move || drop(backend));
        Ok(std::mem::take(&mut self.summary))
    }
}

/// The last epoch committed, where this process's writer knows it.
fn committed_epoch(backend: &Backend) -> Option<u64> {
    match backend {
        Backend::Kafka(c) | Backend::Lead(c, ..) => Some(c.committed_epoch()),
        Backend::Follow(..) | Backend::Memory { .. } => None,
    }
}

/// Epochs the job has committed, where a committer keeps count (the
/// progress lines' numbers).
fn committed_epochs(backend: &Backend) -> Option<u64> {
    match backend {
        Backend::Kafka(c) | Backend::Lead(c, ..) => Some(c.committed_epochs),
        Backend::Follow(..) | Backend::Memory { .. } => None,
    }
}

impl EpochTotals {
    /// Adds another process's counts and the offsets it read.
    fn add_share(&mut self, r: &EpochReport, read: BTreeMap<(u32, i32), (i64, i64)>) {
        self.counts.add(&EpochCounts {
            inputs: r.inputs.clone(),
            bytes_in: r.bytes_in.clone(),
            partitions: r
                .partitions
                .iter()
                .map(|(s, p, n, b)| ((*s, *p), (*n, *b)))
                .collect(),
            through: r.through.clone(),
            waiting: Default::default(),
            dead: r.dead,
            late: r.late,
            filtered: r.filtered,
            ranges: read,
            // Each process charts the latency of what it read.
            timestamps: Vec::new(),
        });
        for (a, b) in self.out.iter_mut().zip(&r.out) {
            *a += b;
        }
        for (a, b) in self.bytes_out.iter_mut().zip(&r.bytes_out) {
            *a += b;
        }
    }

    /// Nothing read, written, dead-lettered or filtered.
    pub(super) fn is_idle(&self) -> bool {
        self.counts.inputs.iter().all(|n| *n == 0)
            && self.out.iter().all(|n| *n == 0)
            && self.counts.dead == 0
            && self.counts.filtered == 0
    }

    pub(super) fn report(&self) -> EpochReport {
        EpochReport {
            inputs: self.counts.inputs.clone(),
            through: self.counts.through.clone(),
            out: self.out.clone(),
            bytes_in: self.counts.bytes_in.clone(),
            bytes_out: self.bytes_out.clone(),
            partitions: self
                .counts
                .partitions
                .iter()
                .map(|((s, p), (n, b))| (*s, *p, *n, *b))
                .collect(),
            dead: self.counts.dead,
            late: self.counts.late,
            filtered: self.counts.filtered,
            timestamps: self.counts.timestamps.clone(),
        }
    }
}

/// A dead letter as a record of a dead-letter sink outside Kafka: a row
/// for tables and files, with its JSON text (`text`) for the console.
fn dead_letter_record(d: &DeadLetter, text: bool) -> OutRecord {
    let row = dead_letter_row(d);
    let value = text.then(|| {
        crate::format::json::row_to_string(&row, &crate::plan::dead_letter_schema(), true)
            .into_bytes()
            .into()
    });
    OutRecord {
        key: d.key.clone(),
        value,
        partition: None,
        window: None,
        row: Some(row),
    }
}

/// A dead letter as a row of the dead-letter sink's table: any bytes
/// fit, so that no record can stop the job by the way it is malformed.
fn dead_letter_row(d: &DeadLetter) -> crate::record::Row {
    use crate::record::Value;
    let (payload, encoding) = match d.value.as_deref().map(payload_text) {
        Some((text, encoding)) => (Value::Str(text.into()), Value::Str(encoding.into())),
        None => (Value::Null, Value::Null),
    };
    vec![
        payload,
        encoding,
        Value::Str(without_nul(&d.reason).into()),
        Value::Str(without_nul(&d.topic).into()),
        Value::Int(d.partition as i64),
        Value::Int(d.offset),
    ]
}

/// A payload as text: itself when it is UTF-8 without a NUL byte, else
/// its base64 (standard alphabet, padded), with the encoding's name.
fn payload_text(bytes: &[u8]) -> (String, &'static str) {
    use base64::Engine;
    match std::str::from_utf8(bytes) {
        Ok(text) if !text.contains('\0') => (text.to_string(), "utf8"),
        _ => (
            base64::engine::general_purpose::STANDARD.encode(bytes),
            "base64",
        ),
    }
}

/// A reason or topic quotes what it met; a NUL in it is written `\0`.
fn without_nul(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') {
        text.replace('\0', "\\0").into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Value;

    fn dead(value: Option<&[u8]>, reason: &str) -> DeadLetter {
        DeadLetter {
            key: None,
            value: value.map(<[u8]>::to_vec),
            reason: reason.into(),
            topic: "payments".into(),
            partition: 1,
            offset: 7,
        }
    }

    #[test]
    fn a_dead_letter_row_holds_any_bytes_as_text_and_says_how() {
        let text = |v: &Value| match v {
            Value::Str(s) => s.to_string(),
            other => panic!("not text: {other:?}"),
        };
        // A Confluent-Avro record sent to a JSON topic: a NUL, then bytes
        // that are not UTF-8 either.
        let row = dead_letter_row(&dead(Some(b"\0\0\0\0\x01garbage\xff"), "decode: x"));
        assert_eq!(text(&row[0]), "AAAAAAFnYXJiYWdl/w==");
        assert_eq!(text(&row[1]), "base64");
        assert_eq!(text(&row[2]), "decode: x");
        assert_eq!(row[4], Value::Int(1));
        assert_eq!(row[5], Value::Int(7));
        let row = dead_letter_row(&dead(Some("{\"amount\": \"zwölf\"}".as_bytes()), "r"));
        assert_eq!(text(&row[0]), "{\"amount\": \"zwölf\"}");
        assert_eq!(text(&row[1]), "utf8");
        // No payload at all, and a reason that quotes a NUL.
        let row = dead_letter_row(&dead(None, "value a\0b"));
        assert_eq!((&row[0], &row[1]), (&Value::Null, &Value::Null));
        assert_eq!(text(&row[2]), "value a\\0b");
        assert_eq!(row.len(), crate::plan::dead_letter_schema().fields.len());
    }
}
