//! The storage probe over fixture roots laid out as the kernel lays out proc and sysfs, with
//! LUKS images made by `cryptsetup luksFormat` here (skipped without cryptsetup unless
//! `VAKT_REQUIRE_TOOLS=1`) or the checked-in header bytes.

use super::*;
use std::path::PathBuf;
use std::process::Command;

const LUKS1_HDR: &[u8] = include_bytes!("fixtures/luks1.hdr");
const LUKS2_HDR: &[u8] = include_bytes!("fixtures/luks2.hdr");

struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(mounts: &str, swaps: &str) -> Self {
        let f = Self {
            dir: tempfile::tempdir().unwrap(),
        };
        f.write("proc/mounts", mounts.as_bytes());
        f.write(
            "proc/swaps",
            format!("Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n{swaps}").as_bytes(),
        );
        f
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn write(&self, rel: &str, bytes: &[u8]) {
        let p = self.path(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, bytes).unwrap();
    }

    /// A device-mapper device as sysfs shows it: `dm/name`, `dm/uuid`, and `slaves/` entries
    /// that are symlinks into the device tree (`../../nvme0n1/nvme0n1p3` for a partition).
    fn dm(&self, kernel: &str, name: &str, uuid: &str, slaves: &[&str]) {
        self.write(
            &format!("sys/block/{kernel}/dm/name"),
            format!("{name}\n").as_bytes(),
        );
        self.write(
            &format!("sys/block/{kernel}/dm/uuid"),
            format!("{uuid}\n").as_bytes(),
        );
        let dir = self.path(&format!("sys/block/{kernel}/slaves"));
        std::fs::create_dir_all(&dir).unwrap();
        for s in slaves {
            let target = if s.starts_with("dm-") {
                format!("../../{s}")
            } else {
                format!("../../nvme0n1/{s}")
            };
            std::os::unix::fs::symlink(target, dir.join(s)).unwrap();
        }
    }

    fn tpm2_and_secure_boot(&self) {
        self.write("sys/class/tpm/tpm0/tpm_version_major", b"2\n");
        self.write(&SECURE_BOOT_VAR[1..], &[0x06, 0x00, 0x00, 0x00, 0x01]);
    }

    fn collect(&self) -> Collected<Storage> {
        collect(&Root::new(self.dir.path()))
    }
}

/// Whether cryptsetup is here; without it a test prints SKIP and returns, unless CI requires
/// the tool (`VAKT_REQUIRE_TOOLS=1`).
fn have_cryptsetup() -> bool {
    if Command::new("cryptsetup").arg("--version").output().is_ok() {
        return true;
    }
    let required = std::env::var("VAKT_REQUIRE_TOOLS").is_ok_and(|v| v == "1");
    assert!(
        !required,
        "cryptsetup is required (VAKT_REQUIRE_TOOLS=1) but missing"
    );
    eprintln!("SKIP: cryptsetup missing");
    false
}

/// Makes `dev/<name>` a 20 MiB image formatted by cryptsetup (`luks1` or `luks2`), with a
/// cheap key derivation: the tests are about the header's facts, not brute-force resistance.
fn luks_format(f: &Fixture, name: &str, kind: &str) {
    let img = f.path(&format!("dev/{name}"));
    std::fs::create_dir_all(img.parent().unwrap()).unwrap();
    std::fs::File::create(&img)
        .unwrap()
        .set_len(20 * 1024 * 1024)
        .unwrap();
    let key = f.path("key");
    std::fs::write(&key, "korrekt häst batteri häftstift").unwrap();
    let mut args = vec!["luksFormat", "--batch-mode", "--type", kind, "--key-file"];
    args.push(key.to_str().unwrap());
    if kind == "luks2" {
        args.extend(["--pbkdf", "argon2id", "--pbkdf-memory", "32"]);
        args.extend(["--pbkdf-force-iterations", "4"]);
    } else {
        args.extend(["--pbkdf-force-iterations", "1000"]);
    }
    args.push(img.to_str().unwrap());
    let out = Command::new("cryptsetup").args(&args).output().unwrap();
    assert!(
        out.status.success(),
        "luksFormat: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The root file system on LUKS2: `nvme0n1p3` formatted, opened as `dm-0` (`luks-root`).
fn luks_root(f: &Fixture) {
    luks_format(f, "nvme0n1p3", "luks2");
    f.dm(
        "dm-0",
        "luks-root",
        "CRYPT-LUKS2-b243fdf7e11042c182ff79ab92916df9-luks-root",
        &["nvme0n1p3"],
    );
}

fn json(c: &Collected<Storage>) -> serde_json::Value {
    serde_json::to_value(&c.value).unwrap()
}

#[test]
fn root_encrypted_and_home_plain() {
    if !have_cryptsetup() {
        return;
    }
    let f = Fixture::new(
        "proc /proc proc rw 0 0\n\
         /dev/mapper/luks-root / ext4 rw,relatime 0 0\n\
         tmpfs /run tmpfs rw 0 0\n\
         /dev/sdb1 /home ext4 rw 0 0\n\
         /dev/nvme0n1p1 /boot/efi vfat rw 0 0\n",
        "/dev/nvme0n1p2                          partition\t8388604\t\t0\t\t-2\n",
    );
    luks_root(&f);
    f.tpm2_and_secure_boot();
    let got = f.collect();
    assert!(got.errors.is_empty(), "{:?}", got.errors);
    assert_eq!(
        json(&got),
        serde_json::json!({
            "volumes": [
                {"mount": "/", "device": "/dev/nvme0n1p3", "encrypted": true, "scheme": "luks2",
                 "cipher": "aes-xts-plain64", "key_size": 512, "key_slots": 1,
                 "pbkdf": "argon2id", "mapper": "luks-root"},
                {"mount": "/home", "device": "/dev/sdb1", "encrypted": false},
                {"mount": "/boot/efi", "device": "/dev/nvme0n1p1", "encrypted": false},
            ],
            "swap": [{"device": "/dev/nvme0n1p2", "encrypted": false}],
            "tpm": true,
            "secure_boot": true,
        })
    );
}

#[test]
fn everything_encrypted_with_a_random_key_swap() {
    if !have_cryptsetup() {
        return;
    }
    // The root mounted by its kernel name and again as a bind mount: one volume.
    let f = Fixture::new(
        "/dev/dm-0 / ext4 rw 0 0\n\
         /dev/mapper/luks-root /srv/bind ext4 rw 0 0\n\
         /dev/mapper/luks-home /home ext4 rw 0 0\n",
        "/dev/dm-2 partition 8388604 0 -2\n/swap.img file 2097148 0 -3\n",
    );
    luks_format(&f, "nvme0n1p3", "luks1");
    luks_format(&f, "nvme0n1p4", "luks2");
    f.dm(
        "dm-0",
        "luks-root",
        "CRYPT-LUKS1-125cac0a6b5a4d30bb123af18884fb54-luks-root",
        &["nvme0n1p3"],
    );
    f.dm(
        "dm-1",
        "luks-home",
        "CRYPT-LUKS2-b243fdf7e11042c182ff79ab92916df9-luks-home",
        &["nvme0n1p4"],
    );
    f.dm("dm-2", "cryptswap", "CRYPT-PLAIN-cryptswap", &["nvme0n1p2"]);
    let got = f.collect();
    assert!(got.errors.is_empty(), "{:?}", got.errors);
    let s = &got.value;
    assert_eq!(s.volumes.len(), 2, "{:?}", s.volumes);
    assert_eq!(s.volumes[0].mount, "/");
    assert_eq!(s.volumes[0].scheme, Some(CryptScheme::Luks1));
    assert_eq!(s.volumes[0].pbkdf, "pbkdf2");
    assert_eq!(s.volumes[0].key_size, 512);
    assert_eq!(s.volumes[0].key_slots, Some(1));
    assert_eq!(s.volumes[1].mount, "/home");
    assert_eq!(s.volumes[1].scheme, Some(CryptScheme::Luks2));
    assert!(s.volumes.iter().all(|v| v.encrypted));
    assert_eq!(
        serde_json::to_value(&s.swap).unwrap(),
        serde_json::json!([
            {"device": "/dev/nvme0n1p2", "encrypted": true, "scheme": "plain", "mapper": "cryptswap"},
            // A swap file is as encrypted as the volume it lives on.
            {"device": "/dev/nvme0n1p3", "encrypted": true, "scheme": "luks1",
             "cipher": "aes-xts-plain64", "key_size": 512, "key_slots": 1,
             "pbkdf": "pbkdf2", "mapper": "luks-root"},
        ])
    );
    assert!(!s.tpm && !s.secure_boot, "neither is in this fixture");
}

#[test]
fn lvm_on_luks() {
    if !have_cryptsetup() {
        return;
    }
    let f = Fixture::new(
        "/dev/mapper/vg-root / ext4 rw 0 0\n/dev/mapper/vg-home /home ext4 rw 0 0\n",
        "/dev/dm-3 partition 8388604 0 -2\n",
    );
    luks_format(&f, "nvme0n1p3", "luks2");
    f.dm(
        "dm-0",
        "luks-pv",
        "CRYPT-LUKS2-b243fdf7e11042c182ff79ab92916df9-luks-pv",
        &["nvme0n1p3"],
    );
    f.dm("dm-1", "vg-root", "LVM-abcdefROOT", &["dm-0"]);
    f.dm("dm-2", "vg-home", "LVM-abcdefHOME", &["dm-0"]);
    f.dm("dm-3", "vg-swap", "LVM-abcdefSWAP", &["dm-0"]);
    let got = f.collect();
    assert!(got.errors.is_empty(), "{:?}", got.errors);
    let s = &got.value;
    for v in s.volumes.iter().chain(&s.swap) {
        assert!(v.encrypted, "{v:?}");
        assert_eq!(v.device, "/dev/nvme0n1p3");
        assert_eq!(v.mapper, "luks-pv");
        assert_eq!(v.cipher, "aes-xts-plain64");
    }
    assert_eq!(s.volumes.len(), 2);
    assert_eq!(s.swap.len(), 1);
}

#[test]
fn a_volume_group_over_one_luks_and_one_plain_disk_is_not_encrypted() {
    let f = Fixture::new("/dev/mapper/vg-root / ext4 rw 0 0\n", "");
    f.write("dev/nvme0n1p3", LUKS2_HDR);
    f.dm("dm-0", "luks-pv", "CRYPT-LUKS2-x-luks-pv", &["nvme0n1p3"]);
    f.dm("dm-1", "vg-root", "LVM-abcdef", &["dm-0", "sda1"]);
    let got = f.collect();
    assert!(got.errors.is_empty(), "{:?}", got.errors);
    let v = &got.value.volumes[0];
    assert!(!v.encrypted, "one path to a disk is in clear");
    assert_eq!(
        (v.device.as_str(), v.mapper.as_str()),
        ("/dev/nvme0n1p3", "luks-pv")
    );
    assert_eq!(v.more_devices.len(), 1);
    assert_eq!(v.more_devices[0].device, "/dev/sda1");
    assert!(!v.more_devices[0].encrypted);
}

#[test]
fn a_corrupt_header_is_an_error_for_its_volume_only() {
    let f = Fixture::new(
        "/dev/mapper/luks-root / ext4 rw 0 0\n/dev/mapper/luks-home /home ext4 rw 0 0\n",
        "",
    );
    let mut bad = LUKS2_HDR.to_vec();
    bad[luks::BINARY_HEADER + 20] ^= 0x20;
    f.write("dev/nvme0n1p3", &bad);
    f.write("dev/nvme0n1p4", LUKS1_HDR);
    f.dm(
        "dm-0",
        "luks-root",
        "CRYPT-LUKS2-x-luks-root",
        &["nvme0n1p3"],
    );
    f.dm(
        "dm-1",
        "luks-home",
        "CRYPT-LUKS1-y-luks-home",
        &["nvme0n1p4"],
    );
    let got = f.collect();
    assert_eq!(got.errors.len(), 1, "{:?}", got.errors);
    assert_eq!(got.errors[0].source, "/dev/nvme0n1p3");
    assert!(
        got.errors[0].message.contains("checksum"),
        "{:?}",
        got.errors
    );
    let root = &got.value.volumes[0];
    // What device-mapper says still stands; the header's facts are unknown, not zero.
    assert!(root.encrypted);
    assert_eq!(root.scheme, Some(CryptScheme::Luks2));
    assert_eq!((root.cipher.as_str(), root.key_slots), ("", None));
    let home = &got.value.volumes[1];
    assert_eq!(
        (home.cipher.as_str(), home.key_slots),
        ("aes-xts-plain64", Some(1))
    );
}

#[test]
fn hostile_trees_neither_hang_nor_escape() {
    let f = Fixture::new(
        "/dev/mapper/fifo / ext4 rw 0 0\n\
         /dev/mapper/link /home ext4 rw 0 0\n\
         /dev/mapper/loop /var ext4 rw 0 0\n",
        "",
    );
    // A FIFO where the header should be: opening it must not wait for a writer.
    std::fs::create_dir_all(f.path("dev")).unwrap();
    let fifo = f.path("dev/sda1");
    assert!(
        Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    f.dm("dm-0", "fifo", "CRYPT-LUKS2-x-fifo", &["sda1"]);
    // A symlink where the header should be: not followed.
    f.write("outside.img", LUKS2_HDR);
    std::os::unix::fs::symlink(f.path("outside.img"), f.path("dev/sdb1")).unwrap();
    let link_dir = f.path("sys/block/dm-1/slaves");
    f.dm("dm-1", "link", "CRYPT-LUKS2-x-link", &[]);
    std::os::unix::fs::symlink("../../sdb/sdb1", link_dir.join("sdb1")).unwrap();
    // A slaves loop: dm-2 → dm-3 → dm-2.
    f.dm("dm-2", "loop", "LVM-a", &["dm-3"]);
    f.dm("dm-3", "loop2", "LVM-b", &["dm-2"]);
    let got = f.collect();
    let msgs: Vec<String> = got
        .errors
        .iter()
        .map(|e| format!("{}: {}", e.source, e.message))
        .collect();
    assert_eq!(got.value.volumes.len(), 3, "{msgs:?}");
    assert!(
        msgs.iter()
            .any(|m| m.starts_with("/dev/sda1: neither a block device")),
        "{msgs:?}"
    );
    assert!(
        msgs.iter().any(|m| m.starts_with("/dev/sdb1: ")),
        "{msgs:?}"
    );
    assert!(msgs.iter().any(|m| m.contains("deeper than")), "{msgs:?}");
    assert!(
        got.value.volumes[1].key_slots.is_none(),
        "the link was not followed"
    );
}

#[test]
fn tpm_1_2_and_secure_boot_off() {
    let f = Fixture::new("", "");
    f.write("sys/class/tpm/tpm0/tpm_version_major", b"1\n");
    f.write(&SECURE_BOOT_VAR[1..], &[0x06, 0, 0, 0, 0]);
    let got = f.collect();
    assert!(got.errors.is_empty(), "{:?}", got.errors);
    assert!(!got.value.tpm && !got.value.secure_boot);
    f.write(&SECURE_BOOT_VAR[1..], &[0x06, 0, 0]);
    let got = f.collect();
    assert_eq!(got.errors.len(), 1);
    assert!(
        got.errors[0].message.contains("5 expected"),
        "{:?}",
        got.errors
    );
}

/// The configured wipe devices are reported as the probe names the devices they are: a
/// `/dev/disk/by-uuid/…` link to the root's LUKS partition is told as `/dev/nvme0n1p3`, the
/// name the server compares with the volumes (it cannot follow the laptop's links, and
/// before this said "not among the configured wipe devices" of a device that was). A device
/// that is none of the user data's stays as written.
#[test]
fn the_reported_wipe_plan_names_devices_as_the_probe_does() {
    if !have_cryptsetup() {
        return;
    }
    let f = Fixture::new("/dev/mapper/luks-root / ext4 rw,relatime 0 0\n", "");
    luks_root(&f);
    std::fs::create_dir_all(f.path("dev/disk/by-uuid")).unwrap();
    std::os::unix::fs::symlink("../../nvme0n1p3", f.path("dev/disk/by-uuid/b243fdf7")).unwrap();
    let plan = vakt_proto::model::WipePlan {
        strategy: vakt_proto::model::WipeStrategy::LuksErase,
        devices: vec!["/dev/disk/by-uuid/b243fdf7".into(), "/dev/sdz9".into()],
    };
    let report = crate::collect::Collector::new(Root::new(f.dir.path()))
        .with_wipe(plan)
        .collect();
    let wipe = report.storage.wipe.unwrap();
    assert_eq!(wipe.devices, ["/dev/nvme0n1p3", "/dev/sdz9"]);
}
