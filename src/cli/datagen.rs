//! `jobctl datagen`: input for the seeds' jobs, written through the
//! registry like a real producer would.

use crate::connectors::datagen::{AvroDatagen, BankGenerator, TurnstileGenerator};
use crate::connectors::kafka_admin::{self, client_config};
use crate::format::avro;
use crate::plan::NodeKind;
use crate::spec::Format;
use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Clone, Copy, ValueEnum, PartialEq)]
pub enum Generator {
    /// Seed 000's bank transactions.
    Bank,
    /// Seed 003's subway turnstile events.
    Turnstile,
    /// Seed 004's commercial ratings (the job's schema and its arg.properties).
    Commercials,
    /// Any record schema, shaped by its fields' `arg.properties`.
    Avro,
    /// Seed 001's card payments (JSON), a share of them malformed.
    Cashback,
}

#[derive(Args)]
pub struct DatagenArgs {
    generator: Generator,
    /// The job whose first source says topic, format, schema, brokers and registry.
    #[arg(long)]
    job: Option<PathBuf>,
    #[command(flatten)]
    kafka: super::kafka_args::KafkaArgs,
    /// Write to this topic instead of the job's input topic.
    #[arg(long)]
    topic: Option<String>,
    /// Write the seed's own records (for bank: its six transactions).
    #[arg(long)]
    seed_records: bool,
    /// Number of random records.
    #[arg(long, default_value_t = 1000)]
    count: u64,
    /// Records per second; 0 for as fast as the broker takes them.
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Seed of the random generator, so runs can be repeated.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Do not draw a progress bar.
    #[arg(long)]
    quiet: bool,
    /// Turnstile: stations.
    #[arg(long, default_value_t = 4)]
    stations: usize,
    /// Turnstile: devices per station.
    #[arg(long, default_value_t = 2)]
    devices_per_station: usize,
    /// Turnstile: share of events sent out of order (up to 20 s early).
    #[arg(long, default_value_t = 0.05)]
    out_of_order_share: f64,
    /// Turnstile: share of events sent 10 minutes late.
    #[arg(long, default_value_t = 0.01)]
    late_share: f64,
    /// Turnstile: the event time of the first round of reports, in ms
    /// since 1970 (default: now, or just after the newest event already
    /// in the topic, so that a second run's events are not late).
    #[arg(long)]
    start_time_ms: Option<i64>,
    /// Avro and commercials: the field whose value becomes the record key.
    #[arg(long)]
    key_field: Option<String>,
    /// Cashback: share of malformed payments (bad JSON, a missing or
    /// mistyped field, a negative amount).
    #[arg(long, default_value_t = 0.05)]
    malformed_share: f64,
}

enum Source {
    Bank(BankGenerator),
    Turnstile(TurnstileGenerator),
    Avro(AvroDatagen),
    Cashback(crate::connectors::datagen::PaymentGenerator),
}

impl Source {
    /// The next record: its key, its row, and its Kafka timestamp when it
    /// is not the time it is sent (a turnstile report's is its event time).
    fn next(&mut self, time: i64) -> (Option<Vec<u8>>, crate::record::Row, Option<i64>) {
        match self {
            Source::Bank(g) => {
                let (k, r) = g.random(time);
                (Some(k), r, None)
            }
            Source::Turnstile(g) => {
                let (k, r) = g.next_event();
                let t = g.event_time(&r);
                (Some(k), r, Some(t))
            }
            Source::Avro(g) => {
                let (k, r) = g.next_row();
                (k, r, None)
            }
            Source::Cashback(_) => unreachable!("payments are written as raw bytes"),
        }
    }
}

/// Where turnstile event times begin: now (to the 10 s), or 10 s past the
/// newest event already in `topic` (its records carry their event time
/// as their timestamp), whichever is later. Events of a second run at the
/// first run's times would be behind the job's watermark, all late.
fn turnstile_start(brokers: &crate::connectors::kafka_config::Brokers, topic: &str) -> Result<i64> {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    let partitions = kafka_admin::partition_count(brokers, topic)?.unwrap_or(0);
    let mut newest = i64::MIN;
    for (p, (low, high)) in kafka_admin::watermarks(brokers, topic, partitions)?
        .into_iter()
        .enumerate()
    {
        // Late reports are 10 minutes behind, the rest in order: the
        // newest is among a partition's last records.
        if high > low {
            let from = (high - 256).max(low);
            kafka_admin::read_partition_each(brokers, topic, p as i32, Some(from), |m| {
                newest = newest.max(m.timestamp_ms().unwrap_or(i64::MIN));
            })?;
        }
    }
    let now = now - now.rem_euclid(10_000);
    Ok(now.max(newest.saturating_add(10_000)))
}

#[derive(Default)]
struct Offsets(Mutex<Vec<(usize, i64, Option<String>)>>);
impl ClientContext for Offsets {}
impl ProducerContext for Offsets {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, r: &DeliveryResult<'_>, i: Box<usize>) {
        let entry = match r {
            Ok(m) => (*i, rdkafka::Message::offset(m), None),
            Err((e, _)) => (*i, -1, Some(e.to_string())),
        };
        self.0.lock().unwrap().push(entry);
    }
}

pub fn run(args: DatagenArgs) -> Result<()> {
    let job_path = match (&args.job, args.generator) {
        (Some(j), _) => j.clone(),
        (None, Generator::Bank) => PathBuf::from("jobs/bank.toml"),
        (None, Generator::Turnstile) => PathBuf::from("jobs/turnstile.toml"),
        (None, Generator::Commercials) => PathBuf::from("jobs/commercials.toml"),
        (None, Generator::Cashback) => PathBuf::from("jobs/cashback.toml"),
        (None, Generator::Avro) => bail!(
            "`datagen avro` needs --job: the job whose first source says the topic and schema"
        ),
    };
    if args.seed_records && args.generator != Generator::Bank {
        bail!("--seed-records is only for the bank generator");
    }
    let plan = super::load_plan(&job_path)?;
    let Some((_, _, source)) = plan.sources().next() else {
        bail!("{} has no source to write input for", job_path.display())
    };
    let rows = match &plan
        .nodes
        .iter()
        .find(|n| matches!(n.kind, NodeKind::Source(_)))
    {
        Some(n) => n.outputs[0].clone(),
        None => unreachable!(),
    };
    let topic = args
        .topic
        .clone()
        .unwrap_or_else(|| source.config.topic.clone());
    let brokers = args.kafka.brokers(Some(&plan.job))?;
    kafka_admin::check_broker(&brokers)?;
    kafka_admin::ensure_topic(
        &brokers,
        &topic,
        source.config.partitions,
        source.config.replication_factor,
        crate::connectors::kafka_admin::TopicKind::Data,
    )?;
    let schema_id = match source.config.format {
        Format::Avro => Some(
            plan.job
                .registry()
                .register(&format!("{topic}-value"), &source.reader_text)
                .context("registering the input schema")?,
        ),
        Format::Json | Format::Text => None,
    };
    let encoder = avro::Encoder::new(&rows);
    let text = source.config.format == Format::Text;
    let encode = |row: &crate::record::Row| -> Result<Vec<u8>> {
        Ok(match schema_id {
            None if text => {
                let mut v = Vec::new();
                crate::format::text::write_row(row, &mut v);
                v
            }
            Some(id) => {
                let mut v = Vec::with_capacity(64);
                avro::write_wire_header(&mut v, id);
                encoder.encode(row, &mut v)?;
                v
            }
            None => crate::format::json::row_to_string(row, &rows, false).into_bytes(),
        })
    };
    let bank = BankGenerator::new(&rows, args.seed);
    let mut generator = match args.generator {
        Generator::Bank => Source::Bank(
            bank.as_ref()
                .map_err(|e| anyhow::anyhow!("{e}"))?
                .clone_seeded(args.seed),
        ),
        Generator::Turnstile => Source::Turnstile(
            TurnstileGenerator::new(
                &rows,
                args.seed,
                match args.start_time_ms {
                    Some(t) => t,
                    None => turnstile_start(&brokers, &topic)?,
                },
                args.stations,
                args.devices_per_station,
                args.out_of_order_share,
                args.late_share,
            )
            .map_err(anyhow::Error::msg)?,
        ),
        Generator::Cashback => Source::Cashback(crate::connectors::datagen::PaymentGenerator::new(
            args.seed,
            args.malformed_share,
        )),
        Generator::Commercials | Generator::Avro => {
            let key = args.key_field.clone().or_else(|| {
                (args.generator == Generator::Commercials).then(|| "brand".to_string())
            });
            Source::Avro(
                AvroDatagen::new(&source.reader_text, &rows, key.as_deref(), args.seed)
                    .map_err(anyhow::Error::msg)?,
            )
        }
    };
    let producer: BaseProducer<Offsets> = client_config(&brokers)
        .set("linger.ms", "10")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .create_with_context(Offsets::default())?;
    let send = |i: usize, key: &[u8], value: &[u8], ts: Option<i64>| {
        let mut rec = BaseRecord::with_opaque_to(&topic, Box::new(i)).payload(value);
        // No key field: a null key, not an empty one.
        if !key.is_empty() {
            rec = rec.key(key);
        }
        if let Some(t) = ts {
            rec = rec.timestamp(t);
        }
        loop {
            match producer.send(rec) {
                Ok(()) => return Ok(()),
                Err((
                    rdkafka::error::KafkaError::MessageProduction(
                        rdkafka::types::RDKafkaErrorCode::QueueFull,
                    ),
                    r,
                )) => {
                    rec = r;
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => return Err(anyhow::anyhow!("cannot produce to {topic}: {e}")),
            }
        }
    };

    if args.seed_records {
        let records = bank.map_err(anyhow::Error::msg)?.seed_records();
        for (i, (key, row)) in records.iter().enumerate() {
            let time = match &row[rows.index_of("time").unwrap_or(0)] {
                crate::record::Value::Int(t) => Some(*t),
                _ => None,
            };
            send(i, key, &encode(row)?, time)?;
        }
        producer.flush(Duration::from_secs(30))?;
        let mut done = producer.context().0.lock().unwrap().clone();
        done.sort();
        for (i, offset, err) in done {
            if let Some(e) = err {
                bail!("record {i} was not written: {e}");
            }
            let ts = crate::connectors::datagen::BANK_SEED_TIME_MS + 10_000 * i as i64;
            println!("Record produced - offset - {offset} timestamp - {ts}");
        }
        return Ok(());
    }

    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(args.count).with_style(
            ProgressStyle::with_template(
                "{spinner} {bar:40} {pos}/{len} records, {per_sec}, eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
        )
    };
    let start = Instant::now();
    let base_time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64);
    for i in 0..args.count {
        if args.rate > 0.0 {
            let due = Duration::from_secs_f64(i as f64 / args.rate);
            if let Some(wait) = due.checked_sub(start.elapsed()) {
                std::thread::sleep(wait);
            }
        }
        if let Source::Cashback(g) = &mut generator {
            let (key, value) = g.next_payment(base_time + i as i64);
            send(0, &key, &value, None)?;
        } else {
            let (key, row, ts) = generator.next(base_time + i as i64);
            send(0, key.as_deref().unwrap_or_default(), &encode(&row)?, ts)?;
        }
        if i % 1024 == 0 {
            producer.poll(Duration::ZERO);
            bar.set_position(i);
        }
    }
    producer.flush(Duration::from_secs(120))?;
    bar.finish_and_clear();
    let failures: Vec<String> = producer
        .context()
        .0
        .lock()
        .unwrap()
        .iter()
        .filter_map(|x| x.2.clone())
        .collect();
    if let Some(e) = failures.first() {
        bail!(
            "{} of {} records were not written (first error: {e})",
            failures.len(),
            args.count
        );
    }
    eprintln!(
        "wrote {} records to {topic} in {:.1} s ({:.0} records/s)",
        args.count,
        start.elapsed().as_secs_f64(),
        args.count as f64 / start.elapsed().as_secs_f64()
    );
    Ok(())
}
