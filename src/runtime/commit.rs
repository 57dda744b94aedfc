//! The per-epoch commit: one Kafka transaction per epoch holding the
//! epoch's output, dead letters and changelog records, and the writer's
//! progress on the epoch log, committed only after the epoch's boundaries
//! are durable in that log. At-least-once runs the same steps without the
//! transaction.

use super::boundaries::Boundaries;
use super::coordinator::{execute, steps, EpochSteps, EpochWork, Role};
use super::epoch_log::{EpochLog, LogRecord};
use super::error::RunError;
use super::recovery::Recovered;
use crate::connectors::kafka_admin::client_config;
use crate::connectors::kafka_sink::{refused_for_good, KafkaWriter};
use crate::fault;
use crate::record::{DeadLetter, OutRecord};
use crate::spec::{Guarantee, JobConfig};
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerGroupMetadata};
use rdkafka::error::KafkaError;

use rdkafka::{Offset, TopicPartitionList};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

/// Writer `index`'s producer, its progress group and that group's
/// metadata, and its id.
type WriterParts = (KafkaWriter, BaseConsumer, ConsumerGroupMetadata, String);

/// Starts writer `index`'s producer (with exactly once, fencing its
/// earlier instances) and the consumer of its progress group.
fn writer_and_group(job: &JobConfig, index: u32) -> Result<WriterParts, RunError> {
    let writer_id = job.writer_id_of(index);
    let eos = job.guarantee == Guarantee::ExactlyOnce;
    let writer = KafkaWriter::new(&job.writer_brokers(), &writer_id, 0, eos)
        .map_err(|e| RunError::from_txn(&writer_id, &job.name, e))?;
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
    Ok((writer, group, group_metadata, writer_id))
}

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
    /// Where the epochs' boundaries go: a process of its own and a
    /// cluster's process 0 append them; the others' writers have none.
    bounds: Option<Boundaries>,
    /// This writer's index: its process in a cluster, 0 alone.
    index: u32,
    /// Per replayed epoch, the writers that committed it before.
    skip: BTreeMap<u64, Vec<u32>>,
    log_topic: String,
    /// Gives the writer's group metadata for transactional offset commits,
    /// and commits them itself at least once.
    group: BaseConsumer,
    group_metadata: ConsumerGroupMetadata,
    guarantee: Guarantee,
    dead_letter_topic: String,
    writer_id: String,
    commits_topic: String,
    brokers: crate::connectors::kafka_config::Brokers,
    /// Output records the producer refused and that went to the dead
    /// letters instead.
    pub refused: u64,
    /// Epochs the job has committed, this run's included.
    pub committed_epochs: u64,
    attempt: u32,
}

/// A started writer, its log and progress group: what [`Committer::fence`]
/// sets up once and the rest of the start uses.
pub struct Fenced {
    writer: KafkaWriter,
    pub log: EpochLog,
    group: BaseConsumer,
    group_metadata: ConsumerGroupMetadata,
    pub attempt: u32,
    pub start_offset: i64,
    pub writer_id: String,
}

impl Fenced {
    /// The consumer of the writer's progress group.
    pub fn progress_consumer(&self) -> &BaseConsumer {
        &self.group
    }

    /// The start's record sits at `offset`: its attempt is one past it.
    pub fn set_start(&mut self, offset: i64) {
        self.start_offset = offset;
        self.attempt = super::planner::attempt_at(offset);
        self.writer.set_attempt(self.attempt);
    }
}

impl Committer {
    /// Starts the writer's producer and logs the start. With exactly once
    /// this fences every earlier instance of the job; it comes before
    /// recovery reads the committed progress and the log, so a fenced
    /// instance can commit nothing more, and what it still appends to the
    /// log lands after this start and is ignored. The attempt is one past
    /// the start record's offset, unique even for instances started at
    /// once.
    pub fn fence(job: &JobConfig) -> Result<Fenced, RunError> {
        let mut fenced = Self::fence_writer(job)?;
        crate::fault::pause("fenced");
        let start_offset = fenced
            .log
            .append(&LogRecord::start(), fenced.writer.headers_for(0))?;
        fenced.set_start(start_offset);
        Ok(fenced)
    }

    /// Starts writer 0's producer (fencing its earlier instances with
    /// exactly once), its progress group and the epoch log's producer,
    /// without logging a start: a cluster's process 0 logs a start of its
    /// own, which records the cluster's shape.
    pub fn fence_writer(job: &JobConfig) -> Result<Fenced, RunError> {
        // The log's producer connects in the background while the
        // writer's transactions are initialised.
        let log = EpochLog::open(&job.brokers, &job.epoch_log_topic())?;
        let (writer, group, group_metadata, writer_id) = std::thread::scope(|s| {
            let log_topic = s.spawn(|| {
                crate::connectors::kafka_admin::ensure_topic(
                    &job.brokers,
                    &job.epoch_log_topic(),
                    1,
                    1,
                    crate::connectors::kafka_admin::TopicKind::Forever,
                )
            });
            let writer = writer_and_group(job, 0);
            log_topic.join().expect("epoch log topic thread")?;
            writer
        })?;
        Ok(Fenced {
            writer,
            log,
            group,
            group_metadata,
            attempt: 0,
            start_offset: -1,
            writer_id,
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
            .map_err(|e| RunError::from_txn(&fenced.writer_id, &job.name, e))
    }

    /// The committer of writer 0, which appends the epochs' boundaries:
    /// a process of its own, or process 0 of a cluster.
    pub fn open(
        job: &JobConfig,
        fenced: Fenced,
        recovered: &Recovered,
        positions: BTreeMap<(u32, i32), i64>,
        dead_letter_topic: String,
    ) -> Result<Self, RunError> {
        let Fenced {
            writer,
            log,
            group,
            group_metadata,
            start_offset,
            writer_id,
            ..
        } = fenced;
        let bounds = Boundaries::new(
            log,
            &job.brokers,
            &writer_id,
            start_offset,
            recovered,
            positions,
        );
        let mut c = Self::assemble(
            job,
            (writer, group, group_metadata, writer_id),
            0,
            recovered.attempt,
            recovered.skip.clone(),
            dead_letter_topic,
        );
        c.bounds = Some(bounds);
        c.committed_epochs = recovered.committed_epochs;
        Ok(c)
    }

    /// The committer of writer `index` of a cluster, other than process
    /// 0's: it starts the writer's producer (process 0 has fenced its
    /// earlier instances) and progress group; process 0 appends the
    /// boundaries and decides.
    pub fn open_member(
        job: &JobConfig,
        index: u32,
        attempt: u32,
        skip: BTreeMap<u64, Vec<u32>>,
        dead_letter_topic: String,
    ) -> Result<Self, RunError> {
        let parts = writer_and_group(job, index)?;
        Ok(Self::assemble(
            job,
            parts,
            index,
            attempt,
            skip,
            dead_letter_topic,
        ))
    }

    fn assemble(
        job: &JobConfig,
        (mut writer, group, group_metadata, writer_id): WriterParts,
        index: u32,
        attempt: u32,
        skip: BTreeMap<u64, Vec<u32>>,
        dead_letter_topic: String,
    ) -> Self {
        writer.set_attempt(attempt);
        Committer {
            writer,
            bounds: None,
            index,
            skip,
            log_topic: job.epoch_log_topic(),
            group,
            group_metadata,
            guarantee: job.guarantee,
            dead_letter_topic,
            writer_id,
            commits_topic: job.commits_topic_of(index),
            brokers: job.brokers.clone(),
            refused: 0,
            committed_epochs: 0,
            attempt,
        }
    }

    fn bounds(&mut self) -> &mut Boundaries {
        self.bounds
            .as_mut()
            .expect("only the writer that appends boundaries logs epochs")
    }

    /// Whether this writer committed `epoch` before the restart: it cuts
    /// the epoch again for its state, but sends and commits nothing of it.
    fn skips(&self, epoch: u64) -> bool {
        self.skip
            .get(&epoch)
            .is_some_and(|w| w.contains(&self.index))
    }

    /// A writer joining a cluster grown by a process starts where the
    /// others stand: its progress just past the committed epoch's record,
    /// so that a restart counts it as having committed that epoch.
    pub fn join_at(&mut self, log_offset: i64, job: &str) -> Result<(), RunError> {
        if self.guarantee == Guarantee::ExactlyOnce {
            self.writer
                .begin()
                .map_err(|e| RunError::from_txn(&self.writer_id, job, e))?;
            self.mark(0);
        }
        self.commit_progress(log_offset, job)
    }

    /// The last epoch committed (0: none).
    pub fn committed_epoch(&self) -> u64 {
        self.bounds.as_ref().map_or(0, |b| b.committed)
    }

    /// This start's attempt, stamped on what it commits.
    pub fn attempt(&self) -> u32 {
        self.attempt
    }

    /// A transaction that holds no record gets one, so its offsets stick.
    fn mark(&self, epoch: u64) {
        let value = epoch.to_string();
        if let Err(e) = self.writer.send_changelog(
            &self.commits_topic,
            self.writer_id.as_bytes(),
            Some(value.as_bytes()),
            epoch,
        ) {
            self.writer.note_failure(e);
        }
    }

    pub fn poll(&self) {
        self.writer.poll();
    }

    /// Commits `epoch`: its output, its boundaries (`read`: the offsets its
    /// sources read, per partition), then progress. `write_external` runs
    /// once the output is sent and the epoch logged (its record's offset
    /// given), before the commit: file and Postgres sinks write there,
    /// keyed by the epoch, so a committed epoch's files and rows always
    /// exist and a replayed one is recognised; a cluster's process 0 lets
    /// the other writers commit there. A writer that committed a replayed
    /// epoch before logs it and lets the others commit, sending nothing.
    pub fn commit(
        &mut self,
        epoch: u64,
        output: EpochOutput,
        read: &super::boundaries::EpochRead,
        external: bool,
        write_external: impl FnOnce(i64) -> Result<(), RunError>,
        job: &str,
    ) -> Result<(), RunError> {
        let mut write_external = Some(write_external);
        let work = EpochWork {
            kafka: !output.is_empty(),
            external,
            read: !read.0.is_empty() || !read.1.is_empty(),
            replayed: self.bounds().is_replayed(epoch),
        };
        match self.try_commit(epoch, &output, read, work, &mut write_external, job) {
            // Tried again within this start, the epoch would be sent under
            // the same attempt as the aborted copy, and on a broker that
            // shows aborted records both would count. A new start gives
            // the next try an attempt of its own.
            Err(e) if self.abortable(&e) => {
                let _ = self.writer.abort();
                Err(RunError::EpochAborted {
                    epoch,
                    reason: e.to_string(),
                })
            }
            r => r.map_err(|e| self.fenced_if_superseded(e, job)),
        }
    }

    /// A commit that does not answer is what a fenced producer sees on
    /// some brokers: if the epoch log has a start newer than this one's,
    /// the writer was fenced, and says so (its launcher and supervisor
    /// must not start it again to fence the newer one back).
    fn fenced_if_superseded(&self, e: RunError, job: &str) -> RunError {
        if !matches!(e, RunError::CommitTimeout { .. }) {
            return e;
        }
        match super::epoch_log::newest_attempt(&self.brokers, &self.log_topic) {
            Ok(newest) if newest > self.attempt => RunError::Fenced {
                writer: self.writer_id.clone(),
                job: job.into(),
            },
            _ => e,
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
        read: &super::boundaries::EpochRead,
        work: EpochWork,
        write_external: &mut Option<impl FnOnce(i64) -> Result<(), RunError>>,
        job: &str,
    ) -> Result<(), RunError> {
        let skips = self.skips(epoch);
        let mut stores = EpochCommit {
            role: Role::Logs,
            committer: self,
            epoch,
            output,
            read: Some(read),
            job,
            skips,
            log_offset: 0,
            own: 0,
            decide: None,
            write_external: write_external
                .take()
                .map(|w| Box::new(w) as WriteExternal<'_>),
        };
        execute(&steps(work, Role::Logs), &mut stores)
    }

    /// Commits `epoch` as one of a cluster's writers other than process
    /// 0's, in lockstep with the others: its share of the output is sent
    /// and flushed; `decide` tells process 0 so and waits until the epoch
    /// is in the log (its record's offset); then files and rows are
    /// written and the transaction commits. A writer that committed a
    /// replayed epoch before sends and commits nothing of it, yet takes
    /// part.
    pub fn commit_share(
        &mut self,
        epoch: u64,
        output: &EpochOutput,
        decide: impl FnOnce() -> Result<i64, RunError>,
        write_external: impl FnOnce() -> Result<(), RunError>,
        job: &str,
    ) -> Result<(), RunError> {
        let skips = self.skips(epoch);
        let mut stores = EpochCommit {
            role: Role::Follows,
            committer: self,
            epoch,
            output,
            read: None,
            job,
            skips,
            log_offset: 0,
            own: 0,
            decide: Some(Box::new(decide)),
            write_external: Some(Box::new(move |_| write_external())),
        };
        execute(&steps(EpochWork::default(), Role::Follows), &mut stores)
    }

    /// On a first start, logs where each source partition begins.
    pub fn log_begin(&mut self, job: &str) -> Result<(), RunError> {
        self.bounds().log_begin(job)
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
                        let bytes = r.value.as_ref().map_or(0, |v| v.len());
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
        let records = output.len() + output.changelog.iter().map(|(_, r)| r.len()).sum::<usize>();
        if records == 0 && self.guarantee == Guarantee::ExactlyOnce {
            self.mark(epoch);
        }
        fault::point("epoch_sent");
        Ok(())
    }

    /// Everything the transaction holds is with the broker before files
    /// and rows are written. A record refused when sent (over the broker's
    /// size limit, say) never reaches the transaction: committing would
    /// lose it, so the epoch is aborted.
    fn pre_commit(&mut self, epoch: u64, job: &str) -> Result<(), RunError> {
        let flushed = self.writer.flush(Duration::from_secs(60));
        if fault::error("flushed") {
            return Err(RunError::Delivery(format!(
                "epoch {epoch}: a delivery failure injected by RILL_ERROR_AT"
            )));
        }
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

/// Tells process 0 an epoch is prepared and waits for its record's offset.
type Decide<'a> = Box<dyn FnOnce() -> Result<i64, RunError> + 'a>;
/// Writes an epoch's files and rows, given its record's offset.
type WriteExternal<'a> = Box<dyn FnOnce(i64) -> Result<(), RunError> + 'a>;

/// One epoch on its way through [`Committer`]: the steps of the protocol
/// (see `coordinator.rs`) as this writer carries them out.
struct EpochCommit<'a> {
    role: Role,
    committer: &'a mut Committer,
    epoch: u64,
    output: &'a EpochOutput,
    /// What the epoch read, for the writer that logs it.
    read: Option<&'a super::boundaries::EpochRead>,
    job: &'a str,
    /// The writer committed this replayed epoch before: it sends and
    /// commits nothing of it, yet takes part.
    skips: bool,
    /// The offset of the epoch's record in the log, once logged or decided.
    log_offset: i64,
    /// The offset of this writer's own record of it.
    own: i64,
    /// Tells process 0 the epoch is prepared and waits for its offset.
    decide: Option<Decide<'a>>,
    /// Writes files and rows, given the epoch's offset in the log.
    write_external: Option<WriteExternal<'a>>,
}

impl EpochSteps for EpochCommit<'_> {
    type Error = RunError;

    fn send(&mut self) -> Result<(), RunError> {
        if self.skips {
            return Ok(());
        }
        self.committer.send(self.epoch, self.output, self.job)
    }

    fn log(&mut self) -> Result<(), RunError> {
        let c = &mut *self.committer;
        let skipped = c.skip.get(&self.epoch).cloned().unwrap_or_default();
        let read = self.read.expect("the writer that logs knows what was read");
        (self.log_offset, self.own) = c.bounds().log_epoch(self.epoch, read, skipped)?;
        Ok(())
    }

    fn check_fenced(&mut self) -> Result<(), RunError> {
        self.committer.bounds().check_fenced(self.own, self.job)?;
        fault::point("epoch_logged");
        fault::pause("epoch_logged");
        Ok(())
    }

    fn pre_commit(&mut self) -> Result<(), RunError> {
        if self.skips || self.committer.guarantee != Guarantee::ExactlyOnce {
            return Ok(());
        }
        self.committer.pre_commit(self.epoch, self.job)
    }

    fn await_decision(&mut self) -> Result<(), RunError> {
        if let Some(decide) = self.decide.take() {
            self.log_offset = decide()?;
        }
        fault::point("decided");
        Ok(())
    }

    // Files and rows skip an epoch they hold, so a retry after they were
    // written has nothing to write again.
    fn write_external(&mut self) -> Result<(), RunError> {
        match self.write_external.take() {
            Some(write) => write(self.log_offset),
            None => Ok(()),
        }
    }

    fn commit(&mut self) -> Result<(), RunError> {
        let (c, job) = (&mut *self.committer, self.job);
        if !self.skips {
            c.commit_progress(self.log_offset, job)
                .map_err(|e| match self.role {
                    Role::Follows => c.fenced_if_superseded(e, job),
                    Role::Logs => e,
                })?;
        }
        if self.role == Role::Logs {
            c.bounds().committed = self.epoch;
            c.committed_epochs += 1;
        }
        if self.role == Role::Logs || !self.skips {
            fault::point("committed");
        }
        Ok(())
    }
}
