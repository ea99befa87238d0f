//! What a replica does with another replica's change (the store's change feed, empty on the
//! embedded store): the memory it keeps beside the shared store follows the database.
//!
//! - a command queued or changed elsewhere goes into the open-command index; if it is pending
//!   and this replica holds its laptop's stream, it is delivered from here. Only the holder
//!   delivers (`commands::deliver` pushes nothing for a stream it does not hold), and the
//!   delivery is recorded as any other, so the laptop gets a lock queued on any replica within
//!   the time of one notification;
//! - a policy applied elsewhere becomes the policy in force here;
//! - an admin token revoked elsewhere ends its console sessions here (`RevocationHooks`);
//! - a device retired elsewhere loses the stream it holds here.
//!
//! Resync rule: notifications sent while the feed was away are lost, so whenever it
//! (re)connects, everything above is rebuilt from the store, not from what was seen: the
//! index from the commands tree, pending commands delivered to every held stream, the policy
//! reloaded, revoked tokens' sessions ended, retired devices' streams dropped.

use crate::state::State;
use crate::store::{Change, StoreError};
use vakt_proto::pb;

/// Follows the store's change feed until it ends (at once on the embedded store).
pub async fn follow(state: State) {
    let mut changes = state.store.changes();
    while let Some(change) = changes.next().await {
        if let Err(e) = apply(&state, &change).await {
            tracing::error!(?change, "could not act on another replica's change: {e}");
        }
    }
}

/// Acts on one change (see the module doc).
pub async fn apply(state: &State, change: &Change) -> Result<(), StoreError> {
    match change {
        Change::Command(id) => {
            let Some(c) = state.store.refresh_command(id).await? else {
                return Ok(());
            };
            // Delivered already means delivered by its holder; pushing it again here would
            // only repeat it. A pending one goes out now if its laptop is held here.
            if c.state == pb::CommandState::Pending as i32 && state.is_connected(&c.device_id) {
                crate::commands::deliver(state, &c.device_id).await?;
            }
        }
        Change::Policy => reload_policy(state)?,
        Change::AdminToken(hash) => {
            if state.store.admin_token(hash)?.is_some_and(|t| t.revoked) {
                state.revocations.revoked(hash);
            }
        }
        Change::CertRevoked(sha) => {
            if let Some(crate::store::Revoked::Retired(id)) = state.store.revoked_cert(sha)? {
                drop_stream(state, &id);
            }
        }
        Change::Resync => resync(state).await?,
    }
    Ok(())
}

/// Rebuilds everything this replica derives from the store (see the module doc).
async fn resync(state: &State) -> Result<(), StoreError> {
    state.store.rebuild_open_commands().await?;
    reload_policy(state)?;
    for (hash, t) in state.store.admin_tokens()? {
        if t.revoked {
            state.revocations.revoked(&hash);
        }
    }
    let held: Vec<String> = state
        .connected
        .lock()
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    for id in held {
        let retired = state
            .store
            .device(&id)?
            .and_then(|r| r.device)
            .is_none_or(|d| d.state == pb::DeviceState::Retired as i32);
        if retired {
            drop_stream(state, &id);
        } else {
            crate::commands::deliver(state, &id).await?;
        }
    }
    Ok(())
}

fn reload_policy(state: &State) -> Result<(), StoreError> {
    let policy = crate::findings::load_policy(&state.store)?;
    let version = policy.stored.version;
    if let Ok(mut p) = state.policy.write() {
        if p.stored.version != version {
            tracing::info!(version, "policy applied on another replica is now in force");
        }
        *p = policy;
    }
    Ok(())
}

/// Ends the stream this replica holds for `device_id`, if any (as retiring it here does).
fn drop_stream(state: &State, device_id: &str) {
    if let Ok(mut map) = state.connected.lock()
        && map.remove(device_id).is_some()
    {
        tracing::info!(device = %device_id, "device retired on another replica; its stream ends");
    }
}
