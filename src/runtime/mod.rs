//! Launching workers, cutting and completing epochs, and the writer that
//! sends each epoch's output.

pub mod local;
pub mod writer;
