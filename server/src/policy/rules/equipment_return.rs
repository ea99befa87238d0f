//! `equipment-return` (Sorsele 8.6): equipment goes back when employment or the assignment
//! ends, and during a leave of absence longer than a year; "En chef har rätt att besluta om
//! undantag".
//!
//! A device still assigned to a person whose `end_date` has passed (everywhere: see
//! [`crate::policy::day_end`]), or whose leave is longer than `max_leave_days` (default 365)
//! and has begun. An open-ended leave (no `leave_to`) counts once it has lasted longer than
//! that. A manager's exception is an exemption for the rule (or the kind) on the person or
//! the device, usually without an end: the finding is then `exempted`.
//!
//! The leave length counts both the first and the last day (a leave from 2025-01-01 to
//! 2025-12-31 is 365 days). A device with no assigned person, or one the people register does
//! not know, is not judged.
//!
//! Keys: the rule id and `end`, or `leave` and the leave's first day (a new leave is a new
//! condition).

use serde::{Deserialize, Serialize};
use time::Duration;

use super::{Hit, Input};
use crate::policy::spanned::{Diags, Fields};
use crate::policy::{day_end, day_start};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub max_leave_days: u32,
}

pub(super) const KEYS: &[&str] = &["max_leave_days"];

pub(super) const PLACEHOLDERS: &[&str] =
    &["end_date", "leave_from", "leave_to", "manager", "problem"];

pub(super) fn parse(f: &mut Fields<'_, '_>, d: &mut Diags) -> Option<Params> {
    // A bad value is in `d`, which makes the whole params invalid; the default is moot then.
    let max_leave_days = f
        .count("max_leave_days", false, d, 1)
        .map_or(365, |n| n.into_inner());
    Some(Params { max_leave_days })
}

pub(super) fn evaluate(p: &Params, input: &Input<'_>) -> Vec<Hit> {
    let Some(person) = input.context.person(input.person()) else {
        return Vec::new();
    };
    let now = input.now;
    let base = |key: Vec<String>| {
        Hit::new(key)
            .with(
                "end_date",
                person.end_date.map(|d| d.to_string()).unwrap_or_default(),
            )
            .with(
                "leave_from",
                person.leave_from.map(|d| d.to_string()).unwrap_or_default(),
            )
            .with(
                "leave_to",
                person.leave_to.map(|d| d.to_string()).unwrap_or_default(),
            )
            .with("manager", person.manager_email.as_deref().unwrap_or(""))
    };
    let mut hits = Vec::new();
    if let Some(end) = person.end_date
        && now >= day_end(end)
    {
        hits.push(base(vec!["end".into()]).phrase(
            "problem",
            format!("anställningen eller uppdraget upphörde {end}"),
            format!("the employment or assignment ended on {end}"),
        ));
    }
    if let Some(from) = person.leave_from
        && now >= day_start(from)
        && person.leave_to.is_none_or(|to| now < day_end(to))
    {
        let max = i64::from(p.max_leave_days);
        let phrase = match person.leave_to {
            Some(to) => ((to - from).whole_days() + 1 > max).then(|| {
                (
                    format!("tjänstledigheten {from}–{to} är längre än {max} dagar"),
                    format!("the leave of absence {from}–{to} is longer than {max} days"),
                )
            }),
            None => from
                .checked_add(Duration::days(max))
                .is_some_and(|last| now >= day_end(last))
                .then(|| {
                    (
                        format!("tjänstledigheten sedan {from} har pågått längre än {max} dagar"),
                        format!(
                            "the leave of absence since {from} has lasted longer than {max} days"
                        ),
                    )
                }),
        };
        if let Some((sv, en)) = phrase {
            hits.push(base(vec!["leave".into(), from.to_string()]).phrase("problem", sv, en));
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use time::macros::{date, datetime};
    use vakt_proto::model::Report;

    use crate::people::Person;
    use crate::policy::EvaluationStatus::{self, Exempted, Failed};
    use crate::policy::testkit::*;
    use crate::policy::{Exemption, ExemptionSubject};

    const RULE: &str = r#"
        id = "equipment-return"
        kind = "equipment-return"
        section = "8.6"
        severity = "violation"
        devices = ["laptop", "phone"]
        message_sv = "{hostname} är fortfarande tilldelad {person_name}, men {problem}."
        message_en = "{hostname} is still assigned to {person_name}, but {problem}."
    "#;

    fn person(end: Option<time::Date>, from: Option<time::Date>, to: Option<time::Date>) -> Person {
        Person {
            end_date: end,
            leave_from: from,
            leave_to: to,
            ..anna()
        }
    }

    #[test]
    fn table() {
        let pack = pack_with(RULE);
        // NOW is 2025-06-11 12:00 UTC.
        type Case = (&'static str, Person, Vec<(&'static str, EvaluationStatus)>);
        let cases: Vec<Case> = vec![
            ("no dates pass", anna(), vec![]),
            (
                "end date in the future passes",
                person(Some(date!(2025 - 06 - 30)), None, None),
                vec![],
            ),
            (
                "the end date itself passes",
                person(Some(date!(2025 - 06 - 11)), None, None),
                vec![],
            ),
            (
                "the day after the end date fails",
                person(Some(date!(2025 - 06 - 10)), None, None),
                vec![("equipment-return/end", Failed)],
            ),
            (
                "a short leave passes",
                person(
                    None,
                    Some(date!(2025 - 01 - 01)),
                    Some(date!(2025 - 12 - 31)),
                ),
                vec![],
            ),
            (
                "a long leave not yet begun passes",
                person(
                    None,
                    Some(date!(2025 - 07 - 01)),
                    Some(date!(2027 - 01 - 01)),
                ),
                vec![],
            ),
            (
                "a long leave under way fails",
                person(
                    None,
                    Some(date!(2025 - 01 - 01)),
                    Some(date!(2026 - 01 - 01)),
                ),
                vec![("equipment-return/leave/2025-01-01", Failed)],
            ),
            (
                "a long leave that is over passes",
                person(
                    None,
                    Some(date!(2023 - 01 - 01)),
                    Some(date!(2025 - 01 - 01)),
                ),
                vec![],
            ),
            (
                "an open-ended leave under a year passes",
                person(None, Some(date!(2024 - 06 - 12)), None),
                vec![],
            ),
            (
                "an open-ended leave over a year fails",
                person(None, Some(date!(2024 - 06 - 01)), None),
                vec![("equipment-return/leave/2024-06-01", Failed)],
            ),
        ];
        for (name, p, want) in cases {
            let people = [p];
            let out = run_one(
                &pack,
                &laptop(),
                &Report::default(),
                &ctx(&people, &[], &[]),
            );
            assert_eq!(statuses(&out), want, "{name}");
        }
    }

    #[test]
    fn unassigned_or_unknown_people_are_not_judged() {
        let pack = pack_with(RULE);
        let people = [person(Some(date!(2020 - 01 - 01)), None, None)];
        let mut unassigned = laptop();
        unassigned.assigned_to = None;
        assert!(
            run_one(
                &pack,
                &unassigned,
                &Report::default(),
                &ctx(&people, &[], &[])
            )
            .evaluations
            .is_empty()
        );
        assert!(
            run_one(&pack, &laptop(), &Report::default(), &ctx(&[], &[], &[]))
                .evaluations
                .is_empty()
        );
    }

    #[test]
    fn a_managers_exception_exempts() {
        let pack = pack_with(RULE);
        let people = [person(Some(date!(2025 - 05 - 31)), None, None)];
        let ex = [Exemption {
            subject: ExemptionSubject::Person("Anna.Berg@sorsele.se".into()),
            until: None,
            from: datetime!(2025-05-01 00:00 UTC),
            ..exemption("equipment-return", None)
        }];
        let out = run_one(
            &pack,
            &laptop(),
            &Report::default(),
            &ctx(&people, &[], &ex),
        );
        assert_eq!(statuses(&out), [("equipment-return/end", Exempted)]);
        assert_eq!(
            out.evaluations[0].message_sv,
            "sorsele-lap-17 är fortfarande tilldelad Anna Berg, men anställningen eller uppdraget upphörde 2025-05-31."
        );
    }

    #[test]
    fn returning_the_device_resolves() {
        // Unassigning the device (the lead's `vakt device assign`) clears the condition.
        let pack = pack_with(RULE);
        let people = [person(Some(date!(2025 - 05 - 31)), None, None)];
        let c = ctx(&people, &[], &[]);
        let mut returned = laptop();
        returned.assigned_to = None;
        let report = Report::default();
        assert_resolves_between(&pack, (&laptop(), &report, &c), (&returned, &report, &c));
    }
}
