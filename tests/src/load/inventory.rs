//! What a simulated agent reports: host facts of its own, and a software inventory shaped like
//! a Debian laptop's (name, version, origin, architecture of every package). The "full" report
//! carries 2,000 packages; `serial` changes one version, so each full report is a real change
//! the server must store.

use vakt_proto::model::{
    HostFacts, Package, PackageFormat, Report, SoftwareSource, SoftwareSource::OsVendor,
};

/// Packages in a full inventory (issue 10's figure).
pub const FULL_PACKAGES: usize = 2_000;
/// Packages in the small inventory every agent starts with.
pub const SMALL_PACKAGES: usize = 20;

const STEMS: [&str; 12] = [
    "libglib",
    "python3",
    "gnome",
    "libreoffice",
    "firmware",
    "fonts",
    "libqt5",
    "texlive",
    "linux",
    "libgtk",
    "perl",
    "node",
];
const TAILS: [&str; 6] = ["", "-common", "-data", "-dev", "-bin", "-doc"];

/// The host facts of simulated agent `index` in run `tag`.
pub fn host(tag: &str, index: usize) -> HostFacts {
    HostFacts {
        hostname: format!("sim-{tag}-{index:05}"),
        os: "Debian GNU/Linux".into(),
        os_version: "12".into(),
        kernel: "6.1.0-26-amd64".into(),
        arch: "x86_64".into(),
        machine_id: format!("{tag}{index:024x}"),
        serial: format!("SIM{index:07}"),
        vendor: "LENOVO".into(),
        model: "ThinkPad T14 Gen 4".into(),
        cpu: "13th Gen Intel(R) Core(TM) i5-1345U".into(),
        cpu_cores: 12,
        memory_bytes: 16 << 30,
        ..Default::default()
    }
}

/// `n` packages; `serial` is folded into the first package's version.
pub fn packages(n: usize, serial: u64) -> Vec<Package> {
    (0..n)
        .map(|k| {
            let stem = STEMS[k % STEMS.len()];
            let tail = TAILS[(k / STEMS.len()) % TAILS.len()];
            let (source, origin) = if k % 40 == 0 {
                (SoftwareSource::ThirdPartyRepo, "packages.example.com")
            } else {
                (OsVendor, "Debian:bookworm-security")
            };
            Package {
                name: format!("{stem}{k}{tail}"),
                version: if k == 0 {
                    format!("1.{serial}.0-1")
                } else {
                    format!("{}.{}.{}-{}+deb12u1", k % 7, k % 31, k % 13, k % 3 + 1)
                },
                format: PackageFormat::Deb,
                source,
                origin: origin.into(),
                current: k % 17 != 0,
                arch: if k % 5 == 0 { "all" } else { "amd64" }.into(),
                user: String::new(),
                path: String::new(),
            }
        })
        .collect()
}

/// A report with host facts and `n` packages.
pub fn report(tag: &str, index: usize, n: usize, serial: u64) -> Report {
    Report {
        host: host(tag, index),
        software: packages(n, serial),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_full_inventory_is_two_thousand_distinct_packages_and_serial_changes_it() {
        let a = packages(FULL_PACKAGES, 1);
        let names: std::collections::BTreeSet<_> = a.iter().map(|p| &p.name).collect();
        assert_eq!(names.len(), FULL_PACKAGES);
        let sections = |s| vakt_proto::convert::report_to_sections(&report("t", 1, 2000, s));
        let (one, two) = (sections(1), sections(2));
        assert_eq!(one[0].hash, two[0].hash, "host unchanged");
        assert_ne!(one[1].hash, two[1].hash, "software changed");
    }
}
