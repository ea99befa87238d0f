//! The console served for real on a loopback port (plain HTTP, and HTTPS with the server's
//! certificate), driven by a small HTTP/1.1 client: sessions, CSRF, roles, the forms, and
//! what the pages show. The browser test in `tests/tests/console.rs` walks the same pages in
//! Chromium with a real agent.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use super::*;
use crate::api::admin::create_admin_token;
use crate::testing::{enroll_device, laptop_report, seed_device};
use std::net::SocketAddr;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use vakt_proto::model;

struct Fixture {
    _dir: tempfile::TempDir,
    state: State,
    addr: SocketAddr,
    admin: String,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn start(transport: Transport) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let state = crate::server::prepare(dir.path(), &[], crate::notify::NotifyConfig::default())
        .await
        .unwrap();
    let admin = std::fs::read_to_string(dir.path().join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(serve(listener, state.clone(), transport, async move {
        let _ = stopped.await;
    }));
    Fixture {
        _dir: dir,
        state,
        addr,
        admin,
        _stop: stop,
    }
}

/// Root on LUKS2, /home plain, and an agent that erases the LUKS devices it finds: a wipe
/// would be `partial`.
fn half_encrypted(mut report: model::Report) -> model::Report {
    report.storage = model::Storage {
        volumes: vec![
            model::Volume {
                mount: "/".into(),
                device: "/dev/nvme0n1p3".into(),
                encrypted: true,
                scheme: Some(model::CryptScheme::Luks2),
                ..Default::default()
            },
            model::Volume {
                mount: "/home".into(),
                device: "/dev/sdb1".into(),
                ..Default::default()
            },
        ],
        wipe: Some(model::WipePlan {
            strategy: model::WipeStrategy::LuksErase,
            devices: Vec::new(),
        }),
        ..Default::default()
    };
    report
}

#[derive(Debug)]
pub(super) struct Resp {
    pub(super) status: u16,
    pub(super) headers: Vec<(String, String)>,
    pub(super) body: String,
}

impl Resp {
    pub(super) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

fn form_encode(fields: &[(&str, &str)]) -> String {
    let enc = |s: &str| {
        s.bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    char::from(b).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect::<String>()
    };
    fields
        .iter()
        .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
        .collect::<Vec<_>>()
        .join("&")
}

/// One HTTP/1.1 exchange over `stream` (the server closes it after answering).
pub(super) async fn exchange(
    mut stream: impl AsyncRead + AsyncWrite + Unpin,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    body: Option<&str>,
) -> Resp {
    let mut req = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n");
    if let Some(c) = cookie {
        req.push_str(&format!("Cookie: {c}\r\n"));
    }
    if let Some(b) = body {
        req.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    req.push_str("\r\n");
    req.push_str(body.unwrap_or(""));
    stream.write_all(req.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8(raw).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Resp {
        status,
        headers,
        body: body.to_string(),
    }
}

/// A browser of sorts: keeps the session cookie and reads CSRF tokens off the pages.
struct Client {
    addr: SocketAddr,
    cookie: Option<String>,
}

impl Client {
    fn new(f: &Fixture) -> Self {
        Self {
            addr: f.addr,
            cookie: None,
        }
    }

    async fn send(&mut self, method: &str, path: &str, body: Option<&str>) -> Resp {
        let tcp = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let r = exchange(tcp, method, path, self.cookie.as_deref(), body).await;
        if let Some(set) = r.header("set-cookie") {
            let pair = set.split(';').next().unwrap().to_string();
            self.cookie = if set.contains("Max-Age=0") {
                None
            } else {
                Some(pair)
            };
        }
        r
    }

    async fn get(&mut self, path: &str) -> Resp {
        self.send("GET", path, None).await
    }

    async fn post(&mut self, path: &str, fields: &[(&str, &str)]) -> Resp {
        self.send("POST", path, Some(&form_encode(fields))).await
    }

    /// The CSRF token of the current session, from a page that has the header's forms.
    async fn csrf(&mut self) -> String {
        // The login page for a new or anonymous session; a logged-in one is sent on to "/".
        let page = self.get("/login").await;
        let page = if page.status == 303 {
            self.get("/").await
        } else {
            page
        };
        csrf_of(&page.body)
    }

    async fn login(&mut self, token: &str) -> Resp {
        let csrf = self.csrf().await;
        self.post("/login", &[("csrf", &csrf), ("token", token), ("next", "")])
            .await
    }
}

/// A client logged in with `token`, and its session's CSRF token.
async fn logged_in(f: &Fixture, token: &str) -> (Client, String) {
    let mut c = Client::new(f);
    assert_eq!(c.login(token).await.status, 303);
    let csrf = c.csrf().await;
    (c, csrf)
}

pub(super) fn csrf_of(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a form with a CSRF token");
    let rest = &html[at + "name=\"csrf\" value=\"".len()..];
    rest[..rest.find('"').unwrap()].to_string()
}

/// The table row `<tr id="{id}">…</tr>` of a page.
fn row_of<'a>(html: &'a str, id: &str) -> &'a str {
    let at = html
        .find(&format!("<tr id=\"{id}\">"))
        .expect("a row with that id");
    let rest = &html[at..];
    &rest[..rest.find("</tr>").expect("the row ends")]
}

#[tokio::test]
async fn anonymous_visitors_see_only_the_login_page() {
    let f = start(Transport::Plain).await;
    let mut c = Client::new(&f);
    for path in ["/", "/devices/dev-1", "/audit", "/wipes", "/no-such-page"] {
        let r = c.get(path).await;
        assert_eq!(r.status, 303, "{path}");
        let to = r.header("location").unwrap();
        assert!(to.starts_with("/login"), "{path} → {to}");
    }
    assert_eq!(
        c.get("/devices/dev-1").await.header("location"),
        Some("/login?next=/devices/dev-1")
    );
    let r = c.post("/devices/dev-1/loss", &[("csrf", "x")]).await;
    assert_eq!(r.status, 303);
    assert_eq!(r.header("location"), Some("/login"));
    let login = c.get("/login").await;
    assert_eq!(login.status, 200);
    assert!(login.body.contains("<html lang=\"sv\">"));
    assert!(login.body.contains("<label for=\"token\">"));
    let cookie = login.header("set-cookie").unwrap();
    assert!(cookie.contains("HttpOnly") && cookie.contains("SameSite=Strict"));
    assert!(!cookie.contains("Secure"), "plain HTTP on loopback");
    assert!(
        login
            .header("content-security-policy")
            .unwrap()
            .contains("default-src 'none'")
    );
    // The stylesheet is the one thing served to anyone.
    let css = c.get("/console.css").await;
    assert_eq!(css.status, 200);
    assert!(css.header("content-type").unwrap().starts_with("text/css"));
}

#[tokio::test]
async fn login_checks_csrf_and_token_and_rotates_the_session() {
    let f = start(Transport::Plain).await;
    let mut c = Client::new(&f);
    let csrf = c.csrf().await;
    let anonymous = c.cookie.clone().unwrap();

    let r = c
        .post("/login", &[("csrf", "wrong"), ("token", &f.admin)])
        .await;
    assert_eq!(r.status, 403);
    let r = c
        .post(
            "/login",
            &[("csrf", &csrf), ("token", "vakt_a_not-a-real-token")],
        )
        .await;
    assert_eq!(r.status, 401);
    assert!(r.body.contains("is not valid on this server"), "{}", r.body);
    let audited = |f: &Fixture| -> Vec<(String, String)> {
        let log = f.state.store.audit_log().unwrap();
        log.into_iter().map(|e| (e.action, e.actor)).collect()
    };
    // Refused logins are not in the durable log (an anonymous form must not fill it).
    assert!(
        !audited(&f).iter().any(|(a, _)| a.starts_with("console.")),
        "{:?}",
        audited(&f)
    );

    let r = c
        .post(
            "/login",
            &[("csrf", &csrf), ("token", &f.admin), ("next", "/audit")],
        )
        .await;
    assert_eq!(r.status, 303);
    let (action, actor) = audited(&f).pop().unwrap();
    assert_eq!(action, "console.login");
    assert!(actor.starts_with("token:initial-admin:"), "{actor}");
    assert_eq!(r.header("location"), Some("/audit"));
    let session = c.cookie.clone().unwrap();
    assert_ne!(session, anonymous, "a new session id at login");
    let page = c.get("/").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("initial-admin"));
    assert_ne!(csrf_of(&page.body), csrf, "a new CSRF token at login");

    // The pre-login id is dead.
    let mut planted = Client::new(&f);
    planted.cookie = Some(anonymous);
    assert_eq!(planted.get("/").await.status, 303);

    // An off-site `next` is ignored.
    let mut d = Client::new(&f);
    let csrf = d.csrf().await;
    let r = d
        .post(
            "/login",
            &[
                ("csrf", &csrf),
                ("token", &f.admin),
                ("next", "//evil.example/"),
            ],
        )
        .await;
    assert_eq!(r.header("location"), Some("/"));
}

#[tokio::test]
async fn a_form_without_the_csrf_token_is_refused_and_changes_nothing() {
    let f = start(Transport::Plain).await;
    let id = seed_device(&f.state, "lap-anna", &laptop_report()).await;
    let (mut c, _) = logged_in(&f, &f.admin).await;
    let path = format!("/devices/{id}/assign");

    let r = c.post(&path, &[("email", "anna@sorsele.se")]).await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("säkerhetskod"), "{}", r.body);
    let r = c
        .post(&path, &[("csrf", "0000"), ("email", "anna@sorsele.se")])
        .await;
    assert_eq!(r.status, 403);
    let d = f.state.store.device(&id).unwrap().unwrap().device.unwrap();
    assert_eq!(d.assigned_to, "", "nothing changed");

    let csrf = c.csrf().await;
    let r = c
        .post(&path, &[("csrf", &csrf), ("email", "anna@sorsele.se")])
        .await;
    assert_eq!(r.status, 303);
    let d = f.state.store.device(&id).unwrap().unwrap().device.unwrap();
    assert_eq!(d.assigned_to, "anna@sorsele.se");
    // The notice, once, on the next page: not on a stray request in between.
    assert_eq!(c.get("/favicon.ico").await.status, 204);
    assert_eq!(c.get("/no-such-page").await.status, 404);
    let page = c.get(&format!("/devices/{id}")).await;
    assert!(page.body.contains("är tilldelad anna@sorsele.se"));
    let page = c.get(&format!("/devices/{id}")).await;
    assert!(!page.body.contains("är tilldelad anna@sorsele.se"));
    // The same audit entry the gRPC API writes, naming the token.
    let log = f.state.store.audit_log().unwrap();
    let last = log.last().unwrap();
    assert_eq!(last.action, "device.assign");
    assert!(last.actor.starts_with("token:initial-admin:"));
}

#[tokio::test]
async fn roles_and_validation_are_the_admin_apis() {
    let f = start(Transport::Plain).await;
    let id = seed_device(&f.state, "lap-anna", &laptop_report()).await;
    let (_, viewer) = create_admin_token(&f.state.store, pb::Role::Viewer, "revisor", "test")
        .await
        .unwrap();
    let (mut v, _) = logged_in(&f, &viewer).await;
    let loss = v.get(&format!("/devices/{id}/loss")).await;
    assert_eq!(loss.status, 200);
    assert!(
        !loss.body.contains("id=\"report-loss\""),
        "a viewer is not offered the form"
    );
    let csrf = csrf_of(&loss.body);
    let r = v
        .post(&format!("/devices/{id}/loss"), &[("csrf", &csrf)])
        .await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("needs the operator role"), "{}", r.body);
    assert!(f.state.store.losses().unwrap().is_empty());

    let (mut a, csrf) = logged_in(&f, &f.admin).await;
    let r = a
        .post(
            &format!("/devices/{id}/assign"),
            &[("csrf", &csrf), ("email", "not an address")],
        )
        .await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("is not an e-mail address"), "{}", r.body);
    let r = a.get("/devices/no-such-device").await;
    assert_eq!(r.status, 404);
    assert!(r.body.contains("no device with id or hostname"));
}

#[tokio::test]
async fn the_device_page_shows_the_report_escaped() {
    let f = start(Transport::Plain).await;
    let id = seed_device(&f.state, "lap-anna", &half_encrypted(laptop_report())).await;
    // An agent that does not report its wipe plan: readiness unknown, and why.
    let old = seed_device(&f.state, "lap-old", &laptop_report()).await;
    let (mut c, csrf) = logged_in(&f, &f.admin).await;
    let list = c.get("/devices?state=active&q=lap").await;
    assert!(list.body.contains(&format!("href=\"/devices/{id}\"")));
    let none = c.get("/devices?state=lost").await;
    assert!(!none.body.contains(&format!("href=\"/devices/{id}\"")));

    let page = c.get(&format!("/devices/{id}")).await;
    assert_eq!(page.status, 200);
    let b = &page.body;
    assert!(b.contains("nodejs") && b.contains("20.20.2-1nodesource1"));
    assert!(b.contains("finns i inget förråd"), "unlisted, in Swedish");
    assert!(b.contains("Nyare finns"), "not current");
    assert!(b.contains("anna@gmail.com"));
    assert!(b.contains("&#60;script&#62;") || b.contains("&lt;script&gt;"));
    assert!(!b.contains("<script>"), "report text never becomes markup");
    assert!(b.contains("1,0 MiB"), "roaming data in Swedish notation");
    assert!(
        b.contains("data-readiness=\"partial\""),
        "what a wipe would do"
    );
    assert!(
        b.contains("/home (/dev/sdb1): inte krypterad"),
        "what stays readable, in Swedish"
    );
    assert!(!b.contains("not encrypted"));
    let unknown = c.get(&format!("/devices/{old}")).await;
    assert!(
        unknown.body.contains("data-readiness=\"unknown\""),
        "{}",
        unknown.body
    );
    assert!(
        unknown
            .body
            .contains("agenten rapporterar inte sin raderingsstrategi"),
        "why it is unknown, in Swedish"
    );
    assert!(!unknown.body.contains("does not report its wipe strategy"));
    // As of which report the readiness stands, or that there is none.
    let as_of = |b: &str| {
        b.split("data-readiness-as-of=")
            .nth(1)
            .map(|s| s.split("</span>").next().unwrap_or("").to_string())
            .unwrap_or_default()
    };
    assert!(
        as_of(b).contains("enligt rapporten 20") && as_of(b).contains(" UTC (nyss)"),
        "{}",
        as_of(b)
    );
    let silent = enroll_device(&f.state, "lap-new").await;
    let never = c.get(&format!("/devices/{silent}")).await;
    assert!(
        as_of(&never.body).contains("aldrig rapporterat"),
        "{}",
        never.body
    );
    let filtered = c.get(&format!("/devices/{id}?source=os-vendor")).await;
    assert!(filtered.body.contains("0 av 1 program"));
    c.post("/lang", &[("csrf", &csrf), ("lang", "en"), ("back", "/")])
        .await;
    let english = c.get(&format!("/devices/{id}")).await;
    assert!(english.body.contains("/home (/dev/sdb1): not encrypted"));
    assert!(
        as_of(&english.body).contains("as of 20")
            && as_of(&english.body).contains(" UTC (just now)")
    );
    let english_never = c.get(&format!("/devices/{silent}")).await;
    assert!(as_of(&english_never.body).contains("never reported"));
    let english = c.get(&format!("/devices/{old}")).await;
    assert!(
        english
            .body
            .contains("the agent does not report its wipe strategy")
    );
}

#[tokio::test]
async fn the_language_is_remembered_in_the_session() {
    let f = start(Transport::Plain).await;
    let (mut c, csrf) = logged_in(&f, &f.admin).await;
    let r = c
        .post(
            "/lang",
            &[("csrf", &csrf), ("lang", "en"), ("back", "/devices")],
        )
        .await;
    assert_eq!(r.header("location"), Some("/devices"));
    let page = c.get("/").await;
    assert!(page.body.contains("<html lang=\"en\">"));
    assert!(page.body.contains("Devices by state"));
    let page = c.get("/audit").await;
    assert!(page.body.contains("The hash chain holds"));
    // Logging out keeps the language for the login page.
    let r = c.post("/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.header("location"), Some("/login?lang=en"));
    assert!(c.cookie.is_none(), "the cookie is cleared");
    let login = c.get("/login?lang=en").await;
    assert!(login.body.contains("<html lang=\"en\">"));
}

#[tokio::test]
async fn logout_ends_the_session_on_the_server() {
    let f = start(Transport::Plain).await;
    let (mut c, _) = logged_in(&f, &f.admin).await;
    let kept = c.cookie.clone();
    let csrf = c.csrf().await;
    c.post("/logout", &[("csrf", &csrf)]).await;
    let log = f.state.store.audit_log().unwrap();
    let actions: Vec<_> = log.iter().map(|e| e.action.as_str()).collect();
    assert_eq!(
        actions[actions.len() - 2..],
        ["console.login", "console.logout"]
    );
    assert_eq!(log[log.len() - 1].actor, log[log.len() - 2].actor);
    // Even a copy of the old cookie no longer opens anything.
    c.cookie = kept;
    assert_eq!(c.get("/").await.status, 303);
}

#[tokio::test]
async fn the_loss_procedure_runs_through_the_forms() {
    let f = start(Transport::Plain).await;
    let id = seed_device(&f.state, "lap-anna", &half_encrypted(laptop_report())).await;
    let (mut c, _) = logged_in(&f, &f.admin).await;
    let loss = format!("/devices/{id}/loss");
    let csrf = c.csrf().await;
    let r = c
        .post(
            &loss,
            &[("csrf", &csrf), ("reported_by", "anna@sorsele.se")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let page = c.get(&loss).await;
    assert!(page.body.contains("Förlustärende loss-"), "the notice");
    assert!(page.body.contains("förlorad"));
    assert_eq!(page.body.matches("data-done=\"false\"").count(), 4);
    assert!(
        page.body.contains("data-readiness=\"partial\""),
        "the approver sees what a wipe would do"
    );
    assert!(
        page.body.contains("data-readiness-as-of=") && page.body.contains("(nyss)</span>"),
        "and as of which report"
    );
    assert!(page.body.contains("data-state=\"pending\""), "lock queued");
    // A second report while the case is open: the API's refusal, as a page.
    let r = c.post(&loss, &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 409);
    assert!(r.body.contains("already has an open loss case"));

    let r = c
        .post(
            &format!("{loss}/update"),
            &[
                ("csrf", &csrf),
                ("sim_blocked", "1"),
                ("no_police_report_reason", "glömd i personalrummet"),
            ],
        )
        .await;
    assert_eq!(r.status, 303);
    let page = c.get(&loss).await;
    assert_eq!(page.body.matches("data-done=\"true\"").count(), 2);
    let report = c.get(&format!("{loss}/incident")).await;
    assert!(report.body.contains("Incidentrapport: förlorad utrustning"));
    // Whether the disk was encrypted, as known now, and as of the device's last report.
    assert!(
        report.body.contains("<dd>delvis krypterad")
            && report
                .body
                .contains("<li>/home (/dev/sdb1): inte krypterad</li>"),
        "{}",
        report.body
    );
    assert!(
        !report.body.contains("<dd>ingen rapport</dd>"),
        "it reported"
    );
    let md = c.get(&format!("{loss}/incident.md")).await;
    assert!(md.body.contains("1. [x] IT spärrar SIM-kortet"));
    assert!(
        md.body.contains("- **Disken:** delvis krypterad"),
        "{}",
        md.body
    );

    let r = c.post(&format!("{loss}/recover"), &[("csrf", &csrf)]).await;
    assert_eq!(r.status, 400, "recovery needs the box ticked");
    let r = c
        .post(
            &format!("{loss}/recover"),
            &[("csrf", &csrf), ("confirm", "1")],
        )
        .await;
    assert_eq!(r.status, 303);
    let case = f.state.store.losses().unwrap().pop().unwrap();
    assert!(!case.open);
    let list = c.get("/loss").await;
    assert!(list.body.contains(&case.id));
}

#[tokio::test]
async fn a_wipe_needs_a_second_admin_in_the_console_too() {
    let f = start(Transport::Plain).await;
    let id = seed_device(&f.state, "lap-anna", &half_encrypted(laptop_report())).await;
    let (_, second) = create_admin_token(&f.state.store, pb::Role::Admin, "it-chef", "test")
        .await
        .unwrap();
    let (mut first, csrf) = logged_in(&f, &f.admin).await;
    let r = first
        .post(
            &format!("/devices/{id}/wipe"),
            &[("csrf", &csrf), ("reason", "stulen, polisanmäld")],
        )
        .await;
    assert_eq!(r.header("location"), Some("/wipes"));
    let cmd = f.state.store.commands().unwrap().pop().unwrap();
    let wipes = first.get("/wipes").await;
    assert!(wipes.body.contains("Du begärde den"));
    assert!(!wipes.body.contains(&format!("id=\"approve-{}\"", cmd.id)));
    let approve = format!("/wipes/{}/approve", cmd.id);
    let r = first
        .post(&approve, &[("csrf", &csrf), ("confirm", "1")])
        .await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("different admin"), "{}", r.body);

    let (mut other, _) = logged_in(&f, &second).await;
    let page = other.get("/wipes").await;
    assert!(page.body.contains(&format!("id=\"approve-{}\"", cmd.id)));
    // The approver sees, in the wipe's row, what it would achieve and what stays readable.
    let row = row_of(&page.body, &cmd.id);
    assert!(row.contains("data-readiness=\"partial\""), "{row}");
    assert!(row.contains("/home (/dev/sdb1): inte krypterad"), "{row}");
    let csrf = csrf_of(&page.body);
    let r = other
        .post(&approve, &[("csrf", &csrf), ("confirm", "1")])
        .await;
    assert_eq!(r.status, 303);
    let cmd = f.state.store.command(&cmd.id).unwrap().unwrap();
    assert_eq!(cmd.state, pb::CommandState::Pending as i32);
    assert!(cmd.approved_by.contains("it-chef"));
}

#[tokio::test]
async fn over_tls_the_cookie_is_secure_and_host_only() {
    let f = start(Transport::Tls).await;
    let mut roots = rustls::RootCertStore::empty();
    use rustls::pki_types::pem::PemObject;
    for cert in rustls::pki_types::CertificateDer::pem_slice_iter(f.state.pki.ca_pem().as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let tcp = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    let tls = connector
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .expect("the console's certificate is the server's, issued by its CA");
    let r = exchange(tls, "GET", "/login", None, None).await;
    assert_eq!(r.status, 200);
    let cookie = r.header("set-cookie").unwrap();
    assert!(cookie.starts_with("__Host-vakt_session="), "{cookie}");
    assert!(cookie.contains("; Secure"), "{cookie}");
    // A plain-HTTP request to the TLS port gets no page.
    let mut tcp = tokio::net::TcpStream::connect(f.addr).await.unwrap();
    tcp.write_all(b"GET /login HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf).await;
    assert!(!String::from_utf8_lossy(&buf).contains("<html"));
}

#[test]
fn loopback_may_be_plain_anything_else_is_tls() {
    let lo: SocketAddr = "127.0.0.1:7480".parse().unwrap();
    let lo6: SocketAddr = "[::1]:7480".parse().unwrap();
    let any: SocketAddr = "0.0.0.0:7480".parse().unwrap();
    let lan: SocketAddr = "10.1.2.3:7480".parse().unwrap();
    assert_eq!(Transport::for_addr(lo, false), Transport::Plain);
    assert_eq!(Transport::for_addr(lo6, false), Transport::Plain);
    assert_eq!(Transport::for_addr(lo, true), Transport::Tls);
    assert_eq!(Transport::for_addr(any, false), Transport::Tls);
    assert_eq!(Transport::for_addr(lan, false), Transport::Tls);
}

#[test]
fn api_codes_map_to_http_statuses() {
    assert_eq!(http_status(Code::NotFound), StatusCode::NOT_FOUND);
    assert_eq!(http_status(Code::PermissionDenied), StatusCode::FORBIDDEN);
    assert_eq!(http_status(Code::InvalidArgument), StatusCode::BAD_REQUEST);
    assert_eq!(http_status(Code::FailedPrecondition), StatusCode::CONFLICT);
    assert_eq!(
        http_status(Code::Internal),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(encode_query("/devices/a b?x=1"), "/devices/a%20b%3Fx%3D1");
}

#[tokio::test]
async fn findings_show_by_rule_and_section_and_export_as_csv() {
    let f = start(Transport::Plain).await;
    let id = seed_device(&f.state, "lap-anna", &laptop_report()).await;
    crate::findings::evaluate_all(&f.state).await.unwrap();
    let open: Vec<_> = crate::findings::findings(&f.state, Some(&id))
        .unwrap()
        .into_iter()
        .filter(|x| x.status == crate::policy::FindingStatus::Open)
        .collect();
    assert!(
        !open.is_empty(),
        "the Sorsele pack finds something on this laptop"
    );
    let rule = open[0].rule.clone();
    let section = open[0].section.clone();
    let (mut c, _) = logged_in(&f, &f.admin).await;

    let overview = c.get("/").await;
    assert!(overview.body.contains("id=\"findings-by-rule\""));
    assert!(overview.body.contains(&format!("/findings?rule={rule}")));
    let page = c.get(&format!("/findings?rule={rule}")).await;
    assert_eq!(page.status, 200);
    assert!(
        page.body.contains(&format!("<td>{section}</td>")),
        "the policy section"
    );
    assert!(page.body.contains("data-status=\"open\""));
    let resolved_only = c.get("/findings?status=resolved").await;
    assert!(!resolved_only.body.contains("data-status=\"open\""));

    let csv = c.get(&format!("/findings.csv?rule={rule}")).await;
    assert!(csv.header("content-type").unwrap().starts_with("text/csv"));
    let lines: Vec<&str> = csv.body.trim_end().split("\r\n").collect();
    assert!(lines[0].contains("device,hostname,rule,kind,section,severity,status"));
    assert!(lines.len() > 1 && lines[1..].iter().all(|l| l.contains(&rule)));

    let devices = c.get(&format!("/devices?finding={rule}")).await;
    assert!(devices.body.contains(&format!("href=\"/devices/{id}\"")));
    let device = c.get(&format!("/devices/{id}")).await;
    assert!(device.body.contains("id=\"findings\""));
    assert!(device.body.contains(&rule));

    // An exemption from that rule for this device, through the form; the finding follows.
    let csrf = c.csrf().await;
    let r = c
        .post(
            "/exemptions",
            &[
                ("csrf", &csrf),
                ("device", &id),
                ("rule", &rule),
                ("minutes", "60"),
                ("reason", "tjänsteresa, godkänd av chefen"),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let page = c.get("/people").await;
    assert!(page.body.contains("tjänsteresa, godkänd av chefen"));
    let exempted = c
        .get(&format!("/findings?rule={rule}&status=exempted"))
        .await;
    assert!(exempted.body.contains("data-status=\"exempted\""));

    // IT ends it early with a reason: it stays listed, saying who ended it, and the finding
    // is a violation again. Ending it twice is refused.
    let ex_id = page
        .body
        .split("action=\"/exemptions/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .expect("an end form for the exemption in force")
        .to_string();
    let revoke = format!("/exemptions/{ex_id}/revoke");
    let r = c
        .post(
            &revoke,
            &[("csrf", &csrf), ("reason", "resan blev inställd")],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let page = c.get("/people").await;
    assert!(page.body.contains("resan blev inställd"), "{}", page.body);
    assert!(
        !page.body.contains(&revoke),
        "no end form for an ended exemption"
    );
    let exempted = c
        .get(&format!("/findings?rule={rule}&status=exempted"))
        .await;
    assert!(!exempted.body.contains("data-status=\"exempted\""));
    let again = c
        .post(
            &revoke,
            &[("csrf", &csrf), ("reason", "resan blev inställd")],
        )
        .await;
    assert_ne!(again.status, 303);
    assert!(again.body.contains("ended already"), "{}", again.body);
    let log = f.state.store.audit_log().unwrap();
    assert!(
        log.iter()
            .any(|e| e.action == "exemption.revoke" && e.target == ex_id),
        "{log:?}"
    );
}

#[tokio::test]
async fn people_trips_and_policy_go_through_the_admin_api() {
    let f = start(Transport::Plain).await;
    let (mut c, csrf) = logged_in(&f, &f.admin).await;

    let r = c
        .post(
            "/people/import",
            &[
                ("csrf", &csrf),
                (
                    "csv",
                    "email,name,manager_email\nanna.berg@sorsele.se,Anna Berg,chef@sorsele.se\n",
                ),
            ],
        )
        .await;
    assert_eq!(r.status, 303, "{}", r.body);
    let r = c
        .post(
            "/people/import",
            &[("csrf", &csrf), ("csv", "name\nAnna\n")],
        )
        .await;
    assert_eq!(r.status, 400, "the API's CSV validation");
    assert!(r.body.contains("nothing was imported"), "{}", r.body);

    let trip = |from: &'static str| {
        [
            ("person", "anna.berg@sorsele.se"),
            ("countries", "NO FI"),
            ("from", from),
            ("to", "2026-06-12"),
            ("kind", "business"),
            ("approved_by", "chef@sorsele.se"),
        ]
    };
    let mut bad = vec![("csrf", csrf.as_str())];
    bad.extend(trip("12 juni"));
    let r = c.post("/trips", &bad).await;
    assert_eq!(r.status, 400);
    assert!(r.body.contains("is not a date"), "{}", r.body);
    let mut good = vec![("csrf", csrf.as_str())];
    good.extend(trip("2026-06-10"));
    assert_eq!(c.post("/trips", &good).await.status, 303);
    let page = c.get("/people").await;
    assert!(page.body.contains("Anna Berg"));
    assert!(page.body.contains("NO, FI"));
    assert!(page.body.contains("tjänsteresa"));

    // The policy in force, and a broken pack checked with file, line and column.
    let policy = c.get("/policy").await;
    assert_eq!(policy.status, 200);
    assert!(policy.body.contains("id=\"policy-toml\""));
    let r = c
        .post(
            "/policy/check",
            &[("csrf", &csrf), ("toml", "[pack]\nversion = \n")],
        )
        .await;
    assert_eq!(r.status, 200);
    assert!(r.body.contains("policy.toml:"), "{}", r.body);
    let (_, viewer) = create_admin_token(&f.state.store, pb::Role::Viewer, "revisor", "test")
        .await
        .unwrap();
    let (mut v, _) = logged_in(&f, &viewer).await;
    let page = v.get("/policy").await;
    assert!(!page.body.contains("id=\"apply-policy\""));
    let csrf = csrf_of(&page.body);
    let r = v
        .post("/policy/apply", &[("csrf", &csrf), ("toml", "x")])
        .await;
    assert_eq!(r.status, 403);
    assert!(r.body.contains("needs the admin role"));
    let audit: Vec<String> = f
        .state
        .store
        .audit_log()
        .unwrap()
        .into_iter()
        .map(|e| e.action)
        .collect();
    assert!(audit.contains(&"people.import".to_string()));
    assert!(audit.contains(&"trip.add".to_string()));
}

#[tokio::test]
async fn next_after_login_stays_on_this_site() {
    let f = start(Transport::Plain).await;
    // Each of these is off-site once a browser has dropped tabs and newlines, or decoded it.
    let hostile = [
        "/%09/evil.example",
        "/\t/evil.example",
        "/%0A/evil.example",
        "/%2F/evil.example",
        "/%5Cevil.example",
        "/ /evil.example",
        "https://evil.example/",
    ];
    for next in hostile {
        // Through the login form.
        let mut c = Client::new(&f);
        let csrf = c.csrf().await;
        let r = c
            .post(
                "/login",
                &[("csrf", &csrf), ("token", &f.admin), ("next", next)],
            )
            .await;
        assert_eq!(r.status, 303, "{next:?}");
        assert_eq!(r.header("location"), Some("/"), "login with next={next:?}");
        // And the login page of a session already logged in.
        let query: String = form_encode(&[("next", next)]);
        let r = c.get(&format!("/login?{query}")).await;
        assert_eq!(r.header("location"), Some("/"), "/login?{query}");
    }
    // The literal query of the report, as a browser sends it.
    let (mut c, _) = logged_in(&f, &f.admin).await;
    let r = c.get("/login?next=/%09/evil.example").await;
    assert_eq!(r.header("location"), Some("/"));
    // A path on this site is still followed.
    let r = c.get("/login?next=/devices%3Fq%3Danna").await;
    assert_eq!(r.header("location"), Some("/devices?q=anna"));
}
