//! `vakt audit` and `vakt audit verify`: the audit log of every admin action, and the check of
//! its hash chain (a broken chain is an error exit, after the JSON when `--json` asked for it).

use super::{Cli, client, status};
use anyhow::bail;
use clap::Subcommand;
use serde_json::{Value, json};
use vakt_proto::pb;
use vakt_server::timefmt::rfc3339_ms;

#[derive(Subcommand)]
pub enum AuditCmd {
    /// Check the audit log's hash chain.
    Verify {
        #[arg(long)]
        json: bool,
    },
}

/// `vakt audit [verify]`; `json` is `vakt audit --json` (verify has its own).
pub async fn run(cli: &Cli, cmd: Option<&AuditCmd>, json: bool) -> anyhow::Result<()> {
    match cmd {
        None => {
            let entries = client(cli)
                .await?
                .list_audit(pb::ListAuditRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .entries;
            if json {
                let rows: Vec<Value> = entries
                    .iter()
                    .map(|e| {
                        json!({"seq": e.seq, "at": rfc3339_ms(e.at_ms), "actor": e.actor,
                               "action": e.action, "target": e.target, "detail": e.detail, "hash": e.hash})
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for e in &entries {
                    outln!(
                        "{:>5} {} {:<32} {:<22} {} {}",
                        e.seq,
                        rfc3339_ms(e.at_ms),
                        e.actor,
                        e.action,
                        e.target,
                        e.detail
                    );
                }
            }
        }
        Some(AuditCmd::Verify { json }) => {
            let v = client(cli)
                .await?
                .verify_audit(pb::VerifyAuditRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if *json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&json!({"ok": v.ok, "entries": v.entries,
                        "first_bad_seq": v.first_bad_seq, "problem": v.problem}))?
                );
            }
            if !v.ok {
                bail!(
                    "the audit log is broken: {} ({} entries)",
                    v.problem,
                    v.entries
                );
            }
            if !*json {
                outln!(
                    "audit log intact: {} entries, hash chain verified",
                    v.entries
                );
            }
        }
    }
    Ok(())
}
