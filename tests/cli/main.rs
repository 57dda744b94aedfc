//! Drives the real `jobctl` against the Tansu broker and the registry that
//! `scripts/dev-up` starts. Each test uses topics of its own.

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use rill::connectors::kafka_admin;
use rill::format::registry::RegistryClient;
use rill::format::{avro, json};
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

mod chain;
mod cluster;
mod exactly_once;
mod kappa;
mod nothing_stuck;
mod operations;
mod refused;
mod secure;
mod sql;
mod whole_life;

const BROKERS: &str = "127.0.0.1:9092";

/// The test broker, as the library's Kafka calls take it.
fn brokers() -> rill::connectors::kafka_config::Brokers {
    rill::connectors::kafka_config::Brokers::plaintext(BROKERS)
}
const REGISTRY: &str = "http://127.0.0.1:8081";

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn jobctl(args: &[&str]) -> Output {
    let out = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(args)
        .current_dir(root())
        .output()
        .expect("run jobctl");
    out
}

fn ok(args: &[&str]) -> String {
    let out = jobctl(args);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "jobctl {args:?} failed ({}):\n{stderr}",
        out.status
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A running `jobctl`, the channel its stderr lines arrive on as they
/// come, and the thread that returns all of it when the process ends.
type Watched = (
    std::process::Child,
    std::sync::mpsc::Receiver<String>,
    std::thread::JoinHandle<String>,
);

/// Starts `jobctl args` with `env` and watches its stderr.
fn watched(args: &[&str], env: &[(&str, &str)]) -> Watched {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let err = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(err)) {
            let line = line.unwrap();
            let _ = tx.send(line.clone());
            text.push_str(&line);
            text.push('\n');
        }
        text
    });
    (child, rx, reader)
}

/// Waits at most 90 s for a line with `part` in it.
fn wait_for(rx: &std::sync::mpsc::Receiver<String>, part: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(part) => return,
            Ok(_) => {}
            Err(_) => panic!("no line with `{part}` within 90 s"),
        }
    }
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("{prefix}-{}-{}", std::process::id(), nanos % 1_000_000_000)
}

fn require_services() {
    if let Err(e) = kafka_admin::check_broker(&brokers()) {
        panic!("{e}\nthese tests need the broker and registry: run scripts/dev-up first");
    }
    if let Err(e) = RegistryClient::new(REGISTRY).subjects() {
        panic!("{e}\nthese tests need the broker and registry: run scripts/dev-up first");
    }
}

/// jobs/bank.toml with topics of its own, written into `dir`.
struct BankJob {
    path: PathBuf,
    input: String,
    approved: String,
    rejected: String,
    dead: String,
}

fn bank_job(dir: &Path, tag: &str) -> BankJob {
    let name = unique(tag);
    let text = std::fs::read_to_string(root().join("jobs/bank.toml")).unwrap();
    let job = BankJob {
        path: dir.join(format!("{name}.toml")),
        input: format!("{name}-in"),
        approved: format!("{name}-APPROVED"),
        rejected: format!("{name}-REJECTED"),
        dead: format!("{name}-dead"),
    };
    let text = text
        .replace("name = \"bank\"", &format!("name = \"{name}\""))
        .replace("\"bank-transactions\"", &format!("\"{}\"", job.input))
        .replace("\"APPROVED\"", &format!("\"{}\"", job.approved))
        .replace("\"REJECTED\"", &format!("\"{}\"", job.rejected))
        .replace("\"bank-dead-letters\"", &format!("\"{}\"", job.dead))
        .replace("../schemas/", &format!("{}/schemas/", root().display()));
    std::fs::write(&job.path, text).unwrap();
    job
}

fn with_sinks(job: &BankJob, tag: &str) -> BankJob {
    let text = std::fs::read_to_string(&job.path).unwrap();
    let out = BankJob {
        path: job.path.with_file_name(format!(
            "{tag}-{}",
            job.path.file_name().unwrap().to_str().unwrap()
        )),
        input: job.input.clone(),
        approved: format!("{}-{tag}", job.approved),
        rejected: format!("{}-{tag}", job.rejected),
        dead: job.dead.clone(),
    };
    // Another job name: a job resumes from its own committed progress.
    let name_line = text
        .lines()
        .find(|l| l.starts_with("name = "))
        .unwrap()
        .to_string();
    let text = text
        .replace(
            &name_line,
            &format!("{}-{tag}\"", name_line.trim_end_matches('"')),
        )
        .replace(
            &format!("\"{}\"", job.approved),
            &format!("\"{}\"", out.approved),
        )
        .replace(
            &format!("\"{}\"", job.rejected),
            &format!("\"{}\"", out.rejected),
        );
    std::fs::write(&out.path, text).unwrap();
    out
}

struct Read {
    key: Option<String>,
    value: Vec<u8>,
    headers: HashMap<String, String>,
    partition: i32,
    offset: i64,
}

/// Every record of `topic` up to its current end, as a plain consumer
/// sees them (on Tansu, aborted transactional records included).
fn read_topic(topic: &str) -> Vec<Read> {
    read_topic_on(&brokers(), topic)
}

/// [`read_topic`] on other brokers.
fn read_topic_on(brokers: &kafka_admin::Brokers, topic: &str) -> Vec<Read> {
    let mut out = Vec::new();
    kafka_admin::read_to_end(brokers, topic, |m| {
        out.push(Read {
            key: m
                .key
                .as_deref()
                .map(|k| String::from_utf8_lossy(k).into_owned()),
            value: m.value.clone().unwrap_or_default(),
            headers: m.headers.iter().cloned().collect(),
            partition: m.partition,
            offset: m.offset,
        })
    })
    .unwrap();
    out
}

/// Decodes Confluent-framed Avro values into the seed's JSON text.
fn decode_all(records: &[Read]) -> Vec<(String, String)> {
    let registry = RegistryClient::new(REGISTRY);
    let mut cache: HashMap<u32, (avro::Decoder, rill::record::RowSchema)> = HashMap::new();
    records
        .iter()
        .map(|r| {
            let (id, body) = avro::split_wire(&r.value).unwrap();
            let (d, rows) = cache.entry(id).or_insert_with(|| {
                let schema = avro::parse_schema(&registry.schema_by_id(id).unwrap()).unwrap();
                let rows = avro::row_schema(&schema).unwrap();
                (avro::Decoder::new(&schema, &schema, &rows).unwrap(), rows)
            });
            let row = d.decode(body).unwrap();
            (
                r.key.clone().unwrap_or_default(),
                json::row_to_string(&row, rows, true),
            )
        })
        .collect()
}

fn sorted(mut v: Vec<(String, String)>) -> Vec<(String, String)> {
    v.sort();
    v
}

#[test]
fn the_seed_records_split_exactly_as_the_seed_shows() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let job = bank_job(dir.path(), "seed");
    let path = job.path.to_str().unwrap();
    let produced = ok(&["datagen", "bank", "--job", path, "--seed-records"]);
    assert_eq!(
        produced
            .lines()
            .filter(|l| l.starts_with("Record produced - offset - "))
            .count(),
        6,
        "{produced}"
    );

    let out = jobctl(&[
        "submit",
        path,
        "--until-caught-up",
        "--trace-records",
        "--workers",
        "2",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let trace = String::from_utf8(out.stdout).unwrap();
    // The summary gives the whole run's time, from the process start, and
    // the processing time within it.
    let summary = stderr
        .lines()
        .find(|l| l.contains(" stopped after "))
        .unwrap_or_else(|| panic!("{stderr}"));
    let (head, tail) = summary.split_once(" s processing): ").unwrap();
    assert_eq!(
        tail,
        "6 records in, out approved 5, rejected 1, 0 dead-lettered, 0 filtered"
    );
    let (whole, processing) = head
        .rsplit_once(" in ")
        .unwrap()
        .1
        .split_once(" s (")
        .unwrap();
    let (whole, processing): (f64, f64) = (whole.parse().unwrap(), processing.parse().unwrap());
    assert!(whole >= processing, "{summary}");

    let approved = |id: u32, t: u64, w: f64, b: f64| {
        (
            id.to_string(),
            format!(
                r#"{{"account_id": {id}, "time": {t}, "withdraw": {w:?}, "balance": {b:?}, "bank_transaction_state": "APPROVED"}}"#
            ),
        )
    };
    let expected_approved = vec![
        approved(1001, 1690543334146, 100.0, 900.0),
        approved(1002, 1690543344146, 200.0, 800.0),
        approved(1004, 1690543364146, 800.0, 200.0),
        approved(1005, 1690543374146, 500.0, 500.0),
        approved(1006, 1690543384146, 500.0, 1500.0),
    ];
    let expected_rejected = vec![(
        "1003".to_string(),
        r#"{"account_id": 1003, "time": 1690543354146, "withdraw": 300.0, "balance": 300.0, "bank_transaction_state": "REJECTED"}"#.to_string(),
    )];
    assert_eq!(
        sorted(decode_all(&read_topic(&job.approved))),
        expected_approved
    );
    assert_eq!(
        sorted(decode_all(&read_topic(&job.rejected))),
        expected_rejected
    );

    // The console shows what the seed's console showed.
    for (k, v) in &expected_approved {
        assert!(
            trace.contains(&format!("Approved record - key {k} value {v}")),
            "missing approved {k} in:\n{trace}"
        );
    }
    assert!(trace.contains(&format!(
        "Rejected record - key 1003 value {}",
        expected_rejected[0].1
    )));
    assert!(trace.contains(r#"Incoming record - key 1003 value {"account_id": 1003, "time": 1690543354146, "withdraw": 300.0, "balance": 300.0, "bank_transaction_state": "CREATED"}"#));
    assert_eq!(
        trace
            .lines()
            .filter(|l| l.starts_with("Incoming record"))
            .count(),
        6
    );

    // `jobctl tail` prints the same records.
    let tail = ok(&["tail", &job.rejected, "--until-caught-up"]);
    assert_eq!(
        tail.trim(),
        format!("key 1003 value {}", expected_rejected[0].1)
    );
}

/// The bank rule computed directly: (key, JSON) of every output record.
fn apply_rule(input: &[(String, String)]) -> (Vec<(String, String)>, Vec<(String, String)>) {
    let mut approved = Vec::new();
    let mut rejected = Vec::new();
    for (k, v) in input {
        let j: serde_json::Value = serde_json::from_str(v).unwrap();
        let (w, b) = (
            j["withdraw"].as_f64().unwrap(),
            j["balance"].as_f64().unwrap(),
        );
        let line = |balance: f64, state: &str| {
            format!(
                r#"{{"account_id": {}, "time": {}, "withdraw": {w:?}, "balance": {balance:?}, "bank_transaction_state": "{state}"}}"#,
                j["account_id"], j["time"]
            )
        };
        if w < b {
            approved.push((k.clone(), line(b - w, "APPROVED")));
        } else {
            rejected.push((k.clone(), line(b, "REJECTED")));
        }
    }
    (sorted(approved), sorted(rejected))
}

#[test]
fn random_transactions_give_the_same_output_on_one_and_four_workers() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let job = bank_job(dir.path(), "random");
    ok(&[
        "datagen",
        "bank",
        "--job",
        job.path.to_str().unwrap(),
        "--count",
        "100000",
        "--quiet",
    ]);
    let input = decode_all(&read_topic(&job.input));
    assert_eq!(input.len(), 100_000);
    let (want_approved, want_rejected) = apply_rule(&input);
    assert!(
        want_rejected.len() > 10_000 && want_approved.len() > 10_000,
        "the generator should exercise both routes"
    );

    for workers in ["1", "4"] {
        let j = with_sinks(&job, &format!("w{workers}"));
        let summary = jobctl(&[
            "submit",
            j.path.to_str().unwrap(),
            "--until-caught-up",
            "--workers",
            workers,
        ]);
        assert!(
            summary.status.success(),
            "{}",
            String::from_utf8_lossy(&summary.stderr)
        );
        let stderr = String::from_utf8_lossy(&summary.stderr);
        assert!(
            stderr.contains(&format!(
                "100000 records in, out approved {}, rejected {}, 0 dead-lettered, 0 filtered",
                want_approved.len(),
                want_rejected.len()
            )),
            "{stderr}"
        );
        assert_eq!(
            sorted(decode_all(&read_topic(&j.approved))),
            want_approved,
            "approved with {workers} workers"
        );
        assert_eq!(
            sorted(decode_all(&read_topic(&j.rejected))),
            want_rejected,
            "rejected with {workers} workers"
        );
    }
}

/// Replaces the shipped job's epoch length with `settings`.
fn set_epochs(job: &Path, settings: &str) {
    let text = std::fs::read_to_string(job).unwrap();
    std::fs::write(job, text.replace("checkpoint_interval_ms = 1000", settings)).unwrap();
}

#[test]
fn an_epoch_that_holds_max_epoch_records_ends_before_its_interval() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let job = bank_job(dir.path(), "fill");
    // The clock alone would cut one epoch for the whole run.
    set_epochs(
        &job.path,
        "checkpoint_interval_ms = 600000\nmax_epoch_records = 2000",
    );
    ok(&[
        "datagen",
        "bank",
        "--job",
        job.path.to_str().unwrap(),
        "--count",
        "100000",
        "--quiet",
    ]);
    let (want_approved, want_rejected) = apply_rule(&decode_all(&read_topic(&job.input)));
    let run = jobctl(&[
        "submit",
        job.path.to_str().unwrap(),
        "--until-caught-up",
        "--workers",
        "1",
    ]);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    // Each epoch's output, by sink.
    let per_epoch: Vec<Vec<u64>> = stderr
        .lines()
        .filter(|l| l.starts_with("epoch "))
        .map(|l| {
            let outs = l
                .split("| out ")
                .nth(1)
                .unwrap()
                .split(" |")
                .next()
                .unwrap();
            outs.split(", ")
                .map(|o| o.rsplit(' ').next().unwrap().parse::<u64>().unwrap())
                .collect()
        })
        .collect();
    assert!(per_epoch.len() >= 4, "{stderr}");
    // One sink's output ends an epoch: every epoch but the last (the
    // clock would end none) has a sink that reached the limit, and none
    // went past it by more than what a source hands on (a few polls of
    // 2048 records) before the sink has counted what the epoch holds.
    let (_last, full) = per_epoch.split_last().unwrap();
    assert!(
        full.iter().all(|sinks| sinks.iter().any(|n| *n >= 2000)),
        "{per_epoch:?}"
    );
    assert!(
        per_epoch.iter().flatten().all(|n| *n <= 2000 + 8 * 2048),
        "{per_epoch:?}"
    );
    let per_epoch: Vec<u64> = per_epoch.iter().map(|sinks| sinks.iter().sum()).collect();
    assert_eq!(per_epoch.iter().sum::<u64>(), 100_000);
    assert_eq!(
        sorted(decode_all(&read_topic(&job.approved))),
        want_approved
    );
    assert_eq!(
        sorted(decode_all(&read_topic(&job.rejected))),
        want_rejected
    );
}

/// The numbers of the progress lines in `stderr`, and the epochs they name.
fn progress_numbers(stderr: &str) -> Vec<(u64, String)> {
    stderr
        .lines()
        .filter(|l| l.starts_with("epoch "))
        .map(|l| {
            let number = l["epoch ".len()..]
                .split(':')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            (number, l.rsplit(" as ").next().unwrap().to_string())
        })
        .collect()
}

#[test]
fn progress_lines_number_committed_epochs_without_gaps_across_idle_epochs_and_restarts() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let job = bank_job(dir.path(), "numbers");
    set_epochs(&job.path, "checkpoint_interval_ms = 100");
    let path = job.path.to_str().unwrap();
    ok(&["datagen", "bank", "--job", path, "--count", "10", "--quiet"]);
    let running = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(["submit", path])
        .current_dir(root())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Bursts with idle epochs between them.
    for _ in 0..3 {
        std::thread::sleep(Duration::from_millis(1500));
        ok(&["datagen", "bank", "--job", path, "--count", "10", "--quiet"]);
    }
    std::thread::sleep(Duration::from_millis(1500));
    Command::new("kill")
        .args(["-INT", &running.id().to_string()])
        .status()
        .unwrap();
    let first = running.wait_with_output().unwrap();
    let first = String::from_utf8_lossy(&first.stderr).into_owned();
    let lines = progress_numbers(&first);
    let numbers: Vec<u64> = lines.iter().map(|(n, _)| *n).collect();
    assert_eq!(
        numbers,
        (1..=numbers.len() as u64).collect::<Vec<_>>(),
        "{first}"
    );
    assert!(numbers.len() >= 2, "{first}");
    // The epochs themselves are cut by the clock: idle ones are skipped.
    assert_ne!(
        lines.last().unwrap().1,
        format!("e{}", numbers.len()),
        "{first}"
    );

    ok(&["datagen", "bank", "--job", path, "--count", "10", "--quiet"]);
    let again = jobctl(&["submit", path, "--until-caught-up"]);
    let again = String::from_utf8_lossy(&again.stderr).into_owned();
    let next: Vec<u64> = progress_numbers(&again).iter().map(|(n, _)| *n).collect();
    assert_eq!(next, [numbers.len() as u64 + 1], "{again}");
}

#[test]
fn a_malformed_record_goes_to_the_dead_letters_and_the_rest_is_processed() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let job = bank_job(dir.path(), "malformed");
    let path = job.path.to_str().unwrap();
    ok(&["datagen", "bank", "--job", path, "--seed-records"]);
    // Raw JSON where Avro is expected, and a truncated Avro record, both
    // on partition 1 after the seed records.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .unwrap();
    // The truncated record names the id the bank schema has in this
    // registry, which other tests may have filled first.
    let id = RegistryClient::new(REGISTRY)
        .latest(&format!("{}-value", job.input))
        .unwrap()
        .id;
    let mut truncated = vec![0u8];
    truncated.extend_from_slice(&id.to_be_bytes());
    truncated.push(0x80);
    let junk: [&[u8]; 2] = [br#"{"account_id": 1007}"#, &truncated];
    for value in junk {
        producer
            .send(
                BaseRecord::to(&job.input)
                    .key("1007")
                    .payload(value)
                    .partition(1),
            )
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    }
    ok(&["datagen", "bank", "--job", path, "--seed-records"]);

    let out = jobctl(&["submit", path, "--until-caught-up", "--workers", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("14 records in, out approved 10, rejected 2, 2 dead-lettered, 0 filtered"),
        "{stderr}"
    );
    assert_eq!(read_topic(&job.approved).len(), 10);
    assert_eq!(read_topic(&job.rejected).len(), 2);

    let input = read_topic(&job.input);
    let mut dead = read_topic(&job.dead);
    dead.sort_by_key(|d| d.headers["rill-source-offset"].parse::<i64>().unwrap());
    assert_eq!(dead.len(), 2);
    for (d, value) in dead.iter().zip(junk) {
        let original = input
            .iter()
            .find(|r| r.value == value)
            .expect("junk is in the input");
        assert_eq!(d.value, value, "dead letters keep the raw bytes");
        assert_eq!(d.key.as_deref(), Some("1007"));
        assert_eq!(d.headers["rill-source-topic"], job.input);
        assert_eq!(
            d.headers["rill-source-partition"],
            original.partition.to_string()
        );
        assert_eq!(d.headers["rill-source-offset"], original.offset.to_string());
        let _ = d.partition;
    }
    assert_eq!(
        dead[0].headers["rill-error-reason"],
        "decode: magic byte 123 is not 0: not in the confluent avro wire format"
    );
    assert!(
        dead[1].headers["rill-error-reason"].starts_with(&format!("decode: schema id {id}:")),
        "{}",
        dead[1].headers["rill-error-reason"]
    );
    assert!(
        dead[1].headers["rill-error-reason"].contains("truncated"),
        "{}",
        dead[1].headers["rill-error-reason"]
    );
}

const BAD_JOB: &str = r#"[job]
name = "bad"
colour = "blue"

[sources.tx]
type = "kafka"
topic = "t"
format = "avro"
schema = "SCHEMA"

[sources.gone]
type = "kafka"
topic = "t2"
format = "avro"
schema = "missing.avsc"

[transforms.loop_a]
type = "filter"
inputs = ["loop_b"]
condition = "withdraw > 0.0"

[transforms.loop_b]
type = "filter"
inputs = ["loop_a"]
condition = "withdraw > 0.0"

[transforms.typo]
type = "filter"
inputs = ["txx"]
condition = "withdraw > 0.0"

[transforms.names]
type = "map"
inputs = ["tx"]
fields.balance = "balanse - withdraw"

[transforms.types]
type = "filter"
inputs = ["tx"]
condition = "bank_transaction_state < 10"

[sinks.out]
type = "stdout"
inputs = ["names", "types"]
"#;

#[test]
fn every_error_in_a_bad_job_file_is_reported_with_its_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    let schema = root().join("schemas/bank_transaction.avsc");
    std::fs::write(&path, BAD_JOB.replace("SCHEMA", schema.to_str().unwrap())).unwrap();
    let out = jobctl(&["validate", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    let p = path.display();
    // An unknown key is left out and the rest of the file read, so the
    // plan's errors come with it, all at once.
    assert!(
        stderr.contains(&format!("{p}:line 3, column 1: job: unknown field `colour`\n  |\n3 | colour = \"blue\"\n  | ^^^^^^\n")),
        "{stderr}"
    );
    assert!(
        stderr.contains("hint: expected one of `name`, `brokers`"),
        "{stderr}"
    );
    let want = [
        format!("{p} has 6 errors:"),
        format!("{p}:line 15, column 10: sources.gone: cannot read schema file `{}`", dir.path().join("missing.avsc").display()),
        format!("{p}:line 19, column 10: transforms.loop_a: inputs form a cycle: loop_a -> loop_b -> loop_a"),
        format!("{p}:line 29, column 10: transforms.typo: unknown input `txx`\n   |\n29 | inputs = [\"txx\"]\n   |          ^^^^^^^\n  hint: did you mean `tx`?"),
        format!("{p}:line 35, column 19: transforms.names: in `fields.balance`: unknown field `balanse`; did you mean `balance`?\n   |\n35 | fields.balance = \"balanse - withdraw\"\n   |                   ^\n"),
        format!("{p}:line 40, column 14: transforms.types: in `condition`: `<` compares two numbers or two strings, found string and int"),
    ];
    for w in &want {
        assert!(stderr.contains(w.as_str()), "missing `{w}` in:\n{stderr}");
    }
}

#[test]
fn a_job_file_that_cannot_be_read_is_named_without_a_line() {
    let out = jobctl(&["validate", "no/such/job.toml"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no/such/job.toml: cannot read the job file: No such file or directory")
            && stderr.contains("hint: pass the path of a job file such as jobs/bank.toml")
            && !stderr.contains("line 0"),
        "{stderr}"
    );
}

#[test]
fn the_shipped_job_file_is_valid() {
    assert_eq!(
        ok(&["validate", "jobs/bank.toml"]).trim(),
        "jobs/bank.toml: ok (1 sources, 3 transforms, 2 sinks)"
    );
}

#[test]
fn submit_without_a_broker_says_where_it_looked_and_what_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let job = bank_job(dir.path(), "nobroker");
    let text = std::fs::read_to_string(&job.path)
        .unwrap()
        .replace("127.0.0.1:9092", "127.0.0.1:1");
    std::fs::write(&job.path, text).unwrap();
    let out = jobctl(&["submit", job.path.to_str().unwrap(), "--until-caught-up"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("cannot reach the kafka broker at 127.0.0.1:1"),
        "{stderr}"
    );
    assert!(
        stderr.contains("start one with `scripts/dev-up`"),
        "{stderr}"
    );
}

#[test]
fn the_registry_keeps_its_schemas_across_a_restart_and_checks_compatibility() {
    require_services();
    let topic = unique("_schemas-test");
    let port = 18000 + (std::process::id() % 1000) as u16;
    let listen = format!("127.0.0.1:{port}");
    let url = format!("http://{listen}");
    let start = || {
        let child = Command::new(env!("CARGO_BIN_EXE_jobctl"))
            .args(["registry", "--listen", &listen, "--topic", &topic])
            .spawn()
            .unwrap();
        let client = RegistryClient::new(&url);
        for _ in 0..100 {
            if client.subjects().is_ok() {
                return (child, client);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("registry did not start on {listen}");
    };
    let v1 = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"long"}]}"#;
    let v2 = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"long"},{"name":"b","type":"string","default":""}]}"#;
    let bad = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"string"}]}"#;

    let (mut child, client) = start();
    let id1 = client.register("things-value", v1).unwrap();
    assert_eq!(
        client.register("things-value", v1).unwrap(),
        id1,
        "registering again gives the same id"
    );
    let id2 = client.register("things-value", v2).unwrap();
    assert_ne!(id1, id2);
    assert!(!client.is_compatible("things-value", bad).unwrap());
    let err = client
        .register("things-value", bad)
        .unwrap_err()
        .to_string();
    assert!(err.contains("409") && err.contains("incompatible"), "{err}");
    child.kill().unwrap();
    child.wait().unwrap();

    let (mut child, client) = start();
    assert_eq!(client.subjects().unwrap(), vec!["things-value".to_string()]);
    assert_eq!(client.versions("things-value").unwrap(), vec![1, 2]);
    let latest = client.latest("things-value").unwrap();
    assert_eq!((latest.id, latest.version), (id2, 2));
    assert_eq!(&*RegistryClient::new(&url).schema_by_id(id1).unwrap(), v1);
    child.kill().unwrap();
    child.wait().unwrap();
}

/// A shipped job file with every topic and path made unique to one test.
fn job_copy(
    dir: &Path,
    job: &str,
    topics: &[&str],
    tag: &str,
) -> (PathBuf, HashMap<String, String>) {
    let mut text = std::fs::read_to_string(root().join("jobs").join(job)).unwrap();
    let mut names = HashMap::new();
    for t in topics {
        let unique = format!("{tag}-{t}");
        text = text.replace(&format!("\"{t}\""), &format!("\"{unique}\""));
        names.insert(t.to_string(), unique);
    }
    let name_line = text
        .lines()
        .find(|l| l.starts_with("name = "))
        .unwrap()
        .to_string();
    text = text
        .replace(
            &name_line,
            &format!("name = \"{tag}-{}\"", job.trim_end_matches(".toml")),
        )
        .replace("../schemas/", &format!("{}/schemas/", root().display()))
        .replace("../out/", &format!("{}/out/", dir.display()));
    let path = dir.join(format!("{tag}-{job}"));
    std::fs::write(&path, text).unwrap();
    (path, names)
}

#[test]
fn bank_rejected_and_analysis_chain_on_the_seed_records() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("chain");
    let (bank, t) = job_copy(
        dir.path(),
        "bank.toml",
        &[
            "bank-transactions",
            "APPROVED",
            "REJECTED",
            "bank-dead-letters",
        ],
        &tag,
    );
    let (rejected, _) = job_copy(
        dir.path(),
        "rejected.toml",
        &["REJECTED", "AGGREGATED", "rejected-dead-letters"],
        &tag,
    );
    let (analysis, a) = job_copy(
        dir.path(),
        "analysis.toml",
        &["AGGREGATED", "ANALYSIS", "analysis-dead-letters"],
        &tag,
    );
    ok(&[
        "datagen",
        "bank",
        "--job",
        bank.to_str().unwrap(),
        "--seed-records",
    ]);
    // Twice the seed, so account 1003 has two rejected withdrawals.
    ok(&[
        "datagen",
        "bank",
        "--job",
        bank.to_str().unwrap(),
        "--seed-records",
    ]);
    for job in [&bank, &rejected, &analysis] {
        ok(&[
            "submit",
            job.to_str().unwrap(),
            "--until-caught-up",
            "--workers",
            "2",
        ]);
    }
    let aggregated = format!("{tag}-AGGREGATED");
    let latest = |topic: &str| {
        let mut last: HashMap<String, String> = HashMap::new();
        for (k, v) in decode_all(&read_topic(topic)) {
            last.insert(k, v);
        }
        last
    };
    let agg = latest(&aggregated);
    assert_eq!(agg.len(), 1, "{agg:?}");
    assert_eq!(
        agg["1003"],
        r#"{"account_id": 1003, "total_rejected": 600.0, "rejected_count": 2}"#
    );
    let analysis_out = latest(&a["ANALYSIS"]);
    assert_eq!(
        analysis_out["1003"],
        r#"{"account_id": 1003, "total_rejected": 600.0, "rejected_count": 2, "average_rejected": 300.0, "risk_level": "MEDIUM"}"#
    );
    let _ = t;
}

/// The files a file sink wrote in `dir`, sorted. Its run marker
/// (`.rill-run-SINK`) aside, no hidden (temporary) file may be left.
fn lake_files(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if name.starts_with(".rill-run-") {
            continue;
        }
        assert!(!name.starts_with('.'), "a temporary file is left: {name}");
        files.push(path);
    }
    files.sort();
    files
}

/// jobs/turnstile.toml as job `{tag}-turnstile`, with its input, output
/// and dead-letter topics of its own: the job file and the topics' names.
fn turnstile_copy(dir: &Path, tag: &str) -> (PathBuf, HashMap<String, String>) {
    job_copy(
        dir,
        "turnstile.toml",
        &[
            "turnstile",
            "turnstile-station-counts",
            "turnstile-dead-letters",
        ],
        tag,
    )
}

fn gunzip(path: &Path) -> String {
    use std::io::Read;
    let mut s = String::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_string(&mut s)
        .unwrap();
    s
}

#[test]
fn turnstile_writes_one_gzip_csv_per_closed_window_and_the_rows_add_up() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("turnstile");
    let (job, t) = turnstile_copy(dir.path(), &tag);
    let path = job.to_str().unwrap();
    ok(&[
        "datagen",
        "turnstile",
        "--job",
        path,
        "--count",
        "4000",
        "--stations",
        "3",
        "--quiet",
    ]);
    ok(&["submit", path, "--until-caught-up", "--workers", "2"]);

    let input: Vec<serde_json::Value> = read_topic(&t["turnstile"])
        .iter()
        .map(|r| serde_json::from_slice(&r.value).unwrap())
        .collect();
    assert_eq!(input.len(), 4000);
    let dead: Vec<serde_json::Value> = read_topic(&t["turnstile-dead-letters"])
        .iter()
        .map(|r| serde_json::from_slice(&r.value).unwrap())
        .collect();
    let sum = |rows: &[serde_json::Value], f: &str| {
        rows.iter().map(|r| r[f].as_i64().unwrap()).sum::<i64>()
    };

    let lake = dir.path().join("out/turnstile");
    let files = lake_files(&lake);
    assert!(
        files
            .iter()
            .all(|f| f.to_str().unwrap().ends_with(".csv.gz")),
        "no temporary files are left: {files:?}"
    );
    let mut windows = std::collections::BTreeSet::new();
    let (mut entries, mut exits, mut reports) = (0i64, 0i64, 0i64);
    for f in &files {
        let text = gunzip(f);
        let mut lines = text.lines();
        assert_eq!(
            lines.next(),
            Some("station,window_start,window_end,entries,exits,reports")
        );
        let mut in_file = std::collections::BTreeSet::new();
        for line in lines {
            let cols: Vec<&str> = line.split(',').collect();
            in_file.insert((cols[1].to_string(), cols[2].to_string()));
            assert_eq!(
                cols[2].parse::<i64>().unwrap() - cols[1].parse::<i64>().unwrap(),
                300_000
            );
            entries += cols[3].parse::<i64>().unwrap();
            exits += cols[4].parse::<i64>().unwrap();
            reports += cols[5].parse::<i64>().unwrap();
        }
        assert_eq!(in_file.len(), 1, "one window per file: {}", f.display());
        assert!(
            windows.insert(in_file.into_iter().next().unwrap()),
            "one file per window"
        );
    }
    // Every event is in a window row or, if late, in the dead letters.
    assert_eq!(reports + dead.len() as i64, 4000);
    assert_eq!(entries + sum(&dead, "entries"), sum(&input, "entries"));
    assert_eq!(exits + sum(&dead, "exits"), sum(&input, "exits"));
    // The topic carries the same windows.
    let topic: Vec<serde_json::Value> = read_topic(&t["turnstile-station-counts"])
        .iter()
        .map(|r| serde_json::from_slice(&r.value).unwrap())
        .collect();
    assert_eq!(sum(&topic, "reports"), reports);
    let topic_windows: std::collections::BTreeSet<(String, String)> = topic
        .iter()
        .map(|r| (r["window_start"].to_string(), r["window_end"].to_string()))
        .collect();
    assert_eq!(topic_windows, windows);
    assert!(
        windows.len() >= 10,
        "4000 reports of 6 devices span many 5-minute windows"
    );
}

#[test]
fn the_file_sink_writes_parquet_per_window() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("parquet");
    let (job, t) = turnstile_copy(dir.path(), &tag);
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("format = \"csv\"", "format = \"parquet\"");
    std::fs::write(&job, text).unwrap();
    let path = job.to_str().unwrap();
    ok(&[
        "datagen",
        "turnstile",
        "--job",
        path,
        "--count",
        "1500",
        "--stations",
        "2",
        "--quiet",
    ]);
    ok(&["submit", path, "--until-caught-up"]);
    let plan = rill::cli::load_plan(&job).unwrap();
    let (i, _, _) = plan.sinks().find(|(_, n, _)| n.name == "lake").unwrap();
    let schema = plan.input_schema(i).clone();
    let lake = dir.path().join("out/turnstile");
    let files = lake_files(&lake);
    assert!(
        files.len() >= 5 && files.iter().all(|f| f.extension().unwrap() == "parquet"),
        "{files:?}"
    );
    let reports_at = schema.index_of("reports").unwrap();
    let mut reports = 0;
    for f in &files {
        for row in rill::format::parquet::read(f, &schema).unwrap() {
            let rill::record::Value::Int(n) = row[reports_at] else {
                panic!("{row:?}")
            };
            reports += n;
        }
    }
    let dead = read_topic(&t["turnstile-dead-letters"]).len() as i64;
    assert_eq!(reports + dead, 1500);
}

fn verify_lines(job: &Path) -> Vec<String> {
    ok(&["verify", job.to_str().unwrap()])
        .lines()
        .map(str::to_string)
        .collect()
}

/// What `jobctl verify` shows for `job` after one run of it to the end.
fn uninterrupted(job: &Path) -> Vec<String> {
    ok(&[
        "submit",
        job.to_str().unwrap(),
        "--until-caught-up",
        "--quiet",
    ]);
    verify_lines(job)
}

/// Runs `jobctl submit` with `RILL_FAIL_AT=point`, slowly, and checks that
/// it died at that point rather than finishing.
fn submit_failing_at(job: &Path, point: &str) {
    let out = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args([
            "submit",
            job.to_str().unwrap(),
            "--until-caught-up",
            "--quiet",
            "--max-records-per-second",
            "300",
        ])
        .env("RILL_FAIL_AT", point)
        .current_dir(root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "the job should have aborted at {point}:\n{stderr}"
    );
    assert!(
        stderr.contains(&format!(
            "aborting at `{}`",
            point.split(':').next().unwrap()
        )),
        "{stderr}"
    );
}

/// Writes `count` random bank transactions, from `seed`, to `input`.
fn bank_input(dir: &Path, tag: &str, input: &str, count: &str, seed: &str) {
    let (gen, _) = job_copy(
        dir,
        "bank.toml",
        &["bank-transactions"],
        &format!("{tag}-gen"),
    );
    ok(&[
        "datagen",
        "bank",
        "--job",
        gen.to_str().unwrap(),
        "--topic",
        input,
        "--count",
        count,
        "--seed",
        seed,
        "--quiet",
    ]);
}

/// jobs/rejected.toml as job `{tag}-rejected`, reading `input`, with
/// `settings` added to its `[job]` table.
fn rejected_reading(dir: &Path, tag: &str, input: &str, settings: &str) -> PathBuf {
    let (path, _) = job_copy(
        dir,
        "rejected.toml",
        &["AGGREGATED", "rejected-dead-letters"],
        tag,
    );
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"REJECTED\"", &format!("\"{input}\""))
        .replace("[job]\n", &format!("[job]\n{settings}"));
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn after_an_abort_at_each_injection_point_the_restarted_job_matches_an_uninterrupted_run() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("faults");
    let input = format!("{tag}-input");
    // The aggregate keeps state, so restores are exercised too.
    bank_input(dir.path(), &tag, &input, "900", "42");
    let job_for = |role: &str| rejected_reading(dir.path(), &format!("{tag}-{role}"), &input, "");
    let want = uninterrupted(&job_for("reference"));
    assert!(want.len() > 500, "one line per account: {}", want.len());

    for point in rill::fault::POINTS {
        let job = job_for(point);
        if point == "restore" {
            // Something to restore first.
            submit_failing_at(&job, "committed:1");
        }
        submit_failing_at(&job, &format!("{point}:1"));
        ok(&[
            "submit",
            job.to_str().unwrap(),
            "--until-caught-up",
            "--quiet",
            "--workers",
            "3",
        ]);
        assert_eq!(verify_lines(&job), want, "after an abort at `{point}`");
    }
}

#[test]
fn a_clean_stop_keeps_a_local_snapshot_the_next_start_builds_on_and_a_damaged_one_is_left_for_the_changelog(
) {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("snapshot");
    let input = format!("{tag}-input");
    let write_input = |count: &str, seed: &str| bank_input(dir.path(), &tag, &input, count, seed);
    let job_for = |role: &str| {
        let state_dir = dir.path().join(format!("state-{role}"));
        let settings = format!("state_dir = \"{}\"\n", state_dir.display());
        let path = rejected_reading(dir.path(), &format!("{tag}-{role}"), &input, &settings);
        (
            path,
            state_dir
                .join(format!("{tag}-{role}-rejected"))
                .join("per_account.snapshot"),
        )
    };
    let (job, snapshot) = job_for("snap");
    let submit = || {
        let out = jobctl(&["submit", job.to_str().unwrap(), "--until-caught-up"]);
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(out.status.success(), "{stderr}");
        stderr
    };

    write_input("400", "1");
    let first = submit();
    assert!(!first.contains("local snapshot"), "{first}");
    assert!(
        snapshot.exists(),
        "a clean stop keeps a snapshot at {}",
        snapshot.display()
    );

    // A run that dies after a commit keeps no snapshot; the next start
    // builds on the last one and reads the changelog after it, the dead
    // run's committed epoch and aborted records included.
    write_input("400", "2");
    submit_failing_at(&job, "committed:1");
    let second = submit();
    assert!(
        second.contains("state of per_account loaded from its local snapshot of epoch"),
        "{second}"
    );

    // A damaged snapshot is said and left aside; the changelog has it all.
    let mut bytes = std::fs::read(&snapshot).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0xff;
    std::fs::write(&snapshot, &bytes).unwrap();
    write_input("400", "3");
    let third = submit();
    assert!(
        third.contains("the local snapshot of per_account in")
            && third.contains("is not used (it is damaged); reading its changelog instead"),
        "{third}"
    );

    let want = uninterrupted(&job_for("reference").0);
    assert!(want.len() > 300, "one line per account: {}", want.len());
    assert_eq!(verify_lines(&job), want);
}

#[test]
fn a_zombie_cannot_commit_once_its_replacement_has_started() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("zombie");
    let (job, t) = job_copy(
        dir.path(),
        "bank.toml",
        &[
            "bank-transactions",
            "APPROVED",
            "REJECTED",
            "bank-dead-letters",
        ],
        &tag,
    );
    let path = job.to_str().unwrap();
    ok(&[
        "datagen", "bank", "--job", path, "--count", "3000", "--quiet",
    ]);
    // The first instance reads slowly and never stops by itself.
    let mut zombie = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(["submit", path, "--quiet", "--max-records-per-second", "200"])
        .stderr(std::process::Stdio::piped())
        .current_dir(root())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    // Its replacement fences it, then does the whole job.
    ok(&["submit", path, "--until-caught-up", "--quiet"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(s) = zombie.try_wait().unwrap() {
            break s;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the fenced instance should stop"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(zombie.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    // Kafka answers a fenced producer with an error; Tansu can leave its
    // commit unanswered until the timeout. Either way it stops, uncommitted.
    assert!(
        stderr.contains("was fenced: another instance of job")
            || stderr.contains("may have started and fenced it"),
        "{stderr}"
    );
    // Every transaction committed the whole input once.
    let lines = verify_lines(&job);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("approved ") || l.starts_with("rejected "))
            .count(),
        3000
    );
    let _ = t;
}

/// Tests that use Postgres run one at a time: one of them stops it.
static POSTGRES: std::sync::Mutex<()> = std::sync::Mutex::new(());
const POSTGRES_URL: &str = "postgresql://postgres@127.0.0.1:5432/postgres";

/// jobs/cashback.toml with its own topics, tables and fallback directory.
fn cashback_job(dir: &Path, tag: &str) -> (PathBuf, String, String, String) {
    let (path, _) = job_copy(dir, "cashback.toml", &[], tag);
    let suffix: String = tag.chars().filter(|c| c.is_ascii_digit()).collect();
    let (table, errors) = (
        format!("cashback_{suffix}"),
        format!("cashback_errors_{suffix}"),
    );
    let input = format!("{tag}-payments");
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace("topic = \"payments\"", &format!("topic = \"{input}\""))
        .replace(
            "topic = \"cashback\"",
            &format!("topic = \"{tag}-cashback\""),
        )
        .replace("table = \"cashback\"", &format!("table = \"{table}\""))
        .replace(
            "table = \"cashback_errors\"",
            &format!("table = \"{errors}\""),
        );
    std::fs::write(&path, text).unwrap();
    (path, input, table, errors)
}

/// The cashback rule applied directly to the input: the timestamps of the
/// eligible payments, and the number of malformed ones.
fn cashback_expected(topic: &str) -> (Vec<i64>, usize) {
    cashback_expected_on(&brokers(), topic)
}

/// [`cashback_expected`] of a topic on other brokers.
fn cashback_expected_on(brokers: &kafka_admin::Brokers, topic: &str) -> (Vec<i64>, usize) {
    let mut eligible = Vec::new();
    let mut malformed = 0;
    for r in read_topic_on(brokers, topic) {
        let Ok(j) = serde_json::from_slice::<serde_json::Value>(&r.value) else {
            malformed += 1;
            continue;
        };
        let (Some(merchant), Some(amount), Some(ts)) = (
            j["merchant"].as_str(),
            j["amount"].as_f64(),
            j["timestamp"].as_i64(),
        ) else {
            malformed += 1;
            continue;
        };
        if j["customer"].as_str().is_none() || j["currency"].as_str().is_none() || amount < 0.0 {
            malformed += 1;
        } else if amount > 100.0 && ["Amazon", "Zalando", "MediaMarkt"].contains(&merchant) {
            eligible.push(ts);
        }
    }
    eligible.sort();
    (eligible, malformed)
}

/// The timestamps of the table's rows (the fifth column), sorted.
fn table_timestamps(table: &str) -> Vec<i64> {
    table_timestamps_at(POSTGRES_URL, table)
}

/// [`table_timestamps`] of a table in the database at `url`.
fn table_timestamps_at(url: &str, table: &str) -> Vec<i64> {
    let mut ts: Vec<i64> = rill::connectors::postgres_sink::table_rows(url, table)
        .unwrap()
        .iter()
        .map(|r| {
            r.trim_matches(|c| c == '(' || c == ')')
                .split(',')
                .nth(4)
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    ts.sort();
    ts
}

#[test]
fn cashback_lands_once_in_table_and_topic_and_malformed_payments_in_the_error_table() {
    require_services();
    let _pg = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("cashback");
    let (job, input, table, errors) = cashback_job(dir.path(), &tag);
    let path = job.to_str().unwrap();
    ok(&[
        "datagen",
        "cashback",
        "--job",
        path,
        "--count",
        "1200",
        "--malformed-share",
        "0.1",
        "--quiet",
    ]);
    let out = jobctl(&["submit", path, "--until-caught-up", "--workers", "2"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let (eligible, malformed) = cashback_expected(&input);
    // The dead letters went to the errors table: its count says so, epoch
    // by epoch and in the summary.
    let mut progress = 0;
    for line in said.lines().filter(|l| l.starts_with("epoch ")) {
        let count = |part: &str| -> u64 {
            let (_, rest) = line.split_once(part).unwrap_or_else(|| panic!("{line}"));
            rest.split(|c: char| !c.is_ascii_digit())
                .next()
                .unwrap()
                .parse()
                .unwrap()
        };
        assert_eq!(count(", errors "), count("| dead-lettered "), "{line}");
        progress += 1;
    }
    assert!(progress > 0, "{said}");
    assert!(
        said.contains(&format!(", errors {malformed}, "))
            && said.contains(&format!(", {malformed} dead-lettered, ")),
        "{said}"
    );
    assert!(
        eligible.len() > 300 && malformed > 60,
        "{} eligible, {malformed} malformed",
        eligible.len()
    );
    assert_eq!(table_timestamps(&table), eligible);
    let lines = verify_lines(&job);
    let topic: Vec<&String> = lines
        .iter()
        .filter(|l| l.starts_with("cashback_topic "))
        .collect();
    assert_eq!(topic.len(), eligible.len());
    let error_rows = rill::connectors::postgres_sink::table_rows(POSTGRES_URL, &errors).unwrap();
    assert_eq!(error_rows.len(), malformed);
    let with_reason = |r: &&String| {
        r.contains("decode: not a valid JSON record")
            || r.contains("rule `amount_not_negative` failed")
    };
    assert!(
        error_rows
            .iter()
            .all(|r| with_reason(&r) && r.contains(&input)),
        "{error_rows:?}"
    );
    // Nothing else: the dead-letter topic is not used when a sink takes them.
    assert!(!lines.iter().any(|l| l.starts_with("dead-letter ")));
}

fn postgres_cluster(action: &str) {
    let version = std::fs::read_dir("/etc/postgresql")
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .file_name();
    let out = Command::new("pg_ctlcluster")
        .args([
            "--skip-systemctl-redirect",
            version.to_str().unwrap(),
            "main",
            action,
            "-m",
            "fast",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "pg_ctlcluster {action}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn postgres_down_mid_run_then_replay_loads_every_payment_once() {
    require_services();
    let _pg = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("pgdown");
    let (job, input, table, _) = cashback_job(dir.path(), &tag);
    let path = job.to_str().unwrap();
    ok(&[
        "datagen",
        "cashback",
        "--job",
        path,
        "--count",
        "900",
        "--malformed-share",
        "0",
        "--quiet",
    ]);
    let mut run = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args([
            "submit",
            path,
            "--until-caught-up",
            "--quiet",
            "--max-records-per-second",
            "150",
        ])
        .stderr(std::process::Stdio::piped())
        .current_dir(root())
        .spawn()
        .unwrap();
    // Stop Postgres once the job is writing to it, so that epochs go to
    // the fallback mid-run (the error table has none: it waits).
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while rill::connectors::postgres_sink::table_rows(POSTGRES_URL, &table)
        .map_or(true, |r| r.is_empty())
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the job wrote nothing to {table}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    postgres_cluster("stop");
    std::thread::sleep(Duration::from_secs(2));
    postgres_cluster("start");
    let status = run.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(run.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("postgres unreachable, sink cashback_table"),
        "some epochs went to the fallback:\n{stderr}"
    );
    let fallback = dir.path().join("out/cashback-fallback");
    assert!(std::fs::read_dir(&fallback).unwrap().count() > 0);
    ok(&[
        "replay",
        fallback.to_str().unwrap(),
        "--job",
        path,
        "--sink",
        "cashback_table",
        "--quiet",
    ]);
    assert_eq!(
        std::fs::read_dir(&fallback).unwrap().count(),
        0,
        "replayed files are removed"
    );
    let (eligible, _) = cashback_expected(&input);
    assert_eq!(table_timestamps(&table), eligible);
}

#[test]
fn kill_9_during_a_postgres_commit_loses_and_duplicates_nothing() {
    require_services();
    let _pg = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("pgkill");
    let (job, input, table, _) = cashback_job(dir.path(), &tag);
    ok(&[
        "datagen",
        "cashback",
        "--job",
        job.to_str().unwrap(),
        "--count",
        "900",
        "--malformed-share",
        "0.05",
        "--quiet",
    ]);
    for point in rill::fault::POSTGRES_POINTS {
        submit_failing_at(&job, &format!("{point}:2"));
    }
    ok(&[
        "submit",
        job.to_str().unwrap(),
        "--until-caught-up",
        "--quiet",
    ]);
    let (eligible, _) = cashback_expected(&input);
    assert_eq!(table_timestamps(&table), eligible);
    let lines = verify_lines(&job);
    assert_eq!(
        lines
            .iter()
            .filter(|l| l.starts_with("cashback_topic "))
            .count(),
        eligible.len()
    );
}

#[test]
fn any_sink_can_take_the_dead_letters_a_file_sink_here() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let job = bank_job(dir.path(), "deadfile");
    let text = std::fs::read_to_string(&job.path).unwrap().replace(
        "[sources.transactions]",
        &format!(
            "[sinks.rejects_lake]\ntype = \"file\"\ninputs = []\npath = \"{}\"\nformat = \"csv\"\ncompression = \"none\"\nroll = \"epoch\"\n\n[sources.transactions]",
            dir.path().join("dead").display()
        ),
    );
    let text = text.replacen(
        "checkpoint_interval_ms = 1000",
        "checkpoint_interval_ms = 1000\ndead_letter_sink = \"rejects_lake\"",
        1,
    );
    std::fs::write(&job.path, text).unwrap();
    let path = job.path.to_str().unwrap();
    ok(&["datagen", "bank", "--job", path, "--seed-records"]);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .unwrap();
    producer
        .send(
            BaseRecord::to(&job.input)
                .key("9")
                .payload("not avro")
                .partition(0),
        )
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    ok(&["submit", path, "--until-caught-up"]);
    let files = lake_files(&dir.path().join("dead"));
    assert_eq!(files.len(), 1, "{files:?}");
    let text = std::fs::read_to_string(&files[0]).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines[0],
        "raw_payload,raw_payload_encoding,reason,source_topic,source_partition,source_offset"
    );
    assert_eq!(lines[1], format!("not avro,utf8,decode: magic byte 110 is not 0: not in the confluent avro wire format,{},0,3", job.input));
    assert_eq!(lines.len(), 2);
    assert_eq!(read_topic(&job.approved).len(), 5);
}
