//! Windows programs: the Uninstall registry entries (what "Apps & features" lists for desktop
//! programs) and AppX/MSIX packages with the kind of signature they carry.
//!
//! The parsers are pure and run everywhere; the glue that reads the real registry and asks the
//! package manager is compiled on Windows only.
//!
//! - Uninstall entries live under `HKLM` and `HKU\<sid>` at
//!   `Software\Microsoft\Windows\CurrentVersion\Uninstall\<key>`, 32-bit programs on 64-bit
//!   Windows under `Software\WOW6432Node\...`. An entry with `SystemComponent` = 1 is hidden
//!   from the user's list, one with a `ParentKeyName` is an update of another entry, and
//!   `ReleaseType` marks hotfixes; those, and entries without a `DisplayName`, are not programs
//!   of their own. `WindowsInstaller` = 1 marks an MSI install. None of these came through a
//!   repository: Microsoft's own (publisher "Microsoft Corporation") count as the OS vendor's,
//!   everything else was run from a download: `sideloaded`, with the publisher as `origin`.
//! - An AppX/MSIX package names itself in `AppxManifest.xml`: `<Identity Name Version
//!   Publisher ProcessorArchitecture>` and `<Properties><DisplayName>`. Where it came from is
//!   the kind of signature Windows verified (`Windows.ApplicationModel.PackageSignatureKind`):
//!   `Store` → `store` (Microsoft Store), `System` → `os-vendor`, `Developer`, `Enterprise`
//!   (line-of-business) and `None` → `sideloaded`. Frameworks and resource packages are
//!   dependencies of apps and, like flatpak runtimes, not listed.

use std::collections::BTreeMap;
use vakt_proto::model::{Package, PackageFormat, SoftwareSource};

/// A registry value as the Uninstall parser needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RegValue {
    /// REG_SZ or REG_EXPAND_SZ.
    Str(String),
    Dword(u32),
    /// Any other type (binary, multi-string, qword).
    Other,
}

/// Which view of the registry an Uninstall key was read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Hive {
    /// HKLM, native view.
    Machine,
    /// HKLM `WOW6432Node`: 32-bit programs on 64-bit Windows.
    Machine32,
    /// A user's hive (`HKU\<sid>`), named by the account or its SID.
    User(String),
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WinError {
    #[error("Uninstall\\{key}: value {value} has the wrong type")]
    WrongType { key: String, value: &'static str },
    #[error("AppxManifest.xml: {0}")]
    Xml(String),
    #[error("AppxManifest.xml: no <Identity> with Name and Version")]
    NoIdentity,
}

fn text<'a>(
    key: &str,
    values: &'a BTreeMap<String, RegValue>,
    name: &'static str,
) -> Result<Option<&'a str>, WinError> {
    match values.get(name) {
        None => Ok(None),
        Some(RegValue::Str(s)) => Ok(Some(s.trim()).filter(|s| !s.is_empty())),
        Some(_) => Err(WinError::WrongType {
            key: key.to_string(),
            value: name,
        }),
    }
}

/// A DWORD flag; installers also write these as strings ("1"), which Windows accepts.
fn flag(values: &BTreeMap<String, RegValue>, name: &str) -> bool {
    match values.get(name) {
        Some(RegValue::Dword(n)) => *n != 0,
        Some(RegValue::Str(s)) => s.trim() == "1",
        _ => false,
    }
}

/// The program one Uninstall key describes, or `None` when the key is not a program the user
/// sees (see the module doc). `key` is the subkey's name (a product GUID for MSI installs).
pub fn parse_uninstall_entry(
    key: &str,
    values: &BTreeMap<String, RegValue>,
    hive: &Hive,
) -> Result<Option<Package>, WinError> {
    let Some(name) = text(key, values, "DisplayName")? else {
        return Ok(None);
    };
    if flag(values, "SystemComponent")
        || text(key, values, "ParentKeyName")?.is_some()
        || text(key, values, "ReleaseType")?.is_some()
    {
        return Ok(None);
    }
    let version = text(key, values, "DisplayVersion")?.unwrap_or_default();
    let publisher = text(key, values, "Publisher")?.unwrap_or_default();
    let msi = flag(values, "WindowsInstaller");
    let how = if msi { "MSI" } else { "installer" };
    let (source, origin) = if publisher == "Microsoft Corporation" {
        (SoftwareSource::OsVendor, format!("{publisher} ({how})"))
    } else if publisher.is_empty() {
        (
            SoftwareSource::Sideloaded,
            format!("unknown publisher ({how})"),
        )
    } else {
        (SoftwareSource::Sideloaded, format!("{publisher} ({how})"))
    };
    let (arch, user) = match hive {
        Hive::Machine => ("", ""),
        Hive::Machine32 => ("x86", ""),
        Hive::User(u) => ("", u.as_str()),
    };
    Ok(Some(Package {
        name: name.to_string(),
        version: version.to_string(),
        format: PackageFormat::Msi,
        source,
        origin,
        // Desktop installers update themselves or not at all; no catalogue to compare with.
        current: true,
        arch: arch.to_string(),
        user: user.to_string(),
        path: text(key, values, "InstallLocation")?
            .unwrap_or_default()
            .to_string(),
    }))
}

/// The identity of an AppX/MSIX package from its manifest.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppxManifest {
    pub name: String,
    pub version: String,
    pub publisher: String,
    pub arch: String,
    /// `<Properties><DisplayName>`, unless it is an `ms-resource:` reference.
    pub display_name: String,
    pub framework: bool,
    pub resource_package: bool,
}

/// Parses `AppxManifest.xml` (the Windows 10 `foundation` schema and its predecessors: the
/// elements are matched by local name, whatever their namespace prefix).
pub fn parse_appx_manifest(xml: &str) -> Result<AppxManifest, WinError> {
    use quick_xml::events::Event;
    let mut reader = quick_xml::Reader::from_str(xml);
    let mut m = AppxManifest::default();
    let mut path: Vec<String> = Vec::new();
    let mut identity = false;
    // Text of the innermost element; quick-xml hands entity references over separately.
    let mut content = String::new();
    loop {
        let event = reader
            .read_event()
            .map_err(|e| WinError::Xml(format!("at byte {}: {e}", reader.error_position())))?;
        match event {
            Event::Start(ref e) | Event::Empty(ref e) => {
                let local = String::from_utf8_lossy(e.local_name().as_ref()).into_owned();
                let parent = path.last().map(String::as_str);
                if local == "Identity" && parent == Some("Package") && !identity {
                    identity = true;
                    for attr in e.attributes() {
                        let attr = attr.map_err(|e| WinError::Xml(e.to_string()))?;
                        let value = attr
                            .unescape_value()
                            .map_err(|e| WinError::Xml(e.to_string()))?
                            .into_owned();
                        match attr.key.local_name().as_ref() {
                            b"Name" => m.name = value,
                            b"Version" => m.version = value,
                            b"Publisher" => m.publisher = value,
                            b"ProcessorArchitecture" => m.arch = value,
                            b"ResourceId" => m.resource_package = !value.is_empty(),
                            _ => {}
                        }
                    }
                }
                if matches!(event, Event::Start(_)) {
                    path.push(local);
                    content.clear();
                }
            }
            Event::Text(t) => {
                content.push_str(&t.xml_content().map_err(|e| WinError::Xml(e.to_string()))?);
            }
            Event::GeneralRef(r) => {
                let resolved = match r.resolve_char_ref() {
                    Ok(Some(c)) => c.to_string(),
                    _ => match &*r {
                        b"amp" => "&".into(),
                        b"lt" => "<".into(),
                        b"gt" => ">".into(),
                        b"quot" => "\"".into(),
                        b"apos" => "'".into(),
                        other => format!("&{};", String::from_utf8_lossy(other)),
                    },
                };
                content.push_str(&resolved);
            }
            Event::End(_) => {
                let value = std::mem::take(&mut content).trim().to_string();
                let in_props = path.len() >= 2 && path[path.len() - 2] == "Properties";
                match path.last().map(String::as_str) {
                    Some("DisplayName") if in_props && !value.starts_with("ms-resource:") => {
                        m.display_name = value
                    }
                    Some("Framework") if in_props => m.framework = value == "true",
                    Some("ResourcePackage") if in_props => m.resource_package |= value == "true",
                    _ => {}
                }
                path.pop();
            }
            Event::Eof => break,
            _ => {}
        }
    }
    if m.name.is_empty() || m.version.is_empty() {
        return Err(WinError::NoIdentity);
    }
    Ok(m)
}

/// `Windows.ApplicationModel.PackageSignatureKind`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureKind {
    None,
    Developer,
    Enterprise,
    Store,
    System,
}

/// The report entry for an AppX/MSIX package, or `None` for frameworks and resource packages.
pub fn appx_package(m: &AppxManifest, signature: SignatureKind, user: &str) -> Option<Package> {
    if m.framework || m.resource_package {
        return None;
    }
    let (source, origin) = match signature {
        SignatureKind::Store => (SoftwareSource::Store, "Microsoft Store".to_string()),
        SignatureKind::System => (
            SoftwareSource::OsVendor,
            "Windows (system package)".to_string(),
        ),
        SignatureKind::Enterprise => (
            SoftwareSource::Sideloaded,
            format!(
                "enterprise-signed (line-of-business), publisher {}",
                m.publisher
            ),
        ),
        SignatureKind::Developer => (
            SoftwareSource::Sideloaded,
            format!("developer-signed, publisher {}", m.publisher),
        ),
        SignatureKind::None => (SoftwareSource::Sideloaded, "unsigned package".to_string()),
    };
    Some(Package {
        name: if m.display_name.is_empty() {
            m.name.clone()
        } else {
            m.display_name.clone()
        },
        version: m.version.clone(),
        format: PackageFormat::Appx,
        source,
        origin,
        // The Store updates its packages; others carry no update channel to compare with.
        current: true,
        arch: m.arch.clone(),
        user: user.to_string(),
        path: String::new(),
    })
}

#[cfg(windows)]
mod glue;
#[cfg(windows)]
pub use glue::collect;

#[cfg(test)]
mod tests;
