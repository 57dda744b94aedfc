//! Text: one UTF-8 line per record, as a console producer writes them. A
//! source's rows have one string field, `line`; a sink writes its input's
//! one string field as the record's value.

use crate::record::{FieldType, Row, RowSchema, Value};

/// The row of one record's value: the line, without a trailing line end
/// (a producer reading a file may keep it).
pub fn decode(bytes: &[u8]) -> Result<Row, String> {
    let line = std::str::from_utf8(bytes).map_err(|e| {
        format!(
            "not valid UTF-8 text: {e} (a text source reads UTF-8 lines; read binary values as `avro`)"
        )
    })?;
    let line = line.strip_suffix('\n').unwrap_or(line);
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut row = Row::with_capacity(1 + crate::record::ROW_ROOM);
    row.push(Value::Str(line.into()));
    Ok(row)
}

/// Why a text sink cannot write rows of `schema`, if it cannot: it needs
/// exactly one field, a string.
pub fn unwritable(schema: &RowSchema) -> Option<String> {
    match schema.fields.as_slice() {
        [f] if f.ty == FieldType::String => None,
        fields => Some(format!(
            "a text sink writes one string field per record, and its input has {}",
            match fields {
                [f] => format!("one field, `{}`, of type {}", f.name, f.ty.name()),
                _ => format!(
                    "{} fields ({})",
                    fields.len(),
                    fields
                        .iter()
                        .map(|f| format!("`{}`", f.name))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            }
        )),
    }
}

/// Appends the value of a row a text sink writes: its one string field.
pub fn write_row(row: &Row, out: &mut Vec<u8>) {
    // The plan admits only rows of one string field.
    if let Some(Value::Str(s)) = row.first() {
        out.extend_from_slice(s.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Field;

    #[test]
    fn a_line_is_read_without_its_line_end_and_invalid_utf8_says_so() {
        assert_eq!(
            decode(b"hello world\r\n").unwrap(),
            vec![Value::Str("hello world".into())]
        );
        assert_eq!(
            decode(b"  spaced  ").unwrap(),
            vec![Value::Str("  spaced  ".into())]
        );
        let err = decode(b"caf\xe9!").unwrap_err();
        assert!(
            err.starts_with("not valid UTF-8 text: invalid utf-8 sequence of 1 bytes from index 3"),
            "{err}"
        );
    }

    #[test]
    fn a_text_sink_takes_one_string_field() {
        let field = Field::new;
        let schema = |fields| RowSchema {
            name: "t".into(),
            fields,
        };
        let one = schema(vec![field("line", FieldType::String)]);
        assert_eq!(unwritable(&one), None);
        let two = schema(vec![
            field("line", FieldType::String),
            field("n", FieldType::Int),
        ]);
        assert_eq!(
            unwritable(&two).unwrap(),
            "a text sink writes one string field per record, and its input has 2 fields (`line`, `n`)"
        );
        let int = schema(vec![field("n", FieldType::Int)]);
        assert_eq!(
            unwritable(&int).unwrap(),
            "a text sink writes one string field per record, and its input has one field, `n`, of type int"
        );
    }
}
