//! `vakt signing-key rotate|show`: the command-signing key's generations. Rotation hands every
//! agent the new key signed by the one it trusts; `show` says how many devices trust each
//! generation, so IT sees when a rotation has reached the whole fleet.

use super::{Cli, client, status};
use clap::Subcommand;
use serde_json::{Value, json};
use vakt_proto::pb;
use vakt_server::timefmt::rfc3339_ms;

#[derive(Subcommand)]
pub enum SigningKeyCmd {
    /// Make a new command-signing key (admin; audited). Connected agents are handed it at once
    /// and offline ones when they return, each signed by the key it already trusts; commands
    /// to a device are signed with the new key once it has acknowledged it.
    Rotate {
        #[arg(long)]
        json: bool,
    },
    /// The key's generations and how many devices trust each.
    Show {
        #[arg(long)]
        json: bool,
    },
}

fn keys_json(k: &pb::SigningKeys) -> Value {
    json!({
        "current": k.current,
        "generations": k.generations.iter().map(|g| json!({
            "generation": g.generation,
            "fingerprint": g.fingerprint,
            "created_at": rfc3339_ms(g.created_at_ms),
            "devices": g.devices,
        })).collect::<Vec<_>>(),
    })
}

fn print_keys(k: &pb::SigningKeys) {
    outln!(
        "{:<10} {:<16} {:<21} DEVICES",
        "GENERATION",
        "FINGERPRINT",
        "CREATED"
    );
    for g in &k.generations {
        outln!(
            "{:<10} {:<16} {:<21} {}{}",
            g.generation,
            g.fingerprint.get(..16).unwrap_or(&g.fingerprint),
            rfc3339_ms(g.created_at_ms),
            g.devices,
            if g.generation == k.current {
                "  (current)"
            } else {
                ""
            }
        );
    }
    let behind: u32 = k
        .generations
        .iter()
        .filter(|g| g.generation != k.current)
        .map(|g| g.devices)
        .sum();
    if behind > 0 {
        outln!(
            "{behind} device(s) still trust an older key; each is handed the new one when it connects"
        );
    }
}

pub async fn run(cli: &Cli, cmd: &SigningKeyCmd) -> anyhow::Result<()> {
    let mut c = client(cli).await?;
    let (keys, json) = match cmd {
        SigningKeyCmd::Rotate { json } => (
            c.rotate_signing_key(pb::RotateSigningKeyRequest {})
                .await
                .map_err(status)?
                .into_inner(),
            *json,
        ),
        SigningKeyCmd::Show { json } => (
            c.get_signing_keys(pb::GetSigningKeysRequest {})
                .await
                .map_err(status)?
                .into_inner(),
            *json,
        ),
    };
    if json {
        outln!("{}", keys_json(&keys));
    } else {
        print_keys(&keys);
    }
    Ok(())
}
