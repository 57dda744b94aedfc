//! CSV lines (RFC 4180 quoting) for file sinks.

use crate::record::{Row, RowSchema, Value};
use std::fmt::Write as _;

fn write_field(s: &str, out: &mut String) {
    if s.contains([',', '"', '\n', '\r']) {
        out.push('"');
        out.push_str(&s.replace('"', "\"\""));
        out.push('"');
    } else {
        out.push_str(s);
    }
}

/// The header line: the field names.
pub fn header(schema: &RowSchema) -> String {
    let mut out = String::new();
    for (i, f) in schema.fields.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        write_field(&f.name, &mut out);
    }
    out
}

/// One row as a line, without the newline. Nulls are empty fields.
pub fn write_row(row: &Row, out: &mut String) {
    for (i, v) in row.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        match v {
            Value::Null => {}
            Value::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Value::Int(n) => {
                let _ = write!(out, "{n}");
            }
            Value::Double(d) => {
                let _ = write!(out, "{d:?}");
            }
            Value::Str(s) => write_field(s, out),
            Value::Bytes(b) => write_field(&String::from_utf8_lossy(b), out),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_only_what_needs_it() {
        let mut s = String::new();
        write_row(
            &vec![
                Value::Str("a,b".into()),
                Value::Int(3),
                Value::Null,
                Value::Str("say \"hi\"".into()),
            ],
            &mut s,
        );
        assert_eq!(s, r#""a,b",3,,"say ""hi""""#);
    }
}
