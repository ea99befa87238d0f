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
use plist::stream::{Event, Reader};
use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::Path;
use vakt_proto::model::{Package, PackageFormat, SectionKind, SoftwareSource};

const INFO_PLIST_CAP: u64 = 4 << 20;
/// Nesting deeper than this is refused; real Info.plists nest three or four levels. A
/// user's bundle is hostile input: a million nested arrays would overflow the stack of
/// whatever walks or drops them recursively.
const MAX_DEPTH: usize = 32;
/// Events (keys, values, ends of collections) read before the file is refused. Real
/// Info.plists have hundreds; a binary plist whose arrays name the same child array many
/// times expands exponentially as it is read (the reader refuses only cycles).
const MAX_EVENTS: usize = 100_000;
/// The keys read; the rest of the file is only counted.
const KEYS: [&str; 5] = [
    "CFBundleIdentifier",
    "CFBundleDisplayName",
    "CFBundleName",
    "CFBundleShortVersionString",
    "CFBundleVersion",
];

#[derive(Debug, thiserror::Error)]
pub enum MacError {
    #[error("not a property list: {0}")]
    Plist(#[from] plist::Error),
    #[error("property list is not a dictionary")]
    NotADictionary,
    #[error("property list ends inside its dictionary")]
    Truncated,
    #[error("property list has a key without a value")]
    KeyWithoutValue,
    #[error("property list has a dictionary key that is not a string")]
    KeyNotAString,
    #[error("property list nests deeper than {MAX_DEPTH} levels")]
    TooDeep,
    #[error("property list holds more than {MAX_EVENTS} values")]
    TooLarge,
}

/// What an Info.plist says about its bundle.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BundleInfo {
    pub id: String,
    pub name: String,
    pub version: String,
}

/// Reads an Info.plist, XML or binary, as a stream of events: only the top dictionary's
/// string values of [`KEYS`] are kept (a later duplicate key wins, as in a parsed
/// dictionary), and nothing deeper is built, so depth and size are checked as it goes.
pub fn parse_info_plist(bytes: &[u8]) -> Result<BundleInfo, MacError> {
    let mut events = Reader::new(Cursor::new(bytes));
    match events.next() {
        Some(Ok(Event::StartDictionary(_))) => {}
        Some(Ok(_)) => return Err(MacError::NotADictionary),
        Some(Err(e)) => return Err(e.into()),
        None => return Err(MacError::Truncated),
    }
    let mut found: BTreeMap<&'static str, String> = BTreeMap::new();
    let mut depth = 1;
    // In the top dictionary: the key whose value comes next.
    let mut key: Option<String> = None;
    for (n, event) in events.enumerate() {
        if n >= MAX_EVENTS {
            return Err(MacError::TooLarge);
        }
        let event = event?;
        if depth == 1 && key.is_none() {
            // A key, or the end of the dictionary.
            match event {
                Event::String(k) => key = Some(k.into_owned()),
                Event::EndCollection => return Ok(bundle_info(found)),
                _ => return Err(MacError::KeyNotAString),
            }
            continue;
        }
        let wanted = key
            .take()
            .and_then(|k| KEYS.iter().copied().find(|w| *w == k));
        match event {
            Event::StartArray(_) | Event::StartDictionary(_) => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Err(MacError::TooDeep);
                }
            }
            Event::EndCollection if depth == 1 => return Err(MacError::KeyWithoutValue),
            Event::EndCollection => depth -= 1,
            _ => {}
        }
        if let Some(w) = wanted {
            match event {
                Event::String(v) => found.insert(w, v.into_owned()),
                // Not a string: the key's earlier string value no longer holds.
                _ => found.remove(w),
            };
        }
    }
    Err(MacError::Truncated)
}

fn bundle_info(found: BTreeMap<&'static str, String>) -> BundleInfo {
    let text = |key: &str| {
        found
            .get(key)
            .map(|s| s.trim())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    };
    BundleInfo {
        id: text("CFBundleIdentifier").unwrap_or_default(),
        name: text("CFBundleDisplayName")
            .or_else(|| text("CFBundleName"))
            .unwrap_or_default(),
        version: text("CFBundleShortVersionString")
            .or_else(|| text("CFBundleVersion"))
            .unwrap_or_default(),
    }
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

    /// A binary plist (`bplist00`) of `objects`, already encoded with one-byte object
    /// references; object 0 is the top.
    fn bplist(objects: &[Vec<u8>]) -> Vec<u8> {
        let mut out = b"bplist00".to_vec();
        let mut offsets = Vec::new();
        for o in objects {
            offsets.push(u16::try_from(out.len()).unwrap());
            out.extend_from_slice(o);
        }
        let table = out.len() as u64;
        for o in offsets {
            out.extend_from_slice(&o.to_be_bytes());
        }
        // Trailer: six unused bytes, offset size 2, reference size 1, object count, top
        // object, offset table's place.
        out.extend_from_slice(&[0, 0, 0, 0, 0, 0, 2, 1]);
        out.extend_from_slice(&(objects.len() as u64).to_be_bytes());
        out.extend_from_slice(&0u64.to_be_bytes());
        out.extend_from_slice(&table.to_be_bytes());
        out
    }

    /// An ASCII string object: its length in the marker up to 14, else in an integer
    /// object after it.
    fn bstr(s: &str) -> Vec<u8> {
        let len = u8::try_from(s.len()).unwrap();
        let mut o = if len < 15 {
            vec![0x50 | len]
        } else {
            vec![0x5F, 0x10, len]
        };
        o.extend_from_slice(s.as_bytes());
        o
    }

    #[test]
    fn a_hand_built_binary_plist_reads_like_a_written_one() {
        // {CFBundleIdentifier: "se.x", CFBundleName: ["n"], CFBundleName: "N"}: a value that
        // is not a string does not count, a later duplicate key wins.
        let top = vec![0xD3, 1, 2, 2, 3, 4, 5];
        let got = parse_info_plist(&bplist(&[
            top,
            bstr("CFBundleIdentifier"),
            bstr("CFBundleName"),
            bstr("se.x"),
            vec![0xA1, 6],
            bstr("N"),
            bstr("n"),
        ]))
        .unwrap();
        assert_eq!(
            got,
            BundleInfo {
                id: "se.x".into(),
                name: "N".into(),
                version: String::new()
            }
        );
    }

    #[test]
    fn deep_or_exponential_plists_are_refused_without_being_built() {
        // 200,000 nested arrays (3 MB, under the read cap): building and dropping them as a
        // value recursed once per level and overflowed the stack.
        let mut deep = b"<?xml version=\"1.0\"?><plist><dict><key>k</key>".to_vec();
        deep.extend(b"<array>".repeat(200_000));
        deep.extend(b"</array>".repeat(200_000));
        deep.extend(b"</dict></plist>");
        assert!(matches!(parse_info_plist(&deep), Err(MacError::TooDeep)));
        // A binary plist of ten levels, each an array naming the next level's array fourteen
        // times: 14^10 values when expanded, from 200 bytes.
        let mut objects = vec![vec![0xD1, 1, 2], bstr("CFBundleIdentifier")];
        for level in 0..10u8 {
            let mut array = vec![0xAE];
            array.extend(std::iter::repeat_n(3 + level, 14));
            objects.push(array);
        }
        objects.push(bstr("leaf"));
        assert!(matches!(
            parse_info_plist(&bplist(&objects)),
            Err(MacError::TooLarge)
        ));
        // A key without its value.
        assert!(matches!(
            parse_info_plist(b"<?xml version=\"1.0\"?><plist><dict><key>a</key></dict></plist>"),
            Err(MacError::KeyWithoutValue | MacError::Plist(_))
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
