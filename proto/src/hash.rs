//! Content hashes of report sections: sha-256 over the section's protobuf encoding with the
//! hash field empty. prost encodes fields in number order and repeated fields in list order, so
//! the same facts collected in the same order give the same bytes and the same hash.

use crate::pb;
use prost::Message;

/// The hash of a section, ignoring whatever its `hash` field holds.
pub fn section_hash(s: &pb::Section) -> [u8; 32] {
    let mut unhashed = s.clone();
    unhashed.hash.clear();
    let digest = ring::digest::digest(&ring::digest::SHA256, &unhashed.encode_to_vec());
    let mut out = [0u8; 32];
    out.copy_from_slice(digest.as_ref());
    out
}
