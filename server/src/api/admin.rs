//! `AdminService`: what the `vakt` command line and the console call.
//!
//! Every call starts with [`AdminApi::authorize`]: the bearer token's hash must name a stored,
//! unrevoked admin token whose role is at least the one the call needs. Calls that change state
//! write an audit entry before they answer.

use super::{State, internal};
use crate::timefmt::now_ms;
use crate::token::{self, TokenKind};
use tonic::{Request, Response, Status};
use vakt_proto::pb;
use vakt_proto::pb::admin_service_server::AdminService;

const DEFAULT_ENROLL_TTL_S: u64 = 24 * 3600;
/// Longest enrollment token life: a token baked into an image is still a secret.
const MAX_ENROLL_TTL_S: u64 = 366 * 24 * 3600;

/// Who is calling, once authorised.
#[derive(Debug, Clone)]
pub struct Actor {
    pub name: String,
    pub token_id: String,
    pub role: pb::Role,
}

impl Actor {
    /// How the audit log names this actor.
    pub fn audit_name(&self) -> String {
        format!("token:{}:{}", self.name, self.token_id)
    }
}

#[derive(Debug, Clone)]
pub struct AdminApi {
    state: State,
}

fn role_rank(r: pb::Role) -> u8 {
    match r {
        pb::Role::Unspecified => 0,
        pb::Role::Viewer => 1,
        pb::Role::Operator => 2,
        pb::Role::Admin => 3,
    }
}

pub fn role_name(r: pb::Role) -> &'static str {
    match r {
        pb::Role::Unspecified => "none",
        pb::Role::Viewer => "viewer",
        pb::Role::Operator => "operator",
        pb::Role::Admin => "admin",
    }
}

impl AdminApi {
    pub fn new(state: State) -> Self {
        Self { state }
    }

    /// Checks the bearer token of a request against the role a call needs.
    pub fn authorize<T>(&self, req: &Request<T>, needs: pb::Role) -> Result<Actor, Status> {
        let header = req.metadata().get("authorization").ok_or_else(|| {
            Status::unauthenticated("admin calls need an API token (--token or --token-file)")
        })?;
        let value = header
            .to_str()
            .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
        let presented = value
            .strip_prefix("Bearer ")
            .ok_or_else(|| {
                Status::unauthenticated("the authorization header must be 'Bearer <token>'")
            })?
            .trim();
        let rec = self
            .state
            .store
            .admin_token(&token::hash(presented))
            .map_err(internal)?
            .filter(|r| !r.revoked)
            .ok_or_else(|| {
                Status::unauthenticated(format!(
                    "API token {} is not valid on this server",
                    token::redacted(presented)
                ))
            })?;
        let role = pb::Role::try_from(rec.role).unwrap_or(pb::Role::Unspecified);
        if role_rank(role) < role_rank(needs) {
            return Err(Status::permission_denied(format!(
                "this needs the {} role; token '{}' has {}",
                role_name(needs),
                rec.name,
                role_name(role)
            )));
        }
        Ok(Actor {
            name: rec.name,
            token_id: rec.id,
            role,
        })
    }

    async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), Status> {
        self.state
            .store
            .audit(&actor.audit_name(), action, target, detail, now_ms())
            .await
            .map(|_| ())
            .map_err(internal)
    }

    /// The device named by id or hostname. A hostname shared by several devices is ambiguous.
    pub fn find_device(&self, id: &str) -> Result<pb::DeviceRecord, Status> {
        let id = id.trim();
        if let Some(rec) = self.state.store.device(id).map_err(internal)? {
            return Ok(rec);
        }
        let matches: Vec<_> = self
            .state
            .store
            .devices()
            .map_err(internal)?
            .into_iter()
            .filter(|r| {
                r.device
                    .as_ref()
                    .is_some_and(|d| d.hostname.eq_ignore_ascii_case(id))
            })
            .collect();
        match matches.len() {
            0 => Err(Status::not_found(format!(
                "no device with id or hostname '{id}'"
            ))),
            1 => matches
                .into_iter()
                .next()
                .ok_or_else(|| Status::not_found(format!("no device '{id}'"))),
            n => Err(Status::failed_precondition(format!(
                "{n} devices have the hostname '{id}'; use the device id"
            ))),
        }
    }

    fn device_view(&self, rec: pb::DeviceRecord) -> pb::Device {
        let mut d = rec.device.unwrap_or_default();
        d.connected = self.state.is_connected(&d.id);
        d
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_enroll_token(
        &self,
        req: Request<pb::CreateEnrollTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        let actor = self.authorize(&req, pb::Role::Operator)?;
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
            create_enroll_token(&self.state.store, uses, ttl, &actor.audit_name(), &r.note)
                .await
                .map_err(internal)?;
        let (id, expires_at_ms) = (rec.id, rec.expires_at_ms);
        self.audit(
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
        }))
    }

    async fn create_admin_token(
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
        let (id, secret) = create_admin_token(&self.state.store, role, name, &actor.audit_name())
            .await
            .map_err(internal)?;
        self.audit(
            &actor,
            "admin-token.create",
            &id,
            &format!("name={name} role={}", role_name(role)),
        )
        .await?;
        Ok(Response::new(pb::CreatedToken {
            token: secret,
            id,
            expires_at_ms: 0,
        }))
    }

    async fn list_devices(
        &self,
        req: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        self.authorize(&req, pb::Role::Viewer)?;
        let mut devices: Vec<_> = self
            .state
            .store
            .devices()
            .map_err(internal)?
            .into_iter()
            .map(|r| self.device_view(r))
            .collect();
        devices.sort_by(|a, b| a.hostname.cmp(&b.hostname).then(a.id.cmp(&b.id)));
        Ok(Response::new(pb::ListDevicesResponse { devices }))
    }

    async fn get_device(
        &self,
        req: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::DeviceDetail>, Status> {
        self.authorize(&req, pb::Role::Viewer)?;
        let rec = self.find_device(&req.get_ref().id)?;
        let device = self.device_view(rec);
        let mut sections = self.state.store.sections(&device.id).map_err(internal)?;
        sections.sort_by_key(|s| s.kind);
        Ok(Response::new(pb::DeviceDetail {
            device: Some(device),
            sections,
        }))
    }

    async fn assign_device(
        &self,
        req: Request<pb::AssignDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        let actor = self.authorize(&req, pb::Role::Operator)?;
        let r = req.into_inner();
        let email = r.email.trim().to_lowercase();
        if !looks_like_email(&email) {
            return Err(Status::invalid_argument(format!(
                "'{}' is not an e-mail address",
                r.email
            )));
        }
        let rec = self.find_device(&r.id)?;
        let id = rec.device.map(|d| d.id).unwrap_or_default();
        let updated = self
            .state
            .store
            .update_device(&id, |rec| {
                if let Some(d) = rec.device.as_mut() {
                    d.assigned_to = email.clone();
                }
            })
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no device '{id}'")))?;
        self.state.store.flush().await.map_err(internal)?;
        self.audit(&actor, "device.assign", &id, &email).await?;
        Ok(Response::new(self.device_view(updated)))
    }
}

fn looks_like_email(s: &str) -> bool {
    match s.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !s.contains(char::is_whitespace)
        }
        None => false,
    }
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
    let secret = token::generate(TokenKind::Admin);
    let id = token::id_of(&secret);
    let rec = pb::AdminTokenRecord {
        id: id.clone(),
        name: name.to_string(),
        role: role as i32,
        created_at_ms: now_ms(),
        created_by: created_by.to_string(),
        revoked: false,
    };
    store.put_admin_token(&token::hash(&secret), &rec).await?;
    Ok((id, secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn email_shapes() {
        assert!(looks_like_email("anna.berg@sorsele.se"));
        assert!(!looks_like_email("anna"));
        assert!(!looks_like_email("anna@localhost"));
        assert!(!looks_like_email("an na@x.se"));
    }
}
