//! How a job reaches its Kafka: the bootstrap servers, and the librdkafka
//! properties of `[job.kafka]` (TLS, SASL, timeouts) that every client the
//! job makes carries, as Flink's `properties.*` and Kafka Streams' config
//! do. [`Brokers::client_config`] is the one place a client's settings
//! start from.

use rdkafka::config::ClientConfig;
use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

/// The bootstrap servers and the client properties to reach them with.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Brokers {
    servers: String,
    properties: Arc<BTreeMap<String, String>>,
}

impl Brokers {
    /// Servers reached with librdkafka's defaults (plaintext, no SASL).
    pub fn plaintext(servers: &str) -> Self {
        Brokers {
            servers: servers.to_string(),
            properties: Default::default(),
        }
    }

    /// `servers` reached with `properties`, which must have passed
    /// [`check_property`].
    pub fn new(servers: &str, properties: BTreeMap<String, String>) -> Self {
        Brokers {
            servers: servers.to_string(),
            properties: Arc::new(properties),
        }
    }

    pub fn servers(&self) -> &str {
        &self.servers
    }

    pub fn properties(&self) -> &BTreeMap<String, String> {
        &self.properties
    }

    /// These brokers with some properties set otherwise (a source's or the
    /// job's Kafka sinks' own).
    pub fn with(&self, overrides: &BTreeMap<String, String>) -> Brokers {
        if overrides.is_empty() {
            return self.clone();
        }
        let mut properties = (*self.properties).clone();
        properties.extend(overrides.iter().map(|(k, v)| (k.clone(), v.clone())));
        Brokers {
            servers: self.servers.clone(),
            properties: Arc::new(properties),
        }
    }

    /// The properties as `key = value` lines, credentials masked: what
    /// `explain` and the API show.
    pub fn shown(&self) -> Vec<String> {
        shown(&self.properties)
    }

    /// The settings every Kafka client of the job starts from; each client
    /// adds what its role needs (its group, its transactional id), which
    /// [`check_property`] keeps out of the user's hands.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.servers)
            // Fail fast instead of librdkafka's endless reconnect chatter.
            .set("log_level", "3")
            .set("socket.connection.setup.timeout.ms", "5000");
        for (k, v) in self.properties.iter() {
            c.set(k, v);
        }
        c
    }
}

/// Sets `key` unless the user's properties already did: rill's tuning of a
/// client is a default, and a property the user writes for it wins.
pub fn default_to<'c>(c: &'c mut ClientConfig, key: &str, value: &str) -> &'c mut ClientConfig {
    if c.get(key).is_none() {
        c.set(key, value);
    }
    c
}

/// Shown as the servers: a message about the brokers names where they are.
impl fmt::Display for Brokers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.servers)
    }
}

/// The servers, for a message.
impl From<&Brokers> for String {
    fn from(b: &Brokers) -> String {
        b.servers.clone()
    }
}

/// Never the properties: they may hold a password.
impl fmt::Debug for Brokers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Brokers")
            .field("servers", &self.servers)
            .field("properties", &shown(&self.properties))
            .finish()
    }
}

/// `key = value` lines with credentials masked.
pub fn shown(properties: &BTreeMap<String, String>) -> Vec<String> {
    properties
        .iter()
        .map(|(k, v)| {
            let v = if crate::secrets::is_credential(k) {
                crate::secrets::MASK
            } else {
                v.as_str()
            };
            format!("{k} = {v}")
        })
        .collect()
}

/// Why rill keeps a property to itself, if it does: exactly once rests on
/// these being what rill sets.
pub fn owned_by_rill(key: &str) -> Option<&'static str> {
    Some(match key {
        "bootstrap.servers" | "metadata.broker.list" => {
            "the brokers are set by `brokers` in [job]"
        }
        "group.id" => "rill names its consumer groups after the job: their offsets are its progress",
        "transactional.id" => {
            "rill names each writer's transactional id after the job and its process, which fences an instance that is gone"
        }
        "isolation.level" => {
            "rill reads read_committed, so that only what an upstream job committed is input"
        }
        "enable.auto.commit" | "enable.auto.offset.store" | "auto.commit.interval.ms" => {
            "rill commits a source's offsets in each epoch's transaction, never on a timer"
        }
        "enable.idempotence" => "transactions need the idempotent producer",
        "acks" | "request.required.acks" => "transactions need acks from all in-sync replicas",
        "auto.offset.reset" => "a source starts at `start_offset`; a lost offset is an error, never a jump",
        "enable.partition.eof" => "rill sets it per client to know where a bounded read ends",
        _ => return None,
    })
}

/// Checks one property as librdkafka would when a client is made: `None`
/// when librdkafka takes it, else why not ("No such configuration
/// property", an invalid value) or why rill keeps it.
pub fn check_property(key: &str, value: &str) -> Option<String> {
    if let Some(why) = owned_by_rill(key) {
        return Some(format!("rill sets `{key}` itself: {why}"));
    }
    let mut c = ClientConfig::new();
    c.set(key, value);
    match c.create_native_config() {
        Ok(_) => None,
        Err(e) => Some(match e {
            rdkafka::error::KafkaError::ClientConfig(_, msg, _, _) => {
                crate::secrets::redact(&msg).into_owned()
            }
            other => crate::secrets::redact(&other.to_string()).into_owned(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rills_tuning_is_a_default_a_users_property_overrides() {
        let mut props = BTreeMap::new();
        props.insert("fetch.wait.max.ms".to_string(), "5".to_string());
        let brokers = Brokers::new("127.0.0.1:9092", props);
        let mut c = brokers.client_config();
        default_to(&mut c, "fetch.wait.max.ms", "500");
        default_to(&mut c, "queued.min.messages", "10000");
        assert_eq!(c.get("fetch.wait.max.ms"), Some("5"));
        assert_eq!(c.get("queued.min.messages"), Some("10000"));
    }

    #[test]
    fn every_client_starts_from_the_job_properties_and_overrides_win() {
        let job = Brokers::new(
            "b:9093",
            BTreeMap::from([
                ("security.protocol".to_string(), "ssl".to_string()),
                ("fetch.wait.max.ms".to_string(), "100".to_string()),
            ]),
        );
        let source = job.with(&BTreeMap::from([(
            "fetch.wait.max.ms".to_string(),
            "5".to_string(),
        )]));
        let c = source.client_config();
        assert_eq!(c.get("bootstrap.servers"), Some("b:9093"));
        assert_eq!(c.get("security.protocol"), Some("ssl"));
        assert_eq!(c.get("fetch.wait.max.ms"), Some("5"));
        assert_eq!(job.client_config().get("fetch.wait.max.ms"), Some("100"));
        assert_eq!(source.to_string(), "b:9093");
    }

    #[test]
    fn credentials_never_show() {
        let b = Brokers::new(
            "b:9093",
            BTreeMap::from([
                ("sasl.username".to_string(), "alice".to_string()),
                ("sasl.password".to_string(), "hunter22".to_string()),
            ]),
        );
        assert_eq!(b.shown(), ["sasl.password = ***", "sasl.username = alice"]);
        assert!(!format!("{b:?}").contains("hunter22"));
    }

    #[test]
    fn the_build_offers_tls_every_sasl_mechanism_but_kerberos_and_oidc() {
        for (k, v) in [
            ("security.protocol", "SASL_SSL"),
            ("security.protocol", "SSL"),
            ("sasl.mechanism", "PLAIN"),
            ("sasl.mechanism", "SCRAM-SHA-256"),
            ("sasl.mechanism", "SCRAM-SHA-512"),
            ("sasl.mechanism", "OAUTHBEARER"),
            // OIDC client credentials need curl in the build.
            ("sasl.oauthbearer.method", "oidc"),
            ("ssl.endpoint.identification.algorithm", "https"),
        ] {
            assert_eq!(check_property(k, v), None, "{k} = {v}");
        }
    }

    #[test]
    fn librdkafka_judges_names_and_values_and_rill_keeps_its_own() {
        assert_eq!(check_property("security.protocol", "SASL_SSL"), None);
        assert_eq!(check_property("sasl.mechanism", "SCRAM-SHA-512"), None);
        assert_eq!(check_property("ssl.ca.location", "/etc/ssl/ca.pem"), None);
        let unknown = check_property("sasl.pasword", "x").unwrap();
        assert!(
            unknown.contains("No such configuration property"),
            "{unknown}"
        );
        let bad = check_property("security.protocol", "tls").unwrap();
        assert!(bad.contains("Invalid value"), "{bad}");
        let owned = check_property("transactional.id", "mine").unwrap();
        assert!(
            owned.starts_with("rill sets `transactional.id` itself"),
            "{owned}"
        );
    }
}
