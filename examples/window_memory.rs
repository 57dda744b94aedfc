//! Peak memory of windowed aggregation: N events over W windows (keys ×
//! windows per key), fed epoch by epoch through the turnstile-style plan on
//! in-memory input. Samples the process's resident set size while it runs
//! and prints it at each tenth of the input, so one can see whether memory
//! stays flat once windows close.
//!
//! cargo run --release --example window_memory -- [EVENTS] [KEYS] [WINDOWS_PER_KEY]

use rill::plan::Plan;
use rill::record::{Origin, RawRecord};
use rill::runtime::memory::{run_in_memory, MemoryInput};
use rill::spec::Spec;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn main() {
    let args: Vec<u64> = std::env::args()
        .skip(1)
        .map(|a| a.parse().unwrap())
        .collect();
    let events = *args.first().unwrap_or(&1_000_000);
    let keys = *args.get(1).unwrap_or(&1_000);
    let windows_per_key = *args.get(2).unwrap_or(&100);
    let epochs = windows_per_key; // one window's worth of event time per epoch
    let dir = std::env::temp_dir().join(format!("rill-window-memory-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("ev.avsc"),
        r#"{"type":"record","name":"Ev","fields":[{"name":"key","type":"string"},{"name":"t","type":"long"},{"name":"v","type":"long"}]}"#,
    )
    .unwrap();
    let job = r#"[job]
name = "memory"
[sources.ev]
type = "kafka"
topic = "ev"
format = "json"
schema = "ev.avsc"
partitions = 2
[transforms.agg]
type = "aggregate"
inputs = ["ev"]
group_by = ["key"]
aggregates.n = "count()"
aggregates.total = "sum(v)"
[transforms.agg.window]
type = "tumbling"
time_field = "t"
size_ms = 1000
[sinks.out]
type = "kafka"
inputs = ["agg"]
topic = "out"
format = "json"
"#;
    let spec = Spec::parse(&dir.join("job.toml"), job.to_string()).unwrap();
    let plan = Arc::new(Plan::build(&spec).unwrap());
    let per_epoch = events / epochs;
    let input: Vec<(u64, RawRecord)> = (0..events)
        .map(|i| {
            let epoch = 1 + i / per_epoch.max(1);
            let key = i % keys;
            let t = (epoch as i64 - 1) * 1000 + (i % 1000) as i64;
            let value = format!(r#"{{"key":"k{key}","t":{t},"v":{}}}"#, i % 7);
            (
                epoch,
                RawRecord {
                    key: None,
                    value: Some(value.into_bytes().into()),
                    timestamp_ms: 0,
                    origin: Origin {
                        source: 0,
                        partition: (i % 2) as i32,
                        offset: (i / 2) as i64,
                    },
                },
            )
        })
        .collect();
    let before = rss_kib();
    let samples: Arc<Mutex<Vec<(Duration, u64)>>> = Default::default();
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let (samples, done) = (samples.clone(), done.clone());
        std::thread::spawn(move || {
            let start = Instant::now();
            while !done.load(Ordering::Relaxed) {
                samples.lock().unwrap().push((start.elapsed(), rss_kib()));
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let start = Instant::now();
    let summary = run_in_memory(
        plan,
        1,
        vec![MemoryInput::Scripted(Arc::new(input))],
        vec![],
        false,
    )
    .unwrap();
    let elapsed = start.elapsed();
    done.store(true, Ordering::Relaxed);
    sampler.join().unwrap();
    let samples = samples.lock().unwrap();
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    println!(
        "{events} events, {} windows ({keys} keys x {windows_per_key}), {} results, in {:.2} s ({:.0} events/s)",
        keys * windows_per_key,
        summary.records_out.values().sum::<u64>(),
        elapsed.as_secs_f64(),
        events as f64 / elapsed.as_secs_f64()
    );
    println!(
        "rss before the run (input held in memory): {} MiB; peak during it: {} MiB",
        before / 1024,
        peak / 1024
    );
    let n = samples.len().max(1);
    let tenths: Vec<String> = (1..=10)
        .map(|k| format!("{}", samples[(n * k / 10).min(n - 1)].1 / 1024))
        .collect();
    println!("rss at each tenth of the run (MiB): {}", tenths.join(" "));
    let _ = std::fs::remove_dir_all(dir);
}
