//! Avro binary encoding, specialised per schema: a writer schema is compiled
//! once into a list of field steps, then rows are read straight from bytes
//! without a generic value tree.

use crate::record::{AvroPrimitive, Field, FieldType, Row, RowSchema, Value};
use apache_avro::schema::{RecordSchema, Schema};
use compact_str::CompactString;
use std::sync::Arc;

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum AvroError {
    #[error("avro schema is not valid: {0}")]
    Parse(String),
    #[error("avro schema must be a record at the top level, found {0}")]
    NotRecord(String),
    #[error("field `{field}` has type {ty}, which rows do not support yet (use primitives, enums or a union with null)")]
    Unsupported { field: String, ty: String },
    #[error("writer schema cannot be read as the job's schema: {0}")]
    Incompatible(String),
    #[error("truncated avro data: {0}")]
    Truncated(&'static str),
    #[error("invalid avro data: {0}")]
    Invalid(String),
    #[error("magic byte {0} is not 0: not in the confluent avro wire format")]
    NotWireFormat(u8),
}

/// The wire type of one writer field (or one union branch).
#[derive(Debug, Clone, PartialEq)]
enum Wire {
    Null,
    Boolean,
    Int,
    Long,
    Float,
    Double,
    Bytes,
    String,
    Enum(Arc<[String]>),
    Fixed(usize),
}

#[derive(Debug, Clone, PartialEq)]
enum WireField {
    Plain(Wire),
    Union(Vec<Wire>),
}

fn wire_of(schema: &Schema, field: &str) -> Result<Wire, AvroError> {
    Ok(match schema {
        Schema::Null => Wire::Null,
        Schema::Boolean => Wire::Boolean,
        Schema::Int | Schema::Date | Schema::TimeMillis => Wire::Int,
        Schema::Long
        | Schema::TimestampMillis
        | Schema::TimestampMicros
        | Schema::TimeMicros
        | Schema::LocalTimestampMillis
        | Schema::LocalTimestampMicros => Wire::Long,
        Schema::Float => Wire::Float,
        Schema::Double => Wire::Double,
        Schema::Bytes => Wire::Bytes,
        Schema::String | Schema::Uuid => Wire::String,
        Schema::Enum(e) => Wire::Enum(e.symbols.clone().into()),
        Schema::Fixed(f) => Wire::Fixed(f.size),
        other => {
            return Err(AvroError::Unsupported {
                field: field.to_string(),
                ty: format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
            })
        }
    })
}

fn wire_field(schema: &Schema, field: &str) -> Result<WireField, AvroError> {
    match schema {
        Schema::Union(u) => Ok(WireField::Union(
            u.variants()
                .iter()
                .map(|v| wire_of(v, field))
                .collect::<Result<_, _>>()?,
        )),
        other => Ok(WireField::Plain(wire_of(other, field)?)),
    }
}

fn primitive_of(wire: &Wire) -> AvroPrimitive {
    match wire {
        Wire::Null => AvroPrimitive::Null,
        Wire::Boolean => AvroPrimitive::Boolean,
        Wire::Int => AvroPrimitive::Int,
        Wire::Long => AvroPrimitive::Long,
        Wire::Float => AvroPrimitive::Float,
        Wire::Double => AvroPrimitive::Double,
        Wire::Bytes | Wire::Fixed(_) => AvroPrimitive::Bytes,
        Wire::String | Wire::Enum(_) => AvroPrimitive::String,
    }
}

pub fn parse_schema(text: &str) -> Result<Schema, AvroError> {
    Schema::parse_str(text).map_err(|e| AvroError::Parse(e.to_string()))
}

fn record_of(schema: &Schema) -> Result<&RecordSchema, AvroError> {
    match schema {
        Schema::Record(r) => Ok(r),
        other => Err(AvroError::NotRecord(
            format!("{:?}", apache_avro::schema::SchemaKind::from(other)).to_lowercase(),
        )),
    }
}

/// The row schema a record schema decodes into.
pub fn row_schema(schema: &Schema) -> Result<RowSchema, AvroError> {
    let record = record_of(schema)?;
    let mut fields = Vec::with_capacity(record.fields.len());
    for f in &record.fields {
        let (wire, nullable) = match wire_field(&f.schema, &f.name)? {
            WireField::Plain(w) => (w, false),
            WireField::Union(branches) => {
                let non_null: Vec<&Wire> = branches.iter().filter(|w| **w != Wire::Null).collect();
                if non_null.len() != 1 {
                    return Err(AvroError::Unsupported {
                        field: f.name.clone(),
                        ty: "union of several non-null types".into(),
                    });
                }
                (non_null[0].clone(), true)
            }
        };
        let avro = primitive_of(&wire);
        let symbols = match &wire {
            Wire::Enum(s) => Some(s.clone()),
            _ => None,
        };
        fields.push(Field {
            name: f.name.clone(),
            ty: avro.field_type(),
            nullable,
            avro,
            symbols,
        });
    }
    Ok(RowSchema {
        name: record.name.fullname(None),
        fields,
    })
}

/// The Avro schema (JSON text) a sink registers for rows of this schema.
pub fn schema_json(rows: &RowSchema) -> String {
    let (namespace, name) = match rows.name.rsplit_once('.') {
        Some((ns, n)) => (Some(ns), n),
        None => (None, rows.name.as_str()),
    };
    let fields: Vec<serde_json::Value> = rows
        .fields
        .iter()
        .map(|f| {
            let base = match &f.symbols {
                Some(symbols) => serde_json::json!({
                    "type": "enum",
                    "name": format!("{}_{}", name, f.name),
                    "symbols": symbols.as_ref(),
                }),
                None => serde_json::Value::String(f.avro.name().to_string()),
            };
            if f.nullable {
                serde_json::json!({"name": f.name, "type": ["null", base], "default": null})
            } else {
                serde_json::json!({"name": f.name, "type": base})
            }
        })
        .collect();
    let mut doc = serde_json::json!({"type": "record", "name": name, "fields": fields});
    if let Some(ns) = namespace {
        doc["namespace"] = serde_json::Value::String(ns.to_string());
    }
    doc.to_string()
}

/// One writer field: read as `want` into its slot of the row.
#[derive(Debug, Clone)]
struct Fill {
    wire: WireField,
    slot: Slot,
    want: FieldType,
}

/// Reads records written with one writer schema into rows of the job's
/// reader schema, following Avro's resolution rules for the supported types.
#[derive(Debug, Clone)]
pub struct Decoder {
    steps: Vec<Fill>,
    width: usize,
    /// Reader fields the writer lacks, with their defaults.
    defaults: Vec<(usize, Value)>,
    /// The writer's fields are the reader's, in the same order (the usual
    /// case): values are pushed as read, with no row of nulls made first.
    in_order: bool,
}

fn promotes(wire: &Wire, want: FieldType) -> bool {
    matches!(
        (wire, want),
        (Wire::Null, _)
            | (Wire::Boolean, FieldType::Bool)
            | (Wire::Int | Wire::Long, FieldType::Int)
            | (
                Wire::Int | Wire::Long | Wire::Float | Wire::Double,
                FieldType::Double
            )
            | (Wire::String | Wire::Enum(_), FieldType::String)
            | (Wire::Bytes | Wire::Fixed(_), FieldType::Bytes)
            | (Wire::String, FieldType::Bytes)
            | (Wire::Bytes, FieldType::String)
    )
}

fn default_value(v: &serde_json::Value, f: &Field) -> Option<Value> {
    Some(match (v, f.ty) {
        (serde_json::Value::Null, _) => Value::Null,
        (serde_json::Value::Bool(b), FieldType::Bool) => Value::Bool(*b),
        (serde_json::Value::Number(n), FieldType::Int) => Value::Int(n.as_i64()?),
        (serde_json::Value::Number(n), FieldType::Double) => Value::Double(n.as_f64()?),
        (serde_json::Value::String(s), FieldType::String) => Value::Str(s.into()),
        (serde_json::Value::String(s), FieldType::Bytes) => Value::Bytes(s.as_bytes().into()),
        _ => return None,
    })
}

impl Decoder {
    /// Compiles the steps that read `writer` records into `reader` rows.
    pub fn new(writer: &Schema, reader: &Schema, rows: &RowSchema) -> Result<Self, AvroError> {
        let wrec = record_of(writer)?;
        let rrec = record_of(reader)?;
        let mut steps = Vec::with_capacity(wrec.fields.len());
        let mut seen = vec![false; rows.fields.len()];
        for wf in &wrec.fields {
            let wire = wire_field(&wf.schema, &wf.name)?;
            let target = rows.index_of(&wf.name).or_else(|| {
                rrec.fields.iter().find_map(|rf| {
                    rf.aliases
                        .as_ref()?
                        .iter()
                        .any(|a| a == &wf.name)
                        .then(|| rows.index_of(&rf.name))?
                })
            });
            let want = match target {
                Some(i) => {
                    seen[i] = true;
                    let field = &rows.fields[i];
                    let ok = match &wire {
                        WireField::Plain(w) => {
                            promotes(w, field.ty) && (*w != Wire::Null || field.nullable)
                        }
                        WireField::Union(bs) => bs
                            .iter()
                            .all(|w| promotes(w, field.ty) && (*w != Wire::Null || field.nullable)),
                    };
                    if !ok {
                        return Err(AvroError::Incompatible(format!(
                            "field `{}` is written as {:?} but read as {}{}",
                            wf.name,
                            wire,
                            field.ty.name(),
                            if field.nullable { " or null" } else { "" }
                        )));
                    }
                    field.ty
                }
                None => FieldType::Null,
            };
            steps.push((wire, target, want));
        }
        let mut defaults = Vec::new();
        for (i, field) in rows.fields.iter().enumerate() {
            if seen[i] {
                continue;
            }
            let rf = &rrec.fields[i];
            match rf.default.as_ref().and_then(|d| default_value(d, field)) {
                Some(v) => defaults.push((i, v)),
                None => {
                    return Err(AvroError::Incompatible(format!(
                        "field `{}` is missing from the writer schema and has no default",
                        field.name
                    )))
                }
            }
        }
        let in_order = defaults.is_empty()
            && steps.len() == rows.fields.len()
            && steps
                .iter()
                .enumerate()
                .all(|(i, (_, target, _))| *target == Some(i));
        let steps = steps
            .into_iter()
            .map(|(wire, target, want)| {
                let slot = match target {
                    _ if in_order => Slot::Next,
                    Some(i) => Slot::At(i),
                    None => Slot::Skip,
                };
                Fill { wire, slot, want }
            })
            .collect();
        Ok(Decoder {
            steps,
            width: rows.fields.len(),
            defaults,
            in_order,
        })
    }

    /// Decodes one Avro datum (without any wire-format header).
    pub fn decode(&self, mut buf: &[u8]) -> Result<Row, AvroError> {
        let mut row = if self.in_order {
            crate::record::empty_row(self.width)
        } else {
            crate::record::null_row(self.width)
        };
        for Fill { wire, slot, want } in &self.steps {
            let wire = match wire {
                WireField::Plain(w) => w,
                WireField::Union(branches) => {
                    let b = read_long(&mut buf)?;
                    branches
                        .get(usize::try_from(b).unwrap_or(usize::MAX))
                        .ok_or_else(|| {
                            AvroError::Invalid(format!("union branch {b} out of range"))
                        })?
                }
            };
            read_wire(&mut buf, wire, *want, *slot, &mut row)?;
        }
        for (i, v) in &self.defaults {
            row[*i] = v.clone();
        }
        if !buf.is_empty() {
            return Err(AvroError::Invalid(format!(
                "{} bytes left after the record",
                buf.len()
            )));
        }
        Ok(row)
    }
}

/// Where a value read goes in the row.
#[derive(Debug, Clone, Copy)]
enum Slot {
    /// Pushed: the writer's fields are the reader's, in order.
    Next,
    At(usize),
    /// Read past: the reader has no such field.
    Skip,
}

/// Reads one value of `wire` as the reader's type `want` and puts it in
/// its slot. Each value is built once, in place: a value built, returned,
/// then converted and moved cost more than reading it (its tag sits in
/// its last byte, and copying a value written piece by piece stalls the
/// load on the stores).
#[inline(always)]
fn read_wire(
    buf: &mut &[u8],
    wire: &Wire,
    want: FieldType,
    slot: Slot,
    row: &mut Row,
) -> Result<(), AvroError> {
    #[inline(always)]
    fn put(row: &mut Row, slot: Slot, v: Value) {
        match slot {
            Slot::Next => row.push(v),
            Slot::At(i) => row[i] = v,
            Slot::Skip => {}
        }
    }
    match wire {
        Wire::Null => put(row, slot, Value::Null),
        Wire::Boolean => {
            let Some((b, rest)) = buf.split_first() else {
                return Err(AvroError::Truncated("boolean"));
            };
            *buf = rest;
            put(row, slot, Value::Bool(*b != 0))
        }
        Wire::Int | Wire::Long => {
            let i = read_long(buf)?;
            if want == FieldType::Double {
                put(row, slot, Value::Double(i as f64))
            } else {
                put(row, slot, Value::Int(i))
            }
        }
        Wire::Float => {
            let bytes = take(buf, 4, "float")?;
            let d = f32::from_le_bytes(bytes.try_into().unwrap()) as f64;
            put(row, slot, Value::Double(d))
        }
        Wire::Double => {
            let bytes = take(buf, 8, "double")?;
            let d = f64::from_le_bytes(bytes.try_into().unwrap());
            put(row, slot, Value::Double(d))
        }
        Wire::String => {
            let len = read_len(buf)?;
            let bytes = take(buf, len, "string")?;
            if matches!(slot, Slot::Skip) {
                return Ok(());
            }
            let s = std::str::from_utf8(bytes)
                .map_err(|_| AvroError::Invalid("string is not utf-8".into()))?;
            if want == FieldType::Bytes {
                put(row, slot, Value::Bytes(s.as_bytes().into()))
            } else {
                put(row, slot, Value::Str(CompactString::from(s)))
            }
        }
        Wire::Bytes | Wire::Fixed(_) => {
            let bytes = match wire {
                Wire::Fixed(n) => take(buf, *n, "fixed")?,
                _ => {
                    let len = read_len(buf)?;
                    take(buf, len, "bytes")?
                }
            };
            if want == FieldType::String {
                let s = String::from_utf8_lossy(bytes);
                put(row, slot, Value::Str(s.as_ref().into()))
            } else {
                put(row, slot, Value::Bytes(bytes.into()))
            }
        }
        Wire::Enum(symbols) => {
            let i = read_long(buf)?;
            let s = symbols
                .get(usize::try_from(i).unwrap_or(usize::MAX))
                .ok_or_else(|| AvroError::Invalid(format!("enum index {i} out of range")))?;
            put(row, slot, Value::Str(CompactString::from(s.as_str())))
        }
    }
    Ok(())
}

fn take<'a>(buf: &mut &'a [u8], n: usize, what: &'static str) -> Result<&'a [u8], AvroError> {
    if buf.len() < n {
        return Err(AvroError::Truncated(what));
    }
    let (head, rest) = buf.split_at(n);
    *buf = rest;
    Ok(head)
}

fn read_len(buf: &mut &[u8]) -> Result<usize, AvroError> {
    let n = read_long(buf)?;
    usize::try_from(n).map_err(|_| AvroError::Invalid(format!("negative length {n}")))
}

/// A zig-zag varint. Lengths, union branches and small numbers take one
/// byte, read here inline; longer ones go the loop's way.
#[inline(always)]
pub fn read_long(buf: &mut &[u8]) -> Result<i64, AvroError> {
    match buf.first() {
        Some(&b) if b < 0x80 => {
            *buf = &buf[1..];
            let v = b as u64;
            Ok(((v >> 1) as i64) ^ -((v & 1) as i64))
        }
        _ => read_long_slow(buf),
    }
}

#[inline(never)]
fn read_long_slow(buf: &mut &[u8]) -> Result<i64, AvroError> {
    let mut value: u64 = 0;
    let mut shift = 0;
    loop {
        let Some((b, rest)) = buf.split_first() else {
            return Err(AvroError::Truncated("varint"));
        };
        *buf = rest;
        value |= ((b & 0x7f) as u64) << shift;
        if b & 0x80 == 0 {
            break;
        }
        shift += 7;
        if shift > 63 {
            return Err(AvroError::Invalid("varint longer than 10 bytes".into()));
        }
    }
    Ok(((value >> 1) as i64) ^ -((value & 1) as i64))
}

#[inline]
pub fn write_long(out: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        out.push((z as u8) | 0x80);
        z >>= 7;
    }
    out.push(z as u8);
}

/// Writes rows of one schema as Avro.
#[derive(Debug, Clone)]
pub struct Encoder {
    fields: Vec<Field>,
}

impl Encoder {
    pub fn new(rows: &RowSchema) -> Self {
        Encoder {
            fields: rows.fields.clone(),
        }
    }

    pub fn encode(&self, row: &Row, out: &mut Vec<u8>) -> Result<(), AvroError> {
        for (f, v) in self.fields.iter().zip(row) {
            if f.nullable {
                // Unions are written as ["null", T].
                if matches!(v, Value::Null) {
                    write_long(out, 0);
                    continue;
                }
                write_long(out, 1);
            }
            match (f.avro, v) {
                (_, Value::Null) if f.avro == AvroPrimitive::Null => {}
                (AvroPrimitive::Boolean, Value::Bool(b)) => out.push(*b as u8),
                (AvroPrimitive::Int | AvroPrimitive::Long, Value::Int(i)) => write_long(out, *i),
                (AvroPrimitive::Float, Value::Double(d)) => {
                    out.extend_from_slice(&(*d as f32).to_le_bytes())
                }
                (AvroPrimitive::Float, Value::Int(i)) => {
                    out.extend_from_slice(&(*i as f32).to_le_bytes())
                }
                (AvroPrimitive::Double, Value::Double(d)) => {
                    out.extend_from_slice(&d.to_le_bytes())
                }
                (AvroPrimitive::Double, Value::Int(i)) => {
                    out.extend_from_slice(&(*i as f64).to_le_bytes())
                }
                (AvroPrimitive::String, Value::Str(s)) => match &f.symbols {
                    Some(symbols) => {
                        let i = symbols
                            .iter()
                            .position(|x| x == s.as_str())
                            .ok_or_else(|| {
                                AvroError::Invalid(format!(
                                    "`{s}` is not a symbol of enum field `{}`",
                                    f.name
                                ))
                            })?;
                        write_long(out, i as i64);
                    }
                    None => {
                        write_long(out, s.len() as i64);
                        out.extend_from_slice(s.as_bytes());
                    }
                },
                (AvroPrimitive::Bytes, Value::Bytes(b)) => {
                    write_long(out, b.len() as i64);
                    out.extend_from_slice(b);
                }
                (_, v) => {
                    return Err(AvroError::Invalid(format!(
                        "field `{}` holds {} but its schema says {}",
                        f.name,
                        v.type_name(),
                        f.avro.name()
                    )))
                }
            }
        }
        Ok(())
    }
}

/// Confluent wire format: magic byte 0, a big-endian schema id, the datum.
pub fn split_wire(bytes: &[u8]) -> Result<(u32, &[u8]), AvroError> {
    match bytes {
        [0, a, b, c, d, rest @ ..] => Ok((u32::from_be_bytes([*a, *b, *c, *d]), rest)),
        [] => Err(AvroError::Truncated("empty value")),
        [m, ..] if *m != 0 => Err(AvroError::NotWireFormat(*m)),
        _ => Err(AvroError::Truncated("confluent header")),
    }
}

pub fn write_wire_header(out: &mut Vec<u8>, schema_id: u32) {
    out.push(0);
    out.extend_from_slice(&schema_id.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    const BANK: &str = r#"{"type":"record","name":"BankTransaction","namespace":"io.rill.bank","fields":[
        {"name":"account_id","type":"long"},{"name":"time","type":"long"},
        {"name":"withdraw","type":"double"},{"name":"balance","type":"double"},
        {"name":"bank_transaction_state","type":"string"}]}"#;

    fn bank_row() -> Row {
        vec![
            Value::Int(1001),
            Value::Int(1690543334146),
            Value::Double(100.0),
            Value::Double(1000.0),
            Value::Str("CREATED".into()),
        ]
    }

    #[test]
    fn encode_then_decode_gives_the_row_back() {
        let schema = parse_schema(BANK).unwrap();
        let rows = row_schema(&schema).unwrap();
        let mut buf = Vec::new();
        Encoder::new(&rows).encode(&bank_row(), &mut buf).unwrap();
        let decoded = Decoder::new(&schema, &schema, &rows)
            .unwrap()
            .decode(&buf)
            .unwrap();
        assert_eq!(decoded, bank_row());
    }

    #[test]
    fn agrees_with_apache_avro() {
        let schema = parse_schema(BANK).unwrap();
        let rows = row_schema(&schema).unwrap();
        let mut buf = Vec::new();
        Encoder::new(&rows).encode(&bank_row(), &mut buf).unwrap();
        let value = apache_avro::from_avro_datum(&schema, &mut &buf[..], None).unwrap();
        let expected = apache_avro::types::Value::Record(vec![
            ("account_id".into(), apache_avro::types::Value::Long(1001)),
            (
                "time".into(),
                apache_avro::types::Value::Long(1690543334146),
            ),
            ("withdraw".into(), apache_avro::types::Value::Double(100.0)),
            ("balance".into(), apache_avro::types::Value::Double(1000.0)),
            (
                "bank_transaction_state".into(),
                apache_avro::types::Value::String("CREATED".into()),
            ),
        ]);
        assert_eq!(value, expected);
    }

    #[test]
    fn resolves_a_writer_with_fewer_fields_and_narrower_types() {
        let writer = parse_schema(r#"{"type":"record","name":"T","fields":[{"name":"a","type":"int"},{"name":"gone","type":"string"}]}"#).unwrap();
        let reader = parse_schema(r#"{"type":"record","name":"T","fields":[{"name":"a","type":"double"},{"name":"b","type":["null","string"],"default":null}]}"#).unwrap();
        let rows = row_schema(&reader).unwrap();
        let mut buf = Vec::new();
        write_long(&mut buf, 7);
        write_long(&mut buf, 2);
        buf.extend_from_slice(b"hi");
        let row = Decoder::new(&writer, &reader, &rows)
            .unwrap()
            .decode(&buf)
            .unwrap();
        assert_eq!(row, vec![Value::Double(7.0), Value::Null]);
    }

    #[test]
    fn a_writer_with_its_fields_in_another_order_is_read_by_name_into_a_reused_row() {
        let writer = parse_schema(r#"{"type":"record","name":"T","fields":[{"name":"b","type":"string"},{"name":"a","type":"long"}]}"#).unwrap();
        let reader = parse_schema(r#"{"type":"record","name":"T","fields":[{"name":"a","type":"long"},{"name":"b","type":"string"}]}"#).unwrap();
        let rows = row_schema(&reader).unwrap();
        let mut swapped = Vec::new();
        write_long(&mut swapped, 2);
        swapped.extend_from_slice(b"hi");
        write_long(&mut swapped, 7);
        let mut plain = Vec::new();
        write_long(&mut plain, 8);
        write_long(&mut plain, 3);
        plain.extend_from_slice(b"yes");
        let expected = |a: i64, b: &str| vec![Value::Int(a), Value::Str(b.into())];
        // Rows whose records were written come back to the next decode:
        // nothing of what they held may show.
        crate::record::reuse_row(vec![Value::Str("stale".into()); 6]);
        let by_name = Decoder::new(&writer, &reader, &rows).unwrap();
        assert_eq!(by_name.decode(&swapped).unwrap(), expected(7, "hi"));
        crate::record::reuse_row(vec![Value::Int(-1); 6]);
        let same = Decoder::new(&reader, &reader, &rows).unwrap();
        assert_eq!(same.decode(&plain).unwrap(), expected(8, "yes"));
    }

    #[test]
    fn every_promotion_reads_the_writer_value_as_the_reader_type() {
        let writer = parse_schema(
            r#"{"type":"record","name":"T","fields":[
            {"name":"f","type":"float"},{"name":"l","type":"long"},
            {"name":"s","type":"string"},{"name":"b","type":"bytes"},
            {"name":"e","type":{"type":"enum","name":"E","symbols":["X","Y"]}},
            {"name":"x","type":{"type":"fixed","name":"F","size":2}},
            {"name":"n","type":["null","long"]}]}"#,
        )
        .unwrap();
        let reader = parse_schema(
            r#"{"type":"record","name":"T","fields":[
            {"name":"f","type":"double"},{"name":"l","type":"double"},
            {"name":"s","type":"bytes"},{"name":"b","type":"string"},
            {"name":"e","type":"string"},{"name":"x","type":"bytes"},
            {"name":"n","type":["null","long"]}]}"#,
        )
        .unwrap();
        let rows = row_schema(&reader).unwrap();
        let mut buf = 1.5f32.to_le_bytes().to_vec();
        write_long(&mut buf, -300);
        write_long(&mut buf, 2);
        buf.extend_from_slice(b"hi");
        write_long(&mut buf, 3);
        buf.extend_from_slice(b"abc");
        write_long(&mut buf, 1);
        buf.extend_from_slice(&[7, 8]);
        write_long(&mut buf, 0);
        let row = Decoder::new(&writer, &reader, &rows)
            .unwrap()
            .decode(&buf)
            .unwrap();
        assert_eq!(
            row,
            vec![
                Value::Double(1.5),
                Value::Double(-300.0),
                Value::Bytes(b"hi"[..].into()),
                Value::Str("abc".into()),
                Value::Str("Y".into()),
                Value::Bytes([7u8, 8][..].into()),
                Value::Null,
            ]
        );
    }

    #[test]
    fn truncated_data_is_an_error_not_a_panic() {
        let schema = parse_schema(BANK).unwrap();
        let rows = row_schema(&schema).unwrap();
        let d = Decoder::new(&schema, &schema, &rows).unwrap();
        assert_eq!(
            d.decode(&[2, 4]).unwrap_err(),
            AvroError::Truncated("double")
        );
        assert_eq!(
            d.decode(&[0x80]).unwrap_err(),
            AvroError::Truncated("varint")
        );
        assert!(split_wire(b"{\"json\":1}")
            .unwrap_err()
            .to_string()
            .contains("magic byte"));
    }

    #[test]
    fn zigzag_round_trips_extremes() {
        for v in [0, -1, 1, i64::MAX, i64::MIN, 1690543334146] {
            let mut buf = Vec::new();
            write_long(&mut buf, v);
            assert_eq!(read_long(&mut &buf[..]).unwrap(), v);
        }
    }
}
