//! JSON rows: decoding straight into a row by schema, and two writers — the
//! compact form sinks write, and the spaced form the seeds' consoles show.

use crate::record::{FieldType, Row, RowSchema, Value};
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, Visitor};
use std::fmt;

/// Writes a row as a JSON object. `spaced` gives the seeds' console form
/// (`{"a": 1, "b": 2.0}`), otherwise compact JSON.
pub fn write_row(row: &Row, schema: &RowSchema, spaced: bool, out: &mut String) {
    out.push('{');
    for (i, (f, v)) in schema.fields.iter().zip(row).enumerate() {
        if i > 0 {
            out.push_str(if spaced { ", " } else { "," });
        }
        crate::record::write_json_str(&f.name, out);
        out.push_str(if spaced { ": " } else { ":" });
        write_value(v, out);
    }
    out.push('}');
}

pub fn row_to_string(row: &Row, schema: &RowSchema, spaced: bool) -> String {
    let mut s = String::with_capacity(128);
    write_row(row, schema, spaced, &mut s);
    s
}

pub fn write_value(v: &Value, out: &mut String) {
    v.write_json(out)
}

/// Decodes one JSON object into a row of `schema`. Unknown keys are ignored;
/// a missing or mistyped field is an error that names it.
pub fn decode(bytes: &[u8], schema: &RowSchema) -> Result<Row, String> {
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let row = RowSeed(schema)
        .deserialize(&mut de)
        .map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(row)
}

struct RowSeed<'a>(&'a RowSchema);

impl<'de> DeserializeSeed<'de> for RowSeed<'_> {
    type Value = Row;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Row, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for RowSeed<'_> {
    type Value = Row;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        write!(f, "a JSON object for record {}", self.0.name)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Row, A::Error> {
        let schema = self.0;
        let mut row = crate::record::null_row(schema.fields.len());
        let mut present = vec![false; schema.fields.len()];
        while let Some(key) = map.next_key::<std::borrow::Cow<'de, str>>()? {
            match schema.index_of(&key) {
                Some(i) => {
                    let f = &schema.fields[i];
                    let v = map.next_value_seed(ScalarSeed)?;
                    row[i] = match (f.ty, v) {
                        (_, Value::Null) if f.nullable => Value::Null,
                        (FieldType::Int, Value::Int(n)) => Value::Int(n),
                        (FieldType::Double, Value::Int(n)) => Value::Double(n as f64),
                        (FieldType::Double, Value::Double(d)) => Value::Double(d),
                        (FieldType::Bool, Value::Bool(b)) => Value::Bool(b),
                        (FieldType::String, Value::Str(s)) => Value::Str(s),
                        (FieldType::Bytes, Value::Str(s)) => Value::Bytes(s.as_bytes().into()),
                        (ty, v) => {
                            return Err(de::Error::custom(format!(
                                "field `{}` should be {} but is {}",
                                f.name,
                                ty.name(),
                                v.type_name()
                            )))
                        }
                    };
                    present[i] = true;
                }
                None => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        for (i, f) in schema.fields.iter().enumerate() {
            if !present[i] && !f.nullable {
                return Err(de::Error::custom(format!("missing field `{}`", f.name)));
            }
        }
        Ok(row)
    }
}

struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ScalarSeed {
    type Value = Value;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number, string, boolean or null")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        i64::try_from(v)
            .map(Value::Int)
            .map_err(|_| E::custom(format!("{v} does not fit in a 64-bit int")))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(Value::Double(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.into()))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(de::Error::custom(
            "nested objects are not supported in rows",
        ))
    }
    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(de::Error::custom("arrays are not supported in rows"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Field;

    fn schema() -> RowSchema {
        let mut note = Field::new("note", FieldType::String);
        note.nullable = true;
        RowSchema {
            name: "T".into(),
            fields: vec![
                Field::new("id", FieldType::Int),
                Field::new("amount", FieldType::Double),
                note,
            ],
        }
    }

    #[test]
    fn spaced_form_matches_the_seed_console() {
        let row = vec![
            Value::Int(1001),
            Value::Double(900.0),
            Value::Str("APPROVED".into()),
        ];
        assert_eq!(
            row_to_string(&row, &schema(), true),
            r#"{"id": 1001, "amount": 900.0, "note": "APPROVED"}"#
        );
        assert_eq!(
            row_to_string(&row, &schema(), false),
            r#"{"id":1001,"amount":900.0,"note":"APPROVED"}"#
        );
    }

    #[test]
    fn decodes_by_name_and_promotes_ints_to_doubles() {
        let row = decode(br#"{"amount": 5, "extra": [1], "id": 3}"#, &schema()).unwrap();
        assert_eq!(row, vec![Value::Int(3), Value::Double(5.0), Value::Null]);
    }

    #[test]
    fn names_the_missing_or_mistyped_field() {
        assert!(decode(br#"{"amount": 5}"#, &schema())
            .unwrap_err()
            .contains("missing field `id`"));
        assert!(decode(br#"{"id": "x", "amount": 1}"#, &schema())
            .unwrap_err()
            .contains("field `id` should be int but is string"));
        assert!(decode(b"not json", &schema()).is_err());
    }
}
