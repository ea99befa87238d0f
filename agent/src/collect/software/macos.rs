//! macOS application bundles: `/Applications` (and one level of vendor folders in it),
//! `/System/Applications`, and each user's `~/Applications` (`/Users/<name>/Applications`; a
//! Mac keeps its people in Directory Services, not in /etc/passwd, so the homes are listed).
//!
//! A bundle's `Contents/Info.plist` (XML or binary property list) names it: `CFBundleIdentifier`,
//! `CFBundleDisplayName` or `CFBundleName`, `CFBundleShortVersionString` (the marketing version;
//! `CFBundleVersion`, the build number, when absent). An app bought from the Mac App Store
//! carries its receipt at `Contents/_MASReceipt/receipt`: that is `store`. The sealed system
//! volume's `/System/Applications` holds Apple's own apps: `os-vendor`. Apple apps shipped with
//! the OS into `/Applications` (Safari) have `com.apple.` identifiers and no receipt; they count
//! as `os-vendor` too (the identifier is not a signature check: code signatures are out of reach
//! of a file reader). Everything else was installed from a download: `sideloaded`, with the
//! bundle id as `origin`.

use crate::collect::userfile;
use crate::collect::{Collected, Root};
use std::io::Cursor;
use std::path::Path;
use vakt_proto::model::{Package, PackageFormat, SectionKind, SoftwareSource};

const INFO_PLIST_CAP: u64 = 4 << 20;

#[derive(Debug, thiserror::Error)]
pub enum MacError {
    #[error("not a property list: {0}")]
    Plist(#[from] plist::Error),
    #[error("property list is not a dictionary")]
    NotADictionary,
}

/// What an Info.plist says about its bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleInfo {
    pub id: String,
    pub name: String,
    pub version: String,
}

/// Reads an Info.plist, XML or binary.
pub fn parse_info_plist(bytes: &[u8]) -> Result<BundleInfo, MacError> {
    let value = plist::Value::from_reader(Cursor::new(bytes))?;
    let dict = value.as_dictionary().ok_or(MacError::NotADictionary)?;
    let text = |key: &str| {
        dict.get(key)
            .and_then(|v| v.as_string())
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    Ok(BundleInfo {
        id: text("CFBundleIdentifier").unwrap_or_default(),
        name: text("CFBundleDisplayName")
            .or_else(|| text("CFBundleName"))
            .unwrap_or_default(),
        version: text("CFBundleShortVersionString")
            .or_else(|| text("CFBundleVersion"))
            .unwrap_or_default(),
    })
}

/// Where a bundle sits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Location {
    /// `/System/Applications`: the sealed system volume.
    System,
    /// `/Applications` or a user's `~/Applications`.
    Applications,
}

/// The source of a bundle from its location, receipt and identifier.
pub fn classify(
    location: Location,
    has_receipt: bool,
    bundle_id: &str,
) -> (SoftwareSource, String) {
    if has_receipt {
        return (SoftwareSource::Store, "Mac App Store".to_string());
    }
    if location == Location::System {
        return (
            SoftwareSource::OsVendor,
            "Apple (macOS system volume)".to_string(),
        );
    }
    if bundle_id.starts_with("com.apple.") {
        return (SoftwareSource::OsVendor, format!("Apple ({bundle_id})"));
    }
    let origin = if bundle_id.is_empty() {
        "no bundle identifier".to_string()
    } else {
        bundle_id.to_string()
    };
    (SoftwareSource::Sideloaded, origin)
}

/// Application bundles under `root`.
pub fn collect(root: &Root) -> Collected<Vec<Package>> {
    let mut out = Collected::new(Vec::new());
    scan(
        root,
        "/System/Applications",
        Location::System,
        "",
        1,
        &mut out,
    );
    scan(
        root,
        "/Applications",
        Location::Applications,
        "",
        1,
        &mut out,
    );
    let homes = userfile::list_or_report(root, "/Users", SectionKind::Software, &mut out)
        .map_or_else(Vec::new, |l| l.entries);
    for user in homes.into_iter().map(|e| e.name) {
        if user.starts_with('.') || user == "Shared" {
            continue;
        }
        let dir = format!("/Users/{user}/Applications");
        scan(root, &dir, Location::Applications, &user, 1, &mut out);
    }
    out
}

/// The `.app` bundles in `dir`; plain folders (`Utilities`, a vendor's suite) are entered
/// `depth` more levels.
fn scan(
    root: &Root,
    dir: &str,
    location: Location,
    user: &str,
    depth: usize,
    out: &mut Collected<Vec<Package>>,
) {
    let Some(listed) = userfile::list_or_report(root, dir, SectionKind::Software, out) else {
        return;
    };
    for e in &listed.entries {
        let name = &e.name;
        let device = format!("{dir}/{name}");
        if !listed.dir.is_dir(root, &e.raw) {
            continue;
        }
        match name.strip_suffix(".app") {
            Some(stem) => {
                let pkg = read_bundle(root, &device, stem, location, user, out);
                out.value.push(pkg);
            }
            None if depth > 0 && !name.starts_with('.') => {
                scan(root, &device, location, user, depth - 1, out);
            }
            None => {}
        }
    }
}

fn read_bundle(
    root: &Root,
    device: &str,
    stem: &str,
    location: Location,
    user: &str,
    out: &mut Collected<Vec<Package>>,
) -> Package {
    let plist_path = format!("{device}/Contents/Info.plist");
    // A bundle whose Info.plist is missing or corrupt is still an app on the disk: it is
    // listed under its folder name, and the plist problem is reported.
    let info = match userfile::read_existing(root, Path::new(&plist_path), INFO_PLIST_CAP) {
        Ok(b) => parse_info_plist(&b).unwrap_or_else(|e| {
            out.error(SectionKind::Software, plist_path.clone(), e);
            BundleInfo::default()
        }),
        Err(e) => {
            out.error(SectionKind::Software, plist_path.clone(), e);
            BundleInfo::default()
        }
    };
    let receipt = userfile::is_file(
        root,
        Path::new(&format!("{device}/Contents/_MASReceipt/receipt")),
    );
    let (source, origin) = classify(location, receipt, &info.id);
    Package {
        name: if info.name.is_empty() {
            stem.to_string()
        } else {
            info.name
        },
        version: info.version,
        format: PackageFormat::App,
        source,
        origin,
        // The App Store and each app's own updater decide about updates; nothing on disk tells.
        current: true,
        arch: String::new(),
        user: user.to_string(),
        path: device.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> Root {
        Root::new(format!(
            "{}/tests/fixtures/software/macos/root",
            env!("CARGO_MANIFEST_DIR")
        ))
    }

    #[test]
    fn xml_and_binary_plists() {
        let root = fixture();
        let xml =
            std::fs::read(root.join("/Applications/Firefox.app/Contents/Info.plist")).unwrap();
        assert!(xml.starts_with(b"<?xml"));
        assert_eq!(
            parse_info_plist(&xml).unwrap(),
            BundleInfo {
                id: "org.mozilla.firefox".into(),
                name: "Firefox".into(),
                version: "125.0.1".into()
            }
        );
        let bin = std::fs::read(root.join("/Applications/Slack.app/Contents/Info.plist")).unwrap();
        assert!(bin.starts_with(b"bplist00"));
        assert_eq!(
            parse_info_plist(&bin).unwrap().id,
            "com.tinyspeck.slackmacgap"
        );
    }

    #[test]
    fn hostile_plists_are_errors() {
        assert!(parse_info_plist(b"").is_err());
        assert!(parse_info_plist(b"bplist00").is_err());
        assert!(parse_info_plist(b"<?xml version=\"1.0\"?><plist><dict><key>a</key>").is_err());
        assert!(matches!(
            parse_info_plist(b"<?xml version=\"1.0\"?><plist><array/></plist>"),
            Err(MacError::NotADictionary)
        ));
    }

    #[test]
    fn bundles_and_their_sources() {
        let got = collect(&fixture());
        let rows: Vec<(&str, &str, &str, SoftwareSource, &str, &str)> = got
            .value
            .iter()
            .map(|p| {
                (
                    p.path.as_str(),
                    p.name.as_str(),
                    p.version.as_str(),
                    p.source,
                    p.origin.as_str(),
                    p.user.as_str(),
                )
            })
            .collect();
        use SoftwareSource::*;
        assert_eq!(
            rows,
            [
                (
                    "/System/Applications/Calculator.app",
                    "Calculator",
                    "11.0",
                    OsVendor,
                    "Apple (macOS system volume)",
                    ""
                ),
                (
                    "/System/Applications/Utilities/Terminal.app",
                    "Terminal",
                    "2.14",
                    OsVendor,
                    "Apple (macOS system volume)",
                    ""
                ),
                (
                    "/Applications/Broken.app",
                    "Broken",
                    "",
                    Sideloaded,
                    "no bundle identifier",
                    ""
                ),
                (
                    "/Applications/Firefox.app",
                    "Firefox",
                    "125.0.1",
                    Sideloaded,
                    "org.mozilla.firefox",
                    ""
                ),
                (
                    "/Applications/Microsoft Office/Microsoft Word.app",
                    "Microsoft Word",
                    "16.84",
                    Store,
                    "Mac App Store",
                    ""
                ),
                (
                    "/Applications/Safari.app",
                    "Safari",
                    "17.4.1",
                    OsVendor,
                    "Apple (com.apple.Safari)",
                    ""
                ),
                (
                    "/Applications/Slack.app",
                    "Slack",
                    "4.37.101",
                    Store,
                    "Mac App Store",
                    ""
                ),
                (
                    "/Users/anna/Applications/Tool.app",
                    "Tool",
                    "0.9",
                    Sideloaded,
                    "se.example.tool",
                    "anna"
                ),
            ]
        );
        assert!(got.value.iter().all(|p| p.format == PackageFormat::App));
        assert_eq!(got.errors.len(), 1, "{:?}", got.errors);
        assert_eq!(
            got.errors[0].source,
            "/Applications/Broken.app/Contents/Info.plist"
        );
    }
}
