//! A job's whole life as a team lives it: run again on new input,
//! validated after an edit, followed from its docs on a new machine.

use super::*;

#[test]
fn a_second_turnstile_datagen_run_continues_after_the_first_so_the_job_finds_none_of_it_late() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("datagen-again");
    let (job, t) = turnstile_copy(dir.path(), &tag);
    let path = job.to_str().unwrap();
    let generate = || {
        ok(&[
            "datagen",
            "turnstile",
            "--job",
            path,
            "--count",
            "800",
            "--late-share",
            "0",
            "--out-of-order-share",
            "0",
            "--quiet",
        ])
    };
    for _ in 0..2 {
        generate();
        ok(&["submit", path, "--until-caught-up", "--quiet"]);
    }
    let dead = read_topic(&t["turnstile-dead-letters"]);
    assert_eq!(
        dead.len(),
        0,
        "{:?}",
        dead.first()
            .map(|r| String::from_utf8_lossy(&r.value).into_owned())
    );
    // The end of the first run fired its last window early; the second
    // run's first reports fall in it and fire it again: the latest count
    // per window is what a consumer keeps.
    let mut windows: HashMap<String, i64> = HashMap::new();
    for r in read_topic(&t["turnstile-station-counts"]) {
        let row: serde_json::Value = serde_json::from_slice(&r.value).unwrap();
        windows.insert(r.key.unwrap(), row["reports"].as_i64().unwrap());
    }
    assert_eq!(windows.values().sum::<i64>(), 1600);
}

#[test]
fn tail_into_a_reader_that_stops_early_ends_quietly() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("pipe");
    let input = format!("{tag}-input");
    bank_input(dir.path(), &tag, &input, "3000", "21");
    let mut tail = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(["tail", &input, "--until-caught-up"])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // What `| head -2` does: two lines, then the pipe closes.
    let mut lines = std::io::BufRead::lines(std::io::BufReader::new(tail.stdout.take().unwrap()));
    for _ in 0..2 {
        assert!(lines.next().unwrap().unwrap().starts_with("key "));
    }
    drop(lines);
    let out = tail.wait_with_output().unwrap();
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{said}");
    assert_eq!(said, "");
}

/// Words of SQL, spaces and case aside.
fn words(sql: &str) -> String {
    sql.split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

#[test]
fn a_shipped_job_that_quotes_a_seed_statement_quotes_it_as_the_seed_has_it() {
    let seeds: String = std::fs::read_dir(root().join("../shared/seeds"))
        .unwrap()
        .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap_or_default())
        .collect();
    let seeds = words(&seeds);
    let mut quoted = 0;
    for entry in std::fs::read_dir(root().join("jobs")).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut lines = text.lines();
        let Some(first) = lines.next() else { continue };
        let Some(table) = first
            .strip_prefix("# Seed ")
            .and_then(|r| r.split_once("'s ksqlDB table "))
            .map(|(_, t)| t.trim_end_matches(':'))
        else {
            continue;
        };
        let statement: Vec<&str> = lines.map_while(|l| l.strip_prefix("#   ")).collect();
        let statement = words(&statement.join(" "));
        assert!(
            seeds.contains(&format!("table {table} as {statement}")),
            "{}: `{statement}` is not the seed's statement of {table}",
            path.display()
        );
        quoted += 1;
    }
    assert!(quoted >= 2, "{quoted} job files quote a seed statement");
}

#[test]
fn every_option_of_every_command_is_in_the_readme_or_the_docs() {
    let mut docs = std::fs::read_to_string(root().join("README.md")).unwrap();
    for entry in std::fs::read_dir(root().join("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "md") {
            docs.push_str(&std::fs::read_to_string(path).unwrap());
        }
    }
    let help = jobctl(&["--help"]);
    let help = String::from_utf8_lossy(&help.stdout).into_owned();
    let commands: Vec<&str> = help
        .lines()
        .skip_while(|l| !l.starts_with("Commands:"))
        .skip(1)
        .take_while(|l| l.starts_with("  "))
        .filter_map(|l| l.split_whitespace().next())
        .filter(|c| *c != "help")
        .collect();
    assert!(
        commands.contains(&"submit") && commands.len() >= 10,
        "{help}"
    );
    let mut missing = Vec::new();
    for command in commands {
        let out = jobctl(&[command, "--help"]);
        for line in String::from_utf8_lossy(&out.stdout).lines() {
            let Some(option) = line.trim_start().strip_prefix("--") else {
                continue;
            };
            let option = option.split([' ', '=', '<']).next().unwrap();
            if ["help", "version"].contains(&option) {
                continue;
            }
            if !docs.contains(&format!("--{option}")) {
                missing.push(format!("jobctl {command} --{option}"));
            }
        }
    }
    assert_eq!(missing, Vec::<String>::new());
}

/// Starts Postgres again when dropped, whatever the test did.
struct PostgresBack;

impl Drop for PostgresBack {
    fn drop(&mut self) {
        postgres_cluster("start");
    }
}

#[test]
fn a_postgres_sink_without_a_fallback_waits_at_start_for_its_database_and_loses_nothing() {
    require_services();
    let _pg = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("pgwait");
    let (job, input, table, _) = cashback_job(dir.path(), &tag);
    let text = std::fs::read_to_string(&job).unwrap();
    let text: String = text
        .lines()
        .filter(|l| !l.starts_with("fallback_dir"))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&job, text).unwrap();
    let path = job.to_str().unwrap();
    ok(&[
        "datagen",
        "cashback",
        "--job",
        path,
        "--count",
        "400",
        "--malformed-share",
        "0",
        "--quiet",
    ]);
    let back = PostgresBack;
    postgres_cluster("stop");
    let (mut run, rx, said) = watched(&["submit", path, "--until-caught-up", "--quiet"], &[]);
    wait_for(
        &rx,
        "the job waits for it (a sink with a `fallback_dir` would go on without it)",
    );
    // Still waiting a while later, not failed.
    std::thread::sleep(Duration::from_secs(3));
    assert!(run.try_wait().unwrap().is_none());
    drop(back);
    let status = run.wait().unwrap();
    let said = said.join().unwrap();
    assert!(status.success(), "{said}");
    assert!(
        said.contains("cannot reach postgres at postgresql://"),
        "{said}"
    );
    let (eligible, _) = cashback_expected(&input);
    assert!(!eligible.is_empty());
    assert_eq!(table_timestamps(&table), eligible);
}

/// The cashback job's input, more of it: `count` payments, none malformed.
fn more_payments(job: &Path, count: &str) {
    ok(&[
        "datagen",
        "cashback",
        "--job",
        job.to_str().unwrap(),
        "--count",
        count,
        "--malformed-share",
        "0",
        "--quiet",
        "--seed",
        &unique("seed")
            .chars()
            .filter(char::is_ascii_digit)
            .collect::<String>()[..6],
    ]);
}

#[test]
fn a_log_deleted_by_hand_is_refused_naming_reset_and_after_a_reset_every_new_payment_lands_once() {
    require_services();
    let _pg = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("reset");
    let (job, input, table, _) = cashback_job(dir.path(), &tag);
    let path = job.to_str().unwrap();
    let name = format!("{tag}-cashback");
    more_payments(&job, "400");
    ok(&["submit", path, "--until-caught-up", "--quiet"]);
    let (first, _) = cashback_expected(&input);
    assert_eq!(table_timestamps(&table), first);

    // What the docs once advised: delete the epoch log by hand.
    kafka_admin::delete_topics(&brokers(), &[&format!("{name}.epochs")]).unwrap();
    more_payments(&job, "400");
    let out = jobctl(&["submit", path, "--until-caught-up", "--quiet"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "sink `cashback_table` holds the progress of another run of job {name} ("
        )) && said.contains(&format!("run `jobctl reset {name}` to start the job over")),
        "{said}"
    );
    // Nothing of the second batch went in.
    assert_eq!(table_timestamps(&table), first);

    let listed = ok(&["reset", path]);
    for part in [
        format!("job {name} keeps, to resume:"),
        format!("sink cashback_table: 1 progress row (epoch 1) in rill_sink_progress, for table {table}"),
        format!("reset: fenced the job's writers and deleted the above; its next start begins from nothing as run "),
        format!("table {table} (sink cashback_table): TRUNCATE {table}"),
    ] {
        assert!(listed.contains(&part), "missing `{part}` in:\n{listed}");
    }
    ok(&["submit", path, "--until-caught-up", "--quiet"]);
    // The new run reads the input from its start: every payment once more,
    // beside the first run's rows, which the reset left.
    let (all, _) = cashback_expected(&input);
    let mut want = [first.clone(), all.clone()].concat();
    want.sort();
    assert_eq!(table_timestamps(&table), want);
    assert!(all.len() > first.len());
}

#[test]
fn a_file_sink_of_a_log_deleted_by_hand_is_refused_and_after_a_reset_writes_every_window_again_beside_the_old_files(
) {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("reset-files");
    let (job, _) = turnstile_copy(dir.path(), &tag);
    let path = job.to_str().unwrap();
    let name = format!("{tag}-turnstile");
    ok(&[
        "datagen",
        "turnstile",
        "--job",
        path,
        "--count",
        "600",
        "--late-share",
        "0",
        "--out-of-order-share",
        "0",
        "--quiet",
    ]);
    ok(&["submit", path, "--until-caught-up", "--quiet"]);
    let lake = dir.path().join("out/turnstile");
    let files = |dir: &Path| -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        v.sort();
        v
    };
    let before = files(&lake);
    assert!(!before.is_empty());
    let reports = |names: &[String]| -> i64 {
        names
            .iter()
            .flat_map(|n| {
                gunzip(&lake.join(n))
                    .lines()
                    .skip(1)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            })
            .map(|row| row.rsplit(',').next().unwrap().parse::<i64>().unwrap())
            .sum()
    };
    assert_eq!(reports(&before), 600);

    kafka_admin::delete_topics(&brokers(), &[&format!("{name}.epochs")]).unwrap();
    let out = jobctl(&["submit", path, "--until-caught-up", "--quiet"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!(
            "sink `lake` holds the progress of another run of job {name} ("
        )) && said.contains(&format!("run `jobctl reset {name}`")),
        "{said}"
    );
    assert_eq!(files(&lake), before, "nothing written");

    ok(&["reset", path]);
    ok(&["submit", path, "--until-caught-up", "--quiet"]);
    let after = files(&lake);
    let new: Vec<String> = after
        .iter()
        .filter(|f| !before.contains(f))
        .cloned()
        .collect();
    // Every window again, in files of their own: the old ones are left.
    assert_eq!(after.len(), before.len() * 2, "{after:?}");
    assert_eq!(reports(&new), 600);
}

#[test]
fn a_changed_aggregate_is_refused_naming_what_changed_and_a_compatible_change_keeps_the_state() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("changed");
    let input = format!("{tag}-input");
    bank_input(dir.path(), &tag, &input, "600", "31");
    let job = rejected_reading(dir.path(), &format!("{tag}-job"), &input, "");
    let path = job.to_str().unwrap();
    let name = format!("{tag}-job-rejected");
    ok(&["submit", path, "--until-caught-up", "--quiet"]);
    let committed = verify_lines(&job);
    let original = std::fs::read_to_string(&job).unwrap();

    // sum becomes max over the sums already committed.
    std::fs::write(
        &job,
        original.replace("\"sum(withdraw)\"", "\"max(withdraw)\""),
    )
    .unwrap();
    let out = jobctl(&["submit", path, "--until-caught-up", "--quiet"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{said}");
    assert!(
        said.contains(&format!("job {name} keeps state that its job file now means otherwise: transform `per_account`: aggregates.total_rejected was `sum(withdraw) double`, is `max(withdraw) double`; "))
            && said.contains(&format!("Run `jobctl reset {name}` to start it over from nothing")),
        "{said}"
    );
    // A renamed transform leaves its state behind.
    std::fs::write(&job, original.replace("per_account", "by_account")).unwrap();
    let out = jobctl(&["submit", path, "--until-caught-up", "--quiet"]);
    let said = String::from_utf8_lossy(&out.stderr);
    assert!(
        said.contains(
            "transform `per_account` kept state and is not in the job file (renamed or removed)"
        ),
        "{said}"
    );

    // A filter and a sink added keep the state, and more input adds to it.
    let compatible = original.replace(
        "[sinks.aggregated]",
        "[transforms.big]\ntype = \"filter\"\ninputs = [\"per_account\"]\ncondition = \"rejected_count > 1\"\n\n[sinks.big_ones]\ntype = \"stdout\"\ninputs = [\"big\"]\n\n[sinks.aggregated]",
    );
    std::fs::write(&job, compatible).unwrap();
    let out = jobctl(&["submit", path, "--until-caught-up", "--quiet"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        verify_lines(&job),
        committed,
        "nothing new, nothing changed"
    );

    // The changed aggregate after a reset: from nothing, over all input.
    std::fs::write(
        &job,
        original.replace("\"sum(withdraw)\"", "\"max(withdraw)\""),
    )
    .unwrap();
    ok(&["reset", path]);
    ok(&["submit", path, "--until-caught-up", "--quiet"]);
}

#[test]
fn a_reset_under_a_running_job_fences_it_and_the_next_run_reads_every_record_once() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("reset-running");
    let input = format!("{tag}-input");
    bank_input(dir.path(), &tag, &input, "900", "23");
    let job = super::cluster::bank_reading(dir.path(), &input, &tag);
    let path = job.to_str().unwrap();
    let (mut running, rx, said) =
        watched(&["submit", path, "--max-records-per-second", "300"], &[]);
    wait_for(&rx, "epoch 2:");
    ok(&["reset", path]);
    // Its next commit finds it fenced: more input makes it try one.
    bank_input(dir.path(), &format!("{tag}-more"), &input, "10", "24");
    let status = running.wait().unwrap();
    let said = said.join().unwrap();
    assert_eq!(status.code(), Some(4), "{said}");
    assert!(said.contains("was fenced"), "{said}");
    let out = jobctl(&["submit", path, "--until-caught-up", "--quiet"]);
    let summary = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{summary}");
    assert!(
        summary.contains(": 910 records in, out approved "),
        "{summary}"
    );
}
