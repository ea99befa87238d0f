//! `vakt findings`: where devices break the policy in force, with the section each cites, and
//! a finding's JSON (`vakt device show --json` carries it too).

use super::{Cli, client, status};
use serde_json::{Value, json};
use vakt_proto::pb;
use vakt_server::timefmt::rfc3339_ms;

/// `vakt findings [--device ID] [--all]`.
pub async fn list(cli: &Cli, device: Option<&str>, all: bool, json: bool) -> anyhow::Result<()> {
    let list = client(cli)
        .await?
        .list_findings(pb::ListFindingsRequest {
            device: device.unwrap_or_default().to_string(),
            include_resolved: all,
        })
        .await
        .map_err(status)?
        .into_inner()
        .findings;
    if json {
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
    Ok(())
}

pub fn finding_json(f: &pb::FindingInfo) -> Value {
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
