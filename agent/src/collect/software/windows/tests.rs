//! Windows parser tests. Uninstall entries come from a regedit export (`.reg`), read here by a
//! small test-only reader so the fixture stays in the format an admin can produce on a real
//! machine; AppX manifests are files as Windows stores them.

use super::*;

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/software/windows/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

/// Keys of a regedit export with their string and DWORD values (continued `hex(2):` lines are
/// joined and kept as `Other`).
fn read_reg(text: &str) -> Vec<(String, BTreeMap<String, RegValue>)> {
    let mut keys: Vec<(String, BTreeMap<String, RegValue>)> = Vec::new();
    let mut pending = String::new();
    for raw in text.lines() {
        let line = raw.trim_end();
        if let Some(cont) = line.strip_suffix('\\') {
            pending.push_str(cont.trim_start());
            continue;
        }
        pending.push_str(line.trim_start());
        let line = std::mem::take(&mut pending);
        if let Some(key) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            keys.push((key.to_string(), BTreeMap::new()));
        } else if let Some(rest) = line.strip_prefix('"') {
            let (name, value) = rest.split_once("\"=").unwrap();
            let value = if let Some(d) = value.strip_prefix("dword:") {
                RegValue::Dword(u32::from_str_radix(d, 16).unwrap())
            } else if let Some(s) = value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
                RegValue::Str(s.replace("\\\"", "\"").replace("\\\\", "\\"))
            } else {
                RegValue::Other
            };
            keys.last_mut().unwrap().1.insert(name.to_string(), value);
        }
    }
    keys
}

fn hive_of(key: &str) -> Hive {
    if key.contains("WOW6432Node") {
        Hive::Machine32
    } else if let Some(rest) = key.strip_prefix("HKEY_USERS\\") {
        Hive::User(rest.split('\\').next().unwrap().to_string())
    } else {
        Hive::Machine
    }
}

#[test]
fn uninstall_entries_from_a_registry_export() {
    let mut programs = Vec::new();
    let mut errors = Vec::new();
    for (key, values) in read_reg(&fixture("uninstall.reg")) {
        let sub = key.rsplit('\\').next().unwrap();
        match parse_uninstall_entry(sub, &values, &hive_of(&key)) {
            Ok(Some(p)) => programs.push(p),
            Ok(None) => {}
            Err(e) => errors.push(e),
        }
    }
    let rows: Vec<(&str, &str, SoftwareSource, &str, &str, &str)> = programs
        .iter()
        .map(|p| {
            assert_eq!(p.format, PackageFormat::Msi);
            (
                p.name.as_str(),
                p.version.as_str(),
                p.source,
                p.origin.as_str(),
                p.arch.as_str(),
                p.user.as_str(),
            )
        })
        .collect();
    use SoftwareSource::*;
    assert_eq!(
        rows,
        [
            (
                "7-Zip 23.01 (x64)",
                "23.01",
                Sideloaded,
                "Igor Pavlov (installer)",
                "",
                ""
            ),
            (
                "Zoom Workplace (64-bit)",
                "6.0.2.33403",
                Sideloaded,
                "Zoom Video Communications, Inc. (MSI)",
                "",
                ""
            ),
            (
                "Microsoft Edge",
                "124.0.2478.51",
                OsVendor,
                "Microsoft Corporation (installer)",
                "",
                ""
            ),
            (
                "Notepad++ (32-bit x86)",
                "8.6.5",
                Sideloaded,
                "Notepad++ Team (installer)",
                "x86",
                ""
            ),
            (
                "Spotify",
                "1.2.36.955.g1e3ae7f5",
                Sideloaded,
                "Spotify AB (installer)",
                "",
                "S-1-5-21-1004336348-1177238915-682003330-1001"
            ),
        ]
    );
    assert_eq!(programs[0].path, r"C:\Program Files\7-Zip\");
    // The hostile entry names its key and value; the rest stands.
    assert_eq!(
        errors,
        [WinError::WrongType {
            key: "BadInstaller".into(),
            value: "DisplayName"
        }]
    );
}

#[test]
fn appx_manifests_and_signature_kinds() {
    let store = parse_appx_manifest(&fixture("store.AppxManifest.xml")).unwrap();
    assert_eq!(
        store,
        AppxManifest {
            name: "Microsoft.WindowsTerminal".into(),
            version: "1.19.11213.0".into(),
            publisher:
                "CN=Microsoft Corporation, O=Microsoft Corporation, L=Redmond, S=Washington, C=US"
                    .into(),
            arch: "x64".into(),
            display_name: "Windows Terminal".into(),
            framework: false,
            resource_package: false,
        }
    );
    let p = appx_package(&store, SignatureKind::Store, "").unwrap();
    assert_eq!(
        (p.name.as_str(), p.source, p.origin.as_str()),
        ("Windows Terminal", SoftwareSource::Store, "Microsoft Store")
    );
    assert_eq!(p.format, PackageFormat::Appx);
    assert_eq!(
        appx_package(&store, SignatureKind::System, "")
            .unwrap()
            .source,
        SoftwareSource::OsVendor
    );

    let lob = parse_appx_manifest(&fixture("sideloaded.AppxManifest.xml")).unwrap();
    assert_eq!(lob.display_name, "Tid & Rapport");
    for kind in [
        SignatureKind::Developer,
        SignatureKind::Enterprise,
        SignatureKind::None,
    ] {
        assert_eq!(
            appx_package(&lob, kind, "anna").unwrap().source,
            SoftwareSource::Sideloaded
        );
    }
    assert_eq!(
        appx_package(&lob, SignatureKind::Enterprise, "")
            .unwrap()
            .origin,
        "enterprise-signed (line-of-business), publisher CN=Sorsele kommun IT"
    );

    let framework = parse_appx_manifest(&fixture("framework.AppxManifest.xml")).unwrap();
    assert!(framework.framework);
    assert!(appx_package(&framework, SignatureKind::Store, "").is_none());
    let resource = parse_appx_manifest(&fixture("resource.AppxManifest.xml")).unwrap();
    assert!(resource.resource_package);
    // ms-resource: names are references into resources.pri, not names.
    assert_eq!(resource.display_name, "");
    assert!(appx_package(&resource, SignatureKind::Store, "").is_none());
}

#[test]
fn hostile_manifests_are_errors() {
    assert!(parse_appx_manifest(&fixture("truncated.AppxManifest.xml")).is_err());
    assert_eq!(parse_appx_manifest(""), Err(WinError::NoIdentity));
    assert_eq!(
        parse_appx_manifest("<Package><Properties/></Package>"),
        Err(WinError::NoIdentity)
    );
    // An Identity outside <Package> is not the package's.
    assert_eq!(
        parse_appx_manifest("<Other><Identity Name=\"x\" Version=\"1\"/></Other>"),
        Err(WinError::NoIdentity)
    );
    assert!(
        parse_appx_manifest("<Package><Identity Name=\"x\" Version=\"1\" Name=\"y\"/></Package>")
            .is_err()
    );
    assert!(parse_appx_manifest("<Package></Nope>").is_err());
}
