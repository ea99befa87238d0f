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
                deliver_later(state, c.device_id);
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
        match state.store.device(&id) {
            Ok(rec) => {
                let retired = rec
                    .and_then(|r| r.device)
                    .is_none_or(|d| d.state == pb::DeviceState::Retired as i32);
                if retired {
                    drop_stream(state, &id);
                } else {
                    deliver_later(state, id);
                }
            }
            // One unreadable record does not stop the others' resync.
            Err(e) => tracing::error!(device = %id, "resync: {e}"),
        }
    }
    Ok(())
}

/// Delivers `device_id`'s commands in a task of its own: a laptop whose stream is full (a
/// slow agent) must not hold up the changes behind it.
fn deliver_later(state: &State, device_id: String) {
    let state = state.clone();
    tokio::spawn(async move {
        if let Err(e) = crate::commands::deliver(&state, &device_id).await {
            tracing::error!(device = %device_id, "could not deliver a command queued on another replica: {e}");
        }
    });
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

#[cfg(test)]
mod tests {
    //! Each change as another replica's, on the embedded store (`apply` does not know the
    //! engine); the PostgreSQL feed that produces them: tests/tests/store_engines.rs and
    //! tests/tests/replicas.rs.
    use super::*;
    use crate::state::Connection;
    use crate::timefmt::now_ms;
    use std::sync::{Arc, Mutex};
    use tokio::sync::mpsc;

    async fn state() -> (tempfile::TempDir, State) {
        let dir = tempfile::tempdir().expect("temporary directory");
        let state = crate::server::prepare(dir.path(), &[], Default::default())
            .await
            .expect("prepare");
        (dir, state)
    }

    /// Holds a stream for `device` here; its receiving end.
    fn hold(state: &State, device: &str) -> mpsc::Receiver<Box<pb::ServerMessage>> {
        let (tx, rx) = mpsc::channel(8);
        let mut map = state.connected.lock().expect("map");
        map.insert(device.into(), Connection { epoch: 1, tx });
        rx
    }

    /// What is pushed to `rx` within `wait` (deliveries run in tasks of their own).
    async fn pushed(
        rx: &mut mpsc::Receiver<Box<pb::ServerMessage>>,
        wait: std::time::Duration,
    ) -> Option<Box<pb::ServerMessage>> {
        tokio::time::timeout(wait, rx.recv()).await.ok().flatten()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pending_command_goes_out_only_from_the_holder_and_once() {
        let (_dir, state) = state().await;
        let mut rx = hold(&state, "d1");
        let c = crate::commands::new_command("d1", pb::CommandKind::Lock, "admin", "", now_ms());
        state.store.put_command(&c).await.expect("put");
        apply(&state, &Change::Command(c.id.clone()))
            .await
            .expect("apply");
        let msg = pushed(&mut rx, std::time::Duration::from_secs(10)).await;
        assert!(
            matches!(
                msg.and_then(|m| m.msg),
                Some(pb::server_message::Msg::Command(_))
            ),
            "the lock is pushed"
        );
        // The delivery is recorded right after the push.
        let mut stored = state.store.command(&c.id).expect("read").expect("stored");
        for _ in 0..100 {
            if stored.deliveries > 0 {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            stored = state.store.command(&c.id).expect("read").expect("stored");
        }
        assert_eq!(stored.state, pb::CommandState::Delivered as i32);
        assert_eq!(stored.deliveries, 1);
        // Its delivery, told again (the holder's own write seen elsewhere): nothing more.
        apply(&state, &Change::Command(c.id.clone()))
            .await
            .expect("apply");
        let again = pushed(&mut rx, std::time::Duration::from_millis(300)).await;
        assert!(again.is_none(), "pushed again: {again:?}");
        // Another laptop's, not held here: stays pending for its holder.
        let other = crate::commands::new_command("d2", pb::CommandKind::Lock, "admin", "", 1);
        state.store.put_command(&other).await.expect("put");
        apply(&state, &Change::Command(other.id.clone()))
            .await
            .expect("apply");
        tokio::time::sleep(std::time::Duration::from_millis(300)).await;
        let stored = state
            .store
            .command(&other.id)
            .expect("read")
            .expect("stored");
        assert_eq!(stored.state, pb::CommandState::Pending as i32);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_token_revoked_elsewhere_ends_its_sessions_here() {
        let (_dir, state) = state().await;
        let told: Arc<Mutex<Vec<[u8; 32]>>> = Arc::default();
        let seen = told.clone();
        state.revocations.register(move |h| {
            seen.lock().expect("list").push(*h);
            true
        });
        let (live, revoked) = ([1u8; 32], [2u8; 32]);
        for (hash, is_revoked) in [(live, false), (revoked, true)] {
            let rec = pb::AdminTokenRecord {
                revoked: is_revoked,
                ..Default::default()
            };
            state.store.put_admin_token(&hash, &rec).await.expect("put");
            apply(&state, &Change::AdminToken(hash))
                .await
                .expect("apply");
        }
        assert_eq!(*told.lock().expect("list"), vec![revoked]);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_device_retired_elsewhere_loses_its_stream_here() {
        let (_dir, state) = state().await;
        let token = [9u8; 32];
        let rec = pb::EnrollTokenRecord {
            uses_left: 1,
            ..Default::default()
        };
        state
            .store
            .put_enroll_token(&token, &rec)
            .await
            .expect("token");
        let device = pb::Device {
            id: "d1".into(),
            ..Default::default()
        };
        let cert = [7u8; 32];
        state
            .store
            .enroll(&token, now_ms(), device, Default::default(), cert)
            .await
            .expect("enroll");
        let _rx = hold(&state, "d1");
        apply(&state, &Change::CertRevoked(cert))
            .await
            .expect("apply");
        assert!(state.is_connected("d1"), "its certificate is still valid");
        state.store.retire("d1").await.expect("retire");
        apply(&state, &Change::CertRevoked(cert))
            .await
            .expect("apply");
        assert!(!state.is_connected("d1"));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_resync_reloads_the_policy_from_the_store() {
        let (_dir, state) = state().await;
        let stored = crate::findings::StoredPolicy {
            version: 3,
            toml: crate::policy::DEFAULT_PACK_TOML.to_string(),
            applied_ms: 1,
            applied_by: "elsewhere".into(),
        };
        state
            .store
            .json_apply(
                crate::store::JsonTree::Policies,
                &[(3u32.to_be_bytes().to_vec(), stored)],
                &[],
            )
            .await
            .expect("put");
        assert_eq!(state.policy.read().expect("policy").stored.version, 0);
        apply(&state, &Change::Resync).await.expect("apply");
        assert_eq!(state.policy.read().expect("policy").stored.version, 3);
    }
}
