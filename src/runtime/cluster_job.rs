//! One process of a cluster running a job against Kafka. The processes
//! connect (with a handshake); process 0 fences every writer the job has
//! had, logs the start, recovers, does the job-wide chores (topics,
//! schemas) and sends every process where to resume. Then each runs its
//! workers and its own writer (`<job>-w<process>`).
//!
//! Each writer owns the partitions of the job's output topics whose
//! number is its process's modulo the processes, and the dataflow sends
//! each record to its partition's owner: on Tansu, transactions of two
//! producers open on one partition resolve together, and a producer
//! killed with one open would hold back the other's commits. The
//! one-partition topics (changelogs, dead letters) are process 0's: the
//! others hand it their records of each epoch. An epoch commits in
//! lockstep: every writer sends and flushes its share, process 0 appends
//! the epoch to the log once all have, then every writer writes its files
//! and rows and commits, process 0 last.

use super::cluster::{self, Connected, Identity};
use super::commit::Committer;
use super::committed;
use super::control::{self, Event, Link, StartPlan, ToLeader, ToMember};
use super::epoch_log::{LogRecord, PartitionRange};
use super::error::RunError;
use super::leader::Leader;
use super::liveness::{self, Pulse, Stall};
use super::local::{registry_for, say_resuming, wire, Backend, RunOptions, RunSummary};
use super::member::{Member, Peers};
use super::recovery::{self, Recovered};
use crate::connectors::kafka_admin;
use crate::plan::Plan;
use crossbeam_channel::Receiver;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Where this process stands in its cluster.
#[derive(Debug, Clone)]
pub struct Place {
    pub addresses: Vec<String>,
    pub process: usize,
    pub identity: Identity,
    pub connect_timeout: Duration,
    /// How long the cluster's lowest frontier may stand still while every
    /// process answers (see `runtime/liveness.rs`).
    pub stall_timeout: Duration,
}

/// Runs process `place.process` of the job's cluster until the job stops.
/// Process 0 returns the summary of the whole cluster; the others their
/// own share.
pub fn run_process(
    plan: Arc<Plan>,
    opts: RunOptions,
    stop: Arc<AtomicBool>,
    place: Place,
) -> Result<RunSummary, RunError> {
    let job = &plan.job;
    let me = place.process;
    let n = place.addresses.len();
    crate::fault::set_process(me);
    quiet_lost_peer_panics();
    let Connected { timely, control } =
        cluster::connect(&place.addresses, me, place.identity, place.connect_timeout)?;
    let closed = Arc::new(AtomicBool::new(false));
    let shape = (n as u32, opts.workers as u32);
    let this = This {
        plan: &plan,
        opts: &opts,
        stop: &stop,
        place: &place,
        closed: &closed,
    };
    let result = if me == 0 {
        lead(this, control, timely, shape)
    } else {
        follow(this, control, timely)
    };
    closed.store(true, Ordering::SeqCst);
    if let Err(e) = &result {
        tracing::debug!("process {me} of job {} stops: {e}", job.name);
    }
    result
}

/// What both sides of a cluster's start take: the job, its options and
/// stop flag, the process's place, and the flag that ends its control
/// threads.
#[derive(Clone, Copy)]
struct This<'a> {
    plan: &'a Arc<Plan>,
    opts: &'a RunOptions,
    stop: &'a Arc<AtomicBool>,
    place: &'a Place,
    closed: &'a Arc<AtomicBool>,
}

/// Process 0: its writer appends the epochs and commits last.
fn lead(
    this: This<'_>,
    mut control: Vec<Option<std::net::TcpStream>>,
    timely: Vec<Option<std::net::TcpStream>>,
    shape: (u32, u32),
) -> Result<RunSummary, RunError> {
    let This {
        plan,
        opts,
        stop,
        place,
        closed,
    } = this;
    let job = &plan.job;
    // Every process's messages arrive on one channel, tagged with its index;
    // process 0's own writer speaks through channels.
    let (merged_tx, merged) = crossbeam_channel::unbounded::<(usize, Event<ToLeader>)>();
    let (up, member_rx, down, local_rx) = control::local_pair();
    let mut links: Vec<Link<ToMember>> = vec![down];
    forward(0, local_rx, merged_tx.clone());
    for (i, stream) in control.iter_mut().enumerate().skip(1) {
        let stream = stream.take().expect("a control connection per process");
        let peer = format!("process {i} at {}", place.addresses[i]);
        let (link, rx) = control::over_tcp::<ToMember, ToLeader>(stream, peer, closed.clone());
        links.push(link);
        forward(i, rx, merged_tx.clone());
    }
    let abort = |links: &[Link<ToMember>], e: &RunError| {
        for l in links {
            l.send(&ToMember::Abort {
                reason: format!("process 0 could not start the job: {e}"),
            });
        }
    };
    let started = (|| -> Result<_, RunError> {
        kafka_admin::check_broker(&job.brokers)?;
        let registry = registry_for(plan)?;
        let mut fenced = Committer::fence_writer(job)?;
        crate::fault::pause("fenced");
        let start = LogRecord::Start {
            processes: shape.0,
            workers: shape.1,
        };
        let offset = fenced.log.append(&start, Default::default())?;
        fenced.set_start(offset);
        Committer::check_not_fenced(job, &fenced)?;
        let mut recovered = recovery::recover(
            plan,
            fenced.attempt,
            shape,
            committed::Begun {
                log: None,
                progress: Some(fenced.progress_consumer()),
                fence: true,
            },
        )?;
        say_resuming(job, &recovered);
        let lookups = super::lookups::lookup(plan, registry.as_ref(), None, shape.0)?;
        let (launch, positions, dead_letter_topic) =
            wire(plan, opts, &mut recovered, registry, 0, lookups)?;
        let mut start_plan = start_plan(&recovered);
        // A first start resolves where its sources begin (`latest`: the
        // end of each partition now) once, here, and logs it: the other
        // processes begin there too, not at an end each finds later.
        if start_plan.start_offsets.is_none() {
            start_plan.start_offsets =
                Some(positions.iter().map(|((s, p), o)| (*s, *p, *o)).collect());
        }
        let mut committer = Committer::open(job, fenced, &recovered, positions, dead_letter_topic)?;
        if recovered.start_offsets.is_none() {
            committer.log_begin(&job.name)?;
        }
        Ok((committer, recovered, start_plan, launch))
    })();
    let (committer, recovered, mut start_plan, mut launch) = match started {
        Ok(s) => s,
        Err(e) => {
            abort(&links, &e);
            return Err(e);
        }
    };
    say_unshared_sinks(plan, &launch.sink_partitions, n_processes(place));
    start_plan.sink_schema_ids = launch
        .sink_schema_ids
        .iter()
        .map(|(k, v)| (*k, *v))
        .collect();
    for l in &links[1..] {
        l.send(&ToMember::Start(Box::new(start_plan.clone())));
    }
    let (peers_tx, peers_rx) = crossbeam_channel::unbounded();
    let peers = Peers::new(peers_rx, links[1..].to_vec());
    let pulse = Pulse::new(opts.workers);
    liveness::report(up.clone(), pulse.clone(), closed.clone());
    let member = Member::new(up, member_rx, stop.clone());
    let leader = Leader::new(
        links,
        merged,
        peers_tx,
        recovered.replay.iter().map(|(e, _)| *e),
        Stall::new(n_processes(place), place.stall_timeout),
    );
    let leader = std::thread::Builder::new()
        .name("rill-leader".into())
        .spawn(move || leader.run())
        .expect("spawn leader thread");
    if let Some(o) = &opts.observer {
        o.started(recovered.attempt, recovered.committed);
    }
    launch.backend = Backend::Lead(Box::new(committer), member, peers);
    launch.cluster = Some((timely, 0, pulse));
    let ours = super::workers::execute(plan.clone(), opts.clone(), stop.clone(), launch);
    if let Err(e) = &ours {
        // The leader learns that process 0's writer stopped, and tells
        // the others.
        let _ = merged_tx.send((0, Event::Lost(format!("its writer stopped: {e}"))));
    }
    drop(merged_tx);
    let shares = leader
        .join()
        .map_err(|_| RunError::Workers("the leader thread panicked".into()))?;
    match (ours, shares) {
        (Err(e), _) if !matches!(e, RunError::ClusterStopped { .. }) => Err(e),
        // The leader's reason (a lost process, say) explains the writer's.
        (_, Err(e)) | (Err(e), _) => Err(e),
        (Ok(mut summary), Ok(shares)) => {
            // Process 0 counted every epoch; the others' files and rows
            // are theirs to tell.
            summary.files.clear();
            summary.postgres_rows = 0;
            summary.fallback_rows = 0;
            summary.postgres_time = Duration::ZERO;
            for s in shares {
                summary.files.extend(s.files);
                summary.postgres_rows += s.postgres_rows;
                summary.fallback_rows += s.fallback_rows;
                summary.postgres_time += Duration::from_millis(s.postgres_ms);
            }
            Ok(summary)
        }
    }
}

/// Processes 1 and up: each commits its share through a writer of its
/// own once process 0 has decided.
fn follow(
    this: This<'_>,
    mut control: Vec<Option<std::net::TcpStream>>,
    timely: Vec<Option<std::net::TcpStream>>,
) -> Result<RunSummary, RunError> {
    let This {
        plan,
        opts,
        stop,
        place,
        closed,
    } = this;
    let me = place.process;
    let stream = control[0]
        .take()
        .expect("a control connection to process 0");
    let peer = format!("process 0 at {}", place.addresses[0]);
    let (up, rx) = control::over_tcp::<ToLeader, ToMember>(stream, peer, closed.clone());
    let registry = registry_for(plan)?;
    let start_plan = loop {
        match rx.recv() {
            Ok(Event::Msg(ToMember::Start(p))) => break *p,
            Ok(Event::Msg(ToMember::Abort { reason })) => {
                return Err(RunError::ClusterStopped { reason })
            }
            Ok(Event::Msg(_)) => {}
            Ok(Event::Lost(reason)) => return Err(RunError::ClusterStopped { reason }),
            Err(_) => {
                return Err(RunError::ClusterStopped {
                    reason: "process 0 went away while the cluster started".into(),
                })
            }
        }
    };
    crate::fault::pause("start_plan_received");
    let mut recovered = recovered_from(&start_plan);
    let schema_ids = start_plan.sink_schema_ids.iter().copied().collect();
    let job = &plan.job;
    let skip = start_plan.skip.iter().cloned().collect();
    let dead_letter_topic = super::lookups::dead_letter_topic(plan);
    let (committer, lookups) = std::thread::scope(|s| {
        let lookups =
            s.spawn(|| super::lookups::lookup(plan, registry.as_ref(), Some(schema_ids), 0));
        let committer =
            Committer::open_member(job, me as u32, start_plan.attempt, skip, dead_letter_topic);
        (committer, lookups.join().expect("lookup thread"))
    });
    let (mut committer, lookups) = (committer?, lookups?);
    let (mut launch, _, _) = wire(plan, opts, &mut recovered, registry, me as u32, lookups)?;
    if let Some(offset) = start_plan.committed_offset {
        if me as u32 >= start_plan.writers_before {
            committer.join_at(offset, &job.name)?;
        }
    }
    if let Some(o) = &opts.observer {
        o.started(start_plan.attempt, start_plan.committed);
    }
    let pulse = Pulse::new(opts.workers);
    liveness::report(up.clone(), pulse.clone(), closed.clone());
    let member = Member::new(up, rx, stop.clone());
    launch.backend = Backend::Follow(Box::new(committer), member);
    launch.cluster = Some((timely, me, pulse));
    super::workers::execute(plan.clone(), opts.clone(), stop.clone(), launch)
}

fn n_processes(place: &Place) -> usize {
    place.addresses.len()
}

/// A partition has one writer: an output topic with fewer partitions than
/// the cluster has processes leaves some processes' writers without a
/// share of it, and its records cross to the processes that own them.
fn say_unshared_sinks(plan: &Plan, partitions: &std::collections::HashMap<usize, i32>, n: usize) {
    for (i, node, sink) in plan.sinks() {
        let crate::plan::SinkPlan::Kafka { config, .. } = sink else {
            continue;
        };
        let p = partitions.get(&i).copied().unwrap_or(1);
        if (p as usize) < n {
            let senders = match p {
                1 => "process 0 sends all of it".to_string(),
                p => format!("processes 0 to {} send all of it", p - 1),
            };
            tracing::warn!(
                "sink {}: topic {} has {p} partition{} for {n} processes; a partition has one writer, so {senders}: give the topic at least {n} partitions for every process to send its share",
                node.name,
                config.topic,
                if p == 1 { "" } else { "s" },
            );
        }
    }
}

/// When a peer dies, timely's network threads panic, and its workers
/// after them; the control connection already says which process was
/// lost, so those panics print nothing.
fn quiet_lost_peer_panics() {
    let default = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let payload = info.payload();
        let msg = payload
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| payload.downcast_ref::<&str>().copied())
            .unwrap_or("");
        if msg.starts_with("timely communication error") || msg.contains("MergeQueue poisoned") {
            return;
        }
        default(info)
    }));
}

/// Passes a link's events on to the leader's channel, tagged.
fn forward<M: Send + 'static>(
    from: usize,
    rx: Receiver<Event<M>>,
    to: crossbeam_channel::Sender<(usize, Event<M>)>,
) {
    std::thread::spawn(move || {
        for e in rx {
            if to.send((from, e)).is_err() {
                return;
            }
        }
    });
}

fn start_plan(r: &Recovered) -> StartPlan {
    StartPlan {
        attempt: r.attempt,
        committed: r.committed,
        next_epoch: r.next_epoch,
        start_offsets: r
            .start_offsets
            .as_ref()
            .map(|m| m.iter().map(|((s, p), o)| (*s, *p, *o)).collect()),
        replay: r
            .replay
            .iter()
            .map(|(e, rs)| {
                let rs = rs
                    .iter()
                    .map(|r| (r.source, r.partition, r.start, r.end, r.waiting))
                    .collect();
                (*e, rs)
            })
            .collect(),
        sink_schema_ids: Vec::new(),
        skip: r.skip.iter().map(|(e, w)| (*e, w.clone())).collect(),
        committed_offset: r.committed_offset,
        writers_before: r.writers_before,
        incarnation: r.incarnation.clone(),
    }
}

fn recovered_from(p: &StartPlan) -> Recovered {
    Recovered {
        attempt: p.attempt,
        committed: p.committed,
        next_epoch: p.next_epoch,
        start_offsets: p
            .start_offsets
            .as_ref()
            .map(|v| v.iter().map(|(s, q, o)| ((*s, *q), *o)).collect()),
        replay: p
            .replay
            .iter()
            .map(|(e, rs)| {
                let rs = rs
                    .iter()
                    .map(|&(source, partition, start, end, waiting)| PartitionRange {
                        source,
                        partition,
                        start,
                        end,
                        waiting,
                    })
                    .collect();
                (*e, rs)
            })
            .collect(),
        log_offsets: Default::default(),
        skip: p.skip.iter().cloned().collect(),
        committed_offset: p.committed_offset,
        writers_before: p.writers_before,
        // Process 0 numbers the progress lines; the others print none.
        committed_epochs: 0,
        // State enters at worker 0, on process 0.
        state: Default::default(),
        from_snapshot: Vec::new(),
        incarnation: p.incarnation.clone(),
    }
}
