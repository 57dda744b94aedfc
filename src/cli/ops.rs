//! `jobctl status` and `jobctl stop`: a running job, through its HTTP
//! endpoint.

use crate::runtime::observe::JobView;
use anyhow::{Context, Result};
use std::time::{Duration, Instant};

fn url(http: &str, path: &str) -> String {
    format!("http://{http}{path}")
}

fn unreachable(http: &str, e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!(
        "no job answers on {http} ({e}): is it running, and with which --http? (the start line says: `metrics and API on http://...`)"
    )
}

fn job(http: &str) -> Result<JobView> {
    let response = ureq::get(&url(http, "/api/v1/job"))
        .timeout(Duration::from_secs(5))
        .call()
        .map_err(|e| unreachable(http, e))?;
    response
        .into_json()
        .with_context(|| format!("{http} answered, but not as a rill job does"))
}

/// The job's state as a table.
pub fn status(http: &str) -> Result<()> {
    let j = job(http)?;
    println!("{}", table(&j));
    Ok(())
}

fn table(j: &JobView) -> String {
    let threads = format!(
        "{} worker{}",
        j.workers,
        if j.workers == 1 { "" } else { "s" }
    );
    let shape = if j.processes > 1 {
        format!("process {} of {}, {threads}", j.process, j.processes)
    } else {
        threads
    };
    let mut out = format!(
        "job {}: {}, attempt {}, up {:.1} s, {shape}\nlast committed epoch {} ({} committed by this start), {} dead letters\n",
        j.name, j.state, j.attempt, j.uptime_s, j.last_committed_epoch, j.epochs_committed, j.dead_letters
    );
    let width = j
        .nodes
        .iter()
        .map(|n| n.node.len())
        .max()
        .unwrap_or(4)
        .max(4);
    out.push_str(&format!(
        "{:<width$}  {:>12}  {:>12}",
        "node", "records", "records/s"
    ));
    for n in &j.nodes {
        out.push_str(&format!(
            "\n{:<width$}  {:>12}  {:>12.1}",
            n.node, n.records, n.per_second
        ));
    }
    if !j.lag.is_empty() {
        let lag: Vec<String> = j
            .lag
            .iter()
            .map(|l| format!("{}/{} {}", l.source, l.partition, l.lag))
            .collect();
        out.push_str(&format!(
            "\nlag, records past what is committed: {}",
            lag.join(", ")
        ));
    }
    out
}

/// Asks the job to stop: it finishes and commits its open epoch, then
/// exits. Waits until it has.
pub fn stop(http: &str, wait: Duration) -> Result<()> {
    let name = job(http)?.name;
    ureq::post(&url(http, "/api/v1/stop"))
        .timeout(Duration::from_secs(5))
        .call()
        .map_err(|e| unreachable(http, e))?;
    eprintln!("stopping job {name}: its open epoch commits, then it exits");
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        if job(http).is_err() {
            eprintln!("job {name} stopped");
            return Ok(());
        }
    }
    anyhow::bail!(
        "job {name} still answers on {http} after {} s: it may be committing a large epoch; run `jobctl status --http {http}` to see",
        wait.as_secs()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::observe::{NodeCount, PartitionLag};

    #[test]
    fn the_status_table_names_every_node_with_its_counts() {
        let j = JobView {
            name: "bank".into(),
            state: "running".into(),
            attempt: 3,
            restarts: 0,
            uptime_s: 12.34,
            process: 0,
            processes: 1,
            workers: 2,
            last_committed_epoch: 15,
            epochs_committed: 9,
            dead_letters: 1,
            nodes: vec![
                NodeCount {
                    node: "sources.transactions".into(),
                    records: 1200,
                    per_second: 100.0,
                },
                NodeCount {
                    node: "sinks.approved".into(),
                    records: 800,
                    per_second: 66.66,
                },
            ],
            lag: vec![
                PartitionLag {
                    source: "transactions".into(),
                    partition: 0,
                    lag: 0,
                },
                PartitionLag {
                    source: "transactions".into(),
                    partition: 1,
                    lag: 12,
                },
            ],
        };
        assert_eq!(
            table(&j),
            "job bank: running, attempt 3, up 12.3 s, 2 workers\n\
             last committed epoch 15 (9 committed by this start), 1 dead letters\n\
             node                       records     records/s\n\
             sources.transactions          1200         100.0\n\
             sinks.approved                 800          66.7\n\
             lag, records past what is committed: transactions/0 0, transactions/1 12"
        );
    }
}
