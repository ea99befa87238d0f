//! Wipes: one admin requests (from the device's page), a different admin approves here. The
//! two-admin rule is the admin API's; this page only hides the approve button from the admin
//! who asked, and shows the API's refusal if it is pressed anyway.

use super::view::CommandRow;
use super::{Authed, Frame, Lang, Page, Post, html};
use askama::Template;
use axum::extract::Path;
use axum::http::StatusCode;
use serde::Deserialize;
use std::collections::HashMap;
use vakt_proto::pb;
use vakt_proto::pb::admin_service_server::AdminService;

pub struct WipeRow {
    pub cmd: CommandRow,
    /// Requested by the logged-in user's token name: they cannot approve it.
    pub mine: bool,
    /// What the wipe would achieve now (the device view's), shown where it is approved.
    pub readiness: Option<pb::WipeReadiness>,
}

#[derive(Template)]
#[template(path = "wipes.html")]
struct WipeList {
    c: Frame,
    waiting: Vec<WipeRow>,
    commands: Vec<CommandRow>,
    /// At least two admin persons exist; otherwise the page says approval is not independent.
    independent: bool,
}

/// Whether an audit name (`token:<name>:<id>`) names the person called `name`.
fn requested_by_name(requested_by: &str, name: &str) -> bool {
    crate::api::tokens::person_of(requested_by)
        .is_some_and(|p| crate::api::tokens::same_person(p, name))
}

/// Whether wipe approval is independent (two admin persons exist).
async fn independent(a: &Authed, back: &str) -> Result<bool, axum::response::Response> {
    let answer = a
        .api()
        .get_admin_token_persons(a.req(pb::GetAdminTokenPersonsRequest {}))
        .await;
    Ok(a.ok(answer, back)?.independent_approval)
}

pub async fn list(a: Authed) -> Page {
    let devices = a.devices("/").await?;
    let commands = a.commands("", "/").await?;
    let by_id: HashMap<&str, &pb::Device> = devices.iter().map(|d| (d.id.as_str(), d)).collect();
    let device = |c: &pb::CommandInfo| by_id.get(c.device_id.as_str()).copied();
    let hostname = |c: &pb::CommandInfo| device(c).map_or("", |d| d.hostname.as_str());
    let wipes: Vec<&pb::CommandInfo> = commands
        .iter()
        .rev()
        .filter(|c| c.kind == pb::CommandKind::Wipe as i32)
        .collect();
    let waiting = wipes
        .iter()
        .filter(|c| c.state == pb::CommandState::AwaitingApproval as i32)
        .map(|c| WipeRow {
            cmd: CommandRow::new(a.lang, c, hostname(c)),
            mine: requested_by_name(&c.requested_by, &a.user.name),
            readiness: device(c).and_then(|d| d.wipe_readiness.clone()),
        })
        .collect();
    let commands = wipes
        .iter()
        .filter(|c| c.state != pb::CommandState::AwaitingApproval as i32)
        .map(|c| CommandRow::new(a.lang, c, hostname(c)))
        .collect();
    let page = WipeList {
        c: a.frame("wipes", a.t("Radering", "Wipes")),
        waiting,
        commands,
        independent: independent(&a, "/").await?,
    };
    Ok(html(StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub struct RequestForm {
    #[serde(default)]
    reason: String,
}

pub async fn request(Path(id): Path<String>, Post(a, f): Post<RequestForm>) -> Page {
    let back = format!("/devices/{id}");
    let answer = a
        .api()
        .request_wipe(a.req(pb::RequestWipeRequest {
            device: id,
            reason: f.reason,
        }))
        .await;
    let cmd = a.ok(answer, &back)?;
    let mut text = match a.lang {
        Lang::Sv => format!(
            "Radering {} är begärd. En annan administratör måste godkänna den.",
            cmd.id
        ),
        Lang::En => format!(
            "Wipe {} is requested. A different admin must approve it.",
            cmd.id
        ),
    };
    if !independent(&a, &back).await? {
        text.push(' ');
        text.push_str(a.t(
            "Godkännandet är inte oberoende ännu: det finns bara en administratörsperson.",
            "The approval is not independent yet: only one admin person exists.",
        ));
    }
    Ok(a.done("/wipes", text))
}

#[derive(Deserialize)]
pub struct ApproveForm {
    #[serde(default)]
    confirm: Option<String>,
}

pub async fn approve(Path(command): Path<String>, Post(a, f): Post<ApproveForm>) -> Page {
    if f.confirm.is_none() {
        return Err(a.error_page(
            StatusCode::BAD_REQUEST,
            a.t("Bekräftelse saknas", "Not confirmed"),
            a.t(
                "Kryssa i att du har bedömt skälet innan du godkänner en radering.",
                "Tick the box that says you judged the reason before approving a wipe.",
            ),
            "/wipes",
        ));
    }
    let answer = a
        .api()
        .approve_wipe(a.req(pb::ApproveWipeRequest {
            command_id: command,
        }))
        .await;
    let cmd = a.ok(answer, "/wipes")?;
    let text = match a.lang {
        Lang::Sv => format!("Radering {} är godkänd och skickas till enheten.", cmd.id),
        Lang::En => format!("Wipe {} is approved and goes to the device.", cmd.id),
    };
    Ok(a.done("/wipes", text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_requester_is_named_by_token_name() {
        assert!(requested_by_name("token:it-chef:0123abcd", "it-chef"));
        assert!(!requested_by_name(
            "token:initial-admin:0123abcd",
            "it-chef"
        ));
        assert!(!requested_by_name("system", "system"));
        assert!(requested_by_name("token:a:b:0123abcd", "A:B"));
        assert!(!requested_by_name("token:a:b:0123abcd", "a"));
    }
}
