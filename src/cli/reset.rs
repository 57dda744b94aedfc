//! `jobctl reset JOB`: what the job keeps, deleted, and what it wrote,
//! named with how to clear it.

use crate::connectors::kafka_admin;
use crate::runtime::reset::{inventory, reset, Kept};
use anyhow::Result;
use std::path::PathBuf;

#[derive(clap::Args, Debug)]
pub struct ResetArgs {
    /// The job file (or SQL job) of the job to start over.
    job: PathBuf,
    /// List what would be deleted, and delete nothing.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: ResetArgs) -> Result<()> {
    let plan = super::load_plan(&args.job)?;
    let job = &plan.job;
    kafka_admin::check_broker(&job.brokers)?;
    let kept = inventory(&plan)?;
    println!("job {} keeps, to resume:", job.name);
    for line in kept_lines(&kept) {
        println!("  {line}");
    }
    if args.dry_run {
        println!("nothing deleted (--dry-run)");
        return Ok(());
    }
    let run = reset(&plan, &kept)?;
    println!(
        "reset: fenced the job's writers and deleted the above; its next start begins from nothing as run {run}, reading its sources from their start_offset, its epochs numbered after {} (the epoch log keeps its records, none of which count now)",
        kept.last_epoch()
    );
    let left = left_lines(&kept, &job.brokers);
    if !left.is_empty() {
        println!("left as they are (what the job wrote; clear them for a start with no trace of earlier runs):");
        for line in left {
            println!("  {line}");
        }
    }
    Ok(())
}

fn kept_lines(kept: &Kept) -> Vec<String> {
    let mut out = vec![match (kept.log_records, &kept.run) {
        (0, _) => format!("epoch log {}: none", kept.log),
        (n, run) => format!(
            "epoch log {}: {n} records, epochs up to {}{}",
            kept.log,
            kept.log_epoch,
            run.as_ref().map_or(String::new(), |r| format!(", run {r}"))
        ),
    }];
    if !kept.groups.is_empty() {
        out.push(format!("progress groups: {}", kept.groups.join(", ")));
    }
    for topic in &kept.changelogs {
        out.push(format!("changelog topic {topic}"));
    }
    for topic in &kept.commits {
        out.push(format!("commit marker topic {topic}"));
    }
    for (sink, table, n, top) in &kept.postgres {
        out.push(match n {
            0 => format!("sink {sink}: no progress rows for table {table}"),
            1 => format!(
                "sink {sink}: 1 progress row (epoch {top}) in rill_sink_progress, for table {table}"
            ),
            n => format!(
                "sink {sink}: {n} progress rows (epochs up to {top}) in rill_sink_progress, for table {table}"
            ),
        });
    }
    for (sink, dir, n, top) in &kept.files {
        out.push(format!(
            "sink {sink}: its run marker in {} ({n} files, epochs up to {top}; the next run numbers its epochs after them)",
            dir.display()
        ));
    }
    if let Some(dir) = &kept.snapshots {
        out.push(format!("local snapshots in {}", dir.display()));
    }
    out
}

fn left_lines(kept: &Kept, brokers: &crate::connectors::kafka_config::Brokers) -> Vec<String> {
    let broker = brokers
        .servers()
        .split(',')
        .next()
        .unwrap_or(brokers.servers());
    let mut out = Vec::new();
    for (sink, topic) in &kept.outputs {
        out.push(format!(
            "topic {topic} ({sink}): kafka-topics --bootstrap-server {broker} --delete --topic {topic}"
        ));
    }
    for (sink, table, n, _) in &kept.postgres {
        if *n > 0 {
            out.push(format!("table {table} (sink {sink}): TRUNCATE {table}"));
        }
    }
    for (sink, dir, n, _) in &kept.files {
        if *n > 0 {
            out.push(format!(
                "{n} files in {} (sink {sink}): rm {}/{sink}_*",
                dir.display(),
                dir.display()
            ));
        }
    }
    out
}
