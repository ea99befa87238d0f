//! `vakt commands`: the queue of lock, unlock and wipe commands with their states, and a
//! command's JSON (`vakt device show --json` carries it too).

use super::{Cli, client, status};
use serde_json::{Value, json};
use vakt_proto::pb;
use vakt_server::commands::{kind_name, state_name};
use vakt_server::timefmt::rfc3339_ms;

/// `vakt commands [--device ID]`.
pub async fn list(cli: &Cli, device: Option<&str>, json: bool) -> anyhow::Result<()> {
    let list = client(cli)
        .await?
        .list_commands(pb::ListCommandsRequest {
            device: device.unwrap_or_default().to_string(),
        })
        .await
        .map_err(status)?
        .into_inner()
        .commands;
    if json {
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
    Ok(())
}

pub fn command_json(c: &pb::CommandInfo) -> Value {
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
