//! `jobctl produce TOPIC`: lines from stdin into a topic, one record per
//! line, as Kafka's console producer writes them: the seed's steps with
//! rill alone (`jobctl produce messages`, type, `jobctl tail responses`).
//!
//! A line that cannot be sent as asked (no key separator, not JSON, not a
//! row of the job's schema) is reported with its number and skipped; the
//! rest are sent, and the command then fails saying how many were not.

use crate::connectors::kafka_admin::{self, client_config, TopicKind};
use crate::format::{avro, json};
use crate::plan::Plan;
use crate::spec::Format;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

#[derive(Args)]
pub struct ProduceArgs {
    topic: String,
    #[command(flatten)]
    kafka: super::kafka_args::KafkaArgs,
    /// Split each line at the first SEPARATOR into the record's key and
    /// value (Kafka's `parse.key=true` with `key.separator`).
    #[arg(long, value_name = "SEPARATOR")]
    key_separator: Option<String>,
    /// How each line is sent: text as it is, JSON checked, or Avro encoded
    /// from a line of JSON with the schema of the job's source reading the
    /// topic (needs --job). Default: the format of that source, else text.
    #[arg(long, value_enum)]
    format: Option<LineFormat>,
    /// A job with a source reading TOPIC: its schema checks JSON lines and
    /// encodes Avro ones, and the topic is created with its partitions.
    #[arg(long)]
    job: Option<PathBuf>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
enum LineFormat {
    Text,
    Json,
    Avro,
}

/// How one line becomes a record's value.
enum Encoding {
    Text,
    Json(Option<crate::record::RowSchema>),
    Avro {
        id: u32,
        rows: crate::record::RowSchema,
        encoder: avro::Encoder,
    },
}

impl Encoding {
    fn value(&self, line: &[u8]) -> Result<Vec<u8>, String> {
        match self {
            Encoding::Text => Ok(line.to_vec()),
            Encoding::Json(None) => serde_json::from_slice::<serde_json::Value>(line)
                .map(|_| line.to_vec())
                .map_err(|e| format!("not JSON: {e}")),
            Encoding::Json(Some(rows)) => json::decode(line, rows)
                .map(|_| line.to_vec())
                .map_err(|e| format!("not a row of the source's schema: {e}")),
            Encoding::Avro { id, rows, encoder } => {
                let row = json::decode(line, rows)
                    .map_err(|e| format!("not a row of the source's schema: {e}"))?;
                let mut v = Vec::with_capacity(64);
                avro::write_wire_header(&mut v, *id);
                encoder.encode(&row, &mut v).map_err(|e| e.to_string())?;
                Ok(v)
            }
        }
    }
}

#[derive(Default)]
struct Failures(Mutex<Vec<String>>);
impl ClientContext for Failures {}
impl ProducerContext for Failures {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        if let Err((e, _)) = r {
            self.0.lock().unwrap().push(e.to_string());
        }
    }
}

pub fn run(args: ProduceArgs) -> Result<()> {
    let plan = args.job.as_deref().map(super::load_plan).transpose()?;
    let source = plan.as_ref().and_then(|p| {
        p.sources()
            .find(|(_, _, s)| s.config.topic == args.topic)
            .map(|(_, _, s)| s.clone())
    });
    if let (Some(job), None) = (&args.job, &source) {
        bail!(
            "no source of {} reads topic `{}`; name a job that reads it, or leave out --job",
            job.display(),
            args.topic
        );
    }
    let format = args
        .format
        .unwrap_or(match source.as_ref().map(|s| s.config.format) {
            Some(Format::Avro) => LineFormat::Avro,
            Some(Format::Json) => LineFormat::Json,
            Some(Format::Text) | None => LineFormat::Text,
        });
    let brokers = args.kafka.brokers(plan.as_ref().map(|p| &p.job))?;
    kafka_admin::check_broker(&brokers)?;
    let (partitions, replication) = source.as_ref().map_or((1, 1), |s| {
        (s.config.partitions, s.config.replication_factor)
    });
    kafka_admin::ensure_topic(
        &brokers,
        &args.topic,
        partitions,
        replication,
        TopicKind::Data,
    )?;
    let encoding = encoding(format, source.as_ref(), plan.as_ref(), &args.topic)?;
    let producer: BaseProducer<Failures> = client_config(&brokers)
        .set("linger.ms", "5")
        .set("enable.idempotence", "true")
        .create_with_context(Failures::default())?;
    if std::io::stdin().is_terminal() {
        eprintln!(
            "type lines to send to `{}`, one record each; Ctrl-D ends",
            args.topic
        );
    }
    let mut sent = 0u64;
    let mut refused = 0u64;
    let mut line = Vec::new();
    let mut stdin = std::io::stdin().lock();
    for number in 1.. {
        line.clear();
        if stdin
            .read_until(b'\n', &mut line)
            .context("reading stdin")?
            == 0
        {
            break;
        }
        let text = line.strip_suffix(b"\n").unwrap_or(&line);
        let text = text.strip_suffix(b"\r").unwrap_or(text);
        let (key, value) = match &args.key_separator {
            None => (None, text),
            Some(sep) => match find(text, sep.as_bytes()) {
                Some(at) => (Some(&text[..at]), &text[at + sep.len()..]),
                None => {
                    eprintln!("line {number}: no key separator `{sep}` in it; not sent");
                    refused += 1;
                    continue;
                }
            },
        };
        let value = match encoding.value(value) {
            Ok(v) => v,
            Err(e) => {
                eprintln!("line {number}: {e}; not sent");
                refused += 1;
                continue;
            }
        };
        let mut record = BaseRecord::to(&args.topic).payload(&value);
        if let Some(k) = key {
            record = record.key(k);
        }
        while let Err((e, r)) = producer.send(record) {
            if e.rdkafka_error_code() != Some(rdkafka::types::RDKafkaErrorCode::QueueFull) {
                bail!("cannot produce to {}: {e}", args.topic);
            }
            record = r;
            producer.poll(Duration::from_millis(5));
        }
        // Typed lines go out as they are typed.
        producer.poll(Duration::ZERO);
        sent += 1;
    }
    producer
        .flush(Duration::from_secs(30))
        .with_context(|| format!("sending the last records to {}", args.topic))?;
    let failed = producer.context().0.lock().unwrap().clone();
    if let Some(e) = failed.first() {
        bail!(
            "{} of {sent} records were not stored in {}: {e}",
            failed.len(),
            args.topic
        );
    }
    eprintln!("sent {sent} records to {}", args.topic);
    if refused > 0 {
        bail!("{refused} lines were not sent (each is named above)");
    }
    Ok(())
}

fn encoding(
    format: LineFormat,
    source: Option<&crate::plan::SourcePlan>,
    plan: Option<&Plan>,
    topic: &str,
) -> Result<Encoding> {
    let rows = || -> Option<crate::record::RowSchema> {
        source.and_then(|s| avro::row_schema(&s.reader).ok())
    };
    Ok(match format {
        LineFormat::Text => Encoding::Text,
        LineFormat::Json => Encoding::Json(
            rows().filter(|_| source.is_some_and(|s| s.config.format != Format::Text)),
        ),
        LineFormat::Avro => {
            let (Some(source), Some(plan)) = (source, plan) else {
                bail!("--format avro needs --job: a job whose source reading `{topic}` has the schema to encode with");
            };
            if source.config.format == Format::Text {
                bail!("the job reads `{topic}` as text: a text source has no schema to encode Avro with");
            }
            let rows = rows().context("the source's schema")?;
            let id = plan
                .job
                .registry()
                .register(&format!("{topic}-value"), &source.reader_text)
                .context("registering the source's schema")?;
            Encoding::Avro {
                id,
                encoder: avro::Encoder::new(&rows),
                rows,
            }
        }
    })
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.is_empty() {
        return None;
    }
    haystack.windows(needle.len()).position(|w| w == needle)
}
