//! The console's two languages. Swedish is the default; English is one click away and is
//! remembered in the session.
//!
//! Page text lives in the templates as pairs, `{{ c.t("Enheter", "Devices") }}`: a string
//! cannot be added in one language only, and the compiler checks every pair. The names of the
//! domain's states and kinds, which several pages share, are translated here.

use tonic::Code;
use vakt_proto::model::{ForwardKind, MailSecurity, SoftwareSource};
use vakt_proto::pb;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Lang {
    #[default]
    Sv,
    En,
}

impl Lang {
    /// The BCP 47 tag, for `<html lang>`.
    pub fn code(self) -> &'static str {
        match self {
            Self::Sv => "sv",
            Self::En => "en",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "sv" => Some(Self::Sv),
            "en" => Some(Self::En),
            _ => None,
        }
    }

    /// The language the switch offers.
    pub fn other(self) -> Self {
        match self {
            Self::Sv => Self::En,
            Self::En => Self::Sv,
        }
    }

    /// The language's name in itself (what the switch shows).
    pub fn own_name(self) -> &'static str {
        match self {
            Self::Sv => "Svenska",
            Self::En => "English",
        }
    }

    /// One of a pair of texts.
    pub fn t(self, sv: &'static str, en: &'static str) -> &'static str {
        match self {
            Self::Sv => sv,
            Self::En => en,
        }
    }

    /// Templates pass their values by reference.
    pub fn yes_no(self, b: &bool) -> &'static str {
        match *b {
            true => self.t("Ja", "Yes"),
            false => self.t("Nej", "No"),
        }
    }

    pub fn device_state(self, raw: i32) -> &'static str {
        use pb::DeviceState as S;
        match S::try_from(raw) {
            Ok(S::Active) => self.t("aktiv", "active"),
            Ok(S::Lost) => self.t("förlorad", "lost"),
            Ok(S::Locked) => self.t("låst", "locked"),
            Ok(S::Wiped) => self.t("raderad", "wiped"),
            Ok(S::Retired) => self.t("avvecklad", "retired"),
            _ => self.t("okänd", "unknown"),
        }
    }

    pub fn command_kind(self, raw: i32) -> &'static str {
        match pb::CommandKind::try_from(raw) {
            Ok(pb::CommandKind::Lock) => self.t("låsning", "lock"),
            Ok(pb::CommandKind::Unlock) => self.t("upplåsning", "unlock"),
            Ok(pb::CommandKind::Wipe) => self.t("radering", "wipe"),
            _ => self.t("okänd", "unknown"),
        }
    }

    pub fn command_state(self, raw: i32) -> &'static str {
        use pb::CommandState as S;
        match S::try_from(raw) {
            Ok(S::AwaitingApproval) => self.t("väntar på godkännande", "awaiting approval"),
            Ok(S::Pending) => self.t("väntar på enheten", "pending"),
            Ok(S::Delivered) => self.t("levererad", "delivered"),
            Ok(S::Succeeded) => self.t("utförd", "succeeded"),
            Ok(S::Failed) => self.t("misslyckades", "failed"),
            Ok(S::Refused) => self.t("vägrad av enheten", "refused"),
            Ok(S::Expired) => self.t("förfallen", "expired"),
            _ => self.t("okänd", "unknown"),
        }
    }

    pub fn role(self, r: pb::Role) -> &'static str {
        match r {
            pb::Role::Viewer => self.t("läsare", "viewer"),
            pb::Role::Operator => self.t("operatör", "operator"),
            pb::Role::Admin => self.t("administratör", "admin"),
            pb::Role::Unspecified => self.t("ingen roll", "no role"),
        }
    }

    pub fn source(self, s: SoftwareSource) -> &'static str {
        match s {
            SoftwareSource::OsVendor => self.t("operativsystemets förråd", "OS vendor"),
            SoftwareSource::ThirdPartyRepo => self.t("tredjepartsförråd", "third-party repository"),
            SoftwareSource::Store => self.t("appbutik", "store"),
            SoftwareSource::Unlisted => self.t("finns i inget förråd", "unlisted"),
            SoftwareSource::Sideloaded => self.t("installerad vid sidan av", "sideloaded"),
        }
    }

    /// What a source means, for the table's tooltip and the legend (INTERFACE.md's wording).
    pub fn source_help(self, s: SoftwareSource) -> &'static str {
        match s {
            SoftwareSource::OsVendor => self.t(
                "Operativsystemets eget förråd erbjuder paketet i denna eller en nyare version.",
                "The operating system's own repository offers this version or a newer one.",
            ),
            SoftwareSource::ThirdPartyRepo => self.t(
                "Ett annat konfigurerat förråd erbjuder paketet.",
                "Another configured repository offers this package.",
            ),
            SoftwareSource::Store => self.t(
                "Snap Store, en Flatpak-källa, Mac App Store eller Microsoft Store.",
                "Snap Store, a Flatpak remote, Mac App Store or Microsoft Store.",
            ),
            SoftwareSource::Unlisted => self.t(
                "Installerat via pakethanteraren, men inget konfigurerat förråd erbjuder denna version.",
                "Installed through the package manager, but no configured repository offers this version.",
            ),
            SoftwareSource::Sideloaded => self.t(
                "Ingen pakethanterare alls: AppImage, en fil i /opt eller ~/.local/bin, ett lokalt paket.",
                "No package manager at all: an AppImage, a file in /opt or ~/.local/bin, a local bundle.",
            ),
        }
    }

    pub fn security(self, s: &MailSecurity) -> &'static str {
        match *s {
            MailSecurity::Tls => "TLS",
            MailSecurity::Starttls => "STARTTLS",
            MailSecurity::None => self.t("ingen kryptering", "none"),
            MailSecurity::Default => self.t("klientens standard", "client default"),
        }
    }

    pub fn forward_kind(self, k: &ForwardKind) -> &'static str {
        match *k {
            ForwardKind::Forward => self.t("vidarebefordran", "forward"),
            ForwardKind::Redirect => self.t("omdirigering (sieve)", "redirect (sieve)"),
            ForwardKind::DotForward => "~/.forward",
            ForwardKind::Pipe => self.t("till ett program", "to a program"),
            ForwardKind::File => self.t("till en fil", "to a file"),
        }
    }

    /// What a wipe would leave readable (or why it cannot be judged), one line each, in this
    /// language: said from the API's data (the partial state's items, the unknown state's
    /// reason) where it gives it, else as the API says it. The Swedish wording lives in
    /// `readiness.rs`, which the Swedish incident report shares.
    pub fn readable_lines(self, w: &pb::WipeReadiness) -> Vec<String> {
        match self {
            Self::En => w.readable.clone(),
            Self::Sv => crate::readiness::readable_lines_sv(w),
        }
    }

    /// A finding's severity as the admin API names it (violation, warning, notice).
    pub fn severity(self, s: &str) -> &'static str {
        match s {
            "violation" => self.t("överträdelse", "violation"),
            "warning" => self.t("varning", "warning"),
            "notice" => self.t("notering", "notice"),
            _ => self.t("okänd", "unknown"),
        }
    }

    /// A finding's status as the admin API names it (open, resolved, exempted).
    pub fn finding_status(self, s: &str) -> &'static str {
        match s {
            "open" => self.t("öppen", "open"),
            "resolved" => self.t("åtgärdad", "resolved"),
            "exempted" => self.t("undantagen", "exempted"),
            _ => self.t("okänd", "unknown"),
        }
    }

    /// A trip's kind as the admin API names it (business, private).
    pub fn trip_kind(self, s: &str) -> &'static str {
        match s {
            "business" => self.t("tjänsteresa", "business"),
            "private" => self.t("privat resa", "private"),
            _ => self.t("okänd", "unknown"),
        }
    }

    /// The heading of an error page for an admin API status.
    pub fn status_heading(self, code: Code) -> &'static str {
        match code {
            Code::InvalidArgument => {
                self.t("Uppgifterna godtogs inte", "The input was not accepted")
            }
            Code::NotFound => self.t("Hittades inte", "Not found"),
            Code::AlreadyExists => self.t("Finns redan", "Already exists"),
            Code::PermissionDenied => self.t("Inte tillåtet", "Not allowed"),
            Code::Unauthenticated => self.t("Inte inloggad", "Not logged in"),
            Code::FailedPrecondition => self.t("Går inte just nu", "Not possible now"),
            _ => self.t("Något gick fel på servern", "The server could not do this"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use vakt_proto::model::ReadableWhy;

    #[test]
    fn swedish_is_the_default_and_codes_round_trip() {
        assert_eq!(Lang::default(), Lang::Sv);
        for l in [Lang::Sv, Lang::En] {
            assert_eq!(Lang::parse(l.code()), Some(l));
            assert_ne!(l.other(), l);
        }
        assert_eq!(Lang::parse("de"), None);
    }

    #[test]
    fn states_have_both_languages() {
        let lost = pb::DeviceState::Lost as i32;
        assert_eq!(Lang::Sv.device_state(lost), "förlorad");
        assert_eq!(Lang::En.device_state(lost), "lost");
        let waiting = pb::CommandState::AwaitingApproval as i32;
        assert_eq!(Lang::Sv.command_state(waiting), "väntar på godkännande");
        assert_eq!(Lang::En.command_state(99), "unknown");
    }

    #[test]
    fn what_stays_readable_is_said_in_swedish() {
        for why in ReadableWhy::ALL {
            assert_ne!(
                crate::readiness::readable_why_sv(why),
                why.en(),
                "{why:?} has no Swedish"
            );
        }
        let item = |what: &str, device: &str, why: &str| pb::ReadableItem {
            what: what.into(),
            device: device.into(),
            why: why.into(),
        };
        let w = pb::WipeReadiness {
            state: "partial".into(),
            readable: vec![
                "/home (/dev/sdb1): not encrypted".into(),
                "/dev/sdc1: LUKS, not among the configured wipe devices".into(),
                "swap (/dev/sda3): a reason from a newer server".into(),
            ],
            items: vec![
                item("/home", "/dev/sdb1", "not-encrypted"),
                item("", "/dev/sdc1", "not-configured"),
                item("swap", "/dev/sda3", "newer"),
            ],
            ..Default::default()
        };
        assert_eq!(
            Lang::Sv.readable_lines(&w),
            [
                "/home (/dev/sdb1): inte krypterad",
                "/dev/sdc1: LUKS, inte bland agentens inställda raderingsenheter",
                "swap (/dev/sda3): a reason from a newer server",
            ]
        );
        assert_eq!(Lang::En.readable_lines(&w), w.readable);
    }

    #[test]
    fn why_readiness_is_unknown_is_said_in_swedish() {
        use crate::readiness::{Readiness, Unknown};
        let cases = [
            (Unknown::NoStorageSection, "ingen lagringsrapport ännu"),
            (
                Unknown::NoWipePlan,
                "agenten rapporterar inte sin raderingsstrategi",
            ),
            (
                Unknown::NoUserDataMount,
                "ingen monteringspunkt med användardata (/, /home, /var, /srv) rapporterad",
            ),
            (
                Unknown::SectionUnreadable("bad tag".into()),
                "den lagrade lagringsrapporten går inte att läsa: bad tag",
            ),
            (
                Unknown::StoreUnreadable("io".into()),
                "databasen gick inte att läsa: io",
            ),
        ];
        for (why, sv) in cases {
            let w = Readiness::Unknown(why.clone()).to_pb(0);
            assert_eq!(Lang::Sv.readable_lines(&w), [sv], "{why:?}");
            // The API's English line, unchanged for the CLI and JSON.
            assert_eq!(Lang::En.readable_lines(&w), [why.en()], "{why:?}");
            assert_eq!(Unknown::from_pb(&why.to_pb()), Some(why));
        }
        assert_eq!(
            Readiness::Unknown(Unknown::NoStorageSection)
                .to_pb(0)
                .readable,
            ["no storage section reported yet"]
        );
        // A reason from a newer server, or from an older one without the data: as it says it.
        let newer = pb::WipeReadiness {
            state: "unknown".into(),
            readable: vec!["a reason from a newer server".into()],
            unknown: Some(pb::UnknownReason {
                why: "newer".into(),
                detail: String::new(),
            }),
            ..Default::default()
        };
        assert_eq!(Lang::Sv.readable_lines(&newer), newer.readable);
        let older = pb::WipeReadiness {
            unknown: None,
            ..newer
        };
        assert_eq!(Lang::Sv.readable_lines(&older), older.readable);
    }
}
