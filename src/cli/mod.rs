//! `jobctl`: what a user types. Each command is a thin layer over the
//! library; errors come back as `anyhow` with a message that says what to
//! do next.

mod allocator;
mod datagen;
mod kafka_args;
mod launch;
mod ops;
mod produce;
mod replay;
mod reset;
mod submit;
mod tail;
mod verify;

use crate::connectors::registry_server::Registry;
use crate::plan::Plan;
use crate::spec::Spec;
use anyhow::Result;
use clap::{Parser, Subcommand};
use std::path::{Path, PathBuf};

#[derive(Parser)]
#[command(name = "jobctl", version, about = "Run rill dataflow jobs over Kafka")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// How diagnostics are written to stderr: text, or JSON lines for a
    /// log shipper (then the progress lines too). RUST_LOG filters them.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: crate::log::LogFormat,
}

#[derive(Subcommand)]
enum Command {
    /// Validate a job file, then run it in the foreground: in this
    /// process, on a local cluster of processes (--processes), or as one
    /// process of a cluster across machines (--hostfile, --process).
    Submit(submit::SubmitArgs),
    /// Check a job file and print every error in it.
    Validate { job: PathBuf },
    /// Print the job's plan: its nodes, the rows on each edge, where
    /// records cross workers, its state and changelogs, its sinks.
    Explain {
        job: PathBuf,
        /// A librdkafka property, as kcat takes one; wins over the job's.
        #[arg(short = 'X', value_name = "KEY=VALUE")]
        property: Vec<String>,
        /// Print it as a Graphviz digraph (`| dot -Tsvg`).
        #[arg(long)]
        dot: bool,
    },
    /// Serve the Confluent Schema Registry API, with its data in Kafka.
    Registry {
        #[arg(long, default_value = "127.0.0.1:8081")]
        listen: String,
        #[command(flatten)]
        kafka: kafka_args::KafkaArgs,
        /// Reach Kafka as this job does (its brokers and [job.kafka]).
        #[arg(long)]
        job: Option<PathBuf>,
        /// Serve https with this certificate (a PEM chain) and --tls-key.
        #[arg(long, value_name = "FILE", requires = "tls_key")]
        tls_cert: Option<PathBuf>,
        /// The key of --tls-cert (PEM, not encrypted).
        #[arg(long, value_name = "FILE", requires = "tls_cert")]
        tls_key: Option<PathBuf>,
        /// Require basic authentication by one of the users of this file,
        /// a `NAME:PASSWORD` per line, as Confluent's registry can.
        #[arg(long, value_name = "FILE")]
        users_file: Option<PathBuf>,
        /// Require a bearer token of this file (a token per line), or the
        /// basic credentials of --users-file when both are given.
        #[arg(long, value_name = "FILE")]
        tokens_file: Option<PathBuf>,
        /// The compacted topic that holds the schemas.
        #[arg(long, default_value = "_schemas")]
        topic: String,
    },
    /// Write generated input for a seed's job.
    Datagen(datagen::DatagenArgs),
    /// Print the records of a topic as `key K value {JSON}`.
    Tail(tail::TailArgs),
    /// Send lines from stdin to a topic, a record each, as Kafka's console
    /// producer does.
    Produce(produce::ProduceArgs),
    /// Print what a job has committed, sink by sink, sorted: the output a
    /// read_committed consumer sees, worked out from the job's progress.
    Verify(verify::VerifyArgs),
    /// Load a Postgres sink's fallback Parquet files into its table.
    Replay(replay::ReplayArgs),
    /// Start a job over from nothing: delete what it keeps to resume
    /// (changelogs, progress groups, its sinks' progress, snapshots), and
    /// name what it wrote, which stays.
    Reset(reset::ResetArgs),
    /// Print a running job's state, epochs and counts, from its HTTP
    /// endpoint.
    Status {
        #[command(flatten)]
        endpoint: ops::EndpointArgs,
    },
    /// A pull query against a running job's committed state, as ksqlDB
    /// takes one: `SELECT … FROM table [WHERE key = …] [LIMIT n]`.
    Query {
        sql: String,
        #[command(flatten)]
        endpoint: ops::EndpointArgs,
        /// A JSON object per row instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Stop a running job gracefully: its open epoch commits, then it
    /// exits (a cluster stops as a whole).
    Stop {
        #[command(flatten)]
        endpoint: ops::EndpointArgs,
        /// How long to wait for the job to exit.
        #[arg(long, default_value_t = 120_000)]
        wait_ms: u64,
    },
}

/// The exit status for an error: 1, or for an epoch in doubt that this
/// cluster's shape cannot finish and for a process fenced by a newer
/// start, the statuses the launcher acts on.
/// Whether `e` is a write to a pipe whose reader has gone.
pub fn is_broken_pipe(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::BrokenPipe)
    })
}

pub fn exit_status(e: &anyhow::Error) -> i32 {
    use crate::runtime::recovery::RecoveryError;
    use crate::runtime::RunError;
    let in_doubt = e.chain().any(|c| {
        matches!(
            c.downcast_ref::<RunError>(),
            Some(RunError::Recovery(RecoveryError::InDoubt { .. }))
        ) || matches!(
            c.downcast_ref::<RecoveryError>(),
            Some(RecoveryError::InDoubt { .. })
        )
    });
    let fenced = e
        .chain()
        .any(|c| matches!(c.downcast_ref::<RunError>(), Some(RunError::Fenced { .. })));
    if in_doubt {
        launch::IN_DOUBT_EXIT
    } else if fenced {
        launch::FENCED_EXIT
    } else {
        1
    }
}

pub fn load_plan(path: &Path) -> Result<Plan> {
    load_plan_warned(path).map(|(plan, _)| plan)
}

/// [`load_plan`], with what the job file holds that is allowed but unwise
/// (a password written in it).
pub fn load_plan_warned(path: &Path) -> Result<(Plan, Vec<crate::spec::SpecError>)> {
    let error = |e: crate::spec::SpecErrors| anyhow::anyhow!("{}", e.to_string().trim_end());
    if is_sql(path) {
        let sql = crate::sql::load(path, |url, topic| {
            crate::format::registry::RegistryClient::new(url)
                .latest(&format!("{topic}-value"))
                .map(|r| r.schema.to_string())
                .map_err(|e| e.to_string())
        })
        .map_err(error)?;
        let plan = Plan::build(&sql.spec).map_err(|e| error(sql.errors_in_sql(e)))?;
        return Ok((plan, sql.spec.warnings.clone()));
    }
    // Every error at once: what the plan finds wrong too, when the job
    // could be read past its own errors (unknown keys).
    let (spec, mut errors) = Spec::load_all(path);
    if let Some(spec) = spec {
        match Plan::build(&spec) {
            Ok(plan) if errors.errors.is_empty() => return Ok((plan, spec.warnings)),
            Ok(_) => {}
            Err(e) => errors.errors.extend(e.errors),
        }
    }
    errors.errors.sort_by_key(|e| (e.line, e.column));
    errors.errors.dedup();
    Err(error(errors))
}

/// A job of ksqlDB-style statements rather than a job file.
fn is_sql(path: &Path) -> bool {
    path.extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("sql"))
}

pub fn main() -> Result<()> {
    let started = std::time::Instant::now();
    allocator::tune();
    let cli = Cli::parse();
    crate::secrets::install_panic_hook();
    crate::log::init(cli.log_format);
    match cli.command {
        Command::Validate { job } => {
            let (plan, warnings) = load_plan_warned(&job)?;
            for w in &warnings {
                eprintln!("warning: {}: {w}", job.display());
            }
            println!(
                "{}: ok ({} sources, {} transforms, {} sinks)",
                job.display(),
                plan.sources().count(),
                plan.nodes.len() - plan.sources().count() - plan.sinks().count(),
                plan.sinks().count()
            );
            Ok(())
        }
        Command::Submit(args) => submit::run(args, started),
        Command::Registry {
            listen,
            kafka,
            job,
            topic,
            tls_cert,
            tls_key,
            users_file,
            tokens_file,
        } => {
            let job = job.as_deref().map(Spec::load).transpose()?.map(|s| s.job);
            let brokers = kafka.brokers(job.as_ref())?;
            let access = crate::connectors::registry_server::ServeAccess {
                tls: match (&tls_cert, &tls_key) {
                    (Some(c), Some(k)) => Some(crate::connectors::https::acceptor(c, k)?),
                    _ => None,
                },
                users: match &users_file {
                    Some(f) => crate::connectors::registry_server::read_users(f)
                        .map_err(|e| anyhow::anyhow!(e))?,
                    None => Default::default(),
                },
                tokens: match &tokens_file {
                    Some(f) => crate::connectors::registry_server::read_tokens(f)
                        .map_err(|e| anyhow::anyhow!(e))?,
                    None => Default::default(),
                },
            };
            let scheme = if access.tls.is_some() {
                "https"
            } else {
                "http"
            };
            let auth = match (access.users.is_empty(), access.tokens.is_empty()) {
                (true, true) => "",
                (false, true) => ", basic authentication required",
                (true, false) => ", a bearer token required",
                (false, false) => ", basic authentication or a bearer token required",
            };
            let registry = Registry::open(&brokers, &topic)?;
            eprintln!("schema registry listening on {scheme}://{listen}{auth}, schemas kept in topic `{topic}` on {brokers}");
            registry.serve(&listen, 4, access)?;
            Ok(())
        }
        Command::Datagen(args) => datagen::run(args),
        Command::Tail(args) => tail::run(args),
        Command::Produce(args) => produce::run(args),
        Command::Verify(args) => verify::run(args),
        Command::Replay(args) => replay::run(args),
        Command::Reset(args) => reset::run(args),
        Command::Status { endpoint } => ops::status(&endpoint.open()?),
        Command::Query {
            sql,
            endpoint,
            json,
        } => ops::query(&endpoint.open()?, &sql, json),
        Command::Explain { job, property, dot } => {
            let mut plan = load_plan(&job)?;
            plan.job.brokers = plan.job.brokers.with(&kafka_args::properties(&property)?);
            let text = if dot {
                crate::plan::explain::dot(&plan)
            } else {
                crate::plan::explain::text(&plan)
            };
            print!("{}", crate::secrets::redact(&text));
            Ok(())
        }
        Command::Stop { endpoint, wait_ms } => {
            ops::stop(&endpoint.open()?, std::time::Duration::from_millis(wait_ms))
        }
    }
}
