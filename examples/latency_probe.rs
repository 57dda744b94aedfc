//! Exactly-once latency of a running rill job: from the moment an input
//! record was produced (its timestamp) to the moment its epoch's output
//! became visible to a `read_committed` consumer. Each output record
//! carries its epoch (`rill-epoch`), and the job's epoch log says which
//! input offsets each epoch holds, so every input record is timed without
//! matching records one by one.
//!
//! cargo run --release --example latency_probe -- BROKERS JOB INPUT SECONDS OUTPUT...
//!
//! Watches the outputs for SECONDS from their current end, then prints
//! `latency: N records, p50 X ms, p99 Y ms, max Z ms` for the input
//! records produced after it started.

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
    let outputs = &args[5..];
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

    let mut produced: HashMap<(i32, i64), i64> = HashMap::new();
    kafka_admin::read_to_end(brokers, input, |f| {
        produced.insert((f.partition, f.offset), f.timestamp_ms);
    })
    .unwrap();
    let mut latencies: Vec<i64> = Vec::new();
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
                    Some(ts) if *ts >= started => latencies.push(seen - ts),
                    _ => {}
                }
            }
        }
    }
    latencies.sort_unstable();
    if latencies.is_empty() {
        println!("latency: 0 records seen committed; is the job running?");
        return;
    }
    let at = |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize];
    println!(
        "latency: {} records, p50 {} ms, p99 {} ms, max {} ms",
        latencies.len(),
        at(0.5),
        at(0.99),
        latencies[latencies.len() - 1]
    );
}
