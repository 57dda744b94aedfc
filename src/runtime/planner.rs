//! The recovery planner: from the epoch log and the writer's committed
//! progress to where a starting job resumes. Pure: no I/O, so every order
//! of starts, epochs and crashes can be enumerated in tests.
//!
//! The rules it applies:
//! - A start's attempt is one past the offset of its start record, so two
//!   instances started at once never share one, and attempts grow in log
//!   order.
//! - An epoch record of attempt `a` that sits after the start record of a
//!   later attempt was written by a fenced instance: its transaction can
//!   never commit, so the record is not part of the log.
//! - Epochs whose record sits below the committed progress are committed;
//!   the others are replayed with their logged boundaries, once each.
//! - No epoch number is used twice, not even one a fenced instance logged.
//! - With several writers (one per process of a cluster, committing in
//!   lockstep), the job resumes after the lowest epoch any writer has
//!   committed; a writer replays the epochs after it but skips sending
//!   those it had already committed.

use super::epoch_log::{LogRecord, PartitionRange};
use std::collections::{BTreeMap, HashMap};

/// The attempt of the start whose record sits at `offset`.
pub fn attempt_at(offset: i64) -> u32 {
    u32::try_from(offset + 1).unwrap_or(u32::MAX)
}

/// The records that count: without those a fenced instance appended after
/// a later instance had started.
pub fn live(records: &[(i64, LogRecord)]) -> Vec<(i64, &LogRecord)> {
    let mut newest_start = 0;
    let mut out = Vec::with_capacity(records.len());
    for (offset, r) in records {
        match r {
            LogRecord::Start { .. } => {
                newest_start = attempt_at(*offset);
                out.push((*offset, r));
            }
            LogRecord::Epoch { attempt, .. }
            | LogRecord::Replayed { attempt, .. }
            | LogRecord::Begin { attempt, .. }
                if *attempt < newest_start => {}
            _ => out.push((*offset, r)),
        }
    }
    out
}

/// Whether records appended between two of a writer's own appends show
/// that a later instance has started: then the writer is fenced and must
/// not write files or rows for the epoch it just logged.
pub fn started_since(gap: &[(i64, LogRecord)], attempt: u32) -> Option<u32> {
    gap.iter().find_map(|(offset, r)| match r {
        LogRecord::Start { .. } if attempt_at(*offset) > attempt => Some(attempt_at(*offset)),
        _ => None,
    })
}

/// Where a start resumes.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Resume {
    /// The last epoch every writer has committed (0: none): the job
    /// resumes after it.
    pub committed: u64,
    /// The last epoch each writer has committed.
    pub writer_committed: Vec<u64>,
    /// Per replayed epoch, the writers that had committed it already: they
    /// cut it again for their state but send nothing of it.
    pub skip: BTreeMap<u64, Vec<u32>>,
    /// Where each source partition resumes; None when nothing committed.
    pub start_offsets: Option<HashMap<(u32, i32), i64>>,
    /// Epochs logged but not committed, to be cut again exactly so.
    pub replay: Vec<(u64, Vec<PartitionRange>)>,
    /// Offset of each replayed epoch's record, the progress it commits.
    pub log_offsets: HashMap<u64, i64>,
    /// Offset of the committed epoch's record: a writer joining the job
    /// (a cluster grown by a process) commits its progress just past it.
    pub committed_offset: Option<i64>,
    /// The first epoch number free for new epochs.
    pub next_epoch: u64,
    /// Epochs committed up to `committed`, counted once each: what the
    /// job's progress lines have numbered so far.
    pub committed_epochs: u64,
    /// The newest attempt in the log.
    pub last_attempt: u32,
    /// A writer whose committed progress has vanished from the broker
    /// (expired, or deleted), and the highest epoch the log says it took
    /// part in and was committed.
    pub progress_lost: Option<(u32, u64)>,
    /// This run of the job (the log's first `Incarnation` record); None
    /// for a log written before runs were named.
    pub incarnation: Option<String>,
    /// The log holds no epoch and names no run: a first start names one.
    pub fresh: bool,
    /// What the state of each stateful transform means, as the newest
    /// start that changed it logged.
    pub state: Option<std::collections::BTreeMap<String, Vec<(String, String)>>>,
}

/// Plans a start of a single writer from the whole log and its committed
/// progress (the offset just past the last committed epoch's record; 0
/// for none).
pub fn resume(records: &[(i64, LogRecord)], progress: i64) -> Resume {
    resume_writers(records, &[progress])
}

/// Plans a start from the whole log and each writer's committed progress.
/// A reset (see [`LogRecord::Incarnation`]) ends what counts: the plan is
/// made from the records after the newest one, and progress before it is
/// none.
pub fn resume_writers(records: &[(i64, LogRecord)], progress: &[i64]) -> Resume {
    let cut = records.iter().rev().find_map(|(offset, r)| match r {
        LogRecord::Incarnation { reset: true, .. } => Some(*offset),
        _ => None,
    });
    let mut out = resume_since(records, cut.unwrap_or(0), progress);
    // Epoch numbers and attempts go on across resets.
    for (offset, r) in records {
        match r {
            LogRecord::Start { .. } => out.last_attempt = out.last_attempt.max(attempt_at(*offset)),
            LogRecord::Epoch { epoch, .. } | LogRecord::Replayed { epoch, .. } => {
                out.next_epoch = out.next_epoch.max(epoch + 1)
            }
            LogRecord::Incarnation { after_epoch, .. } => {
                out.next_epoch = out.next_epoch.max(after_epoch + 1)
            }
            LogRecord::Begin { .. } | LogRecord::State { .. } => {}
        }
    }
    out
}

/// [`resume_writers`] from the records at `cut` and after.
fn resume_since(all: &[(i64, LogRecord)], cut: i64, progress: &[i64]) -> Resume {
    let from = all.partition_point(|(offset, _)| *offset < cut);
    let records = &all[from..];
    let progress: Vec<i64> = progress
        .iter()
        .map(|p| if *p > cut { *p } else { 0 })
        .collect();
    let progress = &progress[..];
    let mut out = Resume::default();
    let mut max_epoch = 0;
    for (offset, r) in records {
        match r {
            LogRecord::Start { .. } => out.last_attempt = out.last_attempt.max(attempt_at(*offset)),
            // A fenced instance's epoch numbers are not reused either: it
            // may have written files or rows under them before it stopped.
            LogRecord::Epoch { epoch, .. } | LogRecord::Replayed { epoch, .. } => {
                max_epoch = max_epoch.max(*epoch)
            }
            LogRecord::Begin { .. } => {}
            // The run is the first one named since the cut: two first
            // starts at once may each name one.
            LogRecord::Incarnation {
                id, after_epoch, ..
            } => {
                max_epoch = max_epoch.max(*after_epoch);
                out.incarnation.get_or_insert_with(|| id.clone());
            }
            LogRecord::State { transforms } => out.state = Some(transforms.clone()),
        }
    }
    out.fresh = out.incarnation.is_none()
        && !records.iter().any(|(_, r)| {
            matches!(
                r,
                LogRecord::Epoch { .. } | LogRecord::Replayed { .. } | LogRecord::Begin { .. }
            )
        });
    out.next_epoch = max_epoch + 1;
    // What a fenced instance appended is judged against every start,
    // the reset's own (just before its cut) among them.
    let live: Vec<(i64, &LogRecord)> = live(all)
        .into_iter()
        .filter(|(offset, _)| *offset >= cut)
        .collect();
    let claimed = live
        .iter()
        .filter_map(|(_, r)| match r {
            LogRecord::Epoch { committed, .. } | LogRecord::Replayed { committed, .. } => {
                Some(*committed)
            }
            LogRecord::Start { .. }
            | LogRecord::Begin { .. }
            | LogRecord::Incarnation { .. }
            | LogRecord::State { .. } => None,
        })
        .max()
        .unwrap_or(0);
    if progress.iter().all(|p| *p == 0) && claimed > 0 {
        out.progress_lost = Some((0, claimed));
    }
    let begin = live.iter().find_map(|(_, r)| match r {
        LogRecord::Begin { ranges, .. } => Some(ranges),
        _ => None,
    });
    // Each epoch's first live record: its boundaries (a replay never logs
    // an epoch again, it appends a marker).
    let mut first: BTreeMap<u64, (i64, &Vec<PartitionRange>)> = BTreeMap::new();
    out.writer_committed = vec![0; progress.len()];
    for (offset, r) in &live {
        let LogRecord::Epoch { epoch, ranges, .. } = r else {
            continue;
        };
        first.entry(*epoch).or_insert((*offset, ranges));
        for (w, p) in progress.iter().enumerate() {
            if *offset < *p {
                out.writer_committed[w] = out.writer_committed[w].max(*epoch);
            }
        }
    }
    // A writer without progress while others have some. Writers commit in
    // lockstep, so it may lag one epoch behind the first: if the log shows
    // it took part in an earlier epoch, its progress is lost, and the job
    // would otherwise replay all its history through it. If it took part
    // in none up to the first's (it joined a grown cluster and stopped
    // before its first commit), it has sent nothing of those epochs and
    // stands where the others do.
    let top = out.writer_committed.iter().copied().max().unwrap_or(0);
    for w in 0..progress.len() {
        if progress[w] != 0 || top == 0 {
            continue;
        }
        if let Some(epoch) = took_part(&live, w as u32, top - 1) {
            out.progress_lost.get_or_insert((w as u32, epoch));
        } else if took_part(&live, w as u32, top).is_none() {
            out.writer_committed[w] = top;
        }
    }
    out.committed = out.writer_committed.iter().copied().min().unwrap_or(0);
    out.committed_epochs = first.range(..=out.committed).count() as u64;
    out.committed_offset = first
        .get(&out.committed)
        .filter(|_| out.committed > 0)
        .map(|(offset, _)| *offset);
    for (epoch, (offset, ranges)) in first.range(out.committed + 1..) {
        out.log_offsets.insert(*epoch, *offset);
        out.replay.push((*epoch, (*ranges).clone()));
        let done: Vec<u32> = (0..progress.len() as u32)
            .filter(|w| out.writer_committed[*w as usize] >= *epoch)
            .collect();
        if !done.is_empty() {
            out.skip.insert(*epoch, done);
        }
    }
    let ranges_of = |ranges: &Vec<PartitionRange>, end: bool| -> HashMap<(u32, i32), i64> {
        ranges
            .iter()
            .map(|r| ((r.source, r.partition), if end { r.end } else { r.start }))
            .collect()
    };
    out.start_offsets = match first.get(&out.committed) {
        Some((_, ranges)) if out.committed > 0 => Some(ranges_of(ranges, true)),
        // Nothing committed, yet epochs logged: the first start resolved
        // its start offsets (`latest` among them) and read from there; a
        // restart starts there too, not at a later end of the topic.
        _ => out
            .replay
            .first()
            .map(|(_, ranges)| ranges)
            .or(begin)
            .map(|ranges| ranges_of(ranges, false)),
    };
    out
}

/// The highest epoch up to `upto` that writer `w` took part in: one
/// logged by a start with more than `w` processes.
fn took_part(live: &[(i64, &LogRecord)], w: u32, upto: u64) -> Option<u64> {
    let mut processes = 1;
    let mut highest = None;
    for (_, r) in live {
        match r {
            LogRecord::Start { processes: p, .. } => processes = (*p).max(1),
            LogRecord::Epoch { epoch, .. } | LogRecord::Replayed { epoch, .. }
                if processes > w && *epoch <= upto =>
            {
                highest = highest.max(Some(*epoch));
            }
            _ => {}
        }
    }
    highest
}

/// The shape (processes, workers per process) of the start that logged
/// the newest live epoch: its writers are the ones whose progress counts.
/// None when no epoch is logged.
pub fn decided_by(records: &[(i64, LogRecord)]) -> Option<(u32, u32)> {
    let live = live(records);
    let attempt = live.iter().rev().find_map(|(_, r)| match r {
        LogRecord::Epoch { attempt, .. } | LogRecord::Replayed { attempt, .. } => Some(*attempt),
        _ => None,
    })?;
    live.iter()
        .find_map(|(offset, r)| match r {
            LogRecord::Start { processes, workers } if attempt_at(*offset) == attempt => {
                Some(((*processes).max(1), *workers))
            }
            _ => None,
        })
        .or(Some((1, 0)))
}

/// For each epoch `writer` has committed, the attempt whose copy of its
/// output and changelog counts: the last live record of the epoch, its
/// first logging or a replay, that the writer did not skip. An epoch is
/// committed when its record sits below the writer's progress; the writer
/// does not send it again after that, so that copy is the one that
/// committed. Copies of other attempts were aborted, or written by a
/// fenced instance; a broker that delivers aborted records shows them.
pub fn committed_copies(
    records: &[(i64, LogRecord)],
    progress: i64,
    writer: u32,
) -> BTreeMap<u64, u32> {
    let live = live(records);
    let committed: std::collections::HashSet<u64> = live
        .iter()
        .filter_map(|(offset, r)| match r {
            LogRecord::Epoch { epoch, .. } if *offset < progress => Some(*epoch),
            _ => None,
        })
        .collect();
    let mut out = BTreeMap::new();
    for (_, r) in live {
        match r {
            LogRecord::Epoch { epoch, attempt, .. } if committed.contains(epoch) => {
                out.insert(*epoch, *attempt);
            }
            LogRecord::Replayed {
                epoch,
                attempt,
                skipped,
                ..
            } if committed.contains(epoch) && !skipped.contains(&writer) => {
                out.insert(*epoch, *attempt);
            }
            _ => {}
        }
    }
    out
}

/// The first offset of a source partition that the job has yet to read
/// (from `start`, where it resumes, or in an epoch it replays) and that is
/// below `low`, where the partition now starts: deleted unread.
pub fn first_deleted(
    replay: &[(u64, Vec<PartitionRange>)],
    source: u32,
    partition: i32,
    start: i64,
    low: i64,
) -> Option<i64> {
    replay
        .iter()
        .flat_map(|(_, ranges)| ranges)
        .filter(|r| r.source == source && r.partition == partition && r.end > r.start)
        .map(|r| r.start)
        .chain([start])
        .min()
        .filter(|first| *first < low)
}

/// What the state of each of a job's stateful transforms means, by name.
pub type StateMeaning = std::collections::BTreeMap<String, Vec<(String, String)>>;

/// How `new` (the job file of a start) means the state `old` (what the
/// committed state means) differently: a transform that kept state and
/// is gone (renamed or removed), or a facet of one that changed. A
/// transform new to the job starts with no state, which is no change.
pub fn state_changes(old: &StateMeaning, new: &StateMeaning) -> Vec<String> {
    let mut out = Vec::new();
    for (transform, facets) in old {
        let Some(now) = new.get(transform) else {
            out.push(format!(
                "transform `{transform}` kept state and is not in the job file (renamed or removed)"
            ));
            continue;
        };
        let was: BTreeMap<&str, &str> = facets
            .iter()
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect();
        let is: BTreeMap<&str, &str> = now.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        for key in was
            .keys()
            .chain(is.keys())
            .collect::<std::collections::BTreeSet<_>>()
        {
            match (was.get(key), is.get(key)) {
                (Some(a), Some(b)) if a == b => {}
                (Some(a), Some(b)) => out.push(format!(
                    "transform `{transform}`: {key} was `{a}`, is `{b}`"
                )),
                (Some(a), None) => {
                    out.push(format!("transform `{transform}`: {key} `{a}` is gone"))
                }
                (None, Some(b)) => out.push(format!("transform `{transform}`: {key} `{b}` is new")),
                (None, None) => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::coordinator::{execute, steps, EpochSteps, EpochWork, Role};

    fn epoch(epoch: u64, attempt: u32, start: i64, end: i64) -> LogRecord {
        LogRecord::Epoch {
            epoch,
            attempt,
            committed: 0,
            ranges: vec![PartitionRange {
                source: 0,
                partition: 0,
                start,
                end,
                waiting: false,
            }],
        }
    }

    fn log(records: Vec<LogRecord>) -> Vec<(i64, LogRecord)> {
        records
            .into_iter()
            .enumerate()
            .map(|(i, r)| (i as i64, r))
            .collect()
    }

    #[test]
    fn the_copy_that_counts_is_the_last_live_one_of_a_committed_epoch() {
        let records = log(vec![
            LogRecord::start(),  // attempt 1
            epoch(1, 1, 0, 10),  // committed by 1
            epoch(2, 1, 10, 20), // logged, not committed
            LogRecord::start(),  // attempt 4 fences 1
            epoch(3, 1, 20, 30), // 1 logged it late: fenced
            LogRecord::Replayed {
                epoch: 2,
                attempt: 4,
                committed: 1,
                skipped: vec![],
            },
            epoch(4, 4, 20, 30),
        ]);
        // Progress past epoch 2's record (offset 2): 1 and 2 committed.
        let copies = committed_copies(&records, 3, 0);
        assert_eq!(copies, BTreeMap::from([(1, 1), (2, 4)]));
        // Epoch 3 never committed, whatever the progress says later: a
        // fenced instance's changelog for it must not be restored.
        let copies = committed_copies(&records, 7, 0);
        assert_eq!(copies, BTreeMap::from([(1, 1), (2, 4), (4, 4)]));
    }

    #[test]
    fn the_writers_that_count_are_those_of_the_start_that_logged_the_newest_epoch() {
        let cluster = |processes| LogRecord::Start {
            processes,
            workers: 2,
        };
        let mut records = log(vec![
            cluster(3),         // attempt 1
            epoch(1, 1, 0, 10), // logged by three processes
            cluster(2),         // attempt 3: started, logged nothing
        ]);
        assert_eq!(decided_by(&records), Some((3, 2)));
        records.push((3, epoch(2, 3, 10, 20)));
        assert_eq!(decided_by(&records), Some((2, 2)));
        assert_eq!(decided_by(&log(vec![LogRecord::start()])), None);
        // A log written before starts recorded their shape: one process.
        let old: Vec<(i64, LogRecord)> = serde_json::from_str(
            r#"[[0, {"kind":"start"}], [1, {"kind":"epoch","epoch":1,"attempt":1,"ranges":[]}]]"#,
        )
        .unwrap();
        assert_eq!(decided_by(&old), Some((1, 0)));
        let r = resume_writers(&records, &[4, 4]);
        assert_eq!((r.committed, r.committed_offset), (2, Some(3)));
    }

    fn run(id: &str, after_epoch: u64, reset: bool) -> LogRecord {
        LogRecord::Incarnation {
            id: id.into(),
            after_epoch,
            reset,
        }
    }

    #[test]
    fn a_reset_ends_what_counts_and_its_run_numbers_epochs_after_every_earlier_one() {
        let records: Vec<(i64, LogRecord)> = vec![
            LogRecord::start(),
            run("a", 0, false),
            epoch(1, 1, 0, 10),
            epoch(2, 1, 10, 20),
            LogRecord::start(),
            run("b", 2, true),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i as i64, r))
        .collect();
        // Epoch 1 committed, epoch 2 logged: before the reset, both are
        // history.
        let r = resume(&records, 3);
        assert_eq!(r.incarnation.as_deref(), Some("b"));
        assert!(!r.fresh);
        assert_eq!(r.committed, 0);
        assert!(r.replay.is_empty());
        assert_eq!(r.start_offsets, None);
        assert_eq!(r.next_epoch, 3);
        assert_eq!(r.last_attempt, attempt_at(4));
        assert_eq!(r.progress_lost, None);
        // Before the reset, the run was `a`.
        let r = resume(&records[..4], 3);
        assert_eq!((r.incarnation.as_deref(), r.committed), (Some("a"), 1));
    }

    #[test]
    fn what_an_instance_fenced_by_a_reset_logs_after_it_does_not_count() {
        let stale = LogRecord::Epoch {
            epoch: 2,
            attempt: attempt_at(0),
            committed: 1,
            ranges: Vec::new(),
        };
        let records: Vec<(i64, LogRecord)> = vec![
            LogRecord::start(),
            run("a", 0, false),
            epoch(1, attempt_at(0), 0, 10),
            LogRecord::start(),
            run("b", 1, true),
            stale,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i as i64, r))
        .collect();
        let r = resume(&records, 0);
        assert_eq!(r.progress_lost, None);
        assert_eq!((r.committed, r.replay.len()), (0, 0));
        assert_eq!(r.incarnation.as_deref(), Some("b"));
        // Its number is not given again.
        assert_eq!(r.next_epoch, 3);
    }

    #[test]
    fn two_first_starts_that_both_name_a_run_agree_on_the_first() {
        let records: Vec<(i64, LogRecord)> = vec![
            LogRecord::start(),
            LogRecord::start(),
            run("a", 0, false),
            run("b", 0, false),
        ]
        .into_iter()
        .enumerate()
        .map(|(i, r)| (i as i64, r))
        .collect();
        assert!(resume(&records[..2], 0).fresh);
        let r = resume(&records, 0);
        assert_eq!((r.incarnation.as_deref(), r.fresh), (Some("a"), false));
    }

    #[test]
    fn a_state_means_something_else_when_a_facet_changes_or_its_transform_goes() {
        let meaning = |entries: &[(&str, &[(&str, &str)])]| -> StateMeaning {
            entries
                .iter()
                .map(|(t, facets)| {
                    let f = facets
                        .iter()
                        .map(|(k, v)| (k.to_string(), v.to_string()))
                        .collect();
                    (t.to_string(), f)
                })
                .collect()
        };
        let old = meaning(&[(
            "totals",
            &[
                ("group_by", "account int"),
                ("aggregates.total", "sum(v) double"),
            ],
        )]);
        assert!(state_changes(&old, &old).is_empty());
        // A transform new to the job is no change.
        let more = meaning(&[
            (
                "totals",
                &[
                    ("group_by", "account int"),
                    ("aggregates.total", "sum(v) double"),
                ],
            ),
            ("other", &[("group_by", "x int")]),
        ]);
        assert!(state_changes(&old, &more).is_empty());
        let changed = meaning(&[(
            "totals",
            &[
                ("group_by", "account int"),
                ("aggregates.total", "max(v) double"),
                ("window", "tumbling 5 ms on t"),
            ],
        )]);
        assert_eq!(
            state_changes(&old, &changed),
            vec![
                "transform `totals`: aggregates.total was `sum(v) double`, is `max(v) double`",
                "transform `totals`: window `tumbling 5 ms on t` is new",
            ]
        );
        assert_eq!(
            state_changes(&old, &meaning(&[])),
            vec!["transform `totals` kept state and is not in the job file (renamed or removed)"]
        );
    }

    #[test]
    fn a_first_start_resumes_from_nothing() {
        let r = resume(&log(vec![LogRecord::start()]), 0);
        assert_eq!(r.committed, 0);
        assert_eq!(r.start_offsets, None);
        assert_eq!(r.next_epoch, 1);
        assert_eq!(r.last_attempt, 1);
    }

    #[test]
    fn epochs_after_the_progress_are_replayed_with_their_boundaries() {
        let records = log(vec![
            LogRecord::start(),
            epoch(1, 1, 0, 10),
            epoch(2, 1, 10, 25),
            epoch(3, 1, 25, 30),
            LogRecord::start(),
        ]);
        let r = resume(&records, 2);
        assert_eq!(r.committed, 1);
        assert_eq!(r.start_offsets, Some(HashMap::from([((0, 0), 10)])));
        assert_eq!(
            r.replay.iter().map(|(e, _)| *e).collect::<Vec<_>>(),
            vec![2, 3]
        );
        assert_eq!(r.log_offsets[&3], 3);
        assert_eq!(r.next_epoch, 4);
        assert_eq!(r.last_attempt, 5);
    }

    #[test]
    fn a_restart_before_the_first_commit_starts_where_the_first_start_did() {
        // `start_offset = "latest"` resolved to 40 at the first start,
        // which logged epoch 1 from there and crashed before committing.
        let records = log(vec![
            LogRecord::start(),
            epoch(1, 1, 40, 52),
            LogRecord::start(),
        ]);
        let r = resume(&records, 0);
        assert_eq!(r.committed, 0);
        assert_eq!(r.start_offsets, Some(HashMap::from([((0, 0), 40)])));
        assert_eq!(r.replay.len(), 1);
    }

    #[test]
    fn offsets_deleted_before_they_were_read_are_found() {
        let replay = vec![(
            4,
            vec![PartitionRange {
                source: 0,
                partition: 1,
                start: 10,
                end: 20,
                waiting: false,
            }],
        )];
        // Resuming at 20 with the partition starting at 15: epoch 4's
        // 10..15 are gone.
        assert_eq!(first_deleted(&replay, 0, 1, 20, 15), Some(10));
        assert_eq!(first_deleted(&replay, 0, 1, 20, 10), None);
        // Another partition, or an empty range, does not count.
        assert_eq!(first_deleted(&replay, 0, 0, 20, 15), None);
        assert_eq!(first_deleted(&[], 0, 1, 5, 6), Some(5));
    }

    #[test]
    fn progress_that_vanished_from_the_broker_is_noticed() {
        let mut second = epoch(2, 1, 10, 20);
        if let LogRecord::Epoch { committed, .. } = &mut second {
            *committed = 1;
        }
        let records = log(vec![LogRecord::start(), epoch(1, 1, 0, 10), second]);
        assert_eq!(resume(&records, 0).progress_lost, Some((0, 1)));
        assert_eq!(resume(&records, 2).progress_lost, None);
        // A job that crashed before its first commit has lost nothing.
        assert_eq!(resume(&records[..2], 0).progress_lost, None);
    }

    #[test]
    fn a_restart_before_the_first_epoch_was_logged_begins_where_the_first_start_did() {
        let begin = LogRecord::Begin {
            attempt: 1,
            ranges: vec![PartitionRange {
                source: 0,
                partition: 0,
                start: 40,
                end: 40,
                waiting: false,
            }],
        };
        let records = log(vec![LogRecord::start(), begin, LogRecord::start()]);
        let r = resume(&records, 0);
        assert_eq!(r.start_offsets, Some(HashMap::from([((0, 0), 40)])));
        assert!(r.replay.is_empty());
        assert_eq!(r.next_epoch, 1);
    }

    #[test]
    fn a_fenced_instances_late_epoch_is_neither_replayed_nor_its_number_reused() {
        // Attempt 1 starts, attempt 2 starts and fences it, then attempt 1
        // still logs epoch 1 (and may write files for it).
        let records = log(vec![
            LogRecord::start(),
            LogRecord::start(),
            epoch(1, 1, 0, 10),
        ]);
        let r = resume(&records, 0);
        assert!(r.replay.is_empty());
        assert_eq!(r.next_epoch, 2);
        assert_eq!(started_since(&records[1..2], 1), Some(2));
        assert_eq!(started_since(&records[2..], 2), None);
    }

    /// Every interleaving of two instances' appends: the fenced one learns
    /// it is fenced before writing files for any epoch the other does not
    /// see, so whatever files it wrote belong to epochs the other replays.
    #[test]
    fn a_fenced_writer_notices_before_any_epoch_the_new_one_cannot_see() {
        // Instance A (started at offset 0) appends epochs 1..=3; instance B
        // starts at some point among them.
        for b_at in 1..=4usize {
            let mut records = vec![LogRecord::start()];
            for e in 1..=3u64 {
                records.push(epoch(e, 1, 0, 0));
            }
            records.insert(b_at, LogRecord::start());
            let records = log(records);
            let b_attempt = attempt_at(b_at as i64);
            // A checks the gap before each of its epoch records.
            let mut last_own = 0usize;
            let mut a_writes = Vec::new();
            for (i, (_, r)) in records.iter().enumerate() {
                if let LogRecord::Epoch { epoch, .. } = r {
                    if started_since(&records[last_own + 1..i], 1).is_some() {
                        break;
                    }
                    a_writes.push(*epoch);
                    last_own = i;
                }
            }
            // B read the log right after its start: what it replays.
            let seen = resume(&records[..=b_at], 0);
            let replayed: Vec<u64> = seen.replay.iter().map(|(e, _)| *e).collect();
            assert_eq!(a_writes, replayed, "B started at {b_at}");
            // What B plans later never reuses A's numbers.
            assert!(resume(&records, 0).next_epoch > 3);
            assert!(b_attempt > 1);
        }
    }

    /// The stores of a cluster's writers, as a restart reads them.
    struct Model<'a> {
        records: &'a mut Vec<(i64, LogRecord)>,
        progress: &'a mut Vec<i64>,
        /// (writer, epoch) -> the attempts whose copy it committed.
        committed: &'a mut BTreeMap<(usize, u64), Vec<u32>>,
        offset_end: &'a mut i64,
        /// Steps left before the whole cluster crashes.
        budget: usize,
        attempt: u32,
        plan_committed: u64,
    }

    struct Crash;

    /// One writer's part in one epoch, through the committer's executor.
    /// Process 0 logs the epoch (the decision), lets every follower, in
    /// some order, take its steps from the decision on, and commits last,
    /// as its writer does once every follower has written the epoch.
    struct WriterEpoch<'a, 'm> {
        model: &'a mut Model<'m>,
        writer: usize,
        epoch: u64,
        /// The offset of its record, for an epoch logged before.
        logged: Option<i64>,
        /// Writers that committed this replayed epoch before.
        skipped: Vec<u32>,
        /// The offset of the epoch's record, once logged or decided.
        decision: i64,
        /// Process 0's only: the followers, in the order they take part.
        followers: Vec<usize>,
    }

    impl WriterEpoch<'_, '_> {
        fn step(&mut self) -> Result<(), Crash> {
            if self.model.budget == 0 {
                return Err(Crash);
            }
            self.model.budget -= 1;
            Ok(())
        }

        fn append(&mut self, r: LogRecord) -> i64 {
            let offset = self.model.records.len() as i64;
            self.model.records.push((offset, r));
            offset
        }
    }

    impl EpochSteps for WriterEpoch<'_, '_> {
        type Error = Crash;

        fn send(&mut self) -> Result<(), Crash> {
            self.step()
        }

        fn log(&mut self) -> Result<(), Crash> {
            self.step()?;
            let (epoch, attempt, committed) =
                (self.epoch, self.model.attempt, self.model.plan_committed);
            self.decision = match self.logged {
                Some(offset) => {
                    let skipped = self.skipped.clone();
                    self.append(LogRecord::Replayed {
                        epoch,
                        attempt,
                        committed,
                        skipped,
                    });
                    offset
                }
                None => {
                    *self.model.offset_end += 10;
                    let end = *self.model.offset_end;
                    self.append(LogRecord::Epoch {
                        epoch,
                        attempt,
                        committed,
                        ranges: vec![PartitionRange {
                            source: 0,
                            partition: 0,
                            start: end - 10,
                            end,
                            waiting: false,
                        }],
                    })
                }
            };
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
            for writer in std::mem::take(&mut self.followers) {
                let mut follower = WriterEpoch {
                    model: &mut *self.model,
                    writer,
                    epoch: self.epoch,
                    logged: self.logged,
                    skipped: self.skipped.clone(),
                    decision: self.decision,
                    followers: Vec::new(),
                };
                execute(&steps(EpochWork::default(), Role::Follows), &mut follower)?;
            }
            Ok(())
        }

        fn commit(&mut self) -> Result<(), Crash> {
            self.step()?;
            let (w, epoch) = (self.writer, self.epoch);
            if !self.skipped.contains(&(w as u32)) {
                let attempt = self.model.attempt;
                self.model
                    .committed
                    .entry((w, epoch))
                    .or_default()
                    .push(attempt);
            }
            self.model.progress[w] = self.model.progress[w].max(self.decision + 1);
            Ok(())
        }
    }

    /// Two or three writers commit in lockstep, each epoch once the
    /// decision is logged, in any order among themselves, through the
    /// committer's executor; the whole job crashes after any step, again
    /// and again, and restarts from the planner's answer. Every writer's share of every decided epoch is
    /// committed exactly once, and the copy the planner picks for each
    /// writer and epoch is the one that writer committed.
    #[test]
    fn writers_in_lockstep_commit_every_epoch_once_across_random_crashes() {
        use rand::rngs::SmallRng;
        use rand::{Rng, SeedableRng};
        for seed in 0..300u64 {
            let mut rng = SmallRng::seed_from_u64(seed);
            let writers = rng.random_range(2..=3usize);
            let mut records: Vec<(i64, LogRecord)> = Vec::new();
            let append = |records: &mut Vec<(i64, LogRecord)>, r: LogRecord| {
                let offset = records.len() as i64;
                records.push((offset, r));
                offset
            };
            let mut progress = vec![0i64; writers];
            // (writer, epoch) -> the attempts whose copy it committed.
            let mut committed: BTreeMap<(usize, u64), Vec<u32>> = BTreeMap::new();
            let mut offset_end = 0i64;
            for _restart in 0..6 {
                // A cluster logs one start, with its shape.
                let shape = LogRecord::Start {
                    processes: writers as u32,
                    workers: 1,
                };
                let start = append(&mut records, shape);
                let attempt = attempt_at(start);
                let plan = resume_writers(&records, &progress);
                assert_eq!(
                    plan.committed,
                    plan.writer_committed.iter().copied().min().unwrap()
                );
                // The replayed epochs, then new ones, each with a budget of
                // steps before the crash.
                let mut work: Vec<(u64, Option<i64>)> = plan
                    .replay
                    .iter()
                    .map(|(e, _)| (*e, Some(plan.log_offsets[e])))
                    .collect();
                let new = rng.random_range(0..4u64);
                work.extend((0..new).map(|i| (plan.next_epoch + i, None)));
                let mut model = Model {
                    records: &mut records,
                    progress: &mut progress,
                    committed: &mut committed,
                    offset_end: &mut offset_end,
                    budget: rng.random_range(0..40usize),
                    attempt,
                    plan_committed: plan.committed,
                };
                for (epoch, logged) in work {
                    let mut followers: Vec<usize> = (1..writers).collect();
                    for i in (1..followers.len()).rev() {
                        followers.swap(i, rng.random_range(0..=i));
                    }
                    let mut lead = WriterEpoch {
                        model: &mut model,
                        writer: 0,
                        epoch,
                        logged,
                        skipped: plan.skip.get(&epoch).cloned().unwrap_or_default(),
                        decision: 0,
                        followers,
                    };
                    let all = EpochWork {
                        kafka: true,
                        external: true,
                        read: true,
                        replayed: logged.is_some(),
                    };
                    if execute(&steps(all, Role::Logs), &mut lead).is_err() {
                        break;
                    }
                }
            }
            let plan = resume_writers(&records, &progress);
            for w in 0..writers {
                for e in 1..=plan.writer_committed[w] {
                    let copies = committed.get(&(w, e)).cloned().unwrap_or_default();
                    assert_eq!(
                        copies.len(),
                        1,
                        "seed {seed}: writer {w} epoch {e}: {copies:?}"
                    );
                    let picked = committed_copies(&records, progress[w], w as u32);
                    assert_eq!(
                        picked.get(&e),
                        Some(&copies[0]),
                        "seed {seed}: writer {w} epoch {e}"
                    );
                }
                // Nothing is committed twice, even among epochs still due.
                for ((cw, e), copies) in &committed {
                    assert!(
                        copies.len() <= 1,
                        "seed {seed}: writer {cw} epoch {e}: {copies:?}"
                    );
                }
            }
            // Lockstep: writers end at most one epoch apart.
            let (lo, hi) = (
                plan.writer_committed.iter().min().unwrap(),
                plan.writer_committed.iter().max().unwrap(),
            );
            assert!(hi - lo <= 1, "seed {seed}: {:?}", plan.writer_committed);
        }
    }

    #[test]
    fn a_follower_whose_progress_vanished_is_lost_unless_it_lags_one_epoch_or_never_took_part() {
        let cluster = |processes| LogRecord::Start {
            processes,
            workers: 1,
        };
        // A cluster of 2 commits epochs 1..=3 (records at offsets 1..=3).
        let records = log(vec![
            cluster(2),
            epoch(1, 1, 0, 10),
            epoch(2, 1, 10, 20),
            epoch(3, 1, 20, 30),
        ]);
        // Both hold their progress: nothing lost.
        assert_eq!(resume_writers(&records, &[4, 4]).progress_lost, None);
        // Writer 1's offsets are gone: it took part in epochs 1 and 2.
        let r = resume_writers(&records, &[4, 0]);
        assert_eq!(r.progress_lost, Some((1, 2)));
        // Writer 0's are gone, writer 1's not.
        assert_eq!(
            resume_writers(&records, &[0, 4]).progress_lost,
            Some((0, 2))
        );
        // Writer 1 committed epoch 1, writer 0 stopped before it did: no
        // loss, epoch 1 is replayed and writer 1 skips it.
        let first = log(vec![cluster(2), epoch(1, 1, 0, 10)]);
        let r = resume_writers(&first, &[0, 2]);
        assert_eq!(r.progress_lost, None);
        assert_eq!(r.committed, 0);
        assert_eq!(r.skip.get(&1), Some(&vec![1]));
        // A cluster grown to 3 stopped before writer 2 joined: writer 2
        // sent nothing of epochs 1..=3 and stands where the others do.
        let mut grown = records.clone();
        grown.push((4, cluster(3)));
        let r = resume_writers(&grown, &[4, 4, 0]);
        assert_eq!(r.progress_lost, None);
        assert_eq!(r.committed, 3);
        assert!(r.replay.is_empty());
    }
}
