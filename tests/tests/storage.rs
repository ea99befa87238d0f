//! The storage section end to end: an agent on a laptop tree whose root is LUKS2 (the
//! checked-in header bytes stand in for the partition) and whose /home is plain reports it,
//! and `vakt device show --json` and `vakt-agent collect --json` print it in INTERFACE.md's
//! shape.

#![allow(clippy::unwrap_used)] // a test file: helpers outside #[test] fns may unwrap too

use std::path::Path;
use std::process::Command;
use vakt_tests::{TestAgent, TestServer, bin, laptop_root, stderr};

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
    assert_eq!(show["storage"], expected());
    let text = server.vakt_ok(&["device", "show", &agent.device_id()]);
    assert!(
        text.contains("/home") && text.contains("NOT encrypted"),
        "{text}"
    );
}
