//! `vakt loss report|show|update|incident-report|recovered` (the loss procedure of policy
//! 8.1: the case, its lock and unlock, its checklist) and `vakt wipe request|approve` (two
//! different admins, with what the wipe will reach said to both).

use super::devices::{readiness_as_of, readiness_line, readiness_name};
use super::{Cli, client, status, tokens};
use clap::Subcommand;
use serde_json::{Value, json};
use vakt_proto::pb;
use vakt_server::commands::state_name;
use vakt_server::timefmt::{now_ms, rfc3339_ms};

#[derive(Subcommand)]
pub enum LossCmd {
    /// Open a loss case: marks the device lost and queues a lock at once.
    Report {
        /// Device id or hostname.
        id: String,
        /// Who reported the loss (defaults to the person the device is assigned to).
        #[arg(long)]
        reported_by: Option<String>,
        #[arg(long)]
        police_report: Option<String>,
        #[arg(long)]
        notes: Option<String>,
    },
    /// The case with its checklist.
    Show {
        /// Device id, hostname or case id.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Record steps of the checklist.
    Update {
        id: String,
        /// Step 1: the SIM is blocked and a new one ordered.
        #[arg(long)]
        sim_blocked: bool,
        /// Step 2: the police report's number.
        #[arg(long)]
        police_report: Option<String>,
        /// Step 2: why no police report is needed (misuse ruled out).
        #[arg(long)]
        no_police_report: Option<String>,
        /// Step 3: the incident report went to the risk and security group.
        #[arg(long)]
        incident_report_sent: bool,
        /// Step 4: the manager is informed.
        #[arg(long)]
        manager_informed: bool,
        #[arg(long)]
        notes: Option<String>,
    },
    /// The incident report for the risk and security group (Swedish).
    IncidentReport {
        id: String,
        #[arg(long)]
        html: bool,
    },
    /// The device is back: queue an unlock and close the case.
    Recovered { id: String },
}

#[derive(Subcommand)]
pub enum WipeCmd {
    /// Request a wipe (an admin); it waits for a second admin's approval.
    Request {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Approve another admin's wipe request.
    Approve { command_id: String },
}

/// `vakt loss ...`.
pub async fn run(cli: &Cli, cmd: &LossCmd) -> anyhow::Result<()> {
    let mut c = client(cli).await?;
    match cmd {
        LossCmd::Report {
            id,
            reported_by,
            police_report,
            notes,
        } => {
            let case = c
                .report_loss(pb::ReportLossRequest {
                    device: id.clone(),
                    reported_by: reported_by.clone().unwrap_or_default(),
                    police_report: police_report.clone().unwrap_or_default(),
                    notes: notes.clone().unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            outln!(
                "loss case {} opened for {} ({}); device marked lost, lock queued as {}",
                case.id,
                case.hostname,
                case.device_id,
                case.lock_command_id
            );
            print_checklist(&case);
        }
        LossCmd::Show { id, json } => {
            let case = c
                .get_loss(pb::GetLossRequest { device: id.clone() })
                .await
                .map_err(status)?
                .into_inner();
            if *json {
                outln!("{}", serde_json::to_string_pretty(&loss_json(&case))?);
            } else {
                outln!(
                    "case        {} ({})",
                    case.id,
                    if case.open { "open" } else { "closed" }
                );
                outln!("device      {} ({})", case.hostname, case.device_id);
                outln!("reported by {}", case.reported_by);
                outln!(
                    "opened      {} by {}",
                    rfc3339_ms(case.opened_ms),
                    case.opened_by
                );
                outln!("lock        {}", case.lock_command_id);
                if !case.unlock_command_id.is_empty() {
                    outln!("unlock      {}", case.unlock_command_id);
                }
                for w in &case.wipe_command_ids {
                    outln!("wipe        {w}");
                }
                outln!(
                    "a wipe     {}",
                    readiness_line(case.wipe_readiness.as_ref(), now_ms())
                );
                print_checklist(&case);
            }
        }
        LossCmd::Update {
            id,
            sim_blocked,
            police_report,
            no_police_report,
            incident_report_sent,
            manager_informed,
            notes,
        } => {
            let case = c
                .update_loss(pb::UpdateLossRequest {
                    device: id.clone(),
                    sim_blocked: *sim_blocked,
                    police_report: police_report.clone().unwrap_or_default(),
                    no_police_report_reason: no_police_report.clone().unwrap_or_default(),
                    incident_report_sent: *incident_report_sent,
                    manager_informed: *manager_informed,
                    notes: notes.clone().unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            print_checklist(&case);
        }
        LossCmd::IncidentReport { id, html } => {
            let r = c
                .get_incident_report(pb::GetLossRequest { device: id.clone() })
                .await
                .map_err(status)?
                .into_inner();
            out!("{}", if *html { r.html } else { r.markdown });
        }
        LossCmd::Recovered { id } => {
            let case = c
                .recover_device(pb::GetLossRequest { device: id.clone() })
                .await
                .map_err(status)?
                .into_inner();
            outln!(
                "loss case {} closed; unlock queued as {}",
                case.id,
                case.unlock_command_id
            );
        }
    }
    Ok(())
}

/// `vakt wipe ...`.
pub async fn wipe(cli: &Cli, cmd: &WipeCmd) -> anyhow::Result<()> {
    let mut c = client(cli).await?;
    let info = match cmd {
        WipeCmd::Request { id, reason } => c
            .request_wipe(pb::RequestWipeRequest {
                device: id.clone(),
                reason: reason.clone(),
            })
            .await
            .map_err(status)?
            .into_inner(),
        WipeCmd::Approve { command_id } => c
            .approve_wipe(pb::ApproveWipeRequest {
                command_id: command_id.clone(),
            })
            .await
            .map_err(status)?
            .into_inner(),
    };
    tokens::warn_if_one_admin_person(&mut c).await;
    // What the wipe will and will not do, for the requester and for the approver.
    let readiness = c
        .get_device(pb::GetDeviceRequest {
            id: info.device_id.clone(),
        })
        .await
        .map_err(status)?
        .into_inner()
        .device
        .and_then(|d| d.wipe_readiness);
    eprintln!(
        "wipe readiness: {}",
        readiness_line(readiness.as_ref(), now_ms())
    );
    match cmd {
        WipeCmd::Request { .. } => {
            // The id alone on stdout, so a script can hand it to the approver.
            outln!("{}", info.id);
            eprintln!(
                "wipe of {} requested; another admin must run: vakt wipe approve {} (before {})",
                info.device_id,
                info.id,
                rfc3339_ms(info.expires_ms)
            );
        }
        WipeCmd::Approve { .. } => outln!(
            "{} approved: {} (device {})",
            info.id,
            state_name(info.state),
            info.device_id
        ),
    }
    Ok(())
}

fn print_checklist(case: &pb::LossCase) {
    outln!("checklist (policy 8.1):");
    for s in vakt_server::loss::checklist(case) {
        outln!(
            "  {}. [{}] {}{}",
            s.number,
            if s.done { "x" } else { " " },
            s.title_en,
            if s.note.is_empty() {
                String::new()
            } else {
                format!(" — {}", s.note)
            }
        );
    }
}

fn loss_json(c: &pb::LossCase) -> Value {
    let steps: Vec<Value> = vakt_server::loss::checklist(c)
        .iter()
        .map(|s| json!({"step": s.number, "title_sv": s.title_sv, "title_en": s.title_en, "done": s.done, "note": s.note}))
        .collect();
    json!({
        "id": c.id,
        "device": c.device_id,
        "hostname": c.hostname,
        "open": c.open,
        "opened": rfc3339_ms(c.opened_ms),
        "opened_by": c.opened_by,
        "reported_by": c.reported_by,
        "police_report": c.police_report,
        "no_police_report_reason": c.no_police_report_reason,
        "sim_blocked": rfc3339_ms(c.sim_blocked_ms),
        "incident_report_sent": rfc3339_ms(c.incident_report_sent_ms),
        "manager_informed": rfc3339_ms(c.manager_informed_ms),
        "closed": rfc3339_ms(c.closed_ms),
        "lock_command": c.lock_command_id,
        "unlock_command": c.unlock_command_id,
        "wipe_commands": c.wipe_command_ids,
        "notes": c.notes,
        "checklist": steps,
        "wipe_readiness": readiness_name(c.wipe_readiness.as_ref()),
        "wipe_readable": c.wipe_readiness.as_ref().map(|w| w.readable.clone()).unwrap_or_default(),
        "wipe_readiness_as_of": readiness_as_of(c.wipe_readiness.as_ref()),
    })
}
