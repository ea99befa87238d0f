//! The policy in force and its findings, with the store around the pure engine: load the pack,
//! gather a device's report and context, evaluate, reconcile with the stored findings, store
//! them, and queue the manager's mail for each new violation (exactly once per finding: the
//! mail and the finding's `violation_since` marker are stored in one transaction, before
//! anything is sent, and only by one evaluation of the device at a time, across servers).

use crate::notify;
use crate::people::Person;
use crate::policy::{self, DeviceClass, DeviceStatus, Exemption, Finding, Pack, Trip};
use crate::state::State;
use crate::store::{JsonTree, StoreError};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use vakt_proto::pb;

/// A version of the policy as applied (version 0 is the built-in Sorsele pack).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredPolicy {
    pub version: u32,
    pub toml: String,
    pub applied_ms: i64,
    pub applied_by: String,
}

/// The pack the server enforces, with where it came from.
#[derive(Debug, Clone)]
pub struct PolicyInForce {
    pub pack: Pack,
    pub stored: StoredPolicy,
}

/// The latest applied policy, or the built-in pack when none was applied.
pub fn load_policy(store: &crate::store::Store) -> Result<PolicyInForce, StoreError> {
    let all: Vec<StoredPolicy> = store.json_list(JsonTree::Policies, b"")?;
    match all.into_iter().max_by_key(|p| p.version) {
        Some(stored) => match policy::check(&stored.toml) {
            Ok(pack) => Ok(PolicyInForce { pack, stored }),
            Err(errors) => Err(StoreError::CorruptJson {
                tree: "policies",
                key: stored.version.to_string(),
                message: format!("the stored policy no longer validates: {}", errors.len()),
            }),
        },
        None => Ok(PolicyInForce {
            pack: policy::default_pack(),
            stored: StoredPolicy {
                version: 0,
                toml: policy::DEFAULT_PACK_TOML.to_string(),
                applied_ms: 0,
                applied_by: "built-in".into(),
            },
        }),
    }
}

pub fn ms_to_time(ms: i64) -> OffsetDateTime {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH)
}

pub fn time_to_ms(t: OffsetDateTime) -> i64 {
    i64::try_from(t.unix_timestamp_nanos() / 1_000_000).unwrap_or(0)
}

/// The engine's view of a stored device.
pub fn policy_device(d: &pb::Device) -> policy::Device {
    let status = match pb::DeviceState::try_from(d.state) {
        Ok(pb::DeviceState::Lost) => DeviceStatus::Lost,
        Ok(pb::DeviceState::Locked) => DeviceStatus::Locked,
        Ok(pb::DeviceState::Wiped) => DeviceStatus::Wiped,
        Ok(pb::DeviceState::Retired) => DeviceStatus::Retired,
        _ => DeviceStatus::Active,
    };
    policy::Device {
        id: d.id.clone(),
        hostname: d.hostname.clone(),
        // Every device that reports through the agent today is a laptop.
        class: DeviceClass::Laptop,
        assigned_to: (!d.assigned_to.is_empty()).then(|| d.assigned_to.clone()),
        enrolled_at: ms_to_time(d.enrolled_at_ms),
        last_seen: (d.last_report_ms > 0).then(|| ms_to_time(d.last_report_ms)),
        status,
    }
}

fn finding_key(device: &str, id: &str) -> Vec<u8> {
    let mut k = device.as_bytes().to_vec();
    k.push(0);
    k.extend_from_slice(id.as_bytes());
    k
}

fn device_prefix(device: &str) -> Vec<u8> {
    let mut k = device.as_bytes().to_vec();
    k.push(0);
    k
}

/// Every finding of one device, or of all devices.
pub fn findings(state: &State, device: Option<&str>) -> Result<Vec<Finding>, StoreError> {
    let prefix = device.map(device_prefix).unwrap_or_default();
    state.store.json_list(JsonTree::Findings, &prefix)
}

pub fn people(state: &State) -> Result<Vec<Person>, StoreError> {
    state.store.json_list(JsonTree::People, b"")
}

pub fn trips(state: &State) -> Result<Vec<Trip>, StoreError> {
    state.store.json_list(JsonTree::Trips, b"")
}

pub fn exemptions(state: &State) -> Result<Vec<Exemption>, StoreError> {
    state.store.json_list(JsonTree::Exemptions, b"")
}

/// How many times one evaluation runs again when another evaluation of the same device was
/// stored while it ran (another server on the same database, or another task here).
const EVALUATION_ATTEMPTS: u32 = 8;

/// The findings an evaluation changed and the notifications it queues, to be stored together.
type Evaluation = (Vec<(Vec<u8>, Finding)>, Vec<(Vec<u8>, notify::OutboxItem)>);

/// Evaluates one device against the policy in force now, stores the reconciled findings and
/// queues mail for new violations, in one transaction. The transaction stores them only if
/// no other evaluation of the device was stored since this one read its findings; otherwise
/// it evaluates again on the findings now stored. So two servers on one database (or a report
/// and a policy change at once) never both announce the same violation.
pub async fn evaluate_device(state: &State, device_id: &str) -> Result<(), StoreError> {
    let _one_at_a_time = state.eval_lock.lock().await;
    for _ in 0..EVALUATION_ATTEMPTS {
        let mark = state.store.evaluation_mark(device_id)?;
        let Some((findings, outbox)) = evaluation(state, device_id)? else {
            return Ok(());
        };
        if state
            .store
            .store_evaluation(device_id, mark, &findings, &outbox)
            .await?
        {
            if !outbox.is_empty() {
                notify::wake(state);
            }
            return Ok(());
        }
    }
    tracing::warn!(
        device = %device_id,
        "policy evaluation: other evaluations of this device kept coming first; the next report or timer evaluates it again"
    );
    Ok(())
}

/// One evaluation of a device on what is stored now: `None` when nothing changed.
fn evaluation(state: &State, device_id: &str) -> Result<Option<Evaluation>, StoreError> {
    let Some(rec) = state.store.device(device_id)? else {
        return Ok(None);
    };
    let d = rec.device.unwrap_or_default();
    let now = OffsetDateTime::now_utc();
    let pack = match state.policy.read() {
        Ok(p) => p.pack.clone(),
        Err(p) => p.into_inner().pack.clone(),
    };
    let sections = state.store.sections(device_id)?;
    let report = match vakt_proto::convert::sections_to_report(&sections) {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(device = %device_id, "stored report does not convert: {e}");
            return Ok(None);
        }
    };
    let (people, trips, exemptions) = (people(state)?, trips(state)?, exemptions(state)?);
    let ctx = policy::Context {
        people: &people,
        trips: &trips,
        exemptions: &exemptions,
    };
    let dev = policy_device(&d);
    let outcomes = policy::evaluate(&pack, &dev, &report, &ctx, now);
    let previous = findings(state, Some(device_id))?;
    let mut new_id = || {
        format!(
            "f-{:012x}{}",
            crate::timefmt::now_ms(),
            crate::token::hex(&crate::token::random_bytes::<4>())
        )
    };
    let mut rec = policy::reconcile(device_id, &previous, &outcomes, now, &mut new_id);
    if rec.changed.is_empty() && rec.notify.is_empty() {
        return Ok(None);
    }
    let person = ctx.person(dev.assigned_to.as_deref());
    let to = person
        .and_then(|p| p.manager_email.clone())
        .or_else(|| state.notify.it_address.clone());
    let mut outbox = Vec::new();
    for f in &rec.notify {
        // Systems hear of a violation once, when it becomes one; a finding re-announced to a
        // manager who only just became known is not a new event for them.
        let was_violation = previous.iter().any(|p| {
            p.id == f.id
                && p.status == policy::FindingStatus::Open
                && p.severity == policy::Severity::Violation
        });
        if !was_violation {
            outbox.extend(notify::event_items(
                &state.notify,
                &serde_json::json!({"event": "finding.violation", "device": &dev, "finding": f}),
            ));
        }
        let text = policy::violation_mail(&pack, f, &dev, person);
        match &to {
            Some(to) => outbox.push(notify::mail_item(
                std::slice::from_ref(to),
                &text.subject,
                &text.body,
            )),
            None => {
                // Nobody to tell yet (device unassigned, manager unknown, no IT address): the
                // finding stays "not yet told", so assigning the device later tells the manager.
                tracing::info!(
                    finding = %f.id,
                    "new violation, but nobody to tell yet: no manager known for the device's person and no IT address configured"
                );
                if let Some(stored) = rec.findings.iter_mut().find(|x| x.id == f.id) {
                    stored.violation_since = None;
                }
            }
        }
    }
    let puts: Vec<(Vec<u8>, Finding)> = rec
        .findings
        .iter()
        .filter(|f| rec.changed.contains(&f.id))
        .map(|f| (finding_key(device_id, &f.id), f.clone()))
        .collect();
    Ok(Some((puts, outbox)))
}

/// Evaluates every device (after the policy, people, trips or exemptions changed, and on a
/// timer for time-based rules).
pub async fn evaluate_all(state: &State) -> Result<(), StoreError> {
    for rec in state.store.devices()? {
        if let Some(d) = rec.device {
            evaluate_device(state, &d.id).await?;
        }
    }
    Ok(())
}

/// Evaluates in the background, logging failures: used where the caller must not wait (a
/// report is acknowledged as soon as it is durable, not when its findings are).
pub fn evaluate_later(state: &State, device_id: &str) {
    let state = state.clone();
    let id = device_id.to_string();
    tokio::spawn(async move {
        if let Err(e) = evaluate_device(&state, &id).await {
            tracing::error!(device = %id, "policy evaluation failed: {e}");
        }
    });
}

/// A finding as the admin API shows it.
pub fn finding_info(f: &Finding, hostname: &str) -> pb::FindingInfo {
    pb::FindingInfo {
        id: f.id.clone(),
        device: f.device.clone(),
        hostname: hostname.to_string(),
        rule: f.rule.clone(),
        kind: f.kind.as_str().to_string(),
        section: f.section.clone(),
        severity: f.severity.as_str().to_string(),
        status: f.status.as_str().to_string(),
        evidence: f.evidence.clone().into_iter().collect(),
        message_sv: f.message_sv.clone(),
        message_en: f.message_en.clone(),
        first_seen_ms: time_to_ms(f.first_seen),
        last_seen_ms: time_to_ms(f.last_seen),
        resolved_at_ms: f.resolved_at.map(time_to_ms).unwrap_or(0),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::testing::{laptop_report, seed_device};

    /// Two servers on one store (each with its own evaluation lock, as two replicas on one
    /// database have): server A reads a device's findings and evaluates, server B stores its
    /// own evaluation of the same device meanwhile, then A tries to store. A's result is
    /// refused (it was computed on findings that are no longer current) and A's evaluation
    /// run again changes nothing: each condition is one finding and each violation one mail.
    /// Without the mark A would store its own finding ids and mail beside B's (checked:
    /// making `store_evaluation` ignore the mark fails this).
    #[tokio::test]
    async fn an_evaluation_overtaken_by_another_server_is_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let config = notify::NotifyConfig {
            it_address: Some("it@sorsele.se".into()),
            ..notify::NotifyConfig::default()
        };
        let a = crate::server::prepare(dir.path(), &[], config.clone())
            .await
            .unwrap();
        let pki = crate::pki::Pki::load_or_create(dir.path(), &[]).unwrap();
        let b = State::new(a.store.clone(), pki, config).unwrap();
        let id = seed_device(&a, "lap-anna", &laptop_report()).await;

        let mark = a.store.evaluation_mark(&id).unwrap();
        let (found, mail) = evaluation(&a, &id).unwrap().unwrap();
        assert!(!mail.is_empty(), "the laptop has a violation to mail");
        evaluate_device(&b, &id).await.unwrap();
        let stored = a
            .store
            .store_evaluation(&id, mark, &found, &mail)
            .await
            .unwrap();
        assert!(!stored, "an overtaken evaluation is not stored");
        evaluate_device(&a, &id).await.unwrap();

        let found = findings(&a, Some(&id)).unwrap();
        let keys: std::collections::BTreeSet<(&str, &str)> = found
            .iter()
            .map(|f| (f.rule.as_str(), f.key.as_str()))
            .collect();
        assert_eq!(keys.len(), found.len(), "no condition found twice");
        let violations = found
            .iter()
            .filter(|f| f.severity == policy::Severity::Violation)
            .count();
        assert!(violations > 0);
        assert_eq!(
            notify::pending(&a).unwrap().len(),
            violations,
            "one mail per violation"
        );
    }
}
