//! Which volumes are encrypted (policy 8.1: a lost laptop's data is safe only if a crypt-erase
//! of its LUKS key slots makes it unreadable), plus TPM 2.0 and Secure Boot.
//!
//! The probe reads, under its root: `/proc/mounts` and `/proc/swaps`; device-mapper's
//! `/sys/block/dm-*/dm/{name,uuid}` and `slaves/`, walked down through stacked layers (LVM,
//! RAID) to the encryption layer (`CRYPT-LUKS2-…`) and its backing device; the LUKS header on
//! that device (parsed by [`luks`]); `/sys/class/tpm`; the `SecureBoot` EFI variable. It never
//! runs lsblk or cryptsetup. A device whose header cannot be read is an error for that volume;
//! the volume is still listed with what device-mapper says.

pub mod luks;
pub mod names;
pub mod tables;

#[cfg(test)]
mod tests;

use crate::collect::userfile::{self, ReadError};
use crate::collect::{Collected, Root};
use std::collections::{BTreeMap, BTreeSet};
use std::io::{self, Read};
use std::path::Path;
use vakt_proto::model::{CryptScheme, SectionKind, Storage, Volume};

/// Device stacks deeper than this are treated as a loop (sysfs cannot have one, a fixture or
/// a hostile tree can).
const MAX_DEPTH: usize = 16;
/// At most this many entries are read from one sysfs directory (`/sys/block`, `slaves/`).
const MAX_ENTRIES: usize = 4096;
/// `/proc/mounts` and `/proc/swaps` beyond this are not read.
const MAX_TABLE: u64 = 4 * 1024 * 1024;
/// A sysfs attribute or EFI variable beyond this is not what the kernel writes.
const MAX_ATTR: u64 = 4096;

const SECURE_BOOT_VAR: &str =
    "/sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c";

fn err<T>(out: &mut Collected<T>, source: impl Into<String>, message: impl ToString) {
    out.error(SectionKind::Storage, source, message);
}

/// Collects the storage section under `root`.
pub fn collect(root: &Root) -> Collected<Storage> {
    let mut out = Collected::new(Storage::default());
    let dm = dm_names(root, &mut out);
    let mut volumes: Vec<Volume> = Vec::new();
    let mut seen = BTreeSet::new();
    if let Some(text) = read_table(root, "/proc/mounts", &mut out) {
        let (mounts, bad) = tables::parse_mounts(&text);
        for b in bad {
            err(&mut out, "/proc/mounts", b);
        }
        for m in mounts {
            let Some(name) = block_name(&m.source, &dm, &mut out) else {
                continue;
            };
            // Bind mounts and the same device by another name (/dev/dm-0 and
            // /dev/mapper/luks-root) are one volume, listed at its first mount point.
            if !seen.insert(name.clone()) {
                continue;
            }
            let mut v = volume(root, &name, &m.source, &mut out);
            v.mount = m.target;
            volumes.push(v);
        }
    }
    if let Some(text) = read_table(root, "/proc/swaps", &mut out) {
        let (swaps, bad) = tables::parse_swaps(&text);
        for b in bad {
            err(&mut out, "/proc/swaps", b);
        }
        for s in swaps {
            let v = if s.kind == "file" {
                swap_file(&s.path, &volumes)
            } else {
                match block_name(&s.path, &dm, &mut out) {
                    Some(name) => volume(root, &name, &s.path, &mut out),
                    None => continue,
                }
            };
            out.value.swap.push(v);
        }
    }
    out.value.volumes = volumes;
    out.value.tpm = tpm2(root, &mut out);
    out.value.secure_boot = secure_boot(root, &mut out);
    out
}

/// A kernel file (under /proc or /sys) through the agent's one reader: by handle from the
/// root, links followed only inside it, the size judged first; `None` when absent.
fn read_optional(root: &Root, path: &str, cap: u64) -> Result<Option<Vec<u8>>, ReadError> {
    userfile::read(root, Path::new(path), cap)
}

/// The names in a directory (one more than [`MAX_ENTRIES`] at most, so "more" can be said);
/// `None` when absent.
fn list_dir(root: &Root, dir: &str) -> Result<Option<Vec<String>>, ReadError> {
    let Some(handle) = userfile::open_dir(root, Path::new(dir))? else {
        return Ok(None);
    };
    let listing = handle.list(MAX_ENTRIES + 1)?;
    Ok(Some(listing.entries.into_iter().map(|e| e.name).collect()))
}

fn read_table<T>(root: &Root, path: &str, out: &mut Collected<T>) -> Option<String> {
    match read_optional(root, path, MAX_TABLE) {
        Ok(Some(b)) => Some(String::from_utf8_lossy(&b).into_owned()),
        // No /proc: not Linux (the agent runs on macOS and Windows too), nothing to say.
        Ok(None) => None,
        Err(e) => {
            err(out, path, e);
            None
        }
    }
}

/// A small sysfs attribute, trimmed; `None` when absent.
fn attr<T>(root: &Root, path: &str, out: &mut Collected<T>) -> Option<String> {
    match read_optional(root, path, MAX_ATTR) {
        Ok(b) => b.map(|b| String::from_utf8_lossy(&b).trim().to_string()),
        Err(e) => {
            err(out, path, e);
            None
        }
    }
}

/// Directory entry names, sorted, at most [`MAX_ENTRIES`]; a missing directory is empty. Names
/// only: sysfs entries such as `slaves/nvme0n1p3` are symlinks, and the probe looks each name
/// up under `/sys/block` itself instead of following them.
fn names<T>(root: &Root, dir: &str, out: &mut Collected<T>) -> Vec<String> {
    match list_dir(root, dir) {
        Ok(l) => {
            let l = l.unwrap_or_default();
            if l.len() > MAX_ENTRIES {
                err(
                    out,
                    dir,
                    format!("more than {MAX_ENTRIES} entries; the rest ignored"),
                );
            }
            l.into_iter().take(MAX_ENTRIES).collect()
        }
        Err(e) => {
            err(out, dir, e);
            Vec::new()
        }
    }
}

/// Device-mapper names (`luks-root`) to kernel names (`dm-0`).
fn dm_names<T>(root: &Root, out: &mut Collected<T>) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for n in names(root, "/sys/block", out) {
        if n.starts_with("dm-")
            && let Some(name) = attr(root, &format!("/sys/block/{n}/dm/name"), out)
        {
            map.insert(name, n);
        }
    }
    map
}

/// The kernel name (`dm-0`, `sdb1`) of a mount or swap source.
fn block_name<T>(
    source: &str,
    dm: &BTreeMap<String, String>,
    out: &mut Collected<T>,
) -> Option<String> {
    let rest = source.strip_prefix("/dev/")?;
    if let Some(mapper) = rest.strip_prefix("mapper/") {
        return match dm.get(mapper) {
            Some(n) => Some(n.clone()),
            None => {
                err(
                    out,
                    source,
                    "no device-mapper device of this name in /sys/block",
                );
                None
            }
        };
    }
    // Kernel names have no slash; anything else (a by-uuid link) is named as given.
    Some(rest.to_string())
}

/// One path from a mounted device down to a disk: the encryption layer on it, if any.
struct Leaf {
    /// The block device under the encryption layer, or the disk partition at the bottom.
    device: String,
    crypt: Option<(CryptScheme, String)>,
}

/// Walks `name`'s stack down to its leaves.
fn walk<T>(root: &Root, name: &str, depth: usize, leaves: &mut Vec<Leaf>, out: &mut Collected<T>) {
    if depth > MAX_DEPTH {
        err(
            out,
            format!("/sys/block/{name}"),
            format!("device stack deeper than {MAX_DEPTH}; not followed further"),
        );
        return;
    }
    let uuid = attr(root, &format!("/sys/block/{name}/dm/uuid"), out).unwrap_or_default();
    let slaves = names(root, &format!("/sys/block/{name}/slaves"), out);
    if let Some(kind) = uuid.strip_prefix("CRYPT-") {
        let kind = kind.split('-').next().unwrap_or_default();
        let scheme = match kind {
            "LUKS1" => Some(CryptScheme::Luks1),
            "LUKS2" => Some(CryptScheme::Luks2),
            "PLAIN" => Some(CryptScheme::Plain),
            "BITLK" => Some(CryptScheme::Bitlk),
            "TCRYPT" => Some(CryptScheme::Tcrypt),
            // VERITY and INTEGRITY protect integrity, not secrecy: look through them.
            _ => None,
        };
        if let Some(scheme) = scheme {
            let mapper = attr(root, &format!("/sys/block/{name}/dm/name"), out)
                .unwrap_or_else(|| name.to_string());
            let device = match slaves.as_slice() {
                [one] => device_path(root, one, out),
                _ => {
                    err(
                        out,
                        format!("/sys/block/{name}/slaves"),
                        format!(
                            "{} backing devices for a crypt layer, 1 expected",
                            slaves.len()
                        ),
                    );
                    String::new()
                }
            };
            leaves.push(Leaf {
                device,
                crypt: Some((scheme, mapper)),
            });
            return;
        }
    }
    if slaves.is_empty() {
        leaves.push(Leaf {
            device: format!("/dev/{name}"),
            crypt: None,
        });
    }
    for s in slaves {
        walk(root, &s, depth + 1, leaves, out);
    }
}

/// How a backing device is named for IT: a device-mapper device (LUKS on LVM) by its mapper
/// name, anything else by its kernel name.
fn device_path<T>(root: &Root, name: &str, out: &mut Collected<T>) -> String {
    if name.starts_with("dm-")
        && let Some(n) = attr(root, &format!("/sys/block/{name}/dm/name"), out)
    {
        return format!("/dev/mapper/{n}");
    }
    format!("/dev/{name}")
}

/// The volume whose kernel name is `name` (mounted or used as swap as `source`).
fn volume<T>(root: &Root, name: &str, source: &str, out: &mut Collected<T>) -> Volume {
    let mut leaves = Vec::new();
    walk(root, name, 0, &mut leaves, out);
    let mut vols: Vec<Volume> = leaves.iter().map(|l| leaf_volume(root, l, out)).collect();
    if vols.is_empty() {
        return Volume {
            device: source.to_string(),
            ..Volume::default()
        };
    }
    let encrypted = vols.iter().all(|v| v.encrypted);
    let mut first = vols.remove(0);
    first.encrypted = encrypted;
    first.more_devices = vols;
    first
}

fn leaf_volume<T>(root: &Root, leaf: &Leaf, out: &mut Collected<T>) -> Volume {
    let mut v = Volume {
        device: leaf.device.clone(),
        ..Volume::default()
    };
    let Some((scheme, mapper)) = &leaf.crypt else {
        return v;
    };
    v.encrypted = true;
    v.scheme = Some(*scheme);
    v.mapper = mapper.clone();
    if matches!(scheme, CryptScheme::Luks1 | CryptScheme::Luks2) && !leaf.device.is_empty() {
        match read_header(&root.join(&leaf.device)) {
            Ok(h) => {
                v.cipher = h.cipher;
                v.key_size = h.key_size;
                v.key_slots = Some(h.active_slots);
                v.pbkdf = h.pbkdf.join(",");
            }
            Err(e) => err(out, leaf.device.clone(), e),
        }
    }
    v
}

/// Why a LUKS header could not be read from a device.
#[derive(Debug, thiserror::Error)]
pub enum HeaderError {
    #[error("{0}")]
    Io(#[from] io::Error),
    #[error("{0}")]
    Luks(#[from] luks::LuksError),
    #[error("neither a block device nor a regular file: not read")]
    NotADevice,
}

/// Reads and parses the LUKS header at the start of `path`: a block device on a laptop, an
/// image file in tests. The open never blocks and never follows a symlink, and the type is
/// judged on the opened handle; only the header's bytes are read (at most
/// [`luks::MAX_LUKS2_HEADER`]).
pub fn read_header(path: &Path) -> Result<luks::Header, HeaderError> {
    let file = open_device(path)?;
    let mut head = Vec::with_capacity(luks::BINARY_HEADER);
    (&file)
        .take(luks::BINARY_HEADER as u64)
        .read_to_end(&mut head)?;
    let len = luks::header_len(&head)?;
    if len > head.len() {
        (&file)
            .take((len - head.len()) as u64)
            .read_to_end(&mut head)?;
    }
    Ok(luks::parse(&head)?)
}

#[cfg(unix)]
fn open_device(path: &Path) -> Result<std::fs::File, HeaderError> {
    use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)?;
    let kind = file.metadata()?.file_type();
    if kind.is_block_device() || kind.is_file() {
        Ok(file)
    } else {
        Err(HeaderError::NotADevice)
    }
}

#[cfg(not(unix))]
fn open_device(path: &Path) -> Result<std::fs::File, HeaderError> {
    let file = std::fs::File::open(path)?;
    if file.metadata()?.is_file() {
        Ok(file)
    } else {
        Err(HeaderError::NotADevice)
    }
}

/// A file swap lives on the volume mounted at the longest prefix of its path, and is as
/// encrypted as that volume.
fn swap_file(path: &str, volumes: &[Volume]) -> Volume {
    let on = volumes
        .iter()
        .filter(|v| {
            v.mount == "/"
                || path
                    .strip_prefix(v.mount.as_str())
                    .is_some_and(|rest| rest.starts_with('/'))
        })
        .max_by_key(|v| v.mount.len());
    match on {
        Some(v) => Volume {
            mount: String::new(),
            ..v.clone()
        },
        None => Volume {
            device: path.to_string(),
            ..Volume::default()
        },
    }
}

/// A TPM 2.0 is present (`/sys/class/tpm/tpm*/tpm_version_major` is 2).
fn tpm2<T>(root: &Root, out: &mut Collected<T>) -> bool {
    names(root, "/sys/class/tpm", out).iter().any(|n| {
        attr(root, &format!("/sys/class/tpm/{n}/tpm_version_major"), out).as_deref() == Some("2")
    })
}

/// The SecureBoot EFI variable: four attribute bytes, then 1 when enforcing. Absent on BIOS
/// machines, which is "off", not an error.
fn secure_boot<T>(root: &Root, out: &mut Collected<T>) -> bool {
    match read_optional(root, SECURE_BOOT_VAR, MAX_ATTR) {
        Ok(None) => false,
        Ok(Some(b)) if b.len() == 5 => b[4] == 1,
        Ok(Some(b)) => {
            err(
                out,
                SECURE_BOOT_VAR,
                format!(
                    "{} bytes, 5 expected (4 attribute bytes and the value)",
                    b.len()
                ),
            );
            false
        }
        Err(e) => {
            err(out, SECURE_BOOT_VAR, e);
            false
        }
    }
}
