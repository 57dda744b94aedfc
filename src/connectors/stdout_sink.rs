//! Stdout sink: each committed epoch's records, one value per line. A
//! console keeps no record of what it printed, so a replayed epoch prints
//! again; it is for looking at a job, not for exactly-once output.

use super::sink::{Committed, EpochSink, SinkError};
use crate::record::OutRecord;
use std::collections::BTreeMap;
use std::io::Write;

#[derive(Default)]
pub struct StdoutSink {
    staged: BTreeMap<u64, Vec<OutRecord>>,
}

impl EpochSink for StdoutSink {
    fn stage(&mut self, epoch: u64, records: Vec<OutRecord>) {
        self.staged.entry(epoch).or_default().extend(records);
    }

    fn holds(&self, epoch: u64) -> bool {
        self.staged.contains_key(&epoch)
    }

    fn pre_commit(&mut self, _epoch: u64) -> Result<(), SinkError> {
        Ok(())
    }

    fn commit(&mut self, epoch: u64) -> Result<Committed, SinkError> {
        let later = self.staged.split_off(&(epoch + 1));
        let stdout = std::io::stdout();
        let mut out = std::io::BufWriter::new(stdout.lock());
        for r in std::mem::replace(&mut self.staged, later)
            .into_values()
            .flatten()
        {
            let _ = out.write_all(r.value.as_deref().unwrap_or(b"null"));
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
        Ok(Committed::default())
    }

    fn abort(&mut self, epoch: u64) {
        self.staged.remove(&epoch);
    }

    fn contains(&mut self, _epoch: u64) -> Result<bool, SinkError> {
        Ok(false)
    }
}
