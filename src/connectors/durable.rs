//! Files that a commit relies on: written under a hidden temporary name,
//! flushed to disk, renamed, and the rename itself flushed, so a file the
//! epoch log or a Kafka commit counts on survives a power loss, and a
//! reader never sees half of one.

use std::io;
use std::path::Path;

/// Makes the complete file `tmp` durable as `path`, unless a file is
/// there already: then `tmp` goes, and the file there stays. A file under
/// an epoch's name is that epoch's output, whole; another attempt at the
/// epoch (a replay, or an instance fenced since) never replaces it, so a
/// reader who has opened it never sees it change. Says whether `tmp` was
/// published.
pub fn publish(tmp: &Path, path: &Path) -> io::Result<bool> {
    std::fs::File::open(tmp)?.sync_all()?;
    // A hard link, unlike a rename, fails where the name is taken.
    let published = match std::fs::hard_link(tmp, path) {
        Ok(()) => true,
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => false,
        Err(e) => return Err(e),
    };
    std::fs::remove_file(tmp)?;
    sync_dir(path)?;
    Ok(published)
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
        assert!(publish(&tmp, &path).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"rows");
        assert!(!tmp.exists());
        assert!(publish(&tmp, &path).is_err(), "a missing file is an error");
        // Another attempt's file never replaces the one published.
        let other = dir.path().join(".a.other.tmp");
        std::fs::write(&other, b"other rows").unwrap();
        assert!(!publish(&other, &path).unwrap());
        assert_eq!(std::fs::read(&path).unwrap(), b"rows");
        assert!(!other.exists());
    }
}
