//! The gRPC services: what agents call (`agent`) and what IT calls (`admin`), over one shared
//! [`State`]. Handlers check who is calling, turn the request into store operations, and map
//! errors to gRPC statuses with messages a person can act on.

pub mod admin;
mod admin_identity;
mod admin_signing;
pub mod agent;
mod agent_identity;
pub mod exemption_guard;
pub mod tokens;

use crate::pki::Pki;
use crate::store::Store;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use tokio::sync::mpsc;
use vakt_proto::pb;

/// Everything the services share.
#[derive(Clone, Debug)]
pub struct State {
    pub store: Store,
    pub pki: Arc<Pki>,
    /// Agents with an open Connect stream: where to push messages to them.
    pub connected: Arc<Mutex<HashMap<String, Connection>>>,
    pub heartbeat_interval_s: u32,
    /// The policy in force; replaced whole by `vakt policy apply`.
    pub policy: Arc<std::sync::RwLock<crate::findings::PolicyInForce>>,
    /// One evaluation at a time, so two triggers never reconcile the same findings at once.
    pub eval_lock: Arc<tokio::sync::Mutex<()>>,
    pub notify: Arc<crate::notify::NotifyConfig>,
    /// Wakes the mail sender when something is queued.
    pub outbox_wake: Arc<tokio::sync::Notify>,
    /// Enrollment rate limits (per source address and global).
    pub enroll_limiter: Arc<crate::limit::EnrollLimiter>,
    /// Reports being stored at once (see [`REPORT_SLOTS`]).
    pub report_slots: Arc<tokio::sync::Semaphore>,
    /// Told of every revoked admin token (the console ends its sessions).
    pub revocations: Arc<tokens::RevocationHooks>,
    /// Exemption requests per device (see [`exemption_guard`]).
    pub exemption_limiter: Arc<exemption_guard::ExemptionLimiter>,
    /// Set when the server stops: every Connect stream ends (see [`State::stop_streams`]).
    pub stopping: Arc<tokio::sync::watch::Sender<bool>>,
    /// Counted always (atomics), served only with `--metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// How many agent reports are stored at once; the rest wait their turn, parked.
///
/// Why: every durable write waits for a group flush, and a flush wakes every writer it served
/// at once. With ten thousand laptops reporting together, one flush would wake thousands of
/// report handlers, and a loss report or a lock result woken by the same flush would queue
/// behind all of them on the two worker threads (measured: 0.6–0.9 s per flush wait, 1.5–3 s
/// from loss report to lock). Reports beyond this many wait on a fair semaphore instead, where
/// they cost no CPU and nothing queues behind them; IT's calls and command results do not take
/// a slot. 256 keeps group-commit batches large (throughput unchanged, BENCHMARKS.md) while a
/// flush's wake-up wave stays a few milliseconds of work.
pub const REPORT_SLOTS: usize = 256;

/// One open Connect stream. `epoch` tells a stream apart from the one that replaced it, so a
/// closing old stream does not unregister its successor. The channel carries bare messages:
/// the server never ends a stream with an error, it just drops the sender. They are boxed
/// because every held stream keeps a block of 32 slots allocated: 8 bytes each instead of the
/// message's size (measured: 1.3 KiB less per held agent, BENCHMARKS.md).
#[derive(Debug, Clone)]
pub struct Connection {
    pub epoch: u64,
    pub tx: mpsc::Sender<Box<pb::ServerMessage>>,
}

impl State {
    pub fn new(
        store: Store,
        pki: Pki,
        notify: crate::notify::NotifyConfig,
    ) -> Result<Self, crate::store::StoreError> {
        let policy = crate::findings::load_policy(&store)?;
        let metrics = Arc::new(crate::metrics::Metrics::new(store.flush_histogram()));
        Ok(Self {
            metrics,
            store,
            pki: Arc::new(pki),
            connected: Arc::default(),
            heartbeat_interval_s: 30,
            policy: Arc::new(std::sync::RwLock::new(policy)),
            eval_lock: Arc::default(),
            notify: Arc::new(notify),
            outbox_wake: Arc::default(),
            enroll_limiter: Arc::new(crate::limit::EnrollLimiter::new(
                crate::limit::EnrollLimits::default(),
                std::time::Instant::now(),
            )),
            report_slots: Arc::new(tokio::sync::Semaphore::new(REPORT_SLOTS)),
            revocations: Arc::default(),
            exemption_limiter: Arc::default(),
            stopping: Arc::new(tokio::sync::watch::Sender::new(false)),
        })
    }

    /// The same state with other enrollment limits (the `serve` flags, benchmarks).
    pub fn with_enroll_limits(mut self, limits: crate::limit::EnrollLimits) -> Self {
        self.enroll_limiter = Arc::new(crate::limit::EnrollLimiter::new(
            limits,
            std::time::Instant::now(),
        ));
        self
    }

    /// Ends every held Connect stream, for a shutdown: each session stops reading and the
    /// senders kept here are dropped, so the response streams finish and the HTTP/2
    /// connections can close after their GOAWAY. Agents reconnect to the next server.
    pub fn stop_streams(&self) {
        self.stopping.send_replace(true);
        if let Ok(mut map) = self.connected.lock() {
            map.clear();
        }
    }

    pub fn is_connected(&self, device_id: &str) -> bool {
        self.connected
            .lock()
            .map(|m| m.contains_key(device_id))
            .unwrap_or(false)
    }
}

/// The name INTERFACE.md gives a device state.
pub fn device_state_name(raw: i32) -> &'static str {
    match pb::DeviceState::try_from(raw) {
        Ok(pb::DeviceState::Active) => "active",
        Ok(pb::DeviceState::Lost) => "lost",
        Ok(pb::DeviceState::Locked) => "locked",
        Ok(pb::DeviceState::Wiped) => "wiped",
        Ok(pb::DeviceState::Retired) => "retired",
        _ => "unknown",
    }
}

/// `s` cut to at most `max` characters, with an ellipsis when cut: for quoting untrusted input
/// in a message.
pub(crate) fn clip(s: &str, max: usize) -> String {
    match s.char_indices().nth(max) {
        Some((end, _)) => format!("{}…", &s[..end]),
        None => s.to_string(),
    }
}

/// A store failure seen by a client: internal, with the cause logged here and not sent out.
pub(crate) fn internal(e: impl std::fmt::Display) -> tonic::Status {
    tracing::error!("internal error: {e}");
    tonic::Status::internal("the server could not complete the request; see its log")
}

#[cfg(test)]
mod tests {
    #[test]
    fn clip_bounds_quoted_input_on_a_char_boundary() {
        assert_eq!(super::clip("abc", 3), "abc");
        assert_eq!(super::clip("abcd", 3), "abc…");
        assert_eq!(super::clip("åäöå", 2), "åä…");
        assert_eq!(super::clip(&"x".repeat(1 << 20), 300).chars().count(), 301);
    }
}
