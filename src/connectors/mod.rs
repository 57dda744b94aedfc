//! One file per connector. Everything here that blocks runs on the client's
//! own threads, helper threads or the main thread, never a timely worker.

pub mod kafka_admin;
