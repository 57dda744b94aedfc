//! Kafka sink: the producer the process's writer thread sends every
//! output and dead-letter record through. Records carry `rill-epoch`,
//! `rill-writer` and `rill-attempt` headers so a reader can tell which
//! epoch and which start of the writer produced them.

use super::kafka_admin::client_config;
use super::sink::{Committed, EpochSink, SinkError};
use crate::connectors::kafka_config::default_to;
use crate::record::{DeadLetter, OutRecord};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Default)]
pub struct Deliveries {
    pub failed: AtomicU64,
    pub first_error: Mutex<Option<KafkaError>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        match result {
            Ok(_) => {}
            Err((e, _)) => {
                self.failed.fetch_add(1, Ordering::Relaxed);
                self.first_error
                    .lock()
                    .unwrap()
                    .get_or_insert_with(|| e.clone());
            }
        }
    }
}

/// The headers every record rill writes carries: its epoch, the writer
/// and the writer's attempt.
pub fn record_headers(epoch: u64, writer: &str, attempt: &str) -> OwnedHeaders {
    let e = epoch.to_string();
    OwnedHeaders::new_with_capacity(3)
        .insert(Header {
            key: "rill-epoch",
            value: Some(e.as_bytes()),
        })
        .insert(Header {
            key: "rill-writer",
            value: Some(writer.as_bytes()),
        })
        .insert(Header {
            key: "rill-attempt",
            value: Some(attempt.as_bytes()),
        })
}

pub struct KafkaWriter {
    producer: BaseProducer<Deliveries>,
    writer: String,
    attempt: String,
}

/// How long a transaction call may take; a fenced producer's commit can
/// otherwise hang.
pub const TXN_TIMEOUT: Duration = Duration::from_secs(30);

impl KafkaWriter {
    /// A producer for `writer`; with `transactional`, its transactional id is
    /// the writer's, and starting it fences every earlier instance.
    pub fn new(
        brokers: &crate::connectors::kafka_config::Brokers,
        writer: &str,
        attempt: u32,
        transactional: bool,
    ) -> Result<Self, KafkaError> {
        let mut config = client_config(brokers);
        config.set("enable.idempotence", "true");
        // An epoch's records wait here for the broker, a few hundred
        // bytes each with their headers; past these bounds the writer
        // waits for room on its own thread, and memory stays flat. Each
        // is a default a sink's `kafka` properties may change.
        for (key, value) in [
            ("linger.ms", "5"),
            ("batch.num.messages", "10000"),
            ("queue.buffering.max.messages", "50000"),
            ("queue.buffering.max.kbytes", "65536"),
        ] {
            default_to(&mut config, key, value);
        }
        if transactional {
            config.set("transactional.id", writer);
            default_to(&mut config, "transaction.timeout.ms", "60000");
        }
        let producer: BaseProducer<Deliveries> =
            config.create_with_context(Deliveries::default())?;
        if transactional {
            producer.init_transactions(TXN_TIMEOUT)?;
        }
        Ok(KafkaWriter {
            producer,
            writer: writer.to_string(),
            attempt: attempt.to_string(),
        })
    }

    /// The attempt stamped on records from now on (known once recovery has
    /// read the epoch log, which happens after the writer has fenced its
    /// predecessors).
    pub fn set_attempt(&mut self, attempt: u32) {
        self.attempt = attempt.to_string();
    }

    pub fn begin(&self) -> Result<(), KafkaError> {
        self.producer.begin_transaction()
    }

    /// Commits the open transaction with the writer's progress in it.
    pub fn commit(
        &self,
        progress: &rdkafka::TopicPartitionList,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<(), KafkaError> {
        self.producer
            .send_offsets_to_transaction(progress, group, TXN_TIMEOUT)?;
        self.producer.commit_transaction(TXN_TIMEOUT)
    }

    pub fn headers_for(&self, epoch: u64) -> OwnedHeaders {
        self.headers(epoch)
    }

    /// A changelog record: the state key and its value as of `epoch`; no
    /// value deletes the key.
    pub fn send_changelog(
        &self,
        topic: &str,
        key: &[u8],
        value: Option<&[u8]>,
        epoch: u64,
    ) -> Result<(), KafkaError> {
        let mut r: BaseRecord<'_, [u8], [u8], ()> =
            BaseRecord::to(topic).key(key).headers(self.headers(epoch));
        if let Some(v) = value {
            r = r.payload(v);
        }
        self.send_record(r)
    }

    fn headers(&self, epoch: u64) -> OwnedHeaders {
        record_headers(epoch, &self.writer, &self.attempt)
    }

    /// Hands a record to the producer, waiting (on this writer thread,
    /// never a worker) while its queue is full. An error is the producer
    /// refusing this record at once, before any broker saw it.
    fn send_record(&self, mut record: BaseRecord<'_, [u8], [u8], ()>) -> Result<(), KafkaError> {
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Counts a record that could not be sent: the epoch must not commit.
    pub fn note_failure(&self, e: KafkaError) {
        let ctx = self.producer.context();
        ctx.failed.fetch_add(1, Ordering::Relaxed);
        ctx.first_error.lock().unwrap().get_or_insert(e);
    }

    pub fn send(&self, topic: &str, rec: &OutRecord, epoch: u64) -> Result<(), KafkaError> {
        let mut r: BaseRecord<'_, [u8], [u8], ()> =
            BaseRecord::to(topic).headers(self.headers(epoch));
        if let Some(v) = &rec.value {
            r = r.payload(&v[..]);
        }
        if let Some(k) = &rec.key {
            r = r.key(&k[..]);
        }
        if let Some(p) = rec.partition {
            r = r.partition(p);
        }
        self.send_record(r)
    }

    /// Dead letters keep the original bytes as their value; the reason and
    /// the origin travel in headers, as Kafka Connect's dead-letter queues do.
    pub fn send_dead(&self, topic: &str, dl: &DeadLetter, epoch: u64) -> Result<(), KafkaError> {
        let partition = dl.partition.to_string();
        let offset = dl.offset.to_string();
        let headers = self
            .headers(epoch)
            .insert(Header {
                key: "rill-error-reason",
                value: Some(dl.reason.as_bytes()),
            })
            .insert(Header {
                key: "rill-source-topic",
                value: Some(dl.topic.as_bytes()),
            })
            .insert(Header {
                key: "rill-source-partition",
                value: Some(partition.as_bytes()),
            })
            .insert(Header {
                key: "rill-source-offset",
                value: Some(offset.as_bytes()),
            });
        let mut r: BaseRecord<'_, [u8], [u8], ()> = BaseRecord::to(topic).headers(headers);
        if let Some(v) = &dl.value {
            r = r.payload(&v[..]);
        }
        if let Some(k) = &dl.key {
            r = r.key(&k[..]);
        }
        self.send_record(r)
    }

    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until everything sent so far is delivered or has failed.
    pub fn flush(&self, timeout: Duration) -> Result<(), String> {
        flush_promptly(&self.producer, timeout).map_err(|e| format!("flush: {e}"))?;
        let ctx = self.producer.context();
        let failed = ctx.failed.load(Ordering::Relaxed);
        if failed > 0 {
            let first = ctx
                .first_error
                .lock()
                .unwrap()
                .as_ref()
                .map_or(String::new(), ToString::to_string);
            return Err(format!(
                "{failed} records could not be delivered (first error: {first})"
            ));
        }
        Ok(())
    }

    /// Records that failed since the last call: their count and the first
    /// error. A transaction must not commit over a failed record.
    pub fn take_failures(&self) -> Option<(u64, KafkaError)> {
        let ctx = self.producer.context();
        let failed = ctx.failed.swap(0, Ordering::Relaxed);
        let first = ctx.first_error.lock().unwrap().take()?;
        (failed > 0).then_some((failed, first))
    }

    /// The error that ended the producer for good, if any (a newer
    /// instance fenced it, say): once there is one, every record sent
    /// afterwards fails as purged.
    pub fn fatal_error(&self) -> Option<KafkaError> {
        self.producer
            .client()
            .fatal_error()
            .map(|(code, _)| KafkaError::MessageProduction(code))
    }

    /// Asks the transaction coordinator whether this writer still holds
    /// its transactional id, without committing anything: a transaction
    /// with offsets in it, aborted. Fails when a newer producer fenced it.
    pub fn still_holds_its_id(
        &self,
        offsets: &rdkafka::TopicPartitionList,
        group: &rdkafka::consumer::ConsumerGroupMetadata,
    ) -> Result<(), KafkaError> {
        self.producer.begin_transaction()?;
        let sent = self
            .producer
            .send_offsets_to_transaction(offsets, group, TXN_TIMEOUT);
        let aborted = self.producer.abort_transaction(TXN_TIMEOUT);
        sent.and(aborted)
    }

    pub fn abort(&self) -> Result<(), KafkaError> {
        self.producer.abort_transaction(TXN_TIMEOUT)
    }

    pub fn in_flight(&self) -> i32 {
        self.producer.in_flight_count()
    }
}

/// A sink whose store is a Kafka topic: its records of an epoch go into
/// the writer's transaction, which is their pre-commit and commit.
pub struct KafkaTopicSink {
    topic: Arc<str>,
    /// Batches as the workers sent them: gathered into one vector, an
    /// epoch's records would be copied as it grows and held with up to as
    /// much room again.
    staged: std::collections::BTreeMap<u64, Vec<Vec<OutRecord>>>,
}

impl KafkaTopicSink {
    pub fn new(topic: &str) -> Self {
        KafkaTopicSink {
            topic: Arc::from(topic),
            staged: Default::default(),
        }
    }
}

impl EpochSink for KafkaTopicSink {
    fn stage(&mut self, epoch: u64, records: Vec<OutRecord>) {
        self.staged.entry(epoch).or_default().push(records);
    }

    fn holds(&self, _epoch: u64) -> bool {
        false
    }

    fn transactional(&mut self, epoch: u64) -> Vec<(Arc<str>, Vec<OutRecord>)> {
        let batches = self.staged.remove(&epoch).unwrap_or_default();
        batches
            .into_iter()
            .map(|records| (self.topic.clone(), records))
            .collect()
    }

    fn pre_commit(&mut self, _epoch: u64) -> Result<(), SinkError> {
        Ok(())
    }

    fn commit(&mut self, _epoch: u64) -> Result<Committed, SinkError> {
        Ok(Committed::default())
    }

    fn abort(&mut self, epoch: u64) {
        self.staged.remove(&epoch);
    }

    /// Whether a transaction holds an epoch is the writer's progress,
    /// which recovery reads; the topic itself is not asked.
    fn contains(&mut self, _epoch: u64) -> Result<bool, SinkError> {
        Ok(false)
    }
}

/// Whether the producer refused a record for what the record is (too large,
/// say), so that sending it again would fail the same way.
pub fn refused_for_good(e: &KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::MessageSizeTooLarge
                | RDKafkaErrorCode::InvalidMessageSize
                | RDKafkaErrorCode::InvalidMessage
                | RDKafkaErrorCode::InvalidRecord
                | RDKafkaErrorCode::BadMessage
        )
    )
}

/// Waits until every record `producer` holds is acknowledged. rdkafka's own
/// `flush` waits in whole steps of 100 ms once the first look finds records
/// in flight, which cost every epoch's commit two such steps; this looks
/// again as soon as a delivery report arrives.
pub fn flush_promptly<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> KafkaResult<()> {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        match producer.flush(Duration::ZERO) {
            Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut))
                if std::time::Instant::now() < deadline =>
            {
                producer.poll(Duration::from_millis(1));
            }
            r => return r,
        }
    }
}
