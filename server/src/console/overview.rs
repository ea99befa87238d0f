//! The overview: devices by state, open findings by rule and policy section, open loss cases,
//! wipes waiting for a second admin, and the latest check-ins (and the devices that stopped
//! checking in).

use super::loss::CaseRow;
use super::view::{DEVICE_STATES, DeviceRow};
use super::{Authed, Frame, Page, html};
use crate::timefmt::now_ms;
use askama::Template;
use axum::http::StatusCode;
use vakt_proto::pb;
use vakt_proto::pb::admin_service_server::AdminService;

/// A device that has not checked in for this long is listed as silent.
const SILENT_AFTER_MS: i64 = 7 * 24 * 3600 * 1000;
/// How many check-ins the overview lists.
const RECENT: usize = 10;

pub struct StateCount {
    pub state: &'static str,
    pub label: &'static str,
    pub n: usize,
}

/// Open findings of one rule.
pub struct RuleCount {
    pub rule: String,
    pub kind: String,
    pub section: String,
    pub severity: String,
    pub severity_label: &'static str,
    pub n: usize,
    pub devices: usize,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct Overview {
    c: Frame,
    total: usize,
    connected: usize,
    states: Vec<StateCount>,
    awaiting_approval: usize,
    open_findings: usize,
    by_rule: Vec<RuleCount>,
    cases: Vec<CaseRow>,
    recent: Vec<DeviceRow>,
    silent: Vec<DeviceRow>,
}

pub async fn page(a: Authed) -> Page {
    let devices = a.devices("/").await?;
    let commands = a.commands("", "/").await?;
    let losses = a
        .api()
        .list_losses(a.req(pb::ListLossesRequest { open_only: true }))
        .await;
    let cases = a.ok(losses, "/")?.cases;
    let findings = a.findings("", false, "/").await?;
    let open: Vec<&pb::FindingInfo> = findings.iter().filter(|f| f.status == "open").collect();
    let now = now_ms();
    let states = DEVICE_STATES
        .iter()
        .map(|s| StateCount {
            state: crate::api::device_state_name(*s as i32),
            label: a.lang.device_state(*s as i32),
            n: devices.iter().filter(|d| d.state == *s as i32).count(),
        })
        .collect();
    let mut by_last_seen: Vec<&pb::Device> = devices.iter().collect();
    by_last_seen.sort_by_key(|d| std::cmp::Reverse(d.last_seen_ms));
    let recent = by_last_seen
        .iter()
        .take(RECENT)
        .map(|d| DeviceRow::new(a.lang, now, d, 0))
        .collect();
    let silent = by_last_seen
        .iter()
        .rev()
        .filter(|d| now.saturating_sub(d.last_seen_ms) > SILENT_AFTER_MS)
        .filter(|d| d.state == pb::DeviceState::Active as i32)
        .map(|d| DeviceRow::new(a.lang, now, d, 0))
        .collect();
    let cases = cases.iter().map(CaseRow::new).collect();
    let by_rule = rule_counts(a.lang, &open);
    let page = Overview {
        c: a.frame("overview", a.t("Översikt", "Overview")),
        total: devices.len(),
        connected: devices.iter().filter(|d| d.connected).count(),
        states,
        awaiting_approval: commands
            .iter()
            .filter(|c| {
                c.kind == pb::CommandKind::Wipe as i32
                    && c.state == pb::CommandState::AwaitingApproval as i32
            })
            .count(),
        open_findings: open.len(),
        by_rule,
        cases,
        recent,
        silent,
    };
    Ok(html(StatusCode::OK, &page))
}

/// Open findings counted per rule, in policy-section order.
fn rule_counts(lang: super::Lang, open: &[&pb::FindingInfo]) -> Vec<RuleCount> {
    let mut by_rule: std::collections::BTreeMap<(&str, &str), RuleCount> = Default::default();
    let mut devices: std::collections::BTreeSet<(&str, &str)> = Default::default();
    for f in open {
        let e = by_rule
            .entry((f.section.as_str(), f.rule.as_str()))
            .or_insert_with(|| RuleCount {
                rule: f.rule.clone(),
                kind: f.kind.clone(),
                section: f.section.clone(),
                severity: f.severity.clone(),
                severity_label: lang.severity(&f.severity),
                n: 0,
                devices: 0,
            });
        e.n += 1;
        if devices.insert((f.rule.as_str(), f.device.as_str())) {
            e.devices += 1;
        }
    }
    // Sections compare as numbers part by part, so 8.10 comes after 8.9.
    let mut v: Vec<RuleCount> = by_rule.into_values().collect();
    v.sort_by(|x, y| {
        section_key(&x.section)
            .cmp(&section_key(&y.section))
            .then(x.rule.cmp(&y.rule))
    });
    v
}

fn section_key(s: &str) -> Vec<u32> {
    s.split('.')
        .map(|p| p.parse().unwrap_or(u32::MAX))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_findings_count_per_rule_in_section_order() {
        let f = |rule: &str, section: &str, device: &str| pb::FindingInfo {
            rule: rule.into(),
            section: section.into(),
            device: device.into(),
            severity: "violation".into(),
            status: "open".into(),
            ..Default::default()
        };
        let all = [
            f("roaming-data", "8.10", "d1"),
            f("no-forward", "8.2", "d1"),
            f("no-forward", "8.2", "d2"),
            f("no-forward", "8.2", "d2"),
            f("unlisted-software", "8.3", "d1"),
        ];
        let refs: Vec<&pb::FindingInfo> = all.iter().collect();
        let counts = rule_counts(super::super::Lang::Sv, &refs);
        let order: Vec<&str> = counts.iter().map(|c| c.rule.as_str()).collect();
        assert_eq!(order, ["no-forward", "unlisted-software", "roaming-data"]);
        assert_eq!((counts[0].n, counts[0].devices), (3, 2));
        assert_eq!(counts[0].severity_label, "överträdelse");
    }
}
