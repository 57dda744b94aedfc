//! `jobctl verify JOB`: what the job has committed, sink by sink, one line
//! per record, sorted, as a `read_committed` consumer of a broker that hides
//! aborted transactions would see it. It does not rely on the broker doing
//! so (Tansu does not): a record counts when its `rill-epoch` is an epoch
//! the writer committed (by the progress on the epoch log) and its
//! `rill-attempt` is that of the copy that committed (the epoch log's last
//! live record of the epoch; see `planner::committed_copies`).
//!
//! Sinks fed by a plain aggregate are upsert streams: for them only the
//! latest value of each key is printed, as a compacted topic keeps it.
//! Files print their rows with the window they belong to (not the epoch
//! in the file name, which depends on how the input was cut). Doubles are
//! printed at 10 significant digits (see `comparable`).

use crate::connectors::kafka_admin;
use crate::format::{avro, csv, json, parquet};
use crate::plan::{NodeKind, Plan, SinkPlan};
use crate::runtime::committed::CommittedView;
use crate::spec::{FileFormat, Format};
use anyhow::{Context, Result};
use clap::Args;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

#[derive(Args)]
pub struct VerifyArgs {
    job: PathBuf,
    /// A librdkafka property, as kcat takes one; wins over the job's.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    property: Vec<String>,
    /// For upsert streams, print every committed update of each key, in
    /// commit order (`key K update N value V`), not only the latest.
    #[arg(long)]
    updates: bool,
}

fn committed(plan: &Plan) -> Result<CommittedView> {
    Ok(CommittedView::read(&plan.job)?)
}

/// The committed records of a topic written by this job's writers, in
/// the order they were written: (epoch, key, value).
fn committed_records(
    plan: &Plan,
    topic: &str,
    c: &CommittedView,
) -> Result<Vec<(u64, Option<Vec<u8>>, Option<Vec<u8>>)>> {
    let ours = |w: &str| {
        w.rsplit_once("-w")
            .is_some_and(|(job, _)| job == plan.job.name)
    };
    let mut all = Vec::new();
    kafka_admin::read_to_end(&plan.job.brokers, topic, |m| {
        let epoch = m.header("rill-epoch").and_then(|e| e.parse::<u64>().ok());
        let attempt = m.header("rill-attempt").and_then(|a| a.parse::<u32>().ok());
        if let (Some(epoch), Some(attempt)) = (epoch, attempt) {
            let writer = m.header("rill-writer");
            if writer.is_some_and(ours) && c.counts(writer, epoch, attempt) {
                all.push((epoch, m.partition, m.offset, m.key, m.value));
            }
        }
    })?;
    all.sort_by_key(|(epoch, partition, offset, ..)| (*epoch, *partition, *offset));
    Ok(all
        .into_iter()
        .map(|(epoch, _, _, k, v)| (epoch, k, v))
        .collect())
}

/// Doubles at 10 significant digits: a sum of doubles depends on the
/// order its terms were added in, which depends on how the input was cut
/// into epochs, so two correct runs can differ in the last bits.
fn comparable(row: crate::record::Row) -> crate::record::Row {
    row.into_iter()
        .map(|v| match v {
            crate::record::Value::Double(d) if d.is_finite() => {
                crate::record::Value::Double(format!("{d:.9e}").parse().unwrap_or(d))
            }
            v => v,
        })
        .collect()
}

/// What the job has committed, a line per record (per update of an upsert
/// stream's key when `updates`), sorted.
pub fn lines(plan: &Plan, updates: bool) -> Result<Vec<String>> {
    let c = committed(plan)?;
    let registry = plan.job.registry();
    let mut decoders: HashMap<u32, Option<(avro::Decoder, crate::record::RowSchema)>> =
        HashMap::new();
    let mut out = Vec::new();
    for (i, node, sink) in plan.sinks() {
        let upsert = node.inputs.first().is_some_and(
            |p| matches!(&plan.nodes[p.node].kind, NodeKind::Aggregate(a) if a.window.is_none()),
        );
        match sink {
            SinkPlan::Kafka { config, .. } => {
                let text = |v: &[u8],
                            decoders: &mut HashMap<
                    u32,
                    Option<(avro::Decoder, crate::record::RowSchema)>,
                >|
                 -> String {
                    if config.format == Format::Avro {
                        if let Ok((id, body)) = avro::split_wire(v) {
                            let d = decoders.entry(id).or_insert_with(|| {
                                let schema =
                                    avro::parse_schema(&registry.schema_by_id(id).ok()?).ok()?;
                                let rows = avro::row_schema(&schema).ok()?;
                                Some((avro::Decoder::new(&schema, &schema, &rows).ok()?, rows))
                            });
                            if let Some((d, rows)) = d {
                                if let Ok(row) = d.decode(body) {
                                    return json::row_to_string(&comparable(row), rows, true);
                                }
                            }
                        }
                    }
                    String::from_utf8_lossy(v).into_owned()
                };
                let records = committed_records(plan, &config.topic, &c)?;
                let key_text = |k: &Option<Vec<u8>>| {
                    k.as_deref().map_or("null".to_string(), |k| {
                        String::from_utf8_lossy(k).into_owned()
                    })
                };
                if upsert && updates {
                    let mut seq: HashMap<String, usize> = HashMap::new();
                    for (_, k, v) in records {
                        let k = key_text(&k);
                        let n = seq.entry(k.clone()).or_default();
                        *n += 1;
                        let v = v.map_or("null".to_string(), |v| text(&v, &mut decoders));
                        out.push(format!("{} key {k} update {n:06} value {v}", node.name));
                    }
                } else if upsert {
                    let mut latest: BTreeMap<String, Option<Vec<u8>>> = BTreeMap::new();
                    for (_, k, v) in records {
                        latest.insert(key_text(&k), v);
                    }
                    for (k, v) in latest {
                        if let Some(v) = v {
                            out.push(format!(
                                "{} key {k} value {}",
                                node.name,
                                text(&v, &mut decoders)
                            ));
                        }
                    }
                } else {
                    for (_, k, v) in records {
                        let v = v.map_or("null".to_string(), |v| text(&v, &mut decoders));
                        out.push(format!("{} key {} value {v}", node.name, key_text(&k)));
                    }
                }
            }
            SinkPlan::File { config, dir } => {
                let schema = plan.input_schema(i);
                let Ok(entries) = std::fs::read_dir(dir) else {
                    continue;
                };
                for entry in entries {
                    let path = entry?.path();
                    let name = path
                        .file_name()
                        .and_then(|n| n.to_str())
                        .unwrap_or_default()
                        .to_string();
                    if name.starts_with('.') {
                        continue;
                    }
                    let rows: Vec<String> = match config.format {
                        FileFormat::Parquet => parquet::read(&path, schema)
                            .with_context(|| format!("reading {}", path.display()))?
                            .iter()
                            .map(|r| {
                                let mut s = String::new();
                                csv::write_row(r, &mut s);
                                s
                            })
                            .collect(),
                        FileFormat::Csv => {
                            let bytes = std::fs::read(&path)?;
                            let text = if name.ends_with(".gz") {
                                use std::io::Read;
                                let mut s = String::new();
                                flate2::read::GzDecoder::new(&bytes[..]).read_to_string(&mut s)?;
                                s
                            } else {
                                String::from_utf8_lossy(&bytes).into_owned()
                            };
                            text.lines().skip(1).map(str::to_string).collect()
                        }
                    };
                    // The window part of the name, without the epoch.
                    let window = name
                        .rsplit_once("_e")
                        .map_or(name.as_str(), |(w, _)| w)
                        .to_string();
                    for r in rows {
                        out.push(format!("{} file {window} row {r}", node.name));
                    }
                }
            }
            SinkPlan::Stdout => {}
            SinkPlan::Postgres { config, .. } => {
                for row in crate::connectors::postgres_sink::table_rows(&config.url, &config.table)?
                {
                    out.push(format!("{} row {row}", node.name));
                }
            }
        }
    }
    for (_, k, v) in committed_records(plan, &plan.job.dead_letter_topic(), &c)? {
        let key = k.as_deref().map_or("null".to_string(), |k| {
            String::from_utf8_lossy(k).into_owned()
        });
        out.push(format!(
            "dead-letter key {key} value {}",
            v.as_deref()
                .map_or("null".into(), |v| String::from_utf8_lossy(v).into_owned())
        ));
    }
    out.sort();
    Ok(out)
}

pub fn run(args: VerifyArgs) -> Result<()> {
    let mut plan = super::load_plan(&args.job)?;
    plan.job.brokers = plan
        .job
        .brokers
        .with(&super::kafka_args::properties(&args.property)?);
    kafka_admin::check_broker(&plan.job.brokers)?;
    let lines = lines(&plan, args.updates)?;
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    for l in &lines {
        writeln!(out, "{l}")?;
    }
    eprintln!("{}: {} committed records", plan.job.name, lines.len());
    Ok(())
}
