//! `AdminService`: what the `vakt` command line and the console call.
//!
//! Every call starts with [`AdminApi::authorize`]: the bearer token's hash must name a stored,
//! unrevoked admin token whose role is at least the one the call needs. Calls that change state
//! write an audit entry before they answer.
//!
//! This file holds the caller (`Actor`), the roles, what every group shares (authorisation, the
//! audit entry, finding a device, a device's view) and the one `impl AdminService`, whose
//! methods hand each call to its group: `devices`, `loss` (loss cases, wipes, the command
//! list), `policy` (the pack and findings), `people` (people, trips, exemptions), `audit`,
//! `minting` (new enrollment tokens, first start's admin token); the token lifecycle is
//! `api/tokens.rs`, device identity `identity.rs`, the signing key
//! `signing.rs`.

mod audit;
mod devices;
mod identity;
mod loss;
mod minting;
mod people;
mod policy;
mod signing;

pub use audit::verify_chain;
pub use minting::{create_admin_token, create_enroll_token};
pub use policy::check_pack;

use super::{State, internal};
use crate::timefmt::now_ms;
use tonic::{Request, Response, Status};
use vakt_proto::pb;
use vakt_proto::pb::admin_service_server::AdminService;

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

/// Roles in order: a role may do everything the ones below it may.
pub fn role_rank(r: pb::Role) -> u8 {
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

/// The bearer token a request presents.
fn bearer<T>(req: &Request<T>) -> Result<&str, Status> {
    let header = req.metadata().get("authorization").ok_or_else(|| {
        Status::unauthenticated("admin calls need an API token (--token or --token-file)")
    })?;
    let value = header
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    value
        .strip_prefix("Bearer ")
        .ok_or_else(|| Status::unauthenticated("the authorization header must be 'Bearer <token>'"))
        .map(str::trim)
}

impl AdminApi {
    pub fn new(state: State) -> Self {
        Self { state }
    }

    /// Checks the bearer token of a request against the role a call needs.
    pub fn authorize<T>(&self, req: &Request<T>, needs: pb::Role) -> Result<Actor, Status> {
        super::tokens::authorize_token(&self.state, bearer(req)?, needs)
    }

    /// [`AdminApi::authorize`] with the token read without holding a runtime thread while
    /// PostgreSQL answers: for the lock path.
    pub async fn authorize_async<T>(
        &self,
        req: &Request<T>,
        needs: pb::Role,
    ) -> Result<Actor, Status> {
        super::tokens::authorize_token_async(&self.state, bearer(req)?, needs).await
    }

    pub(crate) fn state(&self) -> &State {
        &self.state
    }

    /// Appends an entry to the audit log for `actor`; the action is acknowledged only once it
    /// is durable.
    pub(crate) async fn audit(
        &self,
        actor: &Actor,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), Status> {
        self.audit_as(&actor.audit_name(), action, target, detail)
            .await
    }

    /// [`AdminApi::audit`] for an actor known only by its audit name (a console session).
    pub(crate) async fn audit_as(
        &self,
        audit_name: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<(), Status> {
        self.state
            .store
            .audit(audit_name, action, target, detail, now_ms())
            .await
            .map(|_| ())
            .map_err(internal)
    }

    /// The device named by id or hostname. A hostname shared by several devices is ambiguous.
    /// Read through the store's indexes, without decoding other devices, and awaited without
    /// holding a runtime thread while PostgreSQL answers.
    pub async fn find_device(&self, id: &str) -> Result<pb::DeviceRecord, Status> {
        let id = id.trim();
        let store = &self.state.store;
        if let Some(rec) = store.device_async(id).await.map_err(internal)? {
            return Ok(rec);
        }
        let mut matches = store.devices_named(id).await.map_err(internal)?;
        match matches.len() {
            0 => Err(Status::not_found(format!(
                "no device with id or hostname '{id}'"
            ))),
            1 => matches
                .pop()
                .ok_or_else(|| Status::not_found(format!("no device '{id}'"))),
            n => Err(Status::failed_precondition(format!(
                "{n} devices have the hostname '{id}'; use the device id"
            ))),
        }
    }

    pub(crate) fn device_view(&self, rec: pb::DeviceRecord) -> pb::Device {
        self.device_views(vec![rec]).pop().unwrap_or_default()
    }

    /// The views of `recs`, in order: what the store adds to each (hardware peers, the
    /// storage section the wipe readiness is judged from) read for all of them at once, a
    /// thousand devices a read, so a list of 10,000 costs PostgreSQL about 20 round trips,
    /// not 20,000. The readiness is the one the record keeps (judged when its storage
    /// section was stored); only records without a current one (written before it was kept,
    /// until the store opens again) have their sections read and judged here. A store error
    /// leaves those views without what it would have added (the readiness `unknown`, saying
    /// why): a view never fails for it.
    pub(crate) fn device_views(&self, recs: Vec<pb::DeviceRecord>) -> Vec<pb::Device> {
        const CHUNK: usize = 1000;
        let store = &self.state.store;
        let mut out = Vec::with_capacity(recs.len());
        for chunk in recs.chunks(CHUNK) {
            // The records whose readiness is judged here, by their place in the chunk.
            let unjudged: Vec<usize> = (0..chunk.len())
                .filter(|&i| crate::readiness::kept(&chunk[i]).is_none())
                .collect();
            let ids: Vec<&str> = unjudged
                .iter()
                .map(|&i| chunk[i].device.as_ref().map_or("", |d| d.id.as_str()))
                .collect();
            // A read that fails fails for the whole chunk: said once, not once per device.
            let peers = store.hardware_peers_many(chunk).unwrap_or_else(|e| {
                tracing::warn!("hardware peers of {} devices: {e}", chunk.len());
                Vec::new()
            });
            let storage = if ids.is_empty() {
                Ok(Vec::new())
            } else {
                store
                    .section_many(&ids, pb::SectionKind::Storage)
                    .map_err(|e| {
                        tracing::warn!("storage sections of {} devices: {e}", ids.len());
                        e.to_string()
                    })
            };
            for (i, rec) in chunk.iter().enumerate() {
                let mut d = rec.device.clone().unwrap_or_default();
                d.connected = self.state.is_connected(&d.id);
                identity::identity_view(rec, peers.get(i).cloned(), &mut d);
                let readiness = match crate::readiness::kept(rec) {
                    Some(kept) => pb::WipeReadiness {
                        reported_ms: d.last_report_ms,
                        ..kept.clone()
                    },
                    None => {
                        let at = unjudged.binary_search(&i).ok();
                        let section =
                            match storage.as_ref().map(|found| at.and_then(|j| found.get(j))) {
                                Ok(Some(Ok(found))) => Ok(found.as_ref()),
                                // This device's section alone does not decode.
                                Ok(Some(Err(e))) => {
                                    tracing::warn!(device = %d.id, "storage section: {e}");
                                    Err(e.to_string())
                                }
                                Ok(None) => Ok(None),
                                Err(e) => Err(e.clone()),
                            };
                        readiness_of(section, d.last_report_ms)
                    }
                };
                d.wipe_readiness = Some(readiness);
                out.push(d);
            }
        }
        out
    }

    /// What a wipe of the device would achieve now, from its latest storage section (one
    /// read, awaited without holding a runtime thread), with the device's last report
    /// (`reported_ms`).
    async fn wipe_readiness(&self, device_id: &str, reported_ms: i64) -> pb::WipeReadiness {
        let section = self
            .state
            .store
            .section_async(device_id, pb::SectionKind::Storage)
            .await
            .map_err(|e| {
                tracing::warn!(device = %device_id, "storage section: {e}");
                e.to_string()
            });
        readiness_of(
            section.as_ref().map(Option::as_ref).map_err(Clone::clone),
            reported_ms,
        )
    }
}

/// The wipe readiness judged from a device's storage section, or `unknown` saying why the
/// section could not be read, with the device's last report (`reported_ms`).
fn readiness_of(
    section: Result<Option<&pb::Section>, String>,
    reported_ms: i64,
) -> pb::WipeReadiness {
    use crate::readiness::{Readiness, Unknown, from_section};
    match section {
        Ok(s) => from_section(s),
        Err(e) => Readiness::Unknown(Unknown::StoreUnreadable(e)),
    }
    .to_pb(reported_ms)
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn create_enroll_token(
        &self,
        req: Request<pb::CreateEnrollTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        minting::create_enroll(self, req).await
    }

    async fn create_admin_token(
        &self,
        req: Request<pb::CreateAdminTokenRequest>,
    ) -> Result<Response<pb::CreatedToken>, Status> {
        self.tokens_create_admin(req).await
    }

    async fn list_devices(
        &self,
        req: Request<pb::ListDevicesRequest>,
    ) -> Result<Response<pb::ListDevicesResponse>, Status> {
        devices::list(self, req).await
    }

    async fn get_device(
        &self,
        req: Request<pb::GetDeviceRequest>,
    ) -> Result<Response<pb::DeviceDetail>, Status> {
        devices::get(self, req).await
    }

    async fn assign_device(
        &self,
        req: Request<pb::AssignDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        devices::assign(self, req).await
    }

    async fn reenroll_device(
        &self,
        req: Request<pb::ReenrollDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        identity::reenroll(self, req).await
    }

    async fn retire_device(
        &self,
        req: Request<pb::RetireDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        identity::retire(self, req).await
    }

    async fn list_commands(
        &self,
        req: Request<pb::ListCommandsRequest>,
    ) -> Result<Response<pb::ListCommandsResponse>, Status> {
        loss::list_commands(self, req).await
    }

    async fn report_loss(
        &self,
        req: Request<pb::ReportLossRequest>,
    ) -> Result<Response<pb::LossCase>, Status> {
        loss::report(self, req).await
    }

    async fn update_loss(
        &self,
        req: Request<pb::UpdateLossRequest>,
    ) -> Result<Response<pb::LossCase>, Status> {
        loss::update(self, req).await
    }

    async fn get_loss(
        &self,
        req: Request<pb::GetLossRequest>,
    ) -> Result<Response<pb::LossCase>, Status> {
        loss::get(self, req).await
    }

    async fn list_losses(
        &self,
        req: Request<pb::ListLossesRequest>,
    ) -> Result<Response<pb::ListLossesResponse>, Status> {
        loss::list(self, req).await
    }

    async fn recover_device(
        &self,
        req: Request<pb::GetLossRequest>,
    ) -> Result<Response<pb::LossCase>, Status> {
        loss::recover(self, req).await
    }

    async fn get_incident_report(
        &self,
        req: Request<pb::GetLossRequest>,
    ) -> Result<Response<pb::IncidentReport>, Status> {
        loss::incident_report(self, req).await
    }

    async fn request_wipe(
        &self,
        req: Request<pb::RequestWipeRequest>,
    ) -> Result<Response<pb::CommandInfo>, Status> {
        loss::request_wipe(self, req).await
    }

    async fn approve_wipe(
        &self,
        req: Request<pb::ApproveWipeRequest>,
    ) -> Result<Response<pb::CommandInfo>, Status> {
        loss::approve_wipe(self, req).await
    }

    async fn list_findings(
        &self,
        req: Request<pb::ListFindingsRequest>,
    ) -> Result<Response<pb::ListFindingsResponse>, Status> {
        policy::list_findings(self, req).await
    }

    async fn check_policy(
        &self,
        req: Request<pb::PolicyText>,
    ) -> Result<Response<pb::PolicyCheck>, Status> {
        policy::check(self, req).await
    }

    async fn apply_policy(
        &self,
        req: Request<pb::PolicyText>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        policy::apply(self, req).await
    }

    async fn show_policy(
        &self,
        req: Request<pb::ShowPolicyRequest>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        policy::show(self, req).await
    }

    async fn import_people(
        &self,
        req: Request<pb::ImportPeopleRequest>,
    ) -> Result<Response<pb::ImportPeopleResponse>, Status> {
        people::import(self, req).await
    }

    async fn list_people(
        &self,
        req: Request<pb::ListPeopleRequest>,
    ) -> Result<Response<pb::ListPeopleResponse>, Status> {
        people::list(self, req).await
    }

    async fn add_trip(
        &self,
        req: Request<pb::AddTripRequest>,
    ) -> Result<Response<pb::TripInfo>, Status> {
        people::add_trip(self, req).await
    }

    async fn list_trips(
        &self,
        req: Request<pb::ListTripsRequest>,
    ) -> Result<Response<pb::ListTripsResponse>, Status> {
        people::list_trips(self, req).await
    }

    async fn grant_exemption(
        &self,
        req: Request<pb::GrantExemptionRequest>,
    ) -> Result<Response<pb::ExemptionInfo>, Status> {
        people::grant_exemption(self, req).await
    }

    async fn revoke_exemption(
        &self,
        req: Request<pb::RevokeExemptionRequest>,
    ) -> Result<Response<pb::ExemptionInfo>, Status> {
        people::revoke_exemption(self, req).await
    }

    async fn list_exemptions(
        &self,
        req: Request<pb::ListExemptionsRequest>,
    ) -> Result<Response<pb::ListExemptionsResponse>, Status> {
        people::list_exemptions(self, req).await
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        audit::list(self, req).await
    }

    async fn verify_audit(
        &self,
        req: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        audit::verify(self, req).await
    }

    // Token lifecycle (issue 15): the substance is in `api/tokens.rs`.
    async fn list_admin_tokens(
        &self,
        req: Request<pb::ListAdminTokensRequest>,
    ) -> Result<Response<pb::ListAdminTokensResponse>, Status> {
        self.tokens_list_admin(req).await
    }

    async fn revoke_admin_token(
        &self,
        req: Request<pb::RevokeAdminTokenRequest>,
    ) -> Result<Response<pb::AdminTokenInfo>, Status> {
        self.tokens_revoke_admin(req).await
    }

    async fn approve_admin_token(
        &self,
        req: Request<pb::ApproveAdminTokenRequest>,
    ) -> Result<Response<pb::AdminTokenInfo>, Status> {
        self.tokens_approve_admin(req).await
    }

    async fn list_enroll_tokens(
        &self,
        req: Request<pb::ListEnrollTokensRequest>,
    ) -> Result<Response<pb::ListEnrollTokensResponse>, Status> {
        self.tokens_list_enroll(req).await
    }

    async fn revoke_enroll_token(
        &self,
        req: Request<pb::RevokeEnrollTokenRequest>,
    ) -> Result<Response<pb::EnrollTokenInfo>, Status> {
        self.tokens_revoke_enroll(req).await
    }

    async fn get_admin_token_persons(
        &self,
        req: Request<pb::GetAdminTokenPersonsRequest>,
    ) -> Result<Response<pb::AdminTokenPersons>, Status> {
        self.tokens_admin_persons(req).await
    }

    async fn rotate_signing_key(
        &self,
        req: Request<pb::RotateSigningKeyRequest>,
    ) -> Result<Response<pb::SigningKeys>, Status> {
        signing::rotate(self, req).await
    }

    async fn get_signing_keys(
        &self,
        req: Request<pb::GetSigningKeysRequest>,
    ) -> Result<Response<pb::SigningKeys>, Status> {
        signing::show(self, req).await
    }

    async fn retire_signing_keys(
        &self,
        req: Request<pb::RetireSigningKeysRequest>,
    ) -> Result<Response<pb::RetiredSigningKeys>, Status> {
        signing::retire(self, req).await
    }
}

/// Whether an address IT typed has the shape of an e-mail address (devices, loss reports,
/// trips and exemptions name people by it).
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

#[cfg(test)]
mod tests {
    use super::*;

    /// A report whose storage section makes the readiness `partial` (/home not encrypted).
    fn partial_report() -> vakt_proto::model::Report {
        use vakt_proto::model;
        let vol = |mount: &str, device: &str, encrypted: bool| model::Volume {
            mount: mount.into(),
            device: device.into(),
            encrypted,
            scheme: encrypted.then_some(model::CryptScheme::Luks2),
            ..Default::default()
        };
        model::Report {
            storage: model::Storage {
                volumes: vec![
                    vol("/", "/dev/sda2", true),
                    vol("/home", "/dev/sdb1", false),
                ],
                swap: vec![vol("", "/dev/sda3", true)],
                wipe: Some(model::WipePlan {
                    strategy: model::WipeStrategy::LuksErase,
                    devices: Vec::new(),
                }),
                ..Default::default()
            },
            ..crate::testing::laptop_report()
        }
    }

    /// The views show the readiness a record keeps, and judge from the section the records
    /// that keep none or one judged by another version: the same views either way.
    #[tokio::test]
    async fn device_views_show_the_kept_readiness_and_judge_the_rest_alike() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::server::prepare(dir.path(), &[], Default::default())
            .await
            .unwrap();
        let partial = crate::testing::seed_device(&state, "lap-1", &partial_report()).await;
        let none = crate::testing::seed_device(&state, "lap-2", &Default::default()).await;
        let api = AdminApi::new(state.clone());
        let views = |api: &AdminApi| api.device_views(state.store.devices().unwrap());
        let kept = views(&api);
        let readiness = |v: &[pb::Device], id: &str| {
            v.iter()
                .find(|d| d.id == id)
                .and_then(|d| d.wipe_readiness.clone())
                .unwrap()
        };
        let p = readiness(&kept, &partial);
        assert_eq!(p.state, "partial");
        assert_eq!(p.readable.len(), 1, "{p:?}");
        assert!(p.readable[0].contains("/home"), "{p:?}");
        assert_ne!(p.reported_ms, 0, "the view adds the last report");
        assert_eq!(readiness(&kept, &none).state, "unknown");
        let rec = state.store.device(&partial).unwrap().unwrap();
        assert_eq!(rec.readiness.as_ref().map(|r| r.reported_ms), Some(0));

        // Records without it (an older server's), or judged by another version: judged
        // from the section, the same as kept.
        for version in [0, crate::readiness::JUDGEMENT_VERSION + 1] {
            for id in [&partial, &none] {
                state
                    .store
                    .update_device(id, |r| {
                        r.readiness_version = version;
                        if version == 0 {
                            r.readiness = None;
                        }
                    })
                    .unwrap();
            }
            assert_eq!(
                views(&api),
                kept,
                "judged from the section (version {version})"
            );
        }

        // A kept readiness is what the view shows: no section is read for it.
        state
            .store
            .update_device(&partial, |r| {
                r.readiness = Some(pb::WipeReadiness {
                    state: "crypto-erase".into(),
                    ..Default::default()
                });
                r.readiness_version = crate::readiness::JUDGEMENT_VERSION;
            })
            .unwrap();
        assert_eq!(readiness(&views(&api), &partial).state, "crypto-erase");
    }

    #[test]
    fn email_shapes() {
        assert!(looks_like_email("anna.berg@sorsele.se"));
        assert!(!looks_like_email("anna"));
        assert!(!looks_like_email("anna@localhost"));
        assert!(!looks_like_email("an na@x.se"));
    }
}
