//! The per-epoch commit: one Kafka transaction per epoch holding the
//! epoch's output, dead letters and changelog records, and the writer's
//! progress on the epoch log, committed only after the epoch's boundaries
//! are durable in that log. At-least-once runs the same steps without the
//! transaction.

use super::coordinator::{steps, EpochWork, Step};
use super::error::RunError;
use super::recovery::{EpochLog, LogRecord, PartitionRange, Recovered};
use crate::connectors::kafka_admin::client_config;
use crate::connectors::kafka_sink::{refused_for_good, KafkaWriter};
use crate::fault;
use crate::record::{DeadLetter, OutRecord};
use crate::spec::{Guarantee, JobConfig};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;

use rdkafka::{Offset, TopicPartitionList};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

/// What one epoch sends, held until the epoch is complete.
#[derive(Default)]
pub struct EpochOutput {
    pub records: Vec<(Arc<str>, Vec<OutRecord>)>,
    pub dead: Vec<DeadLetter>,
    pub changelog: Vec<(Arc<str>, Vec<(Vec<u8>, Option<Vec<u8>>)>)>,
}

impl EpochOutput {
    pub fn len(&self) -> usize {
        self.records.iter().map(|(_, r)| r.len()).sum::<usize>() + self.dead.len()
    }
    pub fn is_empty(&self) -> bool {
        self.records.is_empty() && self.dead.is_empty() && self.changelog.is_empty()
    }
}

pub struct Committer {
    writer: KafkaWriter,
    log: EpochLog,
    log_topic: String,
    /// Gives the writer's group metadata for transactional offset commits,
    /// and commits them itself at least once.
    group: BaseConsumer,
    group_metadata: ConsumerGroupMetadata,
    guarantee: Guarantee,
    dead_letter_topic: String,
    attempt: u32,
    writer_id: String,
    /// Where every source partition stands: the end of the last epoch.
    positions: BTreeMap<(u32, i32), i64>,
    /// Epochs being replayed: their logged record's offset and boundaries.
    replayed: HashMap<u64, (i64, Vec<PartitionRange>)>,
    brokers: String,
    /// The offset of this writer's latest record in the epoch log: records
    /// after it and before the next are another instance's.
    last_own: i64,
    /// The last epoch committed.
    committed: u64,
    /// Output records the producer refused and that went to the dead
    /// letters instead.
    pub refused: u64,
    /// The epoch last appended to the log and the offset its progress
    /// commits, for a retry to cut it again as logged.
    logged: Option<(u64, i64)>,
}

/// A started writer, its log and progress group: what [`Committer::fence`]
/// sets up once and the rest of the start uses.
pub struct Fenced {
    writer: KafkaWriter,
    log: EpochLog,
    group: BaseConsumer,
    group_metadata: ConsumerGroupMetadata,
    pub attempt: u32,
    start_offset: i64,
}

/// Attempts of an epoch after an abortable error, before the job stops.
const RETRIES: u32 = 3;

impl Committer {
    /// Starts the writer's producer and logs the start. With exactly once
    /// this fences every earlier instance of the job; it comes before
    /// recovery reads the committed progress and the log, so a fenced
    /// instance can commit nothing more, and what it still appends to the
    /// log lands after this start and is ignored. The attempt is one past
    /// the start record's offset, unique even for instances started at
    /// once.
    pub fn fence(job: &JobConfig) -> Result<Fenced, RunError> {
        let writer_id = job.writer_id();
        let eos = job.guarantee == Guarantee::ExactlyOnce;
        // The log's idempotent producer gets its id from the broker in the
        // background, while the writer's transactions are initialised.
        let log = EpochLog::open(&job.brokers, &job.epoch_log_topic())?;
        let mut writer = KafkaWriter::new(&job.brokers, &writer_id, 0, eos)
            .map_err(|e| RunError::from_txn(&writer_id, &job.name, e))?;
        crate::connectors::kafka_admin::ensure_topic(
            &job.brokers,
            &job.epoch_log_topic(),
            1,
            1,
            crate::connectors::kafka_admin::TopicKind::Forever,
        )?;
        crate::fault::pause("fenced");
        let start_offset = log.append(&LogRecord::Start {}, writer.headers_for(0))?;
        let attempt = super::planner::attempt_at(start_offset);
        writer.set_attempt(attempt);
        let group: BaseConsumer = client_config(&job.brokers)
            .set("group.id", &writer_id)
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| RunError::Client {
                what: "the progress consumer".into(),
                reason: e.to_string(),
            })?;
        let group_metadata = group.group_metadata().ok_or_else(|| RunError::Client {
            what: "the progress consumer".into(),
            reason: "no group metadata".into(),
        })?;
        Ok(Fenced {
            writer,
            log,
            group,
            group_metadata,
            attempt,
            start_offset,
        })
    }

    /// Of two instances started at once, the one that fenced first may log
    /// its start last, after the other has fenced it and begun to commit.
    /// Recovery must not read the progress while another instance can
    /// still commit: the writer asks whether it still holds its id, so
    /// that every later commit is that of an instance started after it.
    pub fn check_not_fenced(job: &JobConfig, fenced: &Fenced) -> Result<(), RunError> {
        if job.guarantee != Guarantee::ExactlyOnce {
            return Ok(());
        }
        let mut none = TopicPartitionList::new();
        none.add_partition_offset(&job.epoch_log_topic(), 0, Offset::Offset(0))
            .map_err(RunError::Commit)?;
        fenced
            .writer
            .still_holds_its_id(&none, &fenced.group_metadata)
            .map_err(|e| RunError::from_txn(&job.writer_id(), &job.name, e))
    }

    pub fn open(
        job: &JobConfig,
        fenced: Fenced,
        recovered: &Recovered,
        positions: BTreeMap<(u32, i32), i64>,
        dead_letter_topic: String,
    ) -> Result<Self, RunError> {
        let Fenced {
            mut writer,
            log,
            group,
            group_metadata,
            start_offset,
            ..
        } = fenced;
        writer.set_attempt(recovered.attempt);
        let replayed = recovered
            .replay
            .iter()
            .map(|(epoch, ranges)| (*epoch, (recovered.log_offsets[epoch], ranges.clone())))
            .collect();
        Ok(Committer {
            writer,
            log,
            log_topic: job.epoch_log_topic(),
            group,
            group_metadata,
            guarantee: job.guarantee,
            dead_letter_topic,
            attempt: recovered.attempt,
            writer_id: job.writer_id(),
            positions,
            replayed,
            brokers: job.brokers.clone(),
            last_own: start_offset,
            committed: recovered.committed,
            refused: 0,
            logged: None,
        })
    }

    pub fn poll(&self) {
        self.writer.poll();
    }

    /// Commits `epoch`: its output, its boundaries (`read`: the offsets its
    /// sources read, per partition), then progress. `before_commit` runs
    /// once the output is sent and the epoch logged, before the commit:
    /// file and Postgres sinks write there, keyed by the epoch, so a
    /// committed epoch's files and rows always exist and a replayed one is
    /// recognised.
    pub fn commit(
        &mut self,
        epoch: u64,
        output: EpochOutput,
        read: &BTreeMap<(u32, i32), (i64, i64)>,
        external: bool,
        write_external: impl FnOnce() -> Result<(), RunError>,
        job: &str,
    ) -> Result<(), RunError> {
        let mut work = EpochWork {
            kafka: !output.is_empty(),
            external,
            read: !read.is_empty(),
            replayed: self.replayed.contains_key(&epoch),
        };
        let mut write_external = Some(write_external);
        let mut tries = 0;
        loop {
            match self.try_commit(epoch, &output, read, work, &mut write_external, job) {
                Err(e) if tries < RETRIES && self.abortable(&e) => {
                    tries += 1;
                    let _ = self.writer.abort();
                    eprintln!("epoch {epoch}: {e}; aborted, trying again ({tries} of {RETRIES})");
                    std::thread::sleep(Duration::from_millis(200 << tries));
                    // The epoch is in the log: it is cut again as logged.
                    if let Some((e, offset)) = self.logged.take() {
                        if e == epoch {
                            self.replayed.insert(epoch, (offset, Vec::new()));
                            work.replayed = true;
                        }
                    }
                }
                r => return r,
            }
        }
    }

    /// Whether an error leaves the writer able to abort the epoch's
    /// transaction and try it again: a record the broker refused, or a
    /// transaction error that asks for an abort. Fencing is never such an
    /// error.
    fn abortable(&self, e: &RunError) -> bool {
        self.guarantee == Guarantee::ExactlyOnce
            && self.writer.fatal_error().is_none()
            && match e {
                RunError::Delivery(_) => true,
                RunError::Commit(KafkaError::Transaction(t)) => t.txn_requires_abort(),
                _ => false,
            }
    }

    fn try_commit(
        &mut self,
        epoch: u64,
        output: &EpochOutput,
        read: &BTreeMap<(u32, i32), (i64, i64)>,
        work: EpochWork,
        write_external: &mut Option<impl FnOnce() -> Result<(), RunError>>,
        job: &str,
    ) -> Result<(), RunError> {
        let eos = self.guarantee == Guarantee::ExactlyOnce;
        let (mut log_offset, mut own) = (0, 0);
        for step in steps(work, false) {
            match step {
                Step::Send => self.send(epoch, output, job)?,
                Step::Log => {
                    (log_offset, own) = self.log_epoch(epoch, read)?;
                    self.logged = Some((epoch, log_offset));
                }
                Step::CheckFenced => {
                    self.check_fenced(own, job)?;
                    fault::point("epoch_logged");
                    fault::pause("epoch_logged");
                }
                Step::PreCommit if eos => self.pre_commit(epoch, job)?,
                Step::PreCommit | Step::AwaitDecision => {}
                // Files and rows skip an epoch they hold, so a retry after
                // they were written has nothing to write again.
                Step::WriteExternal => {
                    if let Some(write) = write_external.take() {
                        write()?;
                    }
                }
                Step::Commit => {
                    self.commit_progress(log_offset, job)?;
                    self.committed = epoch;
                    fault::point("committed");
                }
            }
        }
        Ok(())
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
            })
            .collect();
        let own = self.log.append(
            &LogRecord::Begin {
                attempt: self.attempt,
                ranges,
            },
            self.writer.headers_for(0),
        )?;
        self.check_fenced(own, job)
    }

    fn send(&mut self, epoch: u64, output: &EpochOutput, job: &str) -> Result<(), RunError> {
        if self.guarantee == Guarantee::ExactlyOnce {
            self.writer
                .begin()
                .map_err(|e| RunError::from_txn(&self.writer_id, job, e))?;
        }
        for (topic, records) in &output.records {
            for r in records {
                match self.writer.send(topic, r, epoch) {
                    Ok(()) => {}
                    // A record the producer refuses for what it is would be
                    // refused on every replay: it becomes a dead letter, in
                    // the same transaction, instead of stopping the job.
                    Err(e) if refused_for_good(&e) => {
                        let bytes = r.value.as_ref().map_or(0, Vec::len);
                        let dead = DeadLetter {
                            key: r.key.clone(),
                            value: None,
                            reason: format!("sink topic {topic}: {e} (a value of {bytes} bytes)"),
                            topic: topic.clone(),
                            partition: -1,
                            offset: -1,
                        };
                        self.refused += 1;
                        if let Err(e) = self.writer.send_dead(&self.dead_letter_topic, &dead, epoch)
                        {
                            self.writer.note_failure(e);
                        }
                    }
                    Err(e) => self.writer.note_failure(e),
                }
            }
        }
        for d in &output.dead {
            if let Err(e) = self.writer.send_dead(&self.dead_letter_topic, d, epoch) {
                self.writer.note_failure(e);
            }
        }
        for (topic, records) in &output.changelog {
            for (k, v) in records {
                if let Err(e) = self.writer.send_changelog(topic, k, v.as_deref(), epoch) {
                    self.writer.note_failure(e);
                }
            }
        }
        fault::point("epoch_sent");
        Ok(())
    }

    /// Appends the epoch's boundaries, or for a replayed epoch a marker;
    /// returns the offset its progress commits and the offset appended.
    fn log_epoch(
        &mut self,
        epoch: u64,
        read: &BTreeMap<(u32, i32), (i64, i64)>,
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
                    skipped: Vec::new(),
                },
                self.writer.headers_for(epoch),
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
            self.writer.headers_for(epoch),
        )?;
        Ok((offset, offset))
    }

    /// Files and rows are not transactional: before writing them, make
    /// sure no later instance started before this epoch's record. If one
    /// did, it may not know this epoch and may use its number.
    fn check_fenced(&mut self, own: i64, job: &str) -> Result<(), RunError> {
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

    /// Everything the transaction holds is with the broker before files
    /// and rows are written. A record refused when sent (over the broker's
    /// size limit, say) never reaches the transaction: committing would
    /// lose it, so the epoch is aborted.
    fn pre_commit(&mut self, epoch: u64, job: &str) -> Result<(), RunError> {
        let flushed = self.writer.flush(Duration::from_secs(60));
        if let Some((n, first)) = self.writer.take_failures() {
            let _ = self.writer.abort();
            // Records refused because a newer instance fenced this one
            // (they fail as purged once the producer's error is fatal).
            let cause = self.writer.fatal_error().unwrap_or_else(|| first.clone());
            if let e @ (RunError::Fenced { .. } | RunError::CommitTimeout { .. }) =
                RunError::from_txn(&self.writer_id, job, cause)
            {
                return Err(e);
            }
            return Err(RunError::Delivery(format!(
                "{n} records of epoch {epoch} could not be sent (first error: {first}); \
                 the epoch's transaction was aborted and nothing of it is committed"
            )));
        }
        flushed.map_err(RunError::Delivery)
    }

    /// Commits the transaction with the writer's progress in it: the log
    /// offset just past the epoch's record.
    fn commit_progress(&mut self, log_offset: i64, job: &str) -> Result<(), RunError> {
        let mut progress = TopicPartitionList::new();
        progress
            .add_partition_offset(&self.log_topic, 0, Offset::Offset(log_offset + 1))
            .map_err(RunError::Commit)?;
        if self.guarantee == Guarantee::ExactlyOnce {
            self.writer
                .commit(&progress, &self.group_metadata)
                .map_err(|e| RunError::from_txn(&self.writer_id, job, e))
        } else {
            self.writer
                .flush(Duration::from_secs(60))
                .map_err(RunError::Delivery)?;
            self.group
                .commit(&progress, CommitMode::Sync)
                .map_err(RunError::Commit)
        }
    }

    pub fn flush(&self) -> Result<(), RunError> {
        self.writer
            .flush(Duration::from_secs(60))
            .map_err(RunError::Delivery)
    }
}
