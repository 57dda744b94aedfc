//! What other rill jobs have committed, for the sources that read their
//! output (`connectors::written_by`). Per upstream job, a thread keeps the
//! copies each of its writers committed, read from its epoch log (from
//! where it last read on) and its writers' progress; it reads again only
//! when a source meets an epoch it does not know yet, so a topic no rill
//! job wrote costs nothing, and one that a rill job wrote costs a read of
//! the new log records per new upstream epoch, on this thread, never on a
//! worker.

use super::{committed, epoch_log, planner};
use crate::connectors::kafka_admin;
use crate::connectors::written_by::{Upstream, WrittenBy};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Condvar, Mutex, RwLock, Weak};
use std::time::Duration;

/// Every upstream job the process's sources have met, by name.
pub struct Upstreams {
    brokers: crate::connectors::kafka_config::Brokers,
    jobs: RwLock<HashMap<Arc<str>, Arc<Watch>>>,
}

impl Upstreams {
    pub fn new(brokers: &crate::connectors::kafka_config::Brokers) -> Arc<Upstreams> {
        Arc::new(Upstreams {
            brokers: brokers.clone(),
            jobs: RwLock::new(HashMap::new()),
        })
    }

    fn watch(&self, job: &Arc<str>) -> Arc<Watch> {
        if let Some(w) = self.jobs.read().unwrap().get(job) {
            return w.clone();
        }
        self.jobs
            .write()
            .unwrap()
            .entry(job.clone())
            .or_insert_with(|| Watch::start(&self.brokers, job))
            .clone()
    }
}

impl Upstream for Upstreams {
    fn counts(&self, copy: &WrittenBy) -> Option<bool> {
        self.watch(&copy.job).counts(copy)
    }
}

/// One upstream job: the attempt whose copy of each committed epoch
/// counts, per writer.
struct Watch {
    copies: RwLock<Vec<BTreeMap<u64, u32>>>,
    /// A source met an epoch not in `copies`: read again.
    wanted: Mutex<bool>,
    wake: Condvar,
}

impl Watch {
    fn start(brokers: &crate::connectors::kafka_config::Brokers, job: &str) -> Arc<Watch> {
        let watch = Arc::new(Watch {
            copies: RwLock::new(Vec::new()),
            wanted: Mutex::new(true),
            wake: Condvar::new(),
        });
        let config = upstream_config(brokers, job);
        let weak = Arc::downgrade(&watch);
        std::thread::Builder::new()
            .name(format!("rill-upstream-{job}"))
            .spawn(move || follow(config, weak))
            .expect("spawn the upstream thread");
        watch
    }

    fn counts(&self, copy: &WrittenBy) -> Option<bool> {
        let decided = decide(self.copies.read().unwrap().get(copy.writer as usize), copy);
        if decided.is_none() {
            *self.wanted.lock().unwrap() = true;
            self.wake.notify_one();
        }
        decided
    }
}

/// Whether `copy` counts, from what its writer has committed: each
/// committed epoch's attempt. A writer commits its epochs in order, so an
/// epoch below the last one committed that is not among them never will
/// be (a number skipped after a crash, one a fenced instance logged
/// late): its copies never count. Later epochs are not decided yet.
fn decide(committed: Option<&BTreeMap<u64, u32>>, copy: &WrittenBy) -> Option<bool> {
    let committed = committed?;
    match committed.get(&copy.epoch) {
        Some(attempt) => Some(*attempt == copy.attempt),
        None => committed
            .last_key_value()
            .is_some_and(|(last, _)| *last > copy.epoch)
            .then_some(false),
    }
}

/// The `[job]` of an upstream job, as far as reading its log needs.
fn upstream_config(
    brokers: &crate::connectors::kafka_config::Brokers,
    job: &str,
) -> crate::spec::JobConfig {
    let text = format!("name = {}\n", toml_str(job));
    let mut config: crate::spec::JobConfig = toml::from_str(&text).expect("a job table of a name");
    // The upstream job is on the same brokers, reached the same way.
    config.brokers = brokers.clone();
    config
}

fn toml_str(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

/// Keeps `watch` up to date while anything still holds it.
fn follow(job: crate::spec::JobConfig, watch: Weak<Watch>) {
    let mut log: Vec<(i64, epoch_log::LogRecord)> = Vec::new();
    let mut warned = false;
    loop {
        let Some(w) = watch.upgrade() else { return };
        {
            let wanted = w.wanted.lock().unwrap();
            let (mut wanted, _) = w
                .wake
                .wait_timeout_while(wanted, Duration::from_secs(1), |wanted| !*wanted)
                .unwrap();
            if !*wanted {
                continue;
            }
            *wanted = false;
        }
        let started = std::time::Instant::now();
        match read_on(&job, &mut log) {
            Ok(copies) => {
                *w.copies.write().unwrap() = copies;
                warned = false;
                tracing::debug!(
                    "read what job `{}` committed ({} log records) in {} ms",
                    job.name,
                    log.len(),
                    started.elapsed().as_millis()
                );
            }
            Err(e) => {
                if !warned {
                    tracing::warn!(
                        "cannot read what job `{}` committed, whose output a source reads: {e}; its records wait until it can be read",
                        job.name
                    );
                    warned = true;
                }
                *w.wanted.lock().unwrap() = true;
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        drop(w);
        // A source asks again at once for each new epoch: a pause between
        // reads lets the epochs of a busy upstream come in batches.
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Reads the upstream job's log on from where `log` ends, then its
/// writers' progress, and says which copy of each epoch counts.
fn read_on(
    job: &crate::spec::JobConfig,
    log: &mut Vec<(i64, epoch_log::LogRecord)>,
) -> Result<Vec<BTreeMap<u64, u32>>, String> {
    let next = log.last().map_or(0, |(offset, _)| offset + 1);
    kafka_admin::read_each(&job.brokers, &job.epoch_log_topic(), Some(&[next]), |m| {
        if let Some(r) = m.value().and_then(|v| serde_json::from_slice(v).ok()) {
            log.push((m.offset(), r));
        }
    })
    .map_err(|e| e.to_string())?;
    let writers = epoch_log::writers_in(log);
    (0..writers)
        .map(|w| {
            let progress = committed::committed_progress(&job.brokers, job, w)
                .map_err(|e| e.to_string())?
                .unwrap_or(0);
            Ok(planner::committed_copies(log, progress, w))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_below_the_last_committed_that_is_not_committed_never_counts() {
        let copy = |epoch, attempt| WrittenBy {
            job: "bank".into(),
            writer: 0,
            epoch,
            attempt,
        };
        // Epochs 1, 2 and 4 committed; 3 was skipped.
        let committed: BTreeMap<u64, u32> = [(1, 5), (2, 5), (4, 9)].into();
        let decide = |epoch, attempt| decide(Some(&committed), &copy(epoch, attempt));
        assert_eq!(decide(1, 5), Some(true));
        assert_eq!(decide(1, 4), Some(false), "an aborted copy");
        assert_eq!(decide(3, 5), Some(false), "a number never committed");
        assert_eq!(decide(0, 1), Some(false));
        assert_eq!(decide(4, 9), Some(true));
        assert_eq!(decide(5, 9), None, "not decided yet");
        assert_eq!(super::decide(None, &copy(1, 5)), None);
        assert_eq!(super::decide(Some(&BTreeMap::new()), &copy(1, 5)), None);
    }
}
