//! The foundation end to end: enrollment over mutual TLS, reports, the `vakt` CLI, restarts,
//! and every refusal the security model promises. Each test runs on both store engines.

#![allow(clippy::unwrap_used)] // a test file: helpers outside #[test] fns may unwrap too

use std::time::Duration;
use vakt_proto::pb;
use vakt_proto::pb::agent_service_client::AgentServiceClient;
use vakt_tests::{Engine, TestAgent, on_both_engines, stderr};

fn report_request() -> pb::ReportRequest {
    pb::ReportRequest {
        sequence: 1,
        ..Default::default()
    }
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

on_both_engines!(fn enroll_report_list_and_restart_keeps_everything);
fn enroll_report_list_and_restart_keeps_everything(engine: Engine) {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = engine.server(&tmp.path().join("server"));
    // First start: the CA, the server certificate and a private admin token. On PostgreSQL
    // the CA key and the command-signing key are sealed in the database, never in the
    // data directory (shared by the replicas).
    let (here, not_here): (&[&str], &[&str]) = match engine {
        Engine::Sled => (&["ca.pem", "ca.key", "command.key", "admin.token"], &[]),
        Engine::Postgres { .. } => (&["ca.pem", "admin.token"], &["ca.key", "command.key"]),
    };
    for f in here {
        assert!(server.data.join(f).exists(), "{f} created on first start");
    }
    for f in not_here {
        assert!(!server.data.join(f).exists(), "{f} in the data directory");
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(server.data.join("admin.token"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "admin.token is private");
    }
    assert_eq!(server.vakt_json(&["devices"]), serde_json::json!([]));

    let token = server.enroll_token(&[]);
    assert!(
        token.starts_with("vakt_e_"),
        "the token alone on stdout: {token}"
    );
    let agent = TestAgent::new(&tmp.path().join("agent"), &server, &token);
    let out = agent.run_once();
    assert!(out.status.success(), "agent: {}", stderr(&out));
    assert!(
        !agent.dir.join("enroll.token").exists(),
        "token file removed after enrollment"
    );
    let device_id = agent.device_id();

    let devices = server.vakt_json(&["devices"]);
    let list = devices.as_array().unwrap();
    assert_eq!(list.len(), 1);
    let d = &list[0];
    assert_eq!(d["id"], device_id.as_str());
    assert_eq!(d["state"], "active");
    for field in ["hostname", "last_seen", "assigned_to"] {
        assert!(d.get(field).is_some(), "devices --json has {field}");
    }
    let hostname = d["hostname"].as_str().unwrap().to_string();
    assert!(!hostname.is_empty());

    // `ID` accepts the hostname too; the report's host section is there.
    let show = server.vakt_json(&["device", "show", &hostname]);
    assert_eq!(show["id"], device_id.as_str());
    assert_eq!(show["host"]["hostname"], hostname.as_str());
    assert!(!show["host"]["kernel"].as_str().unwrap().is_empty());
    assert!(show["software"].is_array() && show["mail"].is_object() && show["roaming"].is_object());

    let out = server.vakt_ok(&["device", "assign", &device_id, "Anna.Berg@sorsele.se"]);
    assert!(out.contains("anna.berg@sorsele.se"), "{out}");

    // kill -9 and start again: the device, its report and its assignment are all still there,
    // and the agent keeps working with the identity it has.
    server.restart();
    let show = server.vakt_json(&["device", "show", &device_id]);
    assert_eq!(show["assigned_to"], "anna.berg@sorsele.se");
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
}

on_both_engines!(fn bad_enrollment_tokens_are_refused_naming_the_token);
fn bad_enrollment_tokens_are_refused_naming_the_token(engine: Engine) {
    let tmp = tempfile::tempdir().unwrap();
    let server = engine.server(&tmp.path().join("server"));

    let bogus = "vakt_e_0000000000000000000000000000000000000000000000000000000000000000";
    let a = TestAgent::new(&tmp.path().join("a"), &server, bogus);
    let out = a.run_once();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("enrollment token vakt_e_0000") && err.contains("not known"),
        "{err}"
    );

    // Used up: a one-use token enrolls one agent and refuses the second.
    let token = server.enroll_token(&["--uses", "1"]);
    let b = TestAgent::new(&tmp.path().join("b"), &server, &token);
    assert!(b.run_once().status.success());
    let c = TestAgent::new(&tmp.path().join("c"), &server, &token);
    let out = c.run_once();
    assert!(!out.status.success());
    let err = stderr(&out);
    let id = server.vakt_json(&["devices"]);
    assert_eq!(
        id.as_array().unwrap().len(),
        1,
        "no device added by a refused enrollment"
    );
    assert!(
        err.contains("has no uses left") && err.contains("enrollment token"),
        "{err}"
    );

    // Expired.
    let token = server.enroll_token(&["--ttl", "1s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let d = TestAgent::new(&tmp.path().join("d"), &server, &token);
    let out = d.run_once();
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("expired at"), "{err}");
    assert!(
        d.dir.join("enroll.token").exists(),
        "a refused token file is kept for a person to look at"
    );
}

on_both_engines!(fn agent_calls_need_a_valid_current_client_certificate);
fn agent_calls_need_a_valid_current_client_certificate(engine: Engine) {
    let tmp = tempfile::tempdir().unwrap();
    let server = engine.server(&tmp.path().join("server"));
    let agent = TestAgent::new(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
    );
    assert!(agent.run_once().status.success());
    let old_state = tmp.path().join("old-state");
    copy_dir(&agent.dir.join("state"), &old_state);

    // Re-enroll the same hardware after an admin allowed it: same device id, new certificate,
    // the old one revoked.
    std::fs::remove_file(agent.dir.join("state/identity.json")).unwrap();
    std::fs::write(agent.dir.join("enroll.token"), server.enroll_token(&[])).unwrap();
    let device_id_before = serde_json::from_str::<serde_json::Value>(
        &std::fs::read_to_string(old_state.join("identity.json")).unwrap(),
    )
    .unwrap()["device_id"]
        .as_str()
        .unwrap()
        .to_string();
    server.vakt_ok(&["device", "reenroll", &device_id_before]);
    assert!(agent.run_once().status.success());
    assert_eq!(
        agent.device_id(),
        device_id_before,
        "same hardware, same device"
    );
    assert_eq!(server.vakt_json(&["devices"]).as_array().unwrap().len(), 1);

    let ca = server.ca_pem();
    let url = server.url();
    rt().block_on(async {
        // No client certificate.
        let ch = vakt_agent::link::connect(&url, &ca, None).await.unwrap();
        let err = AgentServiceClient::new(ch)
            .report(report_request())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated, "{err:?}");
        assert!(
            err.message().contains("client certificate"),
            "{}",
            err.message()
        );

        // The revoked certificate: TLS accepts it (our CA signed it), the server does not.
        let cert = std::fs::read_to_string(old_state.join("cert.pem")).unwrap();
        let key = std::fs::read_to_string(old_state.join("key.pem")).unwrap();
        let ch = vakt_agent::link::connect(&url, &ca, Some((&cert, &key)))
            .await
            .unwrap();
        let err = AgentServiceClient::new(ch)
            .report(report_request())
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        assert!(err.message().contains("revoked"), "{}", err.message());

        // The current certificate works.
        let cert = std::fs::read_to_string(agent.dir.join("state/cert.pem")).unwrap();
        let key = std::fs::read_to_string(agent.dir.join("state/key.pem")).unwrap();
        let ch = vakt_agent::link::connect(&url, &ca, Some((&cert, &key)))
            .await
            .unwrap();
        let ok = AgentServiceClient::new(ch).report(report_request()).await;
        assert!(ok.is_ok(), "{ok:?}");

        // A certificate from another CA does not get through the TLS handshake.
        assert!(
            !vakt_tests::foreign_ca_gets_through(&url, &ca).await,
            "a foreign client certificate must be refused"
        );
    });
}

on_both_engines!(fn admin_calls_need_a_token_with_the_right_role);
fn admin_calls_need_a_token_with_the_right_role(engine: Engine) {
    let tmp = tempfile::tempdir().unwrap();
    let server = engine.server(&tmp.path().join("server"));

    let out = server.vakt_with_token("vakt_a_wrong", &["devices"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("not valid on this server"),
        "{}",
        stderr(&out)
    );

    let out = std::process::Command::new(vakt_tests::bin("vakt"))
        .args(["devices"])
        .env("VAKT_SERVER", server.url())
        .env("VAKT_CA", server.ca_path())
        .env_remove("VAKT_TOKEN")
        .env_remove("VAKT_TOKEN_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no admin token"), "{}", stderr(&out));

    // A viewer may look but not create tokens; the server says which role is needed.
    let viewer = server.vakt_ok(&[
        "admin-token",
        "create",
        "--role",
        "viewer",
        "--name",
        "helpdesk",
    ]);
    let viewer = viewer.trim();
    let out = server.vakt_with_token(viewer, &["devices", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = server.vakt_with_token(viewer, &["enroll-token", "create"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("needs the operator role"),
        "{}",
        stderr(&out)
    );

    // A raw gRPC admin call with no token at all.
    let ca = server.ca_pem();
    let url = server.url();
    rt().block_on(async {
        let ch = vakt_agent::link::connect(&url, &ca, None).await.unwrap();
        let err = pb::admin_service_client::AdminServiceClient::new(ch)
            .list_devices(pb::ListDevicesRequest {})
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    });

    // Server down: a clear error, non-zero exit.
    let out = std::process::Command::new(vakt_tests::bin("vakt"))
        .args(["devices", "--server", "https://127.0.0.1:9"])
        .env("VAKT_CA", server.ca_path())
        .env("VAKT_TOKEN", server.admin_token())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot reach the server"),
        "{}",
        stderr(&out)
    );
}

on_both_engines!(fn a_second_server_on_the_same_data_fails_at_once);
fn a_second_server_on_the_same_data_fails_at_once(engine: Engine) {
    let tmp = tempfile::tempdir().unwrap();
    let _server = engine.server(&tmp.path().join("server"));
    let out = engine
        .serve_command(&tmp.path().join("server"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("in use by another vakt-server"),
        "{}",
        stderr(&out)
    );
}

on_both_engines!(fn the_agent_holds_its_stream_and_the_server_sees_it_connected);
fn the_agent_holds_its_stream_and_the_server_sees_it_connected(engine: Engine) {
    let tmp = tempfile::tempdir().unwrap();
    let server = engine.server(&tmp.path().join("server"));
    let agent = TestAgent::new(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
    );
    let mut child = std::process::Command::new(vakt_tests::bin("vakt-agent"))
        .args(["run", "--config"])
        .arg(agent.config())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    vakt_tests::wait_for("the agent to connect", Duration::from_secs(30), || {
        let d = server.vakt_json(&["devices"]);
        d.as_array()
            .and_then(|a| a.first())
            .is_some_and(|d| d["connected"] == true)
    });
    let _ = child.kill();
    let _ = child.wait();
    vakt_tests::wait_for(
        "the server to notice the agent left",
        Duration::from_secs(30),
        || {
            let d = server.vakt_json(&["devices"]);
            d.as_array()
                .and_then(|a| a.first())
                .is_some_and(|d| d["connected"] == false)
        },
    );
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
    }
}
