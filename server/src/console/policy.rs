//! The policy in force (which pack, which version, who applied it, its text), and for admins a
//! form to check a new pack and apply it. Checking and applying are the admin API's: the same
//! validation with file, line and column as `vakt policy check`.

use super::view;
use super::{Authed, Frame, Lang, Page, Post, html};
use askama::Template;
use axum::http::StatusCode;
use serde::Deserialize;
use vakt_proto::pb;
use vakt_proto::pb::admin_service_server::AdminService;

/// What the form is named as in error messages (`FILE:LINE:COL`).
const FORM_FILE: &str = "policy.toml";

#[derive(Template)]
#[template(path = "policy.html")]
struct PolicyPage {
    c: Frame,
    p: pb::PolicyInfo,
    applied: String,
    /// The text in the form (a pack being checked), empty for the policy in force.
    draft: String,
    check: Option<pb::PolicyCheck>,
}

async fn render(a: &Authed, draft: String, check: Option<pb::PolicyCheck>) -> Page {
    let p = a.api().show_policy(a.req(pb::ShowPolicyRequest {})).await;
    let p = a.ok(p, "/")?;
    let page = PolicyPage {
        c: a.frame("policy", a.t("Policy", "Policy")),
        applied: view::when(p.applied_ms),
        p,
        draft,
        check,
    };
    Ok(html(StatusCode::OK, &page))
}

pub async fn page(a: Authed) -> Page {
    render(&a, String::new(), None).await
}

#[derive(Deserialize)]
pub struct PolicyForm {
    #[serde(default)]
    toml: String,
}

fn text(toml: String) -> pb::PolicyText {
    pb::PolicyText {
        toml,
        file_name: FORM_FILE.into(),
    }
}

pub async fn check(Post(a, f): Post<PolicyForm>) -> Page {
    let answer = a.api().check_policy(a.req(text(f.toml.clone()))).await;
    let check = a.ok(answer, "/policy")?;
    render(&a, f.toml, Some(check)).await
}

pub async fn apply(Post(a, f): Post<PolicyForm>) -> Page {
    let answer = a.api().apply_policy(a.req(text(f.toml))).await;
    let p = a.ok(answer, "/policy")?;
    let msg = match a.lang {
        Lang::Sv => format!(
            "Policyn version {} ({}, {} regler) gäller nu; alla enheter bedöms om.",
            p.version, p.pack_version, p.rules
        ),
        Lang::En => format!(
            "Policy version {} ({}, {} rules) is in force; every device is evaluated again.",
            p.version, p.pack_version, p.rules
        ),
    };
    Ok(a.done("/policy", msg))
}
