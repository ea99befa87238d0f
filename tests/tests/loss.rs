//! The loss procedure end to end: a real server, a real agent process, python-dbusmock's
//! `logind` on a private bus, and a scratch root with its own passwd and shadow, so the lock is
//! real but never touches this machine's accounts.

#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::Duration;
use vakt_tests::dbus::{Mock, PrivateBus};
use vakt_tests::{Engine, TestAgent, TestServer, on_both_engines, skip_unless_dbus, wait_until};

const SHADOW: &str = "root:*:19000:0:99999:7:::\nanna:$y$j9T$abc:19000:0:99999:7:::\nbo:$y$j9T$def:19000:0:99999:7::20500:\n";

/// A scratch root with two regular users, their homes, and files to wipe.
fn scratch_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nanna:x:1000:1000:Anna Berg:/home/anna:/bin/bash\nbo:x:1001:1001:Bo Ek:/home/bo:/bin/bash\n",
    )
    .unwrap();
    std::fs::write(root.join("etc/shadow"), SHADOW).unwrap();
    std::fs::create_dir_all(root.join("home/anna/Dokument")).unwrap();
    std::fs::write(root.join("home/anna/Dokument/lönelista.ods"), "hemligt").unwrap();
    std::fs::create_dir_all(root.join("home/bo")).unwrap();
    root
}

fn command<'a>(cmds: &'a Value, kind: &str) -> Option<&'a Value> {
    cmds.as_array()?.iter().rev().find(|c| c["kind"] == kind)
}

fn command_state(server: &TestServer, device: &str, kind: &str) -> String {
    let cmds = server.vakt_json(&["commands", "--device", device]);
    command(&cmds, kind)
        .and_then(|c| c["state"].as_str())
        .unwrap_or("")
        .to_string()
}

fn device_state(server: &TestServer, device: &str) -> String {
    server.vakt_json(&["device", "show", device])["state"]
        .as_str()
        .unwrap()
        .to_string()
}

fn agent_config(root: &Path, bus: &str, wipe: &str) -> String {
    format!(
        "root = {root:?}\nsystem_bus = {bus:?}\n[lock]\nmethod = \"logind\"\n{wipe}",
        root = root.display().to_string()
    )
}

on_both_engines!(async fn loss_locks_the_connected_laptop_and_recovery_unlocks_it);
async fn loss_locks_the_connected_laptop_and_recovery_unlocks_it(engine: Engine) {
    let bus = skip_unless_dbus!(PrivateBus::start().await);
    let logind = skip_unless_dbus!(Mock::start(&bus, "logind", &json!({})).await);
    let tmp = tempfile::tempdir().unwrap();
    let root = scratch_root(tmp.path());
    let server = engine.server(&tmp.path().join("server"));
    let wipe = "[wipe]\nstrategy = \"paths\"\npaths = [\"/home/anna\"]\npoweroff = false\n";
    let agent = TestAgent::with_config(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
        &agent_config(&root, bus.address(), wipe),
    );
    let proc = agent.spawn();
    wait_until("the agent to connect", Duration::from_secs(30), || {
        let d = server.vakt_json(&["devices"]);
        d[0]["connected"] == true
    })
    .await;
    let device = agent.device_id();
    server.vakt_ok(&["device", "assign", &device, "anna@sorsele.se"]);

    let out = server.vakt_ok(&[
        "loss",
        "report",
        &device,
        "--reported-by",
        "anna@sorsele.se",
    ]);
    assert!(out.contains("lock queued"), "{out}");
    wait_until("the lock to succeed", Duration::from_secs(10), || {
        command_state(&server, &device, "lock") == "succeeded"
    })
    .await;
    let calls = logind
        .method_calls("/org/freedesktop/login1", "LockSessions")
        .await
        .unwrap();
    assert_eq!(
        calls.len(),
        1,
        "logind's LockSessions was called once; agent log:\n{}",
        proc.log()
    );
    let shadow = std::fs::read_to_string(root.join("etc/shadow")).unwrap();
    assert!(
        shadow.contains("anna:$y$j9T$abc:19000:0:99999:7::1:"),
        "{shadow}"
    );
    assert!(
        shadow.contains("bo:$y$j9T$def:19000:0:99999:7::1:"),
        "{shadow}"
    );
    assert!(
        shadow.contains("root:*:19000:0:99999:7:::"),
        "root is never locked out"
    );
    assert!(root.join("etc/nologin").exists());
    assert_eq!(device_state(&server, &device), "locked");

    // The checklist of section 8.1 and the incident report.
    let case = server.vakt_json(&["loss", "show", &device]);
    assert_eq!(case["open"], true);
    assert_eq!(case["checklist"].as_array().unwrap().len(), 4);
    assert!(
        case["checklist"]
            .as_array()
            .unwrap()
            .iter()
            .all(|s| s["done"] == false)
    );
    server.vakt_ok(&[
        "loss",
        "update",
        &device,
        "--sim-blocked",
        "--no-police-report",
        "glömd i personalrummet, missbruk uteslutet",
    ]);
    let case = server.vakt_json(&["loss", "show", &device]);
    assert_eq!(case["checklist"][0]["done"], true);
    assert_eq!(case["checklist"][1]["done"], true);
    assert_eq!(case["checklist"][2]["done"], false);
    let md = server.vakt_ok(&["loss", "incident-report", &device]);
    assert!(
        md.contains("# Incidentrapport: förlorad utrustning"),
        "{md}"
    );
    assert!(md.contains("1. [x] IT spärrar SIM-kortet"), "{md}");
    assert!(md.contains("Låsning"), "{md}");
    // Whether the disk was encrypted: this agent wipes paths, so it cannot say; as of a report.
    assert!(md.contains("## Kryptering (avsnitt 8.1)"), "{md}");
    assert!(
        md.contains("- **Disken:** inte bedömd: agentens raderingsstrategi tar bara bort filer"),
        "{md}"
    );
    assert!(
        !md.contains("- **Enhetens senaste rapport:** ingen rapport"),
        "{md}"
    );
    let html = server.vakt_ok(&["loss", "incident-report", &device, "--html"]);
    assert!(html.contains("<html lang=\"sv\">"));

    // Recovered: the unlock restores exactly what was there.
    server.vakt_ok(&["loss", "recovered", &device]);
    wait_until("the unlock to succeed", Duration::from_secs(10), || {
        command_state(&server, &device, "unlock") == "succeeded"
    })
    .await;
    assert_eq!(
        std::fs::read_to_string(root.join("etc/shadow")).unwrap(),
        SHADOW
    );
    assert!(!root.join("etc/nologin").exists());
    assert_eq!(device_state(&server, &device), "active");
    assert_eq!(server.vakt_json(&["loss", "show", &device])["open"], false);

    // Every step is in the audit log, and the chain holds.
    let audit = server.vakt_json(&["audit"]);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    for a in ["loss.report", "loss.update", "loss.recovered"] {
        assert!(actions.contains(&a), "{a} audited: {actions:?}");
    }
    server.vakt_ok(&["audit", "verify"]);
}

on_both_engines!(async fn loss_reported_while_offline_survives_a_restart_and_locks_on_return);
async fn loss_reported_while_offline_survives_a_restart_and_locks_on_return(engine: Engine) {
    let bus = skip_unless_dbus!(PrivateBus::start().await);
    let logind = skip_unless_dbus!(Mock::start(&bus, "logind", &json!({})).await);
    let tmp = tempfile::tempdir().unwrap();
    let root = scratch_root(tmp.path());
    let mut server = engine.server(&tmp.path().join("server"));
    let agent = TestAgent::with_config(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
        &agent_config(
            &root,
            bus.address(),
            "[wipe]\nstrategy = \"paths\"\npaths = [\"/home\"]\npoweroff = false\n",
        ),
    );
    assert!(
        agent.run_once().status.success(),
        "enrolled and reported once, then offline"
    );
    let device = agent.device_id();
    server.vakt_ok(&["loss", "report", &device]);
    assert_eq!(command_state(&server, &device, "lock"), "pending");

    server.restart();
    assert_eq!(
        command_state(&server, &device, "lock"),
        "pending",
        "the queue survived the restart"
    );
    assert_eq!(device_state(&server, &device), "lost");

    let proc = agent.spawn();
    wait_until(
        "the lock to run when the laptop comes back",
        Duration::from_secs(30),
        || command_state(&server, &device, "lock") == "succeeded",
    )
    .await;
    let calls = logind
        .method_calls("/org/freedesktop/login1", "LockSessions")
        .await
        .unwrap();
    assert!(!calls.is_empty(), "agent log:\n{}", proc.log());

    // A locked agent that restarts stays locked and locks the sessions again.
    drop(proc);
    let proc = agent.spawn();
    wait_until("the agent to reconnect", Duration::from_secs(30), || {
        server.vakt_json(&["devices"])[0]["connected"] == true
    })
    .await;
    wait_until(
        "sessions locked again after the restart",
        Duration::from_secs(10),
        || {
            let n = futures_now(logind.method_calls("/org/freedesktop/login1", "LockSessions"));
            n >= 2
        },
    )
    .await;
    assert!(root.join("etc/nologin").exists());
    let cmds = server.vakt_json(&["commands", "--device", &device]);
    assert!(
        command(&cmds, "lock").unwrap()["deliveries"]
            .as_u64()
            .unwrap()
            >= 1
    );
    drop(proc);
}

/// Runs a future to completion from a sync closure inside the multi-thread runtime.
fn futures_now<T, E: std::fmt::Debug>(
    f: impl std::future::Future<Output = Result<Vec<T>, E>>,
) -> usize {
    tokio::task::block_in_place(|| tokio::runtime::Handle::current().block_on(f))
        .unwrap()
        .len()
}

on_both_engines!(async fn wipe_needs_a_second_admin_then_erases_the_paths);
async fn wipe_needs_a_second_admin_then_erases_the_paths(engine: Engine) {
    let bus = skip_unless_dbus!(PrivateBus::start().await);
    let _logind = skip_unless_dbus!(Mock::start(&bus, "logind", &json!({})).await);
    let tmp = tempfile::tempdir().unwrap();
    let root = scratch_root(tmp.path());
    let server = engine.server(&tmp.path().join("server"));
    let agent = TestAgent::with_config(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
        &agent_config(
            &root,
            bus.address(),
            "[wipe]\nstrategy = \"paths\"\npaths = [\"/home/anna\"]\npoweroff = false\n",
        ),
    );
    let proc = agent.spawn();
    wait_until("the agent to connect", Duration::from_secs(30), || {
        server.vakt_json(&["devices"])[0]["connected"] == true
    })
    .await;
    let device = agent.device_id();
    let first = server.admin_token();
    let second = server
        .vakt_ok(&[
            "admin-token",
            "create",
            "--role",
            "admin",
            "--name",
            "it-chef",
        ])
        .trim()
        .to_string();
    let operator = server
        .vakt_ok(&[
            "admin-token",
            "create",
            "--role",
            "operator",
            "--name",
            "helpdesk",
        ])
        .trim()
        .to_string();

    let out = server.vakt_with_token(
        &operator,
        &[
            "wipe",
            "request",
            &device,
            "--reason",
            "stulen, polisanmäld",
        ],
    );
    assert!(!out.status.success(), "an operator cannot request a wipe");

    let out = server.vakt_with_token(
        &first,
        &[
            "wipe",
            "request",
            &device,
            "--reason",
            "stulen, polisanmäld",
        ],
    );
    assert!(out.status.success(), "{}", vakt_tests::stderr(&out));
    let wipe_id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(command_state(&server, &device, "wipe"), "awaiting-approval");

    let out = server.vakt_with_token(&first, &["wipe", "approve", &wipe_id]);
    assert!(!out.status.success());
    assert!(
        vakt_tests::stderr(&out).contains("different admin"),
        "{}",
        vakt_tests::stderr(&out)
    );
    assert!(
        root.join("home/anna/Dokument/lönelista.ods").exists(),
        "nothing wiped on self-approval"
    );

    let out = server.vakt_with_token(&second, &["wipe", "approve", &wipe_id]);
    assert!(out.status.success(), "{}", vakt_tests::stderr(&out));
    wait_until("the wipe to succeed", Duration::from_secs(15), || {
        command_state(&server, &device, "wipe") == "succeeded"
    })
    .await;
    assert!(
        !root.join("home/anna").exists(),
        "agent log:\n{}",
        proc.log()
    );
    assert!(
        root.join("home/bo").exists(),
        "only the configured paths go"
    );
    assert_eq!(device_state(&server, &device), "wiped");
    let cmds = server.vakt_json(&["commands"]);
    let w = command(&cmds, "wipe").unwrap();
    assert!(w["approved_by"].as_str().unwrap().contains("it-chef"));
    // Removal only unlinks: the stored result says the data stays on the disk.
    let detail = w["detail"].as_str().unwrap();
    assert!(detail.contains("files and directories removed"), "{detail}");
    assert!(detail.contains("recoverable"), "{detail}");
    let audit = server.vakt_json(&["audit"]);
    let actions: Vec<&str> = audit
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["action"].as_str().unwrap())
        .collect();
    assert!(
        actions.contains(&"wipe.request")
            && actions.contains(&"wipe.approve-refused")
            && actions.contains(&"wipe.approve")
    );
}

on_both_engines!(fn audit_verify_detects_an_edited_entry);
fn audit_verify_detects_an_edited_entry(engine: Engine) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let mut server = engine.server(&data);
    server.enroll_token(&[]);
    server.vakt_ok(&[
        "admin-token",
        "create",
        "--role",
        "viewer",
        "--name",
        "revisor",
    ]);
    server.vakt_ok(&["audit", "verify"]);
    server.kill();
    // Someone with access to the store rewrites history.
    let rewrite = |bytes: &[u8]| {
        use prost::Message;
        let mut e = vakt_proto::pb::AuditEntry::decode(bytes).unwrap();
        e.detail = "uses=100 ttl_s=31536000".into();
        e.encode_to_vec()
    };
    let key = 2u64.to_be_bytes();
    match &engine {
        Engine::Sled => {
            let db = sled::open(data.join("db")).unwrap();
            let audit = db.open_tree("audit").unwrap();
            let changed = rewrite(&audit.get(key).unwrap().unwrap());
            audit.insert(key, changed).unwrap();
            db.flush().unwrap();
        }
        Engine::Postgres {
            cluster, database, ..
        } => {
            let row = format!("tree = 'audit' AND key = '\\x{}'::bytea", hex(&key));
            let stored = cluster.sql(
                database,
                &format!("SELECT encode(value, 'hex') FROM vakt_kv WHERE {row}"),
            );
            let changed = hex(&rewrite(&unhex(&stored)));
            let updated = cluster.sql(
                database,
                &format!(
                    "UPDATE vakt_kv SET value = '\\x{changed}'::bytea WHERE {row} RETURNING 1"
                ),
            );
            assert_eq!(updated, "1", "one audit entry rewritten");
        }
    }
    server.restart();
    let out = server.vakt(&["audit", "verify"]);
    assert!(!out.status.success());
    let err = vakt_tests::stderr(&out);
    assert!(err.contains("entry 2 was changed"), "{err}");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Vec<u8> {
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&text[i..i + 2], 16).unwrap())
        .collect()
}
