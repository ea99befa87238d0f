//! Programs no package manager installed: AppImages and executables dropped into `/opt`,
//! `/usr/local/bin` and each user's `~/.local/bin` (and `~/bin`, which Debian's default
//! `~/.profile` also puts on the PATH). All are `sideloaded`, with `path` set, and `user` set
//! for per-user ones.
//!
//! - An AppImage is an ELF file with the AppImage magic `AI` plus the type byte (1 or 2) at
//!   offset 8 (the AppImage specification's "magic bytes"), wherever it sits: the dirs above,
//!   plus `~/Applications`, `~/AppImages`, `~/Downloads` and the home directory itself, where
//!   people keep them.
//! - `/opt` holds one directory per vendor application; each unowned one is reported once (an
//!   admin wants "zoom in /opt/zoom", not its 40 helper binaries), if it holds an executable
//!   within three levels.
//! - Scripts count: an executable `#!` file in `~/.local/bin` is as much a program as an ELF
//!   one (pip `--user` and pipx put their commands there), and its interpreter goes into
//!   `origin`. Files without an execute bit are data, not programs, except AppImages, which
//!   are often downloaded without one.
//!
//! "No package manager owns it": dpkg records every path a package installed, one per line, in
//! `/var/lib/dpkg/info/<package>.list` (directories included); [`Ownership`] is built from those
//! lists, and from the file lists in the rpm database's headers. A link in `/usr/local/bin` to
//! a packaged program counts as packaged.

use crate::collect::userfile::{self, DirHandle, Entry, Kind, Opened};
use crate::collect::users::local_users;
use crate::collect::{Collected, Root};
use std::collections::HashSet;
use std::io::{BufRead, Read};
use vakt_proto::model::{Package, PackageFormat, SectionKind, SoftwareSource};

const DPKG_INFO: &str = "/var/lib/dpkg/info";
const LIST_CAP: u64 = 64 << 20;
/// Read buffer for a dpkg list, which is streamed, never held whole.
const LIST_BUFFER: usize = 64 << 10;
/// Files examined per /opt application directory: enough to find its executables, bounded so
/// a huge tree (a JDK, an IDE) costs milliseconds.
const OPT_WALK_CAP: usize = 4000;
const OPT_DEPTH: usize = 3;
const HEAD_LEN: usize = 256;
/// Files opened per user across their directories (`~/.local/bin`, `~/Downloads`...): each
/// listing is capped already, this bounds the heads read for one user in all of them.
const USER_FILES_CAP: usize = 5_000;

/// What the first bytes of a file say it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sniffed {
    /// An AppImage of type 1 or 2; `arch` from the ELF header.
    AppImage {
        kind: u8,
        arch: &'static str,
    },
    Elf {
        arch: &'static str,
    },
    /// A `#!` script and the name of its interpreter (`python3` for `/usr/bin/env python3`).
    Script {
        interpreter: String,
    },
    Other,
}

/// Classifies a file by its first bytes (at least 20 for the ELF machine field).
pub fn sniff(head: &[u8]) -> Sniffed {
    if head.starts_with(b"\x7fELF") {
        let arch = elf_arch(head);
        return match head.get(8..11) {
            Some([b'A', b'I', k @ (1 | 2)]) => Sniffed::AppImage { kind: *k, arch },
            _ => Sniffed::Elf { arch },
        };
    }
    if let Some(rest) = head.strip_prefix(b"#!") {
        let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
        let line = String::from_utf8_lossy(line);
        let mut words = line.split_whitespace();
        let first = words.next().unwrap_or_default();
        let base = first.rsplit('/').next().unwrap_or_default();
        let interpreter = if base == "env" {
            words.find(|w| !w.starts_with('-')).unwrap_or_default()
        } else {
            base
        };
        return Sniffed::Script {
            interpreter: interpreter.to_string(),
        };
    }
    Sniffed::Other
}

/// The architecture from the ELF header's `e_machine` (offset 18, in the file's byte order).
fn elf_arch(head: &[u8]) -> &'static str {
    let Some(&[a, b]) = head.get(18..20) else {
        return "";
    };
    let machine = if head.get(5) == Some(&2) {
        u16::from_be_bytes([a, b])
    } else {
        u16::from_le_bytes([a, b])
    };
    match machine {
        0x03 => "i386",
        0x28 => "arm",
        0x3e => "x86_64",
        0xb7 => "aarch64",
        0xf3 => "riscv64",
        _ => "",
    }
}

/// Paths some package manager installed.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ownership {
    paths: HashSet<String>,
    /// When set, only these paths (and their merged-/usr aliases) are kept from the lists: a
    /// Debian desktop's lists hold a few hundred thousand paths, and only the candidates'
    /// matter.
    only: Option<HashSet<String>>,
}

impl Ownership {
    /// An ownership set that keeps only what is needed to answer [`Ownership::owns`] for
    /// `paths`.
    pub fn for_paths<'a>(paths: impl IntoIterator<Item = &'a str>) -> Self {
        let mut only = HashSet::new();
        for p in paths {
            only.insert(p.to_string());
            only.insert(usr_alias(p));
        }
        Self {
            paths: HashSet::new(),
            only: Some(only),
        }
    }

    /// Adds the paths of one dpkg `.list` file: one absolute path per line; `/.` is the root
    /// every package lists and says nothing.
    pub fn add_dpkg_list(&mut self, text: &str) {
        for line in text.lines() {
            self.add_dpkg_line(line);
        }
    }

    /// [`Ownership::add_dpkg_list`] line by line from a reader, so a large list costs one
    /// line of memory rather than the whole file (one package's list can run to megabytes,
    /// and an agent's heap keeps its high-water mark). Bytes that are not UTF-8 are replaced,
    /// as when the list is read whole.
    pub fn add_dpkg_list_from(&mut self, mut reader: impl BufRead) -> std::io::Result<()> {
        let mut line = Vec::new();
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line)? == 0 {
                return Ok(());
            }
            let text = String::from_utf8_lossy(&line);
            self.add_dpkg_line(text.trim_end_matches('\n'));
        }
    }

    fn add_dpkg_line(&mut self, line: &str) {
        let p = line.trim_end_matches('\r');
        if !p.starts_with('/') || p == "/." {
            return;
        }
        if self.only.as_ref().is_none_or(|only| only.contains(p)) {
            self.paths.insert(p.to_string());
        }
    }

    pub fn add(&mut self, path: impl Into<String>) {
        self.paths.insert(path.into());
    }

    /// Whether a package installed this device path. With merged /usr, dpkg may list
    /// `/bin/x` for what is found as `/usr/bin/x` and the other way round, so both count.
    pub fn owns(&self, path: &str) -> bool {
        self.paths.contains(path) || self.paths.contains(&usr_alias(path))
    }

    pub fn is_empty(&self) -> bool {
        self.paths.is_empty()
    }
}

/// The other name of a path under merged /usr: `/usr/bin/x` for `/bin/x` and back.
fn usr_alias(path: &str) -> String {
    match path.strip_prefix("/usr") {
        Some(rest)
            if ["/bin/", "/sbin/", "/lib/"]
                .iter()
                .any(|d| rest.starts_with(d)) =>
        {
            rest.to_string()
        }
        _ => format!("/usr{path}"),
    }
}

/// An AppImage's name and version from its file name, as release pages name them
/// (`Obsidian-1.5.3.AppImage`, `nvim-0.9.5-x86_64.appimage`): the first `-`/`_` separated
/// part that starts with a digit is the version. No such part: the whole stem is the name.
pub fn appimage_name_version(file_name: &str) -> (String, String) {
    let lower = file_name.to_ascii_lowercase();
    let stem = if lower.ends_with(".appimage") {
        &file_name[..file_name.len() - ".appimage".len()]
    } else {
        file_name
    };
    let parts: Vec<&str> = stem.split(['-', '_']).collect();
    let version_at = parts
        .iter()
        .position(|p| p.starts_with(|c: char| c.is_ascii_digit()))
        .filter(|i| *i > 0);
    match version_at {
        Some(i) => (parts[..i].join("-"), parts[i].to_string()),
        None => (stem.to_string(), String::new()),
    }
}

/// One executable or AppImage found, before the ownership check.
#[derive(Debug, Clone)]
struct Candidate {
    /// Device path of the file (or of the /opt app dir).
    path: String,
    /// Device path the program really is (a link's target), for the ownership check.
    real: String,
    name: String,
    user: String,
    kind: Sniffed,
    link: Option<String>,
    /// It has an execute bit.
    exec: bool,
}

/// Unmanaged programs under `root`.
pub fn collect(root: &Root) -> Collected<Vec<Package>> {
    let mut out = Collected::new(Vec::new());
    let mut found = Vec::new();
    let local_bin = Scan {
        dir: "/usr/local/bin",
        user: "",
        appimages_only: false,
    };
    // Root's directory: its listing's cap is the only bound it needs.
    let mut unbounded = usize::MAX;
    scan_dir(root, &local_bin, &mut unbounded, &mut found, &mut out);
    let opt_dirs = scan_opt(root, &mut found, &mut out);
    let users = local_users(root, SectionKind::Software);
    out.errors.extend(users.errors);
    for u in &users.value {
        let home = u.home.trim_end_matches('/');
        let mut budget = USER_FILES_CAP;
        let dirs = [
            (".local/bin", false),
            ("bin", false),
            ("Applications", true),
            ("AppImages", true),
            ("Downloads", true),
        ];
        for (d, appimages_only) in dirs {
            let dir = format!("{home}/{d}");
            let scan = Scan {
                dir: &dir,
                user: &u.name,
                appimages_only,
            };
            scan_dir(root, &scan, &mut budget, &mut found, &mut out);
        }
        // The home directory itself: AppImages saved there.
        let scan = Scan {
            dir: home,
            user: &u.name,
            appimages_only: true,
        };
        scan_dir(root, &scan, &mut budget, &mut found, &mut out);
        if budget == 0 {
            out.error(
                SectionKind::Software,
                home,
                format!(
                    "more than {} files looked at in this user's program directories: the rest were not",
                    crate::collect::limits::thousands(USER_FILES_CAP)
                ),
            );
        }
    }
    if found.is_empty() && opt_dirs.is_empty() {
        return out;
    }
    let wanted = found
        .iter()
        .flat_map(|c| [c.path.as_str(), c.real.as_str()])
        .chain(opt_dirs.iter().flat_map(|(dir, cands)| {
            std::iter::once(dir.as_str()).chain(cands.iter().map(|c| c.real.as_str()))
        }));
    let mut owners = Ownership::for_paths(wanted);
    load_dpkg_ownership(root, &mut owners, &mut out);
    // rpm's file lists count too; problems with its database are the rpm collector's to
    // report, so they are not repeated here.
    #[cfg(target_os = "linux")]
    for p in super::rpm::owned_paths(root).value {
        owners.add(p);
    }
    // A link in ~/.local/bin to an AppImage in ~/Applications is one program, found twice.
    let found_paths: HashSet<String> = found.iter().map(|c| c.path.clone()).collect();
    for c in found {
        if owners.owns(&c.real) || owners.owns(&c.path) {
            continue;
        }
        if c.link.is_some() && found_paths.contains(&c.real) {
            continue;
        }
        out.value.push(to_package(c));
    }
    for (dir, cands) in opt_dirs {
        if owners.owns(&dir) {
            continue;
        }
        let programs: Vec<&Candidate> = cands.iter().filter(|c| !owners.owns(&c.real)).collect();
        if programs.is_empty() {
            continue;
        }
        let app = dir.rsplit('/').next().unwrap_or_default().to_string();
        let arch = programs
            .iter()
            .find_map(|c| match c.kind {
                Sniffed::Elf { arch } if !arch.is_empty() => Some(arch),
                _ => None,
            })
            .unwrap_or_default();
        let first = programs[0]
            .path
            .strip_prefix(&format!("{dir}/"))
            .unwrap_or_default();
        out.value.push(Package {
            name: app,
            version: String::new(),
            format: PackageFormat::Binary,
            source: SoftwareSource::Sideloaded,
            origin: format!(
                "unpackaged directory in /opt ({} executable{}, e.g. {first})",
                programs.len(),
                if programs.len() == 1 { "" } else { "s" }
            ),
            current: true,
            arch: arch.to_string(),
            user: String::new(),
            path: dir,
        });
    }
    out
}

fn to_package(c: Candidate) -> Package {
    let (format, origin, arch, name, version) = match &c.kind {
        Sniffed::AppImage { kind, arch } => {
            let (name, version) = appimage_name_version(&c.name);
            (
                PackageFormat::Appimage,
                format!("AppImage (type {kind})"),
                *arch,
                name,
                version,
            )
        }
        Sniffed::Elf { arch } => (
            PackageFormat::Binary,
            "ELF executable".to_string(),
            *arch,
            c.name.clone(),
            String::new(),
        ),
        Sniffed::Script { interpreter } => (
            PackageFormat::Binary,
            format!("script ({interpreter})"),
            "",
            c.name.clone(),
            String::new(),
        ),
        Sniffed::Other => (
            PackageFormat::Binary,
            "executable".to_string(),
            "",
            c.name.clone(),
            String::new(),
        ),
    };
    let origin = match &c.link {
        Some(target) if target.contains("/pipx/venvs/") => {
            format!("{origin}, pipx: link to {target}")
        }
        Some(target) => format!("{origin}, link to {target}"),
        None => origin,
    };
    Package {
        name,
        version,
        format,
        source: SoftwareSource::Sideloaded,
        origin,
        current: true,
        arch: arch.to_string(),
        user: c.user,
        path: c.path,
    }
}

/// The first bytes of a regular file and whether it is executable; `None` for anything that
/// is not a readable regular file (a user's FIFO here is refused, never waited on).
fn head_of(root: &Root, dir: &DirHandle, name: &std::ffi::OsStr) -> Option<(Vec<u8>, bool)> {
    let opened = dir.open(root, name).ok()??;
    let exec = opened.kind().is_executable();
    let mut head = Vec::with_capacity(HEAD_LEN);
    opened
        .file
        .take(HEAD_LEN as u64)
        .read_to_end(&mut head)
        .ok()?;
    Some((head, exec))
}

/// Where a link in `dir` points, as a device path (one hop: enough to tell a link to a
/// packaged program from a dropped-in file).
fn link_target(dir: &DirHandle, name: &std::ffi::OsStr) -> Option<String> {
    let target = dir.read_link(name).ok()??;
    let joined = if target.is_absolute() {
        target
    } else {
        dir.path().join(target)
    };
    Some(userfile::normalize(&joined).to_string_lossy().into_owned())
}

/// Where a scan looks and for what.
struct Scan<'a> {
    /// Device path of the directory.
    dir: &'a str,
    user: &'a str,
    /// Only AppImages count here (downloads, the home directory).
    appimages_only: bool,
}

/// The candidate an entry of a scanned directory is, if it is one.
fn candidate(root: &Root, dir: &DirHandle, e: &Entry, scan: &Scan<'_>) -> Option<Candidate> {
    let (head, exec) = head_of(root, dir, &e.raw)?;
    let kind = sniff(&head);
    let is_appimage = matches!(kind, Sniffed::AppImage { .. });
    let wanted = if scan.appimages_only {
        is_appimage
    } else {
        exec || is_appimage
    };
    if !wanted {
        return None;
    }
    let device = format!("{}/{}", scan.dir, e.name);
    let link = (e.kind == Kind::Symlink)
        .then(|| link_target(dir, &e.raw))
        .flatten();
    Some(Candidate {
        real: link.clone().unwrap_or_else(|| device.clone()),
        path: device,
        name: e.name.clone(),
        user: scan.user.to_string(),
        kind,
        link,
        exec,
    })
}

/// Candidates in one directory: every executable (and AppImage) in a bin directory, or only
/// AppImages in places where people keep downloads. Each file opened costs one of `budget`.
fn scan_dir(
    root: &Root,
    scan: &Scan<'_>,
    budget: &mut usize,
    found: &mut Vec<Candidate>,
    out: &mut Collected<Vec<Package>>,
) {
    let Some(listed) = userfile::list_or_report(root, scan.dir, SectionKind::Software, out) else {
        return;
    };
    for e in &listed.entries {
        if matches!(e.kind, Kind::Dir | Kind::Fifo | Kind::Socket | Kind::Device) {
            continue;
        }
        if scan.appimages_only {
            // Reading the head of every file in Downloads is cheap, but only names or modes
            // that suggest a program are worth it.
            let named = e.name.to_ascii_lowercase().ends_with(".appimage");
            let exec = matches!(
                listed.dir.stat(root, &e.raw),
                Ok(Some(m)) if m.is_file() && m.is_executable()
            );
            if !named && !exec {
                continue;
            }
        }
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        if let Some(c) = candidate(root, &listed.dir, e, scan) {
            found.push(c);
        }
    }
}

/// `/opt`: plain files directly in it are candidates of their own; each directory is one
/// application whose executables (within [`OPT_DEPTH`] levels) are gathered for it. AppImages
/// inside app dirs are reported on their own.
fn scan_opt(
    root: &Root,
    found: &mut Vec<Candidate>,
    out: &mut Collected<Vec<Package>>,
) -> Vec<(String, Vec<Candidate>)> {
    let mut dirs = Vec::new();
    let Some(listed) = userfile::list_or_report(root, "/opt", SectionKind::Software, out) else {
        return dirs;
    };
    let top = Scan {
        dir: "/opt",
        user: "",
        appimages_only: false,
    };
    for e in &listed.entries {
        // A link to a directory is not an application directory of its own (it is entered
        // only where it leads, if that is in /opt).
        if e.kind != Kind::Dir {
            if let Some(c) = candidate(root, &listed.dir, e, &top) {
                found.push(c);
            }
            continue;
        }
        let device = format!("/opt/{}", e.name);
        let mut programs = Vec::new();
        let mut budget = OPT_WALK_CAP;
        if let Ok(Some(app)) = listed.dir.subdir(&e.raw) {
            walk_opt(root, &app, &device, 1, &mut budget, &mut programs);
        }
        let (appimages, rest): (Vec<Candidate>, Vec<Candidate>) = programs
            .into_iter()
            .partition(|c| matches!(c.kind, Sniffed::AppImage { .. }));
        found.extend(appimages);
        dirs.push((device, rest));
    }
    dirs
}

/// The programs under one /opt application directory, walked by handle (links to
/// directories are not entered, so a loop cannot hold the walk).
fn walk_opt(
    root: &Root,
    dir: &DirHandle,
    device: &str,
    depth: usize,
    budget: &mut usize,
    acc: &mut Vec<Candidate>,
) {
    let Ok(listing) = dir.list(OPT_WALK_CAP) else {
        return;
    };
    let here = Scan {
        dir: device,
        user: "",
        appimages_only: false,
    };
    for e in &listing.entries {
        if *budget == 0 {
            return;
        }
        *budget -= 1;
        match e.kind {
            Kind::Dir if depth < OPT_DEPTH => {
                if let Ok(Some(sub)) = dir.subdir(&e.raw) {
                    let sub_device = format!("{device}/{}", e.name);
                    walk_opt(root, &sub, &sub_device, depth + 1, budget, acc);
                }
            }
            // Libraries carry execute bits too; only ELF executables, AppImages and scripts
            // are programs.
            Kind::File => {
                if let Some(c) = candidate(root, dir, e, &here)
                    && c.exec
                    && !matches!(c.kind, Sniffed::Other)
                    && !c.name.contains(".so")
                {
                    acc.push(c);
                }
            }
            _ => {}
        }
    }
}

/// Every path dpkg installed; an unreadable list is reported and the others still count.
fn load_dpkg_ownership(root: &Root, owners: &mut Ownership, out: &mut Collected<Vec<Package>>) {
    let Some(listed) = userfile::list_or_report(root, DPKG_INFO, SectionKind::Software, out) else {
        return;
    };
    for e in listed.entries.iter().filter(|e| e.name.ends_with(".list")) {
        let read = listed
            .dir
            .open(root, &e.raw)
            .map_err(std::io::Error::other)
            .and_then(|o| o.ok_or_else(|| std::io::ErrorKind::NotFound.into()))
            .and_then(|o| read_dpkg_list(o, owners));
        if let Err(err) = read {
            out.error(
                SectionKind::Software,
                format!("{DPKG_INFO}/{}", e.name),
                err,
            );
        }
    }
}

/// Streams one dpkg list into `owners`. A list over [`LIST_CAP`] is refused before any of it
/// counts (its size is checked first); one that grows past the cap while it is read is an
/// error too, with the lines read so far kept, as they are paths dpkg did install.
fn read_dpkg_list(opened: Opened, owners: &mut Ownership) -> std::io::Result<()> {
    let Opened { file, meta } = opened;
    let too_large = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the {LIST_CAP}-byte limit"),
        )
    };
    if meta.len() > LIST_CAP {
        return Err(too_large());
    }
    let mut capped = file.take(LIST_CAP + 1);
    owners.add_dpkg_list_from(std::io::BufReader::with_capacity(LIST_BUFFER, &mut capped))?;
    if capped.limit() == 0 {
        return Err(too_large());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn sniffing() {
        let mut elf = b"\x7fELF\x02\x01\x01\x00AI\x02\x00\x00\x00\x00\x00\x02\x00\x3e\x00".to_vec();
        assert_eq!(
            sniff(&elf),
            Sniffed::AppImage {
                kind: 2,
                arch: "x86_64"
            }
        );
        elf[8] = 0;
        assert_eq!(sniff(&elf), Sniffed::Elf { arch: "x86_64" });
        // Type 3 is no AppImage type; a truncated header has no architecture.
        assert_eq!(
            sniff(b"\x7fELF\x02\x01\x01\x00AI\x03"),
            Sniffed::Elf { arch: "" }
        );
        assert_eq!(sniff(b"\x7fEL"), Sniffed::Other);
        assert_eq!(
            sniff(b"#!/usr/bin/env -S python3 -u\nprint()"),
            Sniffed::Script {
                interpreter: "python3".into()
            }
        );
        assert_eq!(
            sniff(b"#!/bin/sh\n"),
            Sniffed::Script {
                interpreter: "sh".into()
            }
        );
        assert_eq!(
            sniff(b"#!"),
            Sniffed::Script {
                interpreter: String::new()
            }
        );
        assert_eq!(sniff(b""), Sniffed::Other);
    }

    #[test]
    fn ownership_limited_to_candidates_still_sees_aliases() {
        let mut o = Ownership::for_paths(["/usr/bin/ls", "/opt/zoom"]);
        o.add_dpkg_list("/bin/ls\n/usr/bin/cat\n/opt/zoom\n");
        assert!(o.owns("/usr/bin/ls"));
        assert!(o.owns("/opt/zoom"));
        // Not asked about, so not kept.
        assert!(!o.owns("/usr/bin/cat"));
    }

    #[test]
    fn a_streamed_list_owns_what_the_whole_list_owns() {
        let list = b"/.\r\n/opt/zoom\r\n/usr/bin/caf\xe9\n/bin/ls\n\nnot-a-path\n/sbin/last";
        let mut whole = Ownership::default();
        whole.add_dpkg_list(&String::from_utf8_lossy(list));
        let mut streamed = Ownership::default();
        // A tiny buffer, so lines span refills.
        streamed
            .add_dpkg_list_from(std::io::BufReader::with_capacity(3, &list[..]))
            .unwrap();
        assert_eq!(streamed.paths, whole.paths);
        for p in [
            "/opt/zoom",
            "/usr/bin/caf\u{fffd}",
            "/usr/bin/ls",
            "/sbin/last",
        ] {
            assert!(streamed.owns(p), "{p}");
        }
        assert!(!streamed.owns("/") && !streamed.owns("not-a-path"));
    }

    #[test]
    fn a_list_over_the_cap_is_refused_before_it_counts() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("huge.list");
        let f = std::fs::File::create(&path).unwrap();
        // Sparse: the size says too large without writing 64 MiB.
        f.set_len(LIST_CAP + 1).unwrap();
        let mut o = Ownership::default();
        let root = Root::new(dir.path());
        let open = || {
            userfile::open(&root, Path::new("/huge.list"))
                .unwrap()
                .unwrap()
        };
        let e = read_dpkg_list(open(), &mut o).unwrap_err();
        assert!(e.to_string().contains("limit"), "{e}");
        assert!(o.is_empty());
        std::fs::write(&path, "/opt/zoom\n").unwrap();
        read_dpkg_list(open(), &mut o).unwrap();
        assert!(o.owns("/opt/zoom"));
    }

    #[test]
    fn dpkg_ownership() {
        let mut o = Ownership::default();
        o.add_dpkg_list(
            "/.\n/opt\n/opt/google\n/opt/google/chrome/chrome\n/bin/ls\n/usr/sbin/tool\n",
        );
        assert!(o.owns("/opt/google"));
        assert!(o.owns("/opt/google/chrome/chrome"));
        assert!(o.owns("/usr/bin/ls"));
        assert!(o.owns("/sbin/tool"));
        assert!(!o.owns("/"));
        assert!(!o.owns("/."));
        assert!(!o.owns("/opt/zoom"));
        assert!(!o.owns("/usr/local/bin/ls"));
    }

    #[test]
    fn appimage_names() {
        assert_eq!(
            appimage_name_version("Obsidian-1.5.3.AppImage"),
            ("Obsidian".into(), "1.5.3".into())
        );
        assert_eq!(
            appimage_name_version("nvim-0.9.5-x86_64.appimage"),
            ("nvim".into(), "0.9.5".into())
        );
        assert_eq!(
            appimage_name_version("Some_App-2.0.AppImage"),
            ("Some-App".into(), "2.0".into())
        );
        assert_eq!(
            appimage_name_version("tool.AppImage"),
            ("tool".into(), String::new())
        );
        assert_eq!(
            appimage_name_version("2048.AppImage"),
            ("2048".into(), String::new())
        );
        assert_eq!(
            appimage_name_version(".AppImage"),
            (String::new(), String::new())
        );
    }

    fn fixture() -> Root {
        Root::new(format!(
            "{}/tests/fixtures/software/unmanaged/root",
            env!("CARGO_MANIFEST_DIR")
        ))
    }

    #[test]
    fn finds_unowned_programs_and_skips_packaged_ones() {
        let got = collect(&fixture());
        assert!(got.errors.is_empty(), "{:?}", got.errors);
        let mut rows: Vec<(String, String, PackageFormat, String, String, String)> = got
            .value
            .iter()
            .map(|p| {
                assert_eq!(p.source, SoftwareSource::Sideloaded);
                (
                    p.path.clone(),
                    p.name.clone(),
                    p.format,
                    p.version.clone(),
                    p.user.clone(),
                    p.origin.clone(),
                )
            })
            .collect();
        rows.sort();
        let row = |path: &str, name: &str, f: PackageFormat, v: &str, u: &str, o: &str| {
            (path.into(), name.into(), f, v.into(), u.into(), o.into())
        };
        use PackageFormat::{Appimage, Binary};
        assert_eq!(
            rows,
            [
                row(
                    "/home/anna/.local/bin/black",
                    "black",
                    Binary,
                    "",
                    "anna",
                    "script (python), pipx: link to /home/anna/.local/pipx/venvs/black/bin/black"
                ),
                row(
                    "/home/anna/Applications/Obsidian-1.5.3.AppImage",
                    "Obsidian",
                    Appimage,
                    "1.5.3",
                    "anna",
                    "AppImage (type 2)"
                ),
                row(
                    "/home/anna/Downloads/Cursor-0.40.1-x86_64.AppImage",
                    "Cursor",
                    Appimage,
                    "0.40.1",
                    "anna",
                    "AppImage (type 2)"
                ),
                row(
                    "/home/anna/old-type1.AppImage",
                    "old-type1",
                    Appimage,
                    "",
                    "anna",
                    "AppImage (type 1)"
                ),
                row(
                    "/opt/Tool-3.1.AppImage",
                    "Tool",
                    Appimage,
                    "3.1",
                    "",
                    "AppImage (type 2)"
                ),
                row(
                    "/opt/zoom",
                    "zoom",
                    Binary,
                    "",
                    "",
                    "unpackaged directory in /opt (2 executables, e.g. bin/helper.sh)"
                ),
                row(
                    "/usr/local/bin/deploy.sh",
                    "deploy.sh",
                    Binary,
                    "",
                    "",
                    "script (bash)"
                ),
                row(
                    "/usr/local/bin/kubectl",
                    "kubectl",
                    Binary,
                    "",
                    "",
                    "ELF executable"
                ),
            ]
        );
        let arch = |path: &str| {
            got.value
                .iter()
                .find(|p| p.path == path)
                .map(|p| p.arch.clone())
        };
        assert_eq!(arch("/usr/local/bin/kubectl").as_deref(), Some("aarch64"));
        assert_eq!(
            arch("/home/anna/old-type1.AppImage").as_deref(),
            Some("i386")
        );
        assert_eq!(arch("/opt/zoom").as_deref(), Some("x86_64"));
    }

    #[test]
    fn nothing_installed_is_nothing_reported() {
        let dir = tempfile::tempdir().unwrap();
        let got = collect(&Root::new(dir.path()));
        assert!(got.value.is_empty());
        // No /etc/passwd: the per-user part is reported as unreadable, the rest stands.
        assert_eq!(got.errors.len(), 1);
        assert_eq!(got.errors[0].source, "/etc/passwd");
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn rpm_file_lists_count_as_ownership() {
        let dir = tempfile::tempdir().unwrap();
        let chrome = dir.path().join("opt/google/chrome/chrome");
        std::fs::create_dir_all(chrome.parent().unwrap()).unwrap();
        std::fs::write(
            &chrome,
            b"\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00\x02\x00\x3e\x00",
        )
        .unwrap();
        std::fs::set_permissions(&chrome, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), "").unwrap();
        let root = Root::new(dir.path());
        // No package database: /opt/google is somebody's unpackaged directory.
        let got = collect(&root);
        assert_eq!(got.value.len(), 1);
        assert_eq!(got.value[0].path, "/opt/google");
        // The real rpmdb of the rpm fixture lists /opt/google: now it is packaged.
        let rpmdb = format!(
            "{}/tests/fixtures/software/rpm/root/var/lib/rpm/rpmdb.sqlite",
            env!("CARGO_MANIFEST_DIR")
        );
        std::fs::create_dir_all(dir.path().join("var/lib/rpm")).unwrap();
        std::fs::copy(rpmdb, dir.path().join("var/lib/rpm/rpmdb.sqlite")).unwrap();
        let got = collect(&root);
        assert!(got.value.is_empty(), "{:?}", got.value);
    }
}
