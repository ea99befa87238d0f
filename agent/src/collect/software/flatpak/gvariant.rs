//! Just enough of the GVariant serialisation format to read flatpak's `deploy` file, the
//! `(ssasta{sv})` record flatpak writes next to every deployed commit (`origin`, `commit`,
//! `subpaths`, `installed-size`, `metadata`; see `FLATPAK_DEPLOY_DATA_GVARIANT_STRING`).
//!
//! The rules used, from GLib's serialiser (`gvariant-serialiser.c`):
//! - a container's framing offsets are little-endian integers of 1, 2, 4 or 8 bytes, the
//!   smallest that can address the container's whole size (`gvs_get_offset_size`);
//! - in a tuple, every variable-sized member but the last has its end offset stored at the end
//!   of the tuple, first member's offset last; each member starts at the previous end rounded
//!   up to its alignment (`s`, `as` align to 1; `t`, `{sv}` and `a{sv}` to 8);
//! - an array of variable-sized elements ends with the table of each element's end offset; the
//!   last offset of the container is where that table starts;
//! - a string is its bytes plus a terminating NUL; a variant is the value, a NUL, then the
//!   value's type string.
//!
//! Everything is bounds-checked: the file is untrusted and a bad offset is an error, never a
//! panic or an out-of-range slice.

use std::collections::BTreeMap;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GVariantError {
    #[error("framing offset {0} outside its {1}-byte container")]
    BadOffset(u64, usize),
    #[error("string not NUL-terminated or not UTF-8")]
    BadString,
    #[error("container too short for its framing")]
    Short,
}

fn offset_size(container: usize) -> usize {
    match container {
        0 => 0,
        1..=0xff => 1,
        0x100..=0xffff => 2,
        // On 32-bit targets usize cannot exceed u32::MAX, so the 8-byte case never arises there.
        _ if u64::try_from(container).unwrap_or(u64::MAX) <= u64::from(u32::MAX) => 4,
        _ => 8,
    }
}

fn read_offset(buf: &[u8], at: usize, size: usize) -> Result<usize, GVariantError> {
    let bytes = at
        .checked_add(size)
        .and_then(|end| buf.get(at..end))
        .ok_or(GVariantError::Short)?;
    let mut v: u64 = 0;
    for (i, b) in bytes.iter().enumerate() {
        v |= u64::from(*b) << (8 * i);
    }
    usize::try_from(v)
        .ok()
        .filter(|v| *v <= buf.len())
        .ok_or(GVariantError::BadOffset(v, buf.len()))
}

fn align(at: usize, alignment: usize) -> usize {
    at.div_ceil(alignment).saturating_mul(alignment)
}

fn string(bytes: &[u8]) -> Result<String, GVariantError> {
    let (last, body) = bytes.split_last().ok_or(GVariantError::BadString)?;
    if *last != 0 || body.contains(&0) {
        return Err(GVariantError::BadString);
    }
    String::from_utf8(body.to_vec()).map_err(|_| GVariantError::BadString)
}

fn slice(buf: &[u8], start: usize, end: usize) -> Result<&[u8], GVariantError> {
    if start > end {
        return Err(GVariantError::BadOffset(start as u64, buf.len()));
    }
    buf.get(start..end)
        .ok_or(GVariantError::BadOffset(end as u64, buf.len()))
}

/// What the agent needs from a deploy record.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DeployData {
    /// The remote the ref was installed from.
    pub origin: String,
    pub commit: String,
    /// String-valued metadata entries (`appdata-version`, `appdata-license`, ...).
    pub metadata: BTreeMap<String, String>,
}

/// Decodes a `(ssasta{sv})` deploy record.
pub fn parse_deploy(buf: &[u8]) -> Result<DeployData, GVariantError> {
    let n = buf.len();
    let osz = offset_size(n);
    // Three variable-sized, non-final members (origin, commit, subpaths) have framing offsets.
    let table = n.checked_sub(3 * osz).ok_or(GVariantError::Short)?;
    let origin_end = read_offset(buf, n - osz, osz)?;
    let commit_end = read_offset(buf, n - 2 * osz, osz)?;
    let subpaths_end = read_offset(buf, n - 3 * osz, osz)?;
    let origin = string(slice(buf, 0, origin_end)?)?;
    let commit = string(slice(buf, origin_end, commit_end)?)?;
    // The subpaths are not needed, but their bounds must still be in order.
    slice(buf, commit_end, subpaths_end)?;
    let size_start = align(subpaths_end, 8);
    let dict_start = size_start.checked_add(8).ok_or(GVariantError::Short)?;
    let dict = slice(buf, dict_start, table)?;
    let metadata = string_dict(dict)?;
    Ok(DeployData {
        origin,
        commit,
        metadata,
    })
}

/// The string-valued entries of an `a{sv}`; entries of other types are skipped.
fn string_dict(buf: &[u8]) -> Result<BTreeMap<String, String>, GVariantError> {
    let mut out = BTreeMap::new();
    let n = buf.len();
    if n == 0 {
        return Ok(out);
    }
    let osz = offset_size(n);
    let table_start = read_offset(buf, n.checked_sub(osz).ok_or(GVariantError::Short)?, osz)?;
    let table_len = n - table_start;
    if !table_len.is_multiple_of(osz) {
        return Err(GVariantError::Short);
    }
    let mut prev_end = 0;
    for i in 0..table_len / osz {
        let end = read_offset(buf, table_start + i * osz, osz)?;
        let start = align(prev_end, 8);
        if end > table_start {
            return Err(GVariantError::BadOffset(end as u64, n));
        }
        let entry = slice(buf, start, end)?;
        if let Some((k, v)) = dict_entry(entry)? {
            out.insert(k, v);
        }
        prev_end = end;
    }
    Ok(out)
}

/// One `{sv}`: the key, and the value when it is a string.
fn dict_entry(buf: &[u8]) -> Result<Option<(String, String)>, GVariantError> {
    let n = buf.len();
    let osz = offset_size(n);
    let value_end = n.checked_sub(osz).ok_or(GVariantError::Short)?;
    let key_end = read_offset(buf, value_end, osz)?;
    let key = string(slice(buf, 0, key_end)?)?;
    let variant = slice(buf, align(key_end, 8), value_end)?;
    let Some(sep) = variant.iter().rposition(|b| *b == 0) else {
        return Err(GVariantError::BadString);
    };
    if &variant[sep + 1..] != b"s" {
        return Ok(None);
    }
    Ok(Some((key, string(&variant[..sep])?)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offset_sizes_follow_glib() {
        assert_eq!(offset_size(0), 0);
        assert_eq!(offset_size(255), 1);
        assert_eq!(offset_size(256), 2);
        assert_eq!(offset_size(65535), 2);
        assert_eq!(offset_size(65536), 4);
    }

    #[test]
    fn hostile_records_are_errors() {
        assert!(parse_deploy(b"").is_err());
        assert!(parse_deploy(b"\x00").is_err());
        // Offsets pointing past the end.
        assert!(parse_deploy(b"flathub\0abc\0\xff\xff\xff").is_err());
        // Offsets out of order (commit ends before origin).
        assert!(parse_deploy(b"flathub\0abc\0\x00\x02\x08").is_err());
    }
}
