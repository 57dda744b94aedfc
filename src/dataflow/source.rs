//! Sources: each polls its reader without blocking and stamps what it
//! reads with the epoch of the clock (or, replaying, the logged epoch).

use super::{Epoch, WorkerContext};
use crate::connectors::{Poll, SourceReader};
use crate::record::RawRecord;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::{Scope, Stream};

/// Records a source hands on per poll at most.
const POLL_BATCH: usize = 2048;
const POLLS_PER_ACTIVATION: usize = 2;

/// Polls a source without blocking and stamps what it reads with the
/// current epoch.
pub(super) fn read_source<'s>(
    scope: Scope<'s, Epoch>,
    name: &str,
    mut reader: Box<dyn SourceReader>,
    source_pos: usize,
    ctx: Rc<WorkerContext>,
) -> Stream<'s, Epoch, Vec<RawRecord>> {
    source::<_, CapacityContainerBuilder<Vec<RawRecord>>, _, _>(scope, name, move |cap, info| {
        let activator = scope.activator_for(info.address);
        let mut cap = Some(cap);
        let mut buf: Vec<RawRecord> = Vec::with_capacity(POLL_BATCH);
        let mut read_so_far: i64 = 0;
        // Since when reading waits for the writer (backpressure).
        let mut blocked_since: Option<std::time::Instant> = None;
        move |output| {
            let Some(c) = cap.as_mut() else { return };
            if ctx.stop.load(Ordering::Relaxed) {
                cap = None;
                return;
            }
            // Epochs move on even while backpressure below stops reading:
            // the held output is only sent when its epoch completes.
            follow_clock(&ctx, reader.as_ref(), c);
            let mut budget = POLL_BATCH;
            if let Some(rate) = ctx.max_rate {
                let allowed = (rate / ctx.peers as f64 * ctx.start.elapsed().as_secs_f64()) as i64
                    - read_so_far;
                if allowed <= 0 {
                    activator.activate_after(Duration::from_millis(5));
                    return;
                }
                budget = budget.min(allowed as usize);
            }
            // A replayed epoch is read whole: it cannot complete otherwise,
            // and it was no bigger when it was first read.
            if !reader.replaying() && ctx.in_flight.load(Ordering::Relaxed) > ctx.fill.max_held() {
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
                follow_clock(&ctx, reader.as_ref(), c);
                let polled = match reader.poll_scripted(&mut buf, budget) {
                    Some((epoch, Poll::Data)) => {
                        if epoch > *c.time() {
                            c.downgrade(&epoch);
                        }
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
                        activator.activate_after(Duration::from_millis(2));
                        return;
                    }
                    Poll::Done => {
                        cap = None;
                        return;
                    }
                }
            }
            activator.activate();
        }
    })
}

/// Moves a live source's epoch to the clock's; scripted and replaying
/// sources say their epochs themselves.
fn follow_clock(
    ctx: &WorkerContext,
    reader: &dyn SourceReader,
    cap: &mut timely::dataflow::operators::Capability<Epoch>,
) {
    if !ctx.scripted && !reader.replaying() {
        ctx.end_epoch_if_full(*cap.time());
        let now = ctx.epoch_now();
        if now > *cap.time() {
            cap.downgrade(&now);
        }
    }
}
