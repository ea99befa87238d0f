//! Findings and their lifecycle. Reconciliation is pure: the device's previous findings and
//! the rules' new outcomes at `now` give the new set.
//!
//! - a condition with no live finding opens a new one (`first_seen` = `last_seen` = now);
//! - a condition still present updates its live finding (`last_seen`, evidence, messages, and
//!   the status: `open`, or `exempted` while an exemption or approved trip covers it);
//! - a live finding whose condition is gone is `resolved` at `now`, unless its rule's outcome
//!   was incomplete (the agent could not collect that part of the report: absence proves
//!   nothing) — then it is kept as it was;
//! - a resolved finding never reopens: the condition returning is a new finding, new id.
//!
//! The manager is told about a finding once: the first time it is an open violation
//! (`violation_since` is set then, and the finding is returned in [`Reconciled::notify`]). A
//! violation that turns exempted and back, or a warning whose rule becomes a violation when the
//! pack changes, is announced at most that one time.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use super::{Evaluation, EvaluationStatus, Evidence, RuleKind, RuleOutcome, Severity};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingStatus {
    Open,
    Resolved,
    Exempted,
}

impl FindingStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Open => "open",
            Self::Resolved => "resolved",
            Self::Exempted => "exempted",
        }
    }
}

/// One condition on one device, from when it was first seen until it cleared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Finding {
    pub id: String,
    /// The device's id.
    pub device: String,
    /// The rule's id.
    pub rule: String,
    /// The condition's stable key (see [`Evaluation::key`]).
    pub key: String,
    pub kind: RuleKind,
    pub section: String,
    pub severity: Severity,
    pub status: FindingStatus,
    pub evidence: Evidence,
    pub message_sv: String,
    pub message_en: String,
    #[serde(with = "time::serde::rfc3339")]
    pub first_seen: OffsetDateTime,
    #[serde(with = "time::serde::rfc3339")]
    pub last_seen: OffsetDateTime,
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub resolved_at: Option<OffsetDateTime>,
    /// When it first was an open violation, the moment its manager was to be told.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub violation_since: Option<OffsetDateTime>,
}

impl Finding {
    /// Open or exempted: the condition is (as far as is known) still there.
    pub fn is_live(&self) -> bool {
        self.status != FindingStatus::Resolved
    }
}

/// The result of [`reconcile`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Reconciled {
    /// Every finding of the device: the previous ones (updated, resolved or untouched) in
    /// their order, then the new ones.
    pub findings: Vec<Finding>,
    /// Ids of the findings that differ from before (new ones included), for the store.
    pub changed: Vec<String>,
    /// The findings that just became open violations: tell each one's manager, once.
    pub notify: Vec<Finding>,
}

/// Reconcile a device's previous findings with its rules' new outcomes at `now`. `new_id`
/// names each new finding (the store's id generator; a counter in tests).
pub fn reconcile(
    device: &str,
    previous: &[Finding],
    outcomes: &[RuleOutcome],
    now: OffsetDateTime,
    new_id: &mut dyn FnMut() -> String,
) -> Reconciled {
    let complete: BTreeMap<&str, bool> = outcomes
        .iter()
        .map(|o| (o.rule.as_str(), o.complete))
        .collect();
    let mut current: BTreeMap<&str, &Evaluation> = BTreeMap::new();
    for e in outcomes.iter().flat_map(|o| &o.evaluations) {
        current.entry(e.key.as_str()).or_insert(e);
    }
    let mut matched: BTreeSet<&str> = BTreeSet::new();
    let mut out = Reconciled::default();

    for old in previous {
        let mut f = old.clone();
        if f.is_live() {
            match current.get(f.key.as_str()) {
                Some(e) if matched.insert(e.key.as_str()) => {
                    refresh(&mut f, e, now);
                    if take_notice(&mut f, now) {
                        out.notify.push(f.clone());
                    }
                }
                _ if complete.get(f.rule.as_str()) == Some(&false) => {}
                _ => {
                    f.status = FindingStatus::Resolved;
                    f.resolved_at = Some(now);
                }
            }
        }
        if f != *old {
            out.changed.push(f.id.clone());
        }
        out.findings.push(f);
    }

    for o in outcomes {
        for e in &o.evaluations {
            if !matched.insert(e.key.as_str()) {
                continue;
            }
            let mut f = Finding {
                id: new_id(),
                device: device.to_string(),
                rule: e.rule.clone(),
                key: e.key.clone(),
                kind: e.kind,
                section: e.section.clone(),
                severity: e.severity,
                status: FindingStatus::Open,
                evidence: Evidence::new(),
                message_sv: String::new(),
                message_en: String::new(),
                first_seen: now,
                last_seen: now,
                resolved_at: None,
                violation_since: None,
            };
            refresh(&mut f, e, now);
            if take_notice(&mut f, now) {
                out.notify.push(f.clone());
            }
            out.changed.push(f.id.clone());
            out.findings.push(f);
        }
    }
    out
}

/// Bring a live finding up to date with the condition as evaluated now. The rule may have
/// changed too (a new pack), so severity, section and messages follow it.
fn refresh(f: &mut Finding, e: &Evaluation, now: OffsetDateTime) {
    f.status = match e.status {
        EvaluationStatus::Failed => FindingStatus::Open,
        EvaluationStatus::Exempted => FindingStatus::Exempted,
    };
    f.kind = e.kind;
    f.section = e.section.clone();
    f.severity = e.severity;
    f.evidence = e.evidence.clone();
    f.message_sv = e.message_sv.clone();
    f.message_en = e.message_en.clone();
    f.last_seen = now;
}

/// Mark the first moment a finding is an open violation; true if that is now.
fn take_notice(f: &mut Finding, now: OffsetDateTime) -> bool {
    let due = f.status == FindingStatus::Open
        && f.severity == Severity::Violation
        && f.violation_since.is_none();
    if due {
        f.violation_since = Some(now);
    }
    due
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::Duration;
    use time::macros::datetime;

    const T0: OffsetDateTime = datetime!(2025-06-11 12:00 UTC);

    fn eval(key: &str, status: EvaluationStatus, severity: Severity) -> Evaluation {
        Evaluation {
            rule: "r".into(),
            kind: RuleKind::MailAutoForwardExternal,
            section: "9".into(),
            severity,
            key: key.into(),
            status,
            evidence: Evidence::from([("target".to_string(), key.to_string())]),
            message_sv: format!("sv {key}"),
            message_en: format!("en {key}"),
        }
    }

    fn outcome(evals: Vec<Evaluation>) -> Vec<RuleOutcome> {
        vec![RuleOutcome {
            rule: "r".into(),
            complete: true,
            evaluations: evals,
        }]
    }

    struct Ids(u32);
    impl Ids {
        fn next(&mut self) -> String {
            self.0 += 1;
            format!("f{}", self.0)
        }
    }

    fn step(
        prev: &[Finding],
        out: &[RuleOutcome],
        at: OffsetDateTime,
        ids: &mut Ids,
    ) -> Reconciled {
        reconcile("dev-1", prev, out, at, &mut || ids.next())
    }

    #[test]
    fn open_update_resolve_and_reopen_as_new() {
        let mut ids = Ids(0);
        let fail = outcome(vec![eval(
            "r/a",
            EvaluationStatus::Failed,
            Severity::Violation,
        )]);

        let r1 = step(&[], &fail, T0, &mut ids);
        assert_eq!(r1.findings.len(), 1);
        let f = &r1.findings[0];
        assert_eq!((f.id.as_str(), f.status), ("f1", FindingStatus::Open));
        assert_eq!((f.first_seen, f.last_seen, f.resolved_at), (T0, T0, None));
        assert_eq!(f.device, "dev-1");
        assert_eq!(f.message_sv, "sv r/a");
        assert_eq!(r1.notify.len(), 1, "a new violation is announced");
        assert_eq!(r1.changed, ["f1"]);

        let t1 = T0 + Duration::hours(1);
        let r2 = step(&r1.findings, &fail, t1, &mut ids);
        let f = &r2.findings[0];
        assert_eq!((f.id.as_str(), f.first_seen, f.last_seen), ("f1", T0, t1));
        assert!(r2.notify.is_empty(), "announced once only");

        let t2 = T0 + Duration::hours(2);
        let r3 = step(&r2.findings, &outcome(vec![]), t2, &mut ids);
        let f = &r3.findings[0];
        assert_eq!(
            (f.status, f.resolved_at),
            (FindingStatus::Resolved, Some(t2))
        );
        assert_eq!(f.last_seen, t1, "last seen stays when it was last seen");

        let t3 = T0 + Duration::hours(3);
        let r4 = step(&r3.findings, &fail, t3, &mut ids);
        assert_eq!(r4.findings.len(), 2);
        assert_eq!(
            r4.findings[0], r3.findings[0],
            "the resolved one is history"
        );
        let again = &r4.findings[1];
        assert_eq!(
            (again.id.as_str(), again.status),
            ("f2", FindingStatus::Open)
        );
        assert_eq!(again.first_seen, t3);
        assert_eq!(
            r4.notify.len(),
            1,
            "a returning condition is a new violation"
        );
        assert_eq!(r4.changed, ["f2"]);
    }

    #[test]
    fn exempted_then_open_announces_once() {
        let mut ids = Ids(0);
        let exempt = outcome(vec![eval(
            "r/a",
            EvaluationStatus::Exempted,
            Severity::Violation,
        )]);
        let fail = outcome(vec![eval(
            "r/a",
            EvaluationStatus::Failed,
            Severity::Violation,
        )]);

        let r1 = step(&[], &exempt, T0, &mut ids);
        assert_eq!(r1.findings[0].status, FindingStatus::Exempted);
        assert!(r1.notify.is_empty(), "an exempted condition tells nobody");

        let r2 = step(&r1.findings, &fail, T0 + Duration::hours(1), &mut ids);
        assert_eq!(r2.findings[0].status, FindingStatus::Open);
        assert_eq!(
            r2.findings[0].id, "f1",
            "the exemption ending keeps the finding"
        );
        assert_eq!(r2.notify.len(), 1);

        let r3 = step(&r2.findings, &exempt, T0 + Duration::hours(2), &mut ids);
        assert_eq!(r3.findings[0].status, FindingStatus::Exempted);
        let r4 = step(&r3.findings, &fail, T0 + Duration::hours(3), &mut ids);
        assert!(r4.notify.is_empty(), "already announced");
    }

    #[test]
    fn warnings_are_not_announced_until_they_become_violations() {
        let mut ids = Ids(0);
        let warn = outcome(vec![eval(
            "r/a",
            EvaluationStatus::Failed,
            Severity::Warning,
        )]);
        let r1 = step(&[], &warn, T0, &mut ids);
        assert!(r1.notify.is_empty());
        let viol = outcome(vec![eval(
            "r/a",
            EvaluationStatus::Failed,
            Severity::Violation,
        )]);
        let r2 = step(&r1.findings, &viol, T0 + Duration::hours(1), &mut ids);
        assert_eq!(r2.notify.len(), 1);
        assert_eq!(r2.findings[0].severity, Severity::Violation);
    }

    #[test]
    fn incomplete_outcomes_keep_unseen_findings_and_missing_rules_resolve() {
        let mut ids = Ids(0);
        let fail = outcome(vec![
            eval("r/a", EvaluationStatus::Failed, Severity::Violation),
            eval("r/b", EvaluationStatus::Failed, Severity::Violation),
        ]);
        let r1 = step(&[], &fail, T0, &mut ids);

        // The agent failed to read part of the mail settings: only `b` was seen.
        let mut partial = outcome(vec![eval(
            "r/b",
            EvaluationStatus::Failed,
            Severity::Violation,
        )]);
        partial[0].complete = false;
        let t1 = T0 + Duration::hours(1);
        let r2 = step(&r1.findings, &partial, t1, &mut ids);
        assert_eq!(r2.findings[0], r1.findings[0], "unseen is not resolved");
        assert_eq!(r2.findings[1].last_seen, t1);
        assert_eq!(r2.changed, ["f2"]);

        // The rule left the pack (or no longer covers the device): its findings resolve.
        let r3 = step(&r2.findings, &[], t1, &mut ids);
        assert!(
            r3.findings
                .iter()
                .all(|f| f.status == FindingStatus::Resolved)
        );
    }

    #[test]
    fn findings_serialize_with_the_interface_field_names() {
        let mut ids = Ids(0);
        let r = step(
            &[],
            &outcome(vec![eval(
                "r/a",
                EvaluationStatus::Failed,
                Severity::Violation,
            )]),
            T0,
            &mut ids,
        );
        let json = serde_json::to_value(&r.findings[0]).unwrap();
        for field in [
            "device",
            "rule",
            "section",
            "severity",
            "status",
            "message_sv",
            "message_en",
            "first_seen",
            "last_seen",
        ] {
            assert!(json.get(field).is_some(), "{field}");
        }
        assert_eq!(json["status"], "open");
        assert_eq!(json["severity"], "violation");
        assert_eq!(json["first_seen"], "2025-06-11T12:00:00Z");
        let back: Finding = serde_json::from_value(json).unwrap();
        assert_eq!(back, r.findings[0]);
    }
}
