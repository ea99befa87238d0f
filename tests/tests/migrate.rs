//! `vakt-server migrate`: a populated embedded installation (an agent enrolled and reported,
//! an enrollment token, a second admin token, a policy in force, a loss case with its lock,
//! the audit entries of all that) copied into an empty PostgreSQL database, then served from
//! it with the same data directory: the old agent reports with its old certificate, both
//! admin tokens work, the loss and its lock are there and the audit chain verifies. It is
//! refused while a server runs on the directory and into a database that is not empty, and
//! the embedded store still serves the installation as it was (a way back). Skips, saying why, only when PostgreSQL is absent.

#![allow(clippy::unwrap_used)] // a test file: helpers outside #[test] fns may unwrap too

use std::path::Path;
use std::process::{Command, Output};
use vakt_tests::pg::PgCluster;
use vakt_tests::{TestAgent, TestServer, bin, stderr};

fn migrate(data: &Path, url: &str, key: &Path) -> Output {
    Command::new(bin("vakt-server"))
        .arg("migrate")
        .arg("--data")
        .arg(data)
        .args(["--to", url])
        .arg("--secrets-key")
        .arg(key)
        .output()
        .unwrap()
}

#[test]
fn an_embedded_installation_moves_to_postgresql_and_carries_on() {
    let Some(pg) = PgCluster::start()
        .map_err(|why| eprintln!("skipped: {why}"))
        .ok()
    else {
        return;
    };
    let url = pg.database("vakt");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let key = tmp.path().join("secrets.key");

    // An embedded installation with a little of everything.
    let mut server = TestServer::start(&data);
    let enroll = server.enroll_token(&["--uses", "5"]);
    let agent = TestAgent::new(&tmp.path().join("agent"), &server, &enroll);
    let out = agent.run_once();
    assert!(out.status.success(), "agent: {}", stderr(&out));
    let device = agent.device_id();
    let second_admin = server.create_admin_token("admin", "second");
    let pack = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/policy/sorsele.toml");
    server.vakt_ok(&["policy", "apply", pack]);
    let out = server.vakt_ok(&[
        "loss",
        "report",
        &device,
        "--reported-by",
        "anna@sorsele.se",
    ]);
    assert!(out.contains("lock queued"), "{out}");
    let audit_before = server.vakt_json(&["audit"]).as_array().unwrap().len();
    assert!(audit_before >= 4, "audit entries: {audit_before}");

    // Refused while the server runs on the directory; nothing written anywhere.
    let out = migrate(&data, &url, &key);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("in use by another vakt-server"),
        "{}",
        stderr(&out)
    );
    assert!(!key.exists());

    let addr = server.addr.clone();
    assert!(
        server
            .terminate(std::time::Duration::from_secs(10))
            .is_some()
    );
    let out = migrate(&data, &url, &key);
    let printed = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "migrate: {}\n{printed}", stderr(&out));
    assert!(
        printed.contains("counts match; audit chain verified")
            && printed.contains(&format!("({audit_before} entries)")),
        "{printed}"
    );
    assert!(key.exists(), "the secrets key was created");
    let rows = |tree: &str| {
        pg.sql(
            "vakt",
            &format!("SELECT count(*) FROM vakt_kv WHERE tree = '{tree}'"),
        )
    };
    assert_eq!(rows("devices"), "1");
    assert_eq!(rows("admin_tokens"), "2");
    assert_eq!(rows("audit"), audit_before.to_string());
    // The CA key and generation 0, sealed.
    assert_eq!(rows("secrets"), "3");

    // Served from PostgreSQL with the same directory (its old ca.key no longer used), on the
    // same address, so the agent finds it where it was.
    let mut server = TestServer::start_with(
        &data,
        &addr,
        &["--store", &url, "--secrets-key", key.to_str().unwrap()],
    );
    assert!(
        server.log_text().contains("ca.key is no longer used"),
        "{}",
        server.log_text()
    );
    let out = agent.run_once();
    assert!(
        out.status.success(),
        "old agent on PostgreSQL: {}",
        stderr(&out)
    );
    assert_eq!(agent.device_id(), device);
    let shown = server.vakt_json(&["device", "show", &device]);
    assert_eq!(shown["last_report_sequence"], 2, "{shown}");
    let out = server.vakt_with_token(&second_admin, &["devices"]);
    assert!(out.status.success(), "second admin token: {}", stderr(&out));
    let case = server.vakt_json(&["loss", "show", &device]);
    assert_eq!(case["open"], true, "{case}");
    let cmds = server.vakt_json(&["commands", "--device", &device]);
    assert!(
        cmds.as_array().unwrap().iter().any(|c| c["kind"] == "lock"),
        "{cmds}"
    );
    let policy = server.vakt_json(&["policy", "show"]);
    assert!(policy["version"].as_u64().unwrap_or(0) >= 1, "{policy}");
    let verified = server.vakt_ok(&["audit", "verify"]);
    assert!(verified.contains("hash chain verified"), "{verified}");

    // Again into the same (now populated) database: refused, nothing written.
    server.terminate(std::time::Duration::from_secs(10));
    let total = pg.sql("vakt", "SELECT count(*) FROM vakt_kv");
    let out = migrate(&data, &url, &key);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not empty") && stderr(&out).contains("nothing was written"),
        "{}",
        stderr(&out)
    );
    assert_eq!(pg.sql("vakt", "SELECT count(*) FROM vakt_kv"), total);

    // The way back: the embedded store still serves the installation as it was at the
    // migration (what the PostgreSQL server wrote since is not in it).
    let back = TestServer::start(&data);
    let audit = back.vakt_json(&["audit"]).as_array().unwrap().len();
    assert_eq!(audit, audit_before, "the embedded audit log as it was");
    let shown = back.vakt_json(&["device", "show", &device]);
    assert_eq!(shown["last_report_sequence"], 1, "{shown}");
    assert!(
        back.vakt_ok(&["audit", "verify"])
            .contains("hash chain verified")
    );
}
