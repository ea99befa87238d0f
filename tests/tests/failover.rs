//! An agent that knows more than one server (agent.toml's `server` as a list): it starts with
//! one, and when that one dies (kill -9) it moves to the next, holds its stream there and runs
//! what that server queues for it; a listed server that is down never stops it enrolling.
//!
//! Until the shared PostgreSQL store lands (issue 17), two servers with the same state are a
//! standby made from a copy of the embedded store taken while the first was stopped: same CA,
//! same device records. That is enough to show the agent's side of fail-over.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use std::time::Duration;
use vakt_tests::{TestAgent, TestServer, wait_until};

/// A site lock command that leaves one line in `runs` per run.
fn lock_config(runs: &Path) -> String {
    format!(
        "[lock]\nmethod = \"command\"\ncommand = [\"sh\", \"-c\", \"echo run >> '{}'\"]\n",
        runs.display()
    )
}

/// Points the agent's config at `servers` (in that order), keeping the rest of it.
fn set_servers(agent: &TestAgent, servers: &[String]) {
    let cfg = std::fs::read_to_string(agent.config()).unwrap();
    let list = servers
        .iter()
        .map(|s| format!("{s:?}"))
        .collect::<Vec<_>>()
        .join(", ");
    let cfg = cfg
        .lines()
        .map(|l| {
            if l.starts_with("server = ") {
                format!("server = [{list}]")
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\n");
    std::fs::write(agent.config(), cfg + "\n").unwrap();
}

/// An https URL on loopback where nothing listens.
fn dead_url() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("https://127.0.0.1:{port}")
}

fn connected(server: &TestServer, device: &str) -> bool {
    server.vakt_json(&["device", "show", device])["connected"] == true
}

fn lock_state(server: &TestServer, device: &str) -> Value {
    let cmds = server.vakt_json(&["commands", "--device", device]);
    cmds.as_array()
        .and_then(|a| a.iter().rev().find(|c| c["kind"] == "lock").cloned())
        .map_or(Value::Null, |c| c["state"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listed_server_that_is_down_does_not_stop_enrollment() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    // Three laptops, each listing two dead servers and the live one: whichever each starts
    // with (its own random choice), each enrolls and reports through the live one.
    for i in 0..3 {
        let agent = TestAgent::new(
            &tmp.path().join(format!("agent{i}")),
            &server,
            &server.enroll_token(&[]),
        );
        set_servers(&agent, &[dead_url(), server.url(), dead_url()]);
        let out = agent.run_once();
        assert!(
            out.status.success(),
            "agent {i}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let device = agent.device_id();
        let shown = server.vakt_json(&["device", "show", &device]);
        assert!(shown["last_seen"].is_string(), "{shown}");
        assert_eq!(
            agent.identity()["server"],
            server.url(),
            "it says where it enrolled"
        );
    }
    // With every listed server down, the error names each of them.
    let agent = TestAgent::new(&tmp.path().join("alone"), &server, "unused");
    let (d1, d2) = (dead_url(), dead_url());
    set_servers(&agent, &[d1.clone(), d2.clone()]);
    let out = agent.run_once();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&d1) && err.contains(&d2), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_agent_moves_to_the_other_server_when_its_server_is_killed() {
    let tmp = tempfile::tempdir().unwrap();
    let runs = tmp.path().join("lock-runs");
    let (dir_a, dir_b) = (tmp.path().join("a"), tmp.path().join("b"));

    // Enroll against A, then make B a copy of A's store while A is stopped.
    let mut a = TestServer::start(&dir_a);
    let agent = TestAgent::with_config(
        &tmp.path().join("agent"),
        &a,
        &a.enroll_token(&[]),
        &lock_config(&runs),
    );
    let out = agent.run_once();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let device = agent.device_id();
    assert!(a.terminate(Duration::from_secs(20)).is_some(), "A stops");
    let cp = Command::new("cp")
        .arg("-a")
        .arg(&dir_a)
        .arg(&dir_b)
        .status()
        .unwrap();
    assert!(cp.success());
    let mut a = TestServer::start(&dir_a);
    let mut b = TestServer::start(&dir_b);
    set_servers(&agent, &[a.url(), b.url()]);

    let proc = agent.spawn();
    wait_until(
        "the agent to hold a stream",
        Duration::from_secs(60),
        || connected(&a, &device) || connected(&b, &device),
    )
    .await;
    // Kill -9 whichever holds it; the other must get the agent, and a loss reported there
    // must lock the laptop.
    let (dead, survivor) = if connected(&a, &device) {
        (&mut a, &mut b)
    } else {
        (&mut b, &mut a)
    };
    dead.kill();
    wait_until(
        "the agent to hold a stream on the surviving server",
        Duration::from_secs(60),
        || connected(survivor, &device),
    )
    .await;
    survivor.vakt_ok(&["loss", "report", &device]);
    wait_until(
        "the lock to run and be recorded",
        Duration::from_secs(60),
        || lock_state(survivor, &device) == "succeeded",
    )
    .await;
    assert_eq!(
        std::fs::read_to_string(&runs).unwrap().lines().count(),
        1,
        "the lock ran once"
    );
    assert!(
        proc.log().contains("moved to another"),
        "the agent says it moved: {}",
        proc.log()
    );
}
