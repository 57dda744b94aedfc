//! Records a store refuses on every attempt: each goes to the dead letters
//! with its reason, the rest of its epoch commits, and the job carries on
//! instead of failing the same epoch again after every restart.

use super::*;

fn send_json(topic: &str, records: &[(Option<&str>, &str)]) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .unwrap();
    for (key, value) in records {
        let mut r = BaseRecord::<str, str>::to(topic).payload(value);
        if let Some(k) = key {
            r = r.key(k);
        }
        producer.send(r).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
}

#[test]
fn a_row_with_a_nul_byte_goes_to_the_error_table_and_the_rest_lands_in_postgres() {
    require_services();
    let _pg = POSTGRES.lock().unwrap_or_else(|e| e.into_inner());
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("pgrefused");
    let (job, input, table, errors) = cashback_job(dir.path(), &tag);
    kafka_admin::ensure_topic(&brokers(), &input, 2, 1, kafka_admin::TopicKind::Data).unwrap();
    let payment = |customer: &str, merchant: &str, ts: i64| {
        format!(
            r#"{{"customer":"{customer}","merchant":"{merchant}","amount":200.0,"currency":"EUR","timestamp":{ts}}}"#
        )
    };
    let records = [
        payment("ann", "Amazon", 1),
        // JSON's \u0000 is a NUL byte in the string: Postgres text refuses it.
        payment("bo\\u0000b", "Zalando", 2),
        payment("cy", "MediaMarkt", 3),
    ];
    let records: Vec<(Option<&str>, &str)> = records.iter().map(|r| (None, r.as_str())).collect();
    send_json(&input, &records);
    let out = jobctl(&["submit", job.to_str().unwrap(), "--until-caught-up"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert_eq!(table_timestamps(&table), vec![1, 3]);
    // The topic holds all three: Kafka takes the NUL byte.
    let topic = verify_lines(&job)
        .into_iter()
        .filter(|l| l.starts_with("cashback_topic "))
        .count();
    assert_eq!(topic, 3);
    let error_rows = rill::connectors::postgres_sink::table_rows(POSTGRES_URL, &errors).unwrap();
    assert_eq!(error_rows.len(), 1, "{error_rows:?}");
    assert!(
        error_rows[0].contains("column `customer`: postgres text cannot hold a NUL byte"),
        "{error_rows:?}"
    );
}

#[test]
fn a_record_without_a_key_for_a_compacted_topic_goes_to_the_dead_letters() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let name = unique("nokey");
    std::fs::write(
        dir.path().join("line.avsc"),
        r#"{"type":"record","name":"Line","fields":[{"name":"id","type":"long"}]}"#,
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

[sinks.out]
type = "kafka"
inputs = ["lines"]
topic = "{name}-out"
format = "json"
"#
        ),
    )
    .unwrap();
    // The output topic exists, compacted, as a table's changelog would be.
    let out_topic = format!("{name}-out");
    kafka_admin::ensure_topic(
        &brokers(),
        &out_topic,
        1,
        1,
        kafka_admin::TopicKind::Compacted,
    )
    .unwrap();
    send_json(
        &format!("{name}-in"),
        &[
            (Some("a"), r#"{"id":1}"#),
            (None, r#"{"id":2}"#),
            (Some("c"), r#"{"id":3}"#),
        ],
    );
    let out = jobctl(&["submit", job.to_str().unwrap(), "--until-caught-up"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    let lines = verify_lines(&job);
    let out: Vec<&String> = lines.iter().filter(|l| l.starts_with("out ")).collect();
    assert_eq!(
        out,
        vec![r#"out key a value {"id":1}"#, r#"out key c value {"id":3}"#],
        "{lines:?}"
    );
    let dead = read_topic(&format!("{name}-dead"));
    assert_eq!(dead.len(), 1);
    assert_eq!(
        dead[0].headers["rill-error-reason"],
        format!(
            "sinks.out: the record has no key, and topic {out_topic} is compacted: the broker refuses records without a key"
        )
    );
}
