//! The state a start restores from a changelog: each key's value as of
//! the epoch the job resumes after. Pure: the caller reads the records.
//!
//! A key's value as of epoch r is the state after the last record of an
//! epoch up to r. Writers that commit in lockstep can be one epoch apart
//! after a crash, so a record of an epoch after r can be committed too;
//! then its before-image is the key's value as of r, and it is the only
//! trace of it once compaction has removed the older records.

use crate::dataflow::state::{self, CodecError, StateEntry};
use hashbrown::HashMap;

/// One committed changelog record: its epoch, its offset (for errors),
/// key and value (None: a tombstone).
pub type Logged = (u64, i64, Vec<u8>, Option<Vec<u8>>);

/// A record that does not decode, with its offset.
#[derive(Debug, PartialEq)]
pub struct Undecodable {
    pub offset: i64,
    pub error: CodecError,
}

/// The state as of epoch `r` from committed records, in any order,
/// sorted by key.
#[cfg(test)]
pub fn state_as_of(
    records: impl IntoIterator<Item = Logged>,
    r: u64,
) -> Result<Vec<StateEntry>, Undecodable> {
    let mut state = StateAsOf::new(r);
    for record in records {
        state.add(record);
    }
    state.finish()
}

/// Per key: its last record up to epoch r and its first one after r, by
/// (epoch, offset), so records can be added as they are read, without
/// holding them all first.
pub struct StateAsOf {
    r: u64,
    upto: HashMap<Vec<u8>, (u64, i64, Option<Vec<u8>>)>,
    after: HashMap<Vec<u8>, (u64, i64, Option<Vec<u8>>)>,
}

impl StateAsOf {
    pub fn new(r: u64) -> StateAsOf {
        StateAsOf {
            r,
            upto: HashMap::new(),
            after: HashMap::new(),
        }
    }

    pub fn add(&mut self, (epoch, offset, key, value): Logged) {
        use hashbrown::hash_map::Entry;
        let (map, later_wins) = if epoch <= self.r {
            (&mut self.upto, true)
        } else {
            (&mut self.after, false)
        };
        match map.entry(key) {
            Entry::Vacant(v) => {
                v.insert((epoch, offset, value));
            }
            Entry::Occupied(mut o) => {
                let (e, off, _) = o.get();
                if ((epoch, offset) > (*e, *off)) == later_wins {
                    o.insert((epoch, offset, value));
                }
            }
        }
    }

    /// The state of every key the records name, sorted by key.
    #[cfg(test)]
    pub fn finish(self) -> Result<Vec<StateEntry>, Undecodable> {
        let mut out: Vec<(Vec<u8>, StateEntry)> = self
            .changes()?
            .into_iter()
            .filter_map(|(k, e)| Some((k, e?)))
            .collect();
        out.sort_by(|a, b| a.0.cmp(&b.0));
        Ok(out.into_iter().map(|(_, e)| e).collect())
    }

    /// Per key the records name (its changelog key), its state as of r:
    /// None when it had none, which over a snapshot removes the key.
    pub fn changes(self) -> Result<Vec<(Vec<u8>, Option<StateEntry>)>, Undecodable> {
        let StateAsOf { upto, after, .. } = self;
        let decode = |key: &[u8], offset: i64, value: &[u8]| {
            state::decode(key, value).map_err(|error| Undecodable { offset, error })
        };
        let mut out = Vec::with_capacity(upto.len() + after.len());
        for (key, (_, offset, value)) in &after {
            let before = match value {
                Some(v) => decode(key, *offset, v)?.before,
                None => None,
            };
            out.push((key.clone(), before));
        }
        for (key, (_, offset, value)) in upto {
            if after.contains_key(&key) {
                continue;
            }
            let now = match value {
                Some(v) => decode(&key, offset, &v)?.after,
                None => None,
            };
            out.push((key, now));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::state::{change_bytes, group_key_bytes, Acc, AggState};
    use crate::record::Value;

    fn count(n: i64) -> AggState {
        AggState {
            rows: n,
            accs: vec![Acc::Count(n)],
        }
    }

    fn record(epoch: u64, key: i64, after: Option<i64>, before: Option<i64>) -> Logged {
        let (a, b) = (after.map(count), before.map(count));
        (
            epoch,
            epoch as i64,
            group_key_bytes(&[Value::Int(key)]),
            Some(change_bytes(a.as_ref(), b.as_ref())),
        )
    }

    fn counts(entries: Vec<StateEntry>) -> Vec<(i64, i64)> {
        entries
            .into_iter()
            .map(|e| match e {
                StateEntry::Group(k, s) => (
                    match k[0] {
                        Value::Int(i) => i,
                        _ => panic!(),
                    },
                    s.rows,
                ),
                other => panic!("{other:?}"),
            })
            .collect()
    }

    #[test]
    fn the_last_value_up_to_r_counts() {
        let records = vec![
            record(1, 7, Some(1), None),
            record(2, 7, Some(3), Some(1)),
            record(2, 8, Some(1), None),
        ];
        assert_eq!(
            counts(state_as_of(records.clone(), 2).unwrap()),
            [(7, 3), (8, 1)]
        );
        assert_eq!(counts(state_as_of(records, 1).unwrap()), [(7, 1)]);
    }

    #[test]
    fn the_order_records_are_read_in_does_not_change_the_state() {
        let records = vec![
            record(1, 7, Some(1), None),
            record(2, 7, Some(3), Some(1)),
            record(3, 7, Some(4), Some(3)),
            record(4, 7, Some(6), Some(4)),
            record(2, 8, Some(1), None),
            record(4, 8, None, Some(1)),
        ];
        for r in 0..5 {
            let forward = counts(state_as_of(records.clone(), r).unwrap());
            let backward = counts(state_as_of(records.iter().rev().cloned(), r).unwrap());
            assert_eq!(forward, backward, "as of {r}");
        }
        assert_eq!(
            counts(state_as_of(records.iter().rev().cloned(), 2).unwrap()),
            [(7, 3), (8, 1)]
        );
    }

    #[test]
    fn a_key_compacted_to_a_later_epoch_rolls_back_through_its_before_image() {
        // Compaction kept only epoch 5's record of key 7; the job resumes
        // after 4 (another writer had committed only 4).
        let records = vec![record(5, 7, Some(9), Some(4)), record(5, 8, Some(1), None)];
        assert_eq!(counts(state_as_of(records, 4).unwrap()), [(7, 4)]);
    }

    #[test]
    fn a_deletion_rolls_back_to_the_value_before_it_and_a_tombstone_to_nothing() {
        let deleted = record(3, 7, None, Some(2));
        assert_eq!(counts(state_as_of(vec![deleted.clone()], 3).unwrap()), []);
        assert_eq!(counts(state_as_of(vec![deleted], 2).unwrap()), [(7, 2)]);
        let tombstone = (4, 4, group_key_bytes(&[Value::Int(7)]), None);
        assert_eq!(counts(state_as_of(vec![tombstone.clone()], 4).unwrap()), []);
        assert_eq!(counts(state_as_of(vec![tombstone], 3).unwrap()), []);
    }

    #[test]
    fn a_record_that_does_not_decode_names_its_offset() {
        let bad = (
            1,
            42,
            group_key_bytes(&[Value::Int(7)]),
            Some(vec![2, 0xff]),
        );
        assert_eq!(state_as_of(vec![bad], 1).unwrap_err().offset, 42);
    }
}
