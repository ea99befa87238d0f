//! The `vakt-agent` binary: `run`, `collect` and `status`.

use anyhow::Context;
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use vakt_agent::collect::{Collector, Root, roaming};
use vakt_agent::config::Config;
use vakt_agent::renew::Health;
use vakt_agent::state::StateDir;

#[derive(Parser)]
#[command(name = "vakt-agent", version, about = "Vakt device agent")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enroll if needed, then report and hold the command stream.
    Run {
        #[arg(long, default_value = "/etc/vakt/agent.toml")]
        config: PathBuf,
        /// Enroll if needed, report once and exit.
        #[arg(long)]
        once: bool,
    },
    /// Print what the agent would report, without a server.
    Collect {
        #[arg(long)]
        json: bool,
        /// Read every file under DIR instead of /.
        #[arg(long, default_value = "/")]
        root: PathBuf,
    },
    /// Ask for a short exemption for mobile data abroad (policy 8.4: a necessary work task
    /// that Wi-Fi cannot serve). IT and your manager see the reason.
    Exemption {
        #[command(subcommand)]
        cmd: ExemptionCmd,
    },
    /// Identity, server and last report.
    Status {
        #[arg(long, default_value = "/etc/vakt/agent.toml")]
        config: PathBuf,
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ExemptionCmd {
    Request {
        #[arg(long, default_value = "/etc/vakt/agent.toml")]
        config: PathBuf,
        #[arg(long)]
        minutes: u32,
        #[arg(long)]
        reason: String,
    },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("VAKT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match real_main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vakt-agent: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Run { config, once } => {
            let cfg = Config::load(&config)?;
            vakt_agent::daemon::run(cfg, once, vakt_agent::daemon::shutdown_signal(), None).await?;
        }
        Cmd::Collect { json, root } => {
            let mut report =
                tokio::task::spawn_blocking(move || Collector::new(Root::new(root)).collect())
                    .await
                    .context("collector task")?;
            // The modems as they are now; no ledger of trips abroad without a state directory.
            let bus = vakt_agent::bus::BusAddress::resolve(
                None,
                std::env::var("DBUS_SYSTEM_BUS_ADDRESS").ok().as_deref(),
            );
            let home = roaming::HomeMccs::new(Vec::<String>::new())?;
            let got = roaming::collect(&bus, &home).await;
            report.roaming = got.value.state(&roaming::Ledger::default());
            report.errors.extend(got.errors);
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_summary(&report);
            }
        }
        Cmd::Exemption {
            cmd:
                ExemptionCmd::Request {
                    config,
                    minutes,
                    reason,
                },
        } => {
            let cfg = Config::load(&config)?;
            let state = StateDir::open(&cfg.state_dir)?;
            let id = state
                .identity()?
                .context("this laptop is not enrolled yet; run the agent first")?;
            let channel = vakt_agent::link::Servers::new(cfg.servers.clone())
                .connect_as(&id)
                .await?;
            let reply = vakt_proto::pb::agent_service_client::AgentServiceClient::new(channel)
                .request_exemption(vakt_proto::pb::ExemptionRequest { minutes, reason })
                .await
                .map_err(|s| anyhow::anyhow!("{}", s.message()))?
                .into_inner();
            println!(
                "exemption {} granted until {}",
                reply.id,
                ms_text(reply.until_ms)
            );
        }
        Cmd::Status { config, json } => {
            let cfg = Config::load(&config)?;
            let state = StateDir::open(&cfg.state_dir)?;
            let id = state.identity()?;
            let rs = state.report_state()?;
            let lock = vakt_agent::act::lock_status(&state)?;
            let cert = id
                .as_ref()
                .map(|i| vakt_agent::renew::health(&i.cert_pem, vakt_agent::link::now_ms()))
                .transpose()?;
            if json {
                let v = serde_json::json!({
                    "enrolled": id.is_some(),
                    "device_id": id.as_ref().map(|i| i.device_id.clone()),
                    "server": id.as_ref().map_or(cfg.servers.first().cloned().unwrap_or_default(), |i| i.server.clone()),
                    "servers": cfg.servers,
                    "last_report_sequence": rs.sequence,
                    "last_report_ack_ms": rs.last_ack_ms,
                    "locked": lock.locked,
                    "locked_since_ms": lock.since_ms,
                    "lock_command": lock.command_id,
                    "certificate": cert.map(cert_json),
                });
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                match &id {
                    Some(i) => println!("device:      {}\nserver:      {}", i.device_id, i.server),
                    None => println!(
                        "device:      not enrolled\nserver:      {}",
                        cfg.servers.join(", ")
                    ),
                }
                if let Some(c) = cert {
                    println!("certificate: {}", cert_text(c));
                }
                println!(
                    "last report: sequence {} acknowledged {}",
                    rs.sequence,
                    ms_text(rs.last_ack_ms)
                );
                if lock.locked {
                    println!(
                        "lost mode:   LOCKED since {} (command {})",
                        ms_text(lock.since_ms),
                        lock.command_id
                    );
                } else {
                    println!("lost mode:   no");
                }
            }
        }
    }
    Ok(())
}

fn cert_text(h: Health) -> String {
    match h {
        Health::Fresh { not_after_ms } => format!("valid until {}", ms_text(not_after_ms)),
        Health::Due { not_after_ms } => format!(
            "valid until {}; renewing at the next report",
            ms_text(not_after_ms)
        ),
        Health::Expired { at_ms } => vakt_agent::renew::expired_text(at_ms),
    }
}

fn cert_json(h: Health) -> serde_json::Value {
    let (state, at) = match h {
        Health::Fresh { not_after_ms } => ("valid", not_after_ms),
        Health::Due { not_after_ms } => ("renewal-due", not_after_ms),
        Health::Expired { at_ms } => ("expired", at_ms),
    };
    serde_json::json!({"state": state, "expires_at": ms_text(at), "message": cert_text(h)})
}

fn ms_text(ms: i64) -> String {
    if ms <= 0 {
        return "never".into();
    }
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.unsigned_abs());
    humantime::format_rfc3339_seconds(t).to_string()
}

fn print_summary(r: &vakt_proto::model::Report) {
    println!(
        "host:      {} ({}, kernel {})",
        r.host.hostname, r.host.os, r.host.kernel
    );
    println!("software:  {} packages", r.software.len());
    println!(
        "mail:      {} accounts, {} forwards, {} identities",
        r.mail.accounts.len(),
        r.mail.forwards.len(),
        r.mail.identities.len()
    );
    println!("roaming:   {} modems", r.roaming.modems.len());
    let clear = r
        .storage
        .volumes
        .iter()
        .chain(&r.storage.swap)
        .filter(|v| !v.encrypted)
        .count();
    println!(
        "storage:   {} volumes, {} swaps, {clear} not encrypted",
        r.storage.volumes.len(),
        r.storage.swap.len()
    );
    for e in &r.errors {
        println!(
            "error:     [{}] {}: {}",
            e.section.as_str(),
            e.source,
            e.message
        );
    }
}
