//! The audit log: listing it and verifying its hash chain ([`verify_chain`], which
//! `vakt-server migrate` also runs on the target).

use super::AdminApi;
use crate::api::internal;
use crate::token;
use tonic::{Request, Response, Status};
use vakt_proto::pb;

pub(super) async fn list(
    api: &AdminApi,
    req: Request<pb::ListAuditRequest>,
) -> Result<Response<pb::ListAuditResponse>, Status> {
    api.authorize(&req, pb::Role::Viewer)?;
    let entries = api
        .state
        .store
        .audit_log()
        .map_err(internal)?
        .into_iter()
        .map(|e| pb::AuditRecord {
            seq: e.seq,
            at_ms: e.at_ms,
            actor: e.actor,
            action: e.action,
            target: e.target,
            detail: e.detail,
            hash: token::hex(&e.hash),
        })
        .collect();
    Ok(Response::new(pb::ListAuditResponse { entries }))
}

pub(super) async fn verify(
    api: &AdminApi,
    req: Request<pb::VerifyAuditRequest>,
) -> Result<Response<pb::VerifyAuditResponse>, Status> {
    api.authorize(&req, pb::Role::Viewer)?;
    let log = api.state.store.audit_log().map_err(internal)?;
    Ok(Response::new(verify_chain(&log)))
}

/// Walks the audit chain: every entry's hash must match its content, link to the previous
/// entry's hash, and sequence numbers must run without gaps.
pub fn verify_chain(log: &[pb::AuditEntry]) -> pb::VerifyAuditResponse {
    let mut prev: Vec<u8> = Vec::new();
    for (i, e) in log.iter().enumerate() {
        let expected_seq = i as u64 + 1;
        let problem = if e.seq != expected_seq {
            Some(format!(
                "entry {expected_seq} is missing (found {} in its place)",
                e.seq
            ))
        } else if e.prev_hash != prev {
            Some(format!(
                "entry {} does not link to the entry before it",
                e.seq
            ))
        } else if crate::store::audit_hash(e).as_slice() != e.hash.as_slice() {
            Some(format!("entry {} was changed after it was written", e.seq))
        } else {
            None
        };
        if let Some(problem) = problem {
            return pb::VerifyAuditResponse {
                ok: false,
                entries: log.len() as u64,
                first_bad_seq: expected_seq,
                problem,
            };
        }
        prev = e.hash.clone();
    }
    pb::VerifyAuditResponse {
        ok: true,
        entries: log.len() as u64,
        first_bad_seq: 0,
        problem: String::new(),
    }
}
