//! Exactly-once latency of a running rill job: from the moment an input
//! record was produced (its timestamp) to the moment its epoch's output
//! became visible to a `read_committed` consumer. Each output record
//! carries its epoch (`rill-epoch`), and the job's epoch log says which
//! input offsets each epoch holds, so every input record is timed without
//! matching records one by one.
//!
//! cargo run --release --example latency_probe -- BROKERS JOB INPUT SECONDS [--rate N] OUTPUT...
//!
//! Watches the outputs for SECONDS from their current end, then prints
//! `latency: N records, p50 X ms, p99 Y ms, max Z ms` for the input
//! records produced after it started, and the p99 of the first and the
//! last 10 s of them (a job that falls behind shows it there).
//!
//! With `--rate N` the probe is also the job's producer, as a user's
//! application would be: one JSON bank transaction per `produce` call, N a
//! second, with librdkafka's `linger.ms` at 1, for SECONDS less 5 (the
//! rest of the time lets the last epochs commit). It prints how far the
//! producer fell behind its schedule and its acknowledgements' p99.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use rill::connectors::kafka_admin;
use rill::runtime::epoch_log::{read_log, LogRecord};
use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (servers, job, input) = (&args[1], &args[2], &args[3]);
    let brokers = &rill::connectors::kafka_config::Brokers::plaintext(servers);
    let seconds: u64 = args[4].parse().expect("SECONDS");
    let (rate, outputs) = match args.get(5).map(String::as_str) {
        Some("--rate") => (Some(args[6].parse::<u64>().expect("--rate N")), &args[7..]),
        _ => (None, &args[5..]),
    };
    let started = now_ms();

    let consumer: BaseConsumer = kafka_admin::client_config(brokers)
        .set("group.id", "rill-latency-probe")
        .set("enable.auto.commit", "false")
        .set("isolation.level", "read_committed")
        .set("fetch.wait.max.ms", "5")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for topic in outputs {
        let n = kafka_admin::partition_count(brokers, topic)
            .unwrap()
            .expect("output topic exists: start the job first");
        for p in 0..n {
            tpl.add_partition_offset(topic, p, Offset::End).unwrap();
        }
    }
    consumer.assign(&tpl).unwrap();
    // The first moment any record of an epoch was seen committed.
    let mut visible: BTreeMap<u64, i64> = BTreeMap::new();
    let until = Instant::now() + Duration::from_secs(seconds);
    let producer = rate.map(|rate| {
        let (servers, input) = (servers.clone(), input.clone());
        let send_for = Duration::from_secs(seconds.saturating_sub(5).max(1));
        std::thread::spawn(move || produce(&servers, &input, rate, send_for))
    });
    while Instant::now() < until {
        let Some(Ok(m)) = consumer.poll(Duration::from_millis(50)) else {
            continue;
        };
        let seen = now_ms();
        let epoch = m.headers().and_then(|h| {
            h.iter()
                .find(|x| x.key == "rill-epoch")
                .and_then(|x| std::str::from_utf8(x.value?).ok()?.parse::<u64>().ok())
        });
        if let Some(e) = epoch {
            visible.entry(e).or_insert(seen);
        }
    }

    if let Some(p) = producer {
        println!("{}", p.join().unwrap());
    }
    let mut produced: HashMap<(i32, i64), i64> = HashMap::new();
    kafka_admin::read_to_end(brokers, input, |f| {
        produced.insert((f.partition, f.offset), f.timestamp_ms);
    })
    .unwrap();
    // (produced at, latency)
    let mut latencies: Vec<(i64, i64)> = Vec::new();
    let mut timed = std::collections::HashSet::new();
    for (_, record) in read_log(brokers, &format!("{job}.epochs")).unwrap() {
        let LogRecord::Epoch { epoch, ranges, .. } = record else {
            continue;
        };
        let Some(seen) = visible.get(&epoch) else {
            continue;
        };
        if !timed.insert(epoch) {
            continue;
        }
        for r in ranges {
            for offset in r.start..r.end {
                match produced.get(&(r.partition, offset)) {
                    Some(ts) if *ts >= started => latencies.push((*ts, seen - ts)),
                    _ => {}
                }
            }
        }
    }
    if latencies.is_empty() {
        println!("latency: 0 records seen committed; is the job running?");
        return;
    }
    let first = latencies.iter().map(|l| l.0).min().unwrap();
    let last = latencies.iter().map(|l| l.0).max().unwrap();
    let head: Vec<i64> = latencies
        .iter()
        .filter(|l| l.0 < first + 10_000)
        .map(|l| l.1)
        .collect();
    let tail: Vec<i64> = latencies
        .iter()
        .filter(|l| l.0 > last - 10_000)
        .map(|l| l.1)
        .collect();
    let all: Vec<i64> = latencies.iter().map(|l| l.1).collect();
    println!(
        "latency: {} records, p50 {} ms, p99 {} ms, max {} ms; p99 of the first 10 s {} ms, of the last 10 s {} ms",
        all.len(),
        quantile(&all, 0.5),
        quantile(&all, 0.99),
        quantile(&all, 1.0),
        quantile(&head, 0.99),
        quantile(&tail, 0.99),
    );
}

fn quantile(values: &[i64], q: f64) -> i64 {
    let mut v = values.to_vec();
    v.sort_unstable();
    v.get(((v.len().max(1) - 1) as f64 * q).round() as usize)
        .copied()
        .unwrap_or(0)
}

/// Sends bank transactions one at a time on a schedule of `rate` a second,
/// as an application does, and says how it kept up.
fn produce(servers: &str, topic: &str, rate: u64, send_for: Duration) -> String {
    use rdkafka::producer::{
        BaseRecord, DeliveryResult, Producer, ProducerContext, ThreadedProducer,
    };
    use std::sync::{Arc, Mutex};
    struct Acks(Arc<Mutex<Vec<i64>>>);
    impl rdkafka::ClientContext for Acks {}
    impl ProducerContext for Acks {
        type DeliveryOpaque = Box<Instant>;
        fn delivery(&self, r: &DeliveryResult<'_>, sent: Box<Instant>) {
            if r.is_ok() {
                self.0
                    .lock()
                    .unwrap()
                    .push(sent.elapsed().as_micros() as i64);
            }
        }
    }
    let acks = Arc::new(Mutex::new(Vec::new()));
    let brokers = rill::connectors::kafka_config::Brokers::plaintext(servers);
    let producer: ThreadedProducer<Acks> = kafka_admin::client_config(&brokers)
        .set("linger.ms", "1")
        .create_with_context(Acks(acks.clone()))
        .unwrap();
    let begin = Instant::now();
    let total = rate * send_for.as_secs();
    let mut behind_max = Duration::ZERO;
    let mut state = 12345u64;
    for i in 0..total {
        let due = begin + Duration::from_secs_f64(i as f64 / rate as f64);
        let now = Instant::now();
        if due > now {
            std::thread::sleep(due - now);
        } else {
            behind_max = behind_max.max(now - due);
        }
        // A small linear congruential sequence: amounts in whole cents.
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        let account = 1000 + (state >> 33) % 1000;
        let balance = ((state >> 20) % 200_000) as f64 / 100.0;
        let withdraw = (1 + (state >> 7) % 149_999) as f64 / 100.0;
        let value = format!(
            r#"{{"account_id":{account},"time":{},"withdraw":{withdraw},"balance":{balance},"bank_transaction_state":"CREATED"}}"#,
            now_ms()
        );
        let key = account.to_string();
        let mut record = BaseRecord::with_opaque_to(topic, Box::new(Instant::now()))
            .key(&key)
            .payload(&value);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((_, r)) => {
                    record = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
        }
    }
    let unsent = producer.in_flight_count();
    let _ = producer.flush(Duration::from_secs(30));
    let acks = acks.lock().unwrap();
    format!(
        "producer: {total} records one at a time at {rate}/s, at most {} ms behind schedule, {unsent} unacknowledged at the end, acks p50 {:.1} ms p99 {:.1} ms",
        behind_max.as_millis(),
        quantile(&acks, 0.5) as f64 / 1000.0,
        quantile(&acks, 0.99) as f64 / 1000.0,
    )
}
