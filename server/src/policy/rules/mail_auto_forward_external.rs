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
//! - Targets that are not addresses — a local user (`anna`) or a file (kind `file`) —
//!   deliver on the machine and are not external. A target listing several addresses is
//!   checked address by address, one finding per external one.
//! - A delivery to a program (kind `pipe`: `|procmail`, an Exim filter's `pipe`) can send the
//!   message anywhere, which the agent cannot see: a `notice` naming the program, so IT looks
//!   at it (section 9, key: client, user, `pipe`, the command).
//! - A rule the agent could not read to the end (`problem` set: a Sieve or Exim construct it
//!   does not understand, a target built from the message, a file over its size cap) may
//!   forward: a `notice` with the agent's reason (key: client, user, `unsure`, the rule). When
//!   the target's domain is known all the same (`${1}@gmail.com`), it is judged as any
//!   address: an external one is the violation.
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
use crate::policy::Severity;
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

/// The notice for a delivery to a program, which may send the message on.
const PIPE_SV: &str = "Regeln \"{filter}\" i {client} skickar e-post till programmet {target}, som \
    kan skicka den vidare till vilken adress som helst. Enligt avsnitt {section} får e-post inte \
    automatiskt vidarebefordras till extern e-postadress: kontrollera vad programmet gör.";
const PIPE_EN: &str = "The rule \"{filter}\" in {client} passes mail to the program {target}, \
    which can send it on to any address. Under section {section}, e-mail must not be forwarded \
    automatically to an external address: check what the program does.";

/// The notice for a rule the agent could not read to the end.
const UNSURE_SV: &str = "Regeln \"{filter}\" i {client} kunde inte tolkas helt och kan \
    vidarebefordra e-post ({problem}). Enligt avsnitt {section} får e-post inte automatiskt \
    vidarebefordras till extern e-postadress: kontrollera regeln.";
const UNSURE_EN: &str = "The rule \"{filter}\" in {client} could not be read in full and may \
    forward mail ({problem}). Under section {section}, e-mail must not be forwarded \
    automatically to an external address: check the rule.";

/// How a message names the kind of rule, in Swedish and English.
fn kind_text(kind: ForwardKind) -> (&'static str, &'static str, &'static str) {
    match kind {
        ForwardKind::Forward => ("forward", "vidarebefordrar", "forwards"),
        ForwardKind::Redirect => ("redirect", "omdirigerar", "redirects"),
        ForwardKind::DotForward => (
            "dot-forward",
            "vidarebefordrar (via ~/.forward)",
            "forwards (through ~/.forward)",
        ),
        ForwardKind::Pipe => (
            "pipe",
            "skickar (via ett program)",
            "passes (through a program)",
        ),
        ForwardKind::File => ("file", "sparar", "saves"),
    }
}

/// Whether a domain is written out, not built from something unknown (`${dom}`, `$h_x:`).
fn plain_domain(domain: &str) -> bool {
    !domain.is_empty()
        && domain
            .chars()
            .all(|c| c.is_alphanumeric() || c == '-' || c == '.')
}

pub(super) fn evaluate(p: &Params, input: &Input<'_>) -> Vec<Hit> {
    let mut hits = Vec::new();
    for fwd in input.report.mail.forwards.iter().filter(|f| f.enabled) {
        let (kind, sv, en) = kind_text(fwd.kind);
        let hit = |key: Vec<String>, target: &str, domain: &str| {
            Hit::new(key)
                .with("client", &fwd.client)
                .with("user", &fwd.user)
                .with("filter", &fwd.rule)
                .with("target", target)
                .with("target_domain", domain)
                .with("kind", kind)
                .with("keeps_copy", if fwd.keeps_copy { "yes" } else { "no" })
                .phrase("kind_text", sv, en)
        };
        match fwd.kind {
            ForwardKind::File => continue,
            ForwardKind::Pipe => {
                let key = vec![
                    fwd.client.clone(),
                    fwd.user.clone(),
                    "pipe".into(),
                    fwd.target.clone(),
                ];
                hits.push(
                    hit(key, fwd.target.trim(), "")
                        .severity(Severity::Notice)
                        .message(PIPE_SV, PIPE_EN),
                );
                continue;
            }
            ForwardKind::Forward | ForwardKind::Redirect | ForwardKind::DotForward => {}
        }
        let mut judged = false;
        for target in fwd.target.split(',') {
            let Some((address, domain)) = mail_address(target) else {
                continue;
            };
            if !fwd.problem.is_empty() && !plain_domain(&domain) {
                continue;
            }
            judged = true;
            let internal = input.pack.is_internal_domain(&domain)
                || p.also_internal.iter().any(|d| in_domain(&domain, d));
            if internal {
                continue;
            }
            let key = vec![fwd.client.clone(), fwd.user.clone(), address];
            hits.push(hit(key, target.trim(), &domain));
        }
        if !fwd.problem.is_empty() && !judged {
            let key = vec![
                fwd.client.clone(),
                fwd.user.clone(),
                "unsure".into(),
                fwd.rule.clone(),
            ];
            hits.push(
                hit(key, fwd.target.trim(), "")
                    .with("problem", &fwd.problem)
                    .severity(Severity::Notice)
                    .message(UNSURE_SV, UNSURE_EN),
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
            problem: String::new(),
        }
    }

    /// A forward the agent was not sure of.
    fn unsure(target: &str, kind: ForwardKind, problem: &str) -> MailForward {
        MailForward {
            client: "sieve".into(),
            rule: "jobb.sieve".into(),
            problem: problem.into(),
            ..fwd(target, true, kind)
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
    fn pipes_and_unread_rules_are_notices() {
        use crate::policy::Severity::{self, Notice, Violation};
        use ForwardKind::*;
        let pack = pack_with(RULE);
        type Case = (&'static str, MailForward, Vec<(&'static str, Severity)>);
        let cases: Vec<Case> = vec![
            (
                "a program may send it anywhere",
                fwd("|/usr/bin/mailfwd anna", true, Pipe),
                vec![(
                    "mail-forward-external/thunderbird/anna/pipe/|%2Fusr%2Fbin%2Fmailfwd anna",
                    Notice,
                )],
            ),
            (
                "a disabled pipe sends nothing",
                fwd("|x", false, Pipe),
                vec![],
            ),
            (
                "a file stays on the machine",
                fwd("/home/anna/arkiv", true, File),
                vec![],
            ),
            (
                "a rule not understood may forward",
                unsure(
                    "",
                    Redirect,
                    "rule not understood, may forward: line 3: command 'x' not understood",
                ),
                vec![("mail-forward-external/sieve/anna/unsure/jobb.sieve", Notice)],
            ),
            (
                "a target built from the message may go anywhere",
                unsure("${fwd}", Redirect, "the target is not known here: ${fwd}"),
                vec![("mail-forward-external/sieve/anna/unsure/jobb.sieve", Notice)],
            ),
            (
                "an unknown domain is no domain",
                unsure(
                    "anna@${dom}",
                    Redirect,
                    "the target is not known here: ${dom}",
                ),
                vec![("mail-forward-external/sieve/anna/unsure/jobb.sieve", Notice)],
            ),
            (
                "a known external domain is the violation, however the rest was built",
                unsure(
                    "${1}@gmail.com",
                    Redirect,
                    "the target is not known here: ${1}",
                ),
                vec![("mail-forward-external/sieve/anna/${1}@gmail.com", Violation)],
            ),
            (
                "a known internal domain passes",
                unsure(
                    "${1}@sorsele.se",
                    Redirect,
                    "the target is not known here: ${1}",
                ),
                vec![],
            ),
            (
                "a variable the agent resolved is judged as any address",
                MailForward {
                    client: "sieve".into(),
                    rule: "jobb.sieve: if header :contains \"from\" \"chef\"".into(),
                    ..fwd("x@gmail.com", true, Redirect)
                },
                vec![("mail-forward-external/sieve/anna/x@gmail.com", Violation)],
            ),
        ];
        for (name, forward, want) in cases {
            let out = run_one(
                &pack,
                &laptop(),
                &report(vec![forward]),
                &ctx(&[], &[], &[]),
            );
            let got: Vec<(&str, Severity)> = out
                .evaluations
                .iter()
                .map(|e| (e.key.as_str(), e.severity))
                .collect();
            assert_eq!(got, want, "{name}");
            assert!(out.evaluations.iter().all(|e| e.section == "9"), "{name}");
        }
    }

    #[test]
    fn notices_say_what_and_cite_the_section() {
        let pack = pack_with(RULE);
        let out = run_one(
            &pack,
            &laptop(),
            &report(vec![
                fwd("|/usr/bin/mailfwd", true, ForwardKind::Pipe),
                unsure(
                    "",
                    ForwardKind::Redirect,
                    "rule not understood, may forward: line 3: command 'x' not understood",
                ),
            ]),
            &ctx(&[], &[], &[]),
        );
        let pipe = &out.evaluations[0];
        assert_eq!(
            pipe.message_sv,
            "Regeln \"till gmail\" i thunderbird skickar e-post till programmet |/usr/bin/mailfwd, \
             som kan skicka den vidare till vilken adress som helst. Enligt avsnitt 9 får e-post \
             inte automatiskt vidarebefordras till extern e-postadress: kontrollera vad \
             programmet gör."
        );
        assert_eq!(
            pipe.message_en,
            "The rule \"till gmail\" in thunderbird passes mail to the program |/usr/bin/mailfwd, \
             which can send it on to any address. Under section 9, e-mail must not be forwarded \
             automatically to an external address: check what the program does."
        );
        let unsure = &out.evaluations[1];
        assert_eq!(
            unsure.message_en,
            "The rule \"jobb.sieve\" in sieve could not be read in full and may forward mail \
             (rule not understood, may forward: line 3: command 'x' not understood). Under \
             section 9, e-mail must not be forwarded automatically to an external address: check \
             the rule."
        );
        assert!(
            unsure
                .message_sv
                .starts_with("Regeln \"jobb.sieve\" i sieve kunde inte tolkas helt")
        );
        assert_eq!(
            unsure.evidence["problem"],
            "rule not understood, may forward: line 3: command 'x' not understood"
        );
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
