//! Wiping a lost laptop, by the strategy its config names:
//! - `luks-erase`: `cryptsetup erase` on each configured LUKS device (every key slot is wiped,
//!   so no passphrase opens the volume again), then the header backups are overwritten and
//!   removed, then the machine powers off. With no devices configured, the devices are found
//!   at the moment of the wipe by the storage probe: the LUKS devices behind `/`, `/home`,
//!   `/var`, `/srv` and swap; the result names the user data that was not encrypted. With
//!   devices configured, exactly those are erased, and then the storage probe is read all the
//!   same: the result names every user-data mount and swap not behind an erased device (not
//!   encrypted, or on a LUKS device the list leaves out, matched as `cover.rs` says).
//! - `paths`: the configured paths are removed by handle (`tree.rs`: never following a
//!   symlink, whatever a user swaps in meanwhile), never crossing into another file system or
//!   mount (a mounted backup disk under a home directory is left alone and reported). Removal
//!   only unlinks: the result says that without disk encryption the data stays recoverable.
//!
//! Paths and devices are device paths resolved under the agent's root, so tests wipe a scratch
//! tree or a LUKS image file, never the host.

mod cover;
mod tree;

use crate::collect::{Root, storage, userfile};
use crate::config::{WipeConfig, WipeStrategy};
use std::path::{Path, PathBuf};
use vakt_proto::model::{EraseScope, USER_DATA_MOUNTS};

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
    /// No `devices` configured and none of the user-data mounts or swaps is on LUKS.
    #[error("wipe: no LUKS device behind the user-data mounts or swap to erase{0}")]
    NothingToErase(String),
    #[error("wipe: the removal stopped unexpectedly: {0}")]
    Task(String),
}

/// How many errors a result lists.
pub const MAX_ERRORS: usize = 20;

/// What a wipe did, for the result's detail.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WipeReport {
    pub removed: u64,
    pub erased_devices: Vec<String>,
    /// User data a crypto-erase did not reach: not encrypted, or not with LUKS key slots.
    pub not_encrypted: Vec<String>,
    /// Directories left alone because they are another file system.
    pub skipped_mounts: Vec<String>,
    pub errors: Vec<String>,
    /// Errors beyond [`MAX_ERRORS`], counted only: a tree of a million undeletable files
    /// must not make a result of a million lines.
    pub errors_omitted: u64,
    /// Files were unlinked, not overwritten or cryptographically erased.
    pub unlinked_only: bool,
}

impl WipeReport {
    /// Records an error, or only counts it once [`MAX_ERRORS`] are listed.
    pub fn error(&mut self, message: String) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(message);
        } else {
            self.errors_omitted += 1;
        }
    }

    pub fn summary(&self) -> String {
        let mut parts = Vec::new();
        if !self.erased_devices.is_empty() {
            parts.push(format!(
                "key slots erased on {}",
                self.erased_devices.join(", ")
            ));
        }
        if !self.not_encrypted.is_empty() {
            parts.push(format!(
                "user data left readable: {}",
                self.not_encrypted.join(", ")
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
        if self.unlinked_only {
            parts.push(
                "files were unlinked, not overwritten: unless the disk is encrypted, their \
                 contents stay recoverable from it"
                    .to_string(),
            );
        }
        if !self.errors.is_empty() {
            let more = match self.errors_omitted {
                0 => String::new(),
                n => format!("; and {n} more"),
            };
            parts.push(format!("errors: {}{more}", self.errors.join("; ")));
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
            // Millions of entries take a while: off the runtime's threads.
            let (top, paths) = (root.path().to_path_buf(), cfg.paths.clone());
            report = tokio::task::spawn_blocking(move || {
                let mut report = WipeReport {
                    unlinked_only: true,
                    ..WipeReport::default()
                };
                for p in &paths {
                    tree::remove_path(&top, p, &mut report);
                }
                report
            })
            .await
            .map_err(|e| WipeError::Task(e.to_string()))?;
        }
        WipeStrategy::LuksErase => {
            let devices = if cfg.devices.is_empty() {
                discover(root, &mut report).await?
            } else {
                cfg.devices.clone()
            };
            let mut erased = Vec::with_capacity(devices.len());
            for d in &devices {
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
                erased.push(out.status.success());
                if !out.status.success() {
                    report.error(format!(
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
                    report.error(e.to_string());
                } else {
                    report.removed += 1;
                }
            }
            if report.erased_devices.is_empty() {
                return Err(WipeError::Cryptsetup {
                    device: devices
                        .iter()
                        .map(|d| d.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    message: report.errors.join("; "),
                });
            }
            if !cfg.devices.is_empty() {
                say_uncovered(root, &cfg.devices, &erased, &mut report).await;
            }
        }
    }
    Ok(report)
}

/// The storage probe under `root`, off the runtime's threads (it reads /proc, /sys and LUKS
/// headers), with its errors put in the result; the erase scope of the user-data mounts.
async fn probe(root: &Root, report: &mut WipeReport) -> Result<EraseScope, WipeError> {
    let probe_root = root.clone();
    let found = tokio::task::spawn_blocking(move || storage::collect(&probe_root))
        .await
        .map_err(|e| WipeError::Task(e.to_string()))?;
    for e in found.errors {
        report.error(format!("{}: {}", e.source, e.message));
    }
    Ok(found.value.erase_scope(&USER_DATA_MOUNTS))
}

/// With configured devices, after they were erased (`erased[i]` for `devices[i]`): the user
/// data the erase did not reach, from the storage probe read now. Read after the erase, so
/// nothing here can delay or stop it; a probe that fails is an error in the result, never the
/// wipe's.
async fn say_uncovered(root: &Root, devices: &[PathBuf], erased: &[bool], report: &mut WipeReport) {
    let scope = match probe(root, report).await {
        Ok(s) => s,
        Err(e) => {
            report.error(format!(
                "storage probe: {e}; what the wipe left readable is not known"
            ));
            return;
        }
    };
    if !scope.user_data_found {
        report.error(
            "storage probe: no user-data mount (/, /home, /var, /srv) found; what the wipe left \
             readable is not known"
                .to_string(),
        );
    }
    let names: Vec<String> = devices.iter().map(|d| d.display().to_string()).collect();
    let paths: Vec<String> = names
        .iter()
        .cloned()
        .chain(scope.luks_uses.iter().map(|u| u.device.clone()))
        .collect();
    let resolve_root = root.clone();
    let resolved = tokio::task::spawn_blocking(move || userfile::real_paths(&resolve_root, paths))
        .await
        .unwrap_or_default();
    let configured: Vec<cover::Configured> = names
        .iter()
        .zip(erased)
        .map(|(path, &erased)| cover::Configured { path, erased })
        .collect();
    report.not_encrypted = scope.readable.iter().map(ToString::to_string).collect();
    report.not_encrypted.extend(cover::left_readable(
        &scope.luks_uses,
        &configured,
        &resolved,
    ));
}

/// The LUKS devices behind the user-data mounts and swap, found now by the storage probe under
/// `root` (the same reading the report makes, so no lsblk or cryptsetup for facts). What stays
/// readable, and what the probe could not read, goes into the result.
async fn discover(root: &Root, report: &mut WipeReport) -> Result<Vec<PathBuf>, WipeError> {
    let scope = probe(root, report).await?;
    report.not_encrypted = scope.readable.iter().map(ToString::to_string).collect();
    if scope.luks_devices.is_empty() {
        let readable = match report.not_encrypted.as_slice() {
            [] => String::new(),
            r => format!(" (left readable: {})", r.join(", ")),
        };
        return Err(WipeError::NothingToErase(readable));
    }
    Ok(scope.luks_devices.into_iter().map(PathBuf::from).collect())
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

    /// No devices configured and no LUKS behind the user-data mounts: an error that names what
    /// stays readable, and cryptsetup is never run.
    #[tokio::test]
    async fn luks_erase_with_nothing_encrypted_is_an_error_naming_what_is_readable() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("proc")).unwrap();
        std::fs::write(
            dir.path().join("proc/mounts"),
            "/dev/sda1 / ext4 rw 0 0\n/dev/sda2 /boot ext4 rw 0 0\n",
        )
        .unwrap();
        let cfg = WipeConfig {
            strategy: WipeStrategy::LuksErase,
            ..WipeConfig::default()
        };
        let err = wipe(&Root::new(dir.path()), &cfg).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "wipe: no LUKS device behind the user-data mounts or swap to erase \
             (left readable: / (/dev/sda1): not encrypted)"
        );
    }

    fn paths_cfg(paths: &[&str]) -> WipeConfig {
        WipeConfig {
            strategy: WipeStrategy::Paths,
            paths: paths.iter().map(PathBuf::from).collect(),
            devices: vec![],
            header_backups: vec![],
            poweroff: false,
        }
    }

    /// Files `f0000`.. in `dir`, each holding its own name.
    fn fill(dir: &Path, n: usize) {
        std::fs::create_dir_all(dir).unwrap();
        for i in 0..n {
            std::fs::write(dir.join(format!("f{i:04}")), format!("f{i:04}")).unwrap();
        }
    }

    /// A user who swaps a directory being wiped for a symlink to another directory (with the
    /// same file names) must not get the agent to delete there. The old path-based walk
    /// (lstat, then read_dir and remove_file by path) followed the swapped-in symlink within
    /// the first round; each round gives it a thousand chances.
    #[tokio::test]
    async fn a_directory_swapped_for_a_symlink_mid_wipe_never_redirects_deletion() {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicBool, Ordering};
        const FILES: usize = 1000;
        for round in 0..3 {
            let dir = tempfile::tempdir().unwrap();
            let root = Root::new(dir.path().join("root"));
            let home = dir.path().join("root/home/anna");
            let victim = dir.path().join("victim");
            fill(&home.join("sub"), FILES);
            fill(&victim, FILES);
            let stop = Arc::new(AtomicBool::new(false));
            let swapper = {
                let (stop, home, victim) = (stop.clone(), home.clone(), victim.clone());
                std::thread::spawn(move || {
                    let (sub, hidden) = (home.join("sub"), home.join("sub.hidden"));
                    while !stop.load(Ordering::Relaxed) {
                        // Errors are expected once the wipe has removed what we swap.
                        let _ = std::fs::rename(&sub, &hidden);
                        let _ = std::os::unix::fs::symlink(&victim, &sub);
                        std::thread::yield_now();
                        let _ = std::fs::remove_file(&sub);
                        let _ = std::fs::rename(&hidden, &sub);
                        std::thread::yield_now();
                    }
                })
            };
            let r = wipe(&root, &paths_cfg(&["/home/anna"])).await.unwrap();
            stop.store(true, Ordering::Relaxed);
            swapper.join().unwrap();
            let left = std::fs::read_dir(&victim).unwrap().count();
            assert_eq!(left, FILES, "round {round}: the victim lost files: {r:?}");
            assert!(
                !home.exists() || !r.errors.is_empty(),
                "round {round}: what was left is said: {r:?}"
            );
        }
    }

    /// Deeper than PATH_MAX (1500 levels of `dd/` are 4500 bytes): a walk by path cannot even
    /// name the bottom, and recursion per level overflowed the stack.
    #[tokio::test]
    async fn a_tree_deeper_than_path_max_is_removed() {
        use rustix::fs::{Mode, OFlags, mkdirat, openat};
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().join("root"));
        let home = dir.path().join("root/home/anna");
        std::fs::create_dir_all(&home).unwrap();
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let mut fd = openat(rustix::fs::CWD, &home, flags, Mode::empty()).unwrap();
        for _ in 0..1500 {
            mkdirat(&fd, "dd", Mode::from_raw_mode(0o755)).unwrap();
            fd = openat(&fd, "dd", flags, Mode::empty()).unwrap();
        }
        let f = openat(
            &fd,
            "secret",
            OFlags::WRONLY | OFlags::CREATE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .unwrap();
        rustix::io::write(&f, b"hemligt").unwrap();
        drop((f, fd));
        let r = wipe(&root, &paths_cfg(&["/home/anna"])).await.unwrap();
        assert!(
            r.errors.is_empty(),
            "{:?}",
            &r.errors[..r.errors.len().min(3)]
        );
        assert!(!home.exists());
        assert_eq!(r.removed, 1502, "1500 directories, the file and the top");
    }

    /// Removal only unlinks: the result must say the data stays on the disk. A million
    /// failures make twenty lines and a count.
    #[test]
    fn a_paths_wipe_says_the_data_stays_recoverable_and_errors_are_capped() {
        let r = WipeReport {
            removed: 3,
            unlinked_only: true,
            ..WipeReport::default()
        };
        let s = r.summary();
        assert!(s.contains("3 files and directories removed"), "{s}");
        assert!(s.contains("recoverable"), "{s}");
        let mut many = WipeReport::default();
        for i in 0..MAX_ERRORS + 5 {
            many.error(format!("e{i}"));
        }
        assert_eq!(many.errors.len(), MAX_ERRORS);
        assert!(
            many.summary().ends_with("; and 5 more"),
            "{}",
            many.summary()
        );
        let luks = WipeReport {
            erased_devices: vec!["/dev/nvme0n1p3".into()],
            ..WipeReport::default()
        };
        assert!(!luks.summary().contains("recoverable"));
    }

    /// A bind mount has the same device number as its source; only the mount id tells it is
    /// another mount. Needs root (mount); says so and stops where it cannot mount.
    #[tokio::test]
    async fn a_bind_mount_in_the_tree_is_left_alone() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().join("root"));
        let home = dir.path().join("root/home/anna");
        let backup = home.join("backup");
        let victim = dir.path().join("victim");
        fill(&home.join("Documents"), 3);
        fill(&victim, 3);
        std::fs::create_dir_all(&backup).unwrap();
        let mounted = std::process::Command::new("mount")
            .arg("--bind")
            .arg(&victim)
            .arg(&backup)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("SKIPPED: cannot bind-mount here (needs root)");
            return;
        }
        struct Unmount(PathBuf);
        impl Drop for Unmount {
            fn drop(&mut self) {
                let _ = std::process::Command::new("umount")
                    .arg("-l")
                    .arg(&self.0)
                    .status();
            }
        }
        let _guard = Unmount(backup.clone());
        let r = wipe(&root, &paths_cfg(&["/home/anna"])).await.unwrap();
        assert_eq!(
            std::fs::read_dir(&victim).unwrap().count(),
            3,
            "nothing removed through the bind mount: {r:?}"
        );
        assert_eq!(r.skipped_mounts, vec!["/home/anna/backup".to_string()]);
        assert!(!home.join("Documents").exists(), "{r:?}");
    }

    /// A configured path whose parent a user replaced by a symlink is not followed there.
    #[tokio::test]
    async fn a_symlink_on_the_way_to_a_configured_path_is_not_followed() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path().join("root"));
        let victim = dir.path().join("victim");
        fill(&victim.join("Dokument"), 2);
        std::fs::create_dir_all(dir.path().join("root/home")).unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join("root/home/anna")).unwrap();
        let r = wipe(&root, &paths_cfg(&["/home/anna/Dokument"]))
            .await
            .unwrap();
        assert_eq!(
            std::fs::read_dir(victim.join("Dokument")).unwrap().count(),
            2
        );
        assert_eq!(r.removed, 0);
        assert!(
            r.errors[0].starts_with("/home/anna/Dokument: anna on the way is a symbolic link"),
            "{r:?}"
        );
    }
}
