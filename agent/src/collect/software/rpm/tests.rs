//! rpm tests. `tests/fixtures/software/rpm/root/var/lib/rpm/rpmdb.sqlite` is a real database:
//! four packages built with rpmbuild 4.18 and installed with `rpm --justdb` (then switched from
//! WAL to rollback journaling so reading it leaves no -shm file in the tree). The dnf history
//! beside it was created with libdnf's own `create_tables.sql` and migration, then filled with
//! the transactions a Fedora laptop would record.

use super::*;

fn fixture() -> Root {
    Root::new(format!(
        "{}/tests/fixtures/software/rpm/root",
        env!("CARGO_MANIFEST_DIR")
    ))
}

/// A header blob from `(tag, type, count, data)` entries, laid out as rpm does.
fn header(entries: &[(u32, u32, u32, Vec<u8>)]) -> Vec<u8> {
    let mut index = Vec::new();
    let mut data = Vec::new();
    for (tag, ty, count, bytes) in entries {
        if *ty == TYPE_INT32 {
            while data.len() % 4 != 0 {
                data.push(0);
            }
        }
        for v in [*tag, *ty, data.len() as u32, *count] {
            index.extend_from_slice(&v.to_be_bytes());
        }
        data.extend_from_slice(bytes);
    }
    let mut blob = Vec::new();
    blob.extend_from_slice(&(entries.len() as u32).to_be_bytes());
    blob.extend_from_slice(&(data.len() as u32).to_be_bytes());
    blob.extend(index);
    blob.extend(data);
    blob
}

fn s(v: &str) -> Vec<u8> {
    let mut b = v.as_bytes().to_vec();
    b.push(0);
    b
}

#[test]
fn real_rpmdb_with_dnf_history() {
    let got = collect(&fixture());
    assert!(got.errors.is_empty(), "{:?}", got.errors);
    let rows: Vec<(&str, &str, &str, SoftwareSource, &str)> = got
        .value
        .iter()
        .map(|p| {
            assert_eq!(p.format, PackageFormat::Rpm);
            (
                p.name.as_str(),
                p.version.as_str(),
                p.arch.as_str(),
                p.source,
                p.origin.as_str(),
            )
        })
        .collect();
    use SoftwareSource::*;
    assert_eq!(
        rows,
        [
            (
                "google-chrome-stable",
                "124.0.6367.91-1",
                "x86_64",
                ThirdPartyRepo,
                "google-chrome"
            ),
            (
                "local-tool",
                "2:0.1-1",
                "x86_64",
                Unlisted,
                "local package file (no vendor)"
            ),
            // Upgraded from `updates`; the older version's anaconda record no longer applies.
            ("vakt-base", "5.2.26-3.fc40", "x86_64", OsVendor, "updates"),
            (
                "vakt-oldrepo",
                "1.0-1.fc39",
                "x86_64",
                Unlisted,
                "repository copr:copr.fedorainfracloud.org:someone:old (no longer configured; vendor Fedora Project)"
            ),
        ]
    );
}

#[test]
fn real_headers_carry_their_file_lists() {
    let owned = owned_paths(&fixture());
    assert!(owned.errors.is_empty());
    for p in [
        "/opt/google",
        "/opt/google/chrome",
        "/opt/google/chrome/chrome",
        "/usr/bin/vakt-base",
    ] {
        assert!(
            owned.value.iter().any(|o| o == p),
            "{p} in {:?}",
            owned.value
        );
    }
}

#[test]
fn without_history_the_vendor_decides() {
    let h = RpmHeader {
        name: "bash".into(),
        vendor: "Red Hat, Inc.".into(),
        ..Default::default()
    };
    let none = History::default();
    assert_eq!(
        classify(&h, &none, &BTreeSet::new()).0,
        SoftwareSource::OsVendor
    );
    let other = RpmHeader {
        vendor: "Google Inc.".into(),
        ..h.clone()
    };
    assert_eq!(
        classify(&other, &none, &BTreeSet::new()).0,
        SoftwareSource::Unlisted
    );
    // With a history that lacks the package, even the OS vendor's package is unexplained.
    let present = History {
        present: true,
        ..Default::default()
    };
    assert_eq!(
        classify(&h, &present, &BTreeSet::new()),
        (
            SoftwareSource::Unlisted,
            "no dnf record (vendor Red Hat, Inc.)".to_string()
        )
    );
}

#[test]
fn handmade_header_fields() {
    let blob = header(&[
        (TAG_NAME, TYPE_STRING, 1, s("zsh")),
        (TAG_VERSION, TYPE_STRING, 1, s("5.9")),
        (TAG_RELEASE, TYPE_STRING, 1, s("7.fc40")),
        (TAG_EPOCH, TYPE_INT32, 1, 1u32.to_be_bytes().to_vec()),
        (TAG_ARCH, TYPE_STRING, 1, s("aarch64")),
        (TAG_VENDOR, TYPE_STRING, 1, s("Fedora Project")),
        (
            TAG_BASENAMES,
            TYPE_STRING_ARRAY,
            2,
            [s("zsh"), s("zshrc")].concat(),
        ),
        (
            TAG_DIRNAMES,
            TYPE_STRING_ARRAY,
            2,
            [s("/usr/bin/"), s("/etc/")].concat(),
        ),
        (
            TAG_DIRINDEXES,
            TYPE_INT32,
            2,
            [0u32.to_be_bytes(), 1u32.to_be_bytes()].concat(),
        ),
    ]);
    let h = parse_header(&blob).unwrap();
    assert_eq!(h.evr(), "1:5.9-7.fc40");
    assert_eq!(h.arch, "aarch64");
    assert_eq!(h.files, ["/usr/bin/zsh", "/etc/zshrc"]);
}

#[test]
fn hostile_headers_are_errors() {
    assert_eq!(parse_header(b""), Err(RpmError::Truncated(8)));
    // Huge counts are refused before anything is allocated.
    let mut huge = 0xffff_ffffu32.to_be_bytes().to_vec();
    huge.extend_from_slice(&[0, 0, 0, 0]);
    assert_eq!(parse_header(&huge), Err(RpmError::TooManyTags(0xffff_ffff)));
    let mut big_data = 1u32.to_be_bytes().to_vec();
    big_data.extend_from_slice(&0x7fff_ffffu32.to_be_bytes());
    assert_eq!(
        parse_header(&big_data),
        Err(RpmError::TooMuchData(0x7fff_ffff))
    );
    // Index claims more than the blob holds.
    let good = header(&[(TAG_NAME, TYPE_STRING, 1, s("zsh"))]);
    for cut in 0..good.len() {
        assert!(parse_header(&good[..cut]).is_err(), "cut at {cut}");
    }
    // A string array whose count is larger than the data store.
    let lying = header(&[
        (TAG_NAME, TYPE_STRING, 1, s("zsh")),
        (TAG_BASENAMES, TYPE_STRING_ARRAY, 0x0fff_ffff, s("a")),
    ]);
    assert!(matches!(
        parse_header(&lying),
        Err(RpmError::OutOfBounds { .. })
    ));
    // An int32 array running past the end, and an unterminated string.
    let past = header(&[
        (TAG_NAME, TYPE_STRING, 1, s("zsh")),
        (TAG_EPOCH, TYPE_INT32, 0x4000_0000, vec![0, 0, 0, 1]),
    ]);
    assert!(matches!(
        parse_header(&past),
        Err(RpmError::OutOfBounds { .. })
    ));
    let open = header(&[(TAG_NAME, TYPE_STRING, 1, b"zsh".to_vec())]);
    assert_eq!(parse_header(&open), Err(RpmError::Unterminated(TAG_NAME)));
    // A type rpm never writes for the tag, and a directory index past the list.
    let typed = header(&[(TAG_NAME, TYPE_INT32, 1, vec![0, 0, 0, 1])]);
    assert!(matches!(
        parse_header(&typed),
        Err(RpmError::WrongType { .. })
    ));
    let bad_dir = header(&[
        (TAG_NAME, TYPE_STRING, 1, s("zsh")),
        (TAG_BASENAMES, TYPE_STRING_ARRAY, 1, s("zsh")),
        (TAG_DIRNAMES, TYPE_STRING_ARRAY, 1, s("/usr/bin/")),
        (TAG_DIRINDEXES, TYPE_INT32, 1, 9u32.to_be_bytes().to_vec()),
    ]);
    assert_eq!(parse_header(&bad_dir), Err(RpmError::BadDirIndex(9)));
    assert_eq!(parse_header(&header(&[])), Err(RpmError::NoName));
}

#[test]
fn a_corrupt_row_is_named_and_the_others_stand() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("var/lib/rpm")).unwrap();
    let conn = rusqlite::Connection::open(dir.path().join("var/lib/rpm/rpmdb.sqlite")).unwrap();
    conn.execute_batch(
        "CREATE TABLE Packages (hnum INTEGER PRIMARY KEY AUTOINCREMENT, blob BLOB NOT NULL);",
    )
    .unwrap();
    let good = header(&[
        (TAG_NAME, TYPE_STRING, 1, s("zsh")),
        (TAG_VERSION, TYPE_STRING, 1, s("5.9")),
        (TAG_RELEASE, TYPE_STRING, 1, s("1")),
        (TAG_VENDOR, TYPE_STRING, 1, s("Fedora Project")),
    ]);
    let key = header(&[(TAG_NAME, TYPE_STRING, 1, s("gpg-pubkey"))]);
    for blob in [good.clone(), good[..20].to_vec(), key] {
        conn.execute("INSERT INTO Packages (blob) VALUES (?1)", [blob])
            .unwrap();
    }
    drop(conn);
    let got = collect(&Root::new(dir.path()));
    assert_eq!(got.value.len(), 1);
    assert_eq!(got.value[0].name, "zsh");
    // No dnf history at all: the distribution's vendor stands for the repository.
    assert_eq!(got.value[0].source, SoftwareSource::OsVendor);
    assert_eq!(got.errors.len(), 1);
    assert_eq!(got.errors[0].source, "/var/lib/rpm/rpmdb.sqlite (hnum 2)");
}

#[test]
fn a_file_that_is_not_sqlite_is_one_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(dir.path().join("usr/lib/sysimage/rpm")).unwrap();
    std::fs::write(
        dir.path().join("usr/lib/sysimage/rpm/rpmdb.sqlite"),
        b"definitely not a database, just text that goes on for a while........",
    )
    .unwrap();
    let got = collect(&Root::new(dir.path()));
    assert!(got.value.is_empty());
    assert_eq!(got.errors.len(), 1);
    assert_eq!(got.errors[0].source, "/usr/lib/sysimage/rpm/rpmdb.sqlite");
}

#[test]
fn repo_files() {
    assert_eq!(
        parse_repo_ids("[fedora]\nname=x\n\n [updates] \n[main]\n[]\n"),
        ["fedora", "updates"]
    );
}
