//! Running a job's engine on records held in memory, with sinks that keep
//! what they receive: for benchmarks and engine tests, no broker and no
//! registry. A run may be one process of a cluster.

use super::local::{Backend, Launch, RunOptions, RunSummary, Sinks};
use super::RunError;
use crate::connectors::memory::{MemorySink, MemorySource};
use crate::connectors::SourceReader;
use crate::dataflow::{Epoch, ReaderFactory};
use crate::format::registry::RegistryClient;
use crate::plan::Plan;
use crate::record::RawRecord;
use std::collections::HashMap;
use std::net::TcpStream;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// Input for [`run_in_memory`]: per source, its records, each optionally
/// with the epoch it is read in.
pub enum MemoryInput {
    Records(Arc<Vec<RawRecord>>),
    Scripted(Arc<Vec<(u64, RawRecord)>>),
}

/// Runs a job's engine on records held in memory, with sinks that keep
/// what they receive (`keep_output`) or only count it. For benchmarks and
/// engine tests: no broker, no registry.
pub fn run_in_memory(
    plan: Arc<Plan>,
    workers: usize,
    inputs: Vec<MemoryInput>,
    writer_schema_ids: Vec<(u32, String)>,
    keep_output: bool,
) -> Result<RunSummary, RunError> {
    run_in_memory_restarted(
        plan,
        workers,
        inputs,
        writer_schema_ids,
        keep_output,
        Restart::default(),
    )
}

/// What a restarted in-memory run resumes from: the last epoch committed
/// before it and the state as of that epoch, by transform.
#[derive(Default)]
pub struct Restart {
    pub after: Epoch,
    pub state: HashMap<String, Vec<crate::dataflow::state::StateEntry>>,
}

/// [`run_in_memory`] as a restart after `restart.after`: the scripted
/// input should hold only later epochs. With `keep_output`, the summary
/// holds the changelog, whose latest value per key is the next restart's
/// state.
pub fn run_in_memory_restarted(
    plan: Arc<Plan>,
    workers: usize,
    inputs: Vec<MemoryInput>,
    writer_schema_ids: Vec<(u32, String)>,
    keep_output: bool,
    restart: Restart,
) -> Result<RunSummary, RunError> {
    run(
        plan,
        workers,
        inputs,
        writer_schema_ids,
        keep_output,
        restart,
        None,
    )
}

/// [`run_in_memory`] as process `process` of a cluster, joined to the
/// others by `sockets` (see [`super::cluster::connect`]). Every process
/// holds the whole input and reads its workers' share; each keeps the
/// output its own workers send.
pub fn run_in_memory_in_cluster(
    plan: Arc<Plan>,
    workers: usize,
    inputs: Vec<MemoryInput>,
    writer_schema_ids: Vec<(u32, String)>,
    keep_output: bool,
    sockets: Vec<Option<TcpStream>>,
    process: usize,
) -> Result<RunSummary, RunError> {
    let cluster = Some((sockets, process, super::liveness::Pulse::new(workers)));
    let restart = Restart::default();
    run(
        plan,
        workers,
        inputs,
        writer_schema_ids,
        keep_output,
        restart,
        cluster,
    )
}

fn run(
    plan: Arc<Plan>,
    workers: usize,
    inputs: Vec<MemoryInput>,
    writer_schema_ids: Vec<(u32, String)>,
    keep_output: bool,
    restart: Restart,
    cluster: Option<(Vec<Option<TcpStream>>, usize, Arc<super::liveness::Pulse>)>,
) -> Result<RunSummary, RunError> {
    let scripted = inputs.iter().any(|i| matches!(i, MemoryInput::Scripted(_)));
    let partitions: Vec<i32> = inputs
        .iter()
        .map(|i| match i {
            MemoryInput::Records(r) => r.iter().map(|r| r.origin.partition + 1).max().unwrap_or(1),
            MemoryInput::Scripted(r) => r
                .iter()
                .map(|(_, r)| r.origin.partition + 1)
                .max()
                .unwrap_or(1),
        })
        .collect();
    let readers: Vec<ReaderFactory> = inputs
        .into_iter()
        .map(|input| match input {
            MemoryInput::Records(records) => Arc::new(move |index, peers| {
                Box::new(MemorySource::for_worker(&records, index, peers)) as Box<dyn SourceReader>
            }) as ReaderFactory,
            MemoryInput::Scripted(records) => Arc::new(move |index, peers| {
                Box::new(MemorySource::scripted(&records, index, peers)) as Box<dyn SourceReader>
            }) as ReaderFactory,
        })
        .collect();
    // A registry client whose cache already holds the writer schemas; it is
    // never asked over the network.
    let registry = RegistryClient::new("http://127.0.0.1:1");
    for (id, schema) in writer_schema_ids {
        registry.seed(id, &schema);
    }
    let mut targets: Sinks = HashMap::new();
    let mut sink_schema_ids = HashMap::new();
    for (i, _, _) in plan.sinks() {
        targets.insert(i, Box::new(MemorySink::new(keep_output)));
        sink_schema_ids.insert(i, 1);
    }
    let source_topics = plan
        .sources()
        .map(|(_, _, s)| Arc::from(s.config.topic.as_str()))
        .collect();
    let launch = Launch {
        source_partitions: partitions,
        readers,
        registry: Some(registry),
        sink_schema_ids,
        // A topic in memory has the partitions its job file creates it with.
        sink_partitions: plan
            .sinks()
            .filter_map(|(i, _, s)| match s {
                crate::plan::SinkPlan::Kafka { config, .. } => Some((i, config.partitions)),
                _ => None,
            })
            .collect(),
        sink_limits: HashMap::new(),
        source_topics,
        targets,
        backend: Backend::Memory { keep: keep_output },
        scripted,
        first_epoch: restart.after + 1,
        resume_after: restart.after,
        changelog_topics: plan
            .nodes
            .iter()
            .filter(|n| matches!(n.kind, crate::plan::NodeKind::Aggregate(_)))
            .map(|n| (n.name.clone(), Arc::from(n.name.as_str())))
            .collect(),
        restored: Arc::new(std::sync::Mutex::new(restart.state)),
        cluster,
    };
    let opts = RunOptions {
        workers,
        until_caught_up: true,
        replay_only: false,
        trace_records: false,
        progress: false,
        max_rate: None,
        observer: None,
    };
    super::workers::execute(plan, opts, Arc::new(AtomicBool::new(false)), launch)
}
