//! Pure helpers that turn admin API answers into what a page shows: times, ages, sizes, and
//! the device list's search. No I/O; `now_ms` is always passed in.

use super::i18n::Lang;
use crate::timefmt::{Age, rfc3339_ms};
use vakt_proto::pb;

/// A timestamp for people: `2026-11-28 08:46:20 UTC`; a dash for never.
pub fn when(ms: i64) -> String {
    let s = rfc3339_ms(ms);
    if s.is_empty() {
        return "–".into();
    }
    format!("{} UTC", s.trim_end_matches('Z').replacen('T', " ", 1))
}

/// How long ago `ms` was, in words: "för 3 min sedan" / "3 min ago".
pub fn ago(lang: Lang, now_ms: i64, ms: i64) -> String {
    if ms <= 0 {
        return lang.t("aldrig", "never").into();
    }
    let (n, sv, en) = match crate::timefmt::age(now_ms, ms) {
        Age::JustNow => return lang.t("nyss", "just now").into(),
        Age::Minutes(n) => (n, "min", "min"),
        Age::Hours(n) => (n, "tim", "h"),
        Age::Days(n) => (n, "dagar", "days"),
    };
    match lang {
        Lang::Sv => format!("för {n} {sv} sedan"),
        Lang::En => format!("{n} {en} ago"),
    }
}

/// How old a judgement from a device's last report is, for wipe readiness: "as of 2026-11-30
/// 14:02:00 UTC (3 days ago)", or that the device never reported (`reported_ms` 0). An admin
/// deciding to wipe a stolen laptop must see that the judgement may be days old.
pub fn as_of(lang: Lang, now_ms: i64, reported_ms: i64) -> String {
    if reported_ms <= 0 {
        return lang.t("aldrig rapporterat", "never reported").into();
    }
    format!(
        "{} {} ({})",
        lang.t("enligt rapporten", "as of"),
        when(reported_ms),
        ago(lang, now_ms, reported_ms)
    )
}

/// A byte count in binary units, with the language's decimal separator.
pub fn bytes(lang: Lang, n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} B");
    }
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    let s = format!("{v:.1} {}", UNITS[unit]);
    match lang {
        Lang::Sv => s.replacen('.', ",", 1),
        Lang::En => s,
    }
}

/// The device list's filter: free text over hostname, id, serial and model; a state name as
/// INTERFACE.md spells it; a person (part of the assigned e-mail address); and a rule the
/// device has an open finding of.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Deserialize)]
pub struct DeviceFilter {
    #[serde(default)]
    pub q: String,
    #[serde(default)]
    pub state: String,
    #[serde(default)]
    pub person: String,
    #[serde(default)]
    pub finding: String,
}

impl DeviceFilter {
    pub fn is_empty(&self) -> bool {
        self.q.trim().is_empty()
            && self.state.is_empty()
            && self.person.trim().is_empty()
            && self.finding.is_empty()
    }

    /// Whether `d` passes; `open_rules` are the rules it has open findings of.
    pub fn matches(&self, d: &pb::Device, open_rules: &[&str]) -> bool {
        let q = self.q.trim().to_lowercase();
        let person = self.person.trim().to_lowercase();
        let text_ok = q.is_empty()
            || [&d.hostname, &d.id, &d.serial, &d.model]
                .iter()
                .any(|f| f.to_lowercase().contains(&q));
        let state_ok =
            self.state.is_empty() || crate::api::device_state_name(d.state) == self.state;
        let person_ok = person.is_empty() || d.assigned_to.to_lowercase().contains(&person);
        let finding_ok = self.finding.is_empty() || open_rules.contains(&self.finding.as_str());
        text_ok && state_ok && person_ok && finding_ok
    }
}

/// The device states in the order the console lists them, with INTERFACE.md's names.
pub const DEVICE_STATES: [pb::DeviceState; 5] = [
    pb::DeviceState::Active,
    pb::DeviceState::Lost,
    pb::DeviceState::Locked,
    pb::DeviceState::Wiped,
    pb::DeviceState::Retired,
];

/// One option of a filter's `<select>`.
pub struct Choice {
    pub value: String,
    pub label: String,
    pub selected: bool,
}

/// Options from (value, label) pairs, with the one equal to `selected` marked.
pub fn choices<'a>(
    options: impl IntoIterator<Item = (&'a str, &'a str)>,
    selected: &str,
) -> Vec<Choice> {
    options
        .into_iter()
        .map(|(value, label)| Choice {
            value: value.to_string(),
            label: label.to_string(),
            selected: value == selected,
        })
        .collect()
}

/// A device as the lists show it.
pub struct DeviceRow {
    pub id: String,
    pub hostname: String,
    /// INTERFACE.md's state name, for the badge's style and links.
    pub state: &'static str,
    pub state_label: &'static str,
    pub assigned_to: String,
    pub last_seen: String,
    pub last_seen_ago: String,
    pub connected: bool,
    pub model: String,
    pub open_findings: usize,
    /// Other devices claiming the same machine id and serial.
    pub shares_hardware_with: Vec<String>,
}

impl DeviceRow {
    pub fn new(lang: Lang, now_ms: i64, d: &pb::Device, open_findings: usize) -> Self {
        Self {
            id: d.id.clone(),
            hostname: d.hostname.clone(),
            state: crate::api::device_state_name(d.state),
            state_label: lang.device_state(d.state),
            assigned_to: d.assigned_to.clone(),
            last_seen: when(d.last_seen_ms),
            last_seen_ago: ago(lang, now_ms, d.last_seen_ms),
            connected: d.connected,
            model: d.model.clone(),
            shares_hardware_with: d.shares_hardware_with.clone(),
            open_findings,
        }
    }
}

/// A queued or finished command as the tables show it.
pub struct CommandRow {
    pub id: String,
    pub device_id: String,
    pub hostname: String,
    pub kind: &'static str,
    /// INTERFACE.md's state name, for the badge's style.
    pub state: &'static str,
    pub state_label: &'static str,
    pub requested_by: String,
    pub approved_by: String,
    pub reason: String,
    pub created: String,
    pub updated: String,
    pub expires: String,
    pub detail: String,
}

impl CommandRow {
    pub fn new(lang: Lang, c: &pb::CommandInfo, hostname: &str) -> Self {
        Self {
            id: c.id.clone(),
            device_id: c.device_id.clone(),
            hostname: if hostname.is_empty() {
                c.device_id.clone()
            } else {
                hostname.to_string()
            },
            kind: lang.command_kind(c.kind),
            state: crate::commands::state_name(c.state),
            state_label: lang.command_state(c.state),
            requested_by: c.requested_by.clone(),
            approved_by: c.approved_by.clone(),
            reason: c.reason.clone(),
            created: when(c.created_ms),
            updated: when(c.updated_ms),
            expires: when(c.expires_ms),
            detail: c.detail.clone(),
        }
    }
}

/// A path a form may send the browser back to: local to this site only. It must start with a
/// single `/` followed by anything but `/` or `\\`, and hold no control character or
/// whitespace anywhere, also once percent-decoded: browsers drop tabs and newlines from a
/// `Location` before they parse it, so `/\t/evil.example` would be `//evil.example`, off-site.
pub fn local_path(p: &str) -> Option<&str> {
    let safe = |s: &[u8]| {
        s.first() == Some(&b'/')
            && !matches!(s.get(1), Some(b'/' | b'\\'))
            && !s
                .iter()
                .any(|b| b.is_ascii_control() || b.is_ascii_whitespace())
    };
    // Bytes outside ASCII are left to the browser's own percent-encoding; only ASCII can
    // turn a path into an authority.
    (safe(p.as_bytes()) && safe(&percent_decoded(p))).then_some(p)
}

/// `%XX` sequences decoded once (an invalid one stays as it is).
fn percent_decoded(s: &str) -> Vec<u8> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match (
            b[i],
            b.get(i + 1).copied().and_then(hex),
            b.get(i + 2).copied().and_then(hex),
        ) {
            (b'%', Some(h), Some(l)) => {
                // Two hex digits make at most 0xff.
                out.push(u8::try_from(h * 16 + l).unwrap_or(u8::MAX));
                i += 3;
            }
            (c, _, _) => {
                out.push(c);
                i += 1;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_read_as_utc_and_never_is_a_dash() {
        assert_eq!(when(0), "–");
        assert_eq!(when(1_700_000_000_000), "2023-11-14 22:13:20 UTC");
    }

    #[test]
    fn readiness_says_as_of_when_in_both_languages() {
        let now = 1_764_600_000_000;
        let then = now - 3 * 86_400_000;
        assert_eq!(
            as_of(Lang::En, now, then),
            format!("as of {} (3 days ago)", when(then))
        );
        assert_eq!(
            as_of(Lang::Sv, now, then),
            format!("enligt rapporten {} (för 3 dagar sedan)", when(then))
        );
        assert_eq!(as_of(Lang::En, now, 0), "never reported");
        assert_eq!(as_of(Lang::Sv, now, 0), "aldrig rapporterat");
    }

    #[test]
    fn ages_in_both_languages() {
        let now = 1_700_000_000_000;
        assert_eq!(ago(Lang::Sv, now, 0), "aldrig");
        assert_eq!(ago(Lang::En, now, now - 5_000), "just now");
        assert_eq!(ago(Lang::Sv, now, now - 180_000), "för 3 min sedan");
        assert_eq!(ago(Lang::En, now, now - 5 * 3_600_000), "5 h ago");
        assert_eq!(
            ago(Lang::Sv, now, now - 3 * 86_400_000),
            "för 3 dagar sedan"
        );
    }

    #[test]
    fn sizes_use_the_languages_decimal_separator() {
        assert_eq!(bytes(Lang::Sv, 512), "512 B");
        assert_eq!(bytes(Lang::Sv, 1_048_576 + 104_858), "1,1 MiB");
        assert_eq!(bytes(Lang::En, 1_048_576 + 104_858), "1.1 MiB");
        assert_eq!(bytes(Lang::En, u64::MAX), "16777216.0 TiB");
    }

    #[test]
    fn device_filter_matches_text_state_and_person() {
        let d = pb::Device {
            id: "dev-01".into(),
            hostname: "Lap-Anna".into(),
            state: pb::DeviceState::Lost as i32,
            assigned_to: "anna.berg@sorsele.se".into(),
            serial: "PF3XYZ".into(),
            ..Default::default()
        };
        let f = |q: &str, state: &str, person: &str| DeviceFilter {
            q: q.into(),
            state: state.into(),
            person: person.into(),
            finding: String::new(),
        };
        let none: &[&str] = &[];
        assert!(f("", "", "").matches(&d, none));
        assert!(f("lap-a", "", "").matches(&d, none));
        assert!(f("pf3x", "lost", "").matches(&d, none));
        assert!(f("", "", "ANNA").matches(&d, none));
        assert!(!f("", "active", "").matches(&d, none));
        assert!(!f("", "", "bo.ek").matches(&d, none));
        assert!(!f("other", "", "").matches(&d, none));
        let by_rule = DeviceFilter {
            finding: "no-forward".into(),
            ..Default::default()
        };
        assert!(by_rule.matches(&d, &["unlisted-software", "no-forward"]));
        assert!(!by_rule.matches(&d, &["unlisted-software"]));
    }

    #[test]
    fn only_local_paths_are_followed() {
        assert_eq!(local_path("/devices?q=a"), Some("/devices?q=a"));
        assert_eq!(local_path("//evil.example/"), None);
        assert_eq!(local_path("/\\evil.example/"), None);
        assert_eq!(local_path("https://evil.example/"), None);
        assert_eq!(local_path("/x\r\nSet-Cookie: a=b"), None);
        // Browsers strip tabs and newlines before parsing a Location: `/\t/x` is `//x`.
        for bad in [
            "/\t/evil.example",
            "/%09/evil.example",
            "/%0a/evil.example",
            "/%2F/evil.example",
            "/%5Cevil.example",
            "/%5c/evil.example",
            "/ /evil.example",
            "/a b",
            "/x%00",
            "\\/evil.example",
            "",
            "devices",
        ] {
            assert_eq!(local_path(bad), None, "{bad:?}");
        }
        assert_eq!(local_path("/devices/dev-1%2Fx"), Some("/devices/dev-1%2Fx"));
        assert_eq!(local_path("/"), Some("/"));
    }
}
