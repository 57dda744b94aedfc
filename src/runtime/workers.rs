//! The timely workers of one process, beside its writer thread: each
//! worker builds the dataflow, steps it, and reports to the writer the
//! epochs it has finished and what it counted in them.

use super::local::{Launch, RunOptions, RunSummary};
use super::writer::write_loop;
use super::RunError;
use crate::dataflow::output::WriterMsg;
use crate::dataflow::{self, Epoch, WorkerContext};
use crate::plan::Plan;
use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::dataflow::ProbeHandle;

/// Runs the dataflow on `opts.workers` timely worker threads beside the
/// writer thread, until the sources are done or `stop` is set.
pub(super) fn execute(
    plan: Arc<Plan>,
    opts: RunOptions,
    stop: Arc<AtomicBool>,
    launch: Launch,
) -> Result<RunSummary, RunError> {
    let workers = opts.workers.max(1);
    crate::last_words::doing(crate::last_words::Doing::Running);
    let (tx, rx) = crossbeam_channel::unbounded::<WriterMsg>();
    let in_flight = Arc::new(AtomicI64::new(0));
    let start = Instant::now();
    let interval = Duration::from_millis(plan.job.checkpoint_interval_ms.max(1));

    let writer_plan = plan.clone();
    let writer_in_flight = in_flight.clone();
    let held = Arc::new(crate::dataflow::output::Held::default());
    let writer_held = held.clone();
    let Launch {
        readers,
        registry,
        sink_schema_ids,
        sink_partitions,
        sink_limits,
        source_topics,
        source_partitions,
        targets,
        backend,
        scripted,
        first_epoch,
        resume_after,
        changelog_topics,
        restored,
        cluster,
    } = launch;
    // A process of a cluster keeps to the clock: epochs ended early in one
    // process would leave the others' clocks behind and hold its output.
    let fill = Arc::new(crate::dataflow::EpochFill::new(if cluster.is_some() {
        0
    } else {
        plan.job.max_epoch_records
    }));
    let writer_fill = fill.clone();
    if !matches!(backend, super::local::Backend::Memory { .. }) {
        let topics = source_topics
            .iter()
            .cloned()
            .zip(source_partitions.iter().copied())
            .collect();
        super::topic_watch::watch(&plan.job.brokers, topics, tx.clone(), stop.clone());
    }
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
                (writer_in_flight, writer_held, writer_fill),
                start,
                resume_after,
            );
            // A writer that stops (fenced, or failing to commit) stops the
            // sources too, so the workers drain and the process exits.
            writer_stop.store(true, Ordering::SeqCst);
            result
        })
        .expect("spawn writer thread");

    let pulse = cluster.as_ref().map(|(_, _, p)| p.clone());
    let worker_plan = plan.clone();
    let trace = opts.trace_records;
    let panics = tx.clone();
    let run_worker = move |worker: &mut timely::worker::Worker| {
        let ctx = Rc::new(WorkerContext {
            index: worker.index(),
            peers: worker.peers(),
            processes: (worker.peers() / workers).max(1),
            writer: tx.clone(),
            counts: Rc::new(RefCell::new(BTreeMap::new())),
            trace,
            start,
            checkpoint_interval: interval,
            stop: stop.clone(),
            in_flight: in_flight.clone(),
            fill: fill.clone(),
            registry: registry.clone(),
            sink_schema_ids: sink_schema_ids.clone(),
            sink_partitions: sink_partitions.clone(),
            sink_limits: sink_limits.clone(),
            source_topics: source_topics.clone(),
            source_partitions: source_partitions.clone(),
            bounded,
            scripted,
            first_epoch,
            resume_after,
            max_rate,
            changelog_topics: changelog_topics.clone(),
            restored: restored.clone(),
            held: held.clone(),
        });
        let probe = ProbeHandle::<Epoch>::new();
        worker.dataflow::<Epoch, _, _>(|scope| {
            dataflow::build(scope, &worker_plan, &readers, &ctx, &probe)
        });
        let mut reported: Epoch = 0;
        let local = ctx.index % workers;
        if let Some(p) = &pulse {
            p.stepping(local, reported);
        }
        loop {
            worker.step_or_park(Some(Duration::from_millis(20)));
            let frontier = probe.with_frontier(|f| f.first().copied());
            let upto = frontier.unwrap_or(Epoch::MAX);
            if upto > reported {
                if let Some(p) = &pulse {
                    p.advanced(local, upto);
                }
                let mut counts = ctx.counts.borrow_mut();
                let later = counts.split_off(&upto);
                let done = std::mem::replace(&mut *counts, later);
                // The writer counts this process's workers: timely numbers
                // a cluster's workers process by process.
                let _ = ctx.writer.send(WriterMsg::Progress {
                    worker: local,
                    upto,
                    counts: done,
                });
                reported = upto;
            }
            if frontier.is_none() {
                break;
            }
        }
        tracing::debug!(
            "run: worker {} done after {} ms",
            ctx.index,
            start.elapsed().as_millis()
        );
        let _ = ctx.writer.send(WriterMsg::Finished {
            worker: ctx.index % workers,
        });
    };
    // A worker that panics tells the writer, which stops the process:
    // the other workers would wait for its share of every epoch forever.
    let body = move |worker: &mut timely::worker::Worker| {
        let index = worker.index();
        let run = std::panic::AssertUnwindSafe(|| run_worker(worker));
        if let Err(panic) = std::panic::catch_unwind(run) {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic without a message".into());
            let _ = panics.send(WriterMsg::Panicked {
                worker: index,
                message,
            });
            std::panic::resume_unwind(panic);
        }
    };
    let in_cluster = cluster.is_some();
    let guards = match cluster {
        None => timely::execute(timely::Config::process(workers), body),
        Some((sockets, process, _)) => super::cluster::execute(sockets, process, workers, body),
    }
    .map_err(RunError::Workers)?;
    tracing::debug!(
        "run: workers started after {} ms",
        start.elapsed().as_millis()
    );
    let written = writer
        .join()
        .map_err(|_| RunError::Workers("the writer thread panicked".into()))?;
    tracing::debug!("run: writer done after {} ms", start.elapsed().as_millis());
    let abandoned = matches!(
        written,
        Err(RunError::WorkerPanicked { .. } | RunError::SourceTopicGone { .. })
    );
    if (in_cluster && written.is_err()) || abandoned {
        // Timely is fail-stop: with a peer gone, or a worker of this
        // process, its workers may wait for it forever. The process exits
        // without them.
        std::mem::forget(guards);
        return written;
    }
    let results = guards.join();
    tracing::debug!("run: workers done after {} ms", start.elapsed().as_millis());
    if let Some(Err(e)) = results.into_iter().find(|r| r.is_err()) {
        return Err(RunError::Workers(e));
    }
    written
}
