//! The validated job: a graph in topological order whose edges carry row
//! schemas and whose expressions are compiled. Built without touching the
//! network, so `jobctl validate` works anywhere.

pub mod aggregate;

pub use aggregate::AggregatePlan;

use crate::expr::{did_you_mean, Expr};
use crate::format::avro;
use crate::record::{Field, FieldType, RowSchema};
use crate::spec::{
    FileSinkConfig, Format, JobConfig, KafkaSinkConfig, KafkaSourceConfig, PostgresSinkConfig,
    Roll, SinkConfig, SourceConfig, Spec, SpecError, SpecErrors, TransformConfig,
};
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Arc;

/// An output of a node: node index and output port (routes have several).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Port {
    pub node: usize,
    pub output: usize,
}

#[derive(Debug, Clone)]
pub struct SourcePlan {
    pub config: KafkaSourceConfig,
    /// The reader schema, as parsed and as text (what sinks may register).
    pub reader: Arc<apache_avro::Schema>,
    pub reader_text: String,
}

#[derive(Debug, Clone)]
pub enum MapTarget {
    Replace(usize),
    Append,
}

#[derive(Debug, Clone)]
pub struct MapPlan {
    pub computed: Vec<(Expr, MapTarget, FieldType)>,
    /// Fields kept after `drop`, when it drops any.
    pub keep: Option<Vec<usize>>,
}

#[derive(Debug, Clone)]
pub enum SinkPlan {
    Kafka {
        config: KafkaSinkConfig,
        key: Option<Expr>,
    },
    Stdout,
    File {
        config: FileSinkConfig,
        dir: PathBuf,
    },
    Postgres {
        config: PostgresSinkConfig,
        fallback_dir: Option<PathBuf>,
    },
}

#[derive(Debug, Clone)]
pub enum NodeKind {
    Source(SourcePlan),
    Filter(Expr),
    Map(MapPlan),
    /// Named conditions; output i is route i, the last output `_unmatched`.
    Route(Vec<(String, Expr)>),
    Aggregate(AggregatePlan),
    /// Named rules; a record breaking one is dead-lettered.
    Validate(Vec<(String, Expr)>),
    Sink(SinkPlan),
}

#[derive(Debug, Clone)]
pub struct Node {
    /// `sources.x`, `transforms.y` or `sinks.z`.
    pub id: String,
    pub name: String,
    pub kind: NodeKind,
    pub inputs: Vec<Port>,
    /// Schema of each output port (sinks have none).
    pub outputs: Vec<RowSchema>,
    /// Name of each output port as inputs refer to it.
    pub output_names: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Plan {
    pub path: PathBuf,
    pub job: JobConfig,
    /// Topological order: every node comes after its inputs.
    pub nodes: Vec<Node>,
    /// The sink that receives dead letters, when `[job] dead_letter_sink`
    /// names one.
    pub dead_letter_sink: Option<usize>,
}

/// The rows a dead-letter sink receives.
pub fn dead_letter_schema() -> RowSchema {
    let mut raw = Field::new("raw_payload", FieldType::String);
    raw.nullable = true;
    RowSchema {
        name: "rill.dead_letter".into(),
        fields: vec![
            raw,
            Field::new("reason", FieldType::String),
            Field::new("source_topic", FieldType::String),
            Field::new("source_partition", FieldType::Int),
            Field::new("source_offset", FieldType::Int),
        ],
    }
}

impl Plan {
    pub fn sources(&self) -> impl Iterator<Item = (usize, &Node, &SourcePlan)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match &n.kind {
                NodeKind::Source(s) => Some((i, n, s)),
                _ => None,
            })
    }

    pub fn sinks(&self) -> impl Iterator<Item = (usize, &Node, &SinkPlan)> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match &n.kind {
                NodeKind::Sink(s) => Some((i, n, s)),
                _ => None,
            })
    }

    /// Schema of the rows arriving at node `i` (its first input's; for a
    /// sink without inputs, the dead letters').
    pub fn input_schema(&self, i: usize) -> &RowSchema {
        match self.nodes[i].inputs.first() {
            Some(p) => &self.nodes[p.node].outputs[p.output],
            None => &self.nodes[i].outputs[0],
        }
    }

    /// Validates a parsed job file into a plan, or returns every error.
    pub fn build(spec: &Spec) -> Result<Plan, SpecErrors> {
        let mut b = Builder {
            spec,
            errors: Vec::new(),
        };
        let plan = b.build();
        if b.errors.is_empty() {
            Ok(plan)
        } else {
            let mut errors = b.errors;
            errors.sort_by_key(|e| e.line);
            errors.dedup();
            Err(SpecErrors {
                path: spec.path.clone(),
                errors,
            })
        }
    }
}

struct Builder<'a> {
    spec: &'a Spec,
    errors: Vec<SpecError>,
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Source,
    Transform,
    Sink,
}

impl Kind {
    fn table(self) -> &'static str {
        match self {
            Kind::Source => "sources",
            Kind::Transform => "transforms",
            Kind::Sink => "sinks",
        }
    }
}

impl Builder<'_> {
    fn error(
        &mut self,
        kind: Kind,
        name: &str,
        key: Option<&str>,
        message: String,
        hint: Option<String>,
    ) {
        let loc = self.spec.locate();
        let line = match key {
            Some(k) => loc.key(kind.table(), name, k),
            None => loc.component(kind.table(), name),
        };
        self.errors.push(SpecError {
            line,
            component: Some(format!("{}.{name}", kind.table())),
            message,
            hint,
        });
    }

    fn build(&mut self) -> Plan {
        let spec = self.spec;
        // Every component and the outputs it offers to others.
        let mut comps: Vec<(Kind, String)> = Vec::new();
        comps.extend(spec.sources.keys().map(|n| (Kind::Source, n.clone())));
        comps.extend(spec.transforms.keys().map(|n| (Kind::Transform, n.clone())));
        comps.extend(spec.sinks.keys().map(|n| (Kind::Sink, n.clone())));
        let mut seen_names: HashMap<&str, Kind> = HashMap::new();
        for (k, n) in &comps {
            if let Some(prev) = seen_names.insert(n.as_str(), *k) {
                self.error(
                    *k,
                    n,
                    None,
                    format!("the name `{n}` is also used in [{}]", prev.table()),
                    Some(
                        "component names must be unique across sources, transforms and sinks"
                            .into(),
                    ),
                );
            }
        }
        let mut outputs: BTreeMap<String, (String, usize)> = BTreeMap::new();
        for n in spec.sources.keys() {
            outputs.insert(n.clone(), (n.clone(), 0));
        }
        for (n, t) in &spec.transforms {
            match t {
                TransformConfig::Route(r) => {
                    for (i, route) in r.routes.keys().enumerate() {
                        outputs.insert(format!("{n}.{route}"), (n.clone(), i));
                    }
                    outputs.insert(format!("{n}._unmatched"), (n.clone(), r.routes.len()));
                }
                _ => {
                    outputs.insert(n.clone(), (n.clone(), 0));
                }
            }
        }

        // Resolve inputs to (component, port).
        let mut edges: BTreeMap<String, Vec<(String, usize)>> = BTreeMap::new();
        let with_inputs: Vec<(Kind, &String, &[String])> = spec
            .transforms
            .iter()
            .map(|(n, t)| (Kind::Transform, n, t.inputs()))
            .chain(spec.sinks.iter().map(|(n, s)| (Kind::Sink, n, s.inputs())))
            .collect();
        let dead_letter_sink = spec.job.dead_letter_sink.clone();
        for (kind, name, inputs) in with_inputs {
            let is_dead_letter_sink =
                kind == Kind::Sink && dead_letter_sink.as_deref() == Some(name.as_str());
            if is_dead_letter_sink && !inputs.is_empty() {
                self.error(
                    kind,
                    name,
                    Some("inputs"),
                    "the dead-letter sink takes no `inputs`".into(),
                    Some("it receives the job's dead letters; write `inputs = []`".into()),
                );
            }
            if inputs.is_empty() && !is_dead_letter_sink {
                self.error(
                    kind,
                    name,
                    Some("inputs"),
                    "`inputs` is empty".into(),
                    Some("name at least one source or transform".into()),
                );
            }
            let mut resolved = Vec::new();
            for input in inputs {
                match outputs.get(input) {
                    Some(o) => resolved.push(o.clone()),
                    None => {
                        let hint =
                            if let Some(TransformConfig::Route(r)) = spec.transforms.get(input) {
                                let mut names: Vec<String> =
                                    r.routes.keys().map(|k| format!("`{input}.{k}`")).collect();
                                names.push(format!("`{input}._unmatched`"));
                                Some(format!(
                                    "`{input}` is a route; name one of its outputs: {}",
                                    names.join(", ")
                                ))
                            } else if spec.sinks.contains_key(input) {
                                Some(format!("`{input}` is a sink; sinks have no outputs"))
                            } else {
                                did_you_mean(input, outputs.keys().map(String::as_str))
                                    .map(|m| format!("did you mean `{m}`?"))
                                    .or_else(|| {
                                        Some(format!(
                                            "known outputs: {}",
                                            outputs.keys().cloned().collect::<Vec<_>>().join(", ")
                                        ))
                                    })
                            };
                        self.error(
                            kind,
                            name,
                            Some("inputs"),
                            format!("unknown input `{input}`"),
                            hint,
                        );
                    }
                }
            }
            edges.insert(name.clone(), resolved);
        }

        // Topological order (sources first), reporting cycles.
        let mut order: Vec<(Kind, String)> = spec
            .sources
            .keys()
            .map(|n| (Kind::Source, n.clone()))
            .collect();
        let mut state: HashMap<String, u8> = HashMap::new(); // 1 visiting, 2 done
        for n in spec.sources.keys() {
            state.insert(n.clone(), 2);
        }
        fn visit(
            n: &str,
            edges: &BTreeMap<String, Vec<(String, usize)>>,
            state: &mut HashMap<String, u8>,
            stack: &mut Vec<String>,
            order: &mut Vec<String>,
            cycles: &mut Vec<Vec<String>>,
        ) {
            match state.get(n) {
                Some(2) => return,
                Some(1) => {
                    let start = stack.iter().position(|s| s == n).unwrap_or(0);
                    let mut cycle = stack[start..].to_vec();
                    cycle.push(n.to_string());
                    cycles.push(cycle);
                    return;
                }
                _ => {}
            }
            state.insert(n.to_string(), 1);
            stack.push(n.to_string());
            for (dep, _) in edges.get(n).into_iter().flatten() {
                visit(dep, edges, state, stack, order, cycles);
            }
            stack.pop();
            state.insert(n.to_string(), 2);
            order.push(n.to_string());
        }
        let mut cycles = Vec::new();
        let mut topo = Vec::new();
        for n in spec.transforms.keys().chain(spec.sinks.keys()) {
            visit(
                n,
                &edges,
                &mut state,
                &mut Vec::new(),
                &mut topo,
                &mut cycles,
            );
        }
        for cycle in cycles {
            let first = cycle[0].clone();
            self.error(
                Kind::Transform,
                &first,
                Some("inputs"),
                format!("inputs form a cycle: {}", cycle.join(" -> ")),
                Some("a job is a graph without loops; break the cycle by changing one of these `inputs`".into()),
            );
        }
        for n in topo {
            let kind = if spec.transforms.contains_key(&n) {
                Kind::Transform
            } else {
                Kind::Sink
            };
            order.push((kind, n));
        }

        // Build nodes in order, deriving schemas edge by edge.
        let mut nodes: Vec<Node> = Vec::new();
        let mut index: HashMap<String, usize> = HashMap::new();
        for (kind, name) in order {
            let inputs: Vec<Port> = edges
                .get(&name)
                .into_iter()
                .flatten()
                .filter_map(|(dep, port)| {
                    index.get(dep).map(|&node| Port {
                        node,
                        output: *port,
                    })
                })
                .collect();
            let in_schema = match self.input_schema(kind, &name, &inputs, &nodes) {
                Some(s) => Some(s),
                None if kind == Kind::Source => None,
                None if kind == Kind::Sink
                    && spec.job.dead_letter_sink.as_deref() == Some(name.as_str()) =>
                {
                    Some(dead_letter_schema())
                }
                None => continue,
            };
            let node = match kind {
                Kind::Source => self.source(&name),
                Kind::Transform => self.transform(&name, in_schema.unwrap()),
                Kind::Sink => self.sink(&name, in_schema.unwrap()),
            };
            if let Some((nk, outs, out_names)) = node {
                index.insert(name.clone(), nodes.len());
                nodes.push(Node {
                    id: format!("{}.{name}", kind.table()),
                    name,
                    kind: nk,
                    inputs,
                    outputs: outs,
                    output_names: out_names,
                });
            }
        }
        let mut dead_letter_index = None;
        if let Some(d) = &spec.job.dead_letter_sink {
            match nodes.iter().position(|n| n.id == format!("sinks.{d}")) {
                Some(i) => dead_letter_index = Some(i),
                None if !spec.sinks.contains_key(d) => self.errors.push(SpecError {
                    line: self.spec.locate().key("job", "", "dead_letter_sink"),
                    component: Some("job".into()),
                    message: format!("`dead_letter_sink` names `{d}`, which is not a sink"),
                    hint: did_you_mean(d, spec.sinks.keys().map(String::as_str))
                        .map(|m| format!("did you mean `{m}`?")),
                }),
                None => {}
            }
        }
        if spec.sinks.is_empty() {
            self.errors.push(SpecError {
                line: self.spec.locate().table("job"),
                component: None,
                message: "the job has no sinks".into(),
                hint: Some("add a [sinks.NAME] with `inputs = [...]`".into()),
            });
        }
        Plan {
            path: spec.path.clone(),
            job: spec.job.clone(),
            nodes,
            dead_letter_sink: dead_letter_index,
        }
    }

    fn input_schema(
        &mut self,
        kind: Kind,
        name: &str,
        inputs: &[Port],
        nodes: &[Node],
    ) -> Option<RowSchema> {
        let first = inputs.first()?;
        let schema = nodes[first.node].outputs[first.output].clone();
        for p in &inputs[1..] {
            let other = &nodes[p.node].outputs[p.output];
            let same = other.fields.len() == schema.fields.len()
                && other
                    .fields
                    .iter()
                    .zip(&schema.fields)
                    .all(|(a, b)| a.name == b.name && a.ty == b.ty);
            if !same {
                self.error(
                    kind,
                    name,
                    Some("inputs"),
                    format!("inputs `{}` and `{}` carry different fields", nodes[first.node].output_names[first.output], nodes[p.node].output_names[p.output]),
                    Some("every input of one component must have the same schema; add a `map` to line them up".into()),
                );
                return None;
            }
        }
        Some(schema)
    }

    fn source(&mut self, name: &str) -> Option<(NodeKind, Vec<RowSchema>, Vec<String>)> {
        let SourceConfig::Kafka(config) = &self.spec.sources[name];
        let path = self.spec.base_dir().join(&config.schema);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) => {
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
                    format!("schema file `{}`: {e}", path.display()),
                    None,
                );
                None
            }
        }
    }

    fn compile(
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
                // Lined up under the expression as the hint prints it.
                let caret = format!("{src}\n        {}^", " ".repeat(e.pos));
                self.error(
                    kind,
                    name,
                    Some(key),
                    format!("in `{key}` at column {}: {}", e.pos + 1, e.message),
                    Some(caret),
                );
                None
            }
        }
    }

    fn transform(
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

    fn sink(
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

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(text: &str) -> Result<Plan, SpecErrors> {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("t.avsc"),
            r#"{"type":"record","name":"T","fields":[{"name":"id","type":"long"},{"name":"amount","type":"double"}]}"#,
        )
        .unwrap();
        let path = dir.path().join("job.toml");
        let spec = Spec::parse(&path, text.to_string()).unwrap();
        Plan::build(&spec)
    }

    const HEAD: &str = "[job]\nname = \"t\"\n\n[sources.input]\ntype = \"kafka\"\ntopic = \"in\"\nformat = \"json\"\nschema = \"t.avsc\"\n";

    #[test]
    fn builds_a_route_and_map_graph() {
        let p = plan(&format!(
            "{HEAD}\n[transforms.split]\ntype = \"route\"\ninputs = [\"input\"]\nroutes.big = \"amount > 10.0\"\n\n[transforms.tag]\ntype = \"map\"\ninputs = [\"split.big\"]\nfields.amount = \"amount * 2\"\nfields.label = \"'big'\"\n\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"tag\", \"split._unmatched\"]\n"
        ));
        let err = p.unwrap_err();
        assert_eq!(err.errors.len(), 1, "{err}");
        assert!(err.errors[0].message.contains("carry different fields"));
        assert_eq!(err.errors[0].line, 23);
    }

    #[test]
    fn reports_every_graph_and_expression_error_at_once() {
        let err = plan(&format!(
            "{HEAD}\n[transforms.a]\ntype = \"filter\"\ninputs = [\"b\"]\ncondition = \"amount > 1\"\n\n[transforms.b]\ntype = \"filter\"\ninputs = [\"a\"]\ncondition = \"amount > 1\"\n\n[transforms.c]\ntype = \"filter\"\ninputs = [\"inptu\"]\ncondition = \"amount > 1\"\n\n[transforms.d]\ntype = \"filter\"\ninputs = [\"input\"]\ncondition = \"amuont > 1\"\n\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"d\"]\n"
        ))
        .unwrap_err();
        let msgs: Vec<String> = err
            .errors
            .iter()
            .map(|e| format!("{} {}", e.line, e.message))
            .collect();
        assert_eq!(
            msgs,
            vec![
                "12 inputs form a cycle: a -> b -> a".to_string(),
                "22 unknown input `inptu`".to_string(),
                "28 in `condition` at column 1: unknown field `amuont`; did you mean `amount`?"
                    .to_string(),
            ]
        );
        assert_eq!(err.errors[1].hint.as_deref(), Some("did you mean `input`?"));
    }

    #[test]
    fn a_missing_schema_file_names_the_line_and_path() {
        let text = format!(
            "{}\n[sinks.out]\ntype = \"stdout\"\ninputs = [\"input\"]\n",
            HEAD.replace("t.avsc", "missing.avsc")
        );
        let err = plan(&text).unwrap_err();
        assert_eq!(err.errors[0].line, 8);
        assert!(
            err.errors[0].message.starts_with("cannot read schema file"),
            "{}",
            err.errors[0].message
        );
    }
}
