//! The command queue: lock, unlock and wipe, from request to the agent's result.
//!
//! A command lives in the store from the moment it is requested. It is signed when it is
//! *delivered*, not when it is queued: the signature's short expiry (minutes) bounds replay of a
//! captured command, while the queue's own expiry (days) lets a lock wait for a lost laptop
//! that stays offline for a week. Delivery is at least once — on request if the device is
//! connected, and again on every reconnect until a result arrives; the agent runs each id at
//! most once.

use crate::state::State;
use crate::store::StoreError;
use crate::timefmt::now_ms;
use prost::Message;
use vakt_proto::pb;

/// How long a delivered signature is valid.
pub const SIGNATURE_TTL_MS: i64 = 15 * 60 * 1000;
/// How long a lock or unlock waits in the queue for its device.
pub const LOCK_QUEUE_TTL_MS: i64 = 90 * 24 * 3600 * 1000;
/// How long a wipe request waits for a second admin.
pub const WIPE_APPROVAL_TTL_MS: i64 = 24 * 3600 * 1000;
/// How long an approved wipe waits for its device.
pub const WIPE_DELIVERY_TTL_MS: i64 = 14 * 24 * 3600 * 1000;
/// How many times a command is signed again after the agent refused it for time or key (its
/// clock, or a rotation it had just followed) before the refusal is taken as final.
pub const MAX_RESIGNS: u32 = 5;

pub fn kind_name(kind: i32) -> &'static str {
    match pb::CommandKind::try_from(kind) {
        Ok(pb::CommandKind::Lock) => "lock",
        Ok(pb::CommandKind::Unlock) => "unlock",
        Ok(pb::CommandKind::Wipe) => "wipe",
        _ => "unknown",
    }
}

pub fn state_name(state: i32) -> &'static str {
    use pb::CommandState as S;
    match S::try_from(state) {
        Ok(S::AwaitingApproval) => "awaiting-approval",
        Ok(S::Pending) => "pending",
        Ok(S::Delivered) => "delivered",
        Ok(S::Succeeded) => "succeeded",
        Ok(S::Failed) => "failed",
        Ok(S::Refused) => "refused",
        Ok(S::Expired) => "expired",
        _ => "unknown",
    }
}

/// True for states from which nothing more happens.
pub fn is_final(state: i32) -> bool {
    use pb::CommandState as S;
    matches!(
        S::try_from(state),
        Ok(S::Succeeded | S::Failed | S::Refused | S::Expired)
    )
}

/// A new, time-ordered command id (so the store lists commands oldest first).
pub fn new_id(now_ms: i64) -> String {
    format!(
        "cmd-{:012x}{}",
        now_ms.max(0),
        crate::token::hex(&crate::token::random_bytes::<4>())
    )
}

/// A new command in the queue: pending, or awaiting approval for a wipe.
pub fn new_command(
    device_id: &str,
    kind: pb::CommandKind,
    requested_by: &str,
    reason: &str,
    now_ms: i64,
) -> pb::CommandInfo {
    let (state, ttl) = match kind {
        pb::CommandKind::Wipe => (pb::CommandState::AwaitingApproval, WIPE_APPROVAL_TTL_MS),
        _ => (pb::CommandState::Pending, LOCK_QUEUE_TTL_MS),
    };
    pb::CommandInfo {
        id: new_id(now_ms),
        device_id: device_id.to_string(),
        kind: kind as i32,
        state: state as i32,
        requested_by: requested_by.to_string(),
        reason: reason.to_string(),
        created_ms: now_ms,
        updated_ms: now_ms,
        expires_ms: now_ms.saturating_add(ttl),
        ..Default::default()
    }
}

/// The signed envelope of a command, valid for [`SIGNATURE_TTL_MS`] from `now_ms`, signed with
/// the key generation the device has acknowledged; an error when that generation is retired.
pub fn sign(
    state: &State,
    c: &pb::CommandInfo,
    key_generation: u32,
    now_ms: i64,
) -> Result<pb::SignedCommand, crate::signing::SignError> {
    let body = pb::Command {
        id: c.id.clone(),
        device_id: c.device_id.clone(),
        kind: c.kind,
        parameters: c.parameters.clone(),
        issued_at_ms: now_ms,
        expires_at_ms: now_ms.saturating_add(SIGNATURE_TTL_MS),
    }
    .encode_to_vec();
    Ok(pb::SignedCommand {
        signature: state.pki.command_keys.sign(key_generation, &body)?,
        command: body,
    })
}

fn deliverable(c: &pb::CommandInfo, now_ms: i64) -> bool {
    let st = pb::CommandState::try_from(c.state);
    matches!(
        st,
        Ok(pb::CommandState::Pending | pb::CommandState::Delivered)
    ) && c.expires_ms > now_ms
}

/// Pushes every deliverable command of `device_id` over its open stream, oldest first, and
/// records the delivery. Returns how many were pushed (0 when the device is not connected).
pub async fn deliver(state: &State, device_id: &str) -> Result<usize, StoreError> {
    let Some(conn) = state
        .connected
        .lock()
        .ok()
        .and_then(|m| m.get(device_id).cloned())
    else {
        return Ok(0);
    };
    let now = now_ms();
    let due: Vec<_> = state
        .store
        .open_commands_of_async(device_id)
        .await?
        .into_iter()
        .filter(|c| deliverable(c, now))
        .collect();
    if due.is_empty() {
        return Ok(0);
    }
    let generation = state
        .store
        .device_async(device_id)
        .await?
        .and_then(|r| r.device)
        .map_or(0, |d| d.command_key_generation);
    let total = due.len();
    let mut pushed = 0;
    for c in due {
        let signed = match sign(state, &c, generation, now) {
            Ok(signed) => signed,
            Err(e) => {
                // The device trusts only a retired key (`vakt signing-key retire --force`).
                // Its commands stay queued: the chain it was handed when it connected, or
                // when the key was retired, brings it to a live key, and its answer
                // (`KeyRolloverResult`) delivers them signed with that.
                tracing::warn!(
                    device = %device_id,
                    "{e}; its {} queued command(s) wait until it acknowledges the current key",
                    total - pushed
                );
                break;
            }
        };
        let msg = Box::new(pb::ServerMessage {
            msg: Some(pb::server_message::Msg::Command(signed)),
        });
        if conn.tx.send(msg).await.is_err() {
            break;
        }
        pushed += 1;
        state
            .store
            .update_command(&c.id, move |c| {
                if c.state == pb::CommandState::Pending as i32 {
                    c.state = pb::CommandState::Delivered as i32;
                }
                c.delivered_ms = now;
                c.deliveries += 1;
                c.updated_ms = now;
                true
            })
            .await?;
    }
    Ok(pushed)
}

/// What became of an agent's result.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Unknown, another device's, or already final: acknowledged and nothing changed.
    Ignored,
    /// Stored.
    Stored,
    /// A refusal for time or key that the agent did not take as final: the command stays
    /// delivered and is to be signed again and resent now.
    SignAgain,
}

/// Records an agent's result for one of its commands, durably, and moves the device to the
/// state the result implies. An unknown command or another device's is ignored (the agent is
/// still acknowledged, so it stops resending).
pub async fn record_result(
    state: &State,
    device_id: &str,
    r: &pb::CommandResult,
) -> Result<Recorded, StoreError> {
    let Some(c) = state.store.command(&r.command_id)? else {
        tracing::warn!(device = %device_id, command = %r.command_id, "result for an unknown command");
        return Ok(Recorded::Ignored);
    };
    if c.device_id != device_id {
        tracing::warn!(device = %device_id, command = %r.command_id, "result for another device's command ignored");
        return Ok(Recorded::Ignored);
    }
    if is_final(c.state) {
        return Ok(Recorded::Ignored);
    }
    let now = now_ms();
    let outcome =
        pb::CommandOutcome::try_from(r.outcome).unwrap_or(pb::CommandOutcome::Unspecified);
    if outcome == pb::CommandOutcome::Refused && r.retry && c.deliveries <= MAX_RESIGNS {
        tracing::info!(device = %device_id, command = %c.id, "the agent refused for time or key ({}); signing again", r.detail);
        let detail = format!(
            "the agent refused it ({}); signed again and resent",
            r.detail
        );
        state
            .store
            .update_command(&c.id, move |c| {
                // Another server may have recorded a final result meanwhile.
                if is_final(c.state) {
                    return false;
                }
                c.detail = detail.clone();
                c.updated_ms = now;
                true
            })
            .await?;
        return Ok(Recorded::SignAgain);
    }
    let new_state = match outcome {
        pb::CommandOutcome::Started => pb::CommandState::Delivered,
        pb::CommandOutcome::Succeeded => pb::CommandState::Succeeded,
        pb::CommandOutcome::Failed => pb::CommandState::Failed,
        pb::CommandOutcome::Refused => pb::CommandState::Refused,
        pb::CommandOutcome::Unspecified => pb::CommandState::Failed,
    };
    let detail = if r.detail.is_empty() && outcome == pb::CommandOutcome::Started {
        "started".to_string()
    } else {
        r.detail.clone()
    };
    // The device's new state is written first and made durable by the command's own flush
    // below: one flush for both, so a result is acknowledged after one wait, not two.
    if new_state == pb::CommandState::Succeeded {
        let device_state = match pb::CommandKind::try_from(c.kind) {
            Ok(pb::CommandKind::Lock) => Some(pb::DeviceState::Locked),
            Ok(pb::CommandKind::Unlock) => Some(pb::DeviceState::Active),
            Ok(pb::CommandKind::Wipe) => Some(pb::DeviceState::Wiped),
            _ => None,
        };
        if let Some(ds) = device_state {
            state.store.update_device(device_id, |rec| {
                if let Some(d) = rec.device.as_mut() {
                    // A lock that lands after the device was recovered must not mark it locked
                    // again; only a lost (or already locked) device becomes locked.
                    let lost_or_locked = d.state == pb::DeviceState::Lost as i32
                        || d.state == pb::DeviceState::Locked as i32;
                    if ds != pb::DeviceState::Locked || lost_or_locked {
                        d.state = ds as i32;
                    }
                }
            })?;
        }
    }
    state
        .store
        .update_command(&c.id, move |c| {
            // Final stays final, whoever wrote it (an expiry or a result on another server).
            if is_final(c.state) {
                return false;
            }
            c.state = new_state as i32;
            c.detail = detail.clone();
            c.updated_ms = now;
            if is_final(c.state) {
                c.finished_ms = now;
            }
            true
        })
        .await?;
    if is_final(new_state as i32) {
        let waited_ms = now.saturating_sub(c.created_ms).max(0);
        state
            .metrics
            .command_delivery
            .observe(waited_ms as f64 / 1000.0);
    }
    Ok(Recorded::Stored)
}

/// Marks commands whose queue time ran out as expired. Returns their ids.
pub async fn expire_due(state: &State, now_ms: i64) -> Result<Vec<String>, StoreError> {
    let mut expired = Vec::new();
    for c in state.store.open_commands()? {
        let waiting = matches!(
            pb::CommandState::try_from(c.state),
            Ok(pb::CommandState::Pending | pb::CommandState::AwaitingApproval)
        );
        if waiting && c.expires_ms <= now_ms {
            // Checked again in the transaction: another server may have delivered, approved
            // or expired it since the index was read.
            let written = state
                .store
                .update_command(&c.id, move |c| {
                    let still_waiting = matches!(
                        pb::CommandState::try_from(c.state),
                        Ok(pb::CommandState::Pending | pb::CommandState::AwaitingApproval)
                    );
                    if !still_waiting || c.expires_ms > now_ms {
                        return false;
                    }
                    c.state = pb::CommandState::Expired as i32;
                    c.detail = "expired before it was delivered or approved".into();
                    c.updated_ms = now_ms;
                    c.finished_ms = now_ms;
                    true
                })
                .await?;
            if written.is_some() {
                expired.push(c.id);
            }
        }
    }
    Ok(expired)
}

/// Hands the signing-key chain to every agent connected to this server, now; a full channel
/// (a very slow agent) gets it at its next connect. Returns how many were handed it.
pub fn hand_key_chain(state: &State) -> usize {
    hand_key_chain_to(state, |_| true)
}

/// [`hand_key_chain`] to the connected devices `to` picks by id only.
pub fn hand_key_chain_to(state: &State, to: impl Fn(&str) -> bool) -> usize {
    let chain = state.pki.command_keys.chain();
    let senders: Vec<_> = state
        .connected
        .lock()
        .map(|m| {
            m.iter()
                .filter(|(id, _)| to(id))
                .map(|(_, c)| c.tx.clone())
                .collect()
        })
        .unwrap_or_default();
    let mut handed = 0usize;
    for tx in senders {
        let msg = Box::new(pb::ServerMessage {
            msg: Some(pb::server_message::Msg::KeyRollover(chain.clone())),
        });
        if tx.try_send(msg).is_ok() {
            handed += 1;
        }
    }
    handed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_by_time() {
        let a = new_id(1_000);
        let b = new_id(2_000);
        assert!(a < b);
    }

    #[test]
    fn wipe_starts_awaiting_approval_lock_pending() {
        let w = new_command("d", pb::CommandKind::Wipe, "a", "r", 0);
        assert_eq!(state_name(w.state), "awaiting-approval");
        assert_eq!(w.expires_ms, WIPE_APPROVAL_TTL_MS);
        let l = new_command("d", pb::CommandKind::Lock, "a", "", 0);
        assert_eq!(state_name(l.state), "pending");
        assert!(!is_final(l.state));
    }
}
