//! `vakt policy check|apply|show`: the policy pack, checked offline (no server, no token) or
//! applied and shown through the server.

use super::{Cli, client, status};
use anyhow::{Context, bail};
use clap::Subcommand;
use serde_json::json;
use std::path::PathBuf;
use vakt_proto::pb;
use vakt_server::timefmt::rfc3339_ms;

#[derive(Subcommand)]
pub enum PolicyCmd {
    /// Validate a pack offline; errors name line and column.
    Check { file: PathBuf },
    /// Replace the policy in force (only if the pack is valid).
    Apply { file: PathBuf },
    /// The policy in force.
    Show {
        #[arg(long)]
        json: bool,
        /// Print the pack's TOML.
        #[arg(long)]
        toml: bool,
    },
}

/// `vakt policy ...`.
pub async fn run(cli: &Cli, cmd: &PolicyCmd) -> anyhow::Result<()> {
    match cmd {
        PolicyCmd::Check { file } => {
            // Offline: no server, no token.
            let text =
                std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
            let check = vakt_server::api::admin::check_pack(&pb::PolicyText {
                toml: text,
                file_name: file.display().to_string(),
            });
            if !check.ok {
                for e in &check.errors {
                    eprintln!("{e}");
                }
                bail!("{}: {} error(s)", file.display(), check.errors.len());
            }
            outln!("{}: valid, {} rules", file.display(), check.rules);
        }
        PolicyCmd::Apply { file } => {
            let text =
                std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
            let info = client(cli)
                .await?
                .apply_policy(pb::PolicyText {
                    toml: text,
                    file_name: file.display().to_string(),
                })
                .await
                .map_err(status)?
                .into_inner();
            outln!(
                "policy version {} in force: {} ({} rules)",
                info.version,
                info.pack_version,
                info.rules
            );
        }
        PolicyCmd::Show { json, toml } => {
            let p = client(cli)
                .await?
                .show_policy(pb::ShowPolicyRequest {})
                .await
                .map_err(status)?
                .into_inner();
            if *toml {
                out!("{}", p.toml);
            } else if *json {
                outln!(
                    "{}",
                    serde_json::to_string_pretty(&json!({
                        "version": p.version, "organisation": p.organisation, "document": p.document,
                        "reference": p.reference, "pack_version": p.pack_version,
                        "applied": rfc3339_ms(p.applied_ms), "applied_by": p.applied_by, "rules": p.rules,
                    }))?
                );
            } else {
                outln!("{} — {} ({})", p.organisation, p.document, p.reference);
                outln!(
                    "pack {} with {} rules; version {} applied {} by {}",
                    p.pack_version,
                    p.rules,
                    p.version,
                    rfc3339_ms(p.applied_ms),
                    p.applied_by
                );
            }
        }
    }
    Ok(())
}
