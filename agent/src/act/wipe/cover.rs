//! What an erase of the configured LUKS devices leaves readable (policy 8.1). With `devices`
//! in `[wipe]` the list decides what is erased; the storage probe, read at the wipe, says which
//! user-data mount or swap is on which LUKS device. Every one whose device the wipe did not
//! erase is said, so a result never reports a laptop wiped while its `/home` stays readable on
//! a LUKS device left out of the list.
//!
//! Pure: the device paths come resolved under the agent's root (links followed inside it,
//! `userfile::real_path`), so a configured `/dev/disk/by-uuid/…` or `/dev/vg/home` and the
//! probe's `/dev/sdb1` or `/dev/mapper/vg-home` are compared as the devices they name. A path
//! that could not be resolved makes an unmatched device "could not be matched": neither erased
//! nor left out is claimed without knowing.

use crate::collect::storage::names::same_device;
use std::collections::BTreeMap;
use vakt_proto::model::{LuksUse, Readable, ReadableWhy};

pub use crate::collect::storage::names::Resolved;

/// A configured wipe device and whether its key slots were erased.
#[derive(Debug, Clone, Copy)]
pub struct Configured<'a> {
    pub path: &'a str,
    pub erased: bool,
}

/// The lines for the result's `not_encrypted`: each of `uses` that no erased device covers,
/// worded as the server's wipe readiness words it (`/home (/dev/sdb1): LUKS, not among the
/// configured wipe devices`). `resolved` holds every path of `uses` and `configured`; one
/// missing from it counts as unresolved.
pub fn left_readable(
    uses: &[LuksUse],
    configured: &[Configured<'_>],
    resolved: &BTreeMap<String, Resolved>,
) -> Vec<String> {
    let real = |path: &str| -> Resolved {
        resolved
            .get(path)
            .cloned()
            .unwrap_or_else(|| Err("not resolved".to_string()))
    };
    let same = |a: &str, b: &str| same_device(a, b, resolved);
    let mut lines = Vec::new();
    for u in uses {
        let matched: Vec<&Configured> = configured
            .iter()
            .filter(|c| same(&u.device, c.path))
            .collect();
        if matched.iter().any(|c| c.erased) {
            continue;
        }
        let readable = Readable {
            what: u.what.clone(),
            device: u.device.clone(),
            why: ReadableWhy::NotConfigured,
        };
        let unresolved = std::iter::once(u.device.as_str())
            .chain(configured.iter().map(|c| c.path))
            .find_map(|p| real(p).err().map(|e| format!("{p}: {e}")));
        lines.push(match (matched.is_empty(), unresolved) {
            (false, _) => readable.say("LUKS, its erase failed (see the errors)"),
            (true, Some(why)) => readable.say(&format!(
                "LUKS, could not be matched to the configured wipe devices ({why})"
            )),
            (true, None) => readable.to_string(),
        });
    }
    lines
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    fn uses(pairs: &[(&str, &str)]) -> Vec<LuksUse> {
        pairs
            .iter()
            .map(|(what, device)| LuksUse {
                what: what.to_string(),
                device: device.to_string(),
            })
            .collect()
    }

    fn erased(paths: &[&'static str]) -> Vec<Configured<'static>> {
        paths
            .iter()
            .map(|path| Configured { path, erased: true })
            .collect()
    }

    /// Every path resolves to itself, except those given (`None`: not found).
    fn resolved(paths: &[&str], links: &[(&str, Option<&str>)]) -> BTreeMap<String, Resolved> {
        let mut m: BTreeMap<String, Resolved> = paths
            .iter()
            .map(|p| (p.to_string(), Ok(PathBuf::from(p))))
            .collect();
        for (from, to) in links {
            let to = to
                .map(PathBuf::from)
                .ok_or_else(|| "not found under the root".to_string());
            m.insert(from.to_string(), to);
        }
        m
    }

    /// The case the result used to hide: root's device listed, /home's LUKS device and a swap
    /// on a third one not.
    #[test]
    fn a_list_that_misses_home_and_swap_says_them() {
        let u = uses(&[
            ("/", "/dev/nvme0n1p3"),
            ("/home", "/dev/sdb1"),
            ("swap", "/dev/nvme0n1p2"),
        ]);
        let r = resolved(&["/dev/nvme0n1p3", "/dev/sdb1", "/dev/nvme0n1p2"], &[]);
        assert_eq!(
            left_readable(&u, &erased(&["/dev/nvme0n1p3"]), &r),
            vec![
                "/home (/dev/sdb1): LUKS, not among the configured wipe devices".to_string(),
                "swap (/dev/nvme0n1p2): LUKS, not among the configured wipe devices".to_string(),
            ]
        );
    }

    /// A by-uuid link to the root's partition and an LVM name for the device the probe calls
    /// by its mapper name cover both: compared as the devices they name, nothing is said.
    #[test]
    fn configured_links_that_name_the_probes_devices_cover_them() {
        let u = uses(&[("/", "/dev/nvme0n1p3"), ("/home", "/dev/mapper/vg-home")]);
        let r = resolved(
            &["/dev/nvme0n1p3"],
            &[
                ("/dev/disk/by-uuid/0f1e", Some("/dev/nvme0n1p3")),
                ("/dev/vg/home", Some("/dev/dm-3")),
                ("/dev/mapper/vg-home", Some("/dev/dm-3")),
            ],
        );
        let cfg = erased(&["/dev/disk/by-uuid/0f1e", "/dev/vg/home"]);
        assert_eq!(left_readable(&u, &cfg, &r), Vec::<String>::new());
        // The same path written differently is the same device even unresolved.
        let r = resolved(&[], &[]);
        assert_eq!(
            left_readable(&u[..1], &erased(&["/dev//nvme0n1p3"]), &r),
            Vec::<String>::new()
        );
    }

    /// A path that does not resolve is never taken for "erased" nor for "left out".
    #[test]
    fn an_unresolved_path_is_said_as_not_matched() {
        let u = uses(&[("/home", "/dev/mapper/vg-home")]);
        let r = resolved(
            &[],
            &[("/dev/mapper/vg-home", None), ("/dev/vg/home", None)],
        );
        assert_eq!(
            left_readable(&u, &erased(&["/dev/vg/home"]), &r),
            vec![
                "/home (/dev/mapper/vg-home): LUKS, could not be matched to the configured wipe \
                 devices (/dev/mapper/vg-home: not found under the root)"
                    .to_string()
            ]
        );
        // Only the configured side unresolved: still not claimed to be left out.
        let r = resolved(&["/dev/sdb1"], &[("/dev/disk/by-label/home", None)]);
        let got = left_readable(
            &uses(&[("/home", "/dev/sdb1")]),
            &erased(&["/dev/disk/by-label/home"]),
            &r,
        );
        assert_eq!(got.len(), 1);
        assert!(
            got[0].contains("could not be matched") && got[0].contains("/dev/disk/by-label/home"),
            "{got:?}"
        );
    }

    /// A listed device whose erase failed leaves its mount readable, said as such.
    #[test]
    fn a_listed_device_whose_erase_failed_is_said() {
        let u = uses(&[("/", "/dev/sda2"), ("/home", "/dev/sdb1")]);
        let r = resolved(&["/dev/sda2", "/dev/sdb1"], &[]);
        let cfg = [
            Configured {
                path: "/dev/sda2",
                erased: true,
            },
            Configured {
                path: "/dev/sdb1",
                erased: false,
            },
        ];
        assert_eq!(
            left_readable(&u, &cfg, &r),
            vec!["/home (/dev/sdb1): LUKS, its erase failed (see the errors)".to_string()]
        );
    }
}
