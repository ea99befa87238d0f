//! Reading users' files under the agent's root without letting a user's symlink (or a path
//! written in a user's settings) reach anything the user could not read themselves.
//!
//! The agent runs as root and reports some file contents nearly verbatim (signatures, forward
//! targets), so two rules hold for every file read here:
//! - links are followed the way the device would follow them, but inside the root: an absolute
//!   link target is taken under the root and `..` stops at the root;
//! - the file actually opened must be owned by the user or readable by everyone, judged on the
//!   open handle, so swapping a link in between the check and the read gains nothing.

use crate::collect::Root;
use std::ffi::OsString;
use std::io::Read;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Component, Path, PathBuf};

/// Links followed while resolving one path before giving up (the kernel's own limit is 40).
const MAX_LINKS: usize = 40;

/// The largest file read: settings files are kilobytes, a bigger one is not what we think it is.
pub const MAX_FILE_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("too many symbolic links")]
    LinkLoop,
    #[error("not a regular file")]
    NotAFile,
    #[error("larger than {MAX_FILE_BYTES} bytes ({0} bytes); not read")]
    TooLarge(u64),
    #[error("owned by uid {owner} with mode {mode:o}: not readable by the user, not read")]
    NotTheUsers { owner: u32, mode: u32 },
}

/// The device path `device_path` resolved under `root`, links followed inside the root. Missing
/// components are kept as written, so the caller's open reports "not found" as usual.
pub fn resolve(root: &Root, device_path: &Path) -> Result<PathBuf, ReadError> {
    let mut done: Vec<OsString> = Vec::new();
    let mut todo: Vec<OsString> = components_rev(device_path);
    let mut links = 0;
    while let Some(part) = todo.pop() {
        if part == ".." {
            done.pop();
            continue;
        }
        let candidate = root.join(under(&done).join(&part));
        match std::fs::symlink_metadata(&candidate) {
            Ok(meta) if meta.file_type().is_symlink() => {
                links += 1;
                if links > MAX_LINKS {
                    return Err(ReadError::LinkLoop);
                }
                let target = std::fs::read_link(&candidate)?;
                if target.is_absolute() {
                    done.clear();
                }
                todo.extend(components_rev(&target));
            }
            _ => done.push(part),
        }
    }
    Ok(root.join(under(&done)))
}

/// The normal components of `p` (and `..`, which `resolve` applies), last first, for popping.
fn components_rev(p: &Path) -> Vec<OsString> {
    let mut v: Vec<OsString> = p
        .components()
        .filter_map(|c| match c {
            Component::Normal(s) => Some(s.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            _ => None,
        })
        .collect();
    v.reverse();
    v
}

fn under(parts: &[OsString]) -> PathBuf {
    let mut p = PathBuf::from("/");
    p.extend(parts);
    p
}

/// Reads the user's file at `device_path`; `Ok(None)` when it does not exist.
pub fn read_user_file(
    root: &Root,
    device_path: &Path,
    uid: u32,
) -> Result<Option<Vec<u8>>, ReadError> {
    let real = resolve(root, device_path)?;
    // Only regular files are opened: opening a FIFO would block, a device could act.
    match std::fs::symlink_metadata(&real) {
        Ok(meta) if !meta.is_file() => return Err(ReadError::NotAFile),
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    }
    // Non-blocking and not following a link, in case the file was swapped since the check.
    let mut file = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW | libc::O_NOCTTY)
        .open(&real)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    let meta = file.metadata()?;
    if !meta.is_file() {
        return Err(ReadError::NotAFile);
    }
    readable_by(uid, &meta)?;
    if meta.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(meta.len()));
    }
    let mut bytes = Vec::new();
    // The size can grow after the check; never read more than the limit.
    file.by_ref()
        .take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(bytes.len() as u64));
    }
    Ok(Some(bytes))
}

/// Whether a file is owned by `uid` or readable by everyone. Group membership is not checked:
/// a file only the user's group may read is not read, which costs at most one signature.
fn readable_by(uid: u32, meta: &std::fs::Metadata) -> Result<(), ReadError> {
    let mode = meta.mode() & 0o7777;
    if meta.uid() == uid || mode & 0o004 != 0 {
        Ok(())
    } else {
        Err(ReadError::NotTheUsers {
            owner: meta.uid(),
            mode,
        })
    }
}

/// Whether the device path is a directory (links followed inside the root).
pub fn is_dir(root: &Root, device_path: &Path) -> bool {
    resolve(root, device_path).is_ok_and(|p| p.is_dir())
}

/// The entries of a directory as device paths, sorted; `Ok(empty)` when it does not exist.
pub fn list_dir(root: &Root, device_path: &Path) -> Result<Vec<PathBuf>, ReadError> {
    let real = resolve(root, device_path)?;
    let entries = match std::fs::read_dir(&real) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut out = Vec::new();
    for entry in entries {
        out.push(device_path.join(entry?.file_name()));
    }
    out.sort();
    Ok(out)
}

/// Resolves `..` and `.` in a device path lexically (`/home/a/.tb/p/../sig.txt` →
/// `/home/a/.tb/sig.txt`), for paths written in settings relative to some directory.
pub fn normalize(p: &Path) -> PathBuf {
    let mut parts: Vec<OsString> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s.to_os_string()),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    under(&parts)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    fn tree() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        std::fs::create_dir_all(dir.path().join("home/anna/sieve")).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        (dir, root)
    }

    #[test]
    fn links_stay_under_the_root() {
        let (dir, root) = tree();
        let d = dir.path();
        std::fs::write(d.join("home/anna/sieve/a.sieve"), "keep;").unwrap();
        symlink("sieve/a.sieve", d.join("home/anna/.dovecot.sieve")).unwrap();
        symlink("/etc/secret", d.join("home/anna/abs")).unwrap();
        symlink("../../../../../../etc/secret", d.join("home/anna/up")).unwrap();
        let r = |p: &str| resolve(&root, Path::new(p)).unwrap();
        assert_eq!(
            r("/home/anna/.dovecot.sieve"),
            d.join("home/anna/sieve/a.sieve")
        );
        assert_eq!(r("/home/anna/abs"), d.join("etc/secret"));
        assert_eq!(r("/home/anna/up"), d.join("etc/secret"));
    }

    #[test]
    fn link_loops_end() {
        let (dir, root) = tree();
        symlink("b", dir.path().join("home/anna/a")).unwrap();
        symlink("a", dir.path().join("home/anna/b")).unwrap();
        assert!(matches!(
            read_user_file(&root, Path::new("/home/anna/a"), 4242),
            Err(ReadError::LinkLoop)
        ));
    }

    #[test]
    fn files_the_user_cannot_read_are_refused() {
        let (dir, root) = tree();
        let secret = dir.path().join("etc/secret");
        std::fs::write(&secret, "root:hash").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        symlink("/etc/secret", dir.path().join("home/anna/.forward")).unwrap();
        // uid 4242 owns nothing in the tree, and the file is not world-readable.
        let got = read_user_file(&root, Path::new("/home/anna/.forward"), 4242);
        assert!(matches!(got, Err(ReadError::NotTheUsers { .. })), "{got:?}");
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let got = read_user_file(&root, Path::new("/home/anna/.forward"), 4242).unwrap();
        assert_eq!(got.as_deref(), Some(&b"root:hash"[..]));
    }

    #[test]
    fn missing_is_none_and_directories_are_errors() {
        let (_dir, root) = tree();
        assert!(
            read_user_file(&root, Path::new("/home/anna/none"), 0)
                .unwrap()
                .is_none()
        );
        assert!(matches!(
            read_user_file(&root, Path::new("/home/anna/sieve"), 0),
            Err(ReadError::NotAFile)
        ));
    }

    #[test]
    fn fifos_are_refused_without_blocking() {
        let (dir, root) = tree();
        let fifo = dir.path().join("home/anna/.forward");
        let status = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(status.success());
        assert!(matches!(
            read_user_file(&root, Path::new("/home/anna/.forward"), 0),
            Err(ReadError::NotAFile)
        ));
    }

    #[test]
    fn normalizes_lexically() {
        assert_eq!(
            normalize(Path::new("/home/a/.tb/p/../../sig.txt")),
            PathBuf::from("/home/a/sig.txt")
        );
        assert_eq!(normalize(Path::new("/../../x")), PathBuf::from("/x"));
    }
}
