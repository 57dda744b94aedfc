//! The typed configuration of each kind of component. Adding a component
//! adds a variant here and its own struct.

use crate::connectors::kafka_config::Brokers;
use serde::{Deserialize, Deserializer};
use std::collections::BTreeMap;

fn default_brokers() -> Brokers {
    Brokers::plaintext("127.0.0.1:9092")
}

fn brokers_from_str<'de, D: Deserializer<'de>>(d: D) -> Result<Brokers, D::Error> {
    Ok(Brokers::plaintext(&String::deserialize(d)?))
}

/// librdkafka properties by their own names. A value may be written as a
/// TOML string, integer, float or boolean; librdkafka takes them all as
/// strings.
pub type KafkaProperties = BTreeMap<String, PropertyValue>;

#[derive(Debug, Clone, PartialEq)]
pub struct PropertyValue(pub String);

impl<'de> Deserialize<'de> for PropertyValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Any {
            S(String),
            I(i64),
            F(f64),
            B(bool),
        }
        Ok(PropertyValue(
            match Any::deserialize(d).map_err(|_| {
                serde::de::Error::custom("a Kafka property is a string, a number or a boolean")
            })? {
                Any::S(s) => s,
                Any::I(i) => i.to_string(),
                Any::F(f) => f.to_string(),
                Any::B(b) => b.to_string(),
            },
        ))
    }
}

/// The properties as librdkafka takes them.
pub fn property_strings(p: &KafkaProperties) -> BTreeMap<String, String> {
    p.iter().map(|(k, v)| (k.clone(), v.0.clone())).collect()
}
fn default_registry() -> String {
    "http://127.0.0.1:8081".into()
}
fn default_checkpoint_interval_ms() -> u64 {
    1000
}
fn default_max_epoch_records() -> u64 {
    50_000
}
fn one() -> i32 {
    1
}

/// The `[job]` table.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    pub name: String,
    /// The bootstrap servers, reached with the properties of `kafka`
    /// (which [`crate::spec::Spec`] puts into it once it has checked them).
    #[serde(default = "default_brokers", deserialize_with = "brokers_from_str")]
    pub brokers: Brokers,
    /// librdkafka properties every Kafka client of the job carries: TLS,
    /// SASL, timeouts (`[job.kafka]`).
    #[serde(default)]
    pub kafka: KafkaProperties,
    #[serde(default = "default_registry")]
    pub registry_url: String,
    /// Basic authentication with the registry (Confluent Cloud: the API
    /// key and its secret).
    pub registry_username: Option<String>,
    pub registry_password: Option<String>,
    /// A bearer token for the registry, instead of a user and password.
    pub registry_token: Option<String>,
    /// The CA certificate (PEM) of an https registry whose certificate no
    /// CA of the system signed.
    pub registry_ca_file: Option<std::path::PathBuf>,
    #[serde(default = "default_checkpoint_interval_ms")]
    pub checkpoint_interval_ms: u64,
    /// An epoch ends early once a process holds this many output records
    /// for it: the writer holds an epoch's output until it commits, so
    /// this bounds memory when input comes faster than the interval
    /// expects. 0: only the interval ends epochs.
    #[serde(default = "default_max_epoch_records")]
    pub max_epoch_records: u64,
    /// Where records that cannot be processed go; `<name>.dead-letters`
    /// when not set.
    pub dead_letter_topic: Option<String>,
    #[serde(default)]
    pub guarantee: Guarantee,
    /// A sink (with `inputs = []`) that receives the dead letters instead of
    /// `dead_letter_topic`, for example a Postgres error table.
    pub dead_letter_sink: Option<String>,
    /// Where a clean stop keeps local snapshots of aggregate state, which
    /// the next start on this machine loads instead of reading the whole
    /// changelog; `<temp dir>/rill-state` when not set.
    pub state_dir: Option<std::path::PathBuf>,
    /// The properties the job's Kafka sinks set for its producer.
    #[serde(skip)]
    pub writer_kafka: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Guarantee {
    /// One Kafka transaction per epoch: every sink holds each result once.
    #[default]
    ExactlyOnce,
    /// No transactions: after a crash, the last epochs may be written again.
    AtLeastOnce,
}

impl JobConfig {
    /// How the job reaches its schema registry.
    pub fn registry_access(&self) -> crate::format::registry::RegistryAccess {
        crate::format::registry::RegistryAccess {
            url: self.registry_url.clone(),
            username: self.registry_username.clone(),
            password: self.registry_password.clone(),
            token: self.registry_token.clone(),
            ca_file: self.registry_ca_file.clone(),
        }
    }

    /// A client of the job's schema registry.
    pub fn registry(&self) -> crate::format::registry::RegistryClient {
        crate::format::registry::RegistryClient::with_access(&self.registry_access())
    }

    /// The brokers as the job's transactional producers reach them: the
    /// job's properties with its Kafka sinks' own.
    pub fn writer_brokers(&self) -> Brokers {
        self.brokers.with(&self.writer_kafka)
    }

    pub fn state_dir(&self) -> std::path::PathBuf {
        self.state_dir
            .clone()
            .unwrap_or_else(|| std::env::temp_dir().join("rill-state"))
    }

    pub fn dead_letter_topic(&self) -> String {
        self.dead_letter_topic
            .clone()
            .unwrap_or_else(|| format!("{}.dead-letters", self.name))
    }

    /// The single-partition topic that holds every epoch's boundaries.
    pub fn epoch_log_topic(&self) -> String {
        format!("{}.epochs", self.name)
    }

    /// The process's writer: its transactional id, and the consumer group
    /// whose offset on the epoch log is its committed progress.
    pub fn writer_id(&self) -> String {
        self.writer_id_of(0)
    }

    /// The writer of process `process` of a cluster (process 0 alone).
    pub fn writer_id_of(&self, process: u32) -> String {
        format!("{}-w{process}", self.name)
    }

    /// A compacted topic where a writer's transaction that holds no other
    /// record puts a marker (key: the writer): on Tansu, a transaction
    /// with offsets and no record may lose its offsets.
    pub fn commits_topic(&self) -> String {
        self.commits_topic_of(0)
    }

    /// Writer `process`'s marker topic. Each writer has one of its own: on
    /// Tansu, transactions of two producers open on one partition resolve
    /// together, and no partition is shared by two writers.
    pub fn commits_topic_of(&self, process: u32) -> String {
        match process {
            0 => format!("{}.commits", self.name),
            p => format!("{}.commits.w{p}", self.name),
        }
    }

    /// The compacted topic holding the state of a stateful transform.
    pub fn changelog_topic(&self, transform: &str) -> String {
        format!("{}.{transform}.changelog", self.name)
    }
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    Avro,
    Json,
    /// One UTF-8 line per record, no schema: a source's rows have one
    /// string field, `line`; a sink writes its input's one string field.
    Text,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum StartOffset {
    #[default]
    Earliest,
    Latest,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    Kafka(KafkaSourceConfig),
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceConfig {
    pub topic: String,
    pub format: Format,
    /// Avro schema file (`.avsc`) the rows are read as, relative to the job
    /// file. For Avro input it is the reader schema; each record's writer
    /// schema comes from the registry by the id in the record. Text input
    /// has none.
    #[serde(default)]
    pub schema: Option<String>,
    /// The Avro schema itself, instead of a file (a SQL job's columns
    /// become one).
    #[serde(default)]
    pub avro_schema: Option<String>,
    /// Partitions to create the topic with when it is missing.
    #[serde(default = "one")]
    pub partitions: i32,
    #[serde(default = "one")]
    pub replication_factor: i32,
    #[serde(default)]
    pub start_offset: StartOffset,
    /// Properties of this source's consumer that differ from the job's.
    #[serde(default)]
    pub kafka: KafkaProperties,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum TransformConfig {
    Filter(FilterConfig),
    Map(MapConfig),
    Route(RouteConfig),
    Aggregate(AggregateConfig),
    Validate(ValidateConfig),
}

impl TransformConfig {
    pub fn inputs(&self) -> &[String] {
        match self {
            TransformConfig::Filter(c) => &c.inputs,
            TransformConfig::Map(c) => &c.inputs,
            TransformConfig::Route(c) => &c.inputs,
            TransformConfig::Aggregate(c) => &c.inputs,
            TransformConfig::Validate(c) => &c.inputs,
        }
    }
}

/// Keeps the records for which `condition` is true.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    pub inputs: Vec<String>,
    pub condition: String,
}

/// Computes fields: an existing name replaces that field in place, a new
/// name is appended. `drop` removes fields after that.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct MapConfig {
    pub inputs: Vec<String>,
    #[serde(default)]
    pub fields: BTreeMap<String, String>,
    #[serde(default)]
    pub drop: Vec<String>,
    /// The output's fields, in this order (a SQL select list); by default
    /// the input's fields, then the new ones.
    #[serde(default)]
    pub select: Option<Vec<String>>,
}

/// Sends each record to every named output whose condition holds, and to
/// `<name>._unmatched` when none does.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    pub inputs: Vec<String>,
    pub routes: BTreeMap<String, String>,
}

/// Passes records that satisfy every rule; a record breaking one goes to
/// the dead letters with the rule's name as its reason.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ValidateConfig {
    pub inputs: Vec<String>,
    pub rules: indexmap::IndexMap<String, String>,
}

/// Groups records by `group_by` and keeps `aggregates` per group, as an
/// upsert stream: one record per changed group per epoch. With `window`,
/// per group and event-time window.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct AggregateConfig {
    pub inputs: Vec<String>,
    pub group_by: Vec<String>,
    /// `NAME = "count()"`, `"sum(expr)"`, `"avg(expr)"`, `"min(expr)"`,
    /// `"max(expr)"`, in the order the output has them.
    pub aggregates: indexmap::IndexMap<String, String>,
    /// A condition over the output fields; groups failing it are not
    /// emitted (and a group that stops passing it gets a tombstone).
    pub having: Option<String>,
    pub window: Option<WindowConfig>,
    #[serde(default)]
    pub emit: Emit,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Emit {
    /// A window's result once, when the watermark passes its end.
    #[default]
    Final,
    /// Every changed window at the end of every epoch.
    Updates,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum WindowKind {
    Tumbling,
    Hopping,
    Session,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    #[serde(rename = "type")]
    pub kind: WindowKind,
    /// The event-time field, in epoch milliseconds; `_timestamp` for the
    /// Kafka record's timestamp.
    pub time_field: String,
    pub size_ms: Option<u64>,
    pub hop_ms: Option<u64>,
    pub gap_ms: Option<u64>,
    #[serde(default)]
    pub max_out_of_orderness_ms: u64,
    #[serde(default)]
    pub allowed_lateness_ms: u64,
    /// A partition without records for this long stops holding the
    /// watermark back. Measured in epochs, so replays agree.
    pub idle_timeout_ms: Option<u64>,
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SinkConfig {
    Kafka(KafkaSinkConfig),
    Stdout(StdoutSinkConfig),
    File(FileSinkConfig),
    Postgres(PostgresSinkConfig),
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum FileFormat {
    Csv,
    Parquet,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    #[default]
    Gzip,
    None,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Roll {
    /// One file per closed window (the input must carry window_start and
    /// window_end, as a windowed aggregate's output does).
    Window,
    /// One file per epoch.
    Epoch,
}

/// A Postgres table: created from the rows' schema when missing, checked
/// against it when present. Each epoch's rows and the epoch itself are
/// written in one database transaction, so a replayed epoch is skipped.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct PostgresSinkConfig {
    #[serde(default)]
    pub inputs: Vec<String>,
    /// e.g. `postgresql://postgres@127.0.0.1:5432/postgres`
    pub url: String,
    pub table: String,
    /// When set, an epoch that cannot reach Postgres is written here as
    /// Parquet (`jobctl replay` loads it later); when not, the sink waits
    /// and retries until Postgres is back.
    pub fallback_dir: Option<String>,
}

/// Files in a directory, written under a temporary name and renamed once
/// complete, so a reader never sees half a file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FileSinkConfig {
    pub inputs: Vec<String>,
    /// Directory, relative to the job file; created when missing.
    pub path: String,
    pub format: FileFormat,
    /// For CSV; Parquet files are written uncompressed.
    #[serde(default)]
    pub compression: Compression,
    pub roll: Roll,
}

impl SinkConfig {
    pub fn inputs(&self) -> &[String] {
        match self {
            SinkConfig::Kafka(c) => &c.inputs,
            SinkConfig::Stdout(c) => &c.inputs,
            SinkConfig::File(c) => &c.inputs,
            SinkConfig::Postgres(c) => &c.inputs,
        }
    }
}

#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct KafkaSinkConfig {
    pub inputs: Vec<String>,
    pub topic: String,
    pub format: Format,
    /// Expression for the record key, written as a string. Without it the
    /// key of the input record is kept.
    pub key: Option<String>,
    #[serde(default = "one")]
    pub partitions: i32,
    #[serde(default = "one")]
    pub replication_factor: i32,
    /// Properties of the producer that differ from the job's. Every Kafka
    /// sink of a job writes through its one transactional producer, so
    /// two sinks may not set one property differently.
    #[serde(default)]
    pub kafka: KafkaProperties,
}

/// Prints each record as a line of JSON; for demos and debugging.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct StdoutSinkConfig {
    pub inputs: Vec<String>,
}
