//! Device identity end to end: hardware ids never move a device that still holds a valid
//! certificate, an admin can allow a re-enrollment or retire a device, device certificates
//! renew themselves, an expired one is said plainly and re-enrolled with the token, and the
//! server's own certificate is reissued in the running server.

#![allow(clippy::unwrap_used)]

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vakt_proto::pb;
use vakt_proto::pb::agent_service_client::AgentServiceClient;
use vakt_tests::{SmtpSink, TestAgent, TestServer, bin, laptop_root, stderr, wait_until};

/// A laptop tree whose /etc/machine-id and DMI serial are the given ones.
fn laptop(dir: &Path, machine_id: &str, serial: &str) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let root = laptop_root(dir, &["anna"]);
    std::fs::write(root.join("etc/machine-id"), format!("{machine_id}\n")).unwrap();
    let dmi = root.join("sys/class/dmi/id");
    std::fs::create_dir_all(&dmi).unwrap();
    std::fs::write(dmi.join("product_serial"), format!("{serial}\n")).unwrap();
    std::fs::write(dmi.join("product_name"), "ThinkPad T14\n").unwrap();
    root
}

/// An agent on `root` reporting every `interval`, whose lock leaves a line in `lock-runs`.
fn agent_on(
    dir: &Path,
    server: &TestServer,
    token: &str,
    root: &Path,
    interval: &str,
) -> TestAgent {
    let runs = dir.join("lock-runs");
    let extra = format!(
        "root = {:?}\n[lock]\nmethod = \"command\"\ncommand = [\"sh\", \"-c\", \"echo run >> '{}'\"]\n",
        root.display().to_string(),
        runs.display()
    );
    let a = TestAgent::with_config(dir, server, token, &extra);
    let cfg = std::fs::read_to_string(a.config()).unwrap();
    std::fs::write(
        a.config(),
        cfg.replace(
            "report_interval = \"10s\"",
            &format!("report_interval = \"{interval}\""),
        ),
    )
    .unwrap();
    a
}

fn device<'a>(devices: &'a Value, id: &str) -> &'a Value {
    devices
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == id)
        .unwrap_or_else(|| panic!("no device {id} in {devices}"))
}

fn sequence(server: &TestServer, id: &str) -> u64 {
    device(&server.vakt_json(&["devices"]), id)["last_report_sequence"]
        .as_u64()
        .unwrap_or(0)
}

fn lock_state(server: &TestServer, id: &str) -> String {
    let cmds = server.vakt_json(&["commands", "--device", id]);
    cmds.as_array()
        .and_then(|a| a.iter().rev().find(|c| c["kind"] == "lock"))
        .and_then(|c| c["state"].as_str())
        .unwrap_or("")
        .to_string()
}

fn lock_runs(agent: &TestAgent) -> usize {
    std::fs::read_to_string(agent.dir.join("lock-runs"))
        .map(|s| s.lines().count())
        .unwrap_or(0)
}

/// A Report with the given client certificate: the server's answer.
async fn report_with(server: &TestServer, cert: &str, key: &str) -> Result<(), String> {
    let ch = vakt_agent::link::connect(&server.url(), &server.ca_pem(), Some((cert, key)))
        .await
        .map_err(|e| e.to_string())?;
    AgentServiceClient::new(ch)
        .report(pb::ReportRequest {
            sequence: 1,
            ..Default::default()
        })
        .await
        .map(|_| ())
        .map_err(|s| format!("{:?}: {}", s.code(), s.message()))
}

fn credentials(agent: &TestAgent) -> (String, String) {
    (agent.state_file("cert.pem"), agent.state_file("key.pem"))
}

fn audit_actions(server: &TestServer) -> Vec<(String, String, String)> {
    server
        .vakt_json(&["audit"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["actor"].as_str().unwrap().to_string(),
                e["action"].as_str().unwrap().to_string(),
                e["target"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_agent_with_the_same_hardware_is_a_new_device_and_never_disturbs_the_first() {
    let tmp = tempfile::tempdir().unwrap();
    let smtp = SmtpSink::start().ok();
    let mut flags = vec!["--it-mail".to_string(), "it@sorsele.se".to_string()];
    if let Some(s) = &smtp {
        flags.extend(["--smtp".to_string(), s.url()]);
    }
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    let server = TestServer::start_with(&tmp.path().join("server"), "127.0.0.1:0", &flags);
    let token = server.enroll_token(&["--uses", "2"]);
    let real = agent_on(
        &tmp.path().join("real"),
        &server,
        &token,
        &laptop(
            &tmp.path().join("real-laptop"),
            "0123456789abcdef0123456789abcdef",
            "PF-12345",
        ),
        "10s",
    );
    let _real_proc = real.spawn();
    wait_until(
        "the real laptop to connect",
        Duration::from_secs(60),
        || server.vakt_json(&["devices"])[0]["connected"] == true,
    )
    .await;
    let real_id = real.device_id();

    // The impostor (or a cloned image) claims the same machine id and serial.
    let clone = agent_on(
        &tmp.path().join("clone"),
        &server,
        &token,
        &laptop(
            &tmp.path().join("clone-laptop"),
            "0123456789abcdef0123456789abcdef",
            "PF-12345",
        ),
        "10s",
    );
    let clone_proc = clone.spawn();
    wait_until("the clone to enroll", Duration::from_secs(60), || {
        clone.dir.join("state/identity.json").exists()
    })
    .await;
    let clone_id = clone.device_id();
    assert_ne!(clone_id, real_id, "same hardware ids, yet a new device");

    let devices = server.vakt_json(&["devices"]);
    assert_eq!(devices.as_array().unwrap().len(), 2, "{devices}");
    assert_eq!(
        device(&devices, &real_id)["shares_hardware_with"],
        serde_json::json!([clone_id])
    );
    assert_eq!(
        device(&devices, &clone_id)["shares_hardware_with"],
        serde_json::json!([real_id])
    );
    let shown = server.vakt_json(&["device", "show", &real_id]);
    assert_eq!(shown["shares_hardware_with"], serde_json::json!([clone_id]));
    let table = server.vakt_ok(&["devices"]);
    assert!(table.contains("shares hardware with"), "{table}");
    assert!(
        audit_actions(&server).contains(&(
            "system".into(),
            "device.shared-hardware".into(),
            clone_id.clone()
        )),
        "IT is told in the audit log"
    );

    // Both keep reporting.
    let (real_seq, clone_seq) = (sequence(&server, &real_id), sequence(&server, &clone_id));
    wait_until("both to keep reporting", Duration::from_secs(60), || {
        sequence(&server, &real_id) >= real_seq + 2 && sequence(&server, &clone_id) >= clone_seq + 2
    })
    .await;
    assert!(
        !real.dir.join("agent.log").exists()
            || !std::fs::read_to_string(real.dir.join("agent.log"))
                .unwrap()
                .contains("revoked"),
        "the real laptop was never refused"
    );

    // The real laptop, not the clone, receives its lock.
    server.vakt_ok(&["loss", "report", &real_id]);
    wait_until("the lock to succeed", Duration::from_secs(60), || {
        lock_state(&server, &real_id) == "succeeded"
    })
    .await;
    assert_eq!(lock_runs(&real), 1, "the real laptop locked");
    assert_eq!(lock_runs(&clone), 0, "the clone received nothing");
    drop(clone_proc);

    if let Some(s) = smtp {
        wait_until("IT's mail", Duration::from_secs(60), || {
            s.messages()
                .iter()
                .any(|m| m.contains("it@sorsele.se") && m.contains(&clone_id))
        })
        .await;
    }
}

#[test]
fn reenroll_lets_the_same_hardware_take_the_device_over_once_and_retire_refuses_the_agent() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let token = server.enroll_token(&["--uses", "10"]);
    let hw = |n: &str| {
        laptop(
            &tmp.path().join(n),
            "feedfacefeedfacefeedfacefeedface",
            "SN-77",
        )
    };
    let first = agent_on(&tmp.path().join("first"), &server, &token, &hw("l1"), "10s");
    assert!(first.run_once().status.success());
    let id = first.device_id();

    // Without an admin's word, the reinstalled laptop is a new device.
    let unasked = agent_on(
        &tmp.path().join("unasked"),
        &server,
        &token,
        &hw("l2"),
        "10s",
    );
    assert!(unasked.run_once().status.success());
    assert_ne!(unasked.device_id(), id);
    let out = first.run_once();
    assert!(
        out.status.success(),
        "the first is untouched: {}",
        stderr(&out)
    );

    // With it, the next enrollment of that hardware takes the device over...
    let out = server.vakt_ok(&["device", "reenroll", &id]);
    assert!(out.contains("24 hours"), "{out}");
    assert!(
        audit_actions(&server)
            .iter()
            .any(|(a, act, t)| a.starts_with("token:") && act == "device.reenroll" && *t == id)
    );
    let reinstalled = agent_on(
        &tmp.path().join("reinstalled"),
        &server,
        &token,
        &hw("l3"),
        "10s",
    );
    let out = reinstalled.run_once();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(reinstalled.device_id(), id, "the device taken over");
    let out = first.run_once();
    assert!(!out.status.success(), "the old certificate is revoked");
    assert!(stderr(&out).contains("replaced"), "{}", stderr(&out));
    // ...once.
    let again = agent_on(&tmp.path().join("again"), &server, &token, &hw("l4"), "10s");
    assert!(again.run_once().status.success());
    assert_ne!(again.device_id(), id, "the allowance is used up");
    assert!(reinstalled.run_once().status.success());

    // Retire: the agent's calls are refused, clearly.
    let out = server.vakt_ok(&["device", "retire", &id]);
    assert!(out.contains("retired"), "{out}");
    assert_eq!(
        server.vakt_json(&["device", "show", &id])["state"],
        "retired"
    );
    let out = reinstalled.run_once();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("retired by IT"), "{err}");
    assert!(
        audit_actions(&server)
            .iter()
            .any(|(_, act, t)| act == "device.retire" && *t == id)
    );

    // Both commands need the admin role.
    let operator = server.create_admin_token("operator", "olle");
    for cmd in ["reenroll", "retire"] {
        let out = server.vakt_with_token(&operator, &["device", cmd, &again.device_id()]);
        assert!(!out.status.success(), "{cmd} needs admin");
        assert!(stderr(&out).contains("admin role"), "{}", stderr(&out));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renewal_keeps_an_agent_reporting_past_its_first_certificates_expiry() {
    let tmp = tempfile::tempdir().unwrap();
    // Shorter than a minute is refused, clearly, before anything is created.
    let out = std::process::Command::new(bin("vakt-server"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--device-cert-lifetime",
            "30s",
            "--data",
        ])
        .arg(tmp.path().join("refused"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("--device-cert-lifetime: a certificate lifetime must be at least 1m"),
        "{}",
        stderr(&out)
    );
    assert!(!tmp.path().join("refused").exists());
    let server = TestServer::start_with(
        &tmp.path().join("server"),
        "127.0.0.1:0",
        &["--device-cert-lifetime", "60s"],
    );
    let root = laptop(
        &tmp.path().join("laptop"),
        "aa11aa11aa11aa11aa11aa11aa11aa11",
        "R-1",
    );
    let agent = agent_on(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
        &root,
        "10s",
    );
    let proc = agent.spawn();
    wait_until("the agent to enroll", Duration::from_secs(60), || {
        agent.dir.join("state/identity.json").exists()
    })
    .await;
    let id = agent.device_id();
    let (cert0, key0) = credentials(&agent);
    let (_, expiry0) = vakt_agent::renew::validity(&cert0).unwrap();
    let expires0 = device(&server.vakt_json(&["devices"]), &id)["cert_expires_at"].clone();

    wait_until(
        "the certificate to be renewed",
        Duration::from_secs(90),
        || agent.state_file("cert.pem") != cert0,
    )
    .await;
    // Once the new certificate is in use, the old one is refused (before it even expires).
    let mut refusal = String::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        match report_with(&server, &cert0, &key0).await {
            Ok(()) => tokio::time::sleep(Duration::from_millis(500)).await,
            Err(e) => {
                refusal = e;
                break;
            }
        }
    }
    assert!(
        refusal.contains("Unauthenticated") && refusal.contains("replaced")
            || vakt_agent::link::now_ms() >= expiry0,
        "the old certificate is refused: {refusal:?}"
    );

    // Past the first certificate's expiry the agent still reports.
    let wait = expiry0 - vakt_agent::link::now_ms() + 2_000;
    if wait > 0 {
        tokio::time::sleep(Duration::from_millis(wait.unsigned_abs())).await;
    }
    let seq = sequence(&server, &id);
    wait_until(
        "reports past the first expiry",
        Duration::from_secs(60),
        || sequence(&server, &id) >= seq + 2,
    )
    .await;
    assert_eq!(
        agent.device_id(),
        id,
        "the same device, renewed, not re-enrolled"
    );
    let d = device(&server.vakt_json(&["devices"]), &id).clone();
    assert_ne!(
        d["cert_expires_at"], expires0,
        "the server recorded the new expiry"
    );
    // Each renewal (every ~40 s at this lifetime) drops the stream and brings it back on the
    // new certificate, so "connected" is waited for, not sampled once (it flaked under load).
    wait_until(
        "the stream to be back on the new certificate",
        Duration::from_secs(30),
        || device(&server.vakt_json(&["devices"]), &id)["connected"] == true,
    )
    .await;
    assert!(
        proc.log().contains("device certificate renewed"),
        "{}",
        proc.log()
    );
    let err = report_with(&server, &cert0, &key0).await.unwrap_err();
    assert!(!err.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_refuses_a_malformed_csr_and_a_revoked_certificate_and_changes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let root = laptop(
        &tmp.path().join("laptop"),
        "bb22bb22bb22bb22bb22bb22bb22bb22",
        "R-2",
    );
    let agent = agent_on(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
        &root,
        "10s",
    );
    assert!(agent.run_once().status.success());
    let id = agent.device_id();
    let (cert, key) = credentials(&agent);
    let before = server.vakt_json(&["device", "show", &id])["cert_expires_at"].clone();
    let renew = |csr_der: Vec<u8>| {
        let (url, ca, cert, key) = (server.url(), server.ca_pem(), cert.clone(), key.clone());
        async move {
            let ch = vakt_agent::link::connect(&url, &ca, Some((&cert, &key)))
                .await
                .unwrap();
            AgentServiceClient::new(ch)
                .renew(pb::RenewRequest { csr_der })
                .await
        }
    };
    for (bad, says) in [
        (
            b"not a CSR at all".to_vec(),
            "certificate signing request is not valid",
        ),
        (Vec::new(), "needs a certificate signing request"),
    ] {
        let err = renew(bad).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
        assert!(err.message().contains(says), "{}", err.message());
    }
    // Nothing changed: the same certificate works, the record's expiry is the same.
    assert_eq!(
        server.vakt_json(&["device", "show", &id])["cert_expires_at"],
        before
    );
    report_with(&server, &cert, &key).await.unwrap();

    // A good renewal is issued for this device whatever the CSR's subject says.
    let (_, csr) = vakt_agent::link::key_and_csr("dev-someone-else").unwrap();
    let resp = renew(csr.clone()).await.unwrap().into_inner();
    let (_, pem) = x509_parser::pem::parse_x509_pem(resp.certificate_pem.as_bytes()).unwrap();
    let cn = pem.parse_x509().unwrap().subject().to_string();
    assert!(cn.contains(&id) && !cn.contains("someone-else"), "{cn}");
    // The pending certificate does not revoke the current one.
    report_with(&server, &cert, &key).await.unwrap();

    // A revoked (retired) certificate cannot renew.
    server.vakt_ok(&["device", "retire", &id]);
    let err = renew(csr).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
    assert!(err.message().contains("retired"), "{}", err.message());
    assert_eq!(
        server.vakt_json(&["device", "show", &id])["state"],
        "retired"
    );
    assert!(report_with(&server, &cert, &key).await.is_err());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_reported_clearly_and_reenrolled_with_the_token() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(
        &tmp.path().join("server"),
        "127.0.0.1:0",
        &["--device-cert-lifetime", "60s"],
    );
    let root = laptop(
        &tmp.path().join("laptop"),
        "cc33cc33cc33cc33cc33cc33cc33cc33",
        "R-3",
    );
    let agent = agent_on(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
        &root,
        "10s",
    );
    assert!(agent.run_once().status.success());
    let id = agent.device_id();
    let (_, expiry) = vakt_agent::renew::validity(&agent.state_file("cert.pem")).unwrap();

    // The agent is off until its certificate has expired.
    let wait = expiry - vakt_agent::link::now_ms() + 1_000;
    tokio::time::sleep(Duration::from_millis(wait.max(0).unsigned_abs())).await;
    let status = std::process::Command::new(bin("vakt-agent"))
        .args(["status", "--config"])
        .arg(agent.config())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout).to_string();
    assert!(
        text.contains("the device certificate expired at")
            && text.contains("re-enroll with a token"),
        "{text}"
    );
    // Without a token it says so and stops.
    let out = agent.run_once();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("the device certificate expired at"),
        "{}",
        stderr(&out)
    );
    // With one, it re-enrolls and takes its own record over (its certificate expired).
    std::fs::write(agent.dir.join("enroll.token"), server.enroll_token(&[])).unwrap();
    let out = agent.run_once();
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(agent.device_id(), id);
    assert_eq!(server.vakt_json(&["devices"]).as_array().unwrap().len(), 1);
    assert!(
        audit_actions(&server)
            .iter()
            .any(|(_, act, t)| act == "device.reenroll-take-over" && *t == id)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_certificate_is_reissued_in_the_running_server() {
    let tmp = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let server = TestServer::start_with(
        &tmp.path().join("server"),
        "127.0.0.1:0",
        &["--server-cert-lifetime", "60s"],
    );
    let pem0 = std::fs::read_to_string(server.data.join("server.pem")).unwrap();
    let root = laptop(
        &tmp.path().join("laptop"),
        "dd44dd44dd44dd44dd44dd44dd44dd44",
        "R-4",
    );
    let agent = agent_on(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
        &root,
        "10s",
    );
    let _proc = agent.spawn();
    wait_until(
        "server.pem to be rewritten",
        Duration::from_secs(90),
        || std::fs::read_to_string(server.data.join("server.pem")).unwrap() != pem0,
    )
    .await;
    // Past the first certificate's end, new connections still get through: the server
    // presents the new certificate.
    let past = Duration::from_secs(65).saturating_sub(started.elapsed());
    tokio::time::sleep(past).await;
    server.vakt_ok(&["devices"]);
    let id = agent.device_id();
    let seq = sequence(&server, &id);
    wait_until(
        "the agent to keep reporting",
        Duration::from_secs(60),
        || sequence(&server, &id) > seq,
    )
    .await;
}
