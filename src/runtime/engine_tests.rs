//! Property tests: random event streams, with events out of order and
//! late, through windows and plain aggregates on 1 and 4 workers, against
//! a direct computation over the same events.

use super::memory::{run_in_memory, run_in_memory_restarted, MemoryInput, Restart};
use crate::dataflow::window::windows_of;
use crate::plan::aggregate::WindowShape;
use crate::plan::Plan;
use crate::record::{Origin, RawRecord};
use crate::spec::Spec;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

const PARTITIONS: i32 = 3;
const EPOCHS: u64 = 8;
const OUT_OF_ORDERNESS: i64 = 20;

#[derive(Debug, Clone)]
struct Event {
    epoch: u64,
    partition: i32,
    offset: i64,
    key: String,
    t: i64,
    v: i64,
}

fn events(seed: u64) -> Vec<Event> {
    let mut rng = SmallRng::seed_from_u64(seed);
    let mut out = Vec::new();
    let mut offsets = [0i64; PARTITIONS as usize];
    for epoch in 1..=EPOCHS {
        for p in 0..PARTITIONS {
            for _ in 0..rng.random_range(3..15) {
                // Time moves ~100 per epoch; some events trail far behind.
                let t = epoch as i64 * 100 + rng.random_range(-220..60);
                out.push(Event {
                    epoch,
                    partition: p,
                    offset: offsets[p as usize],
                    key: format!("k{}", rng.random_range(0..4)),
                    t,
                    v: rng.random_range(0..100),
                });
                offsets[p as usize] += 1;
            }
        }
    }
    out
}

#[derive(Debug, Clone, PartialEq, PartialOrd)]
struct Agg {
    n: i64,
    total: i64,
    lo: i64,
    hi: i64,
}

impl Agg {
    fn add(&mut self, v: i64) {
        self.n += 1;
        self.total += v;
        self.lo = self.lo.min(v);
        self.hi = self.hi.max(v);
    }
    fn new(v: i64) -> Self {
        Agg {
            n: 1,
            total: v,
            lo: v,
            hi: v,
        }
    }
}

type Row = (String, Option<(i64, i64)>, i64, i64, i64, i64, f64);

fn row(key: &str, window: Option<(i64, i64)>, a: &Agg) -> Row {
    (
        key.to_string(),
        window,
        a.n,
        a.total,
        a.lo,
        a.hi,
        a.total as f64 / a.n as f64,
    )
}

/// What the job must produce, computed straight from the events: which are
/// late given the watermark each epoch starts with, and every window's
/// aggregate over the events that reach it.
fn expected(events: &[Event], shape: Option<WindowShape>) -> (Vec<Row>, BTreeSet<(i32, i64)>) {
    let Some(shape) = shape else {
        let mut per_key: BTreeMap<&str, Agg> = BTreeMap::new();
        for e in events {
            per_key
                .entry(&e.key)
                .and_modify(|a| a.add(e.v))
                .or_insert_with(|| Agg::new(e.v));
        }
        return (
            per_key.iter().map(|(k, a)| row(k, None, a)).collect(),
            BTreeSet::new(),
        );
    };
    let mut watermark = i64::MIN;
    let mut maxima: BTreeMap<i32, i64> = BTreeMap::new();
    let mut late = BTreeSet::new();
    let mut windows: BTreeMap<(String, i64, i64), Agg> = BTreeMap::new();
    let mut session_events: BTreeMap<String, Vec<(i64, i64)>> = BTreeMap::new();
    let mut spans = Vec::new();
    for epoch in 1..=EPOCHS {
        for e in events.iter().filter(|e| e.epoch == epoch) {
            windows_of(shape, e.t, &mut spans);
            let is_late = match shape {
                WindowShape::Session { .. } => e.t <= watermark,
                _ => spans.iter().all(|(_, end)| *end <= watermark),
            };
            if is_late {
                late.insert((e.partition, e.offset));
                continue;
            }
            match shape {
                WindowShape::Session { .. } => session_events
                    .entry(e.key.clone())
                    .or_default()
                    .push((e.t, e.v)),
                _ => {
                    for &(s, end) in spans.iter().filter(|(_, end)| *end > watermark) {
                        windows
                            .entry((e.key.clone(), s, end))
                            .and_modify(|a| a.add(e.v))
                            .or_insert_with(|| Agg::new(e.v));
                    }
                }
            }
        }
        for e in events.iter().filter(|e| e.epoch == epoch) {
            let m = maxima.entry(e.partition).or_insert(e.t);
            *m = (*m).max(e.t);
        }
        if maxima.len() == PARTITIONS as usize {
            watermark = watermark.max(maxima.values().min().unwrap() - OUT_OF_ORDERNESS);
        }
    }
    if let WindowShape::Session { gap } = shape {
        for (key, mut evs) in session_events {
            evs.sort();
            let mut current: Option<(i64, i64, Agg)> = None;
            for (t, v) in evs {
                current = match current {
                    Some((s, end, mut a)) if t <= end => {
                        a.add(v);
                        Some((s, end.max(t + gap), a))
                    }
                    Some((s, end, a)) => {
                        windows.insert((key.clone(), s, end), a);
                        Some((t, t + gap, Agg::new(v)))
                    }
                    None => Some((t, t + gap, Agg::new(v))),
                };
            }
            if let Some((s, end, a)) = current {
                windows.insert((key.clone(), s, end), a);
            }
        }
    }
    (
        windows
            .iter()
            .map(|((k, s, e), a)| row(k, Some((*s, *e)), a))
            .collect(),
        late,
    )
}

/// The plan of a job file over the events' schema (`ev.avsc`).
fn plan_of(text: String) -> Arc<Plan> {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ev.avsc"),
        r#"{"type":"record","name":"Ev","fields":[{"name":"key","type":"string"},{"name":"t","type":"long"},{"name":"v","type":"long"}]}"#,
    )
    .unwrap();
    let spec = Spec::parse(&dir.path().join("job.toml"), text).unwrap();
    Arc::new(Plan::build(&spec).unwrap_or_else(|e| panic!("{e}")))
}

fn job(window: &str) -> Arc<Plan> {
    plan_of(format!(
        r#"[job]
name = "prop"

[sources.ev]
type = "kafka"
topic = "ev"
format = "json"
schema = "ev.avsc"

[transforms.agg]
type = "aggregate"
inputs = ["ev"]
group_by = ["key"]
aggregates.n = "count()"
aggregates.total = "sum(v)"
aggregates.lo = "min(v)"
aggregates.hi = "max(v)"
aggregates.mean = "avg(v)"
{window}

[sinks.out]
type = "kafka"
inputs = ["agg"]
topic = "out"
format = "json"
"#
    ))
}

fn scripted(events: &[Event]) -> Vec<(u64, RawRecord)> {
    events
        .iter()
        .map(|e| {
            let value = format!(r#"{{"key":"{}","t":{},"v":{}}}"#, e.key, e.t, e.v);
            (
                e.epoch,
                RawRecord {
                    key: None,
                    value: Some(value.into_bytes().into()),
                    timestamp_ms: 0,
                    origin: Origin {
                        source: 0,
                        partition: e.partition,
                        offset: e.offset,
                    },
                },
            )
        })
        .collect()
}

fn run(
    plan: &Arc<Plan>,
    events: &[Event],
    workers: usize,
) -> (Vec<(u64, Row)>, BTreeSet<(i32, i64)>) {
    let input = scripted(events);
    let summary = run_in_memory(
        plan.clone(),
        workers,
        vec![MemoryInput::Scripted(Arc::new(input))],
        vec![],
        true,
    )
    .unwrap();
    rows_and_late(summary)
}

fn rows_and_late(summary: super::local::RunSummary) -> (Vec<(u64, Row)>, BTreeSet<(i32, i64)>) {
    let rows = summary
        .output
        .get("out")
        .cloned()
        .unwrap_or_default()
        .into_iter()
        .map(|(epoch, r)| {
            let j: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
            let window = j
                .get("window_start")
                .map(|s| (s.as_i64().unwrap(), j["window_end"].as_i64().unwrap()));
            let row: Row = (
                j["key"].as_str().unwrap().to_string(),
                window,
                j["n"].as_i64().unwrap(),
                j["total"].as_i64().unwrap(),
                j["lo"].as_i64().unwrap(),
                j["hi"].as_i64().unwrap(),
                j["mean"].as_f64().unwrap(),
            );
            (epoch, row)
        })
        .collect();
    let late = summary
        .dead_letters
        .iter()
        .map(|d| {
            assert_eq!(d.reason, "agg: late");
            (d.partition, d.offset)
        })
        .collect();
    assert_eq!(summary.late as usize, summary.dead_letters.len());
    (rows, late)
}

fn sorted(mut v: Vec<Row>) -> Vec<Row> {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v
}

fn check(window: &str, shape: Option<WindowShape>) {
    let plan = job(window);
    for seed in 0..6 {
        let evs = events(seed);
        let (want, want_late) = expected(&evs, shape);
        if shape.is_some() {
            assert!(
                !want_late.is_empty(),
                "seed {seed} should produce late events"
            );
        }
        for workers in [1, 4] {
            let (rows, late) = run(&plan, &evs, workers);
            assert_eq!(
                late, want_late,
                "late events, seed {seed}, {workers} workers, {window}"
            );
            let got: Vec<Row> = if shape.is_some() {
                rows.into_iter().map(|(_, r)| r).collect()
            } else {
                // An upsert stream: the last record per key is its value.
                let mut last: BTreeMap<String, (u64, Row)> = BTreeMap::new();
                let mut per_epoch: BTreeSet<(u64, String)> = BTreeSet::new();
                for (epoch, r) in rows {
                    assert!(
                        per_epoch.insert((epoch, r.0.clone())),
                        "one record per key per epoch"
                    );
                    last.insert(r.0.clone(), (epoch, r));
                }
                last.into_values().map(|(_, r)| r).collect()
            };
            assert_eq!(
                sorted(got),
                sorted(want.clone()),
                "seed {seed}, {workers} workers, {window}"
            );
        }
    }
}

#[test]
fn tumbling_windows_match_a_batch_computation() {
    check(
        "[transforms.agg.window]\ntype = \"tumbling\"\ntime_field = \"t\"\nsize_ms = 100\nmax_out_of_orderness_ms = 20",
        Some(WindowShape::Tumbling { size: 100 }),
    );
}

#[test]
fn hopping_windows_match_a_batch_computation() {
    check(
        "[transforms.agg.window]\ntype = \"hopping\"\ntime_field = \"t\"\nsize_ms = 100\nhop_ms = 25\nmax_out_of_orderness_ms = 20",
        Some(WindowShape::Hopping { size: 100, hop: 25 }),
    );
}

#[test]
fn session_windows_match_a_batch_computation() {
    check(
        "[transforms.agg.window]\ntype = \"session\"\ntime_field = \"t\"\ngap_ms = 15\nmax_out_of_orderness_ms = 20",
        Some(WindowShape::Session { gap: 15 }),
    );
}

#[test]
fn plain_aggregates_end_at_the_batch_result() {
    check("", None);
}

/// Partition 1 goes quiet after epoch 1 while partition 0 keeps moving:
/// the epochs at which window [100, 200) and the last window come out, with
/// and without an idle timeout of two epochs. The last window can only
/// come out when the bounded run ends.
fn idle_run(idle: &str, workers: usize) -> (u64, u64) {
    let plan = job(&format!(
        "[transforms.agg.window]\ntype = \"tumbling\"\ntime_field = \"t\"\nsize_ms = 100\n{idle}"
    ));
    let mut evs = Vec::new();
    for (i, t) in [5, 20, 40].into_iter().enumerate() {
        evs.push(Event {
            epoch: 1,
            partition: 1,
            offset: i as i64,
            key: "a".into(),
            t,
            v: 1,
        });
    }
    for epoch in 1..=10u64 {
        evs.push(Event {
            epoch,
            partition: 0,
            offset: epoch as i64,
            key: "a".into(),
            t: epoch as i64 * 100 + 10,
            v: 1,
        });
    }
    let (rows, late) = run(&plan, &evs, workers);
    assert!(late.is_empty());
    let at = |w| {
        rows.iter()
            .find(|(_, r)| r.1 == Some(w))
            .map(|(e, _)| *e)
            .expect("every window is emitted")
    };
    (at((100, 200)), at((1000, 1100)))
}

#[test]
fn an_idle_partition_stops_holding_windows_back() {
    for workers in [1, 2] {
        let (window, end) = idle_run("idle_timeout_ms = 2000", workers);
        assert!(
            window <= 4 && window < end,
            "with an idle timeout the window fires by epoch 4, not {window} (end {end})"
        );
        let (window, end) = idle_run("", workers);
        assert_eq!(window, end, "without one, only the end of the run fires it");
    }
}

/// The job stopped after epoch `cut` and started again on another number
/// of workers with the state its changelog holds: what the two runs send
/// together, and the late events of both.
fn run_with_restart(
    plan: &Arc<Plan>,
    events: &[Event],
    cut: u64,
    workers: (usize, usize),
) -> (Vec<(u64, Row)>, BTreeSet<(i32, i64)>) {
    let (before, after): (Vec<Event>, Vec<Event>) =
        events.iter().cloned().partition(|e| e.epoch <= cut);
    let first = run_in_memory(
        plan.clone(),
        workers.0,
        vec![MemoryInput::Scripted(Arc::new(scripted(&before)))],
        vec![],
        true,
    )
    .unwrap();
    // The state as of the last epoch the first run committed: the latest
    // changelog value per key.
    let mut changelog = first.changelog.clone();
    let last = changelog.iter().map(|c| c.0).chain([cut]).max().unwrap();
    changelog.sort_by_key(|c| c.0);
    let mut by_transform: BTreeMap<String, Vec<super::restore::Logged>> = BTreeMap::new();
    for (i, (epoch, transform, key, value)) in changelog.into_iter().enumerate() {
        by_transform
            .entry(transform)
            .or_default()
            .push((epoch, i as i64, key, value));
    }
    let mut restored: std::collections::HashMap<String, Vec<_>> = Default::default();
    for (transform, records) in by_transform {
        restored.insert(
            transform,
            super::restore::state_as_of(records, last).unwrap(),
        );
    }
    // The second run's epochs come after every epoch the first one used.
    let shift = last - cut;
    let after: Vec<Event> = after
        .into_iter()
        .map(|mut e| {
            e.epoch += shift;
            e
        })
        .collect();
    let second = run_in_memory_restarted(
        plan.clone(),
        workers.1,
        vec![MemoryInput::Scripted(Arc::new(scripted(&after)))],
        vec![],
        true,
        Restart {
            after: last,
            state: restored,
        },
    )
    .unwrap();
    let (mut rows, mut late) = rows_and_late(first);
    let (rows2, late2) = rows_and_late(second);
    assert!(
        rows2.iter().all(|(e, _)| *e > last),
        "a restart sends nothing in an epoch already committed"
    );
    rows.extend(rows2);
    late.extend(late2);
    (rows, late)
}

/// The latest record per key and window: what an upsert consumer holds.
fn latest(rows: Vec<(u64, Row)>) -> Vec<Row> {
    let mut last: BTreeMap<(String, Option<(i64, i64)>), Row> = BTreeMap::new();
    for (_, r) in rows {
        last.insert((r.0.clone(), r.1), r);
    }
    last.into_values().collect()
}

/// Stopped and restarted after any epoch, on another number of workers,
/// the job ends where an uninterrupted run ends: the same latest value per
/// key (and window), the same late events. Restored state and the first
/// epoch after it often reach an operator together, in one batch.
fn check_restarts(window: &str) {
    let plan = job(window);
    for seed in 0..3 {
        let evs = events(seed);
        let (whole, whole_late) = run(&plan, &evs, 2);
        let want = sorted(latest(whole));
        for cut in 1..EPOCHS {
            let (rows, late) = run_with_restart(&plan, &evs, cut, (2, 3));
            assert_eq!(
                late, whole_late,
                "late events, seed {seed}, cut {cut}, {window}"
            );
            assert_eq!(
                sorted(latest(rows)),
                want,
                "seed {seed}, restart after epoch {cut}, {window}"
            );
        }
    }
}

#[test]
fn plain_aggregates_restarted_after_any_epoch_end_the_same() {
    check_restarts("");
}

#[test]
fn tumbling_windows_restarted_after_any_epoch_end_the_same() {
    check_restarts(
        "[transforms.agg.window]\ntype = \"tumbling\"\ntime_field = \"t\"\nsize_ms = 100\nmax_out_of_orderness_ms = 20",
    );
}

#[test]
fn hopping_windows_restarted_after_any_epoch_end_the_same() {
    check_restarts(
        "[transforms.agg.window]\ntype = \"hopping\"\ntime_field = \"t\"\nsize_ms = 100\nhop_ms = 25\nmax_out_of_orderness_ms = 20",
    );
}

/// The state a run through epoch `upto` leaves in its changelog, as
/// compaction would keep it (the last record per key), restored as of
/// epoch `r`.
fn compacted_state_as_of(
    plan: &Arc<Plan>,
    events: &[Event],
    upto: u64,
    r: u64,
) -> BTreeMap<String, Vec<crate::dataflow::state::StateEntry>> {
    let before: Vec<Event> = events.iter().filter(|e| e.epoch <= upto).cloned().collect();
    let summary = run_in_memory(
        plan.clone(),
        2,
        vec![MemoryInput::Scripted(Arc::new(scripted(&before)))],
        vec![],
        true,
    )
    .unwrap();
    let mut changelog = summary.changelog;
    // Records of a bounded run's last firing belong to a later epoch.
    changelog.retain(|c| c.0 <= upto);
    changelog.sort_by_key(|c| c.0);
    let mut last: BTreeMap<(String, Vec<u8>), (u64, Option<Vec<u8>>)> = BTreeMap::new();
    for (epoch, transform, key, value) in changelog {
        last.insert((transform, key), (epoch, value));
    }
    let mut by_transform: BTreeMap<String, Vec<super::restore::Logged>> = BTreeMap::new();
    for ((transform, key), (epoch, value)) in last {
        by_transform
            .entry(transform)
            .or_default()
            .push((epoch, 0, key, value));
    }
    by_transform
        .into_iter()
        .map(|(t, records)| (t, super::restore::state_as_of(records, r).unwrap()))
        .collect()
}

/// Writers in lockstep can be one epoch apart after a crash: the job
/// resumes after the lower epoch, and a key whose older records
/// compaction removed is rolled back through its before-image. That gives
/// the state a changelog written only up to that epoch gives.
fn check_rollback(window: &str) {
    let plan = job(window);
    for seed in 0..3 {
        let evs = events(seed);
        for r in 1..EPOCHS {
            assert_eq!(
                compacted_state_as_of(&plan, &evs, r + 1, r),
                compacted_state_as_of(&plan, &evs, r, r),
                "seed {seed}, rolled back from epoch {} to {r}, {window}",
                r + 1
            );
        }
    }
}

#[test]
fn plain_aggregate_state_rolls_back_one_epoch_through_before_images() {
    check_rollback("");
}

#[test]
fn window_state_rolls_back_one_epoch_through_before_images() {
    check_rollback(
        "[transforms.agg.window]\ntype = \"tumbling\"\ntime_field = \"t\"\nsize_ms = 100\nmax_out_of_orderness_ms = 20",
    );
    check_rollback(
        "[transforms.agg.window]\ntype = \"session\"\ntime_field = \"t\"\ngap_ms = 60\nmax_out_of_orderness_ms = 20",
    );
}

/// Runs `plan` over `events` as a cluster of `processes` processes of one
/// worker each (threads here, joined over TCP as separate processes are):
/// what all of them send together, and the late events.
fn run_in_cluster(
    plan: &Arc<Plan>,
    events: &[Event],
    processes: usize,
) -> (Vec<(u64, Row)>, BTreeSet<(i32, i64)>) {
    use super::cluster::{connect, Identity};
    let addresses: Vec<String> = (0..processes)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect::<Vec<_>>()
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    let id = Identity {
        fingerprint: 1,
        generation: 1,
        key: [0; 32],
    };
    let input = Arc::new(scripted(events));
    let handles: Vec<_> = (0..processes)
        .map(|p| {
            let (plan, addresses, input) = (plan.clone(), addresses.clone(), input.clone());
            std::thread::spawn(move || {
                let sockets = connect(&addresses, p, id, std::time::Duration::from_secs(20))
                    .unwrap()
                    .timely;
                super::memory::run_in_memory_in_cluster(
                    plan,
                    1,
                    vec![MemoryInput::Scripted(input)],
                    vec![],
                    true,
                    sockets,
                    p,
                )
                .unwrap()
            })
        })
        .collect();
    let (mut rows, mut late) = (Vec::new(), BTreeSet::new());
    for h in handles {
        let (r, l) = rows_and_late(h.join().unwrap());
        rows.extend(r);
        late.extend(l);
    }
    (rows, late)
}

/// Two processes of one worker send what one process of two workers
/// sends: the same records in the same epochs, the same late events.
#[test]
fn a_cluster_of_two_processes_computes_what_one_process_does() {
    let by_epoch = |rows: Vec<(u64, Row)>| {
        let mut rows = rows;
        rows.sort_by(|a, b| a.partial_cmp(b).unwrap());
        rows
    };
    for window in [
        "",
        "[transforms.agg.window]\ntype = \"tumbling\"\ntime_field = \"t\"\nsize_ms = 100\nmax_out_of_orderness_ms = 20",
    ] {
        let plan = job(window);
        for seed in 0..2 {
            let evs = events(seed);
            let (one, one_late) = run(&plan, &evs, 2);
            let (two, two_late) = run_in_cluster(&plan, &evs, 2);
            assert_eq!(two_late, one_late, "seed {seed}, {window}");
            assert_eq!(by_epoch(two), by_epoch(one), "seed {seed}, {window}");
        }
    }
}

/// Four sinks reading one stream share an operator: each still gets every
/// record, with its key, whole, whichever of them comes last and may take
/// the record's key and row. A table, last here, keeps no key: the last
/// topic takes it.
#[test]
fn sinks_of_one_stream_each_get_every_record_whole() {
    let plan = plan_of(
        r#"[job]
name = "fanout"

[sources.ev]
type = "kafka"
topic = "ev"
format = "json"
schema = "ev.avsc"

[transforms.doubled]
type = "map"
inputs = ["ev"]
fields.w = "v * 2"

[sinks.topic]
type = "kafka"
inputs = ["doubled"]
topic = "topic"
format = "json"

[sinks.lake]
type = "file"
inputs = ["doubled"]
path = "lake"
format = "parquet"
roll = "epoch"

[sinks.avro]
type = "kafka"
inputs = ["doubled"]
topic = "avro"
format = "avro"

[sinks.warehouse]
type = "postgres"
inputs = ["doubled"]
url = "postgresql://postgres@127.0.0.1:5432/postgres"
table = "warehouse"
"#
        .into(),
    );
    let input: Vec<(u64, RawRecord)> = (0..300i64)
        .map(|i| {
            let value = format!(r#"{{"key":"k{i}","t":{i},"v":{i}}}"#);
            let record = RawRecord {
                key: Some(format!("k{i}").into()),
                value: Some(value.into_bytes().into()),
                timestamp_ms: 0,
                origin: Origin {
                    source: 0,
                    partition: (i % PARTITIONS as i64) as i32,
                    offset: i / PARTITIONS as i64,
                },
            };
            (1 + (i % 3) as u64, record)
        })
        .collect();
    let summary = run_in_memory(
        plan,
        2,
        vec![MemoryInput::Scripted(Arc::new(input))],
        vec![],
        true,
    )
    .unwrap();
    let expected: BTreeSet<(String, i64)> = (0..300).map(|i| (format!("k{i}"), 2 * i)).collect();
    let keyed = |sink: &str, w: &dyn Fn(&crate::record::OutRecord) -> i64| {
        let out = &summary.output[sink];
        assert_eq!(out.len(), 300, "sink {sink}");
        out.iter()
            .map(|(_, r)| {
                let key = String::from_utf8(r.key.as_deref().unwrap().to_vec()).unwrap();
                (key, w(r))
            })
            .collect::<BTreeSet<_>>()
    };
    let from_json = |r: &crate::record::OutRecord| {
        let j: serde_json::Value = serde_json::from_slice(r.value.as_deref().unwrap()).unwrap();
        j["w"].as_i64().unwrap()
    };
    assert_eq!(keyed("topic", &from_json), expected);
    let from_row = |r: &crate::record::OutRecord| match r.row.as_ref().unwrap()[3] {
        crate::record::Value::Int(w) => w,
        ref v => panic!("w is {v:?}"),
    };
    assert_eq!(keyed("lake", &from_row), expected);
    // An Avro value: the 5-byte wire header, then key, t, v, w; w is the
    // last zigzag varint.
    let from_avro = |r: &crate::record::OutRecord| {
        let v = r.value.as_deref().unwrap();
        let mut end = v.len() - 1;
        while end > 0 && v[end - 1] & 0x80 != 0 {
            end -= 1;
        }
        let mut n = 0u64;
        for (s, b) in v[end..].iter().enumerate() {
            n |= ((b & 0x7f) as u64) << (7 * s);
        }
        ((n >> 1) as i64) ^ -((n & 1) as i64)
    };
    assert_eq!(keyed("avro", &from_avro), expected);
    // A row in binary COPY form ends with its last column, w, as eight
    // big-endian bytes.
    let table = &summary.output["warehouse"];
    assert!(table.iter().all(|(_, r)| r.key.is_none()));
    let w: BTreeSet<i64> = table
        .iter()
        .map(|(_, r)| {
            let v = r.value.as_deref().unwrap();
            i64::from_be_bytes(v[v.len() - 8..].try_into().unwrap())
        })
        .collect();
    assert_eq!(w, (0..300).map(|i| 2 * i).collect::<BTreeSet<_>>());
}
