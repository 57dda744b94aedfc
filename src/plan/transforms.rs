//! Sources and transforms in the plan: schemas resolved, expressions
//! compiled against their input.

use super::graph::{Builder, Kind};
use super::*;
use crate::expr::{did_you_mean, Expr};
use crate::format::avro;
use crate::record::{Field, FieldType, RowSchema};
use crate::spec::{Format, SourceConfig, TransformConfig};

/// The rows of a text source: the line, as read.
const LINE_SCHEMA: &str = r#"{"type": "record", "name": "Line", "namespace": "io.rill", "fields": [{"name": "line", "type": "string"}]}"#;
use std::sync::Arc;

impl Builder<'_> {
    pub(super) fn source(&mut self, name: &str) -> Option<(NodeKind, Vec<RowSchema>, Vec<String>)> {
        let SourceConfig::Kafka(config) = &self.spec.sources[name];
        let text = match (config.format, &config.schema) {
            (Format::Text, None) if config.avro_schema.is_none() => Ok(LINE_SCHEMA.to_string()),
            (_, None) if config.avro_schema.is_some() && config.format != Format::Text => {
                Ok(config.avro_schema.clone().unwrap_or_default())
            }
            (Format::Text, _) => {
                self.error(
                    Kind::Source,
                    name,
                    Some("schema"),
                    "a text source has no schema: each record is one line, read as the string field `line`".into(),
                    Some("remove `schema`, or read the topic as `json` or `avro`".into()),
                );
                return None;
            }
            (_, None) => {
                self.error(
                    Kind::Source,
                    name,
                    None,
                    format!(
                        "`schema` is missing: a {} source needs the Avro schema file (`.avsc`) its rows are read as",
                        if config.format == Format::Avro { "avro" } else { "json" }
                    ),
                    Some("add `schema = \"name.avsc\"`, relative to the job file, or use `format = \"text\"` for plain lines".into()),
                );
                return None;
            }
            (_, Some(schema)) => {
                let path = self.spec.base_dir().join(schema);
                std::fs::read_to_string(&path).map_err(|e| (path, e))
            }
        };
        let text = match text {
            Ok(t) => t,
            Err((path, e)) => {
                self.error(
                    Kind::Source,
                    name,
                    Some("schema"),
                    format!("cannot read schema file `{}`: {e}", path.display()),
                    Some("schema paths are relative to the job file's directory".into()),
                );
                return None;
            }
        };
        let parsed = avro::parse_schema(&text).and_then(|s| avro::row_schema(&s).map(|r| (s, r)));
        match parsed {
            Ok((schema, rows)) => {
                if config.partitions < 1 {
                    self.error(
                        Kind::Source,
                        name,
                        Some("partitions"),
                        "`partitions` must be at least 1".into(),
                        None,
                    );
                }
                Some((
                    NodeKind::Source(SourcePlan {
                        config: config.clone(),
                        reader: Arc::new(schema),
                        reader_text: text,
                    }),
                    vec![rows],
                    vec![name.to_string()],
                ))
            }
            Err(e) => {
                self.error(
                    Kind::Source,
                    name,
                    Some("schema"),
                    format!(
                        "schema file `{}`: {e}",
                        config.schema.as_deref().unwrap_or_default()
                    ),
                    None,
                );
                None
            }
        }
    }

    pub(super) fn compile(
        &mut self,
        kind: Kind,
        name: &str,
        key: &str,
        src: &str,
        schema: &RowSchema,
        predicate: bool,
    ) -> Option<Expr> {
        let r = if predicate {
            Expr::predicate(src, schema)
        } else {
            Expr::compile(src, schema)
        };
        match r {
            Ok(e) => Some(e),
            Err(e) => {
                let loc = self.spec.locate();
                let value = loc.place_of_key(kind.table(), name, key);
                match inside_string(loc.text, value, src, e.pos) {
                    // The file shows the expression: mark the place in it.
                    Some(place) => self.error_at(
                        kind,
                        name,
                        place,
                        format!("in `{key}`: {}", e.message),
                        None,
                    ),
                    None => {
                        // Lined up under the expression as the hint prints it.
                        let caret = format!("{src}\n        {}^", " ".repeat(e.pos));
                        self.error(
                            kind,
                            name,
                            Some(key),
                            format!("in `{key}` at column {}: {}", e.pos + 1, e.message),
                            Some(caret),
                        );
                    }
                }
                None
            }
        }
    }

    pub(super) fn transform(
        &mut self,
        name: &str,
        schema: RowSchema,
    ) -> Option<(NodeKind, Vec<RowSchema>, Vec<String>)> {
        let k = Kind::Transform;
        match &self.spec.transforms[name] {
            TransformConfig::Filter(c) => {
                let e = self.compile(k, name, "condition", &c.condition, &schema, true)?;
                Some((NodeKind::Filter(e), vec![schema], vec![name.to_string()]))
            }
            TransformConfig::Route(c) => {
                let mut routes = Vec::new();
                let mut ok = true;
                for (route, cond) in &c.routes {
                    match self.compile(k, name, &format!("routes.{route}"), cond, &schema, true) {
                        Some(e) => routes.push((route.clone(), e)),
                        None => ok = false,
                    }
                }
                if c.routes.is_empty() {
                    self.error(
                        k,
                        name,
                        Some("routes"),
                        "`routes` is empty".into(),
                        Some("add conditions such as routes.big = \"amount > 100\"".into()),
                    );
                }
                if !ok {
                    return None;
                }
                let mut names: Vec<String> =
                    routes.iter().map(|(r, _)| format!("{name}.{r}")).collect();
                names.push(format!("{name}._unmatched"));
                let outs = vec![schema; names.len()];
                Some((NodeKind::Route(routes), outs, names))
            }
            TransformConfig::Validate(c) => {
                let mut rules = Vec::new();
                let mut ok = true;
                for (rule, cond) in &c.rules {
                    match self.compile(k, name, &format!("rules.{rule}"), cond, &schema, true) {
                        Some(e) => rules.push((rule.clone(), e)),
                        None => ok = false,
                    }
                }
                if c.rules.is_empty() {
                    self.error(
                        k,
                        name,
                        Some("rules"),
                        "`rules` is empty".into(),
                        Some("add rules such as rules.positive = \"amount >= 0.0\"".into()),
                    );
                }
                ok.then(|| {
                    (
                        NodeKind::Validate(rules),
                        vec![schema],
                        vec![name.to_string()],
                    )
                })
            }
            TransformConfig::Aggregate(c) => match aggregate::plan(name, c, &schema) {
                Ok((plan, out)) => {
                    Some((NodeKind::Aggregate(plan), vec![out], vec![name.to_string()]))
                }
                Err(problems) => {
                    for (key, message, hint) in problems {
                        self.error(k, name, Some(&key), message, hint);
                    }
                    None
                }
            },
            TransformConfig::Map(c) => {
                let mut out = schema.clone();
                let mut computed = Vec::new();
                let mut ok = true;
                for (field, src) in &c.fields {
                    let Some(e) =
                        self.compile(k, name, &format!("fields.{field}"), src, &schema, false)
                    else {
                        ok = false;
                        continue;
                    };
                    match out.index_of(field) {
                        Some(i) => {
                            let f = &mut out.fields[i];
                            let keeps_type = f.ty == e.ty.ty
                                || (f.ty == FieldType::Double && e.ty.ty == FieldType::Int);
                            if !keeps_type {
                                *f = Field::new(field.clone(), e.ty.ty);
                            }
                            f.nullable |= e.ty.nullable;
                            let ty = f.ty;
                            computed.push((e, MapTarget::Replace(i), ty));
                        }
                        None => {
                            let ty = if e.ty.ty == FieldType::Null {
                                FieldType::String
                            } else {
                                e.ty.ty
                            };
                            let mut f = Field::new(field.clone(), ty);
                            f.nullable = e.ty.nullable;
                            out.fields.push(f);
                            computed.push((e, MapTarget::Append, ty));
                        }
                    }
                }
                let mut keep = None;
                if !c.drop.is_empty() {
                    let mut idx: Vec<usize> = (0..out.fields.len()).collect();
                    for d in &c.drop {
                        match out.index_of(d) {
                            Some(i) => idx.retain(|&x| x != i),
                            None => {
                                let hint =
                                    did_you_mean(d, out.fields.iter().map(|f| f.name.as_str()))
                                        .map(|m| format!("did you mean `{m}`?"));
                                self.error(
                                    k,
                                    name,
                                    Some("drop"),
                                    format!("cannot drop unknown field `{d}`"),
                                    hint,
                                );
                                ok = false;
                            }
                        }
                    }
                    out.fields = idx.iter().map(|&i| out.fields[i].clone()).collect();
                    keep = Some(idx);
                }
                if let Some(select) = &c.select {
                    let mut idx = Vec::new();
                    for f in select {
                        match out.index_of(f) {
                            Some(i) => idx.push(i),
                            None => {
                                let hint =
                                    did_you_mean(f, out.fields.iter().map(|f| f.name.as_str()))
                                        .map(|m| format!("did you mean `{m}`?"));
                                self.error(
                                    k,
                                    name,
                                    Some("select"),
                                    format!("no field `{f}` to select"),
                                    hint,
                                );
                                ok = false;
                            }
                        }
                    }
                    if ok {
                        out.fields = idx.iter().map(|&i| out.fields[i].clone()).collect();
                        keep = Some(match keep {
                            Some(before) => idx.iter().map(|&i| before[i]).collect(),
                            None => idx,
                        });
                    }
                }
                if !ok {
                    return None;
                }
                Some((
                    NodeKind::Map(MapPlan { computed, keep }),
                    vec![out],
                    vec![name.to_string()],
                ))
            }
        }
    }
}

/// The place of character `pos` of `src`, when the file writes `src` as
/// it is (a quoted string without escapes) at `value`.
fn inside_string(
    text: &str,
    value: crate::spec::Place,
    src: &str,
    pos: usize,
) -> Option<crate::spec::Place> {
    let line = text.lines().nth(value.line.checked_sub(1)?)?;
    let rest: String = line.chars().skip(value.column.checked_sub(1)?).collect();
    let quote = rest.chars().next().filter(|c| *c == '"' || *c == '\'')?;
    let body = rest.strip_prefix(quote)?;
    if !body.starts_with(src) || src.contains('\\') {
        return None;
    }
    Some(crate::spec::Place {
        line: value.line,
        column: value.column + 1 + src[..pos.min(src.len())].chars().count(),
        len: 1,
    })
}
