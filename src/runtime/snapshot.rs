//! Local snapshots of aggregate state. When a run stops cleanly, every
//! group of each plain aggregate is written to one file per transform in
//! the job's state directory, with the epoch it is as of, the attempt that
//! committed that epoch and where the transform's changelog ended. A
//! start on the same machine loads the file and reads only the changelog
//! after those offsets, instead of all of it: the changelog stays the
//! source of truth (as with Kafka Streams' state stores and checkpoint
//! files), and a snapshot that is missing, damaged, or not of a committed
//! epoch of this job is left aside for the changelog.
//!
//! A file: `RILLSNAP`, a version byte, the header in postcard, then each
//! group as (key length, key, state length, state) in little-endian u32
//! lengths, and a CRC-32 of everything before it.

use crate::dataflow::store::Packed;
use serde::{Deserialize, Serialize};
use std::io::Write;
use std::path::{Path, PathBuf};

const MAGIC: &[u8] = b"RILLSNAP";
const VERSION: u8 = 1;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Header {
    /// The epoch the state is as of.
    pub epoch: u64,
    /// The attempt whose copy of that epoch committed.
    pub attempt: u32,
    /// Per changelog partition, the offset its records after `epoch`
    /// start at or after.
    pub offsets: Vec<i64>,
    /// The encoding of the states (the changelog's value format).
    pub state_format: u8,
}

pub struct Snapshot {
    pub header: Header,
    pub groups: Vec<(Packed, Packed)>,
}

/// The directory of `job`'s snapshots.
pub fn dir(job: &crate::spec::JobConfig) -> PathBuf {
    job.state_dir().join(&job.name)
}

/// Keeps the groups the workers handed over as the snapshot of each
/// transform as of `epoch`, which `attempt` committed. A snapshot that
/// cannot be written is only a slower next start: it is said, not fatal.
pub fn keep(
    plan: &crate::plan::Plan,
    epoch: u64,
    attempt: u32,
    snapshots: std::collections::BTreeMap<String, Vec<Vec<(Packed, Packed)>>>,
) {
    use crate::connectors::kafka_admin;
    let job = &plan.job;
    let dir = dir(job);
    for (transform, parts) in snapshots {
        let topic = job.changelog_topic(&transform);
        let kept = kafka_admin::partition_count(&job.brokers, &topic)
            .map_err(|e| e.to_string())
            .and_then(|n| {
                kafka_admin::watermarks(&job.brokers, &topic, n.unwrap_or(0))
                    .map_err(|e| e.to_string())
            })
            .and_then(|marks| {
                let header = Header {
                    epoch,
                    attempt,
                    offsets: marks.iter().map(|(_, high)| *high).collect(),
                    state_format: crate::dataflow::state::VERSION,
                };
                write(&dir, &transform, &header, &parts).map_err(|e| e.to_string())
            });
        if let Err(e) = kept {
            tracing::warn!(
                "could not keep a local snapshot of {transform} in {}: {e}; the next start reads its changelog instead",
                dir.display()
            );
        }
    }
}

fn file(dir: &Path, transform: &str) -> PathBuf {
    dir.join(format!("{transform}.snapshot"))
}

/// Writes a transform's snapshot, replacing the last one at once (a
/// temporary file renamed over it).
pub fn write(
    dir: &Path,
    transform: &str,
    header: &Header,
    parts: &[Vec<(Packed, Packed)>],
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let mut body = Vec::new();
    body.extend_from_slice(MAGIC);
    body.push(VERSION);
    body.extend(postcard::to_allocvec(header).expect("headers serialize"));
    let count: usize = parts.iter().map(Vec::len).sum();
    body.extend((count as u64).to_le_bytes());
    for (key, state) in parts.iter().flatten() {
        for b in [key.as_bytes(), state.as_bytes()] {
            body.extend((b.len() as u32).to_le_bytes());
            body.extend_from_slice(b);
        }
    }
    let mut crc = flate2::Crc::new();
    crc.update(&body);
    body.extend(crc.sum().to_le_bytes());
    let target = file(dir, transform);
    let tmp = target.with_extension("snapshot.tmp");
    let mut f = std::fs::File::create(&tmp)?;
    f.write_all(&body)?;
    f.sync_all()?;
    std::fs::rename(&tmp, &target)
}

/// Reads a transform's snapshot: None when there is none, an error that
/// says why when there is one that cannot be used.
pub fn read(dir: &Path, transform: &str) -> Result<Option<Snapshot>, String> {
    let bytes = match std::fs::read(file(dir, transform)) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot read it: {e}")),
    };
    parse(&bytes).map(Some)
}

fn parse(bytes: &[u8]) -> Result<Snapshot, String> {
    let damaged = || "it is damaged".to_string();
    if bytes.len() < MAGIC.len() + 1 + 4 || !bytes.starts_with(MAGIC) {
        return Err("it is not a rill snapshot".into());
    }
    let (body, sum) = bytes.split_at(bytes.len() - 4);
    let mut crc = flate2::Crc::new();
    crc.update(body);
    if crc.sum().to_le_bytes() != sum {
        return Err(damaged());
    }
    if body[MAGIC.len()] != VERSION {
        return Err(format!(
            "it is of format {}, not {VERSION}",
            body[MAGIC.len()]
        ));
    }
    let (header, mut rest): (Header, &[u8]) =
        postcard::take_from_bytes(&body[MAGIC.len() + 1..]).map_err(|_| damaged())?;
    let mut take = |n: usize| -> Result<&[u8], String> {
        if rest.len() < n {
            return Err(damaged());
        }
        let (a, b) = rest.split_at(n);
        rest = b;
        Ok(a)
    };
    let count = u64::from_le_bytes(take(8)?.try_into().unwrap()) as usize;
    let mut groups = Vec::with_capacity(count.min(body.len() / 8));
    for _ in 0..count {
        let klen = u32::from_le_bytes(take(4)?.try_into().unwrap()) as usize;
        let key = Packed::new(take(klen)?);
        let slen = u32::from_le_bytes(take(4)?.try_into().unwrap()) as usize;
        let state = Packed::new(take(slen)?);
        groups.push((key, state));
    }
    if !rest.is_empty() {
        return Err(damaged());
    }
    Ok(Snapshot { header, groups })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> Header {
        Header {
            epoch: 7,
            attempt: 3,
            offsets: vec![10, 0],
            state_format: 2,
        }
    }

    #[test]
    fn a_snapshot_reads_back_as_written_from_every_worker() {
        let dir = tempfile::tempdir().unwrap();
        let long = vec![9u8; 40];
        let parts = vec![
            vec![(Packed::new(&[1]), Packed::new(&[2, 3]))],
            vec![
                (Packed::new(&long), Packed::new(&[])),
                (Packed::new(&[4]), Packed::new(&long)),
            ],
        ];
        write(dir.path(), "totals", &header(), &parts).unwrap();
        let snap = read(dir.path(), "totals").unwrap().unwrap();
        assert_eq!(snap.header, header());
        assert_eq!(snap.groups, parts.concat());
        assert!(read(dir.path(), "other").unwrap().is_none());
    }

    #[test]
    fn a_damaged_or_foreign_file_is_an_error_that_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let write_one = || {
            let group = vec![(Packed::new(&[1]), Packed::new(&[2]))];
            write(dir.path(), "t", &header(), &[group]).unwrap();
        };
        write_one();
        let path = file(dir.path(), "t");
        let mut bytes = std::fs::read(&path).unwrap();
        let last = bytes.len() - 6;
        bytes[last] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(read(dir.path(), "t").err().unwrap(), "it is damaged");
        std::fs::write(&path, b"something else entirely").unwrap();
        assert_eq!(
            read(dir.path(), "t").err().unwrap(),
            "it is not a rill snapshot"
        );
        // Cut short: the checksum no longer matches.
        write_one();
        let bytes = std::fs::read(&path).unwrap();
        std::fs::write(&path, &bytes[..bytes.len() - 3]).unwrap();
        assert_eq!(read(dir.path(), "t").err().unwrap(), "it is damaged");
    }
}
