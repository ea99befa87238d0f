//! The one way a collector reads a file or a directory under the agent's [`Root`]: every
//! collector (host, users, software, mail) goes through here, because the agent runs as root
//! and much of what it reads is a user's to fill. A user's FIFO, socket, device, symbolic-link
//! loop, huge or sparse file, or a file swapped while the agent walks must cost an error in
//! the report, never a wait, a read outside the root, or the agent's memory.
//!
//! How a device path (`/home/anna/.thunderbird/profiles.ini`) is resolved: from a handle on the
//! root directory, one component at a time, each opened relative to the handle of its parent
//! with `O_NOFOLLOW|O_NONBLOCK|O_CLOEXEC|O_NOCTTY` (directories with `O_DIRECTORY`, so a FIFO
//! or a device where a directory should be is refused by the kernel before any driver sees
//! the open). Nothing is ever handed to the kernel as a multi-component path, so a directory
//! swapped for a link between two steps changes nothing: the next step is relative to the
//! handle already held. A symbolic link met on the way is read (`readlinkat` on its parent's
//! handle) and followed *inside the root*, the way `openat2(RESOLVE_IN_ROOT)` would: an
//! absolute target starts again at the root, `..` stops there, and at most [`MAX_LINKS`]
//! links are followed per path (the kernel's own limit), so a loop is an error. Links are
//! followed because the clients do (`~/.dovecot.sieve` is a link into `~/sieve/`,
//! `/etc/os-release` into `/usr/lib`); following them inside the root means a user's link can
//! name only what the root holds anyway, and the mail collector also checks that the file
//! opened is the user's or world-readable ([`Opened::readable_by`]).
//!
//! Why in user space and not with `openat2` where the kernel has it: one code path that
//! behaves the same on every kernel the laptops run (openat2 is Linux 5.6+, and seccomp
//! filters of some sandboxes refuse it), that tests exercise fully, and whose cost (one
//! `openat` per component) is nothing next to parsing what is read.
//!
//! The last component is judged before it is opened: `statat` without following. A link is
//! followed as above; anything but a regular file is an error naming its type, without being
//! opened (opening a device can act, opening a FIFO can wait). A regular file is opened with
//! the flags above and judged again on the handle, so a swap to a FIFO in between is caught
//! by `fstat` and cannot block (`O_NONBLOCK`). Sizes are capped on the handle: a 1 GiB sparse
//! file is refused from its size, unread.
//!
//! Directory listings read through the handle (`getdents`), keep at most a given number of
//! entries and say when there were more; an entry's type comes from the listing itself (or
//! `statat` without following where the file system does not say). Walks go on by handle
//! ([`DirHandle`]): an entry is opened relative to the directory that listed it.
//!
//! What this cannot prevent: a user's FUSE file system whose `stat` or `read` never answers.
//! That is why every collector family also runs on its own thread with a deadline
//! (`collect::family`).

use crate::collect::{Collected, Root};
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};
use vakt_proto::model::SectionKind;

/// Links followed while resolving one path before giving up (the kernel's own limit is 40).
pub const MAX_LINKS: usize = 40;

/// Directories held open at once while resolving one path: a path deeper than this (possible
/// only through links that keep descending) is refused rather than costing file descriptors.
const MAX_DEPTH: usize = 256;

/// Entries kept from one directory listing: a user's directory can hold millions.
pub const MAX_ENTRIES: usize = 10_000;

/// Flags for every open of a component: never follow, never wait, never inherit, never
/// acquire a terminal.
fn base_flags() -> OFlags {
    OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::CLOEXEC | OFlags::NOCTTY
}

/// What a file is, from its mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
    Symlink,
    Fifo,
    Socket,
    Device,
    Unknown,
}

impl Kind {
    fn of(t: FileType) -> Self {
        match t {
            FileType::RegularFile => Self::File,
            FileType::Directory => Self::Dir,
            FileType::Symlink => Self::Symlink,
            FileType::Fifo => Self::Fifo,
            FileType::Socket => Self::Socket,
            FileType::CharacterDevice | FileType::BlockDevice => Self::Device,
            FileType::Unknown => Self::Unknown,
        }
    }

    /// For messages: "a FIFO, not a regular file".
    pub fn described(self) -> &'static str {
        match self {
            Self::File => "a regular file",
            Self::Dir => "a directory",
            Self::Symlink => "a symbolic link",
            Self::Fifo => "a FIFO",
            Self::Socket => "a socket",
            Self::Device => "a device",
            Self::Unknown => "of an unknown type",
        }
    }
}

/// What a collector needs to know of a file without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Meta {
    pub kind: Kind,
    /// Permission bits (`0o7777`).
    pub mode: u32,
    pub uid: u32,
    pub size: u64,
}

impl Meta {
    pub fn is_file(&self) -> bool {
        self.kind == Kind::File
    }

    pub fn is_dir(&self) -> bool {
        self.kind == Kind::Dir
    }

    pub fn is_executable(&self) -> bool {
        self.mode & 0o111 != 0
    }

    // The field types of `struct stat` differ between platforms (u32 or u16 modes, i64 or
    // c_long sizes); the conversions are the identity on some of them.
    #[allow(clippy::unnecessary_cast, clippy::useless_conversion)]
    fn of_stat(st: &rustix::fs::Stat) -> Self {
        Self {
            kind: Kind::of(FileType::from_raw_mode(st.st_mode as _)),
            mode: (st.st_mode as u32) & 0o7777,
            uid: st.st_uid as u32,
            size: u64::try_from(st.st_size).unwrap_or(0),
        }
    }

    fn of_metadata(m: &std::fs::Metadata) -> Self {
        let t = m.file_type();
        let kind = if t.is_file() {
            Kind::File
        } else if t.is_dir() {
            Kind::Dir
        } else if t.is_symlink() {
            Kind::Symlink
        } else {
            use std::os::unix::fs::FileTypeExt;
            if t.is_fifo() {
                Kind::Fifo
            } else if t.is_socket() {
                Kind::Socket
            } else if t.is_char_device() || t.is_block_device() {
                Kind::Device
            } else {
                Kind::Unknown
            }
        };
        Self {
            kind,
            mode: m.mode() & 0o7777,
            uid: m.uid(),
            size: m.len(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Io(#[from] std::io::Error),
    #[error("too many symbolic links (a loop?): not followed")]
    LinkLoop,
    #[error("nested more than {MAX_DEPTH} directories deep: not followed")]
    TooDeep,
    #[error("{}, not a regular file: not read", .0.described())]
    NotAFile(Kind),
    #[error("{}, not a directory: not read", .0.described())]
    NotADirectory(Kind),
    #[error("larger than the {cap}-byte limit ({size} bytes): not read")]
    TooLarge { size: u64, cap: u64 },
    #[error("owned by uid {owner} with mode {mode:o}: not readable by the user, not read")]
    NotTheUsers { owner: u32, mode: u32 },
    #[error("changed while it was being read (replaced during the walk): not read")]
    Changed,
}

impl From<Errno> for ReadError {
    fn from(e: Errno) -> Self {
        Self::Io(e.into())
    }
}

/// A regular file opened under the root, with what its handle says about it.
#[derive(Debug)]
pub struct Opened {
    pub file: std::fs::File,
    pub meta: std::fs::Metadata,
}

impl Opened {
    /// Reads the whole file if it is at most `cap` bytes; a longer one is an error rather than
    /// a silent truncation, because a cut-off file is corrupt input, not a smaller one. The size
    /// is judged on the handle first (a sparse file is refused unread) and the read stops at
    /// the cap in case the file grows meanwhile.
    pub fn read_capped(self, cap: u64) -> Result<Vec<u8>, ReadError> {
        if self.meta.len() > cap {
            return Err(ReadError::TooLarge {
                size: self.meta.len(),
                cap,
            });
        }
        let mut buf = Vec::new();
        self.file
            .take(cap.saturating_add(1))
            .read_to_end(&mut buf)?;
        if buf.len() as u64 > cap {
            return Err(ReadError::TooLarge {
                size: buf.len() as u64,
                cap,
            });
        }
        Ok(buf)
    }

    /// Whether the file is owned by `uid` or readable by everyone, judged on the open handle,
    /// so swapping a link in between gains nothing. Group membership is not checked: a file
    /// only the user's group may read is not read, which costs at most one signature.
    pub fn readable_by(&self, uid: u32) -> Result<(), ReadError> {
        let mode = self.meta.mode() & 0o7777;
        if self.meta.uid() == uid || mode & 0o004 != 0 {
            Ok(())
        } else {
            Err(ReadError::NotTheUsers {
                owner: self.meta.uid(),
                mode,
            })
        }
    }

    pub fn kind(&self) -> Meta {
        Meta::of_metadata(&self.meta)
    }
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The name as the file system has it, for opening.
    pub raw: OsString,
    /// The name for matching and messages (lossy where it is not UTF-8).
    pub name: String,
    /// The entry's own type: a link is `Symlink`, not what it points to.
    pub kind: Kind,
}

/// A directory listing, sorted by name so reports are stable between runs.
#[derive(Debug, Default)]
pub struct Listing {
    pub entries: Vec<Entry>,
    /// The directory had more entries than the cap; only the first ones (in the file system's
    /// order) were kept.
    pub truncated: bool,
}

/// An open directory under the root, and the device path it was reached by (for messages and
/// for following a link found in it).
#[derive(Debug)]
pub struct DirHandle {
    fd: OwnedFd,
    path: PathBuf,
}

/// What the last component of a path turned out to be.
enum Step<T> {
    Done(T),
    Missing,
    /// A symbolic link: follow it and try again with its target.
    Link,
}

/// A resolution in progress: the root's handle and those of the directories below it down to
/// the current one.
struct Walk {
    root: OwnedFd,
    below: Vec<(OwnedFd, OsString)>,
    links: usize,
}

impl Walk {
    fn start(root: &Root) -> Result<Self, ReadError> {
        // The root itself is the administrator's choice (`/`, a fixture), opened as given.
        let fd = rustix::fs::openat(
            rustix::fs::CWD,
            root.path(),
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            root: fd,
            below: Vec::new(),
            links: 0,
        })
    }

    fn dir(&self) -> BorrowedFd<'_> {
        self.below
            .last()
            .map_or(self.root.as_fd(), |(fd, _)| fd.as_fd())
    }

    /// The device path of the current directory.
    fn path(&self) -> PathBuf {
        let mut p = PathBuf::from("/");
        p.extend(self.below.iter().map(|(_, n)| n));
        p
    }

    /// `..`: never above the root.
    fn up(&mut self) {
        self.below.pop();
    }

    /// Reads the link `name` of the current directory and puts its target's components in
    /// front of `todo`.
    fn follow(&mut self, name: &OsStr, todo: &mut Vec<OsString>) -> Result<(), ReadError> {
        self.links += 1;
        if self.links > MAX_LINKS {
            return Err(ReadError::LinkLoop);
        }
        let target = match rustix::fs::readlinkat(self.dir(), name, Vec::new()) {
            Ok(t) => t,
            // It was a link a moment ago: swapped under us.
            Err(Errno::INVAL | Errno::NOENT) => return Err(ReadError::Changed),
            Err(e) => return Err(e.into()),
        };
        let target = PathBuf::from(OsStr::from_bytes(target.to_bytes()));
        if target.is_absolute() {
            self.below.clear();
        }
        todo.extend(components_rev(&target));
        Ok(())
    }

    fn push(&mut self, fd: OwnedFd, name: &OsStr) -> Result<(), ReadError> {
        if self.below.len() >= MAX_DEPTH {
            return Err(ReadError::TooDeep);
        }
        self.below.push((fd, name.to_os_string()));
        Ok(())
    }
}

/// The normal components of `p` and its `..`s, last first (a stack to pop from).
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

/// Resolves `device_path` under the root and hands its last component to `last` (with the
/// current walk, whose directory holds it). `"."` stands for a path that ends at a directory
/// itself (the root, or a trailing `..`). `Ok(None)` when a component is missing.
fn resolve<T>(
    root: &Root,
    device_path: &Path,
    mut last: impl FnMut(&Walk, &OsStr) -> Result<Step<T>, ReadError>,
) -> Result<Option<T>, ReadError> {
    let mut walk = Walk::start(root)?;
    let mut todo = components_rev(device_path);
    loop {
        let Some(part) = todo.pop() else {
            return match last(&walk, OsStr::new("."))? {
                Step::Done(t) => Ok(Some(t)),
                Step::Missing => Ok(None),
                // "." is never a link.
                Step::Link => Err(ReadError::Changed),
            };
        };
        if part == ".." {
            walk.up();
            continue;
        }
        if todo.is_empty() {
            match last(&walk, &part)? {
                Step::Done(t) => return Ok(Some(t)),
                Step::Missing => return Ok(None),
                // A link to "/" leaves nothing to do: the loop then ends at that directory.
                Step::Link => {
                    walk.follow(&part, &mut todo)?;
                    continue;
                }
            }
        }
        match open_dir_step(walk.dir(), &part)? {
            Step::Done(fd) => walk.push(fd, &part)?,
            Step::Missing => return Ok(None),
            Step::Link => walk.follow(&part, &mut todo)?,
        }
    }
}

/// Opens the directory `name` in `dir` without following a link.
fn open_dir_step(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Step<OwnedFd>, ReadError> {
    match rustix::fs::openat(dir, name, base_flags() | OFlags::DIRECTORY, Mode::empty()) {
        Ok(fd) => Ok(Step::Done(fd)),
        Err(Errno::NOENT) => Ok(Step::Missing),
        // Either a link (not followed) or not a directory: the entry itself says which.
        Err(Errno::NOTDIR | Errno::LOOP) => match lstat_step(dir, name)? {
            Step::Done(m) if m.kind == Kind::Symlink => Ok(Step::Link),
            Step::Done(m) => Err(ReadError::NotADirectory(m.kind)),
            Step::Missing => Ok(Step::Missing),
            Step::Link => Ok(Step::Link),
        },
        Err(e) => Err(e.into()),
    }
}

/// The entry `name` of `dir` itself, a link not followed.
fn lstat_step(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Step<Meta>, ReadError> {
    match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => Ok(Step::Done(Meta::of_stat(&st))),
        Err(Errno::NOENT) => Ok(Step::Missing),
        Err(e) => Err(e.into()),
    }
}

/// What `name` in `dir` is, a link to be followed.
fn stat_step(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Step<Meta>, ReadError> {
    match lstat_step(dir, name)? {
        Step::Done(m) if m.kind == Kind::Symlink => Ok(Step::Link),
        other => Ok(other),
    }
}

/// Opens the regular file `name` in `dir`: judged before the open (nothing else is opened) and
/// again on the handle.
fn open_step(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Step<Opened>, ReadError> {
    match stat_step(dir, name)? {
        Step::Done(m) if m.kind != Kind::File => return Err(ReadError::NotAFile(m.kind)),
        Step::Done(_) => {}
        Step::Missing => return Ok(Step::Missing),
        Step::Link => return Ok(Step::Link),
    }
    let fd = match rustix::fs::openat(dir, name, base_flags(), Mode::empty()) {
        Ok(fd) => fd,
        Err(Errno::NOENT) => return Ok(Step::Missing),
        // Became a link since the stat: follow it like any other.
        Err(Errno::LOOP) => return Ok(Step::Link),
        Err(e) => return Err(e.into()),
    };
    let file = std::fs::File::from(fd);
    let meta = file.metadata()?;
    let kind = Meta::of_metadata(&meta).kind;
    if kind != Kind::File {
        return Err(ReadError::NotAFile(kind));
    }
    Ok(Step::Done(Opened { file, meta }))
}

/// Opens the regular file at `device_path`; `Ok(None)` when it does not exist.
pub fn open(root: &Root, device_path: &Path) -> Result<Option<Opened>, ReadError> {
    resolve(root, device_path, |w, name| open_step(w.dir(), name))
}

/// Reads the regular file at `device_path` if it has at most `cap` bytes; `Ok(None)` when it
/// does not exist.
pub fn read(root: &Root, device_path: &Path, cap: u64) -> Result<Option<Vec<u8>>, ReadError> {
    open(root, device_path)?
        .map(|o| o.read_capped(cap))
        .transpose()
}

/// Like [`read`], but a missing file is an error too (`NotFound`).
pub fn read_existing(root: &Root, device_path: &Path, cap: u64) -> Result<Vec<u8>, ReadError> {
    read(root, device_path, cap)?.ok_or_else(not_found)
}

fn not_found() -> ReadError {
    ReadError::Io(std::io::Error::from(std::io::ErrorKind::NotFound))
}

/// What `device_path` is, links followed inside the root; `Ok(None)` when it does not exist.
pub fn stat(root: &Root, device_path: &Path) -> Result<Option<Meta>, ReadError> {
    resolve(root, device_path, |w, name| stat_step(w.dir(), name))
}

/// What the entry at `device_path` itself is (a link is reported as a link).
pub fn lstat(root: &Root, device_path: &Path) -> Result<Option<Meta>, ReadError> {
    resolve(root, device_path, |w, name| lstat_step(w.dir(), name))
}

/// Whether `device_path` is a directory (links followed inside the root).
pub fn is_dir(root: &Root, device_path: &Path) -> bool {
    matches!(stat(root, device_path), Ok(Some(m)) if m.is_dir())
}

/// Whether `device_path` is a regular file (links followed inside the root).
pub fn is_file(root: &Root, device_path: &Path) -> bool {
    matches!(stat(root, device_path), Ok(Some(m)) if m.is_file())
}

/// The target of the link at `device_path` as written in it; `Ok(None)` when there is no such
/// entry or it is not a link.
pub fn read_link(root: &Root, device_path: &Path) -> Result<Option<PathBuf>, ReadError> {
    resolve(root, device_path, |w, name| read_link_step(w.dir(), name)).map(Option::flatten)
}

fn read_link_step(dir: BorrowedFd<'_>, name: &OsStr) -> Result<Step<Option<PathBuf>>, ReadError> {
    match rustix::fs::readlinkat(dir, name, Vec::new()) {
        Ok(t) => Ok(Step::Done(Some(PathBuf::from(OsStr::from_bytes(
            t.to_bytes(),
        ))))),
        Err(Errno::NOENT) => Ok(Step::Missing),
        Err(Errno::INVAL) => Ok(Step::Done(None)),
        Err(e) => Err(e.into()),
    }
}

/// The device path `device_path` really names once its links are followed inside the root,
/// or `Ok(None)` when part of it does not exist.
pub fn real_path(root: &Root, device_path: &Path) -> Result<Option<PathBuf>, ReadError> {
    resolve(root, device_path, |w, name| {
        Ok(match lstat_step(w.dir(), name)? {
            Step::Done(m) if m.kind == Kind::Symlink => Step::Link,
            Step::Done(_) if name == "." => Step::Done(w.path()),
            Step::Done(_) => Step::Done(w.path().join(name)),
            Step::Missing => Step::Missing,
            Step::Link => Step::Link,
        })
    })
}

/// Each of `paths` as [`real_path`] resolves it, or why it could not be.
pub fn real_paths(
    root: &Root,
    paths: Vec<String>,
) -> std::collections::BTreeMap<String, Result<PathBuf, String>> {
    paths
        .into_iter()
        .map(|p| {
            let real = match real_path(root, Path::new(&p)) {
                Ok(Some(real)) => Ok(real),
                Ok(None) => Err("not found under the agent's root".to_string()),
                Err(e) => Err(e.to_string()),
            };
            (p, real)
        })
        .collect()
}

/// Opens the directory at `device_path` (links followed inside the root); `Ok(None)` when it
/// does not exist.
pub fn open_dir(root: &Root, device_path: &Path) -> Result<Option<DirHandle>, ReadError> {
    resolve(root, device_path, |w, name| {
        Ok(match open_dir_step(w.dir(), name)? {
            Step::Done(fd) => Step::Done(DirHandle {
                fd,
                path: if name == "." {
                    w.path()
                } else {
                    w.path().join(name)
                },
            }),
            Step::Missing => Step::Missing,
            Step::Link => Step::Link,
        })
    })
}

impl DirHandle {
    /// The device path this directory was reached by.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The entries (without `.` and `..`), at most `cap` of them, sorted by name.
    pub fn list(&self, cap: usize) -> Result<Listing, ReadError> {
        let mut dir = rustix::fs::Dir::read_from(&self.fd)?;
        let mut out = Listing::default();
        while let Some(entry) = dir.read() {
            let entry = entry?;
            let raw = OsStr::from_bytes(entry.file_name().to_bytes());
            if raw == "." || raw == ".." {
                continue;
            }
            if out.entries.len() >= cap {
                out.truncated = true;
                break;
            }
            let kind = match Kind::of(entry.file_type()) {
                // Some file systems do not say in the listing; ask without following.
                Kind::Unknown => match lstat_step(self.fd.as_fd(), raw)? {
                    Step::Done(m) => m.kind,
                    _ => continue,
                },
                k => k,
            };
            out.entries.push(Entry {
                raw: raw.to_os_string(),
                name: raw.to_string_lossy().into_owned(),
                kind,
            });
        }
        out.entries.sort_by(|a, b| a.raw.cmp(&b.raw));
        Ok(out)
    }

    /// The device path of an entry.
    pub fn child_path(&self, name: &OsStr) -> PathBuf {
        self.path.join(name)
    }

    /// Runs `step` on the entry `name` of this directory by handle; a link is followed from the
    /// root like any path (its target may lie anywhere in the root).
    fn at<T>(
        &self,
        root: &Root,
        name: &OsStr,
        step: impl Fn(BorrowedFd<'_>, &OsStr) -> Result<Step<T>, ReadError>,
    ) -> Result<Option<T>, ReadError> {
        match step(self.fd.as_fd(), name)? {
            Step::Done(t) => Ok(Some(t)),
            Step::Missing => Ok(None),
            Step::Link => resolve(root, &self.child_path(name), |w, n| step(w.dir(), n)),
        }
    }

    /// Opens the regular file `name` in this directory (a link followed inside the root).
    pub fn open(&self, root: &Root, name: &OsStr) -> Result<Option<Opened>, ReadError> {
        self.at(root, name, open_step)
    }

    /// Reads the regular file `name` in this directory if it has at most `cap` bytes; a
    /// missing file is an error (`NotFound`): it was listed a moment ago.
    pub fn read(&self, root: &Root, name: &OsStr, cap: u64) -> Result<Vec<u8>, ReadError> {
        self.open(root, name)?
            .ok_or_else(not_found)?
            .read_capped(cap)
    }

    /// What the entry `name` is, a link followed inside the root.
    pub fn stat(&self, root: &Root, name: &OsStr) -> Result<Option<Meta>, ReadError> {
        self.at(root, name, stat_step)
    }

    /// Whether the entry `name` is a directory, a link followed inside the root.
    pub fn is_dir(&self, root: &Root, name: &OsStr) -> bool {
        matches!(self.stat(root, name), Ok(Some(m)) if m.is_dir())
    }

    /// The subdirectory `name`, by handle and never through a link (a walk that must not be
    /// led elsewhere, or in circles, by a user's link).
    pub fn subdir(&self, name: &OsStr) -> Result<Option<DirHandle>, ReadError> {
        match open_dir_step(self.fd.as_fd(), name)? {
            Step::Done(fd) => Ok(Some(DirHandle {
                fd,
                path: self.child_path(name),
            })),
            Step::Missing => Ok(None),
            Step::Link => Err(ReadError::NotADirectory(Kind::Symlink)),
        }
    }

    /// What the entry `name` itself is (a link is reported as a link).
    pub fn lstat(&self, name: &OsStr) -> Result<Option<Meta>, ReadError> {
        Ok(lstat_step(self.fd.as_fd(), name)?.into_option())
    }

    /// The target of the link `name`, as written in it; `Ok(None)` if it is not a link.
    pub fn read_link(&self, name: &OsStr) -> Result<Option<PathBuf>, ReadError> {
        Ok(read_link_step(self.fd.as_fd(), name)?
            .into_option()
            .flatten())
    }
}

impl<T> Step<T> {
    fn into_option(self) -> Option<T> {
        match self {
            Step::Done(t) => Some(t),
            _ => None,
        }
    }
}

/// A directory and its entries, as [`list_or_report`] gives them.
#[derive(Debug)]
pub struct Listed {
    pub dir: DirHandle,
    pub entries: Vec<Entry>,
}

/// The entries of the directory at `dir` (at most [`MAX_ENTRIES`]), with a failure recorded
/// against `dir` in `section`. A missing directory, or a regular file where it should be, is
/// no error: most formats are simply absent on a given machine. More entries than the cap are
/// said in the report.
pub fn list_or_report<T>(
    root: &Root,
    dir: &str,
    section: SectionKind,
    out: &mut Collected<T>,
) -> Option<Listed> {
    let handle = match open_dir(root, Path::new(dir)) {
        Ok(Some(h)) => h,
        Ok(None) | Err(ReadError::NotADirectory(Kind::File)) => return None,
        Err(e) => {
            out.error(section, dir, e);
            return None;
        }
    };
    match handle.list(MAX_ENTRIES) {
        Ok(listing) => {
            if listing.truncated {
                out.error(section, dir, too_many_entries(MAX_ENTRIES));
            }
            Some(Listed {
                dir: handle,
                entries: listing.entries,
            })
        }
        Err(e) => {
            out.error(section, dir, e);
            None
        }
    }
}

/// The message for a directory cut off at `cap` entries.
pub fn too_many_entries(cap: usize) -> String {
    let cap = crate::collect::limits::thousands(cap);
    format!("more than {cap} entries: only the first {cap} were looked at")
}

/// Resolves `..` and `.` in a device path lexically (`/home/a/.tb/p/../sig.txt` →
/// `/home/a/.tb/sig.txt`), for paths written in settings relative to some directory.
pub fn normalize(p: &Path) -> PathBuf {
    let mut parts: Vec<&OsStr> = Vec::new();
    for c in p.components() {
        match c {
            Component::Normal(s) => parts.push(s),
            Component::ParentDir => {
                parts.pop();
            }
            _ => {}
        }
    }
    let mut out = PathBuf::from("/");
    out.extend(parts);
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::os::unix::fs::{PermissionsExt, symlink};

    /// Runs `f` on a thread and fails (instead of hanging the suite) if it has not returned
    /// within 20 s: a blocking open of a FIFO never returns.
    pub(crate) fn returns_promptly<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(f());
        });
        rx.recv_timeout(std::time::Duration::from_secs(20))
            .expect("blocked: a read of a FIFO waited for a writer")
    }

    pub(crate) fn mkfifo(path: &Path) {
        rustix::fs::mknodat(
            rustix::fs::CWD,
            path,
            FileType::Fifo,
            Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
    }

    fn tree() -> (tempfile::TempDir, Root) {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        std::fs::create_dir_all(dir.path().join("home/anna/sieve")).unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        (dir, root)
    }

    fn p(s: &str) -> &Path {
        Path::new(s)
    }

    #[test]
    fn links_are_followed_inside_the_root() {
        let (dir, root) = tree();
        let d = dir.path();
        std::fs::write(d.join("home/anna/sieve/a.sieve"), "keep;").unwrap();
        std::fs::write(d.join("etc/secret"), "in the root").unwrap();
        symlink("sieve/a.sieve", d.join("home/anna/.dovecot.sieve")).unwrap();
        symlink("/etc/secret", d.join("home/anna/abs")).unwrap();
        symlink("../../../../../../etc/secret", d.join("home/anna/up")).unwrap();
        symlink("/home/anna/sieve", d.join("home/anna/dirlink")).unwrap();
        let r = |s: &str| real_path(&root, p(s)).unwrap().unwrap();
        assert_eq!(
            r("/home/anna/.dovecot.sieve"),
            p("/home/anna/sieve/a.sieve")
        );
        assert_eq!(r("/home/anna/abs"), p("/etc/secret"));
        assert_eq!(r("/home/anna/up"), p("/etc/secret"));
        assert_eq!(
            r("/home/anna/dirlink/a.sieve"),
            p("/home/anna/sieve/a.sieve")
        );
        assert_eq!(r("/home/anna/.."), p("/home"));
        assert_eq!(
            read(&root, p("/home/anna/up"), 100).unwrap().unwrap(),
            b"in the root"
        );
        assert_eq!(
            read(&root, p("/home/anna/dirlink/a.sieve"), 100)
                .unwrap()
                .unwrap(),
            b"keep;"
        );
        assert!(real_path(&root, p("/home/anna/none/x")).unwrap().is_none());
    }

    /// A link whose target is absolute never leaves the root, even when the same absolute
    /// path exists outside it (the temporary directory's own parent here).
    #[test]
    fn an_absolute_link_out_of_the_root_lands_in_it() {
        let (dir, root) = tree();
        let outside = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(outside.path(), "outside").unwrap();
        symlink(outside.path(), dir.path().join("home/anna/out")).unwrap();
        assert!(read(&root, p("/home/anna/out"), 100).unwrap().is_none());
    }

    #[test]
    fn link_loops_end_in_an_error() {
        let (dir, root) = tree();
        symlink("b", dir.path().join("home/anna/a")).unwrap();
        symlink("a", dir.path().join("home/anna/b")).unwrap();
        symlink(".", dir.path().join("home/anna/self")).unwrap();
        symlink("loop/x", dir.path().join("home/anna/loop")).unwrap();
        let got = returns_promptly({
            let root = root.clone();
            move || {
                (
                    read(&root, p("/home/anna/a"), 10).map(|_| ()),
                    open_dir(&root, p("/home/anna/loop")).map(|_| ()),
                )
            }
        });
        assert!(matches!(got.0, Err(ReadError::LinkLoop)), "{:?}", got.0);
        assert!(matches!(got.1, Err(ReadError::LinkLoop)), "{:?}", got.1);
        // A link to its own directory is no loop by itself: it simply names the directory.
        assert!(is_dir(&root, p("/home/anna/self/self/self")));
    }

    #[test]
    fn fifos_sockets_and_directories_are_errors_never_a_wait() {
        let (dir, root) = tree();
        mkfifo(&dir.path().join("home/anna/.forward"));
        symlink(".forward", dir.path().join("home/anna/to-fifo")).unwrap();
        let _sock =
            std::os::unix::net::UnixListener::bind(dir.path().join("home/anna/sock")).unwrap();
        mkfifo(&dir.path().join("home/anna/fifodir"));
        let r = root.clone();
        let got = returns_promptly(move || {
            [
                "/home/anna/.forward",
                "/home/anna/to-fifo",
                "/home/anna/sock",
                "/home/anna/sieve",
                "/home/anna/fifodir/x",
            ]
            .map(|s| read(&r, p(s), 10).map(|_| ()).unwrap_err().to_string())
        });
        assert!(got[0].contains("a FIFO, not a regular file"), "{got:?}");
        assert!(got[1].contains("a FIFO"), "{got:?}");
        assert!(got[2].contains("a socket"), "{got:?}");
        assert!(
            got[3].contains("a directory, not a regular file"),
            "{got:?}"
        );
        assert!(got[4].contains("a FIFO, not a directory"), "{got:?}");
    }

    #[test]
    fn sizes_are_judged_on_the_handle_and_sparse_files_are_not_read() {
        let (dir, root) = tree();
        let f = dir.path().join("home/anna/prefs.js");
        std::fs::write(&f, b"12345").unwrap();
        assert_eq!(
            read(&root, p("/home/anna/prefs.js"), 5).unwrap().unwrap(),
            b"12345"
        );
        assert!(matches!(
            read(&root, p("/home/anna/prefs.js"), 4),
            Err(ReadError::TooLarge { size: 5, cap: 4 })
        ));
        let big = std::fs::File::create(dir.path().join("home/anna/big")).unwrap();
        big.set_len(1 << 30).unwrap();
        let start = std::time::Instant::now();
        assert!(matches!(
            read(&root, p("/home/anna/big"), 1 << 20),
            Err(ReadError::TooLarge { .. })
        ));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        assert!(read(&root, p("/home/anna/none"), 4).unwrap().is_none());
        assert!(read_existing(&root, p("/home/anna/none"), 4).is_err());
    }

    #[test]
    fn ownership_is_judged_on_the_handle() {
        let (dir, root) = tree();
        let secret = dir.path().join("etc/secret");
        std::fs::write(&secret, "root:hash").unwrap();
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
        symlink("/etc/secret", dir.path().join("home/anna/.forward")).unwrap();
        let opened = open(&root, p("/home/anna/.forward")).unwrap().unwrap();
        // uid 4242 owns nothing in the tree, and the file is not world-readable.
        assert!(matches!(
            opened.readable_by(4242),
            Err(ReadError::NotTheUsers { .. })
        ));
        std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
        let opened = open(&root, p("/home/anna/.forward")).unwrap().unwrap();
        assert!(opened.readable_by(4242).is_ok());
    }

    #[test]
    fn listings_are_sorted_typed_and_capped() {
        let (dir, root) = tree();
        let d = dir.path().join("home/anna/bin");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("b"), "").unwrap();
        symlink("b", d.join("a")).unwrap();
        mkfifo(&d.join("c"));
        let h = open_dir(&root, p("/home/anna/bin")).unwrap().unwrap();
        assert_eq!(h.path(), p("/home/anna/bin"));
        let l = h.list(10).unwrap();
        let got: Vec<(&str, Kind)> = l
            .entries
            .iter()
            .map(|e| (e.name.as_str(), e.kind))
            .collect();
        assert_eq!(
            got,
            [
                ("a", Kind::Symlink),
                ("b", Kind::File),
                ("c", Kind::Fifo),
                ("sub", Kind::Dir)
            ]
        );
        assert!(!l.truncated);
        let l = h.list(2).unwrap();
        assert_eq!(l.entries.len(), 2);
        assert!(l.truncated);
        // By handle: the link is followed, the FIFO refused, the subdirectory entered.
        assert_eq!(
            h.open(&root, OsStr::new("a"))
                .unwrap()
                .unwrap()
                .read_capped(10)
                .unwrap(),
            b""
        );
        assert!(h.open(&root, OsStr::new("c")).is_err());
        assert_eq!(
            h.subdir(OsStr::new("sub")).unwrap().unwrap().path(),
            p("/home/anna/bin/sub")
        );
        assert!(h.subdir(OsStr::new("a")).is_err(), "a link is not entered");
        assert_eq!(
            h.read_link(OsStr::new("a")).unwrap(),
            Some(PathBuf::from("b"))
        );
        assert_eq!(h.read_link(OsStr::new("b")).unwrap(), None);
        assert!(open_dir(&root, p("/home/anna/none")).unwrap().is_none());
        assert!(matches!(
            open_dir(&root, p("/home/anna/bin/b")),
            Err(ReadError::NotADirectory(Kind::File))
        ));
    }

    /// A directory swapped for a link while a walk holds it: the walk goes on in the directory
    /// it opened, never through the link.
    #[test]
    fn a_directory_swapped_for_a_link_changes_nothing_for_its_handle() {
        let (dir, root) = tree();
        let d = dir.path();
        std::fs::create_dir_all(d.join("home/anna/cfg")).unwrap();
        std::fs::write(d.join("home/anna/cfg/f"), "mine").unwrap();
        std::fs::write(d.join("etc/f"), "root's").unwrap();
        let h = open_dir(&root, p("/home/anna/cfg")).unwrap().unwrap();
        std::fs::rename(d.join("home/anna/cfg"), d.join("home/anna/moved")).unwrap();
        symlink("/etc", d.join("home/anna/cfg")).unwrap();
        let got = h.open(&root, OsStr::new("f")).unwrap().unwrap();
        assert_eq!(got.read_capped(10).unwrap(), b"mine");
    }

    #[test]
    fn normalizes_lexically() {
        assert_eq!(
            normalize(p("/home/a/.tb/p/../../sig.txt")),
            PathBuf::from("/home/a/sig.txt")
        );
        assert_eq!(normalize(p("/../../x")), PathBuf::from("/x"));
    }
}
