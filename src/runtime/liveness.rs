//! The data plane's liveness in a cluster. The control links say whether
//! each process is alive; they cannot say whether timely's own links
//! still carry anything. A link that goes silent without closing (a
//! network partition, a peer's network thread that stopped) would leave
//! every worker waiting on a frontier that never moves, with every
//! heartbeat still arriving.
//!
//! Epochs follow the clock, idle or not, so a frontier that stands still
//! for long while the processes are alive is a fault, unless a process
//! says it holds the frontier on purpose (waiting for the schema
//! registry). Each process reports its workers' frontier every second;
//! process 0's leader stops the cluster when the lowest has not moved for
//! the stall timeout, and a supervisor (or the launcher) starts it again.

use super::control::{Link, ToLeader};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often a process reports its frontier.
const PULSE_EVERY: Duration = Duration::from_secs(1);

/// The frontier of this process's workers, as they step.
#[derive(Debug)]
pub struct Pulse {
    frontiers: Vec<AtomicU64>,
    /// Workers that have built their dataflow and step it.
    stepping: AtomicUsize,
}

impl Pulse {
    pub fn new(workers: usize) -> Arc<Self> {
        Arc::new(Pulse {
            frontiers: (0..workers.max(1)).map(|_| AtomicU64::new(0)).collect(),
            stepping: AtomicUsize::new(0),
        })
    }

    /// Worker `local` (its index in this process) steps its dataflow.
    pub fn stepping(&self, local: usize, frontier: u64) {
        self.frontiers[local].store(frontier, Ordering::SeqCst);
        self.stepping.fetch_add(1, Ordering::SeqCst);
    }

    /// Worker `local` has every epoch below `frontier` finished.
    pub fn advanced(&self, local: usize, frontier: u64) {
        self.frontiers[local].store(frontier, Ordering::SeqCst);
    }

    /// The lowest frontier of this process's workers, once all of them
    /// step (a start that restores state takes its time first).
    pub fn frontier(&self) -> Option<u64> {
        if self.stepping.load(Ordering::SeqCst) < self.frontiers.len() {
            return None;
        }
        self.frontiers
            .iter()
            .map(|f| f.load(Ordering::SeqCst))
            .min()
    }
}

/// Reports this process's frontier to the leader every second, until
/// `closed`.
pub fn report(link: Link<ToLeader>, pulse: Arc<Pulse>, closed: Arc<AtomicBool>) {
    std::thread::Builder::new()
        .name("rill-pulse".into())
        .spawn(move || {
            while !closed.load(Ordering::SeqCst) {
                if let Some(frontier) = pulse.frontier() {
                    let waiting =
                        crate::dataflow::decode::WAITING_FOR_REGISTRY.load(Ordering::SeqCst) > 0;
                    if !link.send(&ToLeader::Pulse { frontier, waiting }) {
                        return;
                    }
                }
                std::thread::sleep(PULSE_EVERY);
            }
        })
        .expect("spawn pulse thread");
}

/// The leader's view of the processes' frontiers: when the lowest last
/// moved, and whether it may stand still.
#[derive(Debug)]
pub struct Stall {
    timeout: Duration,
    /// Per process: its last reported frontier, and whether it waits on
    /// purpose.
    seen: Vec<Option<(u64, bool)>>,
    /// The lowest frontier, and since when it has stood still.
    low: Option<(u64, Instant)>,
}

impl Stall {
    pub fn new(processes: usize, timeout: Duration) -> Self {
        Stall {
            timeout,
            seen: vec![None; processes],
            low: None,
        }
    }

    /// Process `from` reports its frontier.
    pub fn pulse(&mut self, now: Instant, from: usize, frontier: u64, waiting: bool) {
        // A wait on purpose restarts the clock until it has ended.
        let was_excused = self.excused();
        self.seen[from] = Some((frontier, waiting));
        let Some(lowest) = self.lowest() else { return };
        match self.low {
            Some((l, _)) if l == lowest && !was_excused && !self.excused() => {}
            _ => self.low = Some((lowest, now)),
        }
    }

    fn lowest(&self) -> Option<u64> {
        self.seen
            .iter()
            .map(|s| s.map(|(f, _)| f))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .min()
    }

    fn excused(&self) -> bool {
        self.seen.iter().flatten().any(|(_, waiting)| *waiting)
    }

    /// Why the cluster is to stop, once the lowest frontier has stood
    /// still for the timeout with no process waiting on purpose.
    pub fn verdict(&self, now: Instant) -> Option<String> {
        let (low, since) = self.low?;
        if low == u64::MAX || self.excused() || now.duration_since(since) < self.timeout {
            return None;
        }
        let behind: Vec<String> = self
            .seen
            .iter()
            .enumerate()
            .filter(|(_, s)| matches!(s, Some((f, _)) if *f == low))
            .map(|(i, _)| i.to_string())
            .collect();
        Some(format!(
            "no worker of the cluster has finished epoch {low} for {} s while every process answers \
             (process{} {} at that epoch): a link between processes carries nothing (a network \
             partition, or a peer's network thread stopped) or a worker is stuck; the cluster \
             stops so that it can be started again (raise --stall-timeout-ms if epochs take longer)",
            now.duration_since(since).as_secs(),
            if behind.len() == 1 { "" } else { "es" },
            behind.join(", ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Duration = Duration::from_secs(30);

    fn at(t0: Instant, s: u64) -> Instant {
        t0 + Duration::from_secs(s)
    }

    #[test]
    fn a_frontier_that_moves_is_never_a_stall() {
        let t0 = Instant::now();
        let mut s = Stall::new(2, T);
        for i in 0..100 {
            s.pulse(at(t0, i * 10), 0, i, false);
            s.pulse(at(t0, i * 10), 1, i, false);
            assert_eq!(s.verdict(at(t0, i * 10 + 9)), None);
        }
    }

    #[test]
    fn a_frontier_that_stands_for_the_timeout_stops_the_cluster_naming_the_processes_behind() {
        let t0 = Instant::now();
        let mut s = Stall::new(3, T);
        s.pulse(t0, 0, 5, false);
        s.pulse(t0, 1, 4, false);
        s.pulse(t0, 2, 4, false);
        for i in 1..30 {
            s.pulse(at(t0, i), 0, 6, false);
            assert_eq!(s.verdict(at(t0, i)), None, "{i}");
        }
        let why = s.verdict(at(t0, 30)).unwrap();
        assert!(
            why.starts_with("no worker of the cluster has finished epoch 4 for 30 s while every process answers (processes 1, 2 at that epoch)"),
            "{why}"
        );
    }

    #[test]
    fn nothing_is_judged_before_every_process_reports() {
        let t0 = Instant::now();
        let mut s = Stall::new(2, T);
        s.pulse(t0, 0, 3, false);
        assert_eq!(s.verdict(at(t0, 600)), None);
        s.pulse(at(t0, 600), 1, 3, false);
        assert_eq!(s.verdict(at(t0, 629)), None);
        assert!(s.verdict(at(t0, 630)).is_some());
    }

    #[test]
    fn a_wait_for_the_registry_excuses_the_stall_and_the_clock_starts_again_after_it() {
        let t0 = Instant::now();
        let mut s = Stall::new(2, T);
        s.pulse(t0, 0, 3, false);
        s.pulse(t0, 1, 3, true);
        for i in 1..100 {
            s.pulse(at(t0, i), 1, 3, true);
            assert_eq!(s.verdict(at(t0, i)), None);
        }
        s.pulse(at(t0, 100), 1, 3, false);
        assert_eq!(s.verdict(at(t0, 129)), None);
        assert!(s.verdict(at(t0, 130)).is_some());
    }

    #[test]
    fn a_finished_cluster_is_never_stalled() {
        let t0 = Instant::now();
        let mut s = Stall::new(2, T);
        s.pulse(t0, 0, u64::MAX, false);
        s.pulse(t0, 1, u64::MAX, false);
        assert_eq!(s.verdict(at(t0, 1000)), None);
    }
}
