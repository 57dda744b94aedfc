use rill::connectors::kafka_sink::KafkaWriter;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use std::time::Duration;
fn rec(p: i32) -> rill::record::OutRecord {
    rill::record::OutRecord { key: Some(std::sync::Arc::from(&b"k"[..])), value: Some(b"v".to_vec()), partition: Some(p), window: None, row: None }
}
fn main() {
    let brokers = "127.0.0.1:9092";
    let tag = std::process::id();
    let topic = format!("probe-out-{tag}");
    rill::connectors::kafka_admin::ensure_topic(brokers, &topic, 1, 1, rill::connectors::kafka_admin::TopicKind::Data).unwrap();
    rill::connectors::kafka_admin::ensure_topic(brokers, "probe-log", 1, 1, rill::connectors::kafka_admin::TopicKind::Data).unwrap();
    let ids = [format!("probe-{tag}-a"), format!("probe-{tag}-b")];
    let a = KafkaWriter::new(brokers, &ids[0], 1, true).unwrap();
    let b = KafkaWriter::new(brokers, &ids[1], 1, true).unwrap();
    let ga: BaseConsumer = ClientConfig::new().set("bootstrap.servers", brokers).set("group.id", &ids[0]).set("enable.auto.commit", "false").create().unwrap();
    let meta = ga.group_metadata().unwrap();
    let off = |n| { let mut t = TopicPartitionList::new(); t.add_partition_offset("probe-log", 0, Offset::Offset(n)).unwrap(); t };
    let seen = |what: &str| {
        let mut q = TopicPartitionList::new(); q.add_partition("probe-log", 0);
        let c = ga.committed_offsets(q, Duration::from_secs(10)).unwrap();
        println!("{what}: a's progress {:?}", c.elements()[0].offset());
    };
    a.begin().unwrap(); b.begin().unwrap();
    a.send(&topic, &rec(0), 1).unwrap(); b.send(&topic, &rec(0), 1).unwrap();
    a.flush(Duration::from_secs(5)).unwrap(); b.flush(Duration::from_secs(5)).unwrap();
    a.commit(&off(7), &meta).unwrap();
    seen("a committed, b open");
    std::mem::forget(b); // b dies with its transaction open
    std::thread::sleep(Duration::from_secs(1));
    seen("b gone");
    let _b2 = KafkaWriter::new(brokers, &ids[1], 1, true).unwrap();
    seen("b fenced by a new instance");
    std::thread::sleep(Duration::from_secs(2));
    seen("2 s later");
}
