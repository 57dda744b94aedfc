//! `jobctl explain`: the plan as a person reads it — each node, the edges
//! into it with the rows they carry, where records cross workers, what
//! keeps state and where its changelog goes — or as Graphviz.

use super::{NodeKind, Plan, SinkPlan};
use crate::record::RowSchema;
use std::fmt::Write;

fn schema_text(s: &RowSchema) -> String {
    let fields: Vec<String> = s
        .fields
        .iter()
        .map(|f| {
            format!(
                "{}: {}{}",
                f.name,
                f.ty.name(),
                if f.nullable { "?" } else { "" }
            )
        })
        .collect();
    format!("{{{}}}", fields.join(", "))
}

/// The port's name after its node's (`approved` of `split.approved`),
/// for a node with several outputs.
fn port_name(plan: &Plan, port: &super::Port) -> Option<String> {
    let from = &plan.nodes[port.node];
    let name = from.output_names.get(port.output)?;
    (from.outputs.len() > 1).then(|| {
        name.strip_prefix(&format!("{}.", from.name))
            .unwrap_or(name)
            .to_string()
    })
}

fn plural(n: i32, one: &str) -> String {
    format!("{n} {one}{}", if n == 1 { "" } else { "s" })
}

/// What a node does, on one line.
fn what(plan: &Plan, i: usize) -> String {
    let node = &plan.nodes[i];
    let job = &plan.job;
    match &node.kind {
        NodeKind::Source(s) => format!(
            "kafka topic {} ({}, {}): partition p is read by worker p mod the workers{}",
            s.config.topic,
            format!("{:?}", s.config.format).to_lowercase(),
            plural(s.config.partitions, "partition"),
            match crate::connectors::kafka_config::shown(&crate::spec::property_strings(
                &s.config.kafka
            )) {
                own if own.is_empty() => String::new(),
                own => format!("; its consumer sets {}", own.join(", ")),
            }
        ),
        NodeKind::Filter(_) => "filter: keeps the records its condition holds for".into(),
        NodeKind::Map(m) => format!(
            "map: computes {}{}",
            plural(m.computed.len() as i32, "field"),
            if m.keep.is_some() { ", drops fields" } else { "" }
        ),
        NodeKind::Route(routes) => {
            let names: Vec<&str> = routes.iter().map(|(n, _)| n.as_str()).collect();
            format!("route: {} and _unmatched", names.join(", "))
        }
        NodeKind::Validate(rules) => format!(
            "validate: {}; a record that breaks one goes to the dead letters",
            plural(rules.len() as i32, "rule")
        ),
        NodeKind::Aggregate(a) => {
            let input = plan.input_schema(i);
            let keys: Vec<&str> = a
                .group_by
                .iter()
                .map(|k| input.fields[*k].name.as_str())
                .collect();
            let aggs: Vec<&str> = a.aggs.iter().map(|x| x.name.as_str()).collect();
            format!(
                "aggregate {} by {}{}: records cross workers by key; state in changelog topic {} (compacted)",
                aggs.join(", "),
                if keys.is_empty() { "nothing".to_string() } else { keys.join(", ") },
                match &a.window {
                    Some(w) => format!(", {:?} windows", w.shape).to_lowercase(),
                    None => String::new(),
                },
                job.changelog_topic(&node.name)
            )
        }
        NodeKind::Sink(SinkPlan::Kafka { config, key }) => format!(
            "kafka topic {} ({}, {}){}: in a cluster a record crosses to the process that owns its partition (p mod the processes)",
            config.topic,
            format!("{:?}", config.format).to_lowercase(),
            plural(config.partitions, "partition"),
            if key.is_some() { ", keyed by an expression" } else { "" }
        ),
        NodeKind::Sink(SinkPlan::Stdout) => "stdout: one line of JSON per record".into(),
        NodeKind::Sink(SinkPlan::File { config, dir }) => {
            use crate::spec::{Compression, FileFormat, Roll};
            let format = match (config.format, config.compression) {
                (FileFormat::Parquet, _) => "parquet",
                (FileFormat::Csv, Compression::Gzip) => "csv, gzip",
                (FileFormat::Csv, Compression::None) => "csv",
            };
            let roll = match config.roll {
                Roll::Epoch => "one per epoch and process",
                Roll::Window => {
                    "one per closed window (per process that holds some of its rows), written in the epoch the window closes"
                }
            };
            format!(
                "files in {} ({format}): {roll}, renamed into place at commit",
                dir.display()
            )
        }
        NodeKind::Sink(SinkPlan::Postgres { config, .. }) => format!(
            "postgres table {}: an epoch's rows and its progress row in one transaction",
            config.table
        ),
    }
}

/// The plan as text.
pub fn text(plan: &Plan) -> String {
    let job = &plan.job;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "job {}: epochs every {} ms, {}; epoch log {}; writers {}-w<process>",
        job.name,
        job.checkpoint_interval_ms,
        match job.guarantee {
            crate::spec::Guarantee::ExactlyOnce => "exactly once",
            _ => "at least once",
        },
        job.epoch_log_topic(),
        job.name
    );
    let _ = writeln!(out, "kafka at {}", kafka_text(&job.brokers));
    if job.writer_brokers() != job.brokers {
        let _ = writeln!(
            out,
            "kafka sinks write with {}",
            crate::connectors::kafka_config::shown(&job.writer_kafka).join(", ")
        );
    }
    for (i, node) in plan.nodes.iter().enumerate() {
        let _ = writeln!(out, "\n{}", node.id);
        let _ = writeln!(out, "  {}", what(plan, i));
        for port in &node.inputs {
            let from = &plan.nodes[port.node];
            let name = match port_name(plan, port) {
                Some(p) => format!("{}.{p}", from.id),
                None => from.id.clone(),
            };
            let _ = writeln!(
                out,
                "  <- {name} {}",
                schema_text(&from.outputs[port.output])
            );
        }
    }
    let dead = match plan.dead_letter_sink {
        Some(i) => plan.nodes[i].id.clone(),
        None => format!("topic {}", job.dead_letter_topic()),
    };
    let _ = writeln!(out, "\ndead letters go to {dead}");
    out
}

/// Where the brokers are and the client properties to reach them,
/// credentials masked.
fn kafka_text(brokers: &crate::connectors::kafka_config::Brokers) -> String {
    match brokers.shown() {
        p if p.is_empty() => format!("{brokers} (plaintext, no authentication)"),
        p => format!("{brokers} with {}", p.join(", ")),
    }
}

/// The plan as the web page draws it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Graph {
    pub nodes: Vec<GraphNode>,
    pub edges: Vec<GraphEdge>,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GraphNode {
    /// `sources.x`, `transforms.y`, `sinks.z`.
    pub id: String,
    /// What it does, as `jobctl explain` says it.
    pub what: String,
    /// Its distance from the sources: the column it is drawn in.
    pub depth: usize,
}

#[derive(Debug, Clone, serde::Serialize)]
pub struct GraphEdge {
    pub from: String,
    pub to: String,
    /// The route it leaves by, for a node with several outputs.
    pub port: Option<String>,
}

pub fn graph(plan: &Plan) -> Graph {
    // Nodes come in topological order: a node's depth is one past its
    // deepest input's.
    let mut depth = vec![0usize; plan.nodes.len()];
    for (i, node) in plan.nodes.iter().enumerate() {
        depth[i] = node
            .inputs
            .iter()
            .map(|p| depth[p.node] + 1)
            .max()
            .unwrap_or(0);
    }
    Graph {
        nodes: plan
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| GraphNode {
                id: n.id.clone(),
                what: what(plan, i),
                depth: depth[i],
            })
            .collect(),
        edges: plan
            .nodes
            .iter()
            .flat_map(|n| {
                n.inputs.iter().map(|p| GraphEdge {
                    from: plan.nodes[p.node].id.clone(),
                    to: n.id.clone(),
                    port: port_name(plan, p),
                })
            })
            .collect(),
    }
}

/// The plan as a Graphviz digraph: a box per node, an edge per input with
/// the fields it carries.
pub fn dot(plan: &Plan) -> String {
    let mut out = format!("digraph \"{}\" {{\n  rankdir=LR;\n", plan.job.name);
    for node in &plan.nodes {
        let shape = match node.kind {
            NodeKind::Source(_) => "cds",
            NodeKind::Sink(_) => "folder",
            _ => "box",
        };
        let _ = writeln!(out, "  \"{}\" [shape={shape}];", node.id);
    }
    for node in &plan.nodes {
        for port in &node.inputs {
            let from = &plan.nodes[port.node];
            let fields: Vec<&str> = from.outputs[port.output]
                .fields
                .iter()
                .map(|f| f.name.as_str())
                .collect();
            let route = port_name(plan, port).map_or(String::new(), |p| format!("{p}: "));
            let _ = writeln!(
                out,
                "  \"{}\" -> \"{}\" [label=\"{route}{}\"];",
                from.id,
                node.id,
                fields.join(", ")
            );
        }
    }
    out.push_str("}\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::Spec;

    fn plan(job: &str) -> Plan {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("jobs")
            .join(job);
        Plan::build(&Spec::load(&path).unwrap()).unwrap()
    }

    #[test]
    fn the_bank_plan_names_every_node_its_inputs_and_where_records_cross() {
        let t = text(&plan("bank.toml"));
        for node in [
            "sources.transactions",
            "transforms.split",
            "transforms.approve",
            "transforms.reject",
            "sinks.approved",
            "sinks.rejected",
        ] {
            assert!(t.contains(&format!("\n{node}\n")), "{node}:\n{t}");
        }
        assert!(t.contains("  <- transforms.split.approved {"), "{t}");
        assert!(t.contains("  <- transforms.split._unmatched {"), "{t}");
        assert!(
            t.contains("kafka topic APPROVED (avro, 1 partition): in a cluster a record crosses to the process that owns its partition"),
            "{t}"
        );
        assert!(
            t.contains("dead letters go to topic bank-dead-letters"),
            "{t}"
        );
    }

    #[test]
    fn an_aggregate_says_it_keeps_state_in_its_changelog() {
        let t = text(&plan("rejected.toml"));
        assert!(
            t.contains("records cross workers by key; state in changelog topic "),
            "{t}"
        );
    }

    #[test]
    fn a_file_sink_says_how_it_rolls_and_compresses() {
        let t = text(&plan("turnstile.toml"));
        assert!(
            t.contains("turnstile (csv, gzip): one per closed window (per process that holds some of its rows), written in the epoch the window closes, renamed into place at commit"),
            "{t}"
        );
    }

    #[test]
    fn dot_draws_an_edge_per_input() {
        let d = dot(&plan("bank.toml"));
        assert!(d.starts_with("digraph \"bank\" {"), "{d}");
        assert!(
            d.contains("\"transforms.split\" -> \"transforms.approve\" [label=\"approved: "),
            "{d}"
        );
        assert_eq!(d.matches(" -> ").count(), 5, "{d}");
    }
}
