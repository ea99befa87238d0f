//! `mail-signature` (Sorsele 9: "Vid extern korrespondens ska det alltid tydligt framgå att ett
//! e-postmeddelande kommer från Sorsele kommun. All e-post bör avslutas med en brevfot med
//! avsändaruppgifter."): a mail identity in the organisation's domains whose signature is
//! missing or does not name the organisation.
//!
//! The signature is compared as text a reader sees: HTML tags are dropped, common entities
//! decoded, whitespace and line breaks collapsed, letter case ignored, so
//! `<b>Sorsele</b>&nbsp;kommun` and "SORSELE\nKOMMUN" both name "Sorsele kommun".
//!
//! Parameter: `must_contain`, names of which the signature must contain one (default: the
//! pack's `organisation`). Identities outside the organisation's domains are not judged.
//!
//! Key: the rule id, client, user and address.

use serde::{Deserialize, Serialize};

use super::{Hit, Input, mail_domain};
use crate::policy::spanned::{Diags, Fields};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    /// Empty: the pack's organisation name.
    #[serde(default)]
    pub must_contain: Vec<String>,
}

pub(super) const KEYS: &[&str] = &["must_contain"];

pub(super) const PLACEHOLDERS: &[&str] = &["client", "user", "address", "expected", "problem"];

pub(super) fn parse(f: &mut Fields<'_, '_>, d: &mut Diags) -> Option<Params> {
    let mut must_contain = Vec::new();
    let mut ok = true;
    if let Some(list) = f.strings("must_contain", false, d) {
        for item in list.into_inner() {
            if normalize(item.get_ref()).is_empty() {
                ok = false;
                d.push(
                    item.span(),
                    "an empty name in `must_contain` would match anything",
                );
            } else {
                must_contain.push(item.into_inner());
            }
        }
    }
    ok.then_some(Params { must_contain })
}

/// A signature as its reader sees it: no tags, entities decoded, one space between words,
/// lower-case.
pub(crate) fn normalize(text: &str) -> String {
    let mut plain = String::with_capacity(text.len());
    let mut in_tag = false;
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            // A tag starts with a letter, `/` or `!`; any other `<` is text ("a < b").
            '<' if !in_tag
                && chars
                    .peek()
                    .is_some_and(|n| n.is_ascii_alphabetic() || *n == '/' || *n == '!') =>
            {
                in_tag = true
            }
            '>' if in_tag => {
                in_tag = false;
                plain.push(' ');
            }
            c if !in_tag => plain.push(c),
            _ => {}
        }
    }
    let plain = plain
        .replace("&nbsp;", " ")
        .replace("&#160;", " ")
        .replace("&amp;", "&")
        .replace("&aring;", "å")
        .replace("&auml;", "ä")
        .replace("&ouml;", "ö")
        .replace("&Aring;", "Å")
        .replace("&Auml;", "Ä")
        .replace("&Ouml;", "Ö");
    plain
        .split_whitespace()
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

pub(super) fn evaluate(p: &Params, input: &Input<'_>) -> Vec<Hit> {
    let names: Vec<&str> = if p.must_contain.is_empty() {
        vec![input.pack.organisation.as_str()]
    } else {
        p.must_contain.iter().map(String::as_str).collect()
    };
    let wanted: Vec<String> = names.iter().map(|n| normalize(n)).collect();
    let expected = names.join(" / ");
    let mut hits = Vec::new();
    for identity in &input.report.mail.identities {
        let internal = mail_domain(&identity.address)
            .is_some_and(|domain| input.pack.is_internal_domain(&domain));
        if !internal {
            continue;
        }
        let signature = normalize(&identity.signature);
        let (sv, en) = if signature.is_empty() {
            ("saknar signatur (brevfot)", "has no signature (footer)")
        } else if !wanted.iter().any(|w| signature.contains(w.as_str())) {
            (
                "har en signatur som inte anger organisationen",
                "has a signature that does not name the organisation",
            )
        } else {
            continue;
        };
        hits.push(
            Hit::new([
                identity.client.clone(),
                identity.user.clone(),
                identity.address.to_lowercase(),
            ])
            .with("client", &identity.client)
            .with("user", &identity.user)
            .with("address", &identity.address)
            .with("expected", &expected)
            .phrase("problem", sv, en),
        );
    }
    hits
}

#[cfg(test)]
mod tests {
    use vakt_proto::model::{MailIdentity, MailSettings, Report};

    use super::normalize;
    use crate::policy::EvaluationStatus::{self, Exempted, Failed};
    use crate::policy::testkit::*;

    const RULE: &str = r#"
        id = "mail-signature"
        kind = "mail-signature"
        section = "9"
        severity = "warning"
        devices = ["laptop"]
        message_sv = "Identiteten {address} i {client} {problem}; den bör ange {expected}."
        message_en = "The identity {address} in {client} {problem}; it should name {expected}."
    "#;

    fn identity(address: &str, signature: &str) -> MailIdentity {
        MailIdentity {
            client: "thunderbird".into(),
            user: "anna".into(),
            address: address.into(),
            signature: signature.into(),
            name: "Anna Berg".into(),
        }
    }

    fn report(identities: Vec<MailIdentity>) -> Report {
        Report {
            mail: MailSettings {
                identities,
                ..MailSettings::default()
            },
            ..Report::default()
        }
    }

    #[test]
    fn table() {
        let pack = pack_with(RULE);
        let key = "mail-signature/thunderbird/anna/anna@sorsele.se";
        type Case = (
            &'static str,
            MailIdentity,
            Vec<(&'static str, EvaluationStatus)>,
        );
        let cases: Vec<Case> = vec![
            (
                "plain text passes",
                identity("anna@sorsele.se", "Anna Berg\nSorsele kommun\n0952-140 00"),
                vec![],
            ),
            (
                "html across a line break passes",
                identity("Anna@Sorsele.se", "<p><b>SORSELE</b>&nbsp;\n kommun</p>"),
                vec![],
            ),
            (
                "a private identity is not judged",
                identity("anna@gmail.com", ""),
                vec![],
            ),
            (
                "no signature fails",
                identity("anna@sorsele.se", "  \n"),
                vec![(key, Failed)],
            ),
            (
                "a signature without the organisation fails",
                identity("anna@sorsele.se", "Anna Berg\nMvh"),
                vec![(key, Failed)],
            ),
            (
                "a subdomain identity counts",
                identity("anna@skola.sorsele.se", ""),
                vec![(
                    "mail-signature/thunderbird/anna/anna@skola.sorsele.se",
                    Failed,
                )],
            ),
        ];
        for (name, id, want) in cases {
            let out = run_one(&pack, &laptop(), &report(vec![id]), &ctx(&[], &[], &[]));
            assert_eq!(statuses(&out), want, "{name}");
        }
    }

    #[test]
    fn messages_say_what_is_wrong() {
        let pack = pack_with(RULE);
        let out = run_one(
            &pack,
            &laptop(),
            &report(vec![identity("anna@sorsele.se", "")]),
            &ctx(&[], &[], &[]),
        );
        assert_eq!(
            out.evaluations[0].message_sv,
            "Identiteten anna@sorsele.se i thunderbird saknar signatur (brevfot); den bör ange Sorsele kommun."
        );
        assert_eq!(
            out.evaluations[0].severity,
            crate::policy::Severity::Warning
        );
    }

    #[test]
    fn must_contain_overrides_the_organisation() {
        let pack = pack_with(&format!(
            "{RULE}\n[rule.params]\nmust_contain = [\"Sorsele kommun\", \"Sorsele Vatten AB\"]\n"
        ));
        let out = run_one(
            &pack,
            &laptop(),
            &report(vec![identity("anna@sorsele.se", "Sorsele Vatten AB")]),
            &ctx(&[], &[], &[]),
        );
        assert!(out.evaluations.is_empty());
    }

    #[test]
    fn exempted_and_resolved() {
        let pack = pack_with(RULE);
        let bad = report(vec![identity("anna@sorsele.se", "")]);
        let ex = [exemption("mail-signature", None)];
        assert_eq!(
            run_one(&pack, &laptop(), &bad, &ctx(&[], &[], &ex)).evaluations[0].status,
            Exempted
        );
        let fixed = report(vec![identity(
            "anna@sorsele.se",
            "Anna Berg, Sorsele kommun",
        )]);
        assert_resolves(&pack, &laptop(), &bad, &fixed, &ctx(&[], &[], &[]));
    }

    #[test]
    fn normalizing() {
        assert_eq!(
            normalize("<div>Sorsele&nbsp;&nbsp;Kommun</div>"),
            "sorsele kommun"
        );
        assert_eq!(normalize("Åsa\r\n\tÖberg"), "åsa öberg");
        assert_eq!(normalize("a < b Sorsele"), "a < b sorsele");
    }
}
