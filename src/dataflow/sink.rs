//! Sink encoding: rows to the bytes (or rows) a sink stores, partitioned
//! by key as the Java client would, handed to the writer with their epoch.

use super::output::{capitalise, trace_line, WriterMsg};
use super::{epoch_of, Epoch, Records, WorkerContext};
use crate::connectors::partition_for_key;
use crate::format::{avro, csv, json, pg_copy};
use crate::plan::SinkPlan;
use crate::record::OutRecord;
use crate::record::{DeadLetter, Record, RowSchema, Value};
use crate::spec::{FileFormat, Format};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::{Exchange, Pipeline};
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::operators::Probe;
use timely::dataflow::{ProbeHandle, Stream};

/// What a sink's store refuses on every attempt, known before a record is
/// sent. Such a record goes to the dead letters with the reason instead of
/// failing its epoch again and again.
#[derive(Clone, Debug, Default)]
pub struct SinkLimits {
    /// A compacted Kafka topic: the broker refuses records without a key.
    pub key_required: bool,
    /// Per field of the sink's rows: its table column is NOT NULL.
    pub not_null: Vec<bool>,
    /// Text columns cannot hold a NUL byte (Postgres).
    pub text_without_nul: bool,
}

impl SinkLimits {
    /// Why the store refuses this row, if it does.
    fn refuses_row(&self, row: &[Value], schema: &RowSchema) -> Option<String> {
        row.iter()
            .zip(&schema.fields)
            .enumerate()
            .find_map(|(i, (v, f))| {
                let nul = self.text_without_nul
                    && match v {
                        Value::Str(s) => s.contains('\0'),
                        Value::Bytes(b) => {
                            f.ty == crate::record::FieldType::String && b.contains(&0)
                        }
                        _ => false,
                    };
                if nul {
                    Some(format!(
                        "column `{}`: postgres text cannot hold a NUL byte",
                        f.name
                    ))
                } else if matches!(v, Value::Null) && self.not_null.get(i) == Some(&true) {
                    Some(format!(
                        "column `{}` is NOT NULL and the record has no value for it",
                        f.name
                    ))
                } else {
                    None
                }
            })
    }
}

/// A sink of the job as the dataflow builds it.
pub(crate) struct SinkSpec<'a> {
    pub node: usize,
    pub name: &'a str,
    pub plan: &'a SinkPlan,
    /// The rows it takes.
    pub schema: RowSchema,
}

pub(crate) trait WriteSinks<'s> {
    /// Encodes the records for each of `sinks`, which all read this
    /// stream, and hands them to the writer; `probe` learns when every one
    /// of an epoch has been handed over. One operator serves them all, so
    /// a record read by two sinks (a topic and a table) is encoded for both
    /// where it is, not copied for each first.
    fn write_sinks(
        self,
        sinks: Vec<SinkSpec<'_>>,
        ctx: Rc<WorkerContext>,
        probe: &ProbeHandle<Epoch>,
    );
}

impl<'s> WriteSinks<'s> for Records<'s> {
    fn write_sinks(
        self,
        sinks: Vec<SinkSpec<'_>>,
        ctx: Rc<WorkerContext>,
        probe: &ProbeHandle<Epoch>,
    ) {
        // In a cluster, each process's writer owns some partitions of a
        // topic, and a record goes to its partition's owner: such a sink
        // has an operator of its own, whose output is routed.
        let route = sinks.iter().any(|s| routed(&ctx, s.plan));
        assert!(
            !route || sinks.len() == 1,
            "a routed sink is alone in its operator"
        );
        let node = sinks[0].node;
        let name = sinks.iter().map(|s| s.name).collect::<Vec<_>>().join(", ");
        let hand_ctx = ctx.clone();
        let mut encoders: Vec<SinkEncoder> = sinks
            .into_iter()
            .map(|s| SinkEncoder::new(s, &ctx))
            .collect();
        let last = encoders.len() - 1;
        // The key goes to the last sink that keeps it.
        let key_last = encoders
            .iter()
            .rposition(|e| e.keeps_key(&ctx))
            .unwrap_or(last);
        let encoded = self.unary::<CapacityContainerBuilder<Vec<Routed>>, _, _, _>(
            Pipeline,
            &name,
            move |_, _| {
                move |input, output| {
                    input.for_each(|cap, data| {
                        let epoch = epoch_of(&cap);
                        for e in encoders.iter_mut() {
                            e.out.reserve(data.len());
                        }
                        for mut r in data.drain(..) {
                            for (i, e) in encoders.iter_mut().enumerate() {
                                e.encode(&ctx, &mut r, i == key_last, i == last);
                            }
                            crate::record::reuse_row(std::mem::take(&mut r.row));
                        }
                        for e in encoders.iter_mut() {
                            let out = e.flush(&ctx, epoch);
                            if route {
                                let workers = (ctx.peers / ctx.processes) as u32;
                                let processes = ctx.processes as u32;
                                output.session(&cap).give_iterator(
                                    out.into_iter().map(|r| Routed::new(r, processes, workers)),
                                );
                            } else {
                                hand(&ctx, e.node, epoch, out);
                            }
                        }
                    });
                }
            },
        );
        // Alone, the records went to the writer above and nothing flows on.
        if !route {
            encoded.probe_with(probe);
            return;
        }
        encoded
            .sink_done(Exchange::new(|r: &Routed| r.worker as u64), node, hand_ctx)
            .probe_with(probe);
    }
}

/// Whether a sink's records go to the worker of the process that owns
/// their partition (a Kafka sink in a cluster): such a sink has an operator
/// of its own.
pub(crate) fn routed(ctx: &WorkerContext, plan: &SinkPlan) -> bool {
    ctx.processes > 1 && matches!(plan, SinkPlan::Kafka { .. })
}

/// One sink's encoding on one worker, and what it has made of a batch.
struct SinkEncoder {
    node: usize,
    sink: SinkPlan,
    schema: RowSchema,
    label: String,
    node_id: String,
    encoder: avro::Encoder,
    schema_id: Option<u32>,
    partitions: i32,
    limits: SinkLimits,
    window_fields: Option<(usize, usize)>,
    round_robin: i32,
    /// A record's JSON text, for the console and for tracing.
    text: String,
    // Encoded values of many records share one allocation: a value is a
    // slice of it, freed when its last slice is.
    values: Values,
    out: Vec<OutRecord>,
    dead: Vec<DeadLetter>,
    trace: Vec<String>,
}

impl SinkEncoder {
    fn new(spec: SinkSpec<'_>, ctx: &WorkerContext) -> Self {
        let node = spec.node;
        SinkEncoder {
            node,
            sink: spec.plan.clone(),
            label: capitalise(spec.name),
            node_id: format!("sinks.{}", spec.name),
            encoder: avro::Encoder::new(&spec.schema),
            schema_id: ctx.sink_schema_ids.get(&node).copied(),
            partitions: ctx.sink_partitions.get(&node).copied().unwrap_or(1).max(1),
            limits: ctx.sink_limits.get(&node).cloned().unwrap_or_default(),
            window_fields: spec
                .schema
                .index_of("window_start")
                .zip(spec.schema.index_of("window_end")),
            round_robin: ctx.index as i32,
            schema: spec.schema,
            text: String::new(),
            values: Values::default(),
            out: Vec::new(),
            dead: Vec::new(),
            trace: Vec::new(),
        }
    }

    /// The batch's records for the writer, after its trace lines and dead
    /// letters have gone their ways.
    fn flush(&mut self, ctx: &WorkerContext, epoch: Epoch) -> Vec<OutRecord> {
        if !self.trace.is_empty() {
            let _ = ctx
                .writer
                .send(WriterMsg::Trace(std::mem::take(&mut self.trace)));
        }
        ctx.dead(epoch, std::mem::take(&mut self.dead));
        std::mem::take(&mut self.out)
    }

    /// Whether this sink's records carry the record's key. A table's rows
    /// do not: its sink neither shares the key (whose count the writer's
    /// core would touch again) nor hashes it for a partition.
    fn keeps_key(&self, ctx: &WorkerContext) -> bool {
        ctx.trace || !matches!(self.sink, SinkPlan::Postgres { .. })
    }

    /// Encodes `r` for this sink, or makes it a dead letter. The last sink
    /// to keep a record's key may take it, and the last sink its row; the
    /// others copy them.
    fn encode(&mut self, ctx: &WorkerContext, r: &mut Record, last_key: bool, last: bool) {
        let take_key = |r: &mut Record| {
            if last_key {
                r.key.take()
            } else {
                r.key.clone()
            }
        };
        let text = &mut self.text;
        let values = &mut self.values;
        let schema = &self.schema;
        text.clear();
        if ctx.trace || matches!(self.sink, SinkPlan::Stdout) {
            json::write_row(&r.row, schema, true, text);
        }
        if r.tombstone {
            text.clear();
            text.push_str("null");
        }
        let mut parquet_row = None;
        let (key, value, window) = match &self.sink {
            SinkPlan::Stdout => (r.key.clone(), Some(values.copy(text.as_bytes())), None),
            // Files and tables are not upsert streams here: a deletion has
            // no row.
            SinkPlan::File { .. } | SinkPlan::Postgres { .. } if r.tombstone => return,
            SinkPlan::Postgres { .. } => {
                if let Some(reason) = self.limits.refuses_row(&r.row, schema) {
                    self.dead
                        .push(ctx.dead_row(&self.node_id, r, schema, reason));
                    return;
                }
                // Encoded here, in binary COPY form: the sink's thread only
                // sends the bytes on.
                values.bytes.clear();
                if let Err(reason) = pg_copy::encode_row(&mut values.bytes, &r.row, &schema.fields)
                {
                    self.dead
                        .push(ctx.dead_row(&self.node_id, r, schema, reason));
                    return;
                }
                let key = if ctx.trace { take_key(r) } else { None };
                (key, Some(values.take_bytes()), None)
            }
            SinkPlan::File { config, .. } => {
                let window = self
                    .window_fields
                    .and_then(|(s, e)| match (&r.row[s], &r.row[e]) {
                        (Value::Int(s), Value::Int(e)) => Some((*s, *e)),
                        _ => None,
                    });
                if config.format == FileFormat::Parquet {
                    parquet_row = Some(if last {
                        std::mem::take(&mut r.row)
                    } else {
                        r.row.clone()
                    });
                    (take_key(r), None, window)
                } else {
                    values.text.clear();
                    csv::write_row(&r.row, &mut values.text);
                    (r.key.clone(), Some(values.take_text()), window)
                }
            }
            SinkPlan::Kafka { config, key } => {
                // The record's own key is moved, not shared, by the last
                // sink to see it: its count would be touched here, again
                // when the record is dropped, and once more on the writer's
                // core. A dead letter below puts it back.
                let own_key = key.is_none();
                let key = match key {
                    None => take_key(r),
                    Some(e) => match e.eval(&r.row) {
                        Ok(Value::Null) => None,
                        // A computed key goes into the values' chunk.
                        Ok(Value::Str(s)) => Some(values.copy(s.as_bytes())),
                        Ok(Value::Bytes(b)) => Some(values.copy(&b)),
                        Ok(v) => {
                            let mut s = String::new();
                            json::write_value(&v, &mut s);
                            Some(values.copy(s.as_bytes()))
                        }
                        Err(e) => {
                            let reason = format!("key: {}", e.0);
                            self.dead
                                .push(ctx.dead_row(&self.node_id, r, schema, reason));
                            return;
                        }
                    },
                };
                if key.is_none() && self.limits.key_required {
                    let reason = format!(
                        "the record has no key, and topic {} is compacted: the broker refuses records without a key",
                        config.topic
                    );
                    self.dead
                        .push(ctx.dead_row(&self.node_id, r, schema, reason));
                    return;
                }
                if r.tombstone {
                    (key, None, None)
                } else {
                    let value = match config.format {
                        Format::Json => {
                            values.text.clear();
                            json::write_row(&r.row, schema, false, &mut values.text);
                            values.take_text()
                        }
                        Format::Text => {
                            values.bytes.clear();
                            crate::format::text::write_row(&r.row, &mut values.bytes);
                            values.take_bytes()
                        }
                        Format::Avro => {
                            values.bytes.clear();
                            avro::write_wire_header(&mut values.bytes, self.schema_id.unwrap_or(0));
                            if let Err(e) = self.encoder.encode(&r.row, &mut values.bytes) {
                                if own_key {
                                    r.key = key;
                                }
                                let reason = e.to_string();
                                self.dead
                                    .push(ctx.dead_row(&self.node_id, r, schema, reason));
                                return;
                            }
                            values.take_bytes()
                        }
                    };
                    (key, Some(value), None)
                }
            }
        };
        if ctx.trace {
            self.trace
                .push(trace_line(&self.label, key.as_deref(), text));
        }
        // Only a topic has partitions.
        let partition = match (&self.sink, &key) {
            (SinkPlan::Kafka { .. }, Some(k)) => Some(partition_for_key(k, self.partitions)),
            (SinkPlan::Kafka { .. }, None) => {
                self.round_robin = (self.round_robin + 1) % self.partitions;
                Some(self.round_robin)
            }
            _ => None,
        };
        self.out.push(OutRecord {
            key,
            value,
            partition,
            window,
            row: parquet_row,
        });
    }
}

/// Hands an epoch's records of sink `node` to the process's writer.
fn hand(ctx: &WorkerContext, node: usize, epoch: Epoch, out: Vec<OutRecord>) {
    if out.is_empty() {
        return;
    }
    ctx.in_flight.fetch_add(out.len() as i64, Ordering::Relaxed);
    ctx.fill.add(epoch, node, out.len());
    let _ = ctx.writer.send(WriterMsg::Out {
        sink: node,
        epoch,
        records: out,
    });
}

/// A Kafka record on its way to the worker of the process whose writer
/// owns its partition: partition p belongs to process p mod processes,
/// so no two writers ever have transactions open on one partition.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub(crate) struct Routed {
    worker: u32,
    partition: i32,
    key: Option<bytes::Bytes>,
    value: Option<bytes::Bytes>,
}

impl Routed {
    fn new(r: OutRecord, processes: u32, workers: u32) -> Self {
        let partition = r.partition.unwrap_or(0);
        let p = partition.max(0) as u32;
        Routed {
            worker: owner_worker(p, processes, workers),
            partition,
            key: r.key,
            value: r.value,
        }
    }

    fn into_record(self) -> OutRecord {
        OutRecord {
            key: self.key,
            value: self.value,
            partition: Some(self.partition),
            window: None,
            row: None,
        }
    }
}

/// The worker that hands partition `p`'s records to its owner's writer:
/// one of the owning process's workers (timely numbers a cluster's
/// workers process by process), spread over them by partition.
pub fn owner_worker(p: u32, processes: u32, workers: u32) -> u32 {
    let owner = p % processes;
    owner * workers + (p / processes) % workers.max(1)
}

trait SinkDone<'s> {
    fn sink_done<P>(
        self,
        pact: P,
        node: usize,
        ctx: Rc<WorkerContext>,
    ) -> Stream<'s, Epoch, Vec<()>>
    where
        P: timely::dataflow::channels::pact::ParallelizationContract<Epoch, Vec<Routed>>;
}

impl<'s> SinkDone<'s> for Stream<'s, Epoch, Vec<Routed>> {
    /// The records routed to this worker go to its writer; the stream that
    /// comes out says, by its frontier, when they all have.
    fn sink_done<P>(
        self,
        pact: P,
        node: usize,
        ctx: Rc<WorkerContext>,
    ) -> Stream<'s, Epoch, Vec<()>>
    where
        P: timely::dataflow::channels::pact::ParallelizationContract<Epoch, Vec<Routed>>,
    {
        self.unary::<CapacityContainerBuilder<Vec<()>>, _, _, _>(
            pact,
            "to the writer",
            move |_, _| {
                move |input, _output| {
                    input.for_each(|cap, data| {
                        let out = data.drain(..).map(Routed::into_record).collect();
                        hand(&ctx, node, epoch_of(&cap), out);
                    });
                }
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{Field, FieldType};
    use std::sync::Arc;

    fn schema() -> RowSchema {
        RowSchema {
            name: "Row".into(),
            fields: vec![
                Field::new("id", FieldType::Int),
                Field::new("name", FieldType::String),
            ],
        }
    }

    #[test]
    fn a_partition_goes_to_a_worker_of_the_process_that_owns_it() {
        // 2 processes of 2 workers: workers 0 and 1 are process 0's.
        let owners: Vec<u32> = (0..6).map(|p| owner_worker(p, 2, 2)).collect();
        assert_eq!(owners, vec![0, 2, 1, 3, 0, 2]);
        // 3 processes of 1 worker: partition p to process p mod 3.
        let owners: Vec<u32> = (0..4).map(|p| owner_worker(p, 3, 1)).collect();
        assert_eq!(owners, vec![0, 1, 2, 0]);
        // Alone, every partition is the process's own.
        assert!((0..8).all(|p| owner_worker(p, 1, 4) < 4));
    }

    #[test]
    fn a_table_refuses_null_in_a_not_null_column_and_nul_in_text() {
        let limits = SinkLimits {
            not_null: vec![true, false],
            text_without_nul: true,
            ..Default::default()
        };
        let s = schema();
        assert_eq!(
            limits.refuses_row(&[Value::Null, Value::Str("a".into())], &s),
            Some("column `id` is NOT NULL and the record has no value for it".into())
        );
        assert_eq!(
            limits.refuses_row(&[Value::Int(1), Value::Str("a\0b".into())], &s),
            Some("column `name`: postgres text cannot hold a NUL byte".into())
        );
        assert_eq!(
            limits.refuses_row(&[Value::Int(1), Value::Bytes(Arc::from(&b"a\0"[..]))], &s),
            Some("column `name`: postgres text cannot hold a NUL byte".into())
        );
        assert_eq!(limits.refuses_row(&[Value::Int(1), Value::Null], &s), None);
        // Files take both.
        let files = SinkLimits::default();
        assert_eq!(
            files.refuses_row(&[Value::Null, Value::Str("a\0b".into())], &s),
            None
        );
    }
}

/// Where a sink operator encodes values: each is encoded into a scratch
/// buffer, then copied into a chunk shared by the values that follow it.
/// One allocation serves hundreds of records instead of one each, which
/// the allocator felt on the worker that made them and on the writer that
/// dropped them.
#[derive(Default)]
struct Values {
    chunks: crate::record::ByteChunks,
    text: String,
    bytes: Vec<u8>,
}

impl Values {
    fn copy(&mut self, value: &[u8]) -> bytes::Bytes {
        self.chunks.copy(value)
    }

    fn take_text(&mut self) -> bytes::Bytes {
        let text = std::mem::take(&mut self.text);
        let value = self.copy(text.as_bytes());
        self.text = text;
        value
    }

    fn take_bytes(&mut self) -> bytes::Bytes {
        let bytes = std::mem::take(&mut self.bytes);
        let value = self.copy(&bytes);
        self.bytes = bytes;
        value
    }
}
