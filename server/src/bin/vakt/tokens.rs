//! `vakt enroll-token create|list|revoke` and `vakt admin-token create|list|revoke|approve`:
//! the token lifecycle on the command line, and the plain warning on wipes while only one admin
//! person exists. A created token goes alone to stdout; lists never show a secret or its hash,
//! only the public id.

use super::{Cli, Client, client, status};
use anyhow::{anyhow, bail};
use clap::{Subcommand, ValueEnum};
use serde_json::{Value, json};
use vakt_proto::pb;
use vakt_server::api::admin::role_name;
use vakt_server::timefmt::rfc3339_ms;

#[derive(Subcommand)]
pub enum TokenCmd {
    /// Print a new enrollment token.
    Create {
        /// How many devices may enroll with it.
        #[arg(long, default_value_t = 1)]
        uses: u32,
        /// How long it is valid, e.g. 24h, 7d.
        #[arg(long, default_value = "24h")]
        ttl: String,
        #[arg(long, default_value = "")]
        note: String,
    },
    /// Every enrollment token: id, state (active, revoked, expired, used-up), uses, expiry.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke an enrollment token (by the id `list` shows): it enrolls nothing more.
    Revoke { id: String },
}

#[derive(Clone, Copy, ValueEnum)]
pub enum RoleArg {
    Viewer,
    Operator,
    Admin,
}

#[derive(Subcommand)]
pub enum AdminTokenCmd {
    /// Print a new admin API token.
    Create {
        #[arg(long, value_enum)]
        role: RoleArg,
        /// The person the token is for; tokens of the same name are the same person.
        #[arg(long)]
        name: String,
        /// How long it is valid, e.g. 8h, 90d; without it the token does not expire.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Every admin token: id, kind, name, role, state, created, expiry, last use (never the
    /// secret). The tokens people made come first, then the console sign-ins' credentials
    /// (kind `console-session`), which end with their sessions.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke an admin token (by the id `list` shows); its console sessions end at once.
    Revoke { id: String },
    /// Approve an admin token awaiting approval (by an admin person other than its creator).
    Approve { id: String },
}

/// `vakt enroll-token create`: the duration and the uses are checked before the server is
/// dialled.
pub async fn create_enroll_token(
    cli: &Cli,
    uses: u32,
    ttl: &str,
    note: &str,
) -> anyhow::Result<()> {
    let ttl = humantime::parse_duration(ttl)
        .map_err(|e| anyhow!("--ttl '{ttl}' is not a duration ({e}); write e.g. 24h or 7d"))?;
    if uses == 0 {
        bail!("--uses must be at least 1");
    }
    let t = client(cli)
        .await?
        .create_enroll_token(pb::CreateEnrollTokenRequest {
            uses,
            ttl_s: ttl.as_secs().max(1),
            note: note.to_string(),
        })
        .await
        .map_err(status)?
        .into_inner();
    outln!("{}", t.token);
    Ok(())
}

/// `vakt admin-token create`: the duration is checked before the server is dialled.
pub async fn create_admin_token(
    cli: &Cli,
    role: RoleArg,
    name: &str,
    ttl: Option<&str>,
) -> anyhow::Result<()> {
    let ttl_s = admin_ttl_s(ttl)?;
    let role = match role {
        RoleArg::Viewer => pb::Role::Viewer,
        RoleArg::Operator => pb::Role::Operator,
        RoleArg::Admin => pb::Role::Admin,
    };
    let t = client(cli)
        .await?
        .create_admin_token(pb::CreateAdminTokenRequest {
            role: role as i32,
            name: name.to_string(),
            ttl_s,
        })
        .await
        .map_err(status)?
        .into_inner();
    outln!("{}", t.token);
    explain_created(&t);
    Ok(())
}

/// `--ttl` of an admin token in seconds; none is 0, a token that does not expire.
fn admin_ttl_s(ttl: Option<&str>) -> anyhow::Result<u64> {
    let Some(ttl) = ttl else { return Ok(0) };
    let d = humantime::parse_duration(ttl)
        .map_err(|e| anyhow!("--ttl '{ttl}' is not a duration ({e}); write e.g. 8h or 90d"))?;
    if d.as_secs() == 0 {
        bail!("--ttl must be at least 1s; leave it out for a token that does not expire");
    }
    Ok(d.as_secs())
}

/// After the token itself went to stdout: what a person should know of it, on stderr.
fn explain_created(t: &pb::CreatedToken) {
    if t.state == "awaiting-approval" {
        eprintln!(
            "admin token {id} is awaiting approval: it works once an admin person other than \
             you and the person it names runs: vakt admin-token approve {id}",
            id = t.id
        );
    }
    if t.expires_at_ms > 0 {
        eprintln!(
            "admin token {} expires at {}",
            t.id,
            rfc3339_ms(t.expires_at_ms)
        );
    }
}

/// On wipes: say plainly when approval is not independent. A failure to ask only skips the
/// note (the wipe itself already answered).
pub async fn warn_if_one_admin_person(c: &mut Client) {
    if let Ok(p) = c
        .get_admin_token_persons(pb::GetAdminTokenPersonsRequest {})
        .await
    {
        let p = p.into_inner();
        if !p.independent_approval {
            eprintln!(
                "warning: wipe approval is not independent yet: only {} admin person exists, \
                 who can mint a token under another name and approve their own wipe; create an \
                 admin token for a second person",
                p.admin_persons
            );
        }
    }
}

fn admin_json(t: &pb::AdminTokenInfo) -> Value {
    json!({
        "id": t.id,
        "name": t.name,
        "role": role_name(pb::Role::try_from(t.role).unwrap_or(pb::Role::Unspecified)),
        "state": t.state,
        "created_at": rfc3339_ms(t.created_at_ms),
        "created_by": t.created_by,
        "expires_at": rfc3339_ms(t.expires_at_ms),
        "last_used_at": rfc3339_ms(t.last_used_at_ms),
        "approved_by": t.approved_by,
        "approved_at": rfc3339_ms(t.approved_at_ms),
        "revoked_by": t.revoked_by,
        "revoked_at": rfc3339_ms(t.revoked_at_ms),
        "kind": t.kind,
    })
}

fn enroll_json(t: &pb::EnrollTokenInfo) -> Value {
    json!({
        "id": t.id,
        "state": t.state,
        "uses_left": t.uses_left,
        "uses_total": t.uses_total,
        "created_at": rfc3339_ms(t.created_at_ms),
        "created_by": t.created_by,
        "expires_at": rfc3339_ms(t.expires_at_ms),
        "note": t.note,
        "revoked_by": t.revoked_by,
        "revoked_at": rfc3339_ms(t.revoked_at_ms),
    })
}

/// `-` for an empty cell, so columns stay readable.
fn cell(s: &str) -> &str {
    if s.is_empty() { "-" } else { s }
}

pub async fn admin_token(cli: &Cli, cmd: &AdminTokenCmd) -> anyhow::Result<()> {
    let mut c = client(cli).await?;
    match cmd {
        AdminTokenCmd::Create { .. } => bail!("admin-token create is handled by the caller"),
        AdminTokenCmd::List { json } => {
            let list = c
                .list_admin_tokens(pb::ListAdminTokensRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .tokens;
            if *json {
                let v: Vec<Value> = list.iter().map(admin_json).collect();
                outln!("{}", Value::Array(v));
                return Ok(());
            }
            // Kept tokens first, then the console sessions' credentials, each in the API's order.
            let mut list = list;
            list.sort_by_key(|t| t.kind == "console-session");
            outln!(
                "{:<12} {:<15} {:<20} {:<8} {:<17} {:<20} {:<20} {:<20} CREATED BY",
                "ID",
                "KIND",
                "NAME",
                "ROLE",
                "STATE",
                "CREATED",
                "EXPIRES",
                "LAST USED"
            );
            for t in &list {
                let role = role_name(pb::Role::try_from(t.role).unwrap_or(pb::Role::Unspecified));
                outln!(
                    "{:<12} {:<15} {:<20} {:<8} {:<17} {:<20} {:<20} {:<20} {}",
                    t.id,
                    cell(&t.kind),
                    t.name,
                    role,
                    t.state,
                    rfc3339_ms(t.created_at_ms),
                    cell(&rfc3339_ms(t.expires_at_ms)),
                    cell(&rfc3339_ms(t.last_used_at_ms)),
                    t.created_by
                );
            }
        }
        AdminTokenCmd::Revoke { id } => {
            let t = c
                .revoke_admin_token(pb::RevokeAdminTokenRequest { id: id.clone() })
                .await
                .map_err(status)?
                .into_inner();
            outln!("admin token {} ('{}') revoked", t.id, t.name);
        }
        AdminTokenCmd::Approve { id } => {
            let t = c
                .approve_admin_token(pb::ApproveAdminTokenRequest { id: id.clone() })
                .await
                .map_err(status)?
                .into_inner();
            outln!("admin token {} ('{}') approved: {}", t.id, t.name, t.state);
        }
    }
    Ok(())
}

pub async fn enroll_token(cli: &Cli, cmd: &TokenCmd) -> anyhow::Result<()> {
    let mut c = client(cli).await?;
    match cmd {
        TokenCmd::Create { .. } => bail!("enroll-token create is handled by the caller"),
        TokenCmd::List { json } => {
            let list = c
                .list_enroll_tokens(pb::ListEnrollTokensRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .tokens;
            if *json {
                let v: Vec<Value> = list.iter().map(enroll_json).collect();
                outln!("{}", Value::Array(v));
                return Ok(());
            }
            outln!(
                "{:<12} {:<8} {:<9} {:<20} {:<20} {:<32} NOTE",
                "ID",
                "STATE",
                "USES",
                "CREATED",
                "EXPIRES",
                "CREATED BY"
            );
            for t in &list {
                outln!(
                    "{:<12} {:<8} {:<9} {:<20} {:<20} {:<32} {}",
                    t.id,
                    t.state,
                    format!("{}/{}", t.uses_left, t.uses_total),
                    rfc3339_ms(t.created_at_ms),
                    cell(&rfc3339_ms(t.expires_at_ms)),
                    t.created_by,
                    t.note
                );
            }
        }
        TokenCmd::Revoke { id } => {
            let t = c
                .revoke_enroll_token(pb::RevokeEnrollTokenRequest { id: id.clone() })
                .await
                .map_err(status)?
                .into_inner();
            outln!("enrollment token {} revoked", t.id);
        }
    }
    Ok(())
}
