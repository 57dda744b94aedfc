//! Exactly once across restarts: what a consumer of every sink sees after
//! a job has been stopped and started again.

use super::*;
use rill::runtime::epoch_log::{read_log, LogRecord};
use std::collections::{BTreeMap, BTreeSet};

/// Epoch numbers the job's log holds more than once (replays never log an
/// epoch again, so any is an epoch committed twice).
fn epochs_logged_twice(job: &str) -> Vec<u64> {
    let mut seen = BTreeMap::<u64, usize>::new();
    for (_, r) in read_log(&brokers(), &format!("{job}.epochs")).unwrap() {
        if let LogRecord::Epoch { epoch, .. } = r {
            *seen.entry(epoch).or_default() += 1;
        }
    }
    seen.into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(e, _)| e)
        .collect()
}

/// The lake's rows: (file name without its epoch, row) for every row.
fn lake_rows(dir: &Path) -> Vec<(String, String)> {
    let mut rows = Vec::new();
    for path in lake_files(dir) {
        let name = path.file_name().unwrap().to_str().unwrap().to_string();
        let window = name.rsplit_once("_e").unwrap().0.to_string();
        for line in gunzip(&path).lines().skip(1) {
            rows.push((window.clone(), line.to_string()));
        }
    }
    rows.sort();
    rows
}

#[test]
fn a_windowed_job_run_again_fires_no_window_twice_and_counts_every_event_once() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("twice");
    let (job, t) = turnstile_copy(dir.path(), &tag);
    let path = job.to_str().unwrap();
    ok(&[
        "datagen",
        "turnstile",
        "--job",
        path,
        "--count",
        "1500",
        "--stations",
        "3",
        "--quiet",
    ]);
    // A bounded run fires the windows still open at its end; the runs after
    // it, with nothing new to read, must not fire them again.
    for workers in ["2", "1", "3"] {
        ok(&["submit", path, "--until-caught-up", "--workers", workers]);
    }
    let name = format!("{tag}-turnstile");
    assert_eq!(epochs_logged_twice(&name), Vec::<u64>::new());

    let topic: Vec<serde_json::Value> = read_topic(&t["turnstile-station-counts"])
        .iter()
        .map(|r| serde_json::from_slice(&r.value).unwrap())
        .collect();
    let mut windows = BTreeSet::new();
    for w in &topic {
        let id = (
            w["station"].to_string(),
            w["window_start"].as_i64().unwrap(),
        );
        assert!(windows.insert(id.clone()), "window {id:?} sent twice");
    }
    let reports: i64 = topic.iter().map(|w| w["reports"].as_i64().unwrap()).sum();
    let dead = read_topic(&t["turnstile-dead-letters"]).len() as i64;
    assert_eq!(reports + dead, 1500, "every event in one window or dead");

    let lake = lake_rows(&dir.path().join("out/turnstile"));
    let stations: BTreeSet<(&String, &str)> = lake
        .iter()
        .map(|(file, row)| (file, row.split(',').next().unwrap()))
        .collect();
    assert_eq!(
        stations.len(),
        lake.len(),
        "a station's window in one file only"
    );
    let lake_reports: i64 = lake
        .iter()
        .map(|(_, row)| row.rsplit(',').next().unwrap().parse::<i64>().unwrap())
        .sum();
    assert_eq!(lake_reports, reports);
}

#[test]
fn a_fenced_instance_writes_no_file_after_its_replacement_has_started() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("fencedfiles");
    let (job, _) = job_copy(
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
    let lake = dir.path().join("approved-files");
    let mut text = std::fs::read_to_string(&job).unwrap();
    text.push_str(&format!(
        "\n[sinks.approved_files]\ntype = \"file\"\ninputs = [\"approve\"]\npath = \"{}\"\nformat = \"csv\"\ncompression = \"none\"\nroll = \"epoch\"\n",
        lake.display()
    ));
    std::fs::write(&job, text).unwrap();
    let path = job.to_str().unwrap();
    ok(&[
        "datagen", "bank", "--job", path, "--count", "3000", "--quiet",
    ]);
    let mut zombie = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(["submit", path, "--quiet", "--max-records-per-second", "300"])
        .stderr(std::process::Stdio::piped())
        .current_dir(root())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    ok(&["submit", path, "--until-caught-up", "--quiet"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while zombie.try_wait().unwrap().is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the fenced instance should stop"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let mut stderr = String::new();
    std::io::Read::read_to_string(zombie.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    assert!(
        stderr.contains("was fenced: another instance of job")
            || stderr.contains("may have started and fenced it"),
        "{stderr}"
    );
    // The files hold each approved transaction once: exactly the approved
    // records the Kafka sink committed.
    let mut from_files = Vec::new();
    for p in lake_files(&lake) {
        let text = std::fs::read_to_string(&p).unwrap();
        from_files.extend(text.lines().skip(1).map(str::to_string));
    }
    let approved = verify_lines(&job)
        .iter()
        .filter(|l| l.starts_with("approved "))
        .count();
    let file_rows = verify_lines(&job)
        .iter()
        .filter(|l| l.starts_with("approved_files "))
        .count();
    assert_eq!(from_files.len(), file_rows);
    assert_eq!(file_rows, approved, "files hold every approved record once");
}

#[test]
fn a_changelog_record_that_does_not_decode_stops_the_start_and_says_where() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("badstate");
    let (job, _) = job_copy(
        dir.path(),
        "rejected.toml",
        &["REJECTED", "AGGREGATED", "rejected-dead-letters"],
        &tag,
    );
    let path = job.to_str().unwrap();
    let bank = bank_job(dir.path(), &format!("{tag}-bank"));
    let text = std::fs::read_to_string(&job).unwrap().replace(
        &format!("\"{tag}-REJECTED\""),
        &format!("\"{}\"", bank.input),
    );
    std::fs::write(&job, text).unwrap();
    ok(&[
        "datagen",
        "bank",
        "--job",
        bank.path.to_str().unwrap(),
        "--count",
        "200",
        "--quiet",
    ]);
    ok(&["submit", path, "--until-caught-up"]);
    // A record in the state's place that is not rill state: an old JSON
    // encoding, tagged as the copy of epoch 1 that committed.
    let changelog = format!("{tag}-rejected.per_account.changelog");
    let attempt = read_log(&brokers(), &format!("{tag}-rejected.epochs"))
        .unwrap()
        .into_iter()
        .find_map(|(_, r)| match r {
            LogRecord::Epoch {
                epoch: 1, attempt, ..
            } => Some(attempt.to_string()),
            _ => None,
        })
        .expect("epoch 1 is logged");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .unwrap();
    let headers = rdkafka::message::OwnedHeaders::new()
        .insert(rdkafka::message::Header {
            key: "rill-epoch",
            value: Some("1"),
        })
        .insert(rdkafka::message::Header {
            key: "rill-attempt",
            value: Some(&attempt),
        });
    producer
        .send(
            BaseRecord::to(&changelog)
                .key("[1003]")
                .payload(r#"{"rows":1,"accs":[]}"#)
                .headers(headers),
        )
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let out = jobctl(&["submit", path, "--until-caught-up"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("changelog {changelog} at offset "))
            && stderr.contains("value format 123 is not the one this rill writes (2)")
            && stderr.contains("the job does not start rather than lose state"),
        "{stderr}"
    );
}

#[test]
fn an_epoch_log_that_would_expire_is_refused_with_how_to_fix_it() {
    use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
    use rdkafka::client::DefaultClientContext;
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let job = bank_job(dir.path(), "expiring");
    let name = job.path.file_stem().unwrap().to_str().unwrap().to_string();
    let log = format!("{name}.epochs");
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .unwrap();
    let topic = NewTopic::new(&log, 1, TopicReplication::Fixed(1)).set("retention.ms", "604800000");
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(admin.create_topics([&topic], &AdminOptions::new()))
        .unwrap();
    let out = jobctl(&["submit", job.path.to_str().unwrap(), "--until-caught-up"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "topic `{log}` holds what recovery reads and needs retention.ms=-1 (it is 604800000); change it with `kafka-configs --bootstrap-server {BROKERS} --alter --entity-type topics --entity-name {log} --add-config retention.ms=-1`, or delete it and let rill create it"
        )),
        "{stderr}"
    );
}

#[test]
fn a_record_the_producer_refuses_goes_to_the_dead_letters_and_the_epoch_commits() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("toolarge");
    std::fs::write(
        dir.path().join("line.avsc"),
        r#"{"type":"record","name":"Line","fields":[{"name":"id","type":"long"},{"name":"s","type":"string"}]}"#,
    )
    .unwrap();
    let job = dir.path().join("job.toml");
    std::fs::write(
        &job,
        format!(
            r#"[job]
name = "{name}"
dead_letter_topic = "{name}-dead"

[sources.lines]
type = "kafka"
topic = "{name}-in"
format = "json"
schema = "line.avsc"

[transforms.tripled]
type = "map"
inputs = ["lines"]
fields.s = "s + s + s"

[sinks.out]
type = "kafka"
inputs = ["tripled"]
topic = "{name}-out"
format = "json"
"#
        ),
    )
    .unwrap();
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .unwrap();
    // Three lines; the second, tripled, is over the producer's 1 MB limit.
    for (id, len) in [(1, 10), (2, 400_000), (3, 20)] {
        let value = format!(r#"{{"id":{id},"s":"{}"}}"#, "x".repeat(len));
        producer
            .send(
                BaseRecord::<str, str>::to(&format!("{name}-in"))
                    .key("k")
                    .payload(&value),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let out = jobctl(&["submit", job.to_str().unwrap(), "--until-caught-up"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let ids: Vec<i64> = verify_lines(&job)
        .iter()
        .filter_map(|l| l.strip_prefix("out key k value "))
        .map(|v| {
            serde_json::from_str::<serde_json::Value>(v).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(ids, vec![1, 3]);
    let dead = read_topic(&format!("{name}-dead"));
    assert_eq!(dead.len(), 1);
    let reason = &dead[0].headers["rill-error-reason"];
    assert!(
        reason.starts_with(&format!("sink topic {name}-out: "))
            && reason.contains("(a value of 1200"),
        "{reason}"
    );
}

/// A registry on a port of its own, keeping its schemas in `topic`.
fn private_registry(port: u16, topic: &str) -> std::process::Child {
    let listen = format!("127.0.0.1:{port}");
    let child = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(["registry", "--listen", &listen, "--topic", topic])
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = RegistryClient::new(&format!("http://{listen}"));
    for _ in 0..100 {
        if client.subjects().is_ok() {
            return child;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("registry did not start on {listen}");
}

#[test]
fn records_wait_while_the_registry_is_down_and_none_go_to_the_dead_letters() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("regdown");
    let port = 19000 + (std::process::id() % 1000) as u16;
    let schemas = format!("_schemas-{name}");
    let v1 = r#"{"type":"record","name":"Line","fields":[{"name":"id","type":{"type":"long","arg.properties":{"iteration":{"start":1,"step":1}}}}]}"#;
    let v2 = r#"{"type":"record","name":"Line","fields":[{"name":"id","type":{"type":"long","arg.properties":{"iteration":{"start":100,"step":1}}}},{"name":"note","type":"string","default":""}]}"#;
    std::fs::write(dir.path().join("v1.avsc"), v1).unwrap();
    std::fs::write(dir.path().join("v2.avsc"), v2).unwrap();
    let job_at = |file: &str, schema: &str, registry_port: u16| {
        let path = dir.path().join(file);
        std::fs::write(
            &path,
            format!(
                r#"[job]
name = "{name}"
registry_url = "http://127.0.0.1:{registry_port}"
dead_letter_topic = "{name}-dead"

[sources.lines]
type = "kafka"
topic = "{name}-in"
format = "avro"
schema = "{schema}"

[sinks.out]
type = "kafka"
inputs = ["lines"]
topic = "{name}-out"
format = "json"
"#
            ),
        )
        .unwrap();
        path
    };
    let job = job_at("job.toml", "v1.avsc", port);
    let mut registry = private_registry(port, &schemas);
    ok(&[
        "datagen",
        "avro",
        "--job",
        job.to_str().unwrap(),
        "--count",
        "5",
        "--quiet",
    ]);
    let mut running = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(["submit", job.to_str().unwrap(), "--workers", "1"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(4));
    // The registry goes down; records of a schema the job has not seen
    // arrive through another registry on the same topic.
    registry.kill().unwrap();
    registry.wait().unwrap();
    let other = port + 1000;
    let mut second = private_registry(other, &schemas);
    let writer = job_at("writer.toml", "v2.avsc", other);
    ok(&[
        "datagen",
        "avro",
        "--job",
        writer.to_str().unwrap(),
        "--count",
        "5",
        "--quiet",
    ]);
    std::thread::sleep(Duration::from_secs(3));
    // The registry comes back: the waiting records are decoded.
    let mut registry = private_registry(port, &schemas);
    std::thread::sleep(Duration::from_secs(4));
    // Ctrl-C: the open epoch finishes and the job stops.
    Command::new("kill")
        .args(["-INT", &running.id().to_string()])
        .status()
        .unwrap();
    let status = running.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(running.stderr.as_mut().unwrap(), &mut stderr).unwrap();
    for child in [&mut registry, &mut second] {
        child.kill().unwrap();
        child.wait().unwrap();
    }
    assert!(status.success(), "{stderr}");
    assert!(
        stderr.contains("records with this schema wait until it answers"),
        "{stderr}"
    );
    let mut ids: Vec<i64> = verify_lines(&job)
        .iter()
        .filter_map(|l| l.strip_prefix("out key "))
        .filter_map(|l| l.split_once(" value "))
        .map(|(_, v)| {
            serde_json::from_str::<serde_json::Value>(v).unwrap()["id"]
                .as_i64()
                .unwrap()
        })
        .collect();
    ids.sort();
    assert_eq!(ids, vec![1, 2, 3, 4, 5, 100, 101, 102, 103, 104]);
    assert!(
        verify_lines(&job)
            .iter()
            .all(|l| !l.starts_with("dead-letter")),
        "nothing is dead-lettered"
    );
}

#[test]
fn a_job_that_starts_at_latest_reads_what_arrived_after_its_first_start() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let job = bank_job(dir.path(), "latest");
    let path = job.path.to_str().unwrap();
    ok(&["datagen", "bank", "--job", path, "--count", "30", "--quiet"]);
    let text = std::fs::read_to_string(&job.path).unwrap().replace(
        "format = \"avro\"\nschema = ",
        "format = \"avro\"\nstart_offset = \"latest\"\nschema = ",
    );
    assert!(text.contains("start_offset = \"latest\""));
    std::fs::write(&job.path, text).unwrap();
    // The first start begins at the end: it reads none of the 30, commits
    // nothing, and stops.
    ok(&["submit", path, "--until-caught-up", "--quiet"]);
    // What arrives next belongs to the job: a restart must read it.
    ok(&[
        "datagen", "bank", "--job", path, "--count", "20", "--quiet", "--seed", "3",
    ]);
    ok(&["submit", path, "--until-caught-up", "--quiet"]);
    let committed = bank_committed(&job.path);
    assert_eq!(committed, 20);
}

/// How many records a bank job has committed to its two topics.
fn bank_committed(job: &Path) -> usize {
    verify_lines(job)
        .iter()
        .filter(|l| l.starts_with("approved ") || l.starts_with("rejected "))
        .count()
}

/// Starts `jobctl submit JOB` slowly with `RILL_PAUSE_AT=pause`.
fn submit_watched(path: &str, pause: &str) -> Watched {
    watched(
        &[
            "submit",
            path,
            "--until-caught-up",
            "--max-records-per-second",
            "100",
        ],
        &[("RILL_PAUSE_AT", pause)],
    )
}

#[test]
fn an_instance_that_fenced_first_but_started_last_reads_no_stale_progress() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let job = bank_job(dir.path(), "stale");
    let path = job.path.to_str().unwrap();
    ok(&[
        "datagen", "bank", "--job", path, "--count", "400", "--quiet",
    ]);
    let (go_a, go_b) = (dir.path().join("go-a"), dir.path().join("go-b"));
    // A fences first and waits before logging its start. B fences A, logs
    // its first epoch and waits before committing it. A logs its start and
    // plans its recovery; only then does B commit. A must not plan from
    // the progress it read before B's commit.
    let (a, a_lines, a_text) = submit_watched(path, &format!("fenced:file:{}", go_a.display()));
    wait_for(&a_lines, "pausing");
    let (b, b_lines, b_text) =
        submit_watched(path, &format!("epoch_logged:file:{}", go_b.display()));
    wait_for(&b_lines, "pausing");
    std::fs::write(&go_a, "").unwrap();
    wait_for(&a_lines, "resuming job");
    std::fs::write(&go_b, "").unwrap();
    let (a_out, b_out) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (a_text, b_text) = (a_text.join().unwrap(), b_text.join().unwrap());
    assert!(
        a_out.status.success() || b_out.status.success(),
        "one carries on\nfirst:\n{a_text}\nsecond:\n{b_text}"
    );
    ok(&["submit", path, "--until-caught-up", "--quiet"]);
    let committed = bank_committed(&job.path);
    assert_eq!(committed, 400, "first:\n{a_text}\nsecond:\n{b_text}");
}

#[test]
fn of_two_instances_started_at_once_the_one_with_the_newest_start_carries_on() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let job = bank_job(dir.path(), "race");
    let path = job.path.to_str().unwrap();
    ok(&[
        "datagen", "bank", "--job", path, "--count", "1000", "--quiet",
    ]);
    // A fences first but logs its start after B has fenced it, logged its
    // own start and committed an epoch. So A holds the newest start and B
    // the writer: B must stop when it reads A's start, and A, fenced, must
    // start again rather than stop too.
    let go = dir.path().join("go");
    let (a, a_lines, a_text) = submit_watched(path, &format!("fenced:file:{}", go.display()));
    wait_for(&a_lines, "pausing");
    let (b, b_lines, b_text) = submit_watched(path, "none:0");
    wait_for(&b_lines, "epoch ");
    std::fs::write(&go, "").unwrap();
    let (a_out, b_out) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    let (a_text, b_text) = (a_text.join().unwrap(), b_text.join().unwrap());
    assert!(a_out.status.success(), "{a_text}");
    assert!(a_text.contains("starting again (1 of 3)"), "{a_text}");
    assert!(!b_out.status.success(), "{b_text}");
    assert!(b_text.contains("another instance of job"), "{b_text}");
    let committed = bank_committed(&job.path);
    assert_eq!(committed, 1000, "first:\n{a_text}\nsecond:\n{b_text}");
}
