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
use vakt_server::api::device_state_name;
use vakt_server::commands::{kind_name, state_name};
use vakt_server::timefmt::rfc3339_ms;

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

#[path = "vakt/identity.rs"]
mod identity;
#[path = "vakt/signing.rs"]
mod signing;
#[path = "vakt/tokens.rs"]
mod tokens;

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
        cmd: LossCmd,
    },
    /// Wipes: one admin requests, a different admin approves.
    Wipe {
        #[command(subcommand)]
        cmd: WipeCmd,
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
        cmd: PolicyCmd,
    },
    /// The people register: who has which device, their managers, end dates and leaves.
    People {
        #[command(subcommand)]
        cmd: PeopleCmd,
    },
    /// Trips abroad (policy 8.4, 8.5).
    Trips {
        #[command(subcommand)]
        cmd: TripsCmd,
    },
    /// Exemptions from a rule, time-boxed or until revoked.
    Exemptions {
        #[command(subcommand)]
        cmd: ExemptionsCmd,
    },
    /// The audit log of every admin action.
    Audit {
        #[command(subcommand)]
        cmd: Option<AuditCmd>,
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

#[derive(Subcommand)]
enum LossCmd {
    /// Open a loss case: marks the device lost and queues a lock at once.
    Report {
        /// Device id or hostname.
        id: String,
        /// Who reported the loss (defaults to the person the device is assigned to).
        #[arg(long)]
        reported_by: Option<String>,
        #[arg(long)]
        police_report: Option<String>,
        #[arg(long)]
        notes: Option<String>,
    },
    /// The case with its checklist.
    Show {
        /// Device id, hostname or case id.
        id: String,
        #[arg(long)]
        json: bool,
    },
    /// Record steps of the checklist.
    Update {
        id: String,
        /// Step 1: the SIM is blocked and a new one ordered.
        #[arg(long)]
        sim_blocked: bool,
        /// Step 2: the police report's number.
        #[arg(long)]
        police_report: Option<String>,
        /// Step 2: why no police report is needed (misuse ruled out).
        #[arg(long)]
        no_police_report: Option<String>,
        /// Step 3: the incident report went to the risk and security group.
        #[arg(long)]
        incident_report_sent: bool,
        /// Step 4: the manager is informed.
        #[arg(long)]
        manager_informed: bool,
        #[arg(long)]
        notes: Option<String>,
    },
    /// The incident report for the risk and security group (Swedish).
    IncidentReport {
        id: String,
        #[arg(long)]
        html: bool,
    },
    /// The device is back: queue an unlock and close the case.
    Recovered { id: String },
}

#[derive(Subcommand)]
enum WipeCmd {
    /// Request a wipe (an admin); it waits for a second admin's approval.
    Request {
        id: String,
        #[arg(long)]
        reason: String,
    },
    /// Approve another admin's wipe request.
    Approve { command_id: String },
}

#[derive(Subcommand)]
enum PolicyCmd {
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

#[derive(Subcommand)]
enum PeopleCmd {
    /// Replace the register from a CSV file (validated whole first; nothing applied on error).
    Import { file: PathBuf },
    /// The register.
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum TripsCmd {
    /// Record a trip.
    Add {
        #[arg(long)]
        person: String,
        /// ISO country codes (repeat, or comma-separated).
        #[arg(long = "country", num_args = 1.., required = true)]
        countries: Vec<String>,
        #[arg(long)]
        from: String,
        #[arg(long)]
        to: String,
        #[arg(long)]
        kind: String,
        /// Who approved taking the laptop along.
        #[arg(long)]
        approved_by: Option<String>,
    },
    List {
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum ExemptionsCmd {
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
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Check the audit log's hash chain.
    Verify {
        #[arg(long)]
        json: bool,
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
    /// Every enrollment token: id, state (active, revoked, expired, used-up), uses, expiry.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke an enrollment token (by the id `list` shows): it enrolls nothing more.
    Revoke { id: String },
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
        /// The person the token is for; tokens of the same name are the same person.
        #[arg(long)]
        name: String,
        /// How long it is valid, e.g. 8h, 90d; without it the token does not expire.
        #[arg(long)]
        ttl: Option<String>,
    },
    /// Every admin token: id, name, role, state, created, expiry, last use (never the secret).
    List {
        #[arg(long)]
        json: bool,
    },
    /// Revoke an admin token (by the id `list` shows); its console sessions end at once.
    Revoke { id: String },
    /// Approve an admin token awaiting approval (by an admin person other than its creator).
    Approve { id: String },
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
    #[command(flatten)]
    Identity(identity::IdentityCmd),
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
            outln!("{}", t.token);
        }
        Cmd::EnrollToken { cmd } => tokens::enroll_token(&cli, cmd).await?,
        Cmd::SigningKey { cmd } => signing::run(&cli, cmd).await?,
        Cmd::AdminToken {
            cmd: AdminTokenCmd::Create { role, name, ttl },
        } => {
            let ttl_s = tokens::admin_ttl_s(ttl.as_deref())?;
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
                    ttl_s,
                })
                .await
                .map_err(status)?
                .into_inner();
            outln!("{}", t.token);
            tokens::explain_created(&t);
        }
        Cmd::AdminToken { cmd } => tokens::admin_token(&cli, cmd).await?,
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
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                print_devices(&list);
            }
        }
        Cmd::Device {
            cmd: DeviceCmd::Show { id, json },
        } => {
            let mut c = client(&cli).await?;
            let detail = c
                .get_device(pb::GetDeviceRequest { id: id.clone() })
                .await
                .map_err(status)?
                .into_inner();
            let device_id = detail
                .device
                .as_ref()
                .map(|d| d.id.clone())
                .unwrap_or_default();
            let findings = c
                .list_findings(pb::ListFindingsRequest {
                    device: device_id.clone(),
                    include_resolved: false,
                })
                .await
                .map_err(status)?
                .into_inner()
                .findings;
            let commands = c
                .list_commands(pb::ListCommandsRequest { device: device_id })
                .await
                .map_err(status)?
                .into_inner()
                .commands;
            let device = detail.device.unwrap_or_default();
            let report = vakt_proto::convert::sections_to_report(&detail.sections)
                .map_err(|e| anyhow!("the server sent a section this vakt cannot read: {e}"))?;
            if *json {
                let mut v = device_json(&device);
                let r = serde_json::to_value(&report)?;
                if let (Some(obj), Value::Object(rm)) = (v.as_object_mut(), r) {
                    obj.extend(rm);
                    obj.insert(
                        "findings".into(),
                        findings.iter().map(finding_json).collect(),
                    );
                    obj.insert(
                        "commands".into(),
                        commands.iter().map(command_json).collect(),
                    );
                }
                outln!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                print_device(&device, &report);
                outln!("findings    {} open", findings.len());
                for f in &findings {
                    outln!(
                        "  §{:<5} {:<9} {:<9} {}",
                        f.section,
                        f.severity,
                        f.status,
                        f.message_en
                    );
                }
                outln!("commands    {}", commands.len());
                for c in &commands {
                    outln!(
                        "  {} {} {} {}",
                        c.id,
                        kind_name(c.kind),
                        state_name(c.state),
                        c.detail
                    );
                }
            }
        }
        Cmd::Device {
            cmd: DeviceCmd::Identity(c),
        } => identity::run(&cli, c).await?,
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
            outln!("{} ({}) is assigned to {}", d.id, d.hostname, d.assigned_to);
        }
        Cmd::Commands { device, json } => {
            let list = client(&cli)
                .await?
                .list_commands(pb::ListCommandsRequest {
                    device: device.clone().unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner()
                .commands;
            if *json {
                let rows: Vec<Value> = list.iter().map(command_json).collect();
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else if list.is_empty() {
                outln!("no commands");
            } else {
                outln!(
                    "{:<25} {:<21} {:<7} {:<18} {:<30} APPROVED BY",
                    "ID",
                    "DEVICE",
                    "KIND",
                    "STATE",
                    "REQUESTED BY"
                );
                for c in &list {
                    outln!(
                        "{:<25} {:<21} {:<7} {:<18} {:<30} {}",
                        c.id,
                        c.device_id,
                        kind_name(c.kind),
                        state_name(c.state),
                        c.requested_by,
                        c.approved_by
                    );
                }
            }
        }
        Cmd::Loss { cmd } => loss(&cli, cmd).await?,
        Cmd::Wipe { cmd } => {
            let mut c = client(&cli).await?;
            let info = match cmd {
                WipeCmd::Request { id, reason } => c
                    .request_wipe(pb::RequestWipeRequest {
                        device: id.clone(),
                        reason: reason.clone(),
                    })
                    .await
                    .map_err(status)?
                    .into_inner(),
                WipeCmd::Approve { command_id } => c
                    .approve_wipe(pb::ApproveWipeRequest {
                        command_id: command_id.clone(),
                    })
                    .await
                    .map_err(status)?
                    .into_inner(),
            };
            tokens::warn_if_one_admin_person(&mut c).await;
            // What the wipe will and will not do, for the requester and for the approver.
            let readiness = c
                .get_device(pb::GetDeviceRequest {
                    id: info.device_id.clone(),
                })
                .await
                .map_err(status)?
                .into_inner()
                .device
                .and_then(|d| d.wipe_readiness);
            eprintln!("wipe readiness: {}", readiness_line(readiness.as_ref()));
            match cmd {
                WipeCmd::Request { .. } => {
                    // The id alone on stdout, so a script can hand it to the approver.
                    outln!("{}", info.id);
                    eprintln!(
                        "wipe of {} requested; another admin must run: vakt wipe approve {} (before {})",
                        info.device_id,
                        info.id,
                        rfc3339_ms(info.expires_ms)
                    );
                }
                WipeCmd::Approve { .. } => outln!(
                    "{} approved: {} (device {})",
                    info.id,
                    state_name(info.state),
                    info.device_id
                ),
            }
        }
        Cmd::Findings { device, all, json } => {
            let list = client(&cli)
                .await?
                .list_findings(pb::ListFindingsRequest {
                    device: device.clone().unwrap_or_default(),
                    include_resolved: *all,
                })
                .await
                .map_err(status)?
                .into_inner()
                .findings;
            if *json {
                let rows: Vec<Value> = list.iter().map(finding_json).collect();
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else if list.is_empty() {
                outln!("no findings");
            } else {
                for f in &list {
                    outln!(
                        "{:<20} §{:<5} {:<9} {:<9} {:<32} {}",
                        f.hostname,
                        f.section,
                        f.severity,
                        f.status,
                        f.rule,
                        f.message_en
                    );
                }
            }
        }
        Cmd::Policy {
            cmd: PolicyCmd::Check { file },
        } => {
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
        Cmd::Policy {
            cmd: PolicyCmd::Apply { file },
        } => {
            let text =
                std::fs::read_to_string(file).with_context(|| format!("{}", file.display()))?;
            let info = client(&cli)
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
        Cmd::Policy {
            cmd: PolicyCmd::Show { json, toml },
        } => {
            let p = client(&cli)
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
        Cmd::People {
            cmd: PeopleCmd::Import { file },
        } => {
            let csv = std::fs::read(file).with_context(|| format!("{}", file.display()))?;
            let r = client(&cli)
                .await?
                .import_people(pb::ImportPeopleRequest {
                    csv,
                    file_name: file.display().to_string(),
                })
                .await
                .map_err(status)?
                .into_inner();
            outln!("{} people imported", r.imported);
        }
        Cmd::People {
            cmd: PeopleCmd::List { json },
        } => {
            let people = client(&cli)
                .await?
                .list_people(pb::ListPeopleRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .people;
            if *json {
                let rows: Vec<Value> = people
                    .iter()
                    .map(|p| json!({"email": p.email, "name": p.name, "manager_email": p.manager_email,
                                    "end_date": p.end_date, "leave_from": p.leave_from, "leave_to": p.leave_to}))
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for p in &people {
                    outln!("{:<32} {:<28} manager {}", p.email, p.name, p.manager_email);
                }
            }
        }
        Cmd::Trips {
            cmd:
                TripsCmd::Add {
                    person,
                    countries,
                    from,
                    to,
                    kind,
                    approved_by,
                },
        } => {
            let t = client(&cli)
                .await?
                .add_trip(pb::AddTripRequest {
                    person: person.clone(),
                    countries: countries.clone(),
                    from: from.clone(),
                    to: to.clone(),
                    kind: kind.clone(),
                    approved_by: approved_by.clone().unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            outln!("{}", t.id);
        }
        Cmd::Trips {
            cmd: TripsCmd::List { json },
        } => {
            let trips = client(&cli)
                .await?
                .list_trips(pb::ListTripsRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .trips;
            if *json {
                let rows: Vec<Value> = trips
                    .iter()
                    .map(|t| json!({"id": t.id, "person": t.person, "countries": t.countries, "from": t.from,
                                    "to": t.to, "kind": t.kind, "approved_by": t.approved_by}))
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for t in &trips {
                    outln!(
                        "{} {} {} {}..{} {} {}",
                        t.id,
                        t.person,
                        t.countries.join(","),
                        t.from,
                        t.to,
                        t.kind,
                        t.approved_by
                    );
                }
            }
        }
        Cmd::Exemptions {
            cmd:
                ExemptionsCmd::Grant {
                    device,
                    person,
                    rule,
                    minutes,
                    reason,
                },
        } => {
            let e = client(&cli)
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
        Cmd::Exemptions {
            cmd: ExemptionsCmd::List { json },
        } => {
            let list = client(&cli)
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
                                    "reason": e.reason, "granted_by": e.granted_by})
                    })
                    .collect();
                outln!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for e in &list {
                    outln!(
                        "{} {}{} {} until {} — {}",
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
        Cmd::Audit { cmd: None, json } => {
            let entries = client(&cli)
                .await?
                .list_audit(pb::ListAuditRequest {})
                .await
                .map_err(status)?
                .into_inner()
                .entries;
            if *json {
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
        Cmd::Audit {
            cmd: Some(AuditCmd::Verify { json }),
            ..
        } => {
            let v = client(&cli)
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

async fn loss(cli: &Cli, cmd: &LossCmd) -> anyhow::Result<()> {
    let mut c = client(cli).await?;
    match cmd {
        LossCmd::Report {
            id,
            reported_by,
            police_report,
            notes,
        } => {
            let case = c
                .report_loss(pb::ReportLossRequest {
                    device: id.clone(),
                    reported_by: reported_by.clone().unwrap_or_default(),
                    police_report: police_report.clone().unwrap_or_default(),
                    notes: notes.clone().unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            outln!(
                "loss case {} opened for {} ({}); device marked lost, lock queued as {}",
                case.id,
                case.hostname,
                case.device_id,
                case.lock_command_id
            );
            print_checklist(&case);
        }
        LossCmd::Show { id, json } => {
            let case = c
                .get_loss(pb::GetLossRequest { device: id.clone() })
                .await
                .map_err(status)?
                .into_inner();
            if *json {
                outln!("{}", serde_json::to_string_pretty(&loss_json(&case))?);
            } else {
                outln!(
                    "case        {} ({})",
                    case.id,
                    if case.open { "open" } else { "closed" }
                );
                outln!("device      {} ({})", case.hostname, case.device_id);
                outln!("reported by {}", case.reported_by);
                outln!(
                    "opened      {} by {}",
                    rfc3339_ms(case.opened_ms),
                    case.opened_by
                );
                outln!("lock        {}", case.lock_command_id);
                if !case.unlock_command_id.is_empty() {
                    outln!("unlock      {}", case.unlock_command_id);
                }
                for w in &case.wipe_command_ids {
                    outln!("wipe        {w}");
                }
                outln!(
                    "a wipe     {}",
                    readiness_line(case.wipe_readiness.as_ref())
                );
                print_checklist(&case);
            }
        }
        LossCmd::Update {
            id,
            sim_blocked,
            police_report,
            no_police_report,
            incident_report_sent,
            manager_informed,
            notes,
        } => {
            let case = c
                .update_loss(pb::UpdateLossRequest {
                    device: id.clone(),
                    sim_blocked: *sim_blocked,
                    police_report: police_report.clone().unwrap_or_default(),
                    no_police_report_reason: no_police_report.clone().unwrap_or_default(),
                    incident_report_sent: *incident_report_sent,
                    manager_informed: *manager_informed,
                    notes: notes.clone().unwrap_or_default(),
                })
                .await
                .map_err(status)?
                .into_inner();
            print_checklist(&case);
        }
        LossCmd::IncidentReport { id, html } => {
            let r = c
                .get_incident_report(pb::GetLossRequest { device: id.clone() })
                .await
                .map_err(status)?
                .into_inner();
            out!("{}", if *html { r.html } else { r.markdown });
        }
        LossCmd::Recovered { id } => {
            let case = c
                .recover_device(pb::GetLossRequest { device: id.clone() })
                .await
                .map_err(status)?
                .into_inner();
            outln!(
                "loss case {} closed; unlock queued as {}",
                case.id,
                case.unlock_command_id
            );
        }
    }
    Ok(())
}

fn print_checklist(case: &pb::LossCase) {
    outln!("checklist (policy 8.1):");
    for s in vakt_server::loss::checklist(case) {
        outln!(
            "  {}. [{}] {}{}",
            s.number,
            if s.done { "x" } else { " " },
            s.title_en,
            if s.note.is_empty() {
                String::new()
            } else {
                format!(" — {}", s.note)
            }
        );
    }
}

fn loss_json(c: &pb::LossCase) -> Value {
    let steps: Vec<Value> = vakt_server::loss::checklist(c)
        .iter()
        .map(|s| json!({"step": s.number, "title_sv": s.title_sv, "title_en": s.title_en, "done": s.done, "note": s.note}))
        .collect();
    json!({
        "id": c.id,
        "device": c.device_id,
        "hostname": c.hostname,
        "open": c.open,
        "opened": rfc3339_ms(c.opened_ms),
        "opened_by": c.opened_by,
        "reported_by": c.reported_by,
        "police_report": c.police_report,
        "no_police_report_reason": c.no_police_report_reason,
        "sim_blocked": rfc3339_ms(c.sim_blocked_ms),
        "incident_report_sent": rfc3339_ms(c.incident_report_sent_ms),
        "manager_informed": rfc3339_ms(c.manager_informed_ms),
        "closed": rfc3339_ms(c.closed_ms),
        "lock_command": c.lock_command_id,
        "unlock_command": c.unlock_command_id,
        "wipe_commands": c.wipe_command_ids,
        "notes": c.notes,
        "checklist": steps,
        "wipe_readiness": readiness_name(c.wipe_readiness.as_ref()),
        "wipe_readable": c.wipe_readiness.as_ref().map(|w| w.readable.clone()).unwrap_or_default(),
    })
}

fn finding_json(f: &pb::FindingInfo) -> Value {
    json!({
        "id": f.id,
        "device": f.device,
        "hostname": f.hostname,
        "rule": f.rule,
        "kind": f.kind,
        "section": f.section,
        "severity": f.severity,
        "status": f.status,
        "message_sv": f.message_sv,
        "message_en": f.message_en,
        "evidence": f.evidence,
        "first_seen": rfc3339_ms(f.first_seen_ms),
        "last_seen": rfc3339_ms(f.last_seen_ms),
        "resolved_at": rfc3339_ms(f.resolved_at_ms),
    })
}

fn command_json(c: &pb::CommandInfo) -> Value {
    json!({
        "id": c.id,
        "device": c.device_id,
        "kind": kind_name(c.kind),
        "state": state_name(c.state),
        "requested_by": c.requested_by,
        "approved_by": c.approved_by,
        "reason": c.reason,
        "created": rfc3339_ms(c.created_ms),
        "updated": rfc3339_ms(c.updated_ms),
        "delivered": rfc3339_ms(c.delivered_ms),
        "finished": rfc3339_ms(c.finished_ms),
        "expires": rfc3339_ms(c.expires_ms),
        "deliveries": c.deliveries,
        "detail": c.detail,
        "loss_case": c.loss_case_id,
    })
}

fn device_json(d: &pb::Device) -> Value {
    json!({
        "id": d.id,
        "hostname": d.hostname,
        "state": device_state_name(d.state),
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
        "shares_hardware_with": d.shares_hardware_with,
        "cert_expires_at": rfc3339_ms(d.cert_expires_at_ms),
        "command_key_generation": d.command_key_generation,
        "wipe_readiness": readiness_name(d.wipe_readiness.as_ref()),
        "wipe_readable": d.wipe_readiness.as_ref().map(|w| w.readable.clone()).unwrap_or_default(),
    })
}

/// `wipe_readiness` as INTERFACE.md names it; a server that predates it says nothing: unknown.
fn readiness_name(w: Option<&pb::WipeReadiness>) -> &str {
    w.map_or("unknown", |w| w.state.as_str())
}

/// The readiness and what a wipe would leave readable, on one line for people.
fn readiness_line(w: Option<&pb::WipeReadiness>) -> String {
    match w.map(|w| w.readable.as_slice()) {
        Some(r) if !r.is_empty() => format!("{} ({})", readiness_name(w), r.join("; ")),
        _ => readiness_name(w).to_string(),
    }
}

fn print_devices(list: &[pb::Device]) {
    if list.is_empty() {
        outln!("no devices enrolled yet");
        return;
    }
    outln!(
        "{:<21} {:<24} {:<8} {:<21} {:<4} {:<12} ASSIGNED TO",
        "ID",
        "HOSTNAME",
        "STATE",
        "LAST SEEN",
        "LINK",
        "WIPE"
    );
    for d in list {
        outln!(
            "{:<21} {:<24} {:<8} {:<21} {:<4} {:<12} {}{}",
            d.id,
            d.hostname,
            device_state_name(d.state),
            rfc3339_ms(d.last_seen_ms),
            if d.connected { "up" } else { "-" },
            readiness_name(d.wipe_readiness.as_ref()),
            d.assigned_to,
            shared_marker(d)
        );
    }
}

/// Marks a device listed with others that claim the same hardware.
fn shared_marker(d: &pb::Device) -> String {
    if d.shares_hardware_with.is_empty() {
        String::new()
    } else {
        format!(
            " [shares hardware with {}]",
            d.shares_hardware_with.join(", ")
        )
    }
}

fn print_device(d: &pb::Device, r: &vakt_proto::model::Report) {
    outln!("device      {} ({})", d.id, d.hostname);
    if !d.shares_hardware_with.is_empty() {
        outln!(
            "hardware    SHARED with {} (same machine id and serial)",
            d.shares_hardware_with.join(", ")
        );
    }
    if d.cert_expires_at_ms > 0 {
        outln!("certificate expires {}", rfc3339_ms(d.cert_expires_at_ms));
    }
    outln!("command key generation {}", d.command_key_generation);
    outln!(
        "state       {}{}",
        device_state_name(d.state),
        if d.connected { ", connected" } else { "" }
    );
    outln!(
        "assigned to {}",
        if d.assigned_to.is_empty() {
            "-"
        } else {
            &d.assigned_to
        }
    );
    outln!("last seen   {}", rfc3339_ms(d.last_seen_ms));
    outln!(
        "last report {} (sequence {})",
        rfc3339_ms(d.last_report_ms),
        d.last_report_sequence
    );
    outln!(
        "os          {} / kernel {} / {}",
        r.host.os,
        r.host.kernel,
        r.host.arch
    );
    outln!(
        "hardware    {} {} serial {}",
        r.host.vendor,
        r.host.model,
        r.host.serial
    );
    outln!("software    {} packages", r.software.len());
    for p in &r.software {
        outln!(
            "  {:<32} {:<28} {:<8} {:<16} {}{}",
            p.name,
            p.version,
            format!("{:?}", p.format).to_lowercase(),
            p.source.as_str(),
            p.origin,
            if p.current { "" } else { " (update available)" }
        );
    }
    outln!(
        "mail        {} accounts, {} forwards, {} identities",
        r.mail.accounts.len(),
        r.mail.forwards.len(),
        r.mail.identities.len()
    );
    for f in &r.mail.forwards {
        outln!(
            "  forward   {} {} '{}' -> {}{}",
            f.client,
            f.user,
            f.rule,
            f.target,
            if f.enabled { "" } else { " (disabled)" }
        );
    }
    outln!("roaming     {} modems", r.roaming.modems.len());
    for m in &r.roaming.modems {
        outln!(
            "  modem     {} {} country {} data {}",
            m.registration,
            m.operator_mcc,
            m.country,
            if m.data_connected { "on" } else { "off" }
        );
    }
    outln!(
        "storage     {} volumes, {} swaps, TPM 2.0 {}, Secure Boot {}",
        r.storage.volumes.len(),
        r.storage.swap.len(),
        if r.storage.tpm { "yes" } else { "no" },
        if r.storage.secure_boot { "on" } else { "off" }
    );
    outln!("wipe        {}", readiness_line(d.wipe_readiness.as_ref()));
    for v in r.storage.volumes.iter().chain(&r.storage.swap) {
        outln!(
            "  {:<9} {:<16} {} {}",
            if v.mount.is_empty() {
                "swap"
            } else {
                v.mount.as_str()
            },
            v.device,
            if v.encrypted {
                "encrypted"
            } else {
                "NOT encrypted"
            },
            v.mapper
        );
    }
    for e in &r.errors {
        outln!(
            "error       [{}] {}: {}",
            e.section.as_str(),
            e.source,
            e.message
        );
    }
}
