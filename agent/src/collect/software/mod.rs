//! Installed software and the source of every program: which configured repository, store or
//! file it came from and whether it is current (INTERFACE.md, `software`).
//!
//! One collector per packaging system, each pure at its core and reading under the agent's
//! [`Root`]. [`Scanner`] is the entry point: it runs them all and keeps what is costly to
//! rebuild (the parsed apt package lists) between scans.

pub mod deb;
pub mod files;
pub mod flatpak;
pub mod macos;
// rpm is Linux-only, and its SQLite is C: gating it keeps cross-checks free of a C toolchain.
#[cfg(target_os = "linux")]
pub mod rpm;
pub mod snap;
pub mod unmanaged;
pub mod windows;

use super::{Collected, Root};
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
        for c in others {
            out.value.extend(c.value);
            // Two collectors that walk the users report a bad /etc/passwd once, not twice.
            for e in c.errors {
                if !out.errors.contains(&e) {
                    out.errors.push(e);
                }
            }
        }
        out.value.sort_by(|a, b| {
            (&a.name, &a.arch, &a.version, a.format).cmp(&(&b.name, &b.arch, &b.version, b.format))
        });
        out
    }

    /// The deb scanner, for callers that want the full attribution (the repository each
    /// package belongs to), such as the comparison with `apt-cache policy`.
    pub fn deb(&mut self) -> &mut deb::DebScanner {
        &mut self.deb
    }
}
