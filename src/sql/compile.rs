//! ksqlDB statements into the job file they mean: a stream with columns
//! or a topic is a source, `CREATE STREAM … AS SELECT` a filter and a map
//! into a sink, `CREATE TABLE … AS SELECT … GROUP BY` an aggregate into a
//! sink. The job file is then read as any other, so both front ends build
//! the same plan. Each line written remembers the place in the SQL it
//! came from, so errors found later point there.

use super::parse::{At, Create, Literal, Problem, Select, Statement, WindowKind};
use sqlparser::ast::{
    BinaryOperator, CastKind, DataType, Expr, FunctionArg, FunctionArgExpr, FunctionArguments,
    InTarget, SelectItem, Spanned, UnaryOperator, Value,
};
use std::collections::HashMap;

/// A job file being written, line by line, each with its SQL origin.
#[derive(Default)]
pub struct Toml {
    pub text: String,
    pub origins: Vec<At>,
}

impl Toml {
    fn line(&mut self, at: At, line: String) {
        self.text.push_str(&line);
        self.text.push('\n');
        self.origins.push(at);
    }
}

fn quoted(s: &str) -> String {
    serde_json::to_string(s).expect("a string")
}

fn at_of(e: &impl Spanned) -> At {
    let s = e.span().start;
    At {
        line: s.line as usize,
        column: s.column as usize,
    }
}

/// Where a stream's rows come from, for the statements that read it.
struct Stream {
    /// The component that produces it: `sources.x` or a transform.
    node: String,
    format: String,
}

pub struct Compiler {
    pub toml: Toml,
    pub problems: Vec<Problem>,
    streams: HashMap<String, Stream>,
    /// Looks up the registry's schema for a topic, for a stream declared
    /// without columns (as ksqlDB does).
    registry: Box<dyn Fn(&str) -> Result<String, String>>,
}

impl Compiler {
    pub fn new(registry: Box<dyn Fn(&str) -> Result<String, String>>) -> Compiler {
        Compiler {
            toml: Toml::default(),
            problems: Vec::new(),
            streams: HashMap::new(),
            registry,
        }
    }

    fn problem(&mut self, at: At, message: String, hint: Option<&str>) {
        self.problems.push(Problem {
            at,
            message,
            hint: hint.map(str::to_string),
        });
    }

    /// A select item's expression and its `AS` name; anything else (`*`
    /// among other items, `t.*`) is a problem, told with `refusal`.
    fn select_item<'a>(
        &mut self,
        item: &'a SelectItem,
        refusal: &str,
    ) -> Option<(&'a Expr, Option<String>)> {
        match item {
            SelectItem::UnnamedExpr(e) => Some((e, None)),
            SelectItem::ExprWithAlias { expr, alias } => {
                Some((expr, Some(super::parse_name(alias))))
            }
            other => {
                self.problem(at_of(other), refusal.into(), None);
                None
            }
        }
    }

    /// The `[job]` table from the file's name and its `SET` statements.
    pub fn job(&mut self, default_name: &str, statements: &[Statement]) {
        let mut settings: Vec<(At, String)> = Vec::new();
        let mut name = quoted(default_name);
        let mut name_at = At { line: 1, column: 1 };
        for s in statements {
            let Statement::Set { at, key, value } = s else {
                continue;
            };
            let at = *at;
            match key.as_str() {
                "application.id" => {
                    name = quoted(value);
                    name_at = at;
                }
                "bootstrap.servers" => settings.push((at, format!("brokers = {}", quoted(value)))),
                "schema.registry.url" => settings.push((at, format!("registry_url = {}", quoted(value)))),
                "commit.interval.ms" => match value.parse::<u64>() {
                    Ok(ms) => settings.push((at, format!("checkpoint_interval_ms = {ms}"))),
                    Err(_) => self.problem(at, format!("'commit.interval.ms' is a number of milliseconds, not '{value}'"), None),
                },
                "processing.guarantee" => match value.as_str() {
                    "exactly_once" | "exactly_once_v2" | "exactly_once_beta" => {
                        settings.push((at, "guarantee = \"exactly_once\"".into()))
                    }
                    "at_least_once" => settings.push((at, "guarantee = \"at_least_once\"".into())),
                    other => self.problem(at, format!("'processing.guarantee' is 'exactly_once' or 'at_least_once', not '{other}'"), None),
                },
                // Applies to the sources, below.
                "auto.offset.reset" => {}
                other => self.problem(
                    at,
                    format!("unknown setting '{other}'"),
                    Some("rill takes 'application.id', 'bootstrap.servers', 'schema.registry.url', 'commit.interval.ms', 'processing.guarantee' and 'auto.offset.reset'"),
                ),
            }
        }
        self.toml.line(name_at, "[job]".into());
        self.toml.line(name_at, format!("name = {name}"));
        for (at, line) in settings {
            self.toml.line(at, line);
        }
    }

    fn start_offset(statements: &[Statement]) -> Option<(At, String)> {
        statements.iter().rev().find_map(|s| match s {
            Statement::Set { at, key, value } if key == "auto.offset.reset" => {
                Some((*at, value.clone()))
            }
            _ => None,
        })
    }

    pub fn statement(&mut self, create: &Create, statements: &[Statement]) {
        let mut with: HashMap<&str, (&Literal, At)> = HashMap::new();
        for (k, v, at) in &create.with {
            match k.as_str() {
                "KAFKA_TOPIC" | "VALUE_FORMAT" | "PARTITIONS" | "REPLICAS" | "VALUE_SCHEMA_FILE" | "KEY" => {
                    with.insert(k.as_str(), (v, *at));
                }
                other => self.problem(
                    *at,
                    format!("unknown property {other}"),
                    Some("rill takes KAFKA_TOPIC, VALUE_FORMAT, PARTITIONS, REPLICAS and VALUE_SCHEMA_FILE"),
                ),
            }
        }
        let text = |k: &str| {
            with.get(k).map(|(v, at)| match v {
                Literal::Str(s) | Literal::Num(s) => (s.clone(), *at),
            })
        };
        let format = text("VALUE_FORMAT").map(|(f, at)| (f.to_lowercase(), at));
        if let Some((f, at)) = &format {
            if !["avro", "json", "text", "kafka"].contains(&f.as_str()) {
                self.problem(
                    *at,
                    format!("VALUE_FORMAT '{f}' is not one rill reads"),
                    Some("use 'AVRO', 'JSON' or 'TEXT' (one line per record)"),
                );
            }
        }
        let format = format.map(|(f, _)| if f == "kafka" { "text".to_string() } else { f });
        if self.streams.contains_key(&create.name) {
            self.problem(
                create.at,
                format!("`{}` is declared twice", create.name),
                None,
            );
            return;
        }
        match &create.select {
            None => self.source(create, text("KAFKA_TOPIC"), format, &text, statements),
            Some(select) => self.derived(create, select, text("KAFKA_TOPIC"), format, &text),
        }
    }

    fn source(
        &mut self,
        create: &Create,
        topic: Option<(String, At)>,
        format: Option<String>,
        text: &dyn Fn(&str) -> Option<(String, At)>,
        statements: &[Statement],
    ) {
        if create.table {
            self.problem(create.at, format!("TABLE `{}` has no query: rill's tables are aggregates", create.name), Some("declare the topic as a STREAM, and build the table with CREATE TABLE … AS SELECT … GROUP BY"));
            return;
        }
        let Some((topic, topic_at)) = topic else {
            self.problem(
                create.at,
                format!("stream `{}` needs KAFKA_TOPIC", create.name),
                Some("add WITH (KAFKA_TOPIC='…', VALUE_FORMAT='…')"),
            );
            return;
        };
        let format = format.unwrap_or_else(|| "json".into());
        let at = create.at;
        let node = format!("sources.{}", create.name);
        self.toml.line(at, String::new());
        self.toml.line(at, format!("[{node}]"));
        self.toml.line(at, "type = \"kafka\"".into());
        self.topic(at, (&topic, topic_at), &format, text);
        if let Some((at, offset)) = Self::start_offset(statements) {
            self.toml
                .line(at, format!("start_offset = {}", quoted(&offset)));
        }
        if format == "text" {
            // A text stream's one column is the line itself.
            let line_only = matches!(create.columns.as_slice(), [(c, t, _)] if c == "line" && (t == "VARCHAR" || t == "STRING"));
            if !create.columns.is_empty() && !line_only {
                self.problem(
                    at,
                    format!(
                        "a text stream has one column, `line VARCHAR`, and `{}` lists others",
                        create.name
                    ),
                    Some("write (line VARCHAR), or leave the columns out"),
                );
            }
        } else if let Some((file, at)) = text("VALUE_SCHEMA_FILE") {
            self.toml.line(at, format!("schema = {}", quoted(&file)));
        } else if !create.columns.is_empty() {
            match avro_of(&create.name, &create.columns) {
                Ok(schema) => self
                    .toml
                    .line(at, format!("avro_schema = {}", quoted(&schema))),
                Err((at, e)) => self.problem(
                    at,
                    e,
                    Some("column types: BOOLEAN, INT, BIGINT, DOUBLE, VARCHAR (STRING), BYTES"),
                ),
            }
        } else {
            match (self.registry)(&topic) {
                Ok(schema) => self.toml.line(at, format!("avro_schema = {}", quoted(&schema))),
                Err(e) => self.problem(
                    at,
                    format!("stream `{}` lists no columns, and its schema could not be read from the registry: {e}", create.name),
                    Some("list the columns, name a schema file with VALUE_SCHEMA_FILE, or write to the topic first so the registry has its schema"),
                ),
            }
        }
        self.streams.insert(
            create.name.clone(),
            Stream {
                node: create.name.clone(),
                format,
            },
        );
    }

    fn derived(
        &mut self,
        create: &Create,
        select: &Select,
        topic: Option<(String, At)>,
        format: Option<String>,
        text: &dyn Fn(&str) -> Option<(String, At)>,
    ) {
        let (from, from_at) = &select.from;
        let Some(input) = self.streams.get(from) else {
            let known: Vec<&str> = self.streams.keys().map(String::as_str).collect();
            let hint = crate::expr::did_you_mean(from, known.into_iter())
                .map(|n| format!("did you mean `{n}`?"));
            self.problem(
                *from_at,
                format!("no stream `{from}` is declared before this statement"),
                hint.as_deref(),
            );
            return;
        };
        let mut last = input.node.clone();
        let format = format.unwrap_or_else(|| input.format.clone());
        let name = &create.name;
        if let Some(filter) = &select.filter {
            let at = at_of(filter);
            match self.expr(filter, &[]) {
                Ok(cond) => {
                    let node = format!("{name}_where");
                    self.toml.line(at, String::new());
                    self.toml.line(at, format!("[transforms.{node}]"));
                    self.toml.line(at, "type = \"filter\"".into());
                    self.toml.line(at, format!("inputs = [{}]", quoted(&last)));
                    self.toml.line(at, format!("condition = {}", quoted(&cond)));
                    last = node;
                }
                Err((at, e)) => self.problem(at, e, None),
            }
        }
        if create.table || !select.group_by.is_empty() {
            if !create.table {
                self.problem(
                    select.at,
                    format!("`{name}` groups rows, which makes a TABLE"),
                    Some("write CREATE TABLE … AS SELECT … GROUP BY"),
                );
                return;
            }
            match self.aggregate(name, select, &last) {
                Some(node) => last = node,
                None => return,
            }
        } else {
            if select.window.is_some() || select.having.is_some() {
                self.problem(select.at, "WINDOW and HAVING need GROUP BY".into(), None);
            }
            match self.projection(name, select, &last) {
                Some(Some(node)) => last = node,
                Some(None) => {}
                None => return,
            }
        }
        let (topic, topic_at) = topic.unwrap_or_else(|| (name.clone(), create.at));
        let at = create.at;
        // A table's aggregate carries its name (its state, its pull
        // queries); its topic's sink is named after it.
        let sink = if create.table {
            format!("{name}_topic")
        } else {
            name.clone()
        };
        self.toml.line(at, String::new());
        self.toml.line(at, format!("[sinks.{sink}]"));
        self.toml.line(at, "type = \"kafka\"".into());
        self.toml.line(at, format!("inputs = [{}]", quoted(&last)));
        self.topic(at, (&topic, topic_at), &format, text);
        self.streams
            .insert(name.clone(), Stream { node: last, format });
    }

    /// A Kafka component's topic, format, partitions and replicas.
    fn topic(
        &mut self,
        at: At,
        (topic, topic_at): (&str, At),
        format: &str,
        text: &dyn Fn(&str) -> Option<(String, At)>,
    ) {
        self.toml
            .line(topic_at, format!("topic = {}", quoted(topic)));
        self.toml.line(at, format!("format = {}", quoted(format)));
        if let Some((n, at)) = text("PARTITIONS") {
            self.toml.line(at, format!("partitions = {n}"));
        }
        if let Some((n, at)) = text("REPLICAS") {
            self.toml.line(at, format!("replication_factor = {n}"));
        }
    }

    /// A map for the select list; None when it is `*` (nothing to do).
    fn projection(&mut self, name: &str, select: &Select, input: &str) -> Option<Option<String>> {
        let mut fields: Vec<(At, String, String)> = Vec::new();
        let mut order: Vec<String> = Vec::new();
        let mut unnamed = Unnamed::default();
        for item in &select.items {
            if matches!(item, SelectItem::Wildcard(_)) && select.items.len() == 1 {
                return Some(None);
            }
            let (expr, alias) = self.select_item(
                item,
                "rill selects `*` alone, or expressions with optional AS names",
            )?;
            let column = match (alias, expr) {
                (Some(a), _) => a,
                (None, Expr::Identifier(id)) => super::parse_name(id),
                (None, _) => unnamed.next(),
            };
            match self.expr(expr, &[]) {
                Ok(e) => {
                    if e != column {
                        fields.push((at_of(expr), column.clone(), e));
                    }
                    order.push(column);
                }
                Err((at, e)) => self.problem(at, e, None),
            }
        }
        let node = format!("{name}_select");
        let at = select.at;
        self.toml.line(at, String::new());
        self.toml.line(at, format!("[transforms.{node}]"));
        self.toml.line(at, "type = \"map\"".into());
        self.toml.line(at, format!("inputs = [{}]", quoted(input)));
        for (at, column, e) in fields {
            self.toml
                .line(at, format!("fields.{} = {}", quoted(&column), quoted(&e)));
        }
        let order: Vec<String> = order.iter().map(|c| quoted(c)).collect();
        self.toml
            .line(at, format!("select = [{}]", order.join(", ")));
        Some(Some(node))
    }

    fn aggregate(&mut self, name: &str, select: &Select, input: &str) -> Option<String> {
        let mut group_by = Vec::new();
        for g in &select.group_by {
            match g {
                Expr::Identifier(id) => group_by.push(super::parse_name(id)),
                other => {
                    self.problem(at_of(other), "GROUP BY takes column names".into(), Some("compute the key in a stream first (CREATE STREAM … AS SELECT expr AS key …)"));
                    return None;
                }
            }
        }
        // Aggregate calls in the select list, with their output names; the
        // HAVING clause refers to them by the same calls.
        let mut aggregates: Vec<(At, String, String, String)> = Vec::new();
        let mut unnamed = Unnamed::default();
        for item in &select.items {
            let (expr, alias) =
                self.select_item(item, "a table selects its GROUP BY columns and aggregates")?;
            match expr {
                Expr::Identifier(id) if group_by.contains(&super::parse_name(id)) => {}
                Expr::Function(_) => match self.aggregate_call(expr) {
                    Ok(call) => {
                        let column = alias.unwrap_or_else(|| unnamed.next());
                        aggregates.push((at_of(expr), column, call, expr.to_string().to_lowercase()));
                    }
                    Err((at, e)) => self.problem(at, e, None),
                },
                other => self.problem(
                    at_of(other),
                    format!("`{other}` is neither a GROUP BY column nor an aggregate"),
                    Some("a table selects its GROUP BY columns and COUNT, SUM, AVG, MIN or MAX of a column"),
                ),
            }
        }
        let having = match &select.having {
            Some(h) => {
                let names: Vec<(String, String)> = aggregates
                    .iter()
                    .map(|(_, c, _, src)| (src.clone(), c.clone()))
                    .collect();
                match self.expr(h, &names) {
                    Ok(e) => Some((at_of(h), e)),
                    Err((at, e)) => {
                        self.problem(at, e, None);
                        None
                    }
                }
            }
            None => None,
        };
        let at = select.at;
        self.toml.line(at, String::new());
        self.toml.line(at, format!("[transforms.{name}]"));
        self.toml.line(at, "type = \"aggregate\"".into());
        self.toml.line(at, format!("inputs = [{}]", quoted(input)));
        let keys: Vec<String> = group_by.iter().map(|g| quoted(g)).collect();
        self.toml
            .line(at, format!("group_by = [{}]", keys.join(", ")));
        for (at, column, call, _) in &aggregates {
            self.toml.line(
                *at,
                format!("aggregates.{} = {}", quoted(column), quoted(call)),
            );
        }
        if let Some((at, h)) = having {
            self.toml.line(at, format!("having = {}", quoted(&h)));
        }
        if let Some(w) = &select.window {
            // Without EMIT, or with EMIT FINAL, a window's result comes once,
            // when it closes; EMIT CHANGES sends every change.
            if select.emit_changes == Some(true) {
                self.toml.line(w.at, "emit = \"updates\"".into());
            }
            self.toml.line(w.at, format!("[transforms.{name}.window]"));
            let kind = match w.kind {
                WindowKind::Tumbling => "tumbling",
                WindowKind::Hopping => "hopping",
                WindowKind::Session => "session",
            };
            self.toml.line(w.at, format!("type = \"{kind}\""));
            // ksqlDB windows by the record's timestamp (ROWTIME).
            self.toml.line(w.at, "time_field = \"_timestamp\"".into());
            match w.kind {
                WindowKind::Session => self.toml.line(w.at, format!("gap_ms = {}", w.size_ms)),
                _ => self.toml.line(w.at, format!("size_ms = {}", w.size_ms)),
            }
            if let Some(hop) = w.advance_ms {
                self.toml.line(w.at, format!("hop_ms = {hop}"));
            }
            if let Some(grace) = w.grace_ms {
                self.toml
                    .line(w.at, format!("allowed_lateness_ms = {grace}"));
            }
            // A quiet partition stops holding windows open after a window's length.
            self.toml
                .line(w.at, format!("idle_timeout_ms = {}", w.size_ms));
        }
        Some(name.to_string())
    }

    fn aggregate_call(&self, expr: &Expr) -> Result<String, (At, String)> {
        let Expr::Function(f) = expr else {
            unreachable!()
        };
        let fname = f.name.to_string().to_lowercase();
        let args: Vec<&FunctionArg> = match &f.args {
            FunctionArguments::List(l) => l.args.iter().collect(),
            FunctionArguments::None => vec![],
            FunctionArguments::Subquery(_) => {
                return Err((
                    at_of(expr),
                    "a subquery is not an aggregate rill computes".into(),
                ))
            }
        };
        let arg = |i: usize| -> Result<String, (At, String)> {
            match args.get(i) {
                Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(e))) => self.expr(e, &[]),
                _ => Err((
                    at_of(expr),
                    format!("{} takes one column", fname.to_uppercase()),
                )),
            }
        };
        match (fname.as_str(), args.as_slice()) {
            ("count", _) => Ok("count()".into()),
            ("sum" | "avg" | "min" | "max", [_]) => Ok(format!("{fname}({})", arg(0)?)),
            _ => Err((
                at_of(expr),
                format!("{} is not an aggregate rill computes", fname.to_uppercase()),
            )),
        }
    }

    /// An SQL expression as a rill expression. `aggregates` turns aggregate
    /// calls (as written, lower case) into the output columns they fill.
    fn expr(&self, e: &Expr, aggregates: &[(String, String)]) -> Result<String, (At, String)> {
        let r = |e: &Expr| self.expr(e, aggregates);
        Ok(match e {
            Expr::Identifier(id) => super::parse_name(id),
            Expr::CompoundIdentifier(ids) => super::parse_name(ids.last().expect("a name")),
            Expr::Value(v) => match &v.value {
                Value::Number(n, _) => n.clone(),
                Value::SingleQuotedString(s) => {
                    format!("'{}'", s.replace('\\', "\\\\").replace('\'', "\\'"))
                }
                Value::Boolean(b) => b.to_string(),
                Value::Null => "null".into(),
                other => {
                    return Err((
                        at_of(e),
                        format!("the literal {other} is not one rill reads"),
                    ))
                }
            },
            Expr::Nested(inner) => format!("({})", r(inner)?),
            Expr::UnaryOp { op, expr } => match op {
                UnaryOperator::Not => format!("!({})", r(expr)?),
                UnaryOperator::Minus => format!("-({})", r(expr)?),
                UnaryOperator::Plus => r(expr)?,
                other => {
                    return Err((
                        at_of(e),
                        format!("the operator {other} is not one rill has"),
                    ))
                }
            },
            Expr::BinaryOp { left, op, right } => {
                let op = match op {
                    BinaryOperator::Plus | BinaryOperator::StringConcat => "+",
                    BinaryOperator::Minus => "-",
                    BinaryOperator::Multiply => "*",
                    BinaryOperator::Divide => "/",
                    BinaryOperator::Modulo => "%",
                    BinaryOperator::Gt => ">",
                    BinaryOperator::Lt => "<",
                    BinaryOperator::GtEq => ">=",
                    BinaryOperator::LtEq => "<=",
                    BinaryOperator::Eq => "==",
                    BinaryOperator::NotEq => "!=",
                    BinaryOperator::And => "&&",
                    BinaryOperator::Or => "||",
                    other => {
                        return Err((
                            at_of(e),
                            format!("the operator {other} is not one rill has"),
                        ))
                    }
                };
                format!("{} {op} {}", r(left)?, r(right)?)
            }
            Expr::Trim {
                expr,
                trim_where: None,
                trim_what: None,
                trim_characters: None,
            } => {
                format!("({}).trim()", r(expr)?)
            }
            Expr::IsNull(x) => format!("{} == null", r(x)?),
            Expr::IsNotNull(x) => format!("{} != null", r(x)?),
            Expr::In {
                expr,
                target: InTarget::List(list),
                negated,
                ..
            } => {
                let items: Result<Vec<String>, _> = list.iter().map(r).collect();
                let test = format!("{} in [{}]", r(expr)?, items?.join(", "));
                if *negated {
                    format!("!({test})")
                } else {
                    test
                }
            }
            Expr::Between {
                expr,
                negated,
                low,
                high,
            } => {
                let x = r(expr)?;
                let test = format!("({x} >= {} && {x} <= {})", r(low)?, r(high)?);
                if *negated {
                    format!("!{test}")
                } else {
                    test
                }
            }
            Expr::Case {
                operand,
                conditions,
                else_result,
                ..
            } => {
                let mut out = match else_result {
                    Some(x) => r(x)?,
                    None => "null".into(),
                };
                for c in conditions.iter().rev() {
                    let cond = match operand {
                        Some(o) => format!("{} == {}", r(o)?, r(&c.condition)?),
                        None => r(&c.condition)?,
                    };
                    out = format!("({cond}) ? {} : ({out})", r(&c.result)?);
                }
                out
            }
            Expr::Cast {
                kind: CastKind::Cast,
                expr,
                data_type,
                ..
            } => {
                let f = match data_type {
                    DataType::BigInt(_) | DataType::Int(_) | DataType::Integer(_) => "int",
                    DataType::Double(_)
                    | DataType::Float(_)
                    | DataType::Real
                    | DataType::Decimal(_) => "double",
                    DataType::Varchar(_) | DataType::String(_) | DataType::Text => "string",
                    other => {
                        return Err((at_of(e), format!("CAST to {other} is not one rill has")))
                    }
                };
                format!("{f}({})", r(expr)?)
            }
            Expr::Function(f) => {
                let written = e.to_string().to_lowercase();
                if let Some((_, column)) = aggregates.iter().find(|(src, _)| *src == written) {
                    return Ok(column.clone());
                }
                let fname = f.name.to_string().to_uppercase();
                let args: Vec<&Expr> = match &f.args {
                    FunctionArguments::List(l) => l
                        .args
                        .iter()
                        .filter_map(|a| match a {
                            FunctionArg::Unnamed(FunctionArgExpr::Expr(x)) => Some(x),
                            _ => None,
                        })
                        .collect(),
                    _ => vec![],
                };
                let one = |m: &str| -> Result<String, (At, String)> {
                    match args.as_slice() {
                        [x] => Ok(m.replace("{}", &r(x)?)),
                        _ => Err((at_of(e), format!("{fname} takes one argument"))),
                    }
                };
                match fname.as_str() {
                    "UCASE" | "UPPER" => one("({}).upperAscii()")?,
                    "LCASE" | "LOWER" => one("({}).lowerAscii()")?,
                    "TRIM" => one("({}).trim()")?,
                    "LEN" | "LENGTH" => one("size({})")?,
                    "WORD_COUNT" => one("({}).wordCount()")?,
                    "ABS" => one("abs({})")?,
                    "COUNT" | "SUM" | "AVG" | "MIN" | "MAX" => {
                        return Err((
                            at_of(e),
                            format!(
                            "{fname} belongs in a table's select list (CREATE TABLE … GROUP BY)"
                        ),
                        ))
                    }
                    _ => return Err((at_of(e), format!("{fname} is not a function rill has"))),
                }
            }
            other => {
                return Err((
                    at_of(other),
                    format!("`{other}` is not an expression rill reads"),
                ))
            }
        })
    }
}

/// An Avro record schema for a stream's columns.
fn avro_of(name: &str, columns: &[(String, String, At)]) -> Result<String, (At, String)> {
    let mut fields = Vec::new();
    for (column, ty, at) in columns {
        let avro = match ty.as_str() {
            "BOOLEAN" => "boolean",
            "INT" | "INTEGER" => "int",
            "BIGINT" => "long",
            "DOUBLE" => "double",
            "VARCHAR" | "STRING" => "string",
            "BYTES" => "bytes",
            other => {
                return Err((
                    *at,
                    format!("column `{column}` has type {other}, which rill does not read"),
                ))
            }
        };
        fields.push(serde_json::json!({"name": column, "type": avro}));
    }
    Ok(serde_json::json!({"type": "record", "name": name, "fields": fields}).to_string())
}

/// A select item's expression and its `AS` name, when it is one.
/// ksqlDB's names for the unnamed columns of a select list, in order.
#[derive(Default)]
struct Unnamed(usize);

impl Unnamed {
    fn next(&mut self) -> String {
        self.0 += 1;
        format!("KSQL_COL_{}", self.0 - 1)
    }
}
