//! Kafka source: each worker assigns itself partitions p with
//! p mod workers == its index and polls without blocking; librdkafka
//! fetches on its own threads. No consumer group takes part in the data
//! path, so no rebalance can move a partition under a running epoch.

use super::kafka_admin::client_config;
use super::{Poll, SourceReader};
use crate::record::{Origin, RawRecord};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use std::sync::Arc;
use std::time::Duration;

pub struct KafkaSource {
    consumer: BaseConsumer,
    source: u32,
    /// (partition, next offset to read, end offset to stop at when bounded)
    partitions: Vec<(i32, i64, Option<i64>)>,
    bounded: bool,
}

impl KafkaSource {
    /// `ranges` holds, for each partition this worker reads, the offset to
    /// start at and (for bounded runs) the end offset to stop at.
    pub fn new(
        brokers: &str,
        topic: &str,
        source: u32,
        ranges: Vec<(i32, i64, Option<i64>)>,
        bounded: bool,
    ) -> Result<Self, rdkafka::error::KafkaError> {
        let consumer: BaseConsumer = client_config(brokers)
            .set("group.id", format!("rill-{topic}"))
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.wait.max.ms", "50")
            .set("queued.min.messages", "200000")
            .create()?;
        let mut tpl = TopicPartitionList::new();
        let mut partitions = Vec::new();
        for (p, start, end) in ranges {
            if bounded && end.is_some_and(|e| start >= e) {
                continue;
            }
            tpl.add_partition_offset(topic, p, Offset::Offset(start))?;
            partitions.push((p, start, end));
        }
        consumer.assign(&tpl)?;
        Ok(KafkaSource { consumer, source, partitions, bounded })
    }

    fn finished(&self) -> bool {
        self.bounded && self.partitions.iter().all(|(_, next, end)| end.is_some_and(|e| *next >= e))
    }
}

impl SourceReader for KafkaSource {
    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Poll {
        if self.finished() {
            return Poll::Done;
        }
        while out.len() < max {
            match self.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Err(e)) => {
                    tracing::warn!("kafka source: {e}");
                    break;
                }
                Some(Ok(m)) => {
                    let p = m.partition();
                    let Some(slot) = self.partitions.iter_mut().find(|x| x.0 == p) else { continue };
                    if slot.2.is_some_and(|e| m.offset() >= e) && self.bounded {
                        slot.1 = slot.1.max(m.offset() + 1);
                        continue;
                    }
                    slot.1 = m.offset() + 1;
                    out.push(RawRecord {
                        key: m.key().map(Arc::from),
                        value: m.payload().map(<[u8]>::to_vec),
                        timestamp_ms: m.timestamp().to_millis().unwrap_or(0),
                        origin: Origin { source: self.source, partition: p, offset: m.offset() },
                    });
                }
            }
        }
        if !out.is_empty() {
            Poll::Data
        } else if self.finished() {
            Poll::Done
        } else {
            Poll::Idle
        }
    }
}
