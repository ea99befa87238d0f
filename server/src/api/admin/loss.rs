//! The loss procedure of policy 8.1 and the commands it queues: a loss report opens a case,
//! marks the device lost and pushes a lock at once (timed in stages, logged when slow); the
//! checklist's steps, the incident report, recovery (unlock, or the lock withdrawn if it never
//! reached the laptop); wipes, requested by one admin and approved by another person; and the
//! command list.

use super::{AdminApi, looks_like_email};
use crate::api::internal;
use crate::timefmt::now_ms;
use tonic::{Request, Response, Status};
use vakt_proto::pb;

impl AdminApi {
    /// Step 4 of section 8.1: the manager of the person the device is assigned to hears of
    /// the loss (and orders a replacement). Queued in the outbox; the case records to whom.
    /// The person is read by their address (people are stored under it, lowered), not found
    /// among everyone.
    async fn tell_manager_of_loss(&self, mut case: pb::LossCase) -> Result<pb::LossCase, Status> {
        let person: Option<crate::people::Person> = if case.assigned_to.is_empty() {
            None
        } else {
            let key = case.assigned_to.to_lowercase();
            self.state
                .store
                .json_get_async(crate::store::JsonTree::People, key.as_bytes())
                .await
                .map_err(internal)?
        };
        let person = person.as_ref();
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

    /// The open loss case of a device, if any (through the store's index of cases by device).
    async fn open_case(&self, device_id: &str) -> Result<Option<pb::LossCase>, Status> {
        self.state
            .store
            .open_loss_of(device_id)
            .await
            .map_err(internal)
    }

    /// A case by its id, or the latest case of a device named by id or hostname.
    async fn case_for(&self, what: &str) -> Result<pb::LossCase, Status> {
        let what = what.trim();
        if let Some(c) = self.state.store.loss_async(what).await.map_err(internal)? {
            return Ok(c);
        }
        let d = self.find_device(what).await?.device.unwrap_or_default();
        self.state
            .store
            .latest_loss_of(&d.id)
            .await
            .map_err(internal)?
            .ok_or_else(|| Status::not_found(format!("{} has no loss case", d.hostname)))
    }

    /// A loss case as shown: with what a wipe would achieve now and when the device last
    /// reported (never stored in the case). A device record that cannot be read leaves the
    /// report time unknown (0), not the view failed.
    async fn loss_view(&self, mut case: pb::LossCase) -> pb::LossCase {
        let reported_ms = match self.state.store.device_async(&case.device_id).await {
            Ok(rec) => rec.and_then(|r| r.device).map_or(0, |d| d.last_report_ms),
            Err(e) => {
                tracing::warn!(device = %case.device_id, "device record: {e}");
                0
            }
        };
        case.wipe_readiness = Some(self.wipe_readiness(&case.device_id, reported_ms).await);
        case
    }
}

pub(super) async fn list_commands(
    api: &AdminApi,
    req: Request<pb::ListCommandsRequest>,
) -> Result<Response<pb::ListCommandsResponse>, Status> {
    api.authorize(&req, pb::Role::Viewer)?;
    let device = req.get_ref().device.trim();
    let filter = if device.is_empty() {
        None
    } else {
        Some(
            api.find_device(device)
                .await?
                .device
                .map(|d| d.id)
                .unwrap_or_default(),
        )
    };
    // One device's commands through the store's by-device index, not the whole history.
    let store = &api.state.store;
    let commands = match &filter {
        Some(device) => store.commands_of(device),
        None => store.commands(),
    }
    .map_err(internal)?;
    Ok(Response::new(pb::ListCommandsResponse { commands }))
}

pub(super) async fn report(
    api: &AdminApi,
    req: Request<pb::ReportLossRequest>,
) -> Result<Response<pb::LossCase>, Status> {
    // Stage times, logged when the whole call is slow: a lost laptop's lock is the one
    // path IT times with a stopwatch, so a slow one must say where its time went.
    let mut stages = Stages::start();
    let actor = api.authorize_async(&req, pb::Role::Operator).await?;
    let r = req.into_inner();
    let rec = api.find_device(&r.device).await?;
    let d = rec.device.unwrap_or_default();
    stages.lap("lookup");
    if let Some(open) = api.open_case(&d.id).await? {
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
    api.state
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
    let delivered = crate::commands::deliver(&api.state, &d.id);
    let audited = api.audit(&actor, "loss.report", &d.id, &detail);
    let (delivered, audited) = tokio::join!(delivered, audited);
    audited?;
    delivered.map_err(internal)?;
    stages.lap("push-and-audit");
    let case = api.tell_manager_of_loss(case).await?;
    crate::notify::enqueue_event(
        &api.state,
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
    Ok(Response::new(api.loss_view(case).await))
}

pub(super) async fn update(
    api: &AdminApi,
    req: Request<pb::UpdateLossRequest>,
) -> Result<Response<pb::LossCase>, Status> {
    let actor = api.authorize(&req, pb::Role::Operator)?;
    let r = req.into_inner();
    let mut case = api.case_for(&r.device).await?;
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
    api.state
        .store
        .save_loss(&case, &[], None)
        .await
        .map_err(internal)?;
    api.audit(
        &actor,
        "loss.update",
        &case.device_id,
        &format!("case={} {}", case.id, changes.join(" ")),
    )
    .await?;
    Ok(Response::new(case))
}

pub(super) async fn get(
    api: &AdminApi,
    req: Request<pb::GetLossRequest>,
) -> Result<Response<pb::LossCase>, Status> {
    api.authorize(&req, pb::Role::Viewer)?;
    let case = api.case_for(&req.get_ref().device).await?;
    Ok(Response::new(api.loss_view(case).await))
}

pub(super) async fn list(
    api: &AdminApi,
    req: Request<pb::ListLossesRequest>,
) -> Result<Response<pb::ListLossesResponse>, Status> {
    api.authorize(&req, pb::Role::Viewer)?;
    let open_only = req.get_ref().open_only;
    let mut cases = Vec::new();
    for c in api.state.store.losses().map_err(internal)? {
        if c.open || !open_only {
            cases.push(api.loss_view(c).await);
        }
    }
    cases.sort_by(|a, b| b.opened_ms.cmp(&a.opened_ms).then(b.id.cmp(&a.id)));
    Ok(Response::new(pb::ListLossesResponse { cases }))
}

pub(super) async fn recover(
    api: &AdminApi,
    req: Request<pb::GetLossRequest>,
) -> Result<Response<pb::LossCase>, Status> {
    let actor = api.authorize(&req, pb::Role::Operator)?;
    let mut case = api.case_for(&req.get_ref().device).await?;
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
    if let Some(mut lock) = api
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
    api.state
        .store
        .save_loss(&case, &commands, Some(device_state))
        .await
        .map_err(internal)?;
    api.audit(
        &actor,
        "loss.recovered",
        &case.device_id,
        &format!("case={} unlock={}", case.id, case.unlock_command_id),
    )
    .await?;
    crate::commands::deliver(&api.state, &case.device_id)
        .await
        .map_err(internal)?;
    Ok(Response::new(case))
}

pub(super) async fn incident_report(
    api: &AdminApi,
    req: Request<pb::GetLossRequest>,
) -> Result<Response<pb::IncidentReport>, Status> {
    api.authorize(&req, pb::Role::Viewer)?;
    // With the readiness as known now: the report says whether the disk was encrypted.
    let case = api.case_for(&req.get_ref().device).await?;
    let case = api.loss_view(case).await;
    // A case's commands are all its device's: read those, not the whole history.
    let commands: Vec<_> = api
        .state
        .store
        .commands_of(&case.device_id)
        .map_err(internal)?
        .into_iter()
        .filter(|c| c.loss_case_id == case.id)
        .collect();
    Ok(Response::new(pb::IncidentReport {
        markdown: crate::loss::incident_markdown(&case, &commands),
        html: crate::loss::incident_html(&case, &commands),
    }))
}

pub(super) async fn request_wipe(
    api: &AdminApi,
    req: Request<pb::RequestWipeRequest>,
) -> Result<Response<pb::CommandInfo>, Status> {
    let actor = api.authorize(&req, pb::Role::Admin)?;
    let r = req.into_inner();
    let reason = crate::api::required_reason(
        &r.reason,
        "a wipe needs a --reason a second admin can judge (at least a few words)",
    )?;
    let rec = api.find_device(&r.device).await?;
    let d = rec.device.unwrap_or_default();
    let now = now_ms();
    let mut cmd = crate::commands::new_command(
        &d.id,
        pb::CommandKind::Wipe,
        &actor.audit_name(),
        reason,
        now,
    );
    match api.open_case(&d.id).await? {
        Some(mut case) => {
            cmd.loss_case_id = case.id.clone();
            case.wipe_command_ids.push(cmd.id.clone());
            api.state
                .store
                .save_loss(&case, std::slice::from_ref(&cmd), None)
                .await
                .map_err(internal)?;
        }
        None => api.state.store.put_command(&cmd).await.map_err(internal)?,
    }
    api.audit(
        &actor,
        "wipe.request",
        &d.id,
        &format!("command={} reason={reason}", cmd.id),
    )
    .await?;
    Ok(Response::new(cmd))
}

pub(super) async fn approve_wipe(
    api: &AdminApi,
    req: Request<pb::ApproveWipeRequest>,
) -> Result<Response<pb::CommandInfo>, Status> {
    let actor = api.authorize(&req, pb::Role::Admin)?;
    let id = req.get_ref().command_id.trim().to_string();
    let cmd = api
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
        crate::commands::expire_due(&api.state, now)
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
        || crate::api::tokens::person_of(&cmd.requested_by)
            .is_some_and(|p| crate::api::tokens::same_person(p, &actor.name))
        || cmd.requested_by.rsplit(':').next() == Some(actor.token_id.as_str());
    if same_person {
        api.audit(
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
    let approved = api
        .state
        .store
        .update_command(&id, move |c| {
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
    api.audit(
        &actor,
        "wipe.approve",
        &cmd.device_id,
        &format!("command={id}"),
    )
    .await?;
    crate::commands::deliver(&api.state, &cmd.device_id)
        .await
        .map_err(internal)?;
    Ok(Response::new(approved))
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
    use vakt_proto::pb::admin_service_server::AdminService;

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
}
