//! Replacing a file atomically, by handle: a temporary file in the same directory, created
//! `O_EXCL|O_NOFOLLOW` at 0600, given its owner, extended attributes and mode *before* any
//! content is written, then synced, renamed over the target and the directory synced.
//!
//! The order is the point: a file that receives its mode after its content (as `fs::write`
//! then `chmod` does) is readable under the umask's 0644 for a moment, which for /etc/shadow
//! means every password hash. Everything is done relative to an open directory, so a path
//! swapped underneath cannot redirect the write.

use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Gid, Mode, OFlags, Uid, XattrFlags};
use rustix::io::Errno;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A replacement that failed, with the step that failed. The target is then unchanged and the
/// temporary file removed.
#[derive(Debug, thiserror::Error)]
#[error("{path}: {step}: {source}")]
pub struct ReplaceError {
    pub path: PathBuf,
    pub step: &'static str,
    #[source]
    pub source: std::io::Error,
}

/// What the new file gets before any content is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attrs {
    /// Permission bits (`& 0o7777`).
    pub mode: u32,
    /// Owner and group; `None` keeps the creating process's.
    pub owner: Option<(u32, u32)>,
    /// Extended attributes (the SELinux label `security.selinux` among them), name and value.
    pub xattrs: Vec<(String, Vec<u8>)>,
}

impl Attrs {
    /// A file private to its creator, without extended attributes.
    pub fn private() -> Self {
        Self::with_mode(0o600)
    }

    /// A file of the creator with `mode`, without extended attributes.
    pub fn with_mode(mode: u32) -> Self {
        Self {
            mode,
            owner: None,
            xattrs: Vec::new(),
        }
    }

    /// The attributes of an open file: its mode, owner and extended attributes, except the
    /// ones that sign the content (IMA, EVM), which would be wrong for new content.
    pub fn of(fd: impl AsFd) -> std::io::Result<Self> {
        let st = rustix::fs::fstat(&fd)?;
        Ok(Self {
            mode: st.st_mode & 0o7777,
            owner: Some((st.st_uid, st.st_gid)),
            xattrs: xattrs_of(fd.as_fd())?,
        })
    }
}

/// Names of attributes bound to a file's content: copying them onto new content would make
/// an IMA-appraising kernel refuse the file.
const CONTENT_BOUND: [&str; 2] = ["security.ima", "security.evm"];

fn xattrs_of(fd: BorrowedFd<'_>) -> std::io::Result<Vec<(String, Vec<u8>)>> {
    let size = match rustix::fs::flistxattr_query(fd) {
        Ok(n) => n,
        // A file system without extended attributes has none to keep.
        Err(Errno::NOTSUP) => return Ok(Vec::new()),
        Err(e) => return Err(e.into()),
    };
    let mut names = vec![0u8; size];
    let n = rustix::fs::flistxattr(fd, &mut names[..])?;
    names.truncate(n);
    let mut out = Vec::new();
    for name in names.split(|b| *b == 0).filter(|n| !n.is_empty()) {
        let name = String::from_utf8_lossy(name).into_owned();
        if CONTENT_BOUND.contains(&name.as_str()) {
            continue;
        }
        let len = match rustix::fs::fgetxattr_query(fd, name.as_str()) {
            Ok(len) => len,
            // Removed since it was listed.
            Err(Errno::NODATA) => continue,
            Err(e) => return Err(e.into()),
        };
        let mut value = vec![0u8; len];
        let n = rustix::fs::fgetxattr(fd, name.as_str(), &mut value[..])?;
        value.truncate(n);
        out.push((name, value));
    }
    Ok(out)
}

/// Opens a directory for [`replace_at`].
pub fn open_dir(path: &Path) -> Result<OwnedFd, ReplaceError> {
    rustix::fs::open(
        path,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| ReplaceError {
        path: path.to_path_buf(),
        step: "open the directory",
        source: e.into(),
    })
}

/// Replaces the file `path` with `data`, private to the caller (0600).
pub fn write_private(path: &Path, data: &[u8]) -> Result<(), ReplaceError> {
    let dir_path = path.parent().unwrap_or(Path::new("."));
    let name = path.file_name().ok_or_else(|| ReplaceError {
        path: path.to_path_buf(),
        step: "name the file",
        source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "no file name"),
    })?;
    let dir = open_dir(dir_path)?;
    replace_at(
        dir.as_fd(),
        dir_path,
        &name.to_string_lossy(),
        data,
        &Attrs::private(),
    )
}

/// A temporary name no other call of this process uses; the process id keeps two agents
/// (an old one stopping, a new one starting) apart.
fn temp_name(name: &str) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let n = SEQ.fetch_add(1, Ordering::Relaxed);
    format!(".{name}.vakt-{}-{n}", std::process::id())
}

/// Replaces `name` in the directory `dir` (shown as `dir_path` in errors) with `data`, the new
/// file having `attrs` before its first byte. The mode is never wider than `attrs.mode` nor
/// than 0600 at any instant before the content is complete, except that an access ACL among
/// `attrs.xattrs` applies from when it is set (still before any content).
pub fn replace_at(
    dir: BorrowedFd<'_>,
    dir_path: &Path,
    name: &str,
    data: &[u8],
    attrs: &Attrs,
) -> Result<(), ReplaceError> {
    let fail = |step: &'static str| {
        move |e: std::io::Error| ReplaceError {
            path: dir_path.join(name),
            step,
            source: e,
        }
    };
    let tmp = temp_name(name);
    let create = || {
        rustix::fs::openat(
            dir,
            tmp.as_str(),
            OFlags::WRONLY | OFlags::CREATE | OFlags::EXCL | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
    };
    let fd = match create() {
        // Left by a crashed process that had our id; ours to remove.
        Err(Errno::EXIST) => {
            let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
            create()
        }
        other => other,
    }
    .map_err(|e| fail("create the temporary file")(e.into()))?;
    let filled = fill(fd, data, attrs).and_then(|()| {
        rustix::fs::renameat(dir, tmp.as_str(), dir, name)
            .map_err(|e| ("rename over the original", e.into()))
    });
    if let Err((step, e)) = filled {
        let _ = rustix::fs::unlinkat(dir, tmp.as_str(), AtFlags::empty());
        return Err(fail(step)(e));
    }
    match rustix::fs::fsync(dir) {
        // Some file systems cannot sync a directory; the rename stands.
        Ok(()) | Err(Errno::INVAL) => Ok(()),
        Err(e) => Err(fail("sync the directory")(e.into())),
    }
}

/// Owner, extended attributes and mode first, then the content, then fsync.
fn fill(fd: OwnedFd, data: &[u8], attrs: &Attrs) -> Result<(), (&'static str, std::io::Error)> {
    let step = |step: &'static str| move |e: Errno| (step, std::io::Error::from(e));
    if let Some((uid, gid)) = attrs.owner {
        let st = rustix::fs::fstat(&fd).map_err(step("stat the temporary file"))?;
        // Only root may give a file away; a file already ours needs nothing (tests as a user).
        if (st.st_uid, st.st_gid) != (uid, gid) {
            rustix::fs::fchown(
                &fd,
                Some(Uid::from_raw_unchecked(uid)),
                Some(Gid::from_raw_unchecked(gid)),
            )
            .map_err(step("set the owner"))?;
        }
    }
    for (name, value) in &attrs.xattrs {
        rustix::fs::fsetxattr(&fd, name.as_str(), value, XattrFlags::empty())
            .map_err(step("copy an extended attribute"))?;
    }
    // After the attributes: setting an access ACL rewrites the mode bits.
    rustix::fs::fchmod(&fd, Mode::from_raw_mode(attrs.mode & 0o7777))
        .map_err(step("set the mode"))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(data).map_err(|e| ("write", e))?;
    file.sync_all().map_err(|e| ("sync", e))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    #[test]
    fn a_replaced_file_has_the_attributes_and_nothing_is_left_behind() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("f");
        std::fs::write(&target, "old").unwrap();
        let d = open_dir(dir.path()).unwrap();
        let mut attrs = Attrs::with_mode(0o640);
        attrs.xattrs.push(("user.vakt-test".into(), b"v".to_vec()));
        replace_at(d.as_fd(), dir.path(), "f", b"new", &attrs).unwrap();
        assert_eq!(std::fs::read_to_string(&target).unwrap(), "new");
        assert_eq!(std::fs::metadata(&target).unwrap().mode() & 0o7777, 0o640);
        let f = std::fs::File::open(&target).unwrap();
        let got = Attrs::of(&f).unwrap();
        assert!(
            got.xattrs
                .contains(&("user.vakt-test".into(), b"v".to_vec()))
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f"], "the temporary file went with the rename");
    }

    #[test]
    fn a_failed_replacement_leaves_the_original_and_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("d")).unwrap();
        std::fs::write(dir.path().join("d/x"), "").unwrap();
        let d = open_dir(dir.path()).unwrap();
        // A non-empty directory cannot be renamed over.
        let err = replace_at(d.as_fd(), dir.path(), "d", b"new", &Attrs::private()).unwrap_err();
        assert_eq!(err.step, "rename over the original");
        assert!(
            err.to_string().contains("/d: rename over the original"),
            "{err}"
        );
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["d"]);
    }

    #[test]
    fn write_private_is_0600_even_over_a_wider_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("journal.json");
        std::fs::write(&p, "{}").unwrap();
        std::fs::set_permissions(&p, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
        write_private(&p, b"[]").unwrap();
        assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o600);
        assert_eq!(std::fs::read_to_string(&p).unwrap(), "[]");
    }
}
