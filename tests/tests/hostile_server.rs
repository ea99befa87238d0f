//! The server against hostile or careless input from the network and from enrolled laptops,
//! and as the service manager treats it (issue 16, the server's side): silent TLS
//! connections, oversized calls before authentication, exemption floods, the open-files
//! limit, SIGTERM with streams held, the data directory's modes and secrets in the log.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, Instant};
use tonic::Code;
use vakt_proto::pb;
use vakt_tests::{TestAgent, TestServer, wait_for};

/// Runs `vakt-agent exemption request` for `agent`.
fn ask_exemption(agent: &TestAgent, minutes: &str, reason: &str) -> std::process::Output {
    std::process::Command::new(vakt_tests::bin("vakt-agent"))
        .args([
            "exemption",
            "request",
            "--minutes",
            minutes,
            "--reason",
            reason,
        ])
        .arg("--config")
        .arg(agent.config())
        .output()
        .unwrap()
}

/// An agent enrolled with one acknowledged report (`run --once`).
fn enrolled(dir: &Path, server: &TestServer) -> TestAgent {
    let agent = TestAgent::new(dir, server, &server.enroll_token(&[]));
    let out = agent.run_once();
    assert!(out.status.success(), "{}", vakt_tests::stderr(&out));
    agent
}

#[test]
fn a_laptop_cannot_flood_exemption_requests() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let agent = enrolled(&tmp.path().join("agent"), &server);

    // A reason longer than a sentence or two is refused, and says so.
    let out = ask_exemption(&agent, "10", &"a".repeat(501));
    assert!(!out.status.success());
    assert!(
        vakt_tests::stderr(&out).contains("at most 500"),
        "{}",
        vakt_tests::stderr(&out)
    );

    let out = ask_exemption(&agent, "10", "the alarm app needs mobile data");
    assert!(out.status.success(), "{}", vakt_tests::stderr(&out));
    // While it is in force, no second one on top of it.
    let out = ask_exemption(&agent, "10", "the alarm app needs mobile data");
    assert!(!out.status.success(), "a second exemption was granted");
    assert!(
        vakt_tests::stderr(&out).contains("already has an exemption"),
        "{}",
        vakt_tests::stderr(&out)
    );
    // And after a few requests within the hour, none at all.
    let mut refusal = String::new();
    for _ in 0..5 {
        let out = ask_exemption(&agent, "10", "the alarm app needs mobile data");
        assert!(!out.status.success());
        refusal = vakt_tests::stderr(&out);
    }
    assert!(
        refusal.contains("within the last hour"),
        "the flood's refusal: {refusal}"
    );
    let ex = server.vakt_json(&["exemptions", "list"]);
    assert_eq!(ex.as_array().unwrap().len(), 1, "{ex}");
    let audit = server.vakt_ok(&["audit", "--json"]);
    assert_eq!(
        audit.matches("exemption.request").count(),
        1,
        "one audit entry per granted request: {audit}"
    );
}

#[test]
fn the_data_directory_is_private_whatever_the_umask() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let server = TestServer::start_in_shell(&data, "127.0.0.1:0", "127.0.0.1:0", &[], "umask 022");
    let _agent = enrolled(&tmp.path().join("agent"), &server);
    let mut seen = 0;
    let mut dirs = vec![data.clone()];
    while let Some(dir) = dirs.pop() {
        let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700, "{} is {mode:o}", dir.display());
        for e in std::fs::read_dir(&dir).unwrap() {
            let path = e.unwrap().path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                dirs.push(path);
                continue;
            }
            seen += 1;
            let mode = meta.permissions().mode() & 0o777;
            // Certificates are public (agents and browsers get copies); nothing else is.
            let public = path.extension().is_some_and(|x| x == "pem")
                && !std::fs::read_to_string(&path)
                    .unwrap_or_default()
                    .contains("PRIVATE KEY");
            let allowed = if public { 0o644 } else { 0o600 };
            assert!(
                mode & !allowed == 0,
                "{} is {mode:o} (at most {allowed:o})",
                path.display()
            );
        }
    }
    assert!(seen > 5, "only {seen} files in the data directory");
}

#[test]
fn webhook_urls_and_smtp_passwords_stay_out_of_the_log() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start_with(
        &tmp.path().join("server"),
        "127.0.0.1:0",
        &[
            // Nothing listens on port 9: every delivery fails, and failures are logged.
            "--webhook",
            "http://127.0.0.1:9/services/T0/hook-path-s3cret?token=hook-query-s3cret",
            // Not a valid URL (the port): the server says so in its log, without the password.
            "--smtp",
            "smtp://vakt:smtp-pa55word@127.0.0.1:notaport",
        ],
    );
    let agent = enrolled(&tmp.path().join("agent"), &server);
    server.vakt_ok(&["loss", "report", &agent.device_id()]);
    wait_for(
        "the failed webhook delivery in the log",
        Duration::from_secs(30),
        || server.log_text().contains("retrying in"),
    );
    let log = server.log_text();
    assert!(log.contains("smtp url"), "the SMTP error is logged: {log}");
    for secret in ["hook-path-s3cret", "hook-query-s3cret", "smtp-pa55word"] {
        assert!(!log.contains(secret), "{secret} is in the log:\n{log}");
    }
}

#[test]
fn a_server_started_with_1024_open_files_raises_its_limit() {
    let tmp = tempfile::tempdir().unwrap();
    let hard = vakt_server::hardening::file_limit().hard;
    assert!(
        hard > 1024,
        "this machine's hard limit is {hard}: nothing to raise"
    );
    let server = TestServer::start_in_shell(
        &tmp.path().join("server"),
        "127.0.0.1:0",
        "127.0.0.1:0",
        &[],
        "ulimit -Sn 1024",
    );
    let line = format!("open files limit raised from 1024 to {hard}");
    wait_for(
        "the raised limit in the log",
        Duration::from_secs(10),
        || server.log_text().contains(&line),
    );
    server.vakt_ok(&["devices"]);
}

#[test]
fn sigterm_with_streams_held_exits_in_time_and_keeps_what_was_acknowledged() {
    let tmp = tempfile::tempdir().unwrap();
    let mut server = TestServer::start(&tmp.path().join("server"));
    let token = server.enroll_token(&["--uses", "3"]);
    let agents: Vec<_> = (0..3)
        .map(|i| TestAgent::new(&tmp.path().join(format!("agent{i}")), &server, &token))
        .collect();
    let running: Vec<_> = agents.iter().map(TestAgent::spawn).collect();
    wait_for(
        "three agents reporting and holding their streams",
        Duration::from_secs(60),
        || {
            let d = server.vakt_json(&["devices"]);
            let d = d.as_array().unwrap();
            d.len() == 3
                && d.iter().all(|d| {
                    d["connected"] == true && d["last_report_sequence"].as_u64() >= Some(1)
                })
        },
    );
    let before = server.vakt_json(&["devices"]);
    let t = Instant::now();
    let status = server.terminate(Duration::from_secs(10));
    let took = t.elapsed();
    let status = status.unwrap_or_else(|| {
        panic!(
            "vakt-server was still running 10 s after SIGTERM with streams held; its log:\n{}",
            server.log_text()
        )
    });
    assert!(status.success(), "exit {status:?} after {took:?}");
    assert!(
        server.log_text().contains("store flushed"),
        "{}",
        server.log_text()
    );
    drop(running);

    // Everything acknowledged before the signal is there after a restart.
    server.restart();
    let after = server.vakt_json(&["devices"]);
    for d in before.as_array().unwrap() {
        let again = after
            .as_array()
            .unwrap()
            .iter()
            .find(|a| a["id"] == d["id"])
            .unwrap_or_else(|| panic!("{} is gone after the restart", d["id"]));
        assert!(
            again["last_report_sequence"].as_u64() >= d["last_report_sequence"].as_u64(),
            "before {d}, after {again}"
        );
    }
}

/// A TLS client that finishes its handshake and then never sends a byte.
async fn silent_tls(
    addr: &str,
    config: std::sync::Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(config)
        .connect("localhost".try_into().unwrap(), tcp)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tls_connections_are_closed_while_it_is_served() {
    use rustls::pki_types::pem::PemObject;
    use tokio::io::AsyncReadExt;
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    // This process holds 500 sockets too.
    let _ = vakt_server::hardening::raise_file_limit();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(server.ca_pem().as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let config = std::sync::Arc::new(config);

    let started = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..500 {
        silent.push(silent_tls(&server.addr, config.clone()).await);
    }
    // IT is served while they are open.
    let out = tokio::task::spawn_blocking({
        let url = server.url();
        let ca = server.ca_path();
        let token = server.admin_token();
        move || {
            std::process::Command::new(vakt_tests::bin("vakt"))
                .arg("devices")
                .env("VAKT_SERVER", url)
                .env("VAKT_CA", ca)
                .env("VAKT_TOKEN", token)
                .env_remove("VAKT_TOKEN_FILE")
                .output()
                .unwrap()
        }
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{}", vakt_tests::stderr(&out));
    // Each is closed by the server: the read ends (end of stream or an error) in time.
    let deadline = started + Duration::from_secs(30);
    let mut closed = 0;
    for mut s in silent {
        let left = deadline.saturating_duration_since(Instant::now());
        let mut buf = [0u8; 256];
        let ended = tokio::time::timeout(left, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    // A server's own bytes (its SETTINGS, a GOAWAY) are fine; the end counts.
                    Ok(_) => continue,
                }
            }
        })
        .await;
        if ended.is_ok() {
            closed += 1;
        }
    }
    assert_eq!(
        closed, 500,
        "silent connections still open 30 s after they connected"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_before_authentication_may_only_be_small() {
    let tmp = tempfile::tempdir().unwrap();
    let server = TestServer::start(&tmp.path().join("server"));
    let channel = || async {
        vakt_agent::link::connect(&server.url(), &server.ca_pem(), None)
            .await
            .unwrap()
    };
    let big = "x".repeat(1024 * 1024);

    // An enrollment is a token and a CSR: a MiB of it is refused once 64 KiB have arrived.
    let err = pb::agent_service_client::AgentServiceClient::new(channel().await)
        .enroll(pb::EnrollRequest {
            token: big.clone(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    assert!(err.message().contains("before authentication"), "{err:?}");

    // An admin call with a made-up token likewise; with a real one it gets the full room.
    let import = |token: String| {
        let csv = big.clone().into_bytes();
        let ch = channel();
        async move {
            let mut req = tonic::Request::new(pb::ImportPeopleRequest {
                csv,
                file_name: "people.csv".into(),
            });
            req.metadata_mut()
                .insert("authorization", format!("Bearer {token}").parse().unwrap());
            pb::admin_service_client::AdminServiceClient::new(ch.await)
                .import_people(req)
                .await
        }
    };
    let err = import("vakt_made-up-token".into()).await.unwrap_err();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    let err = import(server.admin_token()).await.unwrap_err();
    assert_ne!(
        err.code(),
        Code::ResourceExhausted,
        "an admin's import was refused for its size: {err:?}"
    );
    // And small calls before authentication still get their clear answer.
    let err = pb::agent_service_client::AgentServiceClient::new(channel().await)
        .enroll(pb::EnrollRequest {
            token: "vakt_enroll_wrong".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::ResourceExhausted, "{err:?}");
}
