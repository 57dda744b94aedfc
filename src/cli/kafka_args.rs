//! How a command that talks to Kafka learns where it is and how to reach
//! it: `--brokers`, the `[job.kafka]` of `--job`, and `-X key=value` as
//! kcat takes them, in that order of precedence from last to first.

use crate::connectors::kafka_config::{check_property, Brokers};
use crate::spec::JobConfig;
use anyhow::{bail, Result};
use clap::Args;
use std::collections::BTreeMap;

#[derive(Args, Clone, Debug, Default)]
pub struct KafkaArgs {
    /// The bootstrap servers [default: the job's, else 127.0.0.1:9092]
    #[arg(long)]
    pub brokers: Option<String>,
    /// A librdkafka property for every Kafka client of the command, as
    /// kcat takes one (`-X security.protocol=SSL`); repeatable, and it
    /// wins over the job's.
    #[arg(short = 'X', value_name = "KEY=VALUE")]
    pub property: Vec<String>,
}

impl KafkaArgs {
    /// The brokers: `--brokers` or the job's servers, with the job's
    /// properties and then `-X`'s. Every bad `-X` is named at once.
    pub fn brokers(&self, job: Option<&JobConfig>) -> Result<Brokers> {
        let base = match (&self.brokers, job) {
            (Some(servers), Some(job)) => Brokers::new(servers, job.brokers.properties().clone()),
            (Some(servers), None) => Brokers::plaintext(servers),
            (None, Some(job)) => job.brokers.clone(),
            (None, None) => Brokers::plaintext("127.0.0.1:9092"),
        };
        Ok(base.with(&properties(&self.property)?))
    }
}

/// `-X` options as properties, each checked as a job file's are.
pub fn properties(given: &[String]) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let mut problems = Vec::new();
    for p in given {
        let Some((k, v)) = p.split_once('=') else {
            problems.push(format!("-X {p}: write it as KEY=VALUE"));
            continue;
        };
        let expanded =
            crate::secrets::expand(v, std::path::Path::new("."), &|n| std::env::var(n).ok())
                .map_err(|e| anyhow::anyhow!("-X {k}: {e}"))?;
        crate::secrets::keep_from_setting(k, &expanded);
        match check_property(k.trim(), &expanded.value) {
            Some(problem) => problems.push(format!("-X {k}: {problem}")),
            None => drop(out.insert(k.trim().to_string(), expanded.value)),
        }
    }
    if !problems.is_empty() {
        bail!("{}", problems.join("\n"));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn x_options_win_over_the_job_and_each_bad_one_is_named() {
        let spec = crate::spec::Spec::parse(
            std::path::Path::new("t.toml"),
            "[job]\nname = \"t\"\nbrokers = \"job:9093\"\n[job.kafka]\n\"security.protocol\" = \"ssl\"\n\"socket.timeout.ms\" = 9000\n".into(),
        )
        .unwrap();
        let args = KafkaArgs {
            brokers: None,
            property: vec!["socket.timeout.ms=1000".into()],
        };
        let b = args.brokers(Some(&spec.job)).unwrap();
        assert_eq!(b.servers(), "job:9093");
        let c = b.client_config();
        assert_eq!(c.get("security.protocol"), Some("ssl"));
        assert_eq!(c.get("socket.timeout.ms"), Some("1000"));
        let bad = KafkaArgs {
            brokers: Some("x:1".into()),
            property: vec![
                "nope".into(),
                "group.id=g".into(),
                "socket.timeout.ms=1000".into(),
            ],
        };
        let e = bad.brokers(None).unwrap_err().to_string();
        assert!(
            e.starts_with(
                "-X nope: write it as KEY=VALUE\n-X group.id: rill sets `group.id` itself"
            ),
            "{e}"
        );
    }
}
