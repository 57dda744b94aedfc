//! What a start asks the broker and the registry before it can wire its
//! sources and sinks: the partitions of every topic (creating those
//! missing), where each source partition ends, which sink topics are
//! compacted, the sinks' schema ids. None of it depends on recovery, so a
//! start asks it all at once, on threads of its own, while it fences
//! earlier instances and reads its state back: each question is a client
//! and a round trip or two, and asked one after another they were most of
//! a start.

use super::error::RunError;
use crate::connectors::kafka_admin::{self, TopicKind};
use crate::format::avro;
use crate::format::registry::RegistryClient;
use crate::plan::{NodeKind, Plan, SinkPlan};
use crate::spec::Format;
use std::collections::{HashMap, HashSet};

pub(super) struct Lookups {
    pub dead_letter_topic: String,
    /// Partitions of every topic of the broker's default settings the job
    /// reads or writes.
    pub partitions: HashMap<String, i32>,
    /// Per source, in plan order: each partition's low and high offsets.
    pub marks: Vec<Vec<(i64, i64)>>,
    /// The Kafka sinks' topics that are compacted.
    pub compacted: HashSet<String>,
    /// The schema id of each Avro Kafka sink, by node index.
    pub schema_ids: HashMap<usize, u32>,
}

/// The dead-letter topic: a Kafka sink's when the job routes its dead
/// letters to one, else the job's own.
pub(super) fn dead_letter_topic(plan: &Plan) -> String {
    match plan.dead_letter_sink.map(|i| &plan.nodes[i].kind) {
        Some(NodeKind::Sink(SinkPlan::Kafka { config, .. })) => config.topic.clone(),
        _ => plan.job.dead_letter_topic(),
    }
}

/// Asks everything at once. `schema_ids`: the sinks' ids another process
/// registered, so this one registers nothing and leaves the job-wide
/// chores (topics of its own) to that process. `writers`: the writers
/// whose marker topics the chores create.
pub(super) fn lookup(
    plan: &Plan,
    registry: Option<&RegistryClient>,
    schema_ids: Option<HashMap<usize, u32>>,
    writers: u32,
) -> Result<Lookups, RunError> {
    let chores_here = schema_ids.is_none();
    let job = &plan.job;
    let brokers = &job.brokers;
    let dead_letter_topic = dead_letter_topic(plan);
    let sink_topics: Vec<&str> = plan
        .sinks()
        .filter_map(|(_, _, s)| match s {
            SinkPlan::Kafka { config, .. } => Some(config.topic.as_str()),
            _ => None,
        })
        .collect();
    std::thread::scope(|s| {
        let compacted = s.spawn(|| kafka_admin::compacted_topics(brokers, &sink_topics));
        let chores = s.spawn(|| -> Result<(), RunError> {
            if !chores_here {
                return Ok(());
            }
            for w in 0..writers {
                let topic = job.commits_topic_of(w);
                kafka_admin::ensure_topic(brokers, &topic, 1, 1, TopicKind::Compacted)?;
            }
            for node in &plan.nodes {
                if matches!(node.kind, NodeKind::Aggregate(_)) {
                    let topic = job.changelog_topic(&node.name);
                    kafka_admin::ensure_topic(brokers, &topic, 1, 1, TopicKind::Compacted)?;
                }
            }
            Ok(())
        });
        let schemas =
            s.spawn(|| registry.map_or(Ok(HashMap::new()), |r| schemas(plan, r, schema_ids)));

        // Topics of default settings: asked about with one client, the
        // missing ones created.
        let mut wanted: Vec<(&str, i32, i32)> = plan
            .sources()
            .map(|(_, _, s)| {
                (
                    s.config.topic.as_str(),
                    s.config.partitions,
                    s.config.replication_factor,
                )
            })
            .collect();
        for (_, _, sink) in plan.sinks() {
            if let SinkPlan::Kafka { config, .. } = sink {
                wanted.push((
                    config.topic.as_str(),
                    config.partitions,
                    config.replication_factor,
                ));
            }
        }
        wanted.push((dead_letter_topic.as_str(), 1, 1));
        let names: Vec<&str> = wanted.iter().map(|w| w.0).collect();
        let known = kafka_admin::partition_counts(brokers, &names)?;
        let mut partitions = HashMap::new();
        for (topic, n, replication) in wanted {
            let n = kafka_admin::ensure_data_topic(brokers, &known, topic, n, replication)?;
            partitions.insert(topic.to_string(), n);
        }
        let ends: Vec<_> = plan
            .sources()
            .map(|(_, _, sp)| {
                let (topic, n) = (
                    sp.config.topic.as_str(),
                    partitions[sp.config.topic.as_str()],
                );
                s.spawn(move || kafka_admin::end_offsets(brokers, topic, n))
            })
            .collect();
        let mut marks = Vec::new();
        for end in ends {
            marks.push(end.join().expect("end offsets thread")?);
        }
        chores.join().expect("topic thread")?;
        Ok(Lookups {
            dead_letter_topic: dead_letter_topic.clone(),
            partitions,
            marks,
            compacted: compacted.join().expect("topic settings thread"),
            schema_ids: schemas.join().expect("registry thread")?,
        })
    })
}

/// Reads the Avro sources' subjects ahead and registers the Avro sinks'
/// schemas (unless another process did).
fn schemas(
    plan: &Plan,
    registry: &RegistryClient,
    given: Option<HashMap<usize, u32>>,
) -> Result<HashMap<usize, u32>, RunError> {
    for (_, _, sp) in plan.sources() {
        if sp.config.format == Format::Avro {
            registry.prefetch_subject(&format!("{}-value", sp.config.topic))?;
        }
    }
    if let Some(ids) = given {
        return Ok(ids);
    }
    let mut ids = HashMap::new();
    for (i, _, sink) in plan.sinks() {
        if let SinkPlan::Kafka { config, .. } = sink {
            if config.format == Format::Avro {
                let schema = avro::schema_json(plan.input_schema(i));
                ids.insert(
                    i,
                    registry.register(&format!("{}-value", config.topic), &schema)?,
                );
            }
        }
    }
    Ok(ids)
}
