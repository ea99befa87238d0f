//! Findings: where devices break the policy in force, each with the policy section it cites.
//! Filter by rule, section, severity, status and device; the same selection as CSV.

use super::view::{self, Choice, choices};
use super::{Authed, Frame, Lang, Page, html};
use askama::Template;
use axum::extract::Query;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use serde::Deserialize;
use std::collections::BTreeSet;
use vakt_proto::pb;

/// The severities and statuses in the order the filters list them.
const SEVERITIES: [&str; 3] = ["violation", "warning", "notice"];
const STATUSES: [&str; 3] = ["open", "exempted", "resolved"];

/// The findings page's filter. `status` absent means open findings; present and empty, all.
#[derive(Debug, Default, Clone, Deserialize)]
pub struct FindingFilter {
    #[serde(default)]
    pub rule: String,
    #[serde(default)]
    pub section: String,
    #[serde(default)]
    pub severity: String,
    pub status: Option<String>,
    /// Part of a hostname or a device id.
    #[serde(default)]
    pub device: String,
}

impl FindingFilter {
    pub fn status(&self) -> &str {
        self.status.as_deref().unwrap_or("open")
    }

    pub fn matches(&self, f: &pb::FindingInfo) -> bool {
        let device = self.device.trim().to_lowercase();
        (self.rule.is_empty() || f.rule == self.rule)
            && (self.section.is_empty() || f.section == self.section)
            && (self.severity.is_empty() || f.severity == self.severity)
            && (self.status().is_empty() || f.status == self.status())
            && (device.is_empty()
                || f.hostname.to_lowercase().contains(&device)
                || f.device.to_lowercase().contains(&device))
    }

    /// The filter as a query string, for the CSV link.
    pub fn query(&self) -> String {
        let pairs = [
            ("rule", self.rule.as_str()),
            ("section", self.section.as_str()),
            ("severity", self.severity.as_str()),
            ("status", self.status()),
            ("device", self.device.as_str()),
        ];
        pairs
            .iter()
            .map(|(k, v)| format!("{k}={}", super::encode_query(v)))
            .collect::<Vec<_>>()
            .join("&")
    }
}

/// A finding as the tables show it.
pub struct FindingRow {
    pub device: String,
    pub hostname: String,
    pub rule: String,
    pub kind: String,
    pub section: String,
    pub severity: String,
    pub severity_label: &'static str,
    pub status: String,
    pub status_label: &'static str,
    pub message: String,
    pub first_seen: String,
    pub last_seen: String,
    pub evidence: Vec<(String, String)>,
}

impl FindingRow {
    pub fn new(lang: Lang, f: &pb::FindingInfo) -> Self {
        let mut evidence: Vec<(String, String)> = f
            .evidence
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        evidence.sort();
        Self {
            device: f.device.clone(),
            hostname: if f.hostname.is_empty() {
                f.device.clone()
            } else {
                f.hostname.clone()
            },
            rule: f.rule.clone(),
            kind: f.kind.clone(),
            section: f.section.clone(),
            severity: f.severity.clone(),
            severity_label: lang.severity(&f.severity),
            status: f.status.clone(),
            status_label: lang.finding_status(&f.status),
            message: match lang {
                Lang::Sv if !f.message_sv.is_empty() => f.message_sv.clone(),
                _ if !f.message_en.is_empty() => f.message_en.clone(),
                _ => f.message_sv.clone(),
            },
            first_seen: view::when(f.first_seen_ms),
            last_seen: view::when(f.last_seen_ms),
            evidence,
        }
    }
}

#[derive(Template)]
#[template(path = "findings.html")]
struct FindingsPage {
    c: Frame,
    filter: FindingFilter,
    rules: Vec<Choice>,
    sections: Vec<Choice>,
    severities: Vec<Choice>,
    statuses: Vec<Choice>,
    rows: Vec<FindingRow>,
    total: usize,
    csv: String,
}

pub async fn list(a: Authed, Query(filter): Query<FindingFilter>) -> Page {
    let findings = a.findings("", true, "/").await?;
    let rules: BTreeSet<&str> = findings.iter().map(|f| f.rule.as_str()).collect();
    let sections: BTreeSet<&str> = findings.iter().map(|f| f.section.as_str()).collect();
    let severities = SEVERITIES.iter().map(|s| (*s, a.lang.severity(s)));
    let statuses = STATUSES.iter().map(|s| (*s, a.lang.finding_status(s)));
    let rows: Vec<FindingRow> = findings
        .iter()
        .filter(|f| filter.matches(f))
        .map(|f| FindingRow::new(a.lang, f))
        .collect();
    let page = FindingsPage {
        c: a.frame("findings", a.t("Avvikelser", "Findings")),
        rules: choices(rules.into_iter().map(|r| (r, r)), &filter.rule),
        sections: choices(sections.into_iter().map(|s| (s, s)), &filter.section),
        severities: choices(severities, &filter.severity),
        statuses: choices(statuses, filter.status()),
        total: findings.len(),
        csv: format!("/findings.csv?{}", filter.query()),
        rows,
        filter,
    };
    Ok(html(StatusCode::OK, &page))
}

/// The findings the filter selects, as CSV with INTERFACE.md's field names.
pub async fn csv(a: Authed, Query(filter): Query<FindingFilter>) -> Page {
    let findings = a.findings("", true, "/findings").await?;
    let selected: Vec<&pb::FindingInfo> = findings.iter().filter(|f| filter.matches(f)).collect();
    Ok((
        [
            (header::CONTENT_TYPE, "text/csv; charset=utf-8"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"vakt-findings.csv\"",
            ),
        ],
        findings_csv(&selected),
    )
        .into_response())
}

/// One CSV field (RFC 4180): quoted when it holds a separator, quote or line break. A field
/// that a spreadsheet would read as a formula (`=`, `+`, `-`, `@`, tab, CR first) gets a `'`
/// in front, so report text from a laptop can never run as one.
fn csv_field(s: &str) -> String {
    let s = if s.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        format!("'{s}")
    } else {
        s.to_string()
    };
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s
    }
}

/// The CSV document. It starts with a UTF-8 byte order mark: without it, the spreadsheet
/// programs IT opens this in read å, ä and ö as Latin-1.
pub fn findings_csv(findings: &[&pb::FindingInfo]) -> String {
    let mut out = String::from("\u{feff}");
    out.push_str("device,hostname,rule,kind,section,severity,status,message_sv,message_en,first_seen,last_seen\r\n");
    for f in findings {
        let row = [
            f.device.as_str(),
            f.hostname.as_str(),
            f.rule.as_str(),
            f.kind.as_str(),
            f.section.as_str(),
            f.severity.as_str(),
            f.status.as_str(),
            f.message_sv.as_str(),
            f.message_en.as_str(),
            &crate::timefmt::rfc3339_ms(f.first_seen_ms),
            &crate::timefmt::rfc3339_ms(f.last_seen_ms),
        ];
        let fields: Vec<String> = row.iter().map(|s| csv_field(s)).collect();
        out.push_str(&fields.join(","));
        out.push_str("\r\n");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn finding(rule: &str, section: &str, severity: &str, status: &str) -> pb::FindingInfo {
        pb::FindingInfo {
            device: "dev-1".into(),
            hostname: "lap-anna".into(),
            rule: rule.into(),
            section: section.into(),
            severity: severity.into(),
            status: status.into(),
            message_sv: "Vidarebefordran till \"privat\", adress".into(),
            message_en: "=HYPERLINK(\"http://x\")".into(),
            first_seen_ms: 1_700_000_000_000,
            ..Default::default()
        }
    }

    #[test]
    fn the_filter_defaults_to_open_findings() {
        let open = finding("no-forward", "8.2", "violation", "open");
        let done = finding("no-forward", "8.2", "violation", "resolved");
        let f = FindingFilter::default();
        assert!(f.matches(&open) && !f.matches(&done));
        let all = FindingFilter {
            status: Some(String::new()),
            ..Default::default()
        };
        assert!(all.matches(&open) && all.matches(&done));
        let by_section = FindingFilter {
            section: "8.4".into(),
            ..Default::default()
        };
        assert!(!by_section.matches(&open));
        let by_device = FindingFilter {
            device: "ANNA".into(),
            severity: "violation".into(),
            ..Default::default()
        };
        assert!(by_device.matches(&open));
        assert_eq!(
            by_device.query(),
            "rule=&section=&severity=violation&status=open&device=ANNA"
        );
    }

    #[test]
    fn csv_is_quoted_and_never_a_formula() {
        let f = finding("no-forward", "8.2", "violation", "open");
        let csv = findings_csv(&[&f]);
        assert!(csv.starts_with('\u{feff}'));
        let mut lines = csv.trim_start_matches('\u{feff}').split("\r\n");
        assert!(lines.next().unwrap().starts_with("device,hostname,rule"));
        let row = lines.next().unwrap();
        assert!(
            row.contains(r#""Vidarebefordran till ""privat"", adress""#),
            "{row}"
        );
        assert!(row.contains(r#""'=HYPERLINK(""http://x"")""#), "{row}");
        assert!(row.contains("2023-11-14T22:13:20Z"));
        assert_eq!(csv_field("-1"), "'-1");
        assert_eq!(csv_field("plain"), "plain");
    }
}
