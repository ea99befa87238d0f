//! Flatpak tests. The `root` fixture holds real installations made with flatpak 1.14 (a
//! system one with a `flathub` remote, an extra one declared in installations.d, and a user's
//! with a configured remote plus an installed `.flatpak` bundle), stripped to the files the
//! collector reads; only the remote urls were rewritten from the local test repository.

use super::*;
use crate::collect::Root;

fn fixture(name: &str) -> Root {
    Root::new(format!(
        "{}/tests/fixtures/software/flatpak/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
}

#[test]
fn real_deploy_records_decode() {
    let root = fixture("root");
    let sys =
        std::fs::read(root.join("/var/lib/flatpak/app/org.vakt.Hello/x86_64/stable/active/deploy"))
            .unwrap();
    // 320 bytes: two-byte framing offsets.
    let d = parse_deploy(&sys).unwrap();
    assert_eq!(d.origin, "flathub");
    assert_eq!(
        d.commit,
        "c2562110ab8a71c68d360b3b8d14985c27c7237f079fcc28e481e4af70aa6d6e"
    );
    assert_eq!(d.metadata["appdata-version"], "1.4.2");
    assert_eq!(d.metadata["appdata-name"], "Vakt Hello");
    assert_eq!(d.metadata["runtime"], "org.vakt.Platform/x86_64/1");
    // deploy-version is an int32 and timestamp a uint64: not strings, so not in the map.
    assert!(!d.metadata.contains_key("deploy-version"));

    // 185 bytes: one-byte framing offsets.
    let bundle =
        std::fs::read(root.join(
            "/home/anna/.local/share/flatpak/app/org.vakt.Bundled/x86_64/stable/active/deploy",
        ))
        .unwrap();
    let d = parse_deploy(&bundle).unwrap();
    assert_eq!(d.origin, "bundled-origin");
    assert!(!d.metadata.contains_key("appdata-version"));
}

#[test]
fn every_truncation_of_a_real_record_is_an_error_or_a_value_never_a_panic() {
    let root = fixture("root");
    let sys =
        std::fs::read(root.join("/var/lib/flatpak/app/org.vakt.Hello/x86_64/stable/active/deploy"))
            .unwrap();
    for cut in 0..sys.len() {
        let _ = parse_deploy(&sys[..cut]);
    }
    let mut flipped = sys.clone();
    for i in 0..flipped.len() {
        flipped[i] ^= 0xff;
        let _ = parse_deploy(&flipped);
        flipped[i] ^= 0xff;
    }
}

#[test]
fn all_installations_and_their_sources() {
    let got = collect(&fixture("root"));
    assert!(got.errors.is_empty(), "{:?}", got.errors);
    let rows: Vec<(&str, &str, &str, SoftwareSource, &str, &str)> = got
        .value
        .iter()
        .map(|p| {
            (
                p.name.as_str(),
                p.version.as_str(),
                p.user.as_str(),
                p.source,
                p.origin.as_str(),
                p.path.as_str(),
            )
        })
        .collect();
    assert_eq!(
        rows,
        [
            (
                "org.vakt.Hello",
                "1.4.2",
                "",
                SoftwareSource::Store,
                "flathub (https://dl.flathub.org/repo/)",
                "/var/lib/flatpak/app/org.vakt.Hello"
            ),
            (
                "org.vakt.Hello",
                "1.4.2",
                "",
                SoftwareSource::Store,
                "vendor (https://flatpak.vendor.example/repo/)",
                "/opt/flatpak-extra/app/org.vakt.Hello"
            ),
            (
                "org.vakt.Bundled",
                "",
                "anna",
                SoftwareSource::Sideloaded,
                "bundle bundled.flatpak (remote bundled-origin)",
                "/home/anna/.local/share/flatpak/app/org.vakt.Bundled"
            ),
            (
                "org.vakt.Hello",
                "1.4.2",
                "anna",
                SoftwareSource::Store,
                "vaktrepo (https://apps.example.org/repo/)",
                "/home/anna/.local/share/flatpak/app/org.vakt.Hello"
            ),
        ]
    );
    assert!(got.value.iter().all(|p| p.arch == "x86_64"));
    // The runtime org.vakt.Platform is installed in all three and deliberately not listed.
    assert!(!got.value.iter().any(|p| p.name == "org.vakt.Platform"));
}

#[test]
fn broken_files_are_named_and_the_rest_stands() {
    let got = collect(&fixture("broken"));
    let mut sources: Vec<&str> = got.errors.iter().map(|e| e.source.as_str()).collect();
    sources.sort();
    assert_eq!(
        sources,
        [
            "/etc/flatpak/installations.d/bad.conf",
            "/home/bo/.local/share/flatpak/repo/config",
            "/var/lib/flatpak/app/org.example.Broken/x86_64/stable/active/deploy",
        ],
        "{:?}",
        got.errors
    );
    assert!(
        got.errors
            .iter()
            .all(|e| e.section == SectionKind::Software)
    );
    // The corrupt deploy record falls back to the pulled ref under repo/refs/remotes.
    let broken = &got.value[0];
    assert_eq!(broken.name, "org.example.Broken");
    assert_eq!(broken.source, SoftwareSource::Store);
    assert_eq!(broken.origin, "flathub (https://dl.flathub.org/repo/)");
    // Bo's remote config is unreadable: the app is still listed, its remote unknown.
    let bo = &got.value[1];
    assert_eq!(
        (bo.name.as_str(), bo.user.as_str()),
        ("org.vakt.Hello", "bo")
    );
    assert_eq!(bo.source, SoftwareSource::Unlisted);
    assert_eq!(bo.origin, "flathub (remote no longer configured)");
}

#[test]
fn key_files_follow_glib() {
    let kf = parse_keyfile(
        "# comment\n[remote \"a\"]\nurl = https://x/\n  xa.title=Some\\sTitle\n\n[core]\nmode=bare\n",
    )
    .unwrap();
    assert_eq!(kf.get("remote \"a\"", "url"), Some("https://x/"));
    assert_eq!(kf.get("remote \"a\"", "xa.title"), Some("Some Title"));
    assert_eq!(kf.get("core", "mode"), Some("bare"));
    assert_eq!(
        parse_keyfile("k=v\n"),
        Err(FlatpakError::KeyOutsideGroup(1))
    );
    assert_eq!(parse_keyfile("[a]\nnope\n"), Err(FlatpakError::BadLine(2)));
    assert_eq!(parse_keyfile("[unclosed\n"), Err(FlatpakError::BadLine(1)));
}

#[test]
fn installations_conf() {
    let got = parse_installations_conf(
        "[Installation \"extra\"]\nPath=/opt/fp\n[Other]\nx=1\n[Installation unquoted]\nPath=/x\n",
    )
    .unwrap();
    assert_eq!(
        got,
        [ExtraInstallation {
            id: "extra".into(),
            path: "/opt/fp".into()
        }]
    );
    assert_eq!(
        parse_installations_conf("[Installation \"x\"]\n"),
        Err(FlatpakError::NoPath("x".into()))
    );
}

#[test]
fn classification() {
    let bundle = Remote {
        url: String::new(),
        title: "app.flatpak".into(),
        noenumerate: true,
        main_ref: "app/a/x86_64/stable".into(),
    };
    assert_eq!(
        classify("app-origin", Some(&bundle)).0,
        SoftwareSource::Sideloaded
    );
    // A bundle that embeds its publisher's repository url is still a file the user installed.
    let bundle_with_url = Remote {
        url: "https://repo.example/".into(),
        ..bundle.clone()
    };
    assert_eq!(
        classify("app-origin", Some(&bundle_with_url)).0,
        SoftwareSource::Sideloaded
    );
    let local_repo = Remote {
        url: "file:///home/a/repo".into(),
        title: "Local repo".into(),
        noenumerate: true,
        main_ref: String::new(),
    };
    assert_eq!(
        classify("app-origin", Some(&local_repo)).0,
        SoftwareSource::Sideloaded
    );
    let flatpakref = Remote {
        url: "https://dl.flathub.org/repo/".into(),
        title: String::new(),
        noenumerate: true,
        main_ref: "app/a/x86_64/stable".into(),
    };
    assert_eq!(
        classify("app-origin", Some(&flatpakref)),
        (
            SoftwareSource::Store,
            "https://dl.flathub.org/repo/ (.flatpakref, remote app-origin)".to_string()
        )
    );
    assert_eq!(classify("gone", None).0, SoftwareSource::Unlisted);
    assert_eq!(classify("x-origin", None).0, SoftwareSource::Sideloaded);
}
