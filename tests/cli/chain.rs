//! A chain of jobs (bank → rejected → analysis) is exactly once end to
//! end, even on a broker whose `read_committed` shows aborted records.

use super::cluster::{bank_input, bank_reading, reading};
use super::*;

/// The three jobs of the seed's chain, each reading the one before.
pub(super) fn chain(dir: &Path, input: &str, tag: &str) -> [PathBuf; 3] {
    let bank = bank_reading(dir, input, tag);
    let rejected = reading(
        dir,
        "rejected.toml",
        "REJECTED",
        &["AGGREGATED", "rejected-dead-letters"],
        &format!("{tag}-REJECTED"),
        tag,
    );
    let analysis = reading(
        dir,
        "analysis.toml",
        "AGGREGATED",
        &["ANALYSIS", "analysis-dead-letters"],
        &format!("{tag}-AGGREGATED"),
        tag,
    );
    [bank, rejected, analysis]
}

/// The analysis maps every update of AGGREGATED, whose in-between updates
/// depend on where the rejected job's epochs fell (an uninterrupted run
/// cuts them elsewhere); what must agree is each account's last one. An
/// account's rejected count only grows, so that is its line with the
/// highest count.
fn finals(lines: Vec<String>) -> Vec<String> {
    let count = |l: &str| -> u64 {
        let at = l.find("\"rejected_count\": ").expect("a rejected count") + 18;
        l[at..]
            .split(|c: char| !c.is_ascii_digit())
            .next()
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut last: std::collections::BTreeMap<String, String> = Default::default();
    for l in lines {
        let key = l.split(" value ").next().unwrap().to_string();
        if last.get(&key).is_none_or(|old| count(old) < count(&l)) {
            last.insert(key, l);
        }
    }
    last.into_values().collect()
}

/// What `jobctl verify` shows for `job`, with the chain's tag taken out.
pub(super) fn committed(job: &Path, tag: &str) -> Vec<String> {
    verify_lines(job)
        .into_iter()
        .map(|l| l.replace(tag, "T"))
        .collect()
}

#[test]
fn a_chain_whose_first_job_is_killed_again_and_again_mid_epoch_commits_what_an_uninterrupted_chain_commits(
) {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let input = unique("chain-in");
    bank_input(dir.path(), &input, 8000, &unique("chain-gen"));
    let (killed_tag, reference_tag) = (unique("chain-k"), unique("chain-r"));
    let killed = chain(dir.path(), &input, &killed_tag);
    let reference = chain(dir.path(), &input, &reference_tag);

    // The bank job dies with epochs sent and not logged, and logged and
    // not committed: on this broker their aborted records stay visible in
    // REJECTED, beside the copies the restarts commit.
    for at in [
        "epoch_sent:2",
        "epoch_logged:2",
        "epoch_sent:3",
        "epoch_logged:1",
        "epoch_sent:2",
    ] {
        let out = Command::new(env!("CARGO_BIN_EXE_jobctl"))
            .args(["submit", killed[0].to_str().unwrap(), "--until-caught-up"])
            .args([
                "--max-records-per-second",
                "1000",
                "--restart-attempts",
                "0",
            ])
            .env("RILL_FAIL_AT", at)
            .current_dir(root())
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{stderr}");
        let point = at.split(':').next().unwrap();
        assert!(
            stderr.contains(&format!("fault injection: aborting at `{point}`")),
            "{stderr}"
        );
    }
    ok(&[
        "submit",
        killed[0].to_str().unwrap(),
        "--until-caught-up",
        "--quiet",
    ]);
    // This broker hides what a fenced writer left open; Apache Kafka's
    // `read_committed` hides aborted records too, and some brokers show
    // them. What such a broker shows is added here: copies of REJECTED
    // records as an attempt that never committed them wrote them.
    let rejected_topic = format!("{killed_tag}-REJECTED");
    let shown = read_topic(&rejected_topic);
    assert!(shown.len() > 100);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", BROKERS)
        .create()
        .unwrap();
    for (i, r) in shown.iter().take(60).enumerate() {
        let attempt: u32 = r.headers["rill-attempt"].parse().unwrap();
        let headers = rdkafka::message::OwnedHeaders::new()
            .insert(rdkafka::message::Header {
                key: "rill-epoch",
                value: Some(&r.headers["rill-epoch"]),
            })
            .insert(rdkafka::message::Header {
                key: "rill-writer",
                value: Some(&r.headers["rill-writer"]),
            })
            // An earlier attempt, or one that never was.
            .insert(rdkafka::message::Header {
                key: "rill-attempt",
                value: Some(
                    &if i % 2 == 0 {
                        attempt + 1000
                    } else {
                        attempt.saturating_sub(1)
                    }
                    .to_string(),
                ),
            });
        let mut record = BaseRecord::to(&rejected_topic)
            .payload(&r.value)
            .partition(r.partition)
            .headers(headers);
        if let Some(k) = &r.key {
            record = record.key(k.as_bytes());
        }
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    for job in &killed[1..] {
        ok(&[
            "submit",
            job.to_str().unwrap(),
            "--until-caught-up",
            "--quiet",
        ]);
    }
    for job in &reference {
        ok(&[
            "submit",
            job.to_str().unwrap(),
            "--until-caught-up",
            "--quiet",
        ]);
    }
    for (i, (k, r)) in killed.iter().zip(&reference).enumerate() {
        let (mut want, mut got) = (committed(r, &reference_tag), committed(k, &killed_tag));
        if i == 2 {
            (want, got) = (finals(want), finals(got));
        }
        assert!(!want.is_empty(), "{} committed nothing", r.display());
        let differ: Vec<_> = got
            .iter()
            .zip(&want)
            .filter(|(g, w)| g != w)
            .take(3)
            .collect();
        assert!(
            got.len() == want.len() && differ.is_empty(),
            "{}: {} committed records against {}; first that differ (got, want): {differ:?}",
            k.display(),
            got.len(),
            want.len()
        );
    }
}
