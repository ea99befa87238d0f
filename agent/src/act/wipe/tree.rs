//! Removing a configured path for the `paths` wipe, by handle, never by path.
//!
//! Users own what is wiped and may change it while the wipe runs. A walk by path (lstat, then
//! read and remove `dir/name`) can be redirected: swap a directory for a symlink between two
//! calls and the next `dir/name` lands wherever the symlink points. Here every directory is
//! opened relative to its parent's handle with `O_NOFOLLOW|O_DIRECTORY`, read through that
//! handle, and its entries removed with `unlinkat` on it, so a swap changes only which entry
//! a name refers to inside the tree being wiped — never which directory is being emptied.
//!
//! Each directory opened is compared with the top by device *and* mount id (statx): a bind
//! mount has its source's device number, so only the mount id says it is another mount.
//! The walk is a loop over an explicit stack holding at most [`MAX_DEPTH`] directories open;
//! a deeper subdirectory is moved up into the top (renameat on handles, so no path is
//! involved) and removed from there later, so no depth exhausts descriptors or the stack.

use super::WipeReport;
use rustix::fd::{AsFd, BorrowedFd, OwnedFd};
use rustix::fs::{AtFlags, Dir, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::{CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path};

/// Directories held open at once.
const MAX_DEPTH: usize = 64;

/// How a directory of the tree is opened: never through a symlink, never a FIFO or device
/// (`O_DIRECTORY` refuses those without opening them).
const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::NOCTTY)
    .union(OFlags::CLOEXEC);

/// The mount a directory is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct MountKey {
    dev: u64,
    /// statx's mount id; 0 where the kernel has none (then the device alone decides).
    mnt: u64,
}

fn mount_of(fd: BorrowedFd<'_>) -> Result<MountKey, Errno> {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::StatxFlags;
        match rustix::fs::statx(fd, "", AtFlags::EMPTY_PATH, StatxFlags::MNT_ID) {
            Ok(x) => {
                let has_mnt = x.stx_mask & StatxFlags::MNT_ID.bits() != 0;
                return Ok(MountKey {
                    dev: rustix::fs::makedev(x.stx_dev_major, x.stx_dev_minor),
                    mnt: if has_mnt { x.stx_mnt_id } else { 0 },
                });
            }
            Err(Errno::NOSYS) => {}
            Err(e) => return Err(e),
        }
    }
    let st = rustix::fs::fstat(fd)?;
    Ok(MountKey {
        dev: st.st_dev,
        mnt: 0,
    })
}

/// A directory being emptied.
struct Frame {
    dir: Dir,
    /// The device path, for messages.
    path: String,
    /// Its name in its parent (the previous frame, or the top's parent).
    name: CString,
    /// Something under it stays (an error, another file system), so it cannot go either.
    kept: bool,
}

fn child_path(parent: &str, name: &CStr) -> String {
    format!("{parent}/{}", name.to_string_lossy())
}

/// Removes the device path `device_path` under the root directory `root`, counting and
/// reporting into `report`. A missing path is nothing to do.
pub fn remove_path(root: &Path, device_path: &Path, report: &mut WipeReport) {
    let parts: Vec<&OsStr> = device_path
        .components()
        .filter_map(|c| match c {
            Component::Normal(p) => Some(p),
            _ => None,
        })
        .collect();
    let Some((last, on_the_way)) = parts.split_last() else {
        report.error(format!(
            "{}: the root itself is not removed; name the directories under it",
            device_path.display()
        ));
        return;
    };
    // Device paths for messages: the directory holding the top, and the top.
    let above = on_the_way.iter().fold(String::new(), |mut s, p| {
        s.push('/');
        s.push_str(&p.to_string_lossy());
        s
    });
    let shown = format!("{above}/{}", last.to_string_lossy());
    let Ok(last) = CString::new(last.as_bytes()) else {
        report.error(format!("{shown}: a NUL byte in the name"));
        return;
    };
    // The agent's root is its configuration's, trusted; below it, nothing is followed.
    let mut dir = match rustix::fs::open(
        root,
        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
        Mode::empty(),
    ) {
        Ok(d) => d,
        Err(e) => {
            report.error(format!("{}: {e}", root.display()));
            return;
        }
    };
    for part in on_the_way {
        dir = match rustix::fs::openat(&dir, *part, DIR_FLAGS, Mode::empty()) {
            Ok(d) => d,
            Err(Errno::NOENT) => return,
            Err(Errno::LOOP | Errno::NOTDIR) => {
                report.error(format!(
                    "{shown}: {} on the way is a symbolic link or not a directory; not followed",
                    part.to_string_lossy()
                ));
                return;
            }
            Err(e) => {
                report.error(format!("{shown}: {e}"));
                return;
            }
        };
    }
    let mut walk = Walk {
        report,
        top: None,
        stack: Vec::new(),
        deferred: Vec::new(),
        moved: 0,
    };
    if let Some(top) = walk.enter(dir.as_fd(), &above, &last, FileType::Unknown) {
        walk.stack.push(top);
        walk.run(dir.as_fd());
    }
}

struct Walk<'r> {
    report: &'r mut WipeReport,
    /// The top directory's mount, once opened.
    top: Option<MountKey>,
    stack: Vec<Frame>,
    /// Subtrees moved up into the top for being too deep, removed after the top's entries.
    deferred: Vec<CString>,
    moved: u64,
}

/// Why an entry was not entered or removed.
enum Entered {
    Dir(Frame),
    /// Removed, or gone already.
    Done,
    /// Stays, and was reported.
    Kept,
}

impl Walk<'_> {
    /// Removes the entry `name` of `parent` if it is not a directory, or opens it to be
    /// emptied. `hint` is the type the directory listing gave (`Unknown` for the top).
    fn enter(
        &mut self,
        parent: BorrowedFd<'_>,
        path: &str,
        name: &CStr,
        hint: FileType,
    ) -> Option<Frame> {
        match enter(self.report, &mut self.top, parent, path, name, hint) {
            Entered::Dir(f) => Some(f),
            Entered::Done | Entered::Kept => None,
        }
    }

    /// Empties the directories on the stack, deepest first, removing each once empty;
    /// `base` is the top's parent.
    fn run(&mut self, base: BorrowedFd<'_>) {
        loop {
            let depth = self.stack.len();
            let Some(frame) = self.stack.last_mut() else {
                return;
            };
            match frame.dir.read() {
                Some(Ok(entry)) => {
                    let name = entry.file_name();
                    if name == c"." || name == c".." {
                        continue;
                    }
                    let Ok(parent) = frame.dir.fd() else { continue };
                    let entered = enter(
                        self.report,
                        &mut self.top,
                        parent,
                        &frame.path,
                        name,
                        entry.file_type(),
                    );
                    match entered {
                        Entered::Done => {}
                        Entered::Kept => frame.kept = true,
                        Entered::Dir(child) if depth < MAX_DEPTH => self.stack.push(child),
                        Entered::Dir(child) => {
                            drop(child);
                            self.move_up(name);
                        }
                    }
                }
                Some(Err(e)) => {
                    self.report
                        .error(format!("{}: reading the directory: {e}", frame.path));
                    frame.kept = true;
                }
                None => self.finish(base),
            }
        }
    }

    /// The directory on top of the stack is read to its end: remove it from its parent.
    fn finish(&mut self, base: BorrowedFd<'_>) {
        let Some(frame) = self.stack.pop() else {
            return;
        };
        if self.stack.is_empty()
            && let Some(name) = self.deferred.pop()
        {
            // The top's own entries are done; now the subtrees moved up into it.
            let child = frame
                .dir
                .fd()
                .ok()
                .and_then(|top| self.enter(top, &frame.path, &name, FileType::Directory));
            self.stack.push(frame);
            if let Some(child) = child {
                self.stack.push(child);
            }
            return;
        }
        let parent = match self.stack.last() {
            Some(p) => p.dir.fd().ok(),
            None => Some(base),
        };
        let Some(parent) = parent else { return };
        let outcome = rustix::fs::unlinkat(parent, frame.name.as_c_str(), AtFlags::REMOVEDIR);
        let kept = match outcome {
            Ok(()) => {
                self.report.removed += 1;
                false
            }
            // Swapped away meanwhile; whatever took the name is the parent's to see.
            Err(Errno::NOENT) => false,
            // What stays under it was reported already.
            Err(Errno::NOTEMPTY | Errno::BUSY) if frame.kept => true,
            Err(e) => {
                self.report.error(format!("{}: {e}", frame.path));
                true
            }
        };
        if kept && let Some(p) = self.stack.last_mut() {
            p.kept = true;
        }
    }

    /// Moves the subdirectory `name` of the deepest open directory up into the top, under a
    /// new name, to be removed from there.
    fn move_up(&mut self, name: &CStr) {
        let (Some(top), Some(parent)) = (self.stack.first(), self.stack.last()) else {
            return;
        };
        let (Ok(top_fd), Ok(parent_fd)) = (top.dir.fd(), parent.dir.fd()) else {
            return;
        };
        // A user may have taken the names; a hundred tries are plenty for anyone else.
        for _ in 0..100 {
            self.moved += 1;
            let Ok(new) = CString::new(format!(".vakt-wipe-{}", self.moved)) else {
                return;
            };
            match rustix::fs::renameat_with(
                parent_fd,
                name,
                top_fd,
                new.as_c_str(),
                rustix::fs::RenameFlags::NOREPLACE,
            ) {
                Ok(()) => {
                    self.deferred.push(new);
                    return;
                }
                Err(Errno::EXIST) => continue,
                Err(Errno::NOENT) => return,
                Err(e) => {
                    let path = child_path(&parent.path, name);
                    self.report.error(format!(
                        "{path}: deeper than {MAX_DEPTH} levels and not movable: {e}"
                    ));
                    if let Some(p) = self.stack.last_mut() {
                        p.kept = true;
                    }
                    return;
                }
            }
        }
        let path = child_path(&parent.path, name);
        self.report.error(format!(
            "{path}: deeper than {MAX_DEPTH} levels; no free name to move it to"
        ));
        if let Some(p) = self.stack.last_mut() {
            p.kept = true;
        }
    }
}

/// See [`Walk::enter`]. A free function so the caller can lend the parent's handle from the
/// stack while the report is borrowed mutably.
fn enter(
    report: &mut WipeReport,
    top: &mut Option<MountKey>,
    parent: BorrowedFd<'_>,
    parent_path: &str,
    name: &CStr,
    hint: FileType,
) -> Entered {
    let fail = |report: &mut WipeReport, what: String| {
        report.error(format!("{}: {what}", child_path(parent_path, name)));
        Entered::Kept
    };
    let maybe_dir = matches!(hint, FileType::Directory | FileType::Unknown);
    if !maybe_dir {
        match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
            Ok(()) => {
                report.removed += 1;
                return Entered::Done;
            }
            Err(Errno::NOENT) => return Entered::Done,
            // Swapped for a directory since it was listed: empty that instead.
            Err(Errno::ISDIR) => {}
            Err(e) => return fail(report, e.to_string()),
        }
    }
    let fd: OwnedFd = match rustix::fs::openat(parent, name, DIR_FLAGS, Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Entered::Done,
        // Not a directory (any more), or a symlink: remove the entry itself, unfollowed.
        Err(Errno::NOTDIR | Errno::LOOP) if maybe_dir => {
            return match rustix::fs::unlinkat(parent, name, AtFlags::empty()) {
                Ok(()) => {
                    report.removed += 1;
                    Entered::Done
                }
                Err(Errno::NOENT) => Entered::Done,
                Err(e) => fail(report, e.to_string()),
            };
        }
        Err(e) => return fail(report, e.to_string()),
    };
    let key = match mount_of(fd.as_fd()) {
        Ok(k) => k,
        Err(e) => return fail(report, e.to_string()),
    };
    match top {
        None => *top = Some(key),
        Some(t) if *t != key => {
            report.skipped_mounts.push(child_path(parent_path, name));
            return Entered::Kept;
        }
        Some(_) => {}
    }
    match Dir::new(fd) {
        Ok(dir) => Entered::Dir(Frame {
            dir,
            path: child_path(parent_path, name),
            name: name.to_owned(),
            kept: false,
        }),
        Err(e) => fail(report, e.to_string()),
    }
}
