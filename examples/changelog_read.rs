//! The floor for restoring a job's state: a plain rdkafka consumer reading
//! a changelog topic from its beginning to its end, every partition, and
//! doing nothing with the records. `scripts/bench-recovery` times this
//! beside a restart of the job. Prints `read N records (B bytes) in S s`.
//!
//! librdkafka's `fetch.queue.backoff.ms` (1000 ms by default) makes a
//! consumer that keeps up wait a whole second whenever its queue is above
//! `queued.min.messages`: the floor is a consumer without that wait, as
//! rill's own reads are.
//!
//! cargo run --release --example changelog_read -- BROKERS TOPIC

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (brokers, topic) = (&args[1], &args[2]);
    let start = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "changelog-read")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.wait.max.ms", "10")
        .set("fetch.queue.backoff.ms", "10")
        .create()
        .unwrap();
    let md = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .unwrap();
    let partitions = md.topics()[0].partitions().len() as i32;
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut open = partitions;
    let (mut records, mut bytes) = (0u64, 0usize);
    while open > 0 {
        match consumer.poll(Duration::from_millis(100)) {
            None => {}
            Some(Err(KafkaError::PartitionEOF(_))) => open -= 1,
            Some(Err(e)) => panic!("{e}"),
            Some(Ok(m)) => {
                records += 1;
                bytes += m.key().map_or(0, <[u8]>::len) + m.payload().map_or(0, <[u8]>::len);
            }
        }
    }
    println!(
        "read {records} records ({bytes} bytes) in {:.2} s",
        start.elapsed().as_secs_f64()
    );
}
