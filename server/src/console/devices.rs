//! The device list (search by name, state and person) and one device's page: host, software
//! with its source, mail accounts, forwards and signatures, roaming and data abroad, commands
//! and the loss case; and assigning a device to a person.

use super::findings::FindingRow;
use super::loss::CaseRow;
use super::view::{self, Choice, CommandRow, DEVICE_STATES, DeviceFilter, DeviceRow};
use super::{Authed, Frame, Lang, Page, Post, html};
use crate::timefmt::now_ms;
use askama::Template;
use axum::extract::{Path, Query};
use axum::http::StatusCode;
use serde::Deserialize;
use std::collections::{BTreeSet, HashMap};
use vakt_proto::model::{self, SoftwareSource};
use vakt_proto::pb;
use vakt_proto::pb::admin_service_server::AdminService;

#[derive(Template)]
#[template(path = "devices.html")]
struct DeviceList {
    c: Frame,
    filter: DeviceFilter,
    states: Vec<Choice>,
    rules: Vec<Choice>,
    rows: Vec<DeviceRow>,
    total: usize,
}

pub async fn list(a: Authed, Query(filter): Query<DeviceFilter>) -> Page {
    let devices = a.devices("/").await?;
    let findings = a.findings("", false, "/").await?;
    let mut open_rules: HashMap<&str, Vec<&str>> = HashMap::new();
    for f in findings.iter().filter(|f| f.status == "open") {
        open_rules
            .entry(f.device.as_str())
            .or_default()
            .push(f.rule.as_str());
    }
    let rules_of = |d: &pb::Device| open_rules.get(d.id.as_str()).cloned().unwrap_or_default();
    let now = now_ms();
    let rows = devices
        .iter()
        .filter(|d| filter.matches(d, &rules_of(d)))
        .map(|d| DeviceRow::new(a.lang, now, d, rules_of(d).len()))
        .collect();
    let rules: BTreeSet<&str> = findings.iter().map(|f| f.rule.as_str()).collect();
    let states = DEVICE_STATES.iter().map(|s| {
        let value = crate::api::device_state_name(*s as i32);
        (value, a.lang.device_state(*s as i32))
    });
    let page = DeviceList {
        c: a.frame("devices", a.t("Enheter", "Devices")),
        states: view::choices(states, &filter.state),
        rules: view::choices(rules.into_iter().map(|r| (r, r)), &filter.finding),
        filter,
        rows,
        total: devices.len(),
    };
    Ok(html(StatusCode::OK, &page))
}

/// The software table's own filter on a device page.
#[derive(Debug, Default, Deserialize)]
pub struct SoftwareQuery {
    #[serde(default)]
    pub sw: String,
    #[serde(default)]
    pub source: String,
}

pub struct SourceCount {
    pub value: &'static str,
    pub label: &'static str,
    pub help: &'static str,
    pub n: usize,
    pub selected: bool,
}

pub struct PackageRow {
    pub name: String,
    pub version: String,
    pub format: String,
    pub source: &'static str,
    pub source_label: &'static str,
    pub source_help: &'static str,
    pub origin: String,
    pub current: bool,
    pub where_: String,
}

pub struct ModemRow {
    pub name: String,
    pub registration: String,
    pub roaming: bool,
    pub country: String,
    pub operator: String,
    pub home_mcc: String,
    pub data_connected: bool,
    pub rx: String,
    pub tx: String,
}

pub struct AbroadRow {
    pub country: String,
    pub mcc: String,
    pub entered: String,
    pub left: String,
    pub ongoing: bool,
    pub rx: String,
    pub tx: String,
}

#[derive(Template)]
#[template(path = "device.html")]
struct DevicePage {
    c: Frame,
    d: pb::Device,
    state: &'static str,
    state_label: &'static str,
    last_seen: String,
    last_seen_ago: String,
    last_report: String,
    enrolled: String,
    host: model::HostFacts,
    memory: String,
    disks: Vec<(String, String, String, String)>,
    sw_total: usize,
    sources: Vec<SourceCount>,
    sw: String,
    packages: Vec<PackageRow>,
    mail: model::MailSettings,
    modems: Vec<ModemRow>,
    abroad: Vec<AbroadRow>,
    errors: Vec<model::CollectorError>,
    unreadable: Vec<String>,
    commands: Vec<CommandRow>,
    case: Option<CaseRow>,
    /// Open and exempted findings; then the resolved ones.
    findings: Vec<FindingRow>,
    resolved: Vec<FindingRow>,
}

/// The report in the device's stored sections. Each section is converted on its own, so one
/// this console cannot read (say, from a newer agent) hides only itself.
fn report_of(sections: &[pb::Section]) -> (model::Report, Vec<String>) {
    let mut report = model::Report::default();
    let mut unreadable = Vec::new();
    for s in sections {
        match vakt_proto::convert::sections_to_report(std::slice::from_ref(s)) {
            Ok(r) => {
                match pb::SectionKind::try_from(s.kind) {
                    Ok(pb::SectionKind::Host) => report.host = r.host,
                    Ok(pb::SectionKind::Software) => report.software = r.software,
                    Ok(pb::SectionKind::Mail) => report.mail = r.mail,
                    Ok(pb::SectionKind::Roaming) => report.roaming = r.roaming,
                    Ok(pb::SectionKind::Storage) => report.storage = r.storage,
                    _ => {}
                }
                report.errors.extend(r.errors);
            }
            Err(e) => unreadable.push(e.to_string()),
        }
    }
    (report, unreadable)
}

fn source_name(s: SoftwareSource) -> &'static str {
    s.as_str()
}

fn format_name(f: model::PackageFormat) -> String {
    serde_json::to_value(f)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

pub async fn show(a: Authed, Path(id): Path<String>, Query(q): Query<SoftwareQuery>) -> Page {
    let detail = a.api().get_device(a.req(pb::GetDeviceRequest { id })).await;
    let detail = a.ok(detail, "/devices")?;
    let d = detail.device.unwrap_or_default();
    let back = format!("/devices/{}", d.id);
    let commands = a.commands(&d.id, "/devices").await?;
    let case = a
        .api()
        .get_loss(a.req(pb::GetLossRequest {
            device: d.id.clone(),
        }))
        .await;
    let case = a.ok_if_found(case, &back)?.as_ref().map(CaseRow::new);
    let (resolved, findings): (Vec<_>, Vec<_>) = a
        .findings(&d.id, true, &back)
        .await?
        .iter()
        .map(|f| FindingRow::new(a.lang, f))
        .partition(|f| f.status == "resolved");
    let (report, unreadable) = report_of(&detail.sections);
    let lang = a.lang;
    let now = now_ms();

    let sw_query = q.sw.trim().to_lowercase();
    let mut packages: Vec<&model::Package> = report
        .software
        .iter()
        .filter(|p| q.source.is_empty() || source_name(p.source) == q.source)
        .filter(|p| {
            sw_query.is_empty()
                || p.name.to_lowercase().contains(&sw_query)
                || p.origin.to_lowercase().contains(&sw_query)
        })
        .collect();
    packages.sort_by(|x, y| x.name.cmp(&y.name).then(x.version.cmp(&y.version)));
    let packages = packages
        .into_iter()
        .map(|p| PackageRow {
            name: p.name.clone(),
            version: p.version.clone(),
            format: format_name(p.format),
            source: source_name(p.source),
            source_label: lang.source(p.source),
            source_help: lang.source_help(p.source),
            origin: p.origin.clone(),
            current: p.current,
            where_: [p.user.as_str(), p.path.as_str()]
                .iter()
                .filter(|s| !s.is_empty())
                .copied()
                .collect::<Vec<_>>()
                .join(" "),
        })
        .collect();
    let sources = SoftwareSource::ALL
        .iter()
        .map(|s| SourceCount {
            value: source_name(*s),
            label: lang.source(*s),
            help: lang.source_help(*s),
            n: report.software.iter().filter(|p| p.source == *s).count(),
            selected: q.source == source_name(*s),
        })
        .collect();
    let modems = report
        .roaming
        .modems
        .iter()
        .map(|m| ModemRow {
            name: [m.model.as_str(), m.id.as_str()]
                .into_iter()
                .find(|s| !s.is_empty())
                .unwrap_or("–")
                .to_string(),
            registration: m.registration.clone(),
            roaming: m.roaming,
            country: m.country.clone(),
            operator: if m.operator_name.is_empty() {
                format!("{}{}", m.operator_mcc, m.operator_mnc)
            } else {
                format!("{} ({}{})", m.operator_name, m.operator_mcc, m.operator_mnc)
            },
            home_mcc: m.home_mcc.clone(),
            data_connected: m.data_connected,
            rx: view::bytes(lang, m.rx_bytes),
            tx: view::bytes(lang, m.tx_bytes),
        })
        .collect();
    let abroad = report
        .roaming
        .abroad
        .iter()
        .map(|p| AbroadRow {
            country: p.country.clone(),
            mcc: p.mcc.clone(),
            entered: view::when(p.entered_ms),
            left: p.left_ms.map(view::when).unwrap_or_default(),
            ongoing: p.left_ms.is_none(),
            rx: view::bytes(lang, p.rx_bytes),
            tx: view::bytes(lang, p.tx_bytes),
        })
        .collect();
    let disks = report
        .host
        .disks
        .iter()
        .map(|k| {
            (
                k.mount_point.clone(),
                k.file_system.clone(),
                view::bytes(lang, k.total_bytes),
                view::bytes(lang, k.available_bytes),
            )
        })
        .collect();
    let title = if d.hostname.is_empty() {
        d.id.clone()
    } else {
        d.hostname.clone()
    };
    let page = DevicePage {
        c: a.frame("devices", title),
        state: crate::api::device_state_name(d.state),
        state_label: lang.device_state(d.state),
        last_seen: view::when(d.last_seen_ms),
        last_seen_ago: view::ago(lang, now, d.last_seen_ms),
        last_report: view::when(d.last_report_ms),
        enrolled: view::when(d.enrolled_at_ms),
        memory: view::bytes(lang, report.host.memory_bytes),
        disks,
        sw_total: report.software.len(),
        sources,
        sw: q.sw.clone(),
        packages,
        commands: commands
            .iter()
            .rev()
            .map(|c| CommandRow::new(lang, c, &d.hostname))
            .collect(),
        case,
        findings,
        resolved,
        modems,
        abroad,
        errors: report.errors,
        unreadable,
        host: report.host,
        mail: report.mail,
        d,
    };
    Ok(html(StatusCode::OK, &page))
}

#[derive(Deserialize)]
pub struct AssignForm {
    #[serde(default)]
    email: String,
}

pub async fn assign(Path(id): Path<String>, Post(a, f): Post<AssignForm>) -> Page {
    let back = format!("/devices/{id}");
    let answer = a
        .api()
        .assign_device(a.req(pb::AssignDeviceRequest { id, email: f.email }))
        .await;
    let d = a.ok(answer, &back)?;
    let text = match a.lang {
        Lang::Sv => format!("{} är tilldelad {}.", d.hostname, d.assigned_to),
        Lang::En => format!("{} is assigned to {}.", d.hostname, d.assigned_to),
    };
    Ok(a.done(&back, text))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unreadable_section_hides_only_itself() {
        let host = pb::Section {
            kind: pb::SectionKind::Host as i32,
            body: Some(pb::section::Body::Host(pb::HostFacts {
                hostname: "lap-1".into(),
                ..Default::default()
            })),
            ..Default::default()
        };
        // A software section whose body is mail: what a confused or newer agent might send.
        let bad = pb::Section {
            kind: pb::SectionKind::Software as i32,
            body: Some(pb::section::Body::Mail(pb::MailSettings::default())),
            ..Default::default()
        };
        let (r, unreadable) = report_of(&[host, bad]);
        assert_eq!(r.host.hostname, "lap-1");
        assert_eq!(unreadable.len(), 1);
    }

    #[test]
    fn formats_are_named_as_in_the_json() {
        assert_eq!(format_name(model::PackageFormat::Deb), "deb");
        assert_eq!(format_name(model::PackageFormat::Appimage), "appimage");
    }
}
