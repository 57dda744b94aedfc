//! The floor for one epoch's commit: a plain transactional producer that
//! sends RECORDS small records and the consumed offsets in a transaction
//! and commits it, COUNT times. Prints `plain transaction: p50 X ms, p99
//! Y ms` (from the first send to the commit's return), for
//! `scripts/bench-latency` to set beside rill's commit times.
//!
//! cargo run --release --example txn_floor -- BROKERS TOPIC RECORDS COUNT

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rill::connectors::kafka_admin::{self, TopicKind};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (brokers, topic) = (&args[1], &args[2]);
    let kafka = rill::connectors::kafka_config::Brokers::plaintext(brokers);
    let records: usize = args[3].parse().expect("RECORDS");
    let count: usize = args[4].parse().expect("COUNT");
    let t = Duration::from_secs(30);
    kafka_admin::ensure_topic(&kafka, topic, 2, 1, TopicKind::Data).unwrap();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", format!("{topic}-floor"))
        .create()
        .unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", format!("{topic}-floor"))
        .set("linger.ms", "5")
        .create()
        .unwrap();
    producer.init_transactions(t).unwrap();
    let value = [b'x'; 40];
    let mut times = Vec::with_capacity(count);
    for i in 0..count {
        let start = Instant::now();
        producer.begin_transaction().unwrap();
        for r in 0..records {
            let key = format!("{}", (i * records + r) % 1000);
            producer
                .send(BaseRecord::to(topic).key(&key).payload(&value[..]))
                .unwrap();
        }
        // commit_transaction flushes too, but in librdkafka's steps of
        // 100 ms; a client that cares flushes first.
        rill::connectors::kafka_sink::flush_promptly(&producer, t).unwrap();
        let mut offsets = TopicPartitionList::new();
        for p in 0..2 {
            offsets
                .add_partition_offset(topic, p, Offset::Offset((i * records) as i64))
                .unwrap();
        }
        producer
            .send_offsets_to_transaction(&offsets, &consumer.group_metadata().unwrap(), t)
            .unwrap();
        producer.commit_transaction(t).unwrap();
        times.push(start.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let at = |q: f64| times[((times.len() - 1) as f64 * q).round() as usize];
    println!(
        "plain transaction: p50 {:.1} ms, p99 {:.1} ms",
        at(0.5),
        at(0.99)
    );
}
