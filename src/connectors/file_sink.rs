//! File sink: CSV, gzip-compressed by default, one file per closed window
//! or per epoch. Each file is written under a hidden temporary name and
//! renamed when complete, and its name carries the epoch that wrote it, so
//! a reader never sees half a file and a replayed epoch finds its file.

use super::sink::{Committed, EpochSink, SinkError};
use crate::format::{csv, parquet};
use crate::record::OutRecord;
use crate::record::{Row, RowSchema};
use crate::spec::{Compression, FileFormat, FileSinkConfig, Roll};
use flate2::write::GzEncoder;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

pub struct FileSink {
    name: String,
    /// `-w<i>` for process i > 0 of a cluster, none otherwise.
    writer: String,
    dir: PathBuf,
    schema: RowSchema,
    format: FileFormat,
    compression: Compression,
    roll: Roll,
    /// What epochs not yet complete hold, by window (None when per epoch).
    pending: BTreeMap<u64, BTreeMap<Option<(i64, i64)>, Pending>>,
    /// Files written under their temporary name, by epoch: (temporary,
    /// final) paths.
    prepared: BTreeMap<u64, Vec<(PathBuf, PathBuf)>>,
    /// Part of every temporary name, unique to this instance of the sink:
    /// an instance fenced since, still writing the same epoch, never
    /// writes into this one's file.
    instance: String,
}

#[derive(Default)]
struct Pending {
    lines: Vec<u8>,
    rows: Vec<Row>,
}

/// Removes the temporary files an earlier instance of this sink's writer
/// left when it was killed: they were never published, and the epochs
/// they held are written again.
fn remove_leftovers(dir: &Path, sink: &str, writer_tag: &str) -> std::io::Result<()> {
    let prefix = format!(".{sink}_");
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if !name.starts_with(&prefix) {
            continue;
        }
        if name.ends_with(".tmp") && writer_of(&name[1..]) == Some(writer_tag) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
    Ok(())
}

/// The file in a sink's directory naming the run of the job whose files
/// it holds (see [`FileSink::claim`]).
pub fn run_marker(dir: &Path, sink: &str) -> PathBuf {
    dir.join(format!(".rill-run-{sink}"))
}

/// The epoch in a published file's name (`…_e<digits>[-w<n>].ext`).
pub fn epoch_of(name: &str) -> Option<u64> {
    let at = name.rfind("_e")?;
    let after = &name[at + 2..];
    let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    after[..digits].parse().ok()
}

/// The files sink `sink` has published in `dir`.
pub fn published(dir: &Path, sink: &str) -> std::io::Result<Vec<PathBuf>> {
    let prefix = format!("{sink}_");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.starts_with(&prefix) && epoch_of(&name).is_some() {
            out.push(entry.path());
        }
    }
    out.sort();
    Ok(out)
}

/// The writer tag (`-w1`, or empty for writer 0) in a file's name: what
/// follows the epoch (`_e<digits>`) up to the dot.
fn writer_of(name: &str) -> Option<&str> {
    let at = name.rfind("_e")?;
    let after = &name[at + 2..];
    let digits = after.len() - after.trim_start_matches(|c: char| c.is_ascii_digit()).len();
    if digits == 0 {
        return None;
    }
    let tail = &after[digits..];
    Some(&tail[..tail.find('.')?])
}

/// A tag no other sink instance on this machine has: the process and a
/// count within it.
pub fn instance_tag() -> String {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    format!("p{}-{n}", std::process::id())
}

/// `20230728T113000Z` for a time in epoch milliseconds (UTC).
pub fn compact_utc(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + (m <= 2) as i64;
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

impl FileSink {
    pub fn new(
        name: &str,
        config: &FileSinkConfig,
        dir: &Path,
        schema: RowSchema,
        writer: u32,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let writer_tag = if writer == 0 {
            String::new()
        } else {
            format!("-w{writer}")
        };
        remove_leftovers(dir, name, &writer_tag)?;
        Ok(FileSink {
            name: name.to_string(),
            // The processes of a cluster each write their share of an
            // epoch; process 0's files keep a single process's names.
            writer: writer_tag,
            dir: dir.to_path_buf(),
            schema,
            format: config.format,
            compression: config.compression,
            roll: config.roll,
            pending: BTreeMap::new(),
            prepared: BTreeMap::new(),
            instance: instance_tag(),
        })
    }

    pub fn push(&mut self, epoch: u64, window: Option<(i64, i64)>, line: &[u8]) {
        let group = if self.roll == Roll::Window {
            window
        } else {
            None
        };
        let buf = &mut self
            .pending
            .entry(epoch)
            .or_default()
            .entry(group)
            .or_default()
            .lines;
        buf.extend_from_slice(line);
        buf.push(b'\n');
    }

    pub fn push_row(&mut self, epoch: u64, window: Option<(i64, i64)>, row: Row) {
        let group = if self.roll == Roll::Window {
            window
        } else {
            None
        };
        let pending = self
            .pending
            .entry(epoch)
            .or_default()
            .entry(group)
            .or_default();
        if self.format == FileFormat::Csv {
            let mut line = String::new();
            csv::write_row(&row, &mut line);
            pending.lines.extend_from_slice(line.as_bytes());
            pending.lines.push(b'\n');
        } else {
            pending.rows.push(row);
        }
    }

    fn file_name(&self, epoch: u64, window: Option<(i64, i64)>) -> String {
        let ext = match (self.format, self.compression) {
            (FileFormat::Parquet, _) => "parquet",
            (FileFormat::Csv, Compression::Gzip) => "csv.gz",
            (FileFormat::Csv, Compression::None) => "csv",
        };
        match window {
            Some((start, end)) => format!(
                "{}_{}_{}_e{epoch}{}.{ext}",
                self.name,
                compact_utc(start),
                compact_utc(end),
                self.writer
            ),
            None => format!("{}_e{epoch:010}{}.{ext}", self.name, self.writer),
        }
    }

    /// Claims the directory's files of this sink for run `run` of job
    /// `job`: files of another run (or of one from before runs were named)
    /// are refused, since this run's epoch numbers would meet their names
    /// and skip writing.
    pub fn claim(&self, job: &str, run: &str) -> Result<(), SinkError> {
        let marker = run_marker(&self.dir, &self.name);
        let other = |found: String| SinkError::OtherRun {
            sink: self.name.clone(),
            job: job.to_string(),
            found,
        };
        match std::fs::read_to_string(&marker) {
            Ok(found) if found.trim() == run => return Ok(()),
            Ok(found) => {
                return Err(other(format!(
                    "{} names run {}, this is run {run}",
                    marker.display(),
                    found.trim()
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(self.error(e)),
        }
        let earlier = published(&self.dir, &self.name).map_err(|e| self.error(e))?;
        if let Some(first) = earlier.first() {
            return Err(other(format!(
                "{} files in {} such as {}, of a run before runs were named",
                earlier.len(),
                self.dir.display(),
                first.file_name().unwrap_or_default().to_string_lossy()
            )));
        }
        // The processes of a cluster write the same name at once.
        let tmp = self.dir.join(format!(
            ".rill-run-{}.{}.tmp",
            self.name,
            std::process::id()
        ));
        std::fs::write(&tmp, format!("{run}\n"))
            .and_then(|_| std::fs::rename(&tmp, &marker))
            .map_err(|e| self.error(e))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Writes the files of every epoch up to `epoch` under a temporary
    /// name, flushed to disk; a file already there under its final name
    /// (an earlier run of the same epoch) is not written again.
    fn write_temporary(&mut self, epoch: u64) -> std::io::Result<()> {
        let later = self.pending.split_off(&(epoch + 1));
        let done = std::mem::replace(&mut self.pending, later);
        for (epoch, groups) in done {
            for (window, pending) in groups {
                let name = self.file_name(epoch, window);
                let path = self.dir.join(&name);
                if path.exists() {
                    continue;
                }
                let tmp = self.dir.join(format!(".{name}.{}.tmp", self.instance));
                if self.format == FileFormat::Parquet {
                    parquet::write(&tmp, &self.schema, &pending.rows)
                        .map_err(std::io::Error::other)?;
                } else {
                    let mut file = std::fs::File::create(&tmp)?;
                    let header = csv::header(&self.schema);
                    match self.compression {
                        Compression::Gzip => {
                            let mut gz = GzEncoder::new(file, flate2::Compression::default());
                            gz.write_all(header.as_bytes())?;
                            gz.write_all(b"\n")?;
                            gz.write_all(&pending.lines)?;
                            // The trailer is part of the file: its errors count.
                            gz.finish()?.flush()?;
                        }
                        Compression::None => {
                            file.write_all(header.as_bytes())?;
                            file.write_all(b"\n")?;
                            file.write_all(&pending.lines)?;
                            file.flush()?;
                        }
                    }
                }
                std::fs::File::open(&tmp)?.sync_all()?;
                self.prepared.entry(epoch).or_default().push((tmp, path));
            }
        }
        Ok(())
    }

    fn error(&self, source: std::io::Error) -> SinkError {
        SinkError::Files {
            sink: self.name.clone(),
            dir: self.dir.display().to_string(),
            source,
        }
    }

    fn stage_record(&mut self, epoch: u64, r: OutRecord) {
        match r.row {
            Some(row) => self.push_row(epoch, r.window, row),
            None => self.push(epoch, r.window, r.value.as_deref().unwrap_or_default()),
        }
    }
}

impl EpochSink for FileSink {
    fn stage(&mut self, epoch: u64, records: Vec<OutRecord>) {
        for r in records {
            self.stage_record(epoch, r);
        }
    }

    fn holds(&self, epoch: u64) -> bool {
        self.pending.contains_key(&epoch)
    }

    fn pre_commit(&mut self, epoch: u64) -> Result<(), SinkError> {
        self.write_temporary(epoch).map_err(|e| self.error(e))
    }

    fn commit(&mut self, epoch: u64) -> Result<Committed, SinkError> {
        let later = self.prepared.split_off(&(epoch + 1));
        let done = std::mem::replace(&mut self.prepared, later);
        let mut committed = Committed::default();
        for (tmp, path) in done.into_values().flatten() {
            if super::durable::publish(&tmp, &path).map_err(|e| self.error(e))? {
                committed.files.push(path);
            }
        }
        Ok(committed)
    }

    fn abort(&mut self, epoch: u64) {
        self.pending.remove(&epoch);
        for (tmp, _) in self.prepared.remove(&epoch).unwrap_or_default() {
            let _ = std::fs::remove_file(tmp);
        }
    }

    fn contains(&mut self, epoch: u64) -> Result<bool, SinkError> {
        let marks = [format!("_e{epoch}."), format!("_e{epoch:010}.")];
        let prefix = format!("{}_", self.name);
        let entries = std::fs::read_dir(&self.dir).map_err(|e| self.error(e))?;
        for entry in entries {
            let name = entry.map_err(|e| self.error(e))?.file_name();
            let name = name.to_string_lossy();
            if name.starts_with(&prefix) && marks.iter().any(|m| name.contains(m.as_str())) {
                return Ok(true);
            }
        }
        Ok(false)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_epoch_is_visible_only_once_committed_and_a_replay_writes_nothing_new() {
        let dir = tempfile::tempdir().unwrap();
        let schema = crate::record::RowSchema {
            name: "x".into(),
            fields: Vec::new(),
        };
        let config: FileSinkConfig = toml::from_str(
            "inputs = [\"x\"]\npath = \"x\"\nformat = \"csv\"\ncompression = \"none\"\nroll = \"epoch\"",
        )
        .unwrap();
        let mut sink = FileSink::new("lake", &config, dir.path(), schema, 0).unwrap();
        let line = |v: &str| OutRecord {
            key: None,
            value: Some(bytes::Bytes::copy_from_slice(v.as_bytes())),
            partition: None,
            window: None,
            row: None,
        };
        sink.stage(3, vec![line("a"), line("b")]);
        assert!(sink.holds(3) && !sink.holds(4));
        sink.pre_commit(3).unwrap();
        assert!(!sink.contains(3).unwrap(), "pre-committed is not visible");
        let c = sink.commit(3).unwrap();
        assert_eq!(c.files.len(), 1);
        assert!(sink.contains(3).unwrap());
        let text = std::fs::read_to_string(&c.files[0]).unwrap();
        assert_eq!(text.lines().skip(1).collect::<Vec<_>>(), ["a", "b"]);
        // A replay of epoch 3 finds it there and leaves it alone.
        sink.stage(3, vec![line("a"), line("b")]);
        sink.pre_commit(3).unwrap();
        assert!(sink.commit(3).unwrap().files.is_empty());
        // An aborted epoch leaves nothing behind.
        sink.stage(4, vec![line("c")]);
        sink.pre_commit(4).unwrap();
        sink.abort(4);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_fenced_instance_writing_the_same_epoch_neither_mixes_into_nor_replaces_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let schema = crate::record::RowSchema {
            name: "x".into(),
            fields: Vec::new(),
        };
        let config: FileSinkConfig = toml::from_str(
            "inputs = [\"x\"]\npath = \"x\"\nformat = \"csv\"\ncompression = \"gzip\"\nroll = \"epoch\"",
        )
        .unwrap();
        let line = |v: &str| OutRecord {
            key: None,
            value: Some(bytes::Bytes::copy_from_slice(v.as_bytes())),
            partition: None,
            window: None,
            row: None,
        };
        // The old instance and its replacement hold epoch 5's rows in
        // another order (two workers), and write them side by side.
        let mut old = FileSink::new("lake", &config, dir.path(), schema.clone(), 0).unwrap();
        let mut new = FileSink::new("lake", &config, dir.path(), schema, 0).unwrap();
        old.stage(5, vec![line("a"), line("b")]);
        new.stage(5, vec![line("b"), line("a")]);
        old.pre_commit(5).unwrap();
        new.pre_commit(5).unwrap();
        let published = new.commit(5).unwrap().files;
        assert_eq!(published.len(), 1);
        let read = || {
            let mut text = String::new();
            use std::io::Read;
            flate2::read::GzDecoder::new(std::fs::File::open(&published[0]).unwrap())
                .read_to_string(&mut text)
                .unwrap();
            text
        };
        assert_eq!(read(), "\nb\na\n");
        // The fenced instance, committing late, replaces nothing.
        assert!(old.commit(5).unwrap().files.is_empty());
        assert_eq!(read(), "\nb\na\n");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn a_new_instance_removes_its_writers_leftover_temporary_files_only() {
        assert_eq!(writer_of("lake_e0000000005.csv.gz.p12-0.tmp"), Some(""));
        assert_eq!(
            writer_of("lake_20230728T112000Z_20230728T112500Z_e7-w1.csv.gz.p3-1.tmp"),
            Some("-w1")
        );
        assert_eq!(writer_of("nothing.tmp"), None);
        let dir = tempfile::tempdir().unwrap();
        let touch = |n: &str| std::fs::write(dir.path().join(n), b"x").unwrap();
        touch(".lake_e0000000005.csv.p1-0.tmp");
        touch(".lake_e0000000005-w1.csv.p2-0.tmp");
        touch(".other_e0000000005.csv.p1-0.tmp");
        touch("lake_e0000000004.csv");
        remove_leftovers(dir.path(), "lake", "").unwrap();
        let mut left: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(
            left,
            [
                ".lake_e0000000005-w1.csv.p2-0.tmp",
                ".other_e0000000005.csv.p1-0.tmp",
                "lake_e0000000004.csv"
            ]
        );
    }

    #[test]
    fn utc_names() {
        assert_eq!(compact_utc(1_690_543_334_146), "20230728T112214Z");
        assert_eq!(compact_utc(0), "19700101T000000Z");
    }
}
