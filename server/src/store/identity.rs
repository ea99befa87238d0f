//! Device identity in the store: which device an enrollment becomes, certificate renewal
//! (a pending certificate promoted at its first use), re-enrollment allowed by an admin, and
//! retirement.
//!
//! The rule (ARCHITECTURE.md, "identity is bound to the key"): hardware ids (machine id and
//! serial) are claims anyone can copy, so they never move a device that still holds a valid,
//! unrevoked certificate. An enrollment that claims such hardware becomes a new device, marked
//! as sharing the hardware. It takes an existing record over only when that record's
//! certificates have all expired or been revoked, or when an admin allowed it first
//! (`vakt device reenroll`, one use within a deadline).

use super::engine::{TxFault, TxResult, TxTree, abort};
use super::{Store, StoreError, decode, hardware_key};
use prost::Message;
use vakt_proto::pb;

/// How long `vakt device reenroll` keeps the door open.
pub const REENROLL_WINDOW_MS: i64 = 24 * 3600 * 1000;

/// Which device an enrollment becomes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnrollPlan {
    /// A new device; `shares_with` are the devices that claim the same hardware and still
    /// hold a valid certificate (empty for hardware never seen).
    New { shares_with: Vec<String> },
    /// The existing record of this id, whose certificate expired or was revoked, or whose
    /// re-enrollment an admin allowed.
    TakeOver { id: String, why: TakeOverReason },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TakeOverReason {
    AdminAllowed,
    CertificateExpired,
    CertificateRevoked,
}

impl TakeOverReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AdminAllowed => "re-enrollment allowed by an admin",
            Self::CertificateExpired => "its certificate had expired",
            Self::CertificateRevoked => "its certificate had been revoked",
        }
    }
}

/// Why a certificate the CA vouches for is not accepted any more.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Revoked {
    /// The device was retired by IT.
    Retired(String),
    /// A newer certificate replaced it (renewal or re-enrollment).
    Replaced(String),
}

/// The certificate an enrollment or renewal issued, as the store keeps it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CertInfo {
    pub sha256: [u8; 32],
    pub not_after_ms: i64,
}

/// Whether a record still holds a certificate that works at `now_ms`: its current one
/// (unknown expiry counts as valid: records written before expiry was kept) or a pending
/// renewal its agent may already have saved.
pub fn holds_valid_cert(rec: &pb::DeviceRecord, now_ms: i64) -> bool {
    let current = !rec.cert_sha256.is_empty()
        && (rec.cert_not_after_ms == 0 || now_ms < rec.cert_not_after_ms);
    let pending = !rec.pending_cert_sha256.is_empty() && now_ms < rec.pending_cert_not_after_ms;
    current || pending
}

/// The decision, from the devices already recorded for the claimed hardware. Pure, so it can
/// be checked on its own and again inside the enrolling transaction.
pub fn decide(candidates: &[pb::DeviceRecord], now_ms: i64) -> EnrollPlan {
    let id = |r: &pb::DeviceRecord| r.device.as_ref().map(|d| d.id.clone()).unwrap_or_default();
    if let Some(r) = candidates
        .iter()
        .find(|r| r.reenroll_allowed_until_ms > now_ms)
    {
        return EnrollPlan::TakeOver {
            id: id(r),
            why: TakeOverReason::AdminAllowed,
        };
    }
    if let Some(r) = candidates.iter().find(|r| !holds_valid_cert(r, now_ms)) {
        let why = if r.cert_sha256.is_empty() {
            TakeOverReason::CertificateRevoked
        } else {
            TakeOverReason::CertificateExpired
        };
        return EnrollPlan::TakeOver { id: id(r), why };
    }
    EnrollPlan::New {
        shares_with: candidates.iter().map(id).collect(),
    }
}

/// The device ids recorded for one hardware key (comma-separated; older stores hold one id).
fn ids_of(value: Option<&[u8]>) -> Vec<String> {
    value
        .map(|v| {
            String::from_utf8_lossy(v)
                .split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default()
}

fn tx_device<E: From<StoreError>>(
    devices: &TxTree<'_>,
    id: &str,
) -> TxResult<Option<pb::DeviceRecord>, E> {
    match devices.get(id.as_bytes())? {
        Some(raw) => Ok(Some(
            decode("devices", id.as_bytes(), &raw).map_err(|e| abort(E::from(e)))?,
        )),
        None => Ok(None),
    }
}

/// The records of the devices claiming `hw`, read inside a transaction.
fn tx_candidates<E: From<StoreError>>(
    devices: &TxTree<'_>,
    hardware: &TxTree<'_>,
    hw: &pb::HardwareIdentity,
) -> TxResult<Vec<pb::DeviceRecord>, E> {
    let Some(k) = hardware_key(hw) else {
        return Ok(Vec::new());
    };
    let ids = ids_of(hardware.get(k)?.as_deref());
    let keys: Vec<&[u8]> = ids.iter().map(|id| id.as_bytes()).collect();
    // One round trip for all of them on PostgreSQL.
    let mut out = Vec::new();
    for (key, raw) in keys.iter().zip(devices.get_many(&keys)?) {
        if let Some(raw) = raw {
            out.push(decode("devices", key, &raw).map_err(|e| abort(E::from(e)))?);
        }
    }
    Ok(out)
}

/// Takes `sha` out of the accepted certificates and remembers why.
fn revoke(
    certs: &TxTree<'_>,
    revoked: &TxTree<'_>,
    sha: &[u8],
    why: &Revoked,
) -> Result<(), TxFault> {
    if sha.is_empty() {
        return Ok(());
    }
    certs.remove(sha)?;
    let v = match why {
        Revoked::Retired(id) => format!("retired:{id}"),
        Revoked::Replaced(id) => format!("replaced:{id}"),
    };
    revoked.insert(sha, v.as_bytes())?;
    Ok(())
}

/// Revokes the current and any pending certificate of `rec`, keeping them in its history.
fn revoke_all(
    rec: &mut pb::DeviceRecord,
    certs: &TxTree<'_>,
    revoked: &TxTree<'_>,
    why: &Revoked,
) -> Result<(), TxFault> {
    for sha in [
        std::mem::take(&mut rec.cert_sha256),
        std::mem::take(&mut rec.pending_cert_sha256),
    ] {
        if !sha.is_empty() {
            revoke(certs, revoked, &sha, why)?;
            rec.revoked_cert_sha256.push(sha);
        }
    }
    rec.pending_cert_not_after_ms = 0;
    Ok(())
}

impl EnrollPlan {
    /// The id of the device record the enrollment writes: the one taken over, or the new
    /// device's own.
    pub fn target<'a>(&'a self, device: &'a pb::Device) -> &'a str {
        match self {
            Self::TakeOver { id, .. } => id,
            Self::New { .. } => &device.id,
        }
    }
}

/// Why enrolling could not be written.
#[derive(Debug, thiserror::Error)]
pub enum PlanChanged {
    #[error(
        "the devices recorded for this hardware changed during enrollment; enroll again (the token was not used)"
    )]
    Changed,
}

/// The device part of an enrollment, inside the store's enrolling transaction: checks that the
/// plan still holds, then writes the record, its certificate, the hardware index and the
/// hostname index. Every `abort` comes before the first write, so an enrollment refused here
/// leaves nothing in a transaction that goes on with others (`Store::enroll_device`).
pub(super) fn apply_enrollment<E: From<StoreError> + From<PlanChanged>>(
    [devices, hardware, certs, revoked, names]: [&TxTree<'_>; 5],
    plan: &EnrollPlan,
    device: &pb::Device,
    hw: &pb::HardwareIdentity,
    cert: CertInfo,
    now_ms: i64,
) -> TxResult<pb::DeviceRecord, E> {
    if decide(&tx_candidates(devices, hardware, hw)?, now_ms) != *plan {
        return Err(abort(E::from(PlanChanged::Changed)));
    }
    let id = plan.target(device).to_string();
    let existing = tx_device(devices, &id)?;
    let old_name = existing
        .as_ref()
        .and_then(|r| r.device.as_ref())
        .map(|d| d.hostname.clone());
    if existing.is_some() && matches!(plan, EnrollPlan::New { .. }) {
        // A new device's id is fresh; one that exists was never meant to be taken over.
        return Err(abort(E::from(PlanChanged::Changed)));
    }
    let mut rec = match existing {
        Some(mut old) => {
            revoke_all(&mut old, certs, revoked, &Revoked::Replaced(id.clone()))?;
            let mut d = old.device.take().unwrap_or_default();
            d.hostname = device.hostname.clone();
            d.machine_id = device.machine_id.clone();
            d.serial = device.serial.clone();
            d.model = device.model.clone();
            d.agent_version = device.agent_version.clone();
            d.last_seen_ms = now_ms;
            // The new enrollment pinned the key the answer carries.
            d.command_key_generation = device.command_key_generation;
            // A retired laptop that is enrolled again is in use again; lost or locked stays.
            if d.state == pb::DeviceState::Retired as i32 {
                d.state = pb::DeviceState::Active as i32;
            }
            old.device = Some(d);
            old.reenroll_allowed_until_ms = 0;
            old
        }
        None => {
            let mut d = device.clone();
            d.id = id.clone();
            if let EnrollPlan::New { shares_with } = plan {
                d.shares_hardware_with = shares_with.clone();
            }
            pb::DeviceRecord {
                device: Some(d),
                ..Default::default()
            }
        }
    };
    rec.cert_sha256 = cert.sha256.to_vec();
    rec.cert_not_after_ms = cert.not_after_ms;
    rec.hardware = Some(hw.clone());
    devices.insert(id.as_bytes(), rec.encode_to_vec())?;
    let name = rec.device.as_ref().map_or("", |d| d.hostname.as_str());
    super::reindex_hostname(names, &id, old_name.as_deref(), name)?;
    certs.insert(&cert.sha256[..], id.as_bytes())?;
    if let Some(k) = hardware_key(hw) {
        let mut ids = ids_of(hardware.get(&k)?.as_deref());
        if !ids.contains(&id) {
            ids.push(id.clone());
        }
        hardware.insert(k, ids.join(",").as_bytes())?;
    }
    Ok(rec)
}

impl Store {
    /// What an enrollment claiming `hw` would become now (checked again when it is written).
    pub fn enroll_plan(
        &self,
        hw: &pb::HardwareIdentity,
        now_ms: i64,
    ) -> Result<EnrollPlan, StoreError> {
        let mut candidates = Vec::new();
        if let Some(k) = hardware_key(hw) {
            for id in ids_of(self.hardware.get(k)?.as_deref()) {
                if let Some(rec) = self.device(&id)? {
                    candidates.push(rec);
                }
            }
        }
        Ok(decide(&candidates, now_ms))
    }

    /// The other devices that claim the same hardware as `rec`.
    pub fn hardware_peers(&self, rec: &pb::DeviceRecord) -> Result<Vec<String>, StoreError> {
        Ok(self
            .hardware_peers_many(std::slice::from_ref(rec))?
            .pop()
            .unwrap_or_default())
    }

    /// [`Store::hardware_peers`] of each record, in one read of the hardware index (one round
    /// trip on PostgreSQL for a whole device list, not one per device).
    pub fn hardware_peers_many(
        &self,
        recs: &[pb::DeviceRecord],
    ) -> Result<Vec<Vec<String>>, StoreError> {
        let keys: Vec<Option<Vec<u8>>> = recs
            .iter()
            .map(|r| r.hardware.as_ref().and_then(hardware_key))
            .collect();
        let wanted: Vec<&[u8]> = keys.iter().flatten().map(Vec::as_slice).collect();
        let mut found = self.hardware.get_many(&wanted)?.into_iter();
        Ok(recs
            .iter()
            .zip(&keys)
            .map(|(rec, key)| {
                // `found` answers the keys in order, one for each record that has one.
                let Some(value) = key.as_ref().and_then(|_| found.next()) else {
                    return Vec::new();
                };
                let me = rec.device.as_ref().map(|d| d.id.as_str()).unwrap_or("");
                ids_of(value.as_deref())
                    .into_iter()
                    .filter(|id| id != me)
                    .collect()
            })
            .collect())
    }

    /// Why a certificate that is not accepted was revoked, if this server revoked it.
    pub fn revoked_cert(&self, sha: &[u8; 32]) -> Result<Option<Revoked>, StoreError> {
        Ok(self.revoked_certs.get(sha)?.and_then(|v| {
            let v = String::from_utf8_lossy(&v);
            if let Some(id) = v.strip_prefix("retired:") {
                Some(Revoked::Retired(id.to_string()))
            } else {
                v.strip_prefix("replaced:")
                    .map(|id| Revoked::Replaced(id.to_string()))
            }
        }))
    }

    /// The device whose current or pending certificate is `sha`. A pending (renewed)
    /// certificate seen for the first time becomes the current one here, and the certificate
    /// it replaces is revoked. Not flushed: if it is lost in a crash, the next call with the
    /// new certificate promotes it again, and the old one worked a little longer.
    pub async fn device_by_cert_promoting(
        &self,
        sha: &[u8; 32],
    ) -> Result<Option<pb::DeviceRecord>, StoreError> {
        let Some(rec) = self.device_by_cert_async(sha).await? else {
            return Ok(None);
        };
        if rec.pending_cert_sha256.as_slice() != sha.as_slice() {
            return Ok(Some(rec));
        }
        let id = rec
            .device
            .as_ref()
            .map(|d| d.id.clone())
            .unwrap_or_default();
        let r = self.engine.transaction(
            [&self.devices, &self.certs, &self.revoked_certs],
            |[devices, certs, revoked]| {
                let Some(mut rec) = tx_device::<StoreError>(devices, &id)? else {
                    return Ok(None);
                };
                if rec.pending_cert_sha256.as_slice() == sha.as_slice() {
                    let old = std::mem::take(&mut rec.cert_sha256);
                    if !old.is_empty() {
                        revoke(certs, revoked, &old, &Revoked::Replaced(id.clone()))?;
                        rec.revoked_cert_sha256.push(old);
                    }
                    rec.cert_sha256 = std::mem::take(&mut rec.pending_cert_sha256);
                    rec.cert_not_after_ms = std::mem::take(&mut rec.pending_cert_not_after_ms);
                    devices.insert(id.as_bytes(), rec.encode_to_vec())?;
                }
                Ok(Some(rec))
            },
        );
        let rec = r?;
        if rec.is_some() {
            tracing::info!(device = %id, "renewed certificate in use; the old one is revoked");
        }
        Ok(rec)
    }

    /// Records a renewed certificate for `id` as pending (accepted from now on, current at its
    /// first use), replacing an earlier pending one that was never used. `presented` is the
    /// certificate the renewal came with, which must still be the device's current one.
    /// Flushed: the agent switches to the new certificate once it has it.
    pub async fn renew_cert(
        &self,
        id: &str,
        presented: &[u8; 32],
        cert: CertInfo,
    ) -> Result<Option<pb::DeviceRecord>, StoreError> {
        let r = self.engine.transaction(
            [&self.devices, &self.certs, &self.revoked_certs],
            |[devices, certs, revoked]| {
                let Some(mut rec) = tx_device::<StoreError>(devices, id)? else {
                    return Ok(None);
                };
                if rec.cert_sha256.as_slice() != presented.as_slice() {
                    return Ok(None);
                }
                let unused = std::mem::take(&mut rec.pending_cert_sha256);
                if !unused.is_empty() {
                    revoke(certs, revoked, &unused, &Revoked::Replaced(id.to_string()))?;
                    rec.revoked_cert_sha256.push(unused);
                }
                rec.pending_cert_sha256 = cert.sha256.to_vec();
                rec.pending_cert_not_after_ms = cert.not_after_ms;
                certs.insert(&cert.sha256[..], id.as_bytes())?;
                devices.insert(id.as_bytes(), rec.encode_to_vec())?;
                Ok(Some(rec))
            },
        );
        let rec = r?;
        self.flush().await?;
        Ok(rec)
    }

    /// Lets the next enrollment of `id`'s hardware take its record over until `until_ms`.
    pub async fn allow_reenroll(
        &self,
        id: &str,
        until_ms: i64,
    ) -> Result<Option<pb::DeviceRecord>, StoreError> {
        let rec = self.update_device(id, |r| r.reenroll_allowed_until_ms = until_ms)?;
        self.flush().await?;
        Ok(rec)
    }

    /// Revokes every certificate of `id` and marks it retired.
    pub async fn retire(&self, id: &str) -> Result<Option<pb::DeviceRecord>, StoreError> {
        let r = self.engine.transaction(
            [&self.devices, &self.certs, &self.revoked_certs],
            |[devices, certs, revoked]| {
                let Some(mut rec) = tx_device::<StoreError>(devices, id)? else {
                    return Ok(None);
                };
                revoke_all(&mut rec, certs, revoked, &Revoked::Retired(id.to_string()))?;
                rec.reenroll_allowed_until_ms = 0;
                if let Some(d) = rec.device.as_mut() {
                    d.state = pb::DeviceState::Retired as i32;
                }
                devices.insert(id.as_bytes(), rec.encode_to_vec())?;
                Ok(Some(rec))
            },
        );
        let rec = r?;
        self.flush().await?;
        Ok(rec)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, cert: &[u8], not_after: i64) -> pb::DeviceRecord {
        pb::DeviceRecord {
            device: Some(pb::Device {
                id: id.into(),
                ..Default::default()
            }),
            cert_sha256: cert.to_vec(),
            cert_not_after_ms: not_after,
            ..Default::default()
        }
    }

    #[test]
    fn valid_holder_is_never_taken_over() {
        assert_eq!(
            decide(&[rec("a", &[1], 1000)], 10),
            EnrollPlan::New {
                shares_with: vec!["a".into()]
            }
        );
        // Unknown expiry (an older record) counts as valid.
        assert_eq!(
            decide(&[rec("a", &[1], 0)], 10),
            EnrollPlan::New {
                shares_with: vec!["a".into()]
            }
        );
        assert_eq!(
            decide(&[], 10),
            EnrollPlan::New {
                shares_with: vec![]
            }
        );
    }

    #[test]
    fn expired_revoked_or_allowed_is_taken_over() {
        assert_eq!(
            decide(&[rec("a", &[1], 1000)], 1000),
            EnrollPlan::TakeOver {
                id: "a".into(),
                why: TakeOverReason::CertificateExpired
            }
        );
        assert_eq!(
            decide(&[rec("a", &[1], 1000), rec("b", &[], 0)], 10),
            EnrollPlan::TakeOver {
                id: "b".into(),
                why: TakeOverReason::CertificateRevoked
            }
        );
        let mut allowed = rec("a", &[1], 1000);
        allowed.reenroll_allowed_until_ms = 50;
        assert_eq!(
            decide(std::slice::from_ref(&allowed), 10),
            EnrollPlan::TakeOver {
                id: "a".into(),
                why: TakeOverReason::AdminAllowed
            }
        );
        // The allowance runs out.
        assert!(matches!(decide(&[allowed], 50), EnrollPlan::New { .. }));
    }

    async fn store_with_token(dir: &std::path::Path) -> (Store, [u8; 32]) {
        let s = Store::open(dir).unwrap();
        let h = crate::token::hash("vakt_e_identity");
        s.put_enroll_token(
            &h,
            &pb::EnrollTokenRecord {
                id: "tok".into(),
                uses_left: 10,
                uses_total: 10,
                ..Default::default()
            },
        )
        .await
        .unwrap();
        (s, h)
    }

    fn hw() -> pb::HardwareIdentity {
        pb::HardwareIdentity {
            machine_id: "m1".into(),
            serial: "s1".into(),
            ..Default::default()
        }
    }

    fn new_device(id: &str) -> pb::Device {
        pb::Device {
            id: id.into(),
            ..Default::default()
        }
    }

    async fn enroll(s: &Store, h: &[u8; 32], id: &str, cert: u8, now: i64) -> EnrollPlan {
        let plan = s.enroll_plan(&hw(), now).unwrap();
        let info = CertInfo {
            sha256: [cert; 32],
            not_after_ms: now + 1000,
        };
        s.enroll_device(h, now, new_device(id), hw(), info, &plan)
            .await
            .unwrap();
        plan
    }

    #[tokio::test]
    async fn same_hardware_with_a_valid_holder_becomes_a_new_device_sharing_it() {
        let dir = tempfile::tempdir().unwrap();
        let (s, h) = store_with_token(dir.path()).await;
        enroll(&s, &h, "d1", 1, 10).await;
        let plan = enroll(&s, &h, "d2", 2, 20).await;
        assert_eq!(
            plan,
            EnrollPlan::New {
                shares_with: vec!["d1".into()]
            }
        );
        // The first device is untouched: its certificate still works.
        let d1 = s.device_by_cert(&[1; 32]).unwrap().unwrap();
        assert_eq!(d1.device.as_ref().unwrap().id, "d1");
        assert!(d1.revoked_cert_sha256.is_empty());
        assert_eq!(s.hardware_peers(&d1).unwrap(), vec!["d2".to_string()]);
        let d2 = s.device_by_cert(&[2; 32]).unwrap().unwrap();
        assert_eq!(
            d2.device.unwrap().shares_hardware_with,
            vec!["d1".to_string()]
        );
    }

    #[tokio::test]
    async fn an_allowed_reenrollment_takes_over_once_and_a_stale_plan_uses_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (s, h) = store_with_token(dir.path()).await;
        enroll(&s, &h, "d1", 1, 10).await;
        // Planned while d1 was valid; d1 is allowed a re-enrollment before it is written.
        let stale = s.enroll_plan(&hw(), 20).unwrap();
        s.allow_reenroll("d1", 500).await.unwrap();
        let info = CertInfo {
            sha256: [9; 32],
            not_after_ms: 2000,
        };
        let err = s
            .enroll_device(&h, 20, new_device("d9"), hw(), info, &stale)
            .await
            .unwrap_err();
        assert!(err.to_string().contains("enroll again"), "{err}");
        let tok = s.check_enroll_token(&h, "x", 20).unwrap();
        assert_eq!(tok.uses_left, 9, "the refused enrollment used nothing");

        let plan = enroll(&s, &h, "d3", 3, 30).await;
        assert_eq!(
            plan,
            EnrollPlan::TakeOver {
                id: "d1".into(),
                why: TakeOverReason::AdminAllowed
            }
        );
        assert!(s.device_by_cert(&[1; 32]).unwrap().is_none());
        assert_eq!(
            s.revoked_cert(&[1; 32]).unwrap(),
            Some(Revoked::Replaced("d1".into()))
        );
        let d1 = s.device_by_cert(&[3; 32]).unwrap().unwrap();
        assert_eq!(d1.device.as_ref().unwrap().id, "d1");
        assert_eq!(d1.reenroll_allowed_until_ms, 0, "one use");
        assert!(matches!(
            enroll(&s, &h, "d4", 4, 40).await,
            EnrollPlan::New { .. }
        ));
    }

    #[tokio::test]
    async fn expired_or_retired_devices_are_taken_over() {
        let dir = tempfile::tempdir().unwrap();
        let (s, h) = store_with_token(dir.path()).await;
        enroll(&s, &h, "d1", 1, 10).await; // valid until 1010
        assert!(matches!(
            enroll(&s, &h, "d2", 2, 2000).await,
            EnrollPlan::TakeOver { ref id, why: TakeOverReason::CertificateExpired } if id == "d1"
        ));
        s.retire("d1").await.unwrap();
        assert_eq!(
            s.revoked_cert(&[2; 32]).unwrap(),
            Some(Revoked::Retired("d1".into()))
        );
        let plan = enroll(&s, &h, "d3", 3, 2100).await;
        assert_eq!(
            plan,
            EnrollPlan::TakeOver {
                id: "d1".into(),
                why: TakeOverReason::CertificateRevoked
            }
        );
        let d1 = s.device("d1").unwrap().unwrap();
        assert_eq!(d1.device.unwrap().state, pb::DeviceState::Active as i32);
    }

    #[tokio::test]
    async fn a_renewed_certificate_is_pending_until_first_used() {
        let dir = tempfile::tempdir().unwrap();
        let (s, h) = store_with_token(dir.path()).await;
        enroll(&s, &h, "d1", 1, 10).await;
        let next = CertInfo {
            sha256: [2; 32],
            not_after_ms: 5000,
        };
        assert!(s.renew_cert("d1", &[1; 32], next).await.unwrap().is_some());
        // Both work until the new one is used; a second renewal replaces the unused one.
        assert!(
            s.device_by_cert_promoting(&[1; 32])
                .await
                .unwrap()
                .is_some()
        );
        let again = CertInfo {
            sha256: [3; 32],
            not_after_ms: 6000,
        };
        assert!(s.renew_cert("d1", &[1; 32], again).await.unwrap().is_some());
        assert!(
            s.device_by_cert_promoting(&[2; 32])
                .await
                .unwrap()
                .is_none()
        );
        let rec = s.device_by_cert_promoting(&[3; 32]).await.unwrap().unwrap();
        assert_eq!(rec.cert_sha256, vec![3; 32]);
        assert_eq!(rec.cert_not_after_ms, 6000);
        assert!(rec.pending_cert_sha256.is_empty());
        assert!(
            s.device_by_cert_promoting(&[1; 32])
                .await
                .unwrap()
                .is_none()
        );
        // Only the current certificate may renew.
        assert!(s.renew_cert("d1", &[1; 32], next).await.unwrap().is_none());
    }

    #[test]
    fn a_pending_renewal_keeps_the_device_valid() {
        let mut r = rec("a", &[1], 100);
        r.pending_cert_sha256 = vec![2];
        r.pending_cert_not_after_ms = 1000;
        assert!(matches!(decide(&[r], 500), EnrollPlan::New { .. }));
    }
}
