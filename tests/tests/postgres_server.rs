//! `vakt-server serve --store postgresql://…` end to end: an agent enrolls and reports against
//! a server whose store is a real PostgreSQL (a private cluster), the records are in the
//! database and not in the data directory, and they survive a kill -9; a wrong URL or a
//! database of a newer schema stops the server at start with the reason, having written
//! nothing. Skips, saying why, only when PostgreSQL is not installed.

#![allow(clippy::unwrap_used)] // a test file: helpers outside #[test] fns may unwrap too

use std::process::Command;
use vakt_tests::pg::PgCluster;
use vakt_tests::{TestAgent, TestServer, bin, stderr};

fn cluster() -> Option<PgCluster> {
    PgCluster::start()
        .map_err(|why| eprintln!("skipped: {why}"))
        .ok()
}

#[test]
fn an_agent_enrolls_and_reports_against_a_server_on_postgresql() {
    let Some(pg) = cluster() else { return };
    let url = pg.database("vakt");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let key = tmp.path().join("secrets.key");
    let mut server = TestServer::start_with(
        &data,
        "127.0.0.1:0",
        &["--store", &url, "--secrets-key", key.to_str().unwrap()],
    );
    for f in ["ca.pem", "server.pem", "admin.token", "lock"] {
        assert!(data.join(f).exists(), "{f} in the data directory");
    }
    for f in ["ca.key", "command.key"] {
        assert!(!data.join(f).exists(), "{f}: the database holds it, sealed");
    }
    assert!(key.exists(), "the secrets key was created");
    assert!(
        !data.join("db").exists(),
        "no embedded store beside PostgreSQL"
    );

    let token = server.enroll_token(&[]);
    let agent = TestAgent::new(&tmp.path().join("agent"), &server, &token);
    let out = agent.run_once();
    assert!(out.status.success(), "agent: {}", stderr(&out));
    let device_id = agent.device_id();
    let show = server.vakt_json(&["device", "show", &device_id]);
    let hostname = show["host"]["hostname"].as_str().unwrap().to_string();
    assert!(!hostname.is_empty(), "the report's host section is stored");
    // The records are PostgreSQL's: the device, its five sections, the audit entries.
    assert_eq!(
        pg.sql(
            "vakt",
            "SELECT count(*) FROM vakt_kv WHERE tree = 'devices'"
        ),
        "1"
    );
    assert_eq!(
        pg.sql(
            "vakt",
            "SELECT count(*) FROM vakt_kv WHERE tree = 'sections'"
        ),
        "5"
    );

    // kill -9 and start again: acknowledged means committed.
    server.restart();
    let show = server.vakt_json(&["device", "show", &device_id]);
    assert_eq!(show["host"]["hostname"], hostname.as_str());
    let out = agent.run_once();
    assert!(
        out.status.success(),
        "agent after restart: {}",
        stderr(&out)
    );
    assert_eq!(agent.device_id(), device_id);
    let report_state: serde_json::Value =
        serde_json::from_str(&agent.state_file("report.json")).unwrap();
    assert_eq!(report_state["sequence"], 2);
    let audit = server.vakt_json(&["audit"]);
    assert!(
        audit.as_array().is_some_and(|a| !a.is_empty()),
        "audit log: {audit}"
    );
}

/// Runs `serve` with `--store url`; it must exit at once with an error.
fn serve_fails(data: &std::path::Path, url: &str) -> String {
    let out = Command::new(bin("vakt-server"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--console",
            "127.0.0.1:0",
        ])
        .arg("--data")
        .arg(data)
        .args(["--store", url])
        .arg("--secrets-key")
        .arg(data.with_extension("key"))
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve with --store {url} started");
    assert!(
        !data.exists() && !data.with_extension("key").exists(),
        "--store {url}: the data directory or the key was written"
    );
    stderr(&out)
}

#[test]
fn serve_refuses_a_wrong_store_at_start_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let err = serve_fails(&data, "postgresql://vakt@127.0.0.1:1/vakt");
    assert!(
        err.contains("cannot use the PostgreSQL database vakt@127.0.0.1:1/vakt"),
        "{err}"
    );
    let err = serve_fails(&data, "/var/lib/vakt");
    assert!(
        err.contains("postgresql://USER@HOST:PORT/DATABASE"),
        "{err}"
    );

    let Some(pg) = cluster() else { return };
    let url = pg.database("newer");
    pg.sql(
        "newer",
        "CREATE TABLE vakt_schema (version integer PRIMARY KEY); \
         INSERT INTO vakt_schema VALUES (1000)",
    );
    let err = serve_fails(&data, &url);
    assert!(
        err.contains("has schema version 1000, newer than this vakt-server knows"),
        "{err}"
    );
    assert_eq!(
        pg.sql("newer", "SELECT to_regclass('vakt_kv') IS NULL"),
        "t",
        "nothing written to the database"
    );
}
