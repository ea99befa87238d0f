//! `luks-erase` against a real LUKS2 image file made here with cryptsetup: after the wipe no
//! key slot opens it and the header backup is gone; with no devices configured, the device is
//! found behind /home by the storage probe over a sysfs tree laid out as the kernel does; with
//! devices configured, a LUKS /home the list leaves out is said to stay readable.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use vakt_agent::act::wipe::{WipeReport, wipe};
use vakt_agent::collect::Root;
use vakt_agent::config::{WipeConfig, WipeStrategy};

fn cryptsetup(args: &[&str]) -> std::process::Output {
    Command::new("cryptsetup").args(args).output().unwrap()
}

/// Whether cryptsetup is here; missing is a failure only with VAKT_REQUIRE_TOOLS=1 (CI).
fn have_cryptsetup() -> bool {
    if Command::new("cryptsetup")
        .arg("--version")
        .output()
        .is_err()
    {
        let required = std::env::var("VAKT_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
        assert!(
            !required,
            "cryptsetup is required here (VAKT_REQUIRE_TOOLS=1) but missing"
        );
        eprintln!("SKIP: cryptsetup is not installed (apt-get install cryptsetup-bin)");
        return false;
    }
    true
}

/// A 32 MiB LUKS2 image at `image` with one key slot opened by the file `key`.
fn luks_image(image: &std::path::Path, key: &std::path::Path) {
    std::fs::create_dir_all(image.parent().unwrap()).unwrap();
    std::fs::write(key, "korrekt häst batteri häftstift").unwrap();
    std::fs::File::create(image)
        .unwrap()
        .set_len(32 * 1024 * 1024)
        .unwrap();
    let (img, keyf) = (image.to_str().unwrap(), key.to_str().unwrap());
    // A cheap KDF: the test is about the key slots, not brute-force resistance.
    let out = cryptsetup(&[
        "luksFormat",
        "--batch-mode",
        "--type",
        "luks2",
        "--pbkdf",
        "pbkdf2",
        "--pbkdf-force-iterations",
        "1000",
        "--key-file",
        keyf,
        img,
    ]);
    assert!(
        out.status.success(),
        "luksFormat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Writes `text` to `rel` under `root`, making its directories.
fn put(root: &std::path::Path, rel: &str, text: &str) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, text).unwrap();
}

/// Device-mapper's sysfs for a LUKS2 mapping `name` (kernel name `dm`) over `backing`, as the
/// kernel lays it out.
fn crypt_layer(root: &std::path::Path, dm: &str, name: &str, backing: &str) {
    put(
        root,
        &format!("sys/block/{dm}/dm/name"),
        &format!("{name}\n"),
    );
    put(
        root,
        &format!("sys/block/{dm}/dm/uuid"),
        &format!("CRYPT-LUKS2-0f1e2d3c-{name}\n"),
    );
    let slaves = root.join(format!("sys/block/{dm}/slaves"));
    std::fs::create_dir_all(&slaves).unwrap();
    std::os::unix::fs::symlink(format!("../../{backing}"), slaves.join(backing)).unwrap();
}

fn opens(image: &std::path::Path, key: &std::path::Path) -> bool {
    cryptsetup(&[
        "open",
        "--test-passphrase",
        "--key-file",
        key.to_str().unwrap(),
        image.to_str().unwrap(),
    ])
    .status
    .success()
}

#[tokio::test]
async fn luks_erase_leaves_no_key_slot_that_opens_the_volume() {
    if !have_cryptsetup() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    let image = root.join("var/lib/disk.img");
    let key = dir.path().join("key");
    luks_image(&image, &key);
    let img = image.to_str().unwrap();
    let backup = root.join("var/lib/disk.header");
    let out = cryptsetup(&[
        "luksHeaderBackup",
        "--header-backup-file",
        backup.to_str().unwrap(),
        img,
    ]);
    assert!(
        out.status.success(),
        "luksHeaderBackup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(opens(&image, &key), "the key opens it before");

    let cfg = WipeConfig {
        strategy: WipeStrategy::LuksErase,
        devices: vec!["/var/lib/disk.img".into()],
        paths: vec![],
        header_backups: vec!["/var/lib/disk.header".into()],
        poweroff: false,
    };
    let report = wipe(&Root::new(root), &cfg).await.unwrap();
    assert_eq!(
        report.erased_devices,
        vec!["/var/lib/disk.img".to_string()],
        "{report:?}"
    );
    assert!(!opens(&image, &key), "no key slot opens it after");
    assert!(!backup.exists(), "the header backup is destroyed too");
    // No /proc here: the probe finds no user data, and the result does not claim it is gone.
    assert_eq!(
        report.errors,
        vec![
            "storage probe: no user-data mount (/, /home, /var, /srv) found; what the wipe left \
             readable is not known"
                .to_string()
        ]
    );
    let dump = String::from_utf8_lossy(&cryptsetup(&["luksDump", img]).stdout).to_string();
    assert!(!dump.contains("0: luks2"), "no keyslot left:\n{dump}");
}

/// No devices configured: the wipe finds /home's LUKS device through device-mapper's sysfs
/// (dm-0 named luks-home over vdb) and erases it; the plain root is said to stay readable.
#[tokio::test]
async fn luks_erase_with_no_devices_erases_the_device_behind_home() {
    if !have_cryptsetup() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("root");
    let image = root.join("dev/vdb");
    let key = dir.path().join("key");
    luks_image(&image, &key);
    put(
        &root,
        "proc/mounts",
        "/dev/sda1 / ext4 rw 0 0\n/dev/mapper/luks-home /home ext4 rw 0 0\n",
    );
    crypt_layer(&root, "dm-0", "luks-home", "vdb");
    assert!(opens(&image, &key), "the key opens it before");

    let cfg = WipeConfig {
        strategy: WipeStrategy::LuksErase,
        poweroff: false,
        ..WipeConfig::default()
    };
    let report = wipe(&Root::new(&root), &cfg).await.unwrap();
    assert_eq!(
        report.erased_devices,
        vec!["/dev/vdb".to_string()],
        "{report:?}"
    );
    assert_eq!(
        report.not_encrypted,
        vec!["/ (/dev/sda1): not encrypted".to_string()]
    );
    let summary = report.summary();
    assert!(
        summary.contains("key slots erased on /dev/vdb")
            && summary.contains("user data left readable: / (/dev/sda1)"),
        "{summary}"
    );
    assert!(!opens(&image, &key), "no key slot opens it after");
    let header = vakt_agent::collect::storage::read_header(&image).unwrap();
    assert_eq!(header.active_slots, 0, "the header's key slots are gone");
}

/// Wipes, with `devices` configured, a laptop with `/` on LUKS over vda and `/home` on LUKS
/// over vdb (both real LUKS2 images), vda also named by a link as /dev/disk/by-id/root-disk
/// (`../../vda`, as udev writes it). Returns the result and whether the key still opens vda
/// and vdb after it.
async fn wipe_two_luks_disks(devices: &[&str]) -> (WipeReport, bool, bool) {
    let dir = tempfile::tempdir().unwrap();
    let (root, key) = (dir.path().join("root"), dir.path().join("key"));
    let (vda, vdb) = (root.join("dev/vda"), root.join("dev/vdb"));
    luks_image(&vda, &key);
    luks_image(&vdb, &key);
    put(
        &root,
        "proc/mounts",
        "/dev/mapper/luks-root / ext4 rw 0 0\n/dev/sda1 /boot ext4 rw 0 0\n\
         /dev/mapper/luks-home /home ext4 rw 0 0\n",
    );
    crypt_layer(&root, "dm-0", "luks-root", "vda");
    crypt_layer(&root, "dm-1", "luks-home", "vdb");
    std::fs::create_dir_all(root.join("dev/disk/by-id")).unwrap();
    std::os::unix::fs::symlink("../../vda", root.join("dev/disk/by-id/root-disk")).unwrap();
    assert!(
        opens(&vda, &key) && opens(&vdb, &key),
        "the key opens both before"
    );
    let cfg = WipeConfig {
        strategy: WipeStrategy::LuksErase,
        devices: devices.iter().map(Into::into).collect(),
        poweroff: false,
        ..WipeConfig::default()
    };
    let report = wipe(&Root::new(&root), &cfg).await.unwrap();
    (report, opens(&vda, &key), opens(&vdb, &key))
}

/// The configured list names only the root's disk (by a /dev/disk/by-id link): that is erased
/// and nothing more, and the result says /home stays readable on its LUKS device.
#[tokio::test]
async fn a_configured_list_that_misses_a_luks_home_says_it_stays_readable() {
    if !have_cryptsetup() {
        return;
    }
    let (report, vda_opens, vdb_opens) = wipe_two_luks_disks(&["/dev/disk/by-id/root-disk"]).await;
    assert_eq!(
        report.erased_devices,
        vec!["/dev/disk/by-id/root-disk".to_string()],
        "{report:?}"
    );
    assert_eq!(
        report.not_encrypted,
        vec!["/home (/dev/vdb): LUKS, not among the configured wipe devices".to_string()],
        "{report:?}"
    );
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(
        report
            .summary()
            .contains("user data left readable: /home (/dev/vdb): LUKS, not among"),
        "{}",
        report.summary()
    );
    assert!(!vda_opens, "the root's disk is erased");
    assert!(
        vdb_opens,
        "the list decides what is erased: /home's disk is not"
    );
}

/// A list that covers every user-data mount (one by a link, one by its kernel name) adds
/// nothing to the result.
#[tokio::test]
async fn a_configured_list_that_covers_everything_says_nothing_more() {
    if !have_cryptsetup() {
        return;
    }
    let (report, vda_opens, vdb_opens) =
        wipe_two_luks_disks(&["/dev/disk/by-id/root-disk", "/dev/vdb"]).await;
    assert_eq!(report.erased_devices.len(), 2, "{report:?}");
    assert!(report.not_encrypted.is_empty(), "{report:?}");
    assert!(report.errors.is_empty(), "{report:?}");
    assert!(!vda_opens && !vdb_opens, "{report:?}");
}
