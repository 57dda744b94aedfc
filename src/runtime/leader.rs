//! Process 0's leader: it decides a cluster's epochs. Every writer reports
//! the epochs it has finished; the leader names, in order, those that hold
//! something in any process; once every writer has prepared one (sent and
//! flushed its share), the leader appends the epoch's boundaries to the
//! epoch log (the decision) and tells every writer to commit. It prints
//! one progress line per epoch for the whole cluster, and the summary.

use super::boundaries::Boundaries;
use super::control::{EpochReport, Event, Link, Share, ToLeader, ToMember};
use super::error::RunError;
use super::local::RunSummary;
use super::report::progress_line;
use super::writer::EpochTotals;
use crate::dataflow::output::EpochCounts;
use crate::fault;
use crate::plan::Plan;
use crossbeam_channel::Receiver;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Instant;

type Read = BTreeMap<(u32, i32), (i64, i64)>;

pub struct Leader {
    bounds: Boundaries,
    links: Vec<Link<ToMember>>,
    rx: Receiver<(usize, Event<ToLeader>)>,
    /// Per process, every epoch below this is finished there.
    upto: Vec<u64>,
    /// Epochs that hold something in some process, not yet named.
    active: BTreeSet<u64>,
    /// Epochs logged before the restart: named whatever they hold.
    replay: BTreeSet<u64>,
    skip: BTreeMap<u64, Vec<u32>>,
    /// Epochs below this are named.
    named_upto: u64,
    /// Named and not yet decided, in order.
    queue: VecDeque<u64>,
    prepared: BTreeMap<u64, Vec<Option<(Read, EpochReport)>>>,
    shares: Vec<Option<Share>>,
    stop_sent: bool,
    progress: bool,
    summary: RunSummary,
    last_epoch_at: Instant,
}

impl Leader {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        bounds: Boundaries,
        links: Vec<Link<ToMember>>,
        rx: Receiver<(usize, Event<ToLeader>)>,
        replay: impl IntoIterator<Item = u64>,
        skip: BTreeMap<u64, Vec<u32>>,
        progress: bool,
    ) -> Self {
        let n = links.len();
        Leader {
            bounds,
            links,
            rx,
            upto: vec![0; n],
            active: BTreeSet::new(),
            replay: replay.into_iter().collect(),
            skip,
            named_upto: 0,
            queue: VecDeque::new(),
            prepared: BTreeMap::new(),
            shares: vec![None; n],
            stop_sent: false,
            progress,
            summary: RunSummary::default(),
            last_epoch_at: Instant::now(),
        }
    }

    fn broadcast(&self, m: &ToMember) {
        for l in &self.links {
            l.send(m);
        }
    }

    /// Tells every process to stop, and why.
    pub fn abort(&self, reason: &str) {
        self.broadcast(&ToMember::Abort {
            reason: reason.into(),
        });
    }

    /// Decides epochs until every writer has finished; the cluster's
    /// summary.
    pub fn run(mut self, plan: &Plan) -> Result<RunSummary, RunError> {
        let started = Instant::now();
        let result = self.serve(plan);
        if let Err(e) = &result {
            self.abort(&e.to_string());
        }
        result?;
        let mut summary = std::mem::take(&mut self.summary);
        for share in self.shares.into_iter().flatten() {
            summary.files.extend(share.files);
            summary.postgres_rows += share.postgres_rows;
            summary.fallback_rows += share.fallback_rows;
            summary.postgres_time += std::time::Duration::from_millis(share.postgres_ms);
        }
        for (_, n, _) in plan.sinks() {
            summary.records_out.entry(n.name.clone()).or_default();
        }
        summary.elapsed = started.elapsed();
        Ok(summary)
    }

    fn serve(&mut self, plan: &Plan) -> Result<(), RunError> {
        loop {
            let Ok((from, event)) = self.rx.recv() else {
                return Err(RunError::ClusterStopped {
                    reason: "every control connection closed".into(),
                });
            };
            let m = match event {
                Event::Lost(reason) => {
                    return Err(RunError::ClusterStopped {
                        reason: format!("process {from} was lost: {reason}"),
                    })
                }
                Event::Msg(m) => m,
            };
            match m {
                ToLeader::Frontier { upto, active } => {
                    self.upto[from] = self.upto[from].max(upto);
                    self.active.extend(active);
                    self.name_epochs();
                }
                ToLeader::Prepared {
                    epoch,
                    read,
                    report,
                } => {
                    let read = read
                        .into_iter()
                        .map(|(s, p, a, b)| ((s, p), (a, b)))
                        .collect();
                    let n = self.links.len();
                    self.prepared.entry(epoch).or_insert_with(|| vec![None; n])[from] =
                        Some((read, report));
                    while let Some(&next) = self.queue.front() {
                        let all = self
                            .prepared
                            .get(&next)
                            .is_some_and(|p| p.iter().all(Option::is_some));
                        if !all {
                            break;
                        }
                        self.queue.pop_front();
                        let shares = self.prepared.remove(&next).unwrap();
                        self.decide(next, shares.into_iter().flatten().collect(), plan)?;
                    }
                }
                ToLeader::Stop if !self.stop_sent => {
                    self.stop_sent = true;
                    self.broadcast(&ToMember::Stop);
                }
                ToLeader::Finished { share } => {
                    self.shares[from] = Some(share);
                    if self.shares.iter().all(Option::is_some) {
                        self.broadcast(&ToMember::Done);
                        return Ok(());
                    }
                }
                ToLeader::Stop | ToLeader::Fenced | ToLeader::Heartbeat => {}
            }
        }
    }

    /// Names the epochs every process has finished that hold something
    /// somewhere, or were logged before the restart.
    fn name_epochs(&mut self) {
        let upto = *self.upto.iter().min().unwrap();
        if upto <= self.named_upto {
            return;
        }
        let range = self.named_upto..upto;
        let mut named: BTreeSet<u64> = self.active.range(range.clone()).copied().collect();
        named.extend(self.replay.range(range));
        self.active = self.active.split_off(&upto);
        self.named_upto = upto;
        if named.is_empty() {
            return;
        }
        self.queue.extend(named.iter().copied());
        self.broadcast(&ToMember::Epochs(named.into_iter().collect()));
    }

    /// Every writer has prepared `epoch`: its boundaries go to the log,
    /// and, unless a newer instance has started since, every writer
    /// commits.
    fn decide(
        &mut self,
        epoch: u64,
        shares: Vec<(Read, EpochReport)>,
        plan: &Plan,
    ) -> Result<(), RunError> {
        let mut read: Read = BTreeMap::new();
        let mut totals = EpochTotals {
            counts: EpochCounts::default(),
            out: vec![0; plan.sinks().count()],
        };
        for (r, report) in &shares {
            for (k, (a, b)) in r {
                let e = read.entry(*k).or_insert((*a, *b));
                e.0 = e.0.min(*a);
                e.1 = e.1.max(*b);
            }
            totals.add_report(report);
        }
        let skipped = self.skip.get(&epoch).cloned().unwrap_or_default();
        let (log_offset, own) = self.bounds.log_epoch(epoch, &read, skipped)?;
        self.bounds.check_fenced(own, &plan.job.name)?;
        fault::point("decision_logged");
        self.bounds.committed = epoch;
        self.broadcast(&ToMember::Decided { epoch, log_offset });
        if totals.is_idle() {
            return Ok(());
        }
        let records_in: u64 = totals.counts.inputs.iter().sum();
        let s = &mut self.summary;
        s.epochs += 1;
        s.records_in += records_in;
        s.dead_lettered += totals.counts.dead;
        s.late += totals.counts.late;
        s.filtered += totals.counts.filtered;
        let sink_names: std::collections::HashMap<usize, String> =
            plan.sinks().map(|(i, n, _)| (i, n.name.clone())).collect();
        let sink_order: Vec<usize> = plan.sinks().map(|(i, _, _)| i).collect();
        for (pos, n) in totals.out.iter().enumerate() {
            *s.records_out
                .entry(sink_names[&sink_order[pos]].clone())
                .or_default() += n;
        }
        if self.progress {
            let interval_s = plan.job.checkpoint_interval_ms as f64 / 1000.0;
            let elapsed = self.last_epoch_at.elapsed().as_secs_f64().max(interval_s);
            self.last_epoch_at = Instant::now();
            let sources: Vec<String> = plan.sources().map(|(_, n, _)| n.name.clone()).collect();
            eprintln!(
                "{}",
                progress_line(
                    epoch,
                    &totals,
                    records_in,
                    elapsed,
                    &sources,
                    &sink_order,
                    &sink_names
                )
            );
        }
        Ok(())
    }
}

impl EpochTotals {
    fn add_report(&mut self, r: &EpochReport) {
        if self.counts.inputs.len() < r.inputs.len() {
            self.counts.inputs.resize(r.inputs.len(), 0);
        }
        for (a, b) in self.counts.inputs.iter_mut().zip(&r.inputs) {
            *a += b;
        }
        for (a, b) in self.out.iter_mut().zip(&r.out) {
            *a += b;
        }
        self.counts.dead += r.dead;
        self.counts.late += r.late;
        self.counts.filtered += r.filtered;
    }
}
