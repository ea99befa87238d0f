//! The web console in a real browser: Debian's Chromium driven through chromedriver's
//! WebDriver protocol, against a real `vakt-server` with a real agent process enrolled and
//! connected, python-dbusmock's logind on a private bus for the lock, and a scratch root for the
//! wipe. The walk is the IT desk's: log in, find the laptop, open it, see its software, report
//! it lost and watch the lock succeed, request a wipe and approve it as a second admin, log
//! out. Screenshots of every step go to `tests/artifacts/console/` (not committed).

#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vakt_tests::dbus::{Mock, PrivateBus};
use vakt_tests::webdriver::{self, Browser, forged_post};
use vakt_tests::{
    TestAgent, TestServer, laptop_root, skip_unless_dbus, tools_required, wait_until,
};

/// Anna's laptop: her documents to wipe, and dpkg's database with a package that no
/// configured repository offers (what the software inventory calls unlisted).
fn scratch_root(dir: &Path) -> PathBuf {
    let root = laptop_root(dir, &["anna"]);
    std::fs::create_dir_all(root.join("home/anna/Dokument")).unwrap();
    std::fs::write(root.join("home/anna/Dokument/protokoll.odt"), "sekretess").unwrap();
    std::fs::create_dir_all(root.join("var/lib/dpkg")).unwrap();
    std::fs::write(
        root.join("var/lib/dpkg/status"),
        "Package: nodejs\nStatus: install ok installed\nPriority: optional\nSection: web\n\
         Architecture: amd64\nMaintainer: NodeSource <support@nodesource.com>\n\
         Version: 20.20.2-1nodesource1\nDescription: Node.js event-based server-side javascript engine\n",
    )
    .unwrap();
    root
}

fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/console")
}

fn shot(b: &Browser, name: &str) {
    b.screenshot(&artifacts().join(format!("{name}.png")));
}

fn commands(server: &TestServer, device: &str) -> Vec<Value> {
    server
        .vakt_json(&["commands", "--device", device])
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn command_of(server: &TestServer, device: &str, kind: &str) -> Value {
    commands(server, device)
        .into_iter()
        .rev()
        .find(|c| c["kind"] == kind)
        .unwrap_or(Value::Null)
}

fn html_lang(b: &Browser) -> String {
    b.attribute(&b.find("html"), "lang").unwrap_or_default()
}

/// Logs in with the keyboard only: the token field has the focus, the token and Enter.
fn log_in(b: &Browser, console: &str, token: &str) {
    b.goto(&format!("{console}/login"));
    let field = b.find("#token");
    let focused = b.active_element();
    assert_eq!(
        b.attribute(&focused, "id").as_deref(),
        Some("token"),
        "the token field has the focus"
    );
    b.submit_typing(&field, token);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_it_desk_works_a_loss_through_the_console_in_a_browser() {
    let (chromium, chromedriver) = match webdriver::tools() {
        Ok(t) => t,
        Err(e) if !tools_required() => {
            eprintln!("SKIP: {e}");
            return;
        }
        Err(e) => panic!("{e} (VAKT_REQUIRE_TOOLS is set)"),
    };
    let bus = skip_unless_dbus!(PrivateBus::start().await);
    let logind = skip_unless_dbus!(Mock::start(&bus, "logind", &json!({})).await);
    let tmp = tempfile::tempdir().unwrap();
    let root = scratch_root(tmp.path());
    let server = TestServer::start(&tmp.path().join("server"));
    assert!(
        server.console.starts_with("http://127.0.0.1:"),
        "{}",
        server.console
    );
    let console = server.console.clone();
    let agent = TestAgent::with_config(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
        &format!(
            "root = {root:?}\nsystem_bus = {bus:?}\n[lock]\nmethod = \"logind\"\n\
             [wipe]\nstrategy = \"paths\"\npaths = [\"/home/anna\"]\npoweroff = false\n",
            root = root.display().to_string(),
            bus = bus.address(),
        ),
    );
    let proc = agent.spawn();
    wait_until("the agent to connect", Duration::from_secs(30), || {
        server.vakt_json(&["devices"])[0]["connected"] == true
    })
    .await;
    let device = agent.device_id();
    let shown = server.vakt_json(&["device", "show", &device]);
    let hostname = shown["hostname"].as_str().unwrap().to_string();
    let software: Vec<String> = shown["software"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap().to_string())
        .collect();
    let first = server.admin_token();
    let second = server.create_admin_token("admin", "it-chef");
    let _ = std::fs::remove_dir_all(artifacts());

    let b = Browser::start(
        &chromium,
        &chromedriver,
        &tmp.path().join("chromedriver.log"),
    );

    // Anonymous: a device page is the login page, in Swedish.
    b.goto(&format!("{console}/devices/{device}"));
    assert!(
        b.current_url().contains("/login?next=/devices/"),
        "{}",
        b.current_url()
    );
    assert_eq!(html_lang(&b), "sv");
    assert!(b.source().contains("Logga in i Vakt"));
    assert!(
        !b.source().contains(&hostname),
        "nothing of the device shows"
    );
    shot(&b, "01-login");

    // Log in (keyboard only); the login sends us on to the page we asked for.
    let field = b.find("#token");
    assert_eq!(
        b.attribute(&b.active_element(), "id").as_deref(),
        Some("token")
    );
    b.submit_typing(&field, &first);
    assert!(
        b.current_url().ends_with(&format!("/devices/{device}")),
        "{}",
        b.current_url()
    );
    let (_, cookie) = b.session_cookie().expect("a session cookie");
    assert_eq!(cookie["httpOnly"], true, "{cookie}");
    assert_eq!(cookie["sameSite"], "Strict", "{cookie}");
    assert_eq!(cookie["secure"], false, "plain HTTP on loopback: {cookie}");

    // The overview, then find the laptop by searching for it.
    b.goto(&format!("{console}/"));
    assert!(b.source().contains("Enheter efter läge"));
    assert!(
        b.try_find("#findings-by-rule").is_some(),
        "open findings by rule and section"
    );
    shot(&b, "02-overview");
    b.click_through(&b.find_with_text("header nav a", "Enheter"));
    let q = b.find("#q");
    b.submit_typing(&q, &hostname);
    assert!(b.current_url().contains("q="), "{}", b.current_url());
    shot(&b, "03-devices");
    b.click_through(&b.find_with_text("#devices a", &hostname));
    assert!(b.current_url().ends_with(&format!("/devices/{device}")));

    // Its software: exactly what the server holds, with source and whether it is current;
    // nodejs from the laptop's dpkg database, which no configured repository offers.
    assert!(b.source().contains(&hostname));
    assert!(software.contains(&"nodejs".to_string()), "{software:?}");
    let table = b.find("#software-table");
    let text = b.text(&table);
    for name in &software {
        assert!(text.contains(name.as_str()), "{name} in the table");
    }
    assert!(text.contains("20.20.2-1nodesource1"));
    assert!(text.contains("finns i inget förråd"), "its source: {text}");
    shot(&b, "04-device");
    b.element_screenshot(&table, &artifacts().join("04b-software.png"));

    // Its findings, each with the policy section it cites: the same as `vakt findings`.
    let findings = server.vakt_json(&["findings", "--device", &device]);
    let findings = findings.as_array().unwrap();
    assert!(!findings.is_empty(), "the unlisted package is a finding");
    let section = b.find("section[aria-labelledby=findings]");
    let text = b.text(&section);
    for f in findings {
        let rule = f["rule"].as_str().unwrap();
        let sect = f["section"].as_str().unwrap();
        assert!(
            text.contains(rule) && text.contains(sect),
            "{rule} {sect} in {text}"
        );
    }
    b.element_screenshot(&section, &artifacts().join("04c-findings.png"));

    // English, remembered across pages; then back to Swedish.
    b.click_through(&b.find("#switch-lang"));
    assert_eq!(html_lang(&b), "en");
    assert!(b.source().contains("Software"));
    b.goto(&format!("{console}/wipes"));
    assert_eq!(html_lang(&b), "en", "the language stays with the session");
    b.goto(&format!("{console}/devices/{device}"));
    shot(&b, "05-device-en");
    b.click_through(&b.find("#switch-lang"));
    assert_eq!(html_lang(&b), "sv");

    // Report the loss: the lock goes to the connected laptop and succeeds.
    b.click_through(&b.find("#report-loss-link"));
    b.type_into(&b.find("#reported_by"), "anna@sorsele.se");
    b.type_into(&b.find("#report-notes"), "Glömd på bussen");
    b.click_through(&b.find("#report-loss-button"));
    assert!(b.text(&b.find(".flash.ok")).contains("Förlustärende"));
    b.reload_until("the lock to succeed", Duration::from_secs(20), |s| {
        s.contains("data-state=\"succeeded\"")
    });
    assert_eq!(command_of(&server, &device, "lock")["state"], "succeeded");
    let calls = logind
        .method_calls("/org/freedesktop/login1", "LockSessions")
        .await
        .unwrap();
    assert_eq!(calls.len(), 1, "agent log:\n{}", proc.log());
    assert!(b.text(&b.find("#device-state")).contains("låst"));

    // Record two steps of the checklist.
    b.click(&b.find("#sim_blocked"));
    b.type_into(
        &b.find("#no_police_report_reason"),
        "glömd på bussen, missbruk uteslutet",
    );
    b.click_through(&b.find("#update-case"));
    assert_eq!(b.find_all("#checklist li[data-done=\"true\"]").len(), 2);
    shot(&b, "06-loss-locked");
    // The wipe readiness on the loss page says as of which report it stands.
    let as_of = b.text(&b.find(".wipe-readiness [data-readiness-as-of]"));
    assert!(
        as_of.starts_with("enligt rapporten 20") && as_of.contains(" UTC ("),
        "{as_of}"
    );
    b.click_through(&b.find("#incident-link"));
    assert!(b.source().contains("Incidentrapport: förlorad utrustning"));
    // Whether the disk was encrypted, for the data-protection officer: this agent's wipe
    // removes paths, so the report says it cannot tell, and as of which report.
    let report = b.source();
    assert!(report.contains("Kryptering (avsnitt 8.1)"), "{report}");
    assert!(
        report.contains("inte bedömd: agentens raderingsstrategi"),
        "{report}"
    );
    assert!(!report.contains("<dd>ingen rapport</dd>"), "{report}");
    shot(&b, "07-incident-report");

    // Request a wipe; the requester is not offered the approval.
    b.goto(&format!("{console}/devices/{device}"));
    b.type_into(&b.find("#wipe-reason"), "stulen, polisanmäld");
    b.click_through(&b.find("#request-wipe"));
    assert!(b.current_url().ends_with("/wipes"));
    let wipe = command_of(&server, &device, "wipe");
    let wipe_id = wipe["id"].as_str().unwrap().to_string();
    assert_eq!(wipe["state"], "awaiting-approval");
    assert!(b.try_find(&format!("#approve-{wipe_id}")).is_none());
    assert!(b.source().contains("Du begärde den"));
    shot(&b, "08-wipe-requested");

    // Forged forms with this session's cookie: a self-approval with the right CSRF token is
    // refused by the admin API's two-admin rule; a form without the token is refused before.
    let (cookie, _) = b.session_cookie().unwrap();
    let csrf = b.attribute(&b.find("input[name=csrf]"), "value").unwrap();
    let (status, page) = forged_post(
        &format!("{console}/wipes/{wipe_id}/approve"),
        &cookie,
        &[("csrf", csrf.as_str()), ("confirm", "1")],
    );
    assert_eq!(status, 403);
    assert!(page.contains("different admin"), "{page}");
    let (status, page) = forged_post(
        &format!("{console}/devices/{device}/assign"),
        &cookie,
        &[("email", "mallory@example.org")],
    );
    assert_eq!(status, 403);
    assert!(page.contains("säkerhetskod"), "{page}");
    assert_eq!(
        server.vakt_json(&["device", "show", &device])["assigned_to"],
        "",
        "the forged form changed nothing"
    );

    // Log out: the cookie is gone and the device page is the login page again.
    b.click_through(&b.find("#logout"));
    assert!(b.current_url().contains("/login"));
    assert!(
        b.session_cookie()
            .is_none_or(|(_, c)| c["value"] != cookie.split('=').nth(1).unwrap())
    );
    let (status, _) = forged_post(&format!("{console}/devices/{device}/assign"), &cookie, &[]);
    assert_eq!(
        status, 303,
        "the old session is gone on the server: to the login page"
    );

    // The second admin approves; the wipe runs on the laptop.
    log_in(&b, &console, &second);
    assert!(b.source().contains("it-chef"));
    b.click_through(&b.find_with_text("header nav a", "Radering"));
    b.click(&b.find(&format!("#confirm-{wipe_id}")));
    b.click_through(&b.find(&format!("#approve-{wipe_id}")));
    assert!(b.text(&b.find(".flash.ok")).contains("godkänd"));
    b.reload_until("the wipe to succeed", Duration::from_secs(20), |s| {
        s.contains(&format!("id=\"{wipe_id}\"")) && s.contains("data-state=\"succeeded\"")
    });
    shot(&b, "09-wipe-approved");
    assert!(
        !root.join("home/anna").exists(),
        "agent log:\n{}",
        proc.log()
    );
    let wipe = command_of(&server, &device, "wipe");
    assert!(wipe["approved_by"].as_str().unwrap().contains("it-chef"));

    // The audit log shows both admins, and its chain holds.
    b.click_through(&b.find_with_text("header nav a", "Granskningslogg"));
    let audit = b.text(&b.find("#audit"));
    for action in [
        "loss.report",
        "loss.update",
        "wipe.request",
        "wipe.approve-refused",
        "wipe.approve",
    ] {
        assert!(audit.contains(action), "{action} in the audit page");
    }
    assert!(b.text(&b.find("#chain")).contains("obruten"));
    shot(&b, "10-audit");

    // The policy's other pages: findings by filter, people and trips, the policy in force.
    b.click_through(&b.find_with_text("header nav a", "Avvikelser"));
    let text = b.text(&b.find("table.findings"));
    assert!(text.contains(findings[0]["section"].as_str().unwrap()));
    assert!(b.try_find("#csv").is_some(), "the CSV export");
    shot(&b, "11-findings");
    b.click_through(&b.find_with_text("header nav a", "Personer"));
    shot(&b, "12-people");
    b.click_through(&b.find_with_text("header nav a", "Policy"));
    assert!(b.text(&b.find("#policy-facts")).contains("Sorsele"));
    shot(&b, "13-policy");

    b.click_through(&b.find("#logout"));
    b.goto(&format!("{console}/devices/{device}"));
    assert!(b.current_url().contains("/login"));
    shot(&b, "14-logged-out");
    drop(proc);
}
