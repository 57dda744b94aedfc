//! The process's writer thread: it takes everything the workers send,
//! stages each epoch's records in the sinks, and once every worker is
//! past an epoch, commits it through the epoch-sink protocol in the order
//! the coordinator gives.

use super::commit::EpochOutput;
use super::coordinator::Completion;
use super::local::{Backend, RunOptions, RunSummary, Sinks};
use super::report::progress_line;
use super::RunError;
use crate::dataflow::output::{EpochCounts, WriterMsg};
use crate::dataflow::Epoch;
use crate::plan::{Plan, SinkPlan};
use crate::record::{DeadLetter, OutRecord};
use crossbeam_channel::{Receiver, RecvTimeoutError};
use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub(super) struct EpochTotals {
    pub(super) counts: EpochCounts,
    pub(super) out: Vec<u64>,
}

#[allow(clippy::too_many_arguments)]
pub(super) fn write_loop(
    plan: &Plan,
    opts: &RunOptions,
    workers: usize,
    rx: Receiver<WriterMsg>,
    mut targets: Sinks,
    mut backend: Backend,
    in_flight: Arc<AtomicI64>,
    start: Instant,
    resume_after: Epoch,
) -> Result<RunSummary, RunError> {
    let sink_names: HashMap<usize, String> =
        plan.sinks().map(|(i, n, _)| (i, n.name.clone())).collect();
    let sink_order: Vec<usize> = plan.sinks().map(|(i, _, _)| i).collect();
    let source_names: Vec<String> = plan.sources().map(|(_, n, _)| n.name.clone()).collect();
    let mut summary = RunSummary::default();
    let mut completion = Completion::new(workers, resume_after);
    // Records staged per epoch, out of flight once the epoch commits.
    let mut staged: BTreeMap<Epoch, i64> = BTreeMap::new();
    // The dead-letter sink, unless dead letters go to a Kafka topic.
    let dead_letter_sink = plan.dead_letter_sink.filter(|i| {
        !matches!(
            plan.nodes[*i].kind,
            crate::plan::NodeKind::Sink(SinkPlan::Kafka { .. })
        )
    });
    let mut finished = 0;
    let mut epochs: BTreeMap<Epoch, EpochTotals> = BTreeMap::new();
    // Output held until its epoch is complete and can commit.
    let mut pending: BTreeMap<Epoch, EpochOutput> = BTreeMap::new();
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut last_epoch_at = start;
    let interval_s = plan.job.checkpoint_interval_ms as f64 / 1000.0;
    let new_totals = || EpochTotals {
        counts: EpochCounts::default(),
        out: vec![0; sink_order.len()],
    };
    while finished < workers {
        let msg = match rx.recv_timeout(Duration::from_millis(20)) {
            Ok(m) => m,
            Err(RecvTimeoutError::Timeout) => {
                if let Backend::Kafka(c) = &backend {
                    c.poll();
                }
                let _ = out.flush();
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => break,
        };
        // An epoch commits once: output for one already committed would
        // be committed under its number a second time.
        if let WriterMsg::Out { epoch, .. }
        | WriterMsg::Dead { epoch, .. }
        | WriterMsg::Changelog { epoch, .. } = &msg
        {
            if completion.is_stale(*epoch) {
                return Err(RunError::StaleEpoch {
                    epoch: *epoch,
                    complete: completion.complete(),
                });
            }
        }
        match msg {
            WriterMsg::Out {
                sink,
                epoch,
                records,
            } => {
                let n = records.len();
                let pos = sink_order.iter().position(|s| *s == sink).unwrap_or(0);
                epochs.entry(epoch).or_insert_with(new_totals).out[pos] += n as u64;
                targets.get_mut(&sink).unwrap().stage(epoch, records);
                *staged.entry(epoch).or_default() += n as i64;
            }
            WriterMsg::Dead { epoch, records } => match (&backend, dead_letter_sink) {
                (Backend::Memory { .. }, _) => summary.dead_letters.extend(records),
                // A dead-letter sink outside Kafka gets them as rows.
                (Backend::Kafka(_), Some(i)) => targets
                    .get_mut(&i)
                    .unwrap()
                    .stage(epoch, records.iter().map(dead_letter_record).collect()),
                (Backend::Kafka(_), None) => pending.entry(epoch).or_default().dead.extend(records),
            },
            WriterMsg::Changelog {
                epoch,
                topic,
                records,
            } => match &backend {
                Backend::Kafka(_) => pending
                    .entry(epoch)
                    .or_default()
                    .changelog
                    .push((topic, records)),
                Backend::Memory { keep: true } => summary.changelog.extend(
                    records
                        .into_iter()
                        .map(|(k, v)| (epoch, topic.to_string(), k, v)),
                ),
                Backend::Memory { keep: false } => {}
            },
            WriterMsg::Trace(lines) => {
                for l in lines {
                    let _ = writeln!(out, "{l}");
                }
            }
            WriterMsg::Progress {
                worker,
                upto: u,
                counts,
            } => {
                for (e, c) in counts {
                    epochs.entry(e).or_insert_with(new_totals).counts.add(&c);
                }
                if completion.report(worker, u).is_empty() {
                    continue;
                }
                let complete = completion.complete();
                let done_totals = {
                    let later = epochs.split_off(&complete);
                    std::mem::replace(&mut epochs, later)
                };
                let done_output = {
                    let later = pending.split_off(&complete);
                    std::mem::replace(&mut pending, later)
                };
                let mut done: BTreeMap<Epoch, (Option<EpochTotals>, EpochOutput)> = BTreeMap::new();
                for (e, t) in done_totals {
                    done.entry(e)
                        .or_insert_with(|| (None, EpochOutput::default()))
                        .0 = Some(t);
                }
                for (e, o) in done_output {
                    done.entry(e)
                        .or_insert_with(|| (None, EpochOutput::default()))
                        .1 = o;
                }
                for (e, (totals, mut output)) in done {
                    let read = totals
                        .as_ref()
                        .map(|t| t.counts.ranges.clone())
                        .unwrap_or_default();
                    for i in &sink_order {
                        if let Some(records) = targets.get_mut(i).unwrap().transactional(e) {
                            output.records.push(records);
                        }
                    }
                    // Files and rows need the epoch logged even when
                    // nothing else does, so its number is never reused.
                    let external = targets.values().any(|t| t.holds(e));
                    let _ = out.flush();
                    let mut write_files = || -> Result<(), RunError> {
                        for i in &sink_order {
                            targets.get_mut(i).unwrap().pre_commit(e)?;
                        }
                        for i in &sink_order {
                            let c = targets.get_mut(i).unwrap().commit(e)?;
                            summary.files.extend(c.files);
                            summary.postgres_rows += c.rows;
                            summary.postgres_time += c.time;
                            if let Some((path, n)) = c.fallback {
                                summary.fallback_rows += n;
                                eprintln!(
                                    "epoch {e}: postgres unreachable, sink {}: {n} rows written to {}",
                                    sink_names[i],
                                    path.display()
                                );
                            }
                        }
                        Ok(())
                    };
                    match &mut backend {
                        Backend::Kafka(committer) => committer.commit(
                            e,
                            output,
                            &read,
                            external,
                            write_files,
                            &plan.job.name,
                        )?,
                        Backend::Memory { .. } => write_files()?,
                    }
                    let sent = staged.split_off(&(e + 1));
                    let sent: i64 = std::mem::replace(&mut staged, sent).into_values().sum();
                    in_flight.fetch_sub(sent, Ordering::Relaxed);
                    let Some(t) = totals else { continue };
                    let records_in: u64 = t.counts.inputs.iter().sum();
                    let idle = records_in == 0
                        && t.out.iter().all(|n| *n == 0)
                        && t.counts.dead == 0
                        && t.counts.filtered == 0;
                    if idle {
                        continue;
                    }
                    summary.epochs += 1;
                    summary.records_in += records_in;
                    summary.dead_lettered += t.counts.dead;
                    summary.late += t.counts.late;
                    summary.filtered += t.counts.filtered;
                    for (pos, n) in t.out.iter().enumerate() {
                        *summary
                            .records_out
                            .entry(sink_names[&sink_order[pos]].clone())
                            .or_default() += n;
                    }
                    if opts.progress {
                        let _ = out.flush();
                        let elapsed = last_epoch_at.elapsed().as_secs_f64().max(interval_s);
                        last_epoch_at = Instant::now();
                        eprintln!(
                            "{}",
                            progress_line(
                                e,
                                &t,
                                records_in,
                                elapsed,
                                &source_names,
                                &sink_order,
                                &sink_names
                            )
                        );
                    }
                }
            }
            WriterMsg::Finished { .. } => finished += 1,
        }
    }
    let _ = out.flush();
    if let Backend::Kafka(c) = &backend {
        c.flush()?;
    }
    for (i, n, _) in plan.sinks() {
        summary.records_out.entry(n.name.clone()).or_default();
        let kept = targets.get_mut(&i).unwrap().kept();
        if !kept.is_empty() {
            summary
                .output
                .entry(n.name.clone())
                .or_default()
                .extend(kept);
        }
    }
    summary.elapsed = start.elapsed();
    Ok(summary)
}

/// A dead letter as a record of a dead-letter sink outside Kafka: a row
/// for tables and files, its JSON text for the console.
fn dead_letter_record(d: &DeadLetter) -> OutRecord {
    let row = dead_letter_row(d);
    let text = crate::format::json::row_to_string(&row, &crate::plan::dead_letter_schema(), true);
    OutRecord {
        key: d.key.clone(),
        value: Some(text.into_bytes()),
        partition: None,
        window: None,
        row: Some(row),
    }
}

/// A dead letter as a row of the dead-letter sink's table.
fn dead_letter_row(d: &DeadLetter) -> crate::record::Row {
    use crate::record::Value;
    vec![
        d.value.as_deref().map_or(Value::Null, |v| {
            Value::Str(String::from_utf8_lossy(v).as_ref().into())
        }),
        Value::Str(d.reason.as_str().into()),
        Value::Str(d.topic.as_ref().into()),
        Value::Int(d.partition as i64),
        Value::Int(d.offset),
    ]
}
