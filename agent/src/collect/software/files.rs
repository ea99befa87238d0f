//! File access shared by the software collectors: reads with a size cap (a hostile or runaway
//! state file must not exhaust the agent's memory) and directory listings that tolerate a
//! missing directory, since most formats are simply absent on a given machine.

use crate::collect::{Collected, Root};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use vakt_proto::model::SectionKind;

/// Reads at most `cap` bytes of `path`; a longer file is an error rather than a silent
/// truncation, because a cut-off JSON or database is corrupt input, not a smaller one.
pub fn read_capped(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let file = std::fs::File::open(path)?;
    let mut buf = Vec::new();
    file.take(cap.saturating_add(1)).read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("larger than the {cap}-byte limit"),
        ));
    }
    Ok(buf)
}

/// The entries of a directory, sorted by name so reports are stable between runs. A missing
/// directory is `Ok(None)`: the format is not installed, which is not an error.
pub fn list_dir(path: &Path) -> io::Result<Option<Vec<(String, PathBuf)>>> {
    let rd = match std::fs::read_dir(path) {
        Ok(rd) => rd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) if e.kind() == io::ErrorKind::NotADirectory => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for entry in rd {
        let entry = entry?;
        out.push((
            entry.file_name().to_string_lossy().into_owned(),
            entry.path(),
        ));
    }
    out.sort();
    Ok(Some(out))
}

/// [`list_dir`] of a device directory under `root`, with a failure (other than absence)
/// recorded against that directory and an empty listing in its place.
pub fn list_or_report<T>(root: &Root, dir: &str, out: &mut Collected<T>) -> Vec<(String, PathBuf)> {
    match list_dir(&root.join(dir)) {
        Ok(l) => l.unwrap_or_default(),
        Err(e) => {
            out.error(SectionKind::Software, dir, e);
            Vec::new()
        }
    }
}

/// Reads a file that may legitimately be absent: `Ok(None)` when it does not exist.
pub fn read_optional(path: &Path, cap: u64) -> io::Result<Option<Vec<u8>>> {
    match read_capped(path, cap) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_rejects_longer_files_and_missing_dirs_are_none() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("f");
        std::fs::write(&f, b"12345").unwrap();
        assert_eq!(read_capped(&f, 5).unwrap(), b"12345");
        assert!(read_capped(&f, 4).is_err());
        assert!(
            read_optional(&dir.path().join("nope"), 4)
                .unwrap()
                .is_none()
        );
        assert!(list_dir(&dir.path().join("nope")).unwrap().is_none());
        assert!(list_dir(&f).unwrap().is_none());
        let listed = list_dir(dir.path()).unwrap().unwrap();
        assert_eq!(listed[0].0, "f");
    }
}
