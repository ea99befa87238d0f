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
