//! `mail-auto-forward-external` (Sorsele 9: "E-post får inte automatiskt vidarebefordras till
//! extern e-postadress"): an enabled forward, redirect or `~/.forward` entry to an address
//! outside the organisation's mail domains.
//!
//! Decisions, as an IT admin would expect them:
//! - Subdomains of an organisation domain are internal (`anna@skola.sorsele.se`).
//! - A disabled filter forwards nothing, so it is no violation. Enabling it again opens a new
//!   finding on the next report (or keeps the open one, if it never cleared).
//! - A rule that keeps a copy in the mailbox still forwards: it is a violation all the same
//!   (the evidence says `keeps_copy`).
//! - Targets that are not addresses — a local user (`anna`), a pipe (`|procmail`) or a file —
//!   deliver on the machine and are not external. A target listing several addresses is
//!   checked address by address, one finding per external one.
//! - The agent's forward records do not say which account a filter belongs to, so a filter
//!   in a private account's folder on the work laptop counts the same.
//!
//! Parameter: `also_internal`, more domains to treat as internal (a partner organisation
//! sharing the mail system, a cloud tenant's domain), default none.
//!
//! Key: the rule id, client, user and bare target address (lower-case), so renaming the filter
//! keeps the finding and changing its target makes a new one.

use serde::{Deserialize, Serialize};
use vakt_proto::model::ForwardKind;

use super::{Hit, Input, in_domain, mail_address};
use crate::policy::spanned::{Diags, Fields};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    #[serde(default)]
    pub also_internal: Vec<String>,
}

pub(super) const KEYS: &[&str] = &["also_internal"];

pub(super) const PLACEHOLDERS: &[&str] = &[
    "client",
    "user",
    "filter",
    "target",
    "target_domain",
    "kind",
    "keeps_copy",
    "kind_text",
];

pub(super) fn parse(f: &mut Fields<'_, '_>, d: &mut Diags) -> Option<Params> {
    let also_internal = match f.strings("also_internal", false, d) {
        Some(list) => {
            let mut out = Vec::new();
            for item in list.into_inner() {
                let v = item.get_ref().trim().to_lowercase();
                if v.is_empty() || v.contains('@') || !v.contains('.') {
                    d.push(
                        item.span(),
                        format!(
                            "`{}` in `also_internal` is not a domain name",
                            item.get_ref()
                        ),
                    );
                } else {
                    out.push(v);
                }
            }
            out
        }
        None => Vec::new(),
    };
    Some(Params { also_internal })
}

pub(super) fn evaluate(p: &Params, input: &Input<'_>) -> Vec<Hit> {
    let mut hits = Vec::new();
    for fwd in input.report.mail.forwards.iter().filter(|f| f.enabled) {
        for target in fwd.target.split(',') {
            let Some((address, domain)) = mail_address(target) else {
                continue;
            };
            let internal = input.pack.is_internal_domain(&domain)
                || p.also_internal.iter().any(|d| in_domain(&domain, d));
            if internal {
                continue;
            }
            let target = target.trim();
            let (kind, sv, en) = match fwd.kind {
                ForwardKind::Forward => ("forward", "vidarebefordrar", "forwards"),
                ForwardKind::Redirect => ("redirect", "omdirigerar", "redirects"),
                ForwardKind::DotForward => (
                    "dot-forward",
                    "vidarebefordrar (via ~/.forward)",
                    "forwards (through ~/.forward)",
                ),
            };
            hits.push(
                Hit::new([fwd.client.clone(), fwd.user.clone(), address])
                    .with("client", &fwd.client)
                    .with("user", &fwd.user)
                    .with("filter", &fwd.rule)
                    .with("target", target)
                    .with("target_domain", &domain)
                    .with("kind", kind)
                    .with("keeps_copy", if fwd.keeps_copy { "yes" } else { "no" })
                    .phrase("kind_text", sv, en),
            );
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use vakt_proto::model::{ForwardKind, MailForward, MailSettings, Report};

    use crate::policy::EvaluationStatus::{self, Exempted, Failed};
    use crate::policy::testkit::*;

    const RULE: &str = r#"
        id = "mail-forward-external"
        kind = "mail-auto-forward-external"
        section = "9"
        severity = "violation"
        devices = ["laptop"]
        message_sv = "Regeln \"{filter}\" i {client} {kind_text} e-post till {target}."
        message_en = "The rule \"{filter}\" in {client} {kind_text} mail to {target}."
        [rule.params]
        also_internal = ["vilhelmina.se"]
    "#;

    fn fwd(target: &str, enabled: bool, kind: ForwardKind) -> MailForward {
        MailForward {
            client: "thunderbird".into(),
            user: "anna".into(),
            rule: "till gmail".into(),
            enabled,
            target: target.into(),
            kind,
            keeps_copy: false,
        }
    }

    fn report(forwards: Vec<MailForward>) -> Report {
        Report {
            mail: MailSettings {
                forwards,
                ..MailSettings::default()
            },
            ..Report::default()
        }
    }

    #[test]
    fn table() {
        use ForwardKind::*;
        let pack = pack_with(RULE);
        type Case = (
            &'static str,
            Vec<MailForward>,
            Vec<(&'static str, EvaluationStatus)>,
        );
        let cases: Vec<Case> = vec![
            (
                "internal passes",
                vec![fwd("kollega@sorsele.se", true, Forward)],
                vec![],
            ),
            (
                "a subdomain is internal",
                vec![fwd("a@skola.Sorsele.se", true, Redirect)],
                vec![],
            ),
            (
                "also_internal passes",
                vec![fwd("a@vilhelmina.se", true, Forward)],
                vec![],
            ),
            (
                "local delivery passes",
                vec![
                    fwd("\\anna", true, DotForward),
                    fwd("|/usr/bin/procmail", true, DotForward),
                ],
                vec![],
            ),
            (
                "disabled passes",
                vec![fwd("anna@gmail.com", false, Forward)],
                vec![],
            ),
            (
                "external fails",
                vec![fwd("Anna <Anna@Gmail.com>", true, Forward)],
                vec![(
                    "mail-forward-external/thunderbird/anna/anna@gmail.com",
                    Failed,
                )],
            ),
            (
                "a lookalike domain fails",
                vec![fwd("anna@sorsele.se.example.com", true, Redirect)],
                vec![(
                    "mail-forward-external/thunderbird/anna/anna@sorsele.se.example.com",
                    Failed,
                )],
            ),
            (
                "each external address of a list",
                vec![fwd(
                    "a@sorsele.se, b@outlook.com,c@proton.me",
                    true,
                    DotForward,
                )],
                vec![
                    (
                        "mail-forward-external/thunderbird/anna/b@outlook.com",
                        Failed,
                    ),
                    ("mail-forward-external/thunderbird/anna/c@proton.me", Failed),
                ],
            ),
        ];
        for (name, forwards, want) in cases {
            let out = run_one(&pack, &laptop(), &report(forwards), &ctx(&[], &[], &[]));
            assert_eq!(statuses(&out), want, "{name}");
        }
    }

    #[test]
    fn message_names_filter_and_target() {
        let pack = pack_with(RULE);
        let out = run_one(
            &pack,
            &laptop(),
            &report(vec![fwd("anna@gmail.com", true, ForwardKind::Redirect)]),
            &ctx(&[], &[], &[]),
        );
        let e = &out.evaluations[0];
        assert_eq!(
            e.message_sv,
            "Regeln \"till gmail\" i thunderbird omdirigerar e-post till anna@gmail.com."
        );
        assert_eq!(
            e.message_en,
            "The rule \"till gmail\" in thunderbird redirects mail to anna@gmail.com."
        );
        assert_eq!(e.evidence["target_domain"], "gmail.com");
        assert_eq!(e.evidence["keeps_copy"], "no");
    }

    #[test]
    fn exempted_by_rule_id() {
        let pack = pack_with(RULE);
        let ex = [exemption("mail-forward-external", None)];
        let out = run_one(
            &pack,
            &laptop(),
            &report(vec![fwd("anna@gmail.com", true, ForwardKind::Forward)]),
            &ctx(&[], &[], &ex),
        );
        assert_eq!(out.evaluations[0].status, Exempted);
        assert_eq!(out.evaluations[0].evidence["exemption"], "ex-1");
    }

    #[test]
    fn disabling_or_removing_the_forward_resolves() {
        let pack = pack_with(RULE);
        let bad = report(vec![fwd("anna@gmail.com", true, ForwardKind::Forward)]);
        let disabled = report(vec![fwd("anna@gmail.com", false, ForwardKind::Forward)]);
        let c = ctx(&[], &[], &[]);
        assert_resolves(&pack, &laptop(), &bad, &disabled, &c);
        assert_resolves(&pack, &laptop(), &bad, &report(vec![]), &c);
    }
}
