//! Launching workers, cutting and completing epochs, and the writer that
//! sends each epoch's output.

pub mod cluster;
pub mod commit;
pub mod coordinator;
pub mod error;
pub mod local;
pub mod memory;
pub mod planner;
pub mod recovery;
mod report;
mod restore;
mod workers;
mod writer;

pub use error::RunError;

#[cfg(test)]
mod engine_tests;
