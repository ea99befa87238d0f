//! The token lifecycle of the admin API: who a bearer token is (and whether it still works),
//! listing, revoking and approving admin tokens, listing and revoking enrollment tokens.
//!
//! A token's name is a *person*: tokens of the same name (compared trimmed and ignoring case)
//! are the same person. The two-person rules live here:
//! - while at least two admin persons hold active admin-role tokens, an admin-role token for
//!   anyone other than its creator is created awaiting approval, and works only after an admin
//!   person other than its creator and other than the person it names approved it, so one
//!   admin cannot mint a second "person" to approve their own wipe;
//! - a wipe's approver must be a different person from its requester ([`same_person`]);
//! - with a single admin person, approval is not independent, and the CLI and the console say so
//!   ([`AdminTokenPersons`](pb::AdminTokenPersons)).
//!
//! Revoking a token ends the console sessions logged in with it at once
//! ([`RevocationHooks`](crate::state::RevocationHooks)). The last admin token that works
//! without the identity provider cannot be revoked ([`revocation_locks_out`]): single sign-on
//! credentials do not count.

use super::admin::{Actor, AdminApi, role_name, role_rank};
use super::{State, internal};
use crate::timefmt::{now_ms, rfc3339_ms};
use crate::token;
use std::collections::BTreeSet;
use tonic::{Request, Response, Status};
use vakt_proto::pb;

/// Token creation, approval and revocation one at a time, so two concurrent revocations cannot
/// both pass the "not the last admin token" check, nor two creations the person count.
static CHANGES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Where an admin token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AdminTokenState {
    Active,
    AwaitingApproval,
    Revoked,
    Expired,
}

impl AdminTokenState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::AwaitingApproval => "awaiting-approval",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
        }
    }
}

/// An admin token's state at `now_ms`. Revocation wins over expiry, expiry over approval.
pub fn admin_token_state(rec: &pb::AdminTokenRecord, now_ms: i64) -> AdminTokenState {
    if rec.revoked {
        AdminTokenState::Revoked
    } else if rec.expires_at_ms != 0 && now_ms >= rec.expires_at_ms {
        AdminTokenState::Expired
    } else if rec.awaiting_approval {
        AdminTokenState::AwaitingApproval
    } else {
        AdminTokenState::Active
    }
}

/// Where an enrollment token stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EnrollTokenState {
    Active,
    Revoked,
    Expired,
    UsedUp,
}

impl EnrollTokenState {
    pub fn name(self) -> &'static str {
        match self {
            Self::Active => "active",
            Self::Revoked => "revoked",
            Self::Expired => "expired",
            Self::UsedUp => "used-up",
        }
    }
}

/// An enrollment token's state at `now_ms`, in the order the store refuses an enrollment.
pub fn enroll_token_state(rec: &pb::EnrollTokenRecord, now_ms: i64) -> EnrollTokenState {
    if rec.revoked {
        EnrollTokenState::Revoked
    } else if rec.expires_at_ms != 0 && now_ms >= rec.expires_at_ms {
        EnrollTokenState::Expired
    } else if rec.uses_left == 0 {
        EnrollTokenState::UsedUp
    } else {
        EnrollTokenState::Active
    }
}

/// The person an audit name (`token:<name>:<id>`) names. The id never holds a colon, so a
/// name that does is still read whole.
pub fn person_of(audit_name: &str) -> Option<&str> {
    audit_name
        .strip_prefix("token:")?
        .rsplit_once(':')
        .map(|(name, _)| name)
}

/// Whether two token names are the same person: trimmed, ignoring case ("Anna" is "anna ").
pub fn same_person(a: &str, b: &str) -> bool {
    let (a, b) = (a.trim(), b.trim());
    !a.is_empty() && a.to_lowercase() == b.to_lowercase()
}

/// The persons (lowercased names) holding at least one active admin-role token.
pub fn admin_persons<'a>(
    recs: impl IntoIterator<Item = &'a pb::AdminTokenRecord>,
    now_ms: i64,
) -> BTreeSet<String> {
    recs.into_iter()
        .filter(|r| r.role == pb::Role::Admin as i32)
        .filter(|r| admin_token_state(r, now_ms) == AdminTokenState::Active)
        .map(|r| r.name.trim().to_lowercase())
        .collect()
}

/// What a single sign-on credential's `created_by` starts with (then the issuer). An API-made
/// token's creator is an audit name (`token:…`) or `system`, so no caller can forge this.
pub const SSO_CREATOR_PREFIX: &str = "sso:";

/// The `created_by` of a credential minted by a single sign-on through `issuer`.
pub fn sso_creator(issuer: &str) -> String {
    format!("{SSO_CREATOR_PREFIX}{issuer}")
}

/// Whether a token is a console single sign-on credential (minted at sign-in, ended with the
/// session) rather than one IT made and keeps.
pub fn is_sso_credential(rec: &pb::AdminTokenRecord) -> bool {
    rec.created_by.starts_with(SSO_CREATOR_PREFIX)
}

/// Why revoking `target` would lock IT out, if it would: it is an active admin token made
/// through the API and no other such token is active. Single sign-on credentials do not count:
/// each ends with its session, and while the identity provider is down nobody can get one,
/// so they cannot stand in for a token IT keeps. Revoking a credential is never refused.
pub fn revocation_locks_out<'a>(
    target: &pb::AdminTokenRecord,
    others: impl IntoIterator<Item = &'a pb::AdminTokenRecord>,
    now_ms: i64,
) -> Option<String> {
    let kept_admin = |r: &pb::AdminTokenRecord| {
        r.role == pb::Role::Admin as i32
            && admin_token_state(r, now_ms) == AdminTokenState::Active
            && !is_sso_credential(r)
    };
    if !kept_admin(target) || others.into_iter().any(kept_admin) {
        return None;
    }
    Some(format!(
        "admin token {} ('{}') is the last active admin token not made by a single sign-on: \
         revoking it would lock IT out whenever the identity provider is down (sign-in \
         credentials end with their sessions); create another admin token first",
        target.id, target.name
    ))
}

/// Whether a new token of `role` for `name`, created by `creator`, must wait for approval: an
/// admin-role token for someone other than its creator while two admin persons exist.
pub fn needs_approval(
    role: pb::Role,
    name: &str,
    creator: &str,
    admin_persons: &BTreeSet<String>,
) -> bool {
    role == pb::Role::Admin && !same_person(name, creator) && admin_persons.len() >= 2
}

fn when(ms: i64) -> String {
    if ms <= 0 {
        "an unrecorded time".to_string()
    } else {
        rfc3339_ms(ms)
    }
}

/// Who presents `presented`, if it is an admin token that works now with at least `needs`.
/// Revoked, expired and unapproved tokens are refused as unauthenticated, each saying why.
pub fn authorize_token(state: &State, presented: &str, needs: pb::Role) -> Result<Actor, Status> {
    let hash = token::hash(presented);
    let rec = state.store.admin_token(&hash).map_err(internal)?;
    let (actor, touch) = judge_token(presented, rec)?;
    if let Some(now) = touch {
        noted(&actor, state.store.touch_admin_token(&hash, now));
    }
    holds_role(actor, needs)
}

/// [`authorize_token`] without holding a runtime thread while PostgreSQL answers (the lock
/// path): the token's record read and its last use noted asynchronously.
pub async fn authorize_token_async(
    state: &State,
    presented: &str,
    needs: pb::Role,
) -> Result<Actor, Status> {
    let hash = token::hash(presented);
    let rec = state
        .store
        .admin_token_async(&hash)
        .await
        .map_err(internal)?;
    let (actor, touch) = judge_token(presented, rec)?;
    if let Some(now) = touch {
        noted(&actor, state.store.touch_admin_token_async(hash, now).await);
    }
    holds_role(actor, needs)
}

/// Says when the last use of `actor`'s token could not be noted. Bookkeeping only: a failure
/// to note the time must not refuse the call.
fn noted(actor: &Actor, r: Result<(), crate::store::StoreError>) {
    if let Err(e) = r {
        tracing::warn!(token = %actor.token_id, "last use not recorded: {e}");
    }
}

/// Who presents `presented`, from its stored record `rec`, if the token works now, and the
/// time to note as its last use when the one recorded is a minute old or more (the caller
/// writes it, as its runtime allows; a use refused for its role is a use too).
fn judge_token(
    presented: &str,
    rec: Option<pb::AdminTokenRecord>,
) -> Result<(Actor, Option<i64>), Status> {
    let rec = rec.ok_or_else(|| {
        Status::unauthenticated(format!(
            "API token {} is not valid on this server",
            token::redacted(presented)
        ))
    })?;
    let now = now_ms();
    let (id, name) = (&rec.id, &rec.name);
    match admin_token_state(&rec, now) {
        AdminTokenState::Active => {}
        AdminTokenState::Revoked => {
            return Err(Status::unauthenticated(format!(
                "API token {id} ('{name}') was revoked at {} by {}; ask an admin for a new one",
                when(rec.revoked_at_ms),
                rec.revoked_by
            )));
        }
        AdminTokenState::Expired => {
            return Err(Status::unauthenticated(format!(
                "API token {id} ('{name}') expired at {}; ask an admin for a new one",
                rfc3339_ms(rec.expires_at_ms)
            )));
        }
        AdminTokenState::AwaitingApproval => {
            return Err(Status::unauthenticated(format!(
                "API token {id} ('{name}') is awaiting approval: an admin other than {} and \
                 '{name}' must run: vakt admin-token approve {id}",
                rec.created_by
            )));
        }
    }
    let touch = (now.saturating_sub(rec.last_used_at_ms) >= crate::store::LAST_USED_GRANULARITY_MS)
        .then_some(now);
    let role = pb::Role::try_from(rec.role).unwrap_or(pb::Role::Unspecified);
    Ok((
        Actor {
            name: rec.name,
            token_id: rec.id,
            role,
        },
        touch,
    ))
}

/// `actor`, if its role is at least `needs`.
fn holds_role(actor: Actor, needs: pb::Role) -> Result<Actor, Status> {
    if role_rank(actor.role) < role_rank(needs) {
        return Err(Status::permission_denied(format!(
            "this needs the {} role; token '{}' has {}",
            role_name(needs),
            actor.name,
            role_name(actor.role)
        )));
    }
    Ok(actor)
}

/// Stores a new admin token; returns (id, secret). `expires_at_ms` 0 never expires.
pub async fn mint_admin_token(
    store: &crate::store::Store,
    role: pb::Role,
    name: &str,
    created_by: &str,
    expires_at_ms: i64,
    awaiting_approval: bool,
) -> Result<(String, String), crate::store::StoreError> {
    let mut t = token::new_admin_token(role, name, created_by, now_ms());
    t.record.expires_at_ms = expires_at_ms;
    t.record.awaiting_approval = awaiting_approval;
    store.put_admin_token(&t.hash, &t.record).await?;
    Ok((t.record.id, t.secret))
}

/// The one stored record whose public id is `id`.
fn find<'a, M>(
    list: &'a [([u8; 32], M)],
    id: &str,
    id_of: impl Fn(&M) -> &str,
    what: &str,
) -> Result<&'a ([u8; 32], M), Status> {
    let id = id.trim().to_lowercase();
    if id.len() != 12 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Status::invalid_argument(format!(
            "'{id}' is not a token id (12 hex digits, as `vakt {what} list` shows)"
        )));
    }
    let mut hits = list.iter().filter(|(_, r)| id_of(r) == id);
    match (hits.next(), hits.next()) {
        (Some(hit), None) => Ok(hit),
        (None, _) => Err(Status::not_found(format!("no {what} with id {id}"))),
        (Some(_), Some(_)) => Err(Status::failed_precondition(format!(
            "several {what}s have the id {id}; revoke them by another means"
        ))),
    }
}

fn admin_info(rec: &pb::AdminTokenRecord, now: i64) -> pb::AdminTokenInfo {
    pb::AdminTokenInfo {
        id: rec.id.clone(),
        name: rec.name.clone(),
        role: rec.role,
        state: admin_token_state(rec, now).name().to_string(),
        created_at_ms: rec.created_at_ms,
        created_by: rec.created_by.clone(),
        expires_at_ms: rec.expires_at_ms,
        last_used_at_ms: rec.last_used_at_ms,
        approved_by: rec.approved_by.clone(),
        approved_at_ms: rec.approved_at_ms,
        revoked_by: rec.revoked_by.clone(),
        revoked_at_ms: rec.revoked_at_ms,
        kind: admin_token_kind(rec).to_string(),
    }
}

/// What `list` calls a token: one IT keeps, or a console sign-in's credential.
pub fn admin_token_kind(rec: &pb::AdminTokenRecord) -> &'static str {
    if is_sso_credential(rec) {
        "console-session"
    } else {
        "token"
    }
}

fn enroll_info(rec: &pb::EnrollTokenRecord, now: i64) -> pb::EnrollTokenInfo {
    pb::EnrollTokenInfo {
        id: rec.id.clone(),
        state: enroll_token_state(rec, now).name().to_string(),
        uses_left: rec.uses_left,
        uses_total: rec.uses_total,
        created_at_ms: rec.created_at_ms,
        created_by: rec.created_by.clone(),
        expires_at_ms: rec.expires_at_ms,
        note: rec.note.clone(),
        revoked_by: rec.revoked_by.clone(),
        revoked_at_ms: rec.revoked_at_ms,
    }
}

/// Longest admin token life asked for with `--ttl` (ten years): beyond it, "never" says it.
const MAX_ADMIN_TTL_S: u64 = 3660 * 24 * 3600;

impl AdminApi {
    fn store(&self) -> &crate::store::Store {
        &self.state().store
    }

    /// The admin tokens as they stand now.
    fn admin_records(&self) -> Result<Vec<([u8; 32], pb::AdminTokenRecord)>, Status> {
        self.store().admin_tokens().map_err(internal)
    }

    pub(crate) async fn tokens_create_admin(
        &self,
        req: Request<pb::CreateAdminTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        let actor = self.authorize(&req, pb::Role::Admin)?;
        let r = req.into_inner();
        let role = pb::Role::try_from(r.role)
            .ok()
            .filter(|r| *r != pb::Role::Unspecified)
            .ok_or_else(|| Status::invalid_argument("--role must be viewer, operator or admin"))?;
        let name = r.name.trim();
        if name.is_empty() || name.len() > 64 || name.contains(char::is_control) {
            return Err(Status::invalid_argument(
                "--name must be 1 to 64 printable characters",
            ));
        }
        if r.ttl_s > MAX_ADMIN_TTL_S {
            return Err(Status::invalid_argument(
                "--ttl is at most 3660 days; leave it out for a token that does not expire",
            ));
        }
        let _one_at_a_time = CHANGES.lock().await;
        let now = now_ms();
        let expires_at_ms = match r.ttl_s {
            0 => 0,
            s => now.saturating_add(i64::try_from(s.saturating_mul(1000)).unwrap_or(i64::MAX)),
        };
        let records = self.admin_records()?;
        let persons = admin_persons(records.iter().map(|(_, r)| r), now);
        let awaiting = needs_approval(role, name, &actor.name, &persons);
        let (id, secret) = mint_admin_token(
            self.store(),
            role,
            name,
            &actor.audit_name(),
            expires_at_ms,
            awaiting,
        )
        .await
        .map_err(internal)?;
        let state = if awaiting {
            AdminTokenState::AwaitingApproval
        } else {
            AdminTokenState::Active
        };
        self.audit(
            &actor,
            "admin-token.create",
            &id,
            &format!(
                "name={name} role={} state={} expires={}",
                role_name(role),
                state.name(),
                rfc3339_ms(expires_at_ms)
            ),
        )
        .await?;
        Ok(Response::new(pb::CreatedToken {
            token: secret,
            id,
            expires_at_ms,
            state: state.name().to_string(),
        }))
    }

    pub(crate) async fn tokens_list_admin(
        &self,
        req: Request<pb::ListAdminTokensRequest>,
    ) -> Result<Response<pb::ListAdminTokensResponse>, Status> {
        self.authorize(&req, pb::Role::Admin)?;
        let now = now_ms();
        let mut tokens: Vec<_> = self
            .admin_records()?
            .iter()
            .map(|(_, r)| admin_info(r, now))
            .collect();
        tokens.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(Response::new(pb::ListAdminTokensResponse { tokens }))
    }

    pub(crate) async fn tokens_revoke_admin(
        &self,
        req: Request<pb::RevokeAdminTokenRequest>,
    ) -> Result<Response<pb::AdminTokenInfo>, Status> {
        let actor = self.authorize(&req, pb::Role::Admin)?;
        let _one_at_a_time = CHANGES.lock().await;
        let now = now_ms();
        let records = self.admin_records()?;
        let (hash, rec) = find(&records, &req.get_ref().id, |r| &r.id, "admin-token")?.clone();
        if rec.revoked {
            return Err(Status::failed_precondition(format!(
                "admin token {} ('{}') is already revoked",
                rec.id, rec.name
            )));
        }
        let others = records.iter().filter(|(h, _)| *h != hash).map(|(_, r)| r);
        if let Some(why) = revocation_locks_out(&rec, others, now) {
            return Err(Status::failed_precondition(why));
        }
        let me = actor.audit_name();
        let updated = self
            .store()
            .update_admin_token(&hash, |r| {
                r.revoked = true;
                r.revoked_at_ms = now;
                r.revoked_by = me.clone();
            })
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no admin-token with id {}", rec.id)))?;
        self.state().revocations.revoked(&hash);
        self.audit(
            &actor,
            "admin-token.revoke",
            &rec.id,
            &format!("name={} role={}", rec.name, role_name_of(rec.role)),
        )
        .await?;
        Ok(Response::new(admin_info(&updated, now)))
    }

    pub(crate) async fn tokens_approve_admin(
        &self,
        req: Request<pb::ApproveAdminTokenRequest>,
    ) -> Result<Response<pb::AdminTokenInfo>, Status> {
        let actor = self.authorize(&req, pb::Role::Admin)?;
        let _one_at_a_time = CHANGES.lock().await;
        let now = now_ms();
        let (hash, rec) = find(
            &self.admin_records()?,
            &req.get_ref().id,
            |r| &r.id,
            "admin-token",
        )?
        .clone();
        let state = admin_token_state(&rec, now);
        if state != AdminTokenState::AwaitingApproval {
            return Err(Status::failed_precondition(format!(
                "admin token {} ('{}') is {}, not awaiting approval",
                rec.id,
                rec.name,
                state.name()
            )));
        }
        let creator = person_of(&rec.created_by).unwrap_or(&rec.created_by);
        if same_person(&actor.name, creator) || same_person(&actor.name, &rec.name) {
            self.audit(
                &actor,
                "admin-token.approve-refused",
                &rec.id,
                &format!("name={} created_by={}", rec.name, rec.created_by),
            )
            .await?;
            return Err(Status::permission_denied(format!(
                "admin token {} ('{}') was created by {}; it must be approved by an admin person \
                 other than '{creator}' and '{}'",
                rec.id, rec.name, rec.created_by, rec.name
            )));
        }
        let me = actor.audit_name();
        let updated = self
            .store()
            .update_admin_token(&hash, |r| {
                r.awaiting_approval = false;
                r.approved_by = me.clone();
                r.approved_at_ms = now;
            })
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no admin-token with id {}", rec.id)))?;
        self.audit(
            &actor,
            "admin-token.approve",
            &rec.id,
            &format!("name={} created_by={}", rec.name, rec.created_by),
        )
        .await?;
        Ok(Response::new(admin_info(&updated, now)))
    }

    pub(crate) async fn tokens_list_enroll(
        &self,
        req: Request<pb::ListEnrollTokensRequest>,
    ) -> Result<Response<pb::ListEnrollTokensResponse>, Status> {
        self.authorize(&req, pb::Role::Admin)?;
        let now = now_ms();
        let mut tokens: Vec<_> = self
            .store()
            .enroll_tokens()
            .map_err(internal)?
            .iter()
            .map(|(_, r)| enroll_info(r, now))
            .collect();
        tokens.sort_by(|a, b| (a.created_at_ms, &a.id).cmp(&(b.created_at_ms, &b.id)));
        Ok(Response::new(pb::ListEnrollTokensResponse { tokens }))
    }

    pub(crate) async fn tokens_revoke_enroll(
        &self,
        req: Request<pb::RevokeEnrollTokenRequest>,
    ) -> Result<Response<pb::EnrollTokenInfo>, Status> {
        let actor = self.authorize(&req, pb::Role::Admin)?;
        let _one_at_a_time = CHANGES.lock().await;
        let now = now_ms();
        let all = self.store().enroll_tokens().map_err(internal)?;
        let (hash, rec) = find(&all, &req.get_ref().id, |r| &r.id, "enroll-token")?.clone();
        if rec.revoked {
            return Err(Status::failed_precondition(format!(
                "enrollment token {} is already revoked",
                rec.id
            )));
        }
        let me = actor.audit_name();
        let updated = self
            .store()
            .update_enroll_token(&hash, |r| {
                r.revoked = true;
                r.revoked_at_ms = now;
                r.revoked_by = me.clone();
            })
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no enroll-token with id {}", rec.id)))?;
        self.audit(
            &actor,
            "enroll-token.revoke",
            &rec.id,
            &format!("uses_left={} note={}", rec.uses_left, rec.note),
        )
        .await?;
        Ok(Response::new(enroll_info(&updated, now)))
    }

    pub(crate) async fn tokens_admin_persons(
        &self,
        req: Request<pb::GetAdminTokenPersonsRequest>,
    ) -> Result<Response<pb::AdminTokenPersons>, Status> {
        self.authorize(&req, pb::Role::Viewer)?;
        let records = self.admin_records()?;
        let n = admin_persons(records.iter().map(|(_, r)| r), now_ms()).len();
        Ok(Response::new(pb::AdminTokenPersons {
            admin_persons: u32::try_from(n).unwrap_or(u32::MAX),
            independent_approval: n >= 2,
        }))
    }
}

fn role_name_of(raw: i32) -> &'static str {
    role_name(pb::Role::try_from(raw).unwrap_or(pb::Role::Unspecified))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    fn admin(name: &str) -> pb::AdminTokenRecord {
        pb::AdminTokenRecord {
            name: name.into(),
            role: pb::Role::Admin as i32,
            ..Default::default()
        }
    }

    #[test]
    fn admin_token_states_in_order() {
        let mut r = admin("anna");
        assert_eq!(admin_token_state(&r, 5), AdminTokenState::Active);
        r.awaiting_approval = true;
        assert_eq!(admin_token_state(&r, 5), AdminTokenState::AwaitingApproval);
        r.expires_at_ms = 5;
        assert_eq!(admin_token_state(&r, 4), AdminTokenState::AwaitingApproval);
        assert_eq!(admin_token_state(&r, 5), AdminTokenState::Expired);
        r.revoked = true;
        assert_eq!(admin_token_state(&r, 5), AdminTokenState::Revoked);
        assert_eq!(
            AdminTokenState::AwaitingApproval.name(),
            "awaiting-approval"
        );
    }

    #[test]
    fn enroll_token_states_in_order() {
        let mut r = pb::EnrollTokenRecord {
            uses_left: 1,
            expires_at_ms: 10,
            ..Default::default()
        };
        assert_eq!(enroll_token_state(&r, 9), EnrollTokenState::Active);
        assert_eq!(enroll_token_state(&r, 10), EnrollTokenState::Expired);
        r.uses_left = 0;
        assert_eq!(enroll_token_state(&r, 9), EnrollTokenState::UsedUp);
        r.revoked = true;
        assert_eq!(enroll_token_state(&r, 10), EnrollTokenState::Revoked);
    }

    #[test]
    fn persons_are_names_of_active_admin_tokens() {
        let mut viewer = admin("carl");
        viewer.role = pb::Role::Viewer as i32;
        let mut revoked = admin("dora");
        revoked.revoked = true;
        let mut waiting = admin("erik");
        waiting.awaiting_approval = true;
        let recs = [
            admin("Anna"),
            admin("anna "),
            admin("bo"),
            viewer,
            revoked,
            waiting,
        ];
        let p = admin_persons(&recs, 0);
        assert_eq!(p.into_iter().collect::<Vec<_>>(), ["anna", "bo"]);
    }

    #[test]
    fn approval_is_needed_for_another_admin_person_once_two_exist() {
        let one: BTreeSet<String> = ["anna".to_string()].into();
        let two: BTreeSet<String> = ["anna".to_string(), "bo".to_string()].into();
        // One admin person: tokens under any name are active (and wipes say so).
        assert!(!needs_approval(pb::Role::Admin, "puppet", "anna", &one));
        // Two: an admin token for someone else, new or existing, waits.
        assert!(needs_approval(pb::Role::Admin, "puppet", "anna", &two));
        assert!(needs_approval(pb::Role::Admin, "bo", "anna", &two));
        // ... but not one for yourself, nor a token that cannot approve wipes.
        assert!(!needs_approval(pb::Role::Admin, "Anna", "anna", &two));
        assert!(!needs_approval(pb::Role::Operator, "puppet", "anna", &two));
    }

    #[test]
    fn sign_in_credentials_do_not_keep_the_last_kept_admin_token() {
        let kept = admin("initial-admin");
        let mut sso = admin("anna@example.org");
        sso.created_by = sso_creator("https://idp.example.org");
        assert!(is_sso_credential(&sso) && !is_sso_credential(&kept));
        // A live sign-in credential is no reason to let the last kept token go...
        let why = revocation_locks_out(&kept, [&sso], 0).expect("refused");
        assert!(
            why.contains("single sign-on") && why.contains("lock IT out"),
            "{why}"
        );
        // ... while the credential itself may always be revoked,
        assert_eq!(revocation_locks_out(&sso, [&kept], 0), None);
        assert_eq!(revocation_locks_out(&sso, [], 0), None);
        // and a second kept admin token, or a target that is not an active admin, lets it go.
        assert_eq!(revocation_locks_out(&kept, [&sso, &admin("bo")], 0), None);
        let mut viewer = admin("carl");
        viewer.role = pb::Role::Viewer as i32;
        assert_eq!(revocation_locks_out(&viewer, [], 0), None);
        let mut expired = admin("bo");
        expired.expires_at_ms = 1;
        assert!(revocation_locks_out(&kept, [&expired], 1).is_some());
    }

    #[test]
    fn the_person_of_an_audit_name() {
        assert_eq!(person_of("token:anna:0123456789ab"), Some("anna"));
        assert_eq!(person_of("token:a:b:0123456789ab"), Some("a:b"));
        assert_eq!(person_of("system"), None);
        assert!(same_person("Anna", " anna"));
        assert!(!same_person("anna", "anna2"));
        assert!(!same_person("", ""));
    }

    #[test]
    fn hooks_of_dropped_consoles_go() {
        let hooks = crate::state::RevocationHooks::default();
        let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let h = hits.clone();
        hooks.register(move |_| {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            false
        });
        hooks.revoked(&[0; 32]);
        hooks.revoked(&[0; 32]);
        assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}
