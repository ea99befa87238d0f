//! The kernel's mount and swap tables (`/proc/mounts`, `/proc/swaps`) parsed from text. Pure:
//! the probe reads them under its root.

/// One line of `/proc/mounts` whose source is a block device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// `/dev/mapper/luks-root`, `/dev/nvme0n1p1`.
    pub source: String,
    pub target: String,
    pub fstype: String,
}

/// One line of `/proc/swaps`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Swap {
    /// A device (`/dev/dm-1`) or a file (`/swap.img`).
    pub path: String,
    /// `partition` or `file`.
    pub kind: String,
}

/// File systems on block devices that hold no user data: read-only images (snaps are
/// squashfs on loop devices, a dozen on a typical Ubuntu laptop).
const IMAGE_FS: &[&str] = &["squashfs", "iso9660", "erofs"];

/// The mounts of block devices, in table order: sources outside `/dev/` (proc, sysfs, tmpfs,
/// overlay, cgroup, network file systems) are left out, and so are read-only image file
/// systems. A malformed line is skipped and named in the second list (`line N: why`).
pub fn parse_mounts(text: &str) -> (Vec<Mount>, Vec<String>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let mut f = line.split_ascii_whitespace();
        let (Some(source), Some(target), Some(fstype)) = (f.next(), f.next(), f.next()) else {
            bad.push(format!("line {}: fewer than three fields", i + 1));
            continue;
        };
        let source = unescape(source);
        if !source.starts_with("/dev/") || IMAGE_FS.contains(&fstype) {
            continue;
        }
        out.push(Mount {
            source,
            target: unescape(target),
            fstype: fstype.to_string(),
        });
    }
    (out, bad)
}

/// The active swaps; the header line is skipped.
pub fn parse_swaps(text: &str) -> (Vec<Swap>, Vec<String>) {
    let mut out = Vec::new();
    let mut bad = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if i == 0 && line.starts_with("Filename") || line.trim().is_empty() {
            continue;
        }
        let mut f = line.split_ascii_whitespace();
        let (Some(path), Some(kind)) = (f.next(), f.next()) else {
            bad.push(format!("line {}: fewer than two fields", i + 1));
            continue;
        };
        out.push(Swap {
            path: unescape(path),
            kind: kind.to_string(),
        });
    }
    (out, bad)
}

/// The kernel writes space, tab, newline and backslash in these tables as three-digit octal
/// escapes (`\040`).
fn unescape(field: &str) -> String {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..=i + 3].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            let v = u32::from(b[i + 1] - b'0') * 64
                + u32::from(b[i + 2] - b'0') * 8
                + u32::from(b[i + 3] - b'0');
            out.push(u8::try_from(v).unwrap_or(b'?'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mounts_keep_block_devices_only() {
        let text = "sysfs /sys sysfs rw,nosuid 0 0\n\
            proc /proc proc rw 0 0\n\
            /dev/mapper/luks-root / ext4 rw,relatime 0 0\n\
            tmpfs /run tmpfs rw 0 0\n\
            /dev/loop3 /snap/core22/1380 squashfs ro 0 0\n\
            /dev/sdb1 /media/anna/My\\040Disk vfat rw 0 0\n\
            garbage\n";
        let (m, bad) = parse_mounts(text);
        assert_eq!(
            m.iter()
                .map(|m| (m.source.as_str(), m.target.as_str()))
                .collect::<Vec<_>>(),
            [
                ("/dev/mapper/luks-root", "/"),
                ("/dev/sdb1", "/media/anna/My Disk")
            ]
        );
        assert_eq!(bad, ["line 7: fewer than three fields"]);
    }

    #[test]
    fn swaps_skip_the_header() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n\
            /dev/dm-1                               partition\t8388604\t\t0\t\t-2\n\
            /swap.img                               file\t\t2097148\t\t0\t\t-3\n";
        let (s, bad) = parse_swaps(text);
        assert!(bad.is_empty());
        assert_eq!(s.len(), 2);
        assert_eq!(
            (s[0].path.as_str(), s[0].kind.as_str()),
            ("/dev/dm-1", "partition")
        );
        assert_eq!(
            (s[1].path.as_str(), s[1].kind.as_str()),
            ("/swap.img", "file")
        );
    }

    #[test]
    fn unescape_handles_edges() {
        assert_eq!(unescape("a\\040b"), "a b");
        assert_eq!(unescape("trailing\\04"), "trailing\\04");
        assert_eq!(unescape("\\777"), "?");
        assert_eq!(unescape("\\\\"), "\\\\");
    }
}
