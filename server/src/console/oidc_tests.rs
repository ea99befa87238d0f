//! Single sign-on against a provider this test controls: a small OpenID Connect provider on a
//! loopback port (discovery, an ES256 key set, a token endpoint) whose ID tokens each test
//! writes, so every way a token can be wrong is tried against the real callback: a wrong
//! `state`, a callback from another browser, a wrong nonce, another issuer, a forged signature,
//! an expired token, an unmapped person, an unverified address, Entra's groups overage, an
//! unreachable provider. Each must end on the login page with the reason, with no session and
//! no credential minted. The provider counts the requests it serves, so the tests also see how
//! often the console fetches its metadata and keys, and it can rotate its signing key. (The
//! happy path against a real provider process, in Chromium, is `tests/tests/oidc.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::oidc::{Login, Sso};
use super::tests::{Resp, exchange};
use super::*;
use crate::config::{OidcFile, OidcRoles};
use base64::Engine;
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use serde_json::json;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

const CLIENT: &str = "vakt-console";

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

fn new_key() -> EcdsaKeyPair {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap()
}

/// A compact JWS (ES256) of `claims` under key id `k1`.
fn sign(key: &EcdsaKeyPair, claims: &serde_json::Value) -> String {
    sign_as(key, "k1", claims)
}

/// A compact JWS (ES256) of `claims` under key id `kid`.
fn sign_as(key: &EcdsaKeyPair, kid: &str, claims: &serde_json::Value) -> String {
    let header = json!({"alg": "ES256", "typ": "JWT", "kid": kid});
    let input = format!(
        "{}.{}",
        b64(header.to_string().as_bytes()),
        b64(claims.to_string().as_bytes())
    );
    let sig = key
        .sign(&ring::rand::SystemRandom::new(), input.as_bytes())
        .unwrap();
    format!("{input}.{}", b64(sig.as_ref()))
}

/// The fake provider: what it announces and the ID token its token endpoint hands out next.
struct Provider {
    base: String,
    /// The issuer its discovery document names (normally `base`).
    announced_issuer: String,
    key: EcdsaKeyPair,
    /// A second key, published as `k2` beside `k1` once the provider has rotated.
    rotated: Mutex<Option<Arc<EcdsaKeyPair>>>,
    next_token: Mutex<String>,
    /// How many times the discovery document and the key set were served.
    discoveries: AtomicUsize,
    key_sets: AtomicUsize,
    /// The token requests' bodies, to see that the PKCE verifier was sent.
    token_requests: Mutex<Vec<String>>,
}

async fn start_provider(announce_other_issuer: bool) -> Arc<Provider> {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let p = Arc::new(Provider {
        announced_issuer: if announce_other_issuer {
            "http://127.0.0.1:1".into()
        } else {
            base.clone()
        },
        base,
        key: new_key(),
        rotated: Mutex::default(),
        next_token: Mutex::default(),
        discoveries: AtomicUsize::new(0),
        key_sets: AtomicUsize::new(0),
        token_requests: Mutex::default(),
    });
    let json_answer = |v: serde_json::Value| {
        ([(header::CONTENT_TYPE, "application/json")], v.to_string()).into_response()
    };
    let (d, j, t) = (p.clone(), p.clone(), p.clone());
    let app = Router::new()
        .route(
            "/.well-known/openid-configuration",
            get(move || async move {
                d.discoveries.fetch_add(1, Ordering::SeqCst);
                json_answer(json!({
                    "issuer": d.announced_issuer,
                    "authorization_endpoint": format!("{}/authorize", d.base),
                    "token_endpoint": format!("{}/token", d.base),
                    "jwks_uri": format!("{}/jwks", d.base),
                    "response_types_supported": ["code"],
                    "subject_types_supported": ["public"],
                    "id_token_signing_alg_values_supported": ["ES256"],
                }))
            }),
        )
        .route(
            "/jwks",
            get(move || async move {
                j.key_sets.fetch_add(1, Ordering::SeqCst);
                let jwk = |kid: &str, key: &EcdsaKeyPair| {
                    let point = key.public_key().as_ref();
                    json!({
                        "kty": "EC", "crv": "P-256", "use": "sig", "alg": "ES256", "kid": kid,
                        "x": b64(&point[1..33]), "y": b64(&point[33..65]),
                    })
                };
                let mut keys = vec![jwk("k1", &j.key)];
                if let Some(k2) = j.rotated.lock().unwrap().as_ref() {
                    keys.push(jwk("k2", k2));
                }
                json_answer(json!({ "keys": keys }))
            }),
        )
        .route(
            "/token",
            post(move |body: String| async move {
                t.token_requests.lock().unwrap().push(body);
                let id_token = t.next_token.lock().unwrap().clone();
                json_answer(json!({
                    "access_token": "at", "token_type": "Bearer", "expires_in": 300,
                    "id_token": id_token,
                }))
            }),
        );
    tokio::spawn(async move { axum::serve(listener, app).await });
    p
}

fn roles() -> OidcRoles {
    OidcRoles {
        admin: vec!["vakt-admins".into()],
        operator: vec![],
        viewer: vec!["vakt-viewers".into()],
    }
}

struct Fixture {
    _dir: tempfile::TempDir,
    state: State,
    addr: SocketAddr,
    /// The console's cache of the provider's metadata, to age it.
    cache: Arc<super::oidc_cache::Cache>,
    _stop: tokio::sync::oneshot::Sender<()>,
}

/// A console whose single sign-on goes to `issuer`.
async fn console_for(issuer: &str) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let state = crate::server::prepare(dir.path(), &[], crate::notify::NotifyConfig::default())
        .await
        .unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let sso = Sso::from_config(&OidcFile {
        issuer: issuer.into(),
        client_id: CLIENT.into(),
        client_secret_file: None,
        redirect_url: format!("http://{addr}/login/oidc/callback"),
        role_claim: "groups".into(),
        token_login: true,
        roles: roles(),
    })
    .unwrap();
    let cache = sso.cache();
    let login = Login {
        token_login: true,
        sso: Some(sso),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve_with_login(
        listener,
        state.clone(),
        Transport::Plain,
        login,
        async move {
            let _ = stopped.await;
        },
    ));
    Fixture {
        _dir: dir,
        state,
        addr,
        cache,
        _stop: stop,
    }
}

async fn fetch(addr: SocketAddr, path: &str, cookie: Option<&str>) -> Resp {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    exchange(tcp, "GET", path, cookie, None).await
}

/// Every `name=value` the response sets, in order.
fn set_cookies(r: &Resp) -> Vec<String> {
    r.headers
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case("set-cookie"))
        .map(|(_, v)| v.split(';').next().unwrap().to_string())
        .collect()
}

/// A query parameter of a URL (the values here are URL-safe, so no decoding).
fn param(url: &str, name: &str) -> String {
    url.split(['?', '&'])
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")))
        .unwrap_or_else(|| panic!("{name} in {url}"))
        .to_string()
}

/// A login started at the console: the attempt's cookie, its state and its nonce.
struct Attempt {
    cookie: String,
    state: String,
    nonce: String,
}

async fn begin(f: &Fixture) -> Attempt {
    begin_in(f, "en").await
}

/// A login attempt started from the login page in `lang`.
async fn begin_in(f: &Fixture, lang: &str) -> Attempt {
    let r = fetch(
        f.addr,
        &format!("/login/oidc?next=/devices&lang={lang}"),
        None,
    )
    .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let to = r.header("location").unwrap().to_string();
    assert_eq!(param(&to, "client_id"), CLIENT);
    assert_eq!(param(&to, "code_challenge_method"), "S256", "PKCE: {to}");
    assert!(to.contains("scope=openid"), "{to}");
    Attempt {
        cookie: set_cookies(&r).into_iter().next().unwrap(),
        state: param(&to, "state"),
        nonce: param(&to, "nonce"),
    }
}

fn claims(p: &Provider, nonce: &str, groups: &[&str]) -> serde_json::Value {
    let now = crate::timefmt::now_ms() / 1000;
    json!({
        "iss": p.base, "sub": "anna-1", "aud": CLIENT, "iat": now, "exp": now + 300,
        "nonce": nonce, "email": "anna@example.org", "groups": groups,
    })
}

async fn callback(f: &Fixture, a: &Attempt, state: &str, cookie: Option<&str>) -> Resp {
    let path = format!("/login/oidc/callback?code=c0de&state={state}");
    fetch(f.addr, &path, cookie.or(Some(&a.cookie))).await
}

/// Whether a response let someone in: a session cookie whose session shows a page.
async fn logged_in(f: &Fixture, r: &Resp) -> bool {
    for c in set_cookies(r)
        .into_iter()
        .filter(|c| c.starts_with("vakt_session="))
    {
        if fetch(f.addr, "/devices", Some(&c)).await.status == 200 {
            return true;
        }
    }
    false
}

fn minted(f: &Fixture) -> Vec<pb::AdminTokenRecord> {
    f.state
        .store
        .admin_tokens()
        .unwrap()
        .into_iter()
        .map(|(_, r)| r)
        .filter(crate::api::tokens::is_sso_credential)
        .collect()
}

/// Asserts a refused callback: its status, the reason on the login page, no session, nothing
/// minted.
async fn assert_refused(f: &Fixture, r: &Resp, status: u16, why: &str) {
    assert_eq!(r.status, status, "{}", r.body);
    assert!(r.body.contains("Log in to Vakt") || r.body.contains("Logga in i Vakt"));
    assert!(r.body.contains(why), "'{why}' not in {}", r.body);
    assert!(!logged_in(f, r).await, "a refused sign-in made a session");
    assert!(
        minted(f).is_empty(),
        "a refused sign-in minted a credential"
    );
}

#[tokio::test]
async fn a_good_id_token_logs_in_with_the_mapped_role_and_logout_ends_the_credential() {
    let p = start_provider(false).await;
    let f = console_for(&p.base).await;
    let a = begin(&f).await;
    *p.next_token.lock().unwrap() = sign(&p.key, &claims(&p, &a.nonce, &["staff", "vakt-admins"]));
    let r = callback(&f, &a, &a.state, None).await;
    assert_eq!(r.status, 200, "{}", r.body);
    assert!(r.body.contains("url=/devices"), "{}", r.body);
    let sent = p.token_requests.lock().unwrap().join("\n");
    assert!(
        sent.contains("code_verifier="),
        "PKCE verifier sent: {sent}"
    );
    let session = set_cookies(&r)
        .into_iter()
        .find(|c| c.starts_with("vakt_session="))
        .unwrap();
    let page = fetch(f.addr, "/devices", Some(&session)).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("anna@example.org"), "{}", page.body);

    let tokens = minted(&f);
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].name, "anna@example.org");
    assert_eq!(tokens[0].role, pb::Role::Admin as i32);
    assert!(tokens[0].expires_at_ms > 0, "the credential expires");
    let audit = f.state.store.audit_log().unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "console.login" && e.actor.contains("anna@example.org")),
        "{audit:?}"
    );

    // The same state again (a replayed callback) finds nothing.
    let again = callback(&f, &a, &a.state, None).await;
    assert_eq!(again.status, 400, "{}", again.body);

    // Logging out revokes the minted credential.
    let csrf = super::tests::csrf_of(&fetch(f.addr, "/", Some(&session)).await.body);
    let tcp = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    let out = exchange(
        tcp,
        "POST",
        "/logout",
        Some(&session),
        Some(&format!("csrf={csrf}")),
    )
    .await;
    assert_eq!(out.status, 303);
    assert!(minted(&f)[0].revoked, "logout ends the credential");
}

/// Issue 18's guard: with an admin signed in by single sign-on, the initial admin token is
/// still the last one IT keeps, so the API refuses to revoke it (an outage of the provider
/// would lock IT out); the sign-in credential itself can be revoked.
#[tokio::test]
async fn a_sign_in_credential_does_not_let_the_last_kept_admin_token_be_revoked() {
    use vakt_proto::pb::admin_service_server::AdminService;
    let p = start_provider(false).await;
    let f = console_for(&p.base).await;
    let a = begin(&f).await;
    *p.next_token.lock().unwrap() = sign(&p.key, &claims(&p, &a.nonce, &["vakt-admins"]));
    let r = callback(&f, &a, &a.state, None).await;
    assert!(logged_in(&f, &r).await, "{}", r.body);
    let credential = minted(&f).remove(0);
    assert_eq!(credential.role, pb::Role::Admin as i32);

    let first = std::fs::read_to_string(f._dir.path().join("admin.token")).unwrap();
    let all = f.state.store.admin_tokens().unwrap();
    let first_id = all
        .iter()
        .find(|(_, r)| r.name == "initial-admin")
        .map(|(_, r)| r.id.clone())
        .unwrap();
    let revoke = |id: String| {
        let mut req = tonic::Request::new(pb::RevokeAdminTokenRequest { id });
        let bearer = format!("Bearer {}", first.trim()).parse().unwrap();
        req.metadata_mut().insert("authorization", bearer);
        let api = crate::api::admin::AdminApi::new(f.state.clone());
        async move { api.revoke_admin_token(req).await }
    };
    let refused = revoke(first_id.clone()).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::FailedPrecondition);
    assert!(
        refused.message().contains("single sign-on") && refused.message().contains(&first_id),
        "{}",
        refused.message()
    );
    revoke(credential.id.clone()).await.unwrap();
    assert!(minted(&f)[0].revoked);
}

#[tokio::test]
async fn each_bad_callback_is_refused_with_its_reason_and_no_session() {
    let p = start_provider(false).await;
    let f = console_for(&p.base).await;
    let other_key = new_key();

    // A state this console never started.
    let a = begin(&f).await;
    *p.next_token.lock().unwrap() = sign(&p.key, &claims(&p, &a.nonce, &["vakt-admins"]));
    let r = callback(&f, &a, "forged-state", None).await;
    // No attempt, so no language chosen: the console's default, Swedish.
    assert_refused(&f, &r, 400, "okänt eller har gått ut").await;

    // The right state from a browser that did not start the login.
    let a = begin(&f).await;
    *p.next_token.lock().unwrap() = sign(&p.key, &claims(&p, &a.nonce, &["vakt-admins"]));
    let r = callback(&f, &a, &a.state, Some("vakt_oidc=someone-else")).await;
    assert_refused(&f, &r, 400, "not started in this browser").await;

    // The person said no at the provider (or the provider refused them).
    let a = begin(&f).await;
    let path = format!(
        "/login/oidc/callback?error=access_denied&error_description=denied&state={}",
        a.state
    );
    let r = fetch(f.addr, &path, Some(&a.cookie)).await;
    assert_refused(&f, &r, 401, "the identity provider said no: access_denied").await;

    // Each wrong ID token, one login attempt each.
    type Spoil = fn(&mut serde_json::Value);
    let cases: [(&str, Spoil, bool); 4] = [
        ("nonce", |c| c["nonce"] = json!("another-nonce"), false),
        (
            "issuer",
            |c| c["iss"] = json!("https://evil.example.org"),
            false,
        ),
        (
            "expired",
            |c| {
                let past = crate::timefmt::now_ms() / 1000 - 3600;
                c["exp"] = json!(past);
                c["iat"] = json!(past - 300);
            },
            false,
        ),
        ("signature", |_| {}, true),
    ];
    for (why, spoil, forged) in cases {
        let a = begin(&f).await;
        let mut c = claims(&p, &a.nonce, &["vakt-admins"]);
        spoil(&mut c);
        let key = if forged { &other_key } else { &p.key };
        *p.next_token.lock().unwrap() = sign(key, &c);
        let r = callback(&f, &a, &a.state, None).await;
        assert_refused(&f, &r, 401, "the ID token was refused").await;
        let page = r.body.to_lowercase();
        assert!(page.contains(why), "{why}: {}", r.body);
    }

    // A person the provider vouches for, in no mapped group: refused, and the refusal audited.
    let a = begin(&f).await;
    *p.next_token.lock().unwrap() = sign(&p.key, &claims(&p, &a.nonce, &["staff"]));
    let r = callback(&f, &a, &a.state, None).await;
    assert_refused(&f, &r, 403, "has no role in Vakt").await;
    assert!(
        r.body.contains("anna@example.org") && r.body.contains("staff"),
        "{}",
        r.body
    );
    let audit = f.state.store.audit_log().unwrap();
    assert!(
        audit
            .iter()
            .any(|e| e.action == "console.login.refused" && e.actor == "sso:anna@example.org"),
        "{audit:?}"
    );
}

#[tokio::test]
async fn a_provider_that_names_another_issuer_or_is_unreachable_is_refused() {
    let p = start_provider(true).await;
    let f = console_for(&p.base).await;
    let r = fetch(f.addr, "/login/oidc?lang=en", None).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(r.body.contains("could not be used"), "{}", r.body);
    assert!(r.body.to_lowercase().contains("issuer"), "{}", r.body);
    assert!(!logged_in(&f, &r).await);

    // Nothing listens on the issuer's port.
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gone = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let f = console_for(&gone).await;
    // No language chosen: the console's default, Swedish, around the error's own text.
    let r = fetch(f.addr, "/login/oidc", None).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert!(
        r.body.contains("kunde inte användas") && r.body.contains(&gone),
        "{}",
        r.body
    );
    assert!(!r.body.contains("could not be used"), "{}", r.body);
    assert!(!logged_in(&f, &r).await);
}

#[tokio::test]
async fn token_login_off_refuses_the_token_form_and_hides_it() {
    let dir = tempfile::tempdir().unwrap();
    let state = crate::server::prepare(dir.path(), &[], crate::notify::NotifyConfig::default())
        .await
        .unwrap();
    let admin = std::fs::read_to_string(dir.path().join("admin.token")).unwrap();
    let sso = Sso::from_config(&OidcFile {
        issuer: "http://127.0.0.1:9".into(),
        client_id: CLIENT.into(),
        client_secret_file: None,
        redirect_url: "http://127.0.0.1:9/login/oidc/callback".into(),
        role_claim: "groups".into(),
        token_login: false,
        roles: roles(),
    })
    .unwrap();
    let console = Console::with_login(
        state,
        Transport::Plain,
        Login {
            token_login: false,
            sso: Some(sso),
        },
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(listen::serve(
        listener,
        router(console),
        std::future::pending(),
    ));
    let page = fetch(addr, "/login?lang=en", None).await;
    assert!(page.body.contains("id=\"sso\""), "{}", page.body);
    assert!(!page.body.contains("id=\"token\""), "{}", page.body);
    let cookie = set_cookies(&page).into_iter().next().unwrap();
    let csrf = super::tests::csrf_of(&page.body);
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let body = format!("csrf={csrf}&token={}", admin.trim());
    let r = exchange(tcp, "POST", "/login", Some(&cookie), Some(&body)).await;
    assert_eq!(r.status, 403, "{}", r.body);
    assert!(r.body.contains("turned off"), "{}", r.body);
}

#[test]
fn a_missing_or_empty_client_secret_file_stops_the_start_and_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("oidc.secret");
    let cfg = OidcFile {
        issuer: "https://login.example.org".into(),
        client_id: CLIENT.into(),
        client_secret_file: Some(path.clone()),
        redirect_url: "https://vakt.example.org/login/oidc/callback".into(),
        role_claim: "groups".into(),
        token_login: true,
        roles: roles(),
    };
    let err = Login::from_config(Some(&cfg)).unwrap_err().to_string();
    assert!(
        err.contains("client_secret_file") && err.contains(&path.display().to_string()),
        "{err}"
    );
    crate::fsutil::write_private(&path, b"\n").unwrap();
    let err = Login::from_config(Some(&cfg)).unwrap_err().to_string();
    assert!(err.contains("empty"), "{err}");
    crate::fsutil::write_private(&path, b"s3cret\n").unwrap();
    let login = Login::from_config(Some(&cfg)).unwrap();
    assert!(login.sso.is_some() && login.token_login);
    assert!(Login::from_config(None).unwrap().sso.is_none());
}

/// Starting a login needs no authentication, so it must not cost the provider requests: many
/// starts, at once and one after another, make one discovery and one key set fetch, and the
/// logins they start still work. Metadata older than its time is fetched again.
#[tokio::test]
async fn many_login_starts_fetch_the_providers_metadata_once() {
    use super::oidc_cache::METADATA_TTL;
    let p = start_provider(false).await;
    let f = console_for(&p.base).await;
    let mut at_once = tokio::task::JoinSet::new();
    for _ in 0..20 {
        let addr = f.addr;
        at_once.spawn(async move { fetch(addr, "/login/oidc", None).await.status });
    }
    while let Some(status) = at_once.join_next().await {
        assert_eq!(status.unwrap(), 303);
    }
    for _ in 0..10 {
        begin(&f).await;
    }
    let fetched = |p: &Provider| {
        (
            p.discoveries.load(Ordering::SeqCst),
            p.key_sets.load(Ordering::SeqCst),
        )
    };
    assert_eq!(fetched(&p), (1, 1), "31 starts, one fetch of each");

    let a = begin(&f).await;
    *p.next_token.lock().unwrap() = sign(&p.key, &claims(&p, &a.nonce, &["vakt-admins"]));
    let r = callback(&f, &a, &a.state, None).await;
    assert!(logged_in(&f, &r).await, "{}", r.body);
    assert_eq!(fetched(&p), (1, 1), "the callback uses the cached keys too");

    f.cache.age(METADATA_TTL).await;
    begin(&f).await;
    begin(&f).await;
    assert_eq!(fetched(&p), (2, 2), "stale metadata is fetched again, once");
}

/// A provider that is down answers every login in the next seconds with the same reason,
/// without a connection each.
#[tokio::test]
async fn a_provider_that_is_down_is_not_retried_for_every_start() {
    use super::oidc_cache::FAILURE_TTL;
    let p = start_provider(true).await;
    let f = console_for(&p.base).await;
    for _ in 0..5 {
        let r = fetch(f.addr, "/login/oidc?lang=en", None).await;
        assert_eq!(r.status, 502, "{}", r.body);
        assert!(r.body.contains("could not be used"), "{}", r.body);
    }
    assert_eq!(p.discoveries.load(Ordering::SeqCst), 1);
    f.cache.age(FAILURE_TTL).await;
    let r = fetch(f.addr, "/login/oidc", None).await;
    assert_eq!(r.status, 502, "{}", r.body);
    assert_eq!(p.discoveries.load(Ordering::SeqCst), 2, "tried again later");
}

/// The provider rotates its signing key after the console cached its key set: an ID token
/// under the new key makes the console fetch the key set again and the login works. A token
/// under a key id the provider never published is refused, and within the next 30 seconds it
/// cannot make the console fetch the key set again.
#[tokio::test]
async fn a_rotated_key_is_found_and_forged_key_ids_cannot_force_fetches() {
    use super::oidc_cache::KEYS_MIN_INTERVAL;
    let p = start_provider(false).await;
    let f = console_for(&p.base).await;
    let a = begin(&f).await;
    assert_eq!(p.key_sets.load(Ordering::SeqCst), 1);
    let k2 = Arc::new(new_key());
    *p.rotated.lock().unwrap() = Some(k2.clone());
    // The cached set is older than the refetch interval, as after any quiet half minute.
    f.cache.age(KEYS_MIN_INTERVAL).await;
    *p.next_token.lock().unwrap() = sign_as(&k2, "k2", &claims(&p, &a.nonce, &["vakt-admins"]));
    let r = callback(&f, &a, &a.state, None).await;
    assert!(logged_in(&f, &r).await, "{}", r.body);
    assert_eq!(p.key_sets.load(Ordering::SeqCst), 2, "fetched once more");
    assert_eq!(p.discoveries.load(Ordering::SeqCst), 1);

    // Forged under key ids the provider never published, one after another: refused, no
    // fetch within the interval; after it, one more.
    for kid in ["k3", "k4", "k5"] {
        let a = begin(&f).await;
        let forged = new_key();
        *p.next_token.lock().unwrap() =
            sign_as(&forged, kid, &claims(&p, &a.nonce, &["vakt-admins"]));
        let r = callback(&f, &a, &a.state, None).await;
        assert_eq!(r.status, 401, "{}", r.body);
        assert!(r.body.contains("the ID token was refused"), "{}", r.body);
        assert!(!logged_in(&f, &r).await);
    }
    assert_eq!(
        p.key_sets.load(Ordering::SeqCst),
        2,
        "no fetch for forged key ids"
    );
    assert_eq!(
        minted(&f).len(),
        1,
        "only the good sign-in minted a credential"
    );
    f.cache.age(KEYS_MIN_INTERVAL).await;
    let a = begin(&f).await;
    *p.next_token.lock().unwrap() =
        sign_as(&new_key(), "k6", &claims(&p, &a.nonce, &["vakt-admins"]));
    let r = callback(&f, &a, &a.state, None).await;
    assert_eq!(r.status, 401, "{}", r.body);
    assert_eq!(p.key_sets.load(Ordering::SeqCst), 3);
}

/// A provider that lets a user set an unverified address would let them be another admin:
/// `email_verified: false` (or "false") refuses the login, with the reason on the page, the
/// refusal audited under the token's subject (not the address), no session and nothing minted.
#[tokio::test]
async fn an_unverified_address_is_refused_and_audited_under_the_subject() {
    let p = start_provider(false).await;
    let f = console_for(&p.base).await;
    for verified in [json!(false), json!("false")] {
        let a = begin(&f).await;
        let mut c = claims(&p, &a.nonce, &["vakt-admins"]);
        c["email_verified"] = verified;
        c["sub"] = json!("eve-7");
        *p.next_token.lock().unwrap() = sign(&p.key, &c);
        let r = callback(&f, &a, &a.state, None).await;
        assert_refused(&f, &r, 403, "has not verified the address anna@example.org").await;
    }
    let audit = f.state.store.audit_log().unwrap();
    let refusals: Vec<_> = audit
        .iter()
        .filter(|e| e.action == "console.login.refused")
        .collect();
    assert_eq!(refusals.len(), 2, "{audit:?}");
    assert!(
        refusals.iter().all(|e| e.actor == "sso-sub:eve-7"),
        "{refusals:?}"
    );
    assert!(
        !audit.iter().any(|e| e.actor.contains("anna@example.org")),
        "nothing is put on anna: {audit:?}"
    );

    // Verified, as a string: let in.
    let a = begin(&f).await;
    let mut c = claims(&p, &a.nonce, &["vakt-admins"]);
    c["email_verified"] = json!("true");
    *p.next_token.lock().unwrap() = sign(&p.key, &c);
    let r = callback(&f, &a, &a.state, None).await;
    assert!(logged_in(&f, &r).await, "{}", r.body);
}

/// Entra ID's groups overage: no `groups` claim, `_claim_names` pointing elsewhere. The
/// refusal says so and what to do, instead of calling the person unmapped.
#[tokio::test]
async fn entra_groups_overage_is_refused_with_what_to_do() {
    let p = start_provider(false).await;
    let f = console_for(&p.base).await;
    // Anna's ID token from a tenant where she is in too many groups, for an attempt.
    let overage = |a: &Attempt| {
        let mut c = claims(&p, &a.nonce, &[]);
        let c_obj = c.as_object_mut().unwrap();
        c_obj.remove("groups");
        c_obj.insert("_claim_names".into(), json!({"groups": "src1"}));
        c_obj.insert(
            "_claim_sources".into(),
            json!({"src1": {"endpoint": "https://graph.microsoft.com/v1.0/users/anna-1/getMemberObjects"}}),
        );
        *p.next_token.lock().unwrap() = sign(&p.key, &c);
    };
    let a = begin(&f).await;
    overage(&a);
    let r = callback(&f, &a, &a.state, None).await;
    assert_refused(&f, &r, 403, "too many groups").await;
    assert!(
        r.body.contains("groups overage")
            && r.body.contains("app roles")
            && r.body.contains("role_claim = "),
        "{}",
        r.body
    );
    assert!(!r.body.contains("has no role in Vakt"), "{}", r.body);
    // Started on the Swedish login page: the reason in Swedish, the setting as written.
    let a = begin_in(&f, "sv").await;
    overage(&a);
    let r = callback(&f, &a, &a.state, None).await;
    assert_refused(&f, &r, 403, "Inloggningen nekades:").await;
    assert!(
        r.body.contains("för många grupper")
            && r.body.contains("approller")
            && r.body.contains("role_claim = "),
        "{}",
        r.body
    );
    assert!(!r.body.contains("too many groups"), "{}", r.body);
    let audit = f.state.store.audit_log().unwrap();
    assert!(
        audit.iter().any(|e| e.action == "console.login.refused"
            && e.actor == "sso:anna@example.org"
            && e.detail.contains("overage")),
        "{audit:?}"
    );
}
