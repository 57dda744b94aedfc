//! The baseline rill's end-to-end figures are compared with: a plain
//! consume-and-produce copy of one topic into another with rdkafka
//! (`BaseConsumer` feeding a `ThreadedProducer`, no per-message futures),
//! until the input's end at start. Prints `copied N records in S s`.
//!
//! cargo run --release --example plain_copy -- BROKERS INPUT OUTPUT
//! (COPY_HEADERS=1 to copy the records' headers too)

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use rill::connectors::kafka_admin;
use std::time::{Duration, Instant};

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (brokers, input, output) = (&args[1], &args[2], &args[3]);
    let kafka = kafka_admin::Brokers::plaintext(brokers);
    // COPY_HEADERS=1 copies each record's headers too.
    let keep_headers = std::env::var_os("COPY_HEADERS").is_some();
    let n = kafka_admin::partition_count(&kafka, input)
        .unwrap()
        .expect("input topic exists");
    kafka_admin::ensure_topic(&kafka, output, n, 1, kafka_admin::TopicKind::Data).unwrap();
    let ends = kafka_admin::end_offsets(&kafka, input, n).unwrap();
    let start = Instant::now();
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "plain-copy")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "50")
        .set("queued.min.messages", "200000")
        // A transactional topic's end is a commit marker, never a record.
        .set("enable.partition.eof", "true")
        .create()
        .unwrap();
    let producer: ThreadedProducer<DefaultProducerContext> = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("linger.ms", "5")
        .set("batch.num.messages", "10000")
        .set("queue.buffering.max.messages", "500000")
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..n {
        tpl.add_partition_offset(input, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let mut next: Vec<i64> = ends.iter().map(|(low, _)| *low).collect();
    let mut copied = 0u64;
    while next.iter().zip(&ends).any(|(n, (_, e))| n < e) {
        let Some(m) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let m = match m {
            Err(KafkaError::PartitionEOF(p)) => {
                next[p as usize] = next[p as usize].max(ends[p as usize].1);
                continue;
            }
            m => m.unwrap(),
        };
        next[m.partition() as usize] = m.offset() + 1;
        let mut rec: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(output).partition(m.partition());
        if let Some(k) = m.key() {
            rec = rec.key(k);
        }
        if let Some(v) = m.payload() {
            rec = rec.payload(v);
        }
        if let (true, Some(h)) = (keep_headers, m.headers()) {
            rec = rec.headers(h.detach());
        }
        loop {
            match producer.send(rec) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    rec = r;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err((e, _)) => panic!("{e}"),
            }
        }
        copied += 1;
    }
    producer.flush(Duration::from_secs(120)).unwrap();
    println!(
        "copied {copied} records in {:.3} s",
        start.elapsed().as_secs_f64()
    );
}
