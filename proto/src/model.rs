//! Domain types for what an agent reports, shaped as `vakt-agent collect --json` prints them
//! (see INTERFACE.md). Collectors produce these; the server turns stored protobuf back into them
//! for `vakt device show --json`. Kept apart from the generated types so the JSON contract and
//! the wire can each change without dragging the other.

use serde::{Deserialize, Serialize};

/// Everything one collection run found. Each family is independent: a failed collector leaves
/// its family empty (or partial) and adds an entry to `errors`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Report {
    pub host: HostFacts,
    pub software: Vec<Package>,
    pub mail: MailSettings,
    pub roaming: RoamingState,
    #[serde(default)]
    pub storage: Storage,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub errors: Vec<CollectorError>,
}

/// Which fact family a section or an error belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SectionKind {
    Host,
    Software,
    Mail,
    Roaming,
    Storage,
}

impl SectionKind {
    pub const ALL: [SectionKind; 5] = [
        Self::Host,
        Self::Software,
        Self::Mail,
        Self::Roaming,
        Self::Storage,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Host => "host",
            Self::Software => "software",
            Self::Mail => "mail",
            Self::Roaming => "roaming",
            Self::Storage => "storage",
        }
    }
}

/// A collector, or one source of it (one file, one database), that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CollectorError {
    pub section: SectionKind,
    /// What failed: a path under the agent's root, a database, a bus name.
    pub source: String,
    pub message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct HostFacts {
    pub hostname: String,
    /// The operating system's long name, e.g. "Debian GNU/Linux 12 (bookworm)".
    pub os: String,
    pub os_version: String,
    pub kernel: String,
    pub arch: String,
    pub machine_id: String,
    pub serial: String,
    pub vendor: String,
    pub model: String,
    pub cpu: String,
    pub cpu_cores: u32,
    pub memory_bytes: u64,
    pub uptime_s: u64,
    pub boot_time_ms: i64,
    pub disks: Vec<Disk>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Disk {
    pub mount_point: String,
    pub file_system: String,
    pub total_bytes: u64,
    pub available_bytes: u64,
    pub removable: bool,
}

/// How a program was packaged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageFormat {
    Deb,
    Rpm,
    Snap,
    Flatpak,
    Appimage,
    /// A macOS application bundle.
    App,
    /// A Windows installer entry (MSI or a plain win32 installer).
    Msi,
    Appx,
    Binary,
}

/// Where a program came from (INTERFACE.md gives the exact meaning of each).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SoftwareSource {
    OsVendor,
    ThirdPartyRepo,
    Store,
    Unlisted,
    Sideloaded,
}

impl SoftwareSource {
    /// Every source, in INTERFACE.md's order.
    pub const ALL: [SoftwareSource; 5] = [
        Self::OsVendor,
        Self::ThirdPartyRepo,
        Self::Store,
        Self::Unlisted,
        Self::Sideloaded,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::OsVendor => "os-vendor",
            Self::ThirdPartyRepo => "third-party-repo",
            Self::Store => "store",
            Self::Unlisted => "unlisted",
            Self::Sideloaded => "sideloaded",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Package {
    pub name: String,
    pub version: String,
    pub format: PackageFormat,
    pub source: SoftwareSource,
    /// The best evidence for `source`: repository origin, remote, store, or the hint.
    pub origin: String,
    /// Repository packages: false when a configured repository offers a newer version.
    pub current: bool,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub arch: String,
    /// Whose per-user install this is; empty for system-wide ones.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    /// Where it lives, for programs outside a package manager.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailSettings {
    pub accounts: Vec<MailAccount>,
    pub forwards: Vec<MailForward>,
    pub identities: Vec<MailIdentity>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MailSecurity {
    Tls,
    Starttls,
    None,
    /// No explicit setting: the client's default applies.
    Default,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailAccount {
    pub client: String,
    pub user: String,
    pub address: String,
    pub host: String,
    pub port: u32,
    pub security: MailSecurity,
    /// imap, pop3, smtp, ...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub protocol: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ForwardKind {
    Forward,
    Redirect,
    DotForward,
    /// Delivery to a program (`|command` in ~/.forward, an Exim filter's `pipe`, Sieve's
    /// `pipe`): the program can send the message on, so it may forward.
    Pipe,
    /// Delivery to a file (`/path` in ~/.forward, an Exim filter's `save`).
    File,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailForward {
    pub client: String,
    pub user: String,
    pub rule: String,
    pub enabled: bool,
    pub target: String,
    pub kind: ForwardKind,
    /// The rule keeps a copy in the mailbox (sieve `:copy`, a `\user` line in ~/.forward).
    #[serde(default)]
    pub keeps_copy: bool,
    /// Why the reader could not tell where this rule sends mail ("rule not understood, may
    /// forward"): a construct it does not understand, a target that depends on the message, a
    /// file over the size cap. Empty when the target is known.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub problem: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MailIdentity {
    pub client: String,
    pub user: String,
    pub address: String,
    pub signature: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoamingState {
    pub modems: Vec<Modem>,
    /// Periods registered outside the home country, with the data used then.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub abroad: Vec<AbroadPeriod>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Modem {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub state: String,
    pub registration: String,
    pub roaming: bool,
    pub operator_mcc: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operator_mnc: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub operator_name: String,
    pub country: String,
    pub home_mcc: String,
    pub data_connected: bool,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub model: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AbroadPeriod {
    pub country: String,
    pub mcc: String,
    pub entered_ms: i64,
    /// None while still abroad.
    pub left_ms: Option<i64>,
    pub rx_bytes: u64,
    pub tx_bytes: u64,
}

/// Which volumes are encrypted, and what would make a lost laptop's data unreadable (policy
/// 8.1): a crypt-erase needs LUKS under every user-data mount and swap.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Storage {
    pub volumes: Vec<Volume>,
    pub swap: Vec<Volume>,
    /// A TPM 2.0 is present.
    pub tpm: bool,
    /// The firmware booted with Secure Boot enforcing.
    pub secure_boot: bool,
    /// The wipe the agent is configured for; absent from `collect` without a configuration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wipe: Option<WipePlan>,
}

/// How the agent wipes a lost laptop (`[wipe]` in its agent.toml).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WipePlan {
    pub strategy: WipeStrategy,
    /// `luks-erase`: the configured devices; empty means those behind the user-data mounts,
    /// found at the moment of the wipe.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub devices: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum WipeStrategy {
    LuksErase,
    Paths,
}

/// The mounts that hold user data unless a pack says otherwise: the root file system and the
/// trees where homes, mail spools, databases and served files live.
pub const USER_DATA_MOUNTS: [&str; 4] = ["/", "/home", "/var", "/srv"];

/// `mount` is one of `counted` or lies under one (`/home/anna` under `/home`); `/` counts only
/// itself, or every mount would.
pub fn counts_as(mount: &str, counted: &[impl AsRef<str>]) -> bool {
    counted.iter().any(|c| {
        let c = c.as_ref();
        mount == c
            || (c != "/"
                && mount
                    .strip_prefix(c)
                    .is_some_and(|rest| rest.starts_with('/')))
    })
}

/// What a crypto-erase of a laptop's user data would reach: the LUKS devices whose key slots
/// it would erase, and the user data it would leave readable, each said for IT.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EraseScope {
    /// LUKS devices behind user-data mounts and swap, in order, each once.
    pub luks_devices: Vec<String>,
    /// Each user-data mount and swap on those devices, with its device (a mount over LVM on two
    /// LUKS partitions twice), in order, each pair once: what an erase of one device covers.
    pub luks_uses: Vec<LuksUse>,
    /// User data an erase of those devices leaves readable (`/home (/dev/sdb1): not encrypted`).
    pub readable: Vec<Readable>,
    /// At least one user-data mount was found (a report from a non-Linux agent has none).
    pub user_data_found: bool,
}

/// A user-data mount (`/home`) or `swap` on the LUKS device `device`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LuksUse {
    pub what: String,
    pub device: String,
}

/// User data a crypto-erase leaves readable, as data: the console says it in Swedish too.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readable {
    /// The mount (`/home`), `swap`, or empty for a device named on its own.
    pub what: String,
    pub device: String,
    pub why: ReadableWhy,
}

impl Readable {
    /// The line for people, with `why` said in their language: `/home (/dev/sdb1): {why}`.
    pub fn say(&self, why: &str) -> String {
        if self.what.is_empty() {
            format!("{}: {why}", self.device)
        } else {
            format!("{} ({}): {why}", self.what, self.device)
        }
    }
}

/// In English, as the CLI, the JSON output and the agent's wipe result say it.
impl std::fmt::Display for Readable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.say(self.why.en()))
    }
}

/// Why user data stays readable after an erase of the LUKS key slots.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadableWhy {
    NotEncrypted,
    /// LUKS, but the probe did not find the device whose header it would erase.
    LuksBackingUnknown,
    PlainDmCrypt,
    Bitlocker,
    Truecrypt,
    /// A LUKS device the agent's configured wipe devices leave out.
    NotConfigured,
}

impl ReadableWhy {
    pub const ALL: [Self; 6] = [
        Self::NotEncrypted,
        Self::LuksBackingUnknown,
        Self::PlainDmCrypt,
        Self::Bitlocker,
        Self::Truecrypt,
        Self::NotConfigured,
    ];

    /// The name on the wire (`WipeReadiness.items[].why`).
    pub fn code(self) -> &'static str {
        match self {
            Self::NotEncrypted => "not-encrypted",
            Self::LuksBackingUnknown => "luks-backing-unknown",
            Self::PlainDmCrypt => "plain-dm-crypt",
            Self::Bitlocker => "bitlocker",
            Self::Truecrypt => "truecrypt",
            Self::NotConfigured => "not-configured",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|w| w.code() == code)
    }

    pub fn en(self) -> &'static str {
        match self {
            Self::NotEncrypted => "not encrypted",
            Self::LuksBackingUnknown => "LUKS, backing device not known",
            Self::PlainDmCrypt => "plain dm-crypt, no key slots to erase",
            Self::Bitlocker => "BitLocker, no LUKS key slots to erase",
            Self::Truecrypt => "TrueCrypt, no LUKS key slots to erase",
            Self::NotConfigured => "LUKS, not among the configured wipe devices",
        }
    }
}

impl Storage {
    /// The erase scope over the mounts in `counted` and every swap. A plain dm-crypt swap
    /// counts as safe: its key is random and gone at power-off. BitLocker, TrueCrypt and plain
    /// dm-crypt mounts are encrypted but have no LUKS key slots to erase: readable to whoever
    /// holds their passphrase.
    pub fn erase_scope(&self, counted: &[impl AsRef<str>]) -> EraseScope {
        let mut scope = EraseScope::default();
        for v in self.volumes.iter().filter(|v| counts_as(&v.mount, counted)) {
            scope.user_data_found = true;
            for leaf in std::iter::once(v).chain(&v.more_devices) {
                scope.judge(&v.mount, leaf, false);
            }
        }
        for v in &self.swap {
            for leaf in std::iter::once(v).chain(&v.more_devices) {
                scope.judge("swap", leaf, true);
            }
        }
        scope
    }
}

impl EraseScope {
    fn judge(&mut self, what: &str, leaf: &Volume, swap: bool) {
        let why = match leaf.scheme {
            Some(CryptScheme::Luks1 | CryptScheme::Luks2) if !leaf.device.is_empty() => {
                if !self.luks_devices.contains(&leaf.device) {
                    self.luks_devices.push(leaf.device.clone());
                }
                let used = LuksUse {
                    what: what.to_string(),
                    device: leaf.device.clone(),
                };
                if !self.luks_uses.contains(&used) {
                    self.luks_uses.push(used);
                }
                return;
            }
            Some(CryptScheme::Plain) if swap => return,
            Some(CryptScheme::Luks1 | CryptScheme::Luks2) => ReadableWhy::LuksBackingUnknown,
            Some(CryptScheme::Plain) => ReadableWhy::PlainDmCrypt,
            Some(CryptScheme::Bitlk) => ReadableWhy::Bitlocker,
            Some(CryptScheme::Tcrypt) => ReadableWhy::Truecrypt,
            None => ReadableWhy::NotEncrypted,
        };
        self.readable.push(Readable {
            what: what.to_string(),
            device: leaf.device.clone(),
            why,
        });
    }
}

/// The encryption layer under a volume, as device-mapper names it (`CRYPT-LUKS2-…`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CryptScheme {
    Luks1,
    Luks2,
    /// dm-crypt without a header: a swap with a new random key at every boot.
    Plain,
    /// BitLocker, opened by cryptsetup.
    Bitlk,
    /// TrueCrypt/VeraCrypt, opened by cryptsetup.
    Tcrypt,
}

/// A mounted block device or a swap, and the encryption layer under it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Where it is mounted; empty for swap.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mount: String,
    /// The block device under the encryption layer (the one a crypt-erase acts on), or the
    /// mounted device itself when there is no such layer.
    pub device: String,
    /// Every path from the mounted device down to a disk passes through an encryption layer.
    pub encrypted: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<CryptScheme>,
    /// e.g. `aes-xts-plain64`; empty when not known (plain dm-crypt has no header).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub cipher: String,
    /// Bits of the volume key; 0 when not known.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub key_size: u32,
    /// Active key slots (0 after a crypt-erase); None when not known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_slots: Option<u32>,
    /// The key slots' key derivation (`argon2id`, `pbkdf2`; several joined by commas).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub pbkdf: String,
    /// The device-mapper name of the encryption layer (`luks-root`).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub mapper: String,
    /// Further backing devices when the volume spans several (LVM over two LUKS partitions),
    /// each described like the first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_devices: Vec<Volume>,
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vol(mount: &str, device: &str, scheme: Option<CryptScheme>) -> Volume {
        Volume {
            mount: mount.into(),
            device: device.into(),
            encrypted: scheme.is_some(),
            scheme,
            ..Volume::default()
        }
    }

    #[test]
    fn user_data_mounts_count_with_their_subtrees_but_root_only_itself() {
        assert!(counts_as("/", &USER_DATA_MOUNTS));
        assert!(counts_as("/home/anna", &USER_DATA_MOUNTS));
        assert!(!counts_as("/homes", &USER_DATA_MOUNTS));
        assert!(!counts_as("/boot", &USER_DATA_MOUNTS));
        assert!(!counts_as("/media/usb", &USER_DATA_MOUNTS));
    }

    /// LUKS devices once each (a swap file on the root volume is the root's device), a plain
    /// random-key swap is safe, a plain /home and a BitLocker /srv are said.
    #[test]
    fn erase_scope_names_devices_and_what_stays_readable() {
        let luks = Some(CryptScheme::Luks2);
        let s = Storage {
            volumes: vec![
                vol("/", "/dev/nvme0n1p3", luks),
                vol("/boot", "/dev/nvme0n1p1", None),
                vol("/home", "/dev/sdb1", None),
                vol("/srv", "/dev/sdc1", Some(CryptScheme::Bitlk)),
            ],
            swap: vec![
                vol("", "/dev/nvme0n1p3", luks),
                vol("", "/dev/nvme0n1p2", Some(CryptScheme::Plain)),
            ],
            ..Storage::default()
        };
        let scope = s.erase_scope(&USER_DATA_MOUNTS);
        assert_eq!(scope.luks_devices, vec!["/dev/nvme0n1p3".to_string()]);
        let used = |what: &str| LuksUse {
            what: what.into(),
            device: "/dev/nvme0n1p3".into(),
        };
        assert_eq!(scope.luks_uses, vec![used("/"), used("swap")]);
        let lines: Vec<String> = scope.readable.iter().map(ToString::to_string).collect();
        assert_eq!(
            lines,
            vec![
                "/home (/dev/sdb1): not encrypted".to_string(),
                "/srv (/dev/sdc1): BitLocker, no LUKS key slots to erase".to_string(),
            ]
        );
        for why in ReadableWhy::ALL {
            assert_eq!(ReadableWhy::from_code(why.code()), Some(why));
        }
        assert!(scope.user_data_found);
        assert!(
            !Storage::default()
                .erase_scope(&USER_DATA_MOUNTS)
                .user_data_found
        );
    }
}
