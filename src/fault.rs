//! Fault injection for crash tests: `RILL_FAIL_AT=point` (or `point:N`, the
//! Nth time the point is reached) makes the process abort there, as a
//! `kill -9` would stop it, with no cleanup and no flush.
//!
//! Points: `source_read` (a source has handed records to the dataflow),
//! `epoch_sent` (an epoch's records are sent, not yet logged or committed),
//! `epoch_logged` (the epoch log has the epoch, the commit has not
//! happened), `committed` (the epoch is committed, the next not begun),
//! `restore` (in the middle of reading a changelog back).
//!
//! `RILL_PAUSE_AT=point:MS` makes the process wait there instead, to force
//! an interleaving with another process: `fenced` (the writer has fenced
//! earlier instances, its start is not yet logged).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

pub const POINTS: [&str; 5] = [
    "source_read",
    "epoch_sent",
    "epoch_logged",
    "committed",
    "restore",
];

/// Points inside a Postgres sink's epoch transaction: rows and progress
/// inserted, not committed; and committed, with the Kafka commit to come.
pub const POSTGRES_POINTS: [&str; 2] = ["pg_before_commit", "pg_after_commit"];

fn target() -> Option<&'static (String, u64)> {
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    TARGET
        .get_or_init(|| {
            let v = std::env::var("RILL_FAIL_AT").ok()?;
            let (name, n) = match v.split_once(':') {
                Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
                None => (v, 1),
            };
            Some((name, n))
        })
        .as_ref()
}

/// Aborts the process if `RILL_FAIL_AT` names this point and this is the
/// time it asks for.
pub fn point(name: &str) {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    if let Some((want, n)) = target() {
        if want == name && SEEN.fetch_add(1, Ordering::SeqCst) + 1 == *n {
            eprintln!("fault injection: aborting at `{name}` (RILL_FAIL_AT)");
            std::process::abort();
        }
    }
}

/// Waits `MS` milliseconds if `RILL_PAUSE_AT=point:MS` names this point.
pub fn pause(name: &str) {
    let Ok(v) = std::env::var("RILL_PAUSE_AT") else {
        return;
    };
    if let Some((want, ms)) = v.split_once(':') {
        if want == name {
            let ms = ms.parse().unwrap_or(0);
            eprintln!("fault injection: pausing {ms} ms at `{name}` (RILL_PAUSE_AT)");
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
}
