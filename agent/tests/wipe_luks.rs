//! `luks-erase` against a real LUKS2 image file made here with cryptsetup: after the wipe no
//! key slot opens it and the header backup is gone.

#![allow(clippy::unwrap_used)]

use std::process::Command;
use vakt_agent::act::wipe::wipe;
use vakt_agent::collect::Root;
use vakt_agent::config::{WipeConfig, WipeStrategy};

fn cryptsetup(args: &[&str]) -> std::process::Output {
    Command::new("cryptsetup").args(args).output().unwrap()
}

#[tokio::test]
async fn luks_erase_leaves_no_key_slot_that_opens_the_volume() {
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
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path();
    std::fs::create_dir_all(root.join("var/lib")).unwrap();
    let image = root.join("var/lib/disk.img");
    let key = dir.path().join("key");
    std::fs::write(&key, "korrekt häst batteri häftstift").unwrap();
    std::fs::File::create(&image)
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
    let opens = |args: &[&str]| cryptsetup(args).status.success();
    assert!(
        opens(&["open", "--test-passphrase", "--key-file", keyf, img]),
        "the key opens it before"
    );

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
    assert!(
        !opens(&["open", "--test-passphrase", "--key-file", keyf, img]),
        "no key slot opens it after"
    );
    assert!(!backup.exists(), "the header backup is destroyed too");
    let dump = String::from_utf8_lossy(&cryptsetup(&["luksDump", img]).stdout).to_string();
    assert!(!dump.contains("0: luks2"), "no keyslot left:\n{dump}");
}
