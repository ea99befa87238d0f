//! `AgentService`: enrollment, reports and the Connect stream.
//!
//! Enroll is the only call allowed without a client certificate. Every other call is
//! identified by the sha-256 of the TLS client certificate, looked up in the store, so a
//! revoked (replaced) certificate stops working the moment its device re-enrolls, even though
//! the CA still vouches for it.

use super::{Connection, State, internal};
use crate::store::{CertInfo, EnrollError, EnrollPlan, EnrollRefusal};
use crate::timefmt::now_ms;
use crate::tls::Peer;
use crate::token;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use tokio::sync::mpsc;
use tokio_stream::{Stream, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use vakt_proto::pb;
use vakt_proto::pb::agent_service_server::AgentService;

static EPOCH: AtomicU64 = AtomicU64::new(1);

/// The longest exemption an employee can ask for from the laptop.
const MAX_EXEMPTION_MINUTES: u32 = 8 * 60;

/// The largest report section list an agent may send in one report.
const MAX_SECTIONS: usize = 16;

#[derive(Debug, Clone)]
pub struct AgentApi {
    state: State,
}

impl AgentApi {
    pub fn new(state: State) -> Self {
        Self { state }
    }

    /// The device calling, from its client certificate (its hash, taken at the handshake).
    async fn device<T>(&self, req: &Request<T>) -> Result<pb::DeviceRecord, Status> {
        super::agent_identity::caller(&self.state, req).await
    }
}

fn new_device_id() -> String {
    format!("dev-{}", token::hex(&token::random_bytes::<8>()))
}

type ServerStream = Pin<Box<dyn Stream<Item = Result<pb::ServerMessage, Status>> + Send>>;

impl AgentApi {
    /// Enrollment proper; `enroll` counts its outcome.
    async fn enroll_device(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        // Before any work (token lookup, certificate signing): floods stop here.
        let source = Peer::of(&req).map(|p| p.addr.ip());
        self.state
            .enroll_limiter
            .check(source, std::time::Instant::now())
            .map_err(|e| Status::resource_exhausted(e.to_string()))?;
        let r = req.into_inner();
        let presented = r.token.trim();
        if presented.is_empty() {
            return Err(Status::invalid_argument("enrollment needs a token"));
        }
        if r.csr_der.is_empty() {
            return Err(Status::invalid_argument(
                "enrollment needs a certificate signing request",
            ));
        }
        let hw = r.hardware.unwrap_or_default();
        let now = now_ms();
        let hash = token::hash(presented);
        // Read once: the device record names the generation whose key the answer carries.
        let (key_generation, command_public_key) = self.state.pki.command_keys.current();
        let store = &self.state.store;
        let refused = |e: EnrollError| match e {
            EnrollError::Refused(r) => Status::permission_denied(r.to_string()),
            EnrollError::Store(e) if e.is_busy() => Status::unavailable(e.to_string()),
            EnrollError::Store(e) => internal(e),
            EnrollError::PlanChanged(e) => Status::unavailable(e.to_string()),
        };
        store
            .check_enroll_token(&hash, presented, now)
            .map_err(refused)?;
        // Hardware ids are claims: they name an existing device only if it can no longer
        // prove itself (store::identity).
        let plan = store.enroll_plan(&hw, now).map_err(internal)?;
        let device_id = match &plan {
            EnrollPlan::TakeOver { id, .. } => id.clone(),
            EnrollPlan::New { .. } => new_device_id(),
        };
        let cert = self
            .state
            .pki
            .issue_device_cert(&r.csr_der, &device_id, time::OffsetDateTime::now_utc())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let device = pb::Device {
            id: device_id.clone(),
            hostname: hw.hostname.clone(),
            state: pb::DeviceState::Active as i32,
            last_seen_ms: now,
            enrolled_at_ms: now,
            machine_id: hw.machine_id.clone(),
            serial: hw.serial.clone(),
            model: hw.model.clone(),
            agent_version: r.agent_version.clone(),
            command_key_generation: key_generation,
            ..Default::default()
        };
        let info = CertInfo {
            sha256: cert.sha256,
            not_after_ms: cert.not_after_ms,
        };
        let rec = store
            .enroll_device(&hash, now, device, hw.clone(), info, &plan)
            .await
            .map_err(|e| match e {
                // The token was checked a moment ago; name it the same way if it ran out since.
                EnrollError::Refused(EnrollRefusal::Unknown(_)) => Status::permission_denied(
                    EnrollRefusal::Unknown(token::redacted(presented)).to_string(),
                ),
                other => refused(other),
            })?;
        tracing::info!(
            device = %device_id,
            revoked = rec.revoked_cert_sha256.len(),
            "device enrolled"
        );
        super::agent_identity::after_enroll(&self.state, &plan, &device_id, &hw).await?;
        Ok(Response::new(pb::EnrollResponse {
            device_id,
            certificate_pem: cert.pem,
            ca_pem: self.state.pki.ca_pem().to_string(),
            command_public_key,
        }))
    }
}

#[tonic::async_trait]
impl AgentService for AgentApi {
    async fn enroll(
        &self,
        req: Request<pb::EnrollRequest>,
    ) -> Result<Response<pb::EnrollResponse>, Status> {
        let answer = self.enroll_device(req).await;
        self.state
            .metrics
            .enrollment(answer.as_ref().err().map(Status::code));
        answer
    }
    async fn report(
        &self,
        req: Request<pb::ReportRequest>,
    ) -> Result<Response<pb::ReportResponse>, Status> {
        let arrived = std::time::Instant::now();
        let rec = self.device(&req).await?;
        let device_id = rec
            .device
            .as_ref()
            .map(|d| d.id.clone())
            .unwrap_or_default();
        let r = req.into_inner();
        if r.sections.len() > MAX_SECTIONS {
            return Err(Status::invalid_argument(format!(
                "a report carries at most {MAX_SECTIONS} sections, this one {}",
                r.sections.len()
            )));
        }
        // One digest per section kind the agent holds: more is no agent's. Bounded because
        // a check-in's section read is gathered with other laptops' into one statement
        // (`store::pg_batch`), where a million keys from one caller would hold up everyone.
        if r.digests.len() > MAX_SECTIONS {
            return Err(Status::invalid_argument(format!(
                "a report announces at most {MAX_SECTIONS} section digests, this one {}",
                r.digests.len()
            )));
        }
        // Refuse the whole report if any section is malformed: nothing half-stored.
        for s in &r.sections {
            let kind = vakt_proto::convert::section_kind(s.kind)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            vakt_proto::convert::sections_to_report(std::slice::from_ref(s))
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            if vakt_proto::hash::section_hash(s).as_slice() != s.hash.as_slice() {
                return Err(Status::invalid_argument(format!(
                    "section {}: the hash does not match its content",
                    kind.as_str()
                )));
            }
        }
        // A slot for the store and its flush; waiting here is parked and fair (see
        // REPORT_SLOTS). The semaphore is never closed, so acquiring cannot fail.
        let _slot = self
            .state
            .report_slots
            .acquire()
            .await
            .map_err(|_| Status::unavailable("the server is shutting down"))?;
        let outcome = self
            .state
            .store
            .store_report_of(
                &rec,
                r.sequence,
                &r.sections,
                &r.digests,
                now_ms(),
                &r.agent_version,
            )
            .await
            .map_err(internal)?;
        // Durable, so acknowledged now; the policy looks at it right after. A report that
        // changed no section gives the rules nothing new (time-based rules have their timer),
        // and ten thousand laptops checking in must not queue ten thousand evaluations.
        if outcome.changed {
            crate::findings::evaluate_later(&self.state, &device_id);
        }
        self.state
            .metrics
            .report_acknowledged(!r.sections.is_empty(), arrived.elapsed());
        Ok(Response::new(pb::ReportResponse {
            acknowledged_sequence: outcome.acknowledged_sequence,
            resend: outcome.resend,
        }))
    }

    async fn request_exemption(
        &self,
        req: Request<pb::ExemptionRequest>,
    ) -> Result<Response<pb::ExemptionReply>, Status> {
        let rec = self.device(&req).await?;
        let d = rec.device.unwrap_or_default();
        let r = req.into_inner();
        if r.minutes == 0 || r.minutes > MAX_EXEMPTION_MINUTES {
            return Err(Status::invalid_argument(format!(
                "--minutes must be 1 to {MAX_EXEMPTION_MINUTES}: an exemption for mobile data abroad is short (policy 8.4)"
            )));
        }
        let reason = super::required_reason(
            &r.reason,
            "--reason must say which work task needs mobile data (policy 8.4)",
        )?;
        super::exemption_guard::check_reason(reason)?;
        super::exemption_guard::take(
            &self.state.exemption_limiter,
            &d.id,
            std::time::Instant::now(),
        )?;
        let now = now_ms();
        let all: Vec<crate::policy::Exemption> = self
            .state
            .store
            .json_list(crate::store::JsonTree::Exemptions, b"")
            .map_err(internal)?;
        if let Some(e) = super::exemption_guard::in_force(&all, &d.id, now) {
            return Err(super::exemption_guard::already_in_force(e));
        }
        let until = now + i64::from(r.minutes) * 60_000;
        let id = format!("ex-{now:012x}{}", token::hex(&token::random_bytes::<3>()));
        let exemption = crate::policy::Exemption {
            id: id.clone(),
            subject: crate::policy::ExemptionSubject::Device(d.id.clone()),
            rule: "mobile-data-abroad".into(),
            from: crate::findings::ms_to_time(now),
            until: Some(crate::findings::ms_to_time(until)),
            reason: reason.to_string(),
            granted_by: format!("requested from the device {}", d.hostname),
            revoked: None,
        };
        self.state
            .store
            .json_apply(
                crate::store::JsonTree::Exemptions,
                &[(id.clone().into_bytes(), exemption)],
                &[],
            )
            .await
            .map_err(internal)?;
        self.state
            .store
            .audit(
                &format!("device:{}", d.id),
                "exemption.request",
                &d.id,
                &format!("id={id} minutes={} reason={reason}", r.minutes),
                now,
            )
            .await
            .map_err(internal)?;
        // The manager is told (section 8.4: only for a necessary work task).
        let people = crate::findings::people(&self.state).map_err(internal)?;
        let person = people
            .iter()
            .find(|p| !d.assigned_to.is_empty() && p.email.eq_ignore_ascii_case(&d.assigned_to));
        if let Some(manager) = person
            .and_then(|p| p.manager_email.clone())
            .or_else(|| self.state.notify.it_address.clone())
        {
            let who = person.map_or(d.assigned_to.clone(), |p| p.name.clone());
            let subject = format!(
                "Undantag för mobildata utomlands: {who} / Exemption for mobile data abroad"
            );
            let body = format!(
                "{who} har på datorn {host} begärt undantag för mobildata utomlands i {m} minuter \
                 (avsnitt 8.4): \"{reason}\".\n\n{who} asked on the computer {host} for an \
                 exemption for mobile data abroad for {m} minutes (section 8.4): \"{reason}\".\n",
                host = d.hostname,
                m = r.minutes,
            );
            crate::notify::enqueue(&self.state, std::slice::from_ref(&manager), &subject, &body)
                .await
                .map_err(internal)?;
        }
        crate::findings::evaluate_later(&self.state, &d.id);
        Ok(Response::new(pb::ExemptionReply {
            id,
            until_ms: until,
        }))
    }

    async fn renew(
        &self,
        req: Request<pb::RenewRequest>,
    ) -> Result<Response<pb::RenewResponse>, Status> {
        super::agent_identity::renew(&self.state, req).await
    }

    type ConnectStream = ServerStream;

    async fn connect(
        &self,
        req: Request<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::ConnectStream>, Status> {
        let rec = self.device(&req).await?;
        let (device_id, key_generation) = rec
            .device
            .map(|d| (d.id, d.command_key_generation))
            .unwrap_or_default();
        let inbound = req.into_inner();
        let (tx, rx) = mpsc::channel(16);
        let epoch = EPOCH.fetch_add(1, Ordering::Relaxed);
        if let Ok(mut map) = self.state.connected.lock() {
            // A newer stream of the same device replaces the old one (the old sender drops).
            map.insert(
                device_id.clone(),
                Connection {
                    epoch,
                    tx: tx.clone(),
                },
            );
        }
        tokio::spawn(session(
            self.state.clone(),
            device_id,
            key_generation,
            epoch,
            inbound,
            tx,
        ));
        let out = tokio_stream::wrappers::ReceiverStream::new(rx).map(|m| Ok(*m));
        Ok(Response::new(Box::pin(out) as ServerStream))
    }
}

/// One device's Connect stream, from the Welcome until the agent goes away. A server holds
/// one of these per connected laptop, parked on the next message nearly all the time, so its
/// resting size is memory per held agent: the rare, large steps (delivering queued commands,
/// recording a result) are boxed, so their state is allocated only while they run.
async fn session(
    state: State,
    device_id: String,
    key_generation: u32,
    epoch: u64,
    mut inbound: Streaming<pb::AgentMessage>,
    tx: mpsc::Sender<Box<pb::ServerMessage>>,
) {
    let welcome = Box::new(pb::ServerMessage {
        msg: Some(pb::server_message::Msg::Welcome(pb::Welcome {
            device_id: device_id.clone(),
            server_time_ms: now_ms(),
            heartbeat_interval_s: state.heartbeat_interval_s,
        })),
    });
    let _ = tx.send(welcome).await;
    touch(&state, &device_id);
    if key_generation < state.pki.command_keys.current().0 {
        // Behind a rotation: the new key first. Queued commands wait for the agent's answer,
        // so they are signed with the key it trusts by then.
        let chain = pb::ServerMessage {
            msg: Some(pb::server_message::Msg::KeyRollover(
                state.pki.command_keys.chain(),
            )),
        };
        let _ = tx.send(Box::new(chain)).await;
    } else if let Err(e) = Box::pin(crate::commands::deliver(&state, &device_id)).await {
        // Everything queued while the device was away goes out now.
        tracing::error!(device = %device_id, "could not deliver queued commands: {e}");
    }
    // A stopping server ends the stream (see `State::stop_streams`).
    let mut stopping = state.stopping.subscribe();
    while let Some(msg) = tokio::select! {
        m = inbound.next() => m,
        () = async { let _ = stopping.wait_for(|s| *s).await; } => None,
    } {
        let msg = match msg {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(device = %device_id, "stream ended: {e}");
                break;
            }
        };
        touch(&state, &device_id);
        let reply = match msg.msg {
            Some(pb::agent_message::Msg::Heartbeat(_)) => {
                Some(pb::server_message::Msg::HeartbeatAck(pb::HeartbeatAck {
                    server_time_ms: now_ms(),
                }))
            }
            Some(pb::agent_message::Msg::Hello(h)) => {
                tracing::debug!(device = %device_id, version = %h.agent_version, "hello");
                None
            }
            Some(pb::agent_message::Msg::Result(r)) => {
                // Acknowledge only once the result is durable; on a store error the agent
                // keeps the result and sends it again on its next stream.
                match Box::pin(crate::commands::record_result(&state, &device_id, &r)).await {
                    Ok(recorded) => {
                        let ack = pb::ServerMessage {
                            msg: Some(pb::server_message::Msg::ResultAck(pb::ResultAck {
                                command_id: r.command_id.clone(),
                                outcome: r.outcome,
                            })),
                        };
                        if tx.send(Box::new(ack)).await.is_err() {
                            break;
                        }
                        if recorded == crate::commands::Recorded::SignAgain {
                            redeliver(&state, &device_id).await;
                        }
                        None
                    }
                    Err(e) => {
                        tracing::error!(device = %device_id, command = %r.command_id, "could not record result: {e}");
                        None
                    }
                }
            }
            Some(pb::agent_message::Msg::KeyRolloverResult(k)) => {
                Box::pin(key_rollover_result(&state, &device_id, &k)).await;
                None
            }
            None => None,
        };
        if let Some(reply) = reply
            && tx
                .send(Box::new(pb::ServerMessage { msg: Some(reply) }))
                .await
                .is_err()
        {
            break;
        }
    }
    if let Ok(mut map) = state.connected.lock()
        && map.get(&device_id).is_some_and(|c| c.epoch == epoch)
    {
        map.remove(&device_id);
    }
}

/// Pushes the device's open commands again, freshly signed.
async fn redeliver(state: &State, device_id: &str) {
    if let Err(e) = Box::pin(crate::commands::deliver(state, device_id)).await {
        tracing::error!(device = %device_id, "could not deliver queued commands: {e}");
    }
}

/// The agent's answer to a key rotation chain: the generation it trusts now is recorded
/// durably before anything is signed for it (a lost record would sign with a key the agent
/// has left), then its queued commands go out.
async fn key_rollover_result(state: &State, device_id: &str, k: &pb::KeyRolloverResult) {
    if !k.error.is_empty() {
        tracing::error!(device = %device_id, "the agent refused the signing-key rotation: {}", k.error);
    }
    let Some(generation) = state.pki.command_keys.generation_of(&k.public_key) else {
        tracing::error!(device = %device_id, "the agent trusts a command key this server does not have");
        return;
    };
    // Nothing new (the agent refused the chain, or repeats its answer): no write, no flush.
    // Its queued commands still go out, as they would on a reconnect: they waited for this.
    let known = state
        .store
        .device(device_id)
        .ok()
        .flatten()
        .and_then(|r| r.device)
        .map(|d| d.command_key_generation);
    if known == Some(generation) {
        redeliver(state, device_id).await;
        return;
    }
    let updated = state.store.update_device(device_id, |r| {
        if let Some(d) = r.device.as_mut() {
            d.command_key_generation = generation;
        }
    });
    let durable = match updated {
        Ok(_) => state.store.flush().await,
        Err(e) => Err(e),
    };
    match durable {
        Ok(()) => {
            tracing::info!(device = %device_id, generation, "the agent trusts command key generation {generation}");
            redeliver(state, device_id).await;
        }
        Err(e) => {
            tracing::error!(device = %device_id, "could not record the command key generation: {e}")
        }
    }
}

/// Records that the device was heard from now (not flushed: last-seen is not acknowledged data).
fn touch(state: &State, device_id: &str) {
    let now = now_ms();
    if let Err(e) = state.store.update_device(device_id, |r| {
        if let Some(d) = r.device.as_mut() {
            d.last_seen_ms = d.last_seen_ms.max(now);
        }
    }) {
        tracing::warn!(device = %device_id, "could not record last seen: {e}");
    }
}
