//! Local users with a home directory, from `/etc/passwd` under the agent's root. Per-user
//! collectors (mail settings, `~/.local/bin`, per-user flatpaks) walk this list.

use super::userfile;
use super::{Collected, Root};
use std::path::Path;
use vakt_proto::model::SectionKind;

/// passwd of a laptop is kilobytes; a directory server's local copy a few MB.
const PASSWD_CAP: u64 = 16 << 20;

/// A local account that can hold per-user settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    pub name: String,
    pub uid: u32,
    /// The home directory as the device names it (`/home/anna`).
    pub home: String,
}

/// Parses passwd(5). Lines that do not have seven fields are skipped and counted, so one
/// garbled line costs only itself.
pub fn parse_passwd(text: &str) -> (Vec<User>, Vec<usize>) {
    let mut users = Vec::new();
    let mut bad_lines = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let line = line.trim_end_matches('\r');
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let f: Vec<&str> = line.split(':').collect();
        let uid = f.get(2).and_then(|u| u.parse::<u32>().ok());
        match (f.len(), uid) {
            (7, Some(uid)) => users.push(User {
                name: f[0].to_string(),
                uid,
                home: f[5].to_string(),
            }),
            _ => bad_lines.push(i + 1),
        }
    }
    (users, bad_lines)
}

/// Users whose home directory exists under `root` and is not a system placeholder
/// (`/`, `/nonexistent`, `/var/...` service homes still count if they exist: root's `/root`
/// does, and mail settings of root are as relevant as anyone's).
pub fn local_users(root: &Root, section: SectionKind) -> Collected<Vec<User>> {
    let mut out = Collected::new(Vec::new());
    let text = match userfile::read_existing(root, Path::new("/etc/passwd"), PASSWD_CAP) {
        Ok(b) => String::from_utf8_lossy(&b).into_owned(),
        Err(e) => {
            out.error(section, "/etc/passwd", e);
            return out;
        }
    };
    let (users, bad) = parse_passwd(&text);
    for line in bad {
        out.error(
            section,
            "/etc/passwd",
            format!("line {line}: not a passwd entry"),
        );
    }
    out.value = users
        .into_iter()
        .filter(|u| u.home.len() > 1 && u.home != "/nonexistent")
        .filter(|u| userfile::is_dir(root, Path::new(&u.home)))
        .collect();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_skips_garbage() {
        let text = "root:x:0:0:root:/root:/bin/bash\r\nbroken line\nanna:x:1000:1000:Anna Berg,,,:/home/anna:/bin/bash\nbad:x:notanumber:0::/home/bad:/bin/sh\n";
        let (users, bad) = parse_passwd(text);
        assert_eq!(users.len(), 2);
        assert_eq!(users[1].name, "anna");
        assert_eq!(users[1].home, "/home/anna");
        assert_eq!(bad, vec![2, 4]);
    }

    #[test]
    fn keeps_only_existing_homes() {
        let dir = tempfile::tempdir().unwrap();
        let root = Root::new(dir.path());
        std::fs::create_dir_all(dir.path().join("etc")).unwrap();
        std::fs::create_dir_all(dir.path().join("home/anna")).unwrap();
        std::fs::write(
            dir.path().join("etc/passwd"),
            "anna:x:1000:1000::/home/anna:/bin/sh\nnobody:x:65534:65534::/nonexistent:/usr/sbin/nologin\nbo:x:1001:1001::/home/bo:/bin/sh\n",
        )
        .unwrap();
        let got = local_users(&root, SectionKind::Mail);
        assert_eq!(got.value.len(), 1);
        assert_eq!(got.value[0].name, "anna");
        assert!(got.errors.is_empty());
    }

    #[test]
    fn missing_passwd_is_an_error_not_a_panic() {
        let dir = tempfile::tempdir().unwrap();
        let got = local_users(&Root::new(dir.path()), SectionKind::Mail);
        assert!(got.value.is_empty());
        assert_eq!(got.errors[0].source, "/etc/passwd");
    }
}
