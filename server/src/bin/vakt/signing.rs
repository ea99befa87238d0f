//! `vakt signing-key rotate|show|retire`: the command-signing key's generations. Rotation
//! hands every agent the new key signed by the one it trusts; `show` says how many devices
//! trust each generation and which are retired, so IT sees when a rotation has reached the
//! whole fleet; `retire` destroys old generations' private keys once nobody needs them (or,
//! forced, after a leak, saying which devices wait for the new key).

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
    /// The key's generations, how many devices trust each, and which are retired.
    Show {
        #[arg(long)]
        json: bool,
    },
    /// Destroy the private keys of generations 0 through N (admin; audited). Their public keys
    /// and rollover statements stay, so offline agents still reach the current key. Refused
    /// while devices still trust one of them, unless --force.
    Retire {
        /// The newest generation to retire; it must be older than the current one.
        #[arg(long, value_name = "N")]
        through: u32,
        /// Retire even though devices still trust these generations (the key leaked): they
        /// cannot be sent signed commands until they connect and acknowledge the current key.
        #[arg(long)]
        force: bool,
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
            "retired": g.retired,
            "retired_at": g.retired.then(|| rfc3339_ms(g.retired_at_ms)),
        })).collect::<Vec<_>>(),
    })
}

fn retired_json(r: &pb::RetiredSigningKeys) -> Value {
    let mut v = keys_json(&r.keys.clone().unwrap_or_default());
    v["retired_now"] = json!(r.retired);
    v["stranded"] = r
        .stranded
        .iter()
        .map(|d| {
            json!({
                "device_id": d.device_id,
                "hostname": d.hostname,
                "generation": d.generation,
            })
        })
        .collect();
    v
}

fn print_keys(k: &pb::SigningKeys) {
    outln!(
        "{:<10} {:<16} {:<21} DEVICES",
        "GENERATION",
        "FINGERPRINT",
        "CREATED"
    );
    for g in &k.generations {
        let note = if g.generation == k.current {
            "  (current)".to_string()
        } else if g.retired {
            format!("  (retired {})", rfc3339_ms(g.retired_at_ms))
        } else {
            String::new()
        };
        outln!(
            "{:<10} {:<16} {:<21} {}{note}",
            g.generation,
            g.fingerprint.get(..16).unwrap_or(&g.fingerprint),
            rfc3339_ms(g.created_at_ms),
            g.devices,
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
    if let Some(newest_old) = k
        .generations
        .iter()
        .filter(|g| g.generation != k.current && !g.retired)
        .map(|g| g.generation)
        .max()
        && behind == 0
    {
        outln!(
            "no device trusts generation {newest_old} or older: `vakt signing-key retire --through {newest_old}` destroys their private keys"
        );
    }
}

fn print_retired(r: &pb::RetiredSigningKeys) {
    if let Some(k) = &r.keys {
        print_keys(k);
    }
    if r.retired.is_empty() {
        outln!("nothing to retire: those generations were retired already");
    } else {
        let list: Vec<String> = r.retired.iter().map(u32::to_string).collect();
        outln!(
            "retired generation(s) {}: their private keys are destroyed",
            list.join(", ")
        );
    }
    if !r.stranded.is_empty() {
        outln!(
            "{} device(s) trust only a retired key and cannot be sent signed commands (lock, unlock, wipe) until they connect and acknowledge the current one:",
            r.stranded.len()
        );
        for d in &r.stranded {
            outln!(
                "  {} {} (generation {})",
                d.device_id,
                d.hostname,
                d.generation
            );
        }
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
        SigningKeyCmd::Retire {
            through,
            force,
            json,
        } => {
            let r = c
                .retire_signing_keys(pb::RetireSigningKeysRequest {
                    through: *through,
                    force: *force,
                })
                .await
                .map_err(status)?
                .into_inner();
            if *json {
                outln!("{}", retired_json(&r));
            } else {
                print_retired(&r);
            }
            return Ok(());
        }
    };
    if json {
        outln!("{}", keys_json(&keys));
    } else {
        print_keys(&keys);
    }
    Ok(())
}
