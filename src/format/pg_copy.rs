//! Postgres's binary COPY format: a row is its field count, then each
//! value as its length and its bytes in the column type's binary form
//! (big-endian `bigint` and `double precision`, `text` as UTF-8, `bytea`
//! as it is, `boolean` as one byte), -1 for NULL. A Postgres sink's rows
//! are encoded so on the worker that produced them; the sink's thread only
//! sends them, and a fallback file decodes them back to rows.

use crate::record::{Field, FieldType, Row, Value};
use bytes::BufMut;

/// The start of a stream: signature, flags, no header extension.
pub const HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end of a stream: a field count of -1.
pub const TRAILER: &[u8] = &[0xff, 0xff];

/// Appends `row`; the column types are those of `fields` (the sink
/// checks the table's at connect).
pub fn encode_row(out: &mut impl BufMut, row: &Row, fields: &[Field]) -> Result<(), String> {
    out.put_i16(fields.len() as i16);
    for (v, f) in row.iter().zip(fields) {
        match (v, f.ty) {
            (Value::Null, _) => out.put_i32(-1),
            (Value::Bool(b), FieldType::Bool) => {
                out.put_i32(1);
                out.put_u8(*b as u8);
            }
            (Value::Int(i), FieldType::Int) => {
                out.put_i32(8);
                out.put_i64(*i);
            }
            (Value::Int(i), FieldType::Double) => {
                out.put_i32(8);
                out.put_f64(*i as f64);
            }
            (Value::Double(d), FieldType::Double) => {
                out.put_i32(8);
                out.put_f64(*d);
            }
            (Value::Str(s), FieldType::String | FieldType::Null) => put_bytes(out, s.as_bytes()),
            (Value::Bytes(b), FieldType::String | FieldType::Null) => {
                put_bytes(out, String::from_utf8_lossy(b).as_bytes())
            }
            (Value::Bytes(b), FieldType::Bytes) => put_bytes(out, b),
            (v, _) => {
                return Err(format!(
                    "field `{}` is {} but holds {v:?}",
                    f.name,
                    f.ty.name()
                ))
            }
        }
    }
    Ok(())
}

fn put_bytes(out: &mut impl BufMut, b: &[u8]) {
    out.put_i32(b.len() as i32);
    out.put_slice(b);
}

/// The row [`encode_row`] encoded as `bytes`.
pub fn decode_row(mut bytes: &[u8], fields: &[Field]) -> Result<Row, String> {
    let short = || "a row ends early".to_string();
    let count = take::<2>(&mut bytes).ok_or_else(short)?;
    if i16::from_be_bytes(count) as usize != fields.len() {
        return Err(format!(
            "a row of {} fields, not {}",
            i16::from_be_bytes(count),
            fields.len()
        ));
    }
    let mut row = Vec::with_capacity(fields.len());
    for f in fields {
        let len = i32::from_be_bytes(take::<4>(&mut bytes).ok_or_else(short)?);
        if len < 0 {
            row.push(Value::Null);
            continue;
        }
        let (value, rest) = bytes.split_at_checked(len as usize).ok_or_else(short)?;
        bytes = rest;
        let eight =
            || <[u8; 8]>::try_from(value).map_err(|_| format!("field `{}`: {len} bytes", f.name));
        row.push(match f.ty {
            FieldType::Bool => Value::Bool(value.first().is_some_and(|b| *b != 0)),
            FieldType::Int => Value::Int(i64::from_be_bytes(eight()?)),
            FieldType::Double => Value::Double(f64::from_be_bytes(eight()?)),
            FieldType::String | FieldType::Null => {
                Value::Str(String::from_utf8_lossy(value).as_ref().into())
            }
            FieldType::Bytes => Value::Bytes(value.into()),
        });
    }
    Ok(row)
}

fn take<const N: usize>(bytes: &mut &[u8]) -> Option<[u8; N]> {
    let (head, rest) = bytes.split_first_chunk::<N>()?;
    *bytes = rest;
    Some(*head)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_row_decodes_to_what_was_encoded_and_ints_in_double_columns_become_doubles() {
        let mut fields = vec![
            Field::new("id", FieldType::Int),
            Field::new("amount", FieldType::Double),
            Field::new("merchant", FieldType::String),
            Field::new("ok", FieldType::Bool),
            Field::new("raw", FieldType::Bytes),
            Field::new("note", FieldType::String),
        ];
        fields[5].nullable = true;
        let row = vec![
            Value::Int(-7),
            Value::Int(120),
            Value::Str("Zalando".into()),
            Value::Bool(true),
            Value::Bytes(vec![0, 1, 2].into()),
            Value::Null,
        ];
        let mut buf = Vec::new();
        encode_row(&mut buf, &row, &fields).unwrap();
        // 2 for the count, then 4 + 8, 4 + 8, 4 + 7, 4 + 1, 4 + 3, 4.
        assert_eq!(buf.len(), 2 + 12 + 12 + 11 + 5 + 7 + 4);
        let back = decode_row(&buf, &fields).unwrap();
        assert_eq!(back[1], Value::Double(120.0));
        assert_eq!(back[0], row[0]);
        assert_eq!(back[2..], row[2..]);
        assert_eq!(
            decode_row(&buf[..buf.len() - 5], &fields).unwrap_err(),
            "a row ends early"
        );
    }

    #[test]
    fn a_value_of_another_type_than_its_column_is_refused_with_the_field_named() {
        let fields = vec![Field::new("id", FieldType::Int)];
        let err = encode_row(&mut Vec::new(), &vec![Value::Str("x".into())], &fields).unwrap_err();
        assert!(err.starts_with("field `id` is int but holds Str"), "{err}");
    }
}
