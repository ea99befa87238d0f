//! `checkin-overdue`: a device that has not reported for more than `days` days (required,
//! from 1). Not a sentence of the Sorsele policy but what makes the others enforceable: a
//! laptop that never reports is never judged, and may be lost (8.1).
//!
//! Measured from the last report, or from enrollment for a device that never reported. Lost
//! and wiped devices are not judged: the loss procedure already follows them, and a wiped
//! device is expected to be silent.
//!
//! Key: the rule id alone (one condition per device).

use serde::{Deserialize, Serialize};
use time::Duration;

use super::{Hit, Input};
use crate::policy::spanned::{Diags, Fields};
use crate::policy::{DeviceStatus, rfc3339};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub days: u32,
}

pub(super) const KEYS: &[&str] = &["days"];

pub(super) const PLACEHOLDERS: &[&str] = &["last_seen", "last_seen_date", "days_silent", "days"];

pub(super) fn parse(f: &mut Fields<'_, '_>, d: &mut Diags) -> Option<Params> {
    let days = f.count("days", true, d, 1)?.into_inner();
    Some(Params { days })
}

pub(super) fn evaluate(p: &Params, input: &Input<'_>) -> Vec<Hit> {
    let device = input.device;
    if matches!(device.status, DeviceStatus::Lost | DeviceStatus::Wiped) {
        return Vec::new();
    }
    let since = device.last_seen.unwrap_or(device.enrolled_at);
    let silent = input.now - since;
    if silent <= Duration::days(i64::from(p.days)) {
        return Vec::new();
    }
    let last_seen = device
        .last_seen
        .map(rfc3339)
        .unwrap_or_else(|| "never".into());
    vec![
        Hit::new(Vec::<String>::new())
            .with("last_seen", last_seen)
            .with("last_seen_date", since.date())
            .with("days_silent", silent.whole_days())
            .with("days", p.days),
    ]
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;
    use vakt_proto::model::Report;

    use crate::policy::EvaluationStatus::{self, Exempted, Failed};
    use crate::policy::testkit::*;
    use crate::policy::{Device, DeviceStatus};

    const RULE: &str = r#"
        id = "checkin"
        kind = "checkin-overdue"
        section = "8.1"
        severity = "warning"
        devices = ["laptop"]
        message_sv = "{hostname} har inte rapporterat sedan {last_seen_date} ({days_silent} dagar)."
        message_en = "{hostname} has not reported since {last_seen_date} ({days_silent} days)."
        params = { days = 14 }
    "#;

    fn seen(at: Option<time::OffsetDateTime>, status: DeviceStatus) -> Device {
        Device {
            last_seen: at,
            status,
            ..laptop()
        }
    }

    #[test]
    fn table() {
        let pack = pack_with(RULE);
        use DeviceStatus::*;
        type Case = (&'static str, Device, Vec<(&'static str, EvaluationStatus)>);
        let cases: Vec<Case> = vec![
            ("seen today passes", seen(Some(NOW), Active), vec![]),
            (
                "exactly 14 days passes",
                seen(Some(datetime!(2025-05-28 12:00 UTC)), Active),
                vec![],
            ),
            (
                "over 14 days fails",
                seen(Some(datetime!(2025-05-28 11:59 UTC)), Active),
                vec![("checkin", Failed)],
            ),
            (
                "locked devices are judged",
                seen(Some(datetime!(2025-05-01 00:00 UTC)), Locked),
                vec![("checkin", Failed)],
            ),
            (
                "lost devices are not",
                seen(Some(datetime!(2025-05-01 00:00 UTC)), Lost),
                vec![],
            ),
            (
                "never reported since enrollment fails",
                seen(None, Active),
                vec![("checkin", Failed)],
            ),
        ];
        for (name, device, want) in cases {
            let out = run_one(&pack, &device, &Report::default(), &ctx(&[], &[], &[]));
            assert_eq!(statuses(&out), want, "{name}");
        }
    }

    #[test]
    fn message_exemption_and_resolution() {
        let pack = pack_with(RULE);
        let quiet = seen(Some(datetime!(2025-05-01 08:00 UTC)), DeviceStatus::Active);
        let out = run_one(&pack, &quiet, &Report::default(), &ctx(&[], &[], &[]));
        assert_eq!(
            out.evaluations[0].message_sv,
            "sorsele-lap-17 har inte rapporterat sedan 2025-05-01 (41 dagar)."
        );
        assert_eq!(
            out.evaluations[0].evidence["last_seen"],
            "2025-05-01T08:00:00Z"
        );
        let ex = [exemption("checkin-overdue", None)];
        assert_eq!(
            run_one(&pack, &quiet, &Report::default(), &ctx(&[], &[], &ex)).evaluations[0].status,
            Exempted
        );

        let back = seen(Some(NOW), DeviceStatus::Active);
        let c = ctx(&[], &[], &[]);
        let report = Report::default();
        assert_resolves_between(&pack, (&quiet, &report, &c), (&back, &report, &c));
    }
}
