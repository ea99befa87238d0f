//! Debian and Ubuntu packages: what dpkg has installed and which configured apt repository
//! each one came from.
//!
//! The pure parts live in the submodules (`status`, `sources`, `packages`, `release`,
//! `version`, `attribution`); this file is the thin probe that reads them under a [`Root`]:
//! the dpkg status file, `/etc/apt/sources.list{,.d}`, the lists and Release files apt keeps in
//! `/var/lib/apt/lists` and os-release for the vendor's name.
//!
//! A list is parsed for the installed packages only (the rest of its paragraphs are skipped
//! unread) and kept between scans, keyed by its file's identity (size, mtime, and on Unix inode
//! and ctime) together with the names it was parsed for. A rescan with unchanged lists and no
//! newly installed package names reads only the small files; a new name or a replaced list
//! costs a fresh parse of the lists concerned.

pub mod attribution;
pub mod control;
pub mod decompress;
pub mod fingerprint;
pub mod packages;
pub mod release;
pub mod sources;
pub mod status;
pub mod version;

use super::super::userfile::{self, Opened};
use super::super::{Collected, Root};
use attribution::{Attributed, RepoView, Repository, StaleView};
use decompress::Compression;
use packages::{Interest, Limits, PackageList};
use release::ReleaseInfo;
use sources::SourceEntry;
use std::collections::{BTreeSet, HashMap, HashSet};
use std::io::{Read, Seek};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;
use vakt_proto::model::{Package, PackageFormat, SectionKind, SoftwareSource};

const SECTION: SectionKind = SectionKind::Software;
const STATUS: &str = "/var/lib/dpkg/status";
const LISTS: &str = "/var/lib/apt/lists";
const SOURCES_LIST: &str = "/etc/apt/sources.list";
const SOURCES_DIR: &str = "/etc/apt/sources.list.d";
/// The dpkg status file: a few MB on a desktop; this much is no status file.
const STATUS_CAP: u64 = 256 << 20;
/// A sources file, a Release file or os-release.
const SMALL_CAP: u64 = 16 << 20;

/// Everything one scan found: the attributed packages and the repositories they refer to.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct DebInventory {
    pub packages: Vec<Attributed>,
    /// Every configured `Packages` list that could be read; `Attributed::repository` indexes it.
    pub repositories: Vec<Repository>,
    /// dpkg's native architecture (empty if no package says).
    pub native_arch: String,
}

impl DebInventory {
    /// How apt names each package (`name`, or `name:arch` for a foreign architecture), in the
    /// order of `packages`: the arguments for `apt-cache policy`.
    pub fn apt_names(&self) -> Vec<String> {
        self.packages
            .iter()
            .map(|p| {
                let arch = &p.installed.arch;
                if arch == "all" || *arch == self.native_arch {
                    p.installed.name.clone()
                } else {
                    format!("{}:{arch}", p.installed.name)
                }
            })
            .collect()
    }
}

impl Attributed {
    /// The report's form of this package.
    pub fn to_package(&self) -> Package {
        Package {
            name: self.installed.name.clone(),
            version: self.installed.version.clone(),
            format: PackageFormat::Deb,
            source: self.source,
            origin: self.origin.clone(),
            current: self.current,
            arch: self.installed.arch.clone(),
            user: String::new(),
            path: String::new(),
        }
    }
}

/// Why a list file could not be used.
#[derive(Debug, thiserror::Error)]
enum ListFileError {
    #[error("{0}")]
    Unsupported(#[from] decompress::Unsupported),
    #[error("not {0} data although the name says so")]
    BadMagic(&'static str),
    #[error("cannot open: {0}")]
    Io(#[from] std::io::Error),

    #[error("{0}")]
    List(#[from] packages::ListError),
}

/// What identifies one version of a file: apt replaces lists by renaming a new file over the
/// old one, which changes all of these.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Stamp {
    size: u64,
    modified: Option<SystemTime>,
    #[cfg(unix)]
    inode: (u64, u64),
    #[cfg(unix)]
    changed: (i64, i64),
}

impl Stamp {
    fn of(m: &std::fs::Metadata) -> Self {
        #[cfg(unix)]
        use std::os::unix::fs::MetadataExt;
        Self {
            size: m.len(),
            modified: m.modified().ok(),
            #[cfg(unix)]
            inode: (m.dev(), m.ino()),
            #[cfg(unix)]
            changed: (m.ctime(), m.ctime_nsec()),
        }
    }
}

struct CachedList {
    stamp: Stamp,
    /// The package names the list was parsed for.
    names: Arc<HashSet<String>>,
    list: Result<Arc<PackageList>, String>,
}

/// Scans dpkg packages and keeps parsed lists for the next scan.
#[derive(Default)]
pub struct DebScanner {
    cache: HashMap<PathBuf, CachedList>,
    /// Lists parsed from disk (not the cache) by the last scan; for tests and benchmarks.
    parsed_last: usize,
}

impl std::fmt::Debug for DebScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DebScanner")
            .field("cached_lists", &self.cache.len())
            .field("parsed_last", &self.parsed_last)
            .finish()
    }
}

/// A list file found in the lists directory.
struct ListFile {
    name: String,
    /// The name without its compression extension.
    base: String,
}

impl DebScanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// How many parsed lists (or their errors) the cache holds.
    pub fn cached_lists(&self) -> usize {
        self.cache.len()
    }

    /// How many lists the last scan had to parse because the cache did not hold them.
    pub fn lists_parsed_last_scan(&self) -> usize {
        self.parsed_last
    }

    /// Scans the dpkg database under `root`. A system without one yields nothing and no error.
    pub fn scan(&mut self, root: &Root) -> Collected<DebInventory> {
        let mut out = Collected::new(DebInventory::default());
        self.parsed_last = 0;
        let bytes = match userfile::read(root, Path::new(STATUS), STATUS_CAP) {
            Ok(Some(b)) => b,
            Ok(None) => return out,
            Err(e) => {
                out.error(SECTION, STATUS, e);
                return out;
            }
        };
        let (installed, problems) = status::parse_status(&String::from_utf8_lossy(&bytes));
        for p in problems {
            out.error(SECTION, STATUS, format!("line {}: {}", p.line, p.message));
        }
        let native = status::native_arch(&installed).unwrap_or_default();
        let names: Arc<HashSet<String>> =
            Arc::new(installed.iter().map(|p| p.name.clone()).collect());
        let vendors = read_vendors(root, &mut out);
        let entries = read_sources(root, &native, &mut out);
        let lists_dir = Path::new(LISTS);
        let files = list_dir(root, entries.is_empty(), &mut out);

        let mut seen = HashSet::new();
        let mut claimed = HashSet::new();
        let mut repos = Vec::new();
        let mut lists = Vec::new();
        let mut releases: HashMap<String, Option<ReleaseInfo>> = HashMap::new();
        for (entry, file) in &entries {
            let found = lists_of(entry, &files);
            if found.is_empty() {
                out.error(
                    SECTION,
                    file.as_str(),
                    format!(
                        "line {}: no package list in {LISTS} for {} {} {} (not fetched by apt-get update yet?)",
                        entry.line,
                        entry.site(),
                        entry.suite,
                        entry.component
                    ),
                );
                continue;
            }
            let [inrelease, plain] = entry.release_files();
            let release_file = [inrelease, plain].into_iter().find(|n| files.contains(n));
            let release = match &release_file {
                Some(n) => releases
                    .entry(n.clone())
                    .or_insert_with(|| read_release(lists_dir, n, root, &mut out))
                    .clone(),
                None => None,
            };
            let vendor = release
                .as_ref()
                .is_some_and(|r| attribution::is_vendor_origin(&r.origin, &vendors));
            for (arch, f) in found {
                if !claimed.insert(f.name.clone()) {
                    continue; // the same list configured twice
                }
                match self.load(root, &lists_dir.join(&f.name), &f, &names, &mut seen) {
                    Ok(list) => {
                        report_bad_paragraphs(&list, lists_dir, &f.name, &mut out);
                        repos.push(Repository {
                            entry: entry.clone(),
                            arch,
                            list_file: f.name.clone(),
                            release: release.clone(),
                            vendor,
                        });
                        lists.push(list);
                    }
                    Err(e) => out.error(SECTION, lists_dir.join(&f.name).display().to_string(), e),
                }
            }
        }
        let views: Vec<RepoView<'_>> = repos
            .iter()
            .zip(&lists)
            .map(|(repo, list)| RepoView { repo, list })
            .collect();
        let mut packages = attribution::attribute(installed, &views, &native);

        if packages
            .iter()
            .any(|p| p.source == SoftwareSource::Unlisted)
        {
            let stale = self.stale_lists(
                root,
                lists_dir,
                (&files, &claimed),
                &names,
                &mut seen,
                &mut out,
            );
            let views: Vec<StaleView<'_>> = stale
                .iter()
                .map(|(label, list)| StaleView { label, list })
                .collect();
            attribution::hint_unlisted(&mut packages, &views, &native);
        }
        // Lists that are gone or no longer read would only hold memory.
        self.cache.retain(|path, _| seen.contains(path));
        out.value = DebInventory {
            packages,
            repositories: repos,
            native_arch: native,
        };
        out
    }

    /// A list from the cache when its file is unchanged and it was parsed for every name now
    /// installed, else parsed afresh for `names` (and cached, the error included, so a corrupt
    /// list costs one attempt per change, not per scan).
    fn load(
        &mut self,
        root: &Root,
        path: &Path,
        file: &ListFile,
        names: &Arc<HashSet<String>>,
        seen: &mut HashSet<PathBuf>,
    ) -> Result<Arc<PackageList>, String> {
        let opened = userfile::open(root, path)
            .and_then(|o| {
                o.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::NotFound).into())
            })
            .map_err(|e| format!("cannot open: {e}"))?;
        let stamp = Stamp::of(&opened.meta);
        seen.insert(path.to_path_buf());
        let fresh = |c: &&CachedList| {
            c.stamp == stamp
                && (Arc::ptr_eq(&c.names, names) || names.iter().all(|n| c.names.contains(n)))
        };
        if let Some(c) = self.cache.get(path).filter(fresh) {
            return c.list.clone();
        }
        self.parsed_last += 1;
        let list = read_list_file(
            opened,
            &file.name[file.base.len()..],
            Interest::Names(names),
        )
        .map(Arc::new)
        .map_err(|e| e.to_string());
        self.cache.insert(
            path.to_path_buf(),
            CachedList {
                stamp,
                names: Arc::clone(names),
                list: list.clone(),
            },
        );
        list
    }

    /// The lists in the directory that no configured source claims, with a label each.
    fn stale_lists(
        &mut self,
        root: &Root,
        lists_dir: &Path,
        (files, claimed): (&BTreeSet<String>, &HashSet<String>),
        names: &Arc<HashSet<String>>,
        seen: &mut HashSet<PathBuf>,
        out: &mut Collected<DebInventory>,
    ) -> Vec<(String, Arc<PackageList>)> {
        let mut stale = Vec::new();
        for name in files {
            if claimed.contains(name) {
                continue;
            }
            let Some(file) = split_list_name(name) else {
                continue;
            };
            let path = lists_dir.join(name);
            match self.load(root, &path, &file, names, seen) {
                Ok(list) => {
                    let label = stale_release_file(&file.base, files)
                        .and_then(|r| read_release(lists_dir, &r, root, out))
                        .and_then(|r| [r.origin, r.label].into_iter().find(|s| !s.is_empty()))
                        .unwrap_or_else(|| site_of_list(&file.base));
                    stale.push((label, list));
                }
                Err(e) => out.error(SECTION, path.display().to_string(), e),
            }
        }
        stale
    }
}

/// A list file's name split into base and compression, if it is a `Packages` list.
fn split_list_name(name: &str) -> Option<ListFile> {
    Compression::EXTENSIONS
        .iter()
        .filter_map(|ext| name.strip_suffix(ext))
        .find(|base| base.ends_with("_Packages"))
        .map(|base| ListFile {
            name: name.to_string(),
            base: base.to_string(),
        })
}

/// The lists present for `entry`, one per architecture (`""` for a flat repository), the
/// preferred compression first when several copies exist.
fn lists_of(entry: &SourceEntry, names: &BTreeSet<String>) -> Vec<(String, ListFile)> {
    let pick = |base: &str| {
        Compression::EXTENSIONS
            .iter()
            .map(|ext| format!("{base}{ext}"))
            .find(|n| names.contains(n))
            .map(|name| ListFile {
                name,
                base: base.to_string(),
            })
    };
    let Some(prefix) = entry.packages_prefix() else {
        return pick(&entry.packages_file(""))
            .map(|f| (String::new(), f))
            .into_iter()
            .collect();
    };
    let mut archs: Vec<String> = names
        .range(prefix.clone()..)
        .take_while(|n| n.starts_with(&prefix))
        .filter_map(|n| split_list_name(n))
        .filter_map(|f| {
            let arch = f.base[prefix.len()..].strip_suffix("_Packages")?;
            (!arch.is_empty() && !arch.contains('_')).then(|| arch.to_string())
        })
        .filter(|a| entry.archs.accepts(a))
        .collect();
    archs.sort();
    archs.dedup();
    archs
        .into_iter()
        .filter_map(|arch| pick(&entry.packages_file(&arch)).map(|f| (arch, f)))
        .collect()
}

/// The Release file of a list no configured source claims, found by trying each cut of its
/// name after `_dists_` (a suite may itself contain `/`), or beside a flat repository's list.
fn stale_release_file(base: &str, names: &BTreeSet<String>) -> Option<String> {
    let try_dir = |dir: &str| {
        ["InRelease", "Release"]
            .iter()
            .map(|f| format!("{dir}{f}"))
            .find(|n| names.contains(n))
    };
    if let Some(i) = base.find("_dists_") {
        let after = i + "_dists_".len();
        return base[after..]
            .match_indices('_')
            .find_map(|(j, _)| try_dir(&base[..after + j + 1]));
    }
    try_dir(base.strip_suffix("Packages")?)
}

/// The site a list was fetched from, recovered from its name (`deb.nodesource.com/node_20.x`).
fn site_of_list(base: &str) -> String {
    let site = base.find("_dists_").map_or_else(
        || base.strip_suffix("_Packages").unwrap_or(base),
        |i| &base[..i],
    );
    let site = site.trim_end_matches("_.");
    // '_' stands for '/' in list names; a real '_' was quoted as %5f.
    sources::unquote(&site.replace('_', "/"))
        .trim_matches('/')
        .to_string()
}

fn report_bad_paragraphs(
    list: &PackageList,
    dir: &Path,
    name: &str,
    out: &mut Collected<DebInventory>,
) {
    if list.bad_paragraphs > 0 {
        out.error(
            SECTION,
            dir.join(name).display().to_string(),
            format!(
                "{} paragraphs without a usable Package or Version were skipped",
                list.bad_paragraphs
            ),
        );
    }
}

/// Opens a list, checks that its first bytes match the compression its name claims, and
/// parses it while decompressing.
fn read_list_file(
    opened: Opened,
    ext: &str,
    interest: Interest<'_>,
) -> Result<PackageList, ListFileError> {
    let compression = Compression::from_extension(ext)?;
    let mut file = opened.file;
    let mut head = [0u8; 8];
    let mut n = 0;
    while n < head.len() {
        match file.read(&mut head[n..])? {
            0 => break,
            k => n += k,
        }
    }
    if !compression.matches_magic(&head[..n]) {
        return Err(ListFileError::BadMagic(compression.name()));
    }
    file.rewind()?;
    Ok(packages::read_packages(
        compression.reader(file)?,
        Limits::default(),
        interest,
    )?)
}

/// A Release file of the lists directory, or `None` (with an error entry) when unreadable.
fn read_release(
    dir: &Path,
    name: &str,
    root: &Root,
    out: &mut Collected<DebInventory>,
) -> Option<ReleaseInfo> {
    let path = dir.join(name);
    let parsed = userfile::read_existing(root, &path, SMALL_CAP)
        .map_err(|e| e.to_string())
        .and_then(|b| {
            release::parse_release(&String::from_utf8_lossy(&b)).map_err(|e| e.to_string())
        });
    match parsed {
        Ok(r) => Some(r),
        Err(e) => {
            out.error(SECTION, path.display().to_string(), e);
            None
        }
    }
}

/// The vendor names from os-release; none (every repository then counts as third-party) when
/// it cannot be read.
fn read_vendors(root: &Root, out: &mut Collected<DebInventory>) -> Vec<String> {
    for p in ["/etc/os-release", "/usr/lib/os-release"] {
        if let Ok(Some(b)) = userfile::read(root, Path::new(p), SMALL_CAP) {
            return attribution::os_vendors(&String::from_utf8_lossy(&b));
        }
    }
    out.error(
        SECTION,
        "/etc/os-release",
        "unreadable: the operating system's own repositories cannot be told apart",
    );
    Vec::new()
}

/// Every configured `deb` source with the device path of its file, in apt's reading order:
/// `sources.list`, then `sources.list.d` sorted by name.
fn read_sources(
    root: &Root,
    native: &str,
    out: &mut Collected<DebInventory>,
) -> Vec<(SourceEntry, String)> {
    let mut files = Vec::new();
    if userfile::is_file(root, Path::new(SOURCES_LIST)) {
        files.push(SOURCES_LIST.to_string());
    }
    if let Some(listed) = userfile::list_or_report(root, SOURCES_DIR, SECTION, out) {
        // Sorted by name already; apt skips what is not a regular file.
        files.extend(
            listed
                .entries
                .iter()
                .filter(|e| apt_reads_source_file(&e.name))
                .filter(|e| matches!(listed.dir.stat(root, &e.raw), Ok(Some(m)) if m.is_file()))
                .map(|e| format!("{SOURCES_DIR}/{}", e.name)),
        );
    }
    let mut entries = Vec::new();
    for file in files {
        let text = match userfile::read_existing(root, Path::new(&file), SMALL_CAP) {
            Ok(b) => String::from_utf8_lossy(&b).into_owned(),
            Err(e) => {
                out.error(SECTION, file.as_str(), e);
                continue;
            }
        };
        let (found, problems) = if file.ends_with(".sources") {
            sources::parse_deb822(&text, native)
        } else {
            sources::parse_one_line(&text, native)
        };
        for p in problems {
            out.error(
                SECTION,
                file.as_str(),
                format!("line {}: {}", p.line, p.message),
            );
        }
        entries.extend(found.into_iter().map(|e| (e, file.clone())));
    }
    entries
}

/// apt's rule for `sources.list.d` (`GetListOfFilesInDir`): extension `list` or `sources`,
/// not hidden, only letters, digits, `_`, `-`, `:` and `.` in the name.
fn apt_reads_source_file(name: &str) -> bool {
    !name.starts_with('.')
        && (name.ends_with(".list") || name.ends_with(".sources"))
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | ':' | '.'))
}

/// The file names in the lists directory. A missing directory is an error only when sources
/// are configured (`quiet` otherwise: a dpkg-only system without apt).
fn list_dir(root: &Root, quiet: bool, out: &mut Collected<DebInventory>) -> BTreeSet<String> {
    let listing = match userfile::open_dir(root, Path::new(LISTS)) {
        Ok(Some(h)) => h.list(userfile::MAX_ENTRIES),
        Ok(None) if quiet => return BTreeSet::new(),
        Ok(None) => Err(std::io::Error::from(std::io::ErrorKind::NotFound).into()),
        Err(e) => Err(e),
    };
    match listing {
        Ok(l) => {
            if l.truncated {
                out.error(
                    SECTION,
                    LISTS,
                    userfile::too_many_entries(userfile::MAX_ENTRIES),
                );
            }
            l.entries
                .into_iter()
                .filter_map(|e| e.raw.into_string().ok())
                .collect()
        }
        Err(e) => {
            out.error(SECTION, LISTS, e);
            BTreeSet::new()
        }
    }
}

// Fixture trees with xz lists: Linux only, like the xz decoder.
#[cfg(test)]
#[cfg(target_os = "linux")]
mod tests;

#[cfg(test)]
mod name_tests {
    use super::*;

    #[test]
    fn list_names_are_split_and_sites_recovered() {
        let f =
            split_list_name("deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4")
                .unwrap();
        assert_eq!(
            f.base,
            "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages"
        );
        assert!(split_list_name("deb.debian.org_debian_dists_bookworm_InRelease").is_none());
        assert!(split_list_name("x_Packages.diff_Index").is_none());
        assert_eq!(
            site_of_list(
                "deb.nodesource.com_node%5f20.x_dists_nodistro_main_binary-amd64_Packages"
            ),
            "deb.nodesource.com/node_20.x"
        );
        assert_eq!(site_of_list("_srv_repo_._Packages"), "srv/repo");
        assert_eq!(site_of_list("h_%zz_%4"), "h/%zz/%4");
    }

    #[test]
    fn stale_release_files_are_found_by_cut() {
        let names: BTreeSet<String> = [
            "security.debian.org_dists_stable_updates_InRelease",
            "a.org_dists_x_Release",
            "_srv_repo_._InRelease",
        ]
        .into_iter()
        .map(String::from)
        .collect();
        assert_eq!(
            stale_release_file(
                "security.debian.org_dists_stable_updates_main_binary-amd64_Packages",
                &names
            )
            .as_deref(),
            Some("security.debian.org_dists_stable_updates_InRelease")
        );
        assert_eq!(
            stale_release_file("a.org_dists_x_main_binary-all_Packages", &names).as_deref(),
            Some("a.org_dists_x_Release")
        );
        assert_eq!(
            stale_release_file("_srv_repo_._Packages", &names).as_deref(),
            Some("_srv_repo_._InRelease")
        );
        assert_eq!(
            stale_release_file("b.org_dists_y_main_binary-all_Packages", &names),
            None
        );
    }

    #[test]
    fn source_file_names_like_apt() {
        assert!(apt_reads_source_file("debian.sources"));
        assert!(apt_reads_source_file("google-chrome.list"));
        assert!(!apt_reads_source_file(
            "google-cloud-sdk.list.disabled-by-farm"
        ));
        assert!(!apt_reads_source_file("x.list.save"));
        assert!(!apt_reads_source_file(".hidden.list"));
        assert!(!apt_reads_source_file("with space.list"));
    }
}
