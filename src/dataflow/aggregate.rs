//! Keyed aggregates. Without a window, each group's running state lives
//! on the worker its key hashes to (`store.rs`); once an epoch is
//! complete, its changes are folded in and every group that changed is
//! reported with its old and new state: an upsert stream, with state
//! proportional to the number of groups.
//!
//! Windowed aggregates are in `window.rs`.

use super::state::{change_bytes, group_key_bytes, AggState, StateEntry};
use super::store::{pack_key, GroupStore, Packed};
use super::{epoch_of, Epoch, Records, WorkerContext};
use crate::plan::aggregate::AggregatePlan;
use crate::record::{Record, Row, RowSchema, Value};
use differential_dataflow::difference::Semigroup;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

/// A restored state entry as the aggregate would send it now: its Kafka
/// key as text and its row, unless `having` drops it (a pull query's
/// answer). A window's key carries its start (`group@start`).
pub fn committed_row(
    entry: &StateEntry,
    having: Option<&crate::expr::Expr>,
) -> Option<(String, Row)> {
    match entry {
        StateEntry::Group(key, state) => {
            let mut row = key.clone();
            state.finish(&mut row);
            if !having.is_none_or(|h| h.test(&row).unwrap_or(false)) {
                return None;
            }
            let k = String::from_utf8_lossy(&group_key(key)).into_owned();
            Some((k, row))
        }
        StateEntry::Window(key, start, w) => {
            let r = super::window::window_record(key, *start, w, having)?;
            let k = String::from_utf8_lossy(r.key.as_deref().unwrap_or_default()).into_owned();
            Some((k, r.row))
        }
        StateEntry::Packed(..) | StateEntry::Watermark(_) => None,
    }
}

/// Groups of an epoch applied, logged and sent together.
const APPLY_CHUNK: usize = 4096;

/// The Kafka key of a group: its values as text, joined by `|`.
pub fn group_key(values: &[Value]) -> bytes::Bytes {
    let mut s = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push('|');
        }
        v.to_text(&mut s);
    }
    bytes::Bytes::from(s)
}

pub(super) fn hash_of<T: Hash>(t: &T) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    t.hash(&mut h);
    h.finish()
}

/// Holds a capability at the input frontier, so results can be sent at any
/// epoch not yet complete, and at the end of a bounded run.
pub(super) struct Held {
    pub(super) cap: Option<Capability<Epoch>>,
}

impl Held {
    pub(super) fn at(&self, epoch: Epoch) -> Capability<Epoch> {
        self.cap
            .as_ref()
            .expect("a capability is held until the input is done")
            .delayed(&epoch)
    }
    pub(super) fn advance(&mut self, frontier: Option<Epoch>) {
        if let (Some(cap), Some(f)) = (self.cap.as_mut(), frontier) {
            if *cap.time() < f {
                cap.downgrade(&f);
            }
        }
    }
}

/// What reaches a group's worker: a batch's change to its state, or (at
/// epoch 0) its state as a snapshot kept it.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
enum Delta {
    Fold(AggState),
    Restored(Packed),
}

pub trait Aggregate<'s> {
    fn aggregate(
        self,
        index: usize,
        name: &str,
        plan: &AggregatePlan,
        input: RowSchema,
        ctx: Rc<WorkerContext>,
        waiting: timely::dataflow::Stream<'s, Epoch, Vec<super::state::Seen>>,
    ) -> Records<'s>;
}

impl<'s> Aggregate<'s> for Records<'s> {
    fn aggregate(
        self,
        index: usize,
        name: &str,
        plan: &AggregatePlan,
        input: RowSchema,
        ctx: Rc<WorkerContext>,
        waiting: timely::dataflow::Stream<'s, Epoch, Vec<super::state::Seen>>,
    ) -> Records<'s> {
        match &plan.window {
            None => plain(self, index, name, plan.clone(), input, ctx),
            Some(w) => {
                super::window::windowed(self, name, plan.clone(), w.clone(), input, ctx, waiting)
            }
        }
    }
}

fn plain<'s>(
    stream: Records<'s>,
    index: usize,
    name: &str,
    plan: AggregatePlan,
    input: RowSchema,
    ctx: Rc<WorkerContext>,
) -> Records<'s> {
    let node = name.to_string();
    let c = ctx.clone();
    let aggs = plan.aggs.clone();
    let group_by = plan.group_by.clone();
    let transform = name.to_string();
    // Each batch is folded per group on the worker that read it, so only
    // one state per group and batch crosses to the group's worker.
    let deltas = stream.unary::<CapacityContainerBuilder<Vec<(Packed, Delta)>>, _, _, _>(
        Pipeline,
        &format!("{name} fold"),
        move |cap, _| {
            let mut dead = Vec::new();
            // Restored state goes in at epoch 0, before any epoch replays.
            let mut restore = Some(cap);
            move |records, out| {
                if let Some(cap) = restore.take() {
                    let mut session = out.session(&cap);
                    for entry in c.take_restored(&transform) {
                        match entry {
                            StateEntry::Group(key, state) => {
                                session.give((pack_key(&key), Delta::Fold(state)))
                            }
                            StateEntry::Packed(key, state) => {
                                session.give((key, Delta::Restored(state)))
                            }
                            _ => {}
                        }
                    }
                }
                let mut folded: hashbrown::HashMap<Packed, AggState> = Default::default();
                let mut key: Vec<Value> = Vec::with_capacity(group_by.len());
                records.for_each(|cap, data| {
                    let epoch = epoch_of(&cap);
                    for r in data.drain(..) {
                        match AggState::of(&aggs, &r.row) {
                            Ok(state) => {
                                key.clear();
                                key.extend(group_by.iter().map(|&i| r.row[i].clone()));
                                match folded.entry(pack_key(&key)) {
                                    hashbrown::hash_map::Entry::Occupied(mut o) => {
                                        o.get_mut().plus_equals(&state)
                                    }
                                    hashbrown::hash_map::Entry::Vacant(v) => {
                                        v.insert(state);
                                    }
                                }
                            }
                            Err(e) => dead.push(c.dead_row(&node, &r, &input, e.0)),
                        }
                    }
                    c.dead(epoch, std::mem::take(&mut dead));
                    out.session(&cap)
                        .give_iterator(folded.drain().map(|(k, s)| (k, Delta::Fold(s))));
                });
            }
        },
    );
    let having = plan.having.clone();
    let transform = name.to_string();
    let pact = Exchange::new(|(key, _): &(Packed, Delta)| hash_of(key));
    deltas.unary_frontier::<CapacityContainerBuilder<Vec<Record>>, _, _, _>(
        pact,
        &format!("{name} upsert"),
        move |_, _| {
            let mut store = GroupStore::default();
            let mut snapshot_sent = false;
            let records_per_change = 1 + usize::from(ctx.changelog_topics.contains_key(&transform));
            let mut stash: BTreeMap<
                Epoch,
                (Capability<Epoch>, hashbrown::HashMap<Packed, AggState>),
            > = BTreeMap::new();
            move |(input, frontier), out| {
                input.for_each(|cap, data| {
                    let epoch = epoch_of(&cap);
                    if epoch == 0 {
                        // Restored state: already published before the restart.
                        for (key, state) in data.drain(..) {
                            match state {
                                Delta::Fold(state) => store.restore(key, &state),
                                Delta::Restored(state) => store.restore_packed(key, state),
                            }
                        }
                        return;
                    }
                    let deltas = &mut stash
                        .entry(epoch)
                        .or_insert_with(|| (cap.delayed(&epoch, 0), Default::default()))
                        .1;
                    let groups = deltas.len();
                    for (key, delta) in data.drain(..) {
                        let Delta::Fold(delta) = delta else {
                            unreachable!("restored state comes at epoch 0")
                        };
                        match deltas.entry(key) {
                            hashbrown::hash_map::Entry::Occupied(mut o) => {
                                o.get_mut().plus_equals(&delta)
                            }
                            hashbrown::hash_map::Entry::Vacant(v) => {
                                v.insert(delta);
                            }
                        }
                    }
                    // Each group changed is an output record to come, and
                    // a changelog record: an epoch that changed many groups
                    // ends early, as one with much output does, so the
                    // changes and what they write, held at once, stay
                    // bounded.
                    ctx.fill
                        .add(epoch, index, records_per_change * (deltas.len() - groups));
                });
                // Epochs are applied in order, each once it is complete.
                while let Some(entry) = stash.first_entry() {
                    if frontier.less_equal(entry.key()) {
                        break;
                    }
                    let (epoch, (cap, deltas)) = entry.remove_entry();
                    // In key order, so a replayed epoch writes the same
                    // output; applied and sent a chunk at a time, so an
                    // epoch that changed many groups does not hold every
                    // group's state before and after it at once.
                    let mut changes: Vec<(Vec<Value>, Packed, AggState)> = deltas
                        .into_iter()
                        .map(|(key, delta)| (key.decode(), key, delta))
                        .collect();
                    changes.sort_by(|a, b| a.0.cmp(&b.0));
                    let row_of = |key: &[Value], state: &AggState| {
                        let mut row = key.to_vec();
                        state.finish(&mut row);
                        row
                    };
                    let passes =
                        |row: &Row| having.as_ref().is_none_or(|h| h.test(row).unwrap_or(false));
                    let mut session = out.session(&cap);
                    let mut changes = changes.into_iter().peekable();
                    while changes.peek().is_some() {
                        let applied: Vec<(Vec<Value>, Option<AggState>, Option<AggState>)> =
                            changes
                                .by_ref()
                                .take(APPLY_CHUNK)
                                .map(|(key, packed, delta)| {
                                    let (before, after) = store.apply(&packed, delta);
                                    (key, before, after)
                                })
                                .collect();
                        // Each change carries the state before the epoch
                        // too, so a key can be rolled back one epoch.
                        let changelog = applied
                            .iter()
                            .map(|(key, old, new)| {
                                let value = change_bytes(new.as_ref(), old.as_ref());
                                (group_key_bytes(key), Some(value))
                            })
                            .collect();
                        ctx.changelog(&transform, epoch, changelog);
                        for (key, old, new) in applied {
                            let record = |row: Row, tombstone: bool| Record {
                                key: Some(group_key(&key)),
                                row,
                                tombstone,
                                timestamp_ms: 0,
                                origin: Default::default(),
                            };
                            match new.map(|s| row_of(&key, &s)) {
                                Some(row) if passes(&row) => session.give(record(row, false)),
                                _ => {
                                    let old_row = old.map(|s| row_of(&key, &s)).filter(passes);
                                    if let Some(row) = old_row {
                                        session.give(record(row, true));
                                    }
                                }
                            }
                        }
                    }
                    ctx.held
                        .set(&transform, ctx.index, store.len() as u64, None);
                }
                // The input is done and every epoch applied: the groups
                // go to the writer for a local snapshot.
                if frontier.frontier().is_empty() && stash.is_empty() && !snapshot_sent {
                    snapshot_sent = true;
                    ctx.snapshot(&transform, store.take());
                }
            }
        },
    )
}
