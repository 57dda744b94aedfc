//! The validated job: a graph in topological order whose edges carry row
//! schemas and whose expressions are compiled. Built without touching the
//! network, so `jobctl validate` works anywhere.

pub mod aggregate;
pub mod explain;
mod graph;
mod sinks;
mod transforms;

pub use aggregate::AggregatePlan;

use crate::expr::Expr;
use crate::record::{Field, FieldType, RowSchema};
use crate::spec::{
    FileSinkConfig, JobConfig, KafkaSinkConfig, KafkaSourceConfig, PostgresSinkConfig, Spec,
    SpecErrors,
};
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

/// The rows a dead-letter sink receives. The payload is text, so that a
/// table or file of them reads as the input did; bytes that are not text
/// (or hold a NUL, which Postgres text refuses) are stored in base64, and
/// `raw_payload_encoding` says which (`utf8` or `base64`).
pub fn dead_letter_schema() -> RowSchema {
    let mut raw = Field::new("raw_payload", FieldType::String);
    raw.nullable = true;
    let mut encoding = Field::new("raw_payload_encoding", FieldType::String);
    encoding.nullable = true;
    RowSchema {
        name: "rill.dead_letter".into(),
        fields: vec![
            raw,
            encoding,
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

    /// The nodes between sources and sinks, in plan order.
    pub fn transforms(&self) -> impl Iterator<Item = &Node> {
        self.nodes
            .iter()
            .filter(|n| !matches!(n.kind, NodeKind::Source(_) | NodeKind::Sink(_)))
    }

    /// What the state of each stateful transform means, by its name (see
    /// [`aggregate::AggregatePlan::state_facets`]).
    pub fn state_meaning(&self) -> std::collections::BTreeMap<String, Vec<(String, String)>> {
        self.nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match &n.kind {
                NodeKind::Aggregate(a) => {
                    Some((n.name.clone(), a.state_facets(self.input_schema(i))))
                }
                _ => None,
            })
            .collect()
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
        let mut b = graph::Builder {
            spec,
            errors: Vec::new(),
        };
        let plan = b.build();
        if b.errors.is_empty() {
            Ok(plan)
        } else {
            let mut errors = b.errors;
            errors.sort_by_key(|e| (e.line, e.column));
            errors.dedup();
            Err(SpecErrors {
                path: spec.path.clone(),
                errors,
                text: Some(spec.text.clone()),
            })
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
                "28 in `condition`: unknown field `amuont`; did you mean `amount`?".to_string(),
            ]
        );
        assert_eq!(err.errors[1].hint.as_deref(), Some("did you mean `input`?"));
        // The expression's error is placed at the field inside it.
        assert_eq!((err.errors[2].column, err.errors[2].len), (14, 1));
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
