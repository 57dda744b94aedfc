//! Sources: each polls its reader without blocking and stamps what it
//! reads with the epoch of the clock (or, replaying, the logged epoch).

use super::state::Seen;
use super::{Epoch, WorkerContext};
use crate::connectors::{Poll, SourceReader};
use crate::record::RawRecord;
use std::cell::RefCell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::Capability;
use timely::dataflow::{Scope, Stream};

/// Records a source hands on per poll at most.
const POLL_BATCH: usize = 2048;
const POLLS_PER_ACTIVATION: usize = 2;
/// How soon a reader that cannot say when records arrive is polled again
/// after it had none.
const IDLE_POLL: Duration = Duration::from_millis(2);
/// How soon one that can is polled again anyway (sooner when the clock's
/// epoch ends first).
const IDLE_FALLBACK: Duration = Duration::from_millis(10);

/// The partitions of a source that had records waiting when each of its
/// epochs ended, passed from the operator that reads to the one that
/// sends them on: a partition with records waiting is never idle, even
/// when a rate limit, backpressure or the order the broker answers in
/// kept the reader from it for a while. Counted into the epoch, they are
/// logged with it, so a replay marks the same partitions.
#[derive(Default)]
struct Waiting {
    pending: Vec<(Epoch, Vec<Seen>)>,
    /// The reader's epoch; None once it has stopped.
    at: Option<Epoch>,
    activator: Option<timely::scheduling::Activator>,
}

impl Waiting {
    fn reader_at(&mut self, at: Option<Epoch>) {
        self.at = at;
        if let Some(a) = &self.activator {
            a.activate();
        }
    }
}

/// Moves the reader's epoch to `to`, marking the partitions that had
/// records waiting in the epochs it leaves.
fn move_to(
    c: &mut Capability<Epoch>,
    to: Epoch,
    reader: &mut dyn SourceReader,
    waiting: &RefCell<Waiting>,
    ctx: &WorkerContext,
    source_pos: usize,
) {
    let from = *c.time();
    if to <= from {
        return;
    }
    let mut w = waiting.borrow_mut();
    for (epoch, partitions) in reader.waiting(from, to) {
        // Epochs this start resumes after are never processed again.
        if epoch <= ctx.resume_after {
            continue;
        }
        let source = source_pos as u32;
        ctx.count(epoch, |x| {
            x.waiting.extend(partitions.iter().map(|p| (source, *p)));
        });
        w.pending.push((
            epoch,
            partitions
                .iter()
                .map(|p| (source, *p, super::state::WAITING, epoch))
                .collect(),
        ));
    }
    c.downgrade(&to);
    w.reader_at(Some(to));
}

/// Polls a source without blocking and stamps what it reads with the
/// current epoch; beside the records, the partitions it left records
/// waiting in at the end of each epoch.
pub(super) fn read_source<'s>(
    scope: Scope<'s, Epoch>,
    name: &str,
    mut reader: Box<dyn SourceReader>,
    source_pos: usize,
    ctx: Rc<WorkerContext>,
) -> (
    Stream<'s, Epoch, Vec<RawRecord>>,
    Stream<'s, Epoch, Vec<Seen>>,
) {
    let waiting = Rc::new(RefCell::new(Waiting {
        at: Some(0),
        ..Waiting::default()
    }));
    let marks = waiting.clone();
    let waiting_stream = source::<_, CapacityContainerBuilder<Vec<Seen>>, _, _>(
        scope,
        &format!("{name} waiting"),
        move |cap, info| {
            marks.borrow_mut().activator = Some(scope.activator_for(info.address));
            let mut cap = Some(cap);
            move |output| {
                let Some(c) = cap.as_mut() else { return };
                let mut w = marks.borrow_mut();
                for (epoch, mut seen) in w.pending.drain(..) {
                    output.session(&c.delayed(&epoch)).give_container(&mut seen);
                }
                match w.at {
                    Some(at) if at > *c.time() => c.downgrade(&at),
                    Some(_) => {}
                    None => cap = None,
                }
            }
        },
    );
    let records = source::<_, CapacityContainerBuilder<Vec<RawRecord>>, _, _>(
        scope,
        name,
        move |cap, info| {
            let activator = scope.activator_for(info.address.clone());
            // A reader that says when records arrive wakes the worker then;
            // one that cannot is polled every IDLE_POLL. The wait after an
            // empty poll is a fallback for what arrives otherwise (records
            // an upstream job's commit releases), not the path of data.
            let wakes = {
                let sync = scope.worker().sync_activator_for(info.address.to_vec());
                reader.wake_on_data(Box::new(move || {
                    let _ = sync.activate();
                }))
            };
            let idle_wait = if wakes { IDLE_FALLBACK } else { IDLE_POLL };
            let mut cap = Some(cap);
            let mut buf: Vec<RawRecord> = Vec::with_capacity(POLL_BATCH);
            let mut read_so_far: i64 = 0;
            // Since when reading waits for the writer (backpressure).
            let mut blocked_since: Option<std::time::Instant> = None;
            move |output| {
                let Some(c) = cap.as_mut() else { return };
                if ctx.stop.load(Ordering::Relaxed) {
                    cap = None;
                    waiting.borrow_mut().reader_at(None);
                    return;
                }
                // Epochs move on even while backpressure below stops reading:
                // the held output is only sent when its epoch completes.
                follow_clock(&ctx, reader.as_mut(), c, &waiting, source_pos);
                let mut budget = POLL_BATCH;
                if let Some(rate) = ctx.max_rate {
                    let allowed = (rate / ctx.peers as f64 * ctx.start.elapsed().as_secs_f64())
                        as i64
                        - read_so_far;
                    if allowed <= 0 {
                        activator.activate_after(Duration::from_millis(5));
                        return;
                    }
                    budget = budget.min(allowed as usize);
                }
                // A replayed epoch is read whole: it cannot complete otherwise,
                // and it was no bigger when it was first read.
                if !reader.replaying()
                    && ctx.in_flight.load(Ordering::Relaxed) > ctx.fill.max_held()
                {
                    blocked_since.get_or_insert_with(std::time::Instant::now);
                    activator.activate_after(Duration::from_millis(2));
                    return;
                }
                if let Some(since) = blocked_since.take() {
                    ctx.held
                        .blocked_ns
                        .fetch_add(since.elapsed().as_nanos() as u64, Ordering::Relaxed);
                }
                // Two polls per activation: a busy source still yields, and
                // what it reads goes downstream before it reads more. With
                // eight, 16,384 records per worker were in flight between
                // operators at once; an aggregate building 1M keys peaked
                // 20 MiB higher, at the same speed.
                for _ in 0..POLLS_PER_ACTIVATION {
                    // A replay may have ended in the last poll: what is read live
                    // belongs to the clock's epoch, never to a replayed one, whose
                    // records are exactly those the epoch log gives.
                    follow_clock(&ctx, reader.as_mut(), c, &waiting, source_pos);
                    let polled = match reader.poll_scripted(&mut buf, budget) {
                        Some((epoch, Poll::Data)) => {
                            move_to(c, epoch, reader.as_mut(), &waiting, &ctx, source_pos);
                            Poll::Data
                        }
                        Some((_, p)) => p,
                        None => reader.poll(&mut buf, budget),
                    };
                    match polled {
                        Poll::Data => {
                            let n = buf.len() as u64;
                            read_so_far += n as i64;
                            ctx.count(*c.time(), |x| {
                                if x.inputs.len() <= source_pos {
                                    x.inputs.resize(source_pos + 1, 0);
                                }
                                x.inputs[source_pos] += n;
                                if x.bytes_in.len() <= source_pos {
                                    x.bytes_in.resize(source_pos + 1, 0);
                                }
                                let mut bytes = 0;
                                // A poll's records mostly come from one
                                // partition: counted per run of it.
                                let mut run: Option<((u32, i32), u64, u64)> = None;
                                for r in &buf {
                                    let size = r.key.as_ref().map_or(0, |k| k.len())
                                        + r.value.as_ref().map_or(0, |v| v.len());
                                    bytes += size;
                                    let at = (r.origin.source, r.origin.partition);
                                    match &mut run {
                                        Some((k, n, b)) if *k == at => {
                                            *n += 1;
                                            *b += size as u64;
                                        }
                                        _ => {
                                            if let Some((k, n, b)) = run.take() {
                                                let e = x.partitions.entry(k).or_default();
                                                e.0 += n;
                                                e.1 += b;
                                            }
                                            run = Some((at, 1, size as u64));
                                        }
                                    }
                                    let range = x
                                        .ranges
                                        .entry((r.origin.source, r.origin.partition))
                                        .or_insert((r.origin.offset, r.origin.offset + 1));
                                    range.0 = range.0.min(r.origin.offset);
                                    range.1 = range.1.max(r.origin.offset + 1);
                                }
                                x.bytes_in[source_pos] += bytes as u64;
                                let room = super::output::TIMESTAMPS_KEPT
                                    .saturating_sub(x.timestamps.len())
                                    .min(super::output::TIMESTAMP_SAMPLE);
                                let step = (buf.len() / super::output::TIMESTAMP_SAMPLE).max(1);
                                x.timestamps.extend(
                                    buf.iter().step_by(step).take(room).map(|r| r.timestamp_ms),
                                );
                                if let Some((k, n, b)) = run {
                                    let e = x.partitions.entry(k).or_default();
                                    e.0 += n;
                                    e.1 += b;
                                }
                            });
                            output.session(&*c).give_container(&mut buf);
                            buf.clear();
                            crate::fault::point("source_read");
                            if ctx.max_rate.is_some() {
                                break;
                            }
                        }
                        Poll::Idle => {
                            activator.activate_after(idle_wait.min(ctx.until_next_epoch()));
                            return;
                        }
                        Poll::Done => {
                            cap = None;
                            waiting.borrow_mut().reader_at(None);
                            return;
                        }
                    }
                }
                activator.activate();
            }
        },
    );
    (records, waiting_stream)
}

/// Moves a live source's epoch to the clock's; scripted and replaying
/// sources say their epochs themselves.
fn follow_clock(
    ctx: &WorkerContext,
    reader: &mut dyn SourceReader,
    cap: &mut Capability<Epoch>,
    waiting: &RefCell<Waiting>,
    source_pos: usize,
) {
    if !ctx.scripted && !reader.replaying() {
        ctx.end_epoch_if_full(*cap.time());
        let now = ctx.epoch_now();
        move_to(cap, now, reader, waiting, ctx, source_pos);
    }
}
