//! `jobctl submit`: run a job in this process, on a local cluster of
//! processes, or as one process of a cluster across machines.

use super::load_plan;
use crate::connectors::kafka_admin;
use crate::ops::http::{self, Listen};
use crate::runtime::cluster::{fingerprint, Identity};
use crate::runtime::cluster_job::{run_process, Place};
use crate::runtime::local::{self, RunOptions, RunSummary};
use crate::runtime::observe::{Nodes, Observer};
use crate::runtime::RunError;
use anyhow::{bail, Context, Result};
use clap::Args;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How often the lag of the sources is measured.
const LAG_EVERY: Duration = Duration::from_secs(5);

#[derive(Args, Clone)]
pub struct SubmitArgs {
    pub job: PathBuf,
    /// Worker threads per process (default: the machine's cores).
    #[arg(long)]
    pub workers: Option<usize>,
    /// Run on a local cluster of this many processes (127.0.0.1, ports
    /// picked at start), restarted as a whole when one fails.
    #[arg(long, conflicts_with_all = ["hostfile", "process"])]
    pub processes: Option<usize>,
    /// Run one process of a cluster: a file with one host:port per line,
    /// in process order (with --process).
    #[arg(long, requires = "process")]
    pub hostfile: Option<PathBuf>,
    /// This process's index in the hostfile, from 0 (with --hostfile).
    #[arg(long, requires = "hostfile")]
    pub process: Option<usize>,
    /// How long a process waits for the others to answer at start.
    #[arg(long, default_value_t = 30_000)]
    pub connect_timeout_ms: u64,
    /// How long a cluster's epochs may stop finishing while every process
    /// answers before the cluster stops to be started again (a link
    /// between processes that carries nothing, a stuck worker).
    #[arg(long, default_value_t = 30_000)]
    pub stall_timeout_ms: u64,
    /// Start the job again this many times after a failure that may pass
    /// (a lost process, a broker that went away), waiting 1 s, 2 s, 4 s...
    /// With --hostfile a failed process exits instead, for its supervisor
    /// to start again.
    #[arg(long, default_value_t = 3)]
    pub restart_attempts: u32,
    /// Stop once every partition reaches the end offset it had at start.
    #[arg(long)]
    pub until_caught_up: bool,
    /// Run the epochs the log holds and the job has yet to commit, as
    /// logged, and stop: no new epoch, no window fired for the end of
    /// input (finishing an epoch in doubt on the shape that cut it).
    #[arg(long, hide = true, conflicts_with = "until_caught_up")]
    pub finish_in_doubt: bool,
    /// Print every record in and out, as the seed pipelines do.
    #[arg(long)]
    pub trace_records: bool,
    /// Do not print a progress line per epoch.
    #[arg(long)]
    pub quiet: bool,
    /// Read at most this many records per second (for crash tests).
    #[arg(long, hide = true)]
    pub max_records_per_second: Option<f64>,
    /// Serve Prometheus metrics and the REST API on this address, or
    /// `off`. Default: 127.0.0.1:9249, or the next free port (process p
    /// of a local cluster from 9249 + p).
    #[arg(long, value_name = "ADDR|off")]
    pub http: Option<String>,
    /// Require `Authorization: Bearer TOKEN` on the endpoint, TOKEN being
    /// this file's content (needed off loopback unless --http-insecure).
    #[arg(long, value_name = "FILE")]
    pub http_token_file: Option<PathBuf>,
    /// Serve the endpoint off loopback without a token.
    #[arg(long)]
    pub http_insecure: bool,
    /// Serve the endpoint over https with this certificate (a PEM chain)
    /// and --http-tls-key.
    #[arg(long, value_name = "FILE", requires = "http_tls_key")]
    pub http_tls_cert: Option<PathBuf>,
    /// The key of --http-tls-cert (PEM, not encrypted).
    #[arg(long, value_name = "FILE", requires = "http_tls_cert")]
    pub http_tls_key: Option<PathBuf>,
    /// With --hostfile: a file every process of the cluster is given, whose
    /// content each proves it knows before a peer takes it in.
    #[arg(long, value_name = "FILE")]
    pub cluster_secret_file: Option<PathBuf>,
    /// The run of the cluster this process belongs to; every process of
    /// one run has the same (the local launcher sets it).
    #[arg(long, hide = true)]
    pub generation: Option<u64>,
}

pub fn run(args: SubmitArgs, started: Instant) -> Result<()> {
    let plan = Arc::new(load_plan(&args.job)?);
    let workers = args
        .workers
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    if workers == 0 {
        bail!("--workers must be at least 1");
    }
    match args.processes {
        Some(0) => bail!("--processes must be at least 1"),
        Some(n) if n > 1 => return super::launch::run(&args, &plan, n, workers),
        _ => {}
    }
    // A process that dies of a signal still says what it was doing.
    crate::last_words::install(&plan.job.name);
    let stop = Arc::new(AtomicBool::new(false));
    let process = args.process.unwrap_or(0);
    let place = match (&args.hostfile, args.process) {
        (Some(hostfile), Some(process)) => Some(place(&args, &plan, hostfile, process, workers)?),
        _ => None,
    };
    let processes = place.as_ref().map_or(1, |p| p.addresses.len());
    let sources: Vec<(String, String)> = plan
        .sources()
        .map(|(_, n, s)| (n.name.clone(), s.config.topic.clone()))
        .collect();
    let transforms: Vec<String> = plan.transforms().map(|n| n.name.clone()).collect();
    let sinks: Vec<String> = plan.sinks().map(|(_, n, _)| n.name.clone()).collect();
    let nodes = Nodes {
        sources: &sources,
        transforms: &transforms,
        sinks: &sinks,
    };
    let observer = Arc::new(Observer::new(
        &plan.job.name,
        process,
        processes,
        workers,
        nodes,
    ));
    let listen = Listen::parse(args.http.as_deref(), process)?;
    let access = http::AccessArgs {
        token_file: args.http_token_file.clone(),
        insecure: args.http_insecure,
        tls_cert: args.http_tls_cert.clone(),
        tls_key: args.http_tls_key.clone(),
    };
    let endpoint = http::serve(
        &listen,
        &access,
        observer.clone(),
        stop.clone(),
        plan.clone(),
    )?;
    // Lag costs a read of each source topic's end every few seconds: only
    // for an endpoint that shows it.
    if endpoint.is_some() {
        let brokers = plan.job.brokers.clone();
        observer.watch_lag(LAG_EVERY, move |topic| {
            let n = kafka_admin::partition_count(&brokers, topic).ok()??;
            let ends = kafka_admin::end_offsets(&brokers, topic, n).ok()?;
            Some(ends.into_iter().map(|(_, end)| end).collect())
        });
    }
    let s = stop.clone();
    // The first Ctrl-C stops the sources and lets the open epoch finish; a
    // second one exits at once. Counted apart from `stop`, which a cluster
    // also sets when another process was told to stop first: the signal
    // the launcher passes on then arrives as the first, not the second.
    let signalled = AtomicBool::new(false);
    let _ = ctrlc::set_handler(move || {
        if signalled.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        s.store(true, Ordering::SeqCst);
        crate::log::say("stopping: finishing the open epoch (Ctrl-C again to quit now)");
    });
    let opts = RunOptions {
        workers,
        until_caught_up: args.until_caught_up,
        replay_only: args.finish_in_doubt,
        trace_records: args.trace_records,
        progress: !args.quiet,
        max_rate: args.max_records_per_second,
        observer: Some(observer.clone()),
    };
    let name = plan.job.name.clone();
    if let Some(place) = place {
        if !args.quiet {
            say_starting(&plan, &args, place.addresses.len(), workers, endpoint);
        }
        let summary = run_process(plan.clone(), opts, stop, place)
            .with_context(|| format!("job {name} failed (process {process})"))?;
        if process == 0 {
            crate::log::say(&summary.line(&name, started.elapsed()));
        } else if !args.quiet {
            crate::log::say(&format!(
                "process {process}: {}",
                summary.line(&name, started.elapsed())
            ));
        }
        return Ok(());
    }
    if !args.quiet {
        say_starting(&plan, &args, 1, workers, endpoint);
    }
    // An epoch in doubt from a start of another shape is finished on that
    // shape first, as the local launcher does, then this run starts
    // again. An instance of that shape still running may leave another
    // before it learns that this one fenced it.
    let mut finished = 0;
    let summary = loop {
        match run_restarting(&args, &plan, opts.clone(), stop.clone()) {
            Err(e) if in_doubt(&e) && !args.finish_in_doubt && finished < 3 => {
                finished += 1;
                super::launch::finish_in_doubt(&args, &plan, (1, workers))?;
            }
            r => break r,
        }
    }
    .with_context(|| format!("job {name} failed"))?;
    crate::log::say(&summary.line(&name, started.elapsed()));
    Ok(())
}

fn in_doubt(e: &RunError) -> bool {
    matches!(
        e,
        RunError::Recovery(crate::runtime::recovery::RecoveryError::InDoubt { .. })
    )
}

fn say_starting(
    plan: &crate::plan::Plan,
    args: &SubmitArgs,
    processes: usize,
    workers: usize,
    endpoint: Option<std::net::SocketAddr>,
) {
    let threads = format!("{workers} worker{}", if workers == 1 { "" } else { "s" });
    crate::log::say(&format!(
        "job {} on {}: brokers {}, epochs every {} ms{}{}",
        plan.job.name,
        if processes > 1 {
            format!("{processes} processes of {threads}")
        } else {
            threads
        },
        plan.job.brokers,
        plan.job.checkpoint_interval_ms,
        if args.until_caught_up {
            ", until caught up"
        } else {
            ""
        },
        endpoint.map_or(String::new(), |a| format!(
            ", metrics and API on http://{a}"
        ))
    ));
}

/// The wait before restart `n` (from 1): 1 s, 2 s, 4 s... at most 30 s.
pub fn backoff(n: u32) -> Duration {
    Duration::from_secs(1u64 << n.saturating_sub(1).min(5)).min(Duration::from_secs(30))
}

/// A run that lasted this long before it failed was healthy: its failure
/// starts the count of restarts afresh, as Flink's exponential-delay
/// strategy resets after a stable period, so a job that runs for months
/// is not given up on for three failures weeks apart.
pub const STABLE_RUN: Duration = Duration::from_secs(600);

/// Restarts counted so far, once a run that lasted `lived` has failed.
pub fn restarts_after(restarts: u32, lived: Duration) -> u32 {
    if lived >= STABLE_RUN {
        0
    } else {
        restarts
    }
}

/// A single process, started again after a failure that may pass.
fn run_restarting(
    args: &SubmitArgs,
    plan: &Arc<crate::plan::Plan>,
    opts: RunOptions,
    stop: Arc<AtomicBool>,
) -> Result<RunSummary, RunError> {
    let mut restarts = 0;
    loop {
        let started = std::time::Instant::now();
        let result = local::run(plan.clone(), opts.clone(), stop.clone());
        restarts = restarts_after(restarts, started.elapsed());
        match result {
            Err(e)
                if e.is_transient()
                    && restarts < args.restart_attempts
                    && !stop.load(Ordering::SeqCst) =>
            {
                restarts += 1;
                if let Some(o) = &opts.observer {
                    o.restarted();
                    o.set_state("restarting");
                }
                let wait = backoff(restarts);
                tracing::warn!(
                    "job {} failed: {e}\nstarting it again in {} s (restart {restarts} of {})",
                    plan.job.name,
                    wait.as_secs(),
                    args.restart_attempts
                );
                std::thread::sleep(wait);
            }
            r => return r,
        }
    }
}

/// This process's place in the cluster the hostfile lists.
fn place(
    args: &SubmitArgs,
    plan: &crate::plan::Plan,
    hostfile: &PathBuf,
    process: usize,
    workers: usize,
) -> Result<Place> {
    let text = std::fs::read_to_string(hostfile)
        .with_context(|| format!("cannot read hostfile {}", hostfile.display()))?;
    let addresses: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect();
    let job_text =
        std::fs::read(&args.job).with_context(|| format!("cannot read {}", args.job.display()))?;
    let fingerprint = fingerprint(&job_text, workers).context("cannot read this binary")?;
    // Unless the launcher gave one, a run of the cluster is told by the
    // newest start in the job's epoch log: a process left over from an
    // earlier run read an older one.
    let generation = match args.generation {
        Some(g) => g,
        None => newest_start(plan)? as u64,
    };
    Ok(Place {
        addresses,
        process,
        identity: Identity {
            fingerprint,
            generation,
            key: cluster_key(args)?,
        },
        connect_timeout: Duration::from_millis(args.connect_timeout_ms),
        stall_timeout: Duration::from_millis(args.stall_timeout_ms),
    })
}

/// The key of the cluster's shared secret: `--cluster-secret-file`, or
/// the one a local cluster's launcher made for its processes, or none.
fn cluster_key(args: &SubmitArgs) -> Result<[u8; 32]> {
    if let Some(path) = &args.cluster_secret_file {
        let secret = std::fs::read(path)
            .with_context(|| format!("cannot read the cluster secret {}", path.display()))?;
        let secret = secret.trim_ascii();
        if secret.is_empty() {
            bail!(
                "the cluster secret {} is empty; put a long random string in it (`openssl rand -hex 32 > {}`)",
                path.display(),
                path.display()
            );
        }
        return Ok(Identity::key_of(secret));
    }
    Ok(match std::env::var(super::launch::SECRET_ENV) {
        Ok(secret) if !secret.is_empty() => Identity::key_of(secret.as_bytes()),
        _ => [0; 32],
    })
}

/// The attempt of the job's newest start, which tells a run of a cluster
/// started from a hostfile: read again for a while when the broker does
/// not answer, for a generation guessed as 0 would name this process left
/// over from an earlier run.
fn newest_start(plan: &crate::plan::Plan) -> Result<u32> {
    let log = plan.job.epoch_log_topic();
    let mut tries = 0;
    loop {
        match crate::runtime::epoch_log::newest_attempt(&plan.job.brokers, &log) {
            Ok(attempt) => return Ok(attempt),
            Err(e) if tries < 10 => {
                tries += 1;
                tracing::warn!("cannot read the epoch log {log} ({e}); trying again in 1 s");
                std::thread::sleep(Duration::from_secs(1));
            }
            Err(e) => {
                return Err(e).with_context(|| {
                    format!("cannot read the epoch log {log}, which tells this run of the cluster from an earlier one; is the broker at {} up?", plan.job.brokers)
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_wait_longer_each_time_and_count_afresh_after_a_stable_run() {
        let waits: Vec<u64> = (1..=8).map(|n| backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(restarts_after(2, Duration::from_secs(5)), 2);
        assert_eq!(restarts_after(2, STABLE_RUN - Duration::from_millis(1)), 2);
        assert_eq!(restarts_after(3, STABLE_RUN), 0);
    }
}
