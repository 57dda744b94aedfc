//! The engine alone on the bank split: Avro decode, route, map, Avro
//! encode, with an in-memory source and sink. Throughput is records per
//! second for the whole run; divide by the workers for per-worker figures.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rill::connectors::datagen::BankGenerator;
use rill::format::avro;
use rill::plan::Plan;
use rill::record::{Origin, RawRecord};
use rill::runtime::memory::{run_in_memory, MemoryInput};
use rill::spec::Spec;
use std::path::Path;
use std::sync::Arc;

const RECORDS: usize = 400_000;

fn bank_input(plan: &Plan) -> (Vec<RawRecord>, String) {
    let (_, node, source) = plan.sources().next().unwrap();
    let rows = &node.outputs[0];
    let mut generator = BankGenerator::new(rows, 7).unwrap();
    let encoder = avro::Encoder::new(rows);
    let records = (0..RECORDS)
        .map(|i| {
            let (key, row) = generator.random(1_700_000_000_000 + i as i64);
            let mut value = Vec::with_capacity(48);
            avro::write_wire_header(&mut value, 1);
            encoder.encode(&row, &mut value).unwrap();
            RawRecord {
                key: Some(key.into()),
                value: Some(value.into()),
                timestamp_ms: 0,
                origin: Origin {
                    source: 0,
                    partition: (i % 4) as i32,
                    offset: (i / 4) as i64,
                },
            }
        })
        .collect();
    (records, source.reader_text.clone())
}

fn bank_split(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let spec = Spec::load(&root.join("jobs/bank.toml")).unwrap();
    let plan = Arc::new(Plan::build(&spec).unwrap());
    let (records, schema) = bank_input(&plan);
    let records = Arc::new(records);
    let mut group = c.benchmark_group("bank_split");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS as u64));
    for workers in [1usize, 2] {
        group.bench_with_input(BenchmarkId::new("workers", workers), &workers, |b, &w| {
            b.iter(|| {
                let s = run_in_memory(
                    plan.clone(),
                    w,
                    vec![MemoryInput::Records(records.clone())],
                    vec![(1, schema.clone())],
                    false,
                )
                .unwrap();
                assert_eq!(s.records_in, RECORDS as u64);
                s
            })
        });
    }
    group.finish();
}

/// The same bank transactions through jobs/rejected.toml's aggregate (sum
/// and count per account, 1000 accounts) on differential dataflow.
fn rejected_aggregate(c: &mut Criterion) {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let bank = Plan::build(&Spec::load(&root.join("jobs/bank.toml")).unwrap()).unwrap();
    let plan =
        Arc::new(Plan::build(&Spec::load(&root.join("jobs/rejected.toml")).unwrap()).unwrap());
    let (records, schema) = bank_input(&bank);
    let records = Arc::new(records);
    let mut group = c.benchmark_group("rejected_aggregate");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS as u64));
    for workers in [1usize, 2] {
        group.bench_with_input(BenchmarkId::new("workers", workers), &workers, |b, &w| {
            b.iter(|| {
                run_in_memory(
                    plan.clone(),
                    w,
                    vec![MemoryInput::Records(records.clone())],
                    vec![(1, schema.clone())],
                    false,
                )
                .unwrap()
            })
        });
    }
    group.finish();
}

/// jobs/turnstile.toml's 5-minute windows per station on generated
/// turnstile events (JSON), 4 stations x 2 devices, cut into 40 epochs.
fn turnstile_windows(c: &mut Criterion) {
    const STATIONS: usize = 4;
    use rill::connectors::datagen::TurnstileGenerator;
    use rill::runtime::memory::MemoryInput;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let plan =
        Arc::new(Plan::build(&Spec::load(&root.join("jobs/turnstile.toml")).unwrap()).unwrap());
    let rows = plan.sources().next().unwrap().1.outputs[0].clone();
    let mut generator =
        TurnstileGenerator::new(&rows, 3, 1_690_542_000_000, STATIONS, 2, 0.05, 0.0).unwrap();
    let input: Vec<(u64, RawRecord)> = (0..RECORDS)
        .map(|i| {
            let (key, row) = generator.next_event();
            let value = rill::format::json::row_to_string(&row, &rows, false).into_bytes();
            let origin = Origin {
                source: 0,
                partition: (i % 2) as i32,
                offset: (i / 2) as i64,
            };
            (
                1 + (i * 40 / RECORDS) as u64,
                RawRecord {
                    key: Some(key.into()),
                    value: Some(value.into()),
                    timestamp_ms: 0,
                    origin,
                },
            )
        })
        .collect();
    let input = Arc::new(input);
    let mut group = c.benchmark_group("turnstile_windows");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS as u64));
    for workers in [1usize, 2] {
        group.bench_with_input(BenchmarkId::new("workers", workers), &workers, |b, &w| {
            b.iter(|| {
                // File sinks run in memory here: only the engine is measured.
                run_in_memory(
                    plan.clone(),
                    w,
                    vec![MemoryInput::Scripted(input.clone())],
                    vec![],
                    false,
                )
                .unwrap()
            })
        });
    }
    group.finish();
}

/// One process of two workers against two processes of one worker (threads
/// here, each with its own timely communication over TCP on loopback, as
/// separate processes have), on the bank split (no exchange between
/// workers) and the rejected aggregate (records exchanged by account).
fn cluster(c: &mut Criterion) {
    use rill::runtime::cluster::{connect, Identity};
    use rill::runtime::memory::run_in_memory_in_cluster;
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Output topics of two partitions, one per process's writer (a
    // partition has one writer), in both shapes.
    let two_partitions = |job: &str| {
        let mut spec = Spec::load(&root.join("jobs").join(job)).unwrap();
        for sink in spec.sinks.values_mut() {
            if let rill::spec::SinkConfig::Kafka(k) = sink {
                k.partitions = 2;
            }
        }
        Arc::new(Plan::build(&spec).unwrap())
    };
    let bank = two_partitions("bank.toml");
    let rejected = two_partitions("rejected.toml");
    let (records, schema) = bank_input(&bank);
    let records = Arc::new(records);
    let mut group = c.benchmark_group("cluster");
    group.sample_size(10);
    group.throughput(Throughput::Elements(RECORDS as u64));
    for (name, plan) in [("bank_split", bank), ("rejected_aggregate", rejected)] {
        group.bench_function(BenchmarkId::new(name, "1 process x 2 workers"), |b| {
            b.iter(|| {
                let input = vec![MemoryInput::Records(records.clone())];
                run_in_memory(plan.clone(), 2, input, vec![(1, schema.clone())], false).unwrap()
            })
        });
        group.bench_function(BenchmarkId::new(name, "2 processes x 1 worker"), |b| {
            b.iter(|| {
                let listeners: Vec<_> = (0..2)
                    .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
                    .collect();
                let addresses: Vec<String> = listeners
                    .iter()
                    .map(|l| l.local_addr().unwrap().to_string())
                    .collect();
                drop(listeners);
                let id = Identity {
                    fingerprint: 1,
                    generation: 1,
                    key: [0; 32],
                };
                let handles: Vec<_> = (0..2)
                    .map(|p| {
                        let (plan, addresses) = (plan.clone(), addresses.clone());
                        let (records, schema) = (records.clone(), schema.clone());
                        std::thread::spawn(move || {
                            let timeout = std::time::Duration::from_secs(20);
                            let sockets = connect(&addresses, p, id, timeout).unwrap().timely;
                            let input = vec![MemoryInput::Records(records)];
                            let schemas = vec![(1, schema)];
                            run_in_memory_in_cluster(plan, 1, input, schemas, false, sockets, p)
                                .unwrap()
                                .records_in
                        })
                    })
                    .collect();
                let read: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
                assert_eq!(read, RECORDS as u64);
            })
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    bank_split,
    rejected_aggregate,
    turnstile_windows,
    cluster
);
criterion_main!(benches);
