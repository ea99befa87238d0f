//! Two `vakt-server` replicas on one PostgreSQL database (a private cluster) and a real
//! `vakt-agent` that lists both: what IT does on the replica that does not hold the laptop's
//! stream reaches the laptop through the change feed (a loss report locks it, within a second
//! as a goal; the time is printed), a policy applied on one is the one the other evaluates, and
//! when the holding replica is killed (-9) the laptop moves to the other, every report
//! acknowledged before the kill is in the database, and a two-admin wipe reaches it there.
//! Skips, saying why, only when PostgreSQL is not installed.

#![allow(clippy::unwrap_used)] // a test file: helpers outside #[test] fns may unwrap too

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vakt_proto::pb;
use vakt_tests::load::admin::client;
use vakt_tests::pg::{PgCluster, start_replicas};
use vakt_tests::{TestAgent, TestServer, stderr, wait_until};

fn cluster() -> Option<PgCluster> {
    PgCluster::start()
        .map_err(|why| eprintln!("skipped: {why}"))
        .ok()
}

/// A scratch root for the agent (its own passwd, a home to wipe), never this machine's.
fn scratch_root(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nanna:x:1000:1000:Anna Berg:/home/anna:/bin/bash\n",
    )
    .unwrap();
    std::fs::create_dir_all(root.join("home/anna/Dokument")).unwrap();
    std::fs::write(root.join("home/anna/Dokument/lönelista.ods"), "hemligt").unwrap();
    root
}

/// An agent enrolled through `replicas[0]` that lists every replica; its lock leaves a line in
/// `runs` per run, its wipe removes `/home/anna` under `root`.
fn laptop(dir: &Path, replicas: &[TestServer], runs: &Path, root: &Path) -> TestAgent {
    let extra = format!(
        "root = {root:?}\n[lock]\nmethod = \"command\"\ncommand = [\"sh\", \"-c\", \"echo run >> '{runs}'\"]\n\
         [wipe]\nstrategy = \"paths\"\npaths = [\"/home/anna\"]\npoweroff = false\n",
        root = root.display().to_string(),
        runs = runs.display(),
    );
    let first = &replicas[0];
    let agent = TestAgent::with_config(dir, first, &first.enroll_token(&[]), &extra);
    let list = replicas
        .iter()
        .map(|s| format!("{:?}", s.url()))
        .collect::<Vec<_>>()
        .join(", ");
    let cfg = std::fs::read_to_string(agent.config()).unwrap();
    let cfg: String = cfg
        .lines()
        .map(|l| {
            if l.starts_with("server = ") {
                format!("server = [{list}]\n")
            } else {
                format!("{l}\n")
            }
        })
        .collect();
    std::fs::write(agent.config(), cfg).unwrap();
    agent
}

fn connected(server: &TestServer, device: &str) -> bool {
    server.vakt_json(&["device", "show", device])["connected"] == true
}

fn command_state(server: &TestServer, device: &str, kind: &str) -> Value {
    let cmds = server.vakt_json(&["commands", "--device", device]);
    cmds.as_array()
        .and_then(|a| a.iter().rev().find(|c| c["kind"] == kind).cloned())
        .map_or(Value::Null, |c| c["state"].clone())
}

fn runs(path: &Path) -> usize {
    std::fs::read_to_string(path).map_or(0, |s| s.lines().count())
}

/// Waits until one of `replicas` holds the laptop's stream; (holder, other) indexes.
async fn held(replicas: &[TestServer], device: &str) -> (usize, usize) {
    wait_until(
        "the agent to hold a stream on a replica",
        Duration::from_secs(60),
        || replicas.iter().any(|r| connected(r, device)),
    )
    .await;
    if connected(&replicas[0], device) {
        (0, 1)
    } else {
        (1, 0)
    }
}

/// Reports a loss on `other` and waits for the laptop's lock to run; how long it took.
async fn lock_through(other: &TestServer, device: &str, runs_file: &Path) -> Duration {
    let before = runs(runs_file);
    let began = Instant::now();
    other.vakt_ok(&["loss", "report", device]);
    // Without the change feed the lock waits in the queue until the laptop next connects,
    // which a held stream never does by itself: this times out.
    wait_until(
        "the lock queued on the other replica to run on the laptop",
        Duration::from_secs(20),
        || runs(runs_file) > before,
    )
    .await;
    began.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loss_reported_on_the_other_replica_locks_the_laptop_and_policy_follows() {
    let Some(pg) = cluster() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let replicas = start_replicas(&pg, "vakt", tmp.path(), 2);
    let runs_file = tmp.path().join("lock-runs");
    let root = scratch_root(tmp.path());
    let agent = laptop(&tmp.path().join("agent"), &replicas, &runs_file, &root);
    let out = agent.run_once();
    assert!(out.status.success(), "agent: {}", stderr(&out));
    let device = agent.device_id();
    let proc = agent.spawn();
    let (holder, other) = held(&replicas, &device).await;
    assert!(!connected(&replicas[other], &device));

    let took = lock_through(&replicas[other], &device, &runs_file).await;
    println!("loss reported on the other replica → lock ran on the laptop: {took:?}");
    assert!(
        took < Duration::from_secs(5),
        "the lock took {took:?} (goal: a second); agent log:\n{}",
        proc.log()
    );
    wait_until(
        "the lock's result to be recorded",
        Duration::from_secs(20),
        || command_state(&replicas[other], &device, "lock") == "succeeded",
    )
    .await;
    assert_eq!(runs(&runs_file), 1, "the lock ran once");
    assert_eq!(
        replicas[holder].vakt_json(&["device", "show", &device])["state"],
        "locked"
    );

    // A policy applied on one replica is the one in force on the other.
    let before = replicas[holder].vakt_json(&["policy", "show"]);
    assert_eq!(before["version"], 0, "{before}");
    let pack = tmp.path().join("pack.toml");
    std::fs::write(
        &pack,
        replicas[other].vakt_ok(&["policy", "show", "--toml"]),
    )
    .unwrap();
    replicas[other].vakt_ok(&["policy", "apply", pack.to_str().unwrap()]);
    wait_until(
        "the policy applied on the other replica to be in force on the holder",
        Duration::from_secs(10),
        || replicas[holder].vakt_json(&["policy", "show"])["version"] == 1,
    )
    .await;
    let shown = replicas[holder].vakt_json(&["policy", "show"]);
    assert_eq!(shown, replicas[other].vakt_json(&["policy", "show"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_holding_replica_moves_the_laptop_and_loses_nothing() {
    let Some(pg) = cluster() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut replicas = start_replicas(&pg, "vakt", tmp.path(), 2);
    let runs_file = tmp.path().join("lock-runs");
    let root = scratch_root(tmp.path());
    let agent = laptop(&tmp.path().join("agent"), &replicas, &runs_file, &root);
    let device = {
        let out = agent.run_once();
        assert!(out.status.success(), "agent: {}", stderr(&out));
        agent.device_id()
    };
    let proc = agent.spawn();
    let (holder, other) = held(&replicas, &device).await;
    // The held laptop is locked from the other replica (the change feed), and reports again
    // meanwhile (every 10 s) to the replica that holds it.
    let took = lock_through(&replicas[other], &device, &runs_file).await;
    println!("lock across replicas before the kill: {took:?}");
    let report = || -> u64 {
        let s: Value = serde_json::from_str(&agent.state_file("report.json")).unwrap();
        s["sequence"].as_u64().unwrap()
    };
    let first = report();
    wait_until(
        "a report acknowledged by the holding replica",
        Duration::from_secs(40),
        || report() > first,
    )
    .await;

    // kill -9 the holder: what the agent saw acknowledged must be in the database.
    let acknowledged = report();
    replicas[holder].kill();
    let survivor = &replicas[other];
    let stored = survivor.vakt_json(&["device", "show", &device])["last_report_sequence"]
        .as_u64()
        .unwrap();
    assert!(
        stored >= acknowledged,
        "acknowledged sequence {acknowledged}, stored {stored}"
    );
    wait_until(
        "the laptop to move to the surviving replica",
        Duration::from_secs(60),
        || connected(survivor, &device),
    )
    .await;
    assert!(proc.log().contains("moved to another"), "{}", proc.log());

    // A two-admin wipe on the survivor reaches it.
    let second = survivor.create_admin_token("admin", "it-chef");
    let out = survivor.vakt(&["wipe", "request", &device, "--reason", "stulen"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let wipe_id = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let out = survivor.vakt_with_token(&second, &["wipe", "approve", &wipe_id]);
    assert!(out.status.success(), "{}", stderr(&out));
    wait_until("the wipe to succeed", Duration::from_secs(30), || {
        command_state(survivor, &device, "wipe") == "succeeded"
    })
    .await;
    assert!(!root.join("home/anna").exists(), "{}", proc.log());
    assert_eq!(
        runs(&runs_file),
        1,
        "the lock ran once, not again after the move"
    );
}

/// Two admins approve one wipe at the same moment, each on another replica: exactly one
/// approval counts, the other is refused as no longer awaiting approval (whether it read the
/// command before or after the winner wrote it), the command names the winner, the audit log
/// holds one approval per wipe and its chain still verifies on either replica. The approvals
/// go out together from connected clients (separate `vakt` processes start milliseconds apart
/// and never met in the handler); checked: with the check inside the approving transaction
/// removed, both approvals counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_admins_approving_one_wipe_on_two_replicas_at_once_approve_it_once() {
    let Some(pg) = cluster() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let replicas = start_replicas(&pg, "vakt", tmp.path(), 2);
    let root = scratch_root(tmp.path());
    let agent = laptop(
        &tmp.path().join("agent"),
        &replicas,
        &tmp.path().join("runs"),
        &root,
    );
    let out = agent.run_once();
    assert!(out.status.success(), "agent: {}", stderr(&out));
    let device = agent.device_id();
    let names = ["it-chef", "it-stf"];
    let tokens = names.map(|n| replicas[0].create_admin_token("admin", n));
    // A further admin token awaits a second admin's approval: it-chef gives it.
    let listed = replicas[0].vakt_json(&["admin-token", "list"]);
    let stf = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == names[1])
        .unwrap();
    if stf["state"] == "awaiting-approval" {
        let id = stf["id"].as_str().unwrap();
        let out = replicas[0].vakt_with_token(&tokens[0], &["admin-token", "approve", id]);
        assert!(out.status.success(), "{}", stderr(&out));
    }
    let mut approvers = Vec::new();
    for (r, token) in replicas.iter().zip(&tokens) {
        approvers.push(client(&r.url(), &r.ca_pem(), token).await.unwrap());
    }
    const ROUNDS: usize = 6;
    for round in 0..ROUNDS {
        let out = replicas[0].vakt(&["wipe", "request", &device, "--reason", "stulen på tåget"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let id = String::from_utf8(out.stdout).unwrap().trim().to_string();
        let approve = |i: usize| {
            let mut c = approvers[i].clone();
            let command_id = id.clone();
            async move {
                c.approve_wipe(pb::ApproveWipeRequest { command_id })
                    .await
                    .map(|_| ())
            }
        };
        let (a, b) = tokio::join!(approve(0), approve(1));
        let outcomes = [a, b];
        let won: Vec<usize> = (0..2).filter(|&i| outcomes[i].is_ok()).collect();
        assert_eq!(won.len(), 1, "round {round}: exactly one approval counts");
        let lost = outcomes[1 - won[0]].as_ref().unwrap_err();
        assert_eq!(lost.code(), tonic::Code::FailedPrecondition, "{lost:?}");
        assert!(
            lost.message().contains("not awaiting approval")
                || lost.message().contains("no longer awaiting approval"),
            "round {round}: the other is told why: {lost:?}"
        );
        let cmds = replicas[1].vakt_json(&["commands", "--device", &device]);
        let cmd = cmds
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["id"] == id.as_str())
            .unwrap()
            .clone();
        assert!(
            cmd["approved_by"].as_str().unwrap().contains(names[won[0]]),
            "round {round}: {cmd}"
        );
        assert_eq!(cmd["state"], "pending", "round {round}: {cmd}");
    }
    let audit = replicas[1].vakt_json(&["audit"]);
    let approvals = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "wipe.approve")
        .count();
    assert_eq!(approvals, ROUNDS, "one approval audited per wipe");
    for r in &replicas {
        r.vakt_ok(&["audit", "verify"]);
    }
}
