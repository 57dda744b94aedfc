//! `jobctl tail TOPIC`: prints records as the seeds' consoles do,
//! decoding Confluent-framed Avro through the registry.

use crate::connectors::kafka_admin::{self, client_config};
use crate::format::registry::RegistryClient;
use crate::format::{avro, json};
use crate::record::KeyDisplay;
use anyhow::{bail, Result};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use std::collections::HashMap;
use std::io::Write;
use std::time::{Duration, Instant};

#[derive(Args)]
pub struct TailArgs {
    topic: String,
    #[command(flatten)]
    kafka: super::kafka_args::KafkaArgs,
    /// Reach Kafka and the registry as this job does.
    #[arg(long)]
    job: Option<std::path::PathBuf>,
    /// The schema registry [default: the job's, else http://127.0.0.1:8081]
    #[arg(long)]
    registry_url: Option<String>,
    /// Stop at the end offsets the partitions have now.
    #[arg(long)]
    until_caught_up: bool,
    /// Also print each record's headers (the dead-letter reason, the epoch).
    #[arg(long)]
    headers: bool,
}

pub fn run(args: TailArgs) -> Result<()> {
    let job = args
        .job
        .as_deref()
        .map(crate::spec::Spec::load)
        .transpose()?
        .map(|s| s.job);
    let brokers = args.kafka.brokers(job.as_ref())?;
    let mut registry = job.as_ref().map_or_else(
        || crate::format::registry::RegistryAccess::plain("http://127.0.0.1:8081"),
        |j| j.registry_access(),
    );
    if let Some(url) = &args.registry_url {
        registry.url = url.clone();
    }
    kafka_admin::check_broker(&brokers)?;
    let Some(n) = kafka_admin::partition_count(&brokers, &args.topic)? else {
        bail!("topic `{}` does not exist on {}", args.topic, brokers);
    };
    let marks = kafka_admin::end_offsets(&brokers, &args.topic, n)?;
    let consumer: BaseConsumer<kafka_admin::EofIsNotAnError> = client_config(&brokers)
        .set("group.id", "rill-tail")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("enable.partition.eof", "true")
        .create_with_context(kafka_admin::EofIsNotAnError)?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(&args.topic, p, Offset::Beginning)?;
    }
    consumer.assign(&tpl)?;
    let registry = RegistryClient::with_access(&registry);
    let mut decoders: HashMap<u32, Option<(avro::Decoder, crate::record::RowSchema)>> =
        HashMap::new();
    // Caught up at every partition's EOF: the end offset can point past
    // transaction commit markers, which never arrive as records.
    let mut at_end: Vec<bool> = marks.iter().map(|(low, high)| high <= low).collect();
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    let mut last_data = Instant::now();
    loop {
        if args.until_caught_up && at_end.iter().all(|d| *d) {
            return Ok(());
        }
        let m = match consumer.poll(Duration::from_millis(200)) {
            None => {
                if args.until_caught_up && last_data.elapsed() > Duration::from_secs(30) {
                    bail!(
                        "no records for 30 s before reaching the end of {}",
                        args.topic
                    );
                }
                continue;
            }
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                at_end[p as usize] = true;
                continue;
            }
            Some(m) => m?,
        };
        last_data = Instant::now();
        let value = match m.payload() {
            None => "null".to_string(),
            Some(bytes) => render(bytes, &registry, &mut decoders),
        };
        write!(out, "key {} value {value}", KeyDisplay(m.key()))?;
        if args.headers {
            if let Some(h) = m.headers() {
                for hdr in h.iter() {
                    write!(
                        out,
                        " {}={}",
                        hdr.key,
                        String::from_utf8_lossy(hdr.value.unwrap_or_default())
                    )?;
                }
            }
        }
        writeln!(out)?;
    }
}

fn render(
    bytes: &[u8],
    registry: &RegistryClient,
    decoders: &mut HashMap<u32, Option<(avro::Decoder, crate::record::RowSchema)>>,
) -> String {
    if let Ok((id, body)) = avro::split_wire(bytes) {
        let d = decoders.entry(id).or_insert_with(|| {
            let text = registry.schema_by_id(id).ok()?;
            let schema = avro::parse_schema(&text).ok()?;
            let rows = avro::row_schema(&schema).ok()?;
            Some((avro::Decoder::new(&schema, &schema, &rows).ok()?, rows))
        });
        if let Some((d, rows)) = d {
            if let Ok(row) = d.decode(body) {
                return json::row_to_string(&row, rows, true);
            }
        }
    }
    String::from_utf8_lossy(bytes).into_owned()
}
