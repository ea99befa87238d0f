//! The policy engine: an organisation's written policy as a pack of rules, each rule a pure
//! function of one device's state and a context (people, trips, exemptions, `now`) that returns
//! evaluations; reconciliation turns evaluations into findings with a lifecycle; and the text
//! of the mail that tells a manager about a new violation.
//!
//! Nothing here touches a file, a socket or a clock: the server loads the pack, the report and
//! the context from its store, passes `now`, and stores what comes back. The flow per device:
//!
//! 1. [`evaluate`]`(pack, device, report, context, now)` → one [`RuleOutcome`] per rule that
//!    applies to the device's class;
//! 2. [`reconcile`]`(previous findings, outcomes, now, new_id)` → the device's new findings and
//!    the ones that just became open violations;
//! 3. [`violation_mail`] for each of those, sent to the person's manager (section 8.5 of the
//!    Sorsele policy: misuse is reported to the closest manager).
//!
//! Time zones: dates (trip dates, end of employment, leave) are calendar dates without a zone,
//! and this crate has no time-zone database. A date is taken to cover every instant that falls
//! on that date *somewhere* on Earth (UTC−12 to UTC+14), see [`day_start`] and [`day_end`]: a
//! trip covers its days wherever the traveller is, and "after the end date" means after it
//! everywhere. The slack is at most a day at each end, always in the employee's favour.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use time::{Date, Duration, OffsetDateTime, Time};

use crate::people::Person;

mod findings;
mod notify;
mod pack;
pub mod rules;
mod spanned;
mod template;

pub use findings::{Finding, FindingStatus, Reconciled, reconcile};
pub use notify::{MailText, violation_mail};
pub use pack::{DEFAULT_PACK_TOML, Pack, PackError, check, default_pack};
pub use rules::{Params, Rule, RuleKind};

/// How serious a rule's breach is, from the policy's wording: "ska"/"får inte" → violation,
/// "bör" → warning, "allowed, but you are responsible" → notice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Violation,
    Warning,
    Notice,
}

impl Severity {
    pub const ALL: [Severity; 3] = [Self::Violation, Self::Warning, Self::Notice];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Violation => "violation",
            Self::Warning => "warning",
            Self::Notice => "notice",
        }
    }
}

/// The kind of equipment a rule covers; the policy treats computers and phones differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceClass {
    Laptop,
    Phone,
}

impl DeviceClass {
    pub const ALL: [DeviceClass; 2] = [Self::Laptop, Self::Phone];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Laptop => "laptop",
            Self::Phone => "phone",
        }
    }
}

/// Where a device is in its life (INTERFACE.md's device states).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeviceStatus {
    #[default]
    Active,
    Lost,
    Locked,
    Wiped,
    /// Returned and out of service: no rule applies any more, so its findings resolve.
    Retired,
}

/// What the server knows about a device besides its report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Device {
    pub id: String,
    pub hostname: String,
    pub class: DeviceClass,
    /// The e-mail address of the person the device is assigned to.
    #[serde(default)]
    pub assigned_to: Option<String>,
    #[serde(with = "time::serde::rfc3339")]
    pub enrolled_at: OffsetDateTime,
    /// When the device last reported; `None` if it never has.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub last_seen: Option<OffsetDateTime>,
    #[serde(default)]
    pub status: DeviceStatus,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TripKind {
    Business,
    Private,
}

/// A trip abroad, as IT records it (`vakt trips add`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Trip {
    pub id: String,
    /// The traveller's e-mail address.
    pub person: String,
    pub kind: TripKind,
    /// ISO 3166-1 alpha-2 codes ("NO", "FI"). A trip with no country covers none.
    pub countries: Vec<String>,
    /// First and last day of the trip, both included.
    #[serde(with = "crate::people::iso_date")]
    pub from: Date,
    #[serde(with = "crate::people::iso_date")]
    pub to: Date,
    /// Who approved taking the laptop along (section 8.5: a private trip needs the manager's
    /// approval); `None` while not approved. Business trips need no separate approval.
    #[serde(default)]
    pub approved_by: Option<String>,
}

impl Trip {
    /// Whether the trip is under way at `now` in `country` (case-insensitive ISO code).
    pub fn covers(&self, country: &str, now: OffsetDateTime) -> bool {
        !country.is_empty()
            && self
                .countries
                .iter()
                .any(|c| c.eq_ignore_ascii_case(country))
            && day_start(self.from) <= now
            && now < day_end(self.to)
    }
}

/// Whom an exemption is for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExemptionSubject {
    /// One device, by id.
    Device(String),
    /// Every device assigned to a person, by e-mail address.
    Person(String),
}

/// A recorded exception to one rule: a time-boxed exemption for mobile data abroad asked for
/// from the laptop, or a manager's exception to returning equipment (section 8.6). While it is
/// active, a matching evaluation is `exempted` instead of failing.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Exemption {
    pub id: String,
    pub subject: ExemptionSubject,
    /// A rule id (`mobile-data-abroad-laptop`) or a rule kind (`mobile-data-abroad`).
    pub rule: String,
    #[serde(with = "time::serde::rfc3339")]
    pub from: OffsetDateTime,
    /// `None`: until revoked (a manager's open-ended exception).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub until: Option<OffsetDateTime>,
    pub reason: String,
    /// Who asked for or granted it, for the evidence.
    #[serde(default)]
    pub granted_by: String,
    /// Set when it was ended before its time (`until` is then when); kept for the evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revoked: Option<Revocation>,
}

/// Who ended an exemption early, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Revocation {
    pub by: String,
    pub reason: String,
}

impl Exemption {
    /// Whether it is in force at `now` for this rule and device.
    pub fn applies(&self, rule: &Rule, device: &Device, now: OffsetDateTime) -> bool {
        let subject = match &self.subject {
            ExemptionSubject::Device(id) => *id == device.id,
            ExemptionSubject::Person(email) => device
                .assigned_to
                .as_deref()
                .is_some_and(|a| a.eq_ignore_ascii_case(email)),
        };
        subject
            && (self.rule == rule.id || self.rule == rule.kind().as_str())
            && self.from <= now
            && self.until.is_none_or(|u| now < u)
    }
}

/// Everything besides the device that rules look at. The server passes what it has stored;
/// the slices may hold everyone's records, rules pick what concerns the device.
#[derive(Debug, Clone, Copy, Default)]
pub struct Context<'a> {
    pub people: &'a [Person],
    pub trips: &'a [Trip],
    pub exemptions: &'a [Exemption],
}

impl<'a> Context<'a> {
    /// The person a device is assigned to, if known.
    pub fn person(&self, email: Option<&str>) -> Option<&'a Person> {
        let email = email?;
        self.people
            .iter()
            .find(|p| p.email.eq_ignore_ascii_case(email))
    }

    /// The trips of the device's person under way at `now` in `country`.
    pub fn trips_covering<'b>(
        &'b self,
        person: Option<&'b str>,
        country: &'b str,
        now: OffsetDateTime,
    ) -> impl Iterator<Item = &'a Trip> + 'b {
        self.trips.iter().filter(move |t| {
            person.is_some_and(|p| t.person.eq_ignore_ascii_case(p)) && t.covers(country, now)
        })
    }
}

/// A finding's evidence: what was observed, as key/value text (sorted, so stable).
pub type Evidence = BTreeMap<String, String>;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EvaluationStatus {
    /// The condition the rule forbids is present.
    Failed,
    /// It is present, but an active exemption or an approved trip allows it.
    Exempted,
}

/// One condition a rule found on one device at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Evaluation {
    /// The rule's id.
    pub rule: String,
    pub kind: RuleKind,
    pub section: String,
    pub severity: Severity,
    /// Stable per device: the same condition gives the same key in every report (the rule id
    /// and what the condition is about, e.g. the forward's client, user and target).
    pub key: String,
    pub status: EvaluationStatus,
    pub evidence: Evidence,
    pub message_sv: String,
    pub message_en: String,
}

/// What one rule found on one device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleOutcome {
    pub rule: String,
    /// False when the facts the rule reads are incomplete (the agent reported an error for
    /// that part of the report): then a condition missing from `evaluations` may just be
    /// unseen, and reconciliation must not resolve its finding.
    pub complete: bool,
    pub evaluations: Vec<Evaluation>,
}

/// Evaluate every rule of `pack` that covers the device's class.
///
/// A retired device gets no outcomes at all, so reconciliation resolves all its findings.
pub fn evaluate(
    pack: &Pack,
    device: &Device,
    report: &vakt_proto::model::Report,
    context: &Context<'_>,
    now: OffsetDateTime,
) -> Vec<RuleOutcome> {
    if device.status == DeviceStatus::Retired {
        return Vec::new();
    }
    pack.rules
        .iter()
        .filter(|rule| rule.devices.contains(&device.class))
        .map(|rule| rules::run(pack, rule, device, report, context, now))
        .collect()
}

/// The earliest instant that is `date` somewhere on Earth (00:00 at UTC+14).
pub fn day_start(date: Date) -> OffsetDateTime {
    // Saturating: the first days the `time` crate can represent have no "day before".
    date.with_time(Time::MIDNIGHT)
        .assume_utc()
        .saturating_sub(Duration::hours(14))
}

/// The first instant after which `date` is over everywhere on Earth (24:00 at UTC−12).
pub fn day_end(date: Date) -> OffsetDateTime {
    date.with_time(Time::MIDNIGHT)
        .assume_utc()
        .saturating_add(Duration::hours(36))
}

/// An instant as RFC 3339 (UTC), for evidence and messages.
pub(crate) fn rfc3339(at: OffsetDateTime) -> String {
    at.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|_| at.unix_timestamp().to_string())
}

#[cfg(test)]
pub(crate) mod testkit;

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::{date, datetime};

    #[test]
    fn a_date_covers_every_instant_that_is_that_date_somewhere() {
        let d = date!(2025 - 06 - 10);
        // 00:00 in Kiribati (UTC+14) is 10:00 UTC the day before.
        assert_eq!(day_start(d), datetime!(2025-06-09 10:00 UTC));
        assert_eq!(day_end(d), datetime!(2025-06-11 12:00 UTC));
        // The ends of the representable range saturate instead of panicking.
        assert!(day_start(Date::MIN) <= day_end(Date::MIN));
        assert!(day_start(Date::MAX) <= day_end(Date::MAX));
    }

    #[test]
    fn a_trip_covers_its_countries_and_days_only() {
        let trip = Trip {
            id: "t1".into(),
            person: "anna@sorsele.se".into(),
            kind: TripKind::Business,
            countries: vec!["NO".into(), "fi".into()],
            from: date!(2025 - 06 - 10),
            to: date!(2025 - 06 - 12),
            approved_by: None,
        };
        let mid = datetime!(2025-06-11 12:00 UTC);
        assert!(trip.covers("no", mid));
        assert!(trip.covers("FI", mid));
        assert!(!trip.covers("DK", mid));
        assert!(!trip.covers("", mid));
        assert!(!trip.covers("NO", datetime!(2025-06-08 23:00 UTC)));
        assert!(trip.covers("NO", datetime!(2025-06-12 23:30 UTC)));
        assert!(!trip.covers("NO", datetime!(2025-06-13 12:00 UTC)));
    }
}

/// The end-to-end scenario at the engine's level, on the built-in Sorsele pack: a laptop
/// forwarding to Gmail, fetching over plain IMAP, with no signature and a roaming modem with
/// data up gives exactly the expected findings; removing the forward resolves that one.
#[cfg(test)]
mod sorsele_scenario {
    use vakt_proto::model::{
        ForwardKind, MailAccount, MailForward, MailIdentity, MailSecurity, MailSettings, Modem,
        Report, RoamingState,
    };

    use super::testkit::*;
    use super::*;

    fn report() -> Report {
        Report {
            mail: MailSettings {
                accounts: vec![MailAccount {
                    client: "thunderbird".into(),
                    user: "anna".into(),
                    address: "anna.berg@sorsele.se".into(),
                    host: "imap.sorsele.se".into(),
                    port: 143,
                    security: MailSecurity::None,
                    protocol: "imap".into(),
                }],
                forwards: vec![MailForward {
                    client: "thunderbird".into(),
                    user: "anna".into(),
                    rule: "till gmail".into(),
                    enabled: true,
                    target: "anna.berg@gmail.com".into(),
                    kind: ForwardKind::Forward,
                    keeps_copy: true,
                    problem: String::new(),
                }],
                identities: vec![MailIdentity {
                    client: "thunderbird".into(),
                    user: "anna".into(),
                    address: "anna.berg@sorsele.se".into(),
                    signature: String::new(),
                    name: "Anna Berg".into(),
                }],
            },
            roaming: RoamingState {
                modems: vec![Modem {
                    registration: "roaming".into(),
                    roaming: true,
                    operator_mcc: "242".into(),
                    operator_mnc: "01".into(),
                    operator_name: "Telenor".into(),
                    country: "NO".into(),
                    home_mcc: "240".into(),
                    data_connected: true,
                    rx_bytes: 1_048_576,
                    tx_bytes: 4096,
                    ..Modem::default()
                }],
                ..RoamingState::default()
            },
            ..Report::default()
        }
    }

    #[test]
    fn exactly_the_expected_findings_and_the_forward_resolves() {
        let pack = default_pack();
        let people = [anna()];
        let c = ctx(&people, &[], &[]);
        let mut id = ids();
        let outcomes = evaluate(&pack, &laptop(), &report(), &c, NOW);
        let first = reconcile("dev-1", &[], &outcomes, NOW, &mut id);
        let got: Vec<(&str, &str, Severity, FindingStatus)> = first
            .findings
            .iter()
            .map(|f| (f.rule.as_str(), f.section.as_str(), f.severity, f.status))
            .collect();
        use FindingStatus::Open;
        use Severity::*;
        assert_eq!(
            got,
            [
                ("mail-transport-encryption", "8.2", Violation, Open),
                ("mobile-data-abroad-laptop", "8.4", Violation, Open),
                ("private-travel-approval", "8.5", Violation, Open),
                ("mail-auto-forward-external", "9", Violation, Open),
                ("mail-signature", "9", Warning, Open),
            ]
        );
        assert_eq!(
            first.notify.len(),
            4,
            "every violation is announced, the warning is not"
        );
        assert!(
            first.findings[0].message_sv.starts_with(
                "I thunderbird ansluter e-postkontot anna.berg@sorsele.se till servern \
                 imap.sorsele.se:143 utan kryptering. Enligt avsnitt 8.2"
            ),
            "{}",
            first.findings[0].message_sv
        );
        assert!(
            first.findings[1].message_en.starts_with(
                "The laptop's mobile broadband is connected in NO (operator Telenor) with no \
                 business trip recorded and no exemption active; 1.0 MB transferred."
            ),
            "{}",
            first.findings[1].message_en
        );
        assert!(
            first.findings[2].message_sv.starts_with(
                "Datorn är utomlands, i NO (operatör Telenor), men ingen resa är registrerad."
            ),
            "{}",
            first.findings[2].message_sv
        );
        assert!(
            first.findings[4].message_sv.starts_with(
                "Avsändaridentiteten anna.berg@sorsele.se i thunderbird saknar signatur (brevfot)."
            ),
            "{}",
            first.findings[4].message_sv
        );
        let fwd = &first.findings[3];
        assert_eq!(
            fwd.message_sv,
            "Regeln \"till gmail\" i thunderbird vidarebefordrar e-post automatiskt till den \
             externa adressen anna.berg@gmail.com. Enligt avsnitt 9 får e-post inte automatiskt \
             vidarebefordras till extern e-postadress; e-post som kommer in till kommunen \
             omfattas av kraven på allmänna handlingar."
        );
        assert_eq!(fwd.evidence["keeps_copy"], "yes");
        let mail = violation_mail(&pack, fwd, &laptop(), Some(&anna()));
        assert!(mail.body.contains("anna.berg@gmail.com"));

        // The employee removes the forward; an hour later nothing else has changed.
        let mut fixed = report();
        fixed.mail.forwards.clear();
        let later = NOW + Duration::hours(1);
        let outcomes = evaluate(&pack, &laptop(), &fixed, &c, later);
        let second = reconcile("dev-1", &first.findings, &outcomes, later, &mut id);
        let statuses: Vec<(&str, FindingStatus)> = second
            .findings
            .iter()
            .map(|f| (f.rule.as_str(), f.status))
            .collect();
        assert_eq!(
            statuses,
            [
                ("mail-transport-encryption", Open),
                ("mobile-data-abroad-laptop", Open),
                ("private-travel-approval", Open),
                ("mail-auto-forward-external", FindingStatus::Resolved),
                ("mail-signature", Open),
            ]
        );
        assert!(second.notify.is_empty());
        assert_eq!(second.findings[3].resolved_at, Some(later));
    }

    /// The evaluations of the travel and roaming sections, 8.4 and 8.5.
    fn roaming(outcomes: &[RuleOutcome]) -> Vec<(&str, EvaluationStatus)> {
        outcomes
            .iter()
            .flat_map(|o| &o.evaluations)
            .filter(|e| e.section == "8.4" || e.section == "8.5")
            .map(|e| (e.rule.as_str(), e.status))
            .collect()
    }

    #[test]
    fn a_business_trip_and_an_exemption_change_the_roaming_findings() {
        let pack = default_pack();
        let people = [anna()];
        let trips = [trip(TripKind::Business, "NO", None)];
        let outcomes = evaluate(&pack, &laptop(), &report(), &ctx(&people, &trips, &[]), NOW);
        let found = roaming(&outcomes);
        assert_eq!(
            found,
            [("mobile-data-abroad-laptop", EvaluationStatus::Exempted)],
            "on a business trip the laptop may be abroad and online"
        );

        let private = [trip(TripKind::Private, "NO", Some("chef@sorsele.se"))];
        let ex = [exemption("mobile-data-abroad", None)];
        let outcomes = evaluate(
            &pack,
            &laptop(),
            &report(),
            &ctx(&people, &private, &ex),
            NOW,
        );
        let found = roaming(&outcomes);
        assert_eq!(
            found,
            [("mobile-broadband-abroad-private", EvaluationStatus::Failed)],
            "an approved private trip: travel is fine, data is never"
        );
    }

    #[test]
    fn a_retired_device_resolves_everything() {
        let pack = default_pack();
        let people = [anna()];
        let c = ctx(&people, &[], &[]);
        let mut id = ids();
        let first = reconcile(
            "dev-1",
            &[],
            &evaluate(&pack, &laptop(), &report(), &c, NOW),
            NOW,
            &mut id,
        );
        let mut retired = laptop();
        retired.status = DeviceStatus::Retired;
        let outcomes = evaluate(&pack, &retired, &report(), &c, NOW);
        assert!(outcomes.is_empty());
        let second = reconcile("dev-1", &first.findings, &outcomes, NOW, &mut id);
        assert!(
            second
                .findings
                .iter()
                .all(|f| f.status == FindingStatus::Resolved)
        );
    }
}
