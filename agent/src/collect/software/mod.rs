//! Installed software and the source of every program: which configured repository, store or
//! file it came from and whether it is current (INTERFACE.md, `software`).
//!
//! One collector per packaging system, each pure at its core and reading under the agent's
//! [`Root`]. [`Scanner`] is the entry point: it runs them all and keeps what is costly to
//! rebuild (the parsed apt package lists) between scans.

pub mod deb;
pub mod flatpak;
pub mod macos;
// rpm is Linux-only, and its SQLite is C: gating it keeps cross-checks free of a C toolchain.
#[cfg(target_os = "linux")]
pub mod rpm;
pub mod snap;
pub mod unmanaged;
pub mod windows;

use super::{Collected, Root};
use std::collections::HashSet;
use vakt_proto::model::Package;

/// Keeps parsed package lists between scans so a rescan with unchanged lists is cheap.
#[derive(Debug, Default)]
pub struct Scanner {
    deb: deb::DebScanner,
}

impl Scanner {
    pub fn new() -> Self {
        Self::default()
    }

    /// Every installed package under `root`, with the errors of the sources that failed.
    /// The list is sorted (name, arch, version, format) so that an unchanged system gives an
    /// identical section, whose hash then stays the same.
    pub fn scan(&mut self, root: &Root) -> Collected<Vec<Package>> {
        let mut out = Collected::new(Vec::new());
        let deb = self.deb.scan(root);
        out.errors.extend(deb.errors);
        out.value
            .extend(deb.value.packages.iter().map(|p| p.to_package()));
        let mut others = vec![
            snap::collect(root),
            flatpak::collect(root),
            unmanaged::collect(root),
            macos::collect(root),
        ];
        #[cfg(target_os = "linux")]
        others.push(rpm::collect(root));
        #[cfg(windows)]
        others.push(windows::collect(root));
        // Two collectors that walk the users report a bad /etc/passwd once, not twice (a set:
        // a hostile home can make thousands of errors, and a scan of the list for each was
        // quadratic).
        let mut seen: HashSet<(String, String)> = out
            .errors
            .iter()
            .map(|e| (e.source.clone(), e.message.clone()))
            .collect();
        for c in others {
            out.value.extend(c.value);
            for e in c.errors {
                if seen.insert((e.source.clone(), e.message.clone())) {
                    out.errors.push(e);
                }
            }
        }
        out.value.sort_by(|a, b| {
            (&a.name, &a.arch, &a.version, a.format).cmp(&(&b.name, &b.arch, &b.version, b.format))
        });
        super::limits::cap_user_packages(&mut out.value, &mut out.errors);
        out
    }

    /// The deb scanner, for callers that want the full attribution (the repository each
    /// package belongs to), such as the comparison with `apt-cache policy`.
    pub fn deb(&mut self) -> &mut deb::DebScanner {
        &mut self.deb
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::collect::userfile::tests::{mkfifo, returns_promptly};

    /// The freeze from issue 16: a user's FIFOs where the flatpak and unmanaged-software
    /// collectors look. Both return, and the FIFO is an error in the report, not a wait.
    #[test]
    fn a_users_fifos_never_block_the_software_collectors() {
        let dir = tempfile::tempdir().unwrap();
        let at = |p: &str| dir.path().join(p.trim_start_matches('/'));
        std::fs::create_dir_all(at("/etc")).unwrap();
        std::fs::write(
            at("/etc/passwd"),
            "root:x:0:0:root:/root:/bin/bash\nanna:x:1000:1000:Anna:/home/anna:/bin/bash\n",
        )
        .unwrap();
        let deploy = at("/home/anna/.local/share/flatpak/app/x/x86_64/stable/active");
        std::fs::create_dir_all(&deploy).unwrap();
        mkfifo(&deploy.join("deploy"));
        std::fs::create_dir_all(at("/home/anna/.local/bin")).unwrap();
        mkfifo(&at("/home/anna/.local/bin/x"));
        mkfifo(&at("/home/anna/Downloads"));

        let root = Root::new(dir.path());
        let r = root.clone();
        let flatpak = returns_promptly(move || flatpak::collect(&r));
        assert!(
            flatpak.errors.iter().any(|e| e.message.contains("FIFO")),
            "the FIFO is reported: {:?}",
            flatpak.errors
        );
        let r = root.clone();
        let unmanaged = returns_promptly(move || unmanaged::collect(&r));
        assert!(
            unmanaged.value.iter().all(|p| p.name != "x"),
            "{:?}",
            unmanaged.value
        );
        assert!(
            unmanaged
                .errors
                .iter()
                .any(|e| e.source == "/home/anna/Downloads" && e.message.contains("FIFO")),
            "a FIFO where a directory should be is said: {:?}",
            unmanaged.errors
        );
    }
}
