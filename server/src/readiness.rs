//! Wipe readiness (policy 8.1, issue 19): before two admins approve a wipe of a lost laptop,
//! what would the wipe achieve? A pure judgement of the latest storage section and the wipe
//! plan its agent reports:
//! - `crypto-erase`: every user-data mount (`/`, `/home`, `/var`, `/srv`) and every swap is
//!   encrypted, and the strategy erases the LUKS key slots behind all of them;
//! - `partial`: some of it is not (said which: not encrypted, not LUKS, not configured);
//! - `files-only`: the `paths` strategy unlinks files, whose contents stay recoverable;
//! - `unknown`: no storage section yet, or an agent that does not report its wipe plan.
//!
//! The reasons are data (`Readable`, `Unknown`): the API says them in English (`readable`, what
//! the CLI and JSON print) and sends the data beside them; their Swedish wording is here, for
//! the console (`console/i18n.rs`) and the incident report (`loss.rs`) alike.

use vakt_proto::model::{Readable, ReadableWhy, Storage, USER_DATA_MOUNTS, WipePlan, WipeStrategy};
use vakt_proto::pb;

/// What a wipe of one device would achieve.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    CryptoErase,
    /// The user data a crypto-erase would leave readable, each with why.
    Partial(Vec<Readable>),
    FilesOnly,
    /// Why it cannot be judged.
    Unknown(Unknown),
}

/// Why readiness cannot be judged, as data: the API says it in English, the console and the
/// incident report in Swedish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Unknown {
    NoStorageSection,
    /// An agent older than the wipe plan in its storage section.
    NoWipePlan,
    /// No `/`, `/home`, `/var` or `/srv` (a Mac or Windows agent reports none).
    NoUserDataMount,
    /// The stored storage section does not decode; the error.
    SectionUnreadable(String),
    /// The store could not be read; the error.
    StoreUnreadable(String),
}

impl Unknown {
    /// The name on the wire (`WipeReadiness.unknown.why`).
    pub fn code(&self) -> &'static str {
        match self {
            Self::NoStorageSection => "no-storage-section",
            Self::NoWipePlan => "no-wipe-plan",
            Self::NoUserDataMount => "no-user-data-mount",
            Self::SectionUnreadable(_) => "section-unreadable",
            Self::StoreUnreadable(_) => "store-unreadable",
        }
    }

    pub fn to_pb(&self) -> pb::UnknownReason {
        let detail = match self {
            Self::SectionUnreadable(e) | Self::StoreUnreadable(e) => e.clone(),
            _ => String::new(),
        };
        pb::UnknownReason {
            why: self.code().to_string(),
            detail,
        }
    }

    /// `None` for a `why` this build does not know (a newer server): its line is said as the
    /// server said it.
    pub fn from_pb(u: &pb::UnknownReason) -> Option<Self> {
        Some(match u.why.as_str() {
            "no-storage-section" => Self::NoStorageSection,
            "no-wipe-plan" => Self::NoWipePlan,
            "no-user-data-mount" => Self::NoUserDataMount,
            "section-unreadable" => Self::SectionUnreadable(u.detail.clone()),
            "store-unreadable" => Self::StoreUnreadable(u.detail.clone()),
            _ => return None,
        })
    }

    /// As the CLI, the JSON output and `WipeReadiness.readable` say it.
    pub fn en(&self) -> String {
        match self {
            Self::NoStorageSection => "no storage section reported yet".into(),
            Self::NoWipePlan => "the agent does not report its wipe strategy".into(),
            Self::NoUserDataMount => "no user-data mount (/, /home, /var, /srv) reported".into(),
            Self::SectionUnreadable(e) => format!("the stored storage section does not read: {e}"),
            Self::StoreUnreadable(e) => format!("the store could not be read: {e}"),
        }
    }

    /// As the Swedish console and the incident report say it (the error itself stays as the
    /// software wrote it).
    pub fn sv(&self) -> String {
        match self {
            Self::NoStorageSection => "ingen lagringsrapport ännu".into(),
            Self::NoWipePlan => "agenten rapporterar inte sin raderingsstrategi".into(),
            Self::NoUserDataMount => {
                "ingen monteringspunkt med användardata (/, /home, /var, /srv) rapporterad".into()
            }
            Self::SectionUnreadable(e) => {
                format!("den lagrade lagringsrapporten går inte att läsa: {e}")
            }
            Self::StoreUnreadable(e) => format!("databasen gick inte att läsa: {e}"),
        }
    }
}

/// Why user data stays readable after a wipe, in Swedish (the English is the model's
/// `ReadableWhy::en`).
pub fn readable_why_sv(w: ReadableWhy) -> &'static str {
    match w {
        ReadableWhy::NotEncrypted => "inte krypterad",
        ReadableWhy::LuksBackingUnknown => "LUKS, den underliggande enheten är inte känd",
        ReadableWhy::PlainDmCrypt => "dm-crypt utan LUKS, inga nyckelplatser att radera",
        ReadableWhy::Bitlocker => "BitLocker, inga LUKS-nyckelplatser att radera",
        ReadableWhy::Truecrypt => "TrueCrypt, inga LUKS-nyckelplatser att radera",
        ReadableWhy::NotConfigured => "LUKS, inte bland agentens inställda raderingsenheter",
    }
}

/// The API's `readable` lines said in Swedish from their data: the partial state's items and
/// the unknown state's reason. A line whose data this build does not know (a newer server), or
/// that came without data (an older one), is kept as the API said it.
pub fn readable_lines_sv(w: &pb::WipeReadiness) -> Vec<String> {
    if let Some(u) = w.unknown.as_ref().and_then(Unknown::from_pb)
        && w.readable.len() == 1
    {
        return vec![u.sv()];
    }
    if w.items.len() != w.readable.len() {
        return w.readable.clone();
    }
    w.items
        .iter()
        .zip(&w.readable)
        .map(
            |(item, line)| match vakt_proto::convert::readable_from_pb(item) {
                Some(r) => r.say(readable_why_sv(r.why)),
                None => line.clone(),
            },
        )
        .collect()
}

impl Readiness {
    /// The name INTERFACE.md gives it (`wipe_readiness`).
    pub fn name(&self) -> &'static str {
        match self {
            Self::CryptoErase => "crypto-erase",
            Self::Partial(_) => "partial",
            Self::FilesOnly => "files-only",
            Self::Unknown(_) => "unknown",
        }
    }

    /// For the admin API, with the device's last report (`reported_ms`, 0: never).
    pub fn to_pb(&self, reported_ms: i64) -> pb::WipeReadiness {
        let (readable, items, unknown) = match self {
            Self::Partial(r) => (
                r.iter().map(ToString::to_string).collect(),
                r.iter().map(vakt_proto::convert::readable_to_pb).collect(),
                None,
            ),
            Self::Unknown(why) => (vec![why.en()], Vec::new(), Some(why.to_pb())),
            Self::CryptoErase | Self::FilesOnly => (Vec::new(), Vec::new(), None),
        };
        pb::WipeReadiness {
            state: self.name().to_string(),
            readable,
            items,
            unknown,
            reported_ms,
        }
    }
}

/// Judges a device's wipe from its latest storage section (`None`: none stored yet) and the
/// wipe plan its agent reports (`None`: an agent that does not say).
pub fn wipe_readiness(storage: Option<&Storage>, plan: Option<&WipePlan>) -> Readiness {
    let Some(storage) = storage else {
        return Readiness::Unknown(Unknown::NoStorageSection);
    };
    let Some(plan) = plan else {
        return Readiness::Unknown(Unknown::NoWipePlan);
    };
    if plan.strategy == WipeStrategy::Paths {
        return Readiness::FilesOnly;
    }
    let scope = storage.erase_scope(&USER_DATA_MOUNTS);
    if !scope.user_data_found {
        return Readiness::Unknown(Unknown::NoUserDataMount);
    }
    let mut readable = scope.readable;
    // Listed devices replace discovery: a LUKS device not listed keeps its key slots.
    if !plan.devices.is_empty() {
        for d in scope.luks_devices {
            if !plan.devices.contains(&d) {
                readable.push(Readable {
                    what: String::new(),
                    device: d,
                    why: ReadableWhy::NotConfigured,
                });
            }
        }
    }
    if readable.is_empty() {
        Readiness::CryptoErase
    } else {
        Readiness::Partial(readable)
    }
}

/// The version of the judgement and its wording that device records' stored readiness was made
/// by (`DeviceRecord.readiness_version`). Raise it with any change to [`wipe_readiness`],
/// `erase_scope` or the lines [`Readiness::to_pb`] writes: the store then judges every device
/// again when it opens, and until then views judge from the section.
pub const JUDGEMENT_VERSION: u32 = 1;

/// What a device record keeps of the readiness judged from `section` (the storage section
/// being stored, `None`: none): the view without the last report, which the view adds.
pub fn summary(section: Option<&pb::Section>) -> pb::WipeReadiness {
    from_section(section).to_pb(0)
}

/// The readiness a device record keeps, if it was judged by this version of the judgement.
pub fn kept(rec: &pb::DeviceRecord) -> Option<&pb::WipeReadiness> {
    rec.readiness
        .as_ref()
        .filter(|_| rec.readiness_version == JUDGEMENT_VERSION)
}

/// The readiness of a device from its stored storage section; a section that does not decode
/// is `unknown` with the reason, never an error for the caller's view.
pub fn from_section(section: Option<&pb::Section>) -> Readiness {
    let Some(pb::section::Body::Storage(st)) = section.and_then(|s| s.body.as_ref()) else {
        return wipe_readiness(None, None);
    };
    match vakt_proto::convert::storage_from_pb(st) {
        Ok(s) => wipe_readiness(Some(&s), s.wipe.as_ref()),
        Err(e) => Readiness::Unknown(Unknown::SectionUnreadable(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vakt_proto::model::{CryptScheme, Volume};

    fn vol(mount: &str, device: &str, scheme: Option<CryptScheme>) -> Volume {
        Volume {
            mount: mount.into(),
            device: device.into(),
            encrypted: scheme.is_some(),
            scheme,
            ..Volume::default()
        }
    }

    const LUKS: Option<CryptScheme> = Some(CryptScheme::Luks2);

    fn storage(volumes: Vec<Volume>, swap: Vec<Volume>) -> Storage {
        Storage {
            volumes,
            swap,
            ..Storage::default()
        }
    }

    fn plan(strategy: WipeStrategy, devices: &[&str]) -> WipePlan {
        WipePlan {
            strategy,
            devices: devices.iter().map(|d| d.to_string()).collect(),
        }
    }

    #[test]
    fn readiness_table() {
        use WipeStrategy::{LuksErase, Paths};
        let all_encrypted = storage(
            vec![
                vol("/", "/dev/nvme0n1p3", LUKS),
                vol("/boot", "/dev/nvme0n1p1", None),
                vol("/home", "/dev/nvme0n1p4", LUKS),
            ],
            vec![vol("", "/dev/nvme0n1p2", Some(CryptScheme::Plain))],
        );
        let home_plain = storage(
            vec![
                vol("/", "/dev/nvme0n1p3", LUKS),
                vol("/home", "/dev/sdb1", None),
            ],
            vec![vol("", "/dev/nvme0n1p2", None)],
        );
        let lvm_on_two = storage(
            vec![Volume {
                // As the probe reports it: the volume is encrypted only if every device is.
                encrypted: false,
                more_devices: vec![vol("", "/dev/sdb1", None)],
                ..vol("/", "/dev/sda2", LUKS)
            }],
            vec![],
        );
        let nothing = Storage::default();
        // Compared as the API says them: the state and the lines for people.
        let partial = |r: &[&str]| ("partial", r.iter().map(|s| s.to_string()).collect());
        let unknown = |r: &str| ("unknown", vec![r.to_string()]);
        let crypto_erase = ("crypto-erase", Vec::new());
        let files_only = ("files-only", Vec::new());
        // Name, storage section, wipe plan, and the state and lines wanted.
        type Case<'a> = (
            &'a str,
            Option<&'a Storage>,
            Option<WipePlan>,
            (&'a str, Vec<String>),
        );
        let cases: Vec<Case> = vec![
            (
                "no storage section",
                None,
                Some(plan(LuksErase, &[])),
                unknown("no storage section reported yet"),
            ),
            (
                "no plan reported",
                Some(&all_encrypted),
                None,
                unknown("the agent does not report its wipe strategy"),
            ),
            (
                "everything encrypted, devices discovered",
                Some(&all_encrypted),
                Some(plan(LuksErase, &[])),
                crypto_erase.clone(),
            ),
            (
                "everything encrypted, both devices configured",
                Some(&all_encrypted),
                Some(plan(LuksErase, &["/dev/nvme0n1p3", "/dev/nvme0n1p4"])),
                crypto_erase.clone(),
            ),
            (
                "a configured list that misses /home's device",
                Some(&all_encrypted),
                Some(plan(LuksErase, &["/dev/nvme0n1p3"])),
                partial(&["/dev/nvme0n1p4: LUKS, not among the configured wipe devices"]),
            ),
            (
                "root encrypted, /home and swap plain",
                Some(&home_plain),
                Some(plan(LuksErase, &[])),
                partial(&[
                    "/home (/dev/sdb1): not encrypted",
                    "swap (/dev/nvme0n1p2): not encrypted",
                ]),
            ),
            (
                "LVM over a LUKS and a plain partition",
                Some(&lvm_on_two),
                Some(plan(LuksErase, &[])),
                partial(&["/ (/dev/sdb1): not encrypted"]),
            ),
            (
                "paths strategy on an encrypted disk",
                Some(&all_encrypted),
                Some(plan(Paths, &[])),
                files_only,
            ),
            (
                "no user-data mount (a Mac)",
                Some(&nothing),
                Some(plan(LuksErase, &[])),
                unknown("no user-data mount (/, /home, /var, /srv) reported"),
            ),
        ];
        for (name, s, p, want) in cases {
            let got = wipe_readiness(s, p.as_ref()).to_pb(0);
            assert_eq!((got.state.as_str(), got.readable), want, "{name}");
        }
    }

    #[test]
    fn from_a_stored_section_and_names() {
        let s = Storage {
            wipe: Some(plan(WipeStrategy::LuksErase, &[])),
            ..storage(vec![vol("/", "/dev/sda2", LUKS)], vec![])
        };
        let section = pb::Section {
            kind: pb::SectionKind::Storage as i32,
            body: Some(pb::section::Body::Storage(
                vakt_proto::convert::storage_to_pb(&s),
            )),
            ..pb::Section::default()
        };
        assert_eq!(from_section(Some(&section)), Readiness::CryptoErase);
        assert_eq!(from_section(None).name(), "unknown");
        let home = Readable {
            what: "/home".into(),
            device: "/dev/sdb1".into(),
            why: ReadableWhy::NotEncrypted,
        };
        let p = Readiness::Partial(vec![home.clone()]).to_pb(0);
        assert_eq!(p.state, "partial");
        assert_eq!(p.readable, vec!["/home (/dev/sdb1): not encrypted"]);
        // The same line as data, for a client that says it in its own language.
        assert_eq!(p.items.len(), 1);
        assert_eq!(p.items[0].why, "not-encrypted");
        assert_eq!(
            vakt_proto::convert::readable_from_pb(&p.items[0]),
            Some(home)
        );
    }
}
