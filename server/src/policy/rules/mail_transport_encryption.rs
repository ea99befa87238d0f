//! `mail-transport-encryption` (Sorsele 8.2: work e-mail "endast ... i en säker och krypterad
//! miljö godkänd av IT-avdelningen"): a mail account that talks to its server unencrypted, or
//! to a server not on the pack's `approved_mail_hosts`.
//!
//! Decisions:
//! - **`default` security** (the client stores no choice). What applies then is the client's
//!   own default, and for the clients the agent reads that is *unencrypted on every port*:
//!   Thunderbird's `mail.server.default.socketType` and `mail.smtpserver.default.try_ssl` are
//!   0 (plain) in its shipped prefs, and Evolution's `CamelNetworkSettings` `security-method`
//!   defaults to `none`. Neither switches to TLS because the port is 993, 995 or 465 (such an
//!   account simply fails to connect). For any other client the default is unknown, and an
//!   encryption nobody can show is not one "approved by IT": `default` counts as unencrypted
//!   for every client, and the message says which default applied.
//! - **Scope**: the policy governs *work* mail. By default (`scope = "organisation"`) an
//!   account counts when its address is in the organisation's domains, or, for an account
//!   with no address (an outgoing server), when its host is in those domains or explicitly
//!   approved. A private account on the laptop is not judged; `scope = "all"` judges every one.
//! - Encryption and host are separate conditions, each its own finding, so fixing one
//!   resolves it while the other stays open.
//! - An account with no host (local mail folders) talks to no server and is skipped.
//!
//! Messages can name the account as `{account}`: "e-postkontot anna@sorsele.se" / "the mail
//! account anna@sorsele.se", or "smtp-kontot" / "the smtp account" when it has no address.
//!
//! Parameters: `accepted` — the security settings that count as encrypted, of `tls` and
//! `starttls` (default both); `scope` — `organisation` (default) or `all`.

use serde::{Deserialize, Serialize};
use vakt_proto::model::{MailAccount, MailSecurity};

use super::{Hit, Input, in_domain, mail_domain, parse_choices};
use crate::policy::spanned::{Diags, Fields};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accepted {
    Tls,
    Starttls,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Organisation,
    All,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Params {
    pub accepted: Vec<Accepted>,
    pub scope: Scope,
}

pub(super) const KEYS: &[&str] = &["accepted", "scope"];

pub(super) const PLACEHOLDERS: &[&str] = &[
    "client", "user", "address", "host", "port", "protocol", "security", "problem", "account",
];

pub(super) fn parse(f: &mut Fields<'_, '_>, d: &mut Diags) -> Option<Params> {
    let accepted = match f.strings_non_empty("accepted", false, d, "of tls, starttls") {
        Some(list) => parse_choices(
            list.get_ref(),
            "accepted",
            &[("tls", Accepted::Tls), ("starttls", Accepted::Starttls)],
            d,
        ),
        None => Some(vec![Accepted::Tls, Accepted::Starttls]),
    };
    let scope = match f.string("scope", false, d) {
        Some(s) => match s.get_ref().as_str() {
            "organisation" => Some(Scope::Organisation),
            "all" => Some(Scope::All),
            other => {
                d.push(
                    s.span(),
                    format!("unknown scope `{other}` (expected organisation or all)"),
                );
                None
            }
        },
        None => Some(Scope::Organisation),
    };
    Some(Params {
        accepted: accepted?,
        scope: scope?,
    })
}

fn security_name(s: MailSecurity) -> &'static str {
    match s {
        MailSecurity::Tls => "tls",
        MailSecurity::Starttls => "starttls",
        MailSecurity::None => "none",
        MailSecurity::Default => "default",
    }
}

/// Whether the policy governs this account (see the scope decision above).
fn in_scope(p: &Params, input: &Input<'_>, account: &MailAccount) -> bool {
    if p.scope == Scope::All {
        return true;
    }
    match mail_domain(&account.address) {
        Some(domain) => input.pack.is_internal_domain(&domain),
        None => {
            input
                .pack
                .mail_domains
                .iter()
                .any(|d| in_domain(&account.host, d))
                || (!input.pack.approved_mail_hosts.is_empty()
                    && input.pack.is_approved_mail_host(&account.host))
        }
    }
}

/// Why an account's security is not accepted, in Swedish and English; `None` if it is.
fn encryption_problem(p: &Params, account: &MailAccount) -> Option<(String, String)> {
    let accepted = |a: Accepted| p.accepted.contains(&a);
    match account.security {
        MailSecurity::Tls if accepted(Accepted::Tls) => None,
        MailSecurity::Starttls if accepted(Accepted::Starttls) => None,
        MailSecurity::Tls | MailSecurity::Starttls => {
            let names: Vec<&str> = p
                .accepted
                .iter()
                .map(|a| match a {
                    Accepted::Tls => "tls",
                    Accepted::Starttls => "starttls",
                })
                .collect();
            let s = security_name(account.security);
            Some((
                format!(
                    "med säkerheten {s}, som inte är godkänd här (godkänt: {})",
                    names.join(", ")
                ),
                format!(
                    "with security {s}, which is not accepted here (accepted: {})",
                    names.join(", ")
                ),
            ))
        }
        MailSecurity::None => Some((
            "utan kryptering".to_string(),
            "without encryption".to_string(),
        )),
        MailSecurity::Default => {
            let client = account.client.to_lowercase();
            if client == "thunderbird" || client == "evolution" {
                Some((
                    format!(
                        "utan kryptering (ingen inställning är gjord, och {}s standard är \
                         okrypterat)",
                        account.client
                    ),
                    format!(
                        "without encryption (nothing is set, and {}'s default is unencrypted)",
                        account.client
                    ),
                ))
            } else {
                Some((
                    "utan uttryckligt inställd kryptering".to_string(),
                    "without encryption explicitly set".to_string(),
                ))
            }
        }
    }
}

pub(super) fn evaluate(p: &Params, input: &Input<'_>) -> Vec<Hit> {
    let mut hits = Vec::new();
    for account in &input.report.mail.accounts {
        if account.host.trim().is_empty() || !in_scope(p, input, account) {
            continue;
        }
        let host = account.host.trim().trim_end_matches('.').to_lowercase();
        // How a message names the account: by its address, or (an outgoing server often has
        // none) by its protocol.
        let (account_sv, account_en) = if account.address.trim().is_empty() {
            let protocol = if account.protocol.is_empty() {
                "e-post"
            } else {
                &account.protocol
            };
            (
                format!("{protocol}-kontot"),
                format!("the {protocol} account"),
            )
        } else {
            (
                format!("e-postkontot {}", account.address),
                format!("the mail account {}", account.address),
            )
        };
        let base = |problem: &str| {
            Hit::new([
                account.client.clone(),
                account.user.clone(),
                account.protocol.clone(),
                host.clone(),
                account.address.to_lowercase(),
                problem.to_string(),
            ])
            .with("client", &account.client)
            .with("user", &account.user)
            .with("address", &account.address)
            .with("host", &account.host)
            .with("port", account.port)
            .with("protocol", &account.protocol)
            .with("security", security_name(account.security))
            .phrase("account", account_sv.clone(), account_en.clone())
        };
        if let Some((sv, en)) = encryption_problem(p, account) {
            hits.push(
                base("encryption")
                    .with("condition", "encryption")
                    .phrase("problem", sv, en),
            );
        }
        if !input.pack.is_approved_mail_host(&host) {
            hits.push(base("host").with("condition", "host").phrase(
                "problem",
                "via en server som IT inte har godkänt",
                "through a server IT has not approved",
            ));
        }
    }
    hits
}

#[cfg(test)]
mod tests {
    use vakt_proto::model::{MailAccount, MailSecurity, MailSettings, Report};

    use crate::policy::EvaluationStatus::{self, Exempted, Failed};
    use crate::policy::testkit::*;

    const RULE: &str = r#"
        id = "mail-encryption"
        kind = "mail-transport-encryption"
        section = "8.2"
        severity = "violation"
        devices = ["laptop"]
        message_sv = "Kontot {address} hämtar e-post från {host}:{port} {problem}."
        message_en = "The account {address} fetches mail from {host}:{port} {problem}."
    "#;

    fn account(
        client: &str,
        address: &str,
        host: &str,
        port: u32,
        security: MailSecurity,
    ) -> MailAccount {
        MailAccount {
            client: client.into(),
            user: "anna".into(),
            address: address.into(),
            host: host.into(),
            port,
            security,
            protocol: "imap".into(),
        }
    }

    fn report(accounts: Vec<MailAccount>) -> Report {
        Report {
            mail: MailSettings {
                accounts,
                ..MailSettings::default()
            },
            ..Report::default()
        }
    }

    const A: &str = "anna@sorsele.se";

    #[test]
    fn table() {
        use MailSecurity::*;
        let pack = pack_with(RULE);
        let k = |host: &str, p: &str| {
            format!("mail-encryption/thunderbird/anna/imap/{host}/anna@sorsele.se/{p}")
        };
        type Case = (
            &'static str,
            Vec<MailAccount>,
            Vec<(String, EvaluationStatus)>,
        );
        let cases: Vec<Case> = vec![
            (
                "tls to an approved host passes",
                vec![account("thunderbird", A, "imap.sorsele.se", 993, Tls)],
                vec![],
            ),
            (
                "starttls to a wildcard-approved host passes",
                vec![account(
                    "thunderbird",
                    A,
                    "x.mail.sorsele.se",
                    143,
                    Starttls,
                )],
                vec![],
            ),
            (
                "a private account is out of scope",
                vec![account(
                    "thunderbird",
                    "anna@gmail.com",
                    "imap.gmail.com",
                    143,
                    None,
                )],
                vec![],
            ),
            (
                "an account without host is skipped",
                vec![account("thunderbird", A, "", 0, None)],
                vec![],
            ),
            (
                "none fails",
                vec![account("thunderbird", A, "imap.sorsele.se", 143, None)],
                vec![(k("imap.sorsele.se", "encryption"), Failed)],
            ),
            (
                "thunderbird's default fails even on 993",
                vec![account("thunderbird", A, "imap.sorsele.se", 993, Default)],
                vec![(k("imap.sorsele.se", "encryption"), Failed)],
            ),
            (
                "an unapproved host fails",
                vec![account("thunderbird", A, "imap.gmail.com", 993, Tls)],
                vec![(k("imap.gmail.com", "host"), Failed)],
            ),
            (
                "both problems are two findings",
                vec![account("thunderbird", A, "mail.example.net", 110, None)],
                vec![
                    (k("mail.example.net", "encryption"), Failed),
                    (k("mail.example.net", "host"), Failed),
                ],
            ),
        ];
        for (name, accounts, want) in cases {
            let out = run_one(&pack, &laptop(), &report(accounts), &ctx(&[], &[], &[]));
            let got: Vec<(String, EvaluationStatus)> = statuses(&out)
                .into_iter()
                .map(|(k, s)| (k.to_string(), s))
                .collect();
            assert_eq!(got, want, "{name}");
        }
    }

    #[test]
    fn messages_explain_the_default() {
        let pack = pack_with(RULE);
        let out = run_one(
            &pack,
            &laptop(),
            &report(vec![account(
                "thunderbird",
                A,
                "imap.sorsele.se",
                993,
                MailSecurity::Default,
            )]),
            &ctx(&[], &[], &[]),
        );
        assert_eq!(
            out.evaluations[0].message_en,
            "The account anna@sorsele.se fetches mail from imap.sorsele.se:993 without encryption \
             (nothing is set, and thunderbird's default is unencrypted)."
        );
        let out = run_one(
            &pack,
            &laptop(),
            &report(vec![account(
                "mutt",
                A,
                "imap.sorsele.se",
                993,
                MailSecurity::Default,
            )]),
            &ctx(&[], &[], &[]),
        );
        assert!(
            out.evaluations[0]
                .message_sv
                .contains("utan uttryckligt inställd kryptering")
        );
    }

    #[test]
    fn accepted_and_scope_parameters() {
        let pack = pack_with(&format!(
            "{RULE}\n[rule.params]\naccepted = [\"tls\"]\nscope = \"all\"\n"
        ));
        let out = run_one(
            &pack,
            &laptop(),
            &report(vec![
                account(
                    "evolution",
                    A,
                    "imap.sorsele.se",
                    143,
                    MailSecurity::Starttls,
                ),
                account(
                    "evolution",
                    "anna@gmail.com",
                    "imap.gmail.com",
                    993,
                    MailSecurity::Tls,
                ),
            ]),
            &ctx(&[], &[], &[]),
        );
        let keys: Vec<&str> = statuses(&out).into_iter().map(|(k, _)| k).collect();
        assert_eq!(
            keys,
            [
                "mail-encryption/evolution/anna/imap/imap.sorsele.se/anna@sorsele.se/encryption",
                "mail-encryption/evolution/anna/imap/imap.gmail.com/anna@gmail.com/host",
            ]
        );
        assert!(
            out.evaluations[0]
                .message_en
                .contains("with security starttls, which is not accepted here (accepted: tls)")
        );
    }

    #[test]
    fn outgoing_servers_without_address_are_judged_by_host() {
        let pack = pack_with(RULE);
        let mut smtp = account("thunderbird", "", "smtp.sorsele.se", 25, MailSecurity::None);
        smtp.protocol = "smtp".into();
        let out = run_one(&pack, &laptop(), &report(vec![smtp]), &ctx(&[], &[], &[]));
        assert_eq!(
            out.evaluations.len(),
            2,
            "in the org's domain, unencrypted and not approved"
        );
        let mut gmail = account("thunderbird", "", "smtp.gmail.com", 465, MailSecurity::None);
        gmail.protocol = "smtp".into();
        let out = run_one(&pack, &laptop(), &report(vec![gmail]), &ctx(&[], &[], &[]));
        assert!(
            out.evaluations.is_empty(),
            "a private outgoing server is out of scope"
        );
    }

    #[test]
    fn exempted_and_resolved() {
        let pack = pack_with(RULE);
        let bad = report(vec![account(
            "thunderbird",
            A,
            "imap.sorsele.se",
            143,
            MailSecurity::None,
        )]);
        let ex = [exemption("mail-transport-encryption", None)];
        let out = run_one(&pack, &laptop(), &bad, &ctx(&[], &[], &ex));
        assert_eq!(out.evaluations[0].status, Exempted);
        let fixed = report(vec![account(
            "thunderbird",
            A,
            "imap.sorsele.se",
            993,
            MailSecurity::Tls,
        )]);
        assert_resolves(&pack, &laptop(), &bad, &fixed, &ctx(&[], &[], &[]));
    }
}
