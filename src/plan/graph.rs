//! The graph pass: every component and its outputs, `inputs` resolved
//! (with a did-you-mean), cycles found, nodes in topological order, and
//! every error collected with its line.

use super::*;
use crate::expr::did_you_mean;
use crate::record::RowSchema;
use crate::spec::{Spec, SpecError, TransformConfig};
use std::collections::{BTreeMap, HashMap};

pub(super) struct Builder<'a> {
    pub(super) spec: &'a Spec,
    pub(super) errors: Vec<SpecError>,
}

#[derive(Clone, Copy, PartialEq)]
pub(super) enum Kind {
    Source,
    Transform,
    Sink,
}

impl Kind {
    pub(super) fn table(self) -> &'static str {
        match self {
            Kind::Source => "sources",
            Kind::Transform => "transforms",
            Kind::Sink => "sinks",
        }
    }
}

impl Builder<'_> {
    pub(super) fn error(
        &mut self,
        kind: Kind,
        name: &str,
        key: Option<&str>,
        message: String,
        hint: Option<String>,
    ) {
        let loc = self.spec.locate();
        let place = match key {
            Some(k) => loc.place_of_key(kind.table(), name, k),
            None => loc.place_of_component(kind.table(), name),
        };
        self.error_at(kind, name, place, message, hint);
    }

    /// An error at a place found by the caller (inside an expression).
    pub(super) fn error_at(
        &mut self,
        kind: Kind,
        name: &str,
        place: crate::spec::Place,
        message: String,
        hint: Option<String>,
    ) {
        self.errors.push(SpecError {
            line: place.line,
            column: place.column,
            len: place.len,
            component: Some(format!("{}.{name}", kind.table())),
            message,
            hint,
        });
    }

    pub(super) fn build(&mut self) -> Plan {
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
                None if !spec.sinks.contains_key(d) => self.errors.push({
                    let place = self
                        .spec
                        .locate()
                        .place_of_key("job", "", "dead_letter_sink");
                    SpecError {
                        line: place.line,
                        column: place.column,
                        len: place.len,
                        component: Some("job".into()),
                        message: format!("`dead_letter_sink` names `{d}`, which is not a sink"),
                        hint: did_you_mean(d, spec.sinks.keys().map(String::as_str))
                            .map(|m| format!("did you mean `{m}`?")),
                    }
                }),
                None => {}
            }
        }
        if spec.sinks.is_empty() {
            self.errors.push(SpecError {
                column: 0,
                len: 0,
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

    pub(super) fn input_schema(
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
}
