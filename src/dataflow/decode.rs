//! Raw bytes to rows: JSON, or Avro with a decoder per writer schema,
//! fetched from the registry off the worker. What cannot be decoded goes
//! to the dead letters with its reason.

use super::output::{trace_line, WriterMsg};
use super::{Epoch, Records, WorkerContext};
use crate::format::{avro, json, registry::RegistryClient};
use crate::record::DeadLetter;
use crate::record::{RawRecord, Record, RowSchema};
use crate::spec::Format;
use std::collections::{HashMap, HashSet};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use timely::container::CapacityContainerBuilder;
use timely::dataflow::channels::pact::Pipeline;
use timely::dataflow::operators::generic::Operator;
use timely::dataflow::Stream;

/// Raw bytes to rows; what cannot be decoded goes to the dead letters.
pub(super) trait Decode<'s> {
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
                        // Records of a topic mostly share one writer schema:
                        // the last id known is not looked up again.
                        let mut known = None;
                        'batches: for (_, batch) in pending.iter() {
                            for r in batch {
                                let Some(Ok((id, _))) = r.value.as_deref().map(avro::split_wire)
                                else {
                                    continue;
                                };
                                if known == Some(id) || decoders.contains_key(&id) {
                                    known = Some(id);
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

/// Lookups in this process waiting for the registry to answer: while any
/// do, the frontier is held on purpose, and a cluster's liveness check
/// does not take the wait for a lost peer.
pub static WAITING_FOR_REGISTRY: std::sync::atomic::AtomicUsize =
    std::sync::atomic::AtomicUsize::new(0);

/// Counts one wait off [`WAITING_FOR_REGISTRY`] when it ends, however it
/// ends; `told` says the wait was counted.
#[derive(Default)]
struct WaitingForRegistry {
    told: std::cell::Cell<bool>,
}

impl Drop for WaitingForRegistry {
    fn drop(&mut self) {
        if self.told.get() {
            WAITING_FOR_REGISTRY.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
    }
}

/// A writer schema by id, off the worker. Only an answer that cannot
/// change is final: while the registry is down or failing, the records
/// wait (and the job with them) instead of going to the dead letters,
/// which a replay would not repeat. (A second Ctrl-C quits a job that is
/// stuck waiting.)
fn fetch_schema(client: &RegistryClient, id: u32) -> Result<Arc<str>, String> {
    let mut wait = Duration::from_millis(100);
    let waiting = WaitingForRegistry::default();
    loop {
        match client.schema_by_id(id) {
            Ok(s) => return Ok(s),
            Err(e) if e.is_transient() => {
                if !waiting.told.replace(true) {
                    WAITING_FOR_REGISTRY.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    tracing::warn!(
                        "schema id {id}: {e}; records with this schema wait until it answers"
                    );
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
    // Records of a topic mostly share one writer schema: the last one's
    // decoder is at hand without hashing its id.
    let mut last: Option<(u32, Option<&Result<avro::Decoder, String>>)> = None;
    for (cap, batch) in batches {
        for raw in batch {
            let decoded = match &raw.value {
                None => Err("record has no value (a tombstone)".to_string()),
                Some(v) => match format {
                    Format::Json => {
                        json::decode(v, rows).map_err(|e| format!("not a valid JSON record: {e}"))
                    }
                    Format::Text => crate::format::text::decode(v),
                    Format::Avro => {
                        avro::split_wire(v)
                            .map_err(|e| e.to_string())
                            .and_then(|(id, body)| {
                                let decoder = match last {
                                    Some((at, d)) if at == id => d,
                                    _ => {
                                        let d = decoders.get(&id);
                                        last = Some((id, d));
                                        d
                                    }
                                };
                                match decoder {
                                    Some(Ok(d)) => {
                                        d.decode(body).map_err(|e| format!("schema id {id}: {e}"))
                                    }
                                    Some(Err(e)) => Err(e.clone()),
                                    None => Err(format!("schema id {id} is unknown")),
                                }
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
                    value: raw.value.map(|v| v.to_vec()),
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
