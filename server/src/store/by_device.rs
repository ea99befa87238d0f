//! What the store keeps so that admin lists read one device's share instead of everything:
//!
//! - the `command_devices` tree, every command under its device (`device id, 0, command id`
//!   → empty), written in the transaction that writes the command, so `vakt commands
//!   --device` and the incident report read a device's commands without decoding the whole
//!   history (ids are time-ordered, so the prefix scan is oldest first, as the history is);
//! - the wipe readiness kept in each device record (`DeviceRecord.readiness`), judged when a
//!   storage section is stored, so a device list decodes no storage section.
//!
//! Both are derived data, made again when the store opens where they are missing: a data
//! directory (or database) written before them gets the index built with the store's other
//! indexes (`Store::ensure_indexes`, marked in the `indexes` tree), and every device record
//! without a current readiness judged from its section.

use super::engine::{Entry, Tree};
use super::{StoreError, decode, section_key};
use prost::Message;
use vakt_proto::pb;

/// The index tree's name.
pub(super) const COMMAND_DEVICES: &str = "command_devices";

/// Device records judged per read of their storage sections, when the store opens.
const JUDGE_CHUNK: usize = 1000;

/// The index key of command `command_id` of device `device_id`.
pub(super) fn command_key(device_id: &str, command_id: &str) -> Vec<u8> {
    let mut k = device_prefix(device_id);
    k.extend_from_slice(command_id.as_bytes());
    k
}

/// The prefix every index key of `device_id`'s commands starts with.
pub(super) fn device_prefix(device_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(device_id.len() + 1);
    k.extend_from_slice(device_id.as_bytes());
    k.push(0);
    k
}

/// The command ids an index scan of one device found, in key order.
pub(super) fn command_ids(entries: &[Entry], prefix: &[u8]) -> Vec<Vec<u8>> {
    entries
        .iter()
        .filter_map(|(k, _)| k.strip_prefix(prefix).map(<[u8]>::to_vec))
        .collect()
}

/// Judges the wipe readiness of every device record that does not keep one by the current
/// judgement (written before it was kept, or by another version), from its storage section,
/// and writes it into the record. A record changed meanwhile is judged as it is then: one
/// that has a current readiness by now (a report stored its section) is left as it is. A
/// record that does not decode is left for the views to name. Returns how many it judged.
pub(super) fn judge_unjudged(devices: &Tree, sections: &Tree) -> Result<usize, StoreError> {
    let mut unjudged: Vec<Entry> = Vec::new();
    for (k, v) in devices.iter()? {
        match pb::DeviceRecord::decode(v.as_slice()) {
            Ok(rec) if crate::readiness::kept(&rec).is_none() => unjudged.push((k, v)),
            Ok(_) => {}
            Err(e) => tracing::warn!(
                "devices/{} does not decode ({e}); its readiness is judged when shown",
                String::from_utf8_lossy(&k)
            ),
        }
    }
    let mut judged = 0;
    for chunk in unjudged.chunks(JUDGE_CHUNK) {
        let keys: Vec<Vec<u8>> = chunk
            .iter()
            .map(|(id, _)| {
                section_key(
                    &String::from_utf8_lossy(id),
                    pb::SectionKind::Storage as i32,
                )
            })
            .collect();
        let refs: Vec<&[u8]> = keys.iter().map(Vec::as_slice).collect();
        for (((id, read), key), raw) in chunk.iter().zip(&keys).zip(sections.get_many(&refs)?) {
            let section = raw
                .map(|raw| decode::<pb::Section>("sections", key, &raw))
                .transpose();
            // A section that does not decode is left unjudged: the views say why, naming
            // it, as they did before the readiness was kept.
            let Ok(section) = section else { continue };
            let summary = crate::readiness::summary(section.as_ref());
            // From the record as read: on PostgreSQL a record nobody changed since costs no
            // second read.
            devices.update_guessing(id, Some(read), |old| {
                let old = old?;
                let Ok(mut rec) = pb::DeviceRecord::decode(old) else {
                    return Some(old.to_vec());
                };
                if crate::readiness::kept(&rec).is_some() {
                    return Some(old.to_vec());
                }
                rec.readiness = Some(summary.clone());
                rec.readiness_version = crate::readiness::JUDGEMENT_VERSION;
                Some(rec.encode_to_vec())
            })?;
            judged += 1;
        }
    }
    if judged > 0 {
        tracing::info!("judged the wipe readiness of {judged} devices from their stored sections");
    }
    Ok(judged)
}
