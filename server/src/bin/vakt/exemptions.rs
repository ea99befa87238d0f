//! `vakt exemptions grant|list|revoke`: exemptions of a device or a person from a rule,
//! time-boxed or until revoked.

use super::{Cli, client, status};
use clap::Subcommand;
use serde_json::{Value, json};
use vakt_proto::pb;
use vakt_server::timefmt::rfc3339_ms;

#[derive(Subcommand)]
pub enum ExemptionsCmd {
    /// Grant an exemption to a device or a person.
    Grant {
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        person: Option<String>,
        /// A rule id or kind, e.g. mobile-data-abroad.
        #[arg(long)]
        rule: String,
        /// How long; none: until revoked.
        #[arg(long)]
        minutes: Option<u32>,
        #[arg(long)]
        reason: String,
    },
    List {
        #[arg(long)]
        json: bool,
    },
    /// End an exemption now (it stays listed, with who ended it and why).
    Revoke {
        id: String,
        #[arg(long)]
        reason: String,
    },
}

/// `vakt exemptions ...`.
pub async fn run(cli: &Cli, cmd: &ExemptionsCmd) -> anyhow::Result<()> {
    match cmd {
        ExemptionsCmd::Grant {
            device,
            person,
            rule,
            minutes,
            reason,
        } => {
            let e = client(cli)
                .await?
                .grant_exemption(pb::GrantExemptionRequest {
                    device: device.clone().unwrap_or_default(),
                    person: person.clone().unwrap_or_default(),
                    rule: rule.clone(),
                    minutes: minutes.unwrap_or(0),
                    reason: reason.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            outln!("{}", e.id);
        }
        ExemptionsCmd::Revoke { id, reason } => {
            let e = client(cli)
                .await?
                .revoke_exemption(pb::RevokeExemptionRequest {
                    id: id.clone(),
                    reason: reason.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            outln!("{} ended {}", e.id, rfc3339_ms(e.until_ms));
        }
        ExemptionsCmd::List { json } => {
            let list = client(cli)
                .await?
                .list_exemptions(pb::ListExemptionsRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .exemptions;
            if *json {
                let rows: Vec<Value> = list
                    .iter()
                    .map(|e| {
                        json!({"id": e.id, "device": e.device, "person": e.person, "rule": e.rule,
                                    "from": rfc3339_ms(e.from_ms), "until": rfc3339_ms(e.until_ms),
                                    "reason": e.reason, "granted_by": e.granted_by,
                                    "revoked_by": e.revoked_by, "revoke_reason": e.revoke_reason})
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for e in &list {
                    let ended = if e.revoked_by.is_empty() {
                        String::new()
                    } else {
                        format!(" (ended early by {}: {})", e.revoked_by, e.revoke_reason)
                    };
                    outln!(
                        "{} {}{} {} until {} — {}{ended}",
                        e.id,
                        e.device,
                        e.person,
                        e.rule,
                        rfc3339_ms(e.until_ms),
                        e.reason
                    );
                }
            }
        }
    }
    Ok(())
}
