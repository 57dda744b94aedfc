//! Sinks in the plan: each kind's settings checked against its input.

use super::graph::{Builder, Kind};
use super::*;
use crate::record::{FieldType, RowSchema};
use crate::spec::{Format, Roll, SinkConfig};

impl Builder<'_> {
    pub(super) fn sink(
        &mut self,
        name: &str,
        schema: RowSchema,
    ) -> Option<(NodeKind, Vec<RowSchema>, Vec<String>)> {
        match &self.spec.sinks[name] {
            SinkConfig::Kafka(c) => {
                let key = match &c.key {
                    Some(src) => {
                        Some(self.compile(Kind::Sink, name, "key", src, &schema, false)?)
                    }
                    None => None,
                };
                if c.format == Format::Text {
                    if let Some(why) = crate::format::text::unwritable(&schema) {
                        self.error(
                            Kind::Sink,
                            name,
                            Some("format"),
                            why,
                            Some("add a `map` that builds the line, or write `json`".into()),
                        );
                    }
                }
                if c.format == Format::Avro && schema.fields.iter().any(|f| f.ty == FieldType::Null)
                {
                    self.error(
                        Kind::Sink,
                        name,
                        None,
                        "a field is always null, which Avro cannot type".into(),
                        None,
                    );
                }
                Some((
                    NodeKind::Sink(SinkPlan::Kafka {
                        config: c.clone(),
                        key,
                    }),
                    vec![schema],
                    vec![],
                ))
            }
            SinkConfig::Stdout(_) => Some((NodeKind::Sink(SinkPlan::Stdout), vec![schema], vec![])),
            SinkConfig::Postgres(c) => {
                let valid = |s: &str| {
                    !s.is_empty()
                        && s.chars()
                            .all(|ch| ch.is_ascii_alphanumeric() || ch == '_' || ch == '.')
                };
                if !valid(&c.table) {
                    self.error(
                        Kind::Sink,
                        name,
                        Some("table"),
                        format!("`{}` is not a plain table name", c.table),
                        Some("use letters, digits, `_`, and `schema.table`".into()),
                    );
                    return None;
                }
                if let Some(f) = schema.fields.iter().find(|f| !valid(&f.name)) {
                    self.error(
                        Kind::Sink,
                        name,
                        None,
                        format!("field `{}` cannot be a column name", f.name),
                        Some("rename it with a `map`".into()),
                    );
                    return None;
                }
                let fallback_dir = c
                    .fallback_dir
                    .as_ref()
                    .map(|d| self.spec.base_dir().join(d));
                Some((
                    NodeKind::Sink(SinkPlan::Postgres {
                        config: c.clone(),
                        fallback_dir,
                    }),
                    vec![schema],
                    vec![],
                ))
            }
            SinkConfig::File(c) => {
                if c.roll == Roll::Window
                    && (schema.index_of("window_start").is_none()
                        || schema.index_of("window_end").is_none())
                {
                    self.error(
                        Kind::Sink,
                        name,
                        Some("roll"),
                        "`roll = \"window\"` needs input with `window_start` and `window_end`"
                            .into(),
                        Some("feed it from a windowed aggregate, or roll per epoch".into()),
                    );
                    return None;
                }
                let dir = self.spec.base_dir().join(&c.path);
                Some((
                    NodeKind::Sink(SinkPlan::File {
                        config: c.clone(),
                        dir,
                    }),
                    vec![schema],
                    vec![],
                ))
            }
        }
    }
}
