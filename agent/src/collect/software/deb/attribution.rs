//! Where each installed package came from: pure matching of the dpkg database against what the
//! configured repositories offer.
//!
//! The rule (INTERFACE.md): a package belongs to the configured repository that offers its
//! installed version, or else to one offering a newer version of it (then `current` is false).
//! "Its installed version" means what apt means: the same version *and* the same build (apt's
//! version hash, `fingerprint.rs`); a repository offering another build under the same version
//! string does not offer what is installed.
//! When several offer the installed version, the operating system's own repository wins (the
//! package is then what the vendor ships, whoever else mirrors it), then the order of the
//! sources. When none offers this version or a newer one the package is `unlisted`: dpkg's own
//! database is its only source, exactly the case where `apt-cache policy` shows just
//! `100 /var/lib/dpkg/status` for the installed version and nothing newer. Its `origin` is
//! then the best hint there is: a list left behind by a repository that is no longer
//! configured, a tell-tale version suffix, or the maintainer. No configured repository can make
//! an unlisted package outdated (none offers a newer version, by definition), so its `current`
//! says whether such a stale list offers a newer one: the only evidence of an update it misses.

use super::packages::PackageList;
use super::release::ReleaseInfo;
use super::sources::SourceEntry;
use super::status::Installed;
use super::version::compare_versions;
use std::cmp::Ordering;
use vakt_proto::model::SoftwareSource;

/// One configured `Packages` list: a source entry at one architecture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Repository {
    pub entry: SourceEntry,
    /// The list's architecture (`amd64`, `all`); empty for a flat repository.
    pub arch: String,
    /// The list's file name under `/var/lib/apt/lists`.
    pub list_file: String,
    /// Its Release/InRelease, when one could be read.
    pub release: Option<ReleaseInfo>,
    /// Published by the operating system's vendor.
    pub vendor: bool,
}

impl Repository {
    /// The publisher, as `origin` reports it: the Release file's Origin, else its Label, else
    /// the host the repository is fetched from, else (a `file:` repository) its site.
    pub fn origin(&self) -> String {
        self.release
            .as_ref()
            .and_then(|r| [&r.origin, &r.label].into_iter().find(|s| !s.is_empty()))
            .cloned()
            .or_else(|| Some(self.entry.host()).filter(|h| !h.is_empty()))
            .unwrap_or_else(|| self.entry.site())
    }

    /// The line `apt-cache policy` prints for this list (`http://deb.debian.org/debian
    /// bookworm/main amd64 Packages`), from apt's `Description` templates.
    pub fn apt_description(&self) -> String {
        if self.entry.is_flat() {
            format!("{} {} Packages", self.entry.site(), self.entry.suite)
        } else {
            format!(
                "{} {}/{} {} Packages",
                self.entry.site(),
                self.entry.suite,
                self.entry.component,
                self.arch
            )
        }
    }
}

/// A configured repository together with its parsed list.
#[derive(Debug, Clone, Copy)]
pub struct RepoView<'a> {
    pub repo: &'a Repository,
    pub list: &'a PackageList,
}

/// A list whose repository is no longer configured (kept by apt until the next update, or
/// left by a removed or disabled source).
#[derive(Debug, Clone, Copy)]
pub struct StaleView<'a> {
    /// What to call it in a hint: its Release's Origin, else its site.
    pub label: &'a str,
    pub list: &'a PackageList,
}

/// An installed package with its attribution.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attributed {
    pub installed: Installed,
    pub source: SoftwareSource,
    pub origin: String,
    pub current: bool,
    /// The configured repository it belongs to (index into the repositories given).
    pub repository: Option<usize>,
    /// The newest version offered anywhere (configured, or stale for unlisted packages) when
    /// it is newer than the installed one.
    pub newer: Option<String>,
}

/// Whether two architectures name the same dpkg package slot: `all` counts as native, as in
/// apt, so a package that moved between `all` and the native architecture still matches.
pub fn same_arch(installed: &str, offered: &str, native: &str) -> bool {
    let norm = |a: &'_ str| -> String {
        if a.is_empty() || a == "all" {
            native.to_string()
        } else {
            a.to_string()
        }
    };
    norm(installed) == norm(offered)
}

/// How an offered version relates to the installed one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Relation {
    /// The installed version and build.
    Same,
    Newer,
    /// The installed version string, but another build of it.
    OtherBuild,
    Older,
}

/// The versions of `p` that `list` offers for `p`'s architecture, with their relation to it.
fn offers_for<'a>(
    p: &'a Installed,
    list: &'a PackageList,
    native: &'a str,
) -> impl Iterator<Item = (&'a str, Relation)> + 'a {
    list.offers(&p.name)
        .filter(move |o| same_arch(&p.arch, o.arch, native))
        .map(move |o| {
            let rel = match compare_versions(o.version, &p.version) {
                Ordering::Equal if o.fingerprint == p.fingerprint => Relation::Same,
                Ordering::Equal => Relation::OtherBuild,
                Ordering::Greater => Relation::Newer,
                Ordering::Less => Relation::Older,
            };
            (o.version, rel)
        })
}

/// Attributes every installed package to a configured repository, or marks it unlisted (with
/// an empty origin, to be filled by [`hint_unlisted`]).
pub fn attribute(
    installed: Vec<Installed>,
    repos: &[RepoView<'_>],
    native: &str,
) -> Vec<Attributed> {
    installed
        .into_iter()
        .map(|p| attribute_one(p, repos, native))
        .collect()
}

fn attribute_one(p: Installed, repos: &[RepoView<'_>], native: &str) -> Attributed {
    let mut exact: Option<usize> = None;
    // (repository, version) of the newest newer offer.
    let mut newest: Option<(usize, &str)> = None;
    for (i, view) in repos.iter().enumerate() {
        if !view.repo.entry.admits(&p.name) {
            continue;
        }
        for (v, rel) in offers_for(&p, view.list, native) {
            match rel {
                Relation::Same => {
                    let better = match exact {
                        None => true,
                        Some(j) => view.repo.vendor && !repos[j].repo.vendor,
                    };
                    if better {
                        exact = Some(i);
                    }
                }
                Relation::Newer => {
                    let better = match newest {
                        None => true,
                        Some((j, best)) => match compare_versions(v, best) {
                            Ordering::Greater => true,
                            Ordering::Equal => view.repo.vendor && !repos[j].repo.vendor,
                            Ordering::Less => false,
                        },
                    };
                    if better {
                        newest = Some((i, v));
                    }
                }
                Relation::OtherBuild | Relation::Older => {}
            }
        }
    }
    let newer = newest.map(|(_, v)| v.to_string());
    match exact.or(newest.map(|(i, _)| i)) {
        Some(i) => {
            let repo = repos[i].repo;
            Attributed {
                source: if repo.vendor {
                    SoftwareSource::OsVendor
                } else {
                    SoftwareSource::ThirdPartyRepo
                },
                origin: repo.origin(),
                current: newer.is_none(),
                repository: Some(i),
                newer,
                installed: p,
            }
        }
        None => Attributed {
            installed: p,
            source: SoftwareSource::Unlisted,
            origin: String::new(),
            current: true,
            repository: None,
            newer: None,
        },
    }
}

/// Fills `origin` (and `current`) of the unlisted packages from the stale lists, the version
/// suffix or the maintainer, in that order of strength.
pub fn hint_unlisted(packages: &mut [Attributed], stale: &[StaleView<'_>], native: &str) {
    for a in packages
        .iter_mut()
        .filter(|a| a.source == SoftwareSource::Unlisted)
    {
        let p = &a.installed;
        // A stale list that had exactly this build is the strongest evidence; one with another
        // version of the package still says where it used to come from.
        let mut best: Option<(Relation, &str)> = None;
        let mut newest: Option<&str> = None;
        for s in stale {
            for (v, rel) in offers_for(p, s.list, native) {
                if rel == Relation::Newer
                    && newest.is_none_or(|n| compare_versions(v, n) == Ordering::Greater)
                {
                    newest = Some(v);
                }
                if best.is_none_or(|(r, _)| rel < r) {
                    best = Some((rel, s.label));
                }
            }
        }
        a.origin = match best {
            Some((_, label)) => label.to_string(),
            None => suffix_hint(&p.version)
                .map(str::to_string)
                .unwrap_or_else(|| maintainer_hint(&p.maintainer)),
        };
        a.current = newest.is_none();
        a.newer = newest.map(str::to_string);
    }
}

/// Publishers that mark their builds in the version string, and the mark.
const SUFFIXES: [(&str, &str); 5] = [
    ("nodesource", "NodeSource"),
    ("deb.sury.org", "deb.sury.org"),
    ("~bpo", "Debian Backports"),
    ("~ppa", "Launchpad PPA"),
    ("ubuntu", "Ubuntu"),
];

/// The publisher a version string gives away (`20.1.0-1nodesource1`, `8.2.1-1+0~…+deb.sury.org`,
/// `1.2-1~bpo12+1`), or a Debian stable update (`+deb12u3`) from a repository not configured.
pub fn suffix_hint(version: &str) -> Option<&'static str> {
    let lower = version.to_ascii_lowercase();
    if let Some((_, label)) = SUFFIXES.iter().find(|(mark, _)| lower.contains(mark)) {
        return Some(label);
    }
    // "+debNNuM" / "~debNNuM": Debian's stable and security update revisions.
    let is_stable_update = lower.match_indices("deb").any(|(i, _)| {
        let after = &lower[i + 3..];
        let digits = after.bytes().take_while(u8::is_ascii_digit).count();
        digits > 0
            && after.as_bytes().get(digits) == Some(&b'u')
            && i > 0
            && matches!(lower.as_bytes()[i - 1], b'+' | b'~')
    });
    is_stable_update.then_some("Debian")
}

/// The maintainer's name (`Google Cloud SDK <…>` → `Google Cloud SDK`), else the address.
pub fn maintainer_hint(maintainer: &str) -> String {
    let m = maintainer.trim();
    match m.split_once('<') {
        Some((name, _)) if !name.trim().is_empty() => name.trim().to_string(),
        Some((_, addr)) => addr.trim_end_matches('>').trim().to_string(),
        None => m.to_string(),
    }
}

/// The names the operating system's vendor uses as repository Origin, from os-release(5):
/// `ID` and the `ID_LIKE` it derives from, lowercased (`debian`, `ubuntu`).
pub fn os_vendors(os_release: &str) -> Vec<String> {
    let mut out = Vec::new();
    for line in os_release.lines() {
        let Some((key, value)) = line.trim().split_once('=') else {
            continue;
        };
        if key != "ID" && key != "ID_LIKE" {
            continue;
        }
        let value = value.trim().trim_matches(['"', '\'']);
        for id in value.split_ascii_whitespace() {
            let id = id.to_ascii_lowercase();
            if !id.is_empty() && !out.contains(&id) {
                out.push(id);
            }
        }
    }
    out
}

/// Whether a Release Origin is the vendor's own: the vendor name itself (`Debian`, `Ubuntu`)
/// or that name followed by a non-lowercase character, which covers the vendor's side archives
/// (`Debian-Security`, `Debian Backports`, `UbuntuESM`, `UbuntuESMApps`) but not another name
/// that merely starts the same way.
pub fn is_vendor_origin(origin: &str, vendors: &[String]) -> bool {
    let o = origin.trim();
    vendors.iter().any(|v| {
        o.len() >= v.len()
            && o.is_char_boundary(v.len())
            && o[..v.len()].eq_ignore_ascii_case(v)
            && o[v.len()..]
                .chars()
                .next()
                .is_none_or(|c| !c.is_lowercase())
    })
}

#[cfg(test)]
mod tests {
    use super::super::fingerprint::Fingerprint;
    use super::super::packages::{Interest, parse_packages};
    use super::super::sources::parse_one_line;
    use super::super::status::InstallState;
    use super::*;

    fn pkg(name: &str, version: &str, arch: &str) -> Installed {
        Installed {
            name: name.into(),
            version: version.into(),
            arch: arch.into(),
            maintainer: "Jane Doe <jane@example.org>".into(),
            state: InstallState::Installed,
            reinstall_required: false,
            // What a paragraph without any hashed field gives, as in the lists below.
            fingerprint: Fingerprint::default().value(),
        }
    }

    fn repo(line: &str, arch: &str, origin: &str, vendor: bool) -> Repository {
        let (mut e, p) = parse_one_line(line, "amd64");
        assert!(p.is_empty());
        Repository {
            entry: e.remove(0),
            arch: arch.into(),
            list_file: String::new(),
            release: (!origin.is_empty()).then(|| ReleaseInfo {
                origin: origin.into(),
                ..Default::default()
            }),
            vendor,
        }
    }

    fn debian_main() -> Repository {
        repo(
            "deb http://deb.debian.org/debian bookworm main",
            "amd64",
            "Debian",
            true,
        )
    }

    fn example() -> Repository {
        repo(
            "deb https://repo.example/apt stable main",
            "amd64",
            "Example",
            false,
        )
    }

    fn list(text: &str) -> PackageList {
        parse_packages(text.as_bytes(), Interest::All).unwrap()
    }

    #[test]
    fn exact_newer_and_unlisted() {
        let main = debian_main();
        let sec = repo(
            "deb http://deb.debian.org/debian-security bookworm-security main",
            "amd64",
            "Debian",
            true,
        );
        let third = example();
        let main_l = list(
            "Package: libc6\nVersion: 2.36-9+deb12u4\nArchitecture: amd64\n\n\
             Package: tzdata\nVersion: 2024a-0+deb12u1\nArchitecture: all\n\n\
             Package: curl\nVersion: 7.88.1-10+deb12u5\nArchitecture: amd64\n\n\
             Package: tool\nVersion: 1.0-1\nArchitecture: amd64\n\n\
             Package: i386only\nVersion: 9\nArchitecture: i386\n",
        );
        let sec_l = list(
            "Package: libc6\nVersion: 2.36-9+deb12u7\nArchitecture: amd64\n\n\
             Package: curl\nVersion: 7.88.1-10+deb12u12\nArchitecture: amd64\n",
        );
        let third_l = list(
            "Package: tool\nVersion: 1.0-1\nArchitecture: amd64\n\n\
             Package: tool\nVersion: 2.0-1\nArchitecture: amd64\n\n\
             Package: app\nVersion: 3.1\nArchitecture: amd64\n",
        );
        let views = [
            RepoView {
                repo: &third,
                list: &third_l,
            },
            RepoView {
                repo: &main,
                list: &main_l,
            },
            RepoView {
                repo: &sec,
                list: &sec_l,
            },
        ];
        let got = attribute(
            vec![
                pkg("libc6", "2.36-9+deb12u7", "amd64"),
                pkg("tzdata", "2024a-0+deb12u1", "all"),
                pkg("curl", "7.88.1-10+deb12u5", "amd64"),
                pkg("tool", "1.0-1", "amd64"),
                pkg("app", "3.0", "amd64"),
                pkg("i386only", "9", "amd64"),
                pkg("local", "1.0", "amd64"),
                pkg("app", "3.1", "i386"),
            ],
            &views,
            "amd64",
        );
        let row = |i: usize| {
            (
                got[i].source,
                got[i].repository,
                got[i].current,
                got[i].newer.as_deref(),
            )
        };
        // The installed version is in security only.
        assert_eq!(row(0), (SoftwareSource::OsVendor, Some(2), true, None));
        assert_eq!(got[0].origin, "Debian");
        // arch all in a binary-amd64 list.
        assert_eq!(row(1), (SoftwareSource::OsVendor, Some(1), true, None));
        // Offered at this version by main, newer by security.
        assert_eq!(
            row(2),
            (
                SoftwareSource::OsVendor,
                Some(1),
                false,
                Some("7.88.1-10+deb12u12")
            )
        );
        // Offered by both a third party (listed first) and the vendor: the vendor wins; the
        // third party's newer version still makes it not current.
        assert_eq!(
            row(3),
            (SoftwareSource::OsVendor, Some(1), false, Some("2.0-1"))
        );
        // Only a newer version exists, at a third party.
        assert_eq!(
            row(4),
            (SoftwareSource::ThirdPartyRepo, Some(0), false, Some("3.1"))
        );
        assert_eq!(got[4].origin, "Example");
        // Another architecture does not count.
        assert_eq!(row(5).0, SoftwareSource::Unlisted);
        assert_eq!(row(6), (SoftwareSource::Unlisted, None, true, None));
        assert_eq!(row(7).0, SoftwareSource::Unlisted);
    }

    #[test]
    fn another_build_of_the_same_version_is_not_the_installed_one() {
        let vendor = debian_main();
        let third = example();
        let v_l = list("Package: tool\nVersion: 1.0-1\nArchitecture: amd64\nDepends: libc6\n");
        let t_l =
            list("Package: tool\nVersion: 1.0-1\nArchitecture: amd64\nDepends: libc6, libssl3\n");
        let views = [
            RepoView {
                repo: &vendor,
                list: &v_l,
            },
            RepoView {
                repo: &third,
                list: &t_l,
            },
        ];
        let mut installed = pkg("tool", "1.0-1", "amd64");
        let build = |deps: &str| {
            let mut f = Fingerprint::default();
            f.feed(deps.as_bytes());
            f.value()
        };
        // The installed build is the third party's, although Debian has the same version.
        installed.fingerprint = build("libc6, libssl3");
        let got = attribute(vec![installed.clone()], &views, "amd64");
        assert_eq!(
            (got[0].source, got[0].repository),
            (SoftwareSource::ThirdPartyRepo, Some(1))
        );
        // A build that neither offers: unlisted (a local rebuild under the same version).
        installed.fingerprint = build("libc6, libevil");
        let got = attribute(vec![installed], &views, "amd64");
        assert_eq!(got[0].source, SoftwareSource::Unlisted);
        assert!(got[0].current);
    }

    #[test]
    fn include_exclude_and_origin_fallbacks() {
        let mut r = repo(
            "deb [exclude=tool] https://repo.example/apt stable main",
            "amd64",
            "",
            false,
        );
        let l = list(
            "Package: tool\nVersion: 1\nArchitecture: amd64\n\nPackage: x\nVersion: 1\nArchitecture: all\n",
        );
        let views = [RepoView { repo: &r, list: &l }];
        let got = attribute(
            vec![pkg("tool", "1", "amd64"), pkg("x", "1", "amd64")],
            &views,
            "amd64",
        );
        assert_eq!(got[0].source, SoftwareSource::Unlisted);
        assert_eq!(got[1].source, SoftwareSource::ThirdPartyRepo);
        assert_eq!(got[1].origin, "repo.example");
        assert_eq!(
            r.apt_description(),
            "https://repo.example/apt stable/main amd64 Packages"
        );
        r.release = Some(ReleaseInfo {
            label: "Example Label".into(),
            ..Default::default()
        });
        assert_eq!(r.origin(), "Example Label");
        let flat = repo("deb file:/srv/repo ./", "", "", false);
        assert_eq!(flat.apt_description(), "file:/srv/repo ./ Packages");
        assert_eq!(flat.origin(), "file:/srv/repo");
    }

    #[test]
    fn unlisted_hints_in_order_of_strength() {
        let node_old = list("Package: nodejs\nVersion: 20.1.0-1nodesource1\nArchitecture: amd64\n");
        let node_exact =
            list("Package: nodejs\nVersion: 20.20.2-1nodesource1\nArchitecture: amd64\n");
        let node_new = list("Package: nodejs\nVersion: 22.0.0-1nodesource1\nArchitecture: amd64\n");
        let mut pkgs = attribute(
            vec![
                pkg("nodejs", "20.20.2-1nodesource1", "amd64"),
                pkg(
                    "php8.2",
                    "8.2.10-1+0~20230901.40+debian12~1.gbp+deb.sury.org+1",
                    "amd64",
                ),
                pkg("gcloud", "528.0.0-0", "amd64"),
                pkg("bash", "5.2.15-2+deb12u1", "amd64"),
            ],
            &[],
            "amd64",
        );
        let stale = [
            StaleView {
                label: "Old",
                list: &node_old,
            },
            StaleView {
                label: "NodeSource",
                list: &node_exact,
            },
            StaleView {
                label: "Newer",
                list: &node_new,
            },
        ];
        hint_unlisted(&mut pkgs, &stale, "amd64");
        assert_eq!(pkgs[0].origin, "NodeSource");
        assert!(!pkgs[0].current);
        assert_eq!(pkgs[0].newer.as_deref(), Some("22.0.0-1nodesource1"));
        assert_eq!(pkgs[1].origin, "deb.sury.org");
        assert!(pkgs[1].current);
        assert_eq!(pkgs[2].origin, "Jane Doe");
        assert_eq!(pkgs[3].origin, "Debian");
        // With only the older stale list, it is still the hint.
        let mut one = attribute(
            vec![pkg("nodejs", "20.20.2-1nodesource1", "amd64")],
            &[],
            "amd64",
        );
        hint_unlisted(&mut one, &stale[..1], "amd64");
        assert_eq!(one[0].origin, "Old");
        assert!(one[0].current);
    }

    #[test]
    fn suffixes_and_maintainers() {
        assert_eq!(suffix_hint("2.30-1~bpo12+1"), Some("Debian Backports"));
        assert_eq!(suffix_hint("1.0-1~ppa1~jammy"), Some("Launchpad PPA"));
        assert_eq!(suffix_hint("1.2-3ubuntu0.1"), Some("Ubuntu"));
        assert_eq!(suffix_hint("1.0-1~deb11u2"), Some("Debian"));
        assert_eq!(suffix_hint("1.0-1+deb"), None);
        assert_eq!(suffix_hint("debu1"), None);
        assert_eq!(suffix_hint("528.0.0-0"), None);
        assert_eq!(
            maintainer_hint(" Google Cloud SDK <gc@google.com>"),
            "Google Cloud SDK"
        );
        assert_eq!(maintainer_hint("<root@localhost>"), "root@localhost");
        assert_eq!(maintainer_hint("Just A Name"), "Just A Name");
        assert_eq!(maintainer_hint(""), "");
    }

    #[test]
    fn vendors_from_os_release() {
        let v = os_vendors("NAME=\"Linux Mint\"\nID=linuxmint\nID_LIKE=\"ubuntu debian\"\n");
        assert_eq!(v, ["linuxmint", "ubuntu", "debian"]);
        let d = os_vendors("ID=debian\n");
        for o in ["Debian", "debian", "Debian-Security", "Debian Backports"] {
            assert!(is_vendor_origin(o, &d), "{o}");
        }
        for o in ["Debianfoo", "NodeSource", "", "Debia"] {
            assert!(!is_vendor_origin(o, &d), "{o}");
        }
        let u = os_vendors("ID=ubuntu\n");
        assert!(is_vendor_origin("UbuntuESMApps", &u));
        assert!(!is_vendor_origin("LP-PPA-deadsnakes", &u));
        assert!(!is_vendor_origin("Ubuntü", &os_vendors("ID=ubunt\n")));
        assert!(same_arch("all", "amd64", "amd64"));
        assert!(!same_arch("i386", "all", "amd64"));
    }
}
