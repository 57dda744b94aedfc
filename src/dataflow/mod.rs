//! Every timely operator of rill lives here. A job becomes one dataflow per
//! worker: sources -> decode -> transforms -> encode -> sinks, with the
//! epoch (a u64) as the timely timestamp. Operators never block: sources
//! poll without waiting, and sinks hand encoded records to the process's
//! writer thread through a channel.

pub mod aggregate;
pub mod decode;
pub mod output;
mod sink;
pub use sink::SinkLimits;
mod source;
pub mod state;
pub mod store;
mod transforms;
pub(crate) mod window;

use crate::connectors::SourceReader;
use crate::format::{json, registry::RegistryClient};
use crate::plan::{NodeKind, Plan, Port};
use crate::record::DeadLetter;
use crate::record::{Record, RowSchema};
use aggregate::Aggregate;
use crossbeam_channel::Sender;
use decode::Decode;
use output::{EpochCounts, WriterMsg};
use sink::{routed, SinkSpec, WriteSinks};
use source::read_source;
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::inspect::Inspect;
use timely::dataflow::operators::{Concatenate, Probe};
use timely::dataflow::{ProbeHandle, Scope, Stream};
use transforms::Transforms;

pub type Epoch = u64;

/// State read back from the changelogs, by transform name.
pub type RestoredState = Arc<std::sync::Mutex<HashMap<String, Vec<state::StateEntry>>>>;
pub(crate) type Records<'s> = Stream<'s, Epoch, Vec<Record>>;

/// Output records the process may hold before its sources stop reading,
/// when epochs do not end early (`max_epoch_records = 0`, or a cluster).
pub const MAX_IN_FLIGHT: i64 = 400_000;

/// How full the process's newest epoch is, and how far its clock has been
/// moved on because an epoch filled before its interval ended. Shared by
/// the process's workers, so they cut the same epochs.
#[derive(Debug, Default)]
pub struct EpochFill {
    /// Output records of one sink (or changes of one aggregate) that end an
    /// epoch early; 0 for never.
    limit: u64,
    /// The newest epoch with output, and its output records so far by the
    /// node (sink or aggregate) that holds them.
    newest: std::sync::Mutex<(Epoch, Vec<(usize, u64)>)>,
    /// Epochs the clock was moved on by.
    ahead: std::sync::atomic::AtomicU64,
    /// The newest epoch sources may fill (0: no bound yet): the one after
    /// the lowest epoch the writer has not committed. While epoch N
    /// commits, the workers process N+1, and N+1 ends only once N has
    /// committed, taking everything that arrived meanwhile: however long a
    /// commit takes, epochs never queue behind it, and a record waits at
    /// most an interval or a commit, whichever is longer, plus its own.
    open_upto: std::sync::atomic::AtomicU64,
}

impl EpochFill {
    pub fn new(limit: u64) -> EpochFill {
        EpochFill {
            limit,
            ..EpochFill::default()
        }
    }

    /// Output records the process may hold before its sources pause: the
    /// epoch committing, the open one filling, and room for their ends.
    /// The same whatever the number of sinks, so that memory stays bounded
    /// by the setting; a job with two sinks of the same rows still holds
    /// the epoch committing and the one filling.
    pub fn max_held(&self) -> i64 {
        if self.limit == 0 {
            MAX_IN_FLIGHT
        } else {
            (self.limit as i64).saturating_mul(4)
        }
    }

    /// Node `by` (a sink, or an aggregate counting its changes) holds `n`
    /// more records of `epoch`.
    pub(crate) fn add(&self, epoch: Epoch, by: usize, n: usize) {
        let mut newest = self.newest.lock().unwrap();
        if epoch > newest.0 {
            newest.0 = epoch;
            newest.1.clear();
        } else if epoch < newest.0 {
            return;
        }
        match newest.1.iter_mut().find(|(node, _)| *node == by) {
            Some((_, held)) => *held += n as u64,
            None => newest.1.push((by, n as u64)),
        }
    }

    /// The writer has committed every epoch below `uncommitted`.
    pub(crate) fn committed_below(&self, uncommitted: Epoch) {
        self.open_upto
            .store(uncommitted.saturating_add(1), Ordering::Release);
    }

    /// Whether `epoch` holds enough output to end now: one sink's share is
    /// what counts, so a job that writes the same rows to two places cuts
    /// the epochs one place would, paying each epoch's commit no more often.
    fn is_full(&self, epoch: Epoch) -> bool {
        if self.limit == 0 {
            return false;
        }
        let newest = self.newest.lock().unwrap();
        newest.0 > epoch
            || (newest.0 == epoch && newest.1.iter().any(|(_, held)| *held >= self.limit))
    }
}

/// What every operator of one worker shares.
pub struct WorkerContext {
    pub index: usize,
    pub peers: usize,
    /// Processes of the cluster (1 alone): worker `index` belongs to
    /// process `index / (peers / processes)`.
    pub processes: usize,
    pub writer: Sender<WriterMsg>,
    pub counts: Rc<RefCell<BTreeMap<Epoch, EpochCounts>>>,
    pub trace: bool,
    pub start: Instant,
    pub checkpoint_interval: Duration,
    pub stop: Arc<AtomicBool>,
    pub in_flight: Arc<AtomicI64>,
    pub fill: Arc<EpochFill>,
    pub registry: Option<RegistryClient>,
    /// Per sink node: the schema id its Avro records carry.
    pub sink_schema_ids: HashMap<usize, u32>,
    /// Per sink node: the partitions of its topic.
    pub sink_partitions: HashMap<usize, i32>,
    /// Per sink node: what its store refuses on every attempt.
    pub sink_limits: HashMap<usize, sink::SinkLimits>,
    /// The topic of each source, by position among the plan's sources.
    pub source_topics: Vec<Arc<str>>,
    /// The number of partitions of each source, by position.
    pub source_partitions: Vec<i32>,
    /// A bounded run (`--until-caught-up`): open windows fire at its end.
    pub bounded: bool,
    /// Sources say the epoch of what they read; no clock cuts epochs.
    pub scripted: bool,
    /// The first epoch number the clock may use (after those in the log).
    pub first_epoch: Epoch,
    /// The last epoch committed before this start: epochs up to it are
    /// never processed again, only restored.
    pub resume_after: Epoch,
    /// Records per second this worker's sources may read (crash tests).
    pub max_rate: Option<f64>,
    /// Changelog topic of each stateful transform, by name (none in memory).
    pub changelog_topics: HashMap<String, Arc<str>>,
    /// State read back from the changelogs, by transform name, until
    /// worker 0 hands it to the dataflow.
    pub restored: RestoredState,
    /// What each stateful transform holds, for the metrics.
    pub held: Arc<output::Held>,
}

impl WorkerContext {
    /// Epochs are cut by wall-clock time since the job started, the same
    /// clock on every worker of the process, moved on early by the epochs
    /// that filled before their interval ended.
    fn epoch_now(&self) -> Epoch {
        live_epoch(
            self.clock_epoch() + self.fill.ahead.load(Ordering::Acquire),
            self.first_epoch.max(1),
            self.fill.open_upto.load(Ordering::Acquire),
        )
    }

    /// How long until the clock's epoch ends.
    fn until_next_epoch(&self) -> Duration {
        let interval = self.checkpoint_interval.as_nanos().max(1);
        let into = self.start.elapsed().as_nanos() % interval;
        Duration::from_nanos((interval - into) as u64)
    }

    fn clock_epoch(&self) -> Epoch {
        self.first_epoch.max(1)
            + (self.start.elapsed().as_millis() / self.checkpoint_interval.as_millis().max(1))
                as Epoch
    }

    /// Ends `epoch` before its interval is over when it is full, so that
    /// what the writer holds stays bounded; the workers of the process
    /// all move on to the next epoch.
    fn end_epoch_if_full(&self, epoch: Epoch) {
        if !self.fill.is_full(epoch) {
            return;
        }
        let ahead = self.fill.ahead.load(Ordering::Acquire);
        let now = self.clock_epoch() + ahead;
        if now <= epoch {
            // Another worker may have moved it on already: then this fails.
            let _ = self.fill.ahead.compare_exchange(
                ahead,
                ahead + (epoch + 1 - now),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
        }
    }

    pub(crate) fn count(&self, epoch: Epoch, f: impl FnOnce(&mut EpochCounts)) {
        f(self.counts.borrow_mut().entry(epoch).or_default());
    }

    pub(crate) fn dead(&self, epoch: Epoch, letters: Vec<DeadLetter>) {
        if letters.is_empty() {
            return;
        }
        let n = letters.len() as u64;
        self.count(epoch, |c| c.dead += n);
        if self.trace {
            let lines = letters
                .iter()
                .map(|d| {
                    format!(
                        "Dead letter - {}/{}@{} reason {}",
                        d.topic, d.partition, d.offset, d.reason
                    )
                })
                .collect();
            let _ = self.writer.send(WriterMsg::Trace(lines));
        }
        let _ = self.writer.send(WriterMsg::Dead {
            epoch,
            records: letters,
        });
    }

    /// Sends the state changes of `transform` in `epoch` to its changelog.
    pub(crate) fn changelog(
        &self,
        transform: &str,
        epoch: Epoch,
        records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    ) {
        if records.is_empty() {
            return;
        }
        if let Some(topic) = self.changelog_topics.get(transform) {
            // Held by the writer until the epoch commits, as output is:
            // they count towards what pauses the sources.
            self.in_flight
                .fetch_add(records.len() as i64, Ordering::Relaxed);
            let _ = self.writer.send(WriterMsg::Changelog {
                epoch,
                topic: topic.clone(),
                records,
            });
        }
    }

    /// Hands every group of `transform` on this worker to the writer, for
    /// a local snapshot; only a transform with a changelog has one.
    pub(crate) fn snapshot(&self, transform: &str, groups: Vec<(store::Packed, store::Packed)>) {
        if self.changelog_topics.contains_key(transform) {
            let _ = self.writer.send(WriterMsg::Snapshot {
                transform: transform.to_string(),
                groups,
            });
        }
    }

    /// The state restored for `transform`, on worker 0 only: it enters the
    /// dataflow once and is routed to its key's worker like any record,
    /// and is not held twice.
    pub(crate) fn take_restored(&self, transform: &str) -> Vec<state::StateEntry> {
        if self.index != 0 {
            return Vec::new();
        }
        self.restored
            .lock()
            .unwrap()
            .remove(transform)
            .unwrap_or_default()
    }

    pub(crate) fn dead_row(
        &self,
        node: &str,
        rec: &Record,
        schema: &RowSchema,
        reason: String,
    ) -> DeadLetter {
        DeadLetter {
            key: rec.key.clone(),
            value: Some(json::row_to_string(&rec.row, schema, false).into_bytes()),
            reason: format!("{node}: {reason}"),
            topic: self
                .source_topics
                .get(rec.origin.source as usize)
                .cloned()
                .unwrap_or_else(|| "".into()),
            partition: rec.origin.partition,
            offset: rec.origin.offset,
        }
    }
}

/// Builds a source's reader for one worker.
pub type ReaderFactory = Arc<dyn Fn(usize, usize) -> Box<dyn SourceReader> + Send + Sync>;

/// Builds the job's dataflow in `scope`; `probe` watches every sink.
pub fn build<'s>(
    scope: Scope<'s, Epoch>,
    plan: &Plan,
    readers: &[ReaderFactory],
    ctx: &Rc<WorkerContext>,
    probe: &ProbeHandle<Epoch>,
) {
    let consumed: HashSet<Port> = plan
        .nodes
        .iter()
        .flat_map(|n| n.inputs.iter().copied())
        .collect();
    let mut streams: HashMap<Port, Records<'s>> = HashMap::new();
    // Per source, the partitions it left records waiting in, per epoch.
    let mut waiting: Vec<timely::dataflow::Stream<'s, Epoch, Vec<state::Seen>>> = Vec::new();
    let mut source_pos = 0usize;
    let mut transform_pos = 0usize;
    // Per group of sinks: the ports they read, and the sinks.
    let mut sink_groups: Vec<(Vec<Port>, Vec<SinkSpec>)> = Vec::new();
    for (i, node) in plan.nodes.iter().enumerate() {
        let is_transform = !matches!(node.kind, NodeKind::Source(_) | NodeKind::Sink(_));
        let counted = is_transform.then(|| {
            transform_pos += 1;
            transform_pos - 1
        });
        let input = || -> Records<'s> {
            let merged = read_ports(scope, &streams, &node.inputs);
            // A transform counts what comes in, per epoch (numRecordsIn).
            match counted {
                Some(k) => {
                    let c = ctx.clone();
                    merged.inspect_core(move |event| {
                        if let Ok((epoch, data)) = event {
                            let epoch = *epoch.least().expect("messages carry an epoch");
                            c.count(epoch, |x| {
                                if x.through.len() <= k {
                                    x.through.resize(k + 1, 0);
                                }
                                x.through[k] += data.len() as u64;
                            });
                        }
                    })
                }
                None => merged,
            }
        };
        match &node.kind {
            NodeKind::Source(sp) => {
                let reader = (readers[source_pos])(ctx.index, ctx.peers);
                let (raw, left) = read_source(scope, &node.id, reader, source_pos, ctx.clone());
                waiting.push(left);
                let out = raw.decode(
                    &node.id,
                    sp.config.format,
                    &sp.reader,
                    &node.outputs[0],
                    ctx.clone(),
                );
                streams.insert(Port { node: i, output: 0 }, out);
                source_pos += 1;
            }
            NodeKind::Validate(rules) => {
                let out = input().validate(
                    &node.id,
                    rules.clone(),
                    plan.input_schema(i).clone(),
                    ctx.clone(),
                );
                streams.insert(Port { node: i, output: 0 }, out);
            }
            NodeKind::Filter(e) => {
                let out = input().filter_rows(
                    &node.id,
                    e.clone(),
                    plan.input_schema(i).clone(),
                    ctx.clone(),
                );
                streams.insert(Port { node: i, output: 0 }, out);
            }
            NodeKind::Aggregate(a) => {
                let left = scope.concatenate(waiting.iter().cloned());
                let out = input().aggregate(
                    i,
                    &node.name,
                    a,
                    plan.input_schema(i).clone(),
                    ctx.clone(),
                    left,
                );
                streams.insert(Port { node: i, output: 0 }, out);
            }
            NodeKind::Map(m) => {
                let out = input().map_rows(
                    &node.id,
                    m.clone(),
                    plan.input_schema(i).clone(),
                    ctx.clone(),
                );
                streams.insert(Port { node: i, output: 0 }, out);
            }
            NodeKind::Route(routes) => {
                let used: Vec<bool> = (0..=routes.len())
                    .map(|o| consumed.contains(&Port { node: i, output: o }))
                    .collect();
                let outs = input().route(
                    &node.id,
                    routes.clone(),
                    used,
                    plan.input_schema(i).clone(),
                    ctx.clone(),
                );
                for (o, s) in outs.into_iter().enumerate() {
                    streams.insert(Port { node: i, output: o }, s);
                }
            }
            // The dead-letter sink is fed by the writer, not the dataflow.
            NodeKind::Sink(_) if node.inputs.is_empty() => {}
            // Sinks that read the same streams share an operator, built
            // below once every stream is; in a cluster a Kafka sink's
            // records are routed, and it has one of its own.
            NodeKind::Sink(sink) => {
                let spec = SinkSpec {
                    node: i,
                    name: &node.name,
                    plan: sink,
                    schema: plan.input_schema(i).clone(),
                };
                match sink_groups.iter_mut().find(|(ins, group)| {
                    *ins == node.inputs && !routed(ctx, sink) && !routed(ctx, group[0].plan)
                }) {
                    Some((_, group)) => group.push(spec),
                    None => sink_groups.push((node.inputs.clone(), vec![spec])),
                }
            }
        }
        // Outputs nobody reads are dropped; they still count, as filtered.
        if !matches!(node.kind, NodeKind::Sink(_) | NodeKind::Route(_)) {
            let port = Port { node: i, output: 0 };
            if !consumed.contains(&port) {
                let s = streams.remove(&port).unwrap();
                let c = ctx.clone();
                s.unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
                    Pipeline,
                    "Unread",
                    move |_, _| {
                        move |input, _output| {
                            input.for_each(|cap, data| {
                                let n = data.len() as u64;
                                c.count(epoch_of(&cap), |x| x.filtered += n);
                            });
                        }
                    },
                )
                .probe_with(probe);
            }
        }
    }
    for (inputs, sinks) in sink_groups {
        read_ports(scope, &streams, &inputs).write_sinks(sinks, ctx.clone(), probe);
    }
}

/// The records of `ports`, as one stream.
fn read_ports<'s>(
    scope: Scope<'s, Epoch>,
    streams: &HashMap<Port, Records<'s>>,
    ports: &[Port],
) -> Records<'s> {
    let mut ins: Vec<Records<'s>> = ports.iter().map(|p| streams[p].clone()).collect();
    if ins.len() == 1 {
        ins.pop().unwrap()
    } else {
        scope.concatenate(ins)
    }
}

/// The epoch a message was sent at; epochs are totally ordered, so every
/// message's stamp has one least time.
pub(crate) fn epoch_of(cap: &timely::dataflow::operators::InputCapability<Epoch>) -> Epoch {
    *cap.least().expect("messages carry an epoch")
}

/// The epoch a live source reads into: the clock's, unless the writer
/// has not committed the epoch before it (`open_upto`, 0 for no bound);
/// never one before `first`, the first epoch this start reads live, since
/// the ones before it are replayed or committed.
fn live_epoch(clock: Epoch, first: Epoch, open_upto: Epoch) -> Epoch {
    let bounded = if open_upto == 0 {
        clock
    } else {
        clock.min(open_upto)
    };
    bounded.max(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_live_epoch_waits_for_the_commit_of_the_one_before_and_then_follows_the_clock() {
        // Nothing committed yet: the clock alone, from the first epoch.
        assert_eq!(live_epoch(1, 1, 0), 1);
        assert_eq!(live_epoch(7, 1, 0), 7);
        // Epoch 4 commits (everything below 4 committed): 5 fills, however
        // far the clock has gone.
        let fill = EpochFill::new(0);
        fill.committed_below(4);
        assert_eq!(live_epoch(9, 1, fill.open_upto.load(Ordering::Relaxed)), 5);
        assert_eq!(live_epoch(3, 1, 5), 3);
        // Once 4 has committed, 5 ends and the next is the clock's: the
        // numbers skipped hold nothing.
        fill.committed_below(5);
        assert_eq!(live_epoch(9, 1, fill.open_upto.load(Ordering::Relaxed)), 6);
        assert_eq!(live_epoch(9, 1, 10), 9);
        // Replayed epochs (before `first`) are never taken by live reads,
        // whatever the writer has committed so far.
        assert_eq!(live_epoch(20, 12, 3), 12);
    }

    #[test]
    fn an_epoch_is_full_once_one_sinks_output_reaches_the_limit_and_later_epochs_start_empty() {
        let fill = EpochFill::new(100);
        fill.add(3, 7, 60);
        // Another sink's records, the same rows written elsewhere, do not
        // add up with the first sink's.
        fill.add(3, 8, 60);
        assert!(!fill.is_full(3));
        fill.add(3, 7, 40);
        assert!(fill.is_full(3));
        // Output of an older epoch arriving late does not fill the newest.
        fill.add(4, 7, 10);
        fill.add(3, 7, 500);
        assert!(!fill.is_full(4));
        assert!(!fill.is_full(5));
        fill.add(4, 8, 100);
        assert!(fill.is_full(4));
        assert_eq!(fill.max_held(), 400);
        let never = EpochFill::new(0);
        never.add(1, 7, 1_000_000);
        assert!(!never.is_full(1));
        assert_eq!(never.max_held(), MAX_IN_FLIGHT);
    }
}
