//! The state of a plain (unwindowed) aggregate on one worker: per group,
//! its running `AggState`, both packed as their postcard bytes. A group of
//! a few values and the state of a few aggregates fit in 22 bytes each and
//! live in the table itself, with no allocation of their own: 1M groups of
//! a sum and a count take about 50 bytes each plus the table's slack,
//! where decoded keys and states took several allocations per group.

use super::state::AggState;
use crate::record::Value;
use std::hash::{BuildHasher, Hash, Hasher};

/// Up to this many bytes are kept inline.
const INLINE: usize = 22;

/// A short byte string kept inline, a long one on the heap. Only
/// `Packed::new` makes one, so equal bytes are always the same variant.
#[derive(Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Packed {
    Inline { len: u8, bytes: [u8; INLINE] },
    Heap(Box<[u8]>),
}

impl Packed {
    pub fn new(b: &[u8]) -> Packed {
        if b.len() <= INLINE {
            let mut bytes = [0; INLINE];
            bytes[..b.len()].copy_from_slice(b);
            Packed::Inline {
                len: b.len() as u8,
                bytes,
            }
        } else {
            Packed::Heap(b.into())
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Packed::Inline { len, bytes } => &bytes[..*len as usize],
            Packed::Heap(b) => b,
        }
    }

    /// The postcard encoding of `t`, without an allocation when it is
    /// short.
    pub fn encode<T: serde::Serialize>(t: &T) -> Packed {
        let mut buf = [0u8; INLINE];
        match postcard::to_slice(t, &mut buf) {
            Ok(b) => Packed::new(b),
            Err(_) => Packed::Heap(
                postcard::to_allocvec(t)
                    .expect("state types serialize")
                    .into(),
            ),
        }
    }

    pub fn decode<'a, T: serde::Deserialize<'a>>(&'a self) -> T {
        postcard::from_bytes(self.as_bytes()).expect("packed by this process")
    }
}

impl Hash for Packed {
    fn hash<H: Hasher>(&self, h: &mut H) {
        self.as_bytes().hash(h)
    }
}

impl std::fmt::Debug for Packed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Packed({:?})", self.as_bytes())
    }
}

/// A group's key as it is stored and routed: its values, packed.
pub fn pack_key(values: &[Value]) -> Packed {
    Packed::encode(&values)
}

/// Every group's state on one worker: the groups in one vector, and a
/// table of their positions by the key's hash. A table of 4-byte
/// positions grows in place of one of 48-byte entries, and the vector of
/// entries grows without a copy (large reallocations are remapped).
#[derive(Default)]
pub struct GroupStore {
    positions: hashbrown::HashTable<u32>,
    groups: Vec<(Packed, Packed)>,
    hasher: hashbrown::DefaultHashBuilder,
}

impl GroupStore {
    pub fn len(&self) -> usize {
        self.groups.len()
    }

    fn position(&self, key: &Packed) -> Option<usize> {
        let groups = &self.groups;
        self.positions
            .find(self.hasher.hash_one(key), |&i| groups[i as usize].0 == *key)
            .map(|&i| i as usize)
    }

    fn insert(&mut self, key: Packed, state: Packed) {
        if let Some(i) = self.position(&key) {
            self.groups[i].1 = state;
            return;
        }
        let (groups, hasher) = (&self.groups, &self.hasher);
        self.positions.insert_unique(
            hasher.hash_one(&key),
            u32::try_from(groups.len()).expect("fewer than 4G groups per worker"),
            |&i| hasher.hash_one(&groups[i as usize].0),
        );
        self.groups.push((key, state));
    }

    fn remove(&mut self, key: &Packed) {
        let groups = &self.groups;
        let Ok(found) = self
            .positions
            .find_entry(self.hasher.hash_one(key), |&i| groups[i as usize].0 == *key)
        else {
            return;
        };
        let (i, _) = found.remove();
        let i = i as usize;
        let last = self.groups.len() - 1;
        self.groups.swap_remove(i);
        if i < last {
            // The last group moved into the hole: its position changes.
            let moved = self.hasher.hash_one(&self.groups[i].0);
            if let Some(p) = self.positions.find_mut(moved, |&p| p as usize == last) {
                *p = i as u32;
            }
        }
    }

    /// Every group and its state, leaving the store empty.
    pub fn take(&mut self) -> Vec<(Packed, Packed)> {
        self.positions.clear();
        std::mem::take(&mut self.groups)
    }

    /// Sets a group's state as it was restored.
    pub fn restore(&mut self, key: Packed, state: &AggState) {
        self.insert(key, Packed::encode(state));
    }

    /// Sets a group's state as a snapshot kept it, packed.
    pub fn restore_packed(&mut self, key: Packed, state: Packed) {
        self.insert(key, state);
    }

    /// Folds `delta` into the group's state and says what it was before
    /// and is after; a state of no rows is removed.
    pub fn apply(&mut self, key: &Packed, delta: AggState) -> (Option<AggState>, Option<AggState>) {
        use differential_dataflow::difference::Semigroup;
        let before: Option<AggState> = self.position(key).map(|i| self.groups[i].1.decode());
        let mut after = match &before {
            Some(b) => b.clone(),
            None => AggState {
                rows: 0,
                accs: Vec::new(),
            },
        };
        after.plus_equals(&delta);
        if after.rows == 0 {
            self.remove(key);
            (before, None)
        } else {
            self.insert(key.clone(), Packed::encode(&after));
            (before, Some(after))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dataflow::state::Acc;

    fn sum_count(sum: f64, n: i64) -> AggState {
        AggState {
            rows: n,
            accs: vec![Acc::SumDouble(Value::Double(sum)), Acc::Count(n)],
        }
    }

    #[test]
    fn short_and_long_bytes_round_trip_and_compare_by_their_bytes() {
        for len in [0, 1, 21, 22, 23, 100] {
            let b: Vec<u8> = (0..len as u8).collect();
            let p = Packed::new(&b);
            assert_eq!(p.as_bytes(), &b[..]);
            assert_eq!(matches!(p, Packed::Inline { .. }), len <= INLINE);
            assert_eq!(p, Packed::new(&b));
        }
        assert_ne!(Packed::new(&[1]), Packed::new(&[1, 0]));
        assert_eq!(std::mem::size_of::<Packed>(), 24);
    }

    #[test]
    fn a_sum_and_a_count_and_a_numeric_key_are_kept_inline() {
        let state = sum_count(1234.5678, 1_000_000);
        assert!(matches!(Packed::encode(&state), Packed::Inline { .. }));
        assert_eq!(Packed::encode(&state).decode::<AggState>(), state);
        let key = pack_key(&[Value::Int(9_000_000_000)]);
        assert!(matches!(key, Packed::Inline { .. }));
        assert_eq!(key.decode::<Vec<Value>>(), vec![Value::Int(9_000_000_000)]);
        let long = pack_key(&[Value::Str("a key longer than twenty-two bytes".into())]);
        assert!(matches!(long, Packed::Heap(_)));
        assert_eq!(
            long.decode::<Vec<Value>>(),
            vec![Value::Str("a key longer than twenty-two bytes".into())]
        );
    }

    #[test]
    fn applying_deltas_reports_the_state_before_and_after() {
        let mut store = GroupStore::default();
        let k = pack_key(&[Value::Int(1)]);
        assert_eq!(
            store.apply(&k, sum_count(2.0, 1)),
            (None, Some(sum_count(2.0, 1)))
        );
        assert_eq!(
            store.apply(&k, sum_count(3.0, 2)),
            (Some(sum_count(2.0, 1)), Some(sum_count(5.0, 3)))
        );
        store.restore(pack_key(&[Value::Int(2)]), &sum_count(1.0, 1));
        assert_eq!(store.len(), 2);
        // A delta that takes the rows to zero removes the group.
        assert_eq!(
            store.apply(&k, sum_count(-5.0, -3)),
            (Some(sum_count(5.0, 3)), None)
        );
        assert_eq!(store.len(), 1);
    }

    #[test]
    fn removing_groups_keeps_every_other_group_findable() {
        let mut store = GroupStore::default();
        for i in 0..1000 {
            store.apply(&pack_key(&[Value::Int(i)]), sum_count(i as f64, 1));
        }
        // Remove every third group, from the middle and the end.
        for i in (0..1000).step_by(3) {
            let (before, after) =
                store.apply(&pack_key(&[Value::Int(i)]), sum_count(-(i as f64), -1));
            assert_eq!((before, after), (Some(sum_count(i as f64, 1)), None));
        }
        assert_eq!(store.len(), 666);
        for i in 0..1000 {
            let (before, _) = store.apply(&pack_key(&[Value::Int(i)]), sum_count(0.0, 1));
            let expected = (i % 3 != 0).then(|| sum_count(i as f64, 1));
            assert_eq!(before, expected, "group {i}");
        }
    }
}
