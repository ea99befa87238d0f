//! Wiping a lost laptop, by the strategy its config names:
//! - `luks-erase`: `cryptsetup erase` on each configured LUKS device (every key slot is wiped,
//!   so no passphrase opens the volume again), then the header backups are overwritten and
//!   removed, then the machine powers off.
//! - `paths`: the configured paths are removed, never crossing into another file system (a
//!   mounted backup disk under a home directory is left alone and reported).
//!
//! Paths and devices are device paths resolved under the agent's root, so tests wipe a scratch
//! tree or a LUKS image file, never the host.

use crate::collect::Root;
use crate::config::{WipeConfig, WipeStrategy};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum WipeError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("cryptsetup erase {device}: {message}")]
    Cryptsetup { device: String, message: String },
    #[error("wipe: nothing configured ({0})")]
    NothingConfigured(&'static str),
}

/// What a wipe did, for the result's detail.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WipeReport {
    pub removed: u64,
    pub erased_devices: Vec<String>,
    /// Directories left alone because they are another file system.
    pub skipped_mounts: Vec<String>,
    pub errors: Vec<String>,
}

impl WipeReport {
    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.erased_devices.is_empty() {
            parts.push(format!(
                "key slots erased on {}",
                self.erased_devices.join(", ")
            ));
        }
        if self.removed > 0 {
            parts.push(format!("{} files and directories removed", self.removed));
        }
        if !self.skipped_mounts.is_empty() {
            parts.push(format!(
                "other file systems left alone: {}",
                self.skipped_mounts.join(", ")
            ));
        }
        if !self.errors.is_empty() {
            parts.push(format!("errors: {}", self.errors.join("; ")));
        }
        parts.join("; ")
    }
}

/// Runs the configured wipe. Errors on individual files are collected; the wipe goes on.
pub async fn wipe(root: &Root, cfg: &WipeConfig) -> Result<WipeReport, WipeError> {
    let mut report = WipeReport::default();
    match cfg.strategy {
        WipeStrategy::Paths => {
            if cfg.paths.is_empty() {
                return Err(WipeError::NothingConfigured("paths"));
            }
            for p in &cfg.paths {
                let real = root.join(p);
                remove_same_fs(&real, None, &mut report);
            }
        }
        WipeStrategy::LuksErase => {
            if cfg.devices.is_empty() {
                return Err(WipeError::NothingConfigured("devices"));
            }
            for d in &cfg.devices {
                let real = root.join(d);
                let out = tokio::process::Command::new("cryptsetup")
                    .args(["erase", "--batch-mode"])
                    .arg(&real)
                    .output()
                    .await
                    .map_err(|e| WipeError::Cryptsetup {
                        device: real.display().to_string(),
                        message: e.to_string(),
                    })?;
                if !out.status.success() {
                    report.errors.push(format!(
                        "cryptsetup erase {}: {}",
                        real.display(),
                        String::from_utf8_lossy(&out.stderr).trim()
                    ));
                    continue;
                }
                report.erased_devices.push(d.display().to_string());
            }
            for b in &cfg.header_backups {
                let real = root.join(b);
                if let Err(e) = shred(&real) {
                    report.errors.push(e.to_string());
                } else {
                    report.removed += 1;
                }
            }
            if report.erased_devices.is_empty() {
                return Err(WipeError::Cryptsetup {
                    device: cfg
                        .devices
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    message: report.errors.join("; "),
                });
            }
        }
    }
    Ok(report)
}

/// Overwrites a file with zeros, syncs and removes it.
fn shred(path: &Path) -> Result<(), WipeError> {
    let io = |source| WipeError::Io {
        path: path.display().to_string(),
        source,
    };
    let len = std::fs::metadata(path).map_err(io)?.len();
    let zeros = vec![0u8; 64 * 1024];
    {
        use std::io::Write;
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(io)?;
        let mut left = len;
        while left > 0 {
            let n = usize::try_from(left.min(zeros.len() as u64)).unwrap_or(zeros.len());
            f.write_all(&zeros[..n]).map_err(io)?;
            left -= n as u64;
        }
        f.sync_all().map_err(io)?;
    }
    std::fs::remove_file(path).map_err(io)
}

#[cfg(unix)]
fn dev_of(m: &std::fs::Metadata) -> u64 {
    use std::os::unix::fs::MetadataExt;
    m.dev()
}

#[cfg(not(unix))]
fn dev_of(_m: &std::fs::Metadata) -> u64 {
    0
}

/// Removes `path` recursively without following symlinks or crossing into another file system.
fn remove_same_fs(path: &Path, dev: Option<u64>, report: &mut WipeReport) {
    let meta = match std::fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return,
        Err(e) => {
            report.errors.push(format!("{}: {e}", path.display()));
            return;
        }
    };
    let here = dev_of(&meta);
    let top_dev = dev.unwrap_or(here);
    if meta.is_dir() {
        if here != top_dev {
            report.skipped_mounts.push(path.display().to_string());
            return;
        }
        match std::fs::read_dir(path) {
            Ok(entries) => {
                for e in entries.flatten() {
                    remove_same_fs(&e.path(), Some(top_dev), report);
                }
            }
            Err(e) => report.errors.push(format!("{}: {e}", path.display())),
        }
        match std::fs::remove_dir(path) {
            Ok(()) => report.removed += 1,
            // A directory that still holds a mount point cannot go; that was reported above.
            Err(e) if !report.skipped_mounts.is_empty() => {
                tracing::debug!("{} kept: {e}", path.display());
            }
            Err(e) => report.errors.push(format!("{}: {e}", path.display())),
        }
    } else {
        match std::fs::remove_file(path) {
            Ok(()) => report.removed += 1,
            Err(e) => report.errors.push(format!("{}: {e}", path.display())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[tokio::test]
    async fn paths_strategy_removes_trees_and_symlinks_not_their_targets() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().join("root"));
        let home = dir.path().join("root/home/anna");
        std::fs::create_dir_all(home.join("Documents/deep")).unwrap();
        std::fs::write(home.join("Documents/deep/secret.txt"), "hemligt").unwrap();
        let outside = dir.path().join("outside.txt");
        std::fs::write(&outside, "keep me").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(&outside, home.join("link")).unwrap();
        let cfg = WipeConfig {
            strategy: WipeStrategy::Paths,
            paths: vec![PathBuf::from("/home/anna")],
            devices: vec![],
            header_backups: vec![],
            poweroff: false,
        };
        let r = wipe(&root, &cfg).await.unwrap();
        assert!(!home.exists());
        assert!(
            outside.exists(),
            "a symlink's target outside is not followed"
        );
        assert!(r.removed >= 4, "{r:?}");
        assert!(r.errors.is_empty(), "{r:?}");
    }

    #[tokio::test]
    async fn nothing_configured_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = WipeConfig {
            strategy: WipeStrategy::LuksErase,
            ..WipeConfig::default()
        };
        assert!(matches!(
            wipe(&Root::new(dir.path()), &cfg).await,
            Err(WipeError::NothingConfigured("devices"))
        ));
    }
}
