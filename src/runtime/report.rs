//! What a run prints: a progress line per committed epoch, and the
//! summary at its end.

use super::local::RunSummary;
use super::writer::EpochTotals;
use crate::dataflow::Epoch;
use std::collections::HashMap;

#[allow(clippy::too_many_arguments)]
pub(super) fn progress_line(
    number: u64,
    epoch: Epoch,
    t: &EpochTotals,
    records_in: u64,
    seconds: f64,
    commit: std::time::Duration,
    sources: &[String],
    sink_order: &[usize],
    sink_names: &HashMap<usize, String>,
) -> String {
    let ins: Vec<String> = sources
        .iter()
        .enumerate()
        .map(|(i, s)| format!("{s} {}", t.counts.inputs.get(i).copied().unwrap_or(0)))
        .collect();
    let outs: Vec<String> = sink_order
        .iter()
        .zip(&t.out)
        .map(|(s, n)| format!("{} {n}", sink_names[s]))
        .collect();
    format!(
        "epoch {number}: in {records_in} ({}) {:.0} rec/s | out {} | dead-lettered {} (late {}) | filtered {} | committed in {} ms as e{epoch}",
        ins.join(", "),
        records_in as f64 / seconds,
        outs.join(", "),
        t.counts.dead,
        t.counts.late,
        t.counts.filtered,
        commit.as_millis()
    )
}

impl RunSummary {
    /// The closing line `jobctl submit` prints: the whole run's time
    /// since the process started, which a user's stopwatch agrees with,
    /// and the time from the workers' start to the last commit. In
    /// hundredths: runs of a few seconds are compared by them.
    pub fn line(&self, job: &str, since_start: std::time::Duration) -> String {
        let outs: Vec<String> = self
            .records_out
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect();
        format!(
            "job {job} stopped after {} epochs in {:.2} s ({:.2} s processing): {} records in, out {}, {} dead-lettered, {} filtered{}",
            self.epochs,
            since_start.as_secs_f64(),
            self.elapsed.as_secs_f64(),
            self.records_in,
            outs.join(", "),
            self.dead_lettered,
            self.filtered,
            if self.files.is_empty() { String::new() } else { format!(", {} files written", self.files.len()) }
        ) + &if self.postgres_rows > 0 {
            format!(
                ", postgres {} rows in {:.2} s of epoch transactions ({:.0} rows/s)",
                self.postgres_rows,
                self.postgres_time.as_secs_f64(),
                self.postgres_rows as f64 / self.postgres_time.as_secs_f64().max(1e-9)
            )
        } else {
            String::new()
        } + &if self.fallback_rows > 0 {
            format!(", {} rows to postgres fallback files (load them with `jobctl replay`)", self.fallback_rows)
        } else {
            String::new()
        }
    }
}
