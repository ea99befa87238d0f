//! The fixed set of rule kinds. Each kind lives in its own file with its parameters (parsed and
//! validated from the pack's `[rule.params]`), the placeholders its messages may use, and its
//! evaluation: a pure function of the pack, the rule, the device, its report, the context and
//! `now`. This file holds what is common: the kind table, exemptions, keys and rendering.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use toml::de::DeTable;
use vakt_proto::model::{Report, SectionKind};

use super::spanned::{Diags, Fields};
use super::{
    Context, Device, Evaluation, EvaluationStatus, Evidence, Pack, RuleOutcome, Severity, template,
};

pub mod checkin_overdue;
pub mod disk_encryption;
pub mod equipment_return;
pub mod mail_auto_forward_external;
pub mod mail_signature;
pub mod mail_transport_encryption;
pub mod mobile_broadband_abroad_private;
pub mod mobile_data_abroad;
pub mod private_travel_approval;
pub mod software_source;

pub use super::pack::Rule;

/// The kinds of rule a pack can use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RuleKind {
    SoftwareSource,
    MailAutoForwardExternal,
    MailTransportEncryption,
    MailSignature,
    MobileDataAbroad,
    MobileBroadbandAbroadPrivate,
    PrivateTravelApproval,
    EquipmentReturn,
    CheckinOverdue,
    DiskEncryption,
}

impl RuleKind {
    pub const ALL: [RuleKind; 10] = [
        Self::SoftwareSource,
        Self::MailAutoForwardExternal,
        Self::MailTransportEncryption,
        Self::MailSignature,
        Self::MobileDataAbroad,
        Self::MobileBroadbandAbroadPrivate,
        Self::PrivateTravelApproval,
        Self::EquipmentReturn,
        Self::CheckinOverdue,
        Self::DiskEncryption,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::SoftwareSource => "software-source",
            Self::MailAutoForwardExternal => "mail-auto-forward-external",
            Self::MailTransportEncryption => "mail-transport-encryption",
            Self::MailSignature => "mail-signature",
            Self::MobileDataAbroad => "mobile-data-abroad",
            Self::MobileBroadbandAbroadPrivate => "mobile-broadband-abroad-private",
            Self::PrivateTravelApproval => "private-travel-approval",
            Self::EquipmentReturn => "equipment-return",
            Self::CheckinOverdue => "checkin-overdue",
            Self::DiskEncryption => "disk-encryption",
        }
    }

    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == name)
    }

    /// The report sections the kind reads. An agent error in one of them makes the outcome
    /// incomplete, so findings are not resolved on facts that were never collected.
    pub fn sections(self) -> &'static [SectionKind] {
        match self {
            Self::SoftwareSource => &[SectionKind::Software],
            Self::MailAutoForwardExternal | Self::MailTransportEncryption | Self::MailSignature => {
                &[SectionKind::Mail]
            }
            Self::MobileDataAbroad
            | Self::MobileBroadbandAbroadPrivate
            | Self::PrivateTravelApproval => &[SectionKind::Roaming],
            Self::EquipmentReturn | Self::CheckinOverdue => &[],
            Self::DiskEncryption => &[SectionKind::Storage],
        }
    }

    /// Whether a recorded exemption can excuse the condition. Mobile broadband abroad on a
    /// private trip is never allowed (section 8.5), so no exemption turns it `exempted`.
    pub fn exemptable(self) -> bool {
        self != Self::MobileBroadbandAbroadPrivate
    }

    /// A short name for listings and mail subjects, used when the rule sets no title.
    pub fn title(self) -> (&'static str, &'static str) {
        match self {
            Self::SoftwareSource => (
                "Programvara från en källa utanför de förvaltade",
                "Software from a source outside the managed ones",
            ),
            Self::MailAutoForwardExternal => (
                "Automatisk vidarebefordran av e-post till extern adress",
                "Automatic forwarding of e-mail to an external address",
            ),
            Self::MailTransportEncryption => (
                "E-post utan krypterad anslutning eller via ej godkänd server",
                "E-mail without an encrypted connection or through an unapproved server",
            ),
            Self::MailSignature => (
                "E-post utan brevfot som anger organisationen",
                "E-mail without a footer naming the organisation",
            ),
            Self::MobileDataAbroad => (
                "Mobil datatrafik påslagen utomlands",
                "Mobile data switched on abroad",
            ),
            Self::MobileBroadbandAbroadPrivate => (
                "Mobilt bredband utomlands under privat resa",
                "Mobile broadband abroad on a private trip",
            ),
            Self::PrivateTravelApproval => (
                "Dator utomlands utan godkänd resa",
                "Laptop abroad without an approved trip",
            ),
            Self::EquipmentReturn => ("Utrustning som ska återlämnas", "Equipment due for return"),
            Self::CheckinOverdue => (
                "Enheten har inte rapporterat",
                "The device has not reported",
            ),
            Self::DiskEncryption => (
                "Data som går att läsa om enheten kommer bort",
                "Data readable if the device is lost",
            ),
        }
    }

    /// What the manager should do about a violation, for the notification mail. May use
    /// `{organisation}`.
    pub fn action(self) -> (&'static str, &'static str) {
        match self {
            Self::SoftwareSource => (
                "Be medarbetaren avinstallera programmet eller appen, eller installera det från \
                 en källa som policyn tillåter. Medarbetaren ansvarar för att det finns giltig \
                 licens för egna installationer.",
                "Ask the employee to uninstall the program or app, or to install it from a \
                 source the policy allows. Employees are responsible for holding a valid licence \
                 for their own installations.",
            ),
            Self::MailAutoForwardExternal => (
                "Be medarbetaren ta bort regeln som vidarebefordrar e-post. Kontakta IT om \
                 e-post med känsliga uppgifter eller personuppgifter kan ha skickats vidare.",
                "Ask the employee to remove the rule that forwards e-mail. Contact IT if mail \
                 containing sensitive or personal data may have been forwarded.",
            ),
            Self::MailTransportEncryption => (
                "Be medarbetaren kontakta IT så att e-postkontot ställs in med krypterad \
                 anslutning (SSL/TLS) mot en server som IT har godkänt.",
                "Ask the employee to contact IT to set the mail account up with an encrypted \
                 connection (SSL/TLS) to a server IT has approved.",
            ),
            Self::MailSignature => (
                "Be medarbetaren lägga till en brevfot med namn, {organisation} och \
                 kontaktuppgifter.",
                "Ask the employee to add a footer with their name, {organisation} and contact \
                 details.",
            ),
            Self::MobileDataAbroad => (
                "Be medarbetaren stänga av mobil datatrafik och använda wifi. Behövs mobildata \
                 för en nödvändig arbetsuppgift kan medarbetaren begära ett tidsbegränsat \
                 undantag från datorn (vakt-agent exemption request).",
                "Ask the employee to switch mobile data off and use Wi-Fi. If mobile data is \
                 needed for a necessary work task, the employee can request a time-limited \
                 exemption from the laptop (vakt-agent exemption request).",
            ),
            Self::MobileBroadbandAbroadPrivate => (
                "Be medarbetaren stänga av det mobila bredbandet omedelbart: det får aldrig \
                 användas utomlands för privat bruk.",
                "Ask the employee to switch mobile broadband off at once: it may never be used \
                 abroad for private purposes.",
            ),
            Self::PrivateTravelApproval => (
                "Är resan en tjänsteresa: be IT registrera den. Är den privat: ta ställning till \
                 om datorn behövs av tjänsteskäl, och be i så fall IT registrera ditt \
                 godkännande; annars ska datorn inte medföras.",
                "If the trip is a business trip, ask IT to record it. If it is private, decide \
                 whether the laptop is needed for work, and if so ask IT to record your \
                 approval; otherwise the laptop should not go along.",
            ),
            Self::EquipmentReturn => (
                "Se till att utrustningen lämnas tillbaka till IT, eller besluta om undantag och \
                 be IT registrera det.",
                "Make sure the equipment is returned to IT, or decide on an exception and ask \
                 IT to record it.",
            ),
            Self::CheckinOverdue => (
                "Kontrollera med medarbetaren att enheten finns kvar och används. Har den \
                 kommit bort ska förlusten anmälas enligt avsnitt 8.1.",
                "Check with the employee that the device is still there and in use. If it has \
                 been lost, report the loss as section 8.1 requires.",
            ),
            Self::DiskEncryption => (
                "Ingen åtgärd krävs av policyn. Ska en förlorad dator kunna raderas så att \
                 ingenting går att läsa, be IT installera om den med krypterad disk.",
                "The policy requires no action. For a lost laptop to be wiped so that nothing \
                 can be read, ask IT to reinstall it with an encrypted disk.",
            ),
        }
    }

    /// The placeholders this kind's messages may use, besides [`COMMON_PLACEHOLDERS`].
    pub fn placeholders(self) -> Vec<&'static str> {
        match self {
            Self::SoftwareSource => software_source::PLACEHOLDERS.to_vec(),
            Self::MailAutoForwardExternal => mail_auto_forward_external::PLACEHOLDERS.to_vec(),
            Self::MailTransportEncryption => mail_transport_encryption::PLACEHOLDERS.to_vec(),
            Self::MailSignature => mail_signature::PLACEHOLDERS.to_vec(),
            Self::MobileDataAbroad => mobile_data_abroad::PLACEHOLDERS.to_vec(),
            // The roaming kinds all show where the modem is and how much data it used.
            Self::MobileBroadbandAbroadPrivate => [
                mobile_data_abroad::PLACEHOLDERS,
                mobile_broadband_abroad_private::PLACEHOLDERS,
            ]
            .concat(),
            Self::PrivateTravelApproval => [
                mobile_data_abroad::PLACEHOLDERS,
                private_travel_approval::PLACEHOLDERS,
            ]
            .concat(),
            Self::EquipmentReturn => equipment_return::PLACEHOLDERS.to_vec(),
            Self::CheckinOverdue => checkin_overdue::PLACEHOLDERS.to_vec(),
            Self::DiskEncryption => disk_encryption::PLACEHOLDERS.to_vec(),
        }
    }

    /// The keys its `[rule.params]` table may hold.
    pub fn param_keys(self) -> &'static [&'static str] {
        match self {
            Self::SoftwareSource => software_source::KEYS,
            Self::MailAutoForwardExternal => mail_auto_forward_external::KEYS,
            Self::MailTransportEncryption => mail_transport_encryption::KEYS,
            Self::MailSignature => mail_signature::KEYS,
            Self::MobileDataAbroad => mobile_data_abroad::KEYS,
            Self::MobileBroadbandAbroadPrivate => &[],
            Self::PrivateTravelApproval => &[],
            Self::EquipmentReturn => equipment_return::KEYS,
            Self::CheckinOverdue => checkin_overdue::KEYS,
            Self::DiskEncryption => disk_encryption::KEYS,
        }
    }
}

/// Placeholders every rule's messages may use: the pack's metadata, the rule, the device and
/// the person it is assigned to (empty when unassigned or unknown).
pub const COMMON_PLACEHOLDERS: &[&str] = &[
    "organisation",
    "document",
    "reference",
    "section",
    "rule_id",
    "device",
    "hostname",
    "person",
    "person_name",
];

/// A rule's kind-specific parameters; the variant is the rule's kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", content = "params", rename_all = "kebab-case")]
pub enum Params {
    SoftwareSource(software_source::Params),
    MailAutoForwardExternal(mail_auto_forward_external::Params),
    MailTransportEncryption(mail_transport_encryption::Params),
    MailSignature(mail_signature::Params),
    MobileDataAbroad(mobile_data_abroad::Params),
    MobileBroadbandAbroadPrivate(mobile_broadband_abroad_private::Params),
    PrivateTravelApproval(private_travel_approval::Params),
    EquipmentReturn(equipment_return::Params),
    CheckinOverdue(checkin_overdue::Params),
    DiskEncryption(disk_encryption::Params),
}

impl Params {
    pub fn kind(&self) -> RuleKind {
        match self {
            Self::SoftwareSource(_) => RuleKind::SoftwareSource,
            Self::MailAutoForwardExternal(_) => RuleKind::MailAutoForwardExternal,
            Self::MailTransportEncryption(_) => RuleKind::MailTransportEncryption,
            Self::MailSignature(_) => RuleKind::MailSignature,
            Self::MobileDataAbroad(_) => RuleKind::MobileDataAbroad,
            Self::MobileBroadbandAbroadPrivate(_) => RuleKind::MobileBroadbandAbroadPrivate,
            Self::PrivateTravelApproval(_) => RuleKind::PrivateTravelApproval,
            Self::EquipmentReturn(_) => RuleKind::EquipmentReturn,
            Self::CheckinOverdue(_) => RuleKind::CheckinOverdue,
            Self::DiskEncryption(_) => RuleKind::DiskEncryption,
        }
    }

    /// Read and validate a kind's parameters; every problem goes to `d`.
    pub(crate) fn parse(
        kind: RuleKind,
        table: &DeTable<'_>,
        span: std::ops::Range<usize>,
        rule_id: &str,
        d: &mut Diags,
    ) -> Option<Self> {
        let mut f = Fields::new(table, span, format!("the params of rule `{rule_id}`"));
        let before = d.len();
        let params = match kind {
            RuleKind::SoftwareSource => software_source::parse(&mut f, d).map(Self::SoftwareSource),
            RuleKind::MailAutoForwardExternal => {
                mail_auto_forward_external::parse(&mut f, d).map(Self::MailAutoForwardExternal)
            }
            RuleKind::MailTransportEncryption => {
                mail_transport_encryption::parse(&mut f, d).map(Self::MailTransportEncryption)
            }
            RuleKind::MailSignature => mail_signature::parse(&mut f, d).map(Self::MailSignature),
            RuleKind::MobileDataAbroad => {
                mobile_data_abroad::parse(&mut f, d).map(Self::MobileDataAbroad)
            }
            RuleKind::MobileBroadbandAbroadPrivate => Some(Self::MobileBroadbandAbroadPrivate(
                mobile_broadband_abroad_private::Params {},
            )),
            RuleKind::PrivateTravelApproval => Some(Self::PrivateTravelApproval(
                private_travel_approval::Params {},
            )),
            RuleKind::EquipmentReturn => {
                equipment_return::parse(&mut f, d).map(Self::EquipmentReturn)
            }
            RuleKind::CheckinOverdue => checkin_overdue::parse(&mut f, d).map(Self::CheckinOverdue),
            RuleKind::DiskEncryption => disk_encryption::parse(&mut f, d).map(Self::DiskEncryption),
        };
        f.finish(d, kind.param_keys());
        params.filter(|_| d.len() == before)
    }
}

/// What a rule kind's evaluation sees.
pub(crate) struct Input<'a> {
    pub pack: &'a Pack,
    pub device: &'a Device,
    pub report: &'a Report,
    pub context: &'a Context<'a>,
    pub now: OffsetDateTime,
}

impl Input<'_> {
    /// The e-mail address of the person the device is assigned to.
    pub fn person(&self) -> Option<&str> {
        self.device.assigned_to.as_deref()
    }
}

/// A localized phrase a message can use as a placeholder, for the part of a message that
/// differs between conditions of one kind (why a mail account fails, which date passed).
pub(crate) struct Phrase {
    pub name: &'static str,
    pub sv: String,
    pub en: String,
}

/// One condition a kind found, before the common handling turns it into an [`Evaluation`].
pub(crate) struct Hit {
    /// What the condition is about, after the rule id, e.g. client, user and target.
    key: Vec<String>,
    evidence: Evidence,
    phrases: Vec<Phrase>,
    /// Set when the kind itself excuses the condition (an approved business trip): the
    /// evidence that says why.
    excused: Option<Evidence>,
    /// A lower severity than the rule's for this condition (a forward that only may happen).
    severity: Option<Severity>,
    /// The kind's own Swedish and English templates for this condition, instead of the rule's
    /// (whose text is about the rule's main condition). They may use the hit's evidence and
    /// the common placeholders.
    message: Option<(&'static str, &'static str)>,
}

impl Hit {
    pub fn new<S: Into<String>>(key: impl IntoIterator<Item = S>) -> Self {
        Self {
            key: key.into_iter().map(Into::into).collect(),
            evidence: Evidence::new(),
            phrases: Vec::new(),
            excused: None,
            severity: None,
            message: None,
        }
    }

    /// Reports this condition at `severity`, or the rule's if that is lower.
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = Some(severity);
        self
    }

    /// Renders this condition's messages from the kind's own templates.
    pub fn message(mut self, sv: &'static str, en: &'static str) -> Self {
        self.message = Some((sv, en));
        self
    }

    pub fn with(mut self, name: &str, value: impl ToString) -> Self {
        self.evidence.insert(name.to_string(), value.to_string());
        self
    }

    pub fn phrase(
        mut self,
        name: &'static str,
        sv: impl Into<String>,
        en: impl Into<String>,
    ) -> Self {
        self.phrases.push(Phrase {
            name,
            sv: sv.into(),
            en: en.into(),
        });
        self
    }

    pub fn excused(mut self, why: Evidence) -> Self {
        self.excused = Some(why);
        self
    }
}

/// A finding key: the rule id and the parts, `/`-separated, with `/` and `%` in the parts
/// escaped so two different conditions can never share a key.
pub(crate) fn finding_key(rule_id: &str, parts: &[String]) -> String {
    let mut key = rule_id.to_string();
    for part in parts {
        key.push('/');
        for c in part.chars() {
            match c {
                '%' => key.push_str("%25"),
                '/' => key.push_str("%2F"),
                c => key.push(c),
            }
        }
    }
    key
}

/// Run one rule on one device: the kind's evaluation, then exemptions and messages.
pub(crate) fn run(
    pack: &Pack,
    rule: &Rule,
    device: &Device,
    report: &Report,
    context: &Context<'_>,
    now: OffsetDateTime,
) -> RuleOutcome {
    let input = Input {
        pack,
        device,
        report,
        context,
        now,
    };
    let hits = match &rule.params {
        Params::SoftwareSource(p) => software_source::evaluate(p, &input),
        Params::MailAutoForwardExternal(p) => mail_auto_forward_external::evaluate(p, &input),
        Params::MailTransportEncryption(p) => mail_transport_encryption::evaluate(p, &input),
        Params::MailSignature(p) => mail_signature::evaluate(p, &input),
        Params::MobileDataAbroad(p) => mobile_data_abroad::evaluate(p, &input),
        Params::MobileBroadbandAbroadPrivate(p) => {
            mobile_broadband_abroad_private::evaluate(p, &input)
        }
        Params::PrivateTravelApproval(p) => private_travel_approval::evaluate(p, &input),
        Params::EquipmentReturn(p) => equipment_return::evaluate(p, &input),
        Params::CheckinOverdue(p) => checkin_overdue::evaluate(p, &input),
        Params::DiskEncryption(p) => disk_encryption::evaluate(p, &input),
    };
    let kind = rule.kind();
    let complete = kind
        .sections()
        .iter()
        .all(|s| !report.errors.iter().any(|e| e.section == *s));
    let exemption = kind
        .exemptable()
        .then(|| {
            context
                .exemptions
                .iter()
                .find(|e| e.applies(rule, device, now))
        })
        .flatten();
    let person = context.person(device.assigned_to.as_deref());
    let common = |name: &str| -> Option<String> {
        Some(match name {
            "organisation" => pack.organisation.clone(),
            "document" => pack.document.clone(),
            "reference" => pack.reference.clone(),
            "section" => rule.section.clone(),
            "rule_id" => rule.id.clone(),
            "device" => device.id.clone(),
            "hostname" => device.hostname.clone(),
            "person" => device.assigned_to.clone().unwrap_or_default(),
            "person_name" => person.map(|p| p.name.clone()).unwrap_or_default(),
            _ => return None,
        })
    };

    let mut seen = BTreeSet::new();
    let mut evaluations = Vec::with_capacity(hits.len());
    for hit in hits {
        // Each kind promises the placeholders it declares; a message never renders a hole.
        debug_assert!(
            kind.placeholders()
                .iter()
                .all(|p| hit.evidence.contains_key(*p) || hit.phrases.iter().any(|x| x.name == *p)),
            "{} left a declared placeholder unset",
            kind.as_str()
        );
        let key = finding_key(&rule.id, &hit.key);
        // One condition, one finding: two modems in one country, or one forward found twice,
        // keep the first hit's evidence.
        if !seen.insert(key.clone()) {
            continue;
        }
        let message = |sv: bool| {
            let template = match (hit.message, sv) {
                (Some((t, _)), true) => t,
                (Some((_, t)), false) => t,
                (None, true) => rule.message_sv.as_str(),
                (None, false) => rule.message_en.as_str(),
            };
            let owned: Vec<(String, String)> = COMMON_PLACEHOLDERS
                .iter()
                .filter_map(|n| common(n).map(|v| (n.to_string(), v)))
                .collect();
            template::render(template, |name| {
                hit.phrases
                    .iter()
                    .find(|p| p.name == name)
                    .map(|p| if sv { p.sv.as_str() } else { p.en.as_str() })
                    .or_else(|| hit.evidence.get(name).map(String::as_str))
                    .or_else(|| {
                        owned
                            .iter()
                            .find(|(n, _)| n == name)
                            .map(|(_, v)| v.as_str())
                    })
            })
        };
        let message_sv = message(true);
        let message_en = message(false);
        let mut evidence = hit.evidence;
        let status = if let Some(why) = hit.excused {
            evidence.extend(why);
            EvaluationStatus::Exempted
        } else if let Some(e) = exemption {
            evidence.insert("exemption".into(), e.id.clone());
            evidence.insert("exemption_reason".into(), e.reason.clone());
            if !e.granted_by.is_empty() {
                evidence.insert("exemption_granted_by".into(), e.granted_by.clone());
            }
            if let Some(until) = e.until {
                evidence.insert("exemption_until".into(), super::rfc3339(until));
            }
            EvaluationStatus::Exempted
        } else {
            EvaluationStatus::Failed
        };
        evaluations.push(Evaluation {
            rule: rule.id.clone(),
            kind,
            section: rule.section.clone(),
            // Severity orders most serious first: the less serious of the two wins.
            severity: hit.severity.map_or(rule.severity, |s| s.max(rule.severity)),
            key,
            status,
            evidence,
            message_sv,
            message_en,
        });
    }
    RuleOutcome {
        rule: rule.id.clone(),
        complete,
        evaluations,
    }
}

/// The bare address of a mail target and its domain, both lower-case, the domain without a
/// trailing dot. Accepts display forms (`Anna <anna@example.org>`) and `mailto:`; `None` for
/// local names (`anna`), pipes and files (`|/usr/bin/procmail`, `/var/mail/x`), which deliver
/// on the machine itself.
pub(crate) fn mail_address(target: &str) -> Option<(String, String)> {
    let mut a = target.trim();
    if let (Some(open), Some(close)) = (a.rfind('<'), a.rfind('>'))
        && open < close
    {
        a = &a[open + 1..close];
    }
    let a = a.trim();
    let a = a
        .strip_prefix("mailto:")
        .or_else(|| a.strip_prefix("MAILTO:"))
        .unwrap_or(a);
    if a.starts_with('|') || a.starts_with('/') {
        return None;
    }
    let (local, domain) = a.rsplit_once('@')?;
    let domain = domain.trim().trim_end_matches('.').to_lowercase();
    (!local.is_empty() && !domain.is_empty())
        .then(|| (format!("{}@{domain}", local.to_lowercase()), domain))
}

/// The domain of a mail address (see [`mail_address`]).
pub(crate) fn mail_domain(address: &str) -> Option<String> {
    mail_address(address).map(|(_, domain)| domain)
}

/// Whether `domain` is `base` or one of its subdomains (`mail.sorsele.se` is in `sorsele.se`).
pub(crate) fn in_domain(domain: &str, base: &str) -> bool {
    let domain = domain.trim_end_matches('.');
    domain.eq_ignore_ascii_case(base)
        || (domain.len() > base.len()
            && domain.is_char_boundary(domain.len() - base.len() - 1)
            && domain[domain.len() - base.len() - 1..].starts_with('.')
            && domain[domain.len() - base.len()..].eq_ignore_ascii_case(base))
}

/// Parse a list of strings against a fixed vocabulary, reporting each unknown value at its
/// own position.
pub(crate) fn parse_choices<T: Copy + Ord>(
    values: &[toml::Spanned<String>],
    key: &str,
    choices: &[(&str, T)],
    d: &mut Diags,
) -> Option<Vec<T>> {
    let mut out = Vec::new();
    let mut ok = true;
    for v in values {
        match choices
            .iter()
            .find(|(name, _)| *name == v.get_ref().as_str())
        {
            Some((_, t)) => {
                if out.contains(t) {
                    d.push(
                        v.span(),
                        format!("`{}` is listed twice in `{key}`", v.get_ref()),
                    );
                    ok = false;
                } else {
                    out.push(*t);
                }
            }
            None => {
                ok = false;
                let names: Vec<&str> = choices.iter().map(|(n, _)| *n).collect();
                d.push(
                    v.span(),
                    format!(
                        "`{}` is not a valid value for `{key}` (expected one of: {})",
                        v.get_ref(),
                        names.join(", ")
                    ),
                );
            }
        }
    }
    ok.then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_escape_their_separator() {
        assert_eq!(
            finding_key("r", &["a/b".into(), "c%d".into()]),
            "r/a%2Fb/c%25d"
        );
        assert_ne!(
            finding_key("r", &["a/b".into()]),
            finding_key("r", &["a".into(), "b".into()])
        );
    }

    #[test]
    fn mail_domains_of_addresses_and_local_targets() {
        assert_eq!(mail_domain("anna@Gmail.COM."), Some("gmail.com".into()));
        assert_eq!(
            mail_domain("Anna Berg <anna@gmail.com>"),
            Some("gmail.com".into())
        );
        assert_eq!(mail_domain("mailto:a@b.se"), Some("b.se".into()));
        assert_eq!(mail_domain("anna"), None);
        assert_eq!(mail_domain("|/usr/bin/procmail"), None);
        assert_eq!(mail_domain("/var/mail/x@y"), None);
        assert_eq!(mail_domain("@nolocal.se"), None);
        assert_eq!(
            mail_address(" Anna <Anna.Berg@Gmail.com.>"),
            Some(("anna.berg@gmail.com".into(), "gmail.com".into()))
        );
    }

    #[test]
    fn subdomains_are_inside_lookalikes_are_not() {
        assert!(in_domain("sorsele.se", "sorsele.se"));
        assert!(in_domain("Mail.Sorsele.se", "sorsele.se"));
        assert!(!in_domain("notsorsele.se", "sorsele.se"));
        assert!(!in_domain("sorsele.se.evil.com", "sorsele.se"));
        assert!(!in_domain("se", "sorsele.se"));
        assert!(!in_domain("åäsorsele.se", "sorsele.se"));
    }

    #[test]
    fn every_kind_round_trips_its_name() {
        for k in RuleKind::ALL {
            assert_eq!(RuleKind::parse(k.as_str()), Some(k));
            let json = serde_json::to_string(&k).unwrap();
            assert_eq!(json, format!("\"{}\"", k.as_str()));
        }
        assert_eq!(RuleKind::parse("no-such-kind"), None);
    }
}
