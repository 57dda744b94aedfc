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
//! In a cluster, `decided` (a process other than 0 knows the epoch is
//! logged and has not written its files and rows; process 0 waits to
//! commit). `RILL_FAIL_PROCESS=i` limits the fault to process i of the
//! cluster.
//!
//! `RILL_PANIC_AT=point` (or `point:N`) panics the thread that reaches the
//! point instead, once: at `source_read`, a timely worker.
//!
//! `RILL_ERROR_AT=point` (or `point:N`) makes the process fail there with
//! an error it can recover from, as a refusal by the broker would, once:
//! `flushed` (an epoch's records are with the broker in its open
//! transaction, which then has to be aborted).
//!
//! `RILL_CUT_LINK_AT=point` (or `point:N`) makes the data links of a
//! process of a cluster (timely's sockets) go silent both ways there, as a
//! network partition would: nothing closes, nothing more arrives, and the
//! control links to process 0 stay up.
//!
//! `RILL_PAUSE_AT=point:MS` makes the process wait there instead, the first
//! time, to force an interleaving with another process: `fenced` (the
//! writer has fenced earlier instances, its start is not yet logged),
//! `epoch_logged`, or `start_plan_received` (a process of a cluster other
//! than 0 has process 0's plan of the start, and has not looked at its
//! sources yet).

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;

pub const POINTS: [&str; 5] = [
    "source_read",
    "epoch_sent",
    "epoch_logged",
    "committed",
    "restore",
];

/// The points a cluster passes.
pub const CLUSTER_POINTS: [&str; 6] = [
    "source_read",
    "epoch_sent",
    "epoch_logged",
    "decided",
    "committed",
    "restore",
];

static PROCESS: AtomicU64 = AtomicU64::new(u64::MAX);

/// This process is process `i` of a cluster.
pub fn set_process(i: usize) {
    PROCESS.store(i as u64, Ordering::SeqCst);
}

fn this_process_is_targeted() -> bool {
    match std::env::var("RILL_FAIL_PROCESS") {
        Ok(p) => p.parse::<u64>().ok() == Some(PROCESS.load(Ordering::SeqCst)),
        Err(_) => true,
    }
}

/// Points inside a Postgres sink's epoch transaction: rows and progress
/// inserted, not committed; and committed, with the Kafka commit to come.
pub const POSTGRES_POINTS: [&str; 2] = ["pg_before_commit", "pg_after_commit"];

fn target() -> Option<&'static (String, u64)> {
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    TARGET
        .get_or_init(|| parse(std::env::var("RILL_FAIL_AT").ok()?))
        .as_ref()
}

/// Aborts the process if `RILL_FAIL_AT` names this point and this is the
/// time it asks for; panics the thread if `RILL_PANIC_AT` does (a worker's
/// panic, for the tests of what the process does about it).
pub fn point(name: &str) {
    static PANICKED: AtomicU64 = AtomicU64::new(0);
    static PANIC: OnceLock<Option<(String, u64)>> = OnceLock::new();
    if let Some((want, n)) = PANIC.get_or_init(|| parse(std::env::var("RILL_PANIC_AT").ok()?)) {
        if want == name
            && this_process_is_targeted()
            && PANICKED.fetch_add(1, Ordering::SeqCst) + 1 == *n
        {
            panic!("injected panic at `{name}` (RILL_PANIC_AT)");
        }
    }
    static CUT_SEEN: AtomicU64 = AtomicU64::new(0);
    if let Some((want, n)) = cut_target() {
        if want == name
            && this_process_is_targeted()
            && CUT_SEEN.fetch_add(1, Ordering::SeqCst) + 1 == *n
        {
            eprintln!("fault injection: data links cut at `{name}` (RILL_CUT_LINK_AT)");
            LINKS_CUT.store(true, Ordering::SeqCst);
        }
    }
    static SEEN: AtomicU64 = AtomicU64::new(0);
    if let Some((want, n)) = target() {
        if want == name
            && this_process_is_targeted()
            && SEEN.fetch_add(1, Ordering::SeqCst) + 1 == *n
        {
            eprintln!("fault injection: aborting at `{name}` (RILL_FAIL_AT)");
            std::process::abort();
        }
    }
}

fn cut_target() -> Option<&'static (String, u64)> {
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    TARGET
        .get_or_init(|| parse(std::env::var("RILL_CUT_LINK_AT").ok()?))
        .as_ref()
}

static LINKS_CUT: AtomicBool = AtomicBool::new(false);

/// The sockets timely is to use: the given ones, or, when
/// `RILL_CUT_LINK_AT` targets this process, loopback sockets relayed to
/// them by threads that stop relaying (and keep every socket open) once
/// the links are cut.
pub fn data_links(sockets: Vec<Option<TcpStream>>) -> Vec<Option<TcpStream>> {
    if cut_target().is_none() || !this_process_is_targeted() {
        return sockets;
    }
    sockets
        .into_iter()
        .map(|s| {
            s.map(relayed)
                .transpose()
                .expect("a loopback relay for a data link")
        })
        .collect()
}

fn relayed(real: TcpStream) -> std::io::Result<TcpStream> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let near = TcpStream::connect(listener.local_addr()?)?;
    let (far, _) = listener.accept()?;
    for s in [&near, &far, &real] {
        s.set_nodelay(true)?;
    }
    relay(far.try_clone()?, real.try_clone()?);
    relay(real, far);
    Ok(near)
}

fn relay(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 16];
        while let Ok(n @ 1..) = from.read(&mut buf) {
            while LINKS_CUT.load(Ordering::SeqCst) {
                std::thread::sleep(std::time::Duration::from_secs(1));
            }
            if to.write_all(&buf[..n]).is_err() {
                return;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// Whether `RILL_ERROR_AT` asks for a recoverable failure at this point,
/// this time.
pub fn error(name: &str) -> bool {
    static SEEN: AtomicU64 = AtomicU64::new(0);
    static TARGET: OnceLock<Option<(String, u64)>> = OnceLock::new();
    let target = TARGET.get_or_init(|| parse(std::env::var("RILL_ERROR_AT").ok()?));
    match target {
        Some((want, n)) if want == name && this_process_is_targeted() => {
            SEEN.fetch_add(1, Ordering::SeqCst) + 1 == *n
        }
        _ => false,
    }
}

/// `point` or `point:N`.
fn parse(v: String) -> Option<(String, u64)> {
    Some(match v.split_once(':') {
        Some((name, n)) => (name.to_string(), n.parse().unwrap_or(1)),
        None => (v, 1),
    })
}

/// Waits the first time the process reaches the point `RILL_PAUSE_AT`
/// names: `point:MS` for that many milliseconds, `point:file:PATH` until
/// the file exists (at most two minutes), so a test can order two
/// processes' steps exactly.
pub fn pause(name: &str) {
    static PAUSED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
    let Ok(v) = std::env::var("RILL_PAUSE_AT") else {
        return;
    };
    let Some((want, how)) = v.split_once(':') else {
        return;
    };
    if want != name || PAUSED.swap(true, Ordering::SeqCst) {
        return;
    }
    match how.strip_prefix("file:") {
        Some(path) => {
            eprintln!("fault injection: pausing at `{name}` until {path} exists (RILL_PAUSE_AT)");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
            while !std::path::Path::new(path).exists() && std::time::Instant::now() < deadline {
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
        }
        None => {
            let ms = how.parse().unwrap_or(0);
            eprintln!("fault injection: pausing {ms} ms at `{name}` (RILL_PAUSE_AT)");
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
    }
}
