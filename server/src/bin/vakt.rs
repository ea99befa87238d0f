//! `vakt`: the IT command line. Talks to the server's admin API over TLS with a bearer token.
//!
//! Every list and show command takes `--json` and then prints one JSON document on stdout and
//! nothing else there; errors go to stderr with a non-zero exit. Commands that create a token
//! print the token alone on stdout.

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand, ValueEnum};
use serde_json::{Value, json};
use std::path::PathBuf;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use vakt_proto::pb;
use vakt_proto::pb::admin_service_client::AdminServiceClient;
use vakt_server::timefmt::rfc3339_ms;

#[derive(Parser)]
#[command(name = "vakt", version, about = "Vakt IT command line")]
struct Cli {
    /// The server's gRPC address.
    #[arg(
        long,
        env = "VAKT_SERVER",
        default_value = "https://127.0.0.1:7443",
        global = true
    )]
    server: String,
    /// The server's CA certificate (DATA/ca.pem on the server).
    #[arg(long, env = "VAKT_CA", global = true)]
    ca: Option<PathBuf>,
    /// An admin API token.
    #[arg(long, env = "VAKT_TOKEN", global = true, hide_env_values = true)]
    token: Option<String>,
    /// A file holding the admin API token.
    #[arg(long, env = "VAKT_TOKEN_FILE", global = true)]
    token_file: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Enrollment tokens for agents.
    #[command(name = "enroll-token")]
    EnrollToken {
        #[command(subcommand)]
        cmd: TokenCmd,
    },
    /// Admin API tokens.
    #[command(name = "admin-token")]
    AdminToken {
        #[command(subcommand)]
        cmd: AdminTokenCmd,
    },
    /// One row per device.
    Devices {
        #[arg(long)]
        json: bool,
    },
    /// One device.
    Device {
        #[command(subcommand)]
        cmd: DeviceCmd,
    },
}

#[derive(Subcommand)]
enum TokenCmd {
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
}

#[derive(Clone, Copy, ValueEnum)]
enum RoleArg {
    Viewer,
    Operator,
    Admin,
}

#[derive(Subcommand)]
enum AdminTokenCmd {
    /// Print a new admin API token.
    Create {
        #[arg(long, value_enum)]
        role: RoleArg,
        #[arg(long)]
        name: String,
    },
}

#[derive(Subcommand)]
enum DeviceCmd {
    /// Everything known of one device.
    Show {
        /// Device id or hostname.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Assign the device to a person.
    Assign { id: String, email: String },
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    match real_main().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("vakt: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

type Client = AdminServiceClient<tonic::service::interceptor::InterceptedService<Channel, Auth>>;

#[derive(Clone)]
struct Auth(MetadataValue<tonic::metadata::Ascii>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut req: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        req.metadata_mut().insert("authorization", self.0.clone());
        Ok(req)
    }
}

async fn client(cli: &Cli) -> anyhow::Result<Client> {
    let token = match (&cli.token, &cli.token_file) {
        (Some(t), _) => t.trim().to_string(),
        (None, Some(f)) => std::fs::read_to_string(f)
            .with_context(|| format!("token file {}", f.display()))?
            .trim()
            .to_string(),
        (None, None) => bail!(
            "no admin token: pass --token or --token-file (or set VAKT_TOKEN / VAKT_TOKEN_FILE)"
        ),
    };
    let ca_path = cli
        .ca
        .as_ref()
        .ok_or_else(|| anyhow!("no CA certificate: pass --ca DATA/ca.pem (or set VAKT_CA)"))?;
    let ca = std::fs::read_to_string(ca_path)
        .with_context(|| format!("CA file {}", ca_path.display()))?;
    let channel = vakt_agent::link::connect(&cli.server, &ca, None)
        .await
        .map_err(|e| anyhow!("{e} (is the server running, and is --ca its ca.pem?)"))?;
    let header: MetadataValue<_> = format!("Bearer {token}")
        .parse()
        .map_err(|_| anyhow!("the token contains characters that cannot be sent"))?;
    Ok(AdminServiceClient::with_interceptor(channel, Auth(header)))
}

/// A gRPC status as a message for a person.
fn status(s: tonic::Status) -> anyhow::Error {
    use tonic::Code;
    let what = match s.code() {
        Code::Unauthenticated => "not authenticated",
        Code::PermissionDenied => "not allowed",
        Code::NotFound => "not found",
        Code::InvalidArgument => "invalid",
        Code::Unavailable => "server unavailable",
        _ => "server error",
    };
    anyhow!("{what}: {}", s.message())
}

async fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.cmd {
        Cmd::EnrollToken {
            cmd: TokenCmd::Create { uses, ttl, note },
        } => {
            let ttl = humantime::parse_duration(ttl).map_err(|e| {
                anyhow!("--ttl '{ttl}' is not a duration ({e}); write e.g. 24h or 7d")
            })?;
            if *uses == 0 {
                bail!("--uses must be at least 1");
            }
            let t = client(&cli)
                .await?
                .create_enroll_token(pb::CreateEnrollTokenRequest {
                    uses: *uses,
                    ttl_s: ttl.as_secs().max(1),
                    note: note.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            println!("{}", t.token);
        }
        Cmd::AdminToken {
            cmd: AdminTokenCmd::Create { role, name },
        } => {
            let role = match role {
                RoleArg::Viewer => pb::Role::Viewer,
                RoleArg::Operator => pb::Role::Operator,
                RoleArg::Admin => pb::Role::Admin,
            };
            let t = client(&cli)
                .await?
                .create_admin_token(pb::CreateAdminTokenRequest {
                    role: role as i32,
                    name: name.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            println!("{}", t.token);
        }
        Cmd::Devices { json } => {
            let list = client(&cli)
                .await?
                .list_devices(pb::ListDevicesRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .devices;
            if *json {
                let rows: Vec<Value> = list.iter().map(device_json).collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_devices(&list);
            }
        }
        Cmd::Device {
            cmd: DeviceCmd::Show { id, json },
        } => {
            let detail = client(&cli)
                .await?
                .get_device(pb::GetDeviceRequest { id: id.clone() })
                .await
                .map_err(status)?
                .into_inner();
            let device = detail.device.unwrap_or_default();
            let report = vakt_proto::convert::sections_to_report(&detail.sections)
                .map_err(|e| anyhow!("the server sent a section this vakt cannot read: {e}"))?;
            if *json {
                let mut v = device_json(&device);
                let r = serde_json::to_value(&report)?;
                if let (Some(obj), Value::Object(rm)) = (v.as_object_mut(), r) {
                    obj.extend(rm);
                }
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_device(&device, &report);
            }
        }
        Cmd::Device {
            cmd: DeviceCmd::Assign { id, email },
        } => {
            let d = client(&cli)
                .await?
                .assign_device(pb::AssignDeviceRequest {
                    id: id.clone(),
                    email: email.clone(),
                })
                .await
                .map_err(status)?
                .into_inner();
            println!("{} ({}) is assigned to {}", d.id, d.hostname, d.assigned_to);
        }
    }
    Ok(())
}

fn state_name(raw: i32) -> &'static str {
    match pb::DeviceState::try_from(raw) {
        Ok(pb::DeviceState::Active) => "active",
        Ok(pb::DeviceState::Lost) => "lost",
        Ok(pb::DeviceState::Locked) => "locked",
        Ok(pb::DeviceState::Wiped) => "wiped",
        Ok(pb::DeviceState::Retired) => "retired",
        _ => "unknown",
    }
}

fn device_json(d: &pb::Device) -> Value {
    json!({
        "id": d.id,
        "hostname": d.hostname,
        "state": state_name(d.state),
        "last_seen": rfc3339_ms(d.last_seen_ms),
        "assigned_to": d.assigned_to,
        "connected": d.connected,
        "enrolled_at": rfc3339_ms(d.enrolled_at_ms),
        "last_report": rfc3339_ms(d.last_report_ms),
        "last_report_sequence": d.last_report_sequence,
        "machine_id": d.machine_id,
        "serial": d.serial,
        "model": d.model,
        "agent_version": d.agent_version,
    })
}

fn print_devices(list: &[pb::Device]) {
    if list.is_empty() {
        println!("no devices enrolled yet");
        return;
    }
    println!(
        "{:<21} {:<24} {:<8} {:<21} {:<4} ASSIGNED TO",
        "ID", "HOSTNAME", "STATE", "LAST SEEN", "LINK"
    );
    for d in list {
        println!(
            "{:<21} {:<24} {:<8} {:<21} {:<4} {}",
            d.id,
            d.hostname,
            state_name(d.state),
            rfc3339_ms(d.last_seen_ms),
            if d.connected { "up" } else { "-" },
            d.assigned_to
        );
    }
}

fn print_device(d: &pb::Device, r: &vakt_proto::model::Report) {
    println!("device      {} ({})", d.id, d.hostname);
    println!(
        "state       {}{}",
        state_name(d.state),
        if d.connected { ", connected" } else { "" }
    );
    println!(
        "assigned to {}",
        if d.assigned_to.is_empty() {
            "-"
        } else {
            &d.assigned_to
        }
    );
    println!("last seen   {}", rfc3339_ms(d.last_seen_ms));
    println!(
        "last report {} (sequence {})",
        rfc3339_ms(d.last_report_ms),
        d.last_report_sequence
    );
    println!(
        "os          {} / kernel {} / {}",
        r.host.os, r.host.kernel, r.host.arch
    );
    println!(
        "hardware    {} {} serial {}",
        r.host.vendor, r.host.model, r.host.serial
    );
    println!("software    {} packages", r.software.len());
    for p in &r.software {
        println!(
            "  {:<32} {:<28} {:<8} {:<16} {}{}",
            p.name,
            p.version,
            format!("{:?}", p.format).to_lowercase(),
            p.source.as_str(),
            p.origin,
            if p.current { "" } else { " (update available)" }
        );
    }
    println!(
        "mail        {} accounts, {} forwards, {} identities",
        r.mail.accounts.len(),
        r.mail.forwards.len(),
        r.mail.identities.len()
    );
    for f in &r.mail.forwards {
        println!(
            "  forward   {} {} '{}' -> {}{}",
            f.client,
            f.user,
            f.rule,
            f.target,
            if f.enabled { "" } else { " (disabled)" }
        );
    }
    println!("roaming     {} modems", r.roaming.modems.len());
    for m in &r.roaming.modems {
        println!(
            "  modem     {} {} country {} data {}",
            m.registration,
            m.operator_mcc,
            m.country,
            if m.data_connected { "on" } else { "off" }
        );
    }
    for e in &r.errors {
        println!(
            "error       [{}] {}: {}",
            e.section.as_str(),
            e.source,
            e.message
        );
    }
}
