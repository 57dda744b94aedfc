//! Bytes to rows and back: Avro (Confluent wire format), JSON, and the
//! Schema Registry client.

pub mod avro;
pub mod csv;
pub mod json;
pub mod parquet;
pub mod pg_copy;
pub mod registry;
pub mod text;
