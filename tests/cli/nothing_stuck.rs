//! The ordinary operations that must neither lose a record nor stop a
//! job for good: poison records, retried commits, panics, long topics.

use super::*;

/// A copy of the bank split, reading `count` random transactions (from
/// `seed`) of its own: its tag, input topic and job file.
fn bank_with_input(dir: &Path, prefix: &str, count: &str, seed: &str) -> (String, String, PathBuf) {
    let tag = unique(prefix);
    let input = format!("{tag}-input");
    bank_input(dir, &tag, &input, count, seed);
    let job = super::cluster::bank_reading(dir, &input, &tag);
    (tag, input, job)
}

/// Sends `(key, value)` records to partition 0 of `topic`, in order.
fn send_raw(topic: &str, records: &[(&str, &[u8])]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .unwrap();
    for (key, value) in records {
        producer
            .send(BaseRecord::to(topic).key(*key).payload(*value).partition(0))
            .unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

#[test]
fn poison_records_reach_the_error_table_whole_and_the_job_goes_on() {
    require_services();
    let _pg = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("poison");
    let (job, input, table, errors) = cashback_job(dir.path(), &tag);
    let path = job.to_str().unwrap();
    kafka_admin::ensure_topic(&brokers(), &input, 2, 1, kafka_admin::TopicKind::Data).unwrap();
    let good = br#"{"customer":"c1","merchant":"Amazon","amount":150.0,"currency":"EUR","timestamp":1001}"#;
    // A Confluent-Avro record sent to the JSON topic: NUL bytes, then
    // bytes that are not UTF-8 either.
    let avro: &[u8] = b"\x00\x00\x00\x00\x01garbage\xff";
    // Valid JSON whose text holds a NUL: the topic takes it, a Postgres
    // text column cannot.
    let nul = br#"{"customer":"c\u0000 2","merchant":"Zalando","amount":200.0,"currency":"EUR","timestamp":1002}"#;
    send_raw(&input, &[("k1", good), ("k2", avro), ("k3", nul)]);
    ok(&[
        "submit",
        path,
        "--until-caught-up",
        "--restart-attempts",
        "0",
    ]);
    // The good payment and the one with a NUL are eligible: the topic has
    // both, the table only the one it can hold.
    assert_eq!(table_timestamps(&table), vec![1001]);
    let topic: Vec<String> = verify_lines(&job)
        .into_iter()
        .filter(|l| l.starts_with("cashback_topic "))
        .collect();
    assert_eq!(topic.len(), 2, "{topic:?}");
    let mut rows = rill::connectors::postgres_sink::table_rows(POSTGRES_URL, &errors).unwrap();
    rows.sort_by_key(|r| r.contains("timestamp"));
    assert_eq!(rows.len(), 2, "{rows:?}");
    // The bytes as they came, in base64, with the decoder's reason.
    assert_eq!(
        rows[0],
        format!("(AAAAAAFnYXJiYWdl/w==,base64,\"decode: not a valid JSON record: expected value at line 1 column 1\",{input},0,1)")
    );
    // The row the table refused, as JSON text, and why.
    assert_eq!(
        rows[1],
        format!(
            "(\"{{\"\"customer\"\":\"\"c\\\\u0000 2\"\",\"\"merchant\"\":\"\"Zalando\"\",\"\"amount\"\":200.0,\"\"currency\"\":\"\"EUR\"\",\"\"timestamp\"\":1002,\"\"cashback\"\":10.0}}\",utf8,\"sinks.cashback_table: column `customer`: postgres text cannot hold a NUL byte\",{input},0,2)"
        )
    );
}

/// Runs one statement against the test database.
fn psql(sql: &str) {
    let out = Command::new("psql")
        .args(["-h", "127.0.0.1", "-U", "postgres", "-qc", sql, "postgres"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_postgres_error_says_what_postgres_said() {
    require_services();
    let _pg = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("pgsays");
    let (job, input, table, _) = cashback_job(dir.path(), &tag);
    // A table of the operator's own, whose rule the job breaks.
    psql(&format!(
        "CREATE TABLE {table} (customer text, merchant text, amount double precision, \
         currency text, timestamp bigint, cashback double precision, \
         CONSTRAINT below_a_thousand CHECK (amount < 1000))"
    ));
    kafka_admin::ensure_topic(&brokers(), &input, 2, 1, kafka_admin::TopicKind::Data).unwrap();
    let big = br#"{"customer":"c1","merchant":"Amazon","amount":5000.0,"currency":"EUR","timestamp":1001}"#;
    send_raw(&input, &[("k1", big)]);
    let out = jobctl(&[
        "submit",
        job.to_str().unwrap(),
        "--until-caught-up",
        "--restart-attempts",
        "0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "postgres error in sink `cashback_table`: new row for relation \"{table}\" violates check constraint \"below_a_thousand\" (SQLSTATE 23514); detail: Failing row contains (c1, Amazon, 5000, EUR, 1001, 250)."
        )),
        "{stderr}"
    );
    assert!(!stderr.contains("db error"), "{stderr}");
    psql(&format!("DROP TABLE {table}"));
}

/// Writes `count` lines to partition 0 of `topic`, each in a batch of its
/// own, as a producer at a steady rate does.
fn send_in_small_batches(topic: &str, count: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .set("linger.ms", "0")
        .set("batch.num.messages", "1")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    for i in 0..count {
        let line = format!("line {i} {}", "x".repeat(80));
        while producer
            .send(BaseRecord::<(), _>::to(topic).payload(&line).partition(0))
            .is_err()
        {
            producer.poll(Duration::from_millis(10));
        }
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

#[test]
fn a_topic_written_in_many_small_batches_is_read_to_its_end_at_start_and_by_tail_and_verify() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let (job, messages, responses, _) = super::kappa::kappa_job(dir.path());
    kafka_admin::ensure_topic(&brokers(), &messages, 1, 1, kafka_admin::TopicKind::Data).unwrap();
    // On the dev broker, a fetch in the middle of such a partition takes
    // longer than the 10 ms a bounded read first asks for, and comes back
    // empty every time.
    const LINES: usize = 50_000;
    send_in_small_batches(&messages, LINES);
    // `tail` finds the end offsets first, then reads.
    let tail = ok(&["tail", &messages, "--until-caught-up"]);
    assert_eq!(tail.lines().count(), LINES);
    assert_eq!(
        tail.lines().last().unwrap(),
        format!("key null value line {} {}", LINES - 1, "x".repeat(80))
    );
    // A start finds the end offsets of its sources: this job starts at the
    // end, so it is caught up at once. Its sink writes to the same topic,
    // which `verify` then reads to the end, as a restore reads a changelog.
    let text = std::fs::read_to_string(&job).unwrap().replace(
        "[sources.messages]",
        "[sources.messages]\nstart_offset = \"latest\"",
    );
    let text = text.replace(&responses, &messages);
    std::fs::write(&job, text).unwrap();
    let job = job.to_str().unwrap();
    let out = jobctl(&[
        "submit",
        job,
        "--until-caught-up",
        "--restart-attempts",
        "0",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains(": 0 records in,"), "{stderr}");
    assert_eq!(verify_lines(Path::new(job)), Vec::<String>::new(),);
}

#[test]
fn an_epoch_aborted_after_its_records_reached_the_broker_is_retried_as_a_new_attempt() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("retry");
    let input = format!("{tag}-input");
    bank_input(dir.path(), &tag, &input, "300", "7");
    let job_for =
        |role: &str| super::cluster::bank_reading(dir.path(), &input, &format!("{tag}-{role}"));
    let want = uninterrupted(&job_for("reference"));
    assert_eq!(want.len(), 300);
    // The broker has the epoch's records, in a transaction that is then
    // aborted; on Tansu a reader still sees them, with their headers, so
    // only the attempt in them tells them from the committed copy.
    let job = job_for("aborted");
    let out = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(["submit", job.to_str().unwrap(), "--until-caught-up"])
        .env("RILL_ERROR_AT", "flushed")
        .current_dir(root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("epoch 1 was aborted: sink output was not delivered: epoch 1: a delivery failure injected by RILL_ERROR_AT; the job starts again from its last committed epoch, as a new attempt"),
        "{stderr}"
    );
    assert_eq!(verify_lines(&job), want);
}

/// Runs `jobctl args` with `env`, and kills it if it has not ended within
/// `limit`: the test then fails, naming what it printed.
fn jobctl_within(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(args)
        .envs(env.iter().copied())
        .current_dir(root())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    while child.try_wait().unwrap().is_none() {
        if started.elapsed() > limit {
            let _ = child.kill();
            let out = child.wait_with_output().unwrap();
            panic!(
                "jobctl {args:?} still ran after {limit:?}:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn a_worker_that_panics_ends_its_process_with_the_message_and_a_restart_loses_nothing() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("panic");
    let input = format!("{tag}-input");
    bank_input(dir.path(), &tag, &input, "4000", "11");
    let job_for =
        |role: &str| super::cluster::bank_reading(dir.path(), &input, &format!("{tag}-{role}"));
    let want = uninterrupted(&job_for("reference"));
    let job = job_for("panics");
    let path = job.to_str().unwrap();
    // Slowly, so that epochs commit before the panic.
    let args = [
        "submit",
        path,
        "--until-caught-up",
        "--workers",
        "2",
        "--max-records-per-second",
        "1000",
    ];
    let out = jobctl_within(
        &args,
        &[("RILL_PANIC_AT", "source_read:1000")],
        Duration::from_secs(60),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    let said = stderr
        .lines()
        .find_map(|l| l.split_once(" failed: worker "))
        .map(|(_, s)| s);
    let (worker, said) = said.and_then(|s| s.split_once(' ')).expect(&stderr);
    assert!(["0", "1"].contains(&worker), "{stderr}");
    let said = said
        .strip_prefix("panicked: injected panic at `source_read` (RILL_PANIC_AT); the job stops without committing its open epochs (the last committed epoch is ")
        .expect(&stderr);
    // Some epochs committed before it.
    let (committed, _) = said.split_once(')').unwrap();
    assert!(committed.parse::<u64>().unwrap() > 0, "{stderr}");
    let out = jobctl_within(&args[..3], &[], Duration::from_secs(120));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(verify_lines(&job), want);
}

#[test]
fn a_chained_reader_skips_an_upstream_epoch_that_will_never_commit() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let input = unique("skip-in");
    super::cluster::bank_input(dir.path(), &input, 600, &unique("skip-gen"));
    let (tag, reference_tag) = (unique("skip"), unique("skip-r"));
    let [bank, rejected, _] = super::chain::chain(dir.path(), &input, &tag);
    let [bank_r, rejected_r, _] = super::chain::chain(dir.path(), &input, &reference_tag);
    for job in [&bank, &bank_r, &rejected_r] {
        ok(&[
            "submit",
            job.to_str().unwrap(),
            "--until-caught-up",
            "--quiet",
        ]);
    }
    // A copy the bank job wrote of an epoch it has committed past without
    // committing it: rill never uses epoch 0, as it skips a number a
    // fenced instance logged late.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .unwrap();
    let headers = rdkafka::message::OwnedHeaders::new()
        .insert(rdkafka::message::Header {
            key: "rill-writer",
            value: Some(format!("{tag}-bank-w0").as_bytes()),
        })
        .insert(rdkafka::message::Header {
            key: "rill-epoch",
            value: Some("0"),
        })
        .insert(rdkafka::message::Header {
            key: "rill-attempt",
            value: Some("1"),
        });
    producer
        .send(
            BaseRecord::to(&format!("{tag}-REJECTED"))
                .key("1")
                .payload("never committed")
                .partition(0)
                .headers(headers),
        )
        .unwrap();
    producer.flush(Duration::from_secs(10)).unwrap();
    let out = jobctl_within(
        &["submit", rejected.to_str().unwrap(), "--until-caught-up"],
        &[],
        Duration::from_secs(120),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        super::chain::committed(&rejected, &tag),
        super::chain::committed(&rejected_r, &reference_tag)
    );
}

/// The processes whose parent is `pid`.
fn children_of(pid: u32) -> Vec<u32> {
    let out = Command::new("pgrep")
        .args(["-P", &pid.to_string()])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.trim().parse().ok())
        .collect()
}

fn alive(pid: u32) -> bool {
    // A zombie has ended; only its entry waits for its parent.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|s| !s.split(") ").nth(1).unwrap_or("").starts_with('Z'))
}

#[test]
fn the_processes_of_a_killed_launcher_stop_within_seconds() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let (_, _, job) = bank_with_input(dir.path(), "orphans", "3000", "5");
    let (mut launcher, rx, reader) = watched(
        &[
            "submit",
            job.to_str().unwrap(),
            "--processes",
            "2",
            "--workers",
            "1",
            "--max-records-per-second",
            "100",
        ],
        &[],
    );
    wait_for(&rx, "epoch 1:");
    let processes = children_of(launcher.id());
    assert_eq!(processes.len(), 2, "{processes:?}");
    launcher.kill().unwrap();
    launcher.wait().unwrap();
    let killed = std::time::Instant::now();
    while processes.iter().any(|p| alive(*p)) && killed.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(50));
    }
    let left: Vec<u32> = processes.iter().copied().filter(|p| alive(*p)).collect();
    for p in &left {
        let _ = Command::new("kill").args(["-9", &p.to_string()]).status();
    }
    assert!(
        left.is_empty(),
        "still running {:?} after the launcher was killed",
        killed.elapsed()
    );
    assert!(
        killed.elapsed() < Duration::from_secs(3),
        "{:?}",
        killed.elapsed()
    );
    drop(reader);
}

#[test]
fn a_cluster_fenced_by_a_newer_start_ends_its_launcher_instead_of_fencing_back() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("fenced-cl");
    let input = format!("{tag}-input");
    bank_input(dir.path(), &tag, &input, "3000", "6");
    let want = uninterrupted(&super::cluster::bank_reading(
        dir.path(),
        &input,
        &format!("{tag}-r"),
    ));
    let job = super::cluster::bank_reading(dir.path(), &input, &tag);
    let path = job.to_str().unwrap();
    let (mut old, rx, reader) = watched(
        &[
            "submit",
            path,
            "--processes",
            "2",
            "--workers",
            "1",
            "--max-records-per-second",
            "100",
        ],
        &[],
    );
    wait_for(&rx, "epoch 1:");
    // The newer start runs to the end while the old cluster is running.
    ok(&["submit", path, "--until-caught-up", "--quiet"]);
    let started = std::time::Instant::now();
    while old.try_wait().unwrap().is_none() && started.elapsed() < Duration::from_secs(90) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let ended = old.try_wait().unwrap();
    if ended.is_none() {
        let _ = old.kill();
    }
    let said = reader.join().unwrap();
    let status = ended.unwrap_or_else(|| panic!("the old launcher still ran:\n{said}"));
    assert!(!status.success(), "{said}");
    assert!(
        said.contains("was fenced: another instance of the job has started since, and runs on; this cluster stops and is not started again"),
        "{said}"
    );
    assert!(!said.contains("processes again"), "{said}");
    assert_eq!(verify_lines(&job), want);
}

/// Deletes consumer group `group` and its committed offsets.
#[test]
fn a_cluster_whose_follower_lost_its_progress_refuses_to_replay_all_history() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let (tag, _, job) = bank_with_input(dir.path(), "lost-w1", "1500", "8");
    let path = job.to_str().unwrap();
    let cluster = [
        "submit",
        path,
        "--until-caught-up",
        "--processes",
        "2",
        "--workers",
        "1",
        "--restart-attempts",
        "0",
    ];
    // Several epochs, in each of which both writers take part.
    let mut first = cluster.to_vec();
    first.extend(["--max-records-per-second", "500"]);
    let out = jobctl_within(&first, &[], Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("epoch 3: "), "{stderr}");
    let committed = verify_lines(&job);
    assert_eq!(committed.len(), 1500);
    let name = format!("{tag}-bank");
    kafka_admin::delete_groups(&brokers(), &[&format!("{name}-w1")]).unwrap();
    let out = jobctl_within(&cluster, &[], Duration::from_secs(120));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("but the broker no longer has its progress (the offsets of group {name}-w1 on {name}.epochs)")),
        "{stderr}"
    );
    assert_eq!(verify_lines(&job), committed);
}

#[test]
fn a_cluster_started_at_latest_reads_from_where_process_0_logged_its_start_in_every_process() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let (tag, input, job) = bank_with_input(dir.path(), "latest-cl", "200", "9");
    let text = std::fs::read_to_string(&job).unwrap().replace(
        "[sources.transactions]",
        "[sources.transactions]\nstart_offset = \"latest\"",
    );
    std::fs::write(&job, text).unwrap();
    let go = dir.path().join("go");
    let pause = format!("start_plan_received:file:{}", go.display());
    let (mut launcher, rx, reader) = watched(
        &[
            "submit",
            job.to_str().unwrap(),
            "--processes",
            "2",
            "--workers",
            "1",
        ],
        &[("RILL_PAUSE_AT", &pause)],
    );
    // Process 0 has logged where the sources begin; process 1 has not
    // looked at them yet when these records come.
    wait_for(&rx, "pausing at `start_plan_received`");
    bank_input(dir.path(), &format!("{tag}-more"), &input, "100", "10");
    std::fs::write(&go, "").unwrap();
    let started = std::time::Instant::now();
    while verify_lines(&job).len() < 100 && started.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(500));
    }
    let _ = Command::new("kill")
        .args(["-INT", &launcher.id().to_string()])
        .status();
    launcher.wait().unwrap();
    let said = reader.join().unwrap();
    assert_eq!(verify_lines(&job).len(), 100, "{said}");
}

/// Runs a bank job, deletes its input topic under it (and makes it again
/// with a few records, if `again`), and returns what the job said.
fn delete_the_input_of_a_running_job(prefix: &str, again: bool) -> (String, String) {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique(prefix);
    let input = format!("{tag}-input");
    bank_input(dir.path(), &tag, &input, "3000", "12");
    let job = super::cluster::bank_reading(dir.path(), &input, &tag);
    let (mut run, rx, reader) = watched(
        &[
            "submit",
            job.to_str().unwrap(),
            "--workers",
            "2",
            "--max-records-per-second",
            "300",
        ],
        &[],
    );
    wait_for(&rx, "epoch 2:");
    kafka_admin::delete_topics(&brokers(), &[&input]).unwrap();
    if again {
        bank_input(dir.path(), &format!("{tag}-again"), &input, "10", "13");
    }
    let deleted = std::time::Instant::now();
    while run.try_wait().unwrap().is_none() && deleted.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = run.try_wait().unwrap();
    if status.is_none() {
        let _ = run.kill();
    }
    let said = reader.join().unwrap();
    let status = status.unwrap_or_else(|| panic!("still running 60 s after the deletion:\n{said}"));
    // Not a signal: an exit with the reason.
    assert_eq!(status.code(), Some(1), "{said}");
    (input, said)
}

#[test]
fn a_source_topic_deleted_under_a_running_job_stops_it_with_the_topics_name() {
    let (input, said) = delete_the_input_of_a_running_job("deleted", false);
    assert!(
        said.contains(&format!("source topic `{input}` was deleted while the job read it; the job stops without committing its open epochs (the last committed epoch is ")),
        "{said}"
    );
}

#[test]
fn a_source_topic_deleted_and_made_again_under_a_running_job_stops_it() {
    let (input, said) = delete_the_input_of_a_running_job("made-again", true);
    // Which of the three the job says depends on whether its watch looked
    // while the topic was gone, after it was made again, or not before the
    // reader met the new topic's offsets; each names the topic and stops.
    assert!(
        said.contains(&format!(
            "source topic `{input}` was deleted and made again while the job read it"
        )) || said.contains(&format!(
            "source topic `{input}` was deleted while the job read it"
        )) && said.contains("a topic made again under its name starts over at offset 0")
            || said.contains(&format!("kafka source {input}: "))
                && said.contains("or the topic was deleted and made again"),
        "{said}"
    );
}

#[test]
fn a_process_that_dies_of_a_signal_says_what_it_was_doing_and_its_last_committed_epoch() {
    use std::os::unix::process::ExitStatusExt;
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let (tag, _, job) = bank_with_input(dir.path(), "signal", "2000", "14");
    let (mut run, rx, reader) = watched(
        &[
            "submit",
            job.to_str().unwrap(),
            "--max-records-per-second",
            "300",
        ],
        &[],
    );
    wait_for(&rx, "epoch 2:");
    Command::new("kill")
        .args(["-SEGV", &run.id().to_string()])
        .status()
        .unwrap();
    let status = run.wait().unwrap();
    let said = reader.join().unwrap();
    assert_eq!(status.signal(), Some(libc::SIGSEGV), "{said}");
    let line = said
        .lines()
        .find(|l| {
            l.starts_with(&format!(
                "jobctl: job {tag}-bank died of signal 11 (SIGSEGV) while "
            ))
        })
        .unwrap_or_else(|| panic!("{said}"));
    let (_, epoch) = line
        .split_once("; the last epoch it committed is ")
        .unwrap_or_else(|| panic!("{line}"));
    let epoch: u64 = epoch.split(';').next().unwrap().parse().unwrap();
    assert!(epoch >= 2, "{line}");
}

/// Every row of every file in `dir`, gunzipped, sorted.
fn lake_rows(dir: &Path) -> Vec<String> {
    let mut rows = Vec::new();
    for path in lake_files(dir) {
        rows.extend(gunzip(&path).lines().skip(1).map(str::to_string));
    }
    rows.sort();
    rows
}

/// (station, window start) of a lake row.
fn window_of(row: &str) -> (String, i64) {
    let mut f = row.split(',');
    (
        f.next().unwrap().to_string(),
        f.next().unwrap().parse().unwrap(),
    )
}

#[test]
fn finishing_an_epoch_in_doubt_on_its_old_shape_fires_no_window_early() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("doubt-win");
    let (job, t) = turnstile_copy(dir.path(), &tag);
    let lake = dir.path().join("out/turnstile");
    let path = job.to_str().unwrap();
    ok(&[
        "datagen",
        "turnstile",
        "--job",
        path,
        "--count",
        "3000",
        "--stations",
        "3",
        "--quiet",
    ]);
    // Killed on two processes after process 0 logged epoch 2 and before
    // process 1 committed it.
    let out = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(["submit", path, "--until-caught-up", "--processes", "2"])
        .args([
            "--workers",
            "1",
            "--max-records-per-second",
            "300",
            "--restart-attempts",
            "0",
        ])
        .env("RILL_FAIL_AT", "decided:2")
        .env("RILL_FAIL_PROCESS", "1")
        .current_dir(root())
        .output()
        .unwrap();
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Started on three processes, whose third dies at once: only the
    // epochs finished on two processes are in the lake, and the last
    // window of each station, still open, is not.
    let out = jobctl_within(
        &[
            "submit",
            path,
            "--until-caught-up",
            "--processes",
            "3",
            "--workers",
            "1",
            "--restart-attempts",
            "0",
        ],
        &[("RILL_FAIL_AT", "epoch_sent:1"), ("RILL_FAIL_PROCESS", "2")],
        Duration::from_secs(180),
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("finishing the epochs it logged on that shape"),
        "{stderr}"
    );
    let last: std::collections::BTreeMap<String, i64> =
        read_topic(&t["turnstile"])
            .iter()
            .fold(Default::default(), |mut last, r| {
                let e: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
                let start = e["event_time"].as_i64().unwrap() / 300_000 * 300_000;
                let station = e["station"].as_str().unwrap().to_string();
                let w = last.entry(station).or_insert(start);
                *w = (*w).max(start);
                last
            });
    let early: Vec<String> = lake_rows(&lake)
        .into_iter()
        .filter(|r| {
            let (station, start) = window_of(r);
            last.get(&station) == Some(&start)
        })
        .collect();
    assert!(
        early.is_empty(),
        "windows fired before their time: {early:?}\n{stderr}"
    );
    // Run to the end: each window once, and its reports with the late
    // events are the input.
    let out = jobctl_within(
        &["submit", path, "--until-caught-up"],
        &[],
        Duration::from_secs(180),
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let rows = lake_rows(&lake);
    let windows: std::collections::BTreeSet<(String, i64)> =
        rows.iter().map(|r| window_of(r)).collect();
    assert_eq!(
        windows.len(),
        rows.len(),
        "a window written twice: {rows:?}"
    );
    let reports: i64 = rows
        .iter()
        .map(|r| r.rsplit(',').next().unwrap().parse::<i64>().unwrap())
        .sum();
    // Committed dead letters: the broker shows aborted copies too.
    let late = verify_lines(&job)
        .iter()
        .filter(|l| l.starts_with("dead-letter "))
        .count() as i64;
    assert_eq!(reports + late, 3000);
}

/// Runs process `i` of a cluster of `job` on one worker, in a thread: what
/// it printed, once it exits (within 90 s).
fn process_of(
    job: &Path,
    hostfile: &Path,
    i: &str,
    extra: &[&str],
    env: &[(&str, &str)],
) -> std::thread::JoinHandle<Output> {
    let args: Vec<String> = [
        "submit",
        job.to_str().unwrap(),
        "--hostfile",
        hostfile.to_str().unwrap(),
        "--process",
        i,
        "--workers",
        "1",
    ]
    .into_iter()
    .chain(extra.iter().copied())
    .map(String::from)
    .collect();
    let env: Vec<(String, String)> = env
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        jobctl_within(&args, &env, Duration::from_secs(90))
    })
}

fn strs(a: &[String]) -> Vec<&str> {
    a.iter().map(String::as_str).collect()
}

/// A bank job reading 3,000 transactions (from `seed`) of its own: its
/// tag, its job file, and what an uninterrupted run of its twin commits.
fn bank_with_reference(dir: &Path, prefix: &str, seed: &str) -> (String, PathBuf, Vec<String>) {
    let tag = unique(prefix);
    let input = format!("{tag}-input");
    bank_input(dir, &tag, &input, "3000", seed);
    let job_for = |role: &str| super::cluster::bank_reading(dir, &input, &format!("{tag}-{role}"));
    let want = uninterrupted(&job_for("reference"));
    let job = job_for("run");
    (tag, job, want)
}

/// What a supervisor does after a cluster of two stopped: starts both
/// processes again (here until they have caught up).
fn restart_both(job: &Path, hostfile: &Path) {
    let caught_up = ["--until-caught-up"];
    let (zero, one) = (
        process_of(job, hostfile, "0", &caught_up, &[]),
        process_of(job, hostfile, "1", &caught_up, &[]),
    );
    for out in [zero.join().unwrap(), one.join().unwrap()] {
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Two free ports on 127.0.0.1, written to a hostfile in `dir`.
fn hostfile_of_two(dir: &Path) -> PathBuf {
    let ports: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addresses: Vec<String> = ports
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    drop(ports);
    let hostfile = dir.join("hostfile");
    std::fs::write(&hostfile, addresses.join("\n")).unwrap();
    hostfile
}

#[test]
fn a_data_link_that_goes_silent_stops_the_cluster_and_a_restart_loses_nothing() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let (tag, job, want) = bank_with_reference(dir.path(), "silent-link", "15");
    let hostfile = hostfile_of_two(dir.path());
    let process = |i: &str, extra: &[&str], env: &[(&str, &str)]| {
        let mut args = vec!["--stall-timeout-ms", "4000"];
        args.extend(extra);
        process_of(&job, &hostfile, i, &args, env)
    };
    // Slowly, so that the input is not all read when the link goes silent
    // after process 1's third commit.
    let slow = ["--max-records-per-second", "400"];
    let cut = [
        ("RILL_CUT_LINK_AT", "committed:3"),
        ("RILL_FAIL_PROCESS", "1"),
    ];
    let (zero, one) = (process("0", &slow, &[]), process("1", &slow, &cut));
    let (zero, one) = (zero.join().unwrap(), one.join().unwrap());
    let (said0, said1) = (
        String::from_utf8_lossy(&zero.stderr),
        String::from_utf8_lossy(&one.stderr),
    );
    assert!(
        !zero.status.success() && !one.status.success(),
        "{said0}\n{said1}"
    );
    assert!(
        said1.contains("fault injection: data links cut at `committed`"),
        "{said1}"
    );
    let reason = "while every process answers (processes 0, 1 at that epoch): a link between processes carries nothing (a network partition, or a peer's network thread stopped) or a worker is stuck; the cluster stops so that it can be started again (raise --stall-timeout-ms if epochs take longer)";
    assert!(
        said0.contains(&format!("error: job {tag}-run-bank failed (process 0): "))
            && said0.contains("no worker of the cluster has finished epoch ")
            && said0.contains(reason),
        "{said0}"
    );
    assert!(said1.contains(reason), "{said1}");
    restart_both(&job, &hostfile);
    assert_eq!(verify_lines(&job), want);
}

#[test]
fn a_peer_of_a_paused_process_0_stops_within_seconds_and_a_restart_loses_nothing() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let (_, job, want) = bank_with_reference(dir.path(), "paused", "16");
    let hostfile = hostfile_of_two(dir.path());
    let args = |i: &'static str| -> Vec<String> {
        [
            "submit",
            job.to_str().unwrap(),
            "--hostfile",
            hostfile.to_str().unwrap(),
            "--process",
            i,
            "--workers",
            "1",
            "--max-records-per-second",
            "300",
        ]
        .map(String::from)
        .to_vec()
    };
    let (a0, a1) = (args("0"), args("1"));
    let (mut zero, rx, said0) = watched(&strs(&a0), &[]);
    let (mut one, _, said1) = watched(&strs(&a1), &[]);
    wait_for(&rx, "epoch 3:");
    let paused = std::time::Instant::now();
    Command::new("kill")
        .args(["-STOP", &zero.id().to_string()])
        .status()
        .unwrap();
    while one.try_wait().unwrap().is_none() && paused.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let noticed = paused.elapsed();
    Command::new("kill")
        .args(["-CONT", &zero.id().to_string()])
        .status()
        .unwrap();
    let _ = one.kill();
    let status1 = one.wait().unwrap();
    let said1 = said1.join().unwrap();
    // Process 0 finds process 1 gone once it runs again.
    let limit = std::time::Instant::now();
    while zero.try_wait().unwrap().is_none() && limit.elapsed() < Duration::from_secs(30) {
        std::thread::sleep(Duration::from_millis(100));
    }
    let _ = zero.kill();
    let status0 = zero.wait().unwrap();
    let said0 = said0.join().unwrap();
    assert_eq!(status1.code(), Some(1), "after {noticed:?}:\n{said1}");
    assert!(
        said1.contains("the cluster stopped: process 0 at ")
            && said1.contains(" sent nothing for 5 s (it hangs, or the network between us does)"),
        "{said1}"
    );
    // The control link's silence (5 s), and a little more: not the 60 s
    // of a Kafka flush or commit.
    assert!(
        noticed < Duration::from_secs(10),
        "after {noticed:?}:\n{said1}"
    );
    assert_eq!(status0.code(), Some(1), "{said0}");
    restart_both(&job, &hostfile);
    assert_eq!(verify_lines(&job), want);
}

#[test]
fn a_partition_with_records_waiting_is_never_idle_so_its_events_are_not_late() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("waiting");
    let (job, t) = turnstile_copy(dir.path(), &tag);
    let text = std::fs::read_to_string(&job)
        .unwrap()
        .replace("idle_timeout_ms = 10000", "idle_timeout_ms = 2000");
    std::fs::write(&job, text).unwrap();
    let input = &t["turnstile"];
    kafka_admin::ensure_topic(&brokers(), input, 2, 1, kafka_admin::TopicKind::Data).unwrap();
    // Partition 0 reports every second, partition 1 every ten: over the
    // same 50 minutes of event time, in order in each partition. The
    // reader takes partition 0's first fetch whole before partition 1's,
    // and at 300 records a second that is several epochs.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .unwrap();
    let t0: i64 = 1_700_000_000_000;
    let event = |station: &str, i: i64, every_ms: i64| {
        serde_json::json!({
            "station": station, "device": format!("{station}-1"), "entries": 1, "exits": 0,
            "entries_total": i, "exits_total": 0, "event_time": t0 + i * every_ms,
        })
        .to_string()
    };
    let mut sent = 0;
    for (partition, station, count, every_ms) in [(0, "A", 3000, 1000), (1, "B", 300, 10_000)] {
        for i in 0..count {
            let value = event(station, i, every_ms);
            loop {
                match producer.send(
                    BaseRecord::to(input.as_str())
                        .key(station)
                        .payload(&value)
                        .partition(partition),
                ) {
                    Ok(()) => break,
                    Err(_) => {
                        producer.poll(Duration::from_millis(10));
                    }
                }
            }
            sent += 1;
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let out = jobctl_within(
        &[
            "submit",
            job.to_str().unwrap(),
            "--until-caught-up",
            "--workers",
            "1",
            "--max-records-per-second",
            "300",
            "--quiet",
        ],
        &[],
        Duration::from_secs(120),
    );
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{said}");
    let dead: Vec<String> = read_topic(&t["turnstile-dead-letters"])
        .iter()
        .map(|r| String::from_utf8_lossy(&r.value).into_owned())
        .collect();
    assert_eq!(
        dead.len(),
        0,
        "dead letters: {:?}",
        &dead[..dead.len().min(3)]
    );
    let reports: i64 = read_topic(&t["turnstile-station-counts"])
        .iter()
        .map(|r| {
            let row: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
            row["reports"].as_i64().unwrap()
        })
        .sum();
    assert_eq!(reports, sent);
}
