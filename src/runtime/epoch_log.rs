//! The epoch log (`<job>.epochs`, one partition, written without a
//! transaction): a record per epoch with the offset range every source
//! partition contributed to it, written before the epoch commits, and a
//! record per start of the job. This file holds its records, the
//! appender, and the reads of it; what the records mean for a start is
//! `planner.rs`'s.

use super::recovery::RecoveryError;
use crate::connectors::bounded_read::{BoundedRead, Event};
use crate::connectors::kafka_admin::{self, client_config};
use crate::runtime::planner;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset};
use serde::{Deserialize, Serialize};
use std::sync::Mutex;
use std::time::Duration;

/// The part of an epoch one source partition holds: offsets [start, end).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRange {
    pub source: u32,
    pub partition: i32,
    pub start: i64,
    pub end: i64,
    /// Records waited past `end` when the epoch was cut: a window does
    /// not take the partition for idle in it, in a replay as the first
    /// time (see `dataflow/source.rs`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub waiting: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum LogRecord {
    /// A start of the job; its attempt is one past this record's offset.
    /// A cluster logs one start for all its processes, with its shape: an
    /// epoch it logged and did not commit, whose files and rows its
    /// processes may have written, is finished on that shape (records
    /// route to workers by their number).
    Start {
        #[serde(default = "one")]
        processes: u32,
        /// Worker threads per process (0: not recorded).
        #[serde(default)]
        workers: u32,
    },
    /// An epoch's boundaries, for every partition of every source.
    ///
    /// `committed` is the last epoch the writer had committed when it
    /// logged this one: should the committed progress ever vanish from
    /// the broker, the log still says that there was some.
    Epoch {
        epoch: u64,
        attempt: u32,
        ranges: Vec<PartitionRange>,
        #[serde(default)]
        committed: u64,
    },
    /// An attempt commits an epoch it replayed (logged before). It marks
    /// the log so the writer can see whether a later instance started
    /// before it writes the epoch's files and rows.
    Replayed {
        epoch: u64,
        attempt: u32,
        #[serde(default)]
        committed: u64,
        /// Writers that had committed the epoch already and skip it.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        skipped: Vec<u32>,
    },
    /// A first start resolved where its sources begin (`latest` is where
    /// the topic ends at that moment): `start` of each range. A restart
    /// before anything committed begins there too, not at a later end.
    Begin {
        attempt: u32,
        ranges: Vec<PartitionRange>,
    },
    /// A run of the job, from nothing: the first start on an empty log
    /// names it, or `jobctl reset` (`reset`), after which nothing logged
    /// before counts. Every sink keeps the name with its progress, so
    /// progress of another run (a log deleted by hand) is never taken for
    /// this one's. Its epochs are numbered after `after_epoch`, the
    /// highest any earlier run used, so they meet no file or row of one.
    Incarnation {
        id: String,
        #[serde(default)]
        after_epoch: u64,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        reset: bool,
    },
    /// What the state of each stateful transform means (its keys,
    /// accumulators and window), as the job file of a start that changed
    /// it said: a later start whose job file means something else by
    /// that state is refused.
    State {
        transforms: std::collections::BTreeMap<String, Vec<(String, String)>>,
    },
}

fn one() -> u32 {
    1
}

impl LogRecord {
    /// The start of a single process, its worker count unrecorded.
    pub fn start() -> LogRecord {
        LogRecord::Start {
            processes: 1,
            workers: 0,
        }
    }
}

/// Produces to the epoch log and waits for each record to be stored.
pub struct EpochLog {
    producer: BaseProducer<LastOffset>,
    topic: String,
}

#[derive(Default)]
struct LastOffset(Mutex<Option<Result<i64, String>>>);

impl ClientContext for LastOffset {}

impl ProducerContext for LastOffset {
    type DeliveryOpaque = ();
    fn delivery(&self, r: &DeliveryResult<'_>, _: ()) {
        *self.0.lock().unwrap() = Some(match r {
            Ok(m) => Ok(rdkafka::Message::offset(m)),
            Err((e, _)) => Err(e.to_string()),
        });
    }
}

impl EpochLog {
    pub fn open(
        brokers: &crate::connectors::kafka_config::Brokers,
        topic: &str,
    ) -> Result<Self, RecoveryError> {
        // Not idempotent: librdkafka asks for an idempotent producer's id
        // before it has a connection, fails, and asks again only after
        // 500 ms, which every start waited out before logging its start.
        // Without retries an append is stored once or fails, and a failed
        // append is a failed attempt, as a crash in the middle of one is.
        let producer = client_config(brokers)
            .set("enable.idempotence", "false")
            .set("message.send.max.retries", "0")
            .set("max.in.flight.requests.per.connection", "1")
            .set("acks", "all")
            .set("linger.ms", "0")
            .create_with_context(LastOffset::default())
            .map_err(|e| RecoveryError::Log {
                topic: topic.into(),
                reason: e.to_string(),
            })?;
        Ok(EpochLog {
            producer,
            topic: topic.to_string(),
        })
    }

    /// Appends a record and returns its offset once the broker has it.
    pub fn append(
        &self,
        record: &LogRecord,
        headers: rdkafka::message::OwnedHeaders,
    ) -> Result<i64, RecoveryError> {
        let err = |reason: String| RecoveryError::Log {
            topic: self.topic.clone(),
            reason,
        };
        let value = serde_json::to_vec(record).unwrap();
        *self.producer.context().0.lock().unwrap() = None;
        self.producer
            .send(
                BaseRecord::<[u8], [u8]>::to(&self.topic)
                    .payload(&value)
                    .partition(0)
                    .headers(headers),
            )
            .map_err(|(e, _)| err(e.to_string()))?;
        crate::connectors::kafka_sink::flush_promptly(&self.producer, Duration::from_secs(30))
            .map_err(|e| err(e.to_string()))?;
        match self.producer.context().0.lock().unwrap().take() {
            Some(Ok(offset)) => Ok(offset),
            Some(Err(e)) => Err(err(e)),
            None => Err(err("no delivery report within 30 s".into())),
        }
    }
}

impl EpochLog {
    /// The records at offsets [from, to), which the caller knows exist.
    pub fn read_range(
        &self,
        brokers: &crate::connectors::kafka_config::Brokers,
        from: i64,
        to: i64,
    ) -> Result<Vec<(i64, LogRecord)>, RecoveryError> {
        use rdkafka::Message;
        let err = |reason: String| RecoveryError::Log {
            topic: self.topic.clone(),
            reason,
        };
        let config = kafka_admin::bounded_reader_config(brokers, "rill-epoch-log");
        let mut read = BoundedRead::open(
            config,
            brokers,
            &self.topic,
            vec![Some(Offset::Offset(from))],
        )
        .map_err(|e| err(e.to_string()))?;
        let mut out = Vec::new();
        let mut next = from;
        while next < to {
            // The caller knows the records are there: an end is a fetch
            // that has not brought them yet.
            let Some(Event::Record(m)) = read.poll().map_err(|e| err(e.to_string()))? else {
                continue;
            };
            next = m.offset() + 1;
            if m.offset() >= to {
                break;
            }
            if let Some(r) = m.payload().and_then(|v| serde_json::from_slice(v).ok()) {
                out.push((m.offset(), r));
            }
        }
        Ok(out)
    }
}

/// The epoch log's records, in order, with their offsets; see
/// [`planner::live`] for those that count.
pub fn read_log(
    brokers: &crate::connectors::kafka_config::Brokers,
    log: &str,
) -> Result<Vec<(i64, LogRecord)>, RecoveryError> {
    read_log_from(brokers, log, None)
}

/// [`read_log`], going on from a read begun earlier when there is one.
pub(super) fn read_log_from(
    brokers: &crate::connectors::kafka_config::Brokers,
    log: &str,
    begun: Option<kafka_admin::Prefetch>,
) -> Result<Vec<(i64, LogRecord)>, RecoveryError> {
    let mut records: Vec<(i64, LogRecord)> = Vec::new();
    let each = |m: kafka_admin::Borrowed<'_>| {
        if let Some(r) = m
            .value()
            .and_then(|v| serde_json::from_slice::<LogRecord>(v).ok())
        {
            records.push((m.offset(), r));
        }
    };
    match begun {
        Some(begun) => begun.read_to_end(each)?,
        None => kafka_admin::read_each(brokers, log, None, each)?,
    }
    Ok(records)
}

/// The writer index a record's `rill-writer` header names (`<job>-w<i>`);
/// records without one were written by a single process, writer 0.
pub fn writer_index(header: Option<&str>) -> u32 {
    header
        .and_then(|w| w.rsplit_once("-w"))
        .and_then(|(_, i)| i.parse().ok())
        .unwrap_or(0)
}

/// How many writers the job has ever had: the most processes any start
/// in its log had (1 for a new job). Every one of them is fenced at a
/// start, used now or not: a writer of a larger cluster killed with a
/// transaction open would otherwise keep it open.
pub(crate) fn writers_in(records: &[(i64, LogRecord)]) -> u32 {
    records
        .iter()
        .filter_map(|(_, r)| match r {
            LogRecord::Start { processes, .. } => Some((*processes).max(1)),
            _ => None,
        })
        .max()
        .unwrap_or(1)
}

/// Names a new run of the job in its log (see [`LogRecord::Incarnation`]),
/// its epochs numbered after `after_epoch`, and returns the run's name:
/// the first the log holds, should another start have named one too.
pub fn name_run(
    brokers: &crate::connectors::kafka_config::Brokers,
    log: &str,
    after_epoch: u64,
) -> Result<String, RecoveryError> {
    let id = format!("{:016x}", rand::random::<u64>());
    EpochLog::open(brokers, log)?.append(
        &LogRecord::Incarnation {
            id,
            after_epoch,
            reset: false,
        },
        rdkafka::message::OwnedHeaders::new(),
    )?;
    planner::resume(&read_log(brokers, log)?, 0)
        .incarnation
        .ok_or_else(|| RecoveryError::Log {
            topic: log.into(),
            reason: "the run just named is not in the log".into(),
        })
}

/// The attempt of the newest start in the epoch log.
pub fn newest_attempt(
    brokers: &crate::connectors::kafka_config::Brokers,
    log: &str,
) -> Result<u32, RecoveryError> {
    Ok(planner::resume(&read_log(brokers, log)?, 0).last_attempt)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_record_says_which_partitions_had_records_waiting_and_older_records_read_as_none() {
        let range = |partition, waiting| PartitionRange {
            source: 0,
            partition,
            start: 5,
            end: 9,
            waiting,
        };
        let record = LogRecord::Epoch {
            epoch: 3,
            attempt: 1,
            ranges: vec![range(0, false), range(1, true)],
            committed: 2,
        };
        let text = serde_json::to_string(&record).unwrap();
        assert_eq!(
            text,
            r#"{"kind":"epoch","epoch":3,"attempt":1,"ranges":[{"source":0,"partition":0,"start":5,"end":9},{"source":0,"partition":1,"start":5,"end":9,"waiting":true}],"committed":2}"#
        );
        assert_eq!(serde_json::from_str::<LogRecord>(&text).unwrap(), record);
    }
}
