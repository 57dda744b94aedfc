//! The Kafka client properties of a job file: `[job.kafka]` for every
//! client, `kafka` of a source for its consumer, `kafka` of a Kafka sink
//! for the producer every Kafka sink writes through. Each property is
//! checked as librdkafka would check it when a client is made, so that
//! `jobctl validate` names every bad one with its line instead of the
//! first client to start naming one.

use super::{JobConfig, KafkaSourceConfig, Locator, SinkConfig, SourceConfig, SpecError};
use crate::connectors::kafka_config::{check_property, Brokers};
use std::collections::BTreeMap;

/// Checks every property and puts the good ones where the clients find
/// them: the job's into its brokers, the Kafka sinks' into its writer's.
pub fn resolve(
    job: &mut JobConfig,
    sources: &BTreeMap<String, SourceConfig>,
    sinks: &BTreeMap<String, SinkConfig>,
    locate: &Locator<'_>,
    errors: &mut Vec<SpecError>,
) {
    let mut check = |kind: &str, name: &str, key: &str, value: &str| -> bool {
        let Some(problem) = check_property(key, value) else {
            return true;
        };
        let place = locate.place_of_key(kind, name, &format!("kafka.{key}"));
        errors.push(SpecError {
            line: place.line,
            column: place.column,
            len: place.len,
            component: Some(if name.is_empty() {
                kind.to_string()
            } else {
                format!("{kind}.{name}")
            }),
            message: format!("kafka property `{key}`: {problem}"),
            hint: Some(
                "see librdkafka's CONFIGURATION.md for the properties a client takes".into(),
            ),
        });
        false
    };
    let mut own = BTreeMap::new();
    for (k, v) in &job.kafka {
        if check("job", "", k, &v.0) {
            own.insert(k.clone(), v.0.clone());
        }
    }
    for (name, source) in sources {
        let SourceConfig::Kafka(s) = source;
        for (k, v) in &s.kafka {
            check("sources", name, k, &v.0);
        }
    }
    let mut writer: BTreeMap<String, (String, String)> = BTreeMap::new();
    let mut conflicts = Vec::new();
    for (name, sink) in sinks {
        let SinkConfig::Kafka(s) = sink else {
            continue;
        };
        for (k, v) in &s.kafka {
            if !check("sinks", name, k, &v.0) {
                continue;
            }
            match writer.get(k) {
                Some((other, value)) if *value != v.0 => {
                    let place = locate.place_of_key("sinks", name, &format!("kafka.{k}"));
                    conflicts.push(SpecError {
                        line: place.line,
                        column: place.column,
                        len: place.len,
                        component: Some(format!("sinks.{name}")),
                        message: format!(
                            "kafka property `{k}` differs from sink `{other}`'s; every Kafka sink of a job writes through its one transactional producer"
                        ),
                        hint: Some(format!(
                            "set `{k}` the same in both sinks, or once in [job.kafka]"
                        )),
                    });
                }
                Some(_) => {}
                None => drop(writer.insert(k.clone(), (name.clone(), v.0.clone()))),
            }
        }
    }
    errors.extend(conflicts);
    job.brokers = Brokers::new(job.brokers.servers(), own);
    job.writer_kafka = writer.into_iter().map(|(k, (_, v))| (k, v)).collect();
}

/// A source's consumer's brokers.
pub fn source_brokers(job: &JobConfig, source: &KafkaSourceConfig) -> Brokers {
    job.brokers.with(&super::property_strings(&source.kafka))
}

#[cfg(test)]
mod tests {
    use crate::spec::Spec;
    use std::path::Path;

    const JOB: &str = r#"[job]
name = "t"

[job.kafka]
"security.protocol" = "ssl"
"ssl.ca.location" = "/etc/ssl/ca.pem"
"socket.timeout.ms" = 20000

[sources.input]
type = "kafka"
topic = "in"
format = "json"
schema = "x.avsc"
kafka = { "fetch.wait.max.ms" = 5 }

[sinks.a]
type = "kafka"
inputs = ["input"]
topic = "a"
format = "json"
kafka = { "compression.type" = "gzip" }

[sinks.b]
type = "kafka"
inputs = ["input"]
topic = "b"
format = "json"
kafka = { "compression.type" = "gzip", "linger.ms" = 20 }
"#;

    #[test]
    fn properties_reach_the_clients_they_are_for() {
        let spec = Spec::parse(Path::new("t.toml"), JOB.into()).unwrap();
        let job = spec.job.brokers.client_config();
        assert_eq!(job.get("security.protocol"), Some("ssl"));
        assert_eq!(job.get("socket.timeout.ms"), Some("20000"));
        assert_eq!(job.get("fetch.wait.max.ms"), None);
        let crate::spec::SourceConfig::Kafka(input) = &spec.sources["input"];
        let source = super::source_brokers(&spec.job, input).client_config();
        assert_eq!(source.get("fetch.wait.max.ms"), Some("5"));
        assert_eq!(source.get("ssl.ca.location"), Some("/etc/ssl/ca.pem"));
        let writer = spec.job.writer_brokers().client_config();
        assert_eq!(writer.get("compression.type"), Some("gzip"));
        assert_eq!(writer.get("linger.ms"), Some("20"));
        assert_eq!(writer.get("security.protocol"), Some("ssl"));
    }

    #[test]
    fn every_bad_property_is_named_at_its_line() {
        let text = JOB
            .replace(
                "\"socket.timeout.ms\"",
                "\"isolation.level\" = \"read_uncommitted\"\n\"socket.timeot.ms\"",
            )
            .replace("\"fetch.wait.max.ms\" = 5", "\"group.id\" = \"mine\"")
            .replace(
                "kafka = { \"compression.type\" = \"gzip\", \"linger.ms\" = 20 }",
                "kafka = { \"compression.type\" = \"lz4\" }",
            );
        let err = Spec::parse(Path::new("t.toml"), text).unwrap_err();
        let got: Vec<(usize, &str)> = err
            .errors
            .iter()
            .map(|e| (e.line, e.message.as_str()))
            .collect();
        assert_eq!(got.len(), 4, "{err}");
        assert_eq!(got[0].0, 7);
        assert!(got[0].1.starts_with("kafka property `isolation.level`: rill sets `isolation.level` itself: rill reads read_committed"), "{}", got[0].1);
        assert_eq!(got[1].0, 8);
        assert!(
            got[1]
                .1
                .contains("No such configuration property: \"socket.timeot.ms\""),
            "{}",
            got[1].1
        );
        assert_eq!(got[2].0, 15);
        assert!(
            got[2]
                .1
                .starts_with("kafka property `group.id`: rill sets `group.id` itself"),
            "{}",
            got[2].1
        );
        assert_eq!(got[3].0, 29);
        assert_eq!(got[3].1, "kafka property `compression.type` differs from sink `a`'s; every Kafka sink of a job writes through its one transactional producer");
    }
}
