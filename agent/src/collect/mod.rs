//! Collectors: one module per fact family, each reading under a root (and a bus address) given
//! to it, never from `/` directly, so tests point them at fixture trees and private buses.
//!
//! A collector returns what it found together with the errors of the sources it could not read
//! ([`Collected`]); one bad file never costs the rest of the report.

use std::path::{Component, Path, PathBuf};
use vakt_proto::model::{CollectorError, SectionKind};

pub mod family;
pub mod host;
pub mod limits;
pub mod mail;
pub mod roaming;
pub mod software;
pub mod storage;
pub mod userfile;
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

    /// A family stuck in a read that never returns (a user's FUSE file, say): the report
    /// comes within the budget with the other families' facts, the stuck one is an error, and
    /// the next report says it is still stuck instead of starting another thread.
    #[test]
    fn a_stuck_family_costs_only_itself_and_only_one_thread() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/machine-id"), "m-1\n").unwrap();
        let budgets = family::Budgets {
            family: std::time::Duration::from_millis(500),
            total: std::time::Duration::from_secs(10),
        };
        let mut c = Collector::with_budgets(Root::new(dir.path()), budgets);
        let starts = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let s = std::sync::Arc::clone(&starts);
        c.mail = family::Family::new(
            "mail",
            SectionKind::Mail,
            (),
            std::sync::Arc::new(move |_: &mut (), _: &Root| {
                s.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Collected::new(vakt_proto::model::MailSettings::default())
            }),
        );
        for round in ["did not finish within", "still running"] {
            let t = std::time::Instant::now();
            let r = c.collect();
            assert!(
                t.elapsed() < std::time::Duration::from_secs(5),
                "{:?}",
                t.elapsed()
            );
            assert_eq!(r.host.machine_id, "m-1");
            let mail: Vec<&CollectorError> = r
                .errors
                .iter()
                .filter(|e| e.section == SectionKind::Mail)
                .collect();
            assert_eq!(mail.len(), 1, "{mail:?}");
            assert!(mail[0].message.contains(round), "{mail:?}");
        }
        assert_eq!(starts.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}

/// Runs every collector over one root and assembles the report: each family (host, software,
/// mail) on its own thread with a deadline ([`family`]), then errors folded and the report
/// kept under [`limits::MAX_REPORT_BYTES`] ([`limits`]). Holds what collectors keep between
/// runs (parsed package lists, say), so a daemon keeps one `Collector` for its life.
#[derive(Debug)]
pub struct Collector {
    root: Root,
    budgets: family::Budgets,
    host: family::Family<(), vakt_proto::model::HostFacts>,
    software: family::Family<software::Scanner, Vec<vakt_proto::model::Package>>,
    mail: family::Family<(), vakt_proto::model::MailSettings>,
    /// Block devices can hang (a failing disk): a family with a deadline like the others.
    storage: family::Family<(), vakt_proto::model::Storage>,
    /// The configured wipe, told to the server in the storage section (wipe readiness).
    wipe: Option<vakt_proto::model::WipePlan>,
}

impl Collector {
    pub fn new(root: Root) -> Self {
        Self::with_budgets(root, family::Budgets::default())
    }

    pub fn with_budgets(root: Root, budgets: family::Budgets) -> Self {
        use std::sync::Arc;
        Self {
            root,
            budgets,
            host: family::Family::new(
                "host",
                SectionKind::Host,
                (),
                Arc::new(|_: &mut (), root: &Root| host::collect(root)),
            ),
            software: family::Family::new(
                "software",
                SectionKind::Software,
                software::Scanner::new(),
                Arc::new(|scanner: &mut software::Scanner, root: &Root| scanner.scan(root)),
            ),
            mail: family::Family::new(
                "mail",
                SectionKind::Mail,
                (),
                Arc::new(|_: &mut (), root: &Root| mail::collect(root)),
            ),
            storage: family::Family::new(
                "storage",
                SectionKind::Storage,
                (),
                Arc::new(|_: &mut (), root: &Root| storage::collect(root)),
            ),
            wipe: None,
        }
    }

    /// Reports `plan` in every storage section: the server judges what a wipe would leave
    /// readable from it and the volumes.
    pub fn with_wipe(mut self, plan: vakt_proto::model::WipePlan) -> Self {
        self.wipe = Some(plan);
        self
    }

    pub fn root(&self) -> &Root {
        &self.root
    }

    /// The configured wipe devices named as the storage probe names the LUKS devices behind
    /// the user data (`/dev/disk/by-uuid/…` as `/dev/sdb1`): the server judges the plan
    /// against the volumes by name, and cannot follow the laptop's links. One that is none of
    /// them is told as written (the server then says it is not among the user data's).
    fn in_probe_names(
        &self,
        mut plan: vakt_proto::model::WipePlan,
        storage: &vakt_proto::model::Storage,
    ) -> vakt_proto::model::WipePlan {
        if plan.devices.is_empty() {
            return plan;
        }
        let scope = storage.erase_scope(&vakt_proto::model::USER_DATA_MOUNTS);
        let probe: Vec<String> = scope.luks_uses.into_iter().map(|u| u.device).collect();
        let paths = plan.devices.iter().chain(&probe).cloned().collect();
        let resolved = userfile::real_paths(&self.root, paths);
        plan.devices = storage::names::as_probe_names(&plan.devices, &probe, &resolved);
        plan
    }

    /// Collects the file-based families. Blocking (for at most the budget): call it off the
    /// async executor.
    pub fn collect(&mut self) -> vakt_proto::model::Report {
        let deadline = self.budgets.deadline(std::time::Instant::now());
        self.host.start(&self.root);
        self.software.start(&self.root);
        self.mail.start(&self.root);
        self.storage.start(&self.root);
        let mut report = vakt_proto::model::Report::default();
        let host = self.host.finish(deadline);
        report.host = host.value;
        report.errors.extend(host.errors);
        let software = self.software.finish(deadline);
        report.software = software.value;
        report.errors.extend(software.errors);
        let mail = self.mail.finish(deadline);
        report.mail = mail.value;
        report.errors.extend(mail.errors);
        let storage = self.storage.finish(deadline);
        report.storage = storage.value;
        report.storage.wipe = self
            .wipe
            .clone()
            .map(|plan| self.in_probe_names(plan, &report.storage));
        report.errors.extend(storage.errors);
        report.errors = limits::fold_errors(report.errors);
        limits::fit(&mut report, limits::MAX_REPORT_BYTES);
        report
    }
}
