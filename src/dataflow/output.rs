//! What the dataflow hands the process's writer: every worker's output,
//! dead letters, changelog records, trace lines and progress go through
//! one channel to one writer thread, so an epoch's output leaves the
//! process in one place. Workers only push to the channel.

use crate::record::{DeadLetter, KeyDisplay, OutRecord};
use std::collections::BTreeMap;
use std::sync::Arc;

/// Counts one worker saw in one epoch.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EpochCounts {
    /// Records read, per source (by position among the plan's sources).
    pub inputs: Vec<u64>,
    /// Bytes of keys and values read, per source.
    pub bytes_in: Vec<u64>,
    /// Records and bytes read, per (source, partition).
    pub partitions: BTreeMap<(u32, i32), (u64, u64)>,
    pub dead: u64,
    /// Of the dead letters, those that came too late for their window.
    pub late: u64,
    pub filtered: u64,
    /// Records into each transform, by position among the plan's
    /// transforms.
    pub through: Vec<u64>,
    /// Offsets read, per (source, partition): [first, one past the last).
    pub ranges: BTreeMap<(u32, i32), (i64, i64)>,
    /// (source, partition) that had records waiting past those read when
    /// the epoch ended (see `dataflow/source.rs`).
    pub waiting: std::collections::BTreeSet<(u32, i32)>,
    /// Timestamps of some of the records read (at most
    /// `TIMESTAMP_SAMPLE` per poll and `TIMESTAMPS_KEPT` in all): how long
    /// after them the epoch commits is the job's end-to-end latency.
    pub timestamps: Vec<i64>,
}

/// Records of a poll whose timestamps are kept, spread over it.
pub const TIMESTAMP_SAMPLE: usize = 8;
/// Timestamps kept for an epoch.
pub const TIMESTAMPS_KEPT: usize = 1024;

impl EpochCounts {
    pub fn add(&mut self, other: &EpochCounts) {
        if self.inputs.len() < other.inputs.len() {
            self.inputs.resize(other.inputs.len(), 0);
        }
        for (a, b) in self.inputs.iter_mut().zip(&other.inputs) {
            *a += b;
        }
        if self.bytes_in.len() < other.bytes_in.len() {
            self.bytes_in.resize(other.bytes_in.len(), 0);
        }
        for (a, b) in self.bytes_in.iter_mut().zip(&other.bytes_in) {
            *a += b;
        }
        for (k, (n, b)) in &other.partitions {
            let e = self.partitions.entry(*k).or_default();
            e.0 += n;
            e.1 += b;
        }
        if self.through.len() < other.through.len() {
            self.through.resize(other.through.len(), 0);
        }
        for (a, b) in self.through.iter_mut().zip(&other.through) {
            *a += b;
        }
        self.dead += other.dead;
        self.late += other.late;
        self.filtered += other.filtered;
        self.waiting.extend(other.waiting.iter().copied());
        let room = TIMESTAMPS_KEPT.saturating_sub(self.timestamps.len());
        self.timestamps
            .extend(other.timestamps.iter().take(room).copied());
        for (k, (s, e)) in &other.ranges {
            let r = self.ranges.entry(*k).or_insert((*s, *e));
            r.0 = r.0.min(*s);
            r.1 = r.1.max(*e);
        }
    }
}

/// What each stateful transform holds now, per worker: its keys and, for
/// a windowed one, its watermark. The job's metrics read it when an epoch
/// commits; workers only write their own entry.
#[derive(Default)]
pub struct Held {
    inner: std::sync::Mutex<BTreeMap<(String, usize), (u64, Option<i64>)>>,
    /// Nanoseconds the sources have waited, over all workers, for the
    /// writer to commit what it holds (backpressure).
    pub blocked_ns: std::sync::atomic::AtomicU64,
}

impl Held {
    pub fn set(&self, transform: &str, worker: usize, keys: u64, watermark: Option<i64>) {
        self.inner
            .lock()
            .unwrap()
            .insert((transform.to_string(), worker), (keys, watermark));
    }

    /// Per transform and worker: the keys it holds.
    pub fn keys(&self) -> Vec<(String, usize, u64)> {
        let inner = self.inner.lock().unwrap();
        inner
            .iter()
            .map(|((t, w), (k, _))| (t.clone(), *w, *k))
            .collect()
    }

    /// Per transform: its keys over every worker, and its watermark (the
    /// least a worker has).
    pub fn totals(&self) -> BTreeMap<String, (u64, Option<i64>)> {
        let mut out: BTreeMap<String, (u64, Option<i64>)> = BTreeMap::new();
        for ((t, _), (keys, mark)) in self.inner.lock().unwrap().iter() {
            let e = out.entry(t.clone()).or_insert((0, *mark));
            e.0 += keys;
            e.1 = match (e.1, mark) {
                (Some(a), Some(b)) => Some(a.min(*b)),
                (a, b) => a.or(*b),
            };
        }
        out
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
    /// A source topic vanished under the job (`what` says how).
    SourceGone {
        topic: String,
        what: String,
    },
    /// Worker `worker` panicked: the others would wait for it forever.
    Panicked {
        worker: usize,
        message: String,
    },
    /// State that changed in an epoch: (key, value) for a transform's
    /// changelog topic; no value deletes the key.
    Changelog {
        epoch: u64,
        topic: Arc<str>,
        records: Vec<(Vec<u8>, Option<Vec<u8>>)>,
    },
    /// Every group a worker holds for `transform` once its input is done:
    /// the writer keeps it as a local snapshot if the run ends with every
    /// epoch committed.
    Snapshot {
        transform: String,
        groups: Vec<(super::store::Packed, super::store::Packed)>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_keys_add_up_over_workers_and_the_watermark_is_the_least() {
        let h = Held::default();
        h.set("w", 0, 3, Some(500));
        h.set("w", 1, 4, Some(200));
        h.set("a", 0, 2, None);
        h.set("w", 0, 5, Some(600));
        let t = h.totals();
        assert_eq!(t["w"], (9, Some(200)));
        assert_eq!(t["a"], (2, None));
    }
}
