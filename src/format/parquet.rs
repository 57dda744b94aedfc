//! Parquet files of rows: one row group, one column per field, nullable
//! fields OPTIONAL. Written with the low-level column API, no Arrow.

use crate::record::{FieldType, Row, RowSchema, Value};
use parquet::basic::Compression;
use parquet::data_type::{BoolType, ByteArray, ByteArrayType, DoubleType, Int64Type};
use parquet::file::properties::WriterProperties;
use parquet::file::reader::{FileReader, SerializedFileReader};
use parquet::file::writer::SerializedFileWriter;
use parquet::record::Field as PqField;
use parquet::schema::parser::parse_message_type;
use std::path::Path;
use std::sync::Arc;

pub type ParquetError = parquet::errors::ParquetError;

fn message_type(schema: &RowSchema) -> String {
    let mut s = String::from("message row {\n");
    for f in &schema.fields {
        let rep = if f.nullable || f.ty == FieldType::Null {
            "OPTIONAL"
        } else {
            "REQUIRED"
        };
        let ty = match f.ty {
            FieldType::Bool => "BOOLEAN",
            FieldType::Int => "INT64",
            FieldType::Double => "DOUBLE",
            FieldType::String | FieldType::Null => "BYTE_ARRAY",
            FieldType::Bytes => "BYTE_ARRAY",
        };
        let ann = if matches!(f.ty, FieldType::String | FieldType::Null) {
            " (UTF8)"
        } else {
            ""
        };
        // Field names are quoted by nothing in this syntax; keep them simple.
        let name: String = f
            .name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        s.push_str(&format!("  {rep} {ty} {name}{ann};\n"));
    }
    s.push('}');
    s
}

/// Writes `rows` of `schema` to a new Parquet file at `path`.
pub fn write(path: &Path, schema: &RowSchema, rows: &[Row]) -> Result<(), ParquetError> {
    let pq_schema = Arc::new(parse_message_type(&message_type(schema))?);
    let props = Arc::new(
        WriterProperties::builder()
            .set_compression(Compression::UNCOMPRESSED)
            .build(),
    );
    let file = std::fs::File::create(path)?;
    let mut writer = SerializedFileWriter::new(file, pq_schema, props)?;
    let mut group = writer.next_row_group()?;
    let mut column = 0;
    while let Some(mut col) = group.next_column()? {
        let f = &schema.fields[column];
        let optional = f.nullable || f.ty == FieldType::Null;
        let values = rows.iter().map(|r| &r[column]);
        let defs: Vec<i16> = rows
            .iter()
            .map(|r| !matches!(r[column], Value::Null) as i16)
            .collect();
        let defs = optional.then_some(&defs[..]);
        match f.ty {
            FieldType::Int => {
                let v: Vec<i64> = values
                    .filter_map(|v| {
                        if let Value::Int(i) = v {
                            Some(*i)
                        } else {
                            None
                        }
                    })
                    .collect();
                col.typed::<Int64Type>().write_batch(&v, defs, None)?;
            }
            FieldType::Double => {
                let v: Vec<f64> = values
                    .filter_map(|v| match v {
                        Value::Double(d) => Some(*d),
                        Value::Int(i) => Some(*i as f64),
                        _ => None,
                    })
                    .collect();
                col.typed::<DoubleType>().write_batch(&v, defs, None)?;
            }
            FieldType::Bool => {
                let v: Vec<bool> = values
                    .filter_map(|v| {
                        if let Value::Bool(b) = v {
                            Some(*b)
                        } else {
                            None
                        }
                    })
                    .collect();
                col.typed::<BoolType>().write_batch(&v, defs, None)?;
            }
            FieldType::String | FieldType::Bytes | FieldType::Null => {
                let v: Vec<ByteArray> = values
                    .filter_map(|v| match v {
                        Value::Str(s) => Some(ByteArray::from(s.as_bytes().to_vec())),
                        Value::Bytes(b) => Some(ByteArray::from(b.to_vec())),
                        _ => None,
                    })
                    .collect();
                col.typed::<ByteArrayType>().write_batch(&v, defs, None)?;
            }
        }
        col.close()?;
        column += 1;
    }
    group.close()?;
    writer.close()?;
    Ok(())
}

/// Reads a file [`write`] wrote back into rows of `schema`.
pub fn read(path: &Path, schema: &RowSchema) -> Result<Vec<Row>, ParquetError> {
    let reader = SerializedFileReader::new(std::fs::File::open(path)?)?;
    let mut rows = Vec::new();
    for r in reader.get_row_iter(None)? {
        let r = r?;
        let mut row = Vec::with_capacity(schema.fields.len());
        for (i, (_, field)) in r.get_column_iter().enumerate() {
            let want = schema.fields.get(i).map_or(FieldType::Null, |f| f.ty);
            row.push(match field {
                PqField::Null => Value::Null,
                PqField::Bool(b) => Value::Bool(*b),
                PqField::Long(l) => Value::Int(*l),
                PqField::Int(n) => Value::Int(*n as i64),
                PqField::Double(d) => Value::Double(*d),
                PqField::Float(d) => Value::Double(*d as f64),
                PqField::Str(s) => Value::Str(s.as_str().into()),
                PqField::Bytes(b) if want == FieldType::String => {
                    Value::Str(String::from_utf8_lossy(b.data()).as_ref().into())
                }
                PqField::Bytes(b) => Value::Bytes(b.data().into()),
                other => Value::Str(other.to_string().into()),
            });
        }
        rows.push(row);
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Field;

    #[test]
    fn rows_round_trip_through_a_file() {
        let mut note = Field::new("note", FieldType::String);
        note.nullable = true;
        let schema = RowSchema {
            name: "T".into(),
            fields: vec![
                Field::new("id", FieldType::Int),
                Field::new("amount", FieldType::Double),
                note,
                Field::new("ok", FieldType::Bool),
            ],
        };
        let rows = vec![
            vec![
                Value::Int(1),
                Value::Double(2.5),
                Value::Str("x".into()),
                Value::Bool(true),
            ],
            vec![
                Value::Int(2),
                Value::Double(-1.0),
                Value::Null,
                Value::Bool(false),
            ],
        ];
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        write(&path, &schema, &rows).unwrap();
        assert_eq!(&std::fs::read(&path).unwrap()[..4], b"PAR1");
        assert_eq!(read(&path, &schema).unwrap(), rows);
    }
}
