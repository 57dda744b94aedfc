//! A read of a topic's partitions up to an end known in advance: recovery
//! (the epoch log, changelogs, end offsets), `verify`. Called on the main
//! thread or a thread of its own, never on a timely worker.
//!
//! Such a read asks the broker to answer a fetch at once (`fetch.wait.max.ms`
//! of 10 ms): at the end of a partition the default would hold each fetch
//! for 500 ms. But a broker may need longer than that to gather the data
//! of a fetch in the middle of a partition (Tansu, on a partition written
//! in many small batches), and then it answers empty every time. So a read
//! that sees neither a record nor a partition's end for a while opens its
//! consumer again, where it stands, with a wait five times as long, up to
//! 5 s. It gives up only after a minute without progress at the longest
//! wait, and then says how far it got.

use super::kafka_admin::{EofIsNotAnError, KafkaAdminError};
use super::DropAside;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{BorrowedMessage, Message as _};
use rdkafka::{Offset, TopicPartitionList};
use std::time::{Duration, Instant};

/// The first wait, and the longest.
const FIRST_WAIT_MS: u64 = 10;
const LONGEST_WAIT_MS: u64 = 5_000;
/// Without a record or an end for this long at the longest wait, the read
/// gives up.
const GIVE_UP: Duration = Duration::from_secs(60);

/// How long a read may go without progress before its wait is lengthened:
/// long enough that a broker answering at all has answered a few fetches.
fn patience(wait_ms: u64) -> Duration {
    Duration::from_millis((wait_ms * 20).max(1_000))
}

/// The next wait after `wait_ms` brought nothing.
fn longer(wait_ms: u64) -> u64 {
    (wait_ms * 5).min(LONGEST_WAIT_MS)
}

/// What a poll of a bounded read brings.
pub enum Event<'a> {
    Record(BorrowedMessage<'a>),
    /// The partition is at its end, as far as the broker knows now.
    End(i32),
}

pub struct BoundedRead {
    /// The consumer's settings, but for the wait.
    config: ClientConfig,
    brokers: crate::connectors::kafka_config::Brokers,
    topic: String,
    wait_ms: u64,
    consumer: DropAside<BaseConsumer<EofIsNotAnError>>,
    /// Per partition: where its read goes on from, if it is read.
    next: Vec<Option<Offset>>,
    /// Since when nothing has come.
    quiet_since: Instant,
    records: u64,
    /// How long without progress before the read gives up, at the
    /// longest wait or before.
    give_up: Duration,
}

impl BoundedRead {
    /// Starts reading each partition `p` of `topic` that `starts[p]` gives
    /// an offset for, with a consumer of `config` (whose partition ends
    /// come as [`Event::End`]).
    pub fn open(
        config: ClientConfig,
        brokers: &crate::connectors::kafka_config::Brokers,
        topic: &str,
        starts: Vec<Option<Offset>>,
    ) -> Result<Self, KafkaAdminError> {
        let mut read = BoundedRead {
            consumer: consumer(&config, FIRST_WAIT_MS).map_err(|e| other(brokers, e))?,
            config,
            brokers: brokers.clone(),
            topic: topic.into(),
            wait_ms: FIRST_WAIT_MS,
            next: Vec::new(),
            quiet_since: Instant::now(),
            records: 0,
            give_up: GIVE_UP,
        };
        read.assign(starts)?;
        Ok(read)
    }

    /// Gives up after `limit` without progress instead: for a look that
    /// is repeated anyway, which must not hang on a topic that vanishes
    /// under it.
    pub fn giving_up_after(mut self, limit: Duration) -> Self {
        self.give_up = limit;
        self
    }

    /// Reads from `starts` on, where the read was opened with nothing to
    /// read (to learn the topic's partitions first).
    pub fn assign(&mut self, starts: Vec<Option<Offset>>) -> Result<(), KafkaAdminError> {
        assign(&self.consumer, &self.topic, &starts).map_err(|e| other(&self.brokers, e))?;
        self.next = starts;
        self.quiet_since = Instant::now();
        Ok(())
    }

    /// The consumer, for what else the caller asks of it (metadata,
    /// watermarks, positions).
    pub fn client(&self) -> &BaseConsumer<EofIsNotAnError> {
        &self.consumer
    }

    /// The next record or end, if one comes within 100 ms.
    pub fn poll(&mut self) -> Result<Option<Event<'_>>, KafkaAdminError> {
        let quiet = self.quiet_since.elapsed();
        // Each longer wait starts the count again: by default only the
        // longest one can run out of patience.
        if quiet >= self.give_up {
            return Err(self.given_up());
        } else if self.wait_ms < LONGEST_WAIT_MS && quiet >= patience(self.wait_ms) {
            self.lengthen_wait()?;
        }
        let event = match self.consumer.poll(Duration::from_millis(100)) {
            None => return Ok(None),
            Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => Event::End(p),
            Some(Err(e)) => {
                let reason = format!("reading {}: {e}", self.topic);
                return Err(other(&self.brokers, reason));
            }
            Some(Ok(m)) => {
                if let Some(next) = self.next.get_mut(m.partition() as usize) {
                    *next = Some(Offset::Offset(m.offset() + 1));
                }
                self.records += 1;
                Event::Record(m)
            }
        };
        self.quiet_since = Instant::now();
        Ok(Some(event))
    }

    /// Nothing came: the broker may need longer than the wait to answer.
    /// The read goes on where it stands with a longer wait.
    fn lengthen_wait(&mut self) -> Result<(), KafkaAdminError> {
        let wait = longer(self.wait_ms);
        tracing::debug!(
            "reading {}: nothing came in {} ms with fetches that wait {} ms; trying {wait} ms",
            self.topic,
            self.quiet_since.elapsed().as_millis(),
            self.wait_ms
        );
        let consumer = consumer(&self.config, wait).map_err(|e| other(&self.brokers, e))?;
        assign(&consumer, &self.topic, &self.next).map_err(|e| other(&self.brokers, e))?;
        self.consumer = consumer;
        self.wait_ms = wait;
        self.quiet_since = Instant::now();
        Ok(())
    }

    fn given_up(&self) -> KafkaAdminError {
        let at: Vec<String> = self
            .next
            .iter()
            .enumerate()
            .filter_map(|(p, o)| {
                o.map(|o| match o {
                    Offset::Offset(o) => format!("partition {p} offset {o}"),
                    _ => format!("partition {p} before its first record"),
                })
            })
            .collect();
        let reason = format!(
            "reading {}: neither a record nor the end of a partition came for {} s, with fetches that wait {} ms; {} records read, standing at {}",
            self.topic,
            self.quiet_since.elapsed().as_secs(),
            self.wait_ms,
            self.records,
            at.join(", ")
        );
        other(&self.brokers, reason)
    }

    /// A partition that needs reading no more is left out when the
    /// consumer is opened again.
    pub fn finished(&mut self, partition: i32) {
        if let Some(next) = self.next.get_mut(partition as usize) {
            *next = None;
        }
    }
}

fn other(brokers: &crate::connectors::kafka_config::Brokers, reason: String) -> KafkaAdminError {
    KafkaAdminError::Other {
        brokers: brokers.into(),
        reason,
    }
}

fn consumer(
    config: &ClientConfig,
    wait_ms: u64,
) -> Result<DropAside<BaseConsumer<EofIsNotAnError>>, String> {
    let consumer: BaseConsumer<EofIsNotAnError> = config
        .clone()
        .set("fetch.wait.max.ms", wait_ms.to_string())
        .create_with_context(EofIsNotAnError)
        .map_err(|e| e.to_string())?;
    Ok(DropAside::new(consumer))
}

fn assign(
    consumer: &BaseConsumer<EofIsNotAnError>,
    topic: &str,
    starts: &[Option<Offset>],
) -> Result<(), String> {
    let mut tpl = TopicPartitionList::new();
    for (p, start) in starts.iter().enumerate() {
        if let Some(offset) = start {
            tpl.add_partition_offset(topic, p as i32, *offset)
                .map_err(|e| e.to_string())?;
        }
    }
    if tpl.count() > 0 {
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wait_grows_fivefold_to_five_seconds_and_patience_with_it() {
        let mut waits = vec![FIRST_WAIT_MS];
        while *waits.last().unwrap() < LONGEST_WAIT_MS {
            waits.push(longer(*waits.last().unwrap()));
        }
        assert_eq!(waits, [10, 50, 250, 1250, 5000]);
        assert_eq!(patience(10), Duration::from_secs(1));
        assert_eq!(patience(250), Duration::from_secs(5));
        assert_eq!(patience(1250), Duration::from_secs(25));
    }
}
