//! `jobctl reset`: starts a job over from nothing, as Kafka Streams'
//! application reset tool does. It finds everything the job keeps to
//! resume (its changelogs, its writers' progress groups, its sinks'
//! progress rows and file markers, its local snapshots), deletes it, and
//! names a new run of the job in its epoch log, after which nothing
//! logged before counts. The epoch log itself stays: its attempt numbers
//! are what fence an instance that still runs, and they must go on
//! growing. What the job wrote (topics, rows, files) stays too.

use super::committed;
use super::epoch_log::{read_log, writers_in, EpochLog, LogRecord};
use super::RunError;
use crate::connectors::file_sink;
use crate::connectors::kafka_admin::{self, TopicKind};
use crate::connectors::postgres_sink::PostgresSink;
use crate::plan::{NodeKind, Plan, SinkPlan};
use std::path::PathBuf;

/// What a job keeps, and what it wrote.
#[derive(Debug, Default)]
pub struct Kept {
    pub log: String,
    /// Records in the epoch log, and the highest epoch it names.
    pub log_records: usize,
    pub log_epoch: u64,
    /// The run the log names now, if any.
    pub run: Option<String>,
    /// Changelog topics that exist.
    pub changelogs: Vec<String>,
    /// The writers' commit marker topics that exist.
    pub commits: Vec<String>,
    /// The writers' progress groups on the epoch log.
    pub groups: Vec<String>,
    /// Per Postgres sink: its name, table, and the epochs it has recorded
    /// (how many, the highest).
    pub postgres: Vec<(String, String, i64, u64)>,
    /// Per file sink: its name, directory, files, and the highest epoch
    /// in their names.
    pub files: Vec<(String, PathBuf, usize, u64)>,
    /// The job's local snapshots, if there are any.
    pub snapshots: Option<PathBuf>,
    /// Kafka topics the job writes (its sinks and dead letters).
    pub outputs: Vec<(String, String)>,
}

impl Kept {
    /// The highest epoch any earlier run used anywhere.
    pub fn last_epoch(&self) -> u64 {
        self.postgres
            .iter()
            .map(|p| p.3)
            .chain(self.files.iter().map(|f| f.3))
            .fold(self.log_epoch, u64::max)
    }
}

/// Finds what `plan`'s job keeps. Reads only.
pub fn inventory(plan: &Plan) -> Result<Kept, RunError> {
    let job = &plan.job;
    let log = job.epoch_log_topic();
    let mut kept = Kept {
        log: log.clone(),
        ..Kept::default()
    };
    // Every writer's group, also of a cluster whose log is gone: a group
    // left with offsets of a deleted log would be read as progress on the
    // next one.
    let prefix = format!("{}-w", job.name);
    kept.groups = kafka_admin::groups_where(&job.brokers, |g| {
        g.strip_prefix(&prefix)
            .is_some_and(|w| !w.is_empty() && w.bytes().all(|b| b.is_ascii_digit()))
    })
    .unwrap_or_default();
    if kafka_admin::partition_count(&job.brokers, &log)?.is_some() {
        let records = read_log(&job.brokers, &log)?;
        kept.log_records = records.len();
        let resume = super::planner::resume(&records, 0);
        kept.log_epoch = resume.next_epoch.saturating_sub(1);
        kept.run = resume.incarnation;
        for w in 0..writers_in(&records) {
            let group = job.writer_id_of(w);
            if !kept.groups.contains(&group) {
                kept.groups.push(group);
            }
            let topic = job.commits_topic_of(w);
            if kafka_admin::partition_count(&job.brokers, &topic)?.is_some() {
                kept.commits.push(topic);
            }
        }
        kept.groups.sort();
    }
    for node in &plan.nodes {
        if matches!(node.kind, NodeKind::Aggregate(_)) {
            let topic = job.changelog_topic(&node.name);
            if kafka_admin::partition_count(&job.brokers, &topic)?.is_some() {
                kept.changelogs.push(topic);
            }
        }
    }
    for (i, node, sink) in plan.sinks() {
        match sink {
            SinkPlan::Postgres { config, .. } => {
                let mut pg = postgres_sink(plan, i, &node.name, config);
                let (n, top) = pg.written_epochs()?;
                kept.postgres
                    .push((node.name.clone(), config.table.clone(), n, top));
            }
            SinkPlan::File { dir, .. } => {
                let files = if dir.exists() {
                    file_sink::published(dir, &node.name)
                        .map_err(|e| files_error(&node.name, dir, e))?
                } else {
                    Vec::new()
                };
                let top = files
                    .iter()
                    .filter_map(|f| file_sink::epoch_of(&f.file_name()?.to_string_lossy()))
                    .max()
                    .unwrap_or(0);
                kept.files
                    .push((node.name.clone(), dir.clone(), files.len(), top));
            }
            SinkPlan::Kafka { config, .. } => {
                kept.outputs.push((node.name.clone(), config.topic.clone()))
            }
            SinkPlan::Stdout => {}
        }
    }
    if let Some(topic) = &job.dead_letter_topic {
        kept.outputs.push(("dead letters".into(), topic.clone()));
    }
    let snapshots = super::snapshot::dir(job);
    if snapshots.exists() {
        kept.snapshots = Some(snapshots);
    }
    Ok(kept)
}

fn postgres_sink(
    plan: &Plan,
    i: usize,
    name: &str,
    config: &crate::spec::PostgresSinkConfig,
) -> PostgresSink {
    PostgresSink::new(
        name,
        &config.url,
        &config.table,
        plan.input_schema(i).clone(),
        None,
        &plan.job.name,
        &plan.job.writer_id_of(0),
    )
}

fn files_error(sink: &str, dir: &std::path::Path, e: std::io::Error) -> RunError {
    crate::connectors::sink::SinkError::Files {
        sink: sink.into(),
        dir: dir.display().to_string(),
        source: e,
    }
    .into()
}

/// Starts the job over: fences its writers, deletes what `kept` lists,
/// and names a new run, its epochs numbered after every earlier one.
/// Returns the new run's name.
pub fn reset(plan: &Plan, kept: &Kept) -> Result<String, RunError> {
    let job = &plan.job;
    // An instance that still runs commits nothing more, and writes no
    // file or row once it sees the start below in the log.
    let writers = kept
        .groups
        .iter()
        .filter_map(|g| g.rsplit_once("-w")?.1.parse::<u32>().ok())
        .map(|w| w + 1)
        .max()
        .unwrap_or(1);
    for w in 0..writers {
        committed::fence_writer(job, w)?;
    }
    kafka_admin::ensure_topic(&job.brokers, &kept.log, 1, 1, TopicKind::Forever)?;
    let log = EpochLog::open(&job.brokers, &kept.log)?;
    log.append(&LogRecord::start(), rdkafka::message::OwnedHeaders::new())?;
    let topics: Vec<&str> = kept
        .changelogs
        .iter()
        .chain(&kept.commits)
        .map(String::as_str)
        .collect();
    kafka_admin::delete_topics(&job.brokers, &topics)?;
    let groups: Vec<&str> = kept.groups.iter().map(String::as_str).collect();
    kafka_admin::delete_groups(&job.brokers, &groups)?;
    if let Some(dir) = &kept.snapshots {
        std::fs::remove_dir_all(dir).map_err(|e| files_error("snapshots", dir, e))?;
    }
    let run = format!("{:016x}", rand::random::<u64>());
    for (i, node, sink) in plan.sinks() {
        match sink {
            SinkPlan::Postgres { config, .. } => {
                postgres_sink(plan, i, &node.name, config).hand_over(&run)?
            }
            SinkPlan::File { dir, .. } if dir.exists() => {
                let marker = file_sink::run_marker(dir, &node.name);
                std::fs::write(&marker, format!("{run}\n"))
                    .map_err(|e| files_error(&node.name, dir, e))?;
            }
            _ => {}
        }
    }
    log.append(
        &LogRecord::Incarnation {
            id: run.clone(),
            after_epoch: kept.last_epoch(),
            reset: true,
        },
        rdkafka::message::OwnedHeaders::new(),
    )?;
    Ok(run)
}
