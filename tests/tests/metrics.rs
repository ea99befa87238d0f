//! Metrics end to end: a server with `--metrics`, one agent holding its stream, and a real
//! Prometheus (Debian's `prometheus`, installed by `.ci/install-prometheus.sh`) scraping it
//! every second; its query API must answer `vakt_agents_connected` = 1.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use vakt_tests::{TestAgent, TestServer, tools_required, wait_until};

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
    fn start(dir: &Path, target: &str) -> Self {
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!(
                "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: vakt\n    static_configs:\n      - targets: ['{target}']\n"
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
    let metrics = format!("127.0.0.1:{}", free_port());
    let server = TestServer::start_with(
        &tmp.path().join("server"),
        "127.0.0.1:0",
        &["--metrics", &metrics],
    );
    assert!(
        server
            .log_text()
            .contains(&format!("serving metrics on http://{metrics}/metrics")),
        "{}",
        server.log_text()
    );
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
    let url = format!("http://{metrics}/metrics");
    wait_until(
        "both agents' reports to be counted",
        Duration::from_secs(30),
        || {
            get(&url)
                .1
                .contains("vakt_reports_total{kind=\"sections\"} 2")
        },
    )
    .await;
    let (status, text) = get(&url);
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
    let (status, _) = get(&format!("http://{metrics}/other"));
    assert_eq!(status, 404);

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
    let prom = Prometheus::start(tmp.path(), &metrics);
    wait_until(
        "Prometheus to see one agent connected",
        Duration::from_secs(60),
        || prom.query("vakt_agents_connected").as_deref() == Some("1"),
    )
    .await;
    assert_eq!(prom.query("up").as_deref(), Some("1"), "the target is up");
    let reports = prom
        .query("sum(vakt_reports_total)")
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or(0.0);
    assert!(reports >= 1.0, "reports counted: {reports}");
}
