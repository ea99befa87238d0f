//! The agent's run loop: enroll if needed, report on a timer, hold the Connect stream, and
//! reconnect with backoff. Shutdown comes in as a future, so tests and the server's demo run
//! the same loop in-process.
//!
//! Collection runs on a thread of its own and the loop selects on its completion, so a slow
//! or stuck collection never holds up the stream's reconnect, a shutdown or a modem change
//! (the collector itself bounds how long it takes; `collect::family`). A plain thread rather
//! than `spawn_blocking`, so an exiting agent never waits for a collection in progress.

use crate::act::{After, Begin, Executor};
use crate::backoff::Backoff;
use crate::collect::{Collector, Root, roaming};
use crate::config::Config;
use crate::link::{self, LinkError};
use crate::state::{Identity, StateDir, StateError};
use std::future::Future;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep_until};
use tokio_stream::wrappers::ReceiverStream;
use vakt_proto::model::Report;
use vakt_proto::pb;
use vakt_proto::pb::agent_service_client::AgentServiceClient;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error(transparent)]
    State(#[from] StateError),
    #[error("collector task failed: {0}")]
    Collector(String),
}

/// What the daemon tells its host (the demo prints it; `run` logs it).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Enrolled { device_id: String },
    Reported { sequence: u64, sent: Vec<String> },
    StreamUp,
}

/// A collection in progress: the collector comes back with the report.
type Collecting = tokio::sync::oneshot::Receiver<(Collector, Report)>;

/// Starts a collection on a thread of its own, taking the collector (and its caches) along.
fn start_collection(collector: &mut Option<Collector>) -> Result<Collecting, DaemonError> {
    let mut c = collector
        .take()
        .ok_or_else(|| DaemonError::Collector("collector lost after an earlier failure".into()))?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("collect".into())
        .spawn(move || {
            let r = c.collect();
            let _ = tx.send((c, r));
        })
        .map_err(|e| DaemonError::Collector(format!("cannot start a collection: {e}")))?;
    Ok(rx)
}

/// The end of a collection: the collector back in its place, and the report.
fn collected(
    collector: &mut Option<Collector>,
    done: Result<(Collector, Report), tokio::sync::oneshot::error::RecvError>,
) -> Result<Report, DaemonError> {
    let (c, report) =
        done.map_err(|_| DaemonError::Collector("the collection thread died".into()))?;
    *collector = Some(c);
    Ok(report)
}

/// Collects and waits for it (enrollment and `--once`, where there is nothing else to do).
async fn collect(collector: &mut Option<Collector>) -> Result<Report, DaemonError> {
    let rx = start_collection(collector)?;
    collected(collector, rx.await)
}

/// The roaming side of collection: the modems now, folded into the durable abroad ledger.
struct Roaming {
    bus: crate::bus::BusAddress,
    home: roaming::HomeMccs,
    ledger: roaming::Ledger,
    state: StateDir,
}

impl Roaming {
    fn load(state: &StateDir, bus: crate::bus::BusAddress, home: roaming::HomeMccs) -> Self {
        let path = state.path("abroad.json");
        let ledger = match std::fs::read(&path) {
            Ok(bytes) => roaming::Ledger::from_bytes(&bytes).unwrap_or_else(|e| {
                // Keep the unreadable file for a person to look at; start a new ledger.
                let aside = state.path("abroad.json.corrupt");
                tracing::error!(
                    "{}: {e}; kept as {} and starting afresh",
                    path.display(),
                    aside.display()
                );
                let _ = std::fs::rename(&path, &aside);
                roaming::Ledger::default()
            }),
            Err(_) => roaming::Ledger::default(),
        };
        Self {
            bus,
            home,
            ledger,
            state: state.clone(),
        }
    }

    fn persist(&self) {
        let path = self.state.path("abroad.json");
        match self.ledger.to_bytes() {
            Ok(bytes) => {
                if let Err(e) = crate::state::write_atomic(&path, &bytes) {
                    tracing::error!("could not save the abroad ledger: {e}");
                }
            }
            Err(e) => tracing::error!("could not encode the abroad ledger: {e}"),
        }
    }

    /// Reads the modems, updates the ledger, and fills the report's roaming section.
    async fn fill(&mut self, report: &mut Report) -> i64 {
        let got = roaming::collect(&self.bus, &self.home).await;
        let now = link::now_ms();
        if self.ledger.observe(&got.value, now) {
            self.persist();
        }
        report.roaming = got.value.state(&self.ledger);
        report.errors.extend(got.errors);
        now
    }

    /// The server has the report carrying the observation made at `observed_ms`.
    fn acknowledged(&mut self, observed_ms: i64) {
        if self.ledger.prune_acknowledged(observed_ms) {
            self.persist();
        }
    }
}

/// Runs the agent until `shutdown` resolves (or, with `once`, after one acknowledged report).
/// `events` receives progress for whoever hosts the loop.
pub async fn run(
    cfg: Config,
    once: bool,
    shutdown: impl Future<Output = ()>,
    events: Option<mpsc::UnboundedSender<Event>>,
) -> Result<(), DaemonError> {
    let emit = |e: Event| {
        if let Some(tx) = &events {
            let _ = tx.send(e);
        }
    };
    tokio::pin!(shutdown);
    let state = StateDir::open(&cfg.state_dir)?;
    let mut collector = Some(
        Collector::with_budgets(Root::new(&cfg.root), cfg.collect_budgets)
            .with_wipe(cfg.wipe.plan()),
    );
    let mut backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(300));

    // 1. Identity: enroll once, retrying while the server is unreachable.
    let mut identity: Identity = loop {
        if let Some(id) = state.identity()? {
            break id;
        }
        let report = collect(&mut collector).await?;
        match link::enroll(&cfg, &state, link::hardware_of(&report)).await {
            Ok(id) => {
                tracing::info!(device = %id.device_id, "enrolled");
                emit(Event::Enrolled {
                    device_id: id.device_id.clone(),
                });
                break id;
            }
            Err(e) if e.is_transient() && !once => {
                let d = backoff.next_delay();
                tracing::warn!("enrollment failed, retrying in {d:?}: {e}");
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(d) => continue,
                }
            }
            Err(e) => return Err(e.into()),
        }
    };
    backoff.reset();
    // An expired certificate cannot even finish a handshake: say so, and re-enroll now if a
    // token is configured (the server lets it take its own record over).
    if let Ok(crate::renew::Health::Expired { at_ms }) =
        crate::renew::health(&identity.cert_pem, link::now_ms())
    {
        let report = collect(&mut collector).await?;
        let hardware = link::hardware_of(&report);
        identity = crate::renew::reenroll_expired(&cfg, &state, hardware, at_ms).await?;
    }

    // Commands: anything interrupted by a crash is reported failed (never re-run), and a lock
    // that was in force before a restart is put back.
    let bus = crate::bus::BusAddress::resolve(
        cfg.system_bus.as_deref(),
        std::env::var("DBUS_SYSTEM_BUS_ADDRESS").ok().as_deref(),
    );
    let mut executor =
        std::sync::Arc::new(Executor::new(&cfg, state.clone(), &identity, bus.clone()));
    let interrupted = executor.recover_interrupted()?;
    if interrupted > 0 {
        tracing::warn!(
            "{interrupted} command(s) were interrupted by a restart and are reported failed"
        );
    }
    executor.reassert_lock().await;

    // 2. A channel with the client certificate. tonic reconnects it by itself afterwards; with
    // more than one server, a failed stream or report moves it to the next (`fail_over`).
    let mut servers = link::Servers::new(cfg.servers.clone());
    let mut channel = loop {
        match servers.connect_as(&identity).await {
            Ok(c) => break c,
            Err(e) if e.is_transient() && !once => {
                let d = backoff.next_delay();
                tracing::warn!("cannot connect, retrying in {d:?}: {e}");
                tokio::select! {
                    _ = &mut shutdown => return Ok(()),
                    _ = tokio::time::sleep(d) => continue,
                }
            }
            Err(e) => return Err(e.into()),
        }
    };

    let home = roaming::HomeMccs::new(cfg.home_mccs.iter())
        .map_err(|e| DaemonError::Collector(format!("home_mccs: {e}")))?;
    let mut roam = Roaming::load(&state, bus.clone(), home);

    if once {
        let mut report = collect(&mut collector).await?;
        let observed = roam.fill(&mut report).await;
        let s = link::send_report(channel, &state, &report).await?;
        roam.acknowledged(observed);
        emit(Event::Reported {
            sequence: s.sequence,
            sent: s.sent,
        });
        return Ok(());
    }

    // 3. The loop: reports on a timer, the stream held open, both retried with backoff.
    let mut report_backoff = Backoff::new(Duration::from_secs(2), Duration::from_secs(300));
    let mut stream_backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(120));
    let mut next_report = Instant::now();
    let mut stream: Option<tokio::task::JoinHandle<Result<(), LinkError>>> = None;
    let mut stream_started = Instant::now();
    let mut stream_retry_at = Instant::now();
    let mut watcher: Option<roaming::Watcher> = None;
    let mut watch_retry_at = Instant::now();
    let mut collecting: Option<Collecting> = None;
    // Whether the last report failed straight after a move (see `retry_after_move`).
    let mut report_moved = false;
    loop {
        // Watch before collecting, so a change between the two still wakes us.
        if watcher.is_none() && Instant::now() >= watch_retry_at {
            match roaming::watch(&bus).await {
                Ok(w) => watcher = Some(w),
                Err(e) => {
                    tracing::debug!("cannot watch the modems: {e}");
                    watch_retry_at = Instant::now() + Duration::from_secs(60);
                }
            }
        }
        if stream.is_none() && Instant::now() >= stream_retry_at {
            stream_started = Instant::now();
            stream = Some(tokio::spawn(hold_stream(
                channel.clone(),
                events.clone(),
                executor.clone(),
            )));
        }
        tokio::select! {
            _ = &mut shutdown => break,
            change = async {
                match watcher.as_mut() {
                    Some(w) => w.changed().await,
                    None => std::future::pending().await,
                }
            } => {
                match change {
                    Some(c) => {
                        tracing::info!(reasons = ?c.reasons, "modem change: reporting now");
                        next_report = Instant::now();
                    }
                    None => {
                        watcher = None;
                        watch_retry_at = Instant::now() + Duration::from_secs(5);
                    }
                }
            }
            _ = sleep_until(next_report), if collecting.is_none() => {
                collecting = Some(start_collection(&mut collector)?);
            }
            done = async {
                match collecting.as_mut() {
                    Some(rx) => rx.await,
                    None => std::future::pending().await,
                }
            } => {
                collecting = None;
                let mut report = collected(&mut collector, done)?;
                let observed = roam.fill(&mut report).await;
                // The certificate is checked at every report: renewed with a third left.
                match crate::renew::maintain(&cfg, &state, &identity, channel.clone(), link::hardware_of(&report)).await {
                    Ok(Some(new)) => match servers.connect_as(&new).await {
                        Ok(c) => {
                            channel = c;
                            if new.device_id != identity.device_id || new.command_public_key != identity.command_public_key {
                                executor = std::sync::Arc::new(Executor::new(&cfg, state.clone(), &new, bus.clone()));
                            }
                            identity = new;
                            // The stream comes back on the new certificate.
                            if let Some(h) = stream.take() {
                                h.abort();
                            }
                            stream_retry_at = Instant::now();
                        }
                        // The old certificate keeps working until the new one is used; the
                        // next report tries again (the saved pair is used after a restart).
                        Err(e) => tracing::warn!("renewed, but cannot connect with the new certificate yet: {e}"),
                    },
                    Ok(None) => {}
                    Err(e) => tracing::error!("{e}"),
                }
                match link::send_report(channel.clone(), &state, &report).await {
                    Ok(s) => {
                        roam.acknowledged(observed);
                        tracing::info!(sequence = s.sequence, sent = ?s.sent, "report acknowledged");
                        emit(Event::Reported { sequence: s.sequence, sent: s.sent });
                        report_backoff.reset();
                        report_moved = false;
                        next_report = Instant::now() + cfg.report_interval;
                    }
                    Err(e) if e.is_transient() => {
                        let d = report_backoff.next_delay();
                        tracing::warn!("report failed, retrying in {d:?}: {e}");
                        next_report = Instant::now() + d;
                        if fail_over(&mut servers, &identity, &mut channel).await {
                            // The stream still holds the old server's channel.
                            if let Some(h) = stream.take() {
                                h.abort();
                            }
                            stream_retry_at = Instant::now();
                            // Sent again at once on the new server, unless the report failed
                            // there too straight after the last move.
                            next_report = Instant::now() + retry_after_move(report_moved, d);
                            report_moved = true;
                        }
                    }
                    Err(e) => {
                        // A refusal (revoked certificate, say) will not fix itself by retrying
                        // fast; keep trying at the regular pace so a fixed server is found.
                        tracing::error!("report refused: {e}");
                        next_report = Instant::now() + cfg.report_interval;
                    }
                }
            }
            res = async {
                match stream.as_mut() {
                    Some(h) => h.await,
                    None => std::future::pending().await,
                }
            } => {
                stream = None;
                if stream_started.elapsed() > Duration::from_secs(60) {
                    stream_backoff.reset();
                }
                let d = stream_backoff.next_delay();
                let server_side = res.is_ok();
                match res {
                    Ok(Ok(())) => tracing::info!("command stream closed by the server; reconnecting in {d:?}"),
                    Ok(Err(e)) => tracing::warn!("command stream failed, reconnecting in {d:?}: {e}"),
                    Err(e) => tracing::error!("command stream task failed: {e}"),
                }
                stream_retry_at = Instant::now() + d;
                if server_side && fail_over(&mut servers, &identity, &mut channel).await {
                    // Another server answered: hold the stream there at once, unless this
                    // stream ended straight after it began.
                    let quick = stream_started.elapsed() < QUICK_END;
                    stream_retry_at = Instant::now() + retry_after_move(quick, d);
                }
            }
            _ = sleep_until(stream_retry_at), if stream.is_none() => {}
        }
    }
    if let Some(h) = stream {
        h.abort();
    }
    Ok(())
}

/// A stream that ends sooner than this after it began ended "straight away" (see
/// [`retry_after_move`]).
const QUICK_END: Duration = Duration::from_secs(10);

/// How long to wait, after a fail-over to another server, before the stream or report is
/// tried there: at once after a server that had worked failed (a dead replica: its agents
/// move without delay), but the backoff `backoff` when the failure came straight after a move
/// or start (`again`). Without the wait, servers that accept connections but end every
/// stream or fail every report would be dialled in a tight loop, and each report retry
/// collects the inventory again.
fn retry_after_move(again: bool, backoff: Duration) -> Duration {
    if again { backoff } else { Duration::ZERO }
}

/// With more than one server, moves `channel` to another server that answers after the
/// current one failed (`link::fail_over_order`: one at random first, the failed one last); true when it did. With one server nothing changes: tonic's channel
/// reconnects to it by itself. When no other server answers either, the old channel stays and
/// the caller's backoff applies.
async fn fail_over(
    servers: &mut link::Servers,
    id: &Identity,
    channel: &mut tonic::transport::Channel,
) -> bool {
    if servers.len() < 2 {
        return false;
    }
    let from = servers.current().to_string();
    servers.failed();
    match servers.connect_as(id).await {
        Ok(c) => {
            tracing::warn!(from = %from, to = %servers.current(), "server failed; moved to another");
            *channel = c;
            true
        }
        Err(e) => {
            tracing::warn!("no other server answers either: {e}");
            false
        }
    }
}

/// How long a wipe waits for the server to acknowledge "wipe started" before it goes ahead.
const WIPE_START_ACK_WAIT: Duration = Duration::from_secs(10);

fn result_msg(r: pb::CommandResult) -> pb::AgentMessage {
    pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Result(r)),
    }
}

/// Holds one Connect stream: hello and any unacknowledged results, then heartbeats at the
/// interval the server asks for, running the commands that arrive, until the stream ends.
async fn hold_stream(
    channel: tonic::transport::Channel,
    events: Option<mpsc::UnboundedSender<Event>>,
    executor: std::sync::Arc<Executor>,
) -> Result<(), LinkError> {
    let (tx, rx) = mpsc::channel::<pb::AgentMessage>(8);
    let hello = pb::AgentMessage {
        msg: Some(pb::agent_message::Msg::Hello(pb::Hello {
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            last_report_sequence: 0,
        })),
    };
    let _ = tx.send(hello).await;
    for r in executor.unacked()? {
        let _ = tx.send(result_msg(r)).await;
    }
    let mut pending_wipe: Option<(pb::Command, Instant)> = None;
    let mut inbound = AgentServiceClient::new(channel)
        .connect(ReceiverStream::new(rx))
        .await
        .map_err(|s| LinkError::Rpc(format!("connect: {}", s.message())))?
        .into_inner();
    let mut interval = Duration::from_secs(30);
    let mut next_beat = Instant::now() + interval;
    loop {
        tokio::select! {
            msg = inbound.message() => {
                let msg = match msg {
                    Ok(Some(m)) => m,
                    Ok(None) => return Ok(()),
                    Err(s) => return Err(LinkError::Rpc(format!("stream: {}", s.message()))),
                };
                match msg.msg {
                    Some(pb::server_message::Msg::Welcome(w)) => {
                        executor.set_server_time(w.server_time_ms);
                        if w.heartbeat_interval_s >= 5 {
                            interval = Duration::from_secs(u64::from(w.heartbeat_interval_s));
                            next_beat = Instant::now() + interval;
                        }
                        if let Some(e) = &events {
                            let _ = e.send(Event::StreamUp);
                        }
                    }
                    Some(pb::server_message::Msg::HeartbeatAck(a)) => {
                        executor.set_server_time(a.server_time_ms);
                    }
                    Some(pb::server_message::Msg::KeyRollover(chain)) => {
                        let answer = executor.follow_key_chain(&chain);
                        let msg = pb::AgentMessage {
                            msg: Some(pb::agent_message::Msg::KeyRolloverResult(answer)),
                        };
                        let _ = tx.send(msg).await;
                    }
                    Some(pb::server_message::Msg::Command(signed)) => {
                        match executor.begin(&signed)? {
                            Begin::Reply(r) => {
                                let _ = tx.send(result_msg(r)).await;
                            }
                            Begin::Run(cmd) => {
                                let (r, after) = executor.run(&cmd).await?;
                                let _ = tx.send(result_msg(r)).await;
                                finish(after).await;
                            }
                            Begin::RunAfterStartAck(cmd, started) => {
                                let _ = tx.send(result_msg(started)).await;
                                pending_wipe = Some((cmd, Instant::now() + WIPE_START_ACK_WAIT));
                            }
                        }
                    }
                    Some(pb::server_message::Msg::ResultAck(a)) => {
                        executor.acked(&a.command_id, a.outcome)?;
                        let start_acked = a.outcome == pb::CommandOutcome::Started as i32
                            && pending_wipe.as_ref().is_some_and(|(c, _)| c.id == a.command_id);
                        if start_acked && let Some((cmd, _)) = pending_wipe.take() {
                            let (r, after) = executor.run(&cmd).await?;
                            let _ = tx.send(result_msg(r)).await;
                            finish(after).await;
                        }
                    }
                    None => {}
                }
            }
            _ = async {
                match &pending_wipe {
                    Some((_, deadline)) => sleep_until(*deadline).await,
                    None => std::future::pending().await,
                }
            } => {
                // The acknowledgement of "started" did not come: the wipe goes ahead anyway.
                if let Some((cmd, _)) = pending_wipe.take() {
                    let (r, after) = executor.run(&cmd).await?;
                    let _ = tx.send(result_msg(r)).await;
                    finish(after).await;
                }
            }
            _ = sleep_until(next_beat) => {
                let beat = pb::AgentMessage {
                    msg: Some(pb::agent_message::Msg::Heartbeat(pb::Heartbeat { sent_at_ms: link::now_ms() })),
                };
                if tx.send(beat).await.is_err() {
                    return Ok(());
                }
                next_beat = Instant::now() + interval;
            }
        }
    }
}

/// What follows a command's result: a wipe powers the machine off, after giving the result a
/// moment to leave.
async fn finish(after: After) {
    if after == After::PowerOff {
        tokio::time::sleep(Duration::from_secs(3)).await;
        crate::act::power_off().await;
    }
}

/// Resolves on Ctrl-C or SIGTERM (how systemd stops a service). Shared by the binaries.
pub async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(s) => s,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_failure_straight_after_a_move_waits_the_backoff() {
        let backoff = Duration::from_secs(4);
        // A server that had worked died: its agents move and carry on at once.
        assert_eq!(retry_after_move(false, backoff), Duration::ZERO);
        // The new server failed too, straight away: no tight loop between such servers.
        assert_eq!(retry_after_move(true, backoff), backoff);
    }
}
