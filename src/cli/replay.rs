//! `jobctl replay DIR --job JOB --sink NAME`: loads the Parquet files a
//! Postgres sink wrote while the database was down, each in the same
//! transaction that records its epoch, so a file loads exactly once even
//! if replay is interrupted and run again; each file is removed once loaded.

use crate::connectors::postgres_sink::{insert, PostgresSink, Written};
use crate::format::{parquet, pg_copy};
use crate::plan::SinkPlan;
use anyhow::{bail, Context, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::path::PathBuf;

#[derive(Args)]
pub struct ReplayArgs {
    /// The sink's fallback directory.
    dir: PathBuf,
    #[arg(long)]
    job: PathBuf,
    /// The Postgres sink the files belong to.
    #[arg(long)]
    sink: String,
    /// Do not draw a progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: ReplayArgs) -> Result<()> {
    let plan = super::load_plan(&args.job)?;
    let Some((i, _, sink)) = plan.sinks().find(|(_, n, _)| n.name == args.sink) else {
        bail!("{} has no sink `{}`", args.job.display(), args.sink);
    };
    let SinkPlan::Postgres { config, .. } = sink else {
        bail!("sink `{}` is not a postgres sink", args.sink)
    };
    let schema = plan.input_schema(i).clone();
    let mut files: Vec<(String, u64, PathBuf)> = Vec::new();
    let prefix = format!("{}_", args.sink);
    for entry in
        std::fs::read_dir(&args.dir).with_context(|| format!("reading {}", args.dir.display()))?
    {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default()
            .to_string();
        let Some(rest) = name
            .strip_prefix(&prefix)
            .and_then(|r| r.strip_suffix(".parquet"))
        else {
            continue;
        };
        let Some((writer, epoch)) = rest.rsplit_once("_e") else {
            continue;
        };
        // `<sink>_` is also the start of a sink named `<sink>_more`: the
        // rest must be one of this job's writers exactly.
        if !is_writer_of(writer, &plan.job.name) {
            continue;
        }
        let Ok(epoch) = epoch.parse::<u64>() else {
            continue;
        };
        files.push((writer.to_string(), epoch, path));
    }
    files.sort();
    let mut pg = PostgresSink::new(
        &args.sink,
        &config.url,
        &config.table,
        schema.clone(),
        None,
        &plan.job.name,
        "",
    );
    pg.connect()?;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let target = crate::connectors::postgres_tls::target(&config.url)
        .map_err(|e| anyhow::anyhow!("sink {}: {e}", args.sink))?;
    let (mut client, connection) = rt.block_on(target.config.connect(target.tls))?;
    rt.spawn(async move {
        let _ = connection.await;
    });
    let bar = if args.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(files.len() as u64)
    };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} files {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (mut loaded, mut rows_in, mut skipped) = (0, 0usize, 0);
    for (writer, epoch, path) in &files {
        let rows =
            parquet::read(path, &schema).with_context(|| format!("reading {}", path.display()))?;
        let rows = rows
            .iter()
            .map(|row| {
                let mut encoded = Vec::new();
                pg_copy::encode_row(&mut encoded, row, &schema.fields)
                    .map(|()| bytes::Bytes::from(encoded))
                    .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        match insert(
            &rt,
            &mut client,
            &config.table,
            &schema,
            &plan.job.name,
            &args.sink,
            writer,
            *epoch,
            &rows,
        )? {
            Written::Rows(n) => {
                loaded += 1;
                rows_in += n;
            }
            _ => skipped += 1,
        }
        std::fs::remove_file(path)?;
        bar.inc(1);
        bar.set_message(format!("{rows_in} rows"));
    }
    bar.finish_and_clear();
    eprintln!(
        "replayed {loaded} files ({rows_in} rows) into {}; {skipped} already loaded; {} files removed",
        config.table,
        files.len()
    );
    Ok(())
}

/// Whether `writer` is a writer id of `job`: `<job>-w<digits>`.
fn is_writer_of(writer: &str, job: &str) -> bool {
    writer
        .strip_prefix(job)
        .and_then(|w| w.strip_prefix("-w"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::is_writer_of;

    #[test]
    fn a_sink_s_files_are_told_from_those_of_a_sink_whose_name_extends_it() {
        // Sink `a` of job `j` writes `a_j-w0_e…`; sink `a_b` writes
        // `a_b_j-w0_e…`, whose rest after `a_` is `b_j-w0`.
        assert!(is_writer_of("j-w0", "j"));
        assert!(is_writer_of("j-w12", "j"));
        assert!(!is_writer_of("b_j-w0", "j"));
        assert!(!is_writer_of("j-w", "j"));
        assert!(!is_writer_of("j-wx", "j"));
    }
}
