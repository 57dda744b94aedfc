//! In-memory source, for benchmarks and engine tests: records already in
//! memory, split across workers as Kafka partitions would be. A scripted
//! source also says which epoch each record is read in, so tests can cut
//! epochs exactly.

use super::{Poll, SourceReader};
use crate::record::{RawCopies, RawRecord};
use std::sync::Arc;

pub struct MemorySource {
    records: Share,
    copies: RawCopies,
}

enum Share {
    /// Worker `index` of `peers` reads partition p when p mod peers is
    /// index; a record is copied out when it is read, as the Kafka source
    /// copies each message out of its client's buffer, so a run does not
    /// start by copying its whole input.
    Read {
        all: Arc<Vec<RawRecord>>,
        next: usize,
        index: usize,
        peers: usize,
    },
    /// Records with the epoch each is read in, ascending.
    Scripted(std::iter::Peekable<std::vec::IntoIter<(u64, RawRecord)>>),
}

impl MemorySource {
    /// The share of `all` that worker `index` of `peers` reads: partition p
    /// goes to worker p mod peers.
    pub fn for_worker(all: &Arc<Vec<RawRecord>>, index: usize, peers: usize) -> Self {
        MemorySource {
            records: Share::Read {
                all: all.clone(),
                next: 0,
                index,
                peers,
            },
            copies: RawCopies::default(),
        }
    }

    /// Like `for_worker`, with the epoch of every record (ascending per
    /// partition).
    pub fn scripted(all: &[(u64, RawRecord)], index: usize, peers: usize) -> Self {
        let mut mine: Vec<(u64, RawRecord)> = all
            .iter()
            .filter(|(_, r)| r.origin.partition as usize % peers == index)
            .cloned()
            .collect();
        mine.sort_by_key(|(e, _)| *e);
        MemorySource {
            records: Share::Scripted(mine.into_iter().peekable()),
            copies: RawCopies::default(),
        }
    }
}

impl SourceReader for MemorySource {
    fn epoch(&self) -> Option<u64> {
        None
    }

    fn poll_scripted(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Option<(u64, Poll)> {
        let Share::Scripted(records) = &mut self.records else {
            return None;
        };
        let epoch = match records.peek() {
            Some((e, _)) => *e,
            None => return Some((0, Poll::Done)),
        };
        while out.len() < max {
            match records.peek() {
                Some((e, _)) if *e == epoch => out.push(records.next().unwrap().1),
                _ => break,
            }
        }
        Some((epoch, Poll::Data))
    }

    fn poll(&mut self, out: &mut Vec<RawRecord>, max: usize) -> Poll {
        if let Share::Read {
            all,
            next,
            index,
            peers,
        } = &mut self.records
        {
            while out.len() < max && *next < all.len() {
                let r = &all[*next];
                *next += 1;
                if r.origin.partition as usize % *peers == *index {
                    out.push(RawRecord {
                        key: r.key.as_deref().map(|k| self.copies.keys.copy(k)),
                        value: r.value.as_deref().map(|v| self.copies.values.copy(v)),
                        ..*r
                    });
                }
            }
        }
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
