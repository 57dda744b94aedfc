//! The state of stateful transforms read back as of the committed epoch:
//! from their changelogs, or from a local snapshot and the changelog
//! after it. Only the copy of a committed epoch that committed counts.

use super::committed::CommittedView;
use super::recovery::RecoveryError;
use crate::connectors::kafka_admin::{self, KafkaAdminError};
use crate::dataflow::state::StateEntry;
use crate::fault;
use crate::plan::Plan;
use crate::runtime::{planner, restore, snapshot};
use std::collections::HashMap;

/// Per stateful transform, its state; and those that came from a local
/// snapshot, with the epoch it was of and the changelog records read
/// after it.
pub(super) type Restored = (HashMap<String, Vec<StateEntry>>, Vec<(String, u64, usize)>);

/// Rebuilds the state of each of `transforms` as of epoch `committed`,
/// transform by transform, each changelog partition on a thread of its
/// own.
pub(super) fn restore_all(
    job: &crate::spec::JobConfig,
    transforms: &[String],
    prepared: Vec<Prepared>,
    view: &CommittedView,
    committed: u64,
    t0: std::time::Instant,
) -> Result<Restored, RecoveryError> {
    let brokers = &job.brokers;
    let mut state = HashMap::new();
    let mut from_snapshot = Vec::new();
    for (name, prepared) in transforms.iter().zip(prepared) {
        let topic = job.changelog_topic(name);
        let Prepared {
            partitions,
            snapshot,
            marks,
        } = prepared;
        let partitions = partitions?;
        let snapshot = usable_snapshot(job, name, &topic, snapshot, marks, view, committed);
        let from = snapshot.as_ref().map(|s| s.header.offsets.clone());
        // A key always lands in the same partition, so each partition is
        // read and folded on a thread of its own and the results joined.
        let read: Vec<Result<(Changes, usize, usize), RecoveryError>> = std::thread::scope(|s| {
            let readers: Vec<_> = (0..partitions)
                .map(|p| {
                    let (topic, from) = (
                        &topic,
                        from.as_ref().and_then(|f| f.get(p as usize).copied()),
                    );
                    s.spawn(move || read_partition(brokers, topic, p, from, view, committed))
                })
                .collect();
            readers
                .into_iter()
                .map(|r| r.join().expect("changelog reader"))
                .collect()
        });
        let (mut seen, mut kept) = (0, 0);
        let mut changes = Vec::new();
        for r in read {
            let (c, s, k) = r?;
            (seen, kept) = (seen + s, kept + k);
            changes.extend(c);
        }
        tracing::debug!(
            "recovery: {kept} of {seen} records of {topic} count, read after {} ms",
            t0.elapsed().as_millis()
        );
        let rebuilt = match snapshot {
            None => changes.into_iter().filter_map(|(_, e)| e).collect(),
            Some(snap) => {
                from_snapshot.push((name.clone(), snap.header.epoch, kept));
                over_snapshot(snap.groups, changes)
            }
        };
        tracing::debug!(
            "recovery: state of {} rebuilt after {} ms",
            name,
            t0.elapsed().as_millis()
        );
        state.insert(name.clone(), rebuilt);
    }
    Ok((state, from_snapshot))
}

/// The state of stateful transform `transform` as of the job's last
/// committed epoch, read from its changelog without fencing anything (a
/// pull query): (that epoch, its entries). Any process of a cluster can
/// read it, whichever worker holds a key.
pub fn committed_state(
    plan: &Plan,
    transform: &str,
) -> Result<(u64, Vec<StateEntry>), RecoveryError> {
    let job = &plan.job;
    let view = CommittedView::read(job)?;
    let committed = planner::resume_writers(&view.records, &view.progress).committed;
    let topic = job.changelog_topic(transform);
    let partitions = kafka_admin::partition_count(&job.brokers, &topic)?.unwrap_or(0);
    let mut entries = Vec::new();
    for p in 0..partitions {
        let (changes, _, _) = read_partition(&job.brokers, &topic, p, None, &view, committed)?;
        entries.extend(changes.into_iter().filter_map(|(_, e)| e));
    }
    Ok((committed, entries))
}

/// Per changelog key, its state as of the resumed epoch (None: none).
type Changes = Vec<(Vec<u8>, Option<StateEntry>)>;

/// One changelog partition folded as of epoch `committed`: each key's
/// state, the records read and those that count. Only the copy of a
/// committed epoch that committed counts: the broker may deliver aborted
/// copies and a fenced instance's records.
fn read_partition(
    brokers: &crate::connectors::kafka_config::Brokers,
    topic: &str,
    partition: i32,
    from: Option<i64>,
    view: &CommittedView,
    committed: u64,
) -> Result<(Changes, usize, usize), RecoveryError> {
    let mut state = restore::StateAsOf::new(committed);
    let (mut seen, mut kept) = (0usize, 0usize);
    kafka_admin::read_partition_each(brokers, topic, partition, from, |m| {
        seen += 1;
        if seen == 2 {
            fault::point("restore");
        }
        let epoch = m.header("rill-epoch").and_then(|e| e.parse::<u64>().ok());
        let attempt = m.header("rill-attempt").and_then(|a| a.parse::<u32>().ok());
        let counts = matches!((epoch, attempt),
            (Some(e), Some(a)) if view.counts(m.header("rill-writer"), e, a));
        if let (true, Some(epoch), Some(key)) = (counts, epoch, m.key()) {
            kept += 1;
            state.add((
                epoch,
                m.offset(),
                key.to_vec(),
                m.value().map(<[u8]>::to_vec),
            ));
        }
    })?;
    let changes = state.changes().map_err(|e| RecoveryError::Changelog {
        job: view.job.clone(),
        topic: topic.to_string(),
        offset: e.offset,
        reason: e.error.to_string(),
    })?;
    Ok((changes, seen, kept))
}

/// The local snapshot of `transform`, if there is one this start can
/// build on: of a committed epoch of this job, no later than the one it
/// resumes after, of this build's state format, and with offsets its
/// changelog still has. Otherwise the changelog is read whole, and a
/// snapshot left aside says why.
fn usable_snapshot(
    job: &crate::spec::JobConfig,
    transform: &str,
    topic: &str,
    read: Result<Option<snapshot::Snapshot>, String>,
    marks: Result<Vec<(i64, i64)>, String>,
    view: &CommittedView,
    committed: u64,
) -> Option<Snapshotted> {
    let check = |h: &snapshot::Header| -> Result<(), String> {
        if h.epoch == 0 {
            return Err("it holds no committed epoch".into());
        }
        if h.epoch > committed {
            return Err(format!(
                "it is of epoch {}, after the last committed one ({committed})",
                h.epoch
            ));
        }
        if view.copies.first().and_then(|c| c.get(&h.epoch)) != Some(&h.attempt) {
            return Err(format!(
                "the epoch log does not say that attempt {} committed epoch {}: it is of another run of a job of this name",
                h.attempt, h.epoch
            ));
        }
        // The checksum and the format's version stand for the groups;
        // they are not decoded one by one.
        if h.state_format != crate::dataflow::state::VERSION {
            return Err(format!(
                "its states are of format {}, not {}",
                h.state_format,
                crate::dataflow::state::VERSION
            ));
        }
        let marks = marks.clone()?;
        if marks.len() != h.offsets.len()
            || marks.iter().zip(&h.offsets).any(|((_, high), o)| o > high)
        {
            return Err(format!("{topic} does not have the offsets it was taken at"));
        }
        Ok(())
    };
    let why = match read {
        Ok(None) => return None,
        Ok(Some(snap)) => match check(&snap.header) {
            Ok(()) => {
                return Some(Snapshotted {
                    header: snap.header,
                    groups: snap
                        .groups
                        .into_iter()
                        .map(|(k, s)| StateEntry::Packed(k, s))
                        .collect(),
                })
            }
            Err(why) => why,
        },
        Err(why) => why,
    };
    tracing::info!(
        "the local snapshot of {transform} in {} is not used ({why}); reading its changelog instead",
        snapshot::dir(job).display()
    );
    None
}

/// What a start learns of a transform while it reads the epoch log: how
/// many partitions its changelog has (0: none yet), its snapshot as read
/// from the file, and, when there is one, each changelog partition's low
/// and high offsets.
pub(super) struct Prepared {
    partitions: Result<i32, KafkaAdminError>,
    snapshot: Result<Option<snapshot::Snapshot>, String>,
    marks: Result<Vec<(i64, i64)>, String>,
}

pub(super) fn prepare(job: &crate::spec::JobConfig, transforms: &[String]) -> Vec<Prepared> {
    let dir = snapshot::dir(job);
    transforms
        .iter()
        .map(|t| {
            let topic = job.changelog_topic(t);
            let partitions =
                kafka_admin::partition_count(&job.brokers, &topic).map(|n| n.unwrap_or(0));
            let snapshot = snapshot::read(&dir, t);
            let marks = match (&snapshot, &partitions) {
                (Ok(Some(_)), Ok(n)) => {
                    kafka_admin::watermarks(&job.brokers, &topic, *n).map_err(|e| e.to_string())
                }
                (_, Err(e)) => Err(e.to_string()),
                _ => Ok(Vec::new()),
            };
            Prepared {
                partitions,
                snapshot,
                marks,
            }
        })
        .collect()
}

/// A snapshot, its groups as restored entries.
struct Snapshotted {
    header: snapshot::Header,
    groups: Vec<StateEntry>,
}

/// A snapshot's groups with what the changelog after it says: a key the
/// changelog names takes the changelog's state (or none).
fn over_snapshot(
    groups: Vec<StateEntry>,
    changes: Vec<(Vec<u8>, Option<StateEntry>)>,
) -> Vec<StateEntry> {
    use crate::dataflow::store::pack_key;
    // A changelog key is a tag byte, then the group's packed key.
    let named: std::collections::HashSet<&[u8]> =
        changes.iter().filter_map(|(k, _)| k.get(1..)).collect();
    let mut out: Vec<StateEntry> = groups
        .into_iter()
        .filter(|entry| match entry {
            StateEntry::Packed(key, _) => !named.contains(key.as_bytes()),
            StateEntry::Group(key, _) => !named.contains(pack_key(key).as_bytes()),
            _ => true,
        })
        .collect();
    out.extend(changes.into_iter().filter_map(|(_, e)| e));
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::state::{group_key_bytes, Acc, AggState};
    use crate::record::Value;

    fn group(key: i64, n: i64) -> StateEntry {
        StateEntry::Group(
            vec![Value::Int(key)],
            AggState {
                rows: n,
                accs: vec![Acc::Count(n)],
            },
        )
    }

    #[test]
    fn the_changelog_after_a_snapshot_updates_adds_and_removes_its_groups() {
        let base = (1..=3).map(|k| group(k, 1)).collect();
        let changes = vec![
            (group_key_bytes(&[Value::Int(2)]), Some(group(2, 5))),
            (group_key_bytes(&[Value::Int(3)]), None),
            (group_key_bytes(&[Value::Int(4)]), Some(group(4, 1))),
        ];
        let mut got = over_snapshot(base, changes);
        got.sort_by_key(|e| format!("{e:?}"));
        assert_eq!(got, vec![group(1, 1), group(2, 5), group(4, 1)]);
    }
}
