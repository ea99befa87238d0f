//! Flatpak applications in every installation, with the remote each came from.
//!
//! Installations (flatpak `common/flatpak-dir.c`): the system one at `/var/lib/flatpak`, extra
//! system ones declared in `/etc/flatpak/installations.d/*.conf` (key files with
//! `[Installation "id"]` groups and a `Path`), and each user's `~/.local/share/flatpak`.
//!
//! In an installation, a deployed ref is `app/<id>/<arch>/<branch>/active` (a link to the
//! deployed commit), and the commit directory holds `deploy`, a GVariant record whose first
//! field is the *origin*: the remote the ref was installed from (see [`gvariant`]). Flatpak
//! deletes the pulled refs under `repo/refs/remotes/` of some installs, so those are only a
//! fallback for a missing or corrupt `deploy`, as is the `xa.main-ref` of an origin remote.
//!
//! The remotes are the `[remote "name"]` groups of `repo/config` (an OSTree key file). A
//! remote the user or IT configured (flathub, a vendor's) is a `store`. Installing a
//! `.flatpak` bundle, a local repository or a `.flatpakref` whose remote is not configured
//! makes a non-enumerable pseudo-remote `<last id part>-origin` (`create_origin_remote_config`):
//! its `xa.title` is the bundle's file name (or "Local repo"), its url the bundle's embedded
//! origin, often empty. Bundles and local repositories are `sideloaded`; a `.flatpakref`'s
//! origin remote points at a real https repository that keeps updating the app, so it is a
//! `store`. A ref whose remote is no longer configured is `unlisted`.
//!
//! Runtimes (`runtime/`) are not reported: they are shared libraries pulled in as dependencies
//! of apps from the same remotes, nobody launches them, and a desktop has a dozen (GL drivers,
//! codecs, themes) that would drown the applications an employee chose.

pub mod gvariant;

use crate::collect::userfile::{self, DirHandle};
use crate::collect::users::local_users;
use crate::collect::{Collected, Root};
use std::collections::BTreeMap;
use std::ffi::OsStr;
use std::path::Path;
use vakt_proto::model::{Package, PackageFormat, SectionKind, SoftwareSource};

pub use gvariant::{DeployData, GVariantError, parse_deploy};

const SYSTEM_DIR: &str = "/var/lib/flatpak";
const INSTALLATIONS_D: &str = "/etc/flatpak/installations.d";
const USER_DIR: &str = ".local/share/flatpak";
const CONFIG_CAP: u64 = 1 << 20;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum FlatpakError {
    #[error("line {0}: neither a [group], a key=value nor a comment")]
    BadLine(usize),
    #[error("line {0}: key outside any [group]")]
    KeyOutsideGroup(usize),
    #[error("installation {0:?} has no Path")]
    NoPath(String),
    #[error("deploy record: {0}")]
    Deploy(#[from] GVariantError),
}

/// A GLib key file (`[group]`, `key=value`, `#` comments), as flatpak and OSTree write them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KeyFile {
    pub groups: Vec<(String, Vec<(String, String)>)>,
}

impl KeyFile {
    pub fn get(&self, group: &str, key: &str) -> Option<&str> {
        let (_, entries) = self.groups.iter().find(|(g, _)| g == group)?;
        entries
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

/// Parses a key file. GLib rejects a file with a malformed line, and so does this: such a file
/// was not written by flatpak.
pub fn parse_keyfile(text: &str) -> Result<KeyFile, FlatpakError> {
    let mut kf = KeyFile::default();
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim_start();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[') {
            let name = name.trim_end();
            let name = name.strip_suffix(']').ok_or(FlatpakError::BadLine(i + 1))?;
            kf.groups.push((name.to_string(), Vec::new()));
            continue;
        }
        let (key, value) = line.split_once('=').ok_or(FlatpakError::BadLine(i + 1))?;
        let (_, entries) = kf
            .groups
            .last_mut()
            .ok_or(FlatpakError::KeyOutsideGroup(i + 1))?;
        entries.push((key.trim_end().to_string(), unescape(value.trim_start())));
    }
    Ok(kf)
}

/// GLib's value escapes: `\s` `\n` `\t` `\r` `\\`.
fn unescape(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    let mut chars = v.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('s') => out.push(' '),
            Some('n') => out.push('\n'),
            Some('t') => out.push('\t'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

/// The name in a `[kind "name"]` group header.
fn quoted_group<'a>(group: &'a str, kind: &str) -> Option<&'a str> {
    group
        .strip_prefix(kind)?
        .strip_prefix(" \"")?
        .strip_suffix('"')
}

/// An extra system installation from `installations.d`: its id and device path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraInstallation {
    pub id: String,
    pub path: String,
}

/// The `[Installation "id"]` groups of an installations.d file. Groups of other names are
/// ignored, as flatpak does; an installation without a `Path` fails the file, as in flatpak.
pub fn parse_installations_conf(text: &str) -> Result<Vec<ExtraInstallation>, FlatpakError> {
    let kf = parse_keyfile(text)?;
    let mut out = Vec::new();
    for (group, _) in &kf.groups {
        let Some(id) = quoted_group(group, "Installation") else {
            continue;
        };
        let path = kf
            .get(group, "Path")
            .ok_or_else(|| FlatpakError::NoPath(id.to_string()))?;
        out.push(ExtraInstallation {
            id: id.to_string(),
            path: path.to_string(),
        });
    }
    Ok(out)
}

/// A configured remote of an installation's repository.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Remote {
    pub url: String,
    pub title: String,
    pub noenumerate: bool,
    pub main_ref: String,
}

/// The `[remote "name"]` groups of an OSTree `repo/config`.
pub fn parse_remotes(text: &str) -> Result<BTreeMap<String, Remote>, FlatpakError> {
    let kf = parse_keyfile(text)?;
    let mut out = BTreeMap::new();
    for (group, _) in &kf.groups {
        let Some(name) = quoted_group(group, "remote") else {
            continue;
        };
        let get = |k: &str| kf.get(group, k).unwrap_or_default().to_string();
        out.insert(
            name.to_string(),
            Remote {
                url: get("url"),
                title: get("xa.title"),
                noenumerate: get("xa.noenumerate") == "true",
                main_ref: get("xa.main-ref"),
            },
        );
    }
    Ok(out)
}

/// Where a ref installed from `remote` came from, given the remote's configuration if any.
pub fn classify(remote: &str, config: Option<&Remote>) -> (SoftwareSource, String) {
    let Some(r) = config else {
        return if remote.ends_with("-origin") {
            (
                SoftwareSource::Sideloaded,
                format!("{remote} (bundle or local install; its remote is gone)"),
            )
        } else {
            (
                SoftwareSource::Unlisted,
                format!("{remote} (remote no longer configured)"),
            )
        };
    };
    let pseudo = remote.ends_with("-origin") && r.noenumerate;
    let remote_url = r.url.starts_with("https://") || r.url.starts_with("http://");
    // A bundle's origin remote is titled with the bundle's file name; a .flatpakref's has no
    // title; a local repository's is "Local repo" with a file: url.
    let from_file = r.title.ends_with(".flatpak") || r.title == "Local repo" || !remote_url;
    if pseudo && from_file {
        let what = if r.title.is_empty() {
            "local install".to_string()
        } else {
            format!("bundle {}", r.title)
        };
        return (
            SoftwareSource::Sideloaded,
            format!("{what} (remote {remote})"),
        );
    }
    if pseudo {
        return (
            SoftwareSource::Store,
            format!("{} (.flatpakref, remote {remote})", r.url),
        );
    }
    let origin = if r.url.is_empty() {
        remote.to_string()
    } else {
        format!("{remote} ({})", r.url)
    };
    (SoftwareSource::Store, origin)
}

/// Flatpak applications of every installation under `root`.
pub fn collect(root: &Root) -> Collected<Vec<Package>> {
    let mut out = Collected::new(Vec::new());
    collect_installation(root, SYSTEM_DIR, "", &mut out);
    for extra in extra_installations(root, &mut out) {
        collect_installation(root, &extra.path, "", &mut out);
    }
    let users = local_users(root, SectionKind::Software);
    out.errors.extend(users.errors);
    for user in users.value {
        let dir = format!("{}/{USER_DIR}", user.home.trim_end_matches('/'));
        collect_installation(root, &dir, &user.name, &mut out);
    }
    out
}

fn extra_installations(root: &Root, out: &mut Collected<Vec<Package>>) -> Vec<ExtraInstallation> {
    let mut found = Vec::new();
    let Some(listed) = userfile::list_or_report(root, INSTALLATIONS_D, SectionKind::Software, out)
    else {
        return found;
    };
    for e in listed.entries.iter().filter(|e| e.name.ends_with(".conf")) {
        let device = format!("{INSTALLATIONS_D}/{}", e.name);
        match listed.dir.read(root, &e.raw, CONFIG_CAP) {
            Ok(b) => match parse_installations_conf(&String::from_utf8_lossy(&b)) {
                Ok(list) => found.extend(list),
                Err(e) => out.error(SectionKind::Software, device, e),
            },
            Err(e) => out.error(SectionKind::Software, device, e),
        }
    }
    found
}

/// The deployed apps of the installation at device path `dir`.
fn collect_installation(root: &Root, dir: &str, user: &str, out: &mut Collected<Vec<Package>>) {
    let dir = dir.trim_end_matches('/');
    let Some(apps) =
        userfile::list_or_report(root, &format!("{dir}/app"), SectionKind::Software, out)
    else {
        return;
    };
    if apps.entries.is_empty() {
        return;
    }
    let config_path = format!("{dir}/repo/config");
    let remotes = match userfile::read(root, Path::new(&config_path), CONFIG_CAP) {
        Ok(Some(b)) => parse_remotes(&String::from_utf8_lossy(&b)).unwrap_or_else(|e| {
            out.error(SectionKind::Software, config_path.clone(), e);
            BTreeMap::new()
        }),
        Ok(None) => BTreeMap::new(),
        Err(e) => {
            out.error(SectionKind::Software, config_path.clone(), e);
            BTreeMap::new()
        }
    };
    for e in apps.entries.iter().filter(|e| !e.name.starts_with('.')) {
        let id = &e.name;
        // An app directory is entered by handle, never through a link.
        let Ok(Some(app_dir)) = apps.dir.subdir(&e.raw) else {
            continue;
        };
        for (arch, branch) in deployed_refs(&app_dir) {
            let ref_name = format!("app/{id}/{arch}/{branch}");
            let deploy_path = format!("{dir}/{ref_name}/active/deploy");
            // `active` is a link to the deployed commit: followed inside the root.
            let deploy = match userfile::read_existing(root, Path::new(&deploy_path), CONFIG_CAP) {
                Ok(b) => parse_deploy(&b).map_err(|e| {
                    out.error(
                        SectionKind::Software,
                        deploy_path.clone(),
                        FlatpakError::from(e),
                    );
                }),
                Err(e) => {
                    out.error(SectionKind::Software, deploy_path.clone(), e);
                    Err(())
                }
            };
            let (remote, version) = match deploy {
                Ok(d) => {
                    let version = d.metadata.get("appdata-version").cloned();
                    (Some(d.origin), version)
                }
                Err(()) => (remote_of_ref(root, dir, &ref_name, &remotes), None),
            };
            let (source, origin) = match &remote {
                Some(r) => classify(r, remotes.get(r)),
                None => (SoftwareSource::Unlisted, "unknown remote".to_string()),
            };
            out.value.push(Package {
                name: id.clone(),
                version: version.unwrap_or_default(),
                format: PackageFormat::Flatpak,
                source,
                origin,
                // Whether the remote has a newer commit needs its summary; flatpak updates
                // apps itself, so an installed app is taken as current.
                current: true,
                arch: arch.clone(),
                user: user.to_string(),
                path: format!("{dir}/app/{id}"),
            });
        }
    }
}

/// Listings of one app's arch and branch directories: flatpak has a handful, a user's tree
/// can have millions.
const REF_ENTRIES: usize = 100;

/// `(arch, branch)` of every `<arch>/<branch>/active` under an app dir, walked by handle.
fn deployed_refs(app_dir: &DirHandle) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let Ok(arches) = app_dir.list(REF_ENTRIES) else {
        return out;
    };
    for arch in arches.entries {
        // `current` is a link to the default arch/branch, not an arch of its own.
        if arch.name == "current" || arch.name.starts_with('.') {
            continue;
        }
        let Ok(Some(arch_dir)) = app_dir.subdir(&arch.raw) else {
            continue;
        };
        let Ok(branches) = arch_dir.list(REF_ENTRIES) else {
            continue;
        };
        for branch in branches.entries {
            let has_active = matches!(
                arch_dir.subdir(&branch.raw),
                Ok(Some(b)) if matches!(b.lstat(OsStr::new("active")), Ok(Some(_)))
            );
            if has_active {
                out.push((arch.name.clone(), branch.name));
            }
        }
    }
    out
}

/// Without a readable deploy record: the remote that still has the ref pulled, else the
/// origin remote whose main ref it is.
fn remote_of_ref(
    root: &Root,
    dir: &str,
    ref_name: &str,
    remotes: &BTreeMap<String, Remote>,
) -> Option<String> {
    remotes
        .keys()
        .find(|r| {
            userfile::is_file(
                root,
                Path::new(&format!("{dir}/repo/refs/remotes/{r}/{ref_name}")),
            )
        })
        .or_else(|| {
            remotes
                .iter()
                .find(|(_, cfg)| cfg.main_ref == ref_name)
                .map(|(r, _)| r)
        })
        .cloned()
}

#[cfg(test)]
mod tests;
