//! Files that a commit relies on: written under a hidden temporary name,
//! flushed to disk, renamed, and the rename itself flushed, so a file the
//! epoch log or a Kafka commit counts on survives a power loss, and a
//! reader never sees half of one.

use std::io;
use std::path::Path;

/// Makes the complete file `tmp` durable as `path`.
pub fn publish(tmp: &Path, path: &Path) -> io::Result<()> {
    std::fs::File::open(tmp)?.sync_all()?;
    std::fs::rename(tmp, path)?;
    sync_dir(path)
}

/// Flushes the directory holding `path`, so an entry created or renamed
/// in it is on disk.
pub fn sync_dir(path: &Path) -> io::Result<()> {
    match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => std::fs::File::open(dir)?.sync_all(),
        _ => std::fs::File::open(".")?.sync_all(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_published_file_replaces_its_temporary_name() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join(".a.tmp");
        let path = dir.path().join("a");
        std::fs::write(&tmp, b"rows").unwrap();
        publish(&tmp, &path).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"rows");
        assert!(!tmp.exists());
        assert!(publish(&tmp, &path).is_err(), "a missing file is an error");
    }
}
