//! The appender of epoch boundaries: where every source partition stands,
//! and the epoch log records that fix each epoch's input. A single
//! process's writer appends its epochs itself; in a cluster, process 0's
//! leader appends each epoch once every writer has prepared it (the
//! decision), with the offsets every process read.

use super::epoch_log::{EpochLog, LogRecord, PartitionRange};
use super::error::RunError;
use super::recovery::Recovered;
use crate::connectors::kafka_sink::record_headers;
use std::collections::{BTreeMap, BTreeSet, HashMap};

/// What an epoch read: the offsets per (source, partition), [first, one
/// past the last), and the partitions that had records waiting past them
/// when it ended.
pub type EpochRead = (BTreeMap<(u32, i32), (i64, i64)>, BTreeSet<(u32, i32)>);

pub struct Boundaries {
    log: EpochLog,
    brokers: crate::connectors::kafka_config::Brokers,
    /// Names the writer in the records' headers and in a fenced error.
    writer_id: String,
    attempt: u32,
    /// Where every source partition stands: the end of the last epoch.
    positions: BTreeMap<(u32, i32), i64>,
    /// Epochs being replayed: their logged record's offset and boundaries.
    replayed: HashMap<u64, (i64, Vec<PartitionRange>)>,
    /// The offset of this appender's latest record in the epoch log:
    /// records after it and before the next are another instance's.
    last_own: i64,
    /// The last epoch committed (by every writer, in a cluster).
    pub committed: u64,
}

impl Boundaries {
    /// `start_offset`: the offset of this start's record in the log.
    pub fn new(
        log: EpochLog,
        brokers: &crate::connectors::kafka_config::Brokers,
        writer_id: &str,
        start_offset: i64,
        recovered: &Recovered,
        positions: BTreeMap<(u32, i32), i64>,
    ) -> Self {
        let replayed = recovered
            .replay
            .iter()
            .map(|(epoch, ranges)| (*epoch, (recovered.log_offsets[epoch], ranges.clone())))
            .collect();
        Boundaries {
            log,
            brokers: brokers.clone(),
            writer_id: writer_id.into(),
            attempt: recovered.attempt,
            positions,
            replayed,
            last_own: start_offset,
            committed: recovered.committed,
        }
    }

    fn headers(&self, epoch: u64) -> rdkafka::message::OwnedHeaders {
        record_headers(epoch, &self.writer_id, &self.attempt.to_string())
    }

    pub fn is_replayed(&self, epoch: u64) -> bool {
        self.replayed.contains_key(&epoch)
    }

    /// On a first start, logs where each source partition begins, so a
    /// restart before the first commit begins at the same offsets.
    pub fn log_begin(&mut self, job: &str) -> Result<(), RunError> {
        let ranges = self
            .positions
            .iter()
            .map(|((source, partition), pos)| PartitionRange {
                source: *source,
                partition: *partition,
                start: *pos,
                end: *pos,
                waiting: false,
            })
            .collect();
        let own = self.log.append(
            &LogRecord::Begin {
                attempt: self.attempt,
                ranges,
            },
            self.headers(0),
        )?;
        self.check_fenced(own, job)
    }

    /// Appends the epoch's boundaries (`read`: the offsets read per
    /// partition), or for a replayed epoch a marker naming the writers
    /// that skip it; returns the offset its progress commits and the
    /// offset appended.
    pub fn log_epoch(
        &mut self,
        epoch: u64,
        (read, waiting): &EpochRead,
        skipped: Vec<u32>,
    ) -> Result<(i64, i64), RunError> {
        if let Some((offset, ranges)) = self.replayed.remove(&epoch) {
            for r in ranges {
                self.positions.insert((r.source, r.partition), r.end);
            }
            let own = self.log.append(
                &LogRecord::Replayed {
                    epoch,
                    attempt: self.attempt,
                    committed: self.committed,
                    skipped,
                },
                self.headers(epoch),
            )?;
            return Ok((offset, own));
        }
        let ranges: Vec<PartitionRange> = self
            .positions
            .iter_mut()
            .map(|((source, partition), pos)| {
                let start = *pos;
                let end = read
                    .get(&(*source, *partition))
                    .map_or(start, |r| r.1.max(start));
                *pos = end;
                PartitionRange {
                    source: *source,
                    partition: *partition,
                    start,
                    end,
                    waiting: waiting.contains(&(*source, *partition)),
                }
            })
            .collect();
        let offset = self.log.append(
            &LogRecord::Epoch {
                epoch,
                attempt: self.attempt,
                ranges,
                committed: self.committed,
            },
            self.headers(epoch),
        )?;
        Ok((offset, offset))
    }

    /// Files and rows are not transactional: before writing them, make
    /// sure no later instance started before this epoch's record. If one
    /// did, it may not know this epoch and may use its number.
    pub fn check_fenced(&mut self, own: i64, job: &str) -> Result<(), RunError> {
        if own != self.last_own + 1 {
            let gap = self.log.read_range(&self.brokers, self.last_own + 1, own)?;
            if super::planner::started_since(&gap, self.attempt).is_some() {
                return Err(RunError::Fenced {
                    writer: self.writer_id.clone(),
                    job: job.into(),
                });
            }
        }
        self.last_own = own;
        Ok(())
    }
}
