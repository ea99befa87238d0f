//! Console single sign-on against a real OpenID Connect provider process (oidc-provider-mock,
//! standing in for Entra ID) and a real `vakt-server` configured with `[console.oidc]`, in
//! headless Chromium: an admin signs in and sees the devices; a viewer sees no admin forms; a
//! person in no mapped group, one whose address the provider has not verified, and one in
//! Entra's "groups overage" are refused with a page that says why and get no session; the
//! person signed in is the same person as a token of that name for the two-person wipe rule;
//! and `vakt admin-token list` tells sign-in credentials (kind `console-session`) from kept
//! tokens, and revoking one by its id ends that browser's session.
//! Screenshots go to `tests/artifacts/oidc/` (not committed). Tokens the provider could not
//! have issued (forged, expired, wrong nonce, another issuer) are tried in
//! `server/src/console/oidc_tests.rs` against a provider whose tokens the test writes.

#![allow(clippy::unwrap_used)]

use serde_json::json;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vakt_tests::webdriver::{self, Browser, forged_post};
use vakt_tests::{TestAgent, TestServer, free_port, oidc, tools_required, wait_for};

fn artifacts() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("artifacts/oidc")
}

fn shot(b: &Browser, name: &str) {
    b.screenshot(&artifacts().join(format!("{name}.png")));
}

/// Signs in through the provider's form as `sub`; returns on the page the console shows next.
fn sign_in(b: &Browser, console: &str, sub: &str) {
    b.goto(&format!("{console}/login?lang=en"));
    let sso = b.find("#sso");
    b.click_through(&sso);
    assert!(
        !b.current_url().starts_with(console),
        "on the provider's page: {}",
        b.current_url()
    );
    let field = b.find("input[name=sub]");
    b.submit_typing(&field, sub);
    // A successful callback's page moves on by itself (a meta refresh) once the session is
    // set; a refusal stays on the callback's URL with the login page.
    wait_for("the console after sign-in", Duration::from_secs(20), || {
        b.current_url().starts_with(console) && !b.source().contains("http-equiv=\"refresh\"")
    });
}

fn log_out(b: &Browser) {
    let button = b.find("#logout");
    b.click_through(&button);
}

/// A form a browser would not send, with the browser's session cookie.
fn post_with_session(b: &Browser, url: &str, form: &[(&str, &str)]) -> (u16, String) {
    let (cookie, _) = b.session_cookie().expect("a session cookie");
    forged_post(url, &cookie, form)
}

/// The CSRF token in the current page's forms.
fn csrf(b: &Browser) -> String {
    let e = b.find("input[name=csrf]");
    b.attribute(&e, "value").unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn people_sign_in_through_a_real_provider_with_roles_from_their_groups() {
    let (chromium, chromedriver) = match webdriver::tools() {
        Ok(t) => t,
        Err(e) if !tools_required() => {
            eprintln!("SKIP: {e}");
            return;
        }
        Err(e) => panic!("{e} (VAKT_REQUIRE_TOOLS is set)"),
    };
    let python = match oidc::python() {
        Ok(p) => p,
        Err(e) if !tools_required() => {
            eprintln!("SKIP: {e}");
            return;
        }
        Err(e) => panic!("{e} (VAKT_REQUIRE_TOOLS is set)"),
    };
    let provider = oidc::Provider::start(&python);
    provider.set_user(
        "anna@example.org",
        json!({"email": "anna@example.org", "groups": ["staff", "vakt-admins"]}),
    );
    provider.set_user(
        "vera",
        json!({"preferred_username": "vera", "groups": "vakt-viewers"}),
    );
    provider.set_user(
        "nils@example.org",
        json!({"email": "nils@example.org", "groups": ["staff"]}),
    );
    // Eve set anna's address on her own account, which the provider has not verified.
    provider.set_user(
        "eve",
        json!({"email": "anna@example.org", "email_verified": false, "groups": ["vakt-admins"]}),
    );
    // Otto is in too many groups: Entra leaves `groups` out and points to Microsoft Graph.
    provider.set_user(
        "otto@example.org",
        json!({
            "email": "otto@example.org",
            "_claim_names": {"groups": "src1"},
            "_claim_sources": {"src1": {
                "endpoint": "https://graph.microsoft.com/v1.0/users/otto/getMemberObjects"
            }},
        }),
    );

    let tmp = tempfile::tempdir().unwrap();
    let console_addr = format!("127.0.0.1:{}", free_port());
    let secret = tmp.path().join("oidc.secret");
    vakt_tests::write_secret(&secret, "client-secret\n");
    let config = tmp.path().join("server.toml");
    std::fs::write(
        &config,
        format!(
            "[console.oidc]\nissuer = \"{issuer}\"\nclient_id = \"vakt-console\"\n\
             client_secret_file = {secret:?}\n\
             redirect_url = \"http://{console_addr}/login/oidc/callback\"\n\
             role_claim = \"groups\"\n\
             [console.oidc.roles]\nadmin = [\"vakt-admins\"]\noperator = [\"vakt-operators\"]\n\
             viewer = [\"vakt-viewers\"]\n",
            issuer = provider.issuer,
            secret = secret.display().to_string(),
        ),
    )
    .unwrap();
    let server = TestServer::start_with_console(
        &tmp.path().join("server"),
        "127.0.0.1:0",
        &console_addr,
        &["--config", config.to_str().unwrap()],
    );
    let console = server.console.clone();
    let agent = TestAgent::new(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
    );
    let out = agent.run_once();
    assert!(out.status.success(), "{}", vakt_tests::stderr(&out));
    let device = agent.device_id();
    let hostname = server.vakt_json(&["device", "show", &device])["hostname"]
        .as_str()
        .unwrap()
        .to_string();
    // Anna also holds an API token in her name, and has requested a wipe with it.
    let anna_token = server.create_admin_token("admin", "anna@example.org");
    let requested = server.vakt_with_token(
        &anna_token,
        &[
            "wipe",
            "request",
            &device,
            "--reason",
            "stolen on the train",
        ],
    );
    assert!(
        requested.status.success(),
        "{}",
        vakt_tests::stderr(&requested)
    );
    let wipe = server
        .vakt_json(&["commands", "--device", &device])
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["kind"] == "wipe")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let _ = std::fs::remove_dir_all(artifacts());

    let b = Browser::start(
        &chromium,
        &chromedriver,
        &tmp.path().join("chromedriver.log"),
    );

    // The login page offers both ways.
    b.goto(&format!("{console}/login?lang=en"));
    assert!(b.try_find("#sso").is_some() && b.try_find("#token").is_some());
    shot(&b, "01-login");

    // Anna, an admin by her group, signs in and sees the devices.
    sign_in(&b, &console, "anna@example.org");
    assert!(b.session_cookie().is_some());
    b.goto(&format!("{console}/devices"));
    let page = b.source();
    assert!(page.contains(&hostname), "the admin sees the devices");
    assert!(
        page.contains("anna@example.org"),
        "signed in as her address"
    );
    shot(&b, "02-admin-devices");

    // The wipe she requested with her token waits for someone else, and a forged approval in
    // her signed-in session is refused by the API: the same person however she logs in.
    b.goto(&format!("{console}/wipes"));
    assert!(
        b.source().contains("You requested it"),
        "the console knows the request is hers"
    );
    shot(&b, "03-own-wipe");
    let token = csrf(&b);
    let (status, body) = post_with_session(
        &b,
        &format!("{console}/wipes/{wipe}/approve"),
        &[("csrf", &token), ("confirm", "1")],
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("a different admin"), "{body}");
    let cmd = server.vakt_json(&["commands", "--device", &device]);
    assert_eq!(cmd[0]["state"], "awaiting-approval", "{cmd}");

    // Her sign-in minted a credential in her name; logging out ends it.
    let tokens = server.vakt_json(&["admin-token", "list"]);
    let minted = |state: &str| {
        tokens
            .as_array()
            .unwrap()
            .iter()
            .filter(|t| t["name"] == "anna@example.org" && t["state"] == state)
            .count()
    };
    assert_eq!(
        minted("active"),
        2,
        "her own token and the sign-in's: {tokens}"
    );
    let kinds: Vec<&str> = tokens
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == "anna@example.org")
        .map(|t| t["kind"].as_str().unwrap())
        .collect();
    assert!(
        kinds.contains(&"token") && kinds.contains(&"console-session"),
        "{tokens}"
    );
    // The table puts the kept tokens first (a token made after her sign-in too) and marks the
    // sign-ins.
    server.create_admin_token("viewer", "revisor");
    let table = server.vakt_ok(&["admin-token", "list"]);
    let sessions_from = table
        .find("console-session")
        .expect("a console-session row");
    let later_token = table.find("revisor").expect("the later token's row");
    assert!(later_token < sessions_from, "{table}");
    assert!(table.lines().next().unwrap().contains("KIND"), "{table}");
    log_out(&b);
    let tokens = server.vakt_json(&["admin-token", "list"]);
    let revoked = tokens
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == "anna@example.org" && t["state"] == "revoked")
        .count();
    assert_eq!(
        revoked, 1,
        "logout revoked the sign-in's credential: {tokens}"
    );

    // Vera is a viewer (a string claim): she sees the device but no forms that change it.
    sign_in(&b, &console, "vera");
    b.goto(&format!("{console}/devices/{device}"));
    let page = b.source();
    assert!(page.contains(&hostname), "the viewer sees the device");
    assert!(page.contains("viewer"), "her role is shown");
    for form in ["/wipe\"", "/loss\"", "/assign\""] {
        assert!(
            !page.contains(&format!("action=\"/devices/{device}{form}")),
            "a viewer sees no {form} form"
        );
    }
    shot(&b, "04-viewer-device");
    log_out(&b);

    // Nils is in no mapped group: refused, with the reason, and no session.
    sign_in(&b, &console, "nils@example.org");
    let page = b.source();
    assert!(page.contains("has no role in Vakt"), "{page}");
    assert!(page.contains("nils@example.org") && page.contains("staff"));
    shot(&b, "05-refused");
    b.goto(&format!("{console}/devices"));
    assert!(
        b.current_url().contains("/login"),
        "no session: {}",
        b.current_url()
    );

    // Eve's unverified address is anna's: refused, nothing put on anna, no session.
    sign_in(&b, &console, "eve");
    let page = b.source();
    assert!(
        page.contains("has not verified the address anna@example.org"),
        "{page}"
    );
    shot(&b, "06-unverified");
    b.goto(&format!("{console}/devices"));
    assert!(b.current_url().contains("/login"), "{}", b.current_url());

    // Otto's groups did not fit in the token: the page says so and what to do.
    sign_in(&b, &console, "otto@example.org");
    let page = b.source();
    assert!(
        page.contains("too many groups") && page.contains("app roles"),
        "{page}"
    );
    shot(&b, "07-groups-overage");
    b.goto(&format!("{console}/devices"));
    assert!(b.current_url().contains("/login"), "{}", b.current_url());

    let audit = server.vakt_json(&["audit"]);
    let text = audit.to_string();
    assert!(text.contains("console.login.refused"), "{text}");
    assert!(text.contains("sso:nils@example.org"), "{text}");
    assert!(text.contains("sso-sub:eve"), "{text}");
    assert!(text.contains("sso:otto@example.org"), "{text}");
    let on_anna = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "console.login.refused")
        .filter(|e| e["actor"].as_str().unwrap().contains("anna@example.org"))
        .count();
    assert_eq!(on_anna, 0, "eve's refusal is not anna's: {text}");

    // Vera signs in again, and IT ends her sign-in from the command line, by the id the list
    // shows.
    sign_in(&b, &console, "vera");
    b.goto(&format!("{console}/devices"));
    assert!(
        b.source().contains(&hostname),
        "signed in: {}",
        b.current_url()
    );
    let tokens = server.vakt_json(&["admin-token", "list"]);
    let vera = tokens
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "vera" && t["state"] == "active")
        .unwrap_or_else(|| panic!("vera's sign-in credential: {tokens}"));
    assert_eq!(vera["kind"], "console-session", "{vera}");
    server.vakt_ok(&["admin-token", "revoke", vera["id"].as_str().unwrap()]);
    b.goto(&format!("{console}/devices"));
    assert!(
        b.current_url().contains("/login"),
        "revoking the credential ended her session: {}",
        b.current_url()
    );
}
