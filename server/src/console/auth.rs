//! Logging in with an admin API token, logging out, and switching the language. (Single
//! sign-on is `oidc.rs`; `token_login = false` in `[console.oidc]` turns the token form off.)
//!
//! The login form has a CSRF token too (from an anonymous session), so another site cannot log
//! a browser in as someone else. The token is checked by [`AdminApi::authorize`], the same
//! check every admin API call makes; a token needs at least the viewer role to log in.
//!
//! [`AdminApi::authorize`]: crate::api::admin::AdminApi::authorize

use super::session::{self, Session, User};
use super::{Console, Frame, Lang, NoFields, Post, html, view};
use askama::Template;
use axum::extract::{Form, Query, State};
use axum::http::StatusCode;
use axum::http::header::{self, HeaderMap};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;
use std::time::Instant;
use vakt_proto::pb;

/// The longest token the form takes (admin tokens are 71 characters).
const MAX_TOKEN_LEN: usize = 256;

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    c: Frame,
    next: String,
    error: String,
    /// Offer single sign-on (`[console.oidc]`).
    sso: bool,
    /// Offer the token form (`token_login`).
    token_login: bool,
}

fn anonymous_frame(s: &Session, title: &'static str) -> Frame {
    Frame {
        lang: s.lang,
        title: title.to_string(),
        nav: "",
        user: String::new(),
        role: "",
        csrf: s.csrf.clone(),
        here: "/login".into(),
        flash: None,
        logged_in: false,
        can_operate: false,
        can_admin: false,
        now_ms: crate::timefmt::now_ms(),
    }
}

/// The login page, in a new anonymous session when the browser has none. `set_cookie` is
/// whether the session is new.
fn login_response(
    console: &Console,
    status: StatusCode,
    sid: &str,
    s: &Session,
    set_cookie: bool,
    next: &str,
    error: &str,
) -> Response {
    let page = LoginPage {
        c: anonymous_frame(s, s.lang.t("Logga in", "Log in")),
        next: view::local_path(next).unwrap_or("").to_string(),
        error: error.to_string(),
        sso: console.sso().is_some(),
        token_login: console.token_login(),
    };
    let mut res = html(status, &page);
    if set_cookie && let Ok(v) = session::set_cookie(sid, console.secure()).parse() {
        res.headers_mut().insert(header::SET_COOKIE, v);
    }
    res
}

/// A new anonymous session and its login page.
pub(super) fn fresh_login(
    console: &Console,
    status: StatusCode,
    lang: Lang,
    next: &str,
    error: impl Fn(Lang) -> String,
) -> Response {
    let now = Instant::now();
    let sid = console.sessions().create(lang, None, now);
    match console.sessions().get(&sid, now) {
        Some(s) => login_response(console, status, &sid, &s, true, next, &error(lang)),
        None => (
            StatusCode::SERVICE_UNAVAILABLE,
            "no session could be started",
        )
            .into_response(),
    }
}

/// `?next=…&lang=…` on the login page and on `GET /login/oidc`, which starts from it.
#[derive(Deserialize, Default)]
pub struct LoginQuery {
    #[serde(default)]
    pub(super) next: String,
    #[serde(default)]
    pub(super) lang: String,
}

pub async fn login_page(
    State(console): State<Console>,
    Query(q): Query<LoginQuery>,
    headers: HeaderMap,
) -> Response {
    match console.session_of(&headers) {
        Some((_, s)) if s.user.is_some() => {
            Redirect::to(view::local_path(&q.next).unwrap_or("/")).into_response()
        }
        Some((sid, s)) => login_response(&console, StatusCode::OK, &sid, &s, false, &q.next, ""),
        None => fresh_login(
            &console,
            StatusCode::OK,
            Lang::parse(&q.lang).unwrap_or_default(),
            &q.next,
            |_| String::new(),
        ),
    }
}

#[derive(Deserialize)]
pub struct LoginForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    token: String,
    #[serde(default)]
    next: String,
}

pub async fn login(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    let Some((sid, s)) = console.session_of(&headers) else {
        return fresh_login(&console, StatusCode::FORBIDDEN, Lang::Sv, &f.next, |l| {
            l.t(
                "Inloggningssidan hade gått ut. Försök igen.",
                "The login page had expired. Try again.",
            )
            .into()
        });
    };
    let fail = |status: StatusCode, msg: String| {
        login_response(&console, status, &sid, &s, false, &f.next, &msg)
    };
    if !session::same_secret(&f.csrf, &s.csrf) {
        return fail(
            StatusCode::FORBIDDEN,
            s.lang
                .t(
                    "Formuläret saknar giltig säkerhetskod. Ladda om sidan och försök igen.",
                    "The form's security code is missing or wrong. Reload the page and try again.",
                )
                .into(),
        );
    }
    if !console.token_login() {
        return fail(
            StatusCode::FORBIDDEN,
            s.lang
                .t(
                    "Inloggning med API-token är avstängd här; logga in med organisationens konto.",
                    "Logging in with an API token is turned off here; sign in with your organisation's account.",
                )
                .into(),
        );
    }
    let token = f.token.trim();
    let readable = !token.is_empty()
        && token.len() <= MAX_TOKEN_LEN
        && token.bytes().all(|b| b.is_ascii_graphic());
    let header = format!("Bearer {token}").parse().ok().filter(|_| readable);
    let Some(header) = header else {
        return fail(
            StatusCode::UNAUTHORIZED,
            s.lang
                .t(
                    "Det där ser inte ut som en API-token.",
                    "That does not look like an API token.",
                )
                .into(),
        );
    };
    let mut req = tonic::Request::new(());
    req.metadata_mut().insert("authorization", header);
    match console.api().authorize(&req, pb::Role::Viewer) {
        Ok(actor) => {
            // A console session is an admin's way in, so it is in the audit log like the
            // rest; no entry, no session. Refused logins are only logged: an unauthenticated
            // form must not be able to fill the durable log.
            if let Err(status) = console.api().audit(&actor, "console.login", "", "").await {
                tracing::error!("console: login not recorded: {}", status.message());
                return fail(
                    StatusCode::SERVICE_UNAVAILABLE,
                    s.lang
                        .t(
                            "Inloggningen kunde inte loggas. Försök igen om en stund.",
                            "The login could not be recorded. Try again in a moment.",
                        )
                        .into(),
                );
            }
            tracing::info!("console: {} logged in", actor.audit_name());
            let new_sid = console.sessions().login(
                &sid,
                User {
                    token: token.to_string(),
                    audit_name: actor.audit_name(),
                    name: actor.name,
                    role: actor.role,
                    sso: false,
                },
                Instant::now(),
            );
            let to = view::local_path(&f.next).unwrap_or("/").to_string();
            (
                [(
                    header::SET_COOKIE,
                    session::set_cookie(&new_sid, console.secure()),
                )],
                Redirect::to(&to),
            )
                .into_response()
        }
        Err(status) => {
            tracing::warn!("console: login refused: {}", status.message());
            fail(StatusCode::UNAUTHORIZED, status.message().to_string())
        }
    }
}

pub async fn logout(Post(a, NoFields {}): Post<NoFields>) -> Response {
    a.console.sessions().remove(&a.sid);
    if a.user.sso {
        // The credential single sign-on minted for this session ends with it.
        super::oidc::revoke(&a.console, &a.user.token, "console.logout").await;
    }
    // The session is gone either way; a failed entry is only logged, since refusing to log
    // out would keep a session open that its admin asked to close.
    if let Err(s) = a
        .console
        .api()
        .audit_as(&a.user.audit_name, "console.logout", "", "")
        .await
    {
        tracing::error!(
            "console: logout of {} not recorded: {}",
            a.user.name,
            s.message()
        );
    }
    tracing::info!("console: {} logged out", a.user.name);
    (
        [(
            header::SET_COOKIE,
            session::clear_cookie(a.console.secure()),
        )],
        Redirect::to(&format!("/login?lang={}", a.lang.code())),
    )
        .into_response()
}

#[derive(Deserialize)]
pub struct LangForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    lang: String,
    #[serde(default)]
    back: String,
}

/// The language switch: for the session, logged in or not.
pub async fn switch_language(
    State(console): State<Console>,
    headers: HeaderMap,
    Form(f): Form<LangForm>,
) -> Response {
    let Some((sid, s)) = console.session_of(&headers) else {
        return Redirect::to("/login").into_response();
    };
    if !session::same_secret(&f.csrf, &s.csrf) {
        return (
            StatusCode::FORBIDDEN,
            "the form's security code is missing or wrong",
        )
            .into_response();
    }
    if let Some(lang) = Lang::parse(&f.lang) {
        console.sessions().set_lang(&sid, lang);
    }
    Redirect::to(view::local_path(&f.back).unwrap_or("/")).into_response()
}
