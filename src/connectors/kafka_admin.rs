//! What every Kafka connector shares: client settings, the reachability
//! check, topic creation. Called from the main thread while a job starts,
//! never from a timely worker.

use super::bounded_read::{BoundedRead, Event};
use super::DropAside;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{Headers as _, Message as _};
use std::collections::{HashMap, HashSet};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum KafkaAdminError {
    #[error("cannot reach the kafka broker at {brokers} ({reason}); start one with `scripts/dev-up`, or set [job] brokers to a running broker; a broker that takes only TLS or SASL needs security.protocol in [job.kafka]")]
    Unreachable { brokers: String, reason: String },
    #[error("cannot create topic `{topic}` on {brokers}: {reason}")]
    CreateTopic {
        topic: String,
        brokers: String,
        reason: String,
    },
    #[error("the kafka broker at {brokers} refused this client: {reason}; check the TLS and SASL properties of [job.kafka] (or -X): security.protocol, ssl.ca.location, ssl.certificate.location, sasl.mechanism, sasl.username, sasl.password")]
    Refused { brokers: String, reason: String },
    #[error("kafka error on {brokers}: {reason}")]
    Other { brokers: String, reason: String },
    #[error("topic `{topic}` holds what recovery reads and needs {wrong}; change it with `kafka-configs --bootstrap-server {brokers} --alter --entity-type topics --entity-name {topic} --add-config {config}`, or delete it and let rill create it")]
    Settings {
        topic: String,
        brokers: String,
        wrong: String,
        /// The settings it needs, as `--add-config` takes them.
        config: String,
    },
}

pub use super::kafka_config::Brokers;

/// The settings every client starts from: see [`Brokers::client_config`].
pub fn client_config(brokers: &Brokers) -> ClientConfig {
    brokers.client_config()
}

/// A consumer that reads a topic to its end once (recovery, end offsets,
/// `verify`), for [`super::bounded_read::BoundedRead`], which sets its
/// fetch wait. Once the consumer has a full queue, it fetches again as
/// soon as the queue drains below `queued.min.messages`, where
/// librdkafka's default waits a whole second: that wait made reading a
/// changelog of 1M records take 6.5 s instead of 0.8 s.
pub fn bounded_reader_config(brokers: &Brokers, group: &str) -> ClientConfig {
    let mut c = client_config(brokers);
    c.set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "true")
        .set("fetch.queue.backoff.ms", "10");
    c
}

/// A client of `brokers` with the common settings.
fn client<T: rdkafka::config::FromClientConfig>(brokers: &Brokers) -> Result<T, KafkaAdminError> {
    client_config(brokers)
        .create()
        .map_err(|e| KafkaAdminError::Other {
            brokers: brokers.into(),
            reason: e.to_string(),
        })
}

/// What librdkafka's error callback said last: why a connection failed
/// (a certificate that does not verify, a SASL password the broker
/// refused), which a failed request only calls a transport failure.
#[derive(Default)]
struct LastError(std::sync::Mutex<Option<String>>);

impl rdkafka::ClientContext for LastError {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::debug!("librdkafka: {error}: {reason}");
        // "1/1 brokers are down" follows the failure that says why.
        if !reason.contains("brokers are down") {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(reason.to_string());
        }
    }

    /// A certificate that does not verify is told in a log line, not an
    /// error event; a warning about the configuration (a consumer's
    /// property on this producer) is not about the connection.
    fn log(&self, level: rdkafka::config::RDKafkaLogLevel, fac: &str, message: &str) {
        tracing::debug!("librdkafka {fac}: {message}");
        if (level as i32) <= (rdkafka::config::RDKafkaLogLevel::Warning as i32) && fac != "CONFWARN"
        {
            *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(message.to_string());
        }
    }
}

impl rdkafka::producer::ProducerContext for LastError {
    type DeliveryOpaque = ();
    fn delivery(&self, _: &rdkafka::message::DeliveryResult<'_>, _: ()) {}
}

/// Whether librdkafka's reason is about TLS or SASL, not reachability.
fn is_refusal(reason: &str) -> bool {
    ["SSL", "SASL", "uthenticat", "certificate", "ssl.", "sasl."]
        .iter()
        .any(|w| reason.contains(w))
}

/// Asks the broker for its metadata, which proves it is there and takes
/// this client; else says why, in librdkafka's words.
pub fn check_broker(brokers: &Brokers) -> Result<(), KafkaAdminError> {
    let fail = |reason: String| {
        let reason = crate::secrets::redact(&reason).into_owned();
        if is_refusal(&reason) {
            KafkaAdminError::Refused {
                brokers: brokers.into(),
                reason,
            }
        } else {
            KafkaAdminError::Unreachable {
                brokers: brokers.into(),
                reason,
            }
        }
    };
    use rdkafka::producer::Producer as _;
    // librdkafka's logs and error events arrive through polls; a threaded
    // producer polls on a thread of its own while the metadata request
    // waits.
    let mut config = client_config(brokers);
    config
        .set("log_level", "4")
        .set_log_level(rdkafka::config::RDKafkaLogLevel::Warning);
    let client: rdkafka::producer::ThreadedProducer<LastError> = config
        .create_with_context(LastError::default())
        .map_err(|e| fail(e.to_string()))?;
    let client = DropAside::new(client);
    // Asked in short turns: a refusal (a password, a certificate) is known
    // within milliseconds and ends the wait; silence waits the whole 6 s.
    let deadline = std::time::Instant::now() + Duration::from_secs(6);
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match client
            .client()
            .fetch_metadata(None, left.min(Duration::from_millis(500)))
        {
            Ok(_) => return Ok(()),
            Err(e) => {
                let said = client.context().0.lock().unwrap().clone();
                let refused = said.as_deref().is_some_and(is_refusal);
                if refused || left <= Duration::from_millis(500) {
                    return Err(fail(said.unwrap_or_else(|| e.to_string())));
                }
            }
        }
    }
}

/// The number of partitions of `topic`, or None when it does not exist.
pub fn partition_count(brokers: &Brokers, topic: &str) -> Result<Option<i32>, KafkaAdminError> {
    Ok(partition_counts(brokers, &[topic])?.remove(topic))
}

/// The partitions of each of `topics` that exists, learnt with one client:
/// a start asks about every topic it uses, and a client per topic costs a
/// connection and a metadata round trip each.
pub fn partition_counts(
    brokers: &Brokers,
    topics: &[&str],
) -> Result<HashMap<String, i32>, KafkaAdminError> {
    let consumer = DropAside::new(client::<BaseConsumer>(brokers)?);
    let mut out = HashMap::new();
    for topic in topics {
        if let Some(n) = partitions_of(&consumer, brokers, topic)? {
            out.insert(topic.to_string(), n);
        }
    }
    Ok(out)
}

/// Like [`ensure_topic`], for a topic of the broker's default settings
/// whose partitions may be known already.
pub fn ensure_data_topic(
    brokers: &Brokers,
    known: &HashMap<String, i32>,
    topic: &str,
    partitions: i32,
    replication: i32,
) -> Result<i32, KafkaAdminError> {
    match known.get(topic) {
        Some(n) => Ok(*n),
        None => ensure_topic(brokers, topic, partitions, replication, TopicKind::Data),
    }
}

/// The number of partitions of `topic` as `consumer` learns it.
fn partitions_of<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    brokers: &Brokers,
    topic: &str,
) -> Result<Option<i32>, KafkaAdminError> {
    partitions_in(consumer, brokers, Some(topic), topic)
}

/// The partitions of `topic` from a metadata request for `asked`.
fn partitions_in<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    brokers: &Brokers,
    asked: Option<&str>,
    topic: &str,
) -> Result<Option<i32>, KafkaAdminError> {
    let md = consumer
        .fetch_metadata(asked, Duration::from_secs(10))
        .map_err(|e| KafkaAdminError::Unreachable {
            brokers: brokers.into(),
            reason: e.to_string(),
        })?;
    Ok(md
        .topics()
        .iter()
        .find(|t| t.name() == topic && t.error().is_none() && !t.partitions().is_empty())
        .map(|t| t.partitions().len() as i32))
}

/// Creates `topic` when it is missing; an existing topic is left as it is.
/// What a topic is for, which decides the settings it needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicKind {
    /// Input, output, dead letters: the broker's defaults.
    Data,
    /// Latest value per key, kept for ever: state changelogs, schemas.
    Compacted,
    /// Every record kept for ever: the epoch log, which recovery reads
    /// from its start.
    Forever,
}

impl TopicKind {
    /// The settings the kind needs, as `(name, value, why)`.
    fn settings(self) -> &'static [(&'static str, &'static str)] {
        match self {
            TopicKind::Data => &[],
            TopicKind::Compacted => &[("cleanup.policy", "compact")],
            TopicKind::Forever => &[
                ("cleanup.policy", "delete"),
                ("retention.ms", "-1"),
                ("retention.bytes", "-1"),
            ],
        }
    }
}

/// The consumer groups the broker knows whose names `keep` accepts.
pub fn groups_where(
    brokers: &Brokers,
    keep: impl Fn(&str) -> bool,
) -> Result<Vec<String>, KafkaAdminError> {
    let consumer = DropAside::new(client::<BaseConsumer>(brokers)?);
    let list = consumer
        .fetch_group_list(None, Duration::from_secs(10))
        .map_err(|e| KafkaAdminError::Other {
            brokers: brokers.into(),
            reason: format!("listing consumer groups: {e}"),
        })?;
    let mut out: Vec<String> = list
        .groups()
        .iter()
        .map(|g| g.name().to_string())
        .filter(|n| keep(n))
        .collect();
    out.sort();
    Ok(out)
}

/// Deletes `topics`; one that is not there is no error.
pub fn delete_topics(brokers: &Brokers, topics: &[&str]) -> Result<(), KafkaAdminError> {
    delete(brokers, Deleted::Topics, topics)
}

/// Deletes consumer groups (their committed offsets); one that is not
/// there is no error.
pub fn delete_groups(brokers: &Brokers, groups: &[&str]) -> Result<(), KafkaAdminError> {
    delete(brokers, Deleted::Groups, groups)
}

#[derive(Clone, Copy, PartialEq)]
enum Deleted {
    Topics,
    Groups,
}

fn delete(brokers: &Brokers, what: Deleted, names: &[&str]) -> Result<(), KafkaAdminError> {
    if names.is_empty() {
        return Ok(());
    }
    let admin = DropAside::new(client::<AdminClient<DefaultClientContext>>(brokers)?);
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let other = |reason: String| KafkaAdminError::Other {
        brokers: brokers.into(),
        reason,
    };
    let results = rt
        .block_on(async {
            match what {
                Deleted::Topics => admin.delete_topics(names, &opts).await,
                Deleted::Groups => admin.delete_groups(names, &opts).await,
            }
        })
        .map_err(|e| other(e.to_string()))?;
    for r in results {
        match (what, r) {
            (_, Ok(_))
            | (Deleted::Topics, Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)))
            | (Deleted::Groups, Err((_, RDKafkaErrorCode::GroupIdNotFound)))
            | (Deleted::Groups, Err((_, RDKafkaErrorCode::NotCoordinator))) => {}
            (_, Err((name, code))) => return Err(other(format!("deleting {name}: {code}"))),
        }
    }
    Ok(())
}

pub fn ensure_topic(
    brokers: &Brokers,
    topic: &str,
    partitions: i32,
    replication: i32,
    kind: TopicKind,
) -> Result<i32, KafkaAdminError> {
    if let Some(n) = partition_count(brokers, topic)? {
        check_settings(brokers, topic, kind)?;
        return Ok(n);
    }
    let admin = DropAside::new(client::<AdminClient<DefaultClientContext>>(brokers)?);
    let mut new = NewTopic::new(topic, partitions, TopicReplication::Fixed(replication));
    for (name, value) in kind.settings() {
        new = new.set(name, value);
    }
    let opts = AdminOptions::new().operation_timeout(Some(Duration::from_secs(10)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let results = rt
        .block_on(admin.create_topics([&new], &opts))
        .map_err(|e| KafkaAdminError::CreateTopic {
            topic: topic.into(),
            brokers: brokers.into(),
            reason: e.to_string(),
        })?;
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((_, code)) => {
                return Err(KafkaAdminError::CreateTopic {
                    topic: topic.into(),
                    brokers: brokers.into(),
                    reason: code.to_string(),
                })
            }
        }
    }
    // Metadata can lag the creation by a moment.
    for _ in 0..50 {
        if let Some(n) = partition_count(brokers, topic)? {
            return Ok(n);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(partitions)
}

/// Low and high watermarks of every partition of `topic`.
pub fn watermarks(
    brokers: &Brokers,
    topic: &str,
    partitions: i32,
) -> Result<Vec<(i64, i64)>, KafkaAdminError> {
    let consumer = DropAside::new(client::<BaseConsumer>(brokers)?);
    (0..partitions)
        .map(|p| {
            consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .map_err(|e| KafkaAdminError::Other {
                    brokers: brokers.into(),
                    reason: format!("watermarks of {topic}/{p}: {e}"),
                })
        })
        .collect()
}

/// The first offset and the end offset (one past the last record) of every
/// partition of `topic`, as they are now.
///
/// The end is read, not just asked for: the Tansu build used in development
/// answers ListOffsets(latest) with one past the *base* offset of the last
/// record batch, so a batch of three records at 0..=2 reports 1. Reading
/// from that answer minus one to the partition's EOF finds the real end;
/// on Apache Kafka that read is one record long and changes nothing.
pub fn end_offsets(
    brokers: &Brokers,
    topic: &str,
    partitions: i32,
) -> Result<Vec<(i64, i64)>, KafkaAdminError> {
    end_offsets_within(brokers, topic, partitions, None)
}

/// [`end_offsets`], giving up after `limit` without progress.
pub fn end_offsets_within(
    brokers: &Brokers,
    topic: &str,
    partitions: i32,
    limit: Option<Duration>,
) -> Result<Vec<(i64, i64)>, KafkaAdminError> {
    use rdkafka::message::Message;
    use rdkafka::Offset;
    let marks = watermarks(brokers, topic, partitions)?;
    let mut ends: Vec<(i64, i64)> = marks.clone();
    let starts: Vec<Option<Offset>> = marks
        .iter()
        .map(|(low, high)| (high > low).then(|| Offset::Offset((high - 1).max(*low))))
        .collect();
    let open = starts.iter().flatten().count();
    if open == 0 {
        return Ok(ends);
    }
    let config = bounded_reader_config(brokers, "rill-end-offsets");
    let mut read = BoundedRead::open(config, brokers, topic, starts)?;
    if let Some(limit) = limit {
        read = read.giving_up_after(limit);
    }
    let mut at_eof = vec![false; partitions as usize];
    while at_eof.iter().filter(|x| **x).count() < open {
        match read.poll()? {
            Some(Event::Record(m)) => {
                let e = &mut ends[m.partition() as usize].1;
                *e = (*e).max(m.offset() + 1);
            }
            Some(Event::End(p)) => {
                at_eof[p as usize] = true;
                read.finished(p);
            }
            None => {}
        }
    }
    Ok(ends)
}

/// An existing topic that rill's recovery relies on must keep what
/// recovery reads: a settings mismatch is an error that says how to fix
/// it. A broker that cannot describe configs is taken at its word.
fn check_settings(brokers: &Brokers, topic: &str, kind: TopicKind) -> Result<(), KafkaAdminError> {
    if kind.settings().is_empty() {
        return Ok(());
    }
    let Some(entries) = topics_settings(brokers, &[topic]).remove(topic) else {
        return Ok(());
    };
    let wrong: Vec<(&str, &str, String)> = kind
        .settings()
        .iter()
        .filter_map(|(name, want)| {
            let have = entries.iter().find(|(n, _)| n == name)?.1.clone()?;
            (have != *want).then(|| (*name, *want, have))
        })
        .collect();
    if wrong.is_empty() {
        return Ok(());
    }
    Err(KafkaAdminError::Settings {
        topic: topic.into(),
        brokers: brokers
            .servers()
            .split(',')
            .next()
            .unwrap_or(brokers.servers())
            .into(),
        wrong: wrong
            .iter()
            .map(|(name, want, have)| format!("{name}={want} (it is {have})"))
            .collect::<Vec<_>>()
            .join(", "),
        config: wrong
            .iter()
            .map(|(name, want, _)| format!("{name}={want}"))
            .collect::<Vec<_>>()
            .join(","),
    })
}

/// The settings of each of `topics` that the broker describes, in one
/// request; a topic it cannot describe (or does not have) is left out.
fn topics_settings(
    brokers: &Brokers,
    topics: &[&str],
) -> HashMap<String, Vec<(String, Option<String>)>> {
    use rdkafka::admin::{ConfigResource, OwnedResourceSpecifier, ResourceSpecifier};
    let Ok(admin) = client_config(brokers).create::<AdminClient<DefaultClientContext>>() else {
        return HashMap::new();
    };
    let admin = DropAside::new(admin);
    let opts = AdminOptions::new().request_timeout(Some(Duration::from_secs(10)));
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let resources: Vec<ResourceSpecifier> =
        topics.iter().map(|t| ResourceSpecifier::Topic(t)).collect();
    let described = rt
        .block_on(admin.describe_configs(&resources, &opts))
        .unwrap_or_default();
    described
        .into_iter()
        .filter_map(|r| match r {
            Ok(ConfigResource {
                specifier: OwnedResourceSpecifier::Topic(topic),
                entries,
                ..
            }) => Some((
                topic,
                entries.into_iter().map(|e| (e.name, e.value)).collect(),
            )),
            _ => None,
        })
        .collect()
}

/// Which of `topics` the broker keeps only the latest record per key of:
/// it refuses records without a key there, on every attempt.
pub fn compacted_topics(brokers: &Brokers, topics: &[&str]) -> HashSet<String> {
    topics_settings(brokers, topics)
        .into_iter()
        .filter(|(_, entries)| {
            entries.iter().any(|(name, value)| {
                name == "cleanup.policy" && value.as_deref().is_some_and(|v| v.contains("compact"))
            })
        })
        .map(|(topic, _)| topic)
        .collect()
}

/// Reaching the end of a partition is what bounded reads wait for, not a
/// failure to log.
pub struct EofIsNotAnError;

impl rdkafka::ClientContext for EofIsNotAnError {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        if error.rdkafka_error_code() != Some(RDKafkaErrorCode::PartitionEOF) {
            tracing::error!("librdkafka: {error}: {reason}");
        }
    }
}

impl rdkafka::consumer::ConsumerContext for EofIsNotAnError {}

/// One record as `read_to_end` hands it over.
pub struct Fetched {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub value: Option<Vec<u8>>,
    pub headers: Vec<(String, String)>,
    /// The record's timestamp, in ms since the Unix epoch (0 if none).
    pub timestamp_ms: i64,
}

impl Fetched {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// Every record of `topic`, from its start to the end it has now, in
/// offset order per partition. Aborted transactional records are included
/// where the broker delivers them; callers sort them out by headers.
pub fn read_to_end(
    brokers: &Brokers,
    topic: &str,
    mut each: impl FnMut(Fetched),
) -> Result<(), KafkaAdminError> {
    read_each(brokers, topic, None, |m| {
        let headers =
            m.0.headers()
                .map(|h| {
                    h.iter()
                        .map(|x| {
                            (
                                x.key.to_string(),
                                String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
        each(Fetched {
            partition: m.partition(),
            offset: m.offset(),
            key: m.key().map(<[u8]>::to_vec),
            value: m.value().map(<[u8]>::to_vec),
            headers,
            timestamp_ms: m.0.timestamp().to_millis().unwrap_or(0),
        })
    })
}

/// One record as `read_each` lends it: nothing is copied unless the
/// caller keeps it.
pub struct Borrowed<'a>(rdkafka::message::BorrowedMessage<'a>);

impl Borrowed<'_> {
    pub fn partition(&self) -> i32 {
        self.0.partition()
    }
    pub fn offset(&self) -> i64 {
        self.0.offset()
    }
    pub fn key(&self) -> Option<&[u8]> {
        self.0.key()
    }
    pub fn value(&self) -> Option<&[u8]> {
        self.0.payload()
    }
    /// The record's timestamp in ms, if it has one.
    pub fn timestamp_ms(&self) -> Option<i64> {
        self.0.timestamp().to_millis()
    }
    /// A header's value, if it is there and is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        let h = self.0.headers()?;
        h.iter()
            .find(|x| x.key == name)
            .and_then(|x| std::str::from_utf8(x.value?).ok())
    }
}

/// `read_to_end`, lending each record instead of copying it, from the
/// beginning or, per partition, from the offsets `from` gives.
pub fn read_each(
    brokers: &Brokers,
    topic: &str,
    from: Option<&[i64]>,
    each: impl FnMut(Borrowed<'_>),
) -> Result<(), KafkaAdminError> {
    read_partitions(
        brokers,
        topic,
        |p| match from.and_then(|f| f.get(p as usize)) {
            Some(o) => Some(rdkafka::Offset::Offset(*o)),
            None => Some(rdkafka::Offset::Beginning),
        },
        each,
    )
}

/// `read_each` of one partition, from its beginning or from `from`.
pub fn read_partition_each(
    brokers: &Brokers,
    topic: &str,
    partition: i32,
    from: Option<i64>,
    each: impl FnMut(Borrowed<'_>),
) -> Result<(), KafkaAdminError> {
    read_partitions(
        brokers,
        topic,
        |p| {
            (p == partition)
                .then(|| from.map_or(rdkafka::Offset::Beginning, rdkafka::Offset::Offset))
        },
        each,
    )
}

/// Reads the partitions `start` gives an offset for, each from there.
fn read_partitions(
    brokers: &Brokers,
    topic: &str,
    start: impl Fn(i32) -> Option<rdkafka::Offset>,
    each: impl FnMut(Borrowed<'_>),
) -> Result<(), KafkaAdminError> {
    match Reading::open(brokers, topic, start, Some(topic))? {
        Some(reading) => reading.drain(|_, _| true, each),
        None => Ok(()),
    }
}

/// A bounded read of a topic under way: librdkafka fetches the assigned
/// partitions in the background from the moment it is opened.
struct Reading {
    read: BoundedRead,
    topic: String,
    brokers: String,
    /// Per partition: read to its end, or not read at all.
    at_end: Vec<bool>,
}

impl Reading {
    /// `asked`: the topic the metadata request names, or None for every
    /// topic (a broker may create a topic a request names).
    fn open(
        brokers: &Brokers,
        topic: &str,
        start: impl Fn(i32) -> Option<rdkafka::Offset>,
        asked: Option<&str>,
    ) -> Result<Option<Self>, KafkaAdminError> {
        // One client learns the partitions and reads them: a start reads
        // several topics this way, and every client costs a connection
        // and a metadata round trip.
        let config = bounded_reader_config(brokers, "rill-reader")
            // Callers pick the committed copies by their headers; a
            // committed read would stop at the first open transaction
            // and miss the rest.
            .set("isolation.level", "read_uncommitted")
            .clone();
        let mut read = BoundedRead::open(config, brokers, topic, Vec::new())?;
        let Some(n) = partitions_in(read.client(), brokers, asked, topic)? else {
            return Ok(None);
        };
        // A partition is read when its EOF comes (an empty one too): on a
        // topic written in transactions the last offsets are commit
        // markers, which a consumer never receives, so counting offsets
        // up to the end would never stop. One not to read is at its end
        // already.
        let starts: Vec<Option<rdkafka::Offset>> = (0..n).map(start).collect();
        let at_end = starts.iter().map(Option::is_none).collect();
        read.assign(starts)?;
        Ok(Some(Reading {
            read,
            topic: topic.into(),
            brokers: brokers.into(),
            at_end,
        }))
    }

    /// Lends every record until each partition is at its end: its EOF
    /// came and `far_enough(partition, position)` holds.
    fn drain(
        mut self,
        far_enough: impl Fn(i32, i64) -> bool,
        mut each: impl FnMut(Borrowed<'_>),
    ) -> Result<(), KafkaAdminError> {
        let topic = self.topic.clone();
        while self.at_end.iter().any(|d| !d) {
            match self.read.poll()? {
                None => {}
                Some(Event::End(p)) => {
                    let position = self
                        .read
                        .client()
                        .position()
                        .ok()
                        .and_then(|l| {
                            l.find_partition(&topic, p)
                                .and_then(|e| e.offset().to_raw())
                        })
                        .unwrap_or(-1);
                    if far_enough(p, position) {
                        self.at_end[p as usize] = true;
                        self.read.finished(p);
                    }
                }
                Some(Event::Record(m)) => each(Borrowed(m)),
            }
        }
        Ok(())
    }
}

/// A topic read from its beginning in the background, for a caller that
/// learns only later how far it must read: a start reads the epoch log
/// while it fences, and needs it up to its own start record.
pub struct Prefetch(Reading);

/// Starts reading every partition of `topic`; None when it does not exist.
pub fn prefetch(brokers: &Brokers, topic: &str) -> Result<Option<Prefetch>, KafkaAdminError> {
    // Its metadata is asked with every topic's: the prefetch may come
    // before the topic is created with the settings it needs.
    let reading = Reading::open(brokers, topic, |_| Some(rdkafka::Offset::Beginning), None)?;
    Ok(reading.map(Prefetch))
}

impl Prefetch {
    /// Lends every record the topic holds now, those written since the
    /// prefetch began included: an end the prefetch met earlier does not
    /// count until the position is past the high watermark asked now.
    pub fn read_to_end(self, each: impl FnMut(Borrowed<'_>)) -> Result<(), KafkaAdminError> {
        let mut reading = self.0;
        let mut highs = Vec::with_capacity(reading.at_end.len());
        for p in 0..reading.at_end.len() as i32 {
            let (low, high) = reading
                .read
                .client()
                .fetch_watermarks(&reading.topic, p, Duration::from_secs(10))
                .map_err(|e| KafkaAdminError::Other {
                    brokers: reading.brokers.clone(),
                    reason: format!("the end of {}: {e}", reading.topic),
                })?;
            // An empty partition has no record to be past.
            if high <= low {
                reading.at_end[p as usize] = true;
            }
            highs.push(high);
        }
        reading.drain(|p, position| position >= highs[p as usize], each)
    }
}
