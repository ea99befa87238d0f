//! Why single sign-on did not let someone in (`oidc.rs`), as data: the login page says it in
//! the reader's language, the server log and the audit log in English (`Display`, which is the
//! English rendering, so the two never drift apart).
//!
//! The provider's and the libraries' own error texts (a TLS failure, "nonce mismatch") are
//! technical detail and stay as they were written; the sentence around them is translated.

use super::i18n::Lang;
use std::fmt;

/// What went wrong talking to the identity provider or verifying its answer. The `String`s are
/// the underlying errors' own text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderError {
    /// Discovery or the key set could not be fetched or read.
    Unusable {
        issuer: String,
        cause: String,
    },
    NoTokenEndpoint(String),
    NoToken(String),
    NoIdToken,
    TokenRefused(String),
    /// Signed by a key the provider's key set does not have, even fetched again (or fetched
    /// too recently to fetch again).
    UnknownKey,
    NotJwt,
    ClaimsNotBase64(String),
    ClaimsNotJson(String),
}

impl ProviderError {
    pub fn say(&self, l: Lang) -> String {
        match self {
            Self::Unusable { issuer, cause } => format!(
                "{} {issuer} {} {cause}",
                l.t("identitetsleverantören", "the identity provider"),
                l.t("kunde inte användas:", "could not be used:"),
            ),
            Self::NoTokenEndpoint(e) => format!(
                "{} {e}",
                l.t(
                    "identitetsleverantören har ingen token-slutpunkt:",
                    "the identity provider has no token endpoint:"
                )
            ),
            Self::NoToken(e) => format!(
                "{} {e}",
                l.t(
                    "identitetsleverantören utfärdade ingen token:",
                    "the identity provider did not issue a token:"
                )
            ),
            Self::NoIdToken => l
                .t(
                    "identitetsleverantörens svar saknar ID-token.",
                    "the identity provider's answer has no ID token.",
                )
                .into(),
            Self::TokenRefused(e) => format!("{} {e}", token_refused(l)),
            Self::UnknownKey => format!(
                "{} {}",
                token_refused(l),
                l.t(
                    "den är signerad med en nyckel som inte finns i identitetsleverantörens \
                     nyckeluppsättning (hämtad för mindre än 30 sekunder sedan).",
                    "it is signed by a key that is not in the identity provider's key set \
                     (fetched less than 30 seconds ago).",
                )
            ),
            Self::NotJwt => l
                .t(
                    "ID-token är inte en signerad JWT.",
                    "the ID token is not a signed JWT.",
                )
                .into(),
            Self::ClaimsNotBase64(e) => format!(
                "{} {e}",
                l.t(
                    "ID-tokens anspråk är inte base64url:",
                    "the ID token's claims are not base64url:"
                )
            ),
            Self::ClaimsNotJson(e) => format!(
                "{} {e}",
                l.t(
                    "ID-tokens anspråk är inte JSON:",
                    "the ID token's claims are not JSON:"
                )
            ),
        }
    }
}

fn token_refused(l: Lang) -> &'static str {
    l.t("ID-token avvisades:", "the ID token was refused:")
}

/// Why the claims of a verified ID token name no person.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoPerson {
    Nameless,
    Unverified { email: String, claim: String },
}

impl NoPerson {
    pub fn say(&self, l: Lang) -> String {
        match self {
            Self::Nameless => l
                .t(
                    "ID-token pekar inte ut någon: den har varken anspråket email eller \
                     preferred_username.",
                    "the ID token names nobody: it has neither an email nor a \
                     preferred_username claim.",
                )
                .into(),
            Self::Unverified { email, claim } => match l {
                Lang::Sv => format!(
                    "identitetsleverantören har inte verifierat adressen {email} (email_verified \
                     är {claim}), så den kan inte peka ut en person i Vakt. Verifiera adressen \
                     hos leverantören, eller låt den skicka endast verifierade adresser."
                ),
                Lang::En => format!(
                    "the identity provider has not verified the address {email} (email_verified \
                     is {claim}), so it cannot name a person in Vakt. Verify the address at the \
                     provider, or have it send only verified addresses."
                ),
            },
        }
    }
}

/// Why a sign-in was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    NotSetUp,
    /// The callback's `state` names no attempt this console started, or an expired one.
    UnknownAttempt,
    /// The attempt's cookie is missing or another browser's.
    OtherBrowser,
    /// The provider's `error` and `error_description`.
    ProviderSaidNo {
        error: String,
        description: String,
    },
    NoCode,
    Provider(ProviderError),
    NoPerson(NoPerson),
    /// Entra ID's groups overage: `claim` moved to `_claim_names`.
    Overage {
        person: String,
        claim: String,
    },
    /// None of the claim's values maps to a role.
    NoRole {
        person: String,
        claim: String,
        values: Vec<String>,
    },
    /// The console credential could not be stored.
    NotStored,
    /// The login's audit entry could not be written.
    NotRecorded,
}

impl Refusal {
    /// The reason for the login page, after "Sign-in refused:".
    pub fn say(&self, l: Lang) -> String {
        match self {
            Self::NotSetUp => l
                .t(
                    "enkel inloggning är inte inställd på den här servern.",
                    "single sign-on is not set up on this server.",
                )
                .into(),
            Self::UnknownAttempt => l
                .t(
                    "inloggningsförsöket är okänt eller har gått ut (dess state stämmer inte med \
                     något som konsolen startade). Börja om.",
                    "this sign-in attempt is unknown or has expired (its state matches none this \
                     console started). Start again.",
                )
                .into(),
            Self::OtherBrowser => l
                .t(
                    "inloggningen startades inte i den här webbläsaren.",
                    "this sign-in was not started in this browser.",
                )
                .into(),
            Self::ProviderSaidNo { error, description } => format!(
                "{} {error} {description}",
                l.t(
                    "identitetsleverantören nekade:",
                    "the identity provider said no:"
                )
            ),
            Self::NoCode => l
                .t(
                    "identitetsleverantörens svar saknar kod.",
                    "the identity provider's answer has no code.",
                )
                .into(),
            Self::Provider(e) => e.say(l),
            Self::NoPerson(e) => e.say(l),
            Self::Overage { person, claim } => match l {
                Lang::Sv => format!(
                    "{person} är med i för många grupper för att de ska få plats i ID-token: \
                     identitetsleverantören utelämnade anspråket '{claim}' och hänvisar i stället \
                     till Microsoft Graph (Entra ID:s \"groups overage\", _claim_names), som Vakt \
                     inte frågar. Tilldela Vakts approller till personer eller grupper i \
                     appregistreringen och ange role_claim = \"roles\" i [console.oidc], med \
                     rollnamnen i [console.oidc.roles]."
                ),
                Lang::En => format!(
                    "{person} is in too many groups for the ID token: the identity provider left \
                     the '{claim}' claim out and points to Microsoft Graph instead (Entra ID's \
                     \"groups overage\", _claim_names), which Vakt does not query. Assign Vakt's \
                     app roles to people or groups in the app registration and set \
                     role_claim = \"roles\" in [console.oidc], with the role names in \
                     [console.oidc.roles]."
                ),
            },
            Self::NoRole {
                person,
                claim,
                values,
            } => format!(
                "{person} {} '{claim}' ({}) {}",
                l.t(
                    "har ingen roll i Vakt: anspråket",
                    "has no role in Vakt: the claim"
                ),
                if values.is_empty() {
                    "-".to_string()
                } else {
                    values.join(", ")
                },
                l.t(
                    "ger ingen roll i [console.oidc.roles].",
                    "gives no role in [console.oidc.roles]."
                ),
            ),
            Self::NotStored => l
                .t(
                    "inloggningen kunde inte sparas. Försök igen om en stund.",
                    "the login could not be stored. Try again in a moment.",
                )
                .into(),
            Self::NotRecorded => l
                .t(
                    "inloggningen kunde inte loggas. Försök igen om en stund.",
                    "the login could not be recorded. Try again in a moment.",
                )
                .into(),
        }
    }
}

/// In English, for the server log and the audit log.
impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.say(Lang::En))
    }
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.say(Lang::En))
    }
}

impl fmt::Display for NoPerson {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.say(Lang::En))
    }
}

impl std::error::Error for Refusal {}
impl std::error::Error for ProviderError {}
impl std::error::Error for NoPerson {}

impl From<ProviderError> for Refusal {
    fn from(e: ProviderError) -> Self {
        Self::Provider(e)
    }
}

impl From<NoPerson> for Refusal {
    fn from(e: NoPerson) -> Self {
        Self::NoPerson(e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every refusal, one of each kind.
    fn all() -> Vec<Refusal> {
        let provider = [
            ProviderError::Unusable {
                issuer: "https://login.example.org".into(),
                cause: "connection refused".into(),
            },
            ProviderError::NoTokenEndpoint("none".into()),
            ProviderError::NoToken("invalid_grant".into()),
            ProviderError::NoIdToken,
            ProviderError::TokenRefused("nonce mismatch".into()),
            ProviderError::UnknownKey,
            ProviderError::NotJwt,
            ProviderError::ClaimsNotBase64("bad byte".into()),
            ProviderError::ClaimsNotJson("eof".into()),
        ];
        let mut all = vec![
            Refusal::NotSetUp,
            Refusal::UnknownAttempt,
            Refusal::OtherBrowser,
            Refusal::ProviderSaidNo {
                error: "access_denied".into(),
                description: "denied".into(),
            },
            Refusal::NoCode,
            Refusal::NoPerson(NoPerson::Nameless),
            Refusal::NoPerson(NoPerson::Unverified {
                email: "anna@example.org".into(),
                claim: "false".into(),
            }),
            Refusal::Overage {
                person: "anna@example.org".into(),
                claim: "groups".into(),
            },
            Refusal::NoRole {
                person: "anna@example.org".into(),
                claim: "groups".into(),
                values: vec!["staff".into()],
            },
            Refusal::NotStored,
            Refusal::NotRecorded,
        ];
        all.extend(provider.into_iter().map(Refusal::Provider));
        all
    }

    #[test]
    fn every_refusal_is_said_in_both_languages() {
        for r in all() {
            let (sv, en) = (r.say(Lang::Sv), r.say(Lang::En));
            assert_ne!(sv, en, "{r:?} has no Swedish");
            assert_eq!(r.to_string(), en, "the log says the English");
        }
    }

    #[test]
    fn refusals_read_naturally_in_swedish() {
        let unverified = Refusal::from(NoPerson::Unverified {
            email: "anna@example.org".into(),
            claim: "false".into(),
        });
        assert!(
            unverified.say(Lang::Sv).starts_with(
                "identitetsleverantören har inte verifierat adressen anna@example.org"
            ),
            "{}",
            unverified.say(Lang::Sv)
        );
        let overage = Refusal::Overage {
            person: "anna@example.org".into(),
            claim: "groups".into(),
        };
        let sv = overage.say(Lang::Sv);
        assert!(
            sv.contains("för många grupper") && sv.contains("approller"),
            "{sv}"
        );
        assert!(
            sv.contains("role_claim = \"roles\""),
            "the setting stays as written: {sv}"
        );
        assert_eq!(
            Refusal::NoPerson(NoPerson::Nameless).say(Lang::Sv),
            "ID-token pekar inte ut någon: den har varken anspråket email eller \
             preferred_username."
        );
        // The library's own text stays as it was written; the sentence around it is Swedish.
        assert_eq!(
            Refusal::from(ProviderError::TokenRefused("nonce mismatch".into())).say(Lang::Sv),
            "ID-token avvisades: nonce mismatch"
        );
    }
}
