//! Making tokens: `CreateEnrollToken` (bounded lifetime, audited) and the functions first start,
//! `vakt-server` and tests use to mint an enrollment or admin token. What happens to tokens
//! afterwards (admin token creation rules, lists, revocation, approval) is `api/tokens.rs`.

use super::AdminApi;
use crate::api::internal;
use crate::timefmt::now_ms;
use crate::token::{self, TokenKind};
use tonic::{Request, Response, Status};
use vakt_proto::pb;

const DEFAULT_ENROLL_TTL_S: u64 = 24 * 3600;
/// Longest enrollment token life: a token baked into an image is still a secret.
const MAX_ENROLL_TTL_S: u64 = 366 * 24 * 3600;

pub(super) async fn create_enroll(
    api: &AdminApi,
    req: Request<pb::CreateEnrollTokenRequest>,
) -> Result<Response<pb::CreatedToken>, Status> {
    let actor = api.authorize(&req, pb::Role::Operator)?;
    let r = req.into_inner();
    let uses = if r.uses == 0 { 1 } else { r.uses };
    let ttl = if r.ttl_s == 0 {
        DEFAULT_ENROLL_TTL_S
    } else {
        r.ttl_s
    };
    if ttl > MAX_ENROLL_TTL_S {
        return Err(Status::invalid_argument(format!(
            "--ttl is at most {} days",
            MAX_ENROLL_TTL_S / 86400
        )));
    }
    let (secret, rec) =
        create_enroll_token(&api.state.store, uses, ttl, &actor.audit_name(), &r.note)
            .await
            .map_err(internal)?;
    let (id, expires_at_ms) = (rec.id, rec.expires_at_ms);
    api.audit(
        &actor,
        "enroll-token.create",
        &id,
        &format!("uses={uses} ttl_s={ttl}"),
    )
    .await?;
    Ok(Response::new(pb::CreatedToken {
        token: secret,
        id,
        expires_at_ms,
        state: String::new(),
    }))
}

/// Creates and stores an enrollment token good for `uses` enrollments over `ttl_s` seconds;
/// returns the secret and its record.
pub async fn create_enroll_token(
    store: &crate::store::Store,
    uses: u32,
    ttl_s: u64,
    created_by: &str,
    note: &str,
) -> Result<(String, pb::EnrollTokenRecord), crate::store::StoreError> {
    let secret = token::generate(TokenKind::Enroll);
    let now = now_ms();
    let ttl_ms = i64::try_from(ttl_s)
        .unwrap_or(i64::MAX)
        .saturating_mul(1000);
    let rec = pb::EnrollTokenRecord {
        id: token::id_of(&secret),
        uses_left: uses,
        uses_total: uses,
        created_at_ms: now,
        expires_at_ms: now.saturating_add(ttl_ms),
        created_by: created_by.to_string(),
        note: note.to_string(),
        ..Default::default()
    };
    store.put_enroll_token(&token::hash(&secret), &rec).await?;
    Ok((secret, rec))
}

/// Creates and stores an admin token; returns (id, secret). Used by the API and by first start.
pub async fn create_admin_token(
    store: &crate::store::Store,
    role: pb::Role,
    name: &str,
    created_by: &str,
) -> Result<(String, String), crate::store::StoreError> {
    crate::api::tokens::mint_admin_token(store, role, name, created_by, 0, false).await
}
