//! The loss procedure of policy section 8.1 as data: the case's four-step checklist and the
//! incident report for the risk and security group (Swedish, Markdown and HTML), which says
//! whether the disk was encrypted from the wipe readiness the case view carries. Pure: the
//! admin API stores cases, computes the readiness and queues the commands.

use crate::commands::{kind_name, state_name};
use crate::timefmt::rfc3339_ms;
use std::fmt::Write;
use vakt_proto::pb;

/// A new, time-ordered case id.
pub fn new_id(now_ms: i64) -> String {
    format!(
        "loss-{:012x}{}",
        now_ms.max(0),
        crate::token::hex(&crate::token::random_bytes::<3>())
    )
}

/// One step of the checklist: done or not, and what was recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub number: u8,
    pub title_sv: &'static str,
    pub title_en: &'static str,
    pub done: bool,
    pub note: String,
}

/// The four steps of section 8.1, in the policy's order.
pub fn checklist(c: &pb::LossCase) -> Vec<Step> {
    let police_note = if !c.police_report.is_empty() {
        format!("polisanmälan {}", c.police_report)
    } else if !c.no_police_report_reason.is_empty() {
        format!("ingen polisanmälan: {}", c.no_police_report_reason)
    } else {
        String::new()
    };
    vec![
        Step {
            number: 1,
            title_sv: "IT spärrar SIM-kortet och beställer ett nytt",
            title_en: "IT blocks the SIM and orders a new one",
            done: c.sim_blocked_ms > 0,
            note: when_by(c.sim_blocked_ms, &c.sim_blocked_by),
        },
        Step {
            number: 2,
            title_sv: "Polisanmälan (om inte missbruk kan uteslutas)",
            title_en: "Police report (unless misuse can be ruled out)",
            done: !police_note.is_empty(),
            note: police_note,
        },
        Step {
            number: 3,
            title_sv: "Incidentrapport med polisanmälan till risk- och säkerhetsgruppen",
            title_en: "Incident report with the police report to the risk and security group",
            done: c.incident_report_sent_ms > 0,
            note: when_by(c.incident_report_sent_ms, ""),
        },
        Step {
            number: 4,
            title_sv: "Närmaste chef informeras och beställer ersättning",
            title_en: "The manager is told and orders a replacement",
            done: c.manager_informed_ms > 0,
            note: if c.manager_informed_ms > 0 {
                when_by(c.manager_informed_ms, &c.manager)
            } else if !c.manager.is_empty() {
                format!("chef: {}", c.manager)
            } else {
                String::new()
            },
        },
    ]
}

fn when_by(ms: i64, by: &str) -> String {
    match (ms > 0, by.is_empty()) {
        (false, _) => String::new(),
        (true, true) => rfc3339_ms(ms),
        (true, false) => format!("{} ({by})", rfc3339_ms(ms)),
    }
}

fn or_dash(s: &str) -> &str {
    if s.is_empty() { "–" } else { s }
}

/// The case's facts as (label, value) rows, for both renderings of the report.
fn summary_rows(c: &pb::LossCase) -> [(&'static str, String); 10] {
    [
        ("Ärende", c.id.clone()),
        (
            "Status",
            if c.open {
                "öppet".into()
            } else {
                format!("avslutat {}", rfc3339_ms(c.closed_ms))
            },
        ),
        (
            "Enhet",
            format!("{} ({})", or_dash(&c.hostname), c.device_id),
        ),
        ("Modell", or_dash(&c.model).to_string()),
        ("Serienummer", or_dash(&c.serial).to_string()),
        ("Tilldelad", or_dash(&c.assigned_to).to_string()),
        ("Förlusten anmäld av", or_dash(&c.reported_by).to_string()),
        (
            "Ärendet öppnat",
            format!("{} av {}", rfc3339_ms(c.opened_ms), or_dash(&c.opened_by)),
        ),
        (
            "Senaste kontakt med servern",
            or_dash(&rfc3339_ms(c.last_seen_ms)).to_string(),
        ),
        ("Polisanmälan", or_dash(&c.police_report).to_string()),
    ]
}

/// Whether the laptop's disk was encrypted, for the data-protection officer: the wipe
/// readiness as known when the report is made (the case view computes it), in Swedish.
struct Encryption {
    /// What a wipe would achieve, said as what it means for the data.
    verdict: &'static str,
    /// The device's last report, which the judgement rests on.
    reported: String,
    /// What stays readable (partial) or why it cannot be judged (unknown), with its heading.
    lines: Option<(&'static str, Vec<String>)>,
}

fn encryption(c: &pb::LossCase) -> Encryption {
    let unknown = pb::WipeReadiness {
        state: "unknown".into(),
        ..pb::WipeReadiness::default()
    };
    let w = c.wipe_readiness.as_ref().unwrap_or(&unknown);
    let verdict = match w.state.as_str() {
        "crypto-erase" => {
            "krypterad: all användardata (/, /home, /var, /srv) och swap är krypterad, och en \
             radering av LUKS-nyckelplatserna gör den oläslig"
        }
        "partial" => "delvis krypterad: en radering lämnar användardata läsbar",
        "files-only" => {
            "inte bedömd: agentens raderingsstrategi tar bara bort filer, vars innehåll kan \
             återskapas"
        }
        _ => "okänd: krypteringen kan inte bedömas",
    };
    let lines = crate::readiness::readable_lines_sv(w);
    let lines = (!lines.is_empty()).then(|| {
        let heading = if w.state == "partial" {
            "Förblir läsbart efter en radering"
        } else {
            "Varför"
        };
        (heading, lines)
    });
    Encryption {
        verdict,
        reported: if w.reported_ms > 0 {
            rfc3339_ms(w.reported_ms)
        } else {
            "ingen rapport".into()
        },
        lines,
    }
}

/// The heading and the note under it, for both renderings.
const ENCRYPTION_HEADING: &str = "Kryptering (avsnitt 8.1)";
const ENCRYPTION_NOTE: &str =
    "Bedömd när rapporten skapades, utifrån lagringsuppgifterna i enhetens senaste rapport.";

/// The incident report in Markdown (Swedish), for the risk and security group.
pub fn incident_markdown(c: &pb::LossCase, commands: &[pb::CommandInfo]) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# Incidentrapport: förlorad utrustning\n");
    let _ = writeln!(
        m,
        "Enligt *Policy för telefoni, mobila enheter och e-post*, avsnitt 8.1.\n"
    );
    let rows = summary_rows(c);
    for (k, v) in rows {
        let _ = writeln!(m, "- **{k}:** {}", escape_md(&v));
    }
    let _ = writeln!(m, "\n## Åtgärder enligt avsnitt 8.1\n");
    for s in checklist(c) {
        let _ = writeln!(
            m,
            "{}. [{}] {}{}",
            s.number,
            if s.done { "x" } else { " " },
            s.title_sv,
            if s.note.is_empty() {
                String::new()
            } else {
                format!(" — {}", escape_md(&s.note))
            }
        );
    }
    let e = encryption(c);
    let _ = writeln!(m, "\n## {ENCRYPTION_HEADING}\n\n{ENCRYPTION_NOTE}\n");
    let _ = writeln!(m, "- **Disken:** {}", e.verdict);
    let _ = writeln!(m, "- **Enhetens senaste rapport:** {}", e.reported);
    if let Some((heading, lines)) = &e.lines {
        let _ = writeln!(m, "- **{heading}:**");
        for l in lines {
            let _ = writeln!(m, "  - {}", escape_md(l));
        }
    }
    let _ = writeln!(m, "\n## Fjärråtgärder\n");
    if commands.is_empty() {
        let _ = writeln!(m, "Inga.");
    }
    for cmd in commands {
        let _ = writeln!(
            m,
            "- {} `{}`: {} (begärd {} av {}{}){}",
            kind_sv(cmd.kind),
            cmd.id,
            state_sv(cmd.state),
            rfc3339_ms(cmd.created_ms),
            escape_md(&cmd.requested_by),
            if cmd.approved_by.is_empty() {
                String::new()
            } else {
                format!(", godkänd av {}", escape_md(&cmd.approved_by))
            },
            if cmd.detail.is_empty() {
                String::new()
            } else {
                format!(" — {}", escape_md(&cmd.detail))
            }
        );
    }
    if !c.notes.is_empty() {
        let _ = writeln!(m, "\n## Anteckningar\n\n{}", escape_md(&c.notes));
    }
    m
}

/// The same report as a standalone HTML page.
pub fn incident_html(c: &pb::LossCase, commands: &[pb::CommandInfo]) -> String {
    let mut h = String::new();
    let _ = write!(
        h,
        "<!doctype html>\n<html lang=\"sv\"><head><meta charset=\"utf-8\"><title>Incidentrapport {}</title></head><body>\n<h1>Incidentrapport: förlorad utrustning</h1>\n<p>Enligt <em>Policy för telefoni, mobila enheter och e-post</em>, avsnitt 8.1.</p>\n<dl>\n",
        esc(&c.id)
    );
    let rows = summary_rows(c);
    for (k, v) in rows {
        let _ = writeln!(h, "<dt>{}</dt><dd>{}</dd>", esc(k), esc(&v));
    }
    let _ = writeln!(h, "</dl>\n<h2>Åtgärder enligt avsnitt 8.1</h2>\n<ol>");
    for s in checklist(c) {
        let _ = writeln!(
            h,
            "<li>{} {}{}</li>",
            if s.done { "☑" } else { "☐" },
            esc(s.title_sv),
            if s.note.is_empty() {
                String::new()
            } else {
                format!(" — {}", esc(&s.note))
            }
        );
    }
    let e = encryption(c);
    let _ = writeln!(
        h,
        "</ol>\n<h2>{ENCRYPTION_HEADING}</h2>\n<p>{ENCRYPTION_NOTE}</p>\n<dl>\n<dt>Disken</dt><dd>{}</dd>\n<dt>Enhetens senaste rapport</dt><dd>{}</dd>",
        esc(e.verdict),
        esc(&e.reported)
    );
    if let Some((heading, lines)) = &e.lines {
        let _ = write!(h, "<dt>{}</dt><dd><ul>", esc(heading));
        for l in lines {
            let _ = write!(h, "<li>{}</li>", esc(l));
        }
        let _ = writeln!(h, "</ul></dd>");
    }
    let _ = writeln!(h, "</dl>\n<h2>Fjärråtgärder</h2>\n<ul>");
    for cmd in commands {
        let _ = writeln!(
            h,
            "<li>{} <code>{}</code>: {} (begärd {} av {})</li>",
            esc(kind_sv(cmd.kind)),
            esc(&cmd.id),
            esc(state_sv(cmd.state)),
            esc(&rfc3339_ms(cmd.created_ms)),
            esc(&cmd.requested_by)
        );
    }
    let _ = writeln!(h, "</ul>");
    if !c.notes.is_empty() {
        let _ = writeln!(h, "<h2>Anteckningar</h2>\n<p>{}</p>", esc(&c.notes));
    }
    h.push_str("</body></html>\n");
    h
}

fn kind_sv(kind: i32) -> &'static str {
    match kind_name(kind) {
        "lock" => "Låsning",
        "unlock" => "Upplåsning",
        "wipe" => "Radering",
        _ => "Okänd åtgärd",
    }
}

fn state_sv(state: i32) -> &'static str {
    match state_name(state) {
        "awaiting-approval" => "väntar på godkännande",
        "pending" => "väntar på enheten",
        "delivered" => "levererad",
        "succeeded" => "utförd",
        "failed" => "misslyckades",
        "refused" => "vägrad av enheten",
        "expired" => "förfallen",
        _ => "okänd",
    }
}

/// Escapes text for HTML element content and attribute values.
pub fn esc(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        match ch {
            '&' => o.push_str("&amp;"),
            '<' => o.push_str("&lt;"),
            '>' => o.push_str("&gt;"),
            '"' => o.push_str("&quot;"),
            '\'' => o.push_str("&#39;"),
            c => o.push(c),
        }
    }
    o
}

/// Keeps user text from turning into Markdown structure.
fn escape_md(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for ch in s.chars() {
        if matches!(
            ch,
            '\\' | '`' | '*' | '_' | '[' | ']' | '<' | '>' | '#' | '|'
        ) {
            o.push('\\');
        }
        o.push(if ch == '\n' { ' ' } else { ch });
    }
    o
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case() -> pb::LossCase {
        pb::LossCase {
            id: "loss-1".into(),
            device_id: "dev-1".into(),
            open: true,
            opened_ms: 1_700_000_000_000,
            reported_by: "anna@sorsele.se".into(),
            hostname: "lap-<17>".into(),
            ..Default::default()
        }
    }

    #[test]
    fn checklist_follows_what_was_recorded() {
        let mut c = case();
        assert!(checklist(&c).iter().all(|s| !s.done));
        c.sim_blocked_ms = 1_700_000_100_000;
        c.no_police_report_reason = "lämnad på kontoret, ingen risk för missbruk".into();
        let steps = checklist(&c);
        assert!(steps[0].done && steps[1].done && !steps[2].done && !steps[3].done);
        assert!(steps[1].note.starts_with("ingen polisanmälan"));
    }

    #[test]
    fn reports_are_swedish_and_escaped() {
        let c = case();
        let md = incident_markdown(&c, &[]);
        assert!(md.contains("# Incidentrapport"));
        assert!(md.contains("lap-\\<17\\>"), "{md}");
        assert!(md.contains("1. [ ] IT spärrar SIM-kortet"));
        let html = incident_html(&c, &[]);
        assert!(html.contains("<html lang=\"sv\">"));
        assert!(html.contains("lap-&lt;17&gt;"));
        assert!(!html.contains("lap-<17>"));
    }

    #[test]
    fn reports_say_whether_the_disk_was_encrypted_and_as_of_when() {
        use crate::readiness::{Readiness, Unknown};
        use vakt_proto::model::{Readable, ReadableWhy};
        let with = |r: Readiness, reported_ms: i64| pb::LossCase {
            wipe_readiness: Some(r.to_pb(reported_ms)),
            ..case()
        };
        let at = 1_700_000_500_000;
        let when = rfc3339_ms(at);

        let home = Readable {
            what: "/home".into(),
            device: "/dev/mapper/vg_home".into(),
            why: ReadableWhy::NotEncrypted,
        };
        let partial = with(Readiness::Partial(vec![home]), at);
        let md = incident_markdown(&partial, &[]);
        assert!(md.contains("## Kryptering (avsnitt 8.1)"), "{md}");
        assert!(md.contains("- **Disken:** delvis krypterad"), "{md}");
        assert!(
            md.contains("- **Förblir läsbart efter en radering:**\n  - /home (/dev/mapper/vg\\_home): inte krypterad"),
            "{md}"
        );
        assert!(
            md.contains(&format!("- **Enhetens senaste rapport:** {when}")),
            "{md}"
        );
        let html = incident_html(&partial, &[]);
        assert!(html.contains("<h2>Kryptering (avsnitt 8.1)</h2>"), "{html}");
        assert!(
            html.contains("<li>/home (/dev/mapper/vg_home): inte krypterad</li>"),
            "{html}"
        );
        assert!(html.contains(&format!("<dd>{when}</dd>")), "{html}");

        let md = incident_markdown(&with(Readiness::CryptoErase, at), &[]);
        assert!(
            md.contains("- **Disken:** krypterad: all användardata"),
            "{md}"
        );
        assert!(!md.contains("Förblir läsbart"), "{md}");

        let md = incident_markdown(&with(Readiness::Unknown(Unknown::NoStorageSection), 0), &[]);
        assert!(md.contains("- **Disken:** okänd"), "{md}");
        assert!(
            md.contains("- **Varför:**\n  - ingen lagringsrapport ännu"),
            "{md}"
        );
        assert!(
            md.contains("- **Enhetens senaste rapport:** ingen rapport"),
            "{md}"
        );
        // A case read without its readiness says it is unknown, never that all is well.
        let md = incident_markdown(&case(), &[]);
        assert!(md.contains("- **Disken:** okänd"), "{md}");
    }
}
