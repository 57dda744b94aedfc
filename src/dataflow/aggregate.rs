//! Keyed aggregates. Without a window, the aggregate state of a group is
//! the *difference* of a differential collection keyed by the group:
//! `count_total` keeps one accumulated state per group and reports, per
//! epoch, the old and new state of every group that changed — an upsert
//! stream with state proportional to the number of groups.
//!
//! Windowed aggregates are in `window.rs`.

use super::state::{change_bytes, group_key_bytes, AggState, StateEntry};
use super::{epoch_of, Epoch, Records, WorkerContext};
use crate::plan::aggregate::AggregatePlan;
use crate::record::{Record, Row, RowSchema, Value};
use differential_dataflow::operators::CountTotal;
use differential_dataflow::AsCollection;
use std::collections::BTreeMap;
use std::hash::{Hash, Hasher};
use std::rc::Rc;
use std::sync::Arc;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Capability;

/// The Kafka key of a group: its values as text, joined by `|`.
pub fn group_key(values: &[Value]) -> Arc<[u8]> {
    let mut s = String::new();
    for (i, v) in values.iter().enumerate() {
        if i > 0 {
            s.push('|');
        }
        v.to_text(&mut s);
    }
    Arc::from(s.into_bytes())
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

pub trait Aggregate<'s> {
    fn aggregate(
        self,
        name: &str,
        plan: &AggregatePlan,
        input: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Records<'s>;
}

impl<'s> Aggregate<'s> for Records<'s> {
    fn aggregate(
        self,
        name: &str,
        plan: &AggregatePlan,
        input: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Records<'s> {
        match &plan.window {
            None => plain(self, name, plan.clone(), input, ctx),
            Some(w) => super::window::windowed(self, name, plan.clone(), w.clone(), input, ctx),
        }
    }
}

fn plain<'s>(
    stream: Records<'s>,
    name: &str,
    plan: AggregatePlan,
    input: RowSchema,
    ctx: Rc<WorkerContext>,
) -> Records<'s> {
    let node = name.to_string();
    let c = ctx.clone();
    let ctx = ctx.clone();
    let aggs = plan.aggs.clone();
    let group_by = plan.group_by.clone();
    let transform = name.to_string();
    let states = stream
        .unary::<CapacityContainerBuilder<Vec<(Vec<Value>, Epoch, AggState)>>, _, _, _>(
            Pipeline,
            &format!("{name} fold"),
            move |cap, _| {
                let mut dead = Vec::new();
                // Restored state goes in at epoch 0, before any epoch replays.
                let mut restore = Some(cap);
                move |records, out| {
                    if let Some(cap) = restore.take() {
                        let mut session = out.session(&cap);
                        for entry in c.restored_for(&transform) {
                            if let StateEntry::Group(key, state) = entry {
                                session.give((key.clone(), 0, state.clone()));
                            }
                        }
                    }
                    records.for_each(|cap, data| {
                        let epoch = epoch_of(&cap);
                        let mut session = out.session(&cap);
                        for r in data.drain(..) {
                            match AggState::of(&aggs, &r.row) {
                                Ok(state) => session.give((
                                    group_by.iter().map(|&i| r.row[i].clone()).collect(),
                                    epoch,
                                    state,
                                )),
                                Err(e) => dead.push(c.dead_row(&node, &r, &input, e.0)),
                            }
                        }
                        c.dead(epoch, std::mem::take(&mut dead));
                    });
                }
            },
        );
    let changes = states.as_collection().count_total();
    let having = plan.having.clone();
    let transform = name.to_string();
    changes
        .inner
        .unary_frontier::<CapacityContainerBuilder<Vec<Record>>, _, _, _>(
            Pipeline,
            &format!("{name} upsert"),
            move |_, _| {
                let mut stash: BTreeMap<
                    Epoch,
                    (Capability<Epoch>, Vec<((Vec<Value>, AggState), isize)>),
                > = BTreeMap::new();
                move |(input, frontier), out| {
                    // A change's epoch is its own time, not the time of the
                    // message carrying it: count_total sends every change of
                    // a batch at the batch's lowest time, so restored state
                    // (epoch 0) and the first live epoch can share a message.
                    input.for_each(|cap, data| {
                        for (d, time, r) in data.drain(..) {
                            let entry = stash
                                .entry(time)
                                .or_insert_with(|| (cap.delayed(&time, 0), Vec::new()));
                            entry.1.push((d, r));
                        }
                    });
                    let ready: Vec<Epoch> = stash
                        .keys()
                        .copied()
                        .filter(|e| !frontier.less_equal(e))
                        .collect();
                    for epoch in ready {
                        let (cap, changes) = stash.remove(&epoch).unwrap();
                        if epoch == 0 {
                            // Restored state: already published before the restart.
                            continue;
                        }
                        // Per group: the state before this epoch and after it.
                        let mut per_key: BTreeMap<
                            Vec<Value>,
                            (Option<AggState>, Option<AggState>),
                        > = BTreeMap::new();
                        for ((key, state), diff) in changes {
                            let e = per_key.entry(key).or_default();
                            if diff > 0 {
                                e.1 = Some(state);
                            } else {
                                e.0 = Some(state);
                            }
                        }
                        let row_of = |key: &Vec<Value>, state: &AggState| {
                            let mut row = key.clone();
                            state.finish(&mut row);
                            row
                        };
                        let passes = |row: &Row| {
                            having.as_ref().is_none_or(|h| h.test(row).unwrap_or(false))
                        };
                        // Each change carries the state before the epoch too,
                        // so a key can be rolled back one epoch.
                        let changelog = per_key
                            .iter()
                            .map(|(key, (old, new))| {
                                let value = change_bytes(new.as_ref(), old.as_ref());
                                (group_key_bytes(key), Some(value))
                            })
                            .collect();
                        ctx.changelog(&transform, epoch, changelog);
                        let mut session = out.session(&cap);
                        for (key, (old, new)) in per_key {
                            let old_row =
                                old.as_ref().map(|s| row_of(&key, s)).filter(|r| passes(r));
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
                                    if let Some(row) = old_row {
                                        session.give(record(row, true));
                                    }
                                }
                            }
                        }
                    }
                }
            },
        )
}
