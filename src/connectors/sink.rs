//! The epoch-sink protocol: a sink's side of each epoch's two-phase
//! commit, in the spirit of Flink's `TwoPhaseCommitSinkFunction`. The
//! runtime's coordinator decides when each step runs
//! (`runtime/coordinator.rs`); a sink only knows how.
//!
//! - `stage`: records of an epoch that is not complete yet are held.
//! - `pre_commit`: the epoch's records are made durable where no reader
//!   sees them (a temporary file, fsynced), or handed to the writer's
//!   Kafka transaction (`transactional`).
//! - `commit`: they become visible, atomically per epoch and skipping an
//!   epoch the store already holds (a rename; a database transaction that
//!   records the epoch). Running it twice for an epoch changes nothing,
//!   which is what makes a replay exactly once.
//! - `abort`: what was staged or pre-committed for the epoch is dropped.
//! - `contains`: whether the store already holds an epoch.

use crate::record::OutRecord;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("cannot write files for sink `{sink}` in {dir}: {source}")]
    Files {
        sink: String,
        dir: String,
        source: std::io::Error,
    },
    #[error(transparent)]
    Postgres(#[from] super::postgres_sink::PostgresError),
    #[error("sink `{sink}` holds the progress of another run of job {job} ({found}): the job's epoch log was deleted or replaced without it, and this run would skip the epochs that sink says it has written; run `jobctl reset {job}` to start the job over, or give the job another name")]
    OtherRun {
        sink: String,
        job: String,
        found: String,
    },
}

/// What committing an epoch did, for the run's summary.
#[derive(Debug, Default)]
pub struct Committed {
    /// Rows written to a table.
    pub rows: u64,
    /// Rows written to a fallback file instead, and the file.
    pub fallback: Option<(PathBuf, u64)>,
    /// Files made visible.
    pub files: Vec<PathBuf>,
    /// Time spent in the store's own transactions.
    pub time: Duration,
}

pub trait EpochSink: Send {
    /// Holds records of `epoch` until it is complete.
    fn stage(&mut self, epoch: u64, records: Vec<OutRecord>);

    /// Every epoch below `complete` is complete: no more records come for
    /// them. A sink may begin an epoch's pre-commit once all below it are.
    fn frontier(&mut self, _complete: u64) {}

    /// Whether the sink holds records of `epoch` for a store outside Kafka.
    fn holds(&self, epoch: u64) -> bool;

    /// For a sink whose store is a Kafka topic: the topic and the records
    /// of `epoch`, in the batches they came in, for the writer's transaction (which is their
    /// pre-commit and commit).
    fn transactional(&mut self, _epoch: u64) -> Vec<(Arc<str>, Vec<OutRecord>)> {
        Vec::new()
    }

    /// Makes every staged epoch up to `epoch` durable but not visible.
    fn pre_commit(&mut self, epoch: u64) -> Result<(), SinkError>;

    /// Makes every pre-committed epoch up to `epoch` visible.
    fn commit(&mut self, epoch: u64) -> Result<Committed, SinkError>;

    /// Drops what is staged or pre-committed for `epoch`.
    fn abort(&mut self, epoch: u64);

    /// Whether the store already holds `epoch`.
    fn contains(&mut self, epoch: u64) -> Result<bool, SinkError>;

    /// For in-memory sinks: every committed record, with its epoch.
    fn kept(&mut self) -> Vec<(u64, OutRecord)> {
        Vec::new()
    }
}
