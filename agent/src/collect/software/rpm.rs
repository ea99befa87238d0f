//! RPM packages: the rpm database and the repository dnf installed each one from.
//!
//! - rpm ≥ 4.16 keeps its database in SQLite, `/var/lib/rpm/rpmdb.sqlite` (or
//!   `/usr/lib/sysimage/rpm/rpmdb.sqlite`): table `Packages(hnum INTEGER PRIMARY KEY, blob)`
//!   (rpm `lib/backend/sqlite.cc`), each blob one package header without the lead or magic:
//!   two big-endian u32s, the index entry count `il` and data length `dl`, then `il` entries of
//!   four big-endian u32s (tag, type, offset, count), then the `dl`-byte data store. rpm
//!   refuses `il` above 0xffff and `dl` above 0x0fffffff (`hdrchkTags`/`hdrchkData`), and so
//!   does [`parse_header`]. Tags (`include/rpm/rpmtag.h`): NAME 1000, VERSION 1001, RELEASE
//!   1002, EPOCH 1003 (int32), VENDOR 1011, PACKAGER 1015, ARCH 1022, and the file list
//!   DIRINDEXES 1116 / BASENAMES 1117 / DIRNAMES 1118. Types: INT32 4, STRING 6, STRING_ARRAY
//!   8, I18NSTRING 9.
//! - dnf 4 records every transaction in `/var/lib/dnf/history.sqlite` (libdnf
//!   `transaction/sql/create_tables.sql`): `trans_item(trans_id, item_id, repo_id, action,
//!   state)` joined to `rpm(item_id, name, epoch, version, release, arch)` and `repo(id,
//!   repoid)`. The repository of an installed package is the one of the last successful
//!   (`state` 1) item that brought that exact version in: actions INSTALL 1, DOWNGRADE 2,
//!   OBSOLETE 4, UPGRADE 6, REINSTALL 9. `@commandline` is a local file.
//! - Configured repositories are the `[id]` sections of `/etc/yum.repos.d/*.repo`.
//!
//! A package from a configured repository is `os-vendor` when its header's vendor is the
//! distribution's (Fedora Project, Red Hat, ...), `third-party-repo` otherwise; one from a local
//! file, from a repository no longer configured, or with no dnf record at all is `unlisted`
//! (with the vendor as the hint). Without any dnf history (an image built without dnf, or a
//! zypper system), packages of the distribution's vendor still count as `os-vendor`.
//! `current` is left true: whether a repository offers a newer build needs its metadata
//! cache, which this collector does not read.

use crate::collect::userfile;
use crate::collect::{Collected, Root};
use std::collections::{BTreeSet, HashMap};
use std::path::Path;
use vakt_proto::model::{Package, PackageFormat, SectionKind, SoftwareSource};

const RPMDB_PATHS: [&str; 2] = [
    "/usr/lib/sysimage/rpm/rpmdb.sqlite",
    "/var/lib/rpm/rpmdb.sqlite",
];
const DNF_HISTORY: &str = "/var/lib/dnf/history.sqlite";
const REPOS_D: &str = "/etc/yum.repos.d";
const REPO_CAP: u64 = 1 << 20;

/// Header limits from rpm's `hdrchkTags` and `hdrchkData`.
const MAX_TAGS: u32 = 0xffff;
const MAX_DATA: u32 = 0x0fff_ffff;

const TAG_NAME: u32 = 1000;
const TAG_VERSION: u32 = 1001;
const TAG_RELEASE: u32 = 1002;
const TAG_EPOCH: u32 = 1003;
const TAG_VENDOR: u32 = 1011;
const TAG_PACKAGER: u32 = 1015;
const TAG_ARCH: u32 = 1022;
const TAG_DIRINDEXES: u32 = 1116;
const TAG_BASENAMES: u32 = 1117;
const TAG_DIRNAMES: u32 = 1118;

const TYPE_INT32: u32 = 4;
const TYPE_STRING: u32 = 6;
const TYPE_STRING_ARRAY: u32 = 8;
const TYPE_I18NSTRING: u32 = 9;

/// The vendors whose packages are the operating system's own.
const OS_VENDORS: [&str; 9] = [
    "Fedora Project",
    "Red Hat",
    "CentOS",
    "Rocky Enterprise Software Foundation",
    "AlmaLinux",
    "Oracle America",
    "openSUSE",
    "SUSE LLC",
    "Amazon",
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RpmError {
    #[error("header shorter than its {0}-byte preamble and index")]
    Truncated(u64),
    #[error("header claims {0} index entries (rpm allows {MAX_TAGS})")]
    TooManyTags(u32),
    #[error("header claims {0} data bytes (rpm allows {MAX_DATA})")]
    TooMuchData(u32),
    #[error("tag {tag}: offset {offset} count {count} outside the {len}-byte data store")]
    OutOfBounds {
        tag: u32,
        offset: u32,
        count: u32,
        len: usize,
    },
    #[error("tag {0}: unterminated string")]
    Unterminated(u32),
    #[error("tag {tag}: type {found} where rpm writes {expected}")]
    WrongType { tag: u32, found: u32, expected: u32 },
    #[error("header has no NAME")]
    NoName,
    #[error("file list: directory index {0} out of range")]
    BadDirIndex(u32),
}

/// The fields of an installed package's header the inventory uses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RpmHeader {
    pub name: String,
    pub epoch: Option<u32>,
    pub version: String,
    pub release: String,
    pub arch: String,
    pub vendor: String,
    pub packager: String,
    /// Every file path the package installed (directories it owns included).
    pub files: Vec<String>,
}

impl RpmHeader {
    /// `[epoch:]version-release`, as rpm and dnf print it.
    pub fn evr(&self) -> String {
        match self.epoch {
            Some(e) if e > 0 => format!("{e}:{}-{}", self.version, self.release),
            _ => format!("{}-{}", self.version, self.release),
        }
    }
}

struct Entry {
    tag: u32,
    ty: u32,
    offset: u32,
    count: u32,
}

fn be32(b: &[u8], at: usize) -> Option<u32> {
    let s = b.get(at..at.checked_add(4)?)?;
    Some(u32::from_be_bytes([s[0], s[1], s[2], s[3]]))
}

/// Parses one header blob as the rpmdb stores it.
pub fn parse_header(blob: &[u8]) -> Result<RpmHeader, RpmError> {
    let il = be32(blob, 0).ok_or(RpmError::Truncated(8))?;
    let dl = be32(blob, 4).ok_or(RpmError::Truncated(8))?;
    if il > MAX_TAGS {
        return Err(RpmError::TooManyTags(il));
    }
    if dl > MAX_DATA {
        return Err(RpmError::TooMuchData(dl));
    }
    // Both bounded above, so this cannot overflow even on 32-bit targets.
    let index_end = 8 + il as usize * 16;
    let need = index_end as u64 + u64::from(dl);
    let data = blob
        .get(index_end..index_end + dl as usize)
        .ok_or(RpmError::Truncated(need))?;
    let mut entries = HashMap::new();
    for i in 0..il as usize {
        let at = 8 + i * 16;
        let field = |k: usize| be32(blob, at + 4 * k).ok_or(RpmError::Truncated(need));
        let e = Entry {
            tag: field(0)?,
            ty: field(1)?,
            offset: field(2)?,
            count: field(3)?,
        };
        entries.entry(e.tag).or_insert(e);
    }
    let strings = |tag: u32| -> Result<Option<Vec<String>>, RpmError> {
        let Some(e) = entries.get(&tag) else {
            return Ok(None);
        };
        read_strings(e, data).map(Some)
    };
    let string = |tag: u32| -> Result<String, RpmError> {
        Ok(strings(tag)?
            .and_then(|v| v.into_iter().next())
            .unwrap_or_default())
    };
    let name = string(TAG_NAME)?;
    if name.is_empty() {
        return Err(RpmError::NoName);
    }
    let epoch = match entries.get(&TAG_EPOCH) {
        Some(e) => read_int32s(e, data)?.first().copied(),
        None => None,
    };
    let files = match (
        strings(TAG_BASENAMES)?,
        strings(TAG_DIRNAMES)?,
        entries.get(&TAG_DIRINDEXES),
    ) {
        (Some(base), Some(dirs), Some(idx)) => {
            let idx = read_int32s(idx, data)?;
            base.iter()
                .zip(idx.iter())
                .map(|(b, i)| {
                    dirs.get(*i as usize)
                        .map(|d| format!("{d}{b}"))
                        .ok_or(RpmError::BadDirIndex(*i))
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        _ => Vec::new(),
    };
    Ok(RpmHeader {
        name,
        epoch,
        version: string(TAG_VERSION)?,
        release: string(TAG_RELEASE)?,
        arch: string(TAG_ARCH)?,
        vendor: string(TAG_VENDOR)?,
        packager: string(TAG_PACKAGER)?,
        files,
    })
}

/// `count` NUL-terminated strings from `offset` (one for STRING, the C locale's first for
/// I18NSTRING).
fn read_strings(e: &Entry, data: &[u8]) -> Result<Vec<String>, RpmError> {
    let expected = TYPE_STRING_ARRAY;
    if !matches!(e.ty, TYPE_STRING | TYPE_STRING_ARRAY | TYPE_I18NSTRING) {
        return Err(RpmError::WrongType {
            tag: e.tag,
            found: e.ty,
            expected,
        });
    }
    let bounds = || RpmError::OutOfBounds {
        tag: e.tag,
        offset: e.offset,
        count: e.count,
        len: data.len(),
    };
    let count = if e.ty == TYPE_STRING { 1 } else { e.count };
    // Every string takes at least its NUL, so a count beyond the data store is a lie; this
    // check keeps a hostile count from reserving memory.
    if count as usize > data.len() {
        return Err(bounds());
    }
    let mut at = e.offset as usize;
    let mut out = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let rest = data.get(at..).ok_or_else(bounds)?;
        let len = rest
            .iter()
            .position(|b| *b == 0)
            .ok_or(RpmError::Unterminated(e.tag))?;
        out.push(String::from_utf8_lossy(&rest[..len]).into_owned());
        at += len + 1;
    }
    Ok(out)
}

fn read_int32s(e: &Entry, data: &[u8]) -> Result<Vec<u32>, RpmError> {
    if e.ty != TYPE_INT32 {
        return Err(RpmError::WrongType {
            tag: e.tag,
            found: e.ty,
            expected: TYPE_INT32,
        });
    }
    let start = e.offset as usize;
    let end = (e.count as usize)
        .checked_mul(4)
        .and_then(|n| n.checked_add(start))
        .filter(|end| *end <= data.len())
        .ok_or(RpmError::OutOfBounds {
            tag: e.tag,
            offset: e.offset,
            count: e.count,
            len: data.len(),
        })?;
    Ok(data[start..end]
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

/// The repository ids (`[id]` sections) of a `.repo` file.
pub fn parse_repo_ids(text: &str) -> Vec<String> {
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            l.strip_prefix('[')?.strip_suffix(']').map(str::to_string)
        })
        .filter(|id| !id.is_empty() && id != "main")
        .collect()
}

/// One package's identity as dnf records it.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Nevra {
    pub name: String,
    pub epoch: u32,
    pub version: String,
    pub release: String,
    pub arch: String,
}

impl Nevra {
    fn of(h: &RpmHeader) -> Self {
        Self {
            name: h.name.clone(),
            epoch: h.epoch.unwrap_or(0),
            version: h.version.clone(),
            release: h.release.clone(),
            arch: h.arch.clone(),
        }
    }
}

/// What dnf's history says about where packages came from.
#[derive(Debug, Default)]
pub struct History {
    /// False when there is no history at all (dnf never ran, or another tool manages rpms).
    pub present: bool,
    pub repo_of: HashMap<Nevra, String>,
}

fn is_os_vendor(vendor: &str) -> bool {
    OS_VENDORS.iter().any(|v| {
        vendor
            .to_ascii_lowercase()
            .starts_with(&v.to_ascii_lowercase())
    })
}

/// Where one installed package came from.
pub fn classify(
    h: &RpmHeader,
    history: &History,
    configured: &BTreeSet<String>,
) -> (SoftwareSource, String) {
    let vendor_hint = if h.vendor.is_empty() {
        "no vendor".to_string()
    } else {
        format!("vendor {}", h.vendor)
    };
    match history.repo_of.get(&Nevra::of(h)).map(String::as_str) {
        Some("@commandline") => (
            SoftwareSource::Unlisted,
            format!("local package file ({vendor_hint})"),
        ),
        Some(repo) if configured.contains(repo) => {
            if is_os_vendor(&h.vendor) {
                (SoftwareSource::OsVendor, repo.to_string())
            } else {
                (SoftwareSource::ThirdPartyRepo, repo.to_string())
            }
        }
        // Packages anaconda installed came from the installation media.
        Some("anaconda") if is_os_vendor(&h.vendor) => (
            SoftwareSource::OsVendor,
            "anaconda (installation media)".to_string(),
        ),
        Some(repo) => (
            SoftwareSource::Unlisted,
            format!("repository {repo} (no longer configured; {vendor_hint})"),
        ),
        None if !history.present && is_os_vendor(&h.vendor) => (
            SoftwareSource::OsVendor,
            format!("{} (no dnf history)", h.vendor),
        ),
        None => (
            SoftwareSource::Unlisted,
            format!("no dnf record ({vendor_hint})"),
        ),
    }
}

/// Installed rpm packages under `root` (none, silently, where there is no rpm database).
pub fn collect(root: &Root) -> Collected<Vec<Package>> {
    let mut out = Collected::new(Vec::new());
    let headers = read_rpmdb(root, &mut out);
    if headers.is_empty() {
        return out;
    }
    let history = read_history(root, &mut out);
    let configured = configured_repos(root, &mut out);
    for h in headers {
        let (source, origin) = classify(&h, &history, &configured);
        out.value.push(Package {
            name: h.name.clone(),
            version: h.evr(),
            format: PackageFormat::Rpm,
            source,
            origin,
            current: true,
            arch: h.arch,
            user: String::new(),
            path: String::new(),
        });
    }
    out
}

/// Every path rpm installed, for the unmanaged-program check.
pub fn owned_paths(root: &Root) -> Collected<Vec<String>> {
    let mut out = Collected::new(Vec::new());
    let mut scratch = Collected::new(Vec::new());
    let headers = read_rpmdb(root, &mut scratch);
    out.errors = scratch.errors;
    out.value = headers.into_iter().flat_map(|h| h.files).collect();
    out
}

/// Opens an SQLite file read-only. A live database in WAL mode needs its `-shm` file; on a
/// read-only file system that fails, and the file is then read as immutable (what was last
/// checkpointed).
fn open_ro(path: &std::path::Path) -> rusqlite::Result<rusqlite::Connection> {
    use rusqlite::OpenFlags;
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let conn = rusqlite::Connection::open_with_flags(path, flags)?;
    match conn.query_row("SELECT count(*) FROM sqlite_master", [], |_| Ok(())) {
        Ok(()) => Ok(conn),
        Err(_) => {
            let uri = format!("file:{}?immutable=1", path.display());
            rusqlite::Connection::open_with_flags(uri, flags | OpenFlags::SQLITE_OPEN_URI)
        }
    }
}

fn read_rpmdb(root: &Root, out: &mut Collected<Vec<Package>>) -> Vec<RpmHeader> {
    // SQLite opens the database by its path itself; the type is checked through the safe
    // reader first, and /var/lib/rpm is root's, not a user's.
    let Some(device) = RPMDB_PATHS
        .iter()
        .find(|p| userfile::is_file(root, Path::new(p)))
    else {
        if userfile::is_file(root, Path::new("/var/lib/rpm/Packages")) {
            out.error(
                SectionKind::Software,
                "/var/lib/rpm/Packages",
                "rpm database in the BerkeleyDB format (rpm < 4.16) is not read; only rpmdb.sqlite",
            );
        }
        return Vec::new();
    };
    let result = (|| -> rusqlite::Result<Vec<(i64, Vec<u8>)>> {
        let conn = open_ro(&root.join(device))?;
        let mut stmt = conn.prepare("SELECT hnum, blob FROM Packages ORDER BY hnum")?;
        let rows = stmt.query_map([], |r| Ok((r.get::<_, i64>(0)?, r.get::<_, Vec<u8>>(1)?)))?;
        rows.collect()
    })();
    let rows = match result {
        Ok(r) => r,
        Err(e) => {
            out.error(SectionKind::Software, *device, e);
            return Vec::new();
        }
    };
    let mut headers = Vec::new();
    for (hnum, blob) in rows {
        match parse_header(&blob) {
            // gpg-pubkey entries are imported signing keys, not software.
            Ok(h) if h.name == "gpg-pubkey" => {}
            Ok(h) => headers.push(h),
            Err(e) => out.error(SectionKind::Software, format!("{device} (hnum {hnum})"), e),
        }
    }
    headers.sort_by(|a, b| a.name.cmp(&b.name).then(a.arch.cmp(&b.arch)));
    headers
}

fn read_history(root: &Root, out: &mut Collected<Vec<Package>>) -> History {
    if !userfile::is_file(root, Path::new(DNF_HISTORY)) {
        return History::default();
    }
    let path = root.join(DNF_HISTORY);
    let result = (|| -> rusqlite::Result<HashMap<Nevra, String>> {
        let conn = open_ro(&path)?;
        let mut stmt = conn.prepare(
            "SELECT rpm.name, rpm.epoch, rpm.version, rpm.release, rpm.arch, repo.repoid \
             FROM trans_item ti \
             JOIN rpm ON rpm.item_id = ti.item_id \
             JOIN repo ON repo.id = ti.repo_id \
             WHERE ti.action IN (1, 2, 4, 6, 9) AND ti.state = 1 \
             ORDER BY ti.id",
        )?;
        let rows = stmt.query_map([], |r| {
            Ok((
                Nevra {
                    name: r.get(0)?,
                    epoch: r.get(1)?,
                    version: r.get(2)?,
                    release: r.get(3)?,
                    arch: r.get(4)?,
                },
                r.get::<_, String>(5)?,
            ))
        })?;
        // Later transactions override earlier ones (a reinstall from another repository).
        rows.collect()
    })();
    match result {
        Ok(repo_of) => History {
            present: true,
            repo_of,
        },
        Err(e) => {
            out.error(SectionKind::Software, DNF_HISTORY, e);
            History::default()
        }
    }
}

fn configured_repos(root: &Root, out: &mut Collected<Vec<Package>>) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let Some(listed) = userfile::list_or_report(root, REPOS_D, SectionKind::Software, out) else {
        return ids;
    };
    for e in listed.entries.iter().filter(|e| e.name.ends_with(".repo")) {
        match listed.dir.read(root, &e.raw, REPO_CAP) {
            Ok(b) => ids.extend(parse_repo_ids(&String::from_utf8_lossy(&b))),
            Err(err) => out.error(SectionKind::Software, format!("{REPOS_D}/{}", e.name), err),
        }
    }
    ids
}

#[cfg(test)]
mod tests;
