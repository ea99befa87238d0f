//! Telling apart and naming block devices that several paths name: a configured
//! `/dev/disk/by-uuid/…` or `/dev/vg/home` and the probe's `/dev/sdb1` or
//! `/dev/mapper/vg-home` are the same device when their links, followed inside the agent's
//! root, lead to the same place.
//!
//! Pure: the paths come resolved (`userfile::real_paths`). Used by the wipe (which device a
//! configured erase reaches) and by the report of the configured wipe (named as the probe names
//! the device, so the server, which sees only the report, can compare the plan with the volumes
//! as plain strings).

use crate::collect::userfile::normalize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// The device path a path names once its links are followed under the root, or why that is
/// not known.
pub type Resolved = Result<PathBuf, String>;

/// Whether `a` and `b` name the same device: equal once written tidily, or resolved to the
/// same path. A path missing from `resolved` counts as unresolved.
pub fn same_device(a: &str, b: &str, resolved: &BTreeMap<String, Resolved>) -> bool {
    normalize(Path::new(a)) == normalize(Path::new(b))
        || matches!((resolved.get(a), resolved.get(b)), (Some(Ok(x)), Some(Ok(y))) if x == y)
}

/// Each of `configured`, named as the probe names the device it is (the first of `probe`
/// that is the same device), or as written when it is none of them.
pub fn as_probe_names(
    configured: &[String],
    probe: &[String],
    resolved: &BTreeMap<String, Resolved>,
) -> Vec<String> {
    configured
        .iter()
        .map(|c| {
            probe
                .iter()
                .find(|p| same_device(c, p, resolved))
                .unwrap_or(c)
                .clone()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolved(pairs: &[(&str, Result<&str, &str>)]) -> BTreeMap<String, Resolved> {
        pairs
            .iter()
            .map(|(p, r)| {
                let r = r.map(PathBuf::from).map_err(str::to_string);
                (p.to_string(), r)
            })
            .collect()
    }

    #[test]
    fn configured_devices_take_the_probes_names_when_they_are_the_same_device() {
        let r = resolved(&[
            ("/dev/disk/by-uuid/42", Ok("/dev/sdb1")),
            ("/dev/sdb1", Ok("/dev/sdb1")),
            ("/dev/vg/home", Ok("/dev/dm-3")),
            ("/dev/mapper/vg-home", Ok("/dev/dm-3")),
            (
                "/dev/disk/by-id/gone",
                Err("not found under the agent's root"),
            ),
            ("/dev/nvme0n1p3", Ok("/dev/nvme0n1p3")),
        ]);
        let configured = [
            "/dev/disk/by-uuid/42",
            "/dev/vg/home",
            "/dev/disk/by-id/gone",
            "/dev/./nvme0n1p3",
        ]
        .map(String::from);
        let probe = ["/dev/nvme0n1p3", "/dev/sdb1", "/dev/mapper/vg-home"].map(String::from);
        assert_eq!(
            as_probe_names(&configured, &probe, &r),
            [
                "/dev/sdb1",
                "/dev/mapper/vg-home",
                "/dev/disk/by-id/gone",
                "/dev/nvme0n1p3"
            ]
        );
        assert!(!same_device("/dev/disk/by-id/gone", "/dev/sdb1", &r));
        assert!(!same_device("/dev/unlisted", "/dev/sdb1", &r), "unresolved");
    }
}
