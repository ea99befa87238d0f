//! A console session lives only as long as its admin token works.
//!
//! Two ways, so neither alone has to be perfect: revoking a token ends the sessions logged in
//! with it at once (the admin API tells every console through [`RevocationHooks`]), and every
//! console request checks the session's token through [`AdminApi::authorize`] again before any
//! page runs, so a token revoked, expired or never approved is turned away even by a console
//! that was not told (another process, a missed hook).
//!
//! [`RevocationHooks`]: crate::state::RevocationHooks
//! [`AdminApi::authorize`]: crate::api::admin::AdminApi::authorize

use super::session::{self, User};
use super::{Console, Inner};
use axum::http::header;
use axum::response::{IntoResponse, Redirect, Response};
use std::sync::Arc;
use tonic::Code;
use vakt_proto::pb;

/// Registers `inner`'s sessions to end when a token is revoked. The hook holds the console
/// weakly and goes with it.
pub(super) fn end_sessions_on_revoke(hooks: &crate::state::RevocationHooks, inner: &Arc<Inner>) {
    let weak = Arc::downgrade(inner);
    hooks.register(move |hash| match weak.upgrade() {
        Some(inner) => {
            let ended = inner.sessions.end_token(hash);
            if ended > 0 {
                tracing::info!(
                    sessions = ended,
                    token = %crate::token::hex(&hash[..6]),
                    "console: sessions of a revoked token ended"
                );
            }
            true
        }
        None => false,
    });
}

/// The session's user, if its token still works; otherwise the session is ended and the
/// browser goes to the login page. Any other failure (the store) lets the request through:
/// the page's own API call refuses it with the reason.
// The error is the response that goes straight back to the browser.
#[allow(clippy::result_large_err)]
pub(super) fn recheck(console: &Console, sid: &str, user: User) -> Result<User, Response> {
    let mut req = tonic::Request::new(());
    // The token was checked to be printable ASCII at login; if it were not, the request goes
    // without a token and is refused, which ends the session too.
    if let Ok(v) = format!("Bearer {}", user.token).parse() {
        req.metadata_mut().insert("authorization", v);
    }
    match console.api().authorize(&req, pb::Role::Viewer) {
        Err(status) if status.code() == Code::Unauthenticated => {
            console.sessions().remove(sid);
            tracing::info!(
                "console: session of {} ended: {}",
                user.audit_name,
                status.message()
            );
            Err((
                [(header::SET_COOKIE, session::clear_cookie(console.secure()))],
                Redirect::to("/login"),
            )
                .into_response())
        }
        _ => Ok(user),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::super::{Lang, Transport};
    use super::*;
    use crate::api::admin::AdminApi;
    use std::time::Instant;
    use vakt_proto::pb::admin_service_server::AdminService;

    #[tokio::test]
    async fn revoking_a_token_ends_its_sessions_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let state = crate::server::prepare(dir.path(), &[], Default::default())
            .await
            .unwrap();
        let first = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
        let first = first.trim();
        let (id, other) =
            crate::api::admin::create_admin_token(&state.store, pb::Role::Admin, "it-chef", "t")
                .await
                .unwrap();
        let console = Console::new(state.clone(), Transport::Plain);
        let user = |token: &str| User {
            token: token.to_string(),
            name: "x".into(),
            role: pb::Role::Admin,
            audit_name: "token:x:0".into(),
            sso: false,
        };
        let now = Instant::now();
        console.sessions().create(Lang::En, Some(user(&other)), now);
        console.sessions().create(Lang::En, Some(user(&other)), now);
        console.sessions().create(Lang::En, Some(user(first)), now);
        console.sessions().create(Lang::En, None, now);
        let mut req = tonic::Request::new(pb::RevokeAdminTokenRequest { id });
        let bearer = format!("Bearer {first}").parse().unwrap();
        req.metadata_mut().insert("authorization", bearer);
        AdminApi::new(state).revoke_admin_token(req).await.unwrap();
        assert_eq!(
            console.sessions().len(),
            2,
            "only the revoked token's sessions end"
        );
    }
}
