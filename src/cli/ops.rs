//! `jobctl status` and `jobctl stop`: a running job, through its HTTP
//! endpoint.

use crate::runtime::observe::JobView;
use anyhow::{Context, Result};
use std::time::{Duration, Instant};

/// How `status`, `query` and `stop` reach a job's endpoint.
#[derive(clap::Args)]
pub struct EndpointArgs {
    /// The job's endpoint (its start line says which).
    #[arg(long, default_value = "127.0.0.1:9249")]
    http: String,
    /// The token the job was started with (its --http-token-file).
    #[arg(long, value_name = "FILE")]
    http_token_file: Option<std::path::PathBuf>,
    /// The CA of an https endpoint (`--http https://host:port`) whose
    /// certificate no CA of the system signed.
    #[arg(long, value_name = "FILE")]
    http_ca_file: Option<std::path::PathBuf>,
}

impl EndpointArgs {
    pub fn open(self) -> Result<Endpoint> {
        Endpoint::new(
            self.http,
            self.http_token_file.as_deref(),
            self.http_ca_file.as_deref(),
        )
    }
}

/// A job's endpoint, and the token it wants if it wants one.
pub struct Endpoint {
    /// As given: `host:port`, or a URL (`https://host:port`).
    pub http: String,
    pub token: Option<String>,
    agent: ureq::Agent,
}

impl Endpoint {
    /// `ca_file`: the CA of an https endpoint whose certificate no CA of
    /// the system signed.
    pub fn new(
        http: String,
        token_file: Option<&std::path::Path>,
        ca_file: Option<&std::path::Path>,
    ) -> Result<Self> {
        let token = token_file.map(crate::ops::access::read_token).transpose()?;
        let mut tls = native_tls::TlsConnector::builder();
        if let Some(ca) = ca_file {
            let pem = std::fs::read(ca)
                .with_context(|| format!("cannot read --http-ca-file {}", ca.display()))?;
            tls.add_root_certificate(
                native_tls::Certificate::from_pem(&pem)
                    .with_context(|| format!("{} is not a PEM certificate", ca.display()))?,
            );
        }
        let agent = ureq::AgentBuilder::new()
            .tls_connector(std::sync::Arc::new(tls.build()?))
            .build();
        Ok(Endpoint { http, token, agent })
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let base = if self.http.contains("://") {
            self.http.trim_end_matches('/').to_string()
        } else {
            format!("http://{}", self.http)
        };
        let r = self.agent.request(method, &format!("{base}{path}"));
        match &self.token {
            Some(t) => r.set("Authorization", &format!("Bearer {t}")),
            None => r,
        }
    }

    fn get(&self, path: &str) -> ureq::Request {
        self.request("GET", path)
    }
}

fn unreachable(http: &str, e: ureq::Error) -> anyhow::Error {
    if let ureq::Error::Status(401, _) = e {
        return anyhow::anyhow!(
            "the job on {http} needs its token: pass --http-token-file with the file it was started with"
        );
    }
    anyhow::anyhow!(
        "no job answers on {http} ({e}): is it running, and with which --http? (the start line says: `metrics and API on http://...`)"
    )
}

fn job(ep: &Endpoint) -> Result<JobView> {
    let http = ep.http.as_str();
    let response = ep
        .get("/api/v1/job")
        .timeout(Duration::from_secs(5))
        .call()
        .map_err(|e| unreachable(http, e))?;
    response
        .into_json()
        .with_context(|| format!("{http} answered, but not as a rill job does"))
}

/// The job's state as a table.
pub fn status(ep: &Endpoint) -> Result<()> {
    let j = job(ep)?;
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
pub fn stop(ep: &Endpoint, wait: Duration) -> Result<()> {
    let http = ep.http.as_str();
    let name = job(ep)?.name;
    ep.request("POST", "/api/v1/stop")
        .timeout(Duration::from_secs(5))
        .call()
        .map_err(|e| unreachable(http, e))?;
    eprintln!("stopping job {name}: its open epoch commits, then it exits");
    let deadline = Instant::now() + wait;
    while Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(200));
        if job(ep).is_err() {
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

/// `jobctl query "SELECT … FROM table [WHERE key = …] [LIMIT n]"`: a pull
/// query against the running job's committed state, printed as a table.
pub fn query(ep: &Endpoint, sql: &str, json: bool) -> Result<()> {
    let http = ep.http.as_str();
    let q = crate::sql::pull::parse(sql).map_err(|e| anyhow::anyhow!("{e}"))?;
    let mut rows: Vec<serde_json::Value> = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let mut request = ep
            .get(&format!("/api/v1/state/{}", q.table))
            .timeout(Duration::from_secs(60));
        if let Some(k) = &q.key {
            request = request.query("key", k);
        }
        if let Some(a) = &after {
            request = request.query("after", a);
        }
        let page: serde_json::Value = match request.call() {
            Ok(r) => r
                .into_json()
                .with_context(|| format!("{http} answered, but not as a rill job does"))?,
            Err(ureq::Error::Status(_, r)) => {
                let body: serde_json::Value = r.into_json().unwrap_or_default();
                anyhow::bail!(
                    "{}",
                    body["error"]
                        .as_str()
                        .unwrap_or("the job refused the query")
                );
            }
            Err(e) => return Err(unreachable(http, e)),
        };
        rows.extend(page["rows"].as_array().cloned().unwrap_or_default());
        let enough = q.limit.is_some_and(|l| rows.len() >= l);
        match page["next"].as_str() {
            Some(next) if !enough => after = Some(next.to_string()),
            _ => break,
        }
    }
    if let Some(l) = q.limit {
        rows.truncate(l);
    }
    let values: Vec<serde_json::Map<String, serde_json::Value>> = rows
        .iter()
        .map(|r| {
            let value = r["value"].as_object().cloned().unwrap_or_default();
            match &q.columns {
                None => value,
                Some(cols) => cols
                    .iter()
                    .map(|c| {
                        (
                            c.clone(),
                            value.get(c).cloned().unwrap_or(serde_json::Value::Null),
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    if json {
        for v in &values {
            println!("{}", serde_json::Value::Object(v.clone()));
        }
        return Ok(());
    }
    let header: Vec<String> = match (&q.columns, values.first()) {
        (Some(cols), _) => cols.clone(),
        (None, Some(first)) => first.keys().cloned().collect(),
        (None, None) => Vec::new(),
    };
    let cell = |v: &serde_json::Value| match v {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let table: Vec<Vec<String>> = values
        .iter()
        .map(|v| {
            header
                .iter()
                .map(|h| v.get(h).map(cell).unwrap_or_default())
                .collect()
        })
        .collect();
    let widths: Vec<usize> = header
        .iter()
        .enumerate()
        .map(|(i, h)| {
            table
                .iter()
                .map(|r| r[i].len())
                .chain([h.len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let rule: String = widths
        .iter()
        .map(|w| format!("+{}", "-".repeat(w + 2)))
        .collect::<String>()
        + "+";
    let line = |cells: &[String]| -> String {
        cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("| {c:<w$} "))
            .collect::<String>()
            + "|"
    };
    if !header.is_empty() {
        println!("{rule}\n{}\n{rule}", line(&header));
        for r in &table {
            println!("{}", line(r));
        }
        println!("{rule}");
    }
    eprintln!(
        "{} row{}",
        values.len(),
        if values.len() == 1 { "" } else { "s" }
    );
    Ok(())
}
