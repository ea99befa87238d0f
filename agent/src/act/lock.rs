//! Locking a lost laptop: lock the running sessions through logind, and block new logins of
//! regular users the way an administrator would — `/etc/nologin` plus an expired account
//! (shadow field 8, as `chage -E 0` does) — remembering the prior values so unlock restores
//! exactly what was there. Both changes live on disk, so the block survives a reboot, and the
//! agent re-asserts the session lock when it starts while locked.
//!
//! Shadow editing is a pure function over the file's text; the probe writes under the agent's
//! root, so tests lock a scratch tree, never the host.

use crate::collect::Root;
use serde::{Deserialize, Serialize};
use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum LockError {
    #[error("{path}: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} line {line}: not a shadow entry")]
    Shadow { path: String, line: usize },
    #[error("logind: {0}")]
    Logind(String),
    #[error("site lock command {cmd:?}: {message}")]
    Command { cmd: Vec<String>, message: String },
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

/// Replaces a file atomically keeping its owner and mode (shadow is root:shadow 0640).
fn replace_keeping_owner(path: &Path, data: &str) -> Result<(), LockError> {
    let meta = std::fs::metadata(path).map_err(io(path))?;
    let tmp = path.with_extension("vakt-tmp");
    std::fs::write(&tmp, data).map_err(io(&tmp))?;
    std::fs::set_permissions(&tmp, meta.permissions()).map_err(io(&tmp))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        // Only root may chown; as another user (tests) the file already has our owner.
        let _ = std::os::unix::fs::chown(&tmp, Some(meta.uid()), Some(meta.gid()));
    }
    std::fs::File::open(&tmp)
        .and_then(|f| f.sync_all())
        .map_err(io(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io(path))
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
pub fn block_logins(
    root: &Root,
    state: &mut LockState,
    persist: &dyn Fn(&LockState) -> Result<(), LockError>,
) -> Result<(), LockError> {
    let users = regular_users(root)?;
    let shadow_path = root.join("/etc/shadow");
    let shadow = std::fs::read_to_string(&shadow_path).map_err(io(&shadow_path))?;
    let (new_shadow, prior) = expire_accounts(&shadow, &users, &shadow_path.display().to_string())?;
    let nologin = root.join("/etc/nologin");
    let nologin_prior = match std::fs::read_to_string(&nologin) {
        Ok(s) => Some(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(io(&nologin)(e)),
    };
    // Re-asserting an existing lock must not record the lock's own values as "prior".
    if state.accounts.is_empty() {
        state.accounts = prior;
    }
    if !state.locked {
        state.nologin_prior = nologin_prior;
    }
    state.locked = true;
    persist(state)?;
    replace_keeping_owner(&shadow_path, &new_shadow)?;
    std::fs::write(&nologin, NOLOGIN_TEXT).map_err(io(&nologin))?;
    Ok(())
}

/// Undoes [`block_logins`] from the recorded state.
pub fn unblock_logins(root: &Root, state: &LockState) -> Result<(), LockError> {
    let shadow_path = root.join("/etc/shadow");
    let shadow = std::fs::read_to_string(&shadow_path).map_err(io(&shadow_path))?;
    let restored = restore_accounts(&shadow, &state.accounts, &shadow_path.display().to_string())?;
    replace_keeping_owner(&shadow_path, &restored)?;
    let nologin = root.join("/etc/nologin");
    match &state.nologin_prior {
        Some(text) => std::fs::write(&nologin, text).map_err(io(&nologin))?,
        None => match std::fs::remove_file(&nologin) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(&nologin)(e)),
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
        let mut st = LockState::default();
        let saved = std::cell::RefCell::new(None);
        let persist = |s: &LockState| {
            *saved.borrow_mut() = Some(s.clone());
            Ok(())
        };
        block_logins(&root, &mut st, &persist).unwrap();
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
        block_logins(&root, &mut st, &persist).unwrap();
        assert_eq!(st.accounts[0].expire, "");
        unblock_logins(&root, &st).unwrap();
        assert_eq!(
            std::fs::read_to_string(dir.path().join("etc/shadow")).unwrap(),
            shadow
        );
        assert!(!dir.path().join("etc/nologin").exists());
    }
}
