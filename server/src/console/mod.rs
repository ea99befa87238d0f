//! The IT web console: server-rendered pages over the admin API, in Swedish and English.
//!
//! Every page and form calls the same [`AdminApi`] methods the `vakt` command line reaches over
//! gRPC, with a `tonic::Request` that carries `authorization: Bearer <the logged-in user's
//! token>`; so the console enforces exactly the API's roles and validation and writes the same
//! audit log, and nothing here decides who may do what. A failed call becomes a page with the
//! API's own message and an HTTP status that matches its gRPC code.
//!
//! Sessions (`session`) live in memory; the cookie is HttpOnly and SameSite=Strict, and Secure
//! (with the `__Host-` prefix) over TLS; every POST carries the session's CSRF token. The
//! console speaks TLS with the server's certificate (`tls`) unless it listens on loopback,
//! where plain HTTP is allowed (the traffic never leaves the machine): see [`Transport`].
//!
//! Templates are askama (`server/templates/`), checked when the crate compiles; there is no
//! JavaScript and one small stylesheet compiled into the binary.

mod audit;
mod auth;
mod devices;
mod findings;
mod i18n;
pub(crate) mod listen;
mod loss;
pub mod oidc;
mod oidc_cache;
mod oidc_http;
mod oidc_refusal;
mod overview;
mod people;
mod policy;
mod session;
mod token_check;
mod view;
mod wipes;

pub use crate::tls::TlsError;
pub use i18n::Lang;

use crate::api::admin::AdminApi;
use crate::state::State;
use askama::Template;
use axum::Router;
use axum::extract::{DefaultBodyLimit, Form, FromRequest, FromRequestParts, Request};
use axum::http::header::{self, HeaderMap, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use serde::Deserialize;
use serde::de::DeserializeOwned;
use session::{Flash, Sessions, User};
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;
use tokio::net::TcpListener;
use tonic::Code;
use vakt_proto::pb;
use vakt_proto::pb::admin_service_server::AdminService;

/// The largest form the console accepts: its forms hold a few short fields.
const MAX_FORM_BYTES: usize = 64 * 1024;

/// How the console talks to browsers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// Plain HTTP: only ever chosen for a loopback address.
    Plain,
    /// HTTPS with the server's certificate (the one agents already trust through `ca.pem`).
    Tls,
}

impl Transport {
    /// TLS unless `addr` is a loopback address and TLS was not asked for. A console reachable
    /// from the network never speaks plain HTTP: tokens and session cookies would cross it in
    /// clear.
    pub fn for_addr(addr: SocketAddr, force_tls: bool) -> Self {
        if force_tls || !addr.ip().is_loopback() {
            Self::Tls
        } else {
            Self::Plain
        }
    }

    pub fn scheme(self) -> &'static str {
        match self {
            Self::Plain => "http",
            Self::Tls => "https",
        }
    }
}

/// What every console handler shares: the admin API and the sessions.
#[derive(Clone)]
pub struct Console {
    inner: Arc<Inner>,
}

struct Inner {
    api: AdminApi,
    sessions: Sessions,
    /// Token login, single sign-on, or both (`[console.oidc]`).
    login: oidc::Login,
    /// Served over TLS: the cookie gets `Secure` and the `__Host-` prefix.
    secure: bool,
}

impl Console {
    pub fn new(state: State, transport: Transport) -> Self {
        Self::with_login(state, transport, oidc::Login::default())
    }

    /// A console that lets people in as `login` says.
    pub fn with_login(state: State, transport: Transport, login: oidc::Login) -> Self {
        let revocations = state.revocations.clone();
        let inner = Arc::new(Inner {
            api: AdminApi::new(state),
            sessions: Sessions::default(),
            login,
            secure: transport == Transport::Tls,
        });
        token_check::end_sessions_on_revoke(&revocations, &inner);
        Self { inner }
    }

    fn api(&self) -> &AdminApi {
        &self.inner.api
    }

    fn sessions(&self) -> &Sessions {
        &self.inner.sessions
    }

    fn secure(&self) -> bool {
        self.inner.secure
    }

    fn sso(&self) -> Option<&oidc::Sso> {
        self.inner.login.sso.as_ref()
    }

    fn token_login(&self) -> bool {
        self.inner.login.token_login
    }

    /// The live session a request's cookie names.
    fn session_of(&self, headers: &HeaderMap) -> Option<(String, session::Session)> {
        let cookies = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok());
        let id = session::session_id(cookies, self.secure())?;
        let s = self.sessions().get(&id, Instant::now())?;
        Some((id, s))
    }
}

/// The console's routes. `serve` runs them; tests drive them directly.
pub fn router(console: Console) -> Router {
    Router::new()
        .route("/", get(overview::page))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/login/oidc", get(oidc::start))
        .route("/login/oidc/callback", get(oidc::callback))
        .route("/logout", post(auth::logout))
        .route("/lang", post(auth::switch_language))
        .route("/console.css", get(stylesheet))
        .route("/favicon.ico", get(|| async { StatusCode::NO_CONTENT }))
        .route("/devices", get(devices::list))
        .route("/devices/{id}", get(devices::show))
        .route("/devices/{id}/assign", post(devices::assign))
        .route(
            "/devices/{id}/loss",
            get(loss::page).post(loss::report_loss),
        )
        .route("/devices/{id}/loss/update", post(loss::update))
        .route("/devices/{id}/loss/recover", post(loss::recover))
        .route("/devices/{id}/loss/incident", get(loss::incident_html))
        .route(
            "/devices/{id}/loss/incident.md",
            get(loss::incident_markdown),
        )
        .route("/devices/{id}/wipe", post(wipes::request))
        .route("/loss", get(loss::list))
        .route("/wipes", get(wipes::list))
        .route("/wipes/{command}/approve", post(wipes::approve))
        .route("/findings", get(findings::list))
        .route("/findings.csv", get(findings::csv))
        .route("/people", get(people::page))
        .route("/people/import", post(people::import))
        .route("/trips", post(people::add_trip))
        .route("/exemptions", post(people::grant_exemption))
        .route("/exemptions/{id}/revoke", post(people::revoke_exemption))
        .route("/policy", get(policy::page))
        .route("/policy/check", post(policy::check))
        .route("/policy/apply", post(policy::apply))
        .route("/audit", get(audit::page))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_FORM_BYTES))
        .layer(axum::middleware::map_response(security_headers))
        .with_state(console)
}

/// Serves the console on `listener` until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    state: State,
    transport: Transport,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ConsoleError> {
    serve_with_login(listener, state, transport, oidc::Login::default(), shutdown).await
}

/// [`serve`], letting people in as `login` says (single sign-on, token login).
pub async fn serve_with_login(
    listener: TcpListener,
    state: State,
    transport: Transport,
    login: oidc::Login,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ConsoleError> {
    let tls_config = match transport {
        Transport::Tls => Some(crate::tls::console_config_with(state.pki.server_cert())?),
        Transport::Plain => None,
    };
    let console = Console::with_login(state, transport, login);
    // Ends the credentials of single sign-on sessions that expire without a logout.
    tokio::spawn(oidc::revoke_expired(Arc::downgrade(&console.inner)));
    let app = router(console);
    match tls_config {
        Some(config) => {
            let listener = crate::tls::TlsListener::new(listener, config, "console")?;
            listen::serve(listener, app, shutdown).await;
        }
        None => listen::serve(listener, app, shutdown).await,
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("console TLS: {0}")]
    Tls(#[from] TlsError),
    #[error("console: {0}")]
    Io(#[from] std::io::Error),
}

async fn stylesheet() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/css; charset=utf-8"),
            (header::CACHE_CONTROL, "max-age=3600"),
        ],
        include_str!("../../templates/console.css"),
    )
        .into_response()
}

/// No scripts, no frames, no foreign forms; pages are not cached (they show who has what).
async fn security_headers(mut res: Response) -> Response {
    let h = res.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// A rendered page with its status.
fn html(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(body) => (
            status,
            [(header::CONTENT_TYPE, "text/html; charset=utf-8")],
            body,
        )
            .into_response(),
        Err(e) => {
            tracing::error!("console template: {e}");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

/// The HTTP status for an admin API status.
fn http_status(code: Code) -> StatusCode {
    match code {
        Code::InvalidArgument | Code::OutOfRange => StatusCode::BAD_REQUEST,
        Code::Unauthenticated => StatusCode::UNAUTHORIZED,
        Code::PermissionDenied => StatusCode::FORBIDDEN,
        Code::NotFound => StatusCode::NOT_FOUND,
        Code::AlreadyExists | Code::FailedPrecondition | Code::Aborted => StatusCode::CONFLICT,
        Code::ResourceExhausted => StatusCode::TOO_MANY_REQUESTS,
        Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        Code::DeadlineExceeded => StatusCode::GATEWAY_TIMEOUT,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// Percent-encodes a path for a `next=` query parameter.
fn encode_query(s: &str) -> String {
    let mut o = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            o.push(char::from(b));
        } else {
            o.push_str(&format!("%{b:02X}"));
        }
    }
    o
}

/// What a page handler returns: the page, or a page that says why not (both are responses;
/// the error side lets handlers use `?` on admin API calls).
pub type Page = Result<Response, Response>;

/// The frame every page shares: language, who is logged in, the CSRF token for the header's
/// forms, the current location (the language switch comes back to it), and a one-shot notice.
pub struct Frame {
    pub lang: Lang,
    pub title: String,
    /// Which navigation entry is the current page ("" for none).
    pub nav: &'static str,
    pub user: String,
    pub role: &'static str,
    pub csrf: String,
    pub here: String,
    pub flash: Option<Flash>,
    pub logged_in: bool,
    pub can_operate: bool,
    pub can_admin: bool,
    /// The wall clock when the page was made, for ages shown on it (`as_of`).
    pub now_ms: i64,
}

impl Frame {
    /// One of a pair of texts, in the page's language.
    pub fn t(&self, sv: &'static str, en: &'static str) -> &'static str {
        self.lang.t(sv, en)
    }

    /// How old a wipe readiness is ([`view::as_of`]), as of this page. (By reference: askama
    /// passes a template's field that way.)
    pub fn as_of(&self, reported_ms: &i64) -> String {
        view::as_of(self.lang, self.now_ms, *reported_ms)
    }
}

/// A logged-in user's request. As an extractor it turns anyone else away to the login page.
pub struct Authed {
    pub sid: String,
    pub user: User,
    pub lang: Lang,
    pub csrf: String,
    /// Path and query of this request.
    pub here: String,
    pub console: Console,
}

impl FromRequestParts<Console> for Authed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, console: &Console) -> Result<Self, Response> {
        let here = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        match console.session_of(&parts.headers) {
            Some((sid, s)) => match s.user {
                Some(user) => Ok(Self {
                    user: token_check::recheck(console, &sid, user)?,
                    sid,
                    lang: s.lang,
                    csrf: s.csrf,
                    here,
                    console: console.clone(),
                }),
                None => Err(to_login(&parts.method, &here)),
            },
            None => Err(to_login(&parts.method, &here)),
        }
    }
}

/// Where an anonymous visitor goes: the login page, which sends a page visit back after login.
fn to_login(method: &Method, here: &str) -> Response {
    if method == Method::GET && here != "/" {
        Redirect::to(&format!("/login?next={}", encode_query(here))).into_response()
    } else {
        Redirect::to("/login").into_response()
    }
}

fn role_rank(r: pb::Role) -> u8 {
    crate::api::admin::role_rank(r)
}

impl Authed {
    pub fn api(&self) -> &AdminApi {
        self.console.api()
    }

    /// An admin API answer, or its refusal as a page that links back to `back`.
    // The error is the page that goes straight back to the browser, once per request; boxing it
    // would buy nothing.
    #[allow(clippy::result_large_err)]
    pub fn ok<T>(
        &self,
        answer: Result<tonic::Response<T>, tonic::Status>,
        back: &str,
    ) -> Result<T, Response> {
        answer
            .map(tonic::Response::into_inner)
            .map_err(|s| self.fail(s, back))
    }

    /// As [`ok`](Self::ok), with "not found" as `None` (a device without a loss case).
    #[allow(clippy::result_large_err)]
    pub fn ok_if_found<T>(
        &self,
        answer: Result<tonic::Response<T>, tonic::Status>,
        back: &str,
    ) -> Result<Option<T>, Response> {
        match answer {
            Err(s) if s.code() == Code::NotFound => Ok(None),
            other => self.ok(other, back).map(Some),
        }
    }

    /// Every device.
    pub async fn devices(&self, back: &str) -> Result<Vec<pb::Device>, Response> {
        let answer = self
            .api()
            .list_devices(self.req(pb::ListDevicesRequest {}))
            .await;
        Ok(self.ok(answer, back)?.devices)
    }

    /// The commands of one device (id or hostname), or of all for an empty `device`.
    pub async fn commands(
        &self,
        device: &str,
        back: &str,
    ) -> Result<Vec<pb::CommandInfo>, Response> {
        let req = pb::ListCommandsRequest {
            device: device.to_string(),
        };
        let answer = self.api().list_commands(self.req(req)).await;
        Ok(self.ok(answer, back)?.commands)
    }

    /// The findings of one device, or of all for an empty `device`; open and exempted ones,
    /// and resolved ones too when asked.
    pub async fn findings(
        &self,
        device: &str,
        include_resolved: bool,
        back: &str,
    ) -> Result<Vec<pb::FindingInfo>, Response> {
        let req = pb::ListFindingsRequest {
            device: device.to_string(),
            include_resolved,
        };
        let answer = self.api().list_findings(self.req(req)).await;
        Ok(self.ok(answer, back)?.findings)
    }

    /// An admin API request on behalf of the logged-in user.
    pub fn req<T>(&self, msg: T) -> tonic::Request<T> {
        let mut req = tonic::Request::new(msg);
        // The token was checked to be printable ASCII at login, so this always succeeds; if it
        // somehow did not, the request goes without a token and the API refuses it.
        if let Ok(v) = format!("Bearer {}", self.user.token).parse() {
            req.metadata_mut().insert("authorization", v);
        }
        req
    }

    /// The frame of a page, with the notice a form left for it (which is then gone).
    pub fn frame(&self, nav: &'static str, title: impl Into<String>) -> Frame {
        let mut f = self.frame_without_notice(nav, title);
        f.flash = self.console.sessions().take_flash(&self.sid);
        f
    }

    /// The frame of an error page, which leaves a pending notice for the page it links back
    /// to. (A browser's stray request, such as for a favicon, must not eat the notice either.)
    fn frame_without_notice(&self, nav: &'static str, title: impl Into<String>) -> Frame {
        Frame {
            lang: self.lang,
            title: title.into(),
            nav,
            user: self.user.name.clone(),
            role: self.lang.role(self.user.role),
            csrf: self.csrf.clone(),
            here: self.here.clone(),
            flash: None,
            logged_in: true,
            can_operate: role_rank(self.user.role) >= role_rank(pb::Role::Operator),
            can_admin: role_rank(self.user.role) >= role_rank(pb::Role::Admin),
            now_ms: crate::timefmt::now_ms(),
        }
    }

    pub fn t(&self, sv: &'static str, en: &'static str) -> &'static str {
        self.lang.t(sv, en)
    }

    /// A page for an admin API refusal: its message, its status, and a way back. A token that
    /// stopped working (revoked) ends the session.
    pub fn fail(&self, status: tonic::Status, back: &str) -> Response {
        if status.code() == Code::Unauthenticated {
            self.console.sessions().remove(&self.sid);
            return (
                [(
                    header::SET_COOKIE,
                    session::clear_cookie(self.console.secure()),
                )],
                Redirect::to("/login"),
            )
                .into_response();
        }
        self.error_page(
            http_status(status.code()),
            self.lang.status_heading(status.code()),
            status.message(),
            back,
        )
    }

    pub fn error_page(
        &self,
        status: StatusCode,
        heading: &str,
        message: &str,
        back: &str,
    ) -> Response {
        let back = view::local_path(back).unwrap_or("/").to_string();
        let mut c = self.frame_without_notice("", heading);
        // The language switch returns to a page, never to the form that failed.
        c.here = back.clone();
        let page = ErrorPage {
            c,
            heading: heading.to_string(),
            message: message.to_string(),
            back,
        };
        html(status, &page)
    }

    /// After a form did its work: a notice for the next page, and a redirect to it (so a
    /// reload does not send the form again).
    pub fn done(&self, to: &str, text: String) -> Response {
        self.console
            .sessions()
            .set_flash(&self.sid, Flash { ok: true, text });
        Redirect::to(view::local_path(to).unwrap_or("/")).into_response()
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    c: Frame,
    heading: String,
    message: String,
    back: String,
}

/// A form posted by a logged-in user whose CSRF token matched their session's.
pub struct Post<T>(pub Authed, pub T);

#[derive(Deserialize)]
struct WithCsrf<T> {
    #[serde(default)]
    csrf: String,
    #[serde(flatten)]
    form: T,
}

impl<T: DeserializeOwned + Send + 'static> FromRequest<Console> for Post<T> {
    type Rejection = Response;

    async fn from_request(req: Request, console: &Console) -> Result<Self, Response> {
        let (mut parts, body) = req.into_parts();
        let a = Authed::from_request_parts(&mut parts, console).await?;
        let req = Request::from_parts(parts, body);
        let Form(f) = Form::<WithCsrf<T>>::from_request(req, console)
            .await
            .map_err(|e| {
                a.error_page(
                    StatusCode::BAD_REQUEST,
                    a.t("Formuläret kunde inte läsas", "The form could not be read"),
                    &e.body_text(),
                    "/",
                )
            })?;
        if !session::same_secret(&f.csrf, &a.csrf) {
            tracing::warn!(user = %a.user.name, path = %a.here, "console: POST without a valid CSRF token refused");
            return Err(a.error_page(
                StatusCode::FORBIDDEN,
                a.t("Formuläret saknar giltig säkerhetskod", "The form's security code is missing or wrong"),
                a.t(
                    "Ladda om sidan och försök igen. Formulär som skickas från andra webbplatser tas inte emot.",
                    "Reload the page and try again. Forms sent from other sites are not accepted.",
                ),
                "/",
            ));
        }
        Ok(Post(a, f.form))
    }
}

/// A form with no fields but the CSRF token.
#[derive(Deserialize)]
pub struct NoFields {}

async fn not_found(a: Authed) -> Response {
    a.error_page(
        StatusCode::NOT_FOUND,
        a.t("Sidan finns inte", "No such page"),
        "",
        "/",
    )
}

#[cfg(test)]
mod oidc_tests;
#[cfg(test)]
mod tests;
