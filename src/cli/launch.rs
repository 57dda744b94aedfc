//! `jobctl submit --processes N`: a cluster of N local processes. The
//! launcher picks N free ports on 127.0.0.1, writes them to a hostfile and
//! starts `jobctl submit --hostfile F --process i` N times. Process 0
//! prints the progress lines and the summary for the whole cluster; what
//! the others print is prefixed with their index. When a process fails,
//! the others stop within seconds (their watchdog), and the launcher
//! starts the whole cluster again, as Flink restarts a job from its last
//! checkpoint.

use super::submit::{backoff, restarts_after, SubmitArgs};
use crate::plan::Plan;
use anyhow::{bail, Context, Result};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// How long the other processes get to stop by themselves after one
/// failed, before the launcher kills them.
const GRACE: Duration = Duration::from_secs(10);

/// The exit status of a process that found an epoch in doubt that its
/// cluster's shape cannot finish.
pub const IN_DOUBT_EXIT: i32 = 3;

/// The environment variable in which a local cluster's launcher gives its
/// processes their shared secret.
pub const SECRET_ENV: &str = "RILL_CLUSTER_SECRET";

/// One random secret per launcher, which its processes prove to each
/// other: no other process on the machine joins them.
fn secret() -> &'static str {
    static SECRET: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    SECRET.get_or_init(|| {
        let mut bytes = [0u8; 32];
        openssl::rand::rand_bytes(&mut bytes).expect("random bytes from OpenSSL");
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        crate::secrets::keep(&hex);
        hex
    })
}

/// The exit status of a process fenced by a newer start of its job: the
/// job runs elsewhere, and starting this one again would only fence that
/// one in turn. A supervisor should not restart on it (systemd:
/// `RestartPreventExitStatus=4`).
pub const FENCED_EXIT: i32 = 4;

pub fn run(args: &SubmitArgs, plan: &Plan, n: usize, workers: usize) -> Result<()> {
    match run_cluster(args, plan, n, workers)? {
        Ended::InDoubt => {
            finish_in_doubt(args, plan, (n, workers))?;
            match run_cluster(args, plan, n, workers)? {
                Ended::Done => Ok(()),
                Ended::InDoubt => bail!(
                    "job {}: an epoch is still in doubt after finishing it on its shape",
                    plan.job.name
                ),
            }
        }
        Ended::Done => Ok(()),
    }
}

/// How a run of the cluster ended, when it did not fail.
enum Ended {
    Done,
    /// Process 0 found an epoch in doubt from a cluster of another shape.
    InDoubt,
}

/// An epoch that some writers committed and others did not is finished
/// on the shape that decided it (records go to workers by their number):
/// if the job last ran at another size, it first runs at that size until
/// it has caught up, then at the new one. Called once a start has fenced
/// the writers: before that, a commit may still be landing.
pub fn finish_in_doubt(args: &SubmitArgs, plan: &Plan, shape: (usize, usize)) -> Result<()> {
    let now = (shape.0 as u32, shape.1 as u32);
    let Some((epoch, processes, workers)) = crate::runtime::committed::in_doubt(plan, now)? else {
        return Ok(());
    };
    let (processes, workers) = (processes as usize, workers.max(1) as usize);
    tracing::warn!(
        "job {} stopped in the middle of epoch {epoch} on {processes} process{} of {workers} workers: finishing the epochs it logged on that shape, before running on {} process{} of {} workers",
        plan.job.name,
        if processes == 1 { "" } else { "es" },
        shape.0,
        if shape.0 == 1 { "" } else { "es" },
        shape.1
    );
    // Only the epochs the log holds and nothing more: a bounded run would
    // also fire every open window for the end of its input.
    let mut catch_up = args.clone();
    catch_up.until_caught_up = false;
    catch_up.finish_in_doubt = true;
    catch_up.quiet = true;
    catch_up.restart_attempts = 0;
    catch_up.max_records_per_second = None;
    catch_up.http = Some("off".into());
    if processes == 1 {
        let status = Command::new(std::env::current_exe()?)
            .arg("submit")
            .arg(&args.job)
            .args(["--finish-in-doubt", "--quiet", "--restart-attempts", "0"])
            .args(["--http", "off"])
            .args(["--workers", &workers.to_string()])
            .status()
            .context("cannot start the job's process")?;
        if !status.success() {
            bail!("cannot finish epoch {epoch} of job {}", plan.job.name);
        }
        return Ok(());
    }
    match run_cluster(&catch_up, plan, processes, workers)
        .with_context(|| format!("cannot finish epoch {epoch} of job {}", plan.job.name))?
    {
        Ended::Done => Ok(()),
        Ended::InDoubt => bail!(
            "cannot finish epoch {epoch} of job {}: it is in doubt on its own shape",
            plan.job.name
        ),
    }
}

fn run_cluster(args: &SubmitArgs, plan: &Plan, n: usize, workers: usize) -> Result<Ended> {
    let stopping = Arc::new(AtomicBool::new(false));
    let children: Arc<Mutex<Vec<u32>>> = Arc::default();
    {
        let (stopping, children) = (stopping.clone(), children.clone());
        // Ctrl-C in a terminal reaches every process of the group; a
        // signal sent to the launcher alone is passed on.
        let _ = ctrlc::set_handler(move || {
            if stopping.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            for pid in children.lock().unwrap().iter() {
                let _ = Command::new("kill")
                    .args(["-INT", &pid.to_string()])
                    .status();
            }
        });
    }
    let dir = std::env::temp_dir().join(format!("rill-{}-{}", plan.job.name, std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let hostfile = dir.join("hostfile");
    let mut restarts = 0;
    loop {
        let addresses = free_addresses(n)?;
        std::fs::write(&hostfile, addresses.join("\n") + "\n")
            .with_context(|| format!("cannot write {}", hostfile.display()))?;
        let generation = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let mut procs = Vec::new();
        let mut voices = Vec::new();
        for i in 0..n {
            let (child, voice) = spawn(args, &hostfile, i, workers, generation, restarts > 0)?;
            children.lock().unwrap().push(child.id());
            procs.push(child);
            voices.push(voice);
        }
        let started = std::time::Instant::now();
        let Supervised {
            failed: failure,
            zero,
            fenced,
        } = supervise(procs);
        // Every process has ended: what each said is printed before the
        // launcher says why the cluster stopped.
        for voice in voices {
            let _ = voice.join();
        }
        restarts = restarts_after(restarts, started.elapsed());
        children.lock().unwrap().clear();
        let Some((process, code)) = failure else {
            let _ = std::fs::remove_dir_all(&dir);
            return Ok(Ended::Done);
        };
        if zero == Some(IN_DOUBT_EXIT) {
            return Ok(Ended::InDoubt);
        }
        // Whichever process learnt it first: the others may have failed
        // of losing it, or of a commit that went unanswered.
        if let Some(fenced) = fenced {
            let _ = std::fs::remove_dir_all(&dir);
            bail!(
                "job {}: process {fenced} was fenced: another instance of the job has started since, and runs on; this cluster stops and is not started again",
                plan.job.name
            );
        }
        let reason = match code {
            Some(c) => format!("exited with status {c}"),
            None => "was killed by a signal".to_string(),
        };
        if stopping.load(Ordering::SeqCst) || restarts >= args.restart_attempts {
            let _ = std::fs::remove_dir_all(&dir);
            bail!(
                "job {} failed: process {process} {reason}{}",
                plan.job.name,
                if restarts > 0 {
                    format!(" (after {restarts} restarts of the cluster)")
                } else {
                    String::new()
                }
            );
        }
        restarts += 1;
        let wait = backoff(restarts);
        tracing::warn!(
            "cluster of job {}: process {process} {reason}; starting all {n} processes again in {} s (restart {restarts} of {})",
            plan.job.name,
            wait.as_secs(),
            args.restart_attempts
        );
        std::thread::sleep(wait);
    }
}

fn free_addresses(n: usize) -> Result<Vec<String>> {
    let held = (0..n)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
        .collect::<std::io::Result<Vec<_>>>()
        .context("cannot find free ports on 127.0.0.1")?;
    Ok(held
        .iter()
        .map(|l| l.local_addr().map(|a| a.to_string()))
        .collect::<std::io::Result<_>>()?)
}

fn spawn(
    args: &SubmitArgs,
    hostfile: &std::path::Path,
    i: usize,
    workers: usize,
    generation: u64,
    restarted: bool,
) -> Result<(Child, std::thread::JoinHandle<()>)> {
    let exe = std::env::current_exe().context("cannot find the jobctl binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("submit")
        .arg(&args.job)
        .arg("--hostfile")
        .arg(hostfile)
        .args(["--process", &i.to_string()])
        .args(["--workers", &workers.to_string()])
        .args(["--generation", &generation.to_string()])
        .args(["--connect-timeout-ms", &args.connect_timeout_ms.to_string()])
        .args(["--stall-timeout-ms", &args.stall_timeout_ms.to_string()]);
    if args.until_caught_up {
        cmd.arg("--until-caught-up");
    }
    if args.finish_in_doubt {
        cmd.arg("--finish-in-doubt");
    }
    if args.trace_records {
        cmd.arg("--trace-records");
    }
    // Process 0 speaks for the cluster (its progress lines go on after a
    // restart); the others only when they fail.
    if args.quiet || i > 0 {
        cmd.arg("--quiet");
    }
    // Process i serves on the port after process i-1's.
    let listen = crate::ops::http::Listen::parse(args.http.as_deref(), 0)?;
    if let Some(addr) = listen.for_process(i) {
        cmd.args(["--http", &addr]);
    }
    match &args.cluster_secret_file {
        Some(file) => drop(cmd.arg("--cluster-secret-file").arg(file)),
        None => drop(cmd.env(SECRET_ENV, secret())),
    }
    if let Some(token) = &args.http_token_file {
        cmd.arg("--http-token-file").arg(token);
    }
    if args.http_insecure {
        cmd.arg("--http-insecure");
    }
    if let (Some(cert), Some(key)) = (&args.http_tls_cert, &args.http_tls_key) {
        cmd.arg("--http-tls-cert")
            .arg(cert)
            .arg("--http-tls-key")
            .arg(key);
    }
    if let Some(r) = args.max_records_per_second {
        cmd.args(["--max-records-per-second", &r.to_string()]);
    }
    if crate::log::is_json() {
        cmd.args(["--log-format", "json"]);
    }
    // A fault injected for a test strikes the first run of the cluster,
    // not the one that recovers from it.
    if restarted {
        cmd.env_remove("RILL_FAIL_AT").env_remove("RILL_PAUSE_AT");
    }
    // A process outlives a killed launcher by no more than a moment: it
    // would run on beside the cluster a new launcher starts, unheard.
    let launcher = std::process::id() as libc::pid_t;
    // SAFETY: between fork and exec only async-signal-safe calls are made.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(move || {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            // The launcher may have died before the line above.
            if libc::getppid() != launcher {
                libc::_exit(1);
            }
            Ok(())
        });
    }
    let mut child = cmd
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .context("cannot start a process of the cluster")?;
    let stderr = child.stderr.take().expect("piped stderr");
    // JSON lines pass as they are: each says its process itself.
    let json = crate::log::is_json();
    let voice = std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if i == 0 || json {
                eprintln!("{line}");
            } else {
                eprintln!("process {i}: {line}");
            }
        }
    });
    Ok((child, voice))
}

/// How the processes of a run of the cluster ended.
struct Supervised {
    /// The process that failed first, and its exit status (none when a
    /// signal killed it).
    failed: Option<(usize, Option<i32>)>,
    /// Process 0's exit status.
    zero: Option<i32>,
    /// A process that exited because a newer start fenced it.
    fenced: Option<usize>,
}

/// Waits for every process; on the first that fails, gives the others
/// [`GRACE`] to stop, then kills them.
fn supervise(mut procs: Vec<Child>) -> Supervised {
    let mut failed: Option<(usize, Option<i32>)> = None;
    let mut zero = None;
    let mut fenced = None;
    let mut failed_at: Option<Instant> = None;
    let mut running: Vec<bool> = vec![true; procs.len()];
    while running.iter().any(|r| *r) {
        // Of processes that failed in the same round, one killed by a
        // signal is the cause; the others stopped because they lost it.
        let mut now_failed: Vec<(usize, Option<i32>)> = Vec::new();
        for (i, p) in procs.iter_mut().enumerate() {
            if !running[i] {
                continue;
            }
            if let Ok(Some(status)) = p.try_wait() {
                running[i] = false;
                if i == 0 {
                    zero = status.code();
                }
                if status.code() == Some(FENCED_EXIT) {
                    fenced.get_or_insert(i);
                }
                if !status.success() {
                    now_failed.push((i, status.code()));
                }
            }
        }
        now_failed.sort_by_key(|(i, code)| (code.is_some(), *i));
        if let (None, Some(first)) = (&failed, now_failed.first()) {
            failed = Some(*first);
            failed_at = Some(Instant::now());
        }
        if failed_at.is_some_and(|t| t.elapsed() > GRACE) {
            for (i, p) in procs.iter_mut().enumerate() {
                if running[i] {
                    let _ = p.kill();
                    let _ = p.wait();
                    running[i] = false;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Supervised {
        failed,
        zero,
        fenced,
    }
}
