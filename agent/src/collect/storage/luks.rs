//! The LUKS1 and LUKS2 on-disk headers, parsed from bytes: cipher, volume key size, active key
//! slots and key derivation. Pure: the probe reads the first bytes of the device and hands them
//! here, so the parser is tested on checked-in header images and fuzzed.
//!
//! LUKS1 (cryptsetup's `LUKS1 On-Disk Format Specification`): a 592-byte big-endian header with
//! eight key slots. LUKS2 (`LUKS2 On-Disk Format Specification`): a 4096-byte binary header
//! whose `hdr_size` covers it and the JSON area after it; the JSON describes key slots,
//! segments and digests. The LUKS2 header checksum is verified, so a torn or overwritten
//! header is reported as such rather than read as facts.

use serde::Deserialize;
use std::collections::BTreeMap;

/// The largest LUKS2 header (binary part plus JSON area) the probe reads. cryptsetup's default
/// is 16 KiB; the format allows up to 4 MiB, which is more than a report should cost to read.
pub const MAX_LUKS2_HEADER: usize = 64 * 1024;

/// Bytes a probe should read first: enough for a LUKS1 header and LUKS2's binary header.
pub const BINARY_HEADER: usize = 4096;

const MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
const LUKS1_HEADER_LEN: usize = 592;
const LUKS1_SLOT_ENABLED: u32 = 0x00AC_71F3;
const LUKS1_SLOT_DISABLED: u32 = 0x0000_DEAD;

/// What a LUKS header says about the volume it protects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub version: u16,
    pub uuid: String,
    /// `aes-xts-plain64`: cipher and mode as dm-crypt names them.
    pub cipher: String,
    /// Bits of the volume key.
    pub key_size: u32,
    /// Key slots that can open the volume.
    pub active_slots: u32,
    /// The key slots' key derivation functions, sorted, each once (`argon2id`, `pbkdf2`).
    pub pbkdf: Vec<String>,
}

/// Why a header could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LuksError {
    #[error("no LUKS header (magic bytes missing)")]
    NotLuks,
    #[error("LUKS header truncated: {got} bytes, {need} needed")]
    Truncated { got: usize, need: usize },
    #[error("unsupported LUKS version {0}")]
    Version(u16),
    #[error("LUKS1 key slot {slot}: unknown state {value:#010x}")]
    SlotState { slot: usize, value: u32 },
    #[error("LUKS1 {field}: not NUL-terminated text")]
    Text { field: &'static str },
    #[error("LUKS2 header size {0} is outside 16 KiB..4 MiB or not a multiple of 4 KiB")]
    HeaderSize(u64),
    #[error("LUKS2 header of {0} bytes is larger than the {MAX_LUKS2_HEADER}-byte limit read")]
    TooLarge(u64),
    #[error("LUKS2 checksum algorithm {0:?} is not supported")]
    ChecksumAlgorithm(String),
    #[error("LUKS2 header checksum mismatch (corrupt or torn header)")]
    Checksum,
    #[error("LUKS2 JSON area: {0}")]
    Json(String),
    #[error("LUKS2 JSON area: {0}")]
    Metadata(&'static str),
}

/// How many bytes of the device a full parse needs, judged from the first [`BINARY_HEADER`]
/// bytes: a LUKS1 header, or LUKS2's `hdr_size` (checked against the limits).
pub fn header_len(head: &[u8]) -> Result<usize, LuksError> {
    match version(head)? {
        1 => Ok(LUKS1_HEADER_LEN),
        2 => luks2_size(head),
        v => Err(LuksError::Version(v)),
    }
}

/// Parses a LUKS1 or LUKS2 header from the start of a device. `bytes` may run on past the
/// header; it must hold at least [`header_len`] bytes.
pub fn parse(bytes: &[u8]) -> Result<Header, LuksError> {
    match version(bytes)? {
        1 => parse_luks1(bytes),
        2 => parse_luks2(bytes),
        v => Err(LuksError::Version(v)),
    }
}

fn version(bytes: &[u8]) -> Result<u16, LuksError> {
    if bytes.len() < 8 {
        return Err(LuksError::Truncated {
            got: bytes.len(),
            need: 8,
        });
    }
    if &bytes[..6] != MAGIC {
        return Err(LuksError::NotLuks);
    }
    Ok(u16::from_be_bytes([bytes[6], bytes[7]]))
}

fn need(bytes: &[u8], len: usize) -> Result<(), LuksError> {
    if bytes.len() < len {
        Err(LuksError::Truncated {
            got: bytes.len(),
            need: len,
        })
    } else {
        Ok(())
    }
}

fn be32(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_be_bytes(w)
}

fn be64(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(w)
}

/// A fixed-size, NUL-padded text field. A field without its NUL is corrupt: cryptsetup writes
/// the terminator, so trusting the full width would read garbage as a cipher name.
fn text(field: &'static str, raw: &[u8]) -> Result<String, LuksError> {
    let end = raw
        .iter()
        .position(|&b| b == 0)
        .ok_or(LuksError::Text { field })?;
    std::str::from_utf8(&raw[..end])
        .map(str::to_string)
        .map_err(|_| LuksError::Text { field })
}

fn parse_luks1(b: &[u8]) -> Result<Header, LuksError> {
    need(b, LUKS1_HEADER_LEN)?;
    let cipher_name = text("cipher-name", &b[8..40])?;
    let cipher_mode = text("cipher-mode", &b[40..72])?;
    // LUKS1 derives every slot's key with PBKDF2 over this hash; read only to check it.
    text("hash-spec", &b[72..104])?;
    let key_bytes = be32(b, 108);
    let uuid = text("uuid", &b[168..208])?;
    let mut active_slots = 0;
    for slot in 0..8 {
        match be32(b, 208 + slot * 48) {
            LUKS1_SLOT_ENABLED => active_slots += 1,
            LUKS1_SLOT_DISABLED => {}
            value => return Err(LuksError::SlotState { slot, value }),
        }
    }
    Ok(Header {
        version: 1,
        uuid,
        cipher: format!("{cipher_name}-{cipher_mode}"),
        key_size: key_bytes.saturating_mul(8),
        active_slots,
        pbkdf: vec!["pbkdf2".into()],
    })
}

fn luks2_size(b: &[u8]) -> Result<usize, LuksError> {
    need(b, 16)?;
    let size = be64(b, 8);
    if !(16 * 1024..=4 * 1024 * 1024).contains(&size) || !size.is_multiple_of(4096) {
        return Err(LuksError::HeaderSize(size));
    }
    if size > MAX_LUKS2_HEADER as u64 {
        return Err(LuksError::TooLarge(size));
    }
    // Bounded by MAX_LUKS2_HEADER just above, so it fits any usize.
    usize::try_from(size).map_err(|_| LuksError::TooLarge(size))
}

/// The parts of the LUKS2 JSON area this parser reads; the rest is ignored.
#[derive(Deserialize)]
struct Metadata {
    keyslots: BTreeMap<String, Keyslot>,
    segments: BTreeMap<String, Segment>,
}

#[derive(Deserialize)]
struct Keyslot {
    /// Bytes of the volume key this slot unlocks.
    key_size: Option<u32>,
    kdf: Option<Kdf>,
}

#[derive(Deserialize)]
struct Kdf {
    #[serde(rename = "type")]
    kind: String,
}

#[derive(Deserialize)]
struct Segment {
    #[serde(rename = "type")]
    kind: String,
    encryption: Option<String>,
}

fn parse_luks2(b: &[u8]) -> Result<Header, LuksError> {
    let size = luks2_size(b)?;
    need(b, size)?;
    let hdr = &b[..size];
    let alg = text("checksum_alg", &hdr[72..104])
        .map_err(|_| LuksError::ChecksumAlgorithm(String::new()))?;
    if alg != "sha256" {
        return Err(LuksError::ChecksumAlgorithm(alg));
    }
    // The checksum covers the whole header (binary part and JSON area) with its own field
    // (64 bytes at 448) zeroed; sha256 fills the first 32.
    let mut ctx = ring::digest::Context::new(&ring::digest::SHA256);
    ctx.update(&hdr[..448]);
    ctx.update(&[0u8; 64]);
    ctx.update(&hdr[512..]);
    if ctx.finish().as_ref() != &hdr[448..480] {
        return Err(LuksError::Checksum);
    }
    let uuid = text("uuid", &hdr[168..208])?;
    let json_area = &hdr[BINARY_HEADER..];
    let end = json_area
        .iter()
        .position(|&c| c == 0)
        .unwrap_or(json_area.len());
    let meta: Metadata =
        serde_json::from_slice(&json_area[..end]).map_err(|e| LuksError::Json(e.to_string()))?;
    let cipher = meta
        .segments
        .values()
        .find(|s| s.kind == "crypt")
        .and_then(|s| s.encryption.clone())
        .ok_or(LuksError::Metadata("no crypt segment with an encryption"))?;
    let key_bytes = meta.keyslots.values().find_map(|k| k.key_size).unwrap_or(0);
    let mut pbkdf: Vec<String> = meta
        .keyslots
        .values()
        .filter_map(|k| k.kdf.as_ref().map(|kdf| kdf.kind.clone()))
        .collect();
    pbkdf.sort();
    pbkdf.dedup();
    Ok(Header {
        version: 2,
        uuid,
        cipher,
        key_size: key_bytes.saturating_mul(8),
        active_slots: u32::try_from(meta.keyslots.len()).unwrap_or(u32::MAX),
        pbkdf,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    // Made by `cryptsetup luksFormat --type luks1|luks2` on 20 MiB image files (cryptsetup
    // 2.6.1, one key slot): the first 4 KiB of the LUKS1 image, the first 16 KiB (hdr_size) of
    // the LUKS2 one.
    const LUKS1: &[u8] = include_bytes!("fixtures/luks1.hdr");
    const LUKS2: &[u8] = include_bytes!("fixtures/luks2.hdr");

    #[test]
    fn luks1_header() {
        assert_eq!(header_len(LUKS1).unwrap(), LUKS1_HEADER_LEN);
        let h = parse(LUKS1).unwrap();
        assert_eq!(h.version, 1);
        assert_eq!(h.cipher, "aes-xts-plain64");
        assert_eq!(h.key_size, 512);
        assert_eq!(h.active_slots, 1);
        assert_eq!(h.pbkdf, ["pbkdf2"]);
        assert_eq!(h.uuid, "125cac0a-6b5a-4d30-bb12-3af18884fb54");
    }

    #[test]
    fn luks2_header() {
        assert_eq!(header_len(&LUKS2[..BINARY_HEADER]).unwrap(), 16384);
        let h = parse(LUKS2).unwrap();
        assert_eq!(h.version, 2);
        assert_eq!(h.cipher, "aes-xts-plain64");
        assert_eq!(h.key_size, 512);
        assert_eq!(h.active_slots, 1);
        assert_eq!(h.pbkdf, ["argon2id"]);
        assert_eq!(h.uuid, "b243fdf7-e110-42c1-82ff-79ab92916df9");
    }

    #[test]
    fn luks1_slot_states_are_counted_and_checked() {
        let mut b = LUKS1.to_vec();
        // Slot 3 enabled too.
        b[208 + 3 * 48..208 + 3 * 48 + 4].copy_from_slice(&LUKS1_SLOT_ENABLED.to_be_bytes());
        assert_eq!(parse(&b).unwrap().active_slots, 2);
        // All disabled: what `cryptsetup erase` leaves.
        for slot in 0..8 {
            b[208 + slot * 48..208 + slot * 48 + 4]
                .copy_from_slice(&LUKS1_SLOT_DISABLED.to_be_bytes());
        }
        assert_eq!(parse(&b).unwrap().active_slots, 0);
        b[208 + 5 * 48] = 0x12;
        assert_eq!(
            parse(&b).unwrap_err(),
            LuksError::SlotState {
                slot: 5,
                value: 0x1200_DEAD
            }
        );
    }

    #[test]
    fn luks2_corruption_is_caught_by_the_checksum() {
        let mut b = LUKS2.to_vec();
        // One byte of the JSON area ("keyslots" → "keyslotz").
        let at = BINARY_HEADER + 9;
        assert_eq!(b[at], b's');
        b[at] = b'z';
        assert_eq!(parse(&b).unwrap_err(), LuksError::Checksum);
    }

    #[test]
    fn bad_input_is_an_error_never_a_panic() {
        assert_eq!(
            parse(b"").unwrap_err(),
            LuksError::Truncated { got: 0, need: 8 }
        );
        assert_eq!(parse(&[0u8; 4096]).unwrap_err(), LuksError::NotLuks);
        assert_eq!(
            parse(&LUKS2[..BINARY_HEADER]).unwrap_err(),
            LuksError::Truncated {
                got: BINARY_HEADER,
                need: 16384
            }
        );
        assert!(matches!(
            parse(&LUKS1[..300]).unwrap_err(),
            LuksError::Truncated { .. }
        ));
        let mut v3 = LUKS1.to_vec();
        v3[7] = 3;
        assert_eq!(parse(&v3).unwrap_err(), LuksError::Version(3));
        let mut huge = LUKS2.to_vec();
        huge[8..16].copy_from_slice(&(4u64 * 1024 * 1024).to_be_bytes());
        assert_eq!(
            header_len(&huge).unwrap_err(),
            LuksError::TooLarge(4 * 1024 * 1024)
        );
        huge[8..16].copy_from_slice(&u64::MAX.to_be_bytes());
        assert_eq!(parse(&huge).unwrap_err(), LuksError::HeaderSize(u64::MAX));
        let mut no_nul = LUKS1.to_vec();
        no_nul[8..40].fill(b'a');
        assert_eq!(
            parse(&no_nul).unwrap_err(),
            LuksError::Text {
                field: "cipher-name"
            }
        );
        // Every prefix of a real header fails cleanly or parses.
        for len in 0..LUKS2.len() {
            let _ = parse(&LUKS2[..len]);
        }
    }
}
