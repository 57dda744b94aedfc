//! Why a run stops. Each variant says what happened and what to do; the
//! errors underneath are kept as sources, not flattened into text.

use super::recovery::RecoveryError;
use crate::connectors::kafka_admin::KafkaAdminError;
use crate::connectors::postgres_sink::PostgresError;
use crate::format::registry::RegistryError;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error(transparent)]
    Kafka(#[from] KafkaAdminError),
    #[error(transparent)]
    Registry(#[from] RegistryError),
    #[error("cannot start a kafka client for {what}: {reason}")]
    Client { what: String, reason: String },
    #[error("timely workers failed: {0}")]
    Workers(String),
    #[error("source topic `{topic}` {what} while the job read it; the job stops without committing its open epochs ({}). What the topic held past that is gone, and a topic made again under its name starts over at offset 0, where the job's committed positions do not fit: to read it from its start, run the job under a new name", committed.map_or("the last committed epoch is in the epoch log".to_string(), |e| format!("the last committed epoch is {e}")))]
    SourceTopicGone {
        topic: String,
        what: String,
        committed: Option<u64>,
    },
    #[error("worker {worker} panicked: {message}; the job stops without committing its open epochs ({}), and a start resumes after that", committed.map_or("the last committed epoch is in the epoch log".to_string(), |e| format!("the last committed epoch is {e}")))]
    WorkerPanicked {
        worker: usize,
        message: String,
        committed: Option<u64>,
    },
    #[error("sink output was not delivered: {0}")]
    Delivery(String),
    #[error(transparent)]
    Sink(#[from] crate::connectors::sink::SinkError),
    #[error("writer `{writer}` was fenced: another instance of job {job} has started, so this one stops without committing")]
    Fenced { writer: String, job: String },
    #[error("writer `{writer}` could not commit within 30 s: another instance of job {job} may have started and fenced it, or the broker is not answering; this one stops without committing")]
    CommitTimeout { writer: String, job: String },
    #[error("topic {topic} partition {partition}: the job has yet to read from offset {from}, but the partition now starts at {low}: retention deleted records the job never read; rill does not skip them silently (raise the topic's retention.ms; to accept the loss, run the job under a new name)")]
    OffsetsGone {
        topic: String,
        partition: i32,
        from: i64,
        low: i64,
    },
    #[error("cannot commit the epoch: {0}")]
    Commit(#[source] KafkaError),
    #[error("epoch {epoch} was aborted: {reason}; the job starts again from its last committed epoch, as a new attempt, so the aborted copy never counts")]
    EpochAborted { epoch: u64, reason: String },
    #[error("output for epoch {epoch} arrived after epochs below {complete} were committed; this is a bug in rill, and the job stops without committing it")]
    StaleEpoch { epoch: u64, complete: u64 },
    #[error(transparent)]
    Recovery(#[from] RecoveryError),
    #[error(transparent)]
    Postgres(#[from] PostgresError),
    #[error("the cluster stopped: {reason}; nothing after the last decided epoch is committed")]
    ClusterStopped { reason: String },
    #[error(transparent)]
    Cluster(#[from] super::cluster::ClusterError),
}

impl RunError {
    /// Whether starting the job again may succeed: a lost process, a
    /// broker or database that failed for a moment, a worker that
    /// panicked. Not a job file or table that is wrong, nor a newer
    /// instance that took over.
    pub fn is_transient(&self) -> bool {
        match self {
            // A broker that is not there at start is said at once.
            RunError::Kafka(_)
            // A commit that fails or times out, and records refused at
            // the end of an epoch, are what a fenced instance sees:
            // starting again would fence the newer one.
            | RunError::CommitTimeout { .. }
            | RunError::Commit(_)
            | RunError::Delivery(_)
            | RunError::Fenced { .. }
            | RunError::OffsetsGone { .. }
            | RunError::StaleEpoch { .. }
            | RunError::Registry(_)
            | RunError::Sink(_)
            // A panic is a bug that a restart meets again; the process
            // ends, with its message, for its supervisor to decide.
            | RunError::WorkerPanicked { .. }
            | RunError::SourceTopicGone { .. } => false,
            RunError::EpochAborted { .. } => true,
            RunError::Recovery(e) => {
                matches!(e, RecoveryError::Kafka(_) | RecoveryError::Log { .. })
            }
            RunError::Cluster(e) => matches!(e, super::cluster::ClusterError::NoAnswer { .. }),
            RunError::Postgres(e) => matches!(e, PostgresError::Unreachable { .. }),
            _ => true,
        }
    }

    /// A transactional call of `writer` failed: fenced by a newer instance,
    /// timed out (a fenced producer's commit can go unanswered on some
    /// brokers), or another failure. Told apart by error code only.
    pub fn from_txn(writer: &str, job: &str, e: KafkaError) -> RunError {
        match e.rdkafka_error_code() {
            Some(
                RDKafkaErrorCode::Fenced
                | RDKafkaErrorCode::ProducerFenced
                | RDKafkaErrorCode::InvalidProducerEpoch,
            ) => RunError::Fenced {
                writer: writer.into(),
                job: job.into(),
            },
            Some(RDKafkaErrorCode::OperationTimedOut | RDKafkaErrorCode::RequestTimedOut) => {
                RunError::CommitTimeout {
                    writer: writer.into(),
                    job: job.into(),
                }
            }
            _ => RunError::Commit(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transaction_errors_are_told_apart_by_their_code() {
        let txn = KafkaError::MessageProduction;
        assert!(matches!(
            RunError::from_txn("j-w0", "j", txn(RDKafkaErrorCode::ProducerFenced)),
            RunError::Fenced { .. }
        ));
        assert!(matches!(
            RunError::from_txn("j-w0", "j", txn(RDKafkaErrorCode::OperationTimedOut)),
            RunError::CommitTimeout { .. }
        ));
        assert!(matches!(
            RunError::from_txn("j-w0", "j", txn(RDKafkaErrorCode::BrokerNotAvailable)),
            RunError::Commit(_)
        ));
    }
}
