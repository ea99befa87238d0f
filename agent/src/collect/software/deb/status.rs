//! The dpkg database (`/var/lib/dpkg/status`): which packages are on the disk, at which version.
//!
//! A package counts as present whenever dpkg's state says its files may be on the disk: fully
//! `installed`, but also the half-way states an interrupted dpkg run leaves behind (`unpacked`,
//! `half-configured`, `half-installed`, `triggers-*`). That is also what apt treats as the
//! current version (`debStatusListParser::ParseStatus`), so the attribution can be compared with
//! `apt-cache policy`. `config-files` and `not-installed` leave no program behind and are skipped.

use super::control;
use super::fingerprint::{self, Fingerprint};

/// dpkg's current-state word for a package whose files are (possibly partly) on the disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InstallState {
    Installed,
    /// Unpacked but not configured.
    Unpacked,
    HalfConfigured,
    /// An install or removal was interrupted while files were being unpacked or removed.
    HalfInstalled,
    TriggersAwaited,
    TriggersPending,
}

impl InstallState {
    fn parse(word: &str) -> Option<Option<Self>> {
        Some(match word {
            "installed" => Some(Self::Installed),
            "unpacked" => Some(Self::Unpacked),
            "half-configured" => Some(Self::HalfConfigured),
            "half-installed" => Some(Self::HalfInstalled),
            "triggers-awaited" => Some(Self::TriggersAwaited),
            "triggers-pending" => Some(Self::TriggersPending),
            "not-installed" | "config-files" => None,
            _ => return None,
        })
    }

    /// True for everything but a complete, configured install.
    pub fn is_partial(self) -> bool {
        self != Self::Installed
    }
}

/// A package dpkg has on the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Installed {
    pub name: String,
    pub version: String,
    pub arch: String,
    pub maintainer: String,
    pub state: InstallState,
    /// dpkg flagged the package as needing a reinstall (`reinstreq`).
    pub reinstall_required: bool,
    /// apt's version hash of the installed build (see `fingerprint.rs`).
    pub fingerprint: u32,
}

/// A paragraph of the status file that could not be read.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StatusProblem {
    pub line: usize,
    pub message: String,
}

/// Reads the status file's text. Paragraphs that cannot be read are reported by line and
/// skipped; the others stand.
pub fn parse_status(text: &str) -> (Vec<Installed>, Vec<StatusProblem>) {
    let (paragraphs, bad) = control::parse(text, false);
    let mut problems: Vec<StatusProblem> = bad
        .into_iter()
        .map(|b| StatusProblem {
            line: b.line,
            message: b.reason.to_string(),
        })
        .collect();
    let mut out = Vec::new();
    for p in &paragraphs {
        match installed_from(p) {
            Ok(Some(pkg)) => out.push(pkg),
            Ok(None) => {}
            Err(message) => problems.push(StatusProblem {
                line: p.line,
                message,
            }),
        }
    }
    (out, problems)
}

fn installed_from(p: &control::Paragraph<'_>) -> Result<Option<Installed>, String> {
    let name = p
        .get("Package")
        .filter(|n| !n.is_empty())
        .ok_or("paragraph without a Package field")?;
    if !valid_package_name(name) {
        return Err(format!("{name:?} is not a package name"));
    }
    let status = p
        .get("Status")
        .ok_or_else(|| format!("package {name}: no Status field"))?;
    let words: Vec<&str> = status.split_ascii_whitespace().collect();
    let [_want, flag, state] = words[..] else {
        return Err(format!(
            "package {name}: Status {status:?} is not three words"
        ));
    };
    let state = InstallState::parse(state)
        .ok_or_else(|| format!("package {name}: unknown state {state:?}"))?;
    let Some(state) = state else {
        return Ok(None);
    };
    let version = p
        .get("Version")
        .filter(|v| !v.is_empty())
        .ok_or_else(|| format!("package {name}: installed but no Version field"))?;
    let mut fp = Fingerprint::default();
    for f in fingerprint::FIELDS.iter().filter_map(|n| p.field(n)) {
        fp.feed(f.value.as_bytes());
        fp.feed(f.rest.as_bytes());
    }
    Ok(Some(Installed {
        fingerprint: fp.value(),
        name: name.to_string(),
        version: version.to_string(),
        arch: p.get("Architecture").unwrap_or("").to_string(),
        maintainer: p.get("Maintainer").unwrap_or("").to_string(),
        state,
        reinstall_required: flag.contains("reinstreq"),
    }))
}

/// dpkg's rule for package names (`pkg_name_is_illegal`): an alphanumeric first character,
/// then alphanumerics and `-+._`. Anything else did not come from dpkg.
fn valid_package_name(name: &str) -> bool {
    name.chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '+' | '.' | '_'))
}

/// The machine's native architecture: that of dpkg itself (always installed and never `all`),
/// else the most common architecture among installed packages.
pub fn native_arch(installed: &[Installed]) -> Option<String> {
    if let Some(dpkg) = installed
        .iter()
        .find(|p| p.name == "dpkg" && !p.arch.is_empty() && p.arch != "all")
    {
        return Some(dpkg.arch.clone());
    }
    let mut counts: Vec<(&str, usize)> = Vec::new();
    for p in installed {
        if p.arch.is_empty() || p.arch == "all" {
            continue;
        }
        match counts.iter_mut().find(|(a, _)| *a == p.arch) {
            Some((_, n)) => *n += 1,
            None => counts.push((&p.arch, 1)),
        }
    }
    counts
        .into_iter()
        .max_by_key(|&(a, n)| (n, std::cmp::Reverse(a)))
        .map(|(a, _)| a.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    const STATUS: &str = "\
Package: dpkg
Status: install ok installed
Priority: required
Architecture: amd64
Version: 1.21.22
Maintainer: Dpkg Developers <debian-dpkg@lists.debian.org>
Description: Debian package management system
 This package provides the low-level infrastructure.

Package: gone
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1

Package: tzdata
Status: install ok installed
Architecture: all
Version: 2024a-0+deb12u1
Maintainer: GNU Libc Maintainers <debian-glibc@lists.debian.org>

Package: broken
Status: install reinstreq half-installed
Architecture: amd64
Version: 2.0

Package: never
Status: purge ok not-installed
Architecture: amd64
";

    #[test]
    fn keeps_present_packages_only() {
        let (pkgs, problems) = parse_status(STATUS);
        assert!(problems.is_empty(), "{problems:?}");
        let names: Vec<&str> = pkgs.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(names, ["dpkg", "tzdata", "broken"]);
        assert_eq!(pkgs[1].version, "2024a-0+deb12u1");
        assert_eq!(pkgs[1].arch, "all");
        assert_eq!(
            pkgs[0].maintainer,
            "Dpkg Developers <debian-dpkg@lists.debian.org>"
        );
        assert_eq!(pkgs[2].state, InstallState::HalfInstalled);
        assert!(pkgs[2].state.is_partial());
        assert!(pkgs[2].reinstall_required);
        assert!(!pkgs[0].state.is_partial());
        assert_eq!(native_arch(&pkgs).as_deref(), Some("amd64"));
    }

    #[test]
    fn truncated_file_keeps_what_came_before() {
        // Cut in the middle of the last paragraph's Status line.
        let cut = STATUS.find("Status: install reinstreq").unwrap() + 20;
        let (pkgs, problems) = parse_status(&STATUS[..cut]);
        assert_eq!(pkgs.len(), 2);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].line, 21);
        assert!(problems[0].message.contains("broken"), "{problems:?}");

        // Cut right after the Package line: no Status at all.
        let cut = STATUS.find("Package: broken").unwrap() + 15;
        let (pkgs, problems) = parse_status(&STATUS[..cut]);
        assert_eq!(pkgs.len(), 2);
        assert!(problems[0].message.contains("no Status"));
    }

    #[test]
    fn bad_paragraphs_are_named() {
        let text = "Status: install ok installed\nVersion: 1\n\n\
                    Package: v\nStatus: install ok installed\n\n\
                    Package: w\nStatus: install ok exploded\nVersion: 1\n\n\
                    Package: ok\nStatus: install ok unpacked\nVersion: 3\nArchitecture: arm64\n\n\
                    Package: -x\nStatus: install ok installed\nVersion: 1\n\n\
                    Package: a\u{fffd}\nStatus: install ok installed\nVersion: 1\n";
        let (pkgs, problems) = parse_status(text);
        assert_eq!(pkgs.len(), 1);
        assert_eq!(pkgs[0].state, InstallState::Unpacked);
        let lines: Vec<usize> = problems.iter().map(|p| p.line).collect();
        assert_eq!(lines, [1, 4, 7, 16, 20]);
        assert_eq!(native_arch(&pkgs).as_deref(), Some("arm64"));
    }

    #[test]
    fn native_arch_without_dpkg_is_the_majority() {
        let pkg = |arch: &str| Installed {
            name: "x".into(),
            version: "1".into(),
            arch: arch.into(),
            maintainer: String::new(),
            state: InstallState::Installed,
            reinstall_required: false,
            fingerprint: 0,
        };
        let pkgs = [pkg("all"), pkg("i386"), pkg("arm64"), pkg("arm64")];
        assert_eq!(native_arch(&pkgs).as_deref(), Some("arm64"));
        assert_eq!(native_arch(&[pkg("all")]), None);
    }
}
