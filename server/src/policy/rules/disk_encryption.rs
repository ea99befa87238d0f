//! `disk-encryption` (Sorsele 8.1, "Skydd och säkerhet", the loss procedure): a mount that
//! holds user data, or a swap, that is not encrypted. The policy does not demand encryption;
//! it demands care against loss, and this says what a loss would expose: a remote wipe of
//! such a volume only unlinks files, which whoever holds the laptop can read back. The Sorsele
//! pack makes it a `notice` worded as information, not as a breach.
//!
//! A volume counts as encrypted when every device under it passes through an encryption
//! layer (LUKS, BitLocker, TrueCrypt, plain dm-crypt): without its key, nobody reads it. A
//! volume spread over several devices (LVM) with one of them plain is a hit for that device.
//! A report without a storage section (an agent that predates it) judges nothing.
//!
//! Parameters: `mounts`, the mount points that count (each counts with the mounts below it,
//! `/` only itself), default `["/", "/home", "/var", "/srv"]`; `swap`, whether swap counts,
//! default true.
//!
//! Key: the mount point (or `swap`) and the device, so re-encrypting resolves the finding and
//! a disk swapped for another plain one is a new one.

use serde::{Deserialize, Serialize};
use vakt_proto::model::{USER_DATA_MOUNTS, Volume, counts_as};

use super::{Hit, Input};
use crate::policy::spanned::{Diags, Fields};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub mounts: Vec<String>,
    pub swap: bool,
}

pub(super) const KEYS: &[&str] = &["mounts", "swap"];

pub(super) const PLACEHOLDERS: &[&str] = &["mount", "device", "volume"];

pub(super) fn parse(f: &mut Fields<'_, '_>, d: &mut Diags) -> Option<Params> {
    let mounts = match f.strings_non_empty("mounts", false, d, "mount point") {
        Some(list) => {
            let mut out: Vec<String> = Vec::new();
            let mut ok = true;
            for m in list.into_inner() {
                let path = m.get_ref().trim_end_matches('/');
                let path = if path.is_empty() { "/" } else { path };
                if !m.get_ref().starts_with('/') {
                    d.push(
                        m.span(),
                        format!(
                            "`{}` in `mounts` is not a mount point (an absolute path such as /home)",
                            m.get_ref()
                        ),
                    );
                    ok = false;
                } else if out.iter().any(|o| o == path) {
                    d.push(
                        m.span(),
                        format!("`{}` is listed twice in `mounts`", m.get_ref()),
                    );
                    ok = false;
                } else {
                    out.push(path.to_string());
                }
            }
            ok.then_some(out)
        }
        None => Some(USER_DATA_MOUNTS.iter().map(|m| m.to_string()).collect()),
    };
    let swap = f.boolean("swap", false, d).is_none_or(|b| b.into_inner());
    Some(Params {
        mounts: mounts?,
        swap,
    })
}

pub(super) fn evaluate(p: &Params, input: &Input<'_>) -> Vec<Hit> {
    let storage = &input.report.storage;
    let mut hits = Vec::new();
    for v in storage
        .volumes
        .iter()
        .filter(|v| counts_as(&v.mount, &p.mounts))
    {
        for leaf in plain_devices(v) {
            hits.push(
                Hit::new([v.mount.as_str(), leaf.device.as_str()])
                    .with("mount", &v.mount)
                    .with("device", &leaf.device)
                    .phrase(
                        "volume",
                        format!("filsystemet {}", v.mount),
                        format!("the file system {}", v.mount),
                    ),
            );
        }
    }
    if p.swap {
        for v in &storage.swap {
            for leaf in plain_devices(v) {
                hits.push(
                    Hit::new(["swap", leaf.device.as_str()])
                        .with("mount", "swap")
                        .with("device", &leaf.device)
                        .phrase("volume", "växlingsutrymmet (swap)", "the swap space"),
                );
            }
        }
    }
    hits
}

/// The devices under a volume with no encryption layer (the volume itself and the further
/// devices of one that spans several).
fn plain_devices(v: &Volume) -> impl Iterator<Item = &Volume> {
    std::iter::once(v)
        .chain(&v.more_devices)
        .filter(|leaf| leaf.scheme.is_none())
}

#[cfg(test)]
mod tests {
    use vakt_proto::model::{CollectorError, CryptScheme, Report, SectionKind, Storage, Volume};

    use crate::policy::EvaluationStatus::{self, Failed};
    use crate::policy::Severity;
    use crate::policy::testkit::*;

    const RULE: &str = r#"
        id = "disk"
        kind = "disk-encryption"
        section = "8.1"
        severity = "notice"
        devices = ["laptop"]
        message_sv = "Kommer {hostname} bort kan {volume} ({device}) läsas."
        message_en = "If {hostname} is lost, {volume} ({device}) can be read."
    "#;

    fn vol(mount: &str, device: &str, scheme: Option<CryptScheme>) -> Volume {
        Volume {
            mount: mount.into(),
            device: device.into(),
            encrypted: scheme.is_some(),
            scheme,
            ..Volume::default()
        }
    }

    fn report(volumes: Vec<Volume>, swap: Vec<Volume>) -> Report {
        Report {
            storage: Storage {
                volumes,
                swap,
                ..Storage::default()
            },
            ..Report::default()
        }
    }

    const LUKS: Option<CryptScheme> = Some(CryptScheme::Luks2);

    #[test]
    fn table() {
        let pack = pack_with(RULE);
        let only_home = pack_with(&format!(
            "{RULE}\nparams = {{ mounts = [\"/home/\"], swap = false }}"
        ));
        type Case = (
            &'static str,
            bool,
            Report,
            Vec<(&'static str, EvaluationStatus)>,
        );
        let cases: Vec<Case> = vec![
            (
                "no storage section judges nothing",
                false,
                Report::default(),
                vec![],
            ),
            (
                "everything encrypted, swap with a random key",
                false,
                report(
                    vec![
                        vol("/", "/dev/nvme0n1p3", LUKS),
                        vol("/home", "/dev/nvme0n1p4", LUKS),
                    ],
                    vec![vol("", "/dev/nvme0n1p2", Some(CryptScheme::Plain))],
                ),
                vec![],
            ),
            (
                "root encrypted, /home and swap plain; /boot does not count",
                false,
                report(
                    vec![
                        vol("/", "/dev/nvme0n1p3", LUKS),
                        vol("/boot", "/dev/nvme0n1p1", None),
                        vol("/home", "/dev/sdb1", None),
                    ],
                    vec![vol("", "/dev/nvme0n1p2", None)],
                ),
                vec![
                    ("disk/%2Fhome/%2Fdev%2Fsdb1", Failed),
                    ("disk/swap/%2Fdev%2Fnvme0n1p2", Failed),
                ],
            ),
            (
                "a mount below /home counts; BitLocker is encrypted",
                false,
                report(
                    vec![
                        vol("/home/anna", "/dev/sdc1", None),
                        vol("/srv", "/dev/sdd1", Some(CryptScheme::Bitlk)),
                    ],
                    vec![],
                ),
                vec![("disk/%2Fhome%2Fanna/%2Fdev%2Fsdc1", Failed)],
            ),
            (
                "LVM over one LUKS and one plain partition: the plain one",
                false,
                report(
                    vec![Volume {
                        // As the probe reports it: the volume is encrypted only if every device is.
                        encrypted: false,
                        more_devices: vec![vol("", "/dev/sdb1", None)],
                        ..vol("/", "/dev/sda2", LUKS)
                    }],
                    vec![],
                ),
                vec![("disk/%2F/%2Fdev%2Fsdb1", Failed)],
            ),
            (
                "mounts = [/home], swap = false: a plain root and swap do not count",
                true,
                report(
                    vec![vol("/", "/dev/sda1", None), vol("/home", "/dev/sdb1", None)],
                    vec![vol("", "/dev/sda2", None)],
                ),
                vec![("disk/%2Fhome/%2Fdev%2Fsdb1", Failed)],
            ),
        ];
        for (name, home_pack, r, want) in cases {
            let p = if home_pack { &only_home } else { &pack };
            let out = run_one(p, &laptop(), &r, &ctx(&[], &[], &[]));
            assert_eq!(statuses(&out), want, "{name}");
        }
    }

    #[test]
    fn message_severity_completeness_and_resolution() {
        let pack = pack_with(RULE);
        let plain = report(
            vec![vol("/", "/dev/sda1", LUKS), vol("/home", "/dev/sdb1", None)],
            vec![],
        );
        let out = run_one(&pack, &laptop(), &plain, &ctx(&[], &[], &[]));
        let e = &out.evaluations[0];
        assert_eq!(
            e.message_sv,
            "Kommer sorsele-lap-17 bort kan filsystemet /home (/dev/sdb1) läsas."
        );
        assert_eq!(
            e.message_en,
            "If sorsele-lap-17 is lost, the file system /home (/dev/sdb1) can be read."
        );
        assert_eq!(e.severity, Severity::Notice);
        assert_eq!(e.section, "8.1");
        assert!(out.complete);

        let mut failed = plain.clone();
        failed.errors.push(CollectorError {
            section: SectionKind::Storage,
            source: "/proc/mounts".into(),
            message: "deadline".into(),
        });
        assert!(!run_one(&pack, &laptop(), &failed, &ctx(&[], &[], &[])).complete);

        let fixed = report(
            vec![vol("/", "/dev/sda1", LUKS), vol("/home", "/dev/sdb1", LUKS)],
            vec![],
        );
        assert_resolves(&pack, &laptop(), &plain, &fixed, &ctx(&[], &[], &[]));
    }
}
