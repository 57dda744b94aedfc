//! The process's one writer: every worker's output, dead letters and trace
//! lines go through it, so an epoch's output leaves the process in one
//! place. It runs on its own thread; workers only push to its channel.

use crate::record::KeyDisplay;
use std::collections::BTreeMap;
use std::sync::Arc;

/// An encoded record bound for a sink. No value is a tombstone.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub key: Option<Arc<[u8]>>,
    pub value: Option<Vec<u8>>,
    pub partition: Option<i32>,
    /// For files rolled per window: the window's bounds.
    pub window: Option<(i64, i64)>,
    /// For Parquet files, which are written by column: the row itself.
    pub row: Option<crate::record::Row>,
}

/// A record the job could not process, with where it came from and why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub key: Option<Arc<[u8]>>,
    pub value: Option<Vec<u8>>,
    pub reason: String,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

/// Counts one worker saw in one epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochCounts {
    /// Records read, per source (by position among the plan's sources).
    pub inputs: Vec<u64>,
    pub dead: u64,
    /// Of the dead letters, those that came too late for their window.
    pub late: u64,
    pub filtered: u64,
    /// Offsets read, per (source, partition): [first, one past the last).
    pub ranges: BTreeMap<(u32, i32), (i64, i64)>,
}

impl EpochCounts {
    pub fn add(&mut self, other: &EpochCounts) {
        if self.inputs.len() < other.inputs.len() {
            self.inputs.resize(other.inputs.len(), 0);
        }
        for (a, b) in self.inputs.iter_mut().zip(&other.inputs) {
            *a += b;
        }
        self.dead += other.dead;
        self.late += other.late;
        self.filtered += other.filtered;
        for (k, (s, e)) in &other.ranges {
            let r = self.ranges.entry(*k).or_insert((*s, *e));
            r.0 = r.0.min(*s);
            r.1 = r.1.max(*e);
        }
    }
}

pub enum WriterMsg {
    Out {
        sink: usize,
        epoch: u64,
        records: Vec<OutRecord>,
    },
    Dead {
        epoch: u64,
        records: Vec<DeadLetter>,
    },
    Trace(Vec<String>),
    /// Worker `worker` has finished every epoch below `upto`; `counts` are
    /// its counts for those epochs.
    Progress {
        worker: usize,
        upto: u64,
        counts: BTreeMap<u64, EpochCounts>,
    },
    /// Worker `worker` has no more work.
    Finished {
        worker: usize,
    },
    /// State that changed in an epoch: (key, value) for a transform's
    /// changelog topic; no value deletes the key.
    Changelog {
        epoch: u64,
        topic: Arc<str>,
        records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    },
}

/// The line `--trace-records` prints for a record: the seed's format.
pub fn trace_line(label: &str, key: Option<&[u8]>, json: &str) -> String {
    format!("{label} record - key {} value {json}", KeyDisplay(key))
}

/// `approved` -> `Approved`, for trace lines named after sinks.
pub fn capitalise(name: &str) -> String {
    let mut c = name.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}
