//! Rows as they travel through a job: typed by a schema resolved at plan
//! time and accessed by field index, never by name.

use compact_str::CompactString;
use std::fmt;
use std::sync::Arc;

/// The type of one field, as the plan sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum FieldType {
    Bool,
    Int,
    Double,
    String,
    Bytes,
    Null,
}

impl FieldType {
    pub fn name(self) -> &'static str {
        match self {
            FieldType::Bool => "bool",
            FieldType::Int => "int",
            FieldType::Double => "double",
            FieldType::String => "string",
            FieldType::Bytes => "bytes",
            FieldType::Null => "null",
        }
    }
}

/// One field of a row schema.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    pub nullable: bool,
    /// The Avro type the field had in its source schema (for example
    /// `int` or `float` behind [`FieldType::Int`]/[`FieldType::Double`]),
    /// kept so a sink writes the same schema it read.
    pub avro: AvroPrimitive,
    /// Symbols when the field was an Avro enum; the row holds the symbol.
    pub symbols: Option<Arc<[String]>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AvroPrimitive {
    Boolean,
    Int,
    Long,
    Float,
    Double,
    String,
    Bytes,
    Null,
}

impl AvroPrimitive {
    pub fn for_type(ty: FieldType) -> Self {
        match ty {
            FieldType::Bool => AvroPrimitive::Boolean,
            FieldType::Int => AvroPrimitive::Long,
            FieldType::Double => AvroPrimitive::Double,
            FieldType::String => AvroPrimitive::String,
            FieldType::Bytes => AvroPrimitive::Bytes,
            FieldType::Null => AvroPrimitive::Null,
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            AvroPrimitive::Boolean => "boolean",
            AvroPrimitive::Int => "int",
            AvroPrimitive::Long => "long",
            AvroPrimitive::Float => "float",
            AvroPrimitive::Double => "double",
            AvroPrimitive::String => "string",
            AvroPrimitive::Bytes => "bytes",
            AvroPrimitive::Null => "null",
        }
    }
    pub fn field_type(self) -> FieldType {
        match self {
            AvroPrimitive::Boolean => FieldType::Bool,
            AvroPrimitive::Int | AvroPrimitive::Long => FieldType::Int,
            AvroPrimitive::Float | AvroPrimitive::Double => FieldType::Double,
            AvroPrimitive::String => FieldType::String,
            AvroPrimitive::Bytes => FieldType::Bytes,
            AvroPrimitive::Null => FieldType::Null,
        }
    }
}

impl Field {
    pub fn new(name: impl Into<String>, ty: FieldType) -> Self {
        Field {
            name: name.into(),
            ty,
            nullable: false,
            avro: AvroPrimitive::for_type(ty),
            symbols: None,
        }
    }
}

/// The schema of the rows on one edge of the job graph.
#[derive(Debug, Clone, PartialEq)]
pub struct RowSchema {
    /// Record name (Avro full name) used when a sink writes this schema.
    pub name: String,
    pub fields: Vec<Field>,
}

impl RowSchema {
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }
}

/// One value of a row. Strings up to 24 bytes live inline.
///
/// Values are totally ordered and hashable (doubles by their bits, with
/// `f64::total_cmp`), so they can be keys of differential collections.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
pub enum Value {
    #[default]
    Null,
    Bool(bool),
    Int(i64),
    Double(f64),
    Str(CompactString),
    Bytes(Arc<[u8]>),
}

impl Value {
    fn rank(&self) -> u8 {
        match self {
            Value::Null => 0,
            Value::Bool(_) => 1,
            Value::Int(_) => 2,
            Value::Double(_) => 3,
            Value::Str(_) => 4,
            Value::Bytes(_) => 5,
        }
    }

    pub fn type_name(&self) -> &'static str {
        match self {
            Value::Null => "null",
            Value::Bool(_) => "bool",
            Value::Int(_) => "int",
            Value::Double(_) => "double",
            Value::Str(_) => "string",
            Value::Bytes(_) => "bytes",
        }
    }
}

impl Ord for Value {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        match (self, other) {
            (Value::Bool(a), Value::Bool(b)) => a.cmp(b),
            (Value::Int(a), Value::Int(b)) => a.cmp(b),
            (Value::Double(a), Value::Double(b)) => a.total_cmp(b),
            (Value::Str(a), Value::Str(b)) => a.cmp(b),
            (Value::Bytes(a), Value::Bytes(b)) => a.cmp(b),
            (a, b) => a.rank().cmp(&b.rank()),
        }
    }
}

impl PartialOrd for Value {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl PartialEq for Value {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}

impl Eq for Value {}

impl std::hash::Hash for Value {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.rank().hash(state);
        match self {
            Value::Null => {}
            Value::Bool(b) => b.hash(state),
            Value::Int(i) => i.hash(state),
            Value::Double(d) => d.to_bits().hash(state),
            Value::Str(s) => s.hash(state),
            Value::Bytes(b) => b.hash(state),
        }
    }
}

impl Value {
    /// The value as text, for keys and file names: strings as they are,
    /// other values as JSON writes them.
    pub fn to_text(&self, out: &mut String) {
        match self {
            Value::Str(s) => out.push_str(s),
            Value::Bytes(b) => out.push_str(&String::from_utf8_lossy(b)),
            other => other.write_json(out),
        }
    }

    /// The value as JSON text; doubles that JSON cannot hold (NaN and the
    /// infinities) are null.
    pub fn write_json(&self, out: &mut String) {
        use std::fmt::Write;
        match self {
            Value::Null => out.push_str("null"),
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Value::Double(d) if d.is_finite() => {
                let _ = write!(out, "{d:?}");
            }
            Value::Double(_) => out.push_str("null"),
            Value::Str(s) => write_json_str(s, out),
            Value::Bytes(b) => write_json_str(&String::from_utf8_lossy(b), out),
        }
    }
}

/// `s` as a JSON string, quoted and escaped.
pub fn write_json_str(s: &str, out: &mut String) {
    use std::fmt::Write;
    out.push('"');
    // Runs that need no escape are copied whole. Every byte that does is
    // ASCII, so a run always ends on a character boundary.
    let mut run = 0;
    for (i, b) in s.bytes().enumerate() {
        let escaped = match b {
            b'"' => "\\\"",
            b'\\' => "\\\\",
            b'\n' => "\\n",
            b'\r' => "\\r",
            b'\t' => "\\t",
            b if b < 0x20 => "",
            _ => continue,
        };
        out.push_str(&s[run..i]);
        if escaped.is_empty() {
            let _ = write!(out, "\\u{:04x}", b);
        } else {
            out.push_str(escaped);
        }
        run = i + 1;
    }
    out.push_str(&s[run..]);
    out.push('"');
}

pub type Row = Vec<Value>;

/// Fields a decoder leaves room for beyond its schema's: a map appends its
/// new fields in place, and without room every record would move to a
/// larger allocation there.
pub const ROW_ROOM: usize = 4;

/// Rows at most a thread keeps for reuse: enough for a few batches, about
/// a megabyte.
const SPARE_ROWS_MAX: usize = 4096;

thread_local! {
    /// Rows whose records were written, for the next decode on the same
    /// worker. A row is a few hundred bytes, too large for glibc's fast
    /// bins, so allocating and freeing one per record takes its slow path
    /// (a tenth of a worker's time on the bank split).
    static SPARE_ROWS: std::cell::RefCell<Vec<Row>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// An empty row with room for `width` fields and appended ones.
pub fn empty_row(width: usize) -> Row {
    let spare = SPARE_ROWS.with(|s| s.borrow_mut().pop());
    match spare {
        Some(row) if row.capacity() >= width + ROW_ROOM => row,
        _ => Vec::with_capacity(width + ROW_ROOM),
    }
}

/// A row of `width` nulls with room for appended fields.
pub fn null_row(width: usize) -> Row {
    let mut row = empty_row(width);
    row.resize(width, Value::Null);
    row
}

/// Gives a row that is done with back to its thread's spares.
pub fn reuse_row(mut row: Row) {
    row.clear();
    if row.capacity() == 0 {
        return;
    }
    SPARE_ROWS.with(|s| {
        let mut spare = s.borrow_mut();
        if spare.len() < SPARE_ROWS_MAX {
            spare.push(row);
        }
    });
}

/// Where a record came from, so a failure can name it.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    Hash,
    Default,
    serde::Serialize,
    serde::Deserialize,
)]
pub struct Origin {
    /// Index of the source in the plan.
    pub source: u32,
    pub partition: i32,
    pub offset: i64,
}

/// A record in flight: its Kafka key, its decoded row, its origin.
#[derive(
    Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Record {
    pub key: Option<bytes::Bytes>,
    pub row: Row,
    /// An upsert stream's delete: the key's value is gone (a null value on
    /// a compacted topic). `row` still holds the last value.
    pub tombstone: bool,
    pub timestamp_ms: i64,
    pub origin: Origin,
}

/// Bytes as they arrive from a source, before decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct RawRecord {
    pub key: Option<bytes::Bytes>,
    /// A slice of a chunk the source copies many values into.
    pub value: Option<bytes::Bytes>,
    pub timestamp_ms: i64,
    pub origin: Origin,
}

/// Copies of many small values in one allocation: each value is a slice
/// of a shared chunk, freed with its last slice. A value allocated and
/// freed per record takes glibc's slow paths once its per-thread cache
/// of seven is used up, which a worker reading batches of thousands
/// always does. A slice kept long (a record a source holds back) keeps
/// its whole chunk.
#[derive(Default)]
pub struct ByteChunks {
    chunk: bytes::BytesMut,
}

const BYTE_CHUNK: usize = 64 * 1024;

impl ByteChunks {
    pub fn copy(&mut self, value: &[u8]) -> bytes::Bytes {
        if self.chunk.capacity() < value.len() {
            self.chunk = bytes::BytesMut::with_capacity(BYTE_CHUNK.max(value.len()));
        }
        self.chunk.extend_from_slice(value);
        self.chunk.split().freeze()
    }
}

/// Where a source copies the keys and values it reads. Keys and values
/// have chunks of their own: a value is dropped on the worker once
/// decoded, a key mostly on the writer's thread with its output record,
/// so the two threads do not count slices of one chunk.
#[derive(Default)]
pub struct RawCopies {
    pub keys: ByteChunks,
    pub values: ByteChunks,
}

/// Writes a key as the seed's console output shows it.
pub struct KeyDisplay<'a>(pub Option<&'a [u8]>);

impl fmt::Display for KeyDisplay<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            None => f.write_str("null"),
            Some(bytes) => match std::str::from_utf8(bytes) {
                Ok(s) => f.write_str(s),
                Err(_) => {
                    for b in bytes {
                        write!(f, "{b:02x}")?;
                    }
                    Ok(())
                }
            },
        }
    }
}

/// An encoded record bound for a sink. No value is a tombstone.
#[derive(Debug, Clone)]
pub struct OutRecord {
    pub key: Option<bytes::Bytes>,
    pub value: Option<bytes::Bytes>,
    pub partition: Option<i32>,
    /// For files rolled per window: the window's bounds.
    pub window: Option<(i64, i64)>,
    /// For Parquet files, which are written by column: the row itself.
    pub row: Option<Row>,
}

/// A record the job could not process, with where it came from and why.
#[derive(Debug, Clone, PartialEq)]
pub struct DeadLetter {
    pub key: Option<bytes::Bytes>,
    pub value: Option<Vec<u8>>,
    pub reason: String,
    pub topic: Arc<str>,
    pub partition: i32,
    pub offset: i64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_json_string_is_escaped_as_serde_json_escapes_it() {
        for s in [
            "",
            "plain",
            "say \"hi\"\\now",
            "tab\tnew\nline\rcr",
            "\u{1}\u{1f} control",
            "ünïcödé ✓ 🚀 and \"quotes\"",
            "\\",
            "\u{7f}",
        ] {
            let mut out = String::new();
            write_json_str(s, &mut out);
            assert_eq!(out, serde_json::to_string(s).unwrap(), "{s:?}");
        }
    }
}
