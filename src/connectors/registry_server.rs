//! `jobctl registry`: the subset of the Confluent Schema Registry REST API
//! that rill's sources and sinks use. Its data lives in a compacted Kafka
//! topic (Confluent's own record layout), so a restarted registry finds
//! every subject, version and id again.

use super::kafka_admin::{self, client_config, KafkaAdminError};
use apache_avro::schema_compatibility::SchemaCompatibility;
use apache_avro::Schema;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseRecord, DefaultProducerContext, Producer, ThreadedProducer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::{json, Value as Json};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
struct Version {
    subject: String,
    version: i32,
    id: u32,
    schema: String,
    #[serde(default)]
    deleted: bool,
}

#[derive(Default)]
struct State {
    subjects: BTreeMap<String, Vec<Version>>,
    /// id -> schema text; one id per distinct schema, across subjects.
    ids: BTreeMap<u32, String>,
    global_level: Option<String>,
    levels: BTreeMap<String, String>,
}

impl State {
    fn apply(&mut self, key: &Json, value: Option<&Json>) {
        match key.get("keytype").and_then(Json::as_str) {
            Some("SCHEMA") => {
                let Some(v) = value.and_then(|v| serde_json::from_value::<Version>(v.clone()).ok())
                else {
                    return;
                };
                self.ids.entry(v.id).or_insert_with(|| v.schema.clone());
                let versions = self.subjects.entry(v.subject.clone()).or_default();
                versions.retain(|x| x.version != v.version);
                versions.push(v);
                versions.sort_by_key(|x| x.version);
            }
            Some("CONFIG") => {
                let level = value
                    .and_then(|v| v.get("compatibilityLevel"))
                    .and_then(Json::as_str)
                    .map(str::to_string);
                match key.get("subject").and_then(Json::as_str) {
                    Some(s) => match level {
                        Some(l) => {
                            self.levels.insert(s.to_string(), l);
                        }
                        None => {
                            self.levels.remove(s);
                        }
                    },
                    None => self.global_level = level,
                }
            }
            _ => {}
        }
    }

    fn level(&self, subject: &str) -> String {
        self.levels
            .get(subject)
            .or(self.global_level.as_ref())
            .cloned()
            .unwrap_or_else(|| "BACKWARD".to_string())
    }

    fn live(&self, subject: &str) -> Vec<&Version> {
        self.subjects
            .get(subject)
            .map(|v| v.iter().filter(|x| !x.deleted).collect())
            .unwrap_or_default()
    }
}

pub struct Registry {
    state: Mutex<State>,
    producer: ThreadedProducer<DefaultProducerContext>,
    topic: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Kafka(#[from] KafkaAdminError),
    #[error("cannot listen on {addr}: {reason}; is another registry already running there?")]
    Listen { addr: String, reason: String },
    #[error("cannot read the registry topic `{topic}`: {reason}")]
    Load { topic: String, reason: String },
}

impl Registry {
    /// Reads the registry topic from its start to its end, so the state is
    /// what it was before the restart.
    pub fn open(
        brokers: &crate::connectors::kafka_config::Brokers,
        topic: &str,
    ) -> Result<Arc<Self>, ServeError> {
        kafka_admin::check_broker(brokers)?;
        kafka_admin::ensure_topic(brokers, topic, 1, 1, kafka_admin::TopicKind::Compacted)?;
        let load = |reason: String| ServeError::Load {
            topic: topic.into(),
            reason,
        };
        let consumer: BaseConsumer = client_config(brokers)
            .set("enable.auto.commit", "false")
            .set("group.id", "rill-registry-loader")
            .create()
            .map_err(|e| load(e.to_string()))?;
        let (_, high) = consumer
            .fetch_watermarks(topic, 0, Duration::from_secs(10))
            .map_err(|e| load(e.to_string()))?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(topic, 0, Offset::Beginning)
            .map_err(|e| load(e.to_string()))?;
        consumer.assign(&tpl).map_err(|e| load(e.to_string()))?;
        let mut state = State::default();
        let mut next = 0;
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        while next < high {
            if std::time::Instant::now() > deadline {
                return Err(load(format!("read {next} of {high} records in 60 s")));
            }
            match consumer.poll(Duration::from_millis(200)) {
                Some(Ok(m)) => {
                    next = m.offset() + 1;
                    let key = m.key().and_then(|k| serde_json::from_slice::<Json>(k).ok());
                    let value = m
                        .payload()
                        .and_then(|v| serde_json::from_slice::<Json>(v).ok());
                    if let Some(k) = key {
                        state.apply(&k, value.as_ref());
                    }
                }
                Some(Err(e)) => return Err(load(e.to_string())),
                None => {}
            }
        }
        let producer: ThreadedProducer<DefaultProducerContext> = client_config(brokers)
            .set("linger.ms", "0")
            .create()
            .map_err(|e| load(e.to_string()))?;
        Ok(Arc::new(Registry {
            state: Mutex::new(state),
            producer,
            topic: topic.to_string(),
        }))
    }

    fn persist(&self, key: &Json, value: &Json) -> Result<(), String> {
        let k = key.to_string();
        let v = value.to_string();
        self.producer
            .send(BaseRecord::to(&self.topic).key(&k).payload(&v).partition(0))
            .map_err(|(e, _)| e.to_string())?;
        self.producer
            .flush(Duration::from_secs(10))
            .map_err(|e| e.to_string())
    }

    /// Serves requests until the process ends, on `threads` threads of a
    /// tokio runtime of its own, through axum (as the jobs' endpoint):
    /// over TLS with `access.tls`, and to the users of `access.users`
    /// only, when there are any, as Confluent's registry does with basic
    /// authentication.
    pub fn serve(
        self: Arc<Self>,
        addr: &str,
        threads: usize,
        access: ServeAccess,
    ) -> Result<(), ServeError> {
        let listen = |reason: String| ServeError::Listen {
            addr: addr.into(),
            reason,
        };
        let listener = std::net::TcpListener::bind(addr).map_err(|e| listen(e.to_string()))?;
        listener
            .set_nonblocking(true)
            .map_err(|e| listen(e.to_string()))?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(threads.max(1))
            .enable_all()
            .build()
            .map_err(|e| listen(e.to_string()))?;
        let me = self;
        let gate = Arc::new((access.users, access.tokens));
        let app = axum::Router::new().fallback(
            move |method: axum::http::Method,
                  uri: axum::http::Uri,
                  headers: axum::http::HeaderMap,
                  body: String| {
                let me = me.clone();
                let gate = gate.clone();
                async move {
                    let (users, tokens) = &*gate;
                    if (!users.is_empty() || !tokens.is_empty())
                        && !admitted(users, tokens, &headers)
                    {
                        return (
                            axum::http::StatusCode::UNAUTHORIZED,
                            [
                                (
                                    axum::http::header::CONTENT_TYPE,
                                    "application/vnd.schemaregistry.v1+json",
                                ),
                                (
                                    axum::http::header::WWW_AUTHENTICATE,
                                    "Basic realm=\"rill-registry\"",
                                ),
                            ],
                            err(401, 40101, "Unauthorized").1.to_string(),
                        );
                    }
                    let url = uri
                        .path_and_query()
                        .map_or(uri.path(), |p| p.as_str())
                        .to_string();
                    // The registry's state is behind a mutex and its writes
                    // wait for Kafka: off the runtime's threads.
                    let answer = tokio::task::spawn_blocking(move || {
                        me.handle(method.as_str(), &url, &body)
                    })
                    .await;
                    let (status, answer) =
                        answer.unwrap_or_else(|e| (500, err(500, 50001, &e.to_string()).1));
                    (
                        axum::http::StatusCode::from_u16(status)
                            .unwrap_or(axum::http::StatusCode::INTERNAL_SERVER_ERROR),
                        [
                            (
                                axum::http::header::CONTENT_TYPE,
                                "application/vnd.schemaregistry.v1+json",
                            ),
                            (axum::http::header::VARY, "Authorization"),
                        ],
                        answer.to_string(),
                    )
                }
            },
        );
        runtime.block_on(async move {
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(|e| listen(e.to_string()))?;
            match access.tls {
                Some(acceptor) => {
                    let tls = super::https::TlsListener::new(listener, acceptor)
                        .map_err(|e| listen(e.to_string()))?;
                    axum::serve(tls, app).await
                }
                None => axum::serve(listener, app).await,
            }
            .map_err(|e| listen(e.to_string()))
        })
    }

    /// Routes one request. Public so tests can drive it without a socket.
    pub fn handle(&self, method: &str, url: &str, body: &str) -> (u16, Json) {
        let path = url.split('?').next().unwrap_or("");
        let parts: Vec<String> = path
            .trim_matches('/')
            .split('/')
            .map(crate::format::registry::decode_path)
            .collect();
        let parts: Vec<&str> = parts.iter().map(String::as_str).collect();
        let schema_in_body = || -> Result<String, (u16, Json)> {
            let v: Json = serde_json::from_str(body)
                .map_err(|e| err(422, 42201, &format!("body is not json: {e}")))?;
            let text = v
                .get("schema")
                .and_then(Json::as_str)
                .ok_or_else(|| err(422, 42201, "body has no `schema`"))?;
            if let Some(t) = v.get("schemaType").and_then(Json::as_str) {
                if t != "AVRO" {
                    return Err(err(
                        422,
                        42201,
                        &format!("schema type {t} is not supported; only AVRO"),
                    ));
                }
            }
            Schema::parse_str(text)
                .map_err(|e| err(422, 42201, &format!("invalid avro schema: {e}")))?;
            Ok(text.to_string())
        };
        let result = match (method, parts.as_slice()) {
            ("GET", [""]) => Ok(json!({})),
            ("GET", ["subjects"]) => {
                let st = self.state.lock().unwrap();
                Ok(json!(st
                    .subjects
                    .keys()
                    .filter(|s| !st.live(s).is_empty())
                    .collect::<Vec<_>>()))
            }
            ("GET", ["schemas", "ids", id]) => {
                let st = self.state.lock().unwrap();
                match id.parse::<u32>().ok().and_then(|i| st.ids.get(&i)) {
                    Some(s) => Ok(json!({ "schema": s })),
                    None => Err(err(404, 40403, "Schema not found")),
                }
            }
            ("GET", ["subjects", subject, "versions"]) => {
                let st = self.state.lock().unwrap();
                let live = st.live(subject);
                if live.is_empty() {
                    Err(err(404, 40401, &format!("Subject '{subject}' not found.")))
                } else {
                    Ok(json!(live.iter().map(|v| v.version).collect::<Vec<_>>()))
                }
            }
            ("GET", ["subjects", subject, "versions", version]) => {
                let st = self.state.lock().unwrap();
                find_version(&st, subject, version).map(|v| version_json(v))
            }
            ("GET", ["subjects", subject, "versions", version, "schema"]) => {
                let st = self.state.lock().unwrap();
                find_version(&st, subject, version).and_then(|v| {
                    serde_json::from_str::<Json>(&v.schema)
                        .map_err(|e| err(500, 50001, &e.to_string()))
                })
            }
            ("POST", ["subjects", subject, "versions"]) => {
                schema_in_body().and_then(|s| self.register(subject, &s))
            }
            ("POST", ["subjects", subject]) => schema_in_body().and_then(|s| {
                let st = self.state.lock().unwrap();
                let wanted = canonical(&s);
                st.live(subject)
                    .into_iter()
                    .find(|v| canonical(&v.schema) == wanted)
                    .map(|v| version_json(v))
                    .ok_or_else(|| err(404, 40403, "Schema not found"))
            }),
            ("POST", ["compatibility", "subjects", subject, "versions", version]) => {
                schema_in_body().and_then(|s| {
                    let st = self.state.lock().unwrap();
                    let against: Vec<&Version> = if *version == "latest" {
                        st.live(subject).into_iter().last().into_iter().collect()
                    } else {
                        vec![find_version(&st, subject, version)?]
                    };
                    let problems = check(&st.level(subject), &s, &against);
                    Ok(json!({ "is_compatible": problems.is_empty(), "messages": problems }))
                })
            }
            ("GET", ["config"]) => {
                let st = self.state.lock().unwrap();
                Ok(
                    json!({ "compatibilityLevel": st.global_level.clone().unwrap_or_else(|| "BACKWARD".into()) }),
                )
            }
            ("GET", ["config", subject]) => {
                let st = self.state.lock().unwrap();
                Ok(json!({ "compatibilityLevel": st.level(subject) }))
            }
            ("PUT", ["config"]) | ("PUT", ["config", _]) => {
                self.set_level(parts.get(1).copied(), body)
            }
            _ => Err(err(404, 404, &format!("no such endpoint: {method} {path}"))),
        };
        match result {
            Ok(v) => (200, v),
            Err(e) => e,
        }
    }

    fn set_level(&self, subject: Option<&str>, body: &str) -> Result<Json, (u16, Json)> {
        let v: Json = serde_json::from_str(body).map_err(|e| err(422, 42203, &e.to_string()))?;
        let level = v
            .get("compatibility")
            .or_else(|| v.get("compatibilityLevel"))
            .and_then(Json::as_str)
            .ok_or_else(|| err(422, 42203, "body has no `compatibility`"))?
            .to_uppercase();
        const LEVELS: [&str; 7] = [
            "NONE",
            "BACKWARD",
            "BACKWARD_TRANSITIVE",
            "FORWARD",
            "FORWARD_TRANSITIVE",
            "FULL",
            "FULL_TRANSITIVE",
        ];
        if !LEVELS.contains(&level.as_str()) {
            return Err(err(
                422,
                42203,
                &format!("unknown compatibility level {level}"),
            ));
        }
        let key = json!({ "keytype": "CONFIG", "subject": subject, "magic": 0 });
        let value = json!({ "compatibilityLevel": level });
        self.persist(&key, &value)
            .map_err(|e| err(500, 50001, &e))?;
        self.state.lock().unwrap().apply(&key, Some(&value));
        Ok(json!({ "compatibility": level }))
    }

    fn register(&self, subject: &str, schema: &str) -> Result<Json, (u16, Json)> {
        // One writer at a time, so ids and versions stay dense and unique.
        let mut st = self.state.lock().unwrap();
        let wanted = canonical(schema);
        if let Some(v) = st
            .live(subject)
            .into_iter()
            .find(|v| canonical(&v.schema) == wanted)
        {
            return Ok(json!({ "id": v.id }));
        }
        let live = st.live(subject);
        let level = st.level(subject);
        let against: Vec<&Version> = if level.ends_with("_TRANSITIVE") {
            live
        } else {
            live.into_iter().last().into_iter().collect()
        };
        let problems = check(&level, schema, &against);
        if !problems.is_empty() {
            return Err(err(
                409,
                409,
                &format!("Schema being registered is incompatible with an earlier schema for subject \"{subject}\" ({level}): {}", problems.join("; ")),
            ));
        }
        let id = st
            .ids
            .iter()
            .find(|(_, s)| canonical(s) == wanted)
            .map(|(id, _)| *id)
            .unwrap_or_else(|| st.ids.keys().last().map_or(1, |m| m + 1));
        let version = st
            .subjects
            .get(subject)
            .and_then(|v| v.iter().map(|x| x.version).max())
            .unwrap_or(0)
            + 1;
        let record = Version {
            subject: subject.into(),
            version,
            id,
            schema: schema.into(),
            deleted: false,
        };
        let key =
            json!({ "keytype": "SCHEMA", "subject": subject, "version": version, "magic": 1 });
        let value = serde_json::to_value(&record).unwrap();
        self.persist(&key, &value)
            .map_err(|e| err(500, 50001, &format!("cannot store the schema: {e}")))?;
        st.apply(&key, Some(&value));
        Ok(json!({ "id": id }))
    }
}

fn find_version<'a>(
    st: &'a State,
    subject: &str,
    version: &str,
) -> Result<&'a Version, (u16, Json)> {
    let live = st.live(subject);
    if live.is_empty() {
        return Err(err(404, 40401, &format!("Subject '{subject}' not found.")));
    }
    let found = if version == "latest" || version == "-1" {
        live.last().copied()
    } else {
        let n: i32 = version
            .parse()
            .map_err(|_| err(422, 42202, &format!("invalid version {version}")))?;
        live.into_iter().find(|v| v.version == n)
    };
    found.ok_or_else(|| err(404, 40402, &format!("Version {version} not found.")))
}

fn version_json(v: &Version) -> Json {
    json!({ "subject": v.subject, "version": v.version, "id": v.id, "schema": v.schema })
}

fn err(status: u16, code: u32, message: &str) -> (u16, Json) {
    (status, json!({ "error_code": code, "message": message }))
}

fn canonical(schema: &str) -> String {
    Schema::parse_str(schema)
        .map(|s| s.canonical_form())
        .unwrap_or_else(|_| schema.to_string())
}

/// What keeps `schema` from being registered after `existing` at `level`;
/// empty when nothing does.
fn check(level: &str, schema: &str, existing: &[&Version]) -> Vec<String> {
    let Ok(new) = Schema::parse_str(schema) else {
        return vec!["schema does not parse".into()];
    };
    let backward = level.starts_with("BACKWARD") || level.starts_with("FULL");
    let forward = level.starts_with("FORWARD") || level.starts_with("FULL");
    let mut problems = Vec::new();
    for v in existing {
        let Ok(old) = Schema::parse_str(&v.schema) else {
            continue;
        };
        if backward {
            if let Err(e) = SchemaCompatibility::can_read(&old, &new) {
                problems.push(format!(
                    "version {} cannot be read by the new schema: {e}",
                    v.version
                ));
            }
        }
        if forward {
            if let Err(e) = SchemaCompatibility::can_read(&new, &old) {
                problems.push(format!(
                    "the new schema cannot be read by version {}: {e}",
                    v.version
                ));
            }
        }
    }
    problems
}

/// Who may reach the registry, and over what.
#[derive(Default)]
pub struct ServeAccess {
    pub tls: Option<Arc<openssl::ssl::SslAcceptor>>,
    /// user -> password, for basic authentication.
    pub users: std::collections::HashMap<String, String>,
    /// Bearer tokens. With neither users nor tokens: anyone.
    pub tokens: Vec<String>,
}

/// Reads a tokens file: a bearer token per line, `#` comments.
pub fn read_tokens(path: &std::path::Path) -> Result<Vec<String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the tokens file {}: {e}", path.display()))?;
    let tokens: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect();
    if tokens.is_empty() {
        return Err(format!("{} holds no token", path.display()));
    }
    for t in &tokens {
        crate::secrets::keep(t);
    }
    Ok(tokens)
}

/// Reads a users file: `NAME:PASSWORD` per line, `#` comments.
pub fn read_users(
    path: &std::path::Path,
) -> Result<std::collections::HashMap<String, String>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read the users file {}: {e}", path.display()))?;
    let mut users = std::collections::HashMap::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, password)) = line.split_once(':') else {
            return Err(format!(
                "{} line {}: write each user as NAME:PASSWORD",
                path.display(),
                i + 1
            ));
        };
        crate::secrets::keep(password);
        users.insert(name.to_string(), password.to_string());
    }
    if users.is_empty() {
        return Err(format!("{} names no user", path.display()));
    }
    Ok(users)
}

/// Whether the request carries the basic credentials of one of `users`
/// or one of `tokens` as a bearer token.
fn admitted(
    users: &std::collections::HashMap<String, String>,
    tokens: &[String],
    headers: &axum::http::HeaderMap,
) -> bool {
    use base64::Engine as _;
    let same =
        |a: &str, b: &str| a.len() == b.len() && openssl::memcmp::eq(a.as_bytes(), b.as_bytes());
    let Some(auth) = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return false;
    };
    if let Some(token) = auth.strip_prefix("Bearer ") {
        return tokens.iter().any(|t| same(t, token.trim()));
    }
    let Some(encoded) = auth.strip_prefix("Basic ") else {
        return false;
    };
    let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(encoded.trim()) else {
        return false;
    };
    let Ok(text) = String::from_utf8(decoded) else {
        return false;
    };
    let Some((name, password)) = text.split_once(':') else {
        return false;
    };
    users.get(name).is_some_and(|want| same(want, password))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backward_check_refuses_a_new_field_without_default() {
        let old = Version {
            subject: "s".into(),
            version: 1,
            id: 1,
            schema: r#"{"type":"record","name":"T","fields":[{"name":"a","type":"long"}]}"#.into(),
            deleted: false,
        };
        let bad = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"long"},{"name":"b","type":"string"}]}"#;
        let good = r#"{"type":"record","name":"T","fields":[{"name":"a","type":"long"},{"name":"b","type":"string","default":""}]}"#;
        assert_eq!(check("BACKWARD", bad, &[&old]).len(), 1);
        assert!(check("BACKWARD", good, &[&old]).is_empty());
        assert!(check("NONE", bad, &[&old]).is_empty());
    }
}
