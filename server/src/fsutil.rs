//! Small file helpers: atomic writes (temp file, fsync, rename, fsync of the directory),
//! private files 0600 before any content is written, and the private data directory.

use std::io::Write;
use std::path::Path;

/// Creates `dir` (and its parents) if needed and makes it 0700, whatever it was: the data
/// directory holds the CA key, tokens and every device's report. An existing directory made
/// 0755 by an earlier version or by hand is narrowed too.
pub fn private_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

/// Why a secret file (a key, a token, a client secret) may not be used as it is, judged from
/// its metadata before it is read: readable by others than its owner, except by the group of
/// a file root owns (`root:vakt 0640`, for a service user). libpq's rule for its key files,
/// so a file psql and ssh accept is accepted here too. `None` when it is fine.
#[cfg(unix)]
pub fn exposed(meta: &std::fs::Metadata) -> Option<String> {
    use std::os::unix::fs::MetadataExt;
    let mode = meta.mode() & 0o777;
    (!mode_ok(meta.uid(), mode)).then(|| {
        format!(
            "others can read it (mode {mode:o}); make it readable by its owner alone (chmod 600), \
             or owned by root and readable by the service's group (chown root:GROUP, chmod 640)"
        )
    })
}

/// Whether a secret file with this owner and permission bits may be used ([`exposed`]).
fn mode_ok(owner_uid: u32, mode: u32) -> bool {
    let others = mode & 0o077;
    others == 0 || (owner_uid == 0 && others & 0o037 == 0)
}

/// Reads a UTF-8 file, `None` when it does not exist.
pub fn read_opt(path: &Path) -> std::io::Result<Option<String>> {
    match std::fs::read_to_string(path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Atomically replaces `path` with `data`, readable only by its owner.
pub fn write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic(path, data, 0o600)
}

/// Atomically replaces `path` with `data`, readable by everyone (certificates).
pub fn write_public(path: &Path, data: &[u8]) -> std::io::Result<()> {
    write_atomic(path, data, 0o644)
}

fn write_atomic(path: &Path, data: &[u8], mode: u32) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        opts.mode(mode);
    }
    #[cfg(not(unix))]
    let _ = mode;
    let mut f = opts.open(&tmp)?;
    // Exactly `mode` before any content, whatever the umask (the server's is 077, which
    // would make a certificate private) and whatever a temp file left by a crash had.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        f.set_permissions(std::fs::Permissions::from_mode(mode))?;
    }
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&tmp, path)?;
    if let Ok(d) = std::fs::File::open(dir) {
        // Durability of the rename itself; not all file systems support it, hence no `?`.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_secret_file_others_can_read_is_refused_as_libpq_does() {
        assert!(mode_ok(1000, 0o600));
        assert!(mode_ok(1000, 0o400));
        assert!(!mode_ok(1000, 0o640), "group-readable, not root's");
        assert!(mode_ok(0, 0o640), "root's, group-readable");
        assert!(!mode_ok(0, 0o660), "root's, group-writable");
        assert!(!mode_ok(0, 0o644));
        assert!(!mode_ok(1000, 0o604));
    }

    #[cfg(unix)]
    #[test]
    fn exposed_names_the_mode() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        write_private(&path, b"x").unwrap();
        assert_eq!(exposed(&std::fs::metadata(&path).unwrap()), None);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let why = exposed(&std::fs::metadata(&path).unwrap()).unwrap();
        assert!(
            why.contains("mode 644") && why.contains("chmod 600"),
            "{why}"
        );
    }
}
