//! Every timely operator of rill lives here. A job becomes one dataflow per
//! worker: sources -> decode -> transforms -> encode -> sinks, with the
//! epoch (a u64) as the timely timestamp. Operators never block: sources
//! poll without waiting, and sinks hand encoded records to the process's
//! writer thread through a channel.

pub mod aggregate;
pub mod output;
pub mod state;

use crate::connectors::{partition_for_key, Poll, SourceReader};
use crate::expr::Expr;
use crate::format::{avro, csv, json, registry::RegistryClient};
use crate::plan::{MapPlan, MapTarget, NodeKind, Plan, Port, SinkPlan};
use crate::record::{DeadLetter, OutRecord};
use crate::record::{FieldType, RawRecord, Record, RowSchema, Value};
use crate::spec::{FileFormat, Format};
use aggregate::Aggregate;
use crossbeam_channel::Sender;
use output::{capitalise, trace_line, EpochCounts, WriterMsg};
use std::cell::RefCell;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::builder_rc::OperatorBuilder;
use timely::dataflow::operators::generic::operator::source;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::{Concatenate, Probe};
use timely::dataflow::{ProbeHandle, Scope, Stream};

pub type Epoch = u64;
pub(crate) type Records<'s> = Stream<'s, Epoch, Vec<Record>>;

/// Records a source may have handed to the writer and not yet seen sent,
/// before it stops reading; keeps memory bounded when sinks are slower.
pub const MAX_IN_FLIGHT: i64 = 400_000;
const POLL_BATCH: usize = 2048;

/// What every operator of one worker shares.
pub struct WorkerContext {
    pub index: usize,
    pub peers: usize,
    pub writer: Sender<WriterMsg>,
    pub counts: Rc<RefCell<BTreeMap<Epoch, EpochCounts>>>,
    pub trace: bool,
    pub start: Instant,
    pub checkpoint_interval: Duration,
    pub stop: Arc<AtomicBool>,
    pub in_flight: Arc<AtomicI64>,
    pub registry: Option<RegistryClient>,
    /// Per sink node: the schema id its Avro records carry.
    pub sink_schema_ids: HashMap<usize, u32>,
    /// Per sink node: the partitions of its topic.
    pub sink_partitions: HashMap<usize, i32>,
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
    /// State read back from the changelogs, by transform name.
    pub restored: Arc<HashMap<String, Vec<state::StateEntry>>>,
}

impl WorkerContext {
    /// Epochs are cut by wall-clock time since the job started, the same
    /// clock on every worker of the process.
    fn epoch_now(&self) -> Epoch {
        self.first_epoch.max(1)
            + (self.start.elapsed().as_millis() / self.checkpoint_interval.as_millis().max(1))
                as Epoch
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
            let _ = self.writer.send(WriterMsg::Changelog {
                epoch,
                topic: topic.clone(),
                records,
            });
        }
    }

    /// The state restored for `transform`, on worker 0 only: it enters the
    /// dataflow once and is routed to its key's worker like any record.
    pub(crate) fn restored_for(&self, transform: &str) -> &[state::StateEntry] {
        match self.restored.get(transform) {
            Some(state) if self.index == 0 => state,
            _ => &[],
        }
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
    let mut source_pos = 0usize;
    for (i, node) in plan.nodes.iter().enumerate() {
        let input = || -> Records<'s> {
            let ins: Vec<Records<'s>> = node.inputs.iter().map(|p| streams[p].clone()).collect();
            if ins.len() == 1 {
                ins.into_iter().next().unwrap()
            } else {
                scope.concatenate(ins)
            }
        };
        match &node.kind {
            NodeKind::Source(sp) => {
                let reader = (readers[source_pos])(ctx.index, ctx.peers);
                let raw = read_source(scope, &node.id, reader, source_pos, ctx.clone());
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
                let out =
                    input().aggregate(&node.name, a, plan.input_schema(i).clone(), ctx.clone());
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
            NodeKind::Sink(sink) => {
                let schema = plan.input_schema(i).clone();
                input()
                    .write_sink(i, &node.name, sink, schema, ctx.clone())
                    .probe_with(probe);
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
}

/// Polls a source without blocking and stamps what it reads with the
/// current epoch.
fn read_source<'s>(
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
            if !reader.replaying() && ctx.in_flight.load(Ordering::Relaxed) > MAX_IN_FLIGHT {
                activator.activate_after(Duration::from_millis(2));
                return;
            }
            // A few polls per activation, so a busy source still yields.
            for _ in 0..8 {
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
                            for r in &buf {
                                let range = x
                                    .ranges
                                    .entry((r.origin.source, r.origin.partition))
                                    .or_insert((r.origin.offset, r.origin.offset + 1));
                                range.0 = range.0.min(r.origin.offset);
                                range.1 = range.1.max(r.origin.offset + 1);
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
        let now = ctx.epoch_now();
        if now > *cap.time() {
            cap.downgrade(&now);
        }
    }
}

/// Raw bytes to rows; what cannot be decoded goes to the dead letters.
trait Decode<'s> {
    fn decode(
        self,
        name: &str,
        format: Format,
        reader: &Arc<apache_avro::Schema>,
        rows: &RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Records<'s>;
}

type Pending = Vec<(
    timely::dataflow::operators::Capability<Epoch>,
    Vec<RawRecord>,
)>;

impl<'s> Decode<'s> for Stream<'s, Epoch, Vec<RawRecord>> {
    fn decode(
        self,
        name: &str,
        format: Format,
        reader: &Arc<apache_avro::Schema>,
        rows: &RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Records<'s> {
        let reader = reader.clone();
        let rows = rows.clone();
        let node = name.to_string();
        let scope = self.scope();
        self.unary::<CapacityContainerBuilder<Vec<Record>>, _, _, _>(
            Pipeline,
            &format!("Decode {name}"),
            move |_, info| {
                let activator = Arc::new(Mutex::new(
                    scope.worker().sync_activator_for(info.address.to_vec()),
                ));
                // Decoders by writer schema id; Err holds why an id cannot be read.
                let mut decoders: HashMap<u32, Result<avro::Decoder, String>> = HashMap::new();
                let fetched: Arc<Mutex<HashMap<u32, Result<Arc<str>, String>>>> =
                    Default::default();
                let mut fetching: HashSet<u32> = HashSet::new();
                let mut pending: Pending = Vec::new();
                let mut out: Vec<Record> = Vec::new();
                let mut dead: Vec<DeadLetter> = Vec::new();
                let mut trace: Vec<String> = Vec::new();
                move |input, output| {
                    input.for_each(|cap, data| {
                        pending.push((
                            cap.retain_least(0).expect("epochs are totally ordered"),
                            std::mem::take(data),
                        ));
                    });
                    // Writer schemas not seen yet are fetched off the worker;
                    // their batches wait, in order, until the answer is in.
                    if format == Format::Avro {
                        let mut ready = 0;
                        'batches: for (_, batch) in pending.iter() {
                            for r in batch {
                                let Some(Ok((id, _))) = r.value.as_deref().map(avro::split_wire)
                                else {
                                    continue;
                                };
                                if decoders.contains_key(&id) {
                                    continue;
                                }
                                let registry = ctx.registry.as_ref();
                                let answer = match registry.and_then(|c| c.cached(id)) {
                                    Some(text) => Some(Ok(text)),
                                    None => fetched.lock().unwrap().remove(&id),
                                };
                                match answer {
                                    Some(text) => {
                                        let d = text.and_then(|t| {
                                            let writer = avro::parse_schema(&t)
                                                .map_err(|e| e.to_string())?;
                                            avro::Decoder::new(&writer, &reader, &rows)
                                                .map_err(|e| e.to_string())
                                        });
                                        decoders.insert(
                                            id,
                                            d.map_err(|e| format!("schema id {id}: {e}")),
                                        );
                                    }
                                    None => {
                                        if fetching.insert(id) {
                                            let Some(client) = registry.cloned() else {
                                                decoders.insert(
                                                    id,
                                                    Err(format!(
                                                        "schema id {id}: no registry configured"
                                                    )),
                                                );
                                                continue;
                                            };
                                            let fetched = fetched.clone();
                                            let activator = activator.clone();
                                            std::thread::spawn(move || {
                                                let r = fetch_schema(&client, id);
                                                fetched.lock().unwrap().insert(id, r);
                                                let _ = activator.lock().unwrap().activate();
                                            });
                                        }
                                        break 'batches;
                                    }
                                }
                            }
                            ready += 1;
                        }
                        if ready < pending.len() {
                            // Decode what is ready; the rest waits for its schema.
                            let rest = pending.split_off(ready);
                            let now = std::mem::replace(&mut pending, rest);
                            decode_batches(
                                now, &mut out, &mut dead, &mut trace, &decoders, format, &rows,
                                &ctx, output,
                            );
                            return;
                        }
                    }
                    let now = std::mem::take(&mut pending);
                    decode_batches(
                        now, &mut out, &mut dead, &mut trace, &decoders, format, &rows, &ctx,
                        output,
                    );
                    let _ = &node;
                }
            },
        )
    }
}

/// A writer schema by id, off the worker. Only an answer that cannot
/// change is final: while the registry is down or failing, the records
/// wait (and the job with them) instead of going to the dead letters,
/// which a replay would not repeat. (A second Ctrl-C quits a job that is
/// stuck waiting.)
fn fetch_schema(client: &RegistryClient, id: u32) -> Result<Arc<str>, String> {
    let mut wait = Duration::from_millis(100);
    let mut told = false;
    loop {
        match client.schema_by_id(id) {
            Ok(s) => return Ok(s),
            Err(e) if e.is_transient() => {
                if !told {
                    eprintln!(
                        "schema id {id}: {e}; records with this schema wait until it answers"
                    );
                    told = true;
                }
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}

#[allow(clippy::too_many_arguments)]
fn decode_batches(
    batches: Pending,
    out: &mut Vec<Record>,
    dead: &mut Vec<DeadLetter>,
    trace: &mut Vec<String>,
    decoders: &HashMap<u32, Result<avro::Decoder, String>>,
    format: Format,
    rows: &RowSchema,
    ctx: &WorkerContext,
    output: &mut timely::dataflow::operators::generic::OutputBuilderSession<
        '_,
        Epoch,
        CapacityContainerBuilder<Vec<Record>>,
    >,
) {
    for (cap, batch) in batches {
        for raw in batch {
            let decoded = match &raw.value {
                None => Err("record has no value (a tombstone)".to_string()),
                Some(v) => match format {
                    Format::Json => {
                        json::decode(v, rows).map_err(|e| format!("not a valid JSON record: {e}"))
                    }
                    Format::Avro => {
                        avro::split_wire(v)
                            .map_err(|e| e.to_string())
                            .and_then(|(id, body)| match decoders.get(&id) {
                                Some(Ok(d)) => {
                                    d.decode(body).map_err(|e| format!("schema id {id}: {e}"))
                                }
                                Some(Err(e)) => Err(e.clone()),
                                None => Err(format!("schema id {id} is unknown")),
                            })
                    }
                },
            };
            match decoded {
                Ok(row) => {
                    if ctx.trace {
                        trace.push(trace_line(
                            "Incoming",
                            raw.key.as_deref(),
                            &json::row_to_string(&row, rows, true),
                        ));
                    }
                    out.push(Record {
                        key: raw.key,
                        row,
                        tombstone: false,
                        timestamp_ms: raw.timestamp_ms,
                        origin: raw.origin,
                    });
                }
                Err(reason) => dead.push(DeadLetter {
                    key: raw.key,
                    value: raw.value,
                    reason: format!("decode: {reason}"),
                    topic: ctx
                        .source_topics
                        .get(raw.origin.source as usize)
                        .cloned()
                        .unwrap_or_else(|| "".into()),
                    partition: raw.origin.partition,
                    offset: raw.origin.offset,
                }),
            }
        }
        if !trace.is_empty() {
            let _ = ctx.writer.send(WriterMsg::Trace(std::mem::take(trace)));
        }
        ctx.dead(*cap.time(), std::mem::take(dead));
        if !out.is_empty() {
            output.session(&cap).give_container(out);
            out.clear();
        }
    }
}

/// The stateless transforms, as small operators over streams of records.
trait Transforms<'s> {
    fn filter_rows(
        self,
        name: &str,
        cond: Expr,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Records<'s>;
    fn validate(
        self,
        name: &str,
        rules: Vec<(String, Expr)>,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Records<'s>;
    fn map_rows(
        self,
        name: &str,
        map: MapPlan,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Records<'s>;
    fn route(
        self,
        name: &str,
        routes: Vec<(String, Expr)>,
        used: Vec<bool>,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Vec<Records<'s>>;
    fn write_sink(
        self,
        node: usize,
        name: &str,
        sink: &SinkPlan,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Stream<'s, Epoch, Vec<()>>;
}

impl<'s> Transforms<'s> for Records<'s> {
    fn filter_rows(
        self,
        name: &str,
        cond: Expr,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Records<'s> {
        let node = name.to_string();
        self.unary::<CapacityContainerBuilder<Vec<Record>>, _, _, _>(Pipeline, name, move |_, _| {
            let mut dead = Vec::new();
            move |input, output| {
                input.for_each(|cap, data| {
                    let before = data.len();
                    data.retain(|r| match cond.test(&r.row) {
                        Ok(keep) => keep,
                        Err(e) => {
                            dead.push(ctx.dead_row(&node, r, &schema, e.0));
                            false
                        }
                    });
                    let dropped = (before - data.len() - dead.len()) as u64;
                    ctx.count(epoch_of(&cap), |c| c.filtered += dropped);
                    ctx.dead(epoch_of(&cap), std::mem::take(&mut dead));
                    output.session(&cap).give_container(data);
                });
            }
        })
    }

    fn validate(
        self,
        name: &str,
        rules: Vec<(String, Expr)>,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Records<'s> {
        let node = name.to_string();
        self.unary::<CapacityContainerBuilder<Vec<Record>>, _, _, _>(Pipeline, name, move |_, _| {
            let mut dead = Vec::new();
            move |input, output| {
                input.for_each(|cap, data| {
                    data.retain(|r| {
                        for (rule, cond) in &rules {
                            let reason = match cond.test(&r.row) {
                                Ok(true) => continue,
                                Ok(false) => format!("rule `{rule}` failed"),
                                Err(e) => format!("rule `{rule}`: {}", e.0),
                            };
                            dead.push(ctx.dead_row(&node, r, &schema, reason));
                            return false;
                        }
                        true
                    });
                    ctx.dead(epoch_of(&cap), std::mem::take(&mut dead));
                    output.session(&cap).give_container(data);
                });
            }
        })
    }

    fn map_rows(
        self,
        name: &str,
        map: MapPlan,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Records<'s> {
        let node = name.to_string();
        self.unary::<CapacityContainerBuilder<Vec<Record>>, _, _, _>(Pipeline, name, move |_, _| {
            let mut dead = Vec::new();
            let mut values: Vec<Value> = Vec::with_capacity(map.computed.len());
            move |input, output| {
                input.for_each(|cap, data| {
                    data.retain_mut(|r| {
                        // Every expression sees the row as it came in.
                        values.clear();
                        for (e, _, ty) in &map.computed {
                            match e.eval(&r.row) {
                                Ok(Value::Int(i)) if *ty == FieldType::Double => {
                                    values.push(Value::Double(i as f64))
                                }
                                Ok(v) => values.push(v),
                                Err(err) => {
                                    dead.push(ctx.dead_row(&node, r, &schema, err.0));
                                    return false;
                                }
                            }
                        }
                        for ((_, target, _), v) in map.computed.iter().zip(values.drain(..)) {
                            match target {
                                MapTarget::Replace(i) => r.row[*i] = v,
                                MapTarget::Append => r.row.push(v),
                            }
                        }
                        if let Some(keep) = &map.keep {
                            let row = std::mem::take(&mut r.row);
                            r.row = keep.iter().map(|&i| row[i].clone()).collect();
                        }
                        true
                    });
                    ctx.dead(epoch_of(&cap), std::mem::take(&mut dead));
                    output.session(&cap).give_container(data);
                });
            }
        })
    }

    fn route(
        self,
        name: &str,
        routes: Vec<(String, Expr)>,
        used: Vec<bool>,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Vec<Records<'s>> {
        let mut builder = OperatorBuilder::new(name.to_string(), self.scope());
        let mut input = builder.new_input(self, Pipeline);
        let mut outputs = Vec::new();
        let mut streams = Vec::new();
        for _ in 0..=routes.len() {
            let (o, s) = builder.new_output::<Vec<Record>>();
            outputs.push(o);
            streams.push(s);
        }
        let node = name.to_string();
        builder.build(move |_| {
            let mut parts: Vec<Vec<Record>> = vec![Vec::new(); routes.len() + 1];
            let mut dead = Vec::new();
            move |_frontiers| {
                let mut handles: Vec<_> = outputs.iter_mut().map(|o| o.activate()).collect();
                input.for_each(|cap, data| {
                    let mut filtered = 0u64;
                    'records: for r in data.drain(..) {
                        let mut matched: Vec<usize> = Vec::new();
                        for (i, (_, cond)) in routes.iter().enumerate() {
                            match cond.test(&r.row) {
                                Ok(true) => matched.push(i),
                                Ok(false) => {}
                                Err(e) => {
                                    dead.push(ctx.dead_row(&node, &r, &schema, e.0));
                                    continue 'records;
                                }
                            }
                        }
                        if matched.is_empty() {
                            matched.push(routes.len());
                        }
                        matched.retain(|&o| used[o]);
                        match matched.len() {
                            0 => filtered += 1,
                            1 => parts[matched[0]].push(r),
                            _ => {
                                for &o in &matched[1..] {
                                    parts[o].push(r.clone());
                                }
                                parts[matched[0]].push(r);
                            }
                        }
                    }
                    ctx.count(epoch_of(&cap), |c| c.filtered += filtered);
                    ctx.dead(epoch_of(&cap), std::mem::take(&mut dead));
                    for (o, part) in parts.iter_mut().enumerate() {
                        if !part.is_empty() {
                            handles[o].give(&cap, part);
                            part.clear();
                        }
                    }
                });
            }
        });
        streams
    }

    fn write_sink(
        self,
        node: usize,
        name: &str,
        sink: &SinkPlan,
        schema: RowSchema,
        ctx: Rc<WorkerContext>,
    ) -> Stream<'s, Epoch, Vec<()>> {
        let sink = sink.clone();
        let label = capitalise(name);
        let node_id = format!("sinks.{name}");
        let encoder = avro::Encoder::new(&schema);
        let schema_id = ctx.sink_schema_ids.get(&node).copied();
        let partitions = ctx.sink_partitions.get(&node).copied().unwrap_or(1).max(1);
        let window_fields = schema
            .index_of("window_start")
            .zip(schema.index_of("window_end"));
        self.unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(Pipeline, name, move |_, _| {
            let mut round_robin = ctx.index as i32;
            let mut dead = Vec::new();
            let mut text = String::new();
            move |input, _output| {
                input.for_each(|cap, data| {
                    let epoch = epoch_of(&cap);
                    let mut out = Vec::with_capacity(data.len());
                    let mut trace = Vec::new();
                    for r in data.drain(..) {
                        text.clear();
                        if ctx.trace || matches!(sink, SinkPlan::Stdout) {
                            json::write_row(&r.row, &schema, true, &mut text);
                        }
                        if r.tombstone {
                            text.clear();
                            text.push_str("null");
                        }
                        let mut parquet_row = None;
                        let (key, value, window) = match &sink {
                            SinkPlan::Stdout => {
                                (r.key.clone(), Some(text.clone().into_bytes()), None)
                            }
                            // Files and tables are not upsert streams here: a
                            // deletion has no row.
                            SinkPlan::File { .. } | SinkPlan::Postgres { .. } if r.tombstone => {
                                continue
                            }
                            SinkPlan::Postgres { .. } => {
                                parquet_row = Some(r.row.clone());
                                (r.key.clone(), None, None)
                            }
                            SinkPlan::File { config, .. } => {
                                let window =
                                    window_fields.and_then(|(s, e)| match (&r.row[s], &r.row[e]) {
                                        (Value::Int(s), Value::Int(e)) => Some((*s, *e)),
                                        _ => None,
                                    });
                                if config.format == FileFormat::Parquet {
                                    parquet_row = Some(r.row.clone());
                                    (r.key.clone(), None, window)
                                } else {
                                    let mut line = String::with_capacity(96);
                                    csv::write_row(&r.row, &mut line);
                                    (r.key.clone(), Some(line.into_bytes()), window)
                                }
                            }
                            SinkPlan::Kafka { config, key } => {
                                let key = match key {
                                    None => r.key.clone(),
                                    Some(e) => match e.eval(&r.row) {
                                        Ok(Value::Null) => None,
                                        Ok(Value::Str(s)) => Some(Arc::from(s.as_bytes())),
                                        Ok(Value::Bytes(b)) => Some(b),
                                        Ok(v) => {
                                            let mut s = String::new();
                                            json::write_value(&v, &mut s);
                                            Some(Arc::from(s.as_bytes()))
                                        }
                                        Err(e) => {
                                            dead.push(ctx.dead_row(
                                                &node_id,
                                                &r,
                                                &schema,
                                                format!("key: {}", e.0),
                                            ));
                                            continue;
                                        }
                                    },
                                };
                                if r.tombstone {
                                    (key, None, None)
                                } else {
                                    let mut value = Vec::with_capacity(64);
                                    match config.format {
                                        Format::Json => {
                                            let mut s = String::with_capacity(128);
                                            json::write_row(&r.row, &schema, false, &mut s);
                                            value = s.into_bytes();
                                        }
                                        Format::Avro => {
                                            avro::write_wire_header(
                                                &mut value,
                                                schema_id.unwrap_or(0),
                                            );
                                            if let Err(e) = encoder.encode(&r.row, &mut value) {
                                                dead.push(ctx.dead_row(
                                                    &node_id,
                                                    &r,
                                                    &schema,
                                                    e.to_string(),
                                                ));
                                                continue;
                                            }
                                        }
                                    }
                                    (key, Some(value), None)
                                }
                            }
                        };
                        if ctx.trace {
                            trace.push(trace_line(&label, key.as_deref(), &text));
                        }
                        let partition = Some(match &key {
                            Some(k) => partition_for_key(k, partitions),
                            None => {
                                round_robin = (round_robin + 1) % partitions;
                                round_robin
                            }
                        });
                        out.push(OutRecord {
                            key,
                            value,
                            partition,
                            window,
                            row: parquet_row.take(),
                        });
                    }
                    if !trace.is_empty() {
                        let _ = ctx.writer.send(WriterMsg::Trace(trace));
                    }
                    ctx.dead(epoch, std::mem::take(&mut dead));
                    if !out.is_empty() {
                        ctx.in_flight.fetch_add(out.len() as i64, Ordering::Relaxed);
                        let _ = ctx.writer.send(WriterMsg::Out {
                            sink: node,
                            epoch,
                            records: out,
                        });
                    }
                });
            }
        })
    }
}

/// The epoch a message was sent at; epochs are totally ordered, so every
/// message's stamp has one least time.
pub(crate) fn epoch_of(cap: &timely::dataflow::operators::InputCapability<Epoch>) -> Epoch {
    *cap.least().expect("messages carry an epoch")
}
