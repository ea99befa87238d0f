//! The audit log, newest first, a page at a time, with the result of checking its hash chain.

use super::view;
use super::{Authed, Frame, Page, html};
use askama::Template;
use axum::extract::Query;
use axum::http::StatusCode;
use serde::Deserialize;
use vakt_proto::pb;
use vakt_proto::pb::admin_service_server::AdminService;

/// Entries per page.
const PAGE: usize = 100;

pub struct EntryRow {
    pub seq: u64,
    pub at: String,
    pub actor: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

#[derive(Template)]
#[template(path = "audit.html")]
struct AuditPage {
    c: Frame,
    verify: pb::VerifyAuditResponse,
    rows: Vec<EntryRow>,
    total: usize,
    /// The `before=` of the next (older) page, if there is one.
    older: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
pub struct AuditQuery {
    /// Show entries with a sequence number below this (0: the newest).
    #[serde(default)]
    before: u64,
}

/// The page of `entries` (oldest first, as the API lists them) that ends just before
/// `before`, newest first; and where the next older page starts.
fn page_of(entries: &[pb::AuditRecord], before: u64) -> (Vec<&pb::AuditRecord>, Option<u64>) {
    let older_than: Vec<&pb::AuditRecord> = entries
        .iter()
        .rev()
        .filter(|e| before == 0 || e.seq < before)
        .collect();
    let more = older_than.len() > PAGE;
    let page: Vec<_> = older_than.into_iter().take(PAGE).collect();
    let next = if more {
        page.last().map(|e| e.seq)
    } else {
        None
    };
    (page, next)
}

pub async fn page(a: Authed, Query(q): Query<AuditQuery>) -> Page {
    let answer = a.api().list_audit(a.req(pb::ListAuditRequest {})).await;
    let entries = a.ok(answer, "/")?.entries;
    let answer = a.api().verify_audit(a.req(pb::VerifyAuditRequest {})).await;
    let verify = a.ok(answer, "/")?;
    let (rows, older) = page_of(&entries, q.before);
    let rows = rows
        .into_iter()
        .map(|e| EntryRow {
            seq: e.seq,
            at: view::when(e.at_ms),
            actor: e.actor.clone(),
            action: e.action.clone(),
            target: e.target.clone(),
            detail: e.detail.clone(),
        })
        .collect();
    let page = AuditPage {
        c: a.frame("audit", a.t("Granskningslogg", "Audit log")),
        verify,
        rows,
        total: entries.len(),
        older,
    };
    Ok(html(StatusCode::OK, &page))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(n: u64) -> Vec<pb::AuditRecord> {
        (1..=n)
            .map(|seq| pb::AuditRecord {
                seq,
                ..Default::default()
            })
            .collect()
    }

    #[test]
    fn pages_run_newest_first_without_gaps() {
        let entries = log(250);
        let (first, next) = page_of(&entries, 0);
        assert_eq!(first.first().unwrap().seq, 250);
        assert_eq!(first.len(), PAGE);
        let (second, next2) = page_of(&entries, next.unwrap());
        assert_eq!(second.first().unwrap().seq, first.last().unwrap().seq - 1);
        let (third, next3) = page_of(&entries, next2.unwrap());
        assert_eq!(third.len(), 50);
        assert_eq!(third.last().unwrap().seq, 1);
        assert_eq!(next3, None);
        let three = log(3);
        let (small, none) = page_of(&three, 0);
        assert_eq!(small.len(), 3);
        assert_eq!(none, None);
    }
}
