//! Conversions between the domain types (`model`) and the wire (`pb`).
//!
//! model -> pb cannot fail. pb -> model can: the wire comes from a device, so an enum value this
//! build does not know, or a section without a body, is an error that names the field.

use crate::hash::section_hash;
use crate::model as m;
use crate::pb;

/// A protobuf message that does not map onto the domain types.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConvertError {
    #[error("{field}: unknown value {value}")]
    UnknownEnum { field: &'static str, value: i32 },
    #[error("section {kind}: the body is missing or of another kind")]
    BodyMismatch { kind: &'static str },
    #[error("section kind {0} is not known")]
    UnknownSection(i32),
}

fn enum_err(field: &'static str, value: i32) -> ConvertError {
    ConvertError::UnknownEnum { field, value }
}

impl From<m::SectionKind> for pb::SectionKind {
    fn from(k: m::SectionKind) -> Self {
        match k {
            m::SectionKind::Host => Self::Host,
            m::SectionKind::Software => Self::Software,
            m::SectionKind::Mail => Self::Mail,
            m::SectionKind::Roaming => Self::Roaming,
            m::SectionKind::Storage => Self::Storage,
        }
    }
}

/// The domain kind of a wire section kind.
pub fn section_kind(raw: i32) -> Result<m::SectionKind, ConvertError> {
    match pb::SectionKind::try_from(raw) {
        Ok(pb::SectionKind::Host) => Ok(m::SectionKind::Host),
        Ok(pb::SectionKind::Software) => Ok(m::SectionKind::Software),
        Ok(pb::SectionKind::Mail) => Ok(m::SectionKind::Mail),
        Ok(pb::SectionKind::Roaming) => Ok(m::SectionKind::Roaming),
        Ok(pb::SectionKind::Storage) => Ok(m::SectionKind::Storage),
        _ => Err(ConvertError::UnknownSection(raw)),
    }
}

/// Splits a report into its sections, each with its content hash.
pub fn report_to_sections(r: &m::Report) -> Vec<pb::Section> {
    m::SectionKind::ALL
        .iter()
        .map(|&kind| {
            let body = match kind {
                m::SectionKind::Host => pb::section::Body::Host(host_to_pb(&r.host)),
                m::SectionKind::Software => pb::section::Body::Software(pb::SoftwareInventory {
                    packages: r.software.iter().map(package_to_pb).collect(),
                }),
                m::SectionKind::Mail => pb::section::Body::Mail(mail_to_pb(&r.mail)),
                m::SectionKind::Roaming => pb::section::Body::Roaming(roaming_to_pb(&r.roaming)),
                m::SectionKind::Storage => pb::section::Body::Storage(storage_to_pb(&r.storage)),
            };
            let errors = r
                .errors
                .iter()
                .filter(|e| e.section == kind)
                .map(|e| pb::CollectorError {
                    source: e.source.clone(),
                    message: e.message.clone(),
                })
                .collect();
            let mut s = pb::Section {
                kind: pb::SectionKind::from(kind) as i32,
                hash: Vec::new(),
                errors,
                body: Some(body),
            };
            s.hash = section_hash(&s).to_vec();
            s
        })
        .collect()
}

/// Rebuilds a report from stored sections. Families without a section stay empty.
pub fn sections_to_report(sections: &[pb::Section]) -> Result<m::Report, ConvertError> {
    let mut r = m::Report::default();
    for s in sections {
        let kind = section_kind(s.kind)?;
        r.errors.extend(s.errors.iter().map(|e| m::CollectorError {
            section: kind,
            source: e.source.clone(),
            message: e.message.clone(),
        }));
        use pb::section::Body;
        match (kind, &s.body) {
            (m::SectionKind::Host, Some(Body::Host(h))) => r.host = host_from_pb(h),
            (m::SectionKind::Software, Some(Body::Software(sw))) => {
                r.software = sw
                    .packages
                    .iter()
                    .map(package_from_pb)
                    .collect::<Result<_, _>>()?;
            }
            (m::SectionKind::Mail, Some(Body::Mail(mail))) => r.mail = mail_from_pb(mail)?,
            (m::SectionKind::Roaming, Some(Body::Roaming(ro))) => r.roaming = roaming_from_pb(ro),
            (m::SectionKind::Storage, Some(Body::Storage(st))) => r.storage = storage_from_pb(st)?,
            (k, _) => return Err(ConvertError::BodyMismatch { kind: k.as_str() }),
        }
    }
    Ok(r)
}

pub fn host_to_pb(h: &m::HostFacts) -> pb::HostFacts {
    pb::HostFacts {
        hostname: h.hostname.clone(),
        os_name: h.os.clone(),
        os_version: h.os_version.clone(),
        kernel: h.kernel.clone(),
        arch: h.arch.clone(),
        machine_id: h.machine_id.clone(),
        serial: h.serial.clone(),
        vendor: h.vendor.clone(),
        model: h.model.clone(),
        cpu_brand: h.cpu.clone(),
        cpu_cores: h.cpu_cores,
        memory_bytes: h.memory_bytes,
        uptime_s: h.uptime_s,
        boot_time_ms: h.boot_time_ms,
        disks: h
            .disks
            .iter()
            .map(|d| pb::Disk {
                mount_point: d.mount_point.clone(),
                file_system: d.file_system.clone(),
                total_bytes: d.total_bytes,
                available_bytes: d.available_bytes,
                removable: d.removable,
            })
            .collect(),
    }
}

pub fn host_from_pb(h: &pb::HostFacts) -> m::HostFacts {
    m::HostFacts {
        hostname: h.hostname.clone(),
        os: h.os_name.clone(),
        os_version: h.os_version.clone(),
        kernel: h.kernel.clone(),
        arch: h.arch.clone(),
        machine_id: h.machine_id.clone(),
        serial: h.serial.clone(),
        vendor: h.vendor.clone(),
        model: h.model.clone(),
        cpu: h.cpu_brand.clone(),
        cpu_cores: h.cpu_cores,
        memory_bytes: h.memory_bytes,
        uptime_s: h.uptime_s,
        boot_time_ms: h.boot_time_ms,
        disks: h
            .disks
            .iter()
            .map(|d| m::Disk {
                mount_point: d.mount_point.clone(),
                file_system: d.file_system.clone(),
                total_bytes: d.total_bytes,
                available_bytes: d.available_bytes,
                removable: d.removable,
            })
            .collect(),
    }
}

fn format_to_pb(f: m::PackageFormat) -> pb::PackageFormat {
    use m::PackageFormat as F;
    match f {
        F::Deb => pb::PackageFormat::Deb,
        F::Rpm => pb::PackageFormat::Rpm,
        F::Snap => pb::PackageFormat::Snap,
        F::Flatpak => pb::PackageFormat::Flatpak,
        F::Appimage => pb::PackageFormat::Appimage,
        F::App => pb::PackageFormat::App,
        F::Msi => pb::PackageFormat::Msi,
        F::Appx => pb::PackageFormat::Appx,
        F::Binary => pb::PackageFormat::Binary,
    }
}

fn format_from_pb(raw: i32) -> Result<m::PackageFormat, ConvertError> {
    use m::PackageFormat as F;
    Ok(match pb::PackageFormat::try_from(raw) {
        Ok(pb::PackageFormat::Deb) => F::Deb,
        Ok(pb::PackageFormat::Rpm) => F::Rpm,
        Ok(pb::PackageFormat::Snap) => F::Snap,
        Ok(pb::PackageFormat::Flatpak) => F::Flatpak,
        Ok(pb::PackageFormat::Appimage) => F::Appimage,
        Ok(pb::PackageFormat::App) => F::App,
        Ok(pb::PackageFormat::Msi) => F::Msi,
        Ok(pb::PackageFormat::Appx) => F::Appx,
        Ok(pb::PackageFormat::Binary) => F::Binary,
        _ => return Err(enum_err("software.format", raw)),
    })
}

fn source_to_pb(s: m::SoftwareSource) -> pb::SoftwareSource {
    use m::SoftwareSource as S;
    match s {
        S::OsVendor => pb::SoftwareSource::OsVendor,
        S::ThirdPartyRepo => pb::SoftwareSource::ThirdPartyRepo,
        S::Store => pb::SoftwareSource::Store,
        S::Unlisted => pb::SoftwareSource::Unlisted,
        S::Sideloaded => pb::SoftwareSource::Sideloaded,
    }
}

fn source_from_pb(raw: i32) -> Result<m::SoftwareSource, ConvertError> {
    use m::SoftwareSource as S;
    Ok(match pb::SoftwareSource::try_from(raw) {
        Ok(pb::SoftwareSource::OsVendor) => S::OsVendor,
        Ok(pb::SoftwareSource::ThirdPartyRepo) => S::ThirdPartyRepo,
        Ok(pb::SoftwareSource::Store) => S::Store,
        Ok(pb::SoftwareSource::Unlisted) => S::Unlisted,
        Ok(pb::SoftwareSource::Sideloaded) => S::Sideloaded,
        _ => return Err(enum_err("software.source", raw)),
    })
}

pub fn package_to_pb(p: &m::Package) -> pb::Package {
    pb::Package {
        name: p.name.clone(),
        version: p.version.clone(),
        format: format_to_pb(p.format) as i32,
        source: source_to_pb(p.source) as i32,
        origin: p.origin.clone(),
        current: p.current,
        arch: p.arch.clone(),
        user: p.user.clone(),
        path: p.path.clone(),
    }
}

pub fn package_from_pb(p: &pb::Package) -> Result<m::Package, ConvertError> {
    Ok(m::Package {
        name: p.name.clone(),
        version: p.version.clone(),
        format: format_from_pb(p.format)?,
        source: source_from_pb(p.source)?,
        origin: p.origin.clone(),
        current: p.current,
        arch: p.arch.clone(),
        user: p.user.clone(),
        path: p.path.clone(),
    })
}

fn security_to_pb(s: m::MailSecurity) -> pb::MailSecurity {
    match s {
        m::MailSecurity::Tls => pb::MailSecurity::Tls,
        m::MailSecurity::Starttls => pb::MailSecurity::Starttls,
        m::MailSecurity::None => pb::MailSecurity::None,
        m::MailSecurity::Default => pb::MailSecurity::Default,
    }
}

fn security_from_pb(raw: i32) -> Result<m::MailSecurity, ConvertError> {
    Ok(match pb::MailSecurity::try_from(raw) {
        Ok(pb::MailSecurity::Tls) => m::MailSecurity::Tls,
        Ok(pb::MailSecurity::Starttls) => m::MailSecurity::Starttls,
        Ok(pb::MailSecurity::None) => m::MailSecurity::None,
        Ok(pb::MailSecurity::Default) => m::MailSecurity::Default,
        _ => return Err(enum_err("mail.accounts.security", raw)),
    })
}

fn forward_kind_to_pb(k: m::ForwardKind) -> pb::ForwardKind {
    match k {
        m::ForwardKind::Forward => pb::ForwardKind::Forward,
        m::ForwardKind::Redirect => pb::ForwardKind::Redirect,
        m::ForwardKind::DotForward => pb::ForwardKind::DotForward,
        m::ForwardKind::Pipe => pb::ForwardKind::Pipe,
        m::ForwardKind::File => pb::ForwardKind::File,
    }
}

fn forward_kind_from_pb(raw: i32) -> Result<m::ForwardKind, ConvertError> {
    Ok(match pb::ForwardKind::try_from(raw) {
        Ok(pb::ForwardKind::Forward) => m::ForwardKind::Forward,
        Ok(pb::ForwardKind::Redirect) => m::ForwardKind::Redirect,
        Ok(pb::ForwardKind::DotForward) => m::ForwardKind::DotForward,
        Ok(pb::ForwardKind::Pipe) => m::ForwardKind::Pipe,
        Ok(pb::ForwardKind::File) => m::ForwardKind::File,
        _ => return Err(enum_err("mail.forwards.kind", raw)),
    })
}

pub fn mail_to_pb(mail: &m::MailSettings) -> pb::MailSettings {
    pb::MailSettings {
        accounts: mail
            .accounts
            .iter()
            .map(|a| pb::MailAccount {
                client: a.client.clone(),
                user: a.user.clone(),
                address: a.address.clone(),
                host: a.host.clone(),
                port: a.port,
                security: security_to_pb(a.security) as i32,
                protocol: a.protocol.clone(),
            })
            .collect(),
        forwards: mail
            .forwards
            .iter()
            .map(|f| pb::MailForward {
                client: f.client.clone(),
                user: f.user.clone(),
                rule: f.rule.clone(),
                enabled: f.enabled,
                target: f.target.clone(),
                kind: forward_kind_to_pb(f.kind) as i32,
                keeps_copy: f.keeps_copy,
                problem: f.problem.clone(),
            })
            .collect(),
        identities: mail
            .identities
            .iter()
            .map(|i| pb::MailIdentity {
                client: i.client.clone(),
                user: i.user.clone(),
                address: i.address.clone(),
                signature: i.signature.clone(),
                name: i.name.clone(),
            })
            .collect(),
    }
}

pub fn mail_from_pb(mail: &pb::MailSettings) -> Result<m::MailSettings, ConvertError> {
    Ok(m::MailSettings {
        accounts: mail
            .accounts
            .iter()
            .map(|a| {
                Ok(m::MailAccount {
                    client: a.client.clone(),
                    user: a.user.clone(),
                    address: a.address.clone(),
                    host: a.host.clone(),
                    port: a.port,
                    security: security_from_pb(a.security)?,
                    protocol: a.protocol.clone(),
                })
            })
            .collect::<Result<_, ConvertError>>()?,
        forwards: mail
            .forwards
            .iter()
            .map(|f| {
                Ok(m::MailForward {
                    client: f.client.clone(),
                    user: f.user.clone(),
                    rule: f.rule.clone(),
                    enabled: f.enabled,
                    target: f.target.clone(),
                    kind: forward_kind_from_pb(f.kind)?,
                    keeps_copy: f.keeps_copy,
                    problem: f.problem.clone(),
                })
            })
            .collect::<Result<_, ConvertError>>()?,
        identities: mail
            .identities
            .iter()
            .map(|i| m::MailIdentity {
                client: i.client.clone(),
                user: i.user.clone(),
                address: i.address.clone(),
                signature: i.signature.clone(),
                name: i.name.clone(),
            })
            .collect(),
    })
}

pub fn roaming_to_pb(r: &m::RoamingState) -> pb::RoamingState {
    pb::RoamingState {
        modems: r
            .modems
            .iter()
            .map(|x| pb::Modem {
                id: x.id.clone(),
                state: x.state.clone(),
                registration: x.registration.clone(),
                roaming: x.roaming,
                operator_mcc: x.operator_mcc.clone(),
                operator_mnc: x.operator_mnc.clone(),
                operator_name: x.operator_name.clone(),
                country: x.country.clone(),
                home_mcc: x.home_mcc.clone(),
                data_connected: x.data_connected,
                rx_bytes: x.rx_bytes,
                tx_bytes: x.tx_bytes,
                model: x.model.clone(),
            })
            .collect(),
        abroad: r
            .abroad
            .iter()
            .map(|a| pb::AbroadPeriod {
                country: a.country.clone(),
                mcc: a.mcc.clone(),
                entered_ms: a.entered_ms,
                left_ms: a.left_ms.unwrap_or(0),
                rx_bytes: a.rx_bytes,
                tx_bytes: a.tx_bytes,
            })
            .collect(),
    }
}

pub fn roaming_from_pb(r: &pb::RoamingState) -> m::RoamingState {
    m::RoamingState {
        modems: r
            .modems
            .iter()
            .map(|x| m::Modem {
                id: x.id.clone(),
                state: x.state.clone(),
                registration: x.registration.clone(),
                roaming: x.roaming,
                operator_mcc: x.operator_mcc.clone(),
                operator_mnc: x.operator_mnc.clone(),
                operator_name: x.operator_name.clone(),
                country: x.country.clone(),
                home_mcc: x.home_mcc.clone(),
                data_connected: x.data_connected,
                rx_bytes: x.rx_bytes,
                tx_bytes: x.tx_bytes,
                model: x.model.clone(),
            })
            .collect(),
        abroad: r
            .abroad
            .iter()
            .map(|a| m::AbroadPeriod {
                country: a.country.clone(),
                mcc: a.mcc.clone(),
                entered_ms: a.entered_ms,
                left_ms: (a.left_ms != 0).then_some(a.left_ms),
                rx_bytes: a.rx_bytes,
                tx_bytes: a.tx_bytes,
            })
            .collect(),
    }
}

pub fn storage_to_pb(s: &m::Storage) -> pb::StorageFacts {
    pb::StorageFacts {
        volumes: s.volumes.iter().map(volume_to_pb).collect(),
        swap: s.swap.iter().map(volume_to_pb).collect(),
        tpm: s.tpm,
        secure_boot: s.secure_boot,
        wipe: s.wipe.as_ref().map(|w| pb::WipePlan {
            strategy: match w.strategy {
                m::WipeStrategy::LuksErase => pb::WipeStrategy::LuksErase,
                m::WipeStrategy::Paths => pb::WipeStrategy::Paths,
            } as i32,
            devices: w.devices.clone(),
        }),
    }
}

fn volume_to_pb(v: &m::Volume) -> pb::Volume {
    let scheme = match v.scheme {
        None => pb::CryptScheme::Unspecified,
        Some(m::CryptScheme::Luks1) => pb::CryptScheme::Luks1,
        Some(m::CryptScheme::Luks2) => pb::CryptScheme::Luks2,
        Some(m::CryptScheme::Plain) => pb::CryptScheme::Plain,
        Some(m::CryptScheme::Bitlk) => pb::CryptScheme::Bitlk,
        Some(m::CryptScheme::Tcrypt) => pb::CryptScheme::Tcrypt,
    };
    pb::Volume {
        mount: v.mount.clone(),
        device: v.device.clone(),
        encrypted: v.encrypted,
        scheme: scheme as i32,
        cipher: v.cipher.clone(),
        key_size: v.key_size,
        key_slots: v.key_slots,
        pbkdf: v.pbkdf.clone(),
        mapper: v.mapper.clone(),
        more_devices: v.more_devices.iter().map(volume_to_pb).collect(),
    }
}

pub fn storage_from_pb(s: &pb::StorageFacts) -> Result<m::Storage, ConvertError> {
    Ok(m::Storage {
        volumes: s
            .volumes
            .iter()
            .map(volume_from_pb)
            .collect::<Result<_, _>>()?,
        swap: s
            .swap
            .iter()
            .map(volume_from_pb)
            .collect::<Result<_, _>>()?,
        tpm: s.tpm,
        secure_boot: s.secure_boot,
        wipe: s.wipe.as_ref().map(wipe_from_pb).transpose()?,
    })
}

/// User data a wipe leaves readable, for the admin API's `WipeReadiness.items`.
pub fn readable_to_pb(r: &m::Readable) -> pb::ReadableItem {
    pb::ReadableItem {
        what: r.what.clone(),
        device: r.device.clone(),
        why: r.why.code().to_string(),
    }
}

/// The item as data; `None` for a `why` this build does not know (a newer server), whose
/// line the caller shows as the server said it.
pub fn readable_from_pb(r: &pb::ReadableItem) -> Option<m::Readable> {
    Some(m::Readable {
        what: r.what.clone(),
        device: r.device.clone(),
        why: m::ReadableWhy::from_code(&r.why)?,
    })
}

fn wipe_from_pb(w: &pb::WipePlan) -> Result<m::WipePlan, ConvertError> {
    let strategy = match pb::WipeStrategy::try_from(w.strategy) {
        Ok(pb::WipeStrategy::LuksErase) => m::WipeStrategy::LuksErase,
        Ok(pb::WipeStrategy::Paths) => m::WipeStrategy::Paths,
        Ok(pb::WipeStrategy::Unspecified) | Err(_) => {
            return Err(enum_err("storage.wipe.strategy", w.strategy));
        }
    };
    Ok(m::WipePlan {
        strategy,
        devices: w.devices.clone(),
    })
}

fn volume_from_pb(v: &pb::Volume) -> Result<m::Volume, ConvertError> {
    let scheme = match pb::CryptScheme::try_from(v.scheme) {
        Ok(pb::CryptScheme::Unspecified) => None,
        Ok(pb::CryptScheme::Luks1) => Some(m::CryptScheme::Luks1),
        Ok(pb::CryptScheme::Luks2) => Some(m::CryptScheme::Luks2),
        Ok(pb::CryptScheme::Plain) => Some(m::CryptScheme::Plain),
        Ok(pb::CryptScheme::Bitlk) => Some(m::CryptScheme::Bitlk),
        Ok(pb::CryptScheme::Tcrypt) => Some(m::CryptScheme::Tcrypt),
        Err(_) => return Err(enum_err("storage.scheme", v.scheme)),
    };
    Ok(m::Volume {
        mount: v.mount.clone(),
        device: v.device.clone(),
        encrypted: v.encrypted,
        scheme,
        cipher: v.cipher.clone(),
        key_size: v.key_size,
        key_slots: v.key_slots,
        pbkdf: v.pbkdf.clone(),
        mapper: v.mapper.clone(),
        more_devices: v
            .more_devices
            .iter()
            .map(volume_from_pb)
            .collect::<Result<_, _>>()?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> m::Report {
        m::Report {
            host: m::HostFacts {
                hostname: "lap-1".into(),
                os: "Debian GNU/Linux 12 (bookworm)".into(),
                ..Default::default()
            },
            software: vec![m::Package {
                name: "nodejs".into(),
                version: "20.20.2-1nodesource1".into(),
                format: m::PackageFormat::Deb,
                source: m::SoftwareSource::Unlisted,
                origin: "NodeSource".into(),
                current: false,
                arch: "amd64".into(),
                user: String::new(),
                path: String::new(),
            }],
            mail: m::MailSettings {
                forwards: vec![
                    m::MailForward {
                        client: "thunderbird".into(),
                        user: "anna".into(),
                        rule: "to gmail".into(),
                        enabled: true,
                        target: "anna@gmail.com".into(),
                        kind: m::ForwardKind::Forward,
                        keeps_copy: false,
                        problem: String::new(),
                    },
                    m::MailForward {
                        client: "dot-forward".into(),
                        user: "anna".into(),
                        rule: "~/.forward (Exim filter): if $h_subject: contains \"x\"".into(),
                        enabled: true,
                        target: "/usr/bin/mailfwd".into(),
                        kind: m::ForwardKind::Pipe,
                        keeps_copy: true,
                        problem: "line 3: unknown command `frobnicate`".into(),
                    },
                ],
                ..Default::default()
            },
            roaming: m::RoamingState {
                abroad: vec![m::AbroadPeriod {
                    country: "NO".into(),
                    mcc: "242".into(),
                    entered_ms: 5,
                    left_ms: None,
                    rx_bytes: 1,
                    tx_bytes: 2,
                }],
                ..Default::default()
            },
            storage: m::Storage {
                volumes: vec![m::Volume {
                    mount: "/".into(),
                    device: "/dev/nvme0n1p3".into(),
                    encrypted: true,
                    scheme: Some(m::CryptScheme::Luks2),
                    cipher: "aes-xts-plain64".into(),
                    key_size: 512,
                    key_slots: Some(0),
                    pbkdf: "argon2id".into(),
                    mapper: "luks-root".into(),
                    more_devices: vec![m::Volume {
                        device: "/dev/sda1".into(),
                        encrypted: true,
                        scheme: Some(m::CryptScheme::Luks1),
                        ..Default::default()
                    }],
                }],
                swap: vec![m::Volume {
                    device: "/dev/nvme0n1p2".into(),
                    ..Default::default()
                }],
                tpm: true,
                secure_boot: false,
                wipe: Some(m::WipePlan {
                    strategy: m::WipeStrategy::LuksErase,
                    devices: vec!["/dev/nvme0n1p3".into()],
                }),
            },
            errors: vec![m::CollectorError {
                section: m::SectionKind::Mail,
                source: "/home/anna/.forward".into(),
                message: "not UTF-8".into(),
            }],
        }
    }

    #[test]
    fn round_trip_keeps_everything() {
        let r = sample();
        let sections = report_to_sections(&r);
        assert_eq!(sections.len(), 5);
        assert_eq!(sections_to_report(&sections).unwrap(), r);
    }

    #[test]
    fn hash_changes_with_content_and_only_then() {
        let a = report_to_sections(&sample());
        let b = report_to_sections(&sample());
        assert_eq!(a, b);
        let mut changed = sample();
        changed.software[0].version = "20.20.3".into();
        let c = report_to_sections(&changed);
        assert_ne!(a[1].hash, c[1].hash, "software hash follows its content");
        assert_eq!(a[0].hash, c[0].hash, "host hash is unaffected");
    }

    #[test]
    fn unknown_enum_is_an_error_naming_the_field() {
        let mut s = report_to_sections(&sample());
        if let Some(pb::section::Body::Software(sw)) = &mut s[1].body {
            sw.packages[0].source = 99;
        }
        let err = sections_to_report(&s).unwrap_err();
        assert_eq!(err.to_string(), "software.source: unknown value 99");
    }

    #[test]
    fn unknown_crypt_scheme_is_an_error_naming_the_field() {
        let mut s = report_to_sections(&sample());
        if let Some(pb::section::Body::Storage(st)) = &mut s[4].body {
            st.volumes[0].scheme = 42;
        }
        let err = sections_to_report(&s).unwrap_err();
        assert_eq!(err.to_string(), "storage.scheme: unknown value 42");
        let mut s = report_to_sections(&sample());
        if let Some(pb::section::Body::Storage(st)) = &mut s[4].body
            && let Some(w) = &mut st.wipe
        {
            w.strategy = 0;
        }
        let err = sections_to_report(&s).unwrap_err();
        assert_eq!(err.to_string(), "storage.wipe.strategy: unknown value 0");
    }

    #[test]
    fn json_uses_interface_names() {
        let v = serde_json::to_value(sample()).unwrap();
        assert_eq!(v["software"][0]["source"], "unlisted");
        assert_eq!(v["software"][0]["format"], "deb");
        assert_eq!(v["mail"]["forwards"][0]["kind"], "forward");
        assert_eq!(v["mail"]["forwards"][1]["kind"], "pipe");
        assert!(v["mail"]["forwards"][0].get("problem").is_none());
        assert_eq!(
            v["mail"]["forwards"][1]["problem"],
            "line 3: unknown command `frobnicate`"
        );
        assert_eq!(v["host"]["os"], "Debian GNU/Linux 12 (bookworm)");
        let root = &v["storage"]["volumes"][0];
        assert_eq!(root["scheme"], "luks2");
        assert_eq!(root["key_size"], 512);
        assert_eq!(root["key_slots"], 0, "an erased header's 0 slots is shown");
        assert_eq!(v["storage"]["wipe"]["strategy"], "luks-erase");
        let swap = &v["storage"]["swap"][0];
        assert_eq!(
            swap,
            &serde_json::json!({"device": "/dev/nvme0n1p2", "encrypted": false}),
            "unknown facts are left out, not shown as zero"
        );
    }
}
