//! The Postgres sink's side of the epoch-sink protocol, on a thread of its
//! own so that the database work of an epoch overlaps the job's other work
//! instead of adding to the writer's commit.
//!
//! Rows arrive encoded in binary COPY form (`format/pg_copy.rs`) by the
//! worker that made them. Once every epoch below epoch e is complete, e's
//! database transaction is opened and its rows go in as they arrive:
//! that is e's pre-commit, spread over the epoch. The writer's commit step
//! then only ends the COPY, records the epoch in `rill_sink_progress` and
//! commits, after the epoch is in the epoch log, as
//! `docs/exactly-once.md` orders it. A crash before that commit leaves an
//! open transaction the database rolls back with the connection.
//!
//! Rows of later epochs wait in memory until the open epoch commits (one
//! connection holds one transaction). Every epoch's rows are kept until it
//! commits, so that when the open transaction fails (the database went
//! away, a row was refused) the epoch is written whole the ordinary way,
//! with its retry and its fallback file.

use super::postgres_sink::{OpenEpoch, PostgresError, PostgresSink, Written};
use super::sink::{Committed, EpochSink, SinkError};
use crate::format::pg_copy;
use crate::record::{Field, OutRecord};
use bytes::Bytes;
use crossbeam_channel::{Receiver, Sender};
use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

enum Msg {
    /// Rows in binary COPY form.
    Rows(u64, Vec<Bytes>),
    /// Every epoch below this one is complete.
    Frontier(u64),
    Commit(u64, Sender<Result<Committed, PostgresError>>),
    Abort(u64),
    Contains(u64, Sender<Result<bool, PostgresError>>),
}

pub struct PostgresEpochSink {
    to_thread: Sender<Msg>,
    name: String,
    fields: Vec<Field>,
    /// Epochs staged and not yet committed.
    holds: BTreeSet<u64>,
    /// Epochs with a row that could not be encoded: they fail at their
    /// commit rather than commit without it.
    unencodable: BTreeMap<u64, String>,
}

impl PostgresEpochSink {
    /// Moves a connected sink onto its thread.
    pub fn start(sink: PostgresSink) -> Self {
        let fields = sink.schema().fields.clone();
        let name = sink.name().to_string();
        let (to_thread, rx) = crossbeam_channel::unbounded();
        std::thread::Builder::new()
            .name("rill-postgres".into())
            .spawn(move || Epochs::new(sink).run(rx))
            .expect("postgres sink thread");
        PostgresEpochSink {
            to_thread,
            name,
            fields,
            holds: BTreeSet::new(),
            unencodable: BTreeMap::new(),
        }
    }

    fn ask<T>(
        &self,
        msg: impl FnOnce(Sender<Result<T, PostgresError>>) -> Msg,
    ) -> Result<T, SinkError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let gone = || PostgresError::Sql {
            sink: self.name.clone(),
            reason: "the sink's thread has stopped".into(),
        };
        self.to_thread.send(msg(reply)).map_err(|_| gone())?;
        Ok(answer.recv().map_err(|_| gone())??)
    }
}

impl EpochSink for PostgresEpochSink {
    fn stage(&mut self, epoch: u64, records: Vec<OutRecord>) {
        self.holds.insert(epoch);
        // The dataflow's records come encoded (their value); those the
        // writer makes itself, dead letters, come as rows.
        let rows = records
            .into_iter()
            .filter_map(|r| match r.row {
                Some(row) => {
                    let mut encoded = Vec::with_capacity(64);
                    match pg_copy::encode_row(&mut encoded, &row, &self.fields) {
                        Ok(()) => Some(Bytes::from(encoded)),
                        Err(e) => {
                            self.unencodable.entry(epoch).or_insert(e);
                            None
                        }
                    }
                }
                None => r.value,
            })
            .collect();
        let _ = self.to_thread.send(Msg::Rows(epoch, rows));
    }

    fn holds(&self, epoch: u64) -> bool {
        self.holds.contains(&epoch)
    }

    fn frontier(&mut self, complete: u64) {
        let _ = self.to_thread.send(Msg::Frontier(complete));
    }

    fn pre_commit(&mut self, _epoch: u64) -> Result<(), SinkError> {
        Ok(())
    }

    fn commit(&mut self, epoch: u64) -> Result<Committed, SinkError> {
        self.holds = self.holds.split_off(&(epoch + 1));
        if let Some(reason) = self.unencodable.remove(&epoch) {
            let _ = self.to_thread.send(Msg::Abort(epoch));
            return Err(PostgresError::Sql {
                sink: self.name.clone(),
                reason: format!("a row of epoch {epoch} cannot be encoded: {reason}"),
            }
            .into());
        }
        self.ask(|reply| Msg::Commit(epoch, reply))
    }

    fn abort(&mut self, epoch: u64) {
        self.holds.remove(&epoch);
        self.unencodable.remove(&epoch);
        let _ = self.to_thread.send(Msg::Abort(epoch));
    }

    fn contains(&mut self, epoch: u64) -> Result<bool, SinkError> {
        self.ask(|reply| Msg::Contains(epoch, reply))
    }
}

/// The thread's state.
struct Epochs {
    sink: PostgresSink,
    /// Rows of every epoch not yet committed, in epoch order.
    rows: BTreeMap<u64, Vec<Bytes>>,
    /// Every epoch below this one is complete.
    frontier: u64,
    open: Option<Open>,
}

enum Open {
    /// Its transaction is open; this many of its rows have gone in.
    Copying(OpenEpoch, usize),
    /// The table already holds it (a replayed epoch).
    AlreadyThere(u64),
    /// Its transaction could not be opened or failed: it is written whole
    /// at its commit.
    Whole(u64),
}

impl Open {
    fn epoch(&self) -> u64 {
        match self {
            Open::Copying(o, _) => o.epoch,
            Open::AlreadyThere(e) | Open::Whole(e) => *e,
        }
    }
}

impl Epochs {
    fn new(sink: PostgresSink) -> Self {
        Epochs {
            sink,
            rows: BTreeMap::new(),
            frontier: 0,
            open: None,
        }
    }

    fn run(mut self, rx: Receiver<Msg>) {
        while let Ok(msg) = rx.recv() {
            match msg {
                Msg::Rows(epoch, rows) => self.rows.entry(epoch).or_default().extend(rows),
                Msg::Frontier(f) => self.frontier = self.frontier.max(f),
                Msg::Commit(epoch, reply) => {
                    let _ = reply.send(self.commit(epoch));
                }
                Msg::Abort(epoch) => {
                    self.rows.remove(&epoch);
                    if self.open.as_ref().is_some_and(|o| o.epoch() == epoch) {
                        self.close_open();
                    }
                }
                Msg::Contains(epoch, reply) => {
                    let _ = reply.send(self.contains(epoch));
                }
            }
            // Work on the open epoch only while nothing else is asked.
            if rx.is_empty() {
                self.advance();
            }
        }
        self.close_open();
    }

    /// Opens the next epoch once all below it are complete, and sends
    /// the open epoch's rows that have not gone in yet.
    fn advance(&mut self) {
        if self.open.is_none() {
            let Some(&epoch) = self.rows.keys().next() else {
                return;
            };
            if epoch > self.frontier {
                return;
            }
            self.open = Some(match self.sink.begin(epoch) {
                Ok(Some(open)) => Open::Copying(open, 0),
                Ok(None) => Open::AlreadyThere(epoch),
                Err(_) => Open::Whole(epoch),
            });
        }
        if let Some(Open::Copying(open, sent)) = &mut self.open {
            let rows = &self.rows[&open.epoch];
            if *sent < rows.len() {
                let result = self.sink.copy(open, &rows[*sent..]);
                *sent = rows.len();
                if result.is_err() {
                    let epoch = open.epoch;
                    self.close_open();
                    self.open = Some(Open::Whole(epoch));
                }
            }
        }
    }

    fn close_open(&mut self) {
        if let Some(Open::Copying(open, _)) = self.open.take() {
            self.sink.abandon(open);
        }
    }

    /// Commits every epoch up to `upto`, in order.
    fn commit(&mut self, upto: u64) -> Result<Committed, PostgresError> {
        let mut committed = Committed::default();
        let later = self.rows.split_off(&(upto + 1));
        for (epoch, rows) in std::mem::replace(&mut self.rows, later) {
            let began = Instant::now();
            let (written, time) = match self.open.take() {
                Some(Open::Copying(mut open, sent)) if open.epoch == epoch => {
                    let done = match self.sink.copy(&mut open, &rows[sent..]) {
                        // `finish` rolls back itself when it fails.
                        Ok(()) => self.sink.finish(open),
                        Err(e) => {
                            self.sink.abandon(open);
                            Err(e)
                        }
                    };
                    match done {
                        Ok(done) => done,
                        // The transaction is gone with what it held: the
                        // epoch is written whole, as if never opened.
                        Err(_) => self.whole(epoch, &rows, began)?,
                    }
                }
                Some(Open::AlreadyThere(e)) if e == epoch => {
                    (Written::AlreadyThere, began.elapsed())
                }
                // A later epoch's transaction stays open; what was left
                // of this one (it could not be opened) is done with.
                other => {
                    self.open = other.filter(|o| o.epoch() > epoch);
                    self.whole(epoch, &rows, began)?
                }
            };
            committed.time += time;
            match written {
                Written::Rows(n) => committed.rows += n as u64,
                Written::AlreadyThere => {}
                Written::Fallback(path, n) => committed.fallback = Some((path, n as u64)),
            }
        }
        Ok(committed)
    }

    fn whole(
        &mut self,
        epoch: u64,
        rows: &[Bytes],
        began: Instant,
    ) -> Result<(Written, std::time::Duration), PostgresError> {
        // One connection holds one transaction: a later epoch's open one
        // is opened again from its rows, which are kept.
        if matches!(self.open, Some(Open::Copying(..))) {
            self.close_open();
        }
        let written = self.sink.write_epoch(epoch, rows)?;
        Ok((written, began.elapsed()))
    }

    fn contains(&mut self, epoch: u64) -> Result<bool, PostgresError> {
        // The connection's transaction would see its own epoch.
        self.close_open();
        self.sink.contains(epoch)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connectors::postgres_sink::table_rows;
    use crate::record::{Field, FieldType, RowSchema, Value};

    const URL: &str = "postgresql://postgres@127.0.0.1:5432/postgres";

    fn table(what: &str) -> String {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos();
        format!("rill_{what}_{}_{nanos}", std::process::id())
    }

    fn sink(table: &str) -> PostgresEpochSink {
        let schema = RowSchema {
            name: "t".into(),
            fields: vec![
                Field::new("id", FieldType::Int),
                Field::new("name", FieldType::String),
            ],
        };
        // The table's name is the job's too: epochs are recorded per job.
        let mut pg = PostgresSink::new("t", URL, table, schema, None, table, "w0");
        pg.connect()
            .expect("these tests need postgres on 127.0.0.1:5432 (user postgres, trust)");
        PostgresEpochSink::start(pg)
    }

    #[test]
    fn sinks_that_connect_at_once_to_a_table_not_made_yet_all_connect() {
        // The sinks of a job, or the processes of a cluster, make their
        // table at the same time.
        let t = table("at_once");
        let connecting: Vec<_> = (0..4)
            .map(|_| {
                let t = t.clone();
                std::thread::spawn(move || {
                    let schema = RowSchema {
                        name: "t".into(),
                        fields: vec![Field::new("id", FieldType::Int)],
                    };
                    PostgresSink::new("t", URL, &t, schema, None, &t, "w0").connect()
                })
            })
            .collect();
        for c in connecting {
            c.join().unwrap().expect("every sink connects");
        }
    }

    fn records(ids: std::ops::Range<i64>) -> Vec<OutRecord> {
        ids.map(|id| OutRecord {
            key: None,
            value: None,
            partition: None,
            window: None,
            row: Some(vec![Value::Int(id), Value::Str(format!("n{id}").into())]),
        })
        .collect()
    }

    fn ids(table: &str) -> Vec<i64> {
        let mut ids: Vec<i64> = table_rows(URL, table)
            .unwrap()
            .iter()
            .map(|r| {
                r.trim_matches(['(', ')'])
                    .split(',')
                    .next()
                    .unwrap()
                    .parse()
                    .unwrap()
            })
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn rows_go_in_as_they_arrive_and_each_epoch_becomes_visible_whole_at_its_commit() {
        let t = table("epochs");
        let mut s = sink(&t);
        s.frontier(1);
        s.stage(1, records(0..500));
        // A later epoch's rows arrive before the earlier one is complete.
        s.stage(2, records(1000..1010));
        s.stage(1, records(500..700));
        std::thread::sleep(std::time::Duration::from_millis(200));
        assert!(ids(&t).is_empty(), "nothing is visible before its commit");
        s.frontier(2);
        assert_eq!(s.commit(1).unwrap().rows, 700);
        assert_eq!(ids(&t), (0..700).collect::<Vec<_>>());
        s.frontier(3);
        assert_eq!(s.commit(2).unwrap().rows, 10);
        assert!(s.contains(2).unwrap() && !s.contains(3).unwrap());

        // Another instance cutting epoch 1 again (a replay) adds nothing.
        let mut again = sink(&t);
        again.frontier(1);
        again.stage(1, records(0..700));
        again.frontier(2);
        assert_eq!(again.commit(1).unwrap().rows, 0);
        let expected: Vec<i64> = (0..700).chain(1000..1010).collect();
        assert_eq!(ids(&t), expected);
    }

    #[test]
    fn an_epoch_whose_connection_is_cut_while_it_is_open_is_written_whole_at_its_commit() {
        let t = table("cut");
        let mut s = sink(&t);
        s.frontier(1);
        s.stage(1, records(0..300));
        // Cut the sink's connection in the middle of the epoch's COPY.
        let (client, rt) = connect();
        let deadline = Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let cut = rt
                .block_on(client.query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE $1",
                    &[&format!("COPY {t} %")],
                ))
                .unwrap();
            if !cut.is_empty() {
                break;
            }
            assert!(Instant::now() < deadline, "the epoch's COPY never began");
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        s.stage(1, records(300..400));
        s.frontier(2);
        assert_eq!(s.commit(1).unwrap().rows, 400);
        assert_eq!(ids(&t), (0..400).collect::<Vec<_>>());
    }

    fn connect() -> (tokio_postgres::Client, tokio::runtime::Runtime) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let (client, connection) = rt
            .block_on(tokio_postgres::connect(URL, tokio_postgres::NoTls))
            .unwrap();
        rt.spawn(async move {
            let _ = connection.await;
        });
        (client, rt)
    }
}
