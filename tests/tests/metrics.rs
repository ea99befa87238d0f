//! Metrics end to end: a server with `--metrics` over TLS and a scrape token, one agent
//! holding its stream, and a real Prometheus (Debian's `prometheus`, installed by
//! `.ci/install-prometheus.sh`) scraping it every second with the token and the server's CA;
//! its query API must answer `vakt_agents_connected` = 1, and a job with a wrong token must be
//! down. Scrapes without the token get 401; a non-loopback address without one refuses to
//! start.

#![allow(clippy::unwrap_used)]

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vakt_tests::{TestAgent, TestServer, serve_fails, tools_required, wait_until};

/// The scrape token of these tests (the server wants at least 16 characters).
const TOKEN: &str = "9f1c2b7d4e8a3f6c0b5d2e9a7c4f1b8d";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn get(url: &str) -> (u16, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    match agent.get(url).call() {
        Ok(mut r) => (
            r.status().as_u16(),
            r.body_mut().read_to_string().unwrap_or_default(),
        ),
        Err(e) => (0, e.to_string()),
    }
}

/// `GET path` over HTTPS from the metrics listener at `addr` (verified against `ca_pem`, for
/// the name 127.0.0.1), with `authorization` if given: the status and the body.
fn https_get(addr: &str, ca_pem: &str, path: &str, authorization: Option<&str>) -> (u16, String) {
    use rustls::pki_types::pem::PemObject;
    use std::io::{Read, Write};
    use std::sync::Arc;
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots.add(c.unwrap()).unwrap();
    }
    let config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let conn = rustls::ClientConnection::new(Arc::new(config), name).unwrap();
    let Ok(tcp) = std::net::TcpStream::connect(addr) else {
        return (0, "cannot connect".into());
    };
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let auth = authorization
        .map(|a| format!("Authorization: {a}\r\n"))
        .unwrap_or_default();
    let req = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    if let Err(e) = tls.write_all(req.as_bytes()) {
        return (0, e.to_string());
    }
    let mut buf = Vec::new();
    // hyper closes without close_notify sometimes; what arrived is the answer.
    let _ = tls.read_to_end(&mut buf);
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Every `vakt_…` metric name a text mentions.
fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut out = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("vakt_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        out.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    out
}

/// A Prometheus process, killed when dropped.
struct Prometheus {
    child: Child,
    addr: String,
}

impl Prometheus {
    /// Scrapes `target` over HTTPS, trusting `ca`, as two jobs: `vakt` with the token in
    /// `token`, `wrong` with the one in `wrong_token`.
    fn start(dir: &Path, target: &str, ca: &Path, token: &Path, wrong_token: &Path) -> Self {
        let config = dir.join("prometheus.yml");
        let job = |name: &str, credentials: &Path| {
            format!(
                "  - job_name: {name}\n    scheme: https\n    tls_config:\n      ca_file: {}\n    authorization:\n      credentials_file: {}\n    static_configs:\n      - targets: ['{target}']\n",
                ca.display(),
                credentials.display()
            )
        };
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n{}{}",
                job("vakt", token),
                job("wrong", wrong_token)
            ),
        )
        .unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("tsdb").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus");
        Self { child, addr }
    }

    /// The value of an instant query's first sample, if any.
    fn query(&self, q: &str) -> Option<String> {
        // Percent-encoded: label matchers have braces, quotes and '='.
        let q: String = q
            .bytes()
            .map(|b| match b {
                b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'(' | b')' => {
                    char::from(b).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        let (status, body) = get(&format!("http://{}/api/v1/query?query={q}", self.addr));
        if status != 200 {
            return None;
        }
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        v["data"]["result"][0]["value"][1]
            .as_str()
            .map(str::to_string)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_server_and_sees_the_held_agent() {
    let have_prometheus = Command::new("prometheus")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !have_prometheus {
        assert!(
            !tools_required(),
            "prometheus is missing (.ci/install-prometheus.sh installs it)"
        );
        eprintln!("SKIP: prometheus is not installed (apt-get install prometheus)");
        return;
    }
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("metrics.token");
    vakt_tests::write_secret(&token_file, &format!("{TOKEN}\n"));
    let wrong_file = tmp.path().join("wrong.token");
    vakt_tests::write_secret(&wrong_file, "not-the-token-but-long-enough\n");
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = TestServer::start_with(
        &tmp.path().join("server"),
        "127.0.0.1:0",
        &[
            "--metrics",
            &metrics,
            "--metrics-tls",
            "--metrics-token-file",
            token_file.to_str().unwrap(),
        ],
    );
    assert!(
        server.log_text().contains(&format!(
            "serving metrics on https://{metrics}/metrics (bearer token from {})",
            token_file.display()
        )),
        "{}",
        server.log_text()
    );
    let ca = server.ca_pem();
    let bearer = format!("Bearer {TOKEN}");
    let get = |path: &str| https_get(&metrics, &ca, path, Some(&bearer));
    let agent = TestAgent::new(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
    );
    let _proc = agent.spawn();
    wait_until("the agent to connect", Duration::from_secs(30), || {
        server.vakt_json(&["devices"])[0]["connected"] == true
    })
    .await;
    // A refused enrollment counts too; a laptop that reported once and went away has its
    // lock waiting.
    let bad = TestAgent::new(&tmp.path().join("bad"), &server, "not-a-token");
    assert!(!bad.run_once().status.success());
    let away = TestAgent::new(&tmp.path().join("away"), &server, &server.enroll_token(&[]));
    assert!(away.run_once().status.success());
    server.vakt_ok(&[
        "loss",
        "report",
        &away.device_id(),
        "--reported-by",
        "anna@sorsele.se",
    ]);

    // The exposition itself: every family the issue names, in the text format.
    wait_until(
        "both agents' reports to be counted",
        Duration::from_secs(30),
        || {
            get("/metrics")
                .1
                .contains("vakt_reports_total{kind=\"sections\"} 2")
        },
    )
    .await;
    let (status, text) = get("/metrics");
    assert_eq!(status, 200, "{text}");
    for line in [
        "vakt_agents_connected 1",
        "vakt_devices{state=\"active\"} 1",
        "vakt_devices{state=\"lost\"} 1",
        "vakt_commands{kind=\"lock\",state=\"pending\"} 1",
        "vakt_enrollments_total{result=\"enrolled\"} 2",
        "vakt_enrollments_total{result=\"refused\"} 1",
        "vakt_outbox_pending 0",
        "vakt_build_info{version=\"",
    ] {
        assert!(text.contains(line), "no `{line}` in:\n{text}");
    }
    for family in [
        "vakt_report_duration_seconds_bucket",
        "vakt_store_flush_duration_seconds_count",
        "# HELP vakt_command_delivery_seconds ",
        "# HELP vakt_findings_open ",
    ] {
        assert!(text.contains(family), "no `{family}` in:\n{text}");
    }
    assert!(
        text.trim_end().ends_with("# EOF"),
        "OpenMetrics ends with # EOF"
    );
    let (status, _) = get("/other");
    assert_eq!(status, 404);
    // Without the token, or with another, no figures.
    for auth in [None, Some("Bearer not-the-token-but-long-enough")] {
        let (status, body) = https_get(&metrics, &ca, "/metrics", auth);
        assert_eq!(status, 401, "{auth:?}: {body}");
        assert!(!body.contains("vakt_"), "{body}");
    }

    // deploy/'s alert rules are valid and, like the dashboard, name only metrics the server
    // exposes (a renamed metric would silently never alert).
    let deploy = Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let rules = deploy.join("prometheus/alerts.yml");
    let check = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool comes with prometheus");
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let mut named = metric_names(&std::fs::read_to_string(&rules).unwrap());
    named.extend(metric_names(
        &std::fs::read_to_string(deploy.join("grafana/vakt-dashboard.json")).unwrap(),
    ));
    assert!(named.len() >= 8, "{named:?}");
    for name in named {
        assert!(
            text.lines().any(|l| l.starts_with(&name)),
            "{name} is used in deploy/ but the server does not expose it"
        );
    }

    // A real Prometheus scrapes it.
    let prom = Prometheus::start(
        tmp.path(),
        &metrics,
        &server.ca_path(),
        &token_file,
        &wrong_file,
    );
    wait_until(
        "Prometheus to see one agent connected",
        Duration::from_secs(60),
        || prom.query("vakt_agents_connected").as_deref() == Some("1"),
    )
    .await;
    assert_eq!(
        prom.query("up{job=\"vakt\"}").as_deref(),
        Some("1"),
        "the target is up"
    );
    wait_until(
        "Prometheus to scrape with the wrong token",
        Duration::from_secs(30),
        || prom.query("up{job=\"wrong\"}").is_some(),
    )
    .await;
    assert_eq!(
        prom.query("up{job=\"wrong\"}").as_deref(),
        Some("0"),
        "a scrape with the wrong token fails"
    );
    let reports = prom
        .query("sum(vakt_reports_total)")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(reports >= 1.0, "reports counted: {reports}");
}

/// Secure by default: metrics other machines could reach do not start without a token, and a
/// token file that cannot be one stops the start naming it.
#[test]
fn metrics_beyond_loopback_without_a_token_refuse_to_start() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let err = serve_fails(&data, &["--metrics", "0.0.0.0:0"]);
    assert!(
        err.contains("metrics on 0.0.0.0:0 can be reached from other machines")
            && err.contains("metrics_token_file = ")
            && err.contains("--metrics-token-file"),
        "{err}"
    );
    assert!(
        !data.join("admin.token").exists(),
        "refused before the data directory was touched"
    );
    let missing = tmp.path().join("metrics.token");
    let with_token_file = |addr: &str| {
        serve_fails(
            &data,
            &[
                "--metrics",
                addr,
                "--metrics-token-file",
                missing.to_str().unwrap(),
            ],
        )
    };
    let err = with_token_file("0.0.0.0:0");
    assert!(
        err.contains(&format!("metrics_token_file {}", missing.display())),
        "{err}"
    );
    vakt_tests::write_secret(&missing, "\n");
    let err = with_token_file("127.0.0.1:0");
    assert!(err.contains("empty"), "{err}");
    // A good token that others can read: refused, the file named.
    std::fs::write(&missing, "a-token-others-can-read-0123\n").unwrap();
    std::fs::set_permissions(&missing, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = with_token_file("127.0.0.1:0");
    assert!(
        err.contains(&format!("metrics_token_file {}", missing.display()))
            && err.contains("others can read it (mode 644)"),
        "{err}"
    );
}
