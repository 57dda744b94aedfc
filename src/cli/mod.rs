//! `jobctl`: what a user types. Each command is a thin layer over the
//! library; errors come back as `anyhow` with a message that says what to
//! do next.

mod datagen;
mod replay;
mod tail;
mod verify;

use crate::connectors::registry_server::Registry;
use crate::plan::Plan;
use crate::runtime::local::{self, RunOptions};
use crate::spec::Spec;
use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

#[derive(Parser)]
#[command(name = "jobctl", version, about = "Run rill dataflow jobs over Kafka")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a job file, then run it in the foreground.
    Submit {
        job: PathBuf,
        /// Worker threads (default: the machine's cores).
        #[arg(long)]
        workers: Option<usize>,
        /// Stop once every partition reaches the end offset it had at start.
        #[arg(long)]
        until_caught_up: bool,
        /// Print every record in and out, as the seed pipelines do.
        #[arg(long)]
        trace_records: bool,
        /// Do not print a progress line per epoch.
        #[arg(long)]
        quiet: bool,
        /// Read at most this many records per second (for crash tests).
        #[arg(long, hide = true)]
        max_records_per_second: Option<f64>,
    },
    /// Check a job file and print every error in it.
    Validate { job: PathBuf },
    /// Serve the Confluent Schema Registry API, with its data in Kafka.
    Registry {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
        #[arg(long, default_value = "127.0.0.1:9092")]
        brokers: String,
        /// The compacted topic that holds the schemas.
        #[arg(long, default_value = "_schemas")]
        topic: String,
    },
    /// Write generated input for a seed's job.
    Datagen(datagen::DatagenArgs),
    /// Print the records of a topic as `key K value {JSON}`.
    Tail(tail::TailArgs),
    /// Print what a job has committed, sink by sink, sorted: the output a
    /// read_committed consumer sees, worked out from the job's progress.
    Verify(verify::VerifyArgs),
    /// Load a Postgres sink's fallback Parquet files into its table.
    Replay(replay::ReplayArgs),
}

pub fn load_plan(path: &Path) -> Result<Plan> {
    let spec = Spec::load(path).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))?;
    Plan::build(&spec).map_err(|e| anyhow::anyhow!("{}", e.to_string().trim_end()))
}

pub fn main() -> Result<()> {
    let started = std::time::Instant::now();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("RILL_LOG")
                .unwrap_or_else(|_| "warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Command::Validate { job } => {
            let plan = load_plan(&job)?;
            println!(
                "{}: ok ({} sources, {} transforms, {} sinks)",
                job.display(),
                plan.sources().count(),
                plan.nodes.len() - plan.sources().count() - plan.sinks().count(),
                plan.sinks().count()
            );
            Ok(())
        }
        Command::Submit {
            job,
            workers,
            until_caught_up,
            trace_records,
            quiet,
            max_records_per_second,
        } => {
            let plan = Arc::new(load_plan(&job)?);
            let workers = workers
                .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
            if workers == 0 {
                bail!("--workers must be at least 1");
            }
            let stop = Arc::new(AtomicBool::new(false));
            let s = stop.clone();
            // The first Ctrl-C stops the sources and lets the open epoch
            // finish; a second one exits at once.
            let _ = ctrlc::set_handler(move || {
                if s.swap(true, Ordering::SeqCst) {
                    std::process::exit(130);
                }
                eprintln!("stopping: finishing the open epoch (Ctrl-C again to quit now)");
            });
            if !quiet {
                eprintln!(
                    "job {} on {workers} worker{}: brokers {}, epochs every {} ms{}",
                    plan.job.name,
                    if workers == 1 { "" } else { "s" },
                    plan.job.brokers,
                    plan.job.checkpoint_interval_ms,
                    if until_caught_up {
                        ", until caught up"
                    } else {
                        ""
                    }
                );
            }
            let opts = RunOptions {
                workers,
                until_caught_up,
                trace_records,
                progress: !quiet,
                max_rate: max_records_per_second,
            };
            let summary = local::run(plan.clone(), opts, stop)
                .with_context(|| format!("job {} failed", plan.job.name))?;
            eprintln!("{}", summary.line(&plan.job.name, started.elapsed()));
            Ok(())
        }
        Command::Registry {
            listen,
            brokers,
            topic,
        } => {
            let registry = Registry::open(&brokers, &topic)?;
            eprintln!("schema registry listening on http://{listen}, schemas kept in topic `{topic}` on {brokers}");
            registry.serve(&listen, 4)?;
            Ok(())
        }
        Command::Datagen(args) => datagen::run(args),
        Command::Tail(args) => tail::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Replay(args) => replay::run(args),
    }
}
