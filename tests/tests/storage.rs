//! The storage section end to end: an agent on a laptop tree whose root is LUKS2 (the
//! checked-in header bytes stand in for the partition) and whose /home is plain reports it,
//! and `vakt device show --json` and `vakt-agent collect --json` print it in INTERFACE.md's
//! shape. Then wipe readiness for two laptops (that one, and one with everything encrypted)
//! on the device, the device list and a loss case, and the `disk-encryption` notice (8.1).

#![allow(clippy::unwrap_used)] // a test file: helpers outside #[test] fns may unwrap too

use std::path::Path;
use std::process::Command;
use std::time::Duration;
use vakt_tests::{TestAgent, TestServer, bin, laptop_root, stderr, wait_for};

const LUKS2_HDR: &[u8] = include_bytes!("../../agent/src/collect/storage/fixtures/luks2.hdr");

fn write(root: &Path, rel: &str, bytes: &[u8]) {
    let p = root.join(rel);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, bytes).unwrap();
}

/// Root on LUKS2 (`/dev/mapper/luks-root` = dm-0 over nvme0n1p3), /home plain, swap plain.
fn laptop(dir: &Path) -> std::path::PathBuf {
    let root = laptop_root(dir, &["anna"]);
    write(
        &root,
        "proc/mounts",
        b"/dev/mapper/luks-root / ext4 rw 0 0\n/dev/sdb1 /home ext4 rw 0 0\n",
    );
    write(
        &root,
        "proc/swaps",
        b"Filename Type Size Used Priority\n/dev/nvme0n1p2 partition 8388604 0 -2\n",
    );
    write(&root, "sys/block/dm-0/dm/name", b"luks-root\n");
    write(
        &root,
        "sys/block/dm-0/dm/uuid",
        b"CRYPT-LUKS2-b243fdf7-luks-root\n",
    );
    std::fs::create_dir_all(root.join("sys/block/dm-0/slaves")).unwrap();
    std::os::unix::fs::symlink(
        "../../nvme0n1/nvme0n1p3",
        root.join("sys/block/dm-0/slaves/nvme0n1p3"),
    )
    .unwrap();
    write(&root, "dev/nvme0n1p3", LUKS2_HDR);
    write(&root, "sys/class/tpm/tpm0/tpm_version_major", b"2\n");
    root
}

fn expected() -> serde_json::Value {
    serde_json::json!({
        "volumes": [
            {"mount": "/", "device": "/dev/nvme0n1p3", "encrypted": true, "scheme": "luks2",
             "cipher": "aes-xts-plain64", "key_size": 512, "key_slots": 1, "pbkdf": "argon2id",
             "mapper": "luks-root"},
            {"mount": "/home", "device": "/dev/sdb1", "encrypted": false},
        ],
        "swap": [{"device": "/dev/nvme0n1p2", "encrypted": false}],
        "tpm": true,
        "secure_boot": false,
    })
}

#[test]
fn device_show_and_collect_print_the_storage_section() {
    let tmp = tempfile::tempdir().unwrap();
    let root = laptop(&tmp.path().join("laptop"));

    let out = Command::new(bin("vakt-agent"))
        .args(["collect", "--json", "--root"])
        .arg(&root)
        .output()
        .unwrap();
    assert!(out.status.success(), "collect: {}", stderr(&out));
    let collected: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(collected["storage"], expected());

    let server = TestServer::start(&tmp.path().join("server"));
    let token = server.enroll_token(&[]);
    let extra = format!("root = {:?}\n", root.display().to_string());
    let agent = TestAgent::with_config(&tmp.path().join("agent"), &server, &token, &extra);
    let out = agent.run_once();
    assert!(out.status.success(), "agent: {}", stderr(&out));
    let show = server.vakt_json(&["device", "show", &agent.device_id()]);
    // The agent run with a configuration reports its wipe plan too (the default: luks-erase of
    // the devices found at the wipe).
    let mut with_plan = expected();
    with_plan["wipe"] = serde_json::json!({"strategy": "luks-erase"});
    assert_eq!(show["storage"], with_plan);
    let text = server.vakt_ok(&["device", "show", &agent.device_id()]);
    assert!(
        text.contains("/home") && text.contains("NOT encrypted"),
        "{text}"
    );
}

/// Everything encrypted: / and /home on LUKS2 (dm-0, dm-1), swap on plain dm-crypt with a
/// random key (dm-2, `CRYPT-PLAIN`).
fn encrypted_laptop(dir: &Path) -> std::path::PathBuf {
    let root = laptop_root(dir, &["bertil"]);
    write(
        &root,
        "proc/mounts",
        b"/dev/mapper/luks-root / ext4 rw 0 0\n/dev/mapper/luks-home /home ext4 rw 0 0\n",
    );
    write(
        &root,
        "proc/swaps",
        b"Filename Type Size Used Priority\n/dev/dm-2 partition 8388604 0 -2\n",
    );
    for (dm, name, uuid, under) in [
        (
            "dm-0",
            "luks-root",
            "CRYPT-LUKS2-b243fdf7-luks-root",
            "nvme0n1p3",
        ),
        (
            "dm-1",
            "luks-home",
            "CRYPT-LUKS2-5c1d2e3f-luks-home",
            "nvme0n1p4",
        ),
        ("dm-2", "cryptswap", "CRYPT-PLAIN-cryptswap", "nvme0n1p2"),
    ] {
        write(
            &root,
            &format!("sys/block/{dm}/dm/name"),
            format!("{name}\n").as_bytes(),
        );
        write(
            &root,
            &format!("sys/block/{dm}/dm/uuid"),
            format!("{uuid}\n").as_bytes(),
        );
        std::fs::create_dir_all(root.join(format!("sys/block/{dm}/slaves"))).unwrap();
        std::os::unix::fs::symlink(
            format!("../../nvme0n1/{under}"),
            root.join(format!("sys/block/{dm}/slaves/{under}")),
        )
        .unwrap();
    }
    write(&root, "dev/nvme0n1p3", LUKS2_HDR);
    write(&root, "dev/nvme0n1p4", LUKS2_HDR);
    root
}

/// Open findings of one rule for a device: (section, severity, message_en).
fn findings_of(server: &TestServer, device: &str, rule: &str) -> Vec<(String, String, String)> {
    let all = server.vakt_json(&["findings", "--device", device]);
    all.as_array()
        .unwrap()
        .iter()
        .filter(|f| f["rule"] == rule)
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap().to_string();
            (s("section"), s("severity"), s("message_en"))
        })
        .collect()
}

#[test]
fn wipe_readiness_and_the_disk_encryption_notice_for_two_laptops() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let token = server.enroll_token(&["--uses", "2"]);
    let enroll = |name: &str, root: &Path| {
        let extra = format!(
            "root = {:?}\n[wipe]\nstrategy = \"luks-erase\"\n",
            root.display().to_string()
        );
        let agent = TestAgent::with_config(&tmp.path().join(name), &server, &token, &extra);
        let out = agent.run_once();
        assert!(out.status.success(), "agent {name}: {}", stderr(&out));
        agent.device_id()
    };
    let partial = enroll("a", &laptop(&tmp.path().join("laptop-a")));
    let full = enroll("b", &encrypted_laptop(&tmp.path().join("laptop-b")));
    let readable = serde_json::json!([
        "/home (/dev/sdb1): not encrypted",
        "swap (/dev/nvme0n1p2): not encrypted",
    ]);

    // The device.
    let a = server.vakt_json(&["device", "show", &partial]);
    assert_eq!(a["wipe_readiness"], "partial", "{a:#}");
    assert_eq!(a["wipe_readable"], readable);
    let b = server.vakt_json(&["device", "show", &full]);
    assert_eq!(b["wipe_readiness"], "crypto-erase", "{:#}", b["storage"]);
    assert_eq!(b["wipe_readable"], serde_json::json!([]));
    let text = server.vakt_ok(&["device", "show", &partial]);
    assert!(
        text.contains("wipe        partial (/home (/dev/sdb1): not encrypted; swap"),
        "{text}"
    );
    // As of which report: the device's last, the same time the JSON names `last_report`.
    assert!(!a["last_report"].as_str().unwrap().is_empty(), "{a:#}");
    assert_eq!(a["wipe_readiness_as_of"], a["last_report"], "{a:#}");
    let as_of = format!(
        "not encrypted), as of {} (",
        a["last_report"].as_str().unwrap()
    );
    assert!(text.contains(&as_of), "{text}");

    // The device list: a column, and the field in JSON.
    let list = server.vakt_ok(&["devices"]);
    assert!(list.lines().next().unwrap().contains("WIPE"), "{list}");
    assert!(
        list.contains("partial") && list.contains("crypto-erase"),
        "{list}"
    );
    let rows = server.vakt_json(&["devices"]);
    let of = |id: &str| {
        rows.as_array()
            .unwrap()
            .iter()
            .find(|r| r["id"] == id)
            .unwrap()["wipe_readiness"]
            .clone()
    };
    assert_eq!(
        (of(&partial), of(&full)),
        ("partial".into(), "crypto-erase".into())
    );

    // A loss case carries it, and so does the wipe request the second admin approves.
    for (id, want) in [(&partial, "partial"), (&full, "crypto-erase")] {
        server.vakt_ok(&["loss", "report", id]);
        let case = server.vakt_json(&["loss", "show", id]);
        assert_eq!(case["wipe_readiness"], want, "{case:#}");
    }
    let case = server.vakt_json(&["loss", "show", &partial]);
    assert_eq!(case["wipe_readable"], readable);
    assert_eq!(case["wipe_readiness_as_of"], a["last_report"], "{case:#}");
    let text = server.vakt_ok(&["loss", "show", &partial]);
    assert!(
        text.lines()
            .any(|l| l.starts_with("a wipe     partial") && l.contains(&as_of)),
        "{text}"
    );
    let out = server.vakt(&["wipe", "request", &partial, "--reason", "stulen"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("wipe readiness: partial (/home (/dev/sdb1): not encrypted"),
        "{}",
        stderr(&out)
    );

    // The disk-encryption notice, citing 8.1, for what laptop A would expose; none for B.
    wait_for(
        "the disk-encryption findings",
        Duration::from_secs(30),
        || findings_of(&server, &partial, "disk-encryption").len() == 2,
    );
    let found = findings_of(&server, &partial, "disk-encryption");
    for (section, severity, message) in &found {
        assert_eq!((section.as_str(), severity.as_str()), ("8.1", "notice"));
        assert!(
            message.starts_with("Information, not a breach"),
            "{message}"
        );
    }
    assert!(
        found[0].2.contains("/dev/sdb1") || found[1].2.contains("/dev/sdb1"),
        "{found:?}"
    );
    assert!(findings_of(&server, &full, "disk-encryption").is_empty());
}
