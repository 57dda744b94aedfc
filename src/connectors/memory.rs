//! In-memory source, for benchmarks and engine tests: records already in
//! memory, split across workers as Kafka partitions would be. A scripted
//! source also says which epoch each record is read in, so tests can cut
//! epochs exactly.

use super::{Poll, SourceReader};
use crate::record::RawRecord;

pub struct MemorySource {
    /// Records of this worker, with the epoch each is read in (scripted).
    records: std::iter::Peekable<std::vec::IntoIter<(Option<u64>, RawRecord)>>,
}

impl MemorySource {
    /// The share of `all` that worker `index` of `peers` reads: partition p
    /// goes to worker p mod peers.
    pub fn for_worker(all: &[RawRecord], index: usize, peers: usize) -> Self {
        let mine: Vec<(Option<u64>, RawRecord)> = all
            .iter()
            .filter(|r| r.origin.partition as usize % peers == index)
            .map(|r| (None, r.clone()))
            .collect();
        MemorySource {
            records: mine.into_iter().peekable(),
        }
    }

    /// Like `for_worker`, with the epoch of every record (ascending per
    /// partition).
    pub fn scripted(all: &[(u64, RawRecord)], index: usize, peers: usize) -> Self {
        let mut mine: Vec<(Option<u64>, RawRecord)> = all
            .iter()
            .filter(|(_, r)| r.origin.partition as usize % peers == index)
            .map(|(e, r)| (Some(*e), r.clone()))
            .collect();
        mine.sort_by_key(|(e, _)| *e);
        MemorySource {
            records: mine.into_iter().peekable(),
        }
    }
}

impl SourceReader for MemorySource {
    fn epoch(&self) -> Option<u64> {
        None
    }

    fn poll_scripted(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Option<(u64, Poll)> {
        let epoch = match self.records.peek() {
            Some((Some(e), _)) => *e,
            Some((None, _)) => return None,
            None => return Some((0, Poll::Done)),
        };
        while out.len() < max {
            match self.records.peek() {
                Some((Some(e), _)) if *e == epoch => out.push(self.records.next().unwrap().1),
                _ => break,
            }
        }
        Some((epoch, Poll::Data))
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Poll {
        out.extend(self.records.by_ref().take(max).map(|(_, r)| r));
        if out.is_empty() {
            Poll::Done
        } else {
            Poll::Data
        }
    }
}
