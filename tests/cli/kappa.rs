//! Seed 002's kappa pipeline: lines typed into `messages` with
//! `jobctl produce` come back transformed on `responses`.

use super::*;
use std::io::Write;
use std::process::Stdio;

/// jobs/kappa.toml with topics of its own.
pub(super) fn kappa_job(dir: &Path) -> (PathBuf, String, String, String) {
    let name = unique("kappa");
    let (messages, responses) = (format!("{name}-messages"), format!("{name}-responses"));
    let text = std::fs::read_to_string(root().join("jobs/kappa.toml"))
        .unwrap()
        .replace("name = \"kappa\"", &format!("name = \"{name}\""))
        .replace("topic = \"messages\"", &format!("topic = \"{messages}\""))
        .replace("topic = \"responses\"", &format!("topic = \"{responses}\""));
    let path = dir.join(format!("{name}.toml"));
    std::fs::write(&path, text).unwrap();
    (path, messages, responses, format!("{name}.dead-letters"))
}

/// `jobctl produce ARGS` with `input` on its stdin.
fn produce(args: &[&str], input: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_jobctl"))
        .arg("produce")
        .args(args)
        .current_dir(root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(input).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn typed_lines_come_back_transformed_and_a_line_that_is_not_text_goes_to_the_dead_letters() {
    require_services();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let (job, messages, responses, dead) = kappa_job(dir);
    let job = job.to_str().unwrap();
    let out = produce(
        &[&messages],
        b"  hello   world  \nrill is one small binary\r\n\xff\xfe not utf-8\n\n",
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!("sent 4 records to {messages}\n")
    );
    // With keys: a line without the separator is named and not sent; the
    // others are.
    let out = produce(
        &[&messages, "--key-separator", ":"],
        b"user-1:Kappa means one pipeline\nno separator here\nuser-2: :)\n",
    );
    assert!(!out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        format!(
            "line 2: no key separator `:` in it; not sent\nsent 2 records to {messages}\nerror: 1 lines were not sent (each is named above)\n"
        )
    );
    let run = ok(&["submit", job, "--until-caught-up", "--quiet"]);
    assert_eq!(run, "");
    assert_eq!(
        ok(&["tail", &responses, "--until-caught-up"]),
        [
            r#"key null value {"line":"HELLO   WORLD","chars":13,"words":2}"#,
            r#"key null value {"line":"RILL IS ONE SMALL BINARY","chars":24,"words":5}"#,
            r#"key null value {"line":"","chars":0,"words":0}"#,
            r#"key user-1 value {"line":"KAPPA MEANS ONE PIPELINE","chars":24,"words":4}"#,
            r#"key user-2 value {"line":":)","chars":2,"words":1}"#,
        ]
        .map(|l| format!("{l}\n"))
        .concat()
    );
    // kappa.sql answers the same lines the same way.
    let sql_name = unique("kappa-sql");
    let sql = super::sql::sql_copy(
        dir,
        "kappa.sql",
        &sql_name,
        &[
            (
                "KAFKA_TOPIC='messages'",
                format!("KAFKA_TOPIC='{messages}'"),
            ),
            (
                "KAFKA_TOPIC='responses'",
                format!("KAFKA_TOPIC='{sql_name}-responses'"),
            ),
        ],
    );
    ok(&[
        "submit",
        sql.to_str().unwrap(),
        "--until-caught-up",
        "--quiet",
    ]);
    assert_eq!(
        ok(&[
            "tail",
            &format!("{sql_name}-responses"),
            "--until-caught-up"
        ]),
        ok(&["tail", &responses, "--until-caught-up"])
    );
    let letters = read_topic(&dead);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].value, b"\xff\xfe not utf-8");
    assert_eq!(
        letters[0].headers["rill-error-reason"],
        "decode: not valid UTF-8 text: invalid utf-8 sequence of 1 bytes from index 0 (a text source reads UTF-8 lines; read binary values as `avro`)"
    );
    assert_eq!(letters[0].headers["rill-source-offset"], "2");
}

#[test]
fn a_line_of_json_is_sent_as_avro_with_the_schema_of_the_job_that_reads_the_topic() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let job = bank_job(dir.path(), "produce");
    let path = job.path.to_str().unwrap();
    let out = produce(
        &[&job.input, "--job", path, "--key-separator", "\t"],
        b"7\t{\"account_id\": 7, \"time\": 1700000000000, \"withdraw\": 20.0, \"balance\": 100.0, \"bank_transaction_state\": \"CREATED\"}\n8\t{\"account_id\": \"eight\"}\n",
    );
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.starts_with("line 2: not a row of the source's schema: "),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("sent 1 records to {}\n", job.input)),
        "{stderr}"
    );
    let records = read_topic(&job.input);
    assert_eq!(
        decode_all(&records),
        vec![(
            "7".to_string(),
            r#"{"account_id": 7, "time": 1700000000000, "withdraw": 20.0, "balance": 100.0, "bank_transaction_state": "CREATED"}"#.to_string()
        )]
    );
}

#[test]
fn text_sources_and_sinks_are_checked_when_the_job_is_validated() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("text.toml");
    std::fs::write(
        &path,
        r#"[job]
name = "text-checks"

[sources.lines]
type = "kafka"
topic = "lines"
format = "text"
schema = "line.avsc"

[sources.rows]
type = "kafka"
topic = "rows"
format = "json"

[transforms.counted]
type = "map"
inputs = ["lines"]
fields.n = "line.wordCount()"

[sinks.out]
type = "kafka"
inputs = ["counted"]
topic = "out"
format = "text"
"#,
    )
    .unwrap();
    let out = jobctl(&["validate", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    for expected in [
        "line 8, column 10: sources.lines: a text source has no schema: each record is one line, read as the string field `line`",
        "line 10, column 10: sources.rows: `schema` is missing: a json source needs the Avro schema file (`.avsc`) its rows are read as",
    ] {
        assert!(stderr.contains(expected), "missing {expected:?} in:\n{stderr}");
    }
    // Fixed, the source's lines reach the sink with a field added, which
    // a text sink cannot write.
    let fixed = std::fs::read_to_string(&path)
        .unwrap()
        .replace("schema = \"line.avsc\"\n", "")
        .replace("format = \"json\"\n", "format = \"text\"\n");
    std::fs::write(&path, fixed).unwrap();
    let out = jobctl(&["validate", path.to_str().unwrap()]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("line 23, column 10: sinks.out: a text sink writes one string field per record, and its input has 2 fields (`line`, `n`)"),
        "{stderr}"
    );
}
