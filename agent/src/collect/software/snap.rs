//! Snaps: what snapd has installed and whether it came from the Snap Store or from a local file.
//!
//! snapd keeps its whole state in `/var/lib/snapd/state.json`; installed snaps live under
//! `data.snaps`, keyed by instance name, each a `SnapState` (snapd `overlord/snapstate`):
//! `type`, `sequence` (the `SideInfo` of every kept revision: `name`, `snap-id`, `revision`,
//! `channel`), `active`, `current` (the revision in use) and `channel` (the tracked channel).
//! A revision is serialised as a string: `"1234"` for a store revision, `"x1"` for a local one
//! (snapd's `Revision.String`: negative numbers print as `x<n>`), which is what `snap install
//! --dangerous file.snap` and `snap try` produce. The version is not in the state: it is in the
//! mounted snap's `meta/snap.yaml`.
//!
//! Only application snaps are reported: bases, the core/snapd snaps, kernels and gadgets are
//! the snap system's own plumbing, always come from the store with their apps, and would bury
//! the programs an employee chose among entries nobody decides about.
//!
//! When `state.json` is missing or corrupt, the `.snap` files in `/var/lib/snapd/snaps`
//! (`<instance>_<revision>.snap`) still tell which snaps and revisions are installed.

use crate::collect::userfile;
use crate::collect::{Collected, Root};
use serde::Deserialize;
use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use vakt_proto::model::{Package, PackageFormat, SectionKind, SoftwareSource};

const STATE_JSON: &str = "/var/lib/snapd/state.json";
const SNAPS_DIR: &str = "/var/lib/snapd/snaps";
/// Debian/Ubuntu mount snaps under /snap, Fedora/Arch under /var/lib/snapd/snap.
const MOUNT_DIRS: [&str; 2] = ["/snap", "/var/lib/snapd/snap"];
/// state.json holds change history too and grows; 64 MiB is far beyond any real one.
const STATE_CAP: u64 = 64 << 20;
const YAML_CAP: u64 = 1 << 20;

/// A snap revision as snapd numbers it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Revision {
    /// Assigned by the store on upload.
    Store(u64),
    /// `x<n>`: installed from a local file without a store assertion.
    Local(u64),
}

impl Revision {
    /// Parses snapd's textual form (`"1234"`, `"x2"`); `unset`, zero and garbage are `None`.
    pub fn parse(s: &str) -> Option<Self> {
        let s = s.trim();
        if let Some(n) = s.strip_prefix('x') {
            return n.parse::<u64>().ok().filter(|n| *n > 0).map(Self::Local);
        }
        match s.parse::<i64>().ok()? {
            n if n > 0 => Some(Self::Store(n.unsigned_abs())),
            // Old snapd wrote revisions as bare JSON numbers, negative for local ones.
            n if n < 0 => Some(Self::Local(n.unsigned_abs())),
            _ => None,
        }
    }
}

impl std::fmt::Display for Revision {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Store(n) => write!(f, "{n}"),
            Self::Local(n) => write!(f, "x{n}"),
        }
    }
}

/// One installed snap instance as state.json describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstalledSnap {
    /// The instance name (`firefox`, or `firefox_beta` for a parallel install).
    pub instance: String,
    /// `app`, `base`, `core`, `os`, `snapd`, `kernel`, `gadget`; empty when unrecorded.
    pub snap_type: String,
    pub current: Revision,
    /// The tracked channel (`latest/stable`); empty for local snaps.
    pub channel: String,
    /// The store's id of the snap; empty for a snap that never saw the store.
    pub snap_id: String,
    pub active: bool,
}

impl InstalledSnap {
    /// Application snaps are what people install; see the module doc for the rest.
    pub fn is_app(&self) -> bool {
        matches!(self.snap_type.as_str(), "app" | "")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum SnapError {
    #[error("not snapd state JSON: {0}")]
    Json(#[from] serde_json::Error),
    #[error("snap {0:?}: current revision {1:?} is not a snap revision")]
    BadRevision(String, String),
}

#[derive(Deserialize)]
struct StateJson {
    // Always present in snapd's state; requiring it rejects JSON that merely parses.
    data: StateData,
}

#[derive(Deserialize, Default)]
struct StateData {
    #[serde(default)]
    snaps: BTreeMap<String, SnapStateJson>,
}

#[derive(Deserialize)]
struct SnapStateJson {
    #[serde(default, rename = "type")]
    snap_type: String,
    #[serde(default)]
    sequence: Vec<Option<SideInfoJson>>,
    #[serde(default)]
    active: bool,
    #[serde(default)]
    current: Option<RevisionJson>,
    #[serde(default)]
    channel: String,
}

#[derive(Deserialize)]
struct SideInfoJson {
    #[serde(default, rename = "snap-id")]
    snap_id: String,
    #[serde(default)]
    revision: Option<RevisionJson>,
    #[serde(default)]
    channel: String,
}

/// snapd writes revisions as strings; very old state files have bare numbers.
#[derive(Deserialize)]
#[serde(untagged)]
enum RevisionJson {
    Text(String),
    Number(i64),
}

impl RevisionJson {
    fn text(&self) -> String {
        match self {
            Self::Text(s) => s.clone(),
            Self::Number(n) => n.to_string(),
        }
    }
}

/// Parses snapd's state.json into the installed snap instances, sorted by name. A snap whose
/// current revision cannot be read fails the whole file: the state is then not snapd's.
pub fn parse_state(bytes: &[u8]) -> Result<Vec<InstalledSnap>, SnapError> {
    let state: StateJson = serde_json::from_slice(bytes)?;
    let mut out = Vec::new();
    for (instance, st) in state.data.snaps {
        let raw = st
            .current
            .as_ref()
            .map(RevisionJson::text)
            .unwrap_or_default();
        let current =
            Revision::parse(&raw).ok_or_else(|| SnapError::BadRevision(instance.clone(), raw))?;
        // The side info of the current revision carries the snap id and the channel it was
        // installed from; the snap-level `channel` (what is tracked) wins when set.
        let side = st.sequence.iter().flatten().find(|si| {
            si.revision
                .as_ref()
                .and_then(|r| Revision::parse(&r.text()))
                == Some(current)
        });
        let channel = if st.channel.is_empty() {
            side.map(|s| s.channel.clone()).unwrap_or_default()
        } else {
            st.channel
        };
        out.push(InstalledSnap {
            instance,
            snap_type: st.snap_type,
            current,
            channel,
            snap_id: side.map(|s| s.snap_id.clone()).unwrap_or_default(),
            active: st.active,
        });
    }
    Ok(out)
}

/// The top-level `version:` of a snap.yaml. A tiny reader rather than a YAML parser: snapcraft
/// writes it as one plain or quoted scalar on its own line.
pub fn parse_snap_yaml_version(text: &str) -> Option<String> {
    text.lines().find_map(|line| {
        let v = line.strip_prefix("version:")?.trim();
        let v = v
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .or_else(|| v.strip_prefix('"').and_then(|v| v.strip_suffix('"')))
            .unwrap_or(v);
        (!v.is_empty()).then(|| v.to_string())
    })
}

/// `<instance>_<revision>.snap`, as snapd names the blobs in /var/lib/snapd/snaps.
pub fn parse_snap_file_name(file: &str) -> Option<(String, Revision)> {
    let stem = file.strip_suffix(".snap")?;
    let (instance, rev) = stem.rsplit_once('_')?;
    if instance.is_empty() {
        return None;
    }
    Some((instance.to_string(), Revision::parse(rev)?))
}

/// The report entry for one snap; `version` comes from its snap.yaml when mounted.
pub fn to_package(snap: &InstalledSnap, version: Option<String>) -> Package {
    let (source, origin) = match snap.current {
        Revision::Store(_) => {
            let channel = if snap.channel.is_empty() {
                String::new()
            } else {
                format!(", {}", snap.channel)
            };
            (
                SoftwareSource::Store,
                format!("Snap Store (rev {}{channel})", snap.current),
            )
        }
        Revision::Local(_) => (
            SoftwareSource::Sideloaded,
            format!("local snap file (rev {}, not from the store)", snap.current),
        ),
    };
    Package {
        name: snap.instance.clone(),
        version: version.unwrap_or_default(),
        format: PackageFormat::Snap,
        source,
        origin,
        // snapd refreshes store snaps by itself; whether a refresh is pending is only known to
        // the store, so a store snap counts as current and a local one has nothing to compare.
        current: true,
        arch: String::new(),
        user: String::new(),
        path: String::new(),
    }
}

/// Installed application snaps under `root`.
pub fn collect(root: &Root) -> Collected<Vec<Package>> {
    let mut out = Collected::new(Vec::new());
    let snaps = match userfile::read(root, Path::new(STATE_JSON), STATE_CAP) {
        Ok(Some(bytes)) => match parse_state(&bytes) {
            Ok(s) => s,
            Err(e) => {
                out.error(SectionKind::Software, STATE_JSON, e);
                scan_snap_files(root, &mut out)
            }
        },
        Ok(None) => scan_snap_files(root, &mut out),
        Err(e) => {
            out.error(SectionKind::Software, STATE_JSON, e);
            scan_snap_files(root, &mut out)
        }
    };
    for snap in snaps.iter().filter(|s| s.is_app()) {
        let version = mounted_version(root, snap, &mut out);
        out.value.push(to_package(snap, version));
    }
    out
}

/// The version from `<mount>/<instance>/<rev>/meta/snap.yaml`; a snap that is not mounted (a
/// fixture, a disabled snap) has no version to tell.
fn mounted_version(
    root: &Root,
    snap: &InstalledSnap,
    out: &mut Collected<Vec<Package>>,
) -> Option<String> {
    for mount in MOUNT_DIRS {
        let device = format!("{mount}/{}/{}/meta/snap.yaml", snap.instance, snap.current);
        match userfile::read(root, Path::new(&device), YAML_CAP) {
            Ok(Some(b)) => return parse_snap_yaml_version(&String::from_utf8_lossy(&b)),
            Ok(None) => {}
            Err(e) => out.error(SectionKind::Software, device, e),
        }
    }
    None
}

/// Without a readable state.json: one entry per instance from the snap blobs, at the revision
/// the mount's `current` link names, else the highest kept. The type is unknown here, so only
/// well-known system snaps are left out.
fn scan_snap_files(root: &Root, out: &mut Collected<Vec<Package>>) -> Vec<InstalledSnap> {
    let listing = userfile::list_or_report(root, SNAPS_DIR, SectionKind::Software, out)
        .map_or_else(Vec::new, |l| l.entries);
    let mut by_instance: HashMap<String, Vec<Revision>> = HashMap::new();
    for e in listing {
        if let Some((instance, rev)) = parse_snap_file_name(&e.name) {
            by_instance.entry(instance).or_default().push(rev);
        }
    }
    let mut snaps: Vec<InstalledSnap> = by_instance
        .into_iter()
        .filter_map(|(instance, revs)| {
            let linked = MOUNT_DIRS.iter().find_map(|m| {
                let current = format!("{m}/{instance}/current");
                let link = userfile::read_link(root, Path::new(&current)).ok()??;
                Revision::parse(&link.file_name()?.to_string_lossy())
            });
            let current = linked
                .filter(|r| revs.contains(r))
                .or_else(|| revs.iter().max().copied())?;
            // Bases are named core, core18, core22...; snapd and bare are the other system
            // snaps. Anything else may be an app.
            let system = matches!(instance.as_str(), "snapd" | "bare")
                || instance
                    .strip_prefix("core")
                    .is_some_and(|n| n.chars().all(|c| c.is_ascii_digit()));
            Some(InstalledSnap {
                snap_type: if system { "base".into() } else { String::new() },
                instance,
                current,
                channel: String::new(),
                snap_id: String::new(),
                active: true,
            })
        })
        .collect();
    snaps.sort_by(|a, b| a.instance.cmp(&b.instance));
    snaps
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revisions_follow_snapd() {
        assert_eq!(Revision::parse("1234"), Some(Revision::Store(1234)));
        assert_eq!(Revision::parse("x2"), Some(Revision::Local(2)));
        assert_eq!(Revision::parse("-3"), Some(Revision::Local(3)));
        assert_eq!(Revision::parse("unset"), None);
        assert_eq!(Revision::parse("0"), None);
        assert_eq!(Revision::parse("x0"), None);
        assert_eq!(Revision::parse("x-1"), None);
        assert_eq!(Revision::Local(7).to_string(), "x7");
    }

    #[test]
    fn snap_yaml_version_plain_and_quoted() {
        assert_eq!(
            parse_snap_yaml_version("name: hello\nversion: '2.10'\nsummary: x\n"),
            Some("2.10".into())
        );
        assert_eq!(
            parse_snap_yaml_version("version: \"1.0\"\n"),
            Some("1.0".into())
        );
        assert_eq!(parse_snap_yaml_version("version: 3\n"), Some("3".into()));
        // An indented `version:` belongs to a nested map, not to the snap.
        assert_eq!(parse_snap_yaml_version("apps:\n  version: 9\n"), None);
    }

    #[test]
    fn snap_file_names() {
        assert_eq!(
            parse_snap_file_name("firefox_4136.snap"),
            Some(("firefox".into(), Revision::Store(4136)))
        );
        assert_eq!(
            parse_snap_file_name("hello_beta_x1.snap"),
            Some(("hello_beta".into(), Revision::Local(1)))
        );
        assert_eq!(parse_snap_file_name("partial"), None);
        assert_eq!(parse_snap_file_name("_1.snap"), None);
    }

    #[test]
    fn hostile_state_is_an_error() {
        assert!(parse_state(b"").is_err());
        assert!(parse_state(b"[]").is_err());
        assert!(parse_state(br#"{"data":{"snaps":{"a":{"current":"banana"}}}}"#).is_err());
        assert!(parse_state(br#"{"data":{"snaps":{"a":{"current":{"n":1}}}}}"#).is_err());
        // A state without snaps is a valid empty state.
        assert_eq!(parse_state(br#"{"data":{}}"#).unwrap(), vec![]);
    }

    fn fixture(name: &str) -> Root {
        Root::new(format!(
            "{}/tests/fixtures/software/snap/{name}",
            env!("CARGO_MANIFEST_DIR")
        ))
    }

    #[test]
    fn store_and_local_snaps_from_state_json() {
        let got = collect(&fixture("good"));
        assert!(got.errors.is_empty(), "{:?}", got.errors);
        let names: Vec<&str> = got.value.iter().map(|p| p.name.as_str()).collect();
        // Bases and snapd are left out; the disabled parallel instance is still installed.
        assert_eq!(names, ["firefox", "hello-local", "hello_beta"]);
        let ff = &got.value[0];
        assert_eq!(ff.version, "125.0.1-1");
        assert_eq!(ff.source, SoftwareSource::Store);
        assert_eq!(ff.origin, "Snap Store (rev 4136, latest/stable)");
        assert_eq!(ff.format, PackageFormat::Snap);
        let local = &got.value[1];
        assert_eq!(local.source, SoftwareSource::Sideloaded);
        assert_eq!(local.version, "0.3");
        assert!(local.origin.contains("x1"), "{}", local.origin);
        // Not mounted: no version, still reported.
        assert_eq!(got.value[2].version, "");
        assert_eq!(got.value[2].origin, "Snap Store (rev 42, latest/beta)");
    }

    #[test]
    fn corrupt_state_names_the_file_and_the_blobs_still_count() {
        let got = collect(&fixture("corrupt"));
        assert_eq!(got.errors.len(), 1);
        assert_eq!(got.errors[0].source, STATE_JSON);
        assert_eq!(got.errors[0].section, SectionKind::Software);
        let found: Vec<(String, SoftwareSource, String)> = got
            .value
            .iter()
            .map(|p| (p.name.clone(), p.source, p.origin.clone()))
            .collect();
        assert_eq!(
            found,
            [
                // The mount's current link wins over the newer blob still on disk.
                (
                    "firefox".to_string(),
                    SoftwareSource::Store,
                    "Snap Store (rev 4090)".to_string()
                ),
                (
                    "mytool".to_string(),
                    SoftwareSource::Sideloaded,
                    "local snap file (rev x3, not from the store)".to_string()
                ),
            ]
        );
    }

    #[test]
    fn no_snapd_is_no_snaps_and_no_error() {
        let dir = tempfile::tempdir().unwrap();
        let got = collect(&Root::new(dir.path()));
        assert!(got.value.is_empty());
        assert!(got.errors.is_empty());
    }
}
