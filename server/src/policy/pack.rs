//! The policy pack: an organisation's policy document as TOML, read and validated with every
//! error reported at its line and column.
//!
//! ```toml
//! organisation = "Sorsele kommun"
//! document = "Policy för telefoni, mobilteknisk utrustning samt e-postanvändning"
//! reference = "Dnr 2017/393"
//! version = "1"
//! home_mccs = ["240"]                 # mobile country codes that count as home
//! mail_domains = ["sorsele.se"]       # the organisation's mail domains; subdomains included
//! approved_mail_hosts = ["*.sorsele.se"]  # exact host names, or *.domain for any host below it;
//!                                         # empty or absent: no host restriction
//!
//! [[rule]]
//! id = "mail-forward-external"        # letters, digits, -, _ and .; unique in the pack
//! kind = "mail-auto-forward-external" # one of the kinds in `rules`
//! section = "9"                       # the section of the document the rule enforces
//! severity = "violation"              # violation | warning | notice
//! devices = ["laptop", "phone"]       # the device classes it covers
//! title_sv = "..."                    # optional short names; the kind's own title otherwise
//! title_en = "..."
//! message_sv = "... {target} ..."     # {placeholders} from the evidence, {{ and }} for braces
//! message_en = "..."
//! [rule.params]                       # the kind's parameters, if it has any
//! ```

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;

use serde::{Deserialize, Serialize};
use toml::Spanned;
use toml::de::DeTable;

use super::rules::{COMMON_PLACEHOLDERS, Params, RuleKind, in_domain};
use super::spanned::{Diags, Fields, line_col};
use super::{DeviceClass, Severity, template};

/// The pack the server uses until IT applies another one: the Sorsele policy.
pub const DEFAULT_PACK_TOML: &str = include_str!("../../../deploy/policy/sorsele.toml");

/// The built-in default pack ([`DEFAULT_PACK_TOML`], validated by this crate's tests).
pub fn default_pack() -> Pack {
    match check(DEFAULT_PACK_TOML) {
        Ok(pack) => pack,
        // The text is compiled in and a test checks it, so this is a build defect, not input.
        Err(errors) => panic!(
            "the built-in policy pack is invalid: {}",
            errors
                .iter()
                .map(|e| e.in_file("deploy/policy/sorsele.toml").to_string())
                .collect::<Vec<_>>()
                .join("; ")
        ),
    }
}

/// A validated policy pack. Text from people goes through [`check`]; `Deserialize` is for the
/// server's own records of a pack it checked before.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pack {
    pub organisation: String,
    /// The policy document's title.
    pub document: String,
    /// The document's reference, e.g. "Dnr 2017/393".
    pub reference: String,
    /// The pack's own version.
    pub version: String,
    /// Mobile country codes that count as home; any other means abroad.
    pub home_mccs: Vec<String>,
    /// The organisation's mail domains, lower-case; their subdomains count as internal too.
    pub mail_domains: Vec<String>,
    /// Mail servers IT has approved: host names, or `*.domain` for any host below a domain.
    /// Empty: no host restriction.
    #[serde(default)]
    pub approved_mail_hosts: Vec<String>,
    #[serde(rename = "rule", default)]
    pub rules: Vec<Rule>,
}

impl Pack {
    pub fn rule(&self, id: &str) -> Option<&Rule> {
        self.rules.iter().find(|r| r.id == id)
    }

    /// Whether a mobile country code is a home one.
    pub fn is_home_mcc(&self, mcc: &str) -> bool {
        self.home_mccs.iter().any(|m| m == mcc.trim())
    }

    /// Whether a mail domain is the organisation's own (or a subdomain of it).
    pub fn is_internal_domain(&self, domain: &str) -> bool {
        self.mail_domains.iter().any(|d| in_domain(domain, d))
    }

    /// Whether a mail server host is on the approved list (true when the list is empty).
    pub fn is_approved_mail_host(&self, host: &str) -> bool {
        let host = host.trim().trim_end_matches('.');
        self.approved_mail_hosts.is_empty()
            || self
                .approved_mail_hosts
                .iter()
                .any(|a| match a.strip_prefix("*.") {
                    Some(base) => in_domain(host, base) && !host.eq_ignore_ascii_case(base),
                    None => host.eq_ignore_ascii_case(a),
                })
    }
}

/// One rule of a pack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    /// The section of the policy document it enforces, e.g. "8.3".
    pub section: String,
    pub severity: Severity,
    pub devices: Vec<DeviceClass>,
    /// The kind and its parameters.
    #[serde(flatten)]
    pub params: Params,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_sv: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title_en: Option<String>,
    pub message_sv: String,
    pub message_en: String,
}

impl Rule {
    pub fn kind(&self) -> RuleKind {
        self.params.kind()
    }

    /// The rule's short name in Swedish and English.
    pub fn titles(&self) -> (&str, &str) {
        let (sv, en) = self.kind().title();
        (
            self.title_sv.as_deref().unwrap_or(sv),
            self.title_en.as_deref().unwrap_or(en),
        )
    }
}

/// One problem in a pack, at a 1-based line and column (in characters).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct PackError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl PackError {
    /// Displays as `FILE:LINE:COL: message`, the form editors and CI logs link to.
    pub fn in_file<'a>(&'a self, file: &'a str) -> impl fmt::Display + 'a {
        InFile { error: self, file }
    }
}

struct InFile<'a> {
    error: &'a PackError,
    file: &'a str,
}

impl fmt::Display for InFile<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.file, self.error)
    }
}

const TOP_KEYS: &[&str] = &[
    "organisation",
    "document",
    "reference",
    "version",
    "home_mccs",
    "mail_domains",
    "approved_mail_hosts",
    "rule",
];

const RULE_KEYS: &[&str] = &[
    "id",
    "kind",
    "section",
    "severity",
    "devices",
    "params",
    "title_sv",
    "title_en",
    "message_sv",
    "message_en",
];

/// Parse and validate a pack. Returns every error, sorted by position: TOML syntax errors
/// first on their own (a document that doesn't parse can't be checked further), otherwise
/// every unknown key, missing key, bad value, unknown rule kind, bad parameter, bad
/// placeholder and duplicate rule id.
pub fn check(text: &str) -> Result<Pack, Vec<PackError>> {
    // A UTF-8 byte-order mark, as some Windows editors write it, is not part of the TOML.
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let (doc, syntax) = DeTable::parse_recoverable(text);
    let mut d = Diags::default();
    if !syntax.is_empty() {
        for e in syntax {
            d.push(e.span().unwrap_or(0..0), e.message().trim().to_string());
        }
        return Err(to_errors(text, d));
    }
    let pack = read_pack(text, doc.get_ref(), &mut d);
    match pack {
        Some(pack) if d.0.is_empty() => Ok(pack),
        _ => {
            if d.0.is_empty() {
                d.push(0..0, "the pack could not be read");
            }
            Err(to_errors(text, d))
        }
    }
}

fn to_errors(text: &str, d: Diags) -> Vec<PackError> {
    let mut diags = d.0;
    diags.sort_by_key(|x| (x.span.start, x.span.end));
    diags.dedup();
    diags
        .into_iter()
        .map(|x| {
            let (line, column) = line_col(text, x.span.start);
            PackError {
                line,
                column,
                message: x.message,
            }
        })
        .collect()
}

fn read_pack(text: &str, doc: &DeTable<'_>, d: &mut Diags) -> Option<Pack> {
    let mut f = Fields::new(doc, 0..0, "the pack");
    let organisation = non_empty(f.string("organisation", true, d), "organisation", d);
    let document = non_empty(f.string("document", true, d), "document", d);
    let reference = non_empty(f.string("reference", true, d), "reference", d);
    let version = non_empty(f.string("version", true, d), "version", d);
    let home_mccs = f
        .strings_non_empty("home_mccs", true, d, "mobile country code")
        .and_then(|list| {
            let mut ok = true;
            for mcc in list.get_ref() {
                let m = mcc.get_ref();
                if m.len() != 3 || !m.bytes().all(|b| b.is_ascii_digit()) {
                    ok = false;
                    d.push(
                        mcc.span(),
                        format!("`{m}` is not a mobile country code (three digits, e.g. \"240\")"),
                    );
                }
            }
            ok.then(|| {
                list.into_inner()
                    .into_iter()
                    .map(Spanned::into_inner)
                    .collect()
            })
        });
    let mail_domains = f
        .strings_non_empty("mail_domains", true, d, "domain")
        .and_then(|list| domains(list.into_inner(), "mail_domains", false, d));
    let approved_mail_hosts = match f.strings("approved_mail_hosts", false, d) {
        Some(list) => domains(list.into_inner(), "approved_mail_hosts", true, d),
        None => Some(Vec::new()),
    };
    let mut rules = Vec::new();
    let mut ids: BTreeMap<String, Range<usize>> = BTreeMap::new();
    let mut rules_ok = true;
    for (table, span) in f.tables("rule", d) {
        match read_rule(text, table, span, &mut ids, d) {
            Some(rule) => rules.push(rule),
            None => rules_ok = false,
        }
    }
    f.finish(d, TOP_KEYS);
    if rules.is_empty() && rules_ok {
        d.push(0..0, "the pack has no rules (add `[[rule]]` tables)");
    }
    Some(Pack {
        organisation: organisation?,
        document: document?,
        reference: reference?,
        version: version?,
        home_mccs: home_mccs?,
        mail_domains: mail_domains?,
        approved_mail_hosts: approved_mail_hosts?,
        rules,
    })
}

fn non_empty(value: Option<Spanned<String>>, key: &str, d: &mut Diags) -> Option<String> {
    let value = value?;
    if value.get_ref().trim().is_empty() {
        d.push(value.span(), format!("`{key}` must not be empty"));
        return None;
    }
    Some(value.into_inner())
}

/// Domain names (or `*.domain` patterns when `wildcards`), lower-cased.
fn domains(
    list: Vec<Spanned<String>>,
    key: &str,
    wildcards: bool,
    d: &mut Diags,
) -> Option<Vec<String>> {
    let mut out = Vec::with_capacity(list.len());
    let mut ok = true;
    for item in list {
        let raw = item.get_ref().trim();
        let name = if wildcards {
            raw.strip_prefix("*.").unwrap_or(raw)
        } else {
            raw
        };
        let valid = !name.is_empty()
            && !name.starts_with('.')
            && !name.ends_with('.')
            && !name.contains("..")
            && name
                .chars()
                .all(|c| c.is_alphanumeric() || c == '-' || c == '.');
        if !valid {
            ok = false;
            let hint = if raw.contains('@') {
                " (write the domain, not an address)"
            } else if wildcards {
                " (a host name, or *.domain for every host below it)"
            } else {
                ""
            };
            d.push(
                item.span(),
                format!("`{}` in `{key}` is not a domain name{hint}", item.get_ref()),
            );
        } else {
            out.push(raw.to_lowercase());
        }
    }
    ok.then_some(out)
}

fn read_rule(
    text: &str,
    table: &DeTable<'_>,
    span: Range<usize>,
    ids: &mut BTreeMap<String, Range<usize>>,
    d: &mut Diags,
) -> Option<Rule> {
    let before = d.len();
    let mut f = Fields::new(table, span, "this rule");
    let raw_id = f.string("id", true, d);
    let name = raw_id
        .as_ref()
        .map_or_else(|| "?".to_string(), |id| id.get_ref().clone());
    let id = raw_id.and_then(|id| {
        let valid = !id.get_ref().is_empty()
            && id
                .get_ref()
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !valid {
            d.push(
                id.span(),
                format!(
                    "rule id `{}` may use only letters, digits, `-`, `_` and `.`",
                    id.get_ref()
                ),
            );
            return None;
        }
        if let Some(first) = ids.get(id.get_ref()) {
            let (line, _) = line_col(text, first.start);
            d.push(
                id.span(),
                format!(
                    "duplicate rule id `{}` (first used on line {line})",
                    id.get_ref()
                ),
            );
            return None;
        }
        ids.insert(id.get_ref().clone(), id.span());
        Some(id.into_inner())
    });
    f.set_what(format!("rule `{name}`"));
    let kind = f.string("kind", true, d).and_then(|k| {
        let kind = RuleKind::parse(k.get_ref());
        if kind.is_none() {
            let names: Vec<&str> = RuleKind::ALL.iter().map(|k| k.as_str()).collect();
            d.push(
                k.span(),
                format!(
                    "unknown rule kind `{}` (expected one of: {})",
                    k.get_ref(),
                    names.join(", ")
                ),
            );
        }
        kind
    });
    let section = non_empty(f.string("section", true, d), "section", d);
    let severity = f.string("severity", true, d).and_then(|s| {
        let severity = Severity::ALL
            .into_iter()
            .find(|x| x.as_str() == s.get_ref());
        if severity.is_none() {
            d.push(
                s.span(),
                format!(
                    "unknown severity `{}` (expected one of: violation, warning, notice)",
                    s.get_ref()
                ),
            );
        }
        severity
    });
    let devices = f
        .strings_non_empty("devices", true, d, "device class (laptop, phone)")
        .and_then(|list| {
            let choices: Vec<(&str, DeviceClass)> =
                DeviceClass::ALL.iter().map(|c| (c.as_str(), *c)).collect();
            super::rules::parse_choices(list.get_ref(), "devices", &choices, d)
        });
    let params_table = f.table("params", d);
    let params = kind.and_then(|kind| {
        let empty = DeTable::new();
        let (t, s) = params_table.unwrap_or((&empty, f.span()));
        Params::parse(kind, t, s, &name, d)
    });
    let title_sv = f.string("title_sv", false, d).map(Spanned::into_inner);
    let title_en = f.string("title_en", false, d).map(Spanned::into_inner);
    let mut messages = Vec::new();
    for key in ["message_sv", "message_en"] {
        let message = f.string(key, true, d);
        if let (Some(message), Some(kind)) = (&message, kind) {
            check_template(text, message, kind, d);
        }
        messages.push(message.map(Spanned::into_inner));
    }
    f.finish(d, RULE_KEYS);
    let message_en = messages.pop().flatten();
    let message_sv = messages.pop().flatten();
    if d.len() != before {
        return None;
    }
    Some(Rule {
        id: id?,
        section: section?,
        severity: severity?,
        devices: devices?,
        params: params?,
        title_sv,
        title_en,
        message_sv: message_sv?,
        message_en: message_en?,
    })
}

/// Check a message template's syntax and that each placeholder is one the kind provides,
/// pointing each error at the placeholder in the source.
fn check_template(text: &str, message: &Spanned<String>, kind: RuleKind, d: &mut Diags) {
    let span = message.span();
    let raw = text.get(span.clone()).unwrap_or("");
    let at = |offset: usize, fragment: &str| {
        let start = span.start + template::locate_in_source(raw, offset, fragment);
        start..start + fragment.len()
    };
    match template::parse(message.get_ref()) {
        Err(errors) => {
            for e in errors {
                d.push(at(e.offset, &e.fragment), e.message);
            }
        }
        Ok(pieces) => {
            for piece in pieces {
                if let template::Piece::Field(name, offset) = piece
                    && !COMMON_PLACEHOLDERS.contains(&name)
                    && !kind.placeholders().contains(&name)
                {
                    let mut known = kind.placeholders();
                    known.extend_from_slice(COMMON_PLACEHOLDERS);
                    d.push(
                        at(offset, &format!("{{{name}}}")),
                        format!(
                            "unknown placeholder `{{{name}}}` for a {} rule (known: {})",
                            kind.as_str(),
                            known.join(", ")
                        ),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::rules::RuleKind::*;

    fn errors(text: &str) -> Vec<String> {
        check(text)
            .unwrap_err()
            .iter()
            .map(|e| e.in_file("p.toml").to_string())
            .collect()
    }

    const HEAD: &str = r#"organisation = "Sorsele kommun"
document = "Policy"
reference = "Dnr 2017/393"
version = "1"
home_mccs = ["240"]
mail_domains = ["sorsele.se"]
"#;

    #[test]
    fn the_default_pack_validates_and_covers_every_observable_row() {
        let pack = default_pack();
        assert_eq!(pack.organisation, "Sorsele kommun");
        assert_eq!(pack.reference, "Dnr 2017/393");
        assert_eq!(pack.home_mccs, ["240"]);
        let rule = |id: &str| pack.rule(id).unwrap_or_else(|| panic!("no rule {id}"));
        // RULES.md, row by row: the rule, its section and the severity the wording gives.
        let expected = [
            (
                "mail-transport-encryption",
                MailTransportEncryption,
                "8.2",
                Severity::Violation,
            ),
            (
                "software-source-laptop",
                SoftwareSource,
                "8.3",
                Severity::Notice,
            ),
            (
                "software-source-phone",
                SoftwareSource,
                "8.3",
                Severity::Violation,
            ),
            (
                "mobile-data-abroad-laptop",
                MobileDataAbroad,
                "8.4",
                Severity::Violation,
            ),
            (
                "mobile-data-abroad-phone",
                MobileDataAbroad,
                "8.4",
                Severity::Violation,
            ),
            (
                "mobile-broadband-abroad-private",
                MobileBroadbandAbroadPrivate,
                "8.5",
                Severity::Violation,
            ),
            (
                "private-travel-approval",
                PrivateTravelApproval,
                "8.5",
                Severity::Violation,
            ),
            (
                "equipment-return",
                EquipmentReturn,
                "8.6",
                Severity::Violation,
            ),
            (
                "mail-auto-forward-external",
                MailAutoForwardExternal,
                "9",
                Severity::Violation,
            ),
            ("mail-signature", MailSignature, "9", Severity::Warning),
            ("checkin-overdue", CheckinOverdue, "8.1", Severity::Warning),
            ("disk-encryption", DiskEncryption, "8.1", Severity::Notice),
        ];
        assert_eq!(pack.rules.len(), expected.len());
        for (id, kind, section, severity) in expected {
            let r = rule(id);
            assert_eq!(
                (r.kind(), r.section.as_str(), r.severity),
                (kind, section, severity),
                "{id}"
            );
            assert!(
                r.message_sv.contains(&format!("avsnitt {section}")),
                "{id} cites its section in Swedish"
            );
            assert!(
                r.message_en.contains(&format!("section {section}")),
                "{id} cites its section in English"
            );
        }
        assert_eq!(rule("software-source-phone").devices, [DeviceClass::Phone]);
        assert_eq!(
            rule("private-travel-approval").devices,
            [DeviceClass::Laptop]
        );
        assert_eq!(
            rule("mobile-data-abroad-phone").params,
            Params::MobileDataAbroad(crate::policy::rules::mobile_data_abroad::Params {
                business_trip_exempts: false
            })
        );
    }

    #[test]
    fn every_error_is_reported_with_line_and_column() {
        let text = format!(
            r#"{HEAD}colour = "blue"
home_country = "SE"

[[rule]]
id = "fwd"
kind = "mail-auto-forward-externall"
section = "9"
severity = "violation"
devices = ["laptop"]
message_sv = "x"
message_en = "x"

[[rule]]
id = "fwd"
kind = "software-source"
section = "8.3"
severity = "fatal"
devices = ["laptop", "tablet"]
sevrity = "notice"
message_sv = "{{name}} från {{sorce}}"
message_en = "{{name}} {{unclosed"
[rule.params]
allowed = ["os-vendor", "ppa"]
allow_origins = ["x"]

[[rule]]
id = "checkin"
kind = "checkin-overdue"
section = "8.1"
severity = "warning"
devices = ["laptop"]
message_sv = "tyst"
params = {{ days = "14" }}
"#
        );
        assert_eq!(
            errors(&text),
            [
                "p.toml:7:1: unknown key `colour` in the pack (expected one of: organisation, document, reference, version, home_mccs, mail_domains, approved_mail_hosts, rule)",
                "p.toml:8:1: unknown key `home_country` in the pack (expected one of: organisation, document, reference, version, home_mccs, mail_domains, approved_mail_hosts, rule)",
                "p.toml:12:8: unknown rule kind `mail-auto-forward-externall` (expected one of: software-source, mail-auto-forward-external, mail-transport-encryption, mail-signature, mobile-data-abroad, mobile-broadband-abroad-private, private-travel-approval, equipment-return, checkin-overdue, disk-encryption)",
                "p.toml:20:6: duplicate rule id `fwd` (first used on line 11)",
                "p.toml:23:12: unknown severity `fatal` (expected one of: violation, warning, notice)",
                "p.toml:24:22: `tablet` is not a valid value for `devices` (expected one of: laptop, phone)",
                "p.toml:25:1: unknown key `sevrity` in rule `fwd` (expected one of: id, kind, section, severity, devices, params, title_sv, title_en, message_sv, message_en)",
                "p.toml:26:27: unknown placeholder `{sorce}` for a software-source rule (known: name, version, format, source, origin, user, path, source_text, organisation, document, reference, section, rule_id, device, hostname, person, person_name)",
                "p.toml:27:22: `{` opens a placeholder that is never closed with `}` (write `{{` for a literal brace)",
                "p.toml:29:25: `ppa` is not a valid value for `allowed` (expected one of: os-vendor, third-party-repo, store, unlisted, sideloaded)",
                "p.toml:30:1: unknown key `allow_origins` in the params of rule `fwd` (expected one of: allowed, allowed_origins)",
                "p.toml:32:1: rule `checkin` is missing the required key `message_en`",
                "p.toml:39:19: `days` must be an integer, not a string",
            ]
        );
    }

    #[test]
    fn syntax_errors_have_positions_too() {
        let text = format!("{HEAD}\n[[rule]]\nid = \"a\"\nkind = software-source\n");
        let errs = errors(&text);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert!(errs[0].starts_with("p.toml:10:8: "), "{errs:?}");
    }

    #[test]
    fn metadata_values_are_checked() {
        let text = r#"organisation = ""
document = "d"
reference = "r"
version = 1
home_mccs = ["24", "240"]
mail_domains = ["anna@sorsele.se"]
approved_mail_hosts = ["*.", "imap.sorsele.se"]
"#;
        assert_eq!(
            errors(text),
            [
                "p.toml:1:1: the pack has no rules (add `[[rule]]` tables)",
                "p.toml:1:16: `organisation` must not be empty",
                "p.toml:4:11: `version` must be a string, not an integer",
                "p.toml:5:14: `24` is not a mobile country code (three digits, e.g. \"240\")",
                "p.toml:6:17: `anna@sorsele.se` in `mail_domains` is not a domain name (write the domain, not an address)",
                "p.toml:7:24: `*.` in `approved_mail_hosts` is not a domain name (a host name, or *.domain for every host below it)",
            ]
        );
    }

    #[test]
    fn parameter_values_are_checked() {
        let rule = |kind: &str, params: &str| {
            format!(
                "{HEAD}[[rule]]\nid = \"r\"\nkind = \"{kind}\"\nsection = \"1\"\nseverity = \"notice\"\n\
                 devices = [\"laptop\"]\nmessage_sv = \"x\"\nmessage_en = \"x\"\n[rule.params]\n{params}\n"
            )
        };
        let cases = [
            (
                "checkin-overdue",
                "days = 0",
                "p.toml:16:8: `days` must be a whole number from 1, not 0",
            ),
            (
                "checkin-overdue",
                "",
                "p.toml:15:1: the params of rule `r` is missing the required key `days`",
            ),
            (
                "equipment-return",
                "max_leave_days = -5",
                "p.toml:16:18: `max_leave_days` must be a whole number from 1, not -5",
            ),
            (
                "mail-transport-encryption",
                "accepted = []",
                "p.toml:16:12: `accepted` must name at least one of tls, starttls",
            ),
            (
                "mail-transport-encryption",
                "accepted = [\"none\"]",
                "p.toml:16:13: `none` is not a valid value for `accepted` (expected one of: tls, starttls)",
            ),
            (
                "mail-transport-encryption",
                "scope = \"everyone\"",
                "p.toml:16:9: unknown scope `everyone` (expected organisation or all)",
            ),
            (
                "mobile-data-abroad",
                "business_trip_exempts = \"yes\"",
                "p.toml:16:25: `business_trip_exempts` must be true or false, not a string",
            ),
            (
                "mail-signature",
                "must_contain = [\" \"]",
                "p.toml:16:17: an empty name in `must_contain` would match anything",
            ),
            (
                "mail-auto-forward-external",
                "also_internal = [\"x@y.se\"]",
                "p.toml:16:18: `x@y.se` in `also_internal` is not a domain name",
            ),
            (
                "private-travel-approval",
                "days = 3",
                "p.toml:16:1: unknown key `days` in the params of rule `r` (the params of rule `r` takes no keys here)",
            ),
            (
                "software-source",
                "allowed = [\"store\", \"store\"]",
                "p.toml:16:21: `store` is listed twice in `allowed`",
            ),
            (
                "disk-encryption",
                "mounts = [\"/\", \"home\"]",
                "p.toml:16:16: `home` in `mounts` is not a mount point (an absolute path such as /home)",
            ),
            (
                "disk-encryption",
                "mounts = [\"/home\", \"/home/\"]",
                "p.toml:16:20: `/home/` is listed twice in `mounts`",
            ),
            (
                "disk-encryption",
                "mounts = []",
                "p.toml:16:10: `mounts` must name at least one mount point",
            ),
            (
                "disk-encryption",
                "swap = \"no\"",
                "p.toml:16:8: `swap` must be true or false, not a string",
            ),
        ];
        for (kind, params, want) in cases {
            assert_eq!(errors(&rule(kind, params)), [want], "{kind}: {params}");
        }
    }

    #[test]
    fn placeholders_are_located_in_multiline_and_escaped_strings() {
        let text = format!(
            "{HEAD}[[rule]]\nid = \"r\"\nkind = \"checkin-overdue\"\nsection = \"1\"\nseverity = \"notice\"\n\
             devices = [\"laptop\"]\nparams = {{ days = 3 }}\nmessage_sv = \"\"\"\nrad ett\n  {{nej}}\"\"\"\n\
             message_en = \"\\\"q\\\" {{nope}}\"\n"
        );
        let errs = errors(&text);
        assert!(
            errs[0].starts_with("p.toml:16:3: unknown placeholder `{nej}`"),
            "{errs:?}"
        );
        assert!(
            errs[1].starts_with("p.toml:17:21: unknown placeholder `{nope}`"),
            "{errs:?}"
        );
    }

    #[test]
    fn a_byte_order_mark_is_ignored() {
        let text = format!("\u{feff}{}", DEFAULT_PACK_TOML);
        assert!(check(&text).is_ok());
    }

    #[test]
    fn packs_round_trip_through_json() {
        let pack = default_pack();
        let json = serde_json::to_string(&pack).unwrap();
        let back: Pack = serde_json::from_str(&json).unwrap();
        assert_eq!(back, pack);
        let v: serde_json::Value = serde_json::from_str(&json).unwrap();
        assert_eq!(v["rule"][0]["kind"], "mail-transport-encryption");
        assert_eq!(v["rule"][0]["params"]["scope"], "organisation");
    }

    #[test]
    fn domain_and_host_matching() {
        let pack = default_pack();
        assert!(pack.is_internal_domain("sorsele.se"));
        assert!(pack.is_internal_domain("skola.sorsele.se"));
        assert!(!pack.is_internal_domain("sorsele.se.example.com"));
        assert!(pack.is_approved_mail_host("imap.sorsele.se"));
        assert!(pack.is_approved_mail_host("IMAP.Sorsele.se."));
        assert!(
            !pack.is_approved_mail_host("sorsele.se"),
            "*.x means hosts below x"
        );
        assert!(!pack.is_approved_mail_host("imap.gmail.com"));
        assert!(pack.is_home_mcc("240"));
        assert!(!pack.is_home_mcc("242"));
    }
}
