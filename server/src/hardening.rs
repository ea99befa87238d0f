//! Process settings `serve` makes before it opens anything: the open-files limit raised to
//! what the system allows, and a umask that keeps every file the server creates its own.

/// The open-files limits, soft and hard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimit {
    pub soft: u64,
    pub hard: u64,
}

/// The current open-files limits (`None` from the system means unlimited).
pub fn file_limit() -> FileLimit {
    let l = rustix::process::getrlimit(rustix::process::Resource::Nofile);
    FileLimit {
        soft: l.current.unwrap_or(u64::MAX),
        hard: l.maximum.unwrap_or(u64::MAX),
    }
}

/// Raises the soft open-files limit to the hard one; the limits before and after. Every held
/// agent is a socket, and systemd's (and most shells') soft default of 1024 let a server hold
/// only about a thousand laptops before `accept` failed with "Too many open files", and admin
/// calls with it. The hard limit is the administrator's (`LimitNOFILE=` in the unit).
pub fn raise_file_limit() -> std::io::Result<(FileLimit, FileLimit)> {
    let before = file_limit();
    if before.soft >= before.hard {
        return Ok((before, before));
    }
    let hard = rustix::process::getrlimit(rustix::process::Resource::Nofile).maximum;
    rustix::process::setrlimit(
        rustix::process::Resource::Nofile,
        rustix::process::Rlimit {
            current: hard,
            maximum: hard,
        },
    )?;
    Ok((before, file_limit()))
}

/// Sets the process umask to 077, so whatever the server creates (the store's own files
/// included, which sled creates with the default mode) is its owner's only, whatever umask it
/// was started with. Service managers set one, a shell usually 022.
pub fn private_umask() {
    rustix::process::umask(rustix::fs::Mode::from_raw_mode(0o077));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_soft_limit_ends_at_the_hard_one() {
        let (before, after) = raise_file_limit().unwrap();
        assert_eq!(after.soft, after.hard);
        assert_eq!(after.hard, before.hard);
    }
}
