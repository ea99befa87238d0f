//! The Windows side: reads the Uninstall keys of the real registry (machine, 32-bit view and
//! every loaded user hive) with `winreg`, and asks the package manager
//! (`Windows.Management.Deployment.PackageManager`, which needs the agent's SYSTEM rights to
//! see every user's packages) for AppX/MSIX packages and their signature kind. The registry and
//! the package store are not files under a root, so `root` is not used here.

use super::{
    Hive, RegValue, SignatureKind, WinError, appx_package, parse_appx_manifest,
    parse_uninstall_entry,
};
use crate::collect::{Collected, Root};
use std::collections::BTreeMap;
use vakt_proto::model::{Package, SectionKind};
use winreg::RegKey;
use winreg::enums::{HKEY_LOCAL_MACHINE, HKEY_USERS, KEY_READ, RegType};
use winreg::types::FromRegValue;

const UNINSTALL: &str = r"Software\Microsoft\Windows\CurrentVersion\Uninstall";
const UNINSTALL_32: &str = r"Software\WOW6432Node\Microsoft\Windows\CurrentVersion\Uninstall";
const MANIFEST_CAP: u64 = 4 << 20;

/// Uninstall entries and AppX packages of this machine.
pub fn collect(_root: &Root) -> Collected<Vec<Package>> {
    let mut out = Collected::new(Vec::new());
    let hklm = RegKey::predef(HKEY_LOCAL_MACHINE);
    read_uninstall(&hklm, UNINSTALL, "HKLM", &Hive::Machine, &mut out);
    read_uninstall(&hklm, UNINSTALL_32, "HKLM", &Hive::Machine32, &mut out);
    let hku = RegKey::predef(HKEY_USERS);
    let sids: Vec<String> = hku.enum_keys().filter_map(Result::ok).collect();
    for sid in sids {
        // Loaded user hives are S-1-5-21-...; `_Classes` keys and service accounts hold no
        // per-user programs.
        if !sid.starts_with("S-1-5-21-") || sid.ends_with("_Classes") {
            continue;
        }
        let path = format!(r"{sid}\{UNINSTALL}");
        read_uninstall(&hku, &path, "HKU", &Hive::User(sid.clone()), &mut out);
    }
    read_appx(&mut out);
    out
}

fn read_uninstall(
    hive_key: &RegKey,
    path: &str,
    hive_name: &str,
    hive: &Hive,
    out: &mut Collected<Vec<Package>>,
) {
    let source = format!(r"{hive_name}\{path}");
    let key = match hive_key.open_subkey_with_flags(path, KEY_READ) {
        Ok(k) => k,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            out.error(SectionKind::Software, source, e);
            return;
        }
    };
    for name in key.enum_keys() {
        let name = match name {
            Ok(n) => n,
            Err(e) => {
                out.error(SectionKind::Software, source.clone(), e);
                continue;
            }
        };
        let Ok(sub) = key.open_subkey_with_flags(&name, KEY_READ) else {
            continue;
        };
        let mut values = BTreeMap::new();
        for (value_name, value) in sub.enum_values().filter_map(Result::ok) {
            let v = match value.vtype {
                RegType::REG_SZ | RegType::REG_EXPAND_SZ => String::from_reg_value(&value)
                    .map(RegValue::Str)
                    .unwrap_or(RegValue::Other),
                RegType::REG_DWORD => u32::from_reg_value(&value)
                    .map(RegValue::Dword)
                    .unwrap_or(RegValue::Other),
                _ => RegValue::Other,
            };
            values.insert(value_name, v);
        }
        match parse_uninstall_entry(&name, &values, hive) {
            Ok(Some(p)) => out.value.push(p),
            Ok(None) => {}
            Err(e) => out.error(SectionKind::Software, format!(r"{source}\{name}"), e),
        }
    }
}

fn read_appx(out: &mut Collected<Vec<Package>>) {
    use ::windows::ApplicationModel::PackageSignatureKind as Kind;
    let packages = match ::windows::Management::Deployment::PackageManager::new()
        .and_then(|pm| pm.FindPackages())
    {
        Ok(p) => p,
        Err(e) => {
            out.error(SectionKind::Software, "PackageManager.FindPackages", e);
            return;
        }
    };
    for pkg in packages {
        let Ok(dir) = pkg.InstalledPath() else {
            continue;
        };
        let manifest_path = std::path::Path::new(&dir.to_os_string()).join("AppxManifest.xml");
        let shown = manifest_path.display().to_string();
        let manifest = match read_capped(&manifest_path, MANIFEST_CAP) {
            Ok(b) => parse_appx_manifest(&String::from_utf8_lossy(&b)),
            Err(e) => Err(WinError::Xml(e.to_string())),
        };
        let manifest = match manifest {
            Ok(m) => m,
            Err(e) => {
                out.error(SectionKind::Software, shown, e);
                continue;
            }
        };
        let signature = match pkg.SignatureKind() {
            Ok(Kind::Store) => SignatureKind::Store,
            Ok(Kind::System) => SignatureKind::System,
            Ok(Kind::Enterprise) => SignatureKind::Enterprise,
            Ok(Kind::Developer) => SignatureKind::Developer,
            _ => SignatureKind::None,
        };
        if let Some(p) = appx_package(&manifest, signature, "") {
            out.value.push(p);
        }
    }
}

/// Reads at most `cap` bytes of a package's manifest; a longer one is an error, not a cut-off
/// XML. (Windows: the manifests are under Program Files, no user's FIFO to fear; the Unix
/// collectors read through `collect::userfile`.)
fn read_capped(path: &std::path::Path, cap: u64) -> std::io::Result<Vec<u8>> {
    use std::io::Read;
    let mut buf = Vec::new();
    std::fs::File::open(path)?
        .take(cap.saturating_add(1))
        .read_to_end(&mut buf)?;
    if buf.len() as u64 > cap {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than the {cap}-byte limit"),
        ));
    }
    Ok(buf)
}
