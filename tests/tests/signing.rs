//! Signed commands against time and key compromise, end to end with real servers and agents:
//! an agent whose clock runs hours ahead still runs a valid lock (it judges expiry by the
//! server's clock as carried in its stream); a refusal for time is answered by signing again,
//! a bounded number of times; and `vakt signing-key rotate` reaches a connected and an offline
//! agent (through two rotations at once), after which both still lock.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vakt_proto::pb;
use vakt_proto::pb::agent_service_client::AgentServiceClient;
use vakt_tests::{TestAgent, TestServer, tools_required, wait_until};

/// A lock that only leaves a mark: no D-Bus, no accounts touched.
fn lock_config(marker: &Path) -> String {
    format!(
        "[lock]\nmethod = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"date > '{m}'\"]\nunlock_command = [\"/bin/rm\", \"-f\", \"{m}\"]\n",
        m = marker.display()
    )
}

fn command_of<'a>(cmds: &'a Value, kind: &str) -> Option<&'a Value> {
    cmds.as_array()?.iter().rev().find(|c| c["kind"] == kind)
}

fn lock_state(server: &TestServer, device: &str) -> String {
    let cmds = server.vakt_json(&["commands", "--device", device]);
    command_of(&cmds, "lock")
        .and_then(|c| c["state"].as_str())
        .unwrap_or("")
        .to_string()
}

fn report_loss(server: &TestServer, device: &str) {
    let out = server.vakt_ok(&["loss", "report", device, "--reported-by", "anna@sorsele.se"]);
    assert!(out.contains("lock queued"), "{out}");
}

fn libfaketime() -> Option<PathBuf> {
    ["x86_64-linux-gnu", "aarch64-linux-gnu"]
        .iter()
        .map(|arch| PathBuf::from(format!("/usr/lib/{arch}/faketime/libfaketime.so.1")))
        .find(|p| p.exists())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_three_hours_fast_still_runs_a_lock() {
    let Some(faketime) = libfaketime() else {
        assert!(
            !tools_required(),
            "libfaketime is missing (.ci/install-faketime.sh installs it)"
        );
        eprintln!("SKIP: libfaketime is not installed (apt-get install libfaketime)");
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let marker = tmp.path().join("locked");
    let agent = TestAgent::with_config(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
        &lock_config(&marker),
    );
    // The wall clock three hours ahead; the monotonic clock (timers, backoff) true.
    let proc = agent.spawn_with_env(&[
        ("LD_PRELOAD", faketime.to_str().unwrap()),
        ("FAKETIME", "+3h"),
        ("FAKETIME_DONT_FAKE_MONOTONIC", "1"),
        ("FAKETIME_NO_CACHE", "1"),
    ]);
    wait_until("the agent to connect", Duration::from_secs(60), || {
        server.vakt_json(&["devices"])[0]["connected"] == true
    })
    .await;
    let device = agent.device_id();
    // The agent really is fast: its journal of the enrollment would show it, but the simplest
    // witness is its identity's enrollment time, stamped by its own clock.
    let enrolled = agent.identity()["enrolled_at_ms"].as_i64().unwrap();
    let server_now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    assert!(
        enrolled - server_now > 2 * 3600 * 1000,
        "the agent's clock is not ahead ({enrolled} vs {server_now}): libfaketime did not apply"
    );

    report_loss(&server, &device);
    wait_until("the lock to succeed", Duration::from_secs(30), || {
        lock_state(&server, &device) == "succeeded"
    })
    .await;
    assert!(
        marker.exists(),
        "the site lock command ran; agent log:\n{}",
        proc.log()
    );
    let cmds = server.vakt_json(&["commands", "--device", &device]);
    assert_eq!(
        command_of(&cmds, "lock").unwrap()["deliveries"],
        1,
        "run at its first delivery, not after a refusal: {cmds}"
    );
}

/// A hand-held Connect stream with the identity of an enrolled agent, so the test can answer
/// commands as it likes.
struct RawStream {
    tx: mpsc::Sender<pb::AgentMessage>,
    inbound: tonic::Streaming<pb::ServerMessage>,
}

impl RawStream {
    async fn open(agent: &TestAgent) -> Self {
        let state = vakt_agent::state::StateDir::open(&agent.dir.join("state")).unwrap();
        let id = state.identity().unwrap().unwrap();
        let channel = vakt_agent::link::Servers::new(vec![id.server.clone()])
            .connect_as(&id)
            .await
            .unwrap();
        let (tx, rx) = mpsc::channel(8);
        tx.send(pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::Hello(pb::Hello::default())),
        })
        .await
        .unwrap();
        let inbound = AgentServiceClient::new(channel)
            .connect(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        Self { tx, inbound }
    }

    /// The next command pushed, decoded (signature not checked: the agent does that).
    async fn next_command(&mut self) -> pb::Command {
        loop {
            let msg = tokio::time::timeout(Duration::from_secs(20), self.inbound.message())
                .await
                .expect("a command within 20 s")
                .unwrap()
                .expect("the stream stays open");
            if let Some(pb::server_message::Msg::Command(signed)) = msg.msg {
                return prost::Message::decode(signed.command.as_slice()).unwrap();
            }
        }
    }

    async fn answer(&self, id: &str, outcome: pb::CommandOutcome, retry: bool) {
        self.tx
            .send(pb::AgentMessage {
                msg: Some(pb::agent_message::Msg::Result(pb::CommandResult {
                    command_id: id.to_string(),
                    outcome: outcome as i32,
                    detail: if retry {
                        "command expired at 0 ms".into()
                    } else {
                        "done".into()
                    },
                    at_ms: 1,
                    retry,
                })),
            })
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refusal_for_time_is_signed_again_a_bounded_number_of_times() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let agent = TestAgent::new(&tmp.path().join("a"), &server, &server.enroll_token(&[]));
    let out = agent.run_once();
    assert!(out.status.success(), "{}", vakt_tests::stderr(&out));
    let device = agent.device_id();
    let mut stream = RawStream::open(&agent).await;

    // Refused for time once: the same command comes back, signed anew, and then runs.
    report_loss(&server, &device);
    let first = stream.next_command().await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    stream
        .answer(&first.id, pb::CommandOutcome::Refused, true)
        .await;
    let again = stream.next_command().await;
    assert_eq!(again.id, first.id);
    assert!(
        again.issued_at_ms > first.issued_at_ms,
        "signed again, with a new time"
    );
    assert_eq!(lock_state(&server, &device), "delivered");
    stream
        .answer(&again.id, pb::CommandOutcome::Succeeded, false)
        .await;
    wait_until("the lock to succeed", Duration::from_secs(10), || {
        lock_state(&server, &device) == "succeeded"
    })
    .await;

    // An agent that keeps refusing: after a bounded number of signatures the refusal is final.
    let out = server.vakt_ok(&["loss", "recovered", &device]);
    assert!(out.contains("unlock queued"), "{out}");
    let mut rounds = 0;
    loop {
        let cmd = stream.next_command().await;
        stream
            .answer(&cmd.id, pb::CommandOutcome::Refused, true)
            .await;
        rounds += 1;
        assert!(rounds <= 20, "never final");
        // Recorded (and, while not final, signed again) well within this.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let cmds = server.vakt_json(&["commands", "--device", &device]);
        if command_of(&cmds, "unlock").unwrap()["state"] == "refused" {
            break;
        }
    }
    assert_eq!(
        rounds,
        vakt_server::commands::MAX_RESIGNS as usize + 1,
        "signed again {} times, then final",
        vakt_server::commands::MAX_RESIGNS
    );
}

fn generation(server: &TestServer, device: &str) -> u64 {
    server.vakt_json(&["device", "show", device])["command_key_generation"]
        .as_u64()
        .unwrap()
}

fn pinned_key(agent: &TestAgent) -> String {
    agent.identity()["command_public_key"]
        .as_str()
        .unwrap()
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_reaches_connected_and_offline_agents_and_both_still_lock() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let (mark_a, mark_b) = (tmp.path().join("locked-a"), tmp.path().join("locked-b"));
    let a = TestAgent::with_config(
        &tmp.path().join("a"),
        &server,
        &server.enroll_token(&[]),
        &lock_config(&mark_a),
    );
    let b = TestAgent::with_config(
        &tmp.path().join("b"),
        &server,
        &server.enroll_token(&[]),
        &lock_config(&mark_b),
    );
    // B enrolls and goes away; A stays connected.
    let out = b.run_once();
    assert!(out.status.success(), "{}", vakt_tests::stderr(&out));
    let proc_a = a.spawn();
    wait_until("A to connect", Duration::from_secs(30), || {
        server
            .vakt_json(&["devices"])
            .as_array()
            .unwrap()
            .iter()
            .any(|d| d["connected"] == true)
    })
    .await;
    let (dev_a, dev_b) = (a.device_id(), b.device_id());
    let key0 = pinned_key(&a);
    assert_eq!(pinned_key(&b), key0);

    // Two rotations while B is offline.
    let keys = server.vakt_json(&["signing-key", "rotate"]);
    assert_eq!(keys["current"], 1, "{keys}");
    wait_until("A to trust generation 1", Duration::from_secs(15), || {
        generation(&server, &dev_a) == 1
    })
    .await;
    let key1 = pinned_key(&a);
    assert_ne!(key1, key0, "A saved the new key");
    server.vakt_ok(&["signing-key", "rotate"]);
    wait_until("A to trust generation 2", Duration::from_secs(15), || {
        generation(&server, &dev_a) == 2
    })
    .await;
    let key2 = pinned_key(&a);
    assert!(key2 != key1 && key2 != key0);
    let keys = server.vakt_json(&["signing-key", "show"]);
    let devices: Vec<u64> = keys["generations"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["devices"].as_u64().unwrap())
        .collect();
    assert_eq!(devices, vec![1, 0, 1], "B on generation 0, A on 2: {keys}");
    assert_eq!(pinned_key(&b), key0, "B was offline");

    // B's lock is queued while it is away, and it comes back: the chain first (0 → 2 in one
    // step), then the lock signed with the key it trusts by then.
    report_loss(&server, &dev_b);
    let proc_b = b.spawn();
    wait_until("B to trust generation 2", Duration::from_secs(30), || {
        generation(&server, &dev_b) == 2
    })
    .await;
    assert_eq!(pinned_key(&b), key2);
    wait_until("B's lock to succeed", Duration::from_secs(30), || {
        lock_state(&server, &dev_b) == "succeeded"
    })
    .await;
    assert!(mark_b.exists(), "B's log:\n{}", proc_b.log());

    report_loss(&server, &dev_a);
    wait_until("A's lock to succeed", Duration::from_secs(30), || {
        lock_state(&server, &dev_a) == "succeeded"
    })
    .await;
    assert!(mark_a.exists(), "A's log:\n{}", proc_a.log());

    let audit = server.vakt_json(&["audit"]);
    let rotations = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "signing-key.rotate")
        .count();
    assert_eq!(rotations, 2, "{audit}");
    let keys = server.vakt_json(&["signing-key", "show"]);
    assert_eq!(keys["generations"][2]["devices"], 2, "{keys}");

    // A restarted server loads every generation and still signs for the key the agents trust.
    drop(proc_a);
    let mut server = server;
    server.restart();
    let keys = server.vakt_json(&["signing-key", "show"]);
    assert_eq!(keys["current"], 2, "{keys}");
    server.vakt_ok(&["loss", "recovered", &dev_b]);
    let unlocked = || {
        let cmds = server.vakt_json(&["commands", "--device", &dev_b]);
        command_of(&cmds, "unlock").is_some_and(|c| c["state"] == "succeeded")
    };
    for _ in 0..600 {
        if unlocked() {
            assert!(!mark_b.exists(), "the site unlock command ran");
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "B's unlock did not succeed: {}\nB's log:\n{}",
        server.vakt_json(&["commands", "--device", &dev_b]),
        proc_b.log()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rotation_needs_an_admin() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let viewer = server.create_admin_token("viewer", "ville");
    let out = server.vakt_with_token(&viewer, &["signing-key", "rotate"]);
    assert!(!out.status.success());
    assert!(
        vakt_tests::stderr(&out).contains("admin"),
        "{}",
        vakt_tests::stderr(&out)
    );
    let keys = server.vakt_json(&["signing-key", "show"]);
    assert_eq!(keys["current"], 0, "nothing rotated: {keys}");
}
