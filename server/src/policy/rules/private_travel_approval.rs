//! `private-travel-approval` (Sorsele 8.5: "Att medföra dator utanför Sverige vid privat resa
//! kräver godkännande av chef och tydliga motiv"): a laptop abroad — a modem registered on a
//! network outside the home MCCs, data on or off — with no approved trip of its person
//! covering now and that country.
//!
//! A business trip is approved by being one (8.4: equipment may go on business trips); a
//! private trip needs `approved_by`. Without any trip, the finding says so; with an
//! unapproved private trip, it says the approval is missing. A laptop whose modem is off
//! cannot be placed, so it is not judged. The rule is meant for laptops (phones may go
//! abroad on private trips, 8.5); the pack's `devices` says so.
//!
//! Key: the rule id and the network's MCC. No parameters.

use serde::{Deserialize, Serialize};

use super::mobile_data_abroad::{abroad, located};
use super::{Hit, Input};
use crate::policy::TripKind;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {}

/// Besides the location and data placeholders of `mobile-data-abroad`.
pub(super) const PLACEHOLDERS: &[&str] = &["problem"];

pub(super) fn evaluate(_: &Params, input: &Input<'_>) -> Vec<Hit> {
    let person = input.person();
    abroad(input)
        .iter()
        .filter_map(|a| {
            let mut trips = input.context.trips_covering(person, &a.country, input.now);
            let mut unapproved = None;
            for t in trips.by_ref() {
                match (t.kind, &t.approved_by) {
                    (TripKind::Business, _) => return None,
                    (TripKind::Private, Some(by)) if !by.trim().is_empty() => return None,
                    (TripKind::Private, _) => unapproved = Some(t),
                }
            }
            let hit = located(a);
            Some(match unapproved {
                Some(t) => hit.with("trip", &t.id).phrase(
                    "problem",
                    "den privata resan är inte godkänd av chef",
                    "the private trip has not been approved by a manager",
                ),
                None => hit.phrase(
                    "problem",
                    "ingen resa är registrerad",
                    "no trip is recorded",
                ),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::super::mobile_data_abroad::tests::{modem, report};
    use crate::policy::EvaluationStatus::{self, Exempted, Failed};
    use crate::policy::TripKind::{Business, Private};
    use crate::policy::testkit::*;

    const RULE: &str = r#"
        id = "private-travel"
        kind = "private-travel-approval"
        section = "8.5"
        severity = "violation"
        devices = ["laptop"]
        message_sv = "Datorn är i {country} men {problem}."
        message_en = "The laptop is in {country} but {problem}."
    "#;

    #[test]
    fn table() {
        let pack = pack_with(RULE);
        let k = "private-travel/242";
        let chef = Some("chef@sorsele.se");
        type Case = (
            &'static str,
            Vec<vakt_proto::model::Modem>,
            Vec<crate::policy::Trip>,
            Vec<(&'static str, EvaluationStatus)>,
        );
        let cases: Vec<Case> = vec![
            (
                "at home passes",
                vec![modem("240", "SE", true)],
                vec![],
                vec![],
            ),
            (
                "a business trip passes",
                vec![modem("242", "NO", false)],
                vec![trip(Business, "NO", None)],
                vec![],
            ),
            (
                "an approved private trip passes",
                vec![modem("242", "NO", false)],
                vec![trip(Private, "NO", chef)],
                vec![],
            ),
            (
                "abroad with no trip fails, data off too",
                vec![modem("242", "NO", false)],
                vec![],
                vec![(k, Failed)],
            ),
            (
                "an unapproved private trip fails",
                vec![modem("242", "NO", true)],
                vec![trip(Private, "NO", None)],
                vec![(k, Failed)],
            ),
            (
                "an approved trip elsewhere fails",
                vec![modem("242", "NO", true)],
                vec![trip(Private, "DK", chef)],
                vec![(k, Failed)],
            ),
        ];
        for (name, modems, trips, want) in cases {
            let out = run_one(
                &pack,
                &laptop(),
                &report(modems),
                &ctx(&[anna()], &trips, &[]),
            );
            assert_eq!(statuses(&out), want, "{name}");
        }
    }

    #[test]
    fn messages_say_what_is_missing() {
        let pack = pack_with(RULE);
        let bad = report(vec![modem("242", "NO", false)]);
        let out = run_one(&pack, &laptop(), &bad, &ctx(&[], &[], &[]));
        assert_eq!(
            out.evaluations[0].message_sv,
            "Datorn är i NO men ingen resa är registrerad."
        );
        let trips = [trip(Private, "NO", None)];
        let out = run_one(&pack, &laptop(), &bad, &ctx(&[], &trips, &[]));
        assert_eq!(
            out.evaluations[0].message_en,
            "The laptop is in NO but the private trip has not been approved by a manager."
        );
    }

    #[test]
    fn exempted_and_resolved_by_approval() {
        let pack = pack_with(RULE);
        let bad = report(vec![modem("242", "NO", false)]);
        let ex = [exemption("private-travel", None)];
        assert_eq!(
            run_one(&pack, &laptop(), &bad, &ctx(&[], &[], &ex)).evaluations[0].status,
            Exempted
        );
        // Approving the trip resolves the finding, with the laptop still abroad.
        let approved = [trip(Private, "NO", Some("chef@sorsele.se"))];
        let (before, after) = (ctx(&[], &[], &[]), ctx(&[], &approved, &[]));
        assert_resolves_between(&pack, (&laptop(), &bad, &before), (&laptop(), &bad, &after));
    }
}
