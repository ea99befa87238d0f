//! Shared fixtures for the rule kinds' table-driven tests: a pack around one rule, devices,
//! people, trips and exemptions, and the open → resolved lifecycle check.

use time::OffsetDateTime;
use time::macros::{date, datetime};
use vakt_proto::model::Report;

use super::{
    Context, Device, DeviceClass, DeviceStatus, EvaluationStatus, Exemption, ExemptionSubject,
    FindingStatus, Pack, RuleOutcome, Trip, TripKind, check, evaluate, reconcile,
};
use crate::people::Person;

/// The moment tests evaluate at.
pub const NOW: OffsetDateTime = datetime!(2025-06-11 12:00 UTC);

/// A pack with the Sorsele metadata and the given `[[rule]]` body.
pub fn pack_with(rule: &str) -> Pack {
    let text = format!(
        r#"
organisation = "Sorsele kommun"
document = "Policy för telefoni, mobilteknisk utrustning samt e-postanvändning"
reference = "Dnr 2017/393"
version = "test"
home_mccs = ["240"]
mail_domains = ["sorsele.se"]
approved_mail_hosts = ["imap.sorsele.se", "*.mail.sorsele.se"]

[[rule]]
{rule}
"#
    );
    match check(&text) {
        Ok(pack) => pack,
        Err(errors) => panic!("{errors:#?}"),
    }
}

pub fn laptop() -> Device {
    Device {
        id: "dev-1".into(),
        hostname: "sorsele-lap-17".into(),
        class: DeviceClass::Laptop,
        assigned_to: Some("anna.berg@sorsele.se".into()),
        enrolled_at: datetime!(2025-01-01 08:00 UTC),
        last_seen: Some(NOW),
        status: DeviceStatus::Active,
    }
}

pub fn phone() -> Device {
    Device {
        id: "dev-2".into(),
        class: DeviceClass::Phone,
        ..laptop()
    }
}

pub fn anna() -> Person {
    Person {
        email: "anna.berg@sorsele.se".into(),
        name: "Anna Berg".into(),
        manager_email: Some("chef@sorsele.se".into()),
        end_date: None,
        leave_from: None,
        leave_to: None,
    }
}

pub fn trip(kind: TripKind, country: &str, approved_by: Option<&str>) -> Trip {
    Trip {
        id: "trip-1".into(),
        person: "anna.berg@sorsele.se".into(),
        kind,
        countries: vec![country.into()],
        from: date!(2025 - 06 - 09),
        to: date!(2025 - 06 - 13),
        approved_by: approved_by.map(str::to_string),
    }
}

/// An exemption for the test laptop, active at [`NOW`], for a rule id or kind.
pub fn exemption(rule: &str, until: Option<OffsetDateTime>) -> Exemption {
    Exemption {
        id: "ex-1".into(),
        subject: ExemptionSubject::Device("dev-1".into()),
        rule: rule.into(),
        from: datetime!(2025-06-11 11:00 UTC),
        until,
        reason: "Behöver skicka protokoll".into(),
        granted_by: "anna.berg@sorsele.se".into(),
        revoked: None,
    }
}

pub fn ctx<'a>(people: &'a [Person], trips: &'a [Trip], ex: &'a [Exemption]) -> Context<'a> {
    Context {
        people,
        trips,
        exemptions: ex,
    }
}

/// Evaluate the pack's only rule at [`NOW`].
pub fn run_one(pack: &Pack, device: &Device, report: &Report, ctx: &Context<'_>) -> RuleOutcome {
    run_at(pack, device, report, ctx, NOW)
}

pub fn run_at(
    pack: &Pack,
    device: &Device,
    report: &Report,
    ctx: &Context<'_>,
    now: OffsetDateTime,
) -> RuleOutcome {
    let mut out = evaluate(pack, device, report, ctx, now);
    assert_eq!(out.len(), 1, "expected the one rule to apply");
    out.remove(0)
}

/// The keys and statuses of an outcome's evaluations, in order.
pub fn statuses(out: &RuleOutcome) -> Vec<(&str, EvaluationStatus)> {
    out.evaluations
        .iter()
        .map(|e| (e.key.as_str(), e.status))
        .collect()
}

/// A finding id generator for tests: f1, f2, ...
pub fn ids() -> impl FnMut() -> String {
    let mut n = 0;
    move || {
        n += 1;
        format!("f{n}")
    }
}

/// What one evaluation looks at: the device, its report and the context.
pub type State<'a> = (&'a Device, &'a Report, &'a Context<'a>);

/// A failing report opens findings; the fixed one resolves every one of them.
pub fn assert_resolves(pack: &Pack, device: &Device, bad: &Report, fixed: &Report, ctx: &Context) {
    assert_resolves_between(pack, (device, bad, ctx), (device, fixed, ctx));
}

/// The `bad` state opens findings (all open); an hour later the `fixed` state (a changed
/// report, device record or context) resolves every one of them.
pub fn assert_resolves_between(pack: &Pack, bad: State<'_>, fixed: State<'_>) {
    let mut new_id = ids();
    let (device, report, ctx) = bad;
    let first = reconcile(
        &device.id,
        &[],
        &[run_one(pack, device, report, ctx)],
        NOW,
        &mut new_id,
    );
    assert!(
        !first.findings.is_empty(),
        "the bad state must open findings"
    );
    assert!(
        first
            .findings
            .iter()
            .all(|f| f.status == FindingStatus::Open)
    );
    let later = NOW + time::Duration::hours(1);
    let (device, report, ctx) = fixed;
    let second = reconcile(
        &device.id,
        &first.findings,
        &[run_at(pack, device, report, ctx, later)],
        later,
        &mut new_id,
    );
    assert_eq!(second.findings.len(), first.findings.len());
    for f in &second.findings {
        assert_eq!(f.status, FindingStatus::Resolved, "{}", f.key);
        assert_eq!(f.resolved_at, Some(later));
    }
}
