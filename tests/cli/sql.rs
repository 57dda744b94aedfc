//! SQL jobs commit exactly what their job-file twins commit.

use super::cluster::{bank_input, bank_reading};
use super::*;

/// What `jobctl verify` shows, each line without its sink's name (the
/// twins name their sinks differently) and with `tag` taken out.
fn committed_values(job: &Path, tag: &str) -> Vec<String> {
    let mut lines: Vec<String> = verify_lines(job)
        .into_iter()
        .map(|l| {
            l.split_once(' ')
                .map_or(l.clone(), |(_, rest)| rest.to_string())
                .replace(tag, "T")
        })
        .collect();
    lines.sort();
    lines
}

/// `jobs/<file>` with `replacements` made, written into `dir` under a
/// job name of its own.
pub(super) fn sql_copy(
    dir: &Path,
    file: &str,
    name: &str,
    replacements: &[(&str, String)],
) -> PathBuf {
    let mut text = std::fs::read_to_string(root().join("jobs").join(file)).unwrap();
    for (from, to) in replacements {
        assert!(text.contains(from), "{file} has no {from}");
        text = text.replace(from, to);
    }
    text.push_str(&format!("\nSET 'application.id'='{name}';\n"));
    let path = dir.join(format!("{name}.sql"));
    std::fs::write(&path, text).unwrap();
    path
}

/// A topic of `count` commercial ratings of its own, as seed 004's
/// generator writes them (their schema in the registry); its name.
fn commercials_input(dir: &Path, tag: &str, count: usize) -> String {
    let (gen, names) = job_copy(dir, "commercials.toml", &["commercials_avro"], tag);
    let count = count.to_string();
    ok(&[
        "datagen",
        "commercials",
        "--job",
        gen.to_str().unwrap(),
        "--count",
        &count,
        "--quiet",
    ]);
    names["commercials_avro"].clone()
}

fn run(job: &Path) {
    ok(&[
        "submit",
        job.to_str().unwrap(),
        "--until-caught-up",
        "--quiet",
    ]);
}

#[test]
fn bank_sql_commits_what_bank_toml_commits() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let input = unique("sqlbank-in");
    bank_input(dir.path(), &input, 2000, &unique("sqlbank-gen"));
    let tag = unique("sqlbank");
    let toml = bank_reading(dir.path(), &input, &format!("{tag}-toml"));
    let (approved, rejected) = (
        format!("'{tag}-sql-APPROVED'"),
        format!("'{tag}-sql-REJECTED'"),
    );
    let sql = sql_copy(
        dir.path(),
        "bank.sql",
        &format!("{tag}-sql"),
        &[
            ("'bank-transactions'", format!("'{input}'")),
            ("KAFKA_TOPIC='APPROVED'", format!("KAFKA_TOPIC={approved}")),
            ("KAFKA_TOPIC='REJECTED'", format!("KAFKA_TOPIC={rejected}")),
        ],
    );
    run(&toml);
    run(&sql);
    let want = committed_values(&toml, &format!("{tag}-toml"));
    assert_eq!(want.len(), 2000);
    assert_eq!(committed_values(&sql, &format!("{tag}-sql")), want);
}

#[test]
fn the_seeds_ksqldb_tables_commit_what_their_job_file_twins_commit() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("sqlcom");
    let input = commercials_input(dir.path(), &format!("{tag}-gen"), 3000);
    for (file, table) in [
        ("commercials", "metrics_per_brand"),
        ("commercials_windowed", "metrics_per_brand_windowed"),
    ] {
        let (toml, _) = job_copy(
            dir.path(),
            &format!("{file}.toml"),
            &["commercials_avro"],
            &format!("{tag}-{file}-toml"),
        );
        let text = std::fs::read_to_string(&toml)
            .unwrap()
            .replace(
                &format!("\"{tag}-{file}-toml-commercials_avro\""),
                &format!("\"{input}\""),
            )
            .replace(
                &format!("topic = \"{table}\""),
                &format!("topic = \"{tag}-{file}-toml-out\""),
            );
        std::fs::write(&toml, text).unwrap();
        let sql_name = format!("{tag}-{file}-sql");
        let sql = sql_copy(
            dir.path(),
            &format!("{file}.sql"),
            &sql_name,
            &[
                ("'commercials_avro'", format!("'{input}'")),
                (
                    &format!("TABLE {table} AS"),
                    format!("TABLE {table} WITH (KAFKA_TOPIC='{sql_name}-out') AS"),
                ),
            ],
        );
        run(&toml);
        run(&sql);
        let want = committed_values(&toml, &format!("{tag}-{file}-toml"));
        assert!(!want.is_empty(), "{file}");
        assert_eq!(committed_values(&sql, &sql_name), want, "{file}");
    }
}

#[test]
fn a_sql_job_with_mistakes_gets_every_error_at_once_with_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.sql");
    std::fs::write(
        &path,
        "CREATE STREAM s (account_id BIGINT, amount DOUBLE)\n  WITH (KAFKA_TOPIC='in', VALUE_FORMAT='JSON');\n\
         CREATE STREAM big AS SELECT account_id, amount * 2 AS twice FROM s WHERE amout > 10;\n\
         CREATE TABLE t AS SELECT account_id, MEDIAN(amount) FROM s GROUP BY account_id;\n\
         CREATE STREAM x AS SELECT * FROM nowhere;\n",
    )
    .unwrap();
    let out = jobctl(&["validate", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr =
        String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "broken.sql");
    assert_eq!(
        stderr,
        "error: broken.sql has 2 errors:\n\
         broken.sql:line 4, column 38: MEDIAN is not an aggregate rill computes\n  |\n\
         4 | CREATE TABLE t AS SELECT account_id, MEDIAN(amount) FROM s GROUP BY account_id;\n  |                                      ^\n\
         broken.sql:line 5, column 34: no stream `nowhere` is declared before this statement\n  |\n\
         5 | CREATE STREAM x AS SELECT * FROM nowhere;\n  |                                  ^\n"
    );
    // Fixed, what the plan finds points into the SQL too.
    let fixed = std::fs::read_to_string(&path)
        .unwrap()
        .replace("MEDIAN(amount)", "SUM(amount)")
        .replace("FROM nowhere", "FROM s");
    std::fs::write(&path, fixed).unwrap();
    let out = jobctl(&["validate", path.to_str().unwrap()]);
    let stderr =
        String::from_utf8_lossy(&out.stderr).replace(&path.display().to_string(), "broken.sql");
    assert!(
        stderr.contains("broken.sql:line 3, column 74: transforms.big_where: "),
        "{stderr}"
    );
    assert!(stderr.contains("unknown field `amout`"), "{stderr}");
}

#[test]
fn a_pull_query_on_a_running_sql_job_answers_what_it_committed() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("sqlpull");
    let input = commercials_input(dir.path(), &tag, 500);
    let name = format!("{tag}-sql");
    let sql = sql_copy(
        dir.path(),
        "commercials.sql",
        &name,
        &[
            ("'commercials_avro'", format!("'{input}'")),
            (
                "TABLE metrics_per_brand AS",
                format!("TABLE metrics_per_brand WITH (KAFKA_TOPIC='{name}-out') AS"),
            ),
        ],
    );
    let http = format!("127.0.0.1:{}", super::operations::free_port());
    let mut running = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .args(["submit", sql.to_str().unwrap(), "--http", &http, "--quiet"])
        .current_dir(root())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    super::operations::committed_at_least(&http, "metrics_brand_stream", 500.0);
    // What verify shows for the brand, as the query's row.
    let committed: Vec<serde_json::Value> = verify_lines(&sql)
        .iter()
        .filter_map(|l| {
            l.split_once(" value ")
                .map(|(_, v)| serde_json::from_str(v).unwrap())
        })
        .collect();
    assert_eq!(committed.len(), 2, "{committed:?}");
    for row in &committed {
        let brand = row["brand"].as_str().unwrap();
        let out = ok(&[
            "query",
            &format!("SELECT brand, cnt FROM metrics_per_brand WHERE brand = '{brand}'"),
            "--http",
            &http,
            "--json",
        ]);
        assert_eq!(
            out,
            format!(
                "{}\n",
                serde_json::json!({"brand": brand, "cnt": row["cnt"]})
            )
        );
    }
    let table = ok(&["query", "SELECT * FROM metrics_per_brand", "--http", &http]);
    assert_eq!(table.lines().count(), 6, "{table}");
    assert!(
        table.lines().nth(1).unwrap().starts_with("| brand "),
        "{table}"
    );
    let out = jobctl(&["query", "SELECT * FROM nothing", "--http", &http]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).starts_with(&format!(
            "error: no stateful transform nothing in job {name}"
        )),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    ok(&["stop", "--http", &http]);
    running.wait().unwrap();
}
