//! A job's whole life as a team lives it: run again on new input,
//! validated after an edit, followed from its docs on a new machine.

use super::*;

#[test]
fn a_second_turnstile_datagen_run_continues_after_the_first_so_the_job_finds_none_of_it_late() {
    require_services();
    let dir = tempfile::tempdir().unwrap();
    let tag = unique("datagen-again");
    let (job, t) = job_copy(
        dir.path(),
        "turnstile.toml",
        &[
            "turnstile",
            "turnstile-station-counts",
            "turnstile-dead-letters",
        ],
        &tag,
    );
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
