//! The agent's side of the wire: TLS channels to the server, enrollment, reports with section
//! deltas, and the Connect stream.

use crate::config::Config;
use crate::state::{Identity, ReportState, StateDir, StateError};
use std::time::Duration;
use tonic::transport::{Channel, Endpoint};
use vakt_proto::dial;
use vakt_proto::model::Report;
use vakt_proto::pb;
use vakt_proto::pb::agent_service_client::AgentServiceClient;

#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    #[error("server address '{0}' is not a valid URL")]
    BadUrl(String),
    #[error("cannot reach the server at {server}: {message}")]
    Unreachable { server: String, message: String },
    /// A call on a channel already made failed for the connection (the server went away).
    #[error("the server did not answer: {0}")]
    Unavailable(String),
    #[error("the server refused: {0}")]
    Refused(String),
    #[error("{0}")]
    Rpc(String),
    #[error("enrollment token file {path}: {source}")]
    TokenFile {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("no identity and no enroll_token_file configured: cannot enroll")]
    NoToken,
    #[error("CA file {path}: {source}")]
    Ca {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
    #[error("key generation: {0}")]
    Key(String),
    #[error("the device certificate does not parse: {0}")]
    BadCertificate(String),
    #[error("the device certificate expired at {0}; re-enroll with a token")]
    CertificateExpired(String),
    #[error(transparent)]
    State(#[from] StateError),
}

impl From<dial::DialError> for LinkError {
    fn from(e: dial::DialError) -> Self {
        match e {
            dial::DialError::BadUrl(u) => Self::BadUrl(u),
            dial::DialError::Unreachable { server, message } => {
                Self::Unreachable { server, message }
            }
        }
    }
}

impl LinkError {
    /// Errors that waiting and trying again can fix (the server down, the network away), as
    /// opposed to ones that need a person (a bad token, a bad config).
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            Self::Unreachable { .. } | Self::Unavailable(_) | Self::Rpc(_)
        )
    }
}

pub(crate) fn status_error(s: tonic::Status) -> LinkError {
    use tonic::Code;
    match s.code() {
        Code::Unauthenticated | Code::PermissionDenied | Code::InvalidArgument => {
            LinkError::Refused(s.message().to_string())
        }
        Code::Unavailable => LinkError::Unavailable(s.message().to_string()),
        _ => LinkError::Rpc(format!("{:?}: {}", s.code(), s.message())),
    }
}

/// A TLS channel to `server` (see [`vakt_proto::dial`]).
pub async fn connect(
    server: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Channel, LinkError> {
    Ok(dial::connect(server, ca_pem, identity).await?)
}

/// The endpoint [`connect`] dials; the fleet simulator dials it with its own source address.
pub fn endpoint(
    server: &str,
    ca_pem: &str,
    identity: Option<(&str, &str)>,
) -> Result<Endpoint, LinkError> {
    Ok(dial::endpoint(server, ca_pem, identity)?)
}

pub use dial::error_chain;

/// The servers an agent may talk to (agent.toml's `server`: one URL, or the replicas of one
/// installation) and the one it is with now.
///
/// Each agent starts with a server of its own choosing (random per process), so a fleet that
/// restarts together spreads over the replicas instead of all landing on the first; it stays
/// with a server while it answers, and when it fails moves to another chosen at random, so
/// the survivors of a dead replica divide its agents between them (moving to "the next in
/// the list" sent every agent of a dead replica to the same survivor: the fleet simulator
/// showed all 100 of them on one of two survivors). The failed server is tried last.
#[derive(Debug, Clone)]
pub struct Servers {
    urls: Vec<String>,
    current: usize,
    /// The server that failed last, tried after every other.
    failed: Option<usize>,
}

/// A number below `n` (0 when `n` is 0), different per call: std's hasher keys are random,
/// a spread without a random-number crate.
fn random_below(n: usize) -> usize {
    use std::hash::{BuildHasher, Hasher};
    let r = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    usize::try_from(r % n.max(1) as u64).unwrap_or(0)
}

/// The order in which [`Servers::connect`] tries `len` servers: from `current` round the
/// list, with `failed` (if any, and not the only one) moved to the end.
fn try_order(current: usize, failed: Option<usize>, len: usize) -> Vec<usize> {
    let mut order: Vec<usize> = (0..len)
        .map(|step| (current + step) % len)
        .filter(|i| Some(*i) != failed)
        .collect();
    if let Some(f) = failed.filter(|f| *f < len) {
        order.push(f);
    }
    order
}

/// The servers to try, in order, after the one at `failed` (of `len`) failed: another chosen
/// at random first, then round the list from it, `failed` last. The agent's rule; the fleet
/// simulator moves its agents by it too.
pub fn fail_over_order(failed: usize, len: usize) -> Vec<usize> {
    if len < 2 {
        return (0..len).collect();
    }
    let start = (failed + 1 + random_below(len - 1)) % len;
    try_order(start, Some(failed), len)
}

impl Servers {
    /// `urls` must not be empty (the config refuses an empty list).
    pub fn new(urls: Vec<String>) -> Self {
        let current = random_below(urls.len());
        Self {
            urls,
            current,
            failed: None,
        }
    }

    /// The server the agent is with (or will try first).
    pub fn current(&self) -> &str {
        self.urls.get(self.current).map_or("", String::as_str)
    }

    pub fn len(&self) -> usize {
        self.urls.len()
    }

    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// The current server failed (its stream ended, or a call did not get through): the
    /// next connection starts with another one, chosen at random, and tries this one last.
    pub fn failed(&mut self) {
        let len = self.urls.len();
        if len > 1 {
            self.failed = Some(self.current);
            self.current = fail_over_order(self.current, len)[0];
        }
    }

    /// A channel to the first server that answers, trying each once from the current one;
    /// that server becomes current. When none answers, the error names each server's failure.
    pub async fn connect(
        &mut self,
        ca_pem: &str,
        identity: Option<(&str, &str)>,
    ) -> Result<Channel, LinkError> {
        let mut failures = Vec::new();
        for (step, i) in try_order(self.current, self.failed, self.urls.len())
            .into_iter()
            .enumerate()
        {
            match connect(&self.urls[i], ca_pem, identity).await {
                Ok(c) => {
                    if step > 0 {
                        tracing::info!(server = %self.urls[i], "connected to another server");
                    }
                    self.current = i;
                    self.failed = None;
                    return Ok(c);
                }
                Err(LinkError::Unreachable { server, message }) => {
                    failures.push((server, message));
                }
                Err(e) => return Err(e),
            }
        }
        match failures.len() {
            0 => Err(LinkError::BadUrl(String::new())),
            1 => {
                let (server, message) = failures.remove(0);
                Err(LinkError::Unreachable { server, message })
            }
            _ => Err(LinkError::Unreachable {
                server: failures
                    .iter()
                    .map(|(s, _)| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" or "),
                message: failures
                    .iter()
                    .map(|(s, m)| format!("{s}: {m}"))
                    .collect::<Vec<_>>()
                    .join("; "),
            }),
        }
    }

    /// A channel with the device's client certificate, as [`connect`](Self::connect).
    pub async fn connect_as(&mut self, id: &Identity) -> Result<Channel, LinkError> {
        self.connect(&id.ca_pem, Some((&id.cert_pem, &id.key_pem)))
            .await
    }
}

/// The hardware identity sent at enrollment, from the collected host facts.
pub fn hardware_of(report: &Report) -> pb::HardwareIdentity {
    pb::HardwareIdentity {
        machine_id: report.host.machine_id.clone(),
        serial: report.host.serial.clone(),
        hostname: report.host.hostname.clone(),
        model: report.host.model.clone(),
    }
}

/// Enrolls with the token from the config: makes a key pair here (the private key never
/// leaves the device), sends a CSR, and stores the identity. The token file is removed after
/// success, since it is a secret that is of no further use.
pub async fn enroll(
    cfg: &Config,
    state: &StateDir,
    hardware: pb::HardwareIdentity,
) -> Result<Identity, LinkError> {
    let token_path = cfg.enroll_token_file.as_ref().ok_or(LinkError::NoToken)?;
    let token = std::fs::read_to_string(token_path).map_err(|source| LinkError::TokenFile {
        path: token_path.clone(),
        source,
    })?;
    let ca_pem = std::fs::read_to_string(&cfg.ca).map_err(|source| LinkError::Ca {
        path: cfg.ca.clone(),
        source,
    })?;
    let (key_pem, csr_der) = key_and_csr(&hardware.hostname)?;
    let mut servers = Servers::new(cfg.servers.clone());
    let channel = servers.connect(&ca_pem, None).await?;
    let resp = AgentServiceClient::new(channel)
        .enroll(pb::EnrollRequest {
            token: token.trim().to_string(),
            csr_der,
            hardware: Some(hardware),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        })
        .await
        .map_err(status_error)?
        .into_inner();
    let id = Identity {
        device_id: resp.device_id,
        server: servers.current().to_string(),
        command_public_key: hex(&resp.command_public_key),
        enrolled_at_ms: now_ms(),
        key_pem,
        cert_pem: resp.certificate_pem,
        ca_pem: resp.ca_pem,
    };
    state.save_identity(&id)?;
    // A new identity starts its report bookkeeping afresh: the server holds nothing for it yet
    // if it is a new device, and will ask for what it lacks if it is a known one.
    let mut rs = state.report_state()?;
    rs.acked.clear();
    state.save_report_state(&rs)?;
    if let Err(e) = std::fs::remove_file(token_path) {
        tracing::warn!(
            "enrolled, but could not remove {}: {e}",
            token_path.display()
        );
    }
    Ok(id)
}

/// A new key pair (PEM, never leaves the device) and a certificate signing request (DER) for it.
pub fn key_and_csr(hostname: &str) -> Result<(String, Vec<u8>), LinkError> {
    let key = rcgen::KeyPair::generate().map_err(|e| LinkError::Key(e.to_string()))?;
    let csr = rcgen::CertificateParams::new(vec![hostname.to_string()])
        .and_then(|p| p.serialize_request(&key))
        .map_err(|e| LinkError::Key(e.to_string()))?;
    Ok((key.serialize_pem(), csr.der().to_vec()))
}

/// What one report exchange did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReportSummary {
    pub sequence: u64,
    pub sent: Vec<String>,
    pub resend_requested: bool,
}

/// Sends the sections of `report` that changed since the last acknowledged report, with the
/// digests of all, and records the acknowledgement. If the server asks for sections it lacks,
/// or its sequence is ahead of ours (our state was reset), it sends again at once, once.
pub async fn send_report(
    channel: Channel,
    state: &StateDir,
    report: &Report,
) -> Result<ReportSummary, LinkError> {
    let mut client = AgentServiceClient::new(channel);
    let sections = vakt_proto::convert::report_to_sections(report);
    let mut rs = state.report_state()?;
    let mut summary = None;
    for _attempt in 0..2 {
        let (req, sent) = build_request(&rs, &sections);
        let resp = client
            .report(req.clone())
            .await
            .map_err(status_error)?
            .into_inner();
        let ok = apply_ack(&mut rs, &req, &resp, now_ms());
        state.save_report_state(&rs)?;
        summary = Some(ReportSummary {
            sequence: req.sequence,
            sent,
            resend_requested: !ok,
        });
        if ok {
            break;
        }
    }
    summary.ok_or_else(|| LinkError::Rpc("no report attempt was made".into()))
}

/// The request for the next report: changed sections, every digest, the next sequence number.
pub fn build_request(
    rs: &ReportState,
    sections: &[pb::Section],
) -> (pb::ReportRequest, Vec<String>) {
    let mut sent = Vec::new();
    let mut changed = Vec::new();
    for s in sections {
        let name = kind_name(s.kind);
        if rs.acked.get(&name) != Some(&hex(&s.hash)) {
            sent.push(name);
            changed.push(s.clone());
        }
    }
    let digests = sections
        .iter()
        .map(|s| pb::SectionDigest {
            kind: s.kind,
            hash: s.hash.clone(),
        })
        .collect();
    (
        pb::ReportRequest {
            sequence: rs.sequence + 1,
            sections: changed,
            digests,
            collected_at_ms: now_ms(),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
        },
        sent,
    )
}

/// Records an acknowledgement. Returns false when the agent must send again now: the server
/// asked for sections, or acknowledged a sequence other than ours (our state was reset).
pub fn apply_ack(
    rs: &mut ReportState,
    req: &pb::ReportRequest,
    resp: &pb::ReportResponse,
    now_ms: i64,
) -> bool {
    rs.last_ack_ms = now_ms;
    if resp.acknowledged_sequence != req.sequence {
        rs.sequence = rs.sequence.max(resp.acknowledged_sequence);
        rs.acked.clear();
        return false;
    }
    rs.sequence = req.sequence;
    for s in &req.sections {
        rs.acked.insert(kind_name(s.kind), hex(&s.hash));
    }
    for k in &resp.resend {
        rs.acked.remove(&kind_name(*k));
    }
    resp.resend.is_empty()
}

fn kind_name(kind: i32) -> String {
    vakt_proto::convert::section_kind(kind)
        .map(|k| k.as_str().to_string())
        .unwrap_or_else(|_| format!("kind-{kind}"))
}

pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `2026-11-28T08:46:20Z` for a millisecond timestamp.
pub fn rfc3339(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0).unsigned_abs());
    humantime::format_rfc3339_seconds(t).to_string()
}

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_server_sends_its_agents_to_every_other_and_is_tried_last() {
        let urls: Vec<String> = (0..3).map(|i| format!("https://r{i}:7443")).collect();
        let mut went = [0usize; 3];
        for _ in 0..300 {
            let mut s = Servers::new(urls.clone());
            s.current = 0;
            s.failed();
            went[s.current] += 1;
            assert_eq!(try_order(s.current, s.failed, 3).last(), Some(&0));
        }
        // Never back to the failed one; both survivors get a share (300 fair coin flips
        // all landing on one side: 2^-299).
        assert_eq!(went[0], 0);
        assert!(went[1] > 0 && went[2] > 0, "{went:?}");
        assert_eq!(try_order(1, None, 3), vec![1, 2, 0]);
        assert_eq!(try_order(2, Some(1), 3), vec![2, 0, 1]);
        // One server: nothing to move to.
        let mut one = Servers::new(vec![urls[0].clone()]);
        one.failed();
        assert_eq!((one.current, one.failed), (0, None));
    }

    #[test]
    fn only_changed_sections_are_sent_and_acks_are_recorded() {
        let report = Report::default();
        let sections = vakt_proto::convert::report_to_sections(&report);
        let mut rs = ReportState::default();
        let (req, sent) = build_request(&rs, &sections);
        assert_eq!(sent.len(), 5);
        assert_eq!(req.sequence, 1);
        let resp = pb::ReportResponse {
            acknowledged_sequence: 1,
            resend: vec![],
        };
        assert!(apply_ack(&mut rs, &req, &resp, 10));
        let (req2, sent2) = build_request(&rs, &sections);
        assert!(sent2.is_empty() && req2.sections.is_empty());
        assert_eq!(req2.digests.len(), 5);
        assert_eq!(req2.sequence, 2);
    }

    #[test]
    fn resend_request_and_sequence_reset() {
        let report = Report::default();
        let sections = vakt_proto::convert::report_to_sections(&report);
        let mut rs = ReportState::default();
        let (req, _) = build_request(&rs, &sections);
        let resp = pb::ReportResponse {
            acknowledged_sequence: 1,
            resend: vec![pb::SectionKind::Mail as i32],
        };
        assert!(!apply_ack(&mut rs, &req, &resp, 10));
        let (_, sent) = build_request(&rs, &sections);
        assert_eq!(sent, vec!["mail".to_string()]);
        // The server is ahead (the agent's state was wiped): adopt its sequence, send all.
        let (req, _) = build_request(&rs, &sections);
        let resp = pb::ReportResponse {
            acknowledged_sequence: 40,
            resend: vec![],
        };
        assert!(!apply_ack(&mut rs, &req, &resp, 11));
        let (req, sent) = build_request(&rs, &sections);
        assert_eq!(req.sequence, 41);
        assert_eq!(sent.len(), 5);
    }
}
