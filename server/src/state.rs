//! The server's shared state: the store, the CA, the policy in force, the agents holding a
//! stream, and the limits and hooks the services share. It lives outside `api` so that the
//! layers the services call (`findings`, `notify`, `commands`, `metrics`) take it without
//! importing the gRPC services: `api` depends on them, never the other way round
//! (ARCHITECTURE.md, invariants).

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
    /// Reports being stored at once (see [`REPORT_SLOTS`] and `Store::report_slots`).
    pub report_slots: Arc<tokio::sync::Semaphore>,
    /// Told of every revoked admin token (the console ends its sessions).
    pub revocations: Arc<RevocationHooks>,
    /// Exemption requests per device (see `api::exemption_guard`).
    pub exemption_limiter: Arc<crate::limit::ExemptionLimiter>,
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
        let report_slots = store.report_slots();
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
            report_slots: Arc::new(tokio::sync::Semaphore::new(report_slots)),
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
    /// connections can close after their GOAWAY. Agents reconnect to another server.
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

/// Called with a token's sha-256 when it is revoked. The console registers one to end the
/// sessions logged in with it. A hook that returns `false` is gone (its console was dropped).
type Hook = Box<dyn Fn(&[u8; 32]) -> bool + Send + Sync>;

#[derive(Default)]
pub struct RevocationHooks {
    hooks: Mutex<Vec<Hook>>,
}

impl std::fmt::Debug for RevocationHooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RevocationHooks")
    }
}

impl RevocationHooks {
    pub fn register(&self, hook: impl Fn(&[u8; 32]) -> bool + Send + Sync + 'static) {
        self.lock().push(Box::new(hook));
    }

    pub(crate) fn revoked(&self, hash: &[u8; 32]) {
        self.lock().retain(|h| h(hash));
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Hook>> {
        // Each operation is one push or retain: a poisoned list is still a valid list.
        self.hooks.lock().unwrap_or_else(|p| p.into_inner())
    }
}
