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

/// Roles in order: a role may do everything the ones below it may.
/// How many of a file's errors an answer lists, and how long each may be: an answer's message
/// is a gRPC header, which clients refuse past a few tens of KiB.
const MAX_ERROR_LINES: usize = 50;
const MAX_ERROR_LINE_CHARS: usize = 300;

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
        super::tokens::authorize_token(&self.state, presented, needs)
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

    /// Step 4 of section 8.1: the manager of the person the device is assigned to hears of
    /// the loss (and orders a replacement). Queued in the outbox; the case records to whom.
    async fn tell_manager_of_loss(&self, mut case: pb::LossCase) -> Result<pb::LossCase, Status> {
        let people = crate::findings::people(&self.state).map_err(internal)?;
        let person = people.iter().find(|p| {
            !case.assigned_to.is_empty() && p.email.eq_ignore_ascii_case(&case.assigned_to)
        });
        let Some(manager) = person
            .and_then(|p| p.manager_email.clone())
            .or_else(|| self.state.notify.it_address.clone())
        else {
            tracing::info!(case = %case.id, "loss reported; no manager known to tell");
            return Ok(case);
        };
        let who = person.map_or(case.assigned_to.clone(), |p| p.name.clone());
        let subject = format!("Förlust anmäld: {} ({who}) / Loss reported", case.hostname);
        let body = format!(
            "Hej,\n\n{who} har förlorat datorn {host} ({id}). IT har öppnat ärende {cid} enligt \
             avsnitt 8.1 i policyn för telefoni, mobilteknisk utrustning samt e-postanvändning, \
             och datorn låses på distans. Som närmaste chef ska du informeras och beställa \
             ersättningsutrustning.\n\n-- \n\nHello,\n\n{who} has lost the computer {host} ({id}). \
             IT opened case {cid} under section 8.1 of the policy, and the computer is being locked \
             remotely. As the closest manager you are to be told and to order a replacement.\n",
            host = case.hostname,
            id = case.device_id,
            cid = case.id,
        );
        crate::notify::enqueue(&self.state, std::slice::from_ref(&manager), &subject, &body)
            .await
            .map_err(internal)?;
        case.manager = manager;
        self.state
            .store
            .save_loss(&case, &[], None)
            .await
            .map_err(internal)?;
        Ok(case)
    }

    /// The open loss case of a device, if any.
    fn open_case(&self, device_id: &str) -> Result<Option<pb::LossCase>, Status> {
        Ok(self
            .state
            .store
            .losses()
            .map_err(internal)?
            .into_iter()
            .rev()
            .find(|c| c.device_id == device_id && c.open))
    }

    /// A case by its id, or the latest case of a device named by id or hostname.
    fn case_for(&self, what: &str) -> Result<pb::LossCase, Status> {
        let what = what.trim();
        if let Some(c) = self.state.store.loss(what).map_err(internal)? {
            return Ok(c);
        }
        let d = self.find_device(what)?.device.unwrap_or_default();
        self.state
            .store
            .losses()
            .map_err(internal)?
            .into_iter()
            .rev()
            .find(|c| c.device_id == d.id)
            .ok_or_else(|| Status::not_found(format!("{} has no loss case", d.hostname)))
    }

    pub(crate) fn device_view(&self, rec: pb::DeviceRecord) -> pb::Device {
        let mut d = rec.device.clone().unwrap_or_default();
        d.connected = self.state.is_connected(&d.id);
        if let Err(e) = super::admin_identity::identity_view(self, &rec, &mut d) {
            tracing::warn!(device = %d.id, "identity view: {}", e.message());
        }
        d.wipe_readiness = Some(self.wipe_readiness(&d.id));
        d
    }

    /// What a wipe of the device would achieve now, from its latest storage section (one
    /// read). A store error makes it `unknown` with the reason: a view never fails for it.
    fn wipe_readiness(&self, device_id: &str) -> pb::WipeReadiness {
        match self
            .state
            .store
            .section(device_id, pb::SectionKind::Storage)
        {
            Ok(s) => crate::readiness::from_section(s.as_ref()).to_pb(),
            Err(e) => {
                tracing::warn!(device = %device_id, "storage section: {e}");
                crate::readiness::Readiness::Unknown(format!("the store could not be read: {e}"))
                    .to_pb()
            }
        }
    }

    /// A loss case as shown: with what a wipe would achieve now (never stored in the case).
    fn loss_view(&self, mut case: pb::LossCase) -> pb::LossCase {
        case.wipe_readiness = Some(self.wipe_readiness(&case.device_id));
        case
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
            state: String::new(),
        }))
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
        crate::findings::evaluate_device(&self.state, &id)
            .await
            .map_err(internal)?;
        Ok(Response::new(self.device_view(updated)))
    }

    async fn reenroll_device(
        &self,
        req: Request<pb::ReenrollDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        super::admin_identity::reenroll(self, req).await
    }

    async fn retire_device(
        &self,
        req: Request<pb::RetireDeviceRequest>,
    ) -> Result<Response<pb::Device>, Status> {
        super::admin_identity::retire(self, req).await
    }

    async fn list_commands(
        &self,
        req: Request<pb::ListCommandsRequest>,
    ) -> Result<Response<pb::ListCommandsResponse>, Status> {
        self.authorize(&req, pb::Role::Viewer)?;
        let device = req.get_ref().device.trim();
        let filter = if device.is_empty() {
            None
        } else {
            Some(
                self.find_device(device)?
                    .device
                    .map(|d| d.id)
                    .unwrap_or_default(),
            )
        };
        let commands = self
            .state
            .store
            .commands()
            .map_err(internal)?
            .into_iter()
            .filter(|c| filter.as_ref().is_none_or(|d| &c.device_id == d))
            .collect();
        Ok(Response::new(pb::ListCommandsResponse { commands }))
    }

    async fn report_loss(
        &self,
        req: Request<pb::ReportLossRequest>,
    ) -> Result<Response<pb::LossCase>, Status> {
        // Stage times, logged when the whole call is slow: a lost laptop's lock is the one
        // path IT times with a stopwatch, so a slow one must say where its time went.
        let mut stages = Stages::start();
        let actor = self.authorize(&req, pb::Role::Operator)?;
        let r = req.into_inner();
        let rec = self.find_device(&r.device)?;
        let d = rec.device.unwrap_or_default();
        stages.lap("lookup");
        if let Some(open) = self.open_case(&d.id)? {
            return Err(Status::already_exists(format!(
                "{} already has an open loss case {}; see `vakt loss show {}`",
                d.hostname, open.id, d.id
            )));
        }
        let reported_by = r.reported_by.trim().to_lowercase();
        if !reported_by.is_empty() && !looks_like_email(&reported_by) {
            return Err(Status::invalid_argument(format!(
                "--reported-by '{}' is not an e-mail address",
                r.reported_by
            )));
        }
        let now = now_ms();
        let case_id = crate::loss::new_id(now);
        let mut lock = crate::commands::new_command(
            &d.id,
            pb::CommandKind::Lock,
            &actor.audit_name(),
            &format!("loss case {case_id}"),
            now,
        );
        lock.loss_case_id = case_id.clone();
        let case = pb::LossCase {
            id: case_id.clone(),
            device_id: d.id.clone(),
            open: true,
            opened_ms: now,
            reported_by: if reported_by.is_empty() {
                d.assigned_to.clone()
            } else {
                reported_by
            },
            opened_by: actor.audit_name(),
            police_report: r.police_report.trim().to_string(),
            lock_command_id: lock.id.clone(),
            notes: r.notes,
            hostname: d.hostname.clone(),
            assigned_to: d.assigned_to.clone(),
            serial: d.serial.clone(),
            model: d.model.clone(),
            last_seen_ms: d.last_seen_ms,
            ..Default::default()
        };
        self.state
            .store
            .save_loss(
                &case,
                std::slice::from_ref(&lock),
                Some(pb::DeviceState::Lost),
            )
            .await
            .map_err(internal)?;
        stages.lap("open-case");
        // The lock is durable in the queue: push it now, so a connected laptop locks while the
        // audit entry is written rather than after (each waits for a flush under load).
        let detail = format!("case={case_id} lock={}", lock.id);
        let delivered = crate::commands::deliver(&self.state, &d.id);
        let audited = self.audit(&actor, "loss.report", &d.id, &detail);
        let (delivered, audited) = tokio::join!(delivered, audited);
        audited?;
        delivered.map_err(internal)?;
        stages.lap("push-and-audit");
        let case = self.tell_manager_of_loss(case).await?;
        crate::notify::enqueue_event(
            &self.state,
            &serde_json::json!({"event": "loss.reported", "case": {
                "id": case.id, "device": case.device_id, "hostname": case.hostname,
                "assigned_to": case.assigned_to, "reported_by": case.reported_by,
                "lock_command": case.lock_command_id,
            }}),
        )
        .await
        .map_err(internal)?;
        stages.lap("notify");
        stages.warn_if_slower_than(std::time::Duration::from_millis(100), "loss report", &d.id);
        Ok(Response::new(self.loss_view(case)))
    }

    async fn update_loss(
        &self,
        req: Request<pb::UpdateLossRequest>,
    ) -> Result<Response<pb::LossCase>, Status> {
        let actor = self.authorize(&req, pb::Role::Operator)?;
        let r = req.into_inner();
        let mut case = self.case_for(&r.device)?;
        if !case.open {
            return Err(Status::failed_precondition(format!(
                "loss case {} is closed",
                case.id
            )));
        }
        let now = now_ms();
        let mut changes = Vec::new();
        if r.sim_blocked && case.sim_blocked_ms == 0 {
            case.sim_blocked_ms = now;
            case.sim_blocked_by = actor.audit_name();
            changes.push("sim-blocked".to_string());
        }
        if !r.police_report.trim().is_empty() {
            case.police_report = r.police_report.trim().to_string();
            case.no_police_report_reason.clear();
            changes.push(format!("police-report={}", case.police_report));
        }
        if !r.no_police_report_reason.trim().is_empty() {
            if !case.police_report.is_empty() && r.police_report.trim().is_empty() {
                return Err(Status::failed_precondition(format!(
                    "the case already has police report {}; a reason for not reporting contradicts it",
                    case.police_report
                )));
            }
            case.no_police_report_reason = r.no_police_report_reason.trim().to_string();
            changes.push("no-police-report".to_string());
        }
        if r.incident_report_sent && case.incident_report_sent_ms == 0 {
            case.incident_report_sent_ms = now;
            changes.push("incident-report-sent".to_string());
        }
        if r.manager_informed && case.manager_informed_ms == 0 {
            case.manager_informed_ms = now;
            changes.push("manager-informed".to_string());
        }
        if !r.notes.trim().is_empty() {
            if !case.notes.is_empty() {
                case.notes.push('\n');
            }
            case.notes.push_str(r.notes.trim());
            changes.push("notes".to_string());
        }
        if changes.is_empty() {
            return Err(Status::invalid_argument(
                "nothing to record: pass --sim-blocked, --police-report, --no-police-report, --incident-report-sent, --manager-informed or --notes",
            ));
        }
        self.state
            .store
            .save_loss(&case, &[], None)
            .await
            .map_err(internal)?;
        self.audit(
            &actor,
            "loss.update",
            &case.device_id,
            &format!("case={} {}", case.id, changes.join(" ")),
        )
        .await?;
        Ok(Response::new(case))
    }

    async fn get_loss(
        &self,
        req: Request<pb::GetLossRequest>,
    ) -> Result<Response<pb::LossCase>, Status> {
        self.authorize(&req, pb::Role::Viewer)?;
        Ok(Response::new(
            self.loss_view(self.case_for(&req.get_ref().device)?),
        ))
    }

    async fn list_losses(
        &self,
        req: Request<pb::ListLossesRequest>,
    ) -> Result<Response<pb::ListLossesResponse>, Status> {
        self.authorize(&req, pb::Role::Viewer)?;
        let open_only = req.get_ref().open_only;
        let mut cases: Vec<_> = self
            .state
            .store
            .losses()
            .map_err(internal)?
            .into_iter()
            .filter(|c| c.open || !open_only)
            .map(|c| self.loss_view(c))
            .collect();
        cases.sort_by(|a, b| b.opened_ms.cmp(&a.opened_ms).then(b.id.cmp(&a.id)));
        Ok(Response::new(pb::ListLossesResponse { cases }))
    }

    async fn recover_device(
        &self,
        req: Request<pb::GetLossRequest>,
    ) -> Result<Response<pb::LossCase>, Status> {
        let actor = self.authorize(&req, pb::Role::Operator)?;
        let mut case = self.case_for(&req.get_ref().device)?;
        if !case.open {
            return Err(Status::failed_precondition(format!(
                "loss case {} was already closed at {}",
                case.id,
                crate::timefmt::rfc3339_ms(case.closed_ms)
            )));
        }
        let now = now_ms();
        let mut commands = Vec::new();
        // A lock that never reached the laptop is withdrawn rather than delivered late.
        let mut lock_reached_device = true;
        if let Some(mut lock) = self
            .state
            .store
            .command(&case.lock_command_id)
            .map_err(internal)?
            && lock.state == pb::CommandState::Pending as i32
        {
            lock.state = pb::CommandState::Expired as i32;
            lock.detail = "withdrawn: the device was recovered before the lock reached it".into();
            lock.updated_ms = now;
            lock.finished_ms = now;
            lock_reached_device = false;
            commands.push(lock);
        }
        let mut unlock = crate::commands::new_command(
            &case.device_id,
            pb::CommandKind::Unlock,
            &actor.audit_name(),
            &format!("loss case {} recovered", case.id),
            now,
        );
        unlock.loss_case_id = case.id.clone();
        case.unlock_command_id = unlock.id.clone();
        case.open = false;
        case.closed_ms = now;
        case.closed_by = actor.audit_name();
        commands.push(unlock);
        let device_state = if lock_reached_device {
            pb::DeviceState::Locked
        } else {
            pb::DeviceState::Active
        };
        self.state
            .store
            .save_loss(&case, &commands, Some(device_state))
            .await
            .map_err(internal)?;
        self.audit(
            &actor,
            "loss.recovered",
            &case.device_id,
            &format!("case={} unlock={}", case.id, case.unlock_command_id),
        )
        .await?;
        crate::commands::deliver(&self.state, &case.device_id)
            .await
            .map_err(internal)?;
        Ok(Response::new(case))
    }

    async fn get_incident_report(
        &self,
        req: Request<pb::GetLossRequest>,
    ) -> Result<Response<pb::IncidentReport>, Status> {
        self.authorize(&req, pb::Role::Viewer)?;
        let case = self.case_for(&req.get_ref().device)?;
        let commands: Vec<_> = self
            .state
            .store
            .commands()
            .map_err(internal)?
            .into_iter()
            .filter(|c| c.loss_case_id == case.id)
            .collect();
        Ok(Response::new(pb::IncidentReport {
            markdown: crate::loss::incident_markdown(&case, &commands),
            html: crate::loss::incident_html(&case, &commands),
        }))
    }

    async fn request_wipe(
        &self,
        req: Request<pb::RequestWipeRequest>,
    ) -> Result<Response<pb::CommandInfo>, Status> {
        let actor = self.authorize(&req, pb::Role::Admin)?;
        let r = req.into_inner();
        let reason = r.reason.trim();
        if reason.len() < 5 {
            return Err(Status::invalid_argument(
                "a wipe needs a --reason a second admin can judge (at least a few words)",
            ));
        }
        let rec = self.find_device(&r.device)?;
        let d = rec.device.unwrap_or_default();
        let now = now_ms();
        let mut cmd = crate::commands::new_command(
            &d.id,
            pb::CommandKind::Wipe,
            &actor.audit_name(),
            reason,
            now,
        );
        match self.open_case(&d.id)? {
            Some(mut case) => {
                cmd.loss_case_id = case.id.clone();
                case.wipe_command_ids.push(cmd.id.clone());
                self.state
                    .store
                    .save_loss(&case, std::slice::from_ref(&cmd), None)
                    .await
                    .map_err(internal)?;
            }
            None => self.state.store.put_command(&cmd).await.map_err(internal)?,
        }
        self.audit(
            &actor,
            "wipe.request",
            &d.id,
            &format!("command={} reason={reason}", cmd.id),
        )
        .await?;
        Ok(Response::new(cmd))
    }

    async fn approve_wipe(
        &self,
        req: Request<pb::ApproveWipeRequest>,
    ) -> Result<Response<pb::CommandInfo>, Status> {
        let actor = self.authorize(&req, pb::Role::Admin)?;
        let id = req.get_ref().command_id.trim().to_string();
        let cmd = self
            .state
            .store
            .command(&id)
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("no command '{id}'")))?;
        if cmd.kind != pb::CommandKind::Wipe as i32 {
            return Err(Status::failed_precondition(format!("{id} is not a wipe")));
        }
        if cmd.state != pb::CommandState::AwaitingApproval as i32 {
            return Err(Status::failed_precondition(format!(
                "{id} is {}, not awaiting approval",
                crate::commands::state_name(cmd.state)
            )));
        }
        let now = now_ms();
        if cmd.expires_ms <= now {
            crate::commands::expire_due(&self.state, now)
                .await
                .map_err(internal)?;
            return Err(Status::failed_precondition(format!(
                "{id}: the approval window closed at {}; request the wipe again",
                crate::timefmt::rfc3339_ms(cmd.expires_ms)
            )));
        }
        // Two different persons: neither the same token nor a token of the same name approves.
        let me = actor.audit_name();
        let same_person = cmd.requested_by == me
            || super::tokens::person_of(&cmd.requested_by)
                .is_some_and(|p| super::tokens::same_person(p, &actor.name))
            || cmd.requested_by.rsplit(':').next() == Some(actor.token_id.as_str());
        if same_person {
            self.audit(
                &actor,
                "wipe.approve-refused",
                &cmd.device_id,
                &format!("command={id} self-approval"),
            )
            .await?;
            return Err(Status::permission_denied(format!(
                "{id} was requested by {}; a wipe must be approved by a different admin: another person, not '{}'",
                cmd.requested_by, actor.name
            )));
        }
        let approved = self
            .state
            .store
            .update_command(&id, |c| {
                // Checked again in the transaction: another admin on another server may have
                // approved or cancelled it, or it expired, since it was read above.
                if c.state != pb::CommandState::AwaitingApproval as i32 {
                    return false;
                }
                c.state = pb::CommandState::Pending as i32;
                c.approved_by = me.clone();
                c.updated_ms = now;
                c.expires_ms = now.saturating_add(crate::commands::WIPE_DELIVERY_TTL_MS);
                true
            })
            .await
            .map_err(internal)?
            .ok_or_else(|| {
                Status::failed_precondition(format!(
                    "{id} is no longer awaiting approval (approved, cancelled or expired meanwhile)"
                ))
            })?;
        self.audit(
            &actor,
            "wipe.approve",
            &cmd.device_id,
            &format!("command={id}"),
        )
        .await?;
        crate::commands::deliver(&self.state, &cmd.device_id)
            .await
            .map_err(internal)?;
        Ok(Response::new(approved))
    }

    async fn list_findings(
        &self,
        req: Request<pb::ListFindingsRequest>,
    ) -> Result<Response<pb::ListFindingsResponse>, Status> {
        self.authorize(&req, pb::Role::Viewer)?;
        let r = req.into_inner();
        let device = if r.device.trim().is_empty() {
            None
        } else {
            Some(
                self.find_device(&r.device)?
                    .device
                    .map(|d| d.id)
                    .unwrap_or_default(),
            )
        };
        let hostnames: std::collections::HashMap<String, String> = self
            .state
            .store
            .devices()
            .map_err(internal)?
            .into_iter()
            .filter_map(|r| r.device.map(|d| (d.id, d.hostname)))
            .collect();
        let mut findings: Vec<pb::FindingInfo> =
            crate::findings::findings(&self.state, device.as_deref())
                .map_err(internal)?
                .iter()
                .filter(|f| {
                    r.include_resolved || f.status != crate::policy::FindingStatus::Resolved
                })
                .map(|f| {
                    crate::findings::finding_info(f, hostnames.get(&f.device).map_or("", |h| h))
                })
                .collect();
        findings.sort_by(|a, b| {
            a.hostname
                .cmp(&b.hostname)
                .then(a.first_seen_ms.cmp(&b.first_seen_ms))
        });
        Ok(Response::new(pb::ListFindingsResponse { findings }))
    }

    async fn check_policy(
        &self,
        req: Request<pb::PolicyText>,
    ) -> Result<Response<pb::PolicyCheck>, Status> {
        self.authorize(&req, pb::Role::Viewer)?;
        Ok(Response::new(check_pack(req.get_ref())))
    }

    async fn apply_policy(
        &self,
        req: Request<pb::PolicyText>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        let actor = self.authorize(&req, pb::Role::Admin)?;
        let r = req.into_inner();
        let pack = crate::policy::check(&r.toml).map_err(|errors| {
            let name = if r.file_name.is_empty() {
                "policy"
            } else {
                &r.file_name
            };
            let lines: Vec<String> = errors.iter().map(|e| e.in_file(name).to_string()).collect();
            Status::invalid_argument(format!(
                "the policy was not applied; {} error(s):\n{}",
                lines.len(),
                lines.join("\n")
            ))
        })?;
        let now = now_ms();
        let version = self
            .state
            .policy
            .read()
            .map(|p| p.stored.version)
            .unwrap_or(0)
            + 1;
        let stored = crate::findings::StoredPolicy {
            version,
            toml: r.toml.clone(),
            applied_ms: now,
            applied_by: actor.audit_name(),
        };
        self.state
            .store
            .json_apply(
                crate::store::JsonTree::Policies,
                &[(version.to_be_bytes().to_vec(), stored.clone())],
                &[],
            )
            .await
            .map_err(internal)?;
        let info = policy_info(&pack, &stored);
        if let Ok(mut p) = self.state.policy.write() {
            *p = crate::findings::PolicyInForce { pack, stored };
        }
        self.audit(
            &actor,
            "policy.apply",
            &format!("version {version}"),
            &format!("{} {} rules", info.pack_version, info.rules),
        )
        .await?;
        crate::findings::evaluate_all(&self.state)
            .await
            .map_err(internal)?;
        Ok(Response::new(info))
    }

    async fn show_policy(
        &self,
        req: Request<pb::ShowPolicyRequest>,
    ) -> Result<Response<pb::PolicyInfo>, Status> {
        self.authorize(&req, pb::Role::Viewer)?;
        let p = self
            .state
            .policy
            .read()
            .map_err(|_| Status::internal("policy lock poisoned"))?
            .clone();
        Ok(Response::new(policy_info(&p.pack, &p.stored)))
    }

    async fn import_people(
        &self,
        req: Request<pb::ImportPeopleRequest>,
    ) -> Result<Response<pb::ImportPeopleResponse>, Status> {
        let actor = self.authorize(&req, pb::Role::Operator)?;
        let r = req.into_inner();
        let name = if r.file_name.is_empty() {
            "people.csv"
        } else {
            &r.file_name
        };
        let people = crate::people::parse(&r.csv).map_err(|errors| {
            // The message travels as a gRPC header: bounded, whatever the file held (a
            // megabyte-long header cell quoted whole made the answer itself unreadable).
            let mut lines: Vec<String> = errors
                .iter()
                .take(MAX_ERROR_LINES)
                .map(|e| super::clip(&format!("{name}: {e}"), MAX_ERROR_LINE_CHARS))
                .collect();
            if errors.len() > MAX_ERROR_LINES {
                lines.push(format!(
                    "… and {} more error(s)",
                    errors.len() - MAX_ERROR_LINES
                ));
            }
            Status::invalid_argument(format!(
                "nothing was imported; {} error(s):\n{}",
                errors.len(),
                lines.join("\n")
            ))
        })?;
        let records: Vec<(Vec<u8>, crate::people::Person)> = people
            .iter()
            .map(|p| (p.email.to_lowercase().into_bytes(), p.clone()))
            .collect();
        self.state
            .store
            .json_replace_all(crate::store::JsonTree::People, &records)
            .await
            .map_err(internal)?;
        self.audit(
            &actor,
            "people.import",
            name,
            &format!("{} people", people.len()),
        )
        .await?;
        crate::findings::evaluate_all(&self.state)
            .await
            .map_err(internal)?;
        Ok(Response::new(pb::ImportPeopleResponse {
            imported: u32::try_from(people.len()).unwrap_or(u32::MAX),
        }))
    }

    async fn list_people(
        &self,
        req: Request<pb::ListPeopleRequest>,
    ) -> Result<Response<pb::ListPeopleResponse>, Status> {
        self.authorize(&req, pb::Role::Viewer)?;
        let date = |d: Option<time::Date>| d.map(|d| d.to_string()).unwrap_or_default();
        let people = crate::findings::people(&self.state)
            .map_err(internal)?
            .into_iter()
            .map(|p| pb::PersonInfo {
                email: p.email,
                name: p.name,
                manager_email: p.manager_email.unwrap_or_default(),
                end_date: date(p.end_date),
                leave_from: date(p.leave_from),
                leave_to: date(p.leave_to),
            })
            .collect();
        Ok(Response::new(pb::ListPeopleResponse { people }))
    }

    async fn add_trip(
        &self,
        req: Request<pb::AddTripRequest>,
    ) -> Result<Response<pb::TripInfo>, Status> {
        let actor = self.authorize(&req, pb::Role::Operator)?;
        let r = req.into_inner();
        let person = r.person.trim().to_lowercase();
        if !looks_like_email(&person) {
            return Err(Status::invalid_argument(format!(
                "--person '{}' is not an e-mail address",
                r.person
            )));
        }
        let kind = match r.kind.as_str() {
            "business" => crate::policy::TripKind::Business,
            "private" => crate::policy::TripKind::Private,
            other => {
                return Err(Status::invalid_argument(format!(
                    "--kind '{other}' must be business or private"
                )));
            }
        };
        let fmt = time::macros::format_description!("[year]-[month]-[day]");
        let date = |flag: &str, v: &str| {
            time::Date::parse(v.trim(), &fmt).map_err(|_| {
                Status::invalid_argument(format!("--{flag} '{v}' is not a date (YYYY-MM-DD)"))
            })
        };
        let (from, to) = (date("from", &r.from)?, date("to", &r.to)?);
        if to < from {
            return Err(Status::invalid_argument(format!(
                "--to {to} is before --from {from}"
            )));
        }
        let mut countries = Vec::new();
        for c in &r.countries {
            for part in c.split(',') {
                let cc = part.trim().to_uppercase();
                if cc.len() != 2 || !cc.chars().all(|ch| ch.is_ascii_uppercase()) {
                    return Err(Status::invalid_argument(format!(
                        "--country '{part}' is not a two-letter ISO code (NO, FI, DE...)"
                    )));
                }
                countries.push(cc);
            }
        }
        if countries.is_empty() {
            return Err(Status::invalid_argument(
                "a trip needs at least one --country",
            ));
        }
        let approved_by = r.approved_by.trim().to_lowercase();
        if !approved_by.is_empty() && !looks_like_email(&approved_by) {
            return Err(Status::invalid_argument(format!(
                "--approved-by '{}' is not an e-mail address",
                r.approved_by
            )));
        }
        let now = now_ms();
        let trip = crate::policy::Trip {
            id: format!("trip-{now:012x}{}", token::hex(&token::random_bytes::<3>())),
            person,
            kind,
            countries,
            from,
            to,
            approved_by: (!approved_by.is_empty()).then_some(approved_by),
        };
        self.state
            .store
            .json_apply(
                crate::store::JsonTree::Trips,
                &[(trip.id.clone().into_bytes(), trip.clone())],
                &[],
            )
            .await
            .map_err(internal)?;
        self.audit(
            &actor,
            "trip.add",
            &trip.person,
            &format!(
                "{} {:?} {}..{}",
                trip.id, trip.countries, trip.from, trip.to
            ),
        )
        .await?;
        crate::findings::evaluate_all(&self.state)
            .await
            .map_err(internal)?;
        Ok(Response::new(trip_info(&trip)))
    }

    async fn list_trips(
        &self,
        req: Request<pb::ListTripsRequest>,
    ) -> Result<Response<pb::ListTripsResponse>, Status> {
        self.authorize(&req, pb::Role::Viewer)?;
        let trips = crate::findings::trips(&self.state)
            .map_err(internal)?
            .iter()
            .map(trip_info)
            .collect();
        Ok(Response::new(pb::ListTripsResponse { trips }))
    }

    async fn grant_exemption(
        &self,
        req: Request<pb::GrantExemptionRequest>,
    ) -> Result<Response<pb::ExemptionInfo>, Status> {
        let actor = self.authorize(&req, pb::Role::Operator)?;
        let r = req.into_inner();
        let subject = match (r.device.trim(), r.person.trim()) {
            (d, "") if !d.is_empty() => crate::policy::ExemptionSubject::Device(
                self.find_device(d)?
                    .device
                    .map(|d| d.id)
                    .unwrap_or_default(),
            ),
            ("", p) if looks_like_email(&p.to_lowercase()) => {
                crate::policy::ExemptionSubject::Person(p.to_lowercase())
            }
            _ => {
                return Err(Status::invalid_argument(
                    "name either a device or a person (an e-mail address)",
                ));
            }
        };
        let rule = r.rule.trim();
        let known = self
            .state
            .policy
            .read()
            .map(|p| {
                p.pack
                    .rules
                    .iter()
                    .any(|x| x.id == rule || x.kind().as_str() == rule)
            })
            .unwrap_or(false);
        if !known {
            return Err(Status::invalid_argument(format!(
                "'{rule}' is neither a rule id nor a rule kind of the policy in force"
            )));
        }
        if r.reason.trim().len() < 5 {
            return Err(Status::invalid_argument("an exemption needs a --reason"));
        }
        let now = now_ms();
        let e = crate::policy::Exemption {
            id: format!("ex-{now:012x}{}", token::hex(&token::random_bytes::<3>())),
            subject,
            rule: rule.to_string(),
            from: crate::findings::ms_to_time(now),
            until: (r.minutes > 0)
                .then(|| crate::findings::ms_to_time(now + i64::from(r.minutes) * 60_000)),
            reason: r.reason.trim().to_string(),
            granted_by: actor.audit_name(),
        };
        self.state
            .store
            .json_apply(
                crate::store::JsonTree::Exemptions,
                &[(e.id.clone().into_bytes(), e.clone())],
                &[],
            )
            .await
            .map_err(internal)?;
        self.audit(
            &actor,
            "exemption.grant",
            &e.id,
            &format!("rule={} reason={}", e.rule, e.reason),
        )
        .await?;
        crate::findings::evaluate_all(&self.state)
            .await
            .map_err(internal)?;
        Ok(Response::new(exemption_info(&e)))
    }

    async fn list_exemptions(
        &self,
        req: Request<pb::ListExemptionsRequest>,
    ) -> Result<Response<pb::ListExemptionsResponse>, Status> {
        self.authorize(&req, pb::Role::Viewer)?;
        let exemptions = crate::findings::exemptions(&self.state)
            .map_err(internal)?
            .iter()
            .map(exemption_info)
            .collect();
        Ok(Response::new(pb::ListExemptionsResponse { exemptions }))
    }

    async fn list_audit(
        &self,
        req: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        self.authorize(&req, pb::Role::Viewer)?;
        let entries = self
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

    async fn verify_audit(
        &self,
        req: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        self.authorize(&req, pb::Role::Viewer)?;
        let log = self.state.store.audit_log().map_err(internal)?;
        Ok(Response::new(verify_chain(&log)))
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
        super::admin_signing::rotate(self, req).await
    }

    async fn get_signing_keys(
        &self,
        req: Request<pb::GetSigningKeysRequest>,
    ) -> Result<Response<pb::SigningKeys>, Status> {
        super::admin_signing::show(self, req).await
    }
}

/// Validates a pack's text; errors as `FILE:LINE:COL: message`.
pub fn check_pack(r: &pb::PolicyText) -> pb::PolicyCheck {
    let name = if r.file_name.is_empty() {
        "policy"
    } else {
        &r.file_name
    };
    match crate::policy::check(&r.toml) {
        Ok(pack) => pb::PolicyCheck {
            ok: true,
            errors: Vec::new(),
            rules: u32::try_from(pack.rules.len()).unwrap_or(u32::MAX),
        },
        Err(errors) => pb::PolicyCheck {
            ok: false,
            errors: errors.iter().map(|e| e.in_file(name).to_string()).collect(),
            rules: 0,
        },
    }
}

fn policy_info(
    pack: &crate::policy::Pack,
    stored: &crate::findings::StoredPolicy,
) -> pb::PolicyInfo {
    pb::PolicyInfo {
        version: stored.version,
        organisation: pack.organisation.clone(),
        document: pack.document.clone(),
        reference: pack.reference.clone(),
        pack_version: pack.version.clone(),
        applied_ms: stored.applied_ms,
        applied_by: stored.applied_by.clone(),
        toml: stored.toml.clone(),
        rules: u32::try_from(pack.rules.len()).unwrap_or(u32::MAX),
    }
}

fn trip_info(t: &crate::policy::Trip) -> pb::TripInfo {
    pb::TripInfo {
        id: t.id.clone(),
        person: t.person.clone(),
        countries: t.countries.clone(),
        from: t.from.to_string(),
        to: t.to.to_string(),
        kind: match t.kind {
            crate::policy::TripKind::Business => "business".into(),
            crate::policy::TripKind::Private => "private".into(),
        },
        approved_by: t.approved_by.clone().unwrap_or_default(),
    }
}

fn exemption_info(e: &crate::policy::Exemption) -> pb::ExemptionInfo {
    let (device, person) = match &e.subject {
        crate::policy::ExemptionSubject::Device(d) => (d.clone(), String::new()),
        crate::policy::ExemptionSubject::Person(p) => (String::new(), p.clone()),
    };
    pb::ExemptionInfo {
        id: e.id.clone(),
        device,
        person,
        rule: e.rule.clone(),
        from_ms: crate::findings::time_to_ms(e.from),
        until_ms: e.until.map(crate::findings::time_to_ms).unwrap_or(0),
        reason: e.reason.clone(),
        granted_by: e.granted_by.clone(),
    }
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
    super::tokens::mint_admin_token(store, role, name, created_by, 0, false).await
}

/// Named stage times of one call, for a log line when the call was slow.
struct Stages {
    start: std::time::Instant,
    last: std::time::Instant,
    laps: Vec<(&'static str, std::time::Duration)>,
}

impl Stages {
    fn start() -> Self {
        let now = std::time::Instant::now();
        Self {
            start: now,
            last: now,
            laps: Vec::new(),
        }
    }

    fn lap(&mut self, name: &'static str) {
        let now = std::time::Instant::now();
        self.laps.push((name, now - self.last));
        self.last = now;
    }

    fn warn_if_slower_than(&self, limit: std::time::Duration, what: &str, target: &str) {
        let total = self.start.elapsed();
        if total > limit {
            let laps: Vec<String> = self
                .laps
                .iter()
                .map(|(n, d)| format!("{n} {} ms", d.as_millis()))
                .collect();
            tracing::warn!(
                target = %target,
                "slow {what}: {} ms ({})",
                total.as_millis(),
                laps.join(", ")
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The invariant behind the report slots (api::REPORT_SLOTS): with every slot taken by
    /// reports, IT's loss report still goes through and queues its lock.
    #[tokio::test]
    async fn a_loss_report_takes_no_report_slot() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::server::prepare(dir.path(), &[], Default::default())
            .await
            .unwrap();
        let token = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
        let hash = crate::token::hash("enroll");
        state
            .store
            .put_enroll_token(
                &hash,
                &pb::EnrollTokenRecord {
                    id: "e1".into(),
                    uses_left: 1,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        let device = pb::Device {
            id: "d1".into(),
            hostname: "pc-1".into(),
            ..Default::default()
        };
        state
            .store
            .enroll(&hash, 1, device, Default::default(), [1; 32])
            .await
            .unwrap();
        let slots = u32::try_from(state.report_slots.available_permits()).unwrap();
        let _all_taken = state
            .report_slots
            .clone()
            .acquire_many_owned(slots)
            .await
            .unwrap();
        assert_eq!(state.report_slots.available_permits(), 0);
        let mut req = Request::new(pb::ReportLossRequest {
            device: "pc-1".into(),
            ..Default::default()
        });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", token.trim()).parse().unwrap(),
        );
        let case = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            AdminApi::new(state.clone()).report_loss(req),
        )
        .await
        .expect("a loss report must not wait for a report slot")
        .unwrap()
        .into_inner();
        assert_eq!(case.device_id, "d1");
        let lock = state.store.command(&case.lock_command_id).unwrap().unwrap();
        assert_eq!(lock.kind, pb::CommandKind::Lock as i32);
    }

    #[test]
    fn email_shapes() {
        assert!(looks_like_email("anna.berg@sorsele.se"));
        assert!(!looks_like_email("anna"));
        assert!(!looks_like_email("anna@localhost"));
        assert!(!looks_like_email("an na@x.se"));
    }
}
