//! Tokens with a lifecycle and two people for a wipe, end to end: a real `vakt-server`, the
//! real `vakt` command line, a real agent for enrollment, and the console over plain HTTP on
//! loopback (no browser: the login form and the session cookie, as a browser would send them).

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::time::Duration;
use vakt_tests::{TestAgent, TestServer, stderr};

fn http() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .max_redirects(0)
        .build()
        .into()
}

/// The `name=value` of the session cookie a response sets.
fn set_cookie(r: &ureq::http::Response<ureq::Body>) -> String {
    let v = r
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .find(|v| v.contains("vakt_session="))
        .expect("a session cookie");
    v.split(';').next().unwrap().to_string()
}

/// Logs in to the console with `token` the way the login form does; the session cookie.
fn console_login(console: &str, token: &str) -> String {
    let (status, cookie) = try_console_login(console, token);
    assert_eq!(status, 303, "login accepted");
    cookie
}

/// A login with `token`: the status and the session cookie it leaves.
fn try_console_login(console: &str, token: &str) -> (u16, String) {
    let mut r = http().get(&format!("{console}/login")).call().unwrap();
    let anonymous = set_cookie(&r);
    let page = r.body_mut().read_to_string().unwrap();
    let csrf = page
        .split("name=\"csrf\" value=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .unwrap()
        .to_string();
    let r = http()
        .post(&format!("{console}/login"))
        .header("Cookie", &anonymous)
        .send_form([("csrf", csrf.as_str()), ("token", token)])
        .unwrap();
    let cookie = if r.status().as_u16() == 303 {
        set_cookie(&r)
    } else {
        anonymous
    };
    (r.status().as_u16(), cookie)
}

/// GET `path` with a session cookie: the status, where it redirects to, and the page.
fn console_get(console: &str, path: &str, cookie: &str) -> (u16, String, String) {
    let mut r = http()
        .get(&format!("{console}{path}"))
        .header("Cookie", cookie)
        .call()
        .unwrap();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    let body = r.body_mut().read_to_string().unwrap();
    (r.status().as_u16(), location, body)
}

/// The listed admin token of `name` created `nth` (0 first).
fn admin_token_row(server: &TestServer, name: &str, nth: usize) -> Value {
    let list = server.vakt_json(&["admin-token", "list"]);
    list.as_array()
        .unwrap()
        .iter()
        .filter(|t| t["name"] == name)
        .nth(nth)
        .cloned()
        .unwrap_or_else(|| panic!("no admin token {nth} of {name}: {list}"))
}

fn id_of(row: &Value) -> String {
    row["id"].as_str().unwrap().to_string()
}

fn create(server: &TestServer, token: &str, role: &str, name: &str) -> (String, String) {
    let out = server.vakt_with_token(
        token,
        &["admin-token", "create", "--role", role, "--name", name],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    (
        String::from_utf8_lossy(&out.stdout).trim().to_string(),
        stderr(&out),
    )
}

/// `vakt admin-token create --role viewer --name NAME --ttl TTL`.
fn viewer_with_ttl(server: &TestServer, name: &str, ttl: &str) -> std::process::Output {
    let args = ["--role", "viewer", "--name", name, "--ttl", ttl];
    server.vakt(&[&["admin-token", "create"][..], &args].concat())
}

fn audit_actions(server: &TestServer) -> Vec<String> {
    server
        .vakt_json(&["audit"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_revoked_admin_token_is_refused_and_its_console_session_ends() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let first = server.admin_token();
    let console = server.console.clone();

    // One admin person: the wipe page says approval is not independent.
    let first_session = console_login(&console, &first);
    let (status, _, page) = console_get(&console, "/wipes", &first_session);
    assert_eq!(status, 200);
    assert!(page.contains("id=\"not-independent\""), "{page}");

    let (chef, _) = create(&server, &first, "admin", "it-chef");
    let (status, _, page) = console_get(&console, "/wipes", &first_session);
    assert_eq!(status, 200);
    assert!(
        !page.contains("id=\"not-independent\""),
        "two admin persons now"
    );

    let chef_session = console_login(&console, &chef);
    assert_eq!(console_get(&console, "/devices", &chef_session).0, 200);
    assert!(server.vakt_with_token(&chef, &["devices"]).status.success());

    let row = admin_token_row(&server, "it-chef", 0);
    assert_eq!(row["state"], "active");
    assert_eq!(row["role"], "admin");
    assert!(
        row["created_by"]
            .as_str()
            .unwrap()
            .contains("initial-admin")
    );
    assert!(
        !row["last_used_at"].as_str().unwrap().is_empty(),
        "its use is recorded: {row}"
    );
    let chef_id = id_of(&row);

    let out = server.vakt(&["admin-token", "revoke", &chef_id]);
    assert!(out.status.success(), "{}", stderr(&out));

    // The CLI is refused, saying why.
    let out = server.vakt_with_token(&chef, &["devices"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("revoked") && err.contains(&chef_id), "{err}");
    // The console session is gone at once, on any path (even one that calls no API); the
    // other admin's is not.
    let (status, location, _) = console_get(&console, "/no-such-page", &chef_session);
    assert!((300..400).contains(&status), "{status}");
    assert!(location.starts_with("/login"), "{location}");
    let (status, location, _) = console_get(&console, "/devices", &chef_session);
    assert!((300..400).contains(&status), "{status}");
    assert!(location.starts_with("/login"), "{location}");
    assert_eq!(console_get(&console, "/wipes", &chef_session).0 / 100, 3);
    assert_eq!(console_get(&console, "/devices", &first_session).0, 200);
    // Nor can it log in again.
    assert_eq!(try_console_login(&console, &chef).0, 401);

    let list_text = server.vakt_ok(&["admin-token", "list", "--json"]);
    assert!(
        !list_text.contains(&chef)
            && !list_text.contains(&first)
            && !list_text.contains(&chef[7..]),
        "no secret is listed"
    );
    assert_eq!(admin_token_row(&server, "it-chef", 0)["state"], "revoked");
    let table = server.vakt_ok(&["admin-token", "list"]);
    assert!(
        table.contains(&chef_id) && table.contains("revoked"),
        "{table}"
    );

    // Revoking twice changes nothing and says so.
    let out = server.vakt(&["admin-token", "revoke", &chef_id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("already revoked"), "{}", stderr(&out));
    // Nor may IT lock itself out: the last active admin token stays.
    let first_id = id_of(&admin_token_row(&server, "initial-admin", 0));
    let out = server.vakt(&["admin-token", "revoke", &first_id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("lock IT out"), "{}", stderr(&out));
    assert!(server.vakt(&["devices"]).status.success());
    // A viewer may not list tokens nor revoke them.
    let (viewer, _) = create(&server, &first, "viewer", "revisor");
    let out = server.vakt_with_token(&viewer, &["admin-token", "list"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("admin role"), "{}", stderr(&out));
    let out = server.vakt(&["admin-token", "revoke", "not-an-id"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("not a token id"), "{}", stderr(&out));

    let actions = audit_actions(&server);
    assert!(
        actions.iter().any(|a| a == "admin-token.revoke"),
        "{actions:?}"
    );
}

#[test]
fn revoked_and_expired_tokens_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));

    // A revoked enrollment token enrolls nothing.
    let enroll = server.enroll_token(&["--uses", "5"]);
    let list = server.vakt_json(&["enroll-token", "list"]);
    let row = &list.as_array().unwrap()[0];
    assert_eq!(row["state"], "active");
    assert_eq!(row["uses_left"], 5);
    let id = row["id"].as_str().unwrap().to_string();
    server.vakt_ok(&["enroll-token", "revoke", &id]);
    let agent = TestAgent::new(&tmp.path().join("agent"), &server, &enroll);
    let out = agent.run_once();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("revoked") && err.contains(&id), "{err}");
    assert_eq!(server.vakt_json(&["devices"]), serde_json::json!([]));
    let list = server.vakt_json(&["enroll-token", "list"]);
    assert_eq!(list[0]["state"], "revoked");
    assert!(!list.to_string().contains(&enroll[7..]), "no secret listed");
    let actions = audit_actions(&server);
    assert!(
        actions.iter().any(|a| a == "enroll-token.revoke"),
        "{actions:?}"
    );

    // An admin token with --ttl works, then expires.
    let out = viewer_with_ttl(&server, "vikarie", "2s");
    assert!(out.status.success(), "{}", stderr(&out));
    let temp = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert!(temp.starts_with("vakt_a_"), "the token alone on stdout");
    assert!(server.vakt_with_token(&temp, &["devices"]).status.success());
    let row = admin_token_row(&server, "vikarie", 0);
    assert_eq!(row["state"], "active");
    assert!(!row["expires_at"].as_str().unwrap().is_empty());
    std::thread::sleep(Duration::from_secs(3));
    let out = server.vakt_with_token(&temp, &["devices"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("expired"), "{}", stderr(&out));
    assert_eq!(admin_token_row(&server, "vikarie", 0)["state"], "expired");

    let out = viewer_with_ttl(&server, "x", "soon");
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--ttl"), "{}", stderr(&out));
}

#[test]
fn a_sock_puppet_cannot_approve_a_wipe_and_a_second_person_can() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let first = server.admin_token();
    let agent = TestAgent::new(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
    );
    let out = agent.run_once();
    assert!(out.status.success(), "{}", stderr(&out));
    let device = agent.device_id();
    let wipe = |token: &str| {
        let out = server.vakt_with_token(
            token,
            &[
                "wipe",
                "request",
                &device,
                "--reason",
                "stulen, polisanmäld",
            ],
        );
        assert!(out.status.success(), "{}", stderr(&out));
        (
            String::from_utf8_lossy(&out.stdout).trim().to_string(),
            stderr(&out),
        )
    };

    // One admin person: a wipe request says plainly that approval is not independent.
    let (wipe1, said) = wipe(&first);
    assert!(said.contains("not independent"), "{said}");
    // The same person's second token cannot approve it.
    let (again, _) = create(&server, &first, "admin", "initial-admin");
    let out = server.vakt_with_token(&again, &["wipe", "approve", &wipe1]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("another person"), "{}", stderr(&out));

    // With one admin person, a token for another name is active at once (and nobody can
    // tell a second person from a puppet yet: that is what the warning says).
    let (chef, said) = create(&server, &first, "admin", "it-chef");
    assert!(!said.contains("awaiting"), "{said}");
    assert_eq!(admin_token_row(&server, "it-chef", 0)["state"], "active");
    let out = server.vakt_with_token(&chef, &["wipe", "approve", &wipe1]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        !stderr(&out).contains("not independent"),
        "two admin persons now: {}",
        stderr(&out)
    );

    // Two admin persons: the sock puppet waits for approval and can do nothing meanwhile.
    let (wipe2, said) = wipe(&first);
    assert!(!said.contains("not independent"), "{said}");
    let (puppet, said) = create(&server, &first, "admin", "sock");
    assert!(said.contains("awaiting approval"), "{said}");
    let row = admin_token_row(&server, "sock", 0);
    assert_eq!(row["state"], "awaiting-approval");
    let puppet_id = id_of(&row);
    let out = server.vakt_with_token(&puppet, &["wipe", "approve", &wipe2]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("awaiting approval"),
        "{}",
        stderr(&out)
    );
    let cmds = server.vakt_json(&["commands", "--device", &device]);
    let w2 = cmds
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["id"] == wipe2.as_str())
        .unwrap();
    assert_eq!(
        w2["state"], "awaiting-approval",
        "the puppet approved nothing"
    );

    // Its creator cannot approve it, nor can a token for the creator's own name.
    let out = server.vakt(&["admin-token", "approve", &puppet_id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("other than"), "{}", stderr(&out));
    let out = server.vakt_with_token(&again, &["admin-token", "approve", &puppet_id]);
    assert!(!out.status.success());
    // A token for an existing other person waits too, and that person cannot approve it.
    let (_chef2, said) = create(&server, &first, "admin", "it-chef");
    assert!(said.contains("awaiting approval"), "{said}");
    let chef2_id = id_of(&admin_token_row(&server, "it-chef", 1));
    let out = server.vakt_with_token(&chef, &["admin-token", "approve", &chef2_id]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("other than"), "{}", stderr(&out));
    // A token for yourself does not wait.
    let (_, said) = create(&server, &first, "admin", "Initial-Admin");
    assert!(!said.contains("awaiting"), "{said}");

    // The honest way: the second person approves the wipe.
    let out = server.vakt_with_token(&chef, &["wipe", "approve", &wipe2]);
    assert!(out.status.success(), "{}", stderr(&out));
    // And a second person's approval makes the new person's token work.
    let out = server.vakt_with_token(&chef, &["admin-token", "approve", &puppet_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(admin_token_row(&server, "sock", 0)["state"], "active");
    assert!(
        server
            .vakt_with_token(&puppet, &["devices"])
            .status
            .success()
    );

    let actions = audit_actions(&server);
    for a in [
        "admin-token.create",
        "admin-token.approve-refused",
        "admin-token.approve",
        "wipe.approve-refused",
        "wipe.approve",
    ] {
        assert!(actions.iter().any(|x| x == a), "{a} in {actions:?}");
    }
}
