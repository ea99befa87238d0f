//! Fixture-tree tests of the deb collector: a whole device root (`tests/fixtures/software/deb/
//! tree`) with sources in both syntaxes, lists in every compression, stale and corrupt lists,
//! plus broken, truncated and hostile variants built from it in temporary directories.

use super::*;
use crate::collect::software::Scanner;
use std::fs;
use std::path::Path;
use vakt_proto::model::SoftwareSource::{OsVendor, ThirdPartyRepo, Unlisted};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/software/deb")
}

fn tree() -> Root {
    Root::new(fixtures().join("tree"))
}

/// A writable copy of the fixture tree.
fn tree_copy() -> tempfile::TempDir {
    fn copy(from: &Path, to: &Path) {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let e = e.unwrap();
            let target = to.join(e.file_name());
            if e.file_type().unwrap().is_dir() {
                copy(&e.path(), &target);
            } else {
                fs::copy(e.path(), target).unwrap();
            }
        }
    }
    let dir = tempfile::tempdir().unwrap();
    copy(&fixtures().join("tree"), dir.path());
    dir
}

const LISTS_DIR: &str = "var/lib/apt/lists";

/// name → (source, origin, current, version, repository list file)
fn by_name(inv: &DebInventory) -> HashMap<String, (SoftwareSource, String, bool, String, String)> {
    inv.packages
        .iter()
        .map(|p| {
            (
                p.installed.name.clone(),
                (
                    p.source,
                    p.origin.clone(),
                    p.current,
                    p.installed.version.clone(),
                    p.repository
                        .map(|i| inv.repositories[i].list_file.clone())
                        .unwrap_or_default(),
                ),
            )
        })
        .collect()
}

#[test]
fn whole_tree_is_attributed() {
    let got = DebScanner::new().scan(&tree());
    let errors: Vec<(&str, &str)> = got
        .errors
        .iter()
        .map(|e| (e.source.as_str(), e.message.as_str()))
        .collect();
    assert_eq!(errors.len(), 2, "{errors:?}");
    assert_eq!(
        errors[0],
        ("/etc/apt/sources.list.d/broken.sources", "line 1: no URIs")
    );
    assert_eq!(
        errors[1].0,
        "/var/lib/apt/lists/corrupt.example.org_debian_dists_stable_main_binary-amd64_Packages.lz4"
    );
    assert!(errors[1].1.starts_with("read failed"), "{errors:?}");
    assert!(
        got.errors
            .iter()
            .all(|e| e.section == SectionKind::Software)
    );

    let inv = got.value;
    let m = by_name(&inv);
    assert_eq!(m.len(), 14, "{m:#?}");
    assert!(
        !m.contains_key("removed-pkg"),
        "config-files only is not installed"
    );
    let row = |n: &str| {
        let r = &m[n];
        (r.0, r.1.as_str(), r.2)
    };
    let main = "deb.debian.org_debian_dists_bookworm_main_binary-amd64_Packages.lz4";
    assert_eq!(row("dpkg"), (OsVendor, "Debian", true));
    assert_eq!(m["dpkg"].4, main);
    assert_eq!(
        row("tzdata"),
        (OsVendor, "Debian", true),
        "arch all in an amd64 list"
    );
    // Half-installed: its files are (partly) there, so it is reported.
    assert_eq!(row("broken-pkg"), (OsVendor, "Debian", true));
    // The newer curl is only in the disabled bookworm-updates: still current.
    assert_eq!(row("curl"), (OsVendor, "Debian", true));
    // libc6 at the main archive's version; security has a newer one (xz list).
    assert_eq!(row("libc6"), (OsVendor, "Debian", false));
    assert_eq!(m["libc6"].4, main);
    assert_eq!(row("openssl"), (OsVendor, "Debian", true));
    assert_eq!(
        m["openssl"].4,
        "deb.debian.org_debian-security_dists_bookworm-security_main_binary-amd64_Packages.xz"
    );
    // Third party (gz list, plain Release file).
    assert_eq!(row("example-tool"), (ThirdPartyRepo, "Example Corp", true));
    assert_eq!(
        row("example-agent"),
        (ThirdPartyRepo, "Example Corp", false)
    );
    // The flat local repository has no Release: its site names it.
    assert_eq!(
        row("local-thing"),
        (ThirdPartyRepo, "file:/srv/local-repo", true)
    );
    assert_eq!(m["local-thing"].4, "_srv_local-repo_._Packages");
    // Unlisted, with the hints in order: stale list (with its Release's Origin), the stale
    // i386 list of a repository now limited to amd64, version suffix, maintainer.
    assert_eq!(row("nodejs"), (Unlisted, "NodeSource", true));
    assert_eq!(row("libfoo"), (Unlisted, "Example Corp", true));
    assert_eq!(row("osslsigncode"), (Unlisted, "Debian Backports", true));
    assert_eq!(row("my-script"), (Unlisted, "Anna Berg", true));
    // Its repository's list is corrupt: the error above says so, the rest stands.
    assert_eq!(row("corrupt-pkg"), (Unlisted, "Corrupt Example", true));

    let descriptions: Vec<String> = inv
        .repositories
        .iter()
        .map(|r| r.apt_description())
        .collect();
    assert_eq!(
        descriptions,
        [
            "http://deb.debian.org/debian bookworm/main amd64 Packages",
            "https://repo.example.com/apt stable/main amd64 Packages",
            "http://deb.debian.org/debian-security bookworm-security/main amd64 Packages",
            "file:/srv/local-repo ./ Packages",
        ]
    );
    let security = &inv.repositories[2];
    assert_eq!(
        security.release.as_ref().map(|r| r.label.as_str()),
        Some("Debian-Security")
    );
    assert!(security.vendor);
    assert!(!inv.repositories[1].vendor);
}

#[test]
fn scanner_reports_sorted_deb_packages() {
    let got = Scanner::new().scan(&tree());
    // The deb fixture has no /etc/passwd: the per-user collectors say so, once; the two deb
    // errors are the corrupt list and the truncated stanza.
    let deb_errors: Vec<_> = got
        .errors
        .iter()
        .filter(|e| e.source != "/etc/passwd")
        .collect();
    assert_eq!(deb_errors.len(), 2, "{:?}", got.errors);
    assert_eq!(got.errors.len(), 3, "{:?}", got.errors);
    let names: Vec<&str> = got.value.iter().map(|p| p.name.as_str()).collect();
    let mut sorted = names.clone();
    sorted.sort();
    assert_eq!(names, sorted);
    let node = got.value.iter().find(|p| p.name == "nodejs").unwrap();
    assert_eq!(node.format, PackageFormat::Deb);
    assert_eq!(node.source, Unlisted);
    assert_eq!(node.origin, "NodeSource");
    assert_eq!(node.arch, "amd64");
    assert_eq!(node.version, "20.20.2-1nodesource1");
}

#[test]
fn every_compression_reads_the_same_list() {
    let root = Root::new(fixtures().join("formats"));
    let dir = |name: &str| userfile::open(&root, Path::new(name)).unwrap().unwrap();
    let plain = read_list_file(dir("Packages"), "", Interest::All).unwrap();
    assert_eq!(plain.len(), 8);
    let want: Vec<_> = plain.iter().collect();
    for (file, ext) in [
        ("Packages.gz", ".gz"),
        ("Packages.xz", ".xz"),
        ("Packages.lzma", ".lzma"),
        ("Packages.lz4", ".lz4"),
        ("Packages-two-members.gz", ".gz"),
        ("Packages-two-frames.lz4", ".lz4"),
    ] {
        let l =
            read_list_file(dir(file), ext, Interest::All).unwrap_or_else(|e| panic!("{file}: {e}"));
        assert_eq!(l.iter().collect::<Vec<_>>(), want, "{file}");
    }
    // A name that lies about the compression is refused by its magic number.
    let e = read_list_file(dir("Packages"), ".lz4", Interest::All).unwrap_err();
    assert_eq!(e.to_string(), "not lz4 data although the name says so");
    let e = read_list_file(dir("Packages.gz"), ".xz", Interest::All).unwrap_err();
    assert_eq!(e.to_string(), "not xz data although the name says so");
    let e = read_list_file(dir("Packages"), ".zst", Interest::All).unwrap_err();
    assert_eq!(e.to_string(), "compression .zst is not supported");
}

#[test]
fn unchanged_lists_come_from_the_cache() {
    let dir = tree_copy();
    let root = Root::new(dir.path());
    let mut s = DebScanner::new();
    let first = s.scan(&root);
    // 4 configured lists + the corrupt one + 3 stale ones.
    assert_eq!(s.lists_parsed_last_scan(), 8);
    assert_eq!(s.cached_lists(), 8);
    let again = s.scan(&root);
    assert_eq!(s.lists_parsed_last_scan(), 0);
    assert_eq!(again, first);

    // apt replaces a list: only that one is parsed again, and the answer follows it.
    let lists = dir.path().join(LISTS_DIR);
    let name = "repo.example.com_apt_dists_stable_main_binary-amd64_Packages.gz";
    let text = "Package: example-agent\nVersion: 1.0-1\nArchitecture: amd64\n\n\
                Package: example-tool\nVersion: 2.1-1\nArchitecture: amd64\n";
    let packed = decompress::tests::compress(Compression::Gzip, text.as_bytes());
    let tmp = lists.join("partial").join(name);
    fs::write(&tmp, packed).unwrap();
    fs::rename(&tmp, lists.join(name)).unwrap();
    let after = s.scan(&root);
    assert_eq!(s.lists_parsed_last_scan(), 1);
    let m = by_name(&after.value);
    assert!(m["example-agent"].2, "1.5-1 is no longer offered");

    // A newly installed package name: the lists were parsed for the old names only, so they
    // are parsed again, and the new package finds its repository.
    let status = dir.path().join("var/lib/dpkg/status");
    let mut text = fs::read_to_string(&status).unwrap();
    text.push_str(
        "\nPackage: vim\nStatus: install ok installed\nInstalled-Size: 4000\n\
         Architecture: amd64\nVersion: 2:9.0.1378-2\n\
         Depends: vim-common (= 2:9.0.1378-2), vim-runtime (= 2:9.0.1378-2), libc6 (>= 2.34)\n",
    );
    fs::write(&status, text).unwrap();
    let after = s.scan(&root);
    assert_eq!(s.lists_parsed_last_scan(), 8);
    assert_eq!(by_name(&after.value)["vim"].0, OsVendor);
    let _ = s.scan(&root);
    assert_eq!(s.lists_parsed_last_scan(), 0);

    // A list that disappears leaves the cache too.
    fs::remove_file(
        lists.join("deb.nodesource.com_node%5f20.x_dists_nodistro_main_binary-amd64_Packages.lz4"),
    )
    .unwrap();
    let after = s.scan(&root);
    assert_eq!(s.cached_lists(), 7);
    // The version suffix still tells where nodejs came from.
    assert_eq!(by_name(&after.value)["nodejs"].1, "NodeSource");
}

#[test]
fn inrelease_wins_over_release() {
    let dir = tree_copy();
    let lists = dir.path().join(LISTS_DIR);
    fs::write(
        lists.join("deb.debian.org_debian_dists_bookworm_Release"),
        "Origin: Not Used\nSuite: oldstable\n",
    )
    .unwrap();
    let got = DebScanner::new().scan(&Root::new(dir.path()));
    assert_eq!(by_name(&got.value)["dpkg"].1, "Debian");
    // Without the InRelease, the Release is read.
    fs::remove_file(lists.join("deb.debian.org_debian_dists_bookworm_InRelease")).unwrap();
    let got = DebScanner::new().scan(&Root::new(dir.path()));
    let dpkg = &by_name(&got.value)["dpkg"];
    assert_eq!((dpkg.0, dpkg.1.as_str()), (ThirdPartyRepo, "Not Used"));
}

#[test]
fn truncated_status_keeps_what_came_before() {
    let dir = tree_copy();
    let status = dir.path().join("var/lib/dpkg/status");
    let text = fs::read_to_string(&status).unwrap();
    let cut = text.find("Package: libc6").unwrap() + "Package: libc6\nStatus: install ok".len();
    fs::write(&status, &text[..cut]).unwrap();
    let got = DebScanner::new().scan(&Root::new(dir.path()));
    let names: Vec<&str> = got
        .value
        .packages
        .iter()
        .map(|p| p.installed.name.as_str())
        .collect();
    assert_eq!(
        names,
        [
            "broken-pkg",
            "corrupt-pkg",
            "curl",
            "dpkg",
            "example-agent",
            "example-tool"
        ]
    );
    let status_errors: Vec<&str> = got
        .errors
        .iter()
        .filter(|e| e.source == STATUS)
        .map(|e| e.message.as_str())
        .collect();
    assert_eq!(status_errors.len(), 1, "{:?}", got.errors);
    let libc6_line = text[..text.find("Package: libc6").unwrap()].lines().count() + 1;
    assert_eq!(
        status_errors[0],
        format!("line {libc6_line}: package libc6: Status \"install ok\" is not three words")
    );
}

#[test]
fn no_dpkg_database_is_no_error() {
    let dir = tempfile::tempdir().unwrap();
    let got = DebScanner::new().scan(&Root::new(dir.path()));
    assert!(got.value.packages.is_empty());
    assert!(got.errors.is_empty());
}

#[test]
fn dpkg_without_apt_is_all_unlisted() {
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("var/lib/dpkg")).unwrap();
    fs::copy(
        fixtures().join("tree/var/lib/dpkg/status"),
        dir.path().join("var/lib/dpkg/status"),
    )
    .unwrap();
    let got = DebScanner::new().scan(&Root::new(dir.path()));
    assert_eq!(got.value.packages.len(), 14);
    assert!(got.value.packages.iter().all(|p| p.source == Unlisted));
    // Only the missing os-release is worth an error; no sources means no lists expected.
    let sources: Vec<&str> = got.errors.iter().map(|e| e.source.as_str()).collect();
    assert_eq!(sources, ["/etc/os-release"]);
}

#[test]
fn hostile_files_give_errors_not_panics() {
    let dir = tree_copy();
    let root = Root::new(dir.path());
    let p = |rel: &str| dir.path().join(rel);
    let lists = p(LISTS_DIR);
    // Status: binary junk and invalid UTF-8 between good paragraphs.
    let mut status = fs::read(p("var/lib/dpkg/status")).unwrap();
    status.extend_from_slice(b"\n\n\x00\xff\xfe garbage\x01\n\nPackage: \xc3\x28\nStatus: install ok installed\nVersion: 1\n");
    fs::write(p("var/lib/dpkg/status"), status).unwrap();
    // Sources: junk in both syntaxes, an unterminated option block, a huge line.
    fs::write(
        p("etc/apt/sources.list.d/junk.list"),
        b"deb [arch=amd64 http://x/ y z\n\xff\xfe\x00\ndeb http://ok.example/ s c\n",
    )
    .unwrap();
    let mut huge = b"Types: deb\nURIs: http://h/\nSuites: s\nComponents: ".to_vec();
    huge.extend(std::iter::repeat_n(b'c', 1 << 20));
    fs::write(p("etc/apt/sources.list.d/huge.sources"), huge).unwrap();
    fs::write(
        p("etc/apt/sources.list.d/bin.sources"),
        [0u8, 159, 146, 150, b'\n', b':', b'\n'],
    )
    .unwrap();
    // Lists: a directory where a list should be, plain text named .lz4, an unsupported
    // compression, a list without paragraph breaks, a garbage InRelease.
    fs::create_dir(lists.join("ok.example_s_c_binary-amd64_Packages")).unwrap();
    fs::write(
        lists.join("ok.example_dists_s_c_binary-amd64_Packages.lz4"),
        "Package: a\n",
    )
    .unwrap();
    fs::write(
        lists.join("h_dists_s_cc_binary-amd64_Packages.zst"),
        [0x28, 0xb5, 0x2f, 0xfd],
    )
    .unwrap();
    fs::write(
        lists.join("deb.debian.org_debian_dists_bookworm_InRelease"),
        b"-----BEGIN PGP SIGNED MESSAGE-----\n\xff",
    )
    .unwrap();
    fs::write(
        lists.join("x_dists_y_z_binary-amd64_Packages"),
        vec![b'A'; 1 << 16],
    )
    .unwrap();
    fs::write(lists.join("ok.example_dists_s_Release"), b"\x00\x01\x02").unwrap();

    let got = DebScanner::new().scan(&root);
    let by_source = |s: &str| got.errors.iter().filter(|e| e.source.contains(s)).count();
    assert!(by_source("/var/lib/dpkg/status") >= 2, "{:#?}", got.errors);
    assert!(by_source("junk.list") >= 2, "{:#?}", got.errors);
    assert!(by_source("bin.sources") >= 1, "{:#?}", got.errors);
    assert_eq!(
        by_source("ok.example_dists_s_c_binary-amd64_Packages.lz4"),
        1
    );
    assert_eq!(by_source("ok.example_s_c_binary-amd64_Packages"), 1);
    assert_eq!(by_source("h_dists_s_cc_binary-amd64_Packages.zst"), 1);
    assert_eq!(by_source("bookworm_InRelease"), 1);
    assert_eq!(by_source("ok.example_dists_s_Release"), 1);
    // The good paragraphs of the status file still stand, and with them the attribution
    // (main's Release is unreadable, so Debian's packages lose the vendor, not the repository).
    let m = by_name(&got.value);
    assert_eq!(m["dpkg"].0, ThirdPartyRepo);
    assert_eq!(m["dpkg"].1, "deb.debian.org");
    assert_eq!(m["openssl"].0, OsVendor);
    assert_eq!(m.len(), 14);
}
