//! The job's HTTP endpoint, one per process: `GET /metrics` (Prometheus),
//! `GET /api/v1/job`, `/api/v1/graph`, `/api/v1/epochs`, `/api/v1/errors`
//! (JSON), `POST /api/v1/stop`, and at `/` a page that draws the job's
//! graph with live counts (embedded in the binary, no build step). It runs on a thread of its own with a small tokio
//! runtime, never on a worker, and listens on loopback unless told.

use crate::plan::explain::Graph;
use crate::plan::Plan;
use crate::runtime::observe::Observer;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

/// The port a job serves on unless told (`--http`), the first of those a
/// process of a local cluster tries (process p: this + p).
pub const DEFAULT_PORT: u16 = 9249;

/// Ports tried past a busy default one, as Spark's UI moves from 4040 to
/// 4041: several jobs on one machine each get an endpoint.
const DEFAULT_TRIES: u16 = 16;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("--http {given}: not an address like 127.0.0.1:9249 (or `off`)")]
    Address { given: String },
    #[error("cannot serve the job's endpoint on {addr}: {reason}; another job may be using it: pass --http with a free address, or --http off")]
    Bind { addr: String, reason: String },
    #[error("no free port for the job's endpoint from {first} to {last} on {host}: pass --http with a free address, or --http off")]
    NoFreePort { host: String, first: u16, last: u16 },
    #[error(transparent)]
    Access(#[from] super::access::AccessError),
    #[error(transparent)]
    Tls(#[from] crate::connectors::https::TlsSetupError),
}

/// Who may use the endpoint (`--http-token-file`, `--http-insecure`), and
/// over what (`--http-tls-cert`, `--http-tls-key`).
#[derive(Debug, Clone, Default)]
pub struct AccessArgs {
    pub token_file: Option<std::path::PathBuf>,
    pub insecure: bool,
    pub tls_cert: Option<std::path::PathBuf>,
    pub tls_key: Option<std::path::PathBuf>,
}

/// Where the endpoint listens.
#[derive(Debug, Clone, PartialEq)]
pub enum Listen {
    Off,
    /// Given with `--http`: this address or an error.
    Given(SocketAddr),
    /// Nothing given: loopback from this port, moving up while taken.
    Default(u16),
}

impl Listen {
    /// `--http` as given (None: not given), for process `process`.
    pub fn parse(given: Option<&str>, process: usize) -> Result<Self, HttpError> {
        match given {
            None => Ok(Listen::Default(DEFAULT_PORT + process as u16)),
            Some("off") => Ok(Listen::Off),
            Some(a) => a
                .parse()
                .map(Listen::Given)
                .map_err(|_| HttpError::Address { given: a.into() }),
        }
    }

    /// The address process `p` of a local cluster is given: the next
    /// ports after the one given.
    pub fn for_process(&self, p: usize) -> Option<String> {
        match self {
            Listen::Off => Some("off".into()),
            Listen::Given(a) => Some(SocketAddr::new(a.ip(), a.port() + p as u16).to_string()),
            Listen::Default(_) => None,
        }
    }
}

/// Starts the endpoint; returns the address it listens on (None: off).
pub fn serve(
    listen: &Listen,
    access: &AccessArgs,
    observer: Arc<Observer>,
    stop: Arc<AtomicBool>,
    plan: Arc<Plan>,
) -> Result<Option<SocketAddr>, HttpError> {
    let listener = match listen {
        Listen::Off => return Ok(None),
        Listen::Given(addr) => TcpListener::bind(addr).map_err(|e| HttpError::Bind {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?,
        Listen::Default(first) => {
            let last = first.saturating_add(DEFAULT_TRIES - 1);
            (*first..=last)
                .find_map(|port| TcpListener::bind(("127.0.0.1", port)).ok())
                .ok_or(HttpError::NoFreePort {
                    host: "127.0.0.1".into(),
                    first: *first,
                    last,
                })?
        }
    };
    let addr = listener.local_addr().map_err(|e| HttpError::Bind {
        addr: format!("{listen:?}"),
        reason: e.to_string(),
    })?;
    listener
        .set_nonblocking(true)
        .map_err(|e| HttpError::Bind {
            addr: addr.to_string(),
            reason: e.to_string(),
        })?;
    let tls = match (&access.tls_cert, &access.tls_key) {
        (Some(cert), Some(key)) => Some(crate::connectors::https::acceptor(cert, key)?),
        _ => None,
    };
    let access =
        super::access::Access::decide(addr, access.token_file.as_deref(), access.insecure)?;
    let app = router(observer, stop, plan)
        .layer(axum::middleware::map_response(super::access::redact))
        .layer(axum::middleware::from_fn_with_state(
            access,
            super::access::guard,
        ));
    std::thread::Builder::new()
        .name("rill-http".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("the endpoint's runtime");
            rt.block_on(async move {
                let served = match (tokio::net::TcpListener::from_std(listener), tls) {
                    (Ok(l), None) => axum::serve(l, app).await,
                    (Ok(l), Some(tls)) => {
                        match crate::connectors::https::TlsListener::new(l, tls) {
                            Ok(l) => axum::serve(l, app).await,
                            Err(e) => Err(e),
                        }
                    }
                    (Err(e), _) => Err(e),
                };
                if let Err(e) = served {
                    tracing::warn!("the job's endpoint stopped: {e}");
                }
            })
        })
        .expect("spawn the endpoint's thread");
    Ok(Some(addr))
}

#[derive(Clone)]
struct Shared {
    observer: Arc<Observer>,
    stop: Arc<AtomicBool>,
    graph: Arc<Graph>,
    plan: Arc<Plan>,
}

fn router(observer: Arc<Observer>, stop: Arc<AtomicBool>, plan: Arc<Plan>) -> Router {
    let graph = Arc::new(crate::plan::explain::graph(&plan));
    Router::new()
        .route("/", get(page))
        .route("/metrics", get(metrics))
        .route("/api/v1/job", get(job))
        .route("/api/v1/graph", get(graph_of))
        .route("/api/v1/state/{transform}", get(state_of))
        .route("/api/v1/epochs", get(epochs))
        .route("/api/v1/history", get(history))
        .route("/api/v1/errors", get(errors))
        .route("/api/v1/stop", post(stop_job))
        .with_state(Shared {
            observer,
            stop,
            graph,
            plan,
        })
}

#[derive(Debug, serde::Deserialize)]
struct StateQuery {
    key: Option<String>,
    after: Option<String>,
    limit: Option<usize>,
}

/// A pull query, as ksqlDB answers one on a table: the committed value
/// of an aggregate for a key (every window of it, for a windowed one), or
/// a page of keys in order. It reads the transform's changelog as of the
/// last committed epoch, on a thread of the endpoint's own.
async fn state_of(
    State(s): State<Shared>,
    axum::extract::Path(transform): axum::extract::Path<String>,
    axum::extract::Query(q): axum::extract::Query<StateQuery>,
) -> axum::response::Response {
    let plan = s.plan.clone();
    let answer = tokio::task::spawn_blocking(move || pull(&plan, &transform, q)).await;
    match answer {
        Ok(Ok(v)) => Json(v).into_response(),
        Ok(Err((code, error))) => {
            (code, Json(serde_json::json!({ "error": error }))).into_response()
        }
        Err(e) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(serde_json::json!({ "error": e.to_string() })),
        )
            .into_response(),
    }
}

fn pull(
    plan: &Plan,
    transform: &str,
    q: StateQuery,
) -> Result<serde_json::Value, (StatusCode, String)> {
    let stateful: Vec<&crate::plan::Node> = plan
        .nodes
        .iter()
        .filter(|n| matches!(n.kind, crate::plan::NodeKind::Aggregate(_)))
        .collect();
    let Some(node) = stateful.iter().find(|n| n.name == transform) else {
        let names: Vec<&str> = stateful.iter().map(|n| n.name.as_str()).collect();
        return Err((
            StatusCode::NOT_FOUND,
            format!(
                "no stateful transform {transform} in job {}: it has {names:?}",
                plan.job.name
            ),
        ));
    };
    let crate::plan::NodeKind::Aggregate(a) = &node.kind else {
        unreachable!()
    };
    let (epoch, entries) = crate::runtime::state_read::committed_state(plan, transform)
        .map_err(|e| (StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let mut rows: Vec<(String, crate::record::Row)> = entries
        .iter()
        .filter_map(|e| crate::dataflow::aggregate::committed_row(e, a.having.as_ref()))
        .collect();
    rows.sort_by(|x, y| x.0.cmp(&y.0));
    let limit = q.limit.unwrap_or(100).max(1);
    let (page, next): (Vec<_>, Option<String>) = match &q.key {
        Some(k) => {
            let window = format!("{k}@");
            let hits = rows
                .into_iter()
                .filter(|(key, _)| key == k || key.starts_with(&window))
                .collect();
            (hits, None)
        }
        None => {
            let after: Vec<_> = rows
                .into_iter()
                .filter(|(key, _)| q.after.as_ref().is_none_or(|a| key > a))
                .collect();
            let more = after.len() > limit;
            let page: Vec<_> = after.into_iter().take(limit).collect();
            let next = more.then(|| page.last().map(|(k, _)| k.clone())).flatten();
            (page, next)
        }
    };
    let schema = &node.outputs[0];
    let rows: Vec<serde_json::Value> = page
        .iter()
        .map(|(key, row)| {
            let text = crate::format::json::row_to_string(row, schema, false);
            serde_json::json!({
                "key": key,
                "value": serde_json::from_str::<serde_json::Value>(&text).unwrap_or_default(),
            })
        })
        .collect();
    Ok(serde_json::json!({
        "transform": transform,
        "committed_epoch": epoch,
        "rows": rows,
        "next": next,
    }))
}

async fn page() -> impl IntoResponse {
    axum::response::Html(include_str!("page.html"))
}

async fn graph_of(State(s): State<Shared>) -> impl IntoResponse {
    Json(s.graph.as_ref().clone())
}

/// OpenMetrics for a scraper that asks for it, else the Prometheus text
/// format that every scraper and `promtool check metrics` read.
async fn metrics(State(s): State<Shared>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let text = s.observer.metrics_text();
    let openmetrics = headers
        .get(header::ACCEPT)
        .and_then(|a| a.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    if openmetrics {
        (
            [(
                header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
    } else {
        (
            [(
                header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            prometheus_text(&text),
        )
    }
}

/// The OpenMetrics text as the Prometheus text format has it: a counter's
/// HELP and TYPE name its samples' `_total` name, and there is no UNIT or
/// EOF line.
fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line.starts_with("# UNIT ") || line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

async fn job(State(s): State<Shared>) -> impl IntoResponse {
    Json(s.observer.job())
}

async fn epochs(State(s): State<Shared>) -> impl IntoResponse {
    Json(s.observer.epochs())
}

async fn history(State(s): State<Shared>) -> impl IntoResponse {
    Json(s.observer.history())
}

async fn errors(State(s): State<Shared>) -> impl IntoResponse {
    Json(s.observer.errors())
}

/// Finishes the open epoch, commits it and exits, as Ctrl-C does.
async fn stop_job(State(s): State<Shared>) -> impl IntoResponse {
    s.stop.store(true, Ordering::SeqCst);
    s.observer.set_state("stopping");
    (
        StatusCode::ACCEPTED,
        Json(serde_json::json!({ "stopping": true })),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_is_on_loopback_unless_told_and_a_cluster_takes_the_next_ports() {
        assert_eq!(Listen::parse(None, 0).unwrap(), Listen::Default(9249));
        assert_eq!(Listen::parse(None, 2).unwrap(), Listen::Default(9251));
        assert_eq!(Listen::parse(Some("off"), 0).unwrap(), Listen::Off);
        let given = Listen::parse(Some("0.0.0.0:8000"), 0).unwrap();
        assert_eq!(given.for_process(2).as_deref(), Some("0.0.0.0:8002"));
        assert_eq!(
            Listen::parse(Some("9249"), 0).unwrap_err().to_string(),
            "--http 9249: not an address like 127.0.0.1:9249 (or `off`)"
        );
    }

    #[test]
    fn counters_are_named_by_their_samples_in_the_prometheus_text_format() {
        let om = "# HELP rill_epochs Epochs committed.\n# TYPE rill_epochs counter\nrill_epochs_total{job=\"b\"} 3\n# HELP rill_commit_duration_seconds Commit.\n# TYPE rill_commit_duration_seconds histogram\n# UNIT rill_commit_duration_seconds seconds\nrill_commit_duration_seconds_count 1\n# EOF\n";
        assert_eq!(
            prometheus_text(om),
            "# HELP rill_epochs_total Epochs committed.\n# TYPE rill_epochs_total counter\nrill_epochs_total{job=\"b\"} 3\n# HELP rill_commit_duration_seconds Commit.\n# TYPE rill_commit_duration_seconds histogram\nrill_commit_duration_seconds_count 1\n"
        );
    }

    #[test]
    fn a_given_port_in_use_is_refused_and_a_default_one_moves_up() {
        let taken = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = taken.local_addr().unwrap().port();
        let nodes = crate::runtime::observe::Nodes {
            sources: &[],
            transforms: &[],
            sinks: &[],
        };
        let observer = Arc::new(Observer::new("t", 0, 1, 1, nodes));
        let stop = Arc::new(AtomicBool::new(false));
        let given = Listen::Given(taken.local_addr().unwrap());
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
        let spec = crate::spec::Spec::load(&root.join("jobs/bank.toml")).unwrap();
        let plan = Arc::new(Plan::build(&spec).unwrap());
        let err = serve(
            &given,
            &AccessArgs::default(),
            observer.clone(),
            stop.clone(),
            plan.clone(),
        )
        .unwrap_err();
        assert!(
            err.to_string().starts_with(&format!(
                "cannot serve the job's endpoint on 127.0.0.1:{port}: "
            )),
            "{err}"
        );
        let moved = serve(
            &Listen::Default(port),
            &AccessArgs::default(),
            observer,
            stop,
            plan,
        )
        .unwrap()
        .unwrap();
        assert!(moved.ip().is_loopback());
        assert_ne!(moved.port(), port);
    }
}
