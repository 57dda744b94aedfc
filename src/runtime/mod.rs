//! Launching workers, cutting and completing epochs, and the writer that
//! sends each epoch's output.

mod boundaries;
pub mod cluster;
pub mod cluster_job;
pub mod commit;
pub mod committed;
pub mod control;
pub mod coordinator;
pub mod epoch_log;
pub mod error;
pub mod history;
mod leader;
mod liveness;
pub mod local;
mod lookups;
mod member;
pub mod memory;
pub mod observe;
pub mod planner;
pub mod recovery;
mod report;
pub mod reset;
mod restore;
mod snapshot;
pub mod state_read;
mod topic_watch;
mod upstream;
mod workers;
mod writer;

pub use error::RunError;

#[cfg(test)]
mod engine_tests;
