//! Where a job's words go. Diagnostics are `tracing` events (`RUST_LOG`
//! picks them); the lines a person watches — the start, each epoch, the
//! summary — go to stderr as text, or as `tracing` events too when logs
//! are JSON for a log shipper (`--log-format json`), so stderr holds one
//! format.

use std::sync::atomic::{AtomicBool, Ordering};

static JSON: AtomicBool = AtomicBool::new(false);

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Installs the subscriber: `RUST_LOG` (or `RILL_LOG`) filters, warnings
/// and rill's own notes by default.
pub fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG")
        .or_else(|_| tracing_subscriber::EnvFilter::try_from_env("RILL_LOG"))
        .unwrap_or_else(|_| "warn,rill=info".into());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        // Every line passes the secrets filter: a client library may quote
        // a setting that holds a password.
        .with_writer(|| crate::secrets::Redacting(std::io::stderr()))
        .with_target(false);
    match format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => {
            JSON.store(true, Ordering::Relaxed);
            builder.json().flatten_event(true).init()
        }
    }
}

/// A line for the person watching the job: stderr as it is, or an info
/// event when logs are JSON.
pub fn say(line: &str) {
    if JSON.load(Ordering::Relaxed) {
        tracing::info!(target: "rill::progress", "{line}");
    } else {
        eprintln!("{}", crate::secrets::redact(line));
    }
}

/// Whether logs are JSON (a launcher passes the format on).
pub fn is_json() -> bool {
    JSON.load(Ordering::Relaxed)
}
