//! File access shared by the software collectors: reads with a size cap (a hostile or runaway
//! state file must not exhaust the agent's memory) and directory listings that tolerate a
//! missing directory, since most formats are simply absent on a given machine.

use crate::collect::{Collected, Root};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use vakt_proto::model::SectionKind;

/// Opens `path` for reading only if it is a regular file, judged on the open handle.
///
/// Why: many of the paths read (`~/.local/bin`, a user's flatpak installation) are the user's
/// to fill, and the agent runs as root. A plain open of a FIFO blocks until someone writes to
/// it, which froze collection for good; a check by path before the open is a race (the file
/// can be swapped in between). So the open itself never blocks (`O_NONBLOCK`, no controlling
/// terminal), and the type is taken from the handle that was opened.
#[cfg(unix)]
pub fn open_regular(path: &Path) -> io::Result<std::fs::File> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_file() {
        return Ok(file);
    }
    let what = if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() || kind.is_block_device() {
        "a device"
    } else if kind.is_dir() {
        "a directory"
    } else {
        "not a regular file"
    };
    Err(io::Error::new(
        io::ErrorKind::InvalidInput,
        format!("{what}, not a regular file: not read"),
    ))
}

/// Elsewhere there are no FIFOs to fear in these paths; the type is still judged on the handle.
#[cfg(not(unix))]
pub fn open_regular(path: &Path) -> io::Result<std::fs::File> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.is_file() {
        Ok(file)
    } else {
        Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file: not read",
        ))
    }
}

/// Reads at most `cap` bytes of `path`; a longer file is an error rather than a silent
/// truncation, because a cut-off JSON or database is corrupt input, not a smaller one. Only a
/// regular file is read ([`open_regular`]).
pub fn read_capped(path: &Path, cap: u64) -> io::Result<Vec<u8>> {
    let file = open_regular(path)?;
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

    /// Runs `f` on a thread and fails (instead of hanging the suite) if it has not returned
    /// within 20 s: a blocking open of a FIFO never returns.
    #[cfg(unix)]
    pub(crate) fn returns_promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("blocked: a read of a FIFO waited for a writer")
    }

    #[cfg(unix)]
    pub(crate) fn mkfifo(path: &Path) {
        let st = std::process::Command::new("mkfifo")
            .arg(path)
            .status()
            .unwrap();
        assert!(st.success(), "mkfifo {}", path.display());
    }

    #[cfg(unix)]
    #[test]
    fn a_fifo_or_a_directory_is_an_error_never_a_wait() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("deploy");
        mkfifo(&fifo);
        let err = returns_promptly(move || read_capped(&fifo, 1024)).unwrap_err();
        assert!(err.to_string().contains("a FIFO"), "{err}");
        let d = dir.path().to_path_buf();
        let err = returns_promptly(move || read_capped(&d, 1024)).unwrap_err();
        assert!(err.to_string().contains("directory"), "{err}");
    }

    /// The freeze from issue 16: a user's FIFO where the flatpak and unmanaged-software
    /// collectors look. Both return, and the FIFO is an error in the report, not a wait.
    #[cfg(unix)]
    #[test]
    fn a_users_fifos_never_block_the_software_collectors() {
        let dir = tempfile::tempdir().unwrap();
        let at = |p: &str| dir.path().join(p.trim_start_matches('/'));
        std::fs::create_dir_all(at("/etc")).unwrap();
        std::fs::write(
            at("/etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nanna:x:1000:1000:Anna:/home/anna:/bin/bash\n",
        )
        .unwrap();
        let deploy = at("/home/anna/.local/share/flatpak/app/x/x86_64/stable/active");
        std::fs::create_dir_all(&deploy).unwrap();
        mkfifo(&deploy.join("deploy"));
        std::fs::create_dir_all(at("/home/anna/.local/bin")).unwrap();
        mkfifo(&at("/home/anna/.local/bin/x"));

        let root = Root::new(dir.path());
        let r = root.clone();
        let flatpak = returns_promptly(move || crate::collect::software::flatpak::collect(&r));
        assert!(
            flatpak.errors.iter().any(|e| e.message.contains("FIFO")),
            "the FIFO is reported: {:?}",
            flatpak.errors
        );
        let r = root.clone();
        let unmanaged = returns_promptly(move || crate::collect::software::unmanaged::collect(&r));
        assert!(
            unmanaged.value.iter().all(|p| p.name != "x"),
            "{:?}",
            unmanaged.value
        );
    }
}
