//! `vakt`: the IT command line. Talks to the server's admin API over TLS with a bearer token.
//!
//! Every list and show command takes `--json` and then prints one JSON document on stdout and
//! nothing else there; errors go to stderr with a non-zero exit. Commands that create a token
//! print the token alone on stdout.

use anyhow::{Context, anyhow, bail};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use tonic::metadata::MetadataValue;
use tonic::transport::Channel;
use vakt_proto::pb::admin_service_client::AdminServiceClient;

/// Writes a line to stdout; a reader that went away (`vakt devices | head -1`) ends the
/// program quietly instead of a panic.
macro_rules! outln {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if writeln!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(0);
        }
    }};
}

macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if write!(std::io::stdout(), $($t)*).is_err() {
            std::process::exit(0);
        }
    }};
}

// One module per command group; each holds its subcommands, its calls and its printing.
#[path = "vakt/audit.rs"]
mod audit;
#[path = "vakt/commands.rs"]
mod commands;
#[path = "vakt/devices.rs"]
mod devices;
#[path = "vakt/exemptions.rs"]
mod exemptions;
#[path = "vakt/findings.rs"]
mod findings;
#[path = "vakt/identity.rs"]
mod identity;
#[path = "vakt/loss.rs"]
mod loss;
#[path = "vakt/people.rs"]
mod people;
#[path = "vakt/policy.rs"]
mod policy;
#[path = "vakt/signing.rs"]
mod signing;
#[path = "vakt/tokens.rs"]
mod tokens;
#[path = "vakt/trips.rs"]
mod trips;

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
        cmd: tokens::TokenCmd,
    },
    /// Admin API tokens.
    #[command(name = "admin-token")]
    AdminToken {
        #[command(subcommand)]
        cmd: tokens::AdminTokenCmd,
    },
    /// One row per device.
    Devices {
        #[arg(long)]
        json: bool,
    },
    /// One device.
    Device {
        #[command(subcommand)]
        cmd: devices::DeviceCmd,
    },
    /// Queued and finished commands (lock, unlock, wipe).
    Commands {
        /// Only this device (id or hostname).
        #[arg(long)]
        device: Option<String>,
        #[arg(long)]
        json: bool,
    },
    /// The loss procedure of policy section 8.1.
    Loss {
        #[command(subcommand)]
        cmd: loss::LossCmd,
    },
    /// Wipes: one admin requests, a different admin approves.
    Wipe {
        #[command(subcommand)]
        cmd: loss::WipeCmd,
    },
    /// Findings: where a device breaks the policy in force, with the section it cites.
    Findings {
        /// Only this device (id or hostname).
        #[arg(long)]
        device: Option<String>,
        /// Include resolved findings.
        #[arg(long)]
        all: bool,
        #[arg(long)]
        json: bool,
    },
    /// The policy pack in force.
    Policy {
        #[command(subcommand)]
        cmd: policy::PolicyCmd,
    },
    /// The people register: who has which device, their managers, end dates and leaves.
    People {
        #[command(subcommand)]
        cmd: people::PeopleCmd,
    },
    /// Trips abroad (policy 8.4, 8.5).
    Trips {
        #[command(subcommand)]
        cmd: trips::TripsCmd,
    },
    /// Exemptions from a rule, time-boxed or until revoked.
    Exemptions {
        #[command(subcommand)]
        cmd: exemptions::ExemptionsCmd,
    },
    /// The audit log of every admin action.
    Audit {
        #[command(subcommand)]
        cmd: Option<audit::AuditCmd>,
        #[arg(long)]
        json: bool,
    },
    /// The key that signs lock, unlock and wipe: rotate it, show its generations.
    #[command(name = "signing-key")]
    SigningKey {
        #[command(subcommand)]
        cmd: signing::SigningKeyCmd,
    },
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
    let channel = vakt_proto::dial::connect(&cli.server, &ca, None)
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

/// Hands the command to its group's module.
async fn real_main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.cmd {
        Cmd::EnrollToken {
            cmd: tokens::TokenCmd::Create { uses, ttl, note },
        } => tokens::create_enroll_token(&cli, *uses, ttl, note).await,
        Cmd::EnrollToken { cmd } => tokens::enroll_token(&cli, cmd).await,
        Cmd::SigningKey { cmd } => signing::run(&cli, cmd).await,
        Cmd::AdminToken {
            cmd: tokens::AdminTokenCmd::Create { role, name, ttl },
        } => tokens::create_admin_token(&cli, *role, name, ttl.as_deref()).await,
        Cmd::AdminToken { cmd } => tokens::admin_token(&cli, cmd).await,
        Cmd::Devices { json } => devices::list(&cli, *json).await,
        Cmd::Device { cmd } => devices::run(&cli, cmd).await,
        Cmd::Commands { device, json } => commands::list(&cli, device.as_deref(), *json).await,
        Cmd::Loss { cmd } => loss::run(&cli, cmd).await,
        Cmd::Wipe { cmd } => loss::wipe(&cli, cmd).await,
        Cmd::Findings { device, all, json } => {
            findings::list(&cli, device.as_deref(), *all, *json).await
        }
        Cmd::Policy { cmd } => policy::run(&cli, cmd).await,
        Cmd::People { cmd } => people::run(&cli, cmd).await,
        Cmd::Trips { cmd } => trips::run(&cli, cmd).await,
        Cmd::Exemptions { cmd } => exemptions::run(&cli, cmd).await,
        Cmd::Audit { cmd, json } => audit::run(&cli, cmd.as_ref(), *json).await,
    }
}
