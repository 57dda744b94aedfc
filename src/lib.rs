//! rill: long-running dataflow jobs over Kafka on timely dataflow.
//!
//! A record's way through the crate follows the folders: `spec` reads the
//! job file (`sql` turns a file of ksqlDB-style statements into one), `plan` checks and resolves it, `dataflow` runs it on timely
//! workers, `connectors` talk to Kafka and the rest, `runtime` launches the
//! workers and commits epochs, `cli` is what `jobctl` offers.

pub mod cli;
pub mod connectors;
pub mod dataflow;
pub mod expr;
pub mod fault;
pub mod format;
pub mod last_words;
pub mod log;
pub mod ops;
pub mod plan;
pub mod record;
pub mod runtime;
pub mod secrets;
pub mod spec;
pub mod sql;
