//! What a running job shows of itself: its Prometheus metrics, and the
//! recent epochs and dead letters the HTTP endpoint serves as JSON. The
//! writer thread records into it at each commit and dead letter; the
//! endpoint reads it on a thread of its own. The counts are this
//! process's own, so a scrape of every process of a cluster adds up.

use crate::record::DeadLetter;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::{Registry, Unit};
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Epochs and dead letters kept for the JSON endpoints.
const RECENT: usize = 100;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabels {
    source: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TransformLabels {
    transform: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WorkerLabels {
    transform: String,
    worker: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SinkLabels {
    sink: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct PartitionLabels {
    source: String,
    partition: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// One committed epoch, as `GET /api/v1/epochs` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct EpochEntry {
    pub epoch: u64,
    pub records_in: u64,
    pub records_out: u64,
    pub dead_letters: u64,
    pub duration_ms: u64,
    pub commit_ms: u64,
    /// Milliseconds since the Unix epoch.
    pub committed_at_ms: u64,
}

/// One dead letter, as `GET /api/v1/errors` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ErrorEntry {
    pub epoch: u64,
    pub reason: String,
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// How far a source partition's committed position is behind its end.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct PartitionLag {
    pub source: String,
    pub partition: i32,
    pub lag: i64,
}

/// A node of the job and what went through it.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeCount {
    pub node: String,
    pub records: u64,
    pub per_second: f64,
}

/// `GET /api/v1/job`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct JobView {
    pub name: String,
    pub state: String,
    pub attempt: u32,
    pub restarts: u64,
    pub uptime_s: f64,
    pub process: usize,
    pub processes: usize,
    pub workers: usize,
    pub last_committed_epoch: u64,
    pub epochs_committed: u64,
    pub dead_letters: u64,
    pub nodes: Vec<NodeCount>,
    /// Per source partition this process reads, as last measured.
    #[serde(default)]
    pub lag: Vec<PartitionLag>,
}

/// The job's nodes by kind, in plan order.
pub struct Nodes<'a> {
    /// (name, topic).
    pub sources: &'a [(String, String)],
    pub transforms: &'a [String],
    pub sinks: &'a [String],
}

/// What one epoch did, as the writer hands it over.
pub struct EpochDone<'a> {
    pub epoch: u64,
    /// Records read, by source name.
    pub inputs: Vec<(&'a str, u64)>,
    /// Records into each transform, by name.
    pub transforms: Vec<(&'a str, u64)>,
    /// Records written, by sink name.
    pub outputs: Vec<(&'a str, u64)>,
    /// Bytes read per source and written per sink, in plan order.
    pub bytes_in: Vec<u64>,
    pub bytes_out: Vec<u64>,
    /// Records and bytes read: (source, partition, records, bytes).
    pub partitions: &'a [(u32, i32, u64, u64)],
    pub dead: u64,
    pub late: u64,
    pub filtered: u64,
    pub duration: std::time::Duration,
    pub commit: std::time::Duration,
    /// Offsets read, per (source, partition): [first, one past the last).
    pub read: &'a BTreeMap<(u32, i32), (i64, i64)>,
    /// A sample of the timestamps of the records read.
    pub timestamps: &'a [i64],
}

struct Recent {
    state: &'static str,
    attempt: u32,
    last_committed_epoch: u64,
    epochs_committed: u64,
    dead_letters: u64,
    /// Records through each node, sources then sinks, in plan order.
    nodes: BTreeMap<String, u64>,
    order: Vec<String>,
    epochs: VecDeque<(Instant, EpochEntry, Vec<(String, u64)>)>,
    errors: VecDeque<ErrorEntry>,
    /// Per (source, partition) this process reads: where its committed
    /// input ends.
    positions: BTreeMap<(u32, i32), i64>,
    lag: Vec<PartitionLag>,
}

/// The job's metrics and recent history, shared by the writer and the
/// endpoint.
pub struct Observer {
    registry: Registry,
    name: String,
    process: usize,
    processes: usize,
    workers: usize,
    started: Instant,
    records_in: Family<SourceLabels, Counter>,
    records_out: Family<SinkLabels, Counter>,
    records_through: Family<TransformLabels, Counter>,
    bytes_in: Family<SourceLabels, Counter>,
    bytes_out: Family<SinkLabels, Counter>,
    partition_records: Family<PartitionLabels, Counter>,
    partition_bytes: Family<PartitionLabels, Counter>,
    dead_letters: Family<ReasonLabels, Counter>,
    late: Counter,
    filtered: Counter,
    epochs: Counter,
    epoch_seconds: Histogram,
    commit_seconds: Histogram,
    last_epoch: Gauge,
    attempt: Gauge,
    restarts: Counter,
    open_epoch_records: Gauge,
    open_epoch_bytes: Gauge,
    postgres_fallback: Family<SinkLabels, Gauge>,
    source_lag: Family<PartitionLabels, Gauge>,
    state_keys: Family<WorkerLabels, Gauge>,
    backpressure: Counter<f64, std::sync::atomic::AtomicU64>,
    /// The backpressure already counted, in nanoseconds.
    backpressure_ns: std::sync::atomic::AtomicU64,
    watermark: Family<TransformLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    /// Each source's name and topic, by position.
    sources: Vec<(String, String)>,
    recent: Mutex<Recent>,
    history: Mutex<super::history::History>,
}

impl Observer {
    /// `nodes`: the job's sources (name, topic), transforms and sinks, in
    /// plan order.
    pub fn new(
        name: &str,
        process: usize,
        processes: usize,
        workers: usize,
        nodes: Nodes<'_>,
    ) -> Self {
        let Nodes {
            sources,
            transforms,
            sinks,
        } = nodes;
        let labels = [
            (Cow::Borrowed("job"), Cow::Owned(name.to_string())),
            (Cow::Borrowed("process"), Cow::Owned(process.to_string())),
        ];
        let mut registry = Registry::with_prefix_and_labels("rill", labels.into_iter());
        let records_in = Family::<SourceLabels, Counter>::default();
        registry.register(
            "source_records",
            "Records read from each source and committed (numRecordsIn)",
            records_in.clone(),
        );
        let records_out = Family::<SinkLabels, Counter>::default();
        registry.register(
            "sink_records",
            "Records committed to each sink (numRecordsOut)",
            records_out.clone(),
        );
        let bytes_in = Family::<SourceLabels, Counter>::default();
        registry.register_with_unit(
            "source",
            "Bytes of keys and values read from each source and committed (numBytesIn)",
            Unit::Bytes,
            bytes_in.clone(),
        );
        let bytes_out = Family::<SinkLabels, Counter>::default();
        registry.register_with_unit(
            "sink",
            "Bytes of keys and values committed to each sink (numBytesOut)",
            Unit::Bytes,
            bytes_out.clone(),
        );
        let partition_records = Family::<PartitionLabels, Counter>::default();
        registry.register(
            "source_partition_records",
            "Records read from each source partition and committed (records-consumed)",
            partition_records.clone(),
        );
        let partition_bytes = Family::<PartitionLabels, Counter>::default();
        registry.register_with_unit(
            "source_partition",
            "Bytes of keys and values read from each source partition and committed",
            Unit::Bytes,
            partition_bytes.clone(),
        );
        let records_through = Family::<TransformLabels, Counter>::default();
        registry.register(
            "transform_records",
            "Records into each transform (numRecordsIn)",
            records_through.clone(),
        );
        let dead_letters = Family::<ReasonLabels, Counter>::default();
        registry.register(
            "dead_letters",
            "Records sent to the dead letters, by the kind of their reason",
            dead_letters.clone(),
        );
        let late = Counter::default();
        registry.register(
            "late_records",
            "Records too late for their window (dead-lettered)",
            late.clone(),
        );
        let filtered = Counter::default();
        registry.register(
            "filtered_records",
            "Records a filter dropped",
            filtered.clone(),
        );
        let epochs = Counter::default();
        registry.register("epochs", "Epochs committed", epochs.clone());
        let epoch_seconds = Histogram::new(exponential_buckets(0.05, 2.0, 10));
        registry.register_with_unit(
            "epoch_duration",
            "Time from one committed epoch to the next",
            Unit::Seconds,
            epoch_seconds.clone(),
        );
        let commit_seconds = Histogram::new(exponential_buckets(0.005, 2.0, 12));
        registry.register_with_unit(
            "commit_duration",
            "Time to commit an epoch once complete (lastCheckpointDuration)",
            Unit::Seconds,
            commit_seconds.clone(),
        );
        let last_epoch = Gauge::default();
        registry.register(
            "last_committed_epoch",
            "The last epoch committed",
            last_epoch.clone(),
        );
        let attempt = Gauge::default();
        registry.register(
            "attempt",
            "The attempt of this start, stamped on what it commits",
            attempt.clone(),
        );
        let restarts = Counter::default();
        registry.register(
            "restarts",
            "Restarts of the job in this process after a failure",
            restarts.clone(),
        );
        let open_epoch_records = Gauge::default();
        registry.register(
            "open_epoch_records",
            "Records held for epochs not yet committed (pendingRecords)",
            open_epoch_records.clone(),
        );
        let open_epoch_bytes = Gauge::default();
        registry.register_with_unit(
            "open_epoch",
            "Bytes of keys and values the writer holds for epochs not yet committed",
            Unit::Bytes,
            open_epoch_bytes.clone(),
        );
        let postgres_fallback = Family::<SinkLabels, Gauge>::default();
        registry.register(
            "postgres_fallback",
            "1 while a Postgres sink writes its epochs to fallback files",
            postgres_fallback.clone(),
        );
        let source_lag = Family::<PartitionLabels, Gauge>::default();
        registry.register(
            "source_lag_records",
            "Records of each source partition past what the job has committed (records-lag)",
            source_lag.clone(),
        );
        let backpressure = Counter::<f64, std::sync::atomic::AtomicU64>::default();
        registry.register_with_unit(
            "backpressure",
            "Time the sources waited, over all workers, for the writer to commit what it holds",
            Unit::Seconds,
            backpressure.clone(),
        );
        let state_keys = Family::<WorkerLabels, Gauge>::default();
        registry.register(
            "state_keys",
            "Keys (open windows, for a windowed aggregate) each worker of a stateful transform holds",
            state_keys.clone(),
        );
        let watermark =
            Family::<TransformLabels, Gauge<f64, std::sync::atomic::AtomicU64>>::default();
        registry.register_with_unit(
            "watermark_timestamp",
            "Event time up to which a windowed transform has seen everything, as a Unix time",
            Unit::Seconds,
            watermark.clone(),
        );
        let order: Vec<String> = sources
            .iter()
            .map(|(s, _)| format!("sources.{s}"))
            .chain(transforms.iter().map(|t| format!("transforms.{t}")))
            .chain(sinks.iter().map(|s| format!("sinks.{s}")))
            .collect();
        for t in transforms {
            records_through
                .get_or_create(&TransformLabels {
                    transform: t.clone(),
                })
                .inc_by(0);
        }
        for (s, _) in sources {
            records_in
                .get_or_create(&SourceLabels { source: s.clone() })
                .inc_by(0);
        }
        for s in sinks {
            records_out
                .get_or_create(&SinkLabels { sink: s.clone() })
                .inc_by(0);
        }
        Observer {
            registry,
            name: name.to_string(),
            process,
            processes,
            workers,
            started: Instant::now(),
            records_in,
            records_out,
            records_through,
            bytes_in,
            bytes_out,
            partition_records,
            partition_bytes,
            dead_letters,
            late,
            filtered,
            epochs,
            epoch_seconds,
            commit_seconds,
            last_epoch,
            attempt,
            restarts,
            open_epoch_records,
            open_epoch_bytes,
            postgres_fallback,
            source_lag,
            state_keys,
            backpressure,
            backpressure_ns: Default::default(),
            watermark,
            sources: sources.to_vec(),
            history: Mutex::new(super::history::History::default()),
            recent: Mutex::new(Recent {
                state: "starting",
                attempt: 0,
                last_committed_epoch: 0,
                epochs_committed: 0,
                dead_letters: 0,
                nodes: order.iter().map(|n| (n.clone(), 0)).collect(),
                order,
                epochs: VecDeque::new(),
                errors: VecDeque::new(),
                positions: BTreeMap::new(),
                lag: Vec::new(),
            }),
        }
    }

    /// The metrics in the Prometheus (OpenMetrics) text format.
    pub fn metrics_text(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    pub fn set_state(&self, state: &'static str) {
        self.recent.lock().unwrap().state = state;
    }

    pub fn started(&self, attempt: u32, committed: u64) {
        self.attempt.set(attempt as i64);
        self.last_epoch.set(committed as i64);
        let mut r = self.recent.lock().unwrap();
        r.attempt = attempt;
        r.last_committed_epoch = committed;
        r.state = "running";
    }

    pub fn restarted(&self) {
        self.restarts.inc();
    }

    pub fn open_epoch_records(&self, n: i64) {
        self.open_epoch_records.set(n.max(0));
    }

    /// Time the sources of this run have waited so far, in nanoseconds
    /// (a restarted run counts from 0 again).
    pub fn blocked(&self, ns: u64) {
        use std::sync::atomic::Ordering;
        let before = self.backpressure_ns.swap(ns, Ordering::Relaxed);
        let new = if ns >= before { ns - before } else { ns };
        if new > 0 {
            self.backpressure.inc_by(new as f64 / 1e9);
            self.history.lock().unwrap().blocked(now_ms(), new);
        }
    }

    /// What the stateful transforms hold: each worker's keys, and each
    /// transform's watermark in milliseconds of event time.
    pub fn held(
        &self,
        keys: Vec<(String, usize, u64)>,
        marks: BTreeMap<String, (u64, Option<i64>)>,
    ) {
        if !keys.is_empty() {
            let total = keys.iter().map(|(_, _, n)| n).sum();
            self.history.lock().unwrap().state_keys(now_ms(), total);
        }
        for (transform, worker, n) in keys {
            let labels = WorkerLabels {
                transform,
                worker: worker.to_string(),
            };
            self.state_keys.get_or_create(&labels).set(n as i64);
        }
        for (transform, (_, mark)) in marks {
            if let Some(ms) = mark {
                self.watermark
                    .get_or_create(&TransformLabels { transform })
                    .set(ms as f64 / 1000.0);
            }
        }
    }

    pub fn open_epoch_bytes(&self, n: u64) {
        self.open_epoch_bytes.set(n as i64);
    }

    pub fn postgres_fallback(&self, sink: &str, on: bool) {
        self.postgres_fallback
            .get_or_create(&SinkLabels { sink: sink.into() })
            .set(on as i64);
    }

    /// Dead letters as they reach the writer, before their epoch commits.
    pub fn dead_letters(&self, epoch: u64, letters: &[DeadLetter]) {
        let mut r = self.recent.lock().unwrap();
        for d in letters {
            self.dead_letters
                .get_or_create(&ReasonLabels {
                    reason: reason_kind(&d.reason),
                })
                .inc();
            if r.errors.len() == RECENT {
                r.errors.pop_front();
            }
            r.errors.push_back(ErrorEntry {
                epoch,
                reason: d.reason.clone(),
                topic: d.topic.to_string(),
                partition: d.partition,
                offset: d.offset,
            });
        }
        r.dead_letters += letters.len() as u64;
    }

    /// An epoch this process committed.
    pub fn committed(&self, done: EpochDone<'_>) {
        let records_in: u64 = done.inputs.iter().map(|(_, n)| n).sum();
        let records_out: u64 = done.outputs.iter().map(|(_, n)| n).sum();
        for (s, n) in &done.inputs {
            self.records_in
                .get_or_create(&SourceLabels {
                    source: s.to_string(),
                })
                .inc_by(*n);
        }
        for ((s, _), n) in done.inputs.iter().zip(&done.bytes_in) {
            self.bytes_in
                .get_or_create(&SourceLabels {
                    source: s.to_string(),
                })
                .inc_by(*n);
        }
        for ((s, _), n) in done.outputs.iter().zip(&done.bytes_out) {
            self.bytes_out
                .get_or_create(&SinkLabels {
                    sink: s.to_string(),
                })
                .inc_by(*n);
        }
        for (source, p, n, b) in done.partitions {
            let Some((name, _)) = self.sources.get(*source as usize) else {
                continue;
            };
            let labels = PartitionLabels {
                source: name.clone(),
                partition: p.to_string(),
            };
            self.partition_records.get_or_create(&labels).inc_by(*n);
            self.partition_bytes.get_or_create(&labels).inc_by(*b);
        }
        for (t, n) in &done.transforms {
            self.records_through
                .get_or_create(&TransformLabels {
                    transform: t.to_string(),
                })
                .inc_by(*n);
        }
        for (s, n) in &done.outputs {
            self.records_out
                .get_or_create(&SinkLabels {
                    sink: s.to_string(),
                })
                .inc_by(*n);
        }
        self.late.inc_by(done.late);
        self.filtered.inc_by(done.filtered);
        self.epochs.inc();
        self.epoch_seconds.observe(done.duration.as_secs_f64());
        self.commit_seconds.observe(done.commit.as_secs_f64());
        self.last_epoch.set(done.epoch as i64);
        let mut r = self.recent.lock().unwrap();
        r.last_committed_epoch = done.epoch;
        r.epochs_committed += 1;
        for (k, (_, end)) in done.read {
            let at = r.positions.entry(*k).or_insert(*end);
            *at = (*at).max(*end);
        }
        let per_node: Vec<(String, u64)> = done
            .inputs
            .iter()
            .map(|(s, n)| (format!("sources.{s}"), *n))
            .chain(
                done.transforms
                    .iter()
                    .map(|(t, n)| (format!("transforms.{t}"), *n)),
            )
            .chain(done.outputs.iter().map(|(s, n)| (format!("sinks.{s}"), *n)))
            .collect();
        for (node, n) in &per_node {
            *r.nodes.entry(node.clone()).or_default() += n;
        }
        self.history.lock().unwrap().committed(
            now_ms(),
            &per_node,
            done.commit.as_millis() as u64,
            done.timestamps,
        );
        if r.epochs.len() == RECENT {
            r.epochs.pop_front();
        }
        let at = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        r.epochs.push_back((
            Instant::now(),
            EpochEntry {
                epoch: done.epoch,
                records_in,
                records_out,
                dead_letters: done.dead,
                duration_ms: done.duration.as_millis() as u64,
                commit_ms: done.commit.as_millis() as u64,
                committed_at_ms: at,
            },
            per_node,
        ));
    }

    pub fn job(&self) -> JobView {
        let r = self.recent.lock().unwrap();
        // Rates over the epochs committed in the last ten seconds.
        let window = std::time::Duration::from_secs(10);
        let span = self.started.elapsed().min(window).as_secs_f64().max(0.001);
        let mut recent: BTreeMap<&str, u64> = BTreeMap::new();
        for (at, _, nodes) in r.epochs.iter().rev() {
            if at.elapsed() > window {
                break;
            }
            for (node, n) in nodes {
                *recent.entry(node.as_str()).or_default() += n;
            }
        }
        JobView {
            name: self.name.clone(),
            state: r.state.to_string(),
            attempt: r.attempt,
            restarts: self.restarts.get(),
            uptime_s: self.started.elapsed().as_secs_f64(),
            process: self.process,
            processes: self.processes,
            workers: self.workers,
            last_committed_epoch: r.last_committed_epoch,
            epochs_committed: r.epochs_committed,
            dead_letters: r.dead_letters,
            lag: r.lag.clone(),
            nodes: r
                .order
                .iter()
                .map(|n| NodeCount {
                    node: n.clone(),
                    records: r.nodes.get(n).copied().unwrap_or(0),
                    per_second: recent.get(n.as_str()).copied().unwrap_or(0) as f64 / span,
                })
                .collect(),
        }
    }

    /// Where the job resumed: the committed position of each source
    /// partition, before any epoch of this start commits.
    pub fn resumed_at(&self, positions: impl IntoIterator<Item = ((u32, i32), i64)>) {
        self.recent.lock().unwrap().positions.extend(positions);
    }

    /// Measures every `every` how far each source partition this process
    /// reads is behind its end, on a thread of its own, while the job
    /// runs. `ends` gives a topic's end offsets, per partition.
    pub fn watch_lag<F>(self: &std::sync::Arc<Self>, every: std::time::Duration, ends: F)
    where
        F: Fn(&str) -> Option<Vec<i64>> + Send + 'static,
    {
        let observer = std::sync::Arc::downgrade(self);
        let _ = std::thread::Builder::new()
            .name("rill-lag".into())
            .spawn(move || loop {
                std::thread::sleep(every);
                let Some(o) = observer.upgrade() else { return };
                o.measure_lag(&ends);
            });
    }

    fn measure_lag(&self, ends: &dyn Fn(&str) -> Option<Vec<i64>>) {
        let positions = self.recent.lock().unwrap().positions.clone();
        let mut lag = Vec::new();
        for (i, (name, topic)) in self.sources.iter().enumerate() {
            let mine: Vec<_> = positions
                .iter()
                .filter(|((s, _), _)| *s == i as u32)
                .collect();
            if mine.is_empty() {
                continue;
            }
            let Some(end) = ends(topic) else { continue };
            for ((_, p), at) in mine {
                let Some(e) = end.get(*p as usize) else {
                    continue;
                };
                let behind = (e - at).max(0);
                self.source_lag
                    .get_or_create(&PartitionLabels {
                        source: name.clone(),
                        partition: p.to_string(),
                    })
                    .set(behind);
                lag.push(PartitionLag {
                    source: name.clone(),
                    partition: *p,
                    lag: behind,
                });
            }
        }
        let mut per_source: BTreeMap<String, i64> = BTreeMap::new();
        for l in &lag {
            *per_source.entry(l.source.clone()).or_default() += l.lag;
        }
        self.history.lock().unwrap().lag(now_ms(), per_source);
        self.recent.lock().unwrap().lag = lag;
    }

    /// One sample a second over the last minutes, for the page's charts.
    pub fn history(&self) -> Vec<super::history::Sample> {
        self.history.lock().unwrap().samples(now_ms())
    }

    pub fn epochs(&self) -> Vec<EpochEntry> {
        let r = self.recent.lock().unwrap();
        r.epochs.iter().rev().map(|(_, e, _)| e.clone()).collect()
    }

    pub fn errors(&self) -> Vec<ErrorEntry> {
        let r = self.recent.lock().unwrap();
        r.errors.iter().rev().cloned().collect()
    }
}

/// The kind of a dead letter's reason, as a label of few values: its
/// text up to the first colon (`avro decode`, `sink topic X`, ...), cut
/// short.
fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn reason_kind(reason: &str) -> String {
    let kind = reason.split(':').next().unwrap_or(reason).trim();
    kind.chars().take(40).collect()
}

impl std::fmt::Debug for Observer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Observer").field("job", &self.name).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn observer() -> Observer {
        let sources = [("transactions".to_string(), "bank-transactions".to_string())];
        let transforms = ["per_account".to_string()];
        let sinks = ["aggregated".to_string()];
        let nodes = Nodes {
            sources: &sources,
            transforms: &transforms,
            sinks: &sinks,
        };
        Observer::new("t", 0, 1, 2, nodes)
    }

    #[test]
    fn an_epoch_counts_per_node_and_state_and_watermark_are_gauges() {
        let o = observer();
        let read = BTreeMap::from([((0, 0), (0, 7)), ((0, 1), (0, 3))]);
        o.committed(EpochDone {
            epoch: 4,
            inputs: vec![("transactions", 10)],
            transforms: vec![("per_account", 10)],
            outputs: vec![("aggregated", 6)],
            dead: 0,
            late: 0,
            filtered: 0,
            duration: std::time::Duration::from_millis(1000),
            commit: std::time::Duration::from_millis(20),
            read: &read,
            bytes_in: vec![400],
            bytes_out: vec![240],
            partitions: &[(0, 0, 7, 280), (0, 1, 3, 120)],
            timestamps: &[now_ms() - 1_500],
        });
        let last = o.history().pop().unwrap();
        assert_eq!(last.records["sources.transactions"], 10);
        assert_eq!(last.records["sinks.aggregated"], 6);
        assert!(
            (1_500..5_000).contains(&last.latency_p99_ms.unwrap()),
            "{last:?}"
        );
        assert_eq!(last.commit_ms, Some(20));
        o.held(
            vec![("per_account".to_string(), 1, 6)],
            BTreeMap::from([("per_account".to_string(), (6, Some(1_700_000_000_500)))]),
        );
        o.blocked(1_000_000_000);
        // A restart's sources count from 0.
        o.blocked(500_000_000);
        o.blocked(1_000_000_000);
        let m = o.metrics_text();
        assert!(
            m.lines().any(
                |l| l.starts_with("rill_backpressure_seconds_total{job=\"t\",process=\"0\"} 2")
            ),
            "{m}"
        );
        for line in [
            "rill_source_records_total{job=\"t\",process=\"0\",source=\"transactions\"} 10",
            "rill_transform_records_total{job=\"t\",process=\"0\",transform=\"per_account\"} 10",
            "rill_sink_records_total{job=\"t\",process=\"0\",sink=\"aggregated\"} 6",
            "rill_state_keys{job=\"t\",process=\"0\",transform=\"per_account\",worker=\"1\"} 6",
            "rill_watermark_timestamp_seconds{job=\"t\",process=\"0\",transform=\"per_account\"} 1700000000.5",
            "rill_last_committed_epoch{job=\"t\",process=\"0\"} 4",
            "rill_source_bytes_total{job=\"t\",process=\"0\",source=\"transactions\"} 400",
            "rill_sink_bytes_total{job=\"t\",process=\"0\",sink=\"aggregated\"} 240",
            "rill_source_partition_records_total{job=\"t\",process=\"0\",source=\"transactions\",partition=\"0\"} 7",
            "rill_source_partition_bytes_total{job=\"t\",process=\"0\",source=\"transactions\",partition=\"1\"} 120",
        ] {
            assert!(m.lines().any(|l| l == line), "{line}\n{m}");
        }
        let j = o.job();
        assert_eq!(j.last_committed_epoch, 4);
        let records: Vec<(&str, u64)> = j
            .nodes
            .iter()
            .map(|n| (n.node.as_str(), n.records))
            .collect();
        assert_eq!(
            records,
            [
                ("sources.transactions", 10),
                ("transforms.per_account", 10),
                ("sinks.aggregated", 6)
            ]
        );
        // Lag is measured from where the committed input ends.
        o.measure_lag(&|_| Some(vec![9, 3]));
        let lag: Vec<(i32, i64)> = o.job().lag.iter().map(|l| (l.partition, l.lag)).collect();
        assert_eq!(lag, [(0, 2), (1, 0)]);
    }

    #[test]
    fn a_dead_letter_is_counted_by_the_kind_of_its_reason_and_kept_for_the_api() {
        let o = observer();
        let d = DeadLetter {
            key: None,
            value: None,
            reason: "avro decode: field `withdraw`: not a double".into(),
            topic: "bank-transactions".into(),
            partition: 1,
            offset: 42,
        };
        o.dead_letters(3, &[d]);
        assert!(o
            .metrics_text()
            .contains("rill_dead_letters_total{job=\"t\",process=\"0\",reason=\"avro decode\"} 1"));
        let e = &o.errors()[0];
        assert_eq!((e.epoch, e.partition, e.offset), (3, 1, 42));
    }
}
