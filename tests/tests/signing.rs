//! Signed commands against time and key compromise, end to end with real servers and agents:
//! an agent whose clock runs hours ahead still runs a valid lock (it judges expiry by the
//! server's clock as carried in its stream); a refusal for time is answered by signing again,
//! a bounded number of times; `vakt signing-key rotate` reaches a connected and an offline
//! agent (through two rotations at once), after which both still lock; and `vakt signing-key
//! retire` destroys old private keys without stranding anyone for good (both engines).

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use vakt_proto::pb;
use vakt_proto::pb::agent_service_client::AgentServiceClient;
use vakt_tests::{TestAgent, TestServer, on_both_engines, tools_required, wait_until};

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

/// Waits for `device`'s lock to succeed and checks that the site lock command left its mark.
async fn lock_runs(
    server: &TestServer,
    who: &str,
    device: &str,
    mark: &Path,
    agent: &vakt_tests::AgentProcess,
) {
    wait_until(
        &format!("{who}'s lock to succeed"),
        Duration::from_secs(30),
        || lock_state(server, device) == "succeeded",
    )
    .await;
    assert!(mark.exists(), "{who}'s log:\n{}", agent.log());
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
    lock_runs(&server, "B", &dev_b, &mark_b, &proc_b).await;

    report_loss(&server, &dev_a);
    lock_runs(&server, "A", &dev_a, &mark_a, &proc_a).await;

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

/// Messages on a raw stream for `within`: the key chains and signed commands the server sent.
async fn drain(
    raw: &mut RawStream,
    within: Duration,
) -> (Vec<pb::KeyRolloverChain>, Vec<pb::SignedCommand>) {
    let (mut chains, mut commands) = (Vec::new(), Vec::new());
    let until = tokio::time::Instant::now() + within;
    while let Ok(msg) = tokio::time::timeout_at(until, raw.inbound.message()).await {
        match msg.unwrap().expect("the stream stays open").msg {
            Some(pb::server_message::Msg::KeyRollover(c)) => chains.push(c),
            Some(pb::server_message::Msg::Command(c)) => commands.push(c),
            _ => {}
        }
    }
    (chains, commands)
}

on_both_engines!(async fn retiring_old_keys_refuses_while_devices_trust_them_and_forced_they_catch_up);

/// `vakt signing-key retire`: refused for the current or a missing generation and while a
/// device still trusts one being retired (naming it); forced, it destroys the old private key
/// on the engine's own storage, says which devices now wait, and those devices still catch up:
/// a queued lock is not signed with the retired key (it waits for the device's
/// acknowledgement of the current one), and an agent that was offline follows the chain from
/// its retired key and runs its lock. The retirement survives a restart.
async fn retiring_old_keys_refuses_while_devices_trust_them_and_forced_they_catch_up(
    engine: vakt_tests::Engine,
) {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let mut server = engine.server(&data);
    let (mark_a, mark_b) = (tmp.path().join("locked-a"), tmp.path().join("locked-b"));
    let agent = |name: &str, mark: &Path| {
        TestAgent::with_config(
            &tmp.path().join(name),
            &server,
            &server.enroll_token(&[]),
            &lock_config(mark),
        )
    };
    let (a, b) = (agent("a", &mark_a), agent("b", &mark_b));
    let c = agent("c", &tmp.path().join("locked-c"));
    // B and C enroll and go away; A stays connected.
    for offline in [&b, &c] {
        let out = offline.run_once();
        assert!(out.status.success(), "{}", vakt_tests::stderr(&out));
    }
    let proc_a = a.spawn();
    wait_until("A to enroll", Duration::from_secs(30), || {
        a.dir.join("state/identity.json").exists()
    })
    .await;
    let (dev_a, dev_b, dev_c) = (a.device_id(), b.device_id(), c.device_id());
    wait_until("A to connect", Duration::from_secs(30), || {
        server.vakt_json(&["device", "show", &dev_a])["connected"] == true
    })
    .await;
    server.vakt_ok(&["signing-key", "rotate"]);
    wait_until("A to trust generation 1", Duration::from_secs(15), || {
        generation(&server, &dev_a) == 1
    })
    .await;

    // Bad input changes nothing.
    let refused = |args: &[&str], why: &str| {
        let out = server.vakt(args);
        let err = vakt_tests::stderr(&out);
        assert!(
            !out.status.success() && err.contains(why),
            "{args:?}: {err}"
        );
    };
    refused(
        &["signing-key", "retire", "--through", "1"],
        "generation 1 is the current key",
    );
    refused(
        &["signing-key", "retire", "--through", "5"],
        "there is no generation 5: the newest is 1",
    );
    let viewer = server.create_admin_token("viewer", "ville");
    let out = server.vakt_with_token(&viewer, &["signing-key", "retire", "--through", "0"]);
    assert!(!out.status.success(), "a viewer cannot retire keys");
    // B and C still trust generation 0: refused, naming how many and which.
    let host_b = server.vakt_json(&["device", "show", &dev_b])["hostname"]
        .as_str()
        .unwrap()
        .to_string();
    refused(
        &["signing-key", "retire", "--through", "0"],
        "2 device(s) still trust generation 0 or older",
    );
    refused(
        &["signing-key", "retire", "--through", "0"],
        &format!("{host_b} (generation 0)"),
    );
    let keys = server.vakt_json(&["signing-key", "show"]);
    assert_eq!(keys["generations"][0]["retired"], false, "{keys}");
    assert_eq!(keys["generations"][0]["retired_at"], Value::Null, "{keys}");

    // Forced: generation 0's private key is gone from the engine's storage.
    let r = server.vakt_json(&["signing-key", "retire", "--through", "0", "--force"]);
    assert_eq!(r["retired_now"], serde_json::json!([0]), "{r}");
    let stranded: Vec<&str> = r["stranded"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["device_id"].as_str().unwrap())
        .collect();
    assert!(
        stranded.len() == 2
            && stranded.contains(&dev_b.as_str())
            && stranded.contains(&dev_c.as_str()),
        "{r}"
    );
    let keys = server.vakt_json(&["signing-key", "show"]);
    assert_eq!(keys["current"], 1, "{keys}");
    assert_eq!(keys["generations"][0]["retired"], true, "{keys}");
    assert!(keys["generations"][0]["retired_at"].is_string(), "{keys}");
    assert_eq!(keys["generations"][1]["retired"], false, "{keys}");
    assert_eq!(keys["generations"][0]["devices"], 2, "B and C: {keys}");
    match &engine {
        vakt_tests::Engine::Sled => {
            assert!(!data.join("command.key").exists());
            let retired = std::fs::read_to_string(data.join("command-key.0.retired.pem")).unwrap();
            assert!(!retired.contains("PRIVATE KEY"), "{retired}");
        }
        vakt_tests::Engine::Postgres {
            cluster, database, ..
        } => {
            let names = cluster.sql(
                database,
                "SELECT string_agg(convert_from(key, 'UTF8'), ',' ORDER BY key) FROM vakt_kv \
                 WHERE tree = 'secrets' AND convert_from(key, 'UTF8') LIKE '%command-key%'",
            );
            assert_eq!(
                names, "command-key.0000000001,retired-command-key.0000000000",
                "generation 0's sealed private key is removed"
            );
        }
    }
    let audit = server.vakt_json(&["audit"]);
    let of = |action: &str| -> Vec<Value> {
        let all = audit.as_array().unwrap().iter();
        all.filter(|e| e["action"] == action).cloned().collect()
    };
    assert_eq!(of("signing-key.retire").len(), 1, "{audit}");
    // The two refusals for stranded devices are audited too, naming them; the refusals for
    // bad input (a generation that is current or missing) changed nothing worth recording.
    let refusals = of("signing-key.retire-refused");
    assert_eq!(refusals.len(), 2, "{audit}");
    assert!(
        refusals
            .iter()
            .all(|e| e["detail"].as_str().unwrap().contains(&host_b)),
        "{audit}"
    );

    // C connects trusting only the retired key and is handed the chain. A lock queued for it
    // before it answers is not signed with the retired key: it waits, and once C acknowledges
    // generation 1 the lock comes signed with generation 1.
    let mut raw = RawStream::open(&c).await;
    let (chains, _) = drain(&mut raw, Duration::from_secs(2)).await;
    report_loss(&server, &dev_c);
    let (_, commands) = drain(&mut raw, Duration::from_secs(3)).await;
    assert!(commands.is_empty(), "nothing signed with the retired key");
    assert_eq!(lock_state(&server, &dev_c), "pending");
    let chain = chains.first().expect("C is handed the chain");
    // Followed as the agent does, from C's pinned (now retired) key.
    let key0 = vakt_agent::act::verify::unhex(&pinned_key(&c)).unwrap();
    let key1 = vakt_agent::act::verify::follow_chain(chain, &key0).unwrap();
    assert_ne!(key1, key0);
    raw.tx
        .send(pb::AgentMessage {
            msg: Some(pb::agent_message::Msg::KeyRolloverResult(
                pb::KeyRolloverResult {
                    public_key: key1.clone(),
                    error: String::new(),
                },
            )),
        })
        .await
        .unwrap();
    let (_, commands) = drain(&mut raw, Duration::from_secs(5)).await;
    let signed = commands
        .first()
        .expect("the lock, once C trusts generation 1");
    let key1_hex: String = key1.iter().map(|b| format!("{b:02x}")).collect();
    let lock = vakt_agent::act::verify::verify(signed, &key1_hex, &dev_c, 0)
        .expect("signed with generation 1");
    assert_eq!(lock.kind, pb::CommandKind::Lock as i32);
    assert_eq!(generation(&server, &dev_c), 1);
    drop(raw);

    // B comes back: it follows the chain from its retired key and runs its lock.
    report_loss(&server, &dev_b);
    let proc_b = b.spawn();
    wait_until("B to trust generation 1", Duration::from_secs(30), || {
        generation(&server, &dev_b) == 1
    })
    .await;
    lock_runs(&server, "B", &dev_b, &mark_b, &proc_b).await;
    report_loss(&server, &dev_a);
    lock_runs(&server, "A", &dev_a, &mark_a, &proc_a).await;

    // Nobody trusts generation 0 any more; a restarted server loads the retired generation
    // and the chain, and retiring it again is a no-op.
    drop(proc_a);
    drop(proc_b);
    server.restart();
    let keys = server.vakt_json(&["signing-key", "show"]);
    assert_eq!(keys["current"], 1, "{keys}");
    assert_eq!(keys["generations"][0]["retired"], true, "{keys}");
    assert_eq!(keys["generations"][1]["devices"], 3, "{keys}");
    let r = server.vakt_json(&["signing-key", "retire", "--through", "0"]);
    assert_eq!(r["retired_now"], serde_json::json!([]), "{r}");
    assert_eq!(r["stranded"], serde_json::json!([]), "{r}");
    let text = server.vakt_ok(&["signing-key", "show"]);
    assert!(text.contains("(retired 20"), "{text}");
    let text = server.vakt_ok(&["signing-key", "retire", "--through", "0"]);
    assert!(text.contains("nothing to retire"), "{text}");
}
