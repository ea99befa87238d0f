//! Host facts: the running system through sysinfo (kernel, CPU, memory, disks, uptime), and the
//! identity files under the agent's root (`/etc/os-release`, `/etc/machine-id`, DMI).

use super::userfile::{self, ReadError};
use super::{Collected, Root};
use std::path::Path;
use vakt_proto::model::{Disk, HostFacts, SectionKind};

/// An identity file is a line or two; os-release a few hundred bytes.
const IDENTITY_CAP: u64 = 64 * 1024;

/// Collects the host facts. Files that are missing (DMI on a VM, say) leave their field empty;
/// files that exist but cannot be read are reported.
pub fn collect(root: &Root) -> Collected<HostFacts> {
    let mut out = Collected::new(HostFacts::default());
    let h = &mut out.value;

    h.hostname = sysinfo::System::host_name().unwrap_or_default();
    h.kernel = sysinfo::System::kernel_version().unwrap_or_default();
    h.arch = sysinfo::System::cpu_arch();
    h.uptime_s = sysinfo::System::uptime();
    h.boot_time_ms = i64::try_from(sysinfo::System::boot_time())
        .unwrap_or(0)
        .saturating_mul(1000);

    let mut sys = sysinfo::System::new();
    sys.refresh_memory();
    sys.refresh_cpu_list(sysinfo::CpuRefreshKind::nothing());
    h.memory_bytes = sys.total_memory();
    h.cpu = sys
        .cpus()
        .first()
        .map(|c| c.brand().trim().to_string())
        .unwrap_or_default();
    h.cpu_cores = u32::try_from(sys.cpus().len()).unwrap_or(u32::MAX);

    let disks = sysinfo::Disks::new_with_refreshed_list();
    h.disks = disks
        .list()
        .iter()
        .filter(|d| is_real_fs(&d.file_system().to_string_lossy()))
        .map(|d| Disk {
            mount_point: d.mount_point().display().to_string(),
            file_system: d.file_system().to_string_lossy().into_owned(),
            total_bytes: d.total_space(),
            available_bytes: d.available_space(),
            removable: d.is_removable(),
        })
        .collect();

    let mut read = |device_path: &str| -> Option<String> {
        match userfile::read(root, Path::new(device_path), IDENTITY_CAP) {
            Ok(Some(bytes)) => Some(String::from_utf8_lossy(&bytes).trim().to_string()),
            Ok(None) => None,
            // DMI serials are root-only; an agent run by a user simply doesn't see them.
            Err(ReadError::Io(e)) if e.kind() == std::io::ErrorKind::PermissionDenied => None,
            Err(e) => {
                out.errors.push(vakt_proto::model::CollectorError {
                    section: SectionKind::Host,
                    source: device_path.to_string(),
                    message: e.to_string(),
                });
                None
            }
        }
    };
    let os_release = read("/etc/os-release").or_else(|| read("/usr/lib/os-release"));
    let machine_id = read("/etc/machine-id");
    let serial = read("/sys/class/dmi/id/product_serial");
    let vendor = read("/sys/class/dmi/id/sys_vendor");
    let model = read("/sys/class/dmi/id/product_name");

    let h = &mut out.value;
    if let Some(text) = os_release {
        let os = parse_os_release(&text);
        h.os = os.pretty_name;
        h.os_version = os.version_id;
    } else {
        h.os = sysinfo::System::long_os_version().unwrap_or_default();
        h.os_version = sysinfo::System::os_version().unwrap_or_default();
    }
    h.machine_id = machine_id.unwrap_or_default();
    h.serial = serial.map(clean_dmi).unwrap_or_default();
    h.vendor = vendor.map(clean_dmi).unwrap_or_default();
    h.model = model.map(clean_dmi).unwrap_or_default();
    out
}

/// Pseudo and virtual file systems are not disks anyone manages.
fn is_real_fs(fs: &str) -> bool {
    !matches!(
        fs,
        "overlay" | "tmpfs" | "devtmpfs" | "squashfs" | "proc" | "sysfs" | "nsfs" | "ramfs"
    )
}

/// Vendors fill unset DMI fields with filler; report those as unknown.
fn clean_dmi(s: String) -> String {
    const FILLER: [&str; 6] = [
        "To Be Filled By O.E.M.",
        "Default string",
        "System Serial Number",
        "Not Specified",
        "None",
        "0",
    ];
    if FILLER.iter().any(|f| s.eq_ignore_ascii_case(f)) {
        String::new()
    } else {
        s
    }
}

/// The fields of os-release(5) the host section uses.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct OsRelease {
    pub pretty_name: String,
    pub version_id: String,
}

/// Parses os-release(5): `KEY=value` lines, values optionally quoted with shell escapes.
pub fn parse_os_release(text: &str) -> OsRelease {
    let mut out = OsRelease::default();
    let mut name = String::new();
    for line in text.lines() {
        let line = line.trim();
        let Some((key, raw)) = line.split_once('=') else {
            continue;
        };
        let value = unquote(raw.trim());
        match key.trim() {
            "PRETTY_NAME" => out.pretty_name = value,
            "VERSION_ID" => out.version_id = value,
            "NAME" => name = value,
            _ => {}
        }
    }
    if out.pretty_name.is_empty() {
        out.pretty_name = name;
    }
    out
}

fn unquote(v: &str) -> String {
    let inner = v
        .strip_prefix('"')
        .and_then(|s| s.strip_suffix('"'))
        .or_else(|| v.strip_prefix('\'').and_then(|s| s.strip_suffix('\'')))
        .unwrap_or(v);
    let mut out = String::with_capacity(inner.len());
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            if let Some(n) = chars.next() {
                out.push(n);
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn os_release_quoted_and_escaped() {
        let t = "NAME=\"Debian GNU/Linux\"\nVERSION_ID=\"12\"\nPRETTY_NAME=\"Debian \\\"GNU\\\"/Linux 12 (bookworm)\"\n# comment\ngarbage line\n";
        let os = parse_os_release(t);
        assert_eq!(os.pretty_name, "Debian \"GNU\"/Linux 12 (bookworm)");
        assert_eq!(os.version_id, "12");
    }

    #[test]
    fn os_release_falls_back_to_name() {
        assert_eq!(parse_os_release("NAME=Arch\n").pretty_name, "Arch");
    }

    #[test]
    fn reads_identity_under_root() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("sys/class/dmi/id")).unwrap();
        std::fs::write(dir.path().join("etc/machine-id"), "abc123\n").unwrap();
        std::fs::write(
            dir.path().join("etc/os-release"),
            "PRETTY_NAME=\"Fixture OS\"\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sys/class/dmi/id/product_serial"),
            "SN-42\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("sys/class/dmi/id/sys_vendor"),
            "Default string\n",
        )
        .unwrap();
        let got = collect(&Root::new(dir.path()));
        assert_eq!(got.value.machine_id, "abc123");
        assert_eq!(got.value.os, "Fixture OS");
        assert_eq!(got.value.serial, "SN-42");
        assert_eq!(got.value.vendor, "", "filler is not a vendor");
        assert!(got.errors.is_empty());
    }
}
