//! The epoch coordinator: which epochs are complete, when a cluster may
//! decide one, the steps that commit an epoch, in order, and the executor
//! that carries them out. Pure: the stores are behind [`EpochSteps`], which
//! the committer implements with Kafka, files and Postgres, and the tests
//! below with a model of them, so that every crash point is enumerated
//! through the same executor, with the recovery planner deciding each
//! restart.
//!
//! The order of the steps is the protocol:
//! 1. `Send`: the epoch's output, dead letters and changelog go into the
//!    writer's transaction.
//! 2. `Log`: its boundaries (or, for an epoch cut again, a marker) are
//!    appended to the epoch log, so its number is never given to other
//!    input.
//! 3. `CheckFenced`: the writer reads the log between its own records; a
//!    later instance's start there means it must write nothing more.
//! 4. `PreCommit`: the transaction is flushed; a record the broker refused
//!    aborts the epoch.
//! 5. `AwaitDecision` (a cluster's processes other than 0, which neither
//!    log nor check): process 0 logs the epoch once every writer has
//!    prepared it, which decides it.
//! 6. `WriteExternal`: files and rows, each store skipping an epoch it
//!    already holds (a replay writes what the first try wrote).
//! 7. `Commit`: the transaction commits with the writer's progress.

use crate::dataflow::Epoch;
use std::ops::Range;

/// Which epochs every worker has finished.
#[derive(Debug, Clone)]
pub struct Completion {
    upto: Vec<Epoch>,
    complete: Epoch,
}

impl Completion {
    /// `resume_after`: the epoch a restart resumes after, committed before.
    pub fn new(workers: usize, resume_after: Epoch) -> Self {
        let complete = if resume_after > 0 {
            resume_after + 1
        } else {
            0
        };
        Completion {
            upto: vec![0; workers.max(1)],
            complete,
        }
    }

    /// Every epoch below this one is complete.
    pub fn complete(&self) -> Epoch {
        self.complete
    }

    /// Output for `epoch` arriving now would be committed a second time.
    pub fn is_stale(&self, epoch: Epoch) -> bool {
        epoch < self.complete
    }

    /// Worker `worker` has finished every epoch below `upto`: the epochs
    /// that became complete, in order (often none).
    pub fn report(&mut self, worker: usize, upto: Epoch) -> Range<Epoch> {
        self.upto[worker] = self.upto[worker].max(upto);
        let now = *self.upto.iter().min().unwrap();
        let before = self.complete;
        self.complete = self.complete.max(now);
        before..self.complete
    }
}

/// Lockstep across a cluster's writers: an epoch is decided once every
/// writer has prepared it, in order, so writers never differ by more than
/// one epoch.
#[derive(Debug, Clone)]
pub struct Lockstep {
    prepared: Vec<Epoch>,
    decided: Epoch,
}

impl Lockstep {
    pub fn new(writers: usize, resume_after: Epoch) -> Self {
        Lockstep {
            prepared: vec![resume_after; writers.max(1)],
            decided: resume_after,
        }
    }

    /// Writer `writer` has prepared every epoch up to `epoch` it has: the
    /// epoch that may be decided now, if one may.
    pub fn prepared(&mut self, writer: usize, epoch: Epoch) -> Option<Epoch> {
        self.prepared[writer] = self.prepared[writer].max(epoch);
        let all = *self.prepared.iter().min().unwrap();
        (all > self.decided).then(|| {
            self.decided = all;
            all
        })
    }
}

/// One step of committing an epoch; see the module's text for the order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Send,
    Log,
    CheckFenced,
    PreCommit,
    AwaitDecision,
    WriteExternal,
    Commit,
}

/// What an epoch holds, as far as committing it goes.
#[derive(Debug, Clone, Copy, Default)]
pub struct EpochWork {
    /// Records for Kafka topics: output, dead letters, changelog.
    pub kafka: bool,
    /// Rows or files for stores outside Kafka.
    pub external: bool,
    /// Offsets read from a source, or records left waiting in one (the
    /// log keeps both).
    pub read: bool,
    /// An epoch logged before a restart and cut again now.
    pub replayed: bool,
}

/// How a writer takes part in an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// A writer alone, or a cluster's process 0: it logs each epoch.
    Logs,
    /// Another process of a cluster: process 0 logs the epochs it names,
    /// and every writer commits each of them.
    Follows,
}

/// The steps that commit `work`, in order. A writer that logs takes none
/// for an epoch that holds nothing (it leaves no trace, and its number is
/// not logged).
pub fn steps(work: EpochWork, role: Role) -> Vec<Step> {
    match role {
        Role::Logs => {
            if !(work.kafka || work.external || work.read || work.replayed) {
                return Vec::new();
            }
            let mut out = vec![Step::Send, Step::Log, Step::CheckFenced, Step::PreCommit];
            if work.external {
                out.push(Step::WriteExternal);
            }
            out.push(Step::Commit);
            out
        }
        Role::Follows => vec![
            Step::Send,
            Step::PreCommit,
            Step::AwaitDecision,
            Step::WriteExternal,
            Step::Commit,
        ],
    }
}

/// The stores one epoch is committed to, a step at a time. Each step
/// returns an error to stop there (a crash, in the model).
pub trait EpochSteps {
    type Error;
    fn send(&mut self) -> Result<(), Self::Error>;
    fn log(&mut self) -> Result<(), Self::Error>;
    fn check_fenced(&mut self) -> Result<(), Self::Error>;
    fn pre_commit(&mut self) -> Result<(), Self::Error>;
    fn await_decision(&mut self) -> Result<(), Self::Error>;
    fn write_external(&mut self) -> Result<(), Self::Error>;
    fn commit(&mut self) -> Result<(), Self::Error>;
}

/// Carries out `steps` in order, stopping at the first that fails.
pub fn execute<S: EpochSteps>(steps: &[Step], stores: &mut S) -> Result<(), S::Error> {
    for step in steps {
        match step {
            Step::Send => stores.send()?,
            Step::Log => stores.log()?,
            Step::CheckFenced => stores.check_fenced()?,
            Step::PreCommit => stores.pre_commit()?,
            Step::AwaitDecision => stores.await_decision()?,
            Step::WriteExternal => stores.write_external()?,
            Step::Commit => stores.commit()?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::epoch_log::{LogRecord, PartitionRange};
    use crate::runtime::planner::{self, attempt_at};
    use rand::rngs::SmallRng;
    use rand::{Rng, SeedableRng};
    use std::collections::BTreeMap;

    #[test]
    fn an_epoch_is_complete_once_every_worker_is_past_it() {
        let mut c = Completion::new(2, 0);
        assert_eq!(c.report(0, 3), 0..0);
        assert_eq!(c.report(1, 2), 0..2);
        assert_eq!(c.report(1, 5), 2..3);
        assert!(c.is_stale(2) && !c.is_stale(3));
        // After a restart, the epochs up to the one resumed after are done.
        let c = Completion::new(3, 7);
        assert!(c.is_stale(7) && !c.is_stale(8));
    }

    #[test]
    fn a_cluster_decides_an_epoch_once_every_writer_prepared_it() {
        let mut l = Lockstep::new(3, 4);
        assert_eq!(l.prepared(0, 5), None);
        assert_eq!(l.prepared(2, 5), None);
        assert_eq!(l.prepared(1, 5), Some(5));
        assert_eq!(l.prepared(1, 6), None);
        assert_eq!(l.prepared(0, 6), None);
        assert_eq!(l.prepared(2, 6), Some(6));
    }

    #[test]
    fn files_and_rows_come_after_the_log_and_the_fence_check_and_before_the_commit() {
        let all = EpochWork {
            kafka: true,
            external: true,
            read: true,
            replayed: false,
        };
        let s = steps(all, Role::Logs);
        let at = |x| s.iter().position(|y| *y == x).unwrap();
        assert!(at(Step::Log) < at(Step::CheckFenced));
        assert!(at(Step::CheckFenced) < at(Step::WriteExternal));
        assert!(at(Step::PreCommit) < at(Step::WriteExternal));
        assert_eq!(s.last(), Some(&Step::Commit));
        assert!(steps(EpochWork::default(), Role::Logs).is_empty());
        // A follower writes its files and rows once the epoch is decided,
        // and takes part in every epoch named, empty or not.
        let s = steps(EpochWork::default(), Role::Follows);
        let at = |x| s.iter().position(|y| *y == x).unwrap();
        assert!(at(Step::PreCommit) < at(Step::AwaitDecision));
        assert!(at(Step::AwaitDecision) < at(Step::WriteExternal));
        assert_eq!(s.last(), Some(&Step::Commit));
    }

    /// The stores as a consumer sees them, and the log and progress as a
    /// restart reads them.
    #[derive(Default)]
    struct World {
        log: Vec<(i64, LogRecord)>,
        progress: i64,
        /// Committed transactions: (epoch, input ids).
        kafka: Vec<(u64, Vec<u32>)>,
        /// Files or rows by epoch; a store skips an epoch it holds.
        external: BTreeMap<u64, Vec<u32>>,
    }

    impl World {
        fn append(&mut self, r: LogRecord) -> i64 {
            let offset = self.log.len() as i64;
            self.log.push((offset, r));
            offset
        }
    }

    /// Runs one start of the job over `input` (ids, read in epochs of
    /// `sizes`), through the executor the committer uses, until it has
    /// committed everything or has taken `crash_after` steps. Returns
    /// whether it finished.
    fn run(
        world: &mut World,
        input: u32,
        sizes: &mut impl Iterator<Item = u32>,
        crash_after: usize,
    ) -> bool {
        let mut budget = crash_after;
        let start = world.append(LogRecord::start());
        let attempt = attempt_at(start);
        let resume = planner::resume(&world.log, world.progress);
        let mut committed = resume.committed;
        let mut pos = resume
            .start_offsets
            .as_ref()
            .map_or(0, |s| s[&(0, 0)] as u32);
        let mut epochs: Vec<(u64, u32, u32, Option<i64>)> = resume
            .replay
            .iter()
            .map(|(e, r)| {
                (
                    *e,
                    r[0].start as u32,
                    r[0].end as u32,
                    Some(resume.log_offsets[e]),
                )
            })
            .collect();
        let mut next = resume.next_epoch;
        let mut last_own = start;
        loop {
            let (epoch, from, to, logged) = if !epochs.is_empty() {
                epochs.remove(0)
            } else if pos < input {
                let to = (pos + sizes.next().unwrap_or(1)).min(input);
                next += 1;
                (next - 1, pos, to, None)
            } else {
                return true;
            };
            pos = to;
            let ids: Vec<u32> = (from..to).collect();
            let work = EpochWork {
                kafka: !ids.is_empty(),
                external: !ids.is_empty(),
                read: to > from,
                replayed: logged.is_some(),
            };
            let mut stores = ModelEpoch {
                world,
                budget: &mut budget,
                epoch,
                attempt,
                ids,
                from,
                to,
                logged,
                committed: &mut committed,
                last_own: &mut last_own,
                progress: 0,
            };
            if execute(&steps(work, Role::Logs), &mut stores).is_err() {
                return false;
            }
        }
    }

    /// The model's start stops at this step.
    struct Crash;

    /// One epoch of the model's start, committed to the `World`.
    struct ModelEpoch<'a> {
        world: &'a mut World,
        /// Steps left before the crash.
        budget: &'a mut usize,
        epoch: u64,
        attempt: u32,
        ids: Vec<u32>,
        from: u32,
        to: u32,
        /// The offset of its record, for an epoch logged before.
        logged: Option<i64>,
        committed: &'a mut u64,
        last_own: &'a mut i64,
        progress: i64,
    }

    impl ModelEpoch<'_> {
        fn step(&mut self) -> Result<(), Crash> {
            if *self.budget == 0 {
                return Err(Crash);
            }
            *self.budget -= 1;
            Ok(())
        }
    }

    impl EpochSteps for ModelEpoch<'_> {
        type Error = Crash;

        fn send(&mut self) -> Result<(), Crash> {
            self.step()
        }

        fn log(&mut self) -> Result<(), Crash> {
            self.step()?;
            let (epoch, attempt, committed) = (self.epoch, self.attempt, *self.committed);
            let own = match self.logged {
                Some(offset) => {
                    self.progress = offset + 1;
                    self.world.append(LogRecord::Replayed {
                        epoch,
                        attempt,
                        committed,
                        skipped: Vec::new(),
                    })
                }
                None => {
                    let ranges = vec![PartitionRange {
                        source: 0,
                        partition: 0,
                        start: self.from as i64,
                        end: self.to as i64,
                        waiting: false,
                    }];
                    let o = self.world.append(LogRecord::Epoch {
                        epoch,
                        attempt,
                        ranges,
                        committed,
                    });
                    self.progress = o + 1;
                    o
                }
            };
            assert_eq!(
                planner::started_since(
                    &self.world.log[(*self.last_own + 1) as usize..own as usize],
                    attempt
                ),
                None
            );
            *self.last_own = own;
            Ok(())
        }

        fn check_fenced(&mut self) -> Result<(), Crash> {
            self.step()
        }

        fn pre_commit(&mut self) -> Result<(), Crash> {
            self.step()
        }

        fn await_decision(&mut self) -> Result<(), Crash> {
            self.step()
        }

        fn write_external(&mut self) -> Result<(), Crash> {
            self.step()?;
            self.world
                .external
                .entry(self.epoch)
                .or_insert_with(|| self.ids.clone());
            Ok(())
        }

        fn commit(&mut self) -> Result<(), Crash> {
            self.step()?;
            self.world.kafka.push((self.epoch, self.ids.clone()));
            self.world.progress = self.progress;
            *self.committed = self.epoch;
            Ok(())
        }
    }

    fn exactly_once(world: &World, input: u32) {
        let mut kafka: Vec<u32> = world
            .kafka
            .iter()
            .flat_map(|(_, ids)| ids.clone())
            .collect();
        kafka.sort();
        let mut external: Vec<u32> = world.external.values().flatten().copied().collect();
        external.sort();
        let want: Vec<u32> = (0..input).collect();
        assert_eq!(kafka, want, "kafka");
        assert_eq!(external, want, "files and rows");
        // An epoch number means the same input everywhere.
        for (epoch, ids) in &world.kafka {
            assert_eq!(world.external.get(epoch), Some(ids), "epoch {epoch}");
        }
    }

    /// A crash after every step of a first start, then a start that runs
    /// to the end: everything lands once, in Kafka and outside it.
    #[test]
    fn a_crash_at_any_step_then_a_restart_lands_everything_once() {
        let sizes = [2u32, 1, 3, 2];
        for crash_after in 0..40 {
            let mut world = World::default();
            let mut s = sizes.iter().copied().cycle();
            run(&mut world, 8, &mut s, crash_after);
            let mut s = sizes.iter().copied().cycle();
            assert!(run(&mut world, 8, &mut s, usize::MAX));
            exactly_once(&world, 8);
        }
    }

    /// Several crashes in a row, each at a random step, with epochs of
    /// random sizes cut differently by each start.
    #[test]
    fn crashes_in_a_row_at_random_steps_land_everything_once() {
        for seed in 0..500 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let input = rng.random_range(1..20);
            let mut world = World::default();
            for _ in 0..rng.random_range(1..5) {
                let mut sizes = std::iter::repeat_with({
                    let mut r = SmallRng::seed_from_u64(rng.random());
                    move || r.random_range(1..4)
                });
                let crash_after = rng.random_range(0..30);
                if run(&mut world, input, &mut sizes, crash_after) {
                    break;
                }
            }
            let mut sizes = std::iter::repeat(2);
            assert!(run(&mut world, input, &mut sizes, usize::MAX));
            exactly_once(&world, input);
        }
    }
}
