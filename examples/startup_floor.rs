//! The floor for a start of an exactly-once job: what a plain rdkafka
//! client must do before it can commit anything, on a topic that exists.
//! Metadata, `init_transactions`, the end offsets of every partition of the
//! input, and one empty transaction with offsets in it. `scripts/bench-startup`
//! times this process beside `jobctl submit --until-caught-up`.
//!
//! cargo run --release --example startup_floor -- BROKERS TOPIC

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::Duration;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (brokers, topic) = (&args[1], &args[2]);
    let t = Duration::from_secs(30);
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "startup-floor")
        .create()
        .unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("transactional.id", "startup-floor")
        .create()
        .unwrap();
    producer.init_transactions(t).unwrap();
    let md = consumer.fetch_metadata(Some(topic), t).unwrap();
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut offsets = TopicPartitionList::new();
    for p in 0..partitions {
        let (_, high) = consumer.fetch_watermarks(topic, p, t).unwrap();
        offsets
            .add_partition_offset(topic, p, Offset::Offset(high))
            .unwrap();
    }
    producer.begin_transaction().unwrap();
    producer
        .send_offsets_to_transaction(&offsets, &consumer.group_metadata().unwrap(), t)
        .unwrap();
    producer.commit_transaction(t).unwrap();
}
