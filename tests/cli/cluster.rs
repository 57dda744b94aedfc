//! A job on a cluster of processes: what it commits, across restarts at
//! other sizes and a process lost between two writers' commits, and what
//! it says when its processes cannot form a cluster.

use super::*;

/// Writes `count` bank transactions to `topic` (random, from one seed).
pub(crate) fn bank_input(dir: &Path, topic: &str, count: usize, tag: &str) {
    let (gen, _) = job_copy(dir, "bank.toml", &["bank-transactions"], tag);
    ok(&[
        "datagen",
        "bank",
        "--job",
        gen.to_str().unwrap(),
        "--topic",
        topic,
        "--count",
        &count.to_string(),
        "--quiet",
    ]);
}

/// A copy of a shipped job reading `input`, with outputs of its own.
pub(crate) fn reading(
    dir: &Path,
    job: &str,
    source: &str,
    outputs: &[&str],
    input: &str,
    tag: &str,
) -> PathBuf {
    let out = dir.join(tag);
    std::fs::create_dir_all(&out).unwrap();
    let (path, _) = job_copy(&out, job, outputs, tag);
    let text = std::fs::read_to_string(&path)
        .unwrap()
        .replace(&format!("\"{source}\""), &format!("\"{input}\""));
    std::fs::write(&path, text).unwrap();
    path
}

/// A copy of the bank split reading `input`, with outputs of its own.
pub(crate) fn bank_reading(dir: &Path, input: &str, tag: &str) -> PathBuf {
    let outputs: &[&str] = &["APPROVED", "REJECTED", "bank-dead-letters"];
    reading(dir, "bank.toml", "bank-transactions", outputs, input, tag)
}

fn submit(job: &Path, extra: &[&str]) -> String {
    let mut args = vec!["submit", job.to_str().unwrap(), "--until-caught-up"];
    args.extend(extra);
    let out = jobctl(&args);
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "jobctl {args:?} failed:\n{stderr}");
    stderr
}

#[test]
fn bank_rejected_and_turnstile_on_two_processes_commit_what_one_process_of_two_workers_commits() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("cl-same");
    let bank_in = format!("{tag}-bank-in");
    bank_input(dir.path(), &bank_in, 3000, &format!("{tag}-gen"));
    let turnstile_in = format!("{tag}-turnstile-in");
    let (gen, _) = job_copy(
        dir.path(),
        "turnstile.toml",
        &["turnstile"],
        &format!("{tag}-tgen"),
    );
    ok(&[
        "datagen",
        "turnstile",
        "--job",
        gen.to_str().unwrap(),
        "--topic",
        &turnstile_in,
        "--count",
        "2000",
        "--quiet",
    ]);
    let jobs: [(&str, &str, &[&str], &str); 3] = [
        (
            "bank.toml",
            "bank-transactions",
            &["APPROVED", "REJECTED", "bank-dead-letters"],
            bank_in.as_str(),
        ),
        (
            "rejected.toml",
            "REJECTED",
            &["AGGREGATED", "rejected-dead-letters"],
            bank_in.as_str(),
        ),
        (
            "turnstile.toml",
            "turnstile",
            &["turnstile-station-counts", "turnstile-dead-letters"],
            turnstile_in.as_str(),
        ),
    ];
    for (job, source, outputs, input) in jobs {
        let one = reading(
            dir.path(),
            job,
            source,
            outputs,
            input,
            &format!("{tag}-one-{job}"),
        );
        submit(&one, &["--workers", "2", "--quiet"]);
        let two = reading(
            dir.path(),
            job,
            source,
            outputs,
            input,
            &format!("{tag}-two-{job}"),
        );
        let stderr = submit(&two, &["--processes", "2", "--workers", "1"]);
        assert!(
            stderr.contains("on 2 processes of 1 worker"),
            "the start line names the cluster:\n{stderr}"
        );
        let summary = stderr.lines().last().unwrap();
        assert!(
            summary.starts_with("job ") && summary.contains(" stopped after "),
            "{stderr}"
        );
        let want = verify_lines(&one);
        assert!(want.len() > 20, "{job}: {}", want.len());
        assert_eq!(verify_lines(&two), want, "{job} on two processes");
    }
}

#[test]
fn a_job_stopped_on_two_processes_restarted_on_three_then_one_ends_as_an_uninterrupted_run() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("cl-resize");
    let input = format!("{tag}-in");
    let outputs: &[&str] = &["AGGREGATED", "rejected-dead-letters"];
    let reference = reading(
        dir.path(),
        "rejected.toml",
        "REJECTED",
        outputs,
        &input,
        &format!("{tag}-ref"),
    );
    let resized = reading(
        dir.path(),
        "rejected.toml",
        "REJECTED",
        outputs,
        &input,
        &format!("{tag}-resized"),
    );
    // Every process's writer owns a partition of the output, on 2
    // processes and on 3.
    with_sink_partitions(&reference, 3);
    with_sink_partitions(&resized, 3);
    for (batch, shape) in [
        ["--processes", "2"],
        ["--processes", "3"],
        ["--workers", "2"],
    ]
    .iter()
    .enumerate()
    {
        bank_input(dir.path(), &input, 600, &format!("{tag}-gen{batch}"));
        let stderr = submit(&resized, &[shape[0], shape[1], "--quiet"]);
        if batch > 0 {
            assert!(stderr.contains("resuming job"), "{stderr}");
        }
    }
    submit(&reference, &["--quiet"]);
    let want = verify_lines(&reference);
    assert!(want.len() > 300, "one line per account: {}", want.len());
    assert_eq!(verify_lines(&resized), want);
}

/// Bank input, and two copies of the bank split reading it that also
/// write the approved transactions to CSV files, one per epoch and
/// process: a store outside Kafka, whose output does not depend on how
/// the input is cut.
fn bank_lake_pair(dir: &Path, tag: &str) -> (PathBuf, PathBuf) {
    let input = format!("{tag}-in");
    bank_input(dir, &input, 1500, &format!("{tag}-gen"));
    let job = |role: &str| {
        let path = bank_reading(dir, &input, &format!("{tag}-{role}"));
        let lake = dir.join(format!("{tag}-{role}-lake"));
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str(&format!(
            "\n[sinks.lake]\ntype = \"file\"\ninputs = [\"approve\"]\npath = \"{}\"\nformat = \"csv\"\ncompression = \"none\"\nroll = \"epoch\"\n",
            lake.display()
        ));
        std::fs::write(&path, text).unwrap();
        path
    };
    let reference = job("ref");
    submit(&reference, &["--quiet"]);
    (reference, job("job"))
}

/// Runs `job` on two processes of one worker until caught up, with the
/// fault `at` (`point:n`) striking process `process`; checks the process
/// aborted there and whether the launcher's restarts carried the job to
/// its end. Returns what the cluster printed.
fn killed_at(job: &Path, at: &str, process: usize, restarts: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args([
            "submit",
            job.to_str().unwrap(),
            "--until-caught-up",
            "--processes",
            "2",
            "--workers",
            "1",
            "--max-records-per-second",
            "300",
            "--restart-attempts",
            restarts,
        ])
        .env("RILL_FAIL_AT", at)
        .env("RILL_FAIL_PROCESS", process.to_string())
        .current_dir(root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).to_string();
    let point = at.split(':').next().unwrap();
    let prefix = if process == 0 {
        String::new()
    } else {
        format!("process {process}: ")
    };
    assert!(
        stderr.contains(&format!("{prefix}fault injection: aborting at `{point}`")),
        "{stderr}"
    );
    assert_eq!(out.status.success(), restarts != "0", "{stderr}");
    stderr
}

/// Runs a two-process cluster whose process 1 dies once epoch 2 is in
/// the log, before it writes its files; process 0 has written its own.
fn killed_between_the_log_and_the_commit(job: &Path, restarts: &str) -> String {
    killed_at(job, "decided:2", 1, restarts)
}

#[test]
fn an_epoch_whose_files_one_process_wrote_and_the_other_did_not_lands_once_after_the_restart() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let (reference, job) = bank_lake_pair(dir.path(), &unique("cl-doubt"));
    let stderr = killed_between_the_log_and_the_commit(&job, "1");
    assert!(
        stderr.contains("cluster of job ") && stderr.contains("process 1 was killed by a signal; starting all 2 processes again in 1 s (restart 1 of 1)"),
        "{stderr}"
    );
    assert!(stderr.contains("epochs to replay"), "{stderr}");
    assert_eq!(verify_lines(&job), verify_lines(&reference));
}

/// Gives the Kafka sinks of the job file at `path` topics of
/// `partitions` partitions.
fn with_sink_partitions(path: &Path, partitions: u32) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut sink = false;
    let text = text
        .split_inclusive('\n')
        .map(|l| {
            if l.starts_with('[') {
                sink = l.starts_with("[sinks.");
            }
            if sink && l.starts_with("type = \"kafka\"") {
                format!("{l}partitions = {partitions}\n")
            } else {
                l.to_string()
            }
        })
        .collect::<String>();
    std::fs::write(path, text).unwrap();
}

/// A copy of the bank split reading `input` whose output topics have
/// `partitions` partitions.
fn bank_partitioned(dir: &Path, input: &str, tag: &str, partitions: u32) -> PathBuf {
    let path = bank_reading(dir, input, tag);
    with_sink_partitions(&path, partitions);
    path
}

/// The writer named by each record of `topic`, by partition.
fn writers_by_partition(topic: &str) -> std::collections::BTreeMap<i32, Vec<String>> {
    let mut out: std::collections::BTreeMap<i32, Vec<String>> = Default::default();
    for r in read_topic(topic) {
        let w = out.entry(r.partition).or_default();
        let writer = r.headers.get("rill-writer").cloned().unwrap_or_default();
        if !w.contains(&writer) {
            w.push(writer);
        }
    }
    out
}

#[test]
fn each_process_sends_the_records_of_the_partitions_its_writer_owns() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("cl-own");
    let input = format!("{tag}-in");
    bank_input(dir.path(), &input, 2000, &format!("{tag}-gen"));
    let one = bank_partitioned(dir.path(), &input, &format!("{tag}-one"), 3);
    submit(&one, &["--workers", "2", "--quiet"]);
    let two = bank_partitioned(dir.path(), &input, &format!("{tag}-two"), 3);
    submit(&two, &["--processes", "2", "--workers", "1"]);
    assert_eq!(verify_lines(&two), verify_lines(&one));
    // Partitions 0 and 2 are process 0's, partition 1 process 1's.
    let job = format!("{tag}-two-bank");
    let want: std::collections::BTreeMap<i32, Vec<String>> = [
        (0, vec![format!("{job}-w0")]),
        (1, vec![format!("{job}-w1")]),
        (2, vec![format!("{job}-w0")]),
    ]
    .into();
    for topic in ["APPROVED", "REJECTED"] {
        let topic = format!("{tag}-two-{topic}");
        assert_eq!(writers_by_partition(&topic), want, "{topic}");
    }
}

#[test]
fn an_epoch_one_writer_committed_and_the_other_did_not_lands_once_after_the_restart() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("cl-split");
    let input = format!("{tag}-in");
    bank_input(dir.path(), &input, 1500, &format!("{tag}-gen"));
    let reference = bank_partitioned(dir.path(), &input, &format!("{tag}-ref"), 2);
    submit(&reference, &["--quiet"]);
    let job = bank_partitioned(dir.path(), &input, &format!("{tag}-job"), 2);
    // Process 1's writer commits epoch 2; process 0 dies before its own
    // commit of it.
    killed_at(&job, "peers_committed:2", 0, "0");
    // At another size, the epoch is finished on two processes first:
    // process 1's writer skips it, process 0's sends its share again.
    let stderr = submit(&job, &["--processes", "3", "--workers", "1"]);
    assert!(
        stderr.contains(
            "stopped in the middle of epoch 2 on 2 processes of 1 workers: finishing the epochs it logged on that shape"
        ),
        "{stderr}"
    );
    assert_eq!(verify_lines(&job), verify_lines(&reference));
}

#[test]
fn processes_that_cannot_form_a_cluster_say_why() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("cl-errors");
    let job = bank_reading(dir.path(), &format!("{tag}-in"), &tag);
    let other = reading(
        dir.path(),
        "rejected.toml",
        "REJECTED",
        &["AGGREGATED"],
        &format!("{tag}-in"),
        &format!("{tag}-other"),
    );
    let ports: Vec<std::net::TcpListener> = (0..2)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    let addresses: Vec<String> = ports
        .iter()
        .map(|l| l.local_addr().unwrap().to_string())
        .collect();
    drop(ports);
    let hostfile = dir.path().join("hostfile");
    std::fs::write(&hostfile, addresses.join("\n")).unwrap();
    let start = |job: &Path, process: &str, extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_jobctl"));
        cmd.args([
            "submit",
            job.to_str().unwrap(),
            "--hostfile",
            hostfile.to_str().unwrap(),
            "--process",
            process,
            "--workers",
            "1",
            "--quiet",
            "--connect-timeout-ms",
            "3000",
        ])
        .args(extra)
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
        cmd.spawn().unwrap()
    };
    let error_of = |child: std::process::Child| {
        let out = child.wait_with_output().unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        stderr
            .lines()
            .find(|l| l.starts_with("error: "))
            .unwrap_or(&stderr)
            .to_string()
    };

    // A peer that never starts.
    let alone = error_of(start(&job, "0", &[]));
    assert_eq!(
        alone,
        format!("error: job {tag}-bank failed (process 0): process 1 at {} did not answer within 3000 ms: start every process of the cluster (or raise --connect-timeout-ms)", addresses[1])
    );
    // Another job file.
    let a = start(&job, "0", &[]);
    let b = start(&other, "1", &[]);
    assert_eq!(
        error_of(a),
        format!("error: job {tag}-bank failed (process 0): process 1 at {} runs another binary, job file or worker count than process 0: start every process with the same jobctl, job file and --workers", addresses[1])
    );
    assert!(error_of(b).ends_with(&format!("process 0 at {} runs another binary, job file or worker count than process 1: start every process with the same jobctl, job file and --workers", addresses[0])));
    // A process left over from an earlier run of the cluster.
    let a = start(&job, "0", &["--generation", "2"]);
    let stale = start(&job, "1", &["--generation", "1"]);
    assert_eq!(
        error_of(stale),
        format!("error: job {tag}-bank failed (process 1): this process is left over from an earlier run of the cluster (generation 1; process 0 at {} runs generation 2): stop it and start it with the others", addresses[0])
    );
    assert!(
        error_of(a).ends_with(&format!("process 1 at {} is left over from an earlier run of the cluster (generation 1, this run is 2): stop it, then start it again with the others", addresses[1])),
    );
    // A short hostfile and an index out of range.
    let err = error_of(start(&job, "2", &[]));
    assert_eq!(err, format!("error: job {tag}-bank failed (process 2): process 2 is out of range: the hostfile lists 2 addresses (processes 0 to 1)"));
}

#[test]
fn a_process_that_reads_nothing_still_commits_its_progress() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("cl-idle");
    let input = format!("{tag}-in");
    bank_input(dir.path(), &input, 500, &format!("{tag}-gen"));
    let job = bank_reading(dir.path(), &input, &tag);
    // Two partitions, four workers: process 1's workers read none of them,
    // so its transactions hold no output.
    let shape = ["--processes", "2", "--workers", "2"];
    submit(&job, &shape);
    let again = submit(&job, &shape);
    assert!(again.contains(": 0 epochs to replay"), "{again}");
    assert!(
        again.lines().last().unwrap().contains(": 0 records in"),
        "{again}"
    );
}

#[test]
fn an_epoch_in_doubt_is_finished_on_its_shape_before_the_job_runs_at_another_size() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let (reference, job) = bank_lake_pair(dir.path(), &unique("cl-doubt-resize"));
    killed_between_the_log_and_the_commit(&job, "0");
    // At another size, the epoch is finished on two processes first.
    let stderr = submit(&job, &["--processes", "3", "--workers", "1"]);
    assert!(
        stderr.contains("stopped in the middle of epoch 2 on 2 processes of 1 workers: finishing the epochs it logged on that shape, before running on 3 processes of 1 workers"),
        "{stderr}"
    );
    assert_eq!(verify_lines(&job), verify_lines(&reference));
    // A process of its own has nothing left to finish.
    let stderr = submit(&job, &["--workers", "2"]);
    assert!(
        !stderr.contains("finishing the epochs it logged on that shape"),
        "{stderr}"
    );
    assert_eq!(verify_lines(&job), verify_lines(&reference));
}

#[test]
fn a_process_that_hangs_stops_the_cluster_within_seconds_and_is_named() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("cl-hang");
    let input = format!("{tag}-in");
    bank_input(dir.path(), &input, 500, &format!("{tag}-gen"));
    let job = bank_reading(dir.path(), &input, &tag);
    let mut launcher = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args([
            "submit",
            job.to_str().unwrap(),
            "--processes",
            "2",
            "--workers",
            "1",
            "--restart-attempts",
            "0",
        ])
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = launcher.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !seen.iter().any(|l: &String| l.starts_with("epoch ")) {
        match rx.recv_timeout(deadline.saturating_duration_since(std::time::Instant::now())) {
            Ok(l) => seen.push(l),
            Err(_) => panic!("no epoch committed:\n{}", seen.join("\n")),
        }
    }
    // Process 1 stops answering, as a process that hangs does.
    let children =
        std::fs::read_to_string(format!("/proc/{0}/task/{0}/children", launcher.id())).unwrap();
    let one: i32 = children.split_whitespace().nth(1).unwrap().parse().unwrap();
    let frozen = std::time::Instant::now();
    assert!(Command::new("kill")
        .args(["-STOP", &one.to_string()])
        .status()
        .unwrap()
        .success());
    let lost = loop {
        match rx.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l.contains("was lost") => break l,
            Ok(l) => seen.push(l),
            Err(_) => panic!("process 0 did not stop:\n{}", seen.join("\n")),
        }
    };
    let waited = frozen.elapsed();
    assert!(
        lost.contains("process 1 was lost: process 1 at ")
            && lost.contains("sent nothing for 5 s (it hangs, or the network between us does)"),
        "{lost}"
    );
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    // The launcher kills what is left and says which process failed.
    let status = launcher.wait().unwrap();
    assert!(!status.success());
    let rest: Vec<String> = rx.iter().collect();
    assert!(
        rest.iter()
            .any(|l| l.starts_with("error: job ") && l.contains("failed: process ")),
        "{rest:?}"
    );
}
