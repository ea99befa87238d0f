//! The mail that tells a manager about a new violation (Sorsele 8.5: "Otillåten användning av
//! teknisk utrustning rapporteras till den berörda medarbetarens närmsta chef"). Swedish first,
//! English below, so it reads right in the organisation's language and still works for anyone.
//!
//! Only the text is built here; whom to send it to (the person's `manager_email`, or IT when
//! none is on record) and the sending itself are the server's.

use super::{Device, Finding, Pack, rfc3339, template};
use crate::people::Person;

/// A mail's subject and plain-text body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MailText {
    pub subject: String,
    pub body: String,
}

/// Build the notification for `finding` on `device`, assigned to `person` (if known).
pub fn violation_mail(
    pack: &Pack,
    finding: &Finding,
    device: &Device,
    person: Option<&Person>,
) -> MailText {
    let (title_sv, title_en) = match pack.rule(&finding.rule) {
        Some(rule) => rule.titles(),
        None => finding.kind.title(),
    };
    let (action_sv, action_en) = finding.kind.action();
    let fill = |t: &str| {
        template::render(t, |name| match name {
            "organisation" => Some(pack.organisation.as_str()),
            _ => None,
        })
    };
    let who_sv;
    let who_en;
    match person {
        Some(p) => {
            who_sv = format!("{} ({})", p.name, p.email);
            who_en = who_sv.clone();
        }
        None => match device.assigned_to.as_deref() {
            Some(email) => {
                who_sv = email.to_string();
                who_en = email.to_string();
            }
            None => {
                who_sv = "ingen (enheten är inte tilldelad någon)".into();
                who_en = "nobody (the device is not assigned)".into();
            }
        },
    }
    let name = person
        .map(|p| p.name.as_str())
        .or(device.assigned_to.as_deref())
        .unwrap_or(device.hostname.as_str());
    let subject = format!(
        "Policyöverträdelse / Policy violation: {title_sv} – {name} ({})",
        device.hostname
    );
    let evidence: String = finding
        .evidence
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, v)| format!("  {k}: {v}\n"))
        .collect();
    let seen = rfc3339(finding.first_seen);
    let doc = format!("{} ({})", pack.document, pack.reference);
    let body = format!(
        "\
Hej,

Vakt har upptäckt en överträdelse av {org}s {doc}, avsnitt {section}, på utrustning som är \
tilldelad en medarbetare där du står som närmaste chef. Enligt avsnitt 8.5 rapporteras \
otillåten användning av teknisk utrustning till medarbetarens närmaste chef.

Medarbetare: {who_sv}
Enhet:       {host} (id {id})
Regel:       {title_sv} ({rule})
Avsnitt:     {section}
Upptäckt:    {seen}

{message_sv}

Underlag:
{evidence}
Vad du behöver göra:
{action_sv}

Frågor om meddelandet besvaras av IT-enheten. Meddelandet skickas en gång per överträdelse.

-- English --

Hello,

Vakt has found a breach of {org}'s {doc}, section {section}, on equipment assigned to an \
employee who has you as their closest manager. Under section 8.5, misuse of technical \
equipment is reported to the employee's closest manager.

Employee: {who_en}
Device:   {host} (id {id})
Rule:     {title_en} ({rule})
Section:  {section}
Found:    {seen}

{message_en}

Evidence:
{evidence}
What to do:
{action_en}

IT answers questions about this message. It is sent once per violation.
",
        org = pack.organisation,
        section = finding.section,
        host = device.hostname,
        id = device.id,
        rule = finding.rule,
        message_sv = finding.message_sv,
        message_en = finding.message_en,
        action_sv = fill(action_sv),
        action_en = fill(action_en),
    );
    MailText { subject, body }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::testkit::*;
    use crate::policy::{FindingStatus, RuleKind, Severity};

    fn finding() -> Finding {
        Finding {
            id: "f1".into(),
            device: "dev-1".into(),
            rule: "mail-forward-external".into(),
            key: "mail-forward-external/thunderbird/anna/anna@gmail.com".into(),
            kind: RuleKind::MailAutoForwardExternal,
            section: "9".into(),
            severity: Severity::Violation,
            status: FindingStatus::Open,
            evidence: [
                ("target".to_string(), "anna@gmail.com".to_string()),
                ("path".to_string(), String::new()),
            ]
            .into(),
            message_sv: "E-post vidarebefordras till anna@gmail.com.".into(),
            message_en: "Mail is forwarded to anna@gmail.com.".into(),
            first_seen: NOW,
            last_seen: NOW,
            resolved_at: None,
            violation_since: Some(NOW),
        }
    }

    #[test]
    fn names_person_device_rule_section_document_evidence_and_action() {
        let pack = crate::policy::default_pack();
        let mail = violation_mail(&pack, &finding(), &laptop(), Some(&anna()));
        assert_eq!(
            mail.subject,
            "Policyöverträdelse / Policy violation: Automatisk vidarebefordran av e-post till \
             extern adress – Anna Berg (sorsele-lap-17)"
        );
        let body = &mail.body;
        for needle in [
            "Medarbetare: Anna Berg (anna.berg@sorsele.se)",
            "Enhet:       sorsele-lap-17 (id dev-1)",
            "Avsnitt:     9",
            "Upptäckt:    2025-06-11T12:00:00Z",
            "Sorsele kommuns Policy för telefoni, mobilteknisk utrustning samt e-postanvändning (Dnr 2017/393)",
            "E-post vidarebefordras till anna@gmail.com.",
            "  target: anna@gmail.com\n",
            "Be medarbetaren ta bort regeln",
            "Employee: Anna Berg (anna.berg@sorsele.se)",
            "Mail is forwarded to anna@gmail.com.",
            "Ask the employee to remove the rule",
        ] {
            assert!(body.contains(needle), "missing {needle:?} in\n{body}");
        }
        assert!(!body.contains("path:"), "empty evidence is left out");
        let sv = body.find("Hej,").unwrap();
        let en = body.find("Hello,").unwrap();
        assert!(sv < en, "Swedish first, English below");
    }

    #[test]
    fn works_without_a_known_person() {
        let pack = crate::policy::default_pack();
        let mut device = laptop();
        device.assigned_to = None;
        let mail = violation_mail(&pack, &finding(), &device, None);
        assert!(mail.subject.ends_with("– sorsele-lap-17 (sorsele-lap-17)"));
        assert!(
            mail.body
                .contains("Medarbetare: ingen (enheten är inte tilldelad någon)")
        );
    }

    #[test]
    fn actions_use_only_common_placeholders() {
        for kind in RuleKind::ALL {
            let (sv, en) = kind.action();
            for t in [sv, en] {
                for piece in template::parse(t).unwrap() {
                    if let template::Piece::Field(name, _) = piece {
                        assert_eq!(name, "organisation", "{kind:?}");
                    }
                }
            }
        }
    }
}
