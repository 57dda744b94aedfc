//! Aggregate state and its changelog encoding. A changelog record's key
//! says what it holds (a group, a window of a group, or the watermark) in
//! its first byte; its value is a format version byte and, in postcard,
//! the state after the epoch that wrote it and the state before that epoch
//! (the before-image, so a key can be rolled back one epoch when writers
//! committed different epochs). A key the epoch deleted has a value with
//! no state after it; a tombstone (no value) drops a key that was already
//! gone the epoch before. Doubles keep their exact bits (NaN and
//! infinities included), and a record that does not decode stops the start
//! with an error: state is never dropped quietly.

use super::Epoch;
use crate::expr::EvalError;
use crate::plan::aggregate::{AggFunc, AggSpec};
use crate::record::{FieldType, Row, Value};
use differential_dataflow::difference::{IsZero, Semigroup};
use serde::{Deserialize, Serialize};

/// The running result of one group (or one window of one group).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct AggState {
    /// Records folded in; zero means the state is empty.
    pub rows: i64,
    pub accs: Vec<Acc>,
}

/// One aggregate's accumulator. Doubles are held as `Value::Double` for
/// their total order.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum Acc {
    Count(i64),
    SumInt(i64),
    SumDouble(Value),
    Avg(Value, i64),
    Min(Value),
    Max(Value),
}

fn f(v: &Value) -> f64 {
    match v {
        Value::Double(d) => *d,
        Value::Int(i) => *i as f64,
        _ => 0.0,
    }
}

impl IsZero for AggState {
    fn is_zero(&self) -> bool {
        self.rows == 0
    }
}

impl Semigroup for AggState {
    fn plus_equals(&mut self, rhs: &Self) {
        if self.accs.is_empty() {
            self.accs = rhs.accs.clone();
            self.rows += rhs.rows;
            return;
        }
        self.rows += rhs.rows;
        for (a, b) in self.accs.iter_mut().zip(&rhs.accs) {
            match (a, b) {
                (Acc::Count(x), Acc::Count(y)) => *x += y,
                (Acc::SumInt(x), Acc::SumInt(y)) => *x = x.wrapping_add(*y),
                (Acc::SumDouble(x), Acc::SumDouble(y)) => *x = Value::Double(f(x) + f(y)),
                (Acc::Avg(s, n), Acc::Avg(t, m)) => {
                    *s = Value::Double(f(s) + f(t));
                    *n += m;
                }
                (Acc::Min(x), Acc::Min(y)) => {
                    if matches!(x, Value::Null) || (!matches!(y, Value::Null) && y < x) {
                        *x = y.clone();
                    }
                }
                (Acc::Max(x), Acc::Max(y)) => {
                    if matches!(x, Value::Null) || (!matches!(y, Value::Null) && y > x) {
                        *x = y.clone();
                    }
                }
                _ => unreachable!("accumulators of one aggregate line up"),
            }
        }
    }
}

impl AggState {
    /// The state of one record.
    pub fn of(aggs: &[AggSpec], row: &Row) -> Result<AggState, EvalError> {
        let mut accs = Vec::with_capacity(aggs.len());
        for a in aggs {
            let v = match &a.arg {
                Some(e) => e.eval(row)?,
                None => Value::Null,
            };
            let null = matches!(v, Value::Null);
            accs.push(match a.func {
                AggFunc::Count if a.arg.is_none() => Acc::Count(1),
                AggFunc::Count => Acc::Count(!null as i64),
                AggFunc::Sum if a.ty == FieldType::Int => {
                    Acc::SumInt(if let Value::Int(i) = v { i } else { 0 })
                }
                AggFunc::Sum => Acc::SumDouble(Value::Double(f(&v))),
                AggFunc::Avg => Acc::Avg(Value::Double(f(&v)), !null as i64),
                AggFunc::Min => Acc::Min(v),
                AggFunc::Max => Acc::Max(v),
            });
        }
        Ok(AggState { rows: 1, accs })
    }

    /// The aggregates' values, in the order of the plan.
    pub fn finish(&self, out: &mut Row) {
        for acc in &self.accs {
            out.push(match acc {
                Acc::Count(n) | Acc::SumInt(n) => Value::Int(*n),
                Acc::SumDouble(v) => Value::Double(f(v)),
                Acc::Avg(_, 0) => Value::Null,
                Acc::Avg(s, n) => Value::Double(f(s) / *n as f64),
                Acc::Min(v) | Acc::Max(v) => v.clone(),
            });
        }
    }
}

/// What a worker saw of one source partition: (source, partition, largest
/// event time so far, the epoch it last had records). Source `u32::MAX`
/// carries a restored watermark instead.
pub type Seen = (u32, i32, i64, Epoch);

/// The event time of a [`Seen`] that says a partition had records waiting
/// at the end of the epoch (see `dataflow/source.rs`), with no event time
/// of its own.
pub const WAITING: i64 = i64::MIN;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WatermarkSnapshot {
    pub watermark: i64,
    pub partitions: Vec<Seen>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Window {
    pub end: i64,
    pub state: AggState,
    pub fired: bool,
}

const GROUP: u8 = 0;
const WINDOW: u8 = 1;
const WATERMARK: u8 = 2;
/// The version of the value encoding; a change to the state types that
/// postcard cannot read back must bump it.
pub const VERSION: u8 = 2;

/// The changelog key of the watermark and partition table.
pub const WATERMARK_KEY: &[u8] = &[WATERMARK];

/// One restored changelog entry.
#[derive(Debug, Clone, PartialEq)]
pub enum StateEntry {
    Group(Vec<Value>, AggState),
    /// A group as a local snapshot keeps it: its key and state packed.
    Packed(super::store::Packed, super::store::Packed),
    Window(Vec<Value>, i64, Window),
    Watermark(WatermarkSnapshot),
}

#[derive(Debug, thiserror::Error, PartialEq)]
#[error("{0}")]
pub struct CodecError(String);

/// One allocation per record: changelog records of an epoch are held
/// until it commits, a few hundred thousand of them at a time.
fn tagged<T: Serialize>(tag: u8, t: &T) -> Vec<u8> {
    let mut out = Vec::with_capacity(24);
    out.push(tag);
    postcard::to_extend(t, out).expect("state types serialize")
}

pub fn group_key_bytes(key: &[Value]) -> Vec<u8> {
    tagged(GROUP, &key)
}

pub fn window_key_bytes(key: &[Value], start: i64) -> Vec<u8> {
    tagged(WINDOW, &(key, start))
}

/// A changelog value: the state after the epoch and before it.
pub fn change_bytes<T: Serialize>(after: Option<&T>, before: Option<&T>) -> Vec<u8> {
    tagged(VERSION, &(after, before))
}

/// What one changelog record says of its key.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    /// The key's state after the epoch; None: the epoch deleted it.
    pub after: Option<StateEntry>,
    /// The key's state before the epoch; None: it had none.
    pub before: Option<StateEntry>,
}

fn exact<'a, T: Deserialize<'a>>(bytes: &'a [u8], what: &str) -> Result<T, CodecError> {
    match postcard::take_from_bytes::<T>(bytes) {
        Ok((t, [])) => Ok(t),
        Ok((_, rest)) => Err(CodecError(format!(
            "{} bytes left over after the {what}",
            rest.len()
        ))),
        Err(e) => Err(CodecError(format!("the {what} does not decode: {e}"))),
    }
}

/// Decodes one changelog record, strictly.
pub fn decode(key: &[u8], value: &[u8]) -> Result<Change, CodecError> {
    let body = match value.split_first() {
        Some((&VERSION, body)) => body,
        Some((v, _)) => {
            return Err(CodecError(format!(
                "value format {v} is not the one this rill writes ({VERSION})"
            )))
        }
        None => return Err(CodecError("empty value".into())),
    };
    fn both<'a, T: Deserialize<'a>>(
        body: &'a [u8],
        what: &str,
        entry: impl Fn(T) -> StateEntry,
    ) -> Result<Change, CodecError> {
        let (after, before): (Option<T>, Option<T>) = exact(body, what)?;
        Ok(Change {
            after: after.map(&entry),
            before: before.map(&entry),
        })
    }
    match key.split_first() {
        Some((&GROUP, k)) => {
            let key: Vec<Value> = exact(k, "group key")?;
            both(body, "group state", |s| StateEntry::Group(key.clone(), s))
        }
        Some((&WINDOW, k)) => {
            let (key, start): (Vec<Value>, i64) = exact(k, "window key")?;
            both(body, "window", |w| {
                StateEntry::Window(key.clone(), start, w)
            })
        }
        Some((&WATERMARK, [])) => both(body, "watermark", StateEntry::Watermark),
        _ => Err(CodecError("the key is not one rill writes".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_add_up() {
        let mut a = AggState {
            rows: 1,
            accs: vec![
                Acc::Count(1),
                Acc::SumDouble(Value::Double(2.0)),
                Acc::Min(Value::Int(5)),
                Acc::Avg(Value::Double(2.0), 1),
            ],
        };
        let b = AggState {
            rows: 1,
            accs: vec![
                Acc::Count(1),
                Acc::SumDouble(Value::Double(3.5)),
                Acc::Min(Value::Int(3)),
                Acc::Avg(Value::Double(4.0), 1),
            ],
        };
        a.plus_equals(&b);
        let mut row = Vec::new();
        a.finish(&mut row);
        assert_eq!(
            row,
            vec![
                Value::Int(2),
                Value::Double(5.5),
                Value::Int(3),
                Value::Double(3.0)
            ]
        );
    }

    #[test]
    fn doubles_keep_their_bits_nan_and_infinity_included() {
        for d in [
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
            0.1 + 0.2,
            -0.0,
            1e-308,
        ] {
            let key = vec![Value::Double(d), Value::Str("a|b".into()), Value::Null];
            let state = AggState {
                rows: 3,
                accs: vec![
                    Acc::SumDouble(Value::Double(d)),
                    Acc::Avg(Value::Double(d), 2),
                ],
            };
            let got = decode(&group_key_bytes(&key), &change_bytes(Some(&state), None))
                .unwrap()
                .after
                .unwrap();
            let StateEntry::Group(k, s) = got else {
                panic!("{got:?}")
            };
            let (Value::Double(a), Acc::SumDouble(Value::Double(b))) = (&k[0], &s.accs[0]) else {
                panic!()
            };
            assert_eq!(a.to_bits(), d.to_bits());
            assert_eq!(b.to_bits(), d.to_bits());
            assert_eq!(k[1..], key[1..]);
        }
    }

    #[test]
    fn windows_and_the_watermark_round_trip() {
        let w = Window {
            end: 300,
            state: AggState {
                rows: 1,
                accs: vec![Acc::Count(1)],
            },
            fired: true,
        };
        let key = vec![Value::Int(7)];
        let open = Window {
            fired: false,
            ..w.clone()
        };
        assert_eq!(
            decode(
                &window_key_bytes(&key, 0),
                &change_bytes(Some(&w), Some(&open))
            )
            .unwrap(),
            Change {
                after: Some(StateEntry::Window(key.clone(), 0, w.clone())),
                before: Some(StateEntry::Window(key.clone(), 0, open)),
            }
        );
        // Deleted by the epoch: a value with the state before and none after.
        assert_eq!(
            decode(&window_key_bytes(&key, 0), &change_bytes(None, Some(&w))).unwrap(),
            Change {
                after: None,
                before: Some(StateEntry::Window(key, 0, w)),
            }
        );
        let snap = WatermarkSnapshot {
            watermark: -5,
            partitions: vec![(0, 1, 10, 4)],
        };
        assert_eq!(
            decode(WATERMARK_KEY, &change_bytes(Some(&snap), None)).unwrap(),
            Change {
                after: Some(StateEntry::Watermark(snap)),
                before: None,
            }
        );
    }

    #[test]
    fn a_record_that_is_not_rill_state_is_an_error_that_says_why() {
        let state = change_bytes(
            Some(&AggState {
                rows: 1,
                accs: vec![Acc::Count(1)],
            }),
            None,
        );
        let key = group_key_bytes(&[Value::Int(1)]);
        // Old JSON changelogs, another version, trailing bytes, a bad key.
        let json = decode(br#"[1]"#, br#"{"rows":1}"#).unwrap_err();
        assert_eq!(
            json.to_string(),
            "value format 123 is not the one this rill writes (2)"
        );
        let mut long = state.clone();
        long.push(0);
        assert_eq!(
            decode(&key, &long).unwrap_err().to_string(),
            "1 bytes left over after the group state"
        );
        assert_eq!(
            decode(&[9, 1], &state).unwrap_err().to_string(),
            "the key is not one rill writes"
        );
        assert!(decode(&key, &[VERSION, 0xff])
            .unwrap_err()
            .to_string()
            .starts_with("the group state does not decode"));
    }
}
