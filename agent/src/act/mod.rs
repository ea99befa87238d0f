//! Acting on the server's commands: verify, run at most once, and report.
//!
//! Every command id the agent has seen is kept in a journal in the state directory
//! (`commands.json`) with its outcome and whether the server acknowledged that outcome. The id
//! is written *before* the command runs, so a crash mid-run can never run it twice: on the next
//! start such a command is reported as failed. Results stay in the journal until the server
//! acknowledges them and are re-sent on every new stream until then.

pub mod lock;
pub mod verify;
pub mod wipe;

use crate::collect::Root;
use crate::config::{Config, LockMethod};
use crate::state::{Identity, StateDir, StateError, write_atomic};
use lock::{LockError, LockState};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::Mutex;
use vakt_proto::pb;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JournalEntry {
    pub kind: String,
    /// started, succeeded, failed, refused
    pub outcome: String,
    pub detail: String,
    pub at_ms: i64,
    /// The server acknowledged this outcome.
    pub acked: bool,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
struct Journal {
    entries: BTreeMap<String, JournalEntry>,
}

/// What to do with a command that just arrived.
#[derive(Debug)]
pub enum Begin {
    /// Nothing to run: send this result (a refusal, or the recorded result of a repeat).
    Reply(pb::CommandResult),
    /// Run it now.
    Run(pb::Command),
    /// Send `started` first and run it once the server acknowledged that (wipe).
    RunAfterStartAck(pb::Command, pb::CommandResult),
}

/// Something to do after the result of a command was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum After {
    Nothing,
    PowerOff,
}

fn outcome_name(o: pb::CommandOutcome) -> &'static str {
    match o {
        pb::CommandOutcome::Started => "started",
        pb::CommandOutcome::Succeeded => "succeeded",
        pb::CommandOutcome::Failed => "failed",
        pb::CommandOutcome::Refused => "refused",
        pb::CommandOutcome::Unspecified => "unspecified",
    }
}

fn outcome_of(name: &str) -> pb::CommandOutcome {
    match name {
        "started" => pb::CommandOutcome::Started,
        "succeeded" => pb::CommandOutcome::Succeeded,
        "failed" => pb::CommandOutcome::Failed,
        "refused" => pb::CommandOutcome::Refused,
        _ => pb::CommandOutcome::Unspecified,
    }
}

fn kind_name(kind: i32) -> &'static str {
    match pb::CommandKind::try_from(kind) {
        Ok(pb::CommandKind::Lock) => "lock",
        Ok(pb::CommandKind::Unlock) => "unlock",
        Ok(pb::CommandKind::Wipe) => "wipe",
        _ => "unknown",
    }
}

/// Runs commands for one enrolled agent.
#[derive(Debug)]
pub struct Executor {
    root: Root,
    cfg: Config,
    state: StateDir,
    device_id: String,
    /// Hex of the command-signing key trusted now: the one pinned at enrollment, or the newest
    /// a verified rotation chain led to (saved in identity.json before it is used).
    pinned_key: Mutex<String>,
    /// The server's clock minus ours, learned from the authenticated stream (Welcome and every
    /// heartbeat answer): commands' expiries are judged by the server's clock.
    clock_offset_ms: std::sync::atomic::AtomicI64,
    bus: crate::bus::BusAddress,
    journal: Mutex<()>,
}

impl Executor {
    pub fn new(
        cfg: &Config,
        state: StateDir,
        identity: &Identity,
        bus: crate::bus::BusAddress,
    ) -> Self {
        Self {
            root: Root::new(&cfg.root),
            cfg: cfg.clone(),
            state,
            device_id: identity.device_id.clone(),
            pinned_key: Mutex::new(identity.command_public_key.clone()),
            clock_offset_ms: std::sync::atomic::AtomicI64::new(0),
            bus,
            journal: Mutex::new(()),
        }
    }

    /// The server said its clock reads `server_ms` (a message of the authenticated stream,
    /// which arrives within the network's delay of being stamped).
    pub fn set_server_time(&self, server_ms: i64) {
        let offset = server_ms.saturating_sub(crate::link::now_ms());
        let before = self
            .clock_offset_ms
            .swap(offset, std::sync::atomic::Ordering::Relaxed);
        // abs_diff: two extreme offsets (a server clock gone wrong) must not overflow.
        if offset.abs_diff(before) > 60_000 {
            tracing::info!(
                offset_s = offset / 1000,
                "this laptop's clock differs from the server's; commands are judged by the server's clock"
            );
        }
    }

    /// Now by the server's clock, as far as the stream told us.
    fn server_now_ms(&self) -> i64 {
        crate::link::now_ms().saturating_add(
            self.clock_offset_ms
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    fn pinned_key(&self) -> String {
        self.pinned_key
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Follows a key rotation chain from the trusted key. A new key is saved in the state
    /// directory before it is trusted; a refused chain changes nothing. The answer tells the
    /// server which key this agent trusts now, or why the chain was refused.
    pub fn follow_key_chain(&self, chain: &pb::KeyRolloverChain) -> pb::KeyRolloverResult {
        let mut pinned = self.pinned_key.lock().unwrap_or_else(|p| p.into_inner());
        let refuse = |error: String, key: &str| {
            tracing::error!("key rotation refused: {error}");
            pb::KeyRolloverResult {
                public_key: verify::unhex(key).unwrap_or_default(),
                error,
            }
        };
        let Some(current) = verify::unhex(&pinned) else {
            return refuse(format!("the pinned command key is not valid: {pinned}"), "");
        };
        match verify::follow_chain(chain, &current) {
            Ok(new) if new == current => pb::KeyRolloverResult {
                public_key: new,
                error: String::new(),
            },
            Ok(new) => {
                let hex = crate::link::hex(&new);
                if let Err(e) = self.state.save_command_key(&hex) {
                    return refuse(format!("could not save the new command key: {e}"), &pinned);
                }
                tracing::info!(key = %hex, "command-signing key rotated by the server");
                *pinned = hex;
                pb::KeyRolloverResult {
                    public_key: new,
                    error: String::new(),
                }
            }
            Err(e) => refuse(e.to_string(), &pinned),
        }
    }

    fn load(&self) -> Result<Journal, StateError> {
        let p = self.state.path("commands.json");
        match std::fs::read_to_string(&p) {
            Ok(t) => serde_json::from_str(&t).map_err(|e| StateError::Corrupt {
                path: p,
                message: e.to_string(),
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Journal::default()),
            Err(source) => Err(StateError::Io { path: p, source }),
        }
    }

    fn save(&self, j: &Journal) -> Result<(), StateError> {
        let p = self.state.path("commands.json");
        let bytes = serde_json::to_vec_pretty(j).map_err(|e| StateError::Corrupt {
            path: p.clone(),
            message: e.to_string(),
        })?;
        write_atomic(&p, &bytes)
    }

    /// Applies `f` to the journal under its lock and saves it.
    fn with_journal<T>(&self, f: impl FnOnce(&mut Journal) -> T) -> Result<T, StateError> {
        let _g = self.journal.lock().unwrap_or_else(|p| p.into_inner());
        let mut j = self.load()?;
        let out = f(&mut j);
        self.save(&j)?;
        Ok(out)
    }

    fn record(
        &self,
        id: &str,
        kind: &str,
        outcome: pb::CommandOutcome,
        detail: &str,
    ) -> Result<pb::CommandResult, StateError> {
        let now = crate::link::now_ms();
        self.with_journal(|j| {
            j.entries.insert(
                id.to_string(),
                JournalEntry {
                    kind: kind.to_string(),
                    outcome: outcome_name(outcome).to_string(),
                    detail: detail.to_string(),
                    at_ms: now,
                    acked: false,
                },
            );
        })?;
        Ok(result(id, outcome, detail, now))
    }

    /// Marks commands that were running when the agent stopped as failed (they are never run
    /// again), so the server learns what happened.
    pub fn recover_interrupted(&self) -> Result<usize, StateError> {
        let now = crate::link::now_ms();
        self.with_journal(|j| {
            let mut n = 0;
            for e in j.entries.values_mut() {
                if e.outcome == "started" {
                    e.outcome = "failed".into();
                    e.detail =
                        "the agent stopped while running this command; it was not run again".into();
                    e.at_ms = now;
                    e.acked = false;
                    n += 1;
                }
            }
            n
        })
    }

    /// Results the server has not acknowledged yet, oldest first.
    pub fn unacked(&self) -> Result<Vec<pb::CommandResult>, StateError> {
        let j = self.load()?;
        let mut v: Vec<_> = j
            .entries
            .iter()
            .filter(|(_, e)| !e.acked)
            .map(|(id, e)| result(id, outcome_of(&e.outcome), &e.detail, e.at_ms))
            .collect();
        v.sort_by_key(|r| r.at_ms);
        Ok(v)
    }

    /// The server acknowledged `outcome` for `id`.
    pub fn acked(&self, id: &str, outcome: i32) -> Result<(), StateError> {
        let name = outcome_name(
            pb::CommandOutcome::try_from(outcome).unwrap_or(pb::CommandOutcome::Unspecified),
        );
        self.with_journal(|j| {
            if let Some(e) = j.entries.get_mut(id)
                && e.outcome == name
            {
                e.acked = true;
            }
        })
    }

    /// Decides what to do with a command that arrived, recording it before anything runs.
    pub fn begin(&self, signed: &pb::SignedCommand) -> Result<Begin, StateError> {
        let now = crate::link::now_ms();
        let server_now = self.server_now_ms();
        let cmd = match verify::verify(signed, &self.pinned_key(), &self.device_id, server_now) {
            Ok(c) => c,
            Err(refusal) => {
                let id = verify::unverified_id(signed).unwrap_or_default();
                tracing::warn!(command = %id, "command refused: {refusal}");
                if refusal.is_retryable() {
                    // Not journalled: the same id signed again (fresh, or with the key this
                    // agent moved to) must still run.
                    let mut r = result(&id, pb::CommandOutcome::Refused, &refusal.to_string(), now);
                    r.retry = true;
                    return Ok(Begin::Reply(r));
                }
                if id.is_empty() {
                    return Ok(Begin::Reply(result(
                        "",
                        pb::CommandOutcome::Refused,
                        &refusal.to_string(),
                        now,
                    )));
                }
                // A forged command must not be able to overwrite the record of a real one.
                if let Some(prev) = self.load()?.entries.get(&id) {
                    return Ok(Begin::Reply(result(
                        &id,
                        outcome_of(&prev.outcome),
                        &prev.detail,
                        prev.at_ms,
                    )));
                }
                return Ok(Begin::Reply(self.record(
                    &id,
                    "unknown",
                    pb::CommandOutcome::Refused,
                    &refusal.to_string(),
                )?));
            }
        };
        if let Some(prev) = self.load()?.entries.get(&cmd.id) {
            // Delivered again (at least once): never run twice, repeat what happened.
            return Ok(Begin::Reply(result(
                &cmd.id,
                outcome_of(&prev.outcome),
                &prev.detail,
                prev.at_ms,
            )));
        }
        let kind = kind_name(cmd.kind);
        if cmd.kind == pb::CommandKind::Wipe as i32 {
            let started =
                self.record(&cmd.id, kind, pb::CommandOutcome::Started, "wipe started")?;
            Ok(Begin::RunAfterStartAck(cmd, started))
        } else {
            self.record(&cmd.id, kind, pb::CommandOutcome::Started, "")?;
            Ok(Begin::Run(cmd))
        }
    }

    /// Runs a command recorded by [`begin`](Self::begin) and records its outcome.
    pub async fn run(&self, cmd: &pb::Command) -> Result<(pb::CommandResult, After), StateError> {
        let kind = kind_name(cmd.kind);
        let (outcome, detail, after) = match pb::CommandKind::try_from(cmd.kind) {
            Ok(pb::CommandKind::Lock) => match self.lock(&cmd.id).await {
                Ok(d) => (pb::CommandOutcome::Succeeded, d, After::Nothing),
                Err(e) => (pb::CommandOutcome::Failed, e, After::Nothing),
            },
            Ok(pb::CommandKind::Unlock) => match self.unlock().await {
                Ok(d) => (pb::CommandOutcome::Succeeded, d, After::Nothing),
                Err(e) => (pb::CommandOutcome::Failed, e.to_string(), After::Nothing),
            },
            Ok(pb::CommandKind::Wipe) => match wipe::wipe(&self.root, &self.cfg.wipe).await {
                Ok(r) => (
                    pb::CommandOutcome::Succeeded,
                    r.summary(),
                    if self.cfg.wipe.poweroff {
                        After::PowerOff
                    } else {
                        After::Nothing
                    },
                ),
                Err(e) => (pb::CommandOutcome::Failed, e.to_string(), After::Nothing),
            },
            _ => (
                pb::CommandOutcome::Refused,
                format!("unknown command kind {}", cmd.kind),
                After::Nothing,
            ),
        };
        tracing::info!(command = %cmd.id, kind, outcome = outcome_name(outcome), "{detail}");
        Ok((self.record(&cmd.id, kind, outcome, &detail)?, after))
    }

    fn lock_state(&self) -> Result<LockState, StateError> {
        lock_status(&self.state)
    }

    fn save_lock_state(&self, s: &LockState) -> Result<(), LockError> {
        let p = self.state.path("lock.json");
        let bytes = serde_json::to_vec_pretty(s).map_err(|e| LockError::Io {
            path: p.display().to_string(),
            source: std::io::Error::other(e),
        })?;
        write_atomic(&p, &bytes).map_err(|e| LockError::Io {
            path: p.display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })
    }

    /// Whether the agent considers the device locked (persisted across restarts).
    pub fn is_locked(&self) -> bool {
        self.lock_state().is_ok_and(|s| s.locked)
    }

    async fn lock(&self, command_id: &str) -> Result<String, String> {
        let mut st = self.lock_state().map_err(|e| e.to_string())?;
        st.since_ms = crate::link::now_ms();
        st.command_id = command_id.to_string();
        match self.cfg.lock.method {
            LockMethod::Command => {
                let out = lock::run_site_command(&self.cfg.lock.command)
                    .await
                    .map_err(|e| e.to_string())?;
                st.method = "command".into();
                st.locked = true;
                self.save_lock_state(&st).map_err(|e| e.to_string())?;
                Ok(format!(
                    "site lock command ran{}",
                    if out.is_empty() {
                        String::new()
                    } else {
                        format!(": {out}")
                    }
                ))
            }
            LockMethod::Logind => {
                st.method = "logind".into();
                let persist = |s: &LockState| self.save_lock_state(s);
                {
                    let held = lock::PasswdLock::acquire(&self.root, lock::PASSWD_LOCK_WAIT)
                        .await
                        .map_err(|e| e.to_string())?;
                    lock::block_logins(&self.root, &held, &mut st, &persist)
                        .map_err(|e| e.to_string())?;
                }
                let blocked = format!("logins blocked for {} accounts", st.accounts.len());
                match lock::lock_sessions(&self.bus).await {
                    Ok(()) => Ok(format!("sessions locked; {blocked}")),
                    Err(e) => Err(format!(
                        "{blocked}, but the running sessions could not be locked: {e}"
                    )),
                }
            }
        }
    }

    async fn unlock(&self) -> Result<String, LockError> {
        let st = self.lock_state().map_err(|e| LockError::Io {
            path: "lock.json".into(),
            source: std::io::Error::other(e.to_string()),
        })?;
        if !st.locked {
            return Ok("was not locked".into());
        }
        let detail = if st.method == "command" {
            let out = lock::run_site_command(&self.cfg.lock.unlock_command).await?;
            format!(
                "site unlock command ran{}",
                if out.is_empty() {
                    String::new()
                } else {
                    format!(": {out}")
                }
            )
        } else {
            let held = lock::PasswdLock::acquire(&self.root, lock::PASSWD_LOCK_WAIT).await?;
            lock::unblock_logins(&self.root, &held, &st)?;
            format!("logins restored for {} accounts", st.accounts.len())
        };
        self.save_lock_state(&LockState::default())?;
        Ok(detail)
    }

    /// After a restart while locked: put the login block back if someone removed it and lock
    /// the sessions again (a reboot ends the old lock screen).
    pub async fn reassert_lock(&self) {
        let Ok(mut st) = self.lock_state() else {
            return;
        };
        if !st.locked || st.method != "logind" {
            return;
        }
        let persist = |s: &LockState| self.save_lock_state(s);
        let reasserted = match lock::PasswdLock::acquire(&self.root, lock::PASSWD_LOCK_WAIT).await {
            Ok(held) => lock::block_logins(&self.root, &held, &mut st, &persist),
            Err(e) => Err(e),
        };
        if let Err(e) = reasserted {
            tracing::error!("could not re-assert the login block: {e}");
        }
        if let Err(e) = lock::lock_sessions(&self.bus).await {
            tracing::warn!("could not re-lock sessions: {e}");
        }
    }
}

/// The lock as recorded in the state directory (`vakt-agent status` shows it).
pub fn lock_status(state: &StateDir) -> Result<LockState, StateError> {
    let p = state.path("lock.json");
    match std::fs::read_to_string(&p) {
        Ok(t) => serde_json::from_str(&t).map_err(|e| StateError::Corrupt {
            path: p,
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(LockState::default()),
        Err(source) => Err(StateError::Io { path: p, source }),
    }
}

fn result(id: &str, outcome: pb::CommandOutcome, detail: &str, at_ms: i64) -> pb::CommandResult {
    pb::CommandResult {
        command_id: id.to_string(),
        outcome: outcome as i32,
        detail: detail.to_string(),
        at_ms,
        retry: false,
    }
}

/// Powers the machine off after a wipe (systemd's poweroff).
pub async fn power_off() {
    match tokio::process::Command::new("systemctl")
        .arg("poweroff")
        .status()
        .await
    {
        Ok(s) if s.success() => {}
        Ok(s) => tracing::error!("systemctl poweroff: {s}"),
        Err(e) => tracing::error!("systemctl poweroff: {e}"),
    }
}
