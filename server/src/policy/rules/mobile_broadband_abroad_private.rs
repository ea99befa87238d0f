//! `mobile-broadband-abroad-private` (Sorsele 8.5: "Uppkoppling av dator med Sorsele kommuns
//! mobila bredband får inte ske utomlands för privat bruk", and phones' data "ska vara
//! avstängd utrikes vid privat resa"): a modem with its data bearer up abroad while a private
//! trip of the assigned person covers now and that country.
//!
//! Never allowed, so never `exempted`: neither an exemption nor the trip's approval excuses it
//! (the approval lets the laptop travel, not use mobile broadband). Whether the private trip
//! was approved is in the evidence. Without any trip recorded, data abroad is judged by
//! `mobile-data-abroad` and the missing approval by `private-travel-approval`.
//!
//! Key: the rule id and the network's MCC. No parameters.

use serde::{Deserialize, Serialize};

use super::mobile_data_abroad::{abroad, located};
use super::{Hit, Input};
use crate::policy::TripKind;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {}

/// Besides the location and data placeholders of `mobile-data-abroad`.
pub(super) const PLACEHOLDERS: &[&str] = &["trip", "trip_from", "trip_to"];

pub(super) fn evaluate(_: &Params, input: &Input<'_>) -> Vec<Hit> {
    let person = input.person();
    abroad(input)
        .iter()
        .filter(|a| a.modem.data_connected)
        .filter_map(|a| {
            let trip = input
                .context
                .trips_covering(person, &a.country, input.now)
                .find(|t| t.kind == TripKind::Private)?;
            Some(
                located(a)
                    .with("trip", &trip.id)
                    .with("trip_from", trip.from)
                    .with("trip_to", trip.to)
                    .with(
                        "trip_approved_by",
                        trip.approved_by.as_deref().unwrap_or(""),
                    ),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::mobile_data_abroad::tests::{modem, report};
    use crate::policy::EvaluationStatus::{self, Failed};
    use crate::policy::TripKind::{Business, Private};
    use crate::policy::testkit::*;

    const RULE: &str = r#"
        id = "broadband-private"
        kind = "mobile-broadband-abroad-private"
        section = "8.5"
        severity = "violation"
        devices = ["laptop", "phone"]
        message_sv = "Mobilt bredband används i {country} under en privat resa ({trip_from}–{trip_to})."
        message_en = "Mobile broadband is used in {country} on a private trip ({trip_from}–{trip_to})."
    "#;

    #[test]
    fn table() {
        let pack = pack_with(RULE);
        let k = "broadband-private/242";
        let approved = Some("chef@sorsele.se");
        type Case = (
            &'static str,
            bool,
            Vec<crate::policy::Trip>,
            Vec<(&'static str, EvaluationStatus)>,
        );
        let cases: Vec<Case> = vec![
            ("no trip: not this rule's case", true, vec![], vec![]),
            (
                "a business trip: not this rule's case",
                true,
                vec![trip(Business, "NO", None)],
                vec![],
            ),
            (
                "private trip, data off passes",
                false,
                vec![trip(Private, "NO", approved)],
                vec![],
            ),
            (
                "private trip, data on fails",
                true,
                vec![trip(Private, "NO", None)],
                vec![(k, Failed)],
            ),
            (
                "even when the trip is approved",
                true,
                vec![trip(Private, "NO", approved)],
                vec![(k, Failed)],
            ),
        ];
        for (name, data, trips, want) in cases {
            let out = run_one(
                &pack,
                &laptop(),
                &report(vec![modem("242", "NO", data)]),
                &ctx(&[anna()], &trips, &[]),
            );
            assert_eq!(statuses(&out), want, "{name}");
        }
    }

    #[test]
    fn never_exempted_and_resolves_when_data_goes_off() {
        let pack = pack_with(RULE);
        let trips = [trip(Private, "NO", Some("chef@sorsele.se"))];
        let ex = [
            exemption("mobile-broadband-abroad-private", None),
            exemption("broadband-private", None),
        ];
        let bad = report(vec![modem("242", "NO", true)]);
        let out = run_one(&pack, &laptop(), &bad, &ctx(&[], &trips, &ex));
        assert_eq!(out.evaluations[0].status, Failed);
        assert_eq!(
            out.evaluations[0].evidence["trip_approved_by"],
            "chef@sorsele.se"
        );
        assert_eq!(
            out.evaluations[0].message_en,
            "Mobile broadband is used in NO on a private trip (2025-06-09–2025-06-13)."
        );
        let off = report(vec![modem("242", "NO", false)]);
        assert_resolves(&pack, &laptop(), &bad, &off, &ctx(&[], &trips, &[]));
    }
}
