//! The console's sessions: an in-memory map from a random session id (the cookie) to the
//! logged-in user's admin token, the chosen language, a CSRF token and a one-shot notice.
//!
//! Kept in memory on purpose: a restart logs everyone out, and the admin tokens never reach
//! the store in clear. A session starts anonymous (the login form needs a CSRF token and a
//! language before anyone has logged in) and gets a *new* id when its user logs in, so an id
//! planted before login is worthless after it. Anonymous sessions are cheap to create, so they
//! expire quickly and are the first to go when the map is full.

use super::i18n::Lang;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};
use vakt_proto::pb;

/// A logged-in session ends after this long without a request.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(2 * 3600);
/// ... and after this long in any case: a forgotten browser does not stay logged in for days.
pub const ABSOLUTE_TIMEOUT: Duration = Duration::from_secs(12 * 3600);
/// An anonymous session (the login form) lives this long.
pub const ANONYMOUS_TIMEOUT: Duration = Duration::from_secs(30 * 60);
/// At most this many sessions; past it, expired and then the oldest anonymous ones go.
pub const MAX_SESSIONS: usize = 10_000;

/// Who is logged in: the admin token the console presents to the admin API on their behalf.
#[derive(Clone, Debug)]
pub struct User {
    pub token: String,
    pub name: String,
    pub role: pb::Role,
    /// How the audit log names this admin (the token's name and id), for the logout entry.
    pub audit_name: String,
    /// The token was minted for this session by single sign-on and ends with it.
    pub sso: bool,
}

/// A notice shown once on the next page (after a form did what it was asked).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Flash {
    pub ok: bool,
    pub text: String,
}

#[derive(Clone, Debug)]
pub struct Session {
    pub csrf: String,
    pub lang: Lang,
    pub user: Option<User>,
    pub flash: Option<Flash>,
    created: Instant,
    last_seen: Instant,
}

impl Session {
    fn expired(&self, now: Instant) -> bool {
        let idle = now.saturating_duration_since(self.last_seen);
        let age = now.saturating_duration_since(self.created);
        match self.user {
            Some(_) => idle > IDLE_TIMEOUT || age > ABSOLUTE_TIMEOUT,
            None => idle > ANONYMOUS_TIMEOUT,
        }
    }
}

/// The session map. Every method takes `now`, so expiry is testable without waiting.
#[derive(Debug, Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
    /// The tokens of single sign-on sessions that expired, until the console revokes them
    /// ([`Sessions::take_expired_sso`]): a session's end is its credential's end.
    ended_sso: Mutex<Vec<String>>,
}

/// A fresh random identifier: 32 bytes from the OS, hex.
pub fn random_id() -> String {
    crate::token::hex(&crate::token::random_bytes::<32>())
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

impl Sessions {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Session>> {
        // A panic while holding the lock leaves a map that is still consistent (every
        // operation is a single insert or remove), so a poisoned lock is used as it is.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Notes the credential of a single sign-on session that ended without a logout.
    fn ended(&self, s: Session) {
        if let Some(u) = s.user.filter(|u| u.sso) {
            self.ended_sso
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(u.token);
        }
    }

    /// Removes every expired session; returns the tokens of the single sign-on sessions among
    /// them and of those that expired or were evicted since the last call, to be revoked.
    pub fn take_expired_sso(&self, now: Instant) -> Vec<String> {
        let expired: Vec<Session> = {
            let mut map = self.lock();
            let ids: Vec<String> = map
                .iter()
                .filter(|(_, s)| s.expired(now))
                .map(|(k, _)| k.clone())
                .collect();
            ids.iter().filter_map(|k| map.remove(k)).collect()
        };
        for s in expired {
            self.ended(s);
        }
        std::mem::take(&mut *self.ended_sso.lock().unwrap_or_else(|p| p.into_inner()))
    }

    /// The live session `id`, touched; an expired one is removed and not returned.
    pub fn get(&self, id: &str, now: Instant) -> Option<Session> {
        let mut map = self.lock();
        let s = map.get_mut(id)?;
        if s.expired(now) {
            let gone = map.remove(id);
            drop(map);
            if let Some(s) = gone {
                self.ended(s);
            }
            return None;
        }
        s.last_seen = now;
        Some(s.clone())
    }

    /// Starts a session and returns its id.
    pub fn create(&self, lang: Lang, user: Option<User>, now: Instant) -> String {
        let mut gone = Vec::new();
        let id = self.insert(lang, user, now, &mut gone);
        for s in gone {
            self.ended(s);
        }
        id
    }

    /// [`create`](Self::create)'s work under the lock; the sessions it dropped go to `gone`.
    fn insert(
        &self,
        lang: Lang,
        user: Option<User>,
        now: Instant,
        gone: &mut Vec<Session>,
    ) -> String {
        let mut map = self.lock();
        if map.len() >= MAX_SESSIONS {
            let expired: Vec<String> = map
                .iter()
                .filter(|(_, s)| s.expired(now))
                .map(|(k, _)| k.clone())
                .collect();
            gone.extend(expired.iter().filter_map(|k| map.remove(k)));
        }
        while map.len() >= MAX_SESSIONS {
            let oldest_anonymous = map
                .iter()
                .filter(|(_, s)| s.user.is_none())
                .min_by_key(|(_, s)| s.last_seen)
                .map(|(k, _)| k.clone());
            let victim = oldest_anonymous.or_else(|| {
                map.iter()
                    .min_by_key(|(_, s)| s.last_seen)
                    .map(|(k, _)| k.clone())
            });
            match victim.and_then(|k| map.remove(&k)) {
                Some(s) => gone.push(s),
                None => break,
            }
        }
        let id = random_id();
        map.insert(
            id.clone(),
            Session {
                csrf: random_id(),
                lang,
                user,
                flash: None,
                created: now,
                last_seen: now,
            },
        );
        id
    }

    /// Logs a user in: the old session goes and a new one, with a new id and CSRF token,
    /// keeps its language.
    pub fn login(&self, old_id: &str, user: User, now: Instant) -> String {
        let lang = self.remove(old_id).map(|s| s.lang).unwrap_or_default();
        self.create(lang, Some(user), now)
    }

    pub fn remove(&self, id: &str) -> Option<Session> {
        self.lock().remove(id)
    }

    /// Ends every session logged in with the token whose sha-256 is `hash`: it was revoked.
    pub fn end_token(&self, hash: &[u8; 32]) -> usize {
        let mut map = self.lock();
        let before = map.len();
        map.retain(|_, s| {
            s.user
                .as_ref()
                .is_none_or(|u| crate::token::hash(&u.token) != *hash)
        });
        before - map.len()
    }

    pub fn set_lang(&self, id: &str, lang: Lang) {
        if let Some(s) = self.lock().get_mut(id) {
            s.lang = lang;
        }
    }

    pub fn set_flash(&self, id: &str, flash: Flash) {
        if let Some(s) = self.lock().get_mut(id) {
            s.flash = Some(flash);
        }
    }

    pub fn take_flash(&self, id: &str) -> Option<Flash> {
        self.lock().get_mut(id).and_then(|s| s.flash.take())
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.lock().len()
    }
}

/// The session cookie's name: `__Host-` over TLS, which browsers accept only with `Secure`,
/// `Path=/` and no `Domain`, so no other site on the host can set or shadow it.
pub fn cookie_name(secure: bool) -> &'static str {
    if secure {
        "__Host-vakt_session"
    } else {
        "vakt_session"
    }
}

/// The `Set-Cookie` value that hands a browser its session id.
pub fn set_cookie(id: &str, secure: bool) -> String {
    format!(
        "{}={id}; Path=/; HttpOnly; SameSite=Strict{}",
        cookie_name(secure),
        if secure { "; Secure" } else { "" }
    )
}

/// The `Set-Cookie` value that makes a browser forget its session id.
pub fn clear_cookie(secure: bool) -> String {
    format!(
        "{}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}",
        cookie_name(secure),
        if secure { "; Secure" } else { "" }
    )
}

/// The session id in a request's `Cookie` headers, if any.
pub fn session_id<'a>(
    cookie_headers: impl Iterator<Item = &'a str>,
    secure: bool,
) -> Option<String> {
    let name = cookie_name(secure);
    cookie_headers
        .flat_map(|h| h.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, v)| *k == name && !v.is_empty())
        .map(|(_, v)| v.trim_matches('"').to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user() -> User {
        User {
            token: "vakt_a_x".into(),
            name: "it".into(),
            role: pb::Role::Admin,
            audit_name: "token:it:x".into(),
            sso: false,
        }
    }

    #[test]
    fn login_rotates_the_id_and_keeps_the_language() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let anon = s.create(Lang::En, None, t0);
        let csrf_before = s.get(&anon, t0).unwrap().csrf;
        let id = s.login(&anon, user(), t0);
        assert_ne!(id, anon);
        assert!(s.get(&anon, t0).is_none(), "the pre-login id is dead");
        let sess = s.get(&id, t0).unwrap();
        assert_eq!(sess.lang, Lang::En);
        assert_ne!(sess.csrf, csrf_before);
        assert_eq!(sess.user.unwrap().name, "it");
    }

    #[test]
    fn sessions_expire_idle_absolute_and_anonymous() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let anon = s.create(Lang::Sv, None, t0);
        assert!(s.get(&anon, t0 + ANONYMOUS_TIMEOUT / 2).is_some());
        assert!(
            s.get(
                &anon,
                t0 + ANONYMOUS_TIMEOUT / 2 + ANONYMOUS_TIMEOUT + Duration::from_secs(1)
            )
            .is_none()
        );

        let id = s.create(Lang::Sv, Some(user()), t0);
        // Kept alive by use...
        let mut t = t0;
        while t + IDLE_TIMEOUT / 2 <= t0 + ABSOLUTE_TIMEOUT {
            t += IDLE_TIMEOUT / 2;
            assert!(s.get(&id, t).is_some());
        }
        // ...but not past the absolute limit, however recently it was used.
        let end = t0 + ABSOLUTE_TIMEOUT + Duration::from_secs(1);
        assert!(end - t < IDLE_TIMEOUT);
        assert!(s.get(&id, end).is_none());
        let idle = s.create(Lang::Sv, Some(user()), t0);
        assert!(
            s.get(&idle, t0 + IDLE_TIMEOUT + Duration::from_secs(1))
                .is_none()
        );
    }

    #[test]
    fn a_full_map_drops_anonymous_sessions_first() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let kept = s.create(Lang::Sv, Some(user()), t0);
        for i in 0..MAX_SESSIONS + 5 {
            s.create(Lang::Sv, None, t0 + Duration::from_millis(i as u64));
        }
        assert_eq!(s.len(), MAX_SESSIONS);
        assert!(
            s.get(&kept, t0).is_some(),
            "a logged-in user is not evicted"
        );
    }

    #[test]
    fn expired_single_sign_on_sessions_hand_back_their_tokens() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let sso = |token: &str| User {
            token: token.into(),
            sso: true,
            ..user()
        };
        let idle = s.create(Lang::Sv, Some(sso("idle")), t0);
        s.create(Lang::Sv, Some(sso("swept")), t0);
        s.create(Lang::Sv, Some(user()), t0);
        let live = s.create(Lang::Sv, Some(sso("live")), t0 + IDLE_TIMEOUT);
        assert!(s.take_expired_sso(t0).is_empty(), "nothing expired yet");
        let later = t0 + IDLE_TIMEOUT + Duration::from_secs(1);
        // One expires as it is looked up, the other in the sweep; a pasted token is not the
        // session's to end, and a live session keeps its own.
        assert!(s.get(&idle, later).is_none());
        let mut ended = s.take_expired_sso(later);
        ended.sort();
        assert_eq!(ended, vec!["idle".to_string(), "swept".to_string()]);
        assert!(
            s.take_expired_sso(later).is_empty(),
            "each is handed back once"
        );
        assert!(s.get(&live, later).is_some());
    }

    #[test]
    fn flash_is_shown_once() {
        let s = Sessions::default();
        let t0 = Instant::now();
        let id = s.create(Lang::Sv, Some(user()), t0);
        s.set_flash(
            &id,
            Flash {
                ok: true,
                text: "klart".into(),
            },
        );
        assert_eq!(s.take_flash(&id).unwrap().text, "klart");
        assert!(s.take_flash(&id).is_none());
    }

    #[test]
    fn cookies_are_strict_httponly_and_secure_over_tls() {
        assert_eq!(
            set_cookie("abc", false),
            "vakt_session=abc; Path=/; HttpOnly; SameSite=Strict"
        );
        assert_eq!(
            set_cookie("abc", true),
            "__Host-vakt_session=abc; Path=/; HttpOnly; SameSite=Strict; Secure"
        );
        assert!(clear_cookie(true).contains("Max-Age=0"));
        let headers = ["theme=dark; vakt_session=abc", "other=1"];
        assert_eq!(
            session_id(headers.iter().copied(), false).as_deref(),
            Some("abc")
        );
        assert_eq!(session_id(headers.iter().copied(), true), None);
        assert_eq!(session_id(["vakt_session="].iter().copied(), false), None);
    }

    #[test]
    fn secrets_compare_exactly() {
        assert!(same_secret("abc", "abc"));
        assert!(!same_secret("abc", "abd"));
        assert!(!same_secret("abc", "ab"));
        assert!(!same_secret("", "a"));
    }
}
