//! In-memory source, for benchmarks and engine tests: records already in
//! memory, split across workers as Kafka partitions would be.

use super::{Poll, SourceReader};
use crate::record::RawRecord;

pub struct MemorySource {
    records: std::vec::IntoIter<RawRecord>,
}

impl MemorySource {
    /// The share of `all` that worker `index` of `peers` reads: partition p
    /// goes to worker p mod peers.
    pub fn for_worker(all: &[RawRecord], index: usize, peers: usize) -> Self {
        let mine: Vec<RawRecord> =
            all.iter().filter(|r| r.origin.partition as usize % peers == index).cloned().collect();
        MemorySource { records: mine.into_iter() }
    }
}

impl SourceReader for MemorySource {
    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Poll {
        out.extend(self.records.by_ref().take(max));
        if out.is_empty() {
            Poll::Done
        } else {
            Poll::Data
        }
    }
}
