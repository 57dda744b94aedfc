//! The engine alone on the bank split: Avro decode, route, map, Avro
//! encode, with an in-memory source and sink. Throughput is records per
//! second for the whole run; divide by the workers for per-worker figures.

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use rill::connectors::datagen::BankGenerator;
use rill::format::avro;
use rill::plan::Plan;
use rill::record::{Origin, RawRecord};
use rill::runtime::local::{run_in_memory, MemoryInput};
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
                value: Some(value),
                timestamp_ms: 0,
                origin: Origin { source: 0, partition: (i % 4) as i32, offset: (i / 4) as i64 },
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
                let s = run_in_memory(plan.clone(), w, vec![MemoryInput::Records(records.clone())], vec![(1, schema.clone())], false).unwrap();
                assert_eq!(s.records_in, RECORDS as u64);
                s
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bank_split);
criterion_main!(benches);
