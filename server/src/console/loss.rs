//! The loss procedure of policy section 8.1: the list of cases, a device's case with its
//! four-step checklist and the forms that record the steps, reporting a loss (which queues a
//! lock at once), recovery (which queues the unlock), and the incident report.

use super::view::{self, CommandRow};
use super::{Authed, Frame, Lang, Page, Post, html};
use askama::Template;
use axum::extract::Path;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use vakt_proto::pb;
use vakt_proto::pb::admin_service_server::AdminService;

pub struct CaseRow {
    pub id: String,
    pub device_id: String,
    pub hostname: String,
    pub open: bool,
    pub opened: String,
    pub closed: String,
    pub reported_by: String,
    pub steps_done: usize,
}

impl CaseRow {
    pub fn new(c: &pb::LossCase) -> Self {
        Self {
            id: c.id.clone(),
            device_id: c.device_id.clone(),
            hostname: if c.hostname.is_empty() {
                c.device_id.clone()
            } else {
                c.hostname.clone()
            },
            open: c.open,
            opened: view::when(c.opened_ms),
            closed: view::when(c.closed_ms),
            reported_by: c.reported_by.clone(),
            steps_done: crate::loss::checklist(c).iter().filter(|s| s.done).count(),
        }
    }
}

#[derive(Template)]
#[template(path = "losses.html")]
struct LossList {
    c: Frame,
    open: Vec<CaseRow>,
    closed: Vec<CaseRow>,
}

pub async fn list(a: Authed) -> Page {
    let answer = a
        .api()
        .list_losses(a.req(pb::ListLossesRequest { open_only: false }))
        .await;
    let cases = a.ok(answer, "/")?.cases;
    let (open, closed): (Vec<_>, Vec<_>) = cases.iter().map(CaseRow::new).partition(|c| c.open);
    let page = LossList {
        c: a.frame("loss", a.t("Förlustärenden", "Loss cases")),
        open,
        closed,
    };
    Ok(html(StatusCode::OK, &page))
}

pub struct StepView {
    pub number: u8,
    pub title: &'static str,
    pub done: bool,
    pub note: String,
}

/// A case as its page shows it.
pub struct CaseView {
    pub id: String,
    pub open: bool,
    pub opened: String,
    pub opened_by: String,
    pub closed: String,
    pub closed_by: String,
    pub reported_by: String,
    pub police_report: String,
    pub no_police_report_reason: String,
    pub notes: String,
    pub steps: Vec<StepView>,
    pub sim_blocked: bool,
    pub incident_report_sent: bool,
    pub manager_informed: bool,
}

impl CaseView {
    fn new(lang: Lang, c: &pb::LossCase) -> Self {
        Self {
            id: c.id.clone(),
            open: c.open,
            opened: view::when(c.opened_ms),
            opened_by: c.opened_by.clone(),
            closed: view::when(c.closed_ms),
            closed_by: c.closed_by.clone(),
            reported_by: c.reported_by.clone(),
            police_report: c.police_report.clone(),
            no_police_report_reason: c.no_police_report_reason.clone(),
            notes: c.notes.clone(),
            steps: crate::loss::checklist(c)
                .into_iter()
                .map(|s| StepView {
                    number: s.number,
                    title: lang.t(s.title_sv, s.title_en),
                    done: s.done,
                    note: s.note,
                })
                .collect(),
            sim_blocked: c.sim_blocked_ms > 0,
            incident_report_sent: c.incident_report_sent_ms > 0,
            manager_informed: c.manager_informed_ms > 0,
        }
    }
}

#[derive(Template)]
#[template(path = "loss.html")]
struct LossPage {
    c: Frame,
    d: pb::Device,
    state: &'static str,
    state_label: &'static str,
    case: Option<CaseView>,
    /// No open case: a loss can be reported.
    reportable: bool,
    commands: Vec<CommandRow>,
}

pub async fn page(a: Authed, Path(id): Path<String>) -> Page {
    let detail = a.api().get_device(a.req(pb::GetDeviceRequest { id })).await;
    let d = a.ok(detail, "/devices")?.device.unwrap_or_default();
    let back = format!("/devices/{}", d.id);
    let case = a
        .api()
        .get_loss(a.req(pb::GetLossRequest {
            device: d.id.clone(),
        }))
        .await;
    let case = a.ok_if_found(case, &back)?;
    let commands = match &case {
        Some(k) => a
            .commands(&d.id, &back)
            .await?
            .iter()
            .rev()
            .filter(|c| c.loss_case_id == k.id)
            .map(|c| CommandRow::new(a.lang, c, &d.hostname))
            .collect(),
        None => Vec::new(),
    };
    let title = match a.lang {
        Lang::Sv => format!("Förlust: {}", d.hostname),
        Lang::En => format!("Loss: {}", d.hostname),
    };
    let page = LossPage {
        c: a.frame("loss", title),
        state: crate::api::device_state_name(d.state),
        state_label: a.lang.device_state(d.state),
        reportable: case.as_ref().is_none_or(|k| !k.open),
        case: case.as_ref().map(|k| CaseView::new(a.lang, k)),
        commands,
        d,
    };
    Ok(html(StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub struct ReportForm {
    #[serde(default)]
    reported_by: String,
    #[serde(default)]
    police_report: String,
    #[serde(default)]
    notes: String,
}

pub async fn report_loss(Path(id): Path<String>, Post(a, f): Post<ReportForm>) -> Page {
    let back = format!("/devices/{id}/loss");
    let answer = a
        .api()
        .report_loss(a.req(pb::ReportLossRequest {
            device: id,
            reported_by: f.reported_by,
            police_report: f.police_report,
            notes: f.notes,
        }))
        .await;
    let case = a.ok(answer, &back)?;
    let text = match a.lang {
        Lang::Sv => format!(
            "Förlustärende {} öppnat. Enheten är markerad som förlorad och låsningen {} är köad.",
            case.id, case.lock_command_id
        ),
        Lang::En => format!(
            "Loss case {} opened. The device is marked lost and lock {} is queued.",
            case.id, case.lock_command_id
        ),
    };
    Ok(a.done(&back, text))
}

#[derive(Deserialize)]
pub struct UpdateForm {
    #[serde(default)]
    sim_blocked: Option<String>,
    #[serde(default)]
    police_report: String,
    #[serde(default)]
    no_police_report_reason: String,
    #[serde(default)]
    incident_report_sent: Option<String>,
    #[serde(default)]
    manager_informed: Option<String>,
    #[serde(default)]
    notes: String,
}

pub async fn update(Path(id): Path<String>, Post(a, f): Post<UpdateForm>) -> Page {
    let back = format!("/devices/{id}/loss");
    let answer = a
        .api()
        .update_loss(a.req(pb::UpdateLossRequest {
            device: id,
            sim_blocked: f.sim_blocked.is_some(),
            police_report: f.police_report,
            no_police_report_reason: f.no_police_report_reason,
            incident_report_sent: f.incident_report_sent.is_some(),
            manager_informed: f.manager_informed.is_some(),
            notes: f.notes,
        }))
        .await;
    a.ok(answer, &back)?;
    Ok(a.done(
        &back,
        a.t("Ärendet är uppdaterat.", "The case is updated.").into(),
    ))
}

#[derive(Deserialize)]
pub struct RecoverForm {
    #[serde(default)]
    confirm: Option<String>,
}

pub async fn recover(Path(id): Path<String>, Post(a, f): Post<RecoverForm>) -> Page {
    let back = format!("/devices/{id}/loss");
    if f.confirm.is_none() {
        return Err(a.error_page(
            StatusCode::BAD_REQUEST,
            a.t("Bekräftelse saknas", "Not confirmed"),
            a.t(
                "Kryssa i att enheten är återfunnen innan ärendet avslutas.",
                "Tick the box that says the device was found before closing the case.",
            ),
            &back,
        ));
    }
    let answer = a
        .api()
        .recover_device(a.req(pb::GetLossRequest { device: id }))
        .await;
    let case = a.ok(answer, &back)?;
    let text = match a.lang {
        Lang::Sv => format!(
            "Ärendet {} är avslutat och upplåsningen {} är köad.",
            case.id, case.unlock_command_id
        ),
        Lang::En => format!(
            "Case {} is closed and unlock {} is queued.",
            case.id, case.unlock_command_id
        ),
    };
    Ok(a.done(&back, text))
}

async fn incident(a: &Authed, id: String) -> Result<pb::IncidentReport, Response> {
    let back = format!("/devices/{id}/loss");
    let answer = a
        .api()
        .get_incident_report(a.req(pb::GetLossRequest { device: id }))
        .await;
    a.ok(answer, &back)
}

/// The incident report for the risk and security group, as the standalone (Swedish) page the
/// admin API renders: printable, and the same text `vakt loss incident-report --html` prints.
pub async fn incident_html(a: Authed, Path(id): Path<String>) -> Page {
    let r = incident(&a, id).await?;
    Ok(([(header::CONTENT_TYPE, "text/html; charset=utf-8")], r.html).into_response())
}

pub async fn incident_markdown(a: Authed, Path(id): Path<String>) -> Page {
    let r = incident(&a, id).await?;
    Ok((
        [
            (header::CONTENT_TYPE, "text/markdown; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"incidentrapport.md\"",
            ),
        ],
        r.markdown,
    )
        .into_response())
}
