//! Windowed aggregates: a keyed operator holds the open windows of each
//! group and fires them when the watermark passes their end. The
//! watermark is the minimum over source partitions of (max event time −
//! out-of-orderness); each worker measures the partitions it reads and
//! broadcasts that per epoch, so every worker computes the same watermark
//! at the same epoch.

use super::aggregate::{group_key, hash_of, Held};
use super::state::{
    change_bytes, window_key_bytes, AggState, Seen, StateEntry, WatermarkSnapshot, Window, WAITING,
    WATERMARK_KEY,
};
use super::{epoch_of, Epoch, Records, WorkerContext};
use crate::plan::aggregate::{AggregatePlan, TimeField, WindowPlan, WindowShape};
use crate::record::{Record, RowSchema, Value};
use crate::spec::Emit;
use differential_dataflow::difference::Semigroup;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::vec::Broadcast;
use timely::dataflow::operators::Concat;

/// An event on its way to the window operator.
type Item = (Vec<Value>, i64, AggState, Record);

/// What reaches the window operator of a group's worker.
#[derive(Debug, Clone, Serialize, Deserialize)]
enum WindowMsg {
    Event(Item),
    /// A window restored from the changelog: group, start, window.
    Restore(Vec<Value>, i64, Window),
}

impl WindowMsg {
    fn key(&self) -> &Vec<Value> {
        match self {
            WindowMsg::Event(item) => &item.0,
            WindowMsg::Restore(key, _, _) => key,
        }
    }
}

const WATERMARK: u32 = u32::MAX;

struct Partition {
    max_time: Option<i64>,
    last_active: Epoch,
}

/// The output record of one window of one group, unless `having` drops it.
pub(super) fn window_record(
    key: &[Value],
    start: i64,
    w: &Window,
    having: Option<&crate::expr::Expr>,
) -> Option<Record> {
    let mut row = key.to_vec();
    row.push(Value::Int(start));
    row.push(Value::Int(w.end));
    w.state.finish(&mut row);
    if !having.is_none_or(|h| h.test(&row).unwrap_or(false)) {
        return None;
    }
    let mut k = group_key(key).to_vec();
    k.extend_from_slice(format!("@{start}").as_bytes());
    Some(Record {
        key: Some(k.into()),
        row,
        tombstone: false,
        timestamp_ms: w.end - 1,
        origin: Default::default(),
    })
}

/// The watermark and what it was computed from, as the changelog keeps it.
fn snapshot(partitions: &HashMap<(u32, i32), Partition>, watermark: i64) -> WatermarkSnapshot {
    let mut parts: Vec<Seen> = partitions
        .iter()
        .filter_map(|((s, p), x)| Some((*s, *p, x.max_time?, x.last_active)))
        .collect();
    parts.sort();
    WatermarkSnapshot {
        watermark,
        partitions: parts,
    }
}

/// Tombstones for windows deleted in an earlier epoch, unless this epoch
/// logs them anew: the key was already gone before this epoch, so the
/// tombstone's missing before-image is right.
fn drop_keys(log: &mut Vec<(Vec<u8>, Option<Vec<u8>>)>, to_drop: &mut Vec<Vec<u8>>) {
    for k in to_drop.drain(..) {
        if !log.iter().any(|(logged, _)| *logged == k) {
            log.push((k, None));
        }
    }
}

pub(crate) fn windows_of(shape: WindowShape, t: i64, out: &mut Vec<(i64, i64)>) {
    out.clear();
    match shape {
        WindowShape::Tumbling { size } => {
            let start = t - t.rem_euclid(size);
            out.push((start, start + size));
        }
        WindowShape::Hopping { size, hop } => {
            let mut start = t - t.rem_euclid(hop);
            while start + size > t {
                out.push((start, start + size));
                start -= hop;
            }
            out.reverse();
        }
        WindowShape::Session { gap } => out.push((t, t + gap)),
    }
}

#[allow(clippy::too_many_arguments)]
pub(super) fn windowed<'s>(
    stream: Records<'s>,
    name: &str,
    plan: AggregatePlan,
    window: WindowPlan,
    input: RowSchema,
    ctx: Rc<WorkerContext>,
    waiting: timely::dataflow::Stream<'s, Epoch, Vec<Seen>>,
) -> Records<'s> {
    let node = name.to_string();
    let c = ctx.clone();
    let aggs = plan.aggs.clone();
    let group_by = plan.group_by.clone();
    let time = window.time;
    let in_schema = input.clone();
    // Fold each record into its own state and note event times per
    // partition, on the worker that reads the partition.
    let mut builder = timely::dataflow::operators::generic::builder_rc::OperatorBuilder::new(
        format!("{name} events"),
        stream.scope(),
    );
    let mut records_in = builder.new_input(stream, Pipeline);
    let (mut items_out, items) = builder.new_output::<Vec<WindowMsg>>();
    let (mut seen_out, seen) = builder.new_output::<Vec<Seen>>();
    let transform = name.to_string();
    builder.build(move |caps| {
        let mut dead = Vec::new();
        let mut restore = Some(caps);
        move |_| {
            let mut items_h = items_out.activate();
            let mut seen_h = seen_out.activate();
            // Restored windows and watermark go in at epoch 0 and reach
            // their workers like any event.
            if let Some(caps) = restore.take() {
                let mut windows = Vec::new();
                let mut marks = Vec::new();
                for entry in &c.take_restored(&transform) {
                    match entry {
                        StateEntry::Watermark(snap) => {
                            marks.extend(snap.partitions.iter().copied());
                            marks.push((WATERMARK, -1, snap.watermark, 0));
                        }
                        StateEntry::Window(key, start, w) => {
                            windows.push(WindowMsg::Restore(key.clone(), *start, w.clone()))
                        }
                        StateEntry::Group(..) | StateEntry::Packed(..) => {}
                    }
                }
                if !windows.is_empty() {
                    items_h.give(&caps[0], &mut windows);
                }
                if !marks.is_empty() {
                    seen_h.give(&caps[1], &mut marks);
                }
            }
            records_in.for_each(|cap, data| {
                let epoch = epoch_of(&cap);
                let mut batch: Vec<WindowMsg> = Vec::with_capacity(data.len());
                let mut maxima: BTreeMap<(u32, i32), i64> = BTreeMap::new();
                for r in data.drain(..) {
                    let t = match time {
                        TimeField::KafkaTimestamp => r.timestamp_ms,
                        TimeField::Field(i) => match r.row[i] {
                            Value::Int(t) => t,
                            _ => {
                                dead.push(c.dead_row(
                                    &node,
                                    &r,
                                    &in_schema,
                                    "the event time is null".into(),
                                ));
                                continue;
                            }
                        },
                    };
                    match AggState::of(&aggs, &r.row) {
                        Ok(state) => {
                            let m = maxima
                                .entry((r.origin.source, r.origin.partition))
                                .or_insert(t);
                            *m = (*m).max(t);
                            batch.push(WindowMsg::Event((
                                group_by.iter().map(|&i| r.row[i].clone()).collect(),
                                t,
                                state,
                                r,
                            )));
                        }
                        Err(e) => dead.push(c.dead_row(&node, &r, &in_schema, e.0)),
                    }
                }
                c.dead(epoch, std::mem::take(&mut dead));
                let mut seen_batch: Vec<Seen> = maxima
                    .into_iter()
                    .map(|((s, p), t)| (s, p, t, epoch))
                    .collect();
                if !batch.is_empty() {
                    items_h.give(&cap, &mut batch);
                }
                if !seen_batch.is_empty() {
                    seen_h.give(&cap, &mut seen_batch);
                }
            });
        }
    });

    let node = name.to_string();
    let idle_epochs = window.idle_timeout_ms.map(|ms| {
        ms.div_ceil(ctx.checkpoint_interval.as_millis().max(1) as u64)
            .max(1)
    });
    let all_partitions: Vec<(u32, i32)> = ctx
        .source_partitions
        .iter()
        .enumerate()
        .flat_map(|(s, n)| (0..*n).map(move |p| (s as u32, p)))
        .collect();
    let pact = Exchange::new(|m: &WindowMsg| hash_of(m.key()));
    let transform = name.to_string();
    items.binary_frontier::<_, CapacityContainerBuilder<Vec<Record>>, _, _, _, _>(
        seen.concat(waiting).broadcast(),
        pact,
        Pipeline,
        &format!("{name} windows"),
        move |cap, _| {
            let mut held = Held { cap: Some(cap) };
            let mut pending_items: BTreeMap<Epoch, Vec<WindowMsg>> = BTreeMap::new();
            let mut pending_seen: BTreeMap<Epoch, Vec<Seen>> = BTreeMap::new();
            let mut partitions: HashMap<(u32, i32), Partition> = HashMap::new();
            let mut watermark = i64::MIN;
            // Open windows per group, by start.
            let mut state: HashMap<Vec<Value>, BTreeMap<i64, Window>> = HashMap::new();
            let mut spans = Vec::new();
            let mut dead = Vec::new();
            // The latest epoch processed: the end of a bounded run fires
            // what is left there, after everything sent before.
            let mut last_epoch: Epoch = ctx.resume_after;
            // The watermark as last logged, the before-image of the next.
            let mut last_snap: Option<WatermarkSnapshot> = None;
            // Windows an epoch deleted: their record keeps the state before
            // it; a later epoch drops the key with a tombstone.
            let mut to_drop: Vec<Vec<u8>> = Vec::new();
            move |(items_in, f1), (seen_in, f2), out| {
                items_in.for_each(|cap, data| {
                    pending_items
                        .entry(epoch_of(&cap))
                        .or_default()
                        .append(data)
                });
                seen_in.for_each(|cap, data| {
                    pending_seen.entry(epoch_of(&cap)).or_default().append(data)
                });
                let frontier = [
                    f1.frontier().first().copied(),
                    f2.frontier().first().copied(),
                ]
                .into_iter()
                .flatten()
                .min();
                let done = |e: &Epoch| frontier.is_none_or(|f| *e < f);
                // Epochs are processed one by one, in order: those with
                // events or partition maxima, and those where a partition
                // turns idle, since the watermark moves there too. Both
                // follow from the input alone, so a replay fires every
                // window in the epoch it fired in before. Epochs up to the
                // one this start resumes after are never processed again.
                loop {
                    let next_data = pending_items
                        .keys()
                        .chain(pending_seen.keys())
                        .copied()
                        .filter(done)
                        .min();
                    let next_idle = frontier.zip(idle_epochs).and_then(|(f, n)| {
                        all_partitions
                            .iter()
                            .map(|p| partitions.get(p).map_or(0, |x| x.last_active) + n)
                            .filter(|t| *t > last_epoch && *t < f)
                            .min()
                    });
                    let Some(epoch) = next_data.into_iter().chain(next_idle).min() else {
                        break;
                    };
                    last_epoch = last_epoch.max(epoch);
                    let lateness = window.allowed_lateness_ms;
                    for (s, p, t, active) in pending_seen.remove(&epoch).unwrap_or_default() {
                        if s == WATERMARK {
                            watermark = watermark.max(t);
                            continue;
                        }
                        let part = partitions.entry((s, p)).or_insert(Partition {
                            max_time: None,
                            last_active: active,
                        });
                        part.last_active = part.last_active.max(active);
                        // Records waiting in the partition: active, with no
                        // event time of its own.
                        if t == WAITING {
                            continue;
                        }
                        part.max_time = Some(part.max_time.map_or(t, |m| m.max(t)));
                    }
                    let mut changed: Vec<(Vec<Value>, i64)> = Vec::new();
                    let mut freed: Vec<(Vec<Value>, i64)> = Vec::new();
                    // Each changed window's state before this epoch.
                    let mut before: HashMap<(Vec<Value>, i64), Option<Window>> = HashMap::new();
                    for msg in pending_items.remove(&epoch).unwrap_or_default() {
                        let (key, t, st, rec) = match msg {
                            WindowMsg::Event(item) => item,
                            WindowMsg::Restore(key, start, w) => {
                                state.entry(key).or_default().insert(start, w);
                                continue;
                            }
                        };
                        windows_of(window.shape, t, &mut spans);
                        // Late: every window it belongs to has been closed for
                        // good. A session event at or before the watermark is
                        // late too: it could touch a session already closed.
                        let late = match window.shape {
                            WindowShape::Session { .. } => t.saturating_add(lateness) <= watermark,
                            _ => spans
                                .iter()
                                .all(|(_, end)| end.saturating_add(lateness) <= watermark),
                        };
                        if late {
                            dead.push(ctx.dead_row(&node, &rec, &input, "late".into()));
                            continue;
                        }
                        let groups = state.entry(key.clone()).or_default();
                        match window.shape {
                            WindowShape::Session { .. } => {
                                let (mut start, mut end) = spans[0];
                                let mut merged = st;
                                let overlapping: Vec<i64> = groups
                                    .range(..=end)
                                    .filter(|(_, w)| w.end >= start)
                                    .map(|(s, _)| *s)
                                    .collect();
                                before
                                    .entry((key.clone(), start))
                                    .or_insert_with(|| groups.get(&start).cloned());
                                for s in overlapping {
                                    let w = groups.remove(&s).unwrap();
                                    before
                                        .entry((key.clone(), s))
                                        .or_insert_with(|| Some(w.clone()));
                                    // Merged away: its record must go too.
                                    changed.push((key.clone(), s));
                                    start = start.min(s);
                                    end = end.max(w.end);
                                    merged.plus_equals(&w.state);
                                }
                                groups.insert(
                                    start,
                                    Window {
                                        end,
                                        state: merged,
                                        fired: false,
                                    },
                                );
                                changed.push((key.clone(), start));
                            }
                            _ => {
                                for &(start, end) in &spans {
                                    if end.saturating_add(lateness) <= watermark {
                                        continue;
                                    }
                                    before
                                        .entry((key.clone(), start))
                                        .or_insert_with(|| groups.get(&start).cloned());
                                    let w = groups.entry(start).or_insert_with(|| Window {
                                        end,
                                        state: AggState {
                                            rows: 0,
                                            accs: Vec::new(),
                                        },
                                        fired: false,
                                    });
                                    w.state.plus_equals(&st);
                                    changed.push((key.clone(), start));
                                }
                            }
                        }
                    }
                    ctx.count(epoch, |c| c.late += dead.len() as u64);
                    ctx.dead(epoch, std::mem::take(&mut dead));

                    // The watermark after this epoch.
                    let mut lowest: Option<i64> = None;
                    let mut highest: Option<i64> = None;
                    let mut held_back = false;
                    for p in &all_partitions {
                        let part = partitions.get(p);
                        let idle = idle_epochs.is_some_and(|n| {
                            epoch.saturating_sub(part.map_or(0, |x| x.last_active)) >= n
                        });
                        let mark = part
                            .and_then(|x| x.max_time)
                            .map(|t| t - window.max_out_of_orderness_ms);
                        if let Some(m) = mark {
                            highest = Some(highest.map_or(m, |h| h.max(m)));
                        }
                        if idle {
                            continue;
                        }
                        match mark {
                            Some(m) => lowest = Some(lowest.map_or(m, |l| l.min(m))),
                            None => held_back = true,
                        }
                    }
                    let candidate = if held_back { None } else { lowest.or(highest) };
                    if let Some(w) = candidate {
                        watermark = watermark.max(w);
                    }
                    if epoch == 0 {
                        // Restored state: nothing fires that had not fired.
                        last_snap = Some(snapshot(&partitions, watermark));
                        continue;
                    }

                    let cap = held.at(epoch);
                    let mut session = out.session(&cap);
                    let mut emit = |key: &Vec<Value>, start: i64, w: &Window| {
                        if let Some(r) = window_record(key, start, w, plan.having.as_ref()) {
                            session.give(r);
                        }
                    };
                    changed.sort();
                    changed.dedup();
                    for (key, start) in &changed {
                        let Some(w) = state.get(key).and_then(|g| g.get(start)) else {
                            continue;
                        };
                        // Updates go out every epoch; a late update to a
                        // window already fired goes out too.
                        if plan.emit == Emit::Updates || w.fired {
                            emit(key, *start, w);
                        }
                    }
                    let mut empty = Vec::new();
                    for (key, groups) in state.iter_mut() {
                        groups.retain(|start, w| {
                            let fires = w.end <= watermark && !w.fired;
                            let open = w.end.saturating_add(lateness) > watermark;
                            if fires || !open {
                                before
                                    .entry((key.clone(), *start))
                                    .or_insert_with(|| Some(w.clone()));
                            }
                            if fires {
                                if plan.emit == Emit::Final {
                                    emit(key, *start, w);
                                }
                                w.fired = true;
                                changed.push((key.clone(), *start));
                            }
                            // Closed for good: free the state.
                            if !open {
                                freed.push((key.clone(), *start));
                            }
                            open
                        });
                        if groups.is_empty() {
                            empty.push(key.clone());
                        }
                    }
                    for k in empty {
                        state.remove(&k);
                    }
                    // What changed in this epoch, for the changelog.
                    changed.extend(freed);
                    changed.sort();
                    changed.dedup();
                    let mut log: Vec<(Vec<u8>, Option<Vec<u8>>)> = Vec::new();
                    let mut dropped = Vec::new();
                    for (key, start) in &changed {
                        let after = state.get(key).and_then(|g| g.get(start));
                        let was = before.get(&(key.clone(), *start)).cloned().flatten();
                        let k = window_key_bytes(key, *start);
                        match (after, &was) {
                            (None, None) => log.push((k, None)),
                            (None, Some(_)) => {
                                dropped.push(k.clone());
                                log.push((k, Some(change_bytes(None, was.as_ref()))));
                            }
                            (Some(w), _) => {
                                log.push((k, Some(change_bytes(Some(w), was.as_ref()))))
                            }
                        }
                    }
                    drop_keys(&mut log, &mut to_drop);
                    to_drop = dropped;
                    if ctx.index == 0 {
                        // Every worker holds the same watermark; one writes it.
                        let snap = snapshot(&partitions, watermark);
                        let value = change_bytes(Some(&snap), last_snap.as_ref());
                        log.push((WATERMARK_KEY.to_vec(), Some(value)));
                        last_snap = Some(snap);
                    }
                    ctx.changelog(&transform, epoch, log);
                    let open = state.values().map(|w| w.len() as u64).sum();
                    let mark = (watermark > i64::MIN).then_some(watermark);
                    ctx.held.set(&transform, ctx.index, open, mark);
                }
                if frontier.is_none() {
                    // A bounded run ends: every window still open fires, in
                    // an epoch of its own that the changelog records, so
                    // the next run knows they fired and sends a later event
                    // for one of them as an update, never the window again.
                    if ctx.bounded && held.cap.is_some() {
                        let time = *held.cap.as_ref().unwrap().time();
                        let epoch = time.max(ctx.first_epoch).max(last_epoch + 1);
                        let cap = held.at(epoch);
                        let mut session = out.session(&cap);
                        let mut keys: Vec<Vec<Value>> = state.keys().cloned().collect();
                        keys.sort();
                        let mut log = Vec::new();
                        for key in keys {
                            for (start, w) in state.get_mut(&key).unwrap().iter_mut() {
                                if w.fired {
                                    continue;
                                }
                                let was = w.clone();
                                w.fired = true;
                                if let Some(r) =
                                    window_record(&key, *start, w, plan.having.as_ref())
                                {
                                    session.give(r);
                                }
                                let value = change_bytes(Some(&*w), Some(&was));
                                log.push((window_key_bytes(&key, *start), Some(value)));
                            }
                        }
                        drop_keys(&mut log, &mut to_drop);
                        ctx.changelog(&transform, epoch, log);
                    }
                    state.clear();
                    held.cap = None;
                } else {
                    held.advance(frontier);
                }
            }
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hopping_windows_cover_the_time() {
        let mut out = Vec::new();
        windows_of(WindowShape::Hopping { size: 10, hop: 5 }, 12, &mut out);
        assert_eq!(out, vec![(5, 15), (10, 20)]);
        windows_of(WindowShape::Tumbling { size: 10 }, -3, &mut out);
        assert_eq!(out, vec![(-10, 0)]);
    }
}
