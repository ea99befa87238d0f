//! `vakt devices` and `vakt device show|assign` (with `reenroll|retire` from `identity.rs`):
//! the device list and one device with its report, findings and commands; and the JSON and
//! printing of devices and their wipe readiness, which the loss and wipe commands show too.

use super::commands::command_json;
use super::findings::finding_json;
use super::{Cli, client, identity, status};
use anyhow::anyhow;
use clap::Subcommand;
use serde_json::{Value, json};
use vakt_proto::pb;
use vakt_server::api::device_state_name;
use vakt_server::commands::{kind_name, state_name};
use vakt_server::timefmt::{as_of, now_ms, rfc3339_ms};

#[derive(Subcommand)]
pub enum DeviceCmd {
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

/// `vakt devices`.
pub async fn list(cli: &Cli, json: bool) -> anyhow::Result<()> {
    let list = client(cli)
        .await?
        .list_devices(pb::ListDevicesRequest {})
        .await
        .map_err(status)?
        .into_inner()
        .devices;
    if json {
        let rows: Vec<Value> = list.iter().map(device_json).collect();
        outln!("{}", serde_json::to_string_pretty(&rows)?);
    } else {
        print_devices(&list);
    }
    Ok(())
}

/// `vakt device ...`.
pub async fn run(cli: &Cli, cmd: &DeviceCmd) -> anyhow::Result<()> {
    match cmd {
        DeviceCmd::Show { id, json } => {
            let mut c = client(cli).await?;
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
        DeviceCmd::Identity(c) => identity::run(cli, c).await?,
        DeviceCmd::Assign { id, email } => {
            let d = client(cli)
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
    }
    Ok(())
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
        "wipe_readiness_as_of": readiness_as_of(d.wipe_readiness.as_ref()),
    })
}

/// `wipe_readiness` as INTERFACE.md names it; a server that predates it says nothing: unknown.
pub fn readiness_name(w: Option<&pb::WipeReadiness>) -> &str {
    w.map_or("unknown", |w| w.state.as_str())
}

/// `wipe_readiness_as_of`: the device's report the readiness was judged from, RFC 3339, empty
/// when it never reported (as the JSON forms' other times say never), or when the server
/// predates readiness.
pub fn readiness_as_of(w: Option<&pb::WipeReadiness>) -> String {
    w.map(|w| rfc3339_ms(w.reported_ms)).unwrap_or_default()
}

/// The readiness, what a wipe would leave readable, and as of which report (at `now_ms`), on
/// one line for people.
pub fn readiness_line(w: Option<&pb::WipeReadiness>, now_ms: i64) -> String {
    let what = match w.map(|w| w.readable.as_slice()) {
        Some(r) if !r.is_empty() => format!("{} ({})", readiness_name(w), r.join("; ")),
        _ => readiness_name(w).to_string(),
    };
    match w {
        Some(w) => format!("{what}, {}", as_of(now_ms, w.reported_ms)),
        None => what,
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
    outln!(
        "wipe        {}",
        readiness_line(d.wipe_readiness.as_ref(), now_ms())
    );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn readiness_says_as_of_which_report() {
        let now = 1_764_600_000_000;
        let w = pb::WipeReadiness {
            state: "partial".into(),
            readable: vec!["/home (/dev/sdb1)".into()],
            reported_ms: now - 3 * 86_400_000,
            ..Default::default()
        };
        assert_eq!(
            readiness_line(Some(&w), now),
            "partial (/home (/dev/sdb1)), as of 2025-11-28T14:40:00Z (3 days ago)"
        );
        assert_eq!(readiness_as_of(Some(&w)), "2025-11-28T14:40:00Z");
        let never = pb::WipeReadiness {
            state: "unknown".into(),
            ..Default::default()
        };
        assert_eq!(readiness_line(Some(&never), now), "unknown, never reported");
        assert_eq!(readiness_as_of(Some(&never)), "");
        assert_eq!(readiness_line(None, now), "unknown");
        assert_eq!(
            device_json(&pb::Device {
                wipe_readiness: Some(w),
                ..Default::default()
            })["wipe_readiness_as_of"],
            "2025-11-28T14:40:00Z"
        );
    }
}
