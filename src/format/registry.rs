//! Confluent Schema Registry: the client every source and sink uses, with
//! its cache, and (in `server`) the subset `jobctl registry` serves.
//!
//! The client blocks on HTTP, so it is only called from the main thread
//! while planning or from helper threads, never from a timely worker.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("cannot reach the schema registry at {url}: {reason}; start one with `scripts/dev-up` (or `jobctl registry`), or set [job] registry_url")]
    Unreachable { url: String, reason: String },
    #[error("schema registry at {url} answered {status} for {what}: {message}")]
    Status {
        url: String,
        status: u16,
        what: String,
        message: String,
    },
    #[error("schema registry at {url} sent a response that is not understood: {0}", url = .1)]
    Body(String, String),
    #[error("schema registry at {url} refused this client: {reason}; set registry_username and registry_password (Confluent Cloud: the API key and secret) or registry_token, and registry_ca_file for a certificate that is not signed by one of the system's CAs")]
    Refused { url: String, reason: String },
}

impl RegistryError {
    /// Whether asking again can give another answer. A schema the registry
    /// says it does not have is gone for good; a registry that is down, busy
    /// or failing may answer later, and a record must never be judged by
    /// such a moment: its replay would be judged differently.
    pub fn is_transient(&self) -> bool {
        match self {
            RegistryError::Unreachable { .. } => true,
            RegistryError::Status { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            RegistryError::Body(..) => true,
            // Credentials are mended by the operator, never by judging a
            // record: its replay would be judged differently.
            RegistryError::Refused { .. } => true,
        }
    }
}

/// How to reach a registry: where, trusting which CA, with which
/// credentials (basic, as Confluent Cloud's API key and secret, or a
/// bearer token).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RegistryAccess {
    pub url: String,
    pub username: Option<String>,
    pub password: Option<String>,
    pub token: Option<String>,
    pub ca_file: Option<std::path::PathBuf>,
}

impl RegistryAccess {
    pub fn plain(url: &str) -> Self {
        RegistryAccess {
            url: url.to_string(),
            ..Default::default()
        }
    }
}

/// `url` without the `user:password@` it may hold, and that part.
fn split_userinfo(url: &str) -> (String, Option<String>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    match rest[..end].rsplit_once('@') {
        Some((userinfo, host)) => (
            format!("{scheme}://{host}{}", &rest[end..]),
            Some(userinfo.to_string()),
        ),
        None => (url.to_string(), None),
    }
}

/// A schema with its registry coordinates.
#[derive(Debug, Clone, PartialEq, serde::Deserialize)]
pub struct Registered {
    #[serde(default)]
    pub subject: String,
    pub id: u32,
    pub version: i32,
    pub schema: String,
}

#[derive(Clone)]
pub struct RegistryClient {
    url: String,
    agent: ureq::Agent,
    /// The `Authorization` header, if the registry wants one.
    auth: Option<String>,
    /// Why TLS could not be set up (a CA file that does not load): every
    /// call says so.
    unusable: Option<String>,
    by_id: Arc<Mutex<HashMap<u32, Arc<str>>>>,
}

impl RegistryClient {
    pub fn new(url: &str) -> Self {
        Self::with_access(&RegistryAccess::plain(url))
    }

    pub fn with_access(access: &RegistryAccess) -> Self {
        use base64::Engine as _;
        let (url, userinfo) = split_userinfo(&access.url);
        let basic = |user_pass: &str| {
            format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode(user_pass)
            )
        };
        let auth = match (&access.token, &access.username, &userinfo) {
            (Some(token), _, _) => Some(format!("Bearer {token}")),
            (None, Some(user), _) => Some(basic(&format!(
                "{user}:{}",
                access.password.as_deref().unwrap_or("")
            ))),
            (None, None, Some(info)) => {
                if let Some(pw) = crate::secrets::url_password(&access.url) {
                    crate::secrets::keep(pw);
                }
                Some(basic(info))
            }
            (None, None, None) => None,
        };
        if let Some(a) = &auth {
            crate::secrets::keep(a);
        }
        let mut builder = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(3))
            .timeout(Duration::from_secs(15));
        let mut unusable = None;
        let mut tls = native_tls::TlsConnector::builder();
        if let Some(ca) = &access.ca_file {
            match std::fs::read(ca)
                .map_err(|e| e.to_string())
                .and_then(|pem| native_tls::Certificate::from_pem(&pem).map_err(|e| e.to_string()))
            {
                Ok(cert) => drop(tls.add_root_certificate(cert)),
                Err(e) => unusable = Some(format!("registry_ca_file {}: {e}", ca.display())),
            }
        }
        match tls.build() {
            Ok(connector) => builder = builder.tls_connector(Arc::new(connector)),
            Err(e) => unusable = unusable.or(Some(format!("TLS: {e}"))),
        }
        RegistryClient {
            url: url.trim_end_matches('/').to_string(),
            agent: builder.build(),
            auth,
            unusable,
            by_id: Default::default(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<serde_json::Value>,
    ) -> Result<serde_json::Value, RegistryError> {
        if let Some(reason) = &self.unusable {
            return Err(RegistryError::Refused {
                url: self.url.clone(),
                reason: reason.clone(),
            });
        }
        let mut req = self
            .agent
            .request(method, &format!("{}{}", self.url, path))
            .set(
                "Accept",
                "application/vnd.schemaregistry.v1+json, application/json",
            );
        if let Some(auth) = &self.auth {
            req = req.set("Authorization", auth);
        }
        let resp = match body {
            Some(b) => req
                .set("Content-Type", "application/vnd.schemaregistry.v1+json")
                .send_json(b),
            None => req.call(),
        };
        match resp {
            Ok(r) => r
                .into_json()
                .map_err(|e| RegistryError::Body(e.to_string(), self.url.clone())),
            Err(ureq::Error::Status(status @ (401 | 403), r)) => Err(RegistryError::Refused {
                url: self.url.clone(),
                reason: format!("{status} {}", r.into_string().unwrap_or_default().trim()),
            }),
            Err(ureq::Error::Status(status, r)) => {
                let text = r.into_string().unwrap_or_default();
                let message = serde_json::from_str::<serde_json::Value>(&text)
                    .ok()
                    .and_then(|v| {
                        v.get("message")
                            .and_then(|m| m.as_str())
                            .map(str::to_string)
                    })
                    .unwrap_or(text);
                Err(RegistryError::Status {
                    url: self.url.clone(),
                    status,
                    what: format!("{method} {path}"),
                    message,
                })
            }
            Err(e) => {
                let reason = crate::secrets::redact(&e.to_string()).into_owned();
                if ["certificate", "handshake", "InvalidCertificate"]
                    .iter()
                    .any(|w| reason.contains(w))
                {
                    Err(RegistryError::Refused {
                        url: self.url.clone(),
                        reason,
                    })
                } else {
                    Err(RegistryError::Unreachable {
                        url: self.url.clone(),
                        reason,
                    })
                }
            }
        }
    }

    /// The schema text for an id, from the cache when it is there.
    pub fn schema_by_id(&self, id: u32) -> Result<Arc<str>, RegistryError> {
        if let Some(s) = self.by_id.lock().unwrap().get(&id) {
            return Ok(s.clone());
        }
        let v = self.call("GET", &format!("/schemas/ids/{id}"), None)?;
        let schema: Arc<str> = v
            .get("schema")
            .and_then(|s| s.as_str())
            .ok_or_else(|| {
                RegistryError::Body("no `schema` in the answer".into(), self.url.clone())
            })?
            .into();
        self.by_id.lock().unwrap().insert(id, schema.clone());
        Ok(schema)
    }

    /// Registers `schema` under `subject` (or finds it there) and returns its id.
    pub fn register(&self, subject: &str, schema: &str) -> Result<u32, RegistryError> {
        let v = self.call(
            "POST",
            &format!("/subjects/{}/versions", encode(subject)),
            Some(serde_json::json!({ "schema": schema })),
        )?;
        let id =
            v.get("id").and_then(|i| i.as_u64()).ok_or_else(|| {
                RegistryError::Body("no `id` in the answer".into(), self.url.clone())
            })? as u32;
        self.by_id.lock().unwrap().insert(id, schema.into());
        Ok(id)
    }

    pub fn latest(&self, subject: &str) -> Result<Registered, RegistryError> {
        let v = self.call(
            "GET",
            &format!("/subjects/{}/versions/latest", encode(subject)),
            None,
        )?;
        serde_json::from_value(v).map_err(|e| RegistryError::Body(e.to_string(), self.url.clone()))
    }

    pub fn subjects(&self) -> Result<Vec<String>, RegistryError> {
        let v = self.call("GET", "/subjects", None)?;
        serde_json::from_value(v).map_err(|e| RegistryError::Body(e.to_string(), self.url.clone()))
    }

    pub fn versions(&self, subject: &str) -> Result<Vec<i32>, RegistryError> {
        let v = self.call(
            "GET",
            &format!("/subjects/{}/versions", encode(subject)),
            None,
        )?;
        serde_json::from_value(v).map_err(|e| RegistryError::Body(e.to_string(), self.url.clone()))
    }

    pub fn version(&self, subject: &str, version: i32) -> Result<Registered, RegistryError> {
        let v = self.call(
            "GET",
            &format!("/subjects/{}/versions/{version}", encode(subject)),
            None,
        )?;
        serde_json::from_value(v).map_err(|e| RegistryError::Body(e.to_string(), self.url.clone()))
    }

    pub fn is_compatible(&self, subject: &str, schema: &str) -> Result<bool, RegistryError> {
        let v = self.call(
            "POST",
            &format!(
                "/compatibility/subjects/{}/versions/latest",
                encode(subject)
            ),
            Some(serde_json::json!({ "schema": schema })),
        )?;
        Ok(v.get("is_compatible")
            .and_then(|b| b.as_bool())
            .unwrap_or(false))
    }

    /// Loads every version of a subject into the id cache, so that decoding
    /// the records already written under it needs no further request.
    pub fn prefetch_subject(&self, subject: &str) -> Result<usize, RegistryError> {
        let versions = match self.versions(subject) {
            Ok(v) => v,
            Err(RegistryError::Status { status: 404, .. }) => return Ok(0),
            Err(e) => return Err(e),
        };
        for v in &versions {
            let r = self.version(subject, *v)?;
            self.by_id
                .lock()
                .unwrap()
                .insert(r.id, r.schema.as_str().into());
        }
        Ok(versions.len())
    }

    /// Puts a schema in the cache, as if the registry had answered for it.
    pub fn seed(&self, id: u32, schema: &str) {
        self.by_id.lock().unwrap().insert(id, schema.into());
    }

    pub fn cached(&self, id: u32) -> Option<Arc<str>> {
        self.by_id.lock().unwrap().get(&id).cloned()
    }
}

fn encode(subject: &str) -> String {
    subject
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

pub(crate) fn decode_path(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() + 0 && i + 2 <= bytes.len() - 1 {
            if let Ok(b) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(b);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
