//! Operating a running job through its HTTP endpoint: metrics that
//! Prometheus accepts and that count what the job committed, the REST
//! API, `jobctl status` and `jobctl stop`, and the endpoint's address.

use super::*;
use std::io::Write as _;
use std::process::Stdio;

pub(super) fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A copy of the bank split with topics of its own, and `count`
/// transactions in its input.
fn bank_with_input(dir: &Path, tag: &str, count: usize) -> PathBuf {
    let topics = [
        "bank-transactions",
        "APPROVED",
        "REJECTED",
        "bank-dead-letters",
    ];
    let (job, names) = job_copy(dir, "bank.toml", &topics, tag);
    ok(&[
        "datagen",
        "bank",
        "--job",
        job.to_str().unwrap(),
        "--topic",
        &names["bank-transactions"],
        "--count",
        &count.to_string(),
        "--quiet",
    ]);
    job
}

fn get(http: &str, path: &str) -> Option<String> {
    ureq::get(&format!("http://{http}{path}"))
        .timeout(Duration::from_secs(5))
        .call()
        .ok()?
        .into_string()
        .ok()
}

/// The value of the sample `name` (with its labels, in order, as the
/// endpoint prints them after `job` and `process`), if there is one.
fn sample(metrics: &str, name: &str, labels: &str) -> Option<f64> {
    metrics.lines().find_map(|l| {
        let (series, value) = l.rsplit_once(' ')?;
        let (n, rest) = series.split_once('{')?;
        (n == name && rest.trim_end_matches('}').ends_with(labels))
            .then(|| value.parse().ok())
            .flatten()
    })
}

/// Waits up to 90 s until the job serving on `http` has committed at
/// least `n` records of `source`; its metrics then.
pub(super) fn committed_at_least(http: &str, source: &str, n: f64) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        if let Some(m) = get(http, "/metrics") {
            let read = sample(
                &m,
                "rill_source_records_total",
                &format!("source=\"{source}\""),
            );
            if read.is_some_and(|r| r >= n) {
                return m;
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the job on {http} did not commit {n} records of {source} in 90 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Runs promtool with `args`, `stdin` on its input; fails the test with
/// what it said unless it accepts.
fn promtool(args: &[&str], stdin: &str) {
    let mut check = Command::new("promtool")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package) is needed: apt-get install prometheus");
    check
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    let out = check.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}\n{stdin}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_running_jobs_metrics_pass_promtool_count_what_it_commits_and_stop_ends_it_with_nothing_lost() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("ops");
    let job = bank_with_input(dir.path(), &tag, 600);
    let http = format!("127.0.0.1:{}", free_port());
    // Runs until told to stop.
    let mut running = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(["submit", job.to_str().unwrap(), "--http", &http])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let metrics = committed_at_least(&http, "transactions", 600.0);
    promtool(&["check", "metrics"], &metrics);
    // Every record is committed: each source partition's lag, measured
    // every 5 s, comes to 0.
    let lag_of = |m: &str, p: u32| {
        sample(
            m,
            "rill_source_lag_records",
            &format!("source=\"transactions\",partition=\"{p}\""),
        )
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let m = get(&http, "/metrics").unwrap_or_default();
        if lag_of(&m, 0) == Some(0.0) && lag_of(&m, 1) == Some(0.0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no lag of 0 for both partitions in 30 s:\n{m}"
        );
        std::thread::sleep(Duration::from_millis(500));
    }
    for name in [
        "rill_epochs_total",
        "rill_epoch_duration_seconds_count",
        "rill_commit_duration_seconds_count",
        "rill_last_committed_epoch",
        "rill_open_epoch_records",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(name)),
            "{name} missing:\n{metrics}"
        );
    }
    // Kafka sinks have no Postgres fallback to report.
    assert!(!metrics.contains("rill_postgres_fallback{"), "{metrics}");
    let approved = sample(&metrics, "rill_sink_records_total", "sink=\"approved\"").unwrap();
    let rejected = sample(&metrics, "rill_sink_records_total", "sink=\"rejected\"").unwrap();
    assert_eq!(approved + rejected, 600.0, "{metrics}");
    let per_partition: f64 = (0..2)
        .map(|p| {
            sample(
                &metrics,
                "rill_source_partition_records_total",
                &format!("source=\"transactions\",partition=\"{p}\""),
            )
            .unwrap()
        })
        .sum();
    assert_eq!(per_partition, 600.0, "{metrics}");
    let through = |t: &str| {
        sample(
            &metrics,
            "rill_transform_records_total",
            &format!("transform=\"{t}\""),
        )
    };
    assert_eq!(through("split"), Some(600.0), "{metrics}");
    assert_eq!(through("approve"), Some(approved), "{metrics}");
    assert_eq!(through("reject"), Some(rejected), "{metrics}");

    let view: serde_json::Value =
        serde_json::from_str(&get(&http, "/api/v1/job").unwrap()).unwrap();
    assert_eq!(view["name"], format!("{tag}-bank"));
    assert_eq!(view["state"], "running");
    let nodes: Vec<&str> = view["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["node"].as_str().unwrap())
        .collect();
    assert_eq!(
        nodes,
        [
            "sources.transactions",
            "transforms.split",
            "transforms.approve",
            "transforms.reject",
            "sinks.approved",
            "sinks.rejected"
        ]
    );
    let epochs: serde_json::Value =
        serde_json::from_str(&get(&http, "/api/v1/epochs").unwrap()).unwrap();
    let read: u64 = epochs
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["records_in"].as_u64().unwrap())
        .sum();
    assert_eq!(read, 600, "{epochs}");

    let status = ok(&["status", "--http", &http]);
    assert!(
        status.starts_with(&format!("job {tag}-bank: running, attempt ")),
        "{status}"
    );
    assert!(status.contains("\nsources.transactions "), "{status}");

    let stopped = jobctl(&["stop", "--http", &http]);
    let said = String::from_utf8_lossy(&stopped.stderr);
    assert!(stopped.status.success(), "{said}");
    assert!(
        said.contains(&format!(
            "stopping job {tag}-bank: its open epoch commits, then it exits"
        )) && said.contains(&format!("job {tag}-bank stopped")),
        "{said}"
    );
    let exit = running.wait().unwrap();
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut running.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(exit.success(), "{stderr}");
    assert!(
        stderr.contains(&format!(", metrics and API on http://{http}")),
        "{stderr}"
    );
    // What the counters said is what a read_committed consumer finds.
    let committed = verify_lines(&job);
    let count = |prefix: &str| committed.iter().filter(|l| l.starts_with(prefix)).count() as f64;
    assert_eq!(count("approved key "), approved);
    assert_eq!(count("rejected key "), rejected);
}

#[test]
fn the_endpoint_refuses_a_port_in_use_and_status_says_when_no_job_answers() {
    require_services();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let http = taken.local_addr().unwrap().to_string();
    let out = jobctl(&[
        "submit",
        "jobs/bank.toml",
        "--http",
        &http,
        "--until-caught-up",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains(&format!("cannot serve the job's endpoint on {http}: "))
            && stderr.contains("pass --http with a free address, or --http off"),
        "{stderr}"
    );
    let out = jobctl(&[
        "status",
        "--http",
        &http.replace(
            &taken.local_addr().unwrap().port().to_string(),
            &free_port().to_string(),
        ),
    ]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("is it running, and with which --http?"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn every_query_of_the_grafana_dashboard_is_promql_that_promtool_accepts() {
    let text = std::fs::read_to_string(root().join("docs/grafana-dashboard.json")).unwrap();
    let dashboard: serde_json::Value = serde_json::from_str(&text).unwrap();
    let exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().clone())
        .map(|t| t["expr"].as_str().unwrap().to_string())
        .collect();
    assert!(exprs.len() >= 8, "{exprs:?}");
    // Each query as a recording rule: promtool parses it as Prometheus would.
    let mut rules = String::from("groups:\n  - name: dashboard\n    rules:\n");
    for (i, e) in exprs.iter().enumerate() {
        rules.push_str(&format!(
            "      - record: rill:dashboard_{i}\n        expr: {}\n",
            serde_json::to_string(e).unwrap()
        ));
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rules.yml");
    std::fs::write(&path, rules).unwrap();
    promtool(&["check", "rules", path.to_str().unwrap()], "");
}

#[test]
fn with_json_logs_every_line_on_stderr_is_a_json_object_and_rust_log_filters_them() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("ops-json");
    let job = bank_with_input(dir.path(), &tag, 50);
    let out = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args([
            "submit",
            job.to_str().unwrap(),
            "--until-caught-up",
            "--http",
            "off",
            "--log-format",
            "json",
        ])
        .env("RUST_LOG", "rill=debug")
        .current_dir(root())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines: Vec<serde_json::Value> = stderr
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let messages: Vec<&str> = lines
        .iter()
        .map(|l| l["message"].as_str().unwrap_or_default())
        .collect();
    assert!(
        messages[0].starts_with(&format!("job {tag}-bank on ")),
        "{stderr}"
    );
    assert!(messages.iter().any(|m| m.starts_with("epoch ")), "{stderr}");
    assert!(
        messages.last().unwrap().contains(" stopped after "),
        "{stderr}"
    );
    // RUST_LOG=rill=debug lets rill's debug events through.
    assert!(lines.iter().any(|l| l["level"] == "DEBUG"), "{stderr}");
}

/// Two JSON rows hold the same values, doubles to 9 significant digits
/// (as `jobctl verify` prints them).
fn same_row(a: &serde_json::Value, b: &serde_json::Value) -> bool {
    let (Some(a), Some(b)) = (a.as_object(), b.as_object()) else {
        return false;
    };
    a.len() == b.len()
        && a.iter().all(|(k, x)| match (x, &b[k]) {
            (serde_json::Value::Number(x), serde_json::Value::Number(y)) => {
                let (x, y) = (x.as_f64().unwrap(), y.as_f64().unwrap());
                (x - y).abs() <= 1e-9 * x.abs().max(y.abs()).max(1.0)
            }
            (x, y) => x == y,
        })
}

#[test]
fn a_pull_query_answers_what_verify_shows_for_each_key() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("ops-pull");
    let topics = ["REJECTED", "AGGREGATED", "rejected-dead-letters"];
    let (job, names) = job_copy(dir.path(), "rejected.toml", &topics, &tag);
    ok(&[
        "datagen",
        "bank",
        "--job",
        job.to_str().unwrap(),
        "--topic",
        &names["REJECTED"],
        "--count",
        "300",
        "--quiet",
    ]);
    let http = format!("127.0.0.1:{}", free_port());
    let mut running = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(["submit", job.to_str().unwrap(), "--http", &http, "--quiet"])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    committed_at_least(&http, "rejected", 300.0);
    let page = |query: &str| -> serde_json::Value {
        serde_json::from_str(&get(&http, &format!("/api/v1/state/per_account{query}")).unwrap())
            .unwrap()
    };
    // Every key, a page of 50 at a time.
    let mut all = Vec::new();
    let mut query = "?limit=50".to_string();
    loop {
        let p = page(&query);
        all.extend(p["rows"].as_array().unwrap().clone());
        match p["next"].as_str() {
            Some(next) => query = format!("?limit=50&after={next}"),
            None => break,
        }
    }
    let committed = verify_lines(&job);
    let shown: Vec<(String, serde_json::Value)> = committed
        .iter()
        .filter_map(|l| l.strip_prefix("aggregated key "))
        .map(|l| {
            let (k, v) = l.split_once(" value ").unwrap();
            (k.to_string(), serde_json::from_str(v).unwrap())
        })
        .collect();
    assert!(shown.len() > 50, "{}", shown.len());
    assert_eq!(all.len(), shown.len());
    for (row, (key, value)) in all.iter().zip(&shown) {
        assert_eq!(row["key"].as_str().unwrap(), key);
        assert!(
            same_row(&row["value"], value),
            "{key}: {} against {value}",
            row["value"]
        );
    }
    // One key.
    let (key, value) = &shown[7];
    let one = page(&format!("?key={key}"));
    let rows = one["rows"].as_array().unwrap();
    assert_eq!(rows.len(), 1, "{one}");
    assert!(same_row(&rows[0]["value"], value), "{one}");
    // A transform that keeps no state.
    let missing = ureq::get(&format!("http://{http}/api/v1/state/nope")).call();
    match missing {
        Err(ureq::Error::Status(404, r)) => {
            let body = r.into_string().unwrap();
            assert!(body.contains("no stateful transform nope in job"), "{body}");
        }
        other => panic!("{other:?}"),
    }
    ok(&["stop", "--http", &http]);
    assert!(running.wait().unwrap().success());
}

#[test]
fn a_stop_in_the_middle_of_the_input_commits_what_was_read_and_a_restart_reads_on_with_nothing_twice(
) {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("ops-stop");
    let job = bank_with_input(dir.path(), &tag, 2000);
    let http = format!("127.0.0.1:{}", free_port());
    // Read slowly, so the stop lands with input left to read.
    let running = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args([
            "submit",
            job.to_str().unwrap(),
            "--http",
            &http,
            "--max-records-per-second",
            "400",
        ])
        .current_dir(root())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    committed_at_least(&http, "transactions", 400.0);
    ok(&["stop", "--http", &http]);
    let out = running.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let summary = stderr.lines().last().unwrap();
    let read: usize = summary
        .split(" records in")
        .next()
        .and_then(|s| s.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{summary}"));
    assert!((400..2000).contains(&read), "{summary}");
    // Everything it read is committed, the open epoch's records too.
    let outputs = |lines: &[String]| {
        lines
            .iter()
            .filter(|l| l.starts_with("approved key ") || l.starts_with("rejected key "))
            .count()
    };
    assert_eq!(outputs(&verify_lines(&job)), read, "{summary}");
    // Started again, it reads the rest, and nothing twice.
    ok(&[
        "submit",
        job.to_str().unwrap(),
        "--until-caught-up",
        "--http",
        "off",
        "--quiet",
    ]);
    let all = verify_lines(&job);
    assert_eq!(outputs(&all), 2000);
    let unique: std::collections::HashSet<&String> = all.iter().collect();
    assert_eq!(unique.len(), all.len());
}
