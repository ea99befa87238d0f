//! Locking a lost laptop: lock the running sessions through logind, and block new logins of
//! regular users the way an administrator would — `/etc/nologin` plus an expired account
//! (shadow field 8, as `chage -E 0` does) — remembering the prior values so unlock restores
//! exactly what was there. Both changes live on disk, so the block survives a reboot, and the
//! agent re-asserts the session lock when it starts while locked.
//!
//! Shadow editing is a pure function over the file's text; the probe writes under the agent's
//! root, so tests lock a scratch tree, never the host. It edits only while holding the
//! password-file lock that useradd, passwd and vipw take ([`PasswdLock`]), and writes the new
//! shadow through [`crate::atomic`]: a temporary file that has the original's owner, SELinux
//! label and mode (never wider than 0640) before its first byte, renamed over the original.

use crate::atomic::{self, Attrs};
use crate::collect::Root;
use rustix::fd::{AsFd, OwnedFd};
use rustix::fs::{AtFlags, FileType, FlockOperation, Mode, OFlags};
use rustix::io::Errno;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: not a shadow entry")]
    Shadow { path: String, line: usize },
    #[error("{path}: not a regular file; not edited")]
    NotRegular { path: String },
    #[error(
        "{path}: another program (useradd, passwd, vipw, ...) held the password files for {} s; nothing was changed",
        waited.as_secs_f32()
    )]
    PasswdBusy { path: String, waited: Duration },
    #[error(transparent)]
    Replace(#[from] atomic::ReplaceError),
    #[error("logind: {0}")]
    Logind(String),
    #[error("site lock command {cmd:?}: {message}")]
    Command { cmd: Vec<String>, message: String },
}

/// How long lock and unlock wait for the password files before failing (glibc's `lckpwdf`
/// gives up after 15 s too).
pub const PASSWD_LOCK_WAIT: Duration = Duration::from_secs(15);

/// The widest mode a shadow file gets from the agent: a wider original is narrowed.
const SHADOW_MAX_MODE: u32 = 0o640;

/// Lock files this process holds. POSIX record locks belong to the process, so the kernel
/// lets a second thread of ours "take" a lock we hold; worse, closing any handle of the file
/// drops it. This set is what keeps two of our own edits apart.
static HELD: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// The password-file lock: what glibc's `lckpwdf()` takes and shadow-utils (useradd, usermod,
/// passwd, chage, vipw) wait for — a POSIX write lock (`fcntl` `F_SETLK`, `F_WRLCK`) over all of
/// `/etc/.pwd.lock`. rustix's `fcntl_lock` takes exactly that kind (`F_SETLK`, not an
/// open-file-description lock), so the agent and those programs exclude each other. Released
/// when dropped.
#[derive(Debug)]
pub struct PasswdLock {
    path: PathBuf,
    fd: Option<OwnedFd>,
}

impl PasswdLock {
    /// Takes the lock under `root` if it is free now.
    pub fn try_acquire(root: &Root) -> Result<Option<Self>, LockError> {
        let path = root.join("/etc/.pwd.lock");
        let mut held = HELD.lock().unwrap_or_else(|p| p.into_inner());
        if held.contains(&path) {
            return Ok(None);
        }
        let io = |e: Errno| LockError::Io {
            path: path.display().to_string(),
            source: e.into(),
        };
        // As glibc opens it (write access is what a write lock needs), but never through a
        // symlink.
        let fd = rustix::fs::open(
            &path,
            OFlags::WRONLY | OFlags::CREATE | OFlags::NOFOLLOW | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .map_err(io)?;
        match rustix::fs::fcntl_lock(&fd, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => {
                held.insert(path.clone());
                Ok(Some(Self { path, fd: Some(fd) }))
            }
            Err(Errno::AGAIN | Errno::ACCESS) => Ok(None),
            Err(e) => Err(io(e)),
        }
    }

    /// Waits up to `wait` for the lock, trying every 100 ms; a holder that never lets go
    /// fails the caller with [`LockError::PasswdBusy`] instead of freezing the agent.
    pub async fn acquire(root: &Root, wait: Duration) -> Result<Self, LockError> {
        let start = Instant::now();
        loop {
            if let Some(held) = Self::try_acquire(root)? {
                return Ok(held);
            }
            if start.elapsed() >= wait {
                return Err(LockError::PasswdBusy {
                    path: root.join("/etc/.pwd.lock").display().to_string(),
                    waited: start.elapsed(),
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

impl Drop for PasswdLock {
    fn drop(&mut self) {
        // The handle first: were the path forgotten first, another thread of ours could take
        // the lock and then lose it when this handle closes.
        drop(self.fd.take());
        HELD.lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.path);
    }
}

/// One account whose expiry the lock changed, with the value it had.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PriorExpiry {
    pub user: String,
    pub expire: String,
}

/// What the lock changed, persisted in the state directory until unlock.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockState {
    pub locked: bool,
    pub since_ms: i64,
    pub command_id: String,
    pub method: String,
    pub accounts: Vec<PriorExpiry>,
    /// The content of /etc/nologin before the lock; `None` when there was none.
    pub nologin_prior: Option<String>,
}

/// What /etc/nologin says while the laptop is locked (shown by login and sshd).
pub const NOLOGIN_TEXT: &str = "Datorn är spärrad av IT (Vakt) efter en anmäld förlust. Kontakta IT-avdelningen.\nThis computer is locked by IT (Vakt) after a reported loss. Contact the IT department.\n";

/// Days since the epoch that mean "expired" (1970-01-02), as `usermod -e 1` writes.
const EXPIRED: &str = "1";

/// The range of regular (human) user ids, from login.defs (UID_MIN, UID_MAX).
pub fn uid_range(login_defs: &str) -> (u32, u32) {
    let mut min = 1000;
    let mut max = 60000;
    for line in login_defs.lines() {
        let mut it = line.split_whitespace();
        match (it.next(), it.next().and_then(|v| v.parse::<u32>().ok())) {
            (Some("UID_MIN"), Some(v)) => min = v,
            (Some("UID_MAX"), Some(v)) => max = v,
            _ => {}
        }
    }
    (min, max)
}

/// Sets the account expiry of `users` to expired; returns the new text and the prior values.
/// Lines of other users, comments and the file's line endings are kept as they were.
pub fn expire_accounts(
    shadow: &str,
    users: &[String],
    path: &str,
) -> Result<(String, Vec<PriorExpiry>), LockError> {
    let mut prior = Vec::new();
    let mut out = String::with_capacity(shadow.len());
    for (i, line) in shadow.split_inclusive('\n').enumerate() {
        let (body, end) = split_eol(line);
        let mut fields: Vec<&str> = body.split(':').collect();
        if body.trim().is_empty() || body.starts_with('#') {
            out.push_str(line);
            continue;
        }
        if fields.len() != 9 {
            return Err(LockError::Shadow {
                path: path.into(),
                line: i + 1,
            });
        }
        if users.iter().any(|u| u == fields[0]) {
            prior.push(PriorExpiry {
                user: fields[0].to_string(),
                expire: fields[7].to_string(),
            });
            fields[7] = EXPIRED;
        }
        out.push_str(&fields.join(":"));
        out.push_str(end);
    }
    Ok((out, prior))
}

/// Restores the recorded expiry values. An account whose expiry someone changed while locked
/// (it is no longer the lock's value) keeps that newer value.
pub fn restore_accounts(
    shadow: &str,
    prior: &[PriorExpiry],
    path: &str,
) -> Result<String, LockError> {
    let mut out = String::with_capacity(shadow.len());
    for (i, line) in shadow.split_inclusive('\n').enumerate() {
        let (body, end) = split_eol(line);
        if body.trim().is_empty() || body.starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut fields: Vec<&str> = body.split(':').collect();
        if fields.len() != 9 {
            return Err(LockError::Shadow {
                path: path.into(),
                line: i + 1,
            });
        }
        if let Some(p) = prior.iter().find(|p| p.user == fields[0])
            && fields[7] == EXPIRED
        {
            fields[7] = &p.expire;
        }
        out.push_str(&fields.join(":"));
        out.push_str(end);
    }
    Ok(out)
}

fn split_eol(line: &str) -> (&str, &str) {
    if let Some(b) = line.strip_suffix("\r\n") {
        (b, "\r\n")
    } else if let Some(b) = line.strip_suffix('\n') {
        (b, "\n")
    } else {
        (line, "")
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> LockError + '_ {
    move |source| LockError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// `/etc` under the root, opened once: every file of one edit is read and replaced in this
/// directory, whatever its path comes to name meanwhile.
struct Etc {
    path: PathBuf,
    fd: OwnedFd,
}

impl Etc {
    fn open(root: &Root) -> Result<Self, LockError> {
        let path = root.join("/etc");
        let fd = atomic::open_dir(&path)?;
        Ok(Self { path, fd })
    }

    /// Replaces `name` with `data`, the new file having `attrs` before its first byte.
    fn replace(&self, name: &str, data: &str, attrs: &Attrs) -> Result<(), LockError> {
        Ok(atomic::replace_at(
            self.fd.as_fd(),
            &self.path,
            name,
            data.as_bytes(),
            attrs,
        )?)
    }

    /// The shadow file's text and the attributes its replacement gets.
    fn read_shadow(&self) -> Result<(String, Attrs), LockError> {
        let path = self.path.join("shadow");
        let fd = rustix::fs::openat(
            &self.fd,
            "shadow",
            OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .map_err(|e| io(&path)(e.into()))?;
        let st = rustix::fs::fstat(&fd).map_err(|e| io(&path)(e.into()))?;
        if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
            return Err(LockError::NotRegular {
                path: path.display().to_string(),
            });
        }
        let mut attrs = Attrs::of(&fd).map_err(io(&path))?;
        if attrs.mode & !SHADOW_MAX_MODE != 0 {
            tracing::warn!(
                "{}: mode {:o} lets more than root and group shadow read it; written as {:o}",
                path.display(),
                attrs.mode,
                attrs.mode & SHADOW_MAX_MODE
            );
            attrs.mode &= SHADOW_MAX_MODE;
        }
        let mut text = String::new();
        std::fs::File::from(fd)
            .read_to_string(&mut text)
            .map_err(io(&path))?;
        Ok((text, attrs))
    }

    /// Replaces the shadow with `new` unless that is what it says already.
    fn write_shadow(&self, old: &str, new: &str, attrs: &Attrs) -> Result<(), LockError> {
        if old == new {
            return Ok(());
        }
        self.replace("shadow", new, attrs)
    }

    fn shadow_name(&self) -> String {
        self.path.join("shadow").display().to_string()
    }
}

/// Regular users (by uid range) that exist in passwd under `root`.
pub fn regular_users(root: &Root) -> Result<Vec<String>, LockError> {
    let defs = std::fs::read_to_string(root.join("/etc/login.defs")).unwrap_or_default();
    let (min, max) = uid_range(&defs);
    let passwd_path = root.join("/etc/passwd");
    let text = std::fs::read_to_string(&passwd_path).map_err(io(&passwd_path))?;
    let (users, _) = crate::collect::users::parse_passwd(&text);
    Ok(users
        .into_iter()
        .filter(|u| u.uid >= min && u.uid <= max)
        .map(|u| u.name)
        .collect())
}

/// Blocks logins of regular users under `root`; fills `state` with what it changes and calls
/// `persist` with it *before* touching a file, so a crash midway never loses the prior values.
/// Called again while locked (a restart, a second lock command), it keeps the values recorded
/// first and adds accounts created since, so unlock gives those back their own values too.
/// `/etc/nologin` goes first: were the shadow not writable, logins stay blocked by it.
pub fn block_logins(
    root: &Root,
    _held: &PasswdLock,
    state: &mut LockState,
    persist: &dyn Fn(&LockState) -> Result<(), LockError>,
) -> Result<(), LockError> {
    let users = regular_users(root)?;
    let etc = Etc::open(root)?;
    let (shadow, attrs) = etc.read_shadow()?;
    let (new_shadow, prior) = expire_accounts(&shadow, &users, &etc.shadow_name())?;
    let nologin = etc.path.join("nologin");
    let nologin_prior = match std::fs::read_to_string(&nologin) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&nologin)(e)),
    };
    // An account already recorded now holds the lock's own value: keep what was recorded.
    for p in prior {
        if !state.accounts.iter().any(|a| a.user == p.user) {
            state.accounts.push(p);
        }
    }
    if !state.locked {
        state.nologin_prior = nologin_prior;
    }
    state.locked = true;
    persist(state)?;
    etc.replace("nologin", NOLOGIN_TEXT, &Attrs::with_mode(0o644))?;
    etc.write_shadow(&shadow, &new_shadow, &attrs)
}

/// Undoes [`block_logins`] from the recorded state.
pub fn unblock_logins(root: &Root, _held: &PasswdLock, state: &LockState) -> Result<(), LockError> {
    let etc = Etc::open(root)?;
    let (shadow, attrs) = etc.read_shadow()?;
    let restored = restore_accounts(&shadow, &state.accounts, &etc.shadow_name())?;
    etc.write_shadow(&shadow, &restored, &attrs)?;
    match &state.nologin_prior {
        Some(text) => etc.replace("nologin", text, &Attrs::with_mode(0o644))?,
        None => match rustix::fs::unlinkat(&etc.fd, "nologin", AtFlags::empty()) {
            Ok(()) | Err(Errno::NOENT) => {}
            Err(e) => return Err(io(&etc.path.join("nologin"))(e.into())),
        },
    }
    Ok(())
}

/// Asks logind on the system bus at `bus` to lock every session.
pub async fn lock_sessions(bus: &crate::bus::BusAddress) -> Result<(), LockError> {
    let conn = bus
        .connect()
        .await
        .map_err(|e| LockError::Logind(format!("cannot reach the system bus at {bus}: {e}")))?;
    conn.call_method(
        Some("org.freedesktop.login1"),
        "/org/freedesktop/login1",
        Some("org.freedesktop.login1.Manager"),
        "LockSessions",
        &(),
    )
    .await
    .map_err(|e| LockError::Logind(format!("LockSessions: {e}")))?;
    Ok(())
}

/// Runs a site's own lock or unlock command; success is exit status 0.
pub async fn run_site_command(cmd: &[String]) -> Result<String, LockError> {
    let (prog, args) = cmd.split_first().ok_or_else(|| LockError::Command {
        cmd: cmd.to_vec(),
        message: "empty command".into(),
    })?;
    let out = tokio::process::Command::new(prog)
        .args(args)
        .output()
        .await
        .map_err(|e| LockError::Command {
            cmd: cmd.to_vec(),
            message: e.to_string(),
        })?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(LockError::Command {
            cmd: cmd.to_vec(),
            message: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    const SHADOW: &str = "root:*:19000:0:99999:7:::\r\nanna:$y$abc:19000:0:99999:7:::\nbo:$y$def:19000:0:99999:7::20000:\n# comment\n";

    #[test]
    fn expire_and_restore_is_exact() {
        let users = vec!["anna".to_string(), "bo".to_string()];
        let (locked, prior) = expire_accounts(SHADOW, &users, "/etc/shadow").unwrap();
        assert!(locked.contains("anna:$y$abc:19000:0:99999:7::1:\n"));
        assert!(locked.contains("bo:$y$def:19000:0:99999:7::1:\n"));
        assert!(
            locked.starts_with("root:*:19000:0:99999:7:::\r\n"),
            "other lines and CRLF kept"
        );
        assert_eq!(prior[1].expire, "20000");
        let restored = restore_accounts(&locked, &prior, "/etc/shadow").unwrap();
        assert_eq!(restored, SHADOW);
    }

    #[test]
    fn a_change_made_while_locked_is_kept() {
        let users = vec!["anna".to_string()];
        let (locked, prior) = expire_accounts(SHADOW, &users, "s").unwrap();
        let changed = locked.replace(
            "anna:$y$abc:19000:0:99999:7::1:",
            "anna:$y$abc:19000:0:99999:7::30000:",
        );
        let restored = restore_accounts(&changed, &prior, "s").unwrap();
        assert!(restored.contains("anna:$y$abc:19000:0:99999:7::30000:"));
    }

    #[test]
    fn garbage_shadow_is_an_error_with_the_line() {
        let err = expire_accounts("root:x\n", &[], "/etc/shadow").unwrap_err();
        assert_eq!(err.to_string(), "/etc/shadow line 1: not a shadow entry");
    }

    #[test]
    fn uid_range_from_login_defs() {
        assert_eq!(
            uid_range("# x\nUID_MIN   500\nUID_MAX 29999\n"),
            (500, 29999)
        );
        assert_eq!(uid_range(""), (1000, 60000));
    }

    #[test]
    fn block_and_unblock_a_scratch_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "root:x:0:0::/root:/bin/sh\nanna:x:1000:1000::/home/anna:/bin/sh\n",
        )
        .unwrap();
        let shadow = "root:*:19000:0:99999:7:::\nanna:$y$abc:19000:0:99999:7:::\n";
        std::fs::write(dir.path().join("etc/shadow"), shadow).unwrap();
        let h = held(&root);
        let mut st = LockState::default();
        let saved = std::cell::RefCell::new(None);
        let persist = |s: &LockState| {
            *saved.borrow_mut() = Some(s.clone());
            Ok(())
        };
        block_logins(&root, &h, &mut st, &persist).unwrap();
        assert!(
            saved.borrow().as_ref().is_some_and(|s| s.locked),
            "persisted before writing"
        );
        let locked = std::fs::read_to_string(dir.path().join("etc/shadow")).unwrap();
        assert!(locked.contains("anna:$y$abc:19000:0:99999:7::1:"));
        assert!(
            locked.contains("root:*:19000:0:99999:7:::"),
            "root is never locked out"
        );
        assert!(dir.path().join("etc/nologin").exists());
        // Re-asserting (after a reboot) keeps the original prior values.
        block_logins(&root, &h, &mut st, &persist).unwrap();
        assert_eq!(st.accounts[0].expire, "");
        unblock_logins(&root, &h, &st).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/shadow")).unwrap(),
            shadow
        );
        assert!(!dir.path().join("etc/nologin").exists());
    }

    const PASSWD: &str = "root:x:0:0::/root:/bin/sh\nanna:x:1000:1000::/home/anna:/bin/sh\nbo:x:1001:1001::/home/bo:/bin/sh\n";

    /// A scratch root with anna and bo; returns the tempdir.
    fn scratch(shadow: &str) -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::write(dir.path().join("etc/passwd"), PASSWD).unwrap();
        std::fs::write(dir.path().join("etc/shadow"), shadow).unwrap();
        dir
    }

    /// The password-file lock of a scratch root (each test has its own, so none waits).
    fn held(root: &Root) -> PasswdLock {
        PasswdLock::try_acquire(root).unwrap().expect("free")
    }

    fn no_persist(_: &LockState) -> Result<(), LockError> {
        Ok(())
    }

    /// A scratch root with `shadow`, locked: its directory, root, password lock and state.
    fn locked_scratch(shadow: &str) -> (tempfile::TempDir, Root, PasswdLock, LockState) {
        let dir = scratch(shadow);
        let root = Root::new(dir.path());
        let h = held(&root);
        let mut st = LockState::default();
        block_logins(&root, &h, &mut st, &no_persist).unwrap();
        (dir, root, h, st)
    }

    /// Unlock puts back exactly what the lock changed: an account created while locked and
    /// expired by a re-asserted lock (after a restart) gets its own value back, one deleted
    /// while locked stays deleted, and the rest is as before the lock.
    #[test]
    fn accounts_created_or_deleted_while_locked_are_restored_exactly() {
        let before = "root:*:19000:0:99999:7:::\nanna:$y$abc:19000:0:99999:7:::\nbo:$y$def:19000:0:99999:7::20000:\n";
        let (dir, root, h, mut st) = locked_scratch(before);
        let etc = dir.path().join("etc");
        // While locked, IT adds cecil and removes bo.
        let mut passwd = PASSWD.replace("bo:x:1001:1001::/home/bo:/bin/sh\n", "");
        passwd.push_str("cecil:x:1002:1002::/home/cecil:/bin/sh\n");
        std::fs::write(etc.join("passwd"), passwd).unwrap();
        let shadow = std::fs::read_to_string(etc.join("shadow")).unwrap();
        let mut shadow = shadow.replace("bo:$y$def:19000:0:99999:7::1:\n", "");
        shadow.push_str("cecil:$y$ghi:19500:0:99999:7::25000:\n");
        std::fs::write(etc.join("shadow"), shadow).unwrap();
        // The agent restarts and re-asserts the lock: cecil is blocked too.
        block_logins(&root, &h, &mut st, &no_persist).unwrap();
        let locked = std::fs::read_to_string(etc.join("shadow")).unwrap();
        assert!(
            locked.contains("cecil:$y$ghi:19500:0:99999:7::1:"),
            "{locked}"
        );
        unblock_logins(&root, &h, &st).unwrap();
        assert_eq!(
            std::fs::read_to_string(etc.join("shadow")).unwrap(),
            "root:*:19000:0:99999:7:::\nanna:$y$abc:19000:0:99999:7:::\ncecil:$y$ghi:19500:0:99999:7::25000:\n"
        );
    }

    /// An account created while locked and never touched by the lock keeps what it was given,
    /// even the lock's own "expired" value.
    #[test]
    fn an_account_the_lock_never_changed_is_left_alone() {
        let before = "root:*:19000:0:99999:7:::\nanna:$y$abc:19000:0:99999:7:::\n";
        let (dir, root, h, st) = locked_scratch(before);
        let etc = dir.path().join("etc");
        let mut shadow = std::fs::read_to_string(etc.join("shadow")).unwrap();
        shadow.push_str("bo:$y$def:19500:0:99999:7::1:\n");
        std::fs::write(etc.join("shadow"), shadow).unwrap();
        unblock_logins(&root, &h, &st).unwrap();
        assert_eq!(
            std::fs::read_to_string(etc.join("shadow")).unwrap(),
            format!("{before}bo:$y$def:19500:0:99999:7::1:\n")
        );
    }

    /// Watches /etc with inotify while locking and unlocking, and stats every file it reports
    /// (the shadow, its temporary copy): none may ever be readable beyond 0640. The shadow is
    /// large (8 MB) so that writing it takes long enough for the watcher to see a temporary
    /// file that gets its mode only after its content (the old code's 0644 window). Owner,
    /// mode and extended attributes of the original survive lock and unlock.
    #[test]
    fn the_shadow_is_never_wider_than_0640_and_keeps_owner_and_xattrs() {
        use rustix::fs::inotify;
        use std::os::unix::fs::MetadataExt;
        // The old code's window was 0666 under the umask: make the umask the usual one.
        rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o022));
        let mut shadow = String::from(
            "root:*:19000:0:99999:7:::\nanna:$y$abc:19000:0:99999:7:::\nbo:$y$def:19000:0:99999:7::20000:\n",
        );
        while shadow.len() < 8 << 20 {
            shadow.push_str("# padding so that the write takes a while .........\n");
        }
        let dir = scratch(&shadow);
        let etc = dir.path().join("etc");
        let shadow_path = etc.join("shadow");
        std::os::unix::fs::chown(&shadow_path, Some(0), Some(42)).unwrap();
        std::fs::set_permissions(&shadow_path, std::fs::Permissions::from_mode(0o640)).unwrap();
        rustix::fs::setxattr(
            &shadow_path,
            "user.vakt-test",
            b"kept",
            rustix::fs::XattrFlags::empty(),
        )
        .unwrap();
        let label = b"system_u:object_r:shadow_t:s0\0";
        let labelled = rustix::fs::setxattr(
            &shadow_path,
            "security.selinux",
            label,
            rustix::fs::XattrFlags::empty(),
        )
        .is_ok();
        eprintln!("security.selinux settable here: {labelled}");

        let ino = inotify::init(inotify::CreateFlags::CLOEXEC).unwrap();
        inotify::add_watch(
            &ino,
            &etc,
            inotify::WatchFlags::CREATE
                | inotify::WatchFlags::ATTRIB
                | inotify::WatchFlags::MODIFY
                | inotify::WatchFlags::CLOSE_WRITE
                | inotify::WatchFlags::MOVED_TO,
        )
        .unwrap();
        let watcher = {
            let etc = etc.clone();
            std::thread::spawn(move || {
                let mut seen: Vec<(String, u32)> = Vec::new();
                let mut buf = [std::mem::MaybeUninit::uninit(); 4096];
                let mut reader = inotify::Reader::new(&ino, &mut buf);
                loop {
                    let ev = reader.next().unwrap();
                    let Some(name) = ev.file_name() else { continue };
                    let name = name.to_string_lossy().into_owned();
                    if name == "watch.stop" {
                        return seen;
                    }
                    // The shadow and any copy of it; nologin and passwd are public by design.
                    if !name.contains("shadow") {
                        continue;
                    }
                    if let Ok(m) = std::fs::symlink_metadata(etc.join(&name)) {
                        seen.push((name, m.mode() & 0o7777));
                    }
                }
            })
        };
        let root = Root::new(dir.path());
        let h = held(&root);
        let mut st = LockState::default();
        block_logins(&root, &h, &mut st, &no_persist).unwrap();
        let check = |when: &str| {
            let m = std::fs::metadata(&shadow_path).unwrap();
            assert_eq!(
                (m.mode() & 0o7777, m.uid(), m.gid()),
                (0o640, 0, 42),
                "{when}: mode and owner kept"
            );
            let mut v = [0u8; 64];
            let n = rustix::fs::getxattr(&shadow_path, "user.vakt-test", &mut v[..]).unwrap();
            assert_eq!(&v[..n], b"kept", "{when}: user xattr kept");
            if labelled {
                let n = rustix::fs::getxattr(&shadow_path, "security.selinux", &mut v[..]).unwrap();
                assert_eq!(&v[..n], label, "{when}: SELinux label kept");
            }
        };
        check("locked");
        unblock_logins(&root, &h, &st).unwrap();
        check("unlocked");
        std::fs::write(etc.join("watch.stop"), "").unwrap();
        let seen = watcher.join().unwrap();
        assert!(
            seen.iter().any(|(n, _)| n != "shadow"),
            "the watcher saw the temporary file: {seen:?}"
        );
        let wide: Vec<_> = seen.iter().filter(|(_, m)| m & !0o640 != 0).collect();
        assert!(wide.is_empty(), "wider than 0640 at some instant: {wide:?}");
        assert_eq!(std::fs::read_to_string(&shadow_path).unwrap(), shadow);
    }

    /// Names the root whose password-file lock [`passwd_lock_holder`] takes.
    const HOLDER_ENV: &str = "VAKT_TEST_HOLD_PASSWD_LOCK";

    /// Not a test by itself: the other process of
    /// `a_password_lock_held_by_another_process_fails_after_the_wait` (POSIX locks exclude
    /// processes, not threads). Takes the lock under `$VAKT_TEST_HOLD_PASSWD_LOCK`, prints
    /// `held` (or `busy`), and keeps it until its stdin closes.
    #[test]
    #[ignore = "helper process, started by the password-lock test"]
    fn passwd_lock_holder() {
        let Ok(root) = std::env::var(HOLDER_ENV) else {
            return;
        };
        match PasswdLock::try_acquire(&Root::new(root)).unwrap() {
            Some(_held) => {
                println!("held");
                let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
            }
            None => println!("busy"),
        }
    }

    /// Another program holding the password files (useradd, passwd, the helper here) makes
    /// lock and unlock wait, and then fail with a clear error instead of hanging; once it lets
    /// go the lock is free.
    #[tokio::test]
    async fn a_password_lock_held_by_another_process_fails_after_the_wait() {
        use std::io::BufRead;
        let dir = scratch("root:*:19000:0:99999:7:::\n");
        let root = Root::new(dir.path());
        let mut holder = std::process::Command::new(std::env::current_exe().unwrap())
            .args([
                "--ignored",
                "--exact",
                "act::lock::tests::passwd_lock_holder",
            ])
            .args(["--nocapture", "--test-threads=1", "-q"])
            .env(HOLDER_ENV, dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut lines = std::io::BufReader::new(holder.stdout.take().unwrap()).lines();
        loop {
            let line = lines.next().expect("the holder ended early").unwrap();
            assert_ne!(line, "busy");
            if line == "held" {
                break;
            }
        }
        let started = Instant::now();
        let err = PasswdLock::acquire(&root, Duration::from_millis(500))
            .await
            .unwrap_err();
        let waited = started.elapsed();
        assert!(matches!(err, LockError::PasswdBusy { .. }), "{err}");
        let msg = err.to_string();
        assert!(
            msg.contains("etc/.pwd.lock") && msg.contains("nothing was changed"),
            "{msg}"
        );
        assert!(
            waited >= Duration::from_millis(500) && waited < Duration::from_secs(3),
            "{waited:?}"
        );
        drop(holder.stdin.take());
        holder.wait().unwrap();
        assert!(
            PasswdLock::try_acquire(&root).unwrap().is_some(),
            "free again"
        );
    }

    /// The kernel does not keep two threads of one process apart with a POSIX lock; the
    /// agent's own set of held lock files does, and dropping the lock frees it.
    #[test]
    fn the_password_lock_excludes_this_process_too() {
        let dir = scratch("root:*:19000:0:99999:7:::\n");
        let root = Root::new(dir.path());
        let first = held(&root);
        assert!(PasswdLock::try_acquire(&root).unwrap().is_none());
        drop(first);
        assert!(PasswdLock::try_acquire(&root).unwrap().is_some());
    }
}
