//! Collectors: one module per fact family, each reading under a root (and a bus address) given
//! to it, never from `/` directly, so tests point them at fixture trees and private buses.
//!
//! A collector returns what it found together with the errors of the sources it could not read
//! ([`Collected`]); one bad file never costs the rest of the report.

use std::path::{Component, Path, PathBuf};
use vakt_proto::model::{CollectorError, SectionKind};

pub mod host;
pub mod mail;
pub mod roaming;
pub mod software;
pub mod storage;
pub mod users;

/// The file-system root a collector reads under: `/` on a laptop, a fixture tree in tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Root(PathBuf);

impl Root {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self(path.into())
    }

    /// The root directory itself.
    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Where an absolute path of the device (`/etc/passwd`) lives under this root. `..` and the
    /// leading `/` are dropped, so a path read from a file cannot climb out of the root.
    pub fn join(&self, device_path: impl AsRef<Path>) -> PathBuf {
        let mut out = self.0.clone();
        for c in device_path.as_ref().components() {
            if let Component::Normal(part) = c {
                out.push(part);
            }
        }
        out
    }

    /// The device path of a file under this root, for messages (`/etc/apt/sources.list`).
    pub fn display(&self, real: &Path) -> String {
        match real.strip_prefix(&self.0) {
            Ok(rel) => format!("/{}", rel.display()),
            Err(_) => real.display().to_string(),
        }
    }
}

/// What a collector found plus the sources it could not read.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Collected<T> {
    pub value: T,
    pub errors: Vec<CollectorError>,
}

impl<T> Collected<T> {
    pub fn new(value: T) -> Self {
        Self {
            value,
            errors: Vec::new(),
        }
    }

    /// Records that `source` of `section` failed with `message`.
    pub fn error(
        &mut self,
        section: SectionKind,
        source: impl Into<String>,
        message: impl ToString,
    ) {
        self.errors.push(CollectorError {
            section,
            source: source.into(),
            message: message.to_string(),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn join_never_leaves_the_root() {
        let r = Root::new("/fixture");
        assert_eq!(r.join("/etc/passwd"), PathBuf::from("/fixture/etc/passwd"));
        assert_eq!(
            r.join("../../etc/shadow"),
            PathBuf::from("/fixture/etc/shadow")
        );
        assert_eq!(r.display(Path::new("/fixture/etc/passwd")), "/etc/passwd");
    }
}

/// Runs every collector over one root and assembles the report. Holds what collectors keep
/// between runs (parsed package lists, say), so a daemon keeps one `Collector` for its life.
#[derive(Debug)]
pub struct Collector {
    root: Root,
    software: software::Scanner,
}

impl Collector {
    pub fn new(root: Root) -> Self {
        Self {
            root,
            software: software::Scanner::new(),
        }
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    /// Collects the file-based families. Blocking: call it off the async executor.
    pub fn collect(&mut self) -> vakt_proto::model::Report {
        let mut report = vakt_proto::model::Report::default();
        let host = host::collect(&self.root);
        report.host = host.value;
        report.errors.extend(host.errors);
        let software = self.software.scan(&self.root);
        report.software = software.value;
        report.errors.extend(software.errors);
        let mail = mail::collect(&self.root);
        report.mail = mail.value;
        report.errors.extend(mail.errors);
        let storage = storage::collect(&self.root);
        report.storage = storage.value;
        report.errors.extend(storage.errors);
        report
    }
}
