//! One simulated agent: enrollment with a key of its own, its own mutual-TLS connection,
//! reports with the real agent's delta bookkeeping, and a held Connect stream that verifies
//! every command with the pinned key before it answers. What the fleet saw as a whole (streams
//! up, commands run, results acknowledged) is kept in [`Fleet`].
//!
//! With several servers (replicas on one database) an agent knows them all and fails over
//! as the real agent does ([`super::failover`]): a stream that ends or a report that fails
//! moves it to another server that answers, at once; the stream and the report follow.

use super::{LoadError, inventory};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use vakt_agent::backoff::Backoff;
use vakt_agent::link;
use vakt_agent::state::ReportState;
use vakt_proto::pb;
use vakt_proto::pb::agent_service_client::AgentServiceClient;

/// How long one call may take before the simulator counts it as failed.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// What the whole simulated fleet shares.
#[derive(Debug)]
pub struct Fleet {
    /// The first server (the admin calls' own, and every agent's when there is one).
    pub server: String,
    /// Every server (replicas on one database): agent `i` enrolls and connects to
    /// `servers[i % len]`, so the fleet is spread evenly.
    pub servers: Vec<String>,
    pub ca_pem: String,
    /// Distinct 127.0.0.x source addresses to spread connections over.
    pub source_addrs: usize,
    /// When the simulator started; stream times are kept as milliseconds since then.
    pub base: Instant,
    /// Streams currently up (Welcome received, not yet ended).
    pub streams_up: AtomicUsize,
    /// Lock results the server acknowledged: device id → when (for lock latency).
    waiting_locks: Mutex<HashMap<String, oneshot::Sender<Instant>>>,
    /// Command ids whose final result the server acknowledged.
    pub acked_results: Mutex<Vec<String>>,
    /// Command ids run (each at most once, as the agent's journal ensures).
    runs: Mutex<std::collections::HashSet<String>>,
    /// Commands the server delivered again after they had run (at-least-once delivery).
    pub redeliveries: AtomicU64,
    /// Commands refused (bad signature, another device, expired): never expected.
    pub refused: AtomicU64,
    /// Fail-over dials to a server that did not answer (the dead one among them).
    pub dials_failed: AtomicU64,
    /// Streams that ended before their Welcome straight after a move, so waited the backoff
    /// (the survivors turning agents away, not a figure of the move itself).
    pub streams_failed_after_move: AtomicU64,
}

impl Fleet {
    pub fn new(server: &str, ca_pem: &str, source_addrs: usize) -> Arc<Self> {
        Self::over(&[server.to_string()], ca_pem, source_addrs)
    }

    /// A fleet spread over `servers` (replicas sharing one database and CA); the first
    /// stands in when the list is empty.
    pub fn over(servers: &[String], ca_pem: &str, source_addrs: usize) -> Arc<Self> {
        let servers = if servers.is_empty() {
            vec![String::new()]
        } else {
            servers.to_vec()
        };
        Arc::new(Self {
            server: servers[0].clone(),
            servers,
            ca_pem: ca_pem.to_string(),
            source_addrs,
            base: Instant::now(),
            streams_up: AtomicUsize::new(0),
            waiting_locks: Mutex::default(),
            acked_results: Mutex::default(),
            runs: Mutex::default(),
            redeliveries: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            dials_failed: AtomicU64::new(0),
            streams_failed_after_move: AtomicU64::new(0),
        })
    }

    /// Milliseconds since [`Fleet::base`] (how stream and acknowledgement times are kept).
    pub fn ms_since_base(&self) -> u64 {
        ms_since(self.base)
    }

    /// Registers interest in the acknowledged lock result of `device_id`.
    pub fn expect_lock(&self, device_id: &str) -> oneshot::Receiver<Instant> {
        let (tx, rx) = oneshot::channel();
        lock(&self.waiting_locks).insert(device_id.to_string(), tx);
        rx
    }

    /// Which of [`Fleet::servers`] agent `index` starts with (until it fails over:
    /// [`SimAgent::replica`]).
    pub fn replica_of(&self, index: usize) -> usize {
        index % self.servers.len().max(1)
    }

    /// The server agent `index` enrolls with and first connects to.
    pub fn server_for(&self, index: usize) -> &str {
        &self.servers[self.replica_of(index)]
    }

    fn source(&self, index: usize) -> Option<IpAddr> {
        super::source_addr(self.server_for(index), index, self.source_addrs)
    }
}

/// Milliseconds since `base`, as the fleet's times are kept.
fn ms_since(base: Instant) -> u64 {
    u64::try_from(base.elapsed().as_millis()).unwrap_or(u64::MAX)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

async fn timed<T>(
    what: &'static str,
    f: impl std::future::Future<Output = Result<T, LoadError>>,
) -> Result<T, LoadError> {
    tokio::time::timeout(CALL_TIMEOUT, f)
        .await
        .map_err(|_| LoadError::Timeout(what))?
}

/// The report bookkeeping of one agent: the agent's own `ReportState` and its sections now.
#[derive(Debug, Default)]
struct Book {
    state: ReportState,
    sections: Vec<pb::Section>,
    full_serial: u64,
    /// The latest report exchanges, oldest first, for the message when something is lost.
    history: std::collections::VecDeque<Exchange>,
    /// Reports sent since the last answer that got none (the server may have stored them
    /// durably and died before answering): their sequence and software hash, if they
    /// carried the software section.
    unanswered: Vec<(u64, Option<String>)>,
}

/// How many report exchanges [`Book::history`] keeps.
const HISTORY: usize = 12;

impl Book {
    fn note(&mut self, exchange: Exchange) {
        if self.history.len() == HISTORY {
            self.history.pop_front();
        }
        self.history.push_back(exchange);
    }
}

/// One report exchange as [`Book::history`] keeps it: facts, formatted only when a loss is
/// printed, since the fleet benchmark runs ten thousand a second on the server's two cores.
#[derive(Debug)]
struct Exchange {
    sequence: u64,
    /// Which generated inventory the agent held (it changes with every full report).
    serial: u64,
    /// The first bytes of the software section's hash, if the report carried it.
    software: Option<[u8; 4]>,
    /// The acknowledged sequence and the kinds the server asked for again, or the error.
    outcome: Result<(u64, Vec<i32>), String>,
}

impl std::fmt::Display for Exchange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let software = self.software.map(|h| link::hex(&h));
        write!(
            f,
            "seq {} serial {} software {software:?}: ",
            self.sequence, self.serial
        )?;
        match &self.outcome {
            Ok((acked, resend)) => write!(f, "acknowledged {acked} resend {resend:?}"),
            Err(e) => f.write_str(e),
        }
    }
}

/// What one report exchange gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Acked {
    pub sequence: u64,
    /// The server acknowledged exactly this report with nothing to resend.
    pub clean: bool,
}

/// What the server acknowledged to one agent, and what it may have stored since without an
/// answer reaching the agent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Acknowledged {
    /// The highest sequence acknowledged.
    pub sequence: u64,
    /// The software section acknowledged with it (hash, hex).
    pub software: Option<String>,
    /// Reports sent after it that got no answer: sequence and software hash, if carried.
    pub unanswered: Vec<(u64, Option<String>)>,
}

impl Acknowledged {
    /// Whether a store holding report `held_seq` with software `held` kept everything
    /// acknowledged. A store ahead of the acknowledgement is right only if it holds one of
    /// the unanswered reports: the server stored it durably and died before its answer went
    /// out, which is not a loss (the agent sends it again or sends something newer).
    pub fn kept_by(&self, held_seq: u64, held: Option<&str>) -> bool {
        let Some(want) = self.software.as_deref() else {
            return held_seq >= self.sequence;
        };
        if held_seq == self.sequence {
            return held == Some(want);
        }
        held_seq > self.sequence
            && self.unanswered.iter().any(|(seq, sent)| {
                *seq == held_seq && held == Some(sent.as_deref().unwrap_or(want))
            })
    }
}

/// One simulated agent.
#[derive(Debug)]
pub struct SimAgent {
    pub index: usize,
    pub tag: String,
    pub device_id: String,
    cert_pem: String,
    key_pem: String,
    /// The command-signing key pinned at enrollment (hex).
    command_key: String,
    channel: Mutex<Option<Channel>>,
    /// Which of the fleet's servers `channel` goes to; a change ends a stream held on the
    /// server the agent left (as the real agent aborts it when a report moved it).
    route: tokio::sync::watch::Sender<usize>,
    /// Held while the agent dials another server, so its stream and its reports, failing
    /// together, move it once.
    moving: tokio::sync::Mutex<()>,
    /// The fleet's base, for the times below.
    base: Instant,
    book: tokio::sync::Mutex<Book>,
    /// Milliseconds since the fleet's base of the latest Welcome (0: never).
    pub welcomed_ms: AtomicU64,
    /// The server that sent the latest Welcome.
    pub welcomed_on: AtomicUsize,
    /// Milliseconds since the fleet's base of the latest clean acknowledgement (0: never).
    pub acked_ms: AtomicU64,
    /// The server that gave it.
    pub acked_on: AtomicUsize,
}

impl SimAgent {
    /// Enrolls agent `index` with `token` over a connection of its own. An enrollment refused
    /// for the rate limit is tried again after the time the server names (at most `patience`).
    pub async fn enroll(
        fleet: &Fleet,
        tag: &str,
        index: usize,
        token: &str,
        patience: Duration,
    ) -> Result<(Self, u32), LoadError> {
        let host = inventory::host(tag, index);
        let (key_pem, csr_der) = link::key_and_csr(&host.hostname)?;
        let channel = timed("enroll connect", async {
            link::endpoint(fleet.server_for(index), &fleet.ca_pem, None)?
                .local_address(fleet.source(index))
                .connect()
                .await
                .map_err(|e| LoadError::Other(format!("connect: {}", link::error_chain(&e))))
        })
        .await?;
        let mut client = AgentServiceClient::new(channel);
        let req = pb::EnrollRequest {
            token: token.to_string(),
            csr_der,
            hardware: Some(pb::HardwareIdentity {
                machine_id: host.machine_id.clone(),
                serial: host.serial.clone(),
                hostname: host.hostname.clone(),
                model: host.model.clone(),
            }),
            agent_version: "loadgen".into(),
        };
        let started = Instant::now();
        let mut limited = 0u32;
        let resp = loop {
            let r = tokio::time::timeout(CALL_TIMEOUT, client.enroll(req.clone()))
                .await
                .map_err(|_| LoadError::Timeout("enroll"))?;
            match r {
                Ok(r) => break r.into_inner(),
                Err(s)
                    if s.code() == tonic::Code::ResourceExhausted
                        && started.elapsed() < patience =>
                {
                    limited += 1;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                Err(s) => return Err(LoadError::rpc("enroll")(s)),
            }
        };
        let agent = Self::enrolled(
            fleet,
            tag,
            index,
            resp.device_id,
            (resp.certificate_pem, key_pem),
            link::hex(&resp.command_public_key),
        );
        Ok((agent, limited))
    }

    /// Agent `index` as enrollment left it: its device id, certificate and key, and the
    /// pinned command key (hex); not yet dialled, with its small first inventory.
    fn enrolled(
        fleet: &Fleet,
        tag: &str,
        index: usize,
        device_id: String,
        (cert_pem, key_pem): (String, String),
        command_key: String,
    ) -> Self {
        Self {
            index,
            tag: tag.to_string(),
            device_id,
            cert_pem,
            key_pem,
            command_key,
            channel: Mutex::new(None),
            route: tokio::sync::watch::Sender::new(fleet.replica_of(index)),
            moving: tokio::sync::Mutex::new(()),
            base: fleet.base,
            book: tokio::sync::Mutex::new(Book {
                sections: vakt_proto::convert::report_to_sections(&inventory::report(
                    tag,
                    index,
                    inventory::SMALL_PACKAGES,
                    0,
                )),
                ..Default::default()
            }),
            welcomed_ms: AtomicU64::new(0),
            welcomed_on: AtomicUsize::new(0),
            acked_ms: AtomicU64::new(0),
            acked_on: AtomicUsize::new(0),
        }
    }

    /// Opens this agent's own mutual-TLS connection to its server (tonic re-dials it by
    /// itself after a loss).
    pub async fn dial(&self, fleet: &Fleet) -> Result<(), LoadError> {
        let to = self.replica();
        let channel = self.dial_server(fleet, to).await?;
        self.set_link(channel, to);
        Ok(())
    }

    async fn dial_server(&self, fleet: &Fleet, to: usize) -> Result<Channel, LoadError> {
        let server = fleet.servers.get(to).map_or("", String::as_str);
        timed("dial", async {
            link::endpoint(server, &fleet.ca_pem, Some((&self.cert_pem, &self.key_pem)))?
                .local_address(super::source_addr(server, self.index, fleet.source_addrs))
                .connect()
                .await
                .map_err(|e| LoadError::Other(format!("dial: {}", link::error_chain(&e))))
        })
        .await
    }

    fn set_link(&self, channel: Channel, to: usize) {
        let mut c = lock(&self.channel);
        *c = Some(channel);
        self.route.send_replace(to);
    }

    /// This agent's connection (after [`dial`](Self::dial)).
    pub fn channel(&self) -> Result<Channel, LoadError> {
        Ok(self.link()?.0)
    }

    /// This agent's connection and the server it goes to, read together.
    fn link(&self) -> Result<(Channel, usize), LoadError> {
        let c = lock(&self.channel);
        let channel = c
            .clone()
            .ok_or_else(|| LoadError::Other(format!("agent {} has not dialled", self.index)))?;
        Ok((channel, *self.route.borrow()))
    }

    /// Which of the fleet's servers this agent is with now.
    pub fn replica(&self) -> usize {
        *self.route.borrow()
    }

    /// The server at `failed` did not answer this agent: with several servers, moves it to
    /// the next that answers (the failed one last), as the real agent does. True when the
    /// agent has a fresh connection (made now, or already by its other task): the caller
    /// retries at once.
    /// False with one server, or when none answered (the caller backs off; the old
    /// connection stays and re-dials its server by itself).
    pub async fn fail_over(&self, fleet: &Fleet, failed: usize) -> bool {
        let _moving = self.moving.lock().await;
        match super::failover::after_failure(self.replica(), failed, fleet.servers.len()) {
            super::failover::Next::Stay => false,
            super::failover::Next::AlreadyMoved => true,
            super::failover::Next::Try(order) => {
                for to in order {
                    match self.dial_server(fleet, to).await {
                        Ok(channel) => {
                            self.set_link(channel, to);
                            return true;
                        }
                        Err(e) => {
                            fleet.dials_failed.fetch_add(1, Ordering::Relaxed);
                            debug_note(self.index, &e);
                        }
                    }
                }
                false
            }
        }
    }

    /// After a report failed on server `on`: whether it is worth moving for, and if so
    /// [`fail_over`](Self::fail_over).
    pub async fn fail_over_after(&self, fleet: &Fleet, on: usize, e: &LoadError) -> bool {
        let code = match e {
            LoadError::Rpc { status, .. } => Some(status.code()),
            _ => None,
        };
        super::failover::worth_moving(code) && self.fail_over(fleet, on).await
    }

    /// Sends one report: with `full`, a new 2,000-package inventory (a real change); otherwise
    /// whatever changed since the last acknowledgement (nothing, once the first report is in:
    /// a check-in). The acknowledgement is recorded exactly as the agent records it.
    pub async fn report(&self, full: bool) -> Result<Acked, LoadError> {
        self.report_on(full).await.map_err(|(_, e)| e)
    }

    /// As [`report`](Self::report); a failure also names the server it was sent to (for
    /// [`fail_over_after`](Self::fail_over_after)).
    pub async fn report_on(&self, full: bool) -> Result<Acked, (usize, LoadError)> {
        let mut book = self.book.lock().await;
        // Read after the book is ours: a report waiting for it goes where the agent is now.
        let (channel, on) = self.link().map_err(|e| (self.replica(), e))?;
        if full {
            book.full_serial += 1;
            let r = inventory::report(
                &self.tag,
                self.index,
                inventory::FULL_PACKAGES,
                book.full_serial,
            );
            book.sections = vakt_proto::convert::report_to_sections(&r);
        }
        let (req, _) = link::build_request(&book.state, &book.sections);
        let software = req
            .sections
            .iter()
            .find(|s| s.kind == pb::SectionKind::Software as i32);
        let mut exchange = Exchange {
            sequence: req.sequence,
            serial: book.full_serial,
            software: software.and_then(|s| s.hash.get(..4)?.try_into().ok()),
            outcome: Ok((0, Vec::new())),
        };
        let mut client = AgentServiceClient::new(channel).max_decoding_message_size(16 << 20);
        let resp = tokio::time::timeout(CALL_TIMEOUT, client.report(req.clone()))
            .await
            .map_err(|_| LoadError::Timeout("report"))
            .and_then(|r| r.map_err(LoadError::rpc("report")));
        let resp = match resp {
            Ok(r) => r.into_inner(),
            Err(e) => {
                exchange.outcome = Err(e.to_string());
                book.note(exchange);
                let software = software.map(|s| link::hex(&s.hash));
                book.unanswered.push((req.sequence, software));
                return Err((on, e));
            }
        };
        book.unanswered.clear();
        let clean = link::apply_ack(&mut book.state, &req, &resp, link::now_ms());
        if clean {
            self.acked_on.store(on, Ordering::Relaxed);
            // After the server, so a reader that sees the time sees its server.
            self.acked_ms.store(ms_since(self.base), Ordering::Release);
        }
        exchange.outcome = Ok((resp.acknowledged_sequence, resp.resend));
        book.note(exchange);
        Ok(Acked {
            sequence: req.sequence,
            clean,
        })
    }

    /// What the server acknowledged to this agent, for the check that nothing acknowledged
    /// went missing.
    pub async fn acknowledged(&self) -> Acknowledged {
        let book = self.book.lock().await;
        Acknowledged {
            sequence: book.state.sequence,
            software: book.state.acked.get("software").cloned(),
            unanswered: book.unanswered.clone(),
        }
    }

    /// The latest report exchanges, oldest first (what was sent and what came back).
    pub async fn history(&self) -> Vec<String> {
        let book = self.book.lock().await;
        book.history.iter().map(ToString::to_string).collect()
    }

    /// Holds the Connect stream until `stop` fires, reconnecting after a loss with the real
    /// agent's backoff (1 s doubling to 120 s, with jitter). With several servers, a stream
    /// that ends moves the agent to another server that answers and the stream opens there
    /// at once, as the real agent's does; so does a report that moved the agent meanwhile.
    pub async fn hold(
        self: Arc<Self>,
        fleet: Arc<Fleet>,
        mut stop: tokio::sync::watch::Receiver<bool>,
    ) {
        let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(120));
        let mut route = self.route.subscribe();
        let mut just_moved = false;
        loop {
            let started = Instant::now();
            let mut up = false;
            route.borrow_and_update();
            let mut moved = false;
            let mut on = self.replica();
            tokio::select! {
                _ = stop.changed() => {}
                _ = route.changed() => moved = true,
                r = async {
                    let (channel, at) = self.link()?;
                    on = at;
                    self.stream_once(&fleet, channel, at, &mut up).await
                } => {
                    if let Err(e) = r {
                        debug_note(self.index, &e);
                    }
                }
            }
            if up {
                fleet.streams_up.fetch_sub(1, Ordering::Relaxed);
            }
            if *stop.borrow() {
                return;
            }
            if started.elapsed() > Duration::from_secs(60) {
                backoff.reset();
            }
            let d = backoff.next_delay();
            // As the real agent (`daemon::retry_after_move`): the attempt counts either way,
            // and the wait is skipped when a report moved the agent or when another server
            // (or the same one, dialled afresh) answered, except for a stream that ended
            // straight after such a move, so a server that takes connections but ends streams
            // is not dialled as fast as it answers.
            let failed_after_move = std::mem::take(&mut just_moved) && !up && !moved;
            if failed_after_move {
                fleet
                    .streams_failed_after_move
                    .fetch_add(1, Ordering::Relaxed);
            }
            if moved || (self.fail_over(&fleet, on).await && !failed_after_move) {
                just_moved = true;
                continue;
            }
            tokio::select! {
                _ = stop.changed() => return,
                _ = tokio::time::sleep(d) => {}
            }
        }
    }

    async fn stream_once(
        &self,
        fleet: &Fleet,
        channel: Channel,
        on: usize,
        up: &mut bool,
    ) -> Result<(), LoadError> {
        let (tx, rx) = mpsc::channel::<pb::AgentMessage>(8);
        let hello = pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
                agent_version: "loadgen".into(),
                last_report_sequence: 0,
            })),
        };
        let _ = tx.send(hello).await;
        let mut inbound = AgentServiceClient::new(channel)
            .connect(ReceiverStream::new(rx))
            .await
            .map_err(LoadError::rpc("connect"))?
            .into_inner();
        let mut interval = Duration::from_secs(30);
        let mut next_beat = tokio::time::Instant::now() + interval;
        loop {
            tokio::select! {
                msg = inbound.message() => {
                    let Some(msg) = msg.map_err(LoadError::rpc("stream"))? else {
                        return Ok(());
                    };
                    match msg.msg {
                        Some(pb::server_message::Msg::Welcome(w)) => {
                            if w.heartbeat_interval_s >= 5 {
                                interval = Duration::from_secs(u64::from(w.heartbeat_interval_s));
                                next_beat = tokio::time::Instant::now() + interval;
                            }
                            if !*up {
                                *up = true;
                                fleet.streams_up.fetch_add(1, Ordering::Relaxed);
                            }
                            self.welcomed_on.store(on, Ordering::Relaxed);
                            self.welcomed_ms.store(fleet.ms_since_base().max(1), Ordering::Release);
                        }
                        Some(pb::server_message::Msg::Command(signed)) => {
                            let r = self.answer(fleet, &signed);
                            if tx.send(result_msg(r)).await.is_err() {
                                return Ok(());
                            }
                        }
                        Some(pb::server_message::Msg::ResultAck(a)) => {
                            if a.outcome == pb::CommandOutcome::Succeeded as i32 {
                                let at = Instant::now();
                                lock(&fleet.acked_results).push(a.command_id);
                                if let Some(w) = lock(&fleet.waiting_locks).remove(&self.device_id) {
                                    let _ = w.send(at);
                                }
                            }
                        }
                        // The simulated fleet is never rotated: it keeps its enrollment key.
                        Some(
                            pb::server_message::Msg::HeartbeatAck(_)
                            | pb::server_message::Msg::KeyRollover(_),
                        )
                        | None => {}
                    }
                }
                _ = tokio::time::sleep_until(next_beat) => {
                    let beat = pb::AgentMessage {
                        msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat {
                            sent_at_ms: link::now_ms(),
                        })),
                    };
                    if tx.send(beat).await.is_err() {
                        return Ok(());
                    }
                    next_beat = tokio::time::Instant::now() + interval;
                }
            }
        }
    }

    /// Verifies a command with the pinned key, as the agent does, and "runs" it once: a
    /// repeat delivery gets the recorded result without running again.
    fn answer(&self, fleet: &Fleet, signed: &pb::SignedCommand) -> pb::CommandResult {
        let now = link::now_ms();
        match vakt_agent::act::verify::verify(signed, &self.command_key, &self.device_id, now) {
            Ok(cmd) => {
                if !lock(&fleet.runs).insert(cmd.id.clone()) {
                    fleet.redeliveries.fetch_add(1, Ordering::Relaxed);
                }
                pb::CommandResult {
                    command_id: cmd.id,
                    outcome: pb::CommandOutcome::Succeeded as i32,
                    detail: "simulated".into(),
                    at_ms: now,
                    retry: false,
                }
            }
            Err(refusal) => {
                fleet.refused.fetch_add(1, Ordering::Relaxed);
                pb::CommandResult {
                    command_id: vakt_agent::act::verify::unverified_id(signed).unwrap_or_default(),
                    outcome: pb::CommandOutcome::Refused as i32,
                    detail: refusal.to_string(),
                    at_ms: now,
                    retry: false,
                }
            }
        }
    }
}

fn result_msg(r: pb::CommandResult) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Result(r)),
    }
}

/// Stream losses are expected (server restarts); they are only shown when asked for.
fn debug_note(index: usize, e: &LoadError) {
    if std::env::var_os("VAKT_LOADGEN_DEBUG").is_some() {
        eprintln!("agent {index}: stream ended: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::{Acknowledged, Exchange, Fleet, SimAgent};
    use crate::load::baseline::Baseline;
    use std::sync::atomic::Ordering;

    /// An https URL on loopback where nothing listens.
    fn dead_url() -> String {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        drop(l);
        format!("https://127.0.0.1:{port}")
    }

    /// Agent 0 of a fleet over `servers`, its connection to the first (dead) one made as a
    /// held connection is: lazily, failing at the first call.
    fn agent_on_dead_first(
        servers: Vec<String>,
        b: &Baseline,
    ) -> (std::sync::Arc<Fleet>, SimAgent) {
        let fleet = Fleet::over(&servers, &b.ca_pem, 0);
        let a = SimAgent::enrolled(
            &fleet,
            "t",
            0,
            "dev-0".into(),
            (b.cert_pem.clone(), b.key_pem.clone()),
            String::new(),
        );
        let lazy =
            vakt_agent::link::endpoint(&servers[0], &b.ca_pem, Some((&b.cert_pem, &b.key_pem)))
                .unwrap()
                .connect_lazy();
        a.set_link(lazy, 0);
        (fleet, a)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failed_report_moves_the_agent_and_counts_only_when_acked_there() {
        let b = Baseline::start(1).unwrap();
        // The same live server twice after the dead one: a second report of the same
        // failure must not move the agent on again. Which of the two it lands on first is
        // random (`fail_over_order`), so the test holds to "moved once, then stays".
        let (fleet, a) = agent_on_dead_first(vec![dead_url(), b.url.clone(), b.url.clone()], &b);
        let (on, e) = a.report_on(false).await.unwrap_err();
        assert_eq!(on, 0);
        let ack = a.acknowledged().await;
        assert_eq!(ack.sequence, 0, "nothing acknowledged yet");
        assert_eq!(ack.unanswered.len(), 1, "the report may have been stored");
        assert_eq!(a.acked_ms.load(Ordering::Relaxed), 0);

        assert!(a.fail_over_after(&fleet, on, &e).await);
        let moved_to = a.replica();
        assert!(
            moved_to == 1 || moved_to == 2,
            "moved to a live server, not {moved_to}"
        );
        // The stream, failing on the same dead server, finds the agent moved: no new
        // connection (which would end the stream just opened on it).
        let route = a.route.subscribe();
        assert!(a.fail_over(&fleet, 0).await);
        assert_eq!(a.replica(), moved_to);
        assert!(!route.has_changed().unwrap());

        let acked = a.report_on(false).await.unwrap();
        assert!(acked.clean);
        assert_eq!(a.acked_on.load(Ordering::Relaxed), moved_to);
        assert!(a.acked_ms.load(Ordering::Relaxed) > 0);
        let ack = a.acknowledged().await;
        assert_eq!(ack.sequence, acked.sequence);
        assert!(ack.unanswered.is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn with_one_server_or_none_answering_the_agent_stays() {
        let b = Baseline::start(1).unwrap();
        let (fleet, a) = agent_on_dead_first(vec![dead_url()], &b);
        assert!(!a.fail_over(&fleet, 0).await);
        assert_eq!(a.replica(), 0);
        let (fleet, a) = agent_on_dead_first(vec![dead_url(), dead_url()], &b);
        assert!(!a.fail_over(&fleet, 0).await);
        assert_eq!(a.replica(), 0, "the old connection stays and re-dials");
        // A refusal is not worth moving for, though another server answers: it would refuse
        // too.
        let (fleet, a) = agent_on_dead_first(vec![dead_url(), b.url.clone()], &b);
        let refused = crate::load::LoadError::Rpc {
            what: "report",
            status: tonic::Status::unauthenticated("revoked"),
        };
        assert!(!a.fail_over_after(&fleet, 0, &refused).await);
        assert_eq!(a.replica(), 0);
    }

    #[test]
    fn an_exchange_reads_as_what_was_sent_and_what_came_back() {
        let mut e = Exchange {
            sequence: 28,
            serial: 31,
            software: Some([0xb6, 0xf5, 0x0d, 0x22]),
            outcome: Ok((28, vec![])),
        };
        assert_eq!(
            e.to_string(),
            "seq 28 serial 31 software Some(\"b6f50d22\"): acknowledged 28 resend []"
        );
        e.software = None;
        e.outcome = Err("transport error".into());
        assert_eq!(
            e.to_string(),
            "seq 28 serial 31 software None: transport error"
        );
    }

    fn ack(unanswered: &[(u64, Option<&str>)]) -> Acknowledged {
        Acknowledged {
            sequence: 27,
            software: Some("a".into()),
            unanswered: unanswered
                .iter()
                .map(|(s, h)| (*s, h.map(str::to_string)))
                .collect(),
        }
    }

    #[test]
    fn the_store_must_hold_what_it_acknowledged() {
        assert!(ack(&[]).kept_by(27, Some("a")));
        assert!(!ack(&[]).kept_by(27, Some("b")), "other content");
        assert!(!ack(&[]).kept_by(26, Some("a")), "an older report");
        assert!(!ack(&[]).kept_by(27, None), "no software");
    }

    #[test]
    fn a_store_ahead_must_hold_an_unanswered_report_of_that_sequence() {
        // Report 28 was stored, and the server died before answering (seen in CI).
        assert!(ack(&[(28, Some("b"))]).kept_by(28, Some("b")));
        // A retry reused the sequence with newer content; either attempt may be the one kept.
        assert!(ack(&[(28, Some("b")), (28, Some("c"))]).kept_by(28, Some("b")));
        // An unanswered check-in carried no software: the acknowledged software stands.
        assert!(ack(&[(28, None)]).kept_by(28, Some("a")));
        assert!(!ack(&[(28, None)]).kept_by(28, Some("b")));
        // Ahead with content the agent never sent, or a sequence it never used.
        assert!(!ack(&[(28, Some("b"))]).kept_by(28, Some("x")));
        assert!(!ack(&[(28, Some("b"))]).kept_by(29, Some("b")));
        assert!(!ack(&[]).kept_by(28, Some("a")));
    }

    #[test]
    fn without_acknowledged_software_only_the_sequence_counts() {
        let a = Acknowledged {
            sequence: 5,
            software: None,
            unanswered: vec![],
        };
        assert!(a.kept_by(5, None) && a.kept_by(6, Some("z")));
        assert!(!a.kept_by(4, None));
    }
}
