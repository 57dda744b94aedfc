//! Postgres sink. Each epoch's rows go in with one database transaction
//! that also records `(job, sink, writer, epoch)` in `rill_sink_progress`;
//! an epoch already recorded there is skipped, so a replayed epoch writes
//! nothing twice. When Postgres cannot be reached, the sink either writes
//! the epoch's rows to a Parquet file in its fallback directory (for
//! `jobctl replay`) or, without one, waits and retries.
//!
//! This file is the store's side: connecting, checking the table, writing
//! an epoch whole or as it arrives. `postgres_epochs.rs` runs it on a
//! thread of its own for the epoch-sink protocol.

use crate::fault;
use crate::format::{parquet, pg_copy};
use crate::record::{FieldType, Row, RowSchema};
use bytes::{BufMut, Bytes, BytesMut};
use futures_util::SinkExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, CopyInSink};

#[derive(Debug, thiserror::Error)]
pub enum PostgresError {
    #[error("cannot reach postgres at {url}: {reason}; start it (for example `pg_ctlcluster 15 main start`) or set the sink's `url`")]
    Unreachable { url: String, reason: String },
    #[error("postgres at {url} refused this sink: {reason}; check the user and password, and sslmode, sslrootcert, sslcert and sslkey in the sink's `url`")]
    Refused { url: String, reason: String },
    #[error("table `{table}` does not match the rows of sink `{sink}`: {differences}; alter the table or drop it so the sink creates it")]
    Mismatch {
        table: String,
        sink: String,
        differences: String,
    },
    #[error("postgres error in sink `{sink}`: {reason}")]
    Sql { sink: String, reason: String },
    #[error("cannot write the fallback file {path}: {reason}")]
    Fallback { path: String, reason: String },
}

/// An epoch's transaction with its COPY under way, not committed.
pub struct OpenEpoch {
    pub epoch: u64,
    copy: std::pin::Pin<Box<CopyInSink<Bytes>>>,
    /// Encoded rows not sent yet.
    buf: BytesMut,
    rows: usize,
    /// Time spent in the database for it so far.
    time: Duration,
}

/// What became of an epoch's rows.
#[derive(Debug, Clone, PartialEq)]
pub enum Written {
    Rows(usize),
    /// The epoch was already in the table (a replay).
    AlreadyThere,
    /// Postgres was down: the rows are in this Parquet file.
    Fallback(PathBuf, usize),
}

pub struct PostgresSink {
    name: String,
    url: String,
    table: String,
    schema: RowSchema,
    fallback_dir: Option<PathBuf>,
    job: String,
    writer: String,
    rt: tokio::runtime::Runtime,
    client: Option<Client>,
    last_attempt: Option<Instant>,
    /// Columns of an existing table declared NOT NULL.
    not_null_columns: Vec<String>,
}

/// What Postgres said, in its own words: the message, its SQLSTATE, and
/// the detail, hint and place it gives (`tokio_postgres` alone prints
/// `db error`). Other errors with their causes.
/// Whether a failed connection was refused for its credentials or its
/// TLS, which no retry mends.
fn is_refusal(e: &tokio_postgres::Error, described: &str) -> bool {
    // Class 28: invalid authorization (a password, a role, pg_hba.conf).
    e.as_db_error()
        .is_some_and(|db| db.code().code().starts_with("28"))
        || [
            "certificate verify failed",
            "does not support TLS",
            "sslkey",
            "sslcert",
        ]
        .iter()
        .any(|w| described.contains(w))
}

pub fn describe(e: &tokio_postgres::Error) -> String {
    let Some(db) = e.as_db_error() else {
        let mut text = e.to_string();
        let mut cause = std::error::Error::source(e);
        while let Some(c) = cause {
            // OpenSSL's errors repeat their causes in their own text.
            let said = c.to_string();
            if !text.contains(&said) {
                text.push_str(&format!(": {said}"));
            }
            cause = c.source();
        }
        return text;
    };
    let mut text = format!("{} (SQLSTATE {})", db.message(), db.code().code());
    for (label, part) in [
        ("detail", db.detail()),
        ("hint", db.hint()),
        ("where", db.where_()),
    ] {
        if let Some(part) = part {
            text.push_str(&format!("; {label}: {part}"));
        }
    }
    text
}

const PROGRESS_TABLE: &str = "CREATE TABLE IF NOT EXISTS rill_sink_progress (
    job TEXT NOT NULL, sink TEXT NOT NULL, writer TEXT NOT NULL, epoch BIGINT NOT NULL,
    committed_at TIMESTAMPTZ NOT NULL DEFAULT now(),
    PRIMARY KEY (job, sink, writer, epoch))";

/// Which run of each job a sink's progress rows belong to (see
/// [`PostgresSink::claim`]).
const RUN_TABLE: &str = "CREATE TABLE IF NOT EXISTS rill_sink_run (
    job TEXT NOT NULL, sink TEXT NOT NULL, run TEXT NOT NULL,
    PRIMARY KEY (job, sink))";

/// `CREATE TABLE IF NOT EXISTS` run by two sessions at once can fail in
/// both (a duplicate key in the catalogue): the sinks of a job, and the
/// processes of a cluster, connect at the same time. The statement runs
/// under a transaction-scoped advisory lock, one session at a time.
fn serialised_ddl(ddl: &str) -> String {
    format!("BEGIN; SELECT pg_advisory_xact_lock(7241993); {ddl}; COMMIT")
}

fn sql_type(ty: FieldType) -> &'static str {
    match ty {
        FieldType::Bool => "boolean",
        FieldType::Int => "bigint",
        FieldType::Double => "double precision",
        FieldType::String | FieldType::Null => "text",
        FieldType::Bytes => "bytea",
    }
}

impl PostgresSink {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        name: &str,
        url: &str,
        table: &str,
        schema: RowSchema,
        fallback_dir: Option<PathBuf>,
        job: &str,
        writer: &str,
    ) -> Self {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        PostgresSink {
            name: name.into(),
            url: url.into(),
            table: table.into(),
            schema,
            fallback_dir,
            job: job.into(),
            writer: writer.into(),
            rt,
            client: None,
            last_attempt: None,
            not_null_columns: Vec::new(),
        }
    }

    fn unreachable(&self, e: impl std::fmt::Display) -> PostgresError {
        PostgresError::Unreachable {
            url: crate::secrets::mask_url(&self.url),
            reason: e.to_string(),
        }
    }

    fn lost(&self, e: &tokio_postgres::Error) -> PostgresError {
        self.unreachable(describe(e))
    }

    /// A connection that failed: refused for good (a password, a
    /// certificate: waiting would never end), or not reached (yet).
    fn not_connected(&self, e: &tokio_postgres::Error) -> PostgresError {
        let reason = describe(e);
        if is_refusal(e, &reason) {
            PostgresError::Refused {
                url: crate::secrets::mask_url(&self.url),
                reason,
            }
        } else {
            self.unreachable(reason)
        }
    }

    fn sql(&self, e: tokio_postgres::Error) -> PostgresError {
        PostgresError::Sql {
            sink: self.name.clone(),
            reason: describe(&e),
        }
    }

    /// Connects, and creates or checks the table and the progress table.
    pub fn connect(&mut self) -> Result<(), PostgresError> {
        if self.client.as_ref().is_some_and(|c| !c.is_closed()) {
            return Ok(());
        }
        self.client = None;
        self.last_attempt = Some(Instant::now());
        let mut target =
            super::postgres_tls::target(&self.url).map_err(|reason| PostgresError::Refused {
                url: crate::secrets::mask_url(&self.url),
                reason,
            })?;
        target.config.connect_timeout(Duration::from_secs(3));
        let (client, connection) = self
            .rt
            .block_on(target.config.connect(target.tls))
            .map_err(|e| self.not_connected(&e))?;
        self.rt.spawn(async move {
            let _ = connection.await;
        });
        self.rt
            .block_on(client.batch_execute(&serialised_ddl(PROGRESS_TABLE)))
            .map_err(|e| self.sql(e))?;
        self.not_null_columns = self.check_table(&client)?;
        self.client = Some(client);
        Ok(())
    }

    /// The epochs this sink has written for its job, by any run: how many,
    /// and the highest.
    pub fn written_epochs(&mut self) -> Result<(i64, u64), super::sink::SinkError> {
        self.connect()?;
        let client = self.client.as_ref().expect("connected");
        let row = self
            .rt
            .block_on(client.query_one(
                "SELECT count(*), coalesce(max(epoch), 0) FROM rill_sink_progress WHERE job = $1 AND sink = $2",
                &[&self.job, &self.name],
            ))
            .map_err(|e| super::sink::SinkError::from(self.sql(e)))?;
        Ok((row.get(0), row.get::<_, i64>(1) as u64))
    }

    /// Forgets the sink's progress for its job and hands the sink to run
    /// `run` (`jobctl reset`): the rows it wrote stay in its table.
    pub fn hand_over(&mut self, run: &str) -> Result<(), super::sink::SinkError> {
        self.connect()?;
        let client = self.client.as_ref().expect("connected");
        self.rt
            .block_on(async {
                client.batch_execute(&serialised_ddl(RUN_TABLE)).await?;
                client
                    .execute(
                        "DELETE FROM rill_sink_progress WHERE job = $1 AND sink = $2",
                        &[&self.job, &self.name],
                    )
                    .await?;
                client
                    .execute(
                        "INSERT INTO rill_sink_run (job, sink, run) VALUES ($1, $2, $3) \
                         ON CONFLICT (job, sink) DO UPDATE SET run = excluded.run",
                        &[&self.job, &self.name, &run],
                    )
                    .await
            })
            .map_err(|e| super::sink::SinkError::from(self.sql(e)))?;
        Ok(())
    }

    pub fn table(&self) -> &str {
        &self.table
    }

    pub fn is_connected(&self) -> bool {
        self.client.as_ref().is_some_and(|c| !c.is_closed())
    }

    /// Claims the sink's progress rows for run `run` of the job: a table
    /// whose rows belong to another run (or to one from before runs were
    /// named) is refused, since this run's epoch numbers would meet the
    /// numbers those rows hold and skip them.
    pub fn claim(&mut self, run: &str) -> Result<(), super::sink::SinkError> {
        self.connect()?;
        let client = self.client.as_ref().expect("connected");
        let (job, sink) = (self.job.as_str(), self.name.as_str());
        let other = |found: String| super::sink::SinkError::OtherRun {
            sink: sink.to_string(),
            job: job.to_string(),
            found,
        };
        let sql = |e| super::sink::SinkError::from(self.sql(e));
        self.rt
            .block_on(client.batch_execute(&serialised_ddl(RUN_TABLE)))
            .map_err(sql)?;
        let owner = |rt: &tokio::runtime::Runtime| {
            rt.block_on(client.query_opt(
                "SELECT run FROM rill_sink_run WHERE job = $1 AND sink = $2",
                &[&job, &sink],
            ))
            .map(|r| r.map(|r| r.get::<_, String>(0)))
        };
        if owner(&self.rt).map_err(sql)?.is_none() {
            let earlier: i64 = self
                .rt
                .block_on(client.query_one(
                    "SELECT count(*) FROM rill_sink_progress WHERE job = $1 AND sink = $2",
                    &[&job, &sink],
                ))
                .map_err(sql)?
                .get(0);
            if earlier > 0 {
                return Err(other(format!(
                    "{earlier} epochs in rill_sink_progress of a run before runs were named"
                )));
            }
            // The processes of a cluster claim the same run at once.
            self.rt
                .block_on(client.execute(
                    "INSERT INTO rill_sink_run (job, sink, run) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
                    &[&job, &sink, &run],
                ))
                .map_err(sql)?;
        }
        match owner(&self.rt).map_err(sql)? {
            Some(r) if r == run => Ok(()),
            found => Err(other(format!(
                "rill_sink_run names run {}, this is run {run}",
                found.unwrap_or_default()
            ))),
        }
    }

    /// Per field of the rows: whether its column refuses NULL, because the
    /// sink declared it so or an existing table does.
    pub fn not_null(&self) -> Vec<bool> {
        self.schema
            .fields
            .iter()
            .map(|f| !f.nullable || self.not_null_columns.contains(&f.name))
            .collect()
    }

    /// Creates the table, or checks an existing one against the rows and
    /// returns its NOT NULL columns.
    fn check_table(&self, client: &Client) -> Result<Vec<String>, PostgresError> {
        let (schema_name, table) = match self.table.split_once('.') {
            Some((s, t)) => (s.to_string(), t.to_string()),
            None => ("public".to_string(), self.table.clone()),
        };
        let rows = self
            .rt
            .block_on(client.query(
                "SELECT column_name, data_type, is_nullable FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
                &[&schema_name, &table],
            ))
            .map_err(|e| self.sql(e))?;
        if rows.is_empty() {
            let columns: Vec<String> = self
                .schema
                .fields
                .iter()
                .map(|f| {
                    format!(
                        "{} {}{}",
                        f.name,
                        sql_type(f.ty),
                        if f.nullable { "" } else { " NOT NULL" }
                    )
                })
                .collect();
            let ddl = format!(
                "CREATE TABLE IF NOT EXISTS {} ({})",
                self.table,
                columns.join(", ")
            );
            return self
                .rt
                .block_on(client.batch_execute(&serialised_ddl(&ddl)))
                .map(|_| Vec::new())
                .map_err(|e| self.sql(e));
        }
        let existing: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let not_null = rows
            .iter()
            .filter(|r| r.get::<_, String>(2) == "NO")
            .map(|r| r.get(0))
            .collect();
        let mut differences = Vec::new();
        for f in &self.schema.fields {
            match existing.iter().find(|(n, _)| *n == f.name) {
                None => differences.push(format!(
                    "column `{}` ({}) is missing",
                    f.name,
                    sql_type(f.ty)
                )),
                Some((_, ty)) if ty != sql_type(f.ty) => differences.push(format!(
                    "column `{}` is {ty}, the sink writes {}",
                    f.name,
                    sql_type(f.ty)
                )),
                _ => {}
            }
        }
        if differences.is_empty() {
            Ok(not_null)
        } else {
            Err(PostgresError::Mismatch {
                table: self.table.clone(),
                sink: self.name.clone(),
                differences: differences.join("; "),
            })
        }
    }

    /// Writes one epoch's rows (encoded by [`pg_copy::encode_row`])
    /// exactly once.
    pub fn write_epoch(&mut self, epoch: u64, rows: &[Bytes]) -> Result<Written, PostgresError> {
        loop {
            match self.try_write(epoch, rows) {
                Ok(w) => return Ok(w),
                Err(PostgresError::Unreachable { reason, .. }) => {
                    if let Some(dir) = self.fallback_dir.clone() {
                        return self.fall_back(&dir, epoch, rows);
                    }
                    // No fallback: wait and retry, losing nothing.
                    tracing::warn!(
                        "sink {}: postgres at {} is unreachable ({reason}); retrying",
                        self.name,
                        crate::secrets::mask_url(&self.url)
                    );
                    std::thread::sleep(Duration::from_secs(1));
                }
                Err(e) => return Err(e),
            }
        }
    }

    fn try_write(&mut self, epoch: u64, rows: &[Bytes]) -> Result<Written, PostgresError> {
        // While down, try again at most every 2 s rather than per epoch.
        if self.client.is_none()
            && self.fallback_dir.is_some()
            && self
                .last_attempt
                .is_some_and(|t| t.elapsed() < Duration::from_secs(2))
        {
            return Err(self.unreachable("still down"));
        }
        self.connect()?;
        let result = insert(
            &self.rt,
            self.client.as_mut().unwrap(),
            &self.table,
            &self.schema,
            &self.job,
            &self.name,
            &self.writer,
            epoch,
            rows,
        );
        match result {
            Err(e) if self.client.as_ref().is_none_or(|c| c.is_closed()) => {
                self.client = None;
                Err(self.lost(&e))
            }
            Err(e) => Err(self.sql(e)),
            Ok(w) => Ok(w),
        }
    }

    /// The rows it writes.
    pub fn schema(&self) -> &RowSchema {
        &self.schema
    }

    /// The sink's name in the job.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Whether a connection is worth trying now: while the database is
    /// down and epochs go to the fallback, at most every 2 s.
    fn may_try(&self) -> bool {
        self.client.is_some()
            || self.fallback_dir.is_none()
            || self
                .last_attempt
                .is_none_or(|t| t.elapsed() >= Duration::from_secs(2))
    }

    fn classify(&mut self, e: tokio_postgres::Error) -> PostgresError {
        if self.client.as_ref().is_none_or(|c| c.is_closed()) {
            self.client = None;
            self.lost(&e)
        } else {
            self.sql(e)
        }
    }

    /// Opens `epoch`'s database transaction and its COPY, for rows to go
    /// in as they arrive; `None` when the table already holds the epoch.
    /// Nothing is visible until [`PostgresSink::finish`].
    pub fn begin(&mut self, epoch: u64) -> Result<Option<OpenEpoch>, PostgresError> {
        if !self.may_try() {
            return Err(self.unreachable("still down"));
        }
        self.connect()?;
        let client = self.client.as_ref().unwrap();
        let (job, sink, writer) = (&self.job, &self.name, &self.writer);
        let statement = copy_statement(&self.table, &self.schema);
        let began = Instant::now();
        let who = [job.as_str(), sink, writer];
        let result = self.rt.block_on(open_epoch(client, &statement, who, epoch));
        match result {
            Ok(copy) => Ok(copy.map(|copy| {
                let mut buf = BytesMut::with_capacity(COPY_CHUNK + 1024);
                buf.put_slice(pg_copy::HEADER);
                OpenEpoch {
                    epoch,
                    copy: Box::pin(copy),
                    buf,
                    rows: 0,
                    time: began.elapsed(),
                }
            })),
            Err(e) => {
                self.rollback();
                Err(self.classify(e))
            }
        }
    }

    /// Sends encoded rows of an open epoch, in chunks of about 256 KiB.
    pub fn copy(&mut self, open: &mut OpenEpoch, rows: &[Bytes]) -> Result<(), PostgresError> {
        let began = Instant::now();
        let result = self
            .rt
            .block_on(send_rows(open.copy.as_mut(), &mut open.buf, rows));
        open.rows += rows.len();
        open.time += began.elapsed();
        result.map_err(|e| self.classify(e))
    }

    /// Ends an open epoch's COPY, records the epoch and commits: its rows
    /// become visible together.
    pub fn finish(&mut self, open: OpenEpoch) -> Result<(Written, Duration), PostgresError> {
        let OpenEpoch {
            epoch,
            mut copy,
            buf,
            rows,
            time,
        } = open;
        let began = Instant::now();
        let client = self
            .client
            .as_ref()
            .ok_or_else(|| self.unreachable("connection lost"))?;
        let who = [self.job.as_str(), &self.name, &self.writer];
        let result = self
            .rt
            .block_on(close_epoch(client, copy.as_mut(), buf, who, epoch));
        match result {
            Ok(()) => Ok((Written::Rows(rows), time + began.elapsed())),
            Err(e) => {
                // A COPY dropped unfinished is failed, then the
                // transaction is rolled back.
                drop(copy);
                self.rollback();
                Err(self.classify(e))
            }
        }
    }

    /// Drops an open epoch's transaction with its COPY.
    pub fn abandon(&mut self, open: OpenEpoch) {
        drop(open);
        self.rollback();
    }

    fn rollback(&mut self) {
        let Some(client) = self.client.as_ref() else {
            return;
        };
        if self.rt.block_on(client.batch_execute("ROLLBACK")).is_err() {
            // A connection in an unknown state is not reused.
            self.client = None;
        }
    }

    /// Whether the table already holds `epoch`.
    pub fn contains(&mut self, epoch: u64) -> Result<bool, PostgresError> {
        self.connect()?;
        let (job, sink, writer) = (&self.job, &self.name, &self.writer);
        let client = self.client.as_ref().unwrap();
        let found = self
            .rt
            .block_on(client.query_opt(EPOCH_RECORDED, &[job, sink, writer, &(epoch as i64)]));
        found.map(|f| f.is_some()).map_err(|e| self.classify(e))
    }

    fn fall_back(&self, dir: &Path, epoch: u64, rows: &[Bytes]) -> Result<Written, PostgresError> {
        let name = format!("{}_{}_e{epoch:010}.parquet", self.name, self.writer);
        let path = dir.join(&name);
        let err = |reason: String| PostgresError::Fallback {
            path: path.display().to_string(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| err(e.to_string()))?;
        if !path.exists() {
            let tmp = dir.join(format!(".{name}.{}.tmp", super::file_sink::instance_tag()));
            let rows = rows
                .iter()
                .map(|r| pg_copy::decode_row(r, &self.schema.fields))
                .collect::<Result<Vec<Row>, String>>()
                .map_err(err)?;
            parquet::write(&tmp, &self.schema, &rows).map_err(|e| err(e.to_string()))?;
            super::durable::publish(&tmp, &path).map_err(|e| err(e.to_string()))?;
        }
        Ok(Written::Fallback(path, rows.len()))
    }
}

/// Inserts `rows` (encoded by [`pg_copy::encode_row`]) and records the
/// epoch, in one transaction; does nothing when the epoch is already
/// recorded.
#[allow(clippy::too_many_arguments)]
pub fn insert(
    rt: &tokio::runtime::Runtime,
    client: &Client,
    table: &str,
    schema: &RowSchema,
    job: &str,
    sink: &str,
    writer: &str,
    epoch: u64,
    rows: &[Bytes],
) -> Result<Written, tokio_postgres::Error> {
    let who = [job, sink, writer];
    rt.block_on(async {
        let statement = copy_statement(table, schema);
        let Some(copy) = open_epoch(client, &statement, who, epoch).await? else {
            return Ok(Written::AlreadyThere);
        };
        let mut copy = Box::pin(copy);
        let mut buf = BytesMut::with_capacity(COPY_CHUNK + 1024);
        buf.put_slice(pg_copy::HEADER);
        let sent = async {
            send_rows(copy.as_mut(), &mut buf, rows).await?;
            close_epoch(client, copy.as_mut(), buf, who, epoch).await
        }
        .await;
        if let Err(e) = sent {
            // A COPY dropped unfinished is failed, then the transaction is
            // rolled back, so the connection can be used again.
            drop(copy);
            let _ = client.batch_execute("ROLLBACK").await;
            return Err(e);
        }
        Ok(Written::Rows(rows.len()))
    })
}

const EPOCH_RECORDED: &str =
    "SELECT 1 FROM rill_sink_progress WHERE job = $1 AND sink = $2 AND writer = $3 AND epoch = $4";

/// Begins `epoch`'s transaction and its COPY, for the sink's `who` (job,
/// sink, writer); None, with nothing left open, when the table already
/// records the epoch.
async fn open_epoch(
    client: &Client,
    statement: &str,
    who: [&str; 3],
    epoch: u64,
) -> Result<Option<CopyInSink<Bytes>>, tokio_postgres::Error> {
    let [job, sink, writer] = who;
    client.batch_execute("BEGIN").await?;
    let done = client
        .query_opt(EPOCH_RECORDED, &[&job, &sink, &writer, &(epoch as i64)])
        .await?;
    if done.is_some() {
        client.batch_execute("ROLLBACK").await?;
        return Ok(None);
    }
    Ok(Some(client.copy_in(statement).await?))
}

/// Ends an epoch's COPY with what `buf` still holds, records the epoch and
/// commits: its rows become visible together.
async fn close_epoch(
    client: &Client,
    mut copy: std::pin::Pin<&mut CopyInSink<Bytes>>,
    mut buf: BytesMut,
    who: [&str; 3],
    epoch: u64,
) -> Result<(), tokio_postgres::Error> {
    let [job, sink, writer] = who;
    buf.put_slice(pg_copy::TRAILER);
    copy.as_mut().send(buf.freeze()).await?;
    copy.as_mut().finish().await?;
    client
        .execute(
            "INSERT INTO rill_sink_progress (job, sink, writer, epoch) VALUES ($1, $2, $3, $4)",
            &[&job, &sink, &writer, &(epoch as i64)],
        )
        .await?;
    fault::point("pg_before_commit");
    client.batch_execute("COMMIT").await?;
    fault::point("pg_after_commit");
    Ok(())
}

fn copy_statement(table: &str, schema: &RowSchema) -> String {
    let columns: Vec<&str> = schema.fields.iter().map(|f| f.name.as_str()).collect();
    format!(
        "COPY {table} ({}) FROM STDIN (FORMAT binary)",
        columns.join(",")
    )
}

const COPY_CHUNK: usize = 256 * 1024;

/// Appends `rows` to `buf`, sending it on whenever it holds a chunk.
async fn send_rows(
    mut copy: std::pin::Pin<&mut CopyInSink<Bytes>>,
    buf: &mut BytesMut,
    rows: &[Bytes],
) -> Result<(), tokio_postgres::Error> {
    for row in rows {
        buf.put_slice(row);
        if buf.len() >= COPY_CHUNK {
            copy.as_mut().send(buf.split().freeze()).await?;
        }
    }
    Ok(())
}

/// Every row of `table` as a line of text (columns joined by `,`, doubles
/// at 10 significant digits), for checking what a job wrote.
pub fn table_rows(url: &str, table: &str) -> Result<Vec<String>, PostgresError> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let unreachable = |e: tokio_postgres::Error| PostgresError::Unreachable {
        url: crate::secrets::mask_url(url),
        reason: describe(&e),
    };
    let target = super::postgres_tls::target(url).map_err(|reason| PostgresError::Unreachable {
        url: crate::secrets::mask_url(url),
        reason,
    })?;
    let (client, connection) = rt
        .block_on(target.config.connect(target.tls))
        .map_err(unreachable)?;
    rt.spawn(async move {
        let _ = connection.await;
    });
    // Text casts keep this independent of column types.
    let rows = rt
        .block_on(client.query(&format!("SELECT t::text FROM {table} t"), &[]))
        .map_err(|e| PostgresError::Sql {
            sink: table.into(),
            reason: describe(&e),
        })?;
    Ok(rows.iter().map(|r| r.get::<_, String>(0)).collect())
}
