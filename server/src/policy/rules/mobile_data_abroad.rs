//! `mobile-data-abroad` (Sorsele 8.4: abroad, mobile data "som regel avstängd", on only for a
//! necessary work task Wi-Fi cannot serve, "och ska därefter stängas av igen"): a modem with
//! its data bearer up while registered on a network outside the pack's home MCCs.
//!
//! - "Abroad" is the operator's mobile country code, as the modem reports it, not in
//!   `home_mccs`; roaming on a home-country network (national roaming) is home. A modem with
//!   no operator code is not known to be anywhere and is not judged.
//! - An active exemption for the device or its person (the employee's time-boxed request from
//!   the laptop, or IT's grant) makes it `exempted`, and so does, when `business_trip_exempts`
//!   is true (the default), a business trip of the assigned person covering now and that
//!   country. The Sorsele pack sets it true for laptops (8.4 lets equipment go on business
//!   trips and restricts only phones' data) and false for phones.
//! - On a private trip this rule is silent: 8.4 is about business travel, and 8.5's
//!   `mobile-broadband-abroad-private` judges data on private trips (never allowed, never
//!   exempted), so one fact gives one finding.
//!
//! Key: the rule id and the network's MCC: a second modem in the same country is the same
//! condition, a new country a new one. Judged from the modems' current state: data switched
//! on and off between two reports is not seen.

use serde::{Deserialize, Serialize};
use vakt_proto::model::Modem;

use super::{Hit, Input};
use crate::policy::spanned::{Diags, Fields};
use crate::policy::{Evidence, TripKind};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub business_trip_exempts: bool,
}

pub(super) const KEYS: &[&str] = &["business_trip_exempts"];

/// What every roaming rule can put in its messages.
pub(super) const PLACEHOLDERS: &[&str] = &[
    "country",
    "mcc",
    "operator",
    "rx_bytes",
    "tx_bytes",
    "data_used",
];

pub(super) fn parse(f: &mut Fields<'_, '_>, d: &mut Diags) -> Option<Params> {
    let exempts = f.boolean("business_trip_exempts", false, d);
    Some(Params {
        business_trip_exempts: exempts.is_none_or(|b| b.into_inner()),
    })
}

/// A modem registered abroad.
pub(super) struct Abroad<'a> {
    pub modem: &'a Modem,
    pub mcc: &'a str,
    /// ISO country code, upper-case; empty when the agent did not know it.
    pub country: String,
}

/// The device's modems registered outside the home countries.
pub(super) fn abroad<'a>(input: &Input<'a>) -> Vec<Abroad<'a>> {
    input
        .report
        .roaming
        .modems
        .iter()
        .filter_map(|modem| {
            let mcc = modem.operator_mcc.trim();
            (!mcc.is_empty() && !input.pack.is_home_mcc(mcc)).then(|| Abroad {
                modem,
                mcc,
                country: modem.country.trim().to_uppercase(),
            })
        })
        .collect()
}

/// A hit for a modem abroad, with the location and data evidence every roaming rule shows.
pub(super) fn located(a: &Abroad<'_>) -> Hit {
    let m = a.modem;
    let operator = if m.operator_name.trim().is_empty() {
        format!("{}{}", m.operator_mcc, m.operator_mnc)
    } else {
        m.operator_name.clone()
    };
    let country = if a.country.is_empty() {
        format!("MCC {}", a.mcc)
    } else {
        a.country.clone()
    };
    let (sv, en) = data_used(m.rx_bytes.saturating_add(m.tx_bytes));
    Hit::new([a.mcc])
        .with("country", country)
        .with("mcc", a.mcc)
        .with("operator", operator)
        .with("registration", &m.registration)
        .with("data_connected", m.data_connected)
        .with("rx_bytes", m.rx_bytes)
        .with("tx_bytes", m.tx_bytes)
        .phrase("data_used", sv, en)
}

/// Bytes as a reader would write them: "1,5 MB" in Swedish, "1.5 MB" in English.
pub(super) fn data_used(bytes: u64) -> (String, String) {
    const UNITS: [(&str, u64); 3] = [("GB", 1_000_000_000), ("MB", 1_000_000), ("kB", 1_000)];
    for (unit, size) in UNITS {
        if bytes >= size {
            let tenths = bytes.saturating_mul(10) / size;
            let en = format!("{}.{} {unit}", tenths / 10, tenths % 10);
            return (en.replace('.', ","), en);
        }
    }
    (format!("{bytes} byte"), format!("{bytes} bytes"))
}

pub(super) fn evaluate(p: &Params, input: &Input<'_>) -> Vec<Hit> {
    let person = input.person();
    abroad(input)
        .iter()
        .filter(|a| a.modem.data_connected)
        .filter(|a| {
            !input
                .context
                .trips_covering(person, &a.country, input.now)
                .any(|t| t.kind == TripKind::Private)
        })
        .map(|a| {
            let hit = located(a);
            let business = input
                .context
                .trips_covering(person, &a.country, input.now)
                .find(|t| t.kind == TripKind::Business);
            match business {
                Some(trip) if p.business_trip_exempts => hit.excused(Evidence::from([
                    ("trip".to_string(), trip.id.clone()),
                    ("trip_kind".to_string(), "business".to_string()),
                ])),
                _ => hit,
            }
        })
        .collect()
}

#[cfg(test)]
pub(super) mod tests {
    use time::macros::datetime;
    use vakt_proto::model::{Modem, Report, RoamingState};

    use super::data_used;
    use crate::policy::EvaluationStatus::{self, Exempted, Failed};
    use crate::policy::TripKind::{Business, Private};
    use crate::policy::testkit::*;

    const RULE: &str = r#"
        id = "mobile-data-abroad-laptop"
        kind = "mobile-data-abroad"
        section = "8.4"
        severity = "violation"
        devices = ["laptop"]
        message_sv = "Mobil data är påslagen i {country} ({operator}); {data_used} har använts."
        message_en = "Mobile data is on in {country} ({operator}); {data_used} used."
    "#;

    pub fn modem(mcc: &str, country: &str, data: bool) -> Modem {
        Modem {
            registration: "roaming".into(),
            roaming: mcc != "240",
            operator_mcc: mcc.into(),
            operator_mnc: "01".into(),
            operator_name: if mcc == "242" {
                "Telenor".into()
            } else {
                String::new()
            },
            country: country.into(),
            home_mcc: "240".into(),
            data_connected: data,
            rx_bytes: 1_048_576,
            tx_bytes: 4096,
            ..Modem::default()
        }
    }

    pub fn report(modems: Vec<Modem>) -> Report {
        Report {
            roaming: RoamingState {
                modems,
                ..RoamingState::default()
            },
            ..Report::default()
        }
    }

    #[test]
    fn table() {
        let pack = pack_with(RULE);
        let people = [anna()];
        let k = "mobile-data-abroad-laptop/242";
        type Case = (
            &'static str,
            Vec<Modem>,
            Vec<crate::policy::Trip>,
            Vec<(&'static str, EvaluationStatus)>,
        );
        let cases: Vec<Case> = vec![
            (
                "home with data passes",
                vec![modem("240", "SE", true)],
                vec![],
                vec![],
            ),
            (
                "abroad without data passes",
                vec![modem("242", "NO", false)],
                vec![],
                vec![],
            ),
            (
                "no operator code is not judged",
                vec![modem("", "", true)],
                vec![],
                vec![],
            ),
            (
                "abroad with data fails",
                vec![modem("242", "NO", true)],
                vec![],
                vec![(k, Failed)],
            ),
            (
                "two modems in one country are one finding",
                vec![modem("242", "NO", true), modem("242", "NO", true)],
                vec![],
                vec![(k, Failed)],
            ),
            (
                "a business trip there exempts",
                vec![modem("242", "NO", true)],
                vec![trip(Business, "NO", None)],
                vec![(k, Exempted)],
            ),
            (
                "a business trip elsewhere does not",
                vec![modem("242", "NO", true)],
                vec![trip(Business, "FI", None)],
                vec![(k, Failed)],
            ),
            (
                "a private trip leaves it to 8.5's rule",
                vec![modem("242", "NO", true)],
                vec![trip(Private, "NO", Some("chef@sorsele.se"))],
                vec![],
            ),
        ];
        for (name, modems, trips, want) in cases {
            let out = run_one(
                &pack,
                &laptop(),
                &report(modems),
                &ctx(&people, &trips, &[]),
            );
            assert_eq!(statuses(&out), want, "{name}");
        }
    }

    #[test]
    fn exemptions_are_time_boxed() {
        let pack = pack_with(RULE);
        let bad = report(vec![modem("242", "NO", true)]);
        let until = Some(datetime!(2025-06-11 12:30 UTC));
        let ex = [exemption("mobile-data-abroad", until)];
        let out = run_one(&pack, &laptop(), &bad, &ctx(&[], &[], &ex));
        assert_eq!(out.evaluations[0].status, Exempted);
        assert_eq!(
            out.evaluations[0].evidence["exemption_until"],
            "2025-06-11T12:30:00Z"
        );
        assert_eq!(
            out.evaluations[0].evidence["exemption_reason"],
            "Behöver skicka protokoll"
        );
        let later = run_at(
            &pack,
            &laptop(),
            &bad,
            &ctx(&[], &[], &ex),
            datetime!(2025-06-11 12:30 UTC),
        );
        assert_eq!(later.evaluations[0].status, Failed, "expired at `until`");
        let before = run_at(
            &pack,
            &laptop(),
            &bad,
            &ctx(&[], &[], &ex),
            datetime!(2025-06-11 10:59 UTC),
        );
        assert_eq!(before.evaluations[0].status, Failed, "not yet valid");
    }

    #[test]
    fn phones_are_not_exempted_by_business_trips_when_the_pack_says_so() {
        let rule = RULE.replace("[\"laptop\"]", "[\"phone\"]")
            + "\n[rule.params]\nbusiness_trip_exempts = false\n";
        let pack = pack_with(&rule);
        let trips = [trip(Business, "NO", None)];
        let out = run_one(
            &pack,
            &phone(),
            &report(vec![modem("242", "NO", true)]),
            &ctx(&[anna()], &trips, &[]),
        );
        assert_eq!(out.evaluations[0].status, Failed);
    }

    #[test]
    fn message_and_resolution() {
        let pack = pack_with(RULE);
        let bad = report(vec![modem("242", "NO", true)]);
        let out = run_one(&pack, &laptop(), &bad, &ctx(&[], &[], &[]));
        assert_eq!(
            out.evaluations[0].message_sv,
            "Mobil data är påslagen i NO (Telenor); 1,0 MB har använts."
        );
        assert_eq!(out.evaluations[0].evidence["operator"], "Telenor");
        assert_resolves(
            &pack,
            &laptop(),
            &bad,
            &report(vec![modem("242", "NO", false)]),
            &ctx(&[], &[], &[]),
        );
    }

    #[test]
    fn data_amounts() {
        assert_eq!(data_used(999), ("999 byte".into(), "999 bytes".into()));
        assert_eq!(data_used(1_052_672), ("1,0 MB".into(), "1.0 MB".into()));
        assert_eq!(data_used(2_560_000_000).1, "2.5 GB");
        assert_eq!(data_used(u64::MAX).1, "1844674407.3 GB");
    }
}
