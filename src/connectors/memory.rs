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

/// In-memory sink: keeps each committed epoch's records (or, for
/// benchmarks, only drops them).
pub struct MemorySink {
    keep: bool,
    staged: std::collections::BTreeMap<u64, Vec<crate::record::OutRecord>>,
    pub committed: Vec<(u64, crate::record::OutRecord)>,
}

impl MemorySink {
    pub fn new(keep: bool) -> Self {
        MemorySink {
            keep,
            staged: Default::default(),
            committed: Vec::new(),
        }
    }
}

impl super::sink::EpochSink for MemorySink {
    fn stage(&mut self, epoch: u64, records: Vec<crate::record::OutRecord>) {
        if self.keep {
            self.staged.entry(epoch).or_default().extend(records);
        }
    }

    fn holds(&self, epoch: u64) -> bool {
        self.staged.contains_key(&epoch)
    }

    fn pre_commit(&mut self, _epoch: u64) -> Result<(), super::sink::SinkError> {
        Ok(())
    }

    fn commit(&mut self, epoch: u64) -> Result<super::sink::Committed, super::sink::SinkError> {
        let later = self.staged.split_off(&(epoch + 1));
        for (e, records) in std::mem::replace(&mut self.staged, later) {
            self.committed.extend(records.into_iter().map(|r| (e, r)));
        }
        Ok(Default::default())
    }

    fn abort(&mut self, epoch: u64) {
        self.staged.remove(&epoch);
    }

    fn contains(&mut self, epoch: u64) -> Result<bool, super::sink::SinkError> {
        Ok(self.committed.iter().any(|(e, _)| *e == epoch))
    }

    fn kept(&mut self) -> Vec<(u64, crate::record::OutRecord)> {
        std::mem::take(&mut self.committed)
    }
}
