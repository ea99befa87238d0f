//! Logging in to the console with the organisation's OpenID Connect provider (`[console.oidc]`).
//!
//! `GET /login/oidc` takes the provider's discovery document and key set from a cache shared by
//! all logins (`oidc_cache.rs`: fetched at most once per five minutes, so unauthenticated
//! requests cannot make the console hammer the provider), remembers a login attempt under a
//! random `state` (with its PKCE verifier and nonce) and sends the browser to the provider.
//! `GET /login/oidc/callback` takes the attempt its `state` names (once: a replayed callback
//! finds nothing), checks that the same browser started it (a `SameSite=Lax`
//! cookie: the session cookie is `Strict`, which a browser does not send on the provider's
//! cross-site redirect), exchanges the code with the verifier, and verifies the ID token with
//! `openidconnect` against the issuer, the client id, the key set (fetched again if the token's
//! key is not in the cached one, so a rotated key is found; at most once per 30 seconds), the
//! expiry and the nonce.
//!
//! The person is the token's `email` claim, else `preferred_username`; the role is the highest
//! that the values of `role_claim` map to in `[console.oidc.roles]`. No mapped value: refused,
//! with the reason on the login page, and no session. A person's name decides the two-person
//! rule and whom the audit log blames, so an address the provider says it has not verified
//! (`email_verified` false, or the string "false", or any value but true) names nobody: the
//! login is refused and the refusal audited under the token's subject. When the claim is
//! absent the address is taken as the provider's word: Entra ID never sends it (its `email` is
//! the mail attribute in the directory of the tenant the issuer names). Entra's "groups overage" (a person in too
//! many groups gets `_claim_names` pointing at Microsoft Graph instead of a `groups` claim) is
//! refused with a reason that says so and what to do (app roles, `role_claim = "roles"`).
//!
//! The console then acts for the person exactly as for a pasted token: it mints an admin API
//! token named by the person with the mapped role, stored hashed like every token, expiring
//! with the session's absolute limit, and revoked at logout or when the session expires. Since
//! a token's name is a person (`api/tokens.rs`), anna@example.org signed in is the same person
//! as a token named anna@example.org for the two-person rule, however she logs in. Logins,
//! refusals and logouts are in the audit log under the person's address. A refusal's reason is
//! a `Refusal` (`oidc_refusal.rs`), said on the login page in the language the attempt began in.

use super::i18n::Lang;
use super::oidc_cache::Cache;
use super::oidc_http::Http;
pub use super::oidc_refusal::NoPerson;
use super::oidc_refusal::{ProviderError, Refusal};
use super::session::{self, User};
use super::{Console, auth, view};
use crate::api::admin::Actor;
use crate::config::{OidcFile, OidcRoles};
use crate::timefmt::now_ms;
use askama::Template;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use openidconnect::core::{CoreAuthenticationFlow, CoreClient, CoreProviderMetadata};
use openidconnect::{
    AuthorizationCode, ClaimsVerificationError, ClientId, ClientSecret, CsrfToken,
    EndpointMaybeSet, EndpointNotSet, EndpointSet, IssuerUrl, Nonce, PkceCodeChallenge,
    PkceCodeVerifier, RedirectUrl, Scope, SignatureVerificationError, TokenResponse,
};
use serde::Deserialize;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vakt_proto::pb;

/// A login attempt must come back from the provider within this time.
const PENDING_TIMEOUT: Duration = Duration::from_secs(10 * 60);
/// At most this many attempts are remembered; past it, the oldest go. Starting one costs the
/// provider nothing (the metadata is cached), so this bounds memory.
const MAX_PENDING: usize = 10_000;

/// The client `from_provider_metadata` makes: authorization endpoint set, token and userinfo
/// endpoints as the provider announced them.
type Client = CoreClient<
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointMaybeSet,
    EndpointMaybeSet,
>;

#[derive(Debug, thiserror::Error)]
pub enum SsoError {
    #[error("console.oidc.client_secret_file {}: {source}", .path.display())]
    Secret {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("console.oidc.client_secret_file {}: the file is empty", .0.display())]
    EmptySecret(PathBuf),
    #[error("console.oidc.client_secret_file {}: {why}", .path.display())]
    Exposed { path: PathBuf, why: String },
    #[error("console.oidc.{field}: {message}")]
    Url {
        field: &'static str,
        message: String,
    },
    #[error("console.oidc: TLS client: {0}")]
    Tls(#[from] rustls::Error),
}

/// How the console lets people in: pasted tokens, single sign-on, or both.
#[derive(Debug)]
pub struct Login {
    pub token_login: bool,
    pub sso: Option<Sso>,
}

impl Default for Login {
    fn default() -> Self {
        Self {
            token_login: true,
            sso: None,
        }
    }
}

impl Login {
    /// From `[console.oidc]`, reading the client secret's file; none: token login only.
    pub fn from_config(cfg: Option<&OidcFile>) -> Result<Self, SsoError> {
        match cfg {
            None => Ok(Self::default()),
            Some(c) => Ok(Self {
                token_login: c.token_login,
                sso: Some(Sso::from_config(c)?),
            }),
        }
    }
}

/// The provider's settings and the login attempts under way.
pub struct Sso {
    issuer: IssuerUrl,
    client_id: ClientId,
    client_secret: Option<ClientSecret>,
    redirect: RedirectUrl,
    role_claim: String,
    roles: OidcRoles,
    http: Http,
    /// The provider's metadata and keys, shared by every login (an `Arc` so tests can age it).
    cache: std::sync::Arc<Cache>,
    pending: Mutex<HashMap<String, Pending>>,
}

impl std::fmt::Debug for Sso {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sso")
            .field("issuer", &self.issuer.as_str())
            .field("client_id", &self.client_id.as_str())
            .finish_non_exhaustive()
    }
}

/// One login attempt, between the redirect to the provider and its callback.
struct Pending {
    /// The value of the browser's `vakt_oidc` cookie: the callback must come from it.
    binding: String,
    nonce: Nonce,
    verifier: PkceCodeVerifier,
    next: String,
    lang: Lang,
    started: Instant,
}

impl Sso {
    pub fn from_config(c: &OidcFile) -> Result<Self, SsoError> {
        let client_secret = match &c.client_secret_file {
            None => None,
            Some(path) => {
                let io = |source| SsoError::Secret {
                    path: path.clone(),
                    source,
                };
                let meta = std::fs::metadata(path).map_err(io)?;
                if let Some(why) = crate::fsutil::exposed(&meta) {
                    return Err(SsoError::Exposed {
                        path: path.clone(),
                        why,
                    });
                }
                let text = std::fs::read_to_string(path).map_err(io)?;
                let secret = text.trim();
                if secret.is_empty() {
                    return Err(SsoError::EmptySecret(path.clone()));
                }
                Some(ClientSecret::new(secret.to_string()))
            }
        };
        let url_err = |field| {
            move |e: openidconnect::url::ParseError| SsoError::Url {
                field,
                message: e.to_string(),
            }
        };
        let issuer = IssuerUrl::new(c.issuer.clone()).map_err(url_err("issuer"))?;
        Ok(Self {
            cache: std::sync::Arc::new(Cache::new(issuer.clone())),
            issuer,
            client_id: ClientId::new(c.client_id.clone()),
            client_secret,
            redirect: RedirectUrl::new(c.redirect_url.clone()).map_err(url_err("redirect_url"))?,
            role_claim: c.role_claim.clone(),
            roles: c.roles.clone(),
            http: Http::new()?,
            pending: Mutex::default(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Pending>> {
        // Each operation is one insert, retain or remove: a poisoned map is still valid.
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn remember(&self, state: String, p: Pending) {
        let mut map = self.lock();
        let now = p.started;
        map.retain(|_, q| now.saturating_duration_since(q.started) < PENDING_TIMEOUT);
        while map.len() >= MAX_PENDING {
            let oldest = map
                .iter()
                .min_by_key(|(_, q)| q.started)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => map.remove(&k),
                None => break,
            };
        }
        map.insert(state, p);
    }

    /// The attempt `state` names, once, if it has not expired.
    fn take(&self, state: &str, now: Instant) -> Option<Pending> {
        let p = self.lock().remove(state)?;
        (now.saturating_duration_since(p.started) < PENDING_TIMEOUT).then_some(p)
    }

    /// A client for the provider's (cached) discovery document and key set.
    async fn client(&self) -> Result<Client, ProviderError> {
        let meta = self.cache.metadata(&self.http, Instant::now()).await?;
        Ok(self.client_for(meta))
    }

    fn client_for(&self, meta: CoreProviderMetadata) -> Client {
        CoreClient::from_provider_metadata(meta, self.client_id.clone(), self.client_secret.clone())
            .set_redirect_uri(self.redirect.clone())
    }

    /// The metadata cache, for tests that age it.
    #[cfg(test)]
    pub(super) fn cache(&self) -> std::sync::Arc<Cache> {
        self.cache.clone()
    }

    /// Exchanges the code and verifies the ID token: the verified token's claims.
    async fn finish(
        &self,
        code: &str,
        p: Pending,
    ) -> Result<serde_json::Map<String, serde_json::Value>, ProviderError> {
        let client = self.client().await?;
        let answer = client
            .exchange_code(AuthorizationCode::new(code.to_string()))
            .map_err(|e| ProviderError::NoTokenEndpoint(e.to_string()))?
            .set_pkce_verifier(p.verifier)
            .request_async(&self.http)
            .await
            .map_err(|e| ProviderError::NoToken(error_chain(&e)))?;
        let id_token = answer.id_token().ok_or(ProviderError::NoIdToken)?;
        let refused = |e: ClaimsVerificationError| ProviderError::TokenRefused(e.to_string());
        match id_token.claims(&client.id_token_verifier(), &p.nonce) {
            Ok(_) => {}
            // Signed by a key the cached set lacks: the provider may have rotated its key.
            Err(ClaimsVerificationError::SignatureVerification(
                SignatureVerificationError::NoMatchingKey,
            )) => {
                let Some(meta) = self.cache.refresh_keys(&self.http, Instant::now()).await? else {
                    return Err(ProviderError::UnknownKey);
                };
                let client = self.client_for(meta);
                id_token
                    .claims(&client.id_token_verifier(), &p.nonce)
                    .map_err(refused)?;
            }
            Err(e) => return Err(refused(e)),
        }
        // Verified above (signature, issuer, audience, expiry, nonce): its payload is the
        // provider's word. The role claim is not a standard claim, so it is read from there.
        verified_payload(&id_token.to_string())
    }
}

/// An error with its causes, for a page: "discovery failed: connection refused".
pub(super) fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let text = c.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        cur = c.source();
    }
    s
}

/// The claims of a JWT whose signature was already verified.
fn verified_payload(
    jwt: &str,
) -> Result<serde_json::Map<String, serde_json::Value>, ProviderError> {
    let payload = jwt.split('.').nth(1).ok_or(ProviderError::NotJwt)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|e| ProviderError::ClaimsNotBase64(e.to_string()))?;
    serde_json::from_slice(&bytes).map_err(|e| ProviderError::ClaimsNotJson(e.to_string()))
}

/// Who the claims name: `email`, else `preferred_username`, trimmed (the first that is a
/// non-empty string). An `email` whose `email_verified` claim is present and not true (the
/// boolean or the string "true") names nobody, and the login is refused rather than falling
/// back to `preferred_username`: the provider told us the address may not be the person's.
/// An absent (or null) `email_verified` is accepted, as Entra ID never sends it.
pub fn person(claims: &serde_json::Map<String, serde_json::Value>) -> Result<String, NoPerson> {
    let name = |k: &str| {
        claims
            .get(k)
            .and_then(serde_json::Value::as_str)
            .map(str::trim)
            .filter(|s| !s.is_empty())
    };
    if let Some(email) = name("email") {
        return match claims.get("email_verified") {
            None | Some(serde_json::Value::Null) | Some(serde_json::Value::Bool(true)) => {
                Ok(email.to_string())
            }
            Some(serde_json::Value::String(s)) if s.trim().eq_ignore_ascii_case("true") => {
                Ok(email.to_string())
            }
            Some(other) => Err(NoPerson::Unverified {
                email: email.to_string(),
                claim: other.to_string(),
            }),
        };
    }
    name("preferred_username")
        .map(str::to_string)
        .ok_or(NoPerson::Nameless)
}

/// Whether `role_claim` is missing because the provider moved it elsewhere: Entra ID's
/// "groups overage", where a person in more groups than fit in a token gets
/// `_claim_names: {"groups": "src1"}` (and `_claim_sources` naming Microsoft Graph) instead.
pub fn claim_moved(claims: &serde_json::Map<String, serde_json::Value>, role_claim: &str) -> bool {
    !claims.contains_key(role_claim)
        && claims
            .get("_claim_names")
            .and_then(serde_json::Value::as_object)
            .is_some_and(|names| names.contains_key(role_claim))
}

/// The values of a role claim: a list of strings or one string (other values are skipped).
pub fn claim_values(v: Option<&serde_json::Value>) -> Vec<String> {
    match v {
        Some(serde_json::Value::String(s)) => vec![s.clone()],
        Some(serde_json::Value::Array(a)) => a
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    }
}

/// The highest role any of `values` maps to. Values compare exactly, as providers send group
/// names and ids.
pub fn role_for(values: &[String], roles: &OidcRoles) -> Option<pb::Role> {
    let has = |mapped: &[String]| values.iter().any(|v| mapped.contains(v));
    if has(&roles.admin) {
        Some(pb::Role::Admin)
    } else if has(&roles.operator) {
        Some(pb::Role::Operator)
    } else if has(&roles.viewer) {
        Some(pb::Role::Viewer)
    } else {
        None
    }
}

/// The cookie that ties a callback to the browser that started the login. `Lax`, so the
/// browser sends it on the provider's redirect back; `Path=/` for the `__Host-` prefix.
fn binding_cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-vakt_oidc"
    } else {
        "vakt_oidc"
    }
}

fn binding_cookie(value: &str, secure: bool) -> String {
    format!(
        "{}={value}; Path=/; HttpOnly; SameSite=Lax; Max-Age={}{}",
        binding_cookie_name(secure),
        PENDING_TIMEOUT.as_secs(),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that makes the browser forget the attempt's cookie.
fn clear_binding_cookie(secure: bool) -> String {
    format!(
        "{}=; Path=/; HttpOnly; SameSite=Lax; Max-Age=0{}",
        binding_cookie_name(secure),
        if secure { "; Secure" } else { "" }
    )
}

fn binding_of(headers: &HeaderMap, secure: bool) -> Option<String> {
    let name = binding_cookie_name(secure);
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.to_string())
}

/// The login page with why single sign-on did not let the person in; no session, and the
/// attempt's cookie cleared.
fn refused(
    console: &Console,
    status: StatusCode,
    lang: Lang,
    next: &str,
    why: impl Into<Refusal>,
) -> Response {
    let why = why.into();
    tracing::warn!("console: single sign-on refused: {why}");
    let mut res = auth::fresh_login(console, status, lang, next, |l| {
        format!(
            "{} {}",
            l.t("Inloggningen nekades:", "Sign-in refused:"),
            why.say(l)
        )
    });
    if let Ok(v) = HeaderValue::from_str(&clear_binding_cookie(console.secure())) {
        res.headers_mut().append(header::SET_COOKIE, v);
    }
    res
}

/// `GET /login/oidc`: to the provider.
pub async fn start(
    State(console): State<Console>,
    Query(q): Query<auth::LoginQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = console
        .session_of(&headers)
        .map(|(_, s)| s.lang)
        .or_else(|| Lang::parse(&q.lang))
        .unwrap_or_default();
    let Some(sso) = console.sso() else {
        return refused(
            &console,
            StatusCode::NOT_FOUND,
            lang,
            &q.next,
            Refusal::NotSetUp,
        );
    };
    let client = match sso.client().await {
        Ok(c) => c,
        Err(why) => return refused(&console, StatusCode::BAD_GATEWAY, lang, &q.next, why),
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let (url, state, nonce) = client
        .authorize_url(
            CoreAuthenticationFlow::AuthorizationCode,
            CsrfToken::new_random,
            Nonce::new_random,
        )
        .add_scope(Scope::new("email".into()))
        .add_scope(Scope::new("profile".into()))
        .set_pkce_challenge(challenge)
        .url();
    let binding = session::random_id();
    sso.remember(
        state.secret().clone(),
        Pending {
            binding: binding.clone(),
            nonce,
            verifier,
            next: view::local_path(&q.next).unwrap_or("/").to_string(),
            lang,
            started: Instant::now(),
        },
    );
    (
        StatusCode::SEE_OTHER,
        [
            (header::LOCATION, url.to_string()),
            (
                header::SET_COOKIE,
                binding_cookie(&binding, console.secure()),
            ),
        ],
    )
        .into_response()
}

#[derive(Deserialize, Default)]
pub struct CallbackQuery {
    #[serde(default)]
    state: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    error: String,
    #[serde(default)]
    error_description: String,
}

/// The page after a successful sign-in: it sets the session cookie and moves on with a meta
/// refresh, a navigation from this site, so the browser sends the `Strict` cookie with it (a
/// redirect would still be part of the provider's cross-site navigation).
#[derive(Template)]
#[template(path = "sso_done.html")]
struct Done {
    lang: &'static str,
    next: String,
    text: &'static str,
}

/// `GET /login/oidc/callback`: the provider's answer.
pub async fn callback(
    State(console): State<Console>,
    Query(q): Query<CallbackQuery>,
    headers: HeaderMap,
) -> Response {
    let fallback = console
        .session_of(&headers)
        .map(|(_, s)| s.lang)
        .unwrap_or_default();
    let Some(sso) = console.sso() else {
        return refused(
            &console,
            StatusCode::NOT_FOUND,
            fallback,
            "",
            Refusal::NotSetUp,
        );
    };
    let Some(p) = sso.take(&q.state, Instant::now()) else {
        return refused(
            &console,
            StatusCode::BAD_REQUEST,
            fallback,
            "",
            Refusal::UnknownAttempt,
        );
    };
    let (lang, next) = (p.lang, p.next.clone());
    let refuse = |status, why: Refusal| refused(&console, status, lang, &next, why);
    if !binding_of(&headers, console.secure()).is_some_and(|b| session::same_secret(&b, &p.binding))
    {
        return refuse(StatusCode::BAD_REQUEST, Refusal::OtherBrowser);
    }
    if !q.error.is_empty() {
        return refuse(
            StatusCode::UNAUTHORIZED,
            Refusal::ProviderSaidNo {
                error: q.error,
                description: q.error_description,
            },
        );
    }
    if q.code.is_empty() {
        return refuse(StatusCode::BAD_REQUEST, Refusal::NoCode);
    }
    let claims = match sso.finish(&q.code, p).await {
        Ok(c) => c,
        Err(why) => return refuse(StatusCode::UNAUTHORIZED, why.into()),
    };
    let person = match person(&claims) {
        Ok(p) => p,
        Err(why @ NoPerson::Nameless) => return refuse(StatusCode::FORBIDDEN, why.into()),
        Err(why @ NoPerson::Unverified { .. }) => {
            // Not under the address: it may be someone else's. The subject is the provider's
            // own id of whoever signed in.
            let sub = claims
                .get("sub")
                .and_then(serde_json::Value::as_str)
                .unwrap_or("-");
            audit_refusal(&console, &format!("sso-sub:{sub}"), &why.to_string()).await;
            return refuse(StatusCode::FORBIDDEN, why.into());
        }
    };
    let values = claim_values(claims.get(&sso.role_claim));
    let Some(role) = role_for(&values, &sso.roles) else {
        let claim = sso.role_claim.clone();
        let (detail, why) = if claim_moved(&claims, &claim) {
            (
                format!("claim '{claim}' moved to _claim_names (overage)"),
                Refusal::Overage {
                    person: person.clone(),
                    claim,
                },
            )
        } else {
            (
                format!("no role from claim '{claim}': [{}]", values.join(", ")),
                Refusal::NoRole {
                    person: person.clone(),
                    claim,
                    values,
                },
            )
        };
        // The provider vouched for this person, so the refusal is theirs to see in the log.
        audit_refusal(&console, &format!("sso:{person}"), &detail).await;
        return refuse(StatusCode::FORBIDDEN, why);
    };
    log_in(&console, sso, person, role, lang, &next).await
}

/// Records a refused sign-in (`console.login.refused`) under `actor`; a failure to record it
/// is logged, and the sign-in is refused all the same.
async fn audit_refusal(console: &Console, actor: &str, detail: &str) {
    if let Err(s) = console
        .api()
        .audit_as(actor, "console.login.refused", "", detail)
        .await
    {
        tracing::error!("console: refusal of {actor} not recorded: {}", s.message());
    }
}

/// Mints the person's console credential, records the login and starts the session.
async fn log_in(
    console: &Console,
    sso: &Sso,
    person: String,
    role: pb::Role,
    lang: Lang,
    next: &str,
) -> Response {
    let refuse = |status, why: Refusal| refused(console, status, lang, next, why);
    let store = &console.api().state().store;
    let lifetime = i64::try_from(session::ABSOLUTE_TIMEOUT.as_millis()).unwrap_or(i64::MAX);
    let minted = crate::api::tokens::mint_admin_token(
        store,
        role,
        &person,
        &crate::api::tokens::sso_creator(sso.issuer.as_str()),
        now_ms().saturating_add(lifetime),
        false,
    )
    .await;
    let (token_id, secret) = match minted {
        Ok(t) => t,
        Err(e) => {
            tracing::error!("console: no credential for {person}: {e}");
            return refuse(StatusCode::SERVICE_UNAVAILABLE, Refusal::NotStored);
        }
    };
    let actor = Actor {
        name: person.clone(),
        token_id,
        role,
    };
    let detail = format!("single sign-on ({})", sso.issuer.as_str());
    if let Err(s) = console
        .api()
        .audit(&actor, "console.login", "", &detail)
        .await
    {
        tracing::error!("console: login of {person} not recorded: {}", s.message());
        revoke(console, &secret, "console.login (not recorded)").await;
        return refuse(StatusCode::SERVICE_UNAVAILABLE, Refusal::NotRecorded);
    }
    tracing::info!(
        "console: {} logged in by single sign-on",
        actor.audit_name()
    );
    let sid = console.sessions().create(
        lang,
        Some(User {
            token: secret,
            audit_name: actor.audit_name(),
            name: person,
            role,
            sso: true,
        }),
        Instant::now(),
    );
    let page = Done {
        lang: lang.code(),
        next: next.to_string(),
        text: lang.t("Inloggad. Fortsätt", "Signed in. Continue"),
    };
    let mut res = super::html(StatusCode::OK, &page);
    let cookies = [
        session::set_cookie(&sid, console.secure()),
        clear_binding_cookie(console.secure()),
    ];
    for c in cookies {
        if let Ok(v) = HeaderValue::from_str(&c) {
            res.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    res
}

/// How often expired sessions are swept for credentials to revoke.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Revokes the credentials of single sign-on sessions that expired (idle, absolute or evicted)
/// rather than logged out, once a minute, until the console is gone. The credential's own
/// expiry (the absolute limit) would end it anyway; this ends it with its session.
pub(super) async fn revoke_expired(console: std::sync::Weak<super::Inner>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(inner) = console.upgrade() else {
            return;
        };
        for token in inner.sessions.take_expired_sso(Instant::now()) {
            revoke_in(&inner.api.state().store, &token, "console.session-expired").await;
        }
    }
}

/// Ends a single sign-on credential: revoked in the store, so it works nowhere any more.
pub(super) async fn revoke(console: &Console, secret: &str, why: &str) {
    revoke_in(&console.api().state().store, secret, why).await;
}

async fn revoke_in(store: &crate::store::Store, secret: &str, why: &str) {
    let now = now_ms();
    let done = store
        .update_admin_token(&crate::token::hash(secret), |r| {
            if !r.revoked {
                r.revoked = true;
                r.revoked_at_ms = now;
                r.revoked_by = why.to_string();
            }
        })
        .await;
    if let Err(e) = done {
        tracing::error!("console: single sign-on credential not revoked: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn roles() -> OidcRoles {
        OidcRoles {
            admin: vec!["vakt-admins".into()],
            operator: vec!["vakt-operators".into()],
            viewer: vec!["vakt-viewers".into()],
        }
    }

    #[test]
    fn the_highest_mapped_role_wins_from_a_list_or_a_string() {
        let r = roles();
        let list = claim_values(Some(&json!(["staff", "vakt-viewers", "vakt-admins"])));
        assert_eq!(role_for(&list, &r), Some(pb::Role::Admin));
        let one = claim_values(Some(&json!("vakt-operators")));
        assert_eq!(role_for(&one, &r), Some(pb::Role::Operator));
        let none = claim_values(Some(&json!(["staff", "Vakt-Admins"])));
        assert_eq!(role_for(&none, &r), None, "values compare exactly");
        assert_eq!(role_for(&claim_values(None), &r), None);
        assert_eq!(role_for(&claim_values(Some(&json!(7))), &r), None);
        let mixed = claim_values(Some(&json!([1, "vakt-viewers", null])));
        assert_eq!(role_for(&mixed, &r), Some(pb::Role::Viewer));
    }

    fn map(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn the_person_is_the_email_else_the_preferred_username() {
        assert_eq!(
            person(&map(
                json!({"email": "anna@example.org", "preferred_username": "anna"})
            )),
            Ok("anna@example.org".into())
        );
        assert_eq!(
            person(&map(json!({"email": " ", "preferred_username": "anna"}))),
            Ok("anna".into())
        );
        assert_eq!(person(&map(json!({"sub": "123"}))), Err(NoPerson::Nameless));
        assert_eq!(
            person(&map(json!({"email": ["a@b"]}))),
            Err(NoPerson::Nameless)
        );
    }

    #[test]
    fn an_address_the_provider_has_not_verified_names_nobody() {
        let with = |verified: serde_json::Value| {
            person(&map(json!({
                "email": "anna@example.org",
                "email_verified": verified,
                "preferred_username": "eve",
            })))
        };
        let anna = Ok("anna@example.org".to_string());
        // Verified, as a boolean or as the string some providers send.
        assert_eq!(with(json!(true)), anna);
        assert_eq!(with(json!("true")), anna);
        assert_eq!(with(json!(" TRUE ")), anna);
        // Absent (Entra ID) or null: the provider's word.
        assert_eq!(person(&map(json!({"email": "anna@example.org"}))), anna);
        assert_eq!(with(json!(null)), anna);
        // Not verified: refused, and not the preferred_username either (whoever this is, the
        // provider said the address may not be theirs).
        for no in [
            json!(false),
            json!("false"),
            json!("False"),
            json!(0),
            json!("no"),
        ] {
            let got = with(no.clone());
            assert!(
                matches!(&got, Err(NoPerson::Unverified { email, .. }) if email == "anna@example.org"),
                "{no}: {got:?}"
            );
        }
        // No address at all: email_verified says nothing about the preferred_username.
        assert_eq!(
            person(&map(
                json!({"email_verified": false, "preferred_username": "vera"})
            )),
            Ok("vera".into())
        );
        let why = with(json!(false)).unwrap_err().to_string();
        assert!(
            why.contains("anna@example.org") && why.contains("not verified"),
            "{why}"
        );
    }

    #[test]
    fn entra_groups_overage_is_told_from_a_missing_claim() {
        let overage = map(json!({
            "email": "anna@example.org",
            "_claim_names": {"groups": "src1"},
            "_claim_sources": {"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/x/getMemberObjects"}},
        }));
        assert!(claim_moved(&overage, "groups"));
        // Another claim is not the one moved; a claim that is there was not moved.
        assert!(!claim_moved(&overage, "roles"));
        let mut both = overage.clone();
        both.insert("groups".into(), json!(["vakt-admins"]));
        assert!(!claim_moved(&both, "groups"));
        assert!(!claim_moved(&map(json!({"email": "a@b"})), "groups"));
        assert!(!claim_moved(
            &map(json!({"_claim_names": "groups"})),
            "groups"
        ));
    }

    #[test]
    fn a_login_attempt_is_taken_once_and_expires() {
        let sso = Sso::from_config(&OidcFile {
            issuer: "http://127.0.0.1:9".into(),
            client_id: "vakt".into(),
            client_secret_file: None,
            redirect_url: "http://127.0.0.1:7480/login/oidc/callback".into(),
            role_claim: "groups".into(),
            token_login: true,
            roles: roles(),
        })
        .unwrap();
        let t0 = Instant::now();
        let attempt = |started| Pending {
            binding: "b".into(),
            nonce: Nonce::new("n".into()),
            verifier: PkceCodeVerifier::new("v".into()),
            next: "/".into(),
            lang: Lang::En,
            started,
        };
        sso.remember("s1".into(), attempt(t0));
        assert!(sso.take("s2", t0).is_none());
        assert!(sso.take("s1", t0).is_some());
        assert!(
            sso.take("s1", t0).is_none(),
            "a replayed callback finds nothing"
        );
        sso.remember("s3".into(), attempt(t0));
        assert!(sso.take("s3", t0 + PENDING_TIMEOUT).is_none());
    }

    #[test]
    fn payload_of_a_jwt() {
        let enc = |v: &serde_json::Value| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
        };
        let jwt = format!(
            "{}.{}.sig",
            enc(&json!({"alg": "RS256"})),
            enc(&json!({"groups": ["g"]}))
        );
        assert_eq!(verified_payload(&jwt).unwrap()["groups"], json!(["g"]));
        assert!(verified_payload("nodots").is_err());
        assert!(verified_payload("a.!!!.c").is_err());
    }
}
