//! Planning an `aggregate`: its functions, its window, its output schema.

use crate::expr::{did_you_mean, Expr};
use crate::record::{Field, FieldType, RowSchema};
use crate::spec::{AggregateConfig, Emit, WindowKind};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AggFunc {
    Count,
    Sum,
    Avg,
    Min,
    Max,
}

#[derive(Debug, Clone)]
pub struct AggSpec {
    pub name: String,
    pub func: AggFunc,
    /// The argument; `count()` has none.
    pub arg: Option<Expr>,
    /// The type of the result.
    pub ty: FieldType,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WindowShape {
    Tumbling { size: i64 },
    Hopping { size: i64, hop: i64 },
    Session { gap: i64 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimeField {
    Field(usize),
    KafkaTimestamp,
}

#[derive(Debug, Clone)]
pub struct WindowPlan {
    pub shape: WindowShape,
    pub time: TimeField,
    pub max_out_of_orderness_ms: i64,
    pub allowed_lateness_ms: i64,
    pub idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone)]
pub struct AggregatePlan {
    pub group_by: Vec<usize>,
    pub aggs: Vec<AggSpec>,
    /// Over the output row.
    pub having: Option<Expr>,
    pub window: Option<WindowPlan>,
    pub emit: Emit,
}

impl AggregatePlan {
    /// What the state of this aggregate means, facet by facet, over rows
    /// of `input`: its keys, its accumulators in their order, its window.
    /// A start whose job file gives a stateful transform other facets
    /// than its committed state has would read that state as something
    /// else. A `having` or an emit mode changes what is sent, not what is
    /// kept, and is left out.
    pub fn state_facets(&self, input: &RowSchema) -> Vec<(String, String)> {
        let ty = |t: FieldType| format!("{t:?}").to_lowercase();
        let keys: Vec<String> = self
            .group_by
            .iter()
            .map(|k| format!("{} {}", input.fields[*k].name, ty(input.fields[*k].ty)))
            .collect();
        let mut out = vec![("group_by".to_string(), keys.join(", "))];
        out.push((
            "aggregates".to_string(),
            self.aggs
                .iter()
                .map(|a| a.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        ));
        for a in &self.aggs {
            let arg = a.arg.as_ref().map_or("", |e| e.source.as_str());
            out.push((
                format!("aggregates.{}", a.name),
                format!(
                    "{}({arg}) {}",
                    format!("{:?}", a.func).to_lowercase(),
                    ty(a.ty)
                ),
            ));
        }
        if let Some(w) = &self.window {
            let time = match w.time {
                TimeField::Field(i) => input.fields[i].name.clone(),
                TimeField::KafkaTimestamp => "the record timestamp".into(),
            };
            let shape = match w.shape {
                WindowShape::Tumbling { size } => format!("tumbling {size} ms"),
                WindowShape::Hopping { size, hop } => format!("hopping {size} ms every {hop} ms"),
                WindowShape::Session { gap } => format!("session, gap {gap} ms"),
            };
            out.push(("window".to_string(), format!("{shape} on {time}")));
        }
        out
    }

    /// Index of `window_start` in the output row, when windowed.
    pub fn window_start_index(&self) -> Option<usize> {
        self.window.as_ref().map(|_| self.group_by.len())
    }
}

/// A problem to report: the key it is about, the message, a hint.
pub type Problem = (String, String, Option<String>);

fn sanitize(name: &str) -> String {
    let mut s: String = name
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if s.chars().next().is_none_or(|c| c.is_ascii_digit()) {
        s.insert(0, '_');
    }
    s
}

/// Checks an aggregate against its input schema; returns its plan and
/// output schema, or every problem found.
pub fn plan(
    name: &str,
    c: &AggregateConfig,
    input: &RowSchema,
) -> Result<(AggregatePlan, RowSchema), Vec<Problem>> {
    let mut problems: Vec<Problem> = Vec::new();
    let names = || input.fields.iter().map(|f| f.name.as_str());
    let mut out = RowSchema {
        name: format!("rill.{}", sanitize(name)),
        fields: Vec::new(),
    };
    let mut group_by = Vec::new();
    for g in &c.group_by {
        match input.index_of(g) {
            Some(i) => {
                group_by.push(i);
                out.fields.push(input.fields[i].clone());
            }
            None => problems.push((
                "group_by".into(),
                format!("cannot group by unknown field `{g}`"),
                did_you_mean(g, names()).map(|m| format!("did you mean `{m}`?")),
            )),
        }
    }
    if c.group_by.is_empty() {
        problems.push((
            "group_by".into(),
            "`group_by` is empty".into(),
            Some("name the fields that make a group".into()),
        ));
    }

    let window = c.window.as_ref().and_then(|w| {
        let key = |k: &str| format!("window.{k}");
        let time = if w.time_field == "_timestamp" {
            Some(TimeField::KafkaTimestamp)
        } else {
            match input.index_of(&w.time_field) {
                Some(i) if input.fields[i].ty == FieldType::Int => Some(TimeField::Field(i)),
                Some(i) => {
                    problems.push((
                        key("time_field"),
                        format!(
                            "time field `{}` is {}, not an int of epoch milliseconds",
                            w.time_field,
                            input.fields[i].ty.name()
                        ),
                        None,
                    ));
                    None
                }
                None => {
                    let hint = did_you_mean(&w.time_field, names())
                        .map(|m| format!("did you mean `{m}`?"))
                        .unwrap_or_else(|| {
                            "use `_timestamp` for the kafka record's timestamp".into()
                        });
                    problems.push((
                        key("time_field"),
                        format!("unknown time field `{}`", w.time_field),
                        Some(hint),
                    ));
                    None
                }
            }
        };
        let mut need = |k: &str, v: Option<u64>| -> Option<i64> {
            match v {
                Some(0) => {
                    problems.push((key(k), format!("`{k}` must be more than 0"), None));
                    None
                }
                Some(v) => Some(v as i64),
                None => {
                    problems.push((
                        key(k),
                        format!("a {:?} window needs `{k}`", w.kind).to_lowercase(),
                        None,
                    ));
                    None
                }
            }
        };
        let shape = match w.kind {
            WindowKind::Tumbling => {
                need("size_ms", w.size_ms).map(|size| WindowShape::Tumbling { size })
            }
            WindowKind::Hopping => match (need("size_ms", w.size_ms), need("hop_ms", w.hop_ms)) {
                (Some(size), Some(hop)) if hop <= size => Some(WindowShape::Hopping { size, hop }),
                (Some(_), Some(_)) => {
                    problems.push((
                        key("hop_ms"),
                        "`hop_ms` must not exceed `size_ms`".into(),
                        None,
                    ));
                    None
                }
                _ => None,
            },
            WindowKind::Session => need("gap_ms", w.gap_ms).map(|gap| WindowShape::Session { gap }),
        };
        out.fields.push(Field::new("window_start", FieldType::Int));
        out.fields.push(Field::new("window_end", FieldType::Int));
        Some(WindowPlan {
            shape: shape?,
            time: time?,
            max_out_of_orderness_ms: w.max_out_of_orderness_ms as i64,
            allowed_lateness_ms: w.allowed_lateness_ms as i64,
            idle_timeout_ms: w.idle_timeout_ms,
        })
    });

    let mut aggs = Vec::new();
    for (agg, text) in &c.aggregates {
        let key = format!("aggregates.{agg}");
        let t = text.trim();
        let parsed = t
            .find('(')
            .filter(|_| t.ends_with(')'))
            .map(|open| (t[..open].trim(), t[open + 1..t.len() - 1].trim()));
        let Some((func_name, arg_text)) = parsed else {
            problems.push((
                key,
                format!("`{t}` is not an aggregate call"),
                Some("write count(), sum(expr), avg(expr), min(expr) or max(expr)".into()),
            ));
            continue;
        };
        let func = match func_name.to_ascii_lowercase().as_str() {
            "count" => AggFunc::Count,
            "sum" => AggFunc::Sum,
            "avg" => AggFunc::Avg,
            "min" => AggFunc::Min,
            "max" => AggFunc::Max,
            other => {
                let hint = did_you_mean(other, ["count", "sum", "avg", "min", "max"].into_iter())
                    .map(|m| format!("did you mean `{m}`?"));
                problems.push((key, format!("unknown aggregate function `{other}`"), hint));
                continue;
            }
        };
        let arg = if arg_text.is_empty() || arg_text == "*" {
            if func != AggFunc::Count {
                problems.push((key, format!("`{func_name}` needs an argument"), None));
                continue;
            }
            None
        } else {
            match Expr::compile(arg_text, input) {
                Ok(e) => Some(e),
                Err(e) => {
                    problems.push((
                        key,
                        format!("in `{arg_text}` at column {}: {}", e.pos + 1, e.message),
                        None,
                    ));
                    continue;
                }
            }
        };
        let arg_ty = arg.as_ref().map(|a| a.ty.ty);
        let ty = match (func, arg_ty) {
            (AggFunc::Count, _) => FieldType::Int,
            (AggFunc::Sum, Some(t @ (FieldType::Int | FieldType::Double))) => t,
            (AggFunc::Avg, Some(FieldType::Int | FieldType::Double)) => FieldType::Double,
            (AggFunc::Min | AggFunc::Max, Some(t)) if t != FieldType::Null => t,
            (_, t) => {
                problems.push((
                    key,
                    format!(
                        "`{func_name}` cannot take {}",
                        t.map_or("nothing", |t| t.name())
                    ),
                    Some("sum and avg need numbers".into()),
                ));
                continue;
            }
        };
        if out.index_of(agg).is_some() {
            problems.push((
                key.clone(),
                format!("`{agg}` is already a field of the output"),
                None,
            ));
        }
        let mut f = Field::new(agg.clone(), ty);
        // Avg of no values, and min/max of only nulls, are null.
        f.nullable = matches!(func, AggFunc::Avg | AggFunc::Min | AggFunc::Max);
        out.fields.push(f);
        aggs.push(AggSpec {
            name: agg.clone(),
            func,
            arg,
            ty,
        });
    }
    if c.aggregates.is_empty() {
        problems.push((
            "aggregates".into(),
            "`aggregates` is empty".into(),
            Some("add for example aggregates.n = \"count()\"".into()),
        ));
    }
    let having = c
        .having
        .as_ref()
        .and_then(|h| match Expr::predicate(h, &out) {
            Ok(e) => Some(e),
            Err(e) => {
                problems.push((
                    "having".into(),
                    format!("in `having` at column {}: {}", e.pos + 1, e.message),
                    Some("`having` sees the output fields".into()),
                ));
                None
            }
        });
    if !problems.is_empty() {
        return Err(problems);
    }
    if c.window.is_some() && window.is_none() {
        return Err(vec![(
            "window".into(),
            "the window is not valid".into(),
            None,
        )]);
    }
    Ok((
        AggregatePlan {
            group_by,
            aggs,
            having,
            window,
            emit: c.emit,
        },
        out,
    ))
}
