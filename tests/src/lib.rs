//! Harness for the end-to-end tests: the real `vakt-server`, `vakt` and `vakt-agent` binaries
//! as processes, on loopback ports and temporary directories; (`dbus`) private D-Bus daemons
//! with python-dbusmock standing in for ModemManager and logind; (`webdriver`) a headless
//! Chromium driven through chromedriver for the web console; and (`load`) the fleet simulator
//! behind `vakt-loadgen` and the crash tests.
//!
//! The binaries are the ones `cargo test --workspace` builds next to this test executable
//! (the server and agent packages have integration tests of their own, which makes cargo build
//! their binaries first).

#![allow(clippy::unwrap_used, clippy::expect_used)]

pub mod dbus;
pub mod load;
pub mod mm;
pub mod oidc;
pub mod pg;
pub mod webdriver;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A loopback port nothing listens on right now (for a process that must be told its port).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// The path of a workspace binary built for this test run.
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/<name>
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is missing: run the tests with `cargo test --workspace`, which builds it",
        p.display()
    );
    p
}

/// The store a test's servers run on: the embedded sled store in the data directory, or a
/// fresh database of this test binary's PostgreSQL cluster ([`pg::PgCluster::shared`]). A
/// test written against an `Engine` states nothing else about it; [`on_both_engines!`] runs
/// it once per engine.
pub enum Engine {
    Sled,
    Postgres {
        cluster: &'static pg::PgCluster,
        /// The database's name, its `--store` URL and its `--secrets-key` file.
        database: String,
        url: String,
        key: String,
    },
}

impl Engine {
    /// A fresh PostgreSQL database, or `None` having printed why the test is skipped
    /// (PostgreSQL is not installed; with `VAKT_REQUIRE_TOOLS=1` that panics instead).
    pub fn postgres(test: &str) -> Option<Self> {
        match pg::PgCluster::shared() {
            Ok(cluster) => {
                let url = cluster.fresh_database();
                let database = url.rsplit('/').next().unwrap_or_default().to_string();
                let key = cluster.secrets_key(&database).display().to_string();
                Some(Self::Postgres {
                    cluster,
                    database,
                    url,
                    key,
                })
            }
            Err(why) => {
                eprintln!("{test} on PostgreSQL skipped: {why}");
                None
            }
        }
    }

    /// The `serve` flags that put a server on this store (none for sled).
    pub fn flags(&self) -> Vec<&str> {
        match self {
            Self::Sled => Vec::new(),
            Self::Postgres { url, key, .. } => vec!["--store", url, "--secrets-key", key],
        }
    }

    /// A server on `data` and this store, on ephemeral ports.
    pub fn server(&self, data: &Path) -> TestServer {
        self.server_with(data, "127.0.0.1:0", &[])
    }

    /// A server on `data` and this store with its gRPC API on `listen` and more `serve`
    /// flags.
    pub fn server_with(&self, data: &Path, listen: &str, extra: &[&str]) -> TestServer {
        let mut flags = self.flags();
        flags.extend_from_slice(extra);
        TestServer::start_with(data, listen, &flags)
    }

    /// `vakt-server ARGS` with this store's flags appended (for a process that must fail).
    pub fn serve_command(&self, data: &Path) -> Command {
        let mut cmd = Command::new(bin("vakt-server"));
        cmd.args(["serve", "--listen", "127.0.0.1:0", "--data"])
            .arg(data)
            .args(self.flags());
        cmd
    }
}

/// Runs a test once per store engine: for `fn name(engine: Engine)` (or `async fn`), a module
/// `name` with the tests `name::sled` and `name::postgres`. The PostgreSQL variant takes a
/// fresh database of the binary's cluster, and skips with the reason printed only when
/// PostgreSQL is not installed.
#[macro_export]
macro_rules! on_both_engines {
    (fn $name:ident) => {
        mod $name {
            #[test]
            fn sled() {
                super::$name($crate::Engine::Sled)
            }
            #[test]
            fn postgres() {
                if let Some(engine) = $crate::Engine::postgres(stringify!($name)) {
                    super::$name(engine)
                }
            }
        }
    };
    (async fn $name:ident) => {
        mod $name {
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sled() {
                super::$name($crate::Engine::Sled).await
            }
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                if let Some(engine) = $crate::Engine::postgres(stringify!($name)) {
                    super::$name(engine).await
                }
            }
        }
    };
}

/// A `vakt-server serve` process on ephemeral loopback ports.
pub struct TestServer {
    pub data: PathBuf,
    /// The gRPC address.
    pub addr: String,
    /// The web console's base URL, `http://127.0.0.1:PORT` (or `https://` with `--console-tls`).
    pub console: String,
    child: Option<Child>,
    /// Lines the server wrote to stderr, for failure messages.
    pub log: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    extra: Vec<String>,
}

impl TestServer {
    /// Starts a server on `data` (created if needed).
    pub fn start(data: &Path) -> Self {
        Self::start_on(data, "127.0.0.1:0")
    }

    pub fn start_on(data: &Path, listen: &str) -> Self {
        Self::start_with(data, listen, &[])
    }

    /// Starts a server with more `serve` flags (e.g. `--smtp`).
    pub fn start_with(data: &Path, listen: &str, extra: &[&str]) -> Self {
        Self::start_with_console(data, listen, "127.0.0.1:0", extra)
    }

    /// Starts a server with its gRPC API on `listen`, its console on `console`, and more
    /// `serve` flags (such as `--console-tls`).
    pub fn start_with_console(data: &Path, listen: &str, console: &str, extra: &[&str]) -> Self {
        Self::start_in_shell(data, listen, console, extra, "")
    }

    /// As [`start_with_console`](Self::start_with_console), with `setup` run by `sh` first
    /// in the process that then becomes the server (`umask 022`, `ulimit -Sn 1024`). A
    /// [`restart`](Self::restart) starts it without.
    pub fn start_in_shell(
        data: &Path,
        listen: &str,
        console: &str,
        extra: &[&str],
        setup: &str,
    ) -> Self {
        let mut cmd = if setup.is_empty() {
            Command::new(bin("vakt-server"))
        } else {
            let mut sh = Command::new("sh");
            sh.args(["-c", &format!("{setup} && exec \"$0\" \"$@\"")])
                .arg(bin("vakt-server"));
            sh
        };
        cmd.args(["serve", "--data"])
            .arg(data)
            .args(["--listen", listen, "--console", console])
            .args(extra)
            .env("VAKT_LOG", "info,vakt_server=debug")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("spawn vakt-server");
        let stderr = child.stderr.take().expect("stderr");
        let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let log2 = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("serving gRPC on https://").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send((false, addr));
                }
                if let Some(rest) = line.split("serving the console on ").nth(1) {
                    let url = rest.split_whitespace().next().unwrap_or("").to_string();
                    let _ = tx.send((true, url));
                }
                log2.lock().unwrap().push(line);
            }
        });
        let (mut addr, mut console_url) = (None, None);
        while addr.is_none() || console_url.is_none() {
            match rx.recv_timeout(Duration::from_secs(30)) {
                Ok((true, url)) => console_url = Some(url),
                Ok((false, a)) => addr = Some(a),
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "vakt-server did not start; its log:\n{}",
                        log.lock().unwrap().join("\n")
                    );
                }
            }
        }
        Self {
            data: data.to_path_buf(),
            addr: addr.unwrap(),
            console: console_url.unwrap(),
            child: Some(child),
            log,
            extra: extra.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The console's address, `127.0.0.1:PORT`.
    pub fn console_addr(&self) -> &str {
        self.console
            .split_once("://")
            .map_or(self.console.as_str(), |(_, a)| a)
    }

    pub fn url(&self) -> String {
        format!("https://{}", self.addr)
    }

    pub fn ca_path(&self) -> PathBuf {
        self.data.join("ca.pem")
    }

    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_path()).unwrap()
    }

    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data.join("admin.token"))
            .unwrap()
            .trim()
            .to_string()
    }

    /// Runs `vakt ARGS` against this server with the initial admin token.
    pub fn vakt(&self, args: &[&str]) -> Output {
        self.vakt_with_token(&self.admin_token(), args)
    }

    pub fn vakt_with_token(&self, token: &str, args: &[&str]) -> Output {
        Command::new(bin("vakt"))
            .args(args)
            .env("VAKT_SERVER", self.url())
            .env("VAKT_CA", self.ca_path())
            .env("VAKT_TOKEN", token)
            .env_remove("VAKT_TOKEN_FILE")
            .output()
            .expect("run vakt")
    }

    /// `vakt ARGS`, which must succeed; its stdout.
    pub fn vakt_ok(&self, args: &[&str]) -> String {
        let out = self.vakt(args);
        assert!(
            out.status.success(),
            "vakt {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    }

    /// `vakt ARGS --json`, parsed.
    pub fn vakt_json(&self, args: &[&str]) -> serde_json::Value {
        let mut a = args.to_vec();
        a.push("--json");
        serde_json::from_str(&self.vakt_ok(&a)).expect("vakt --json prints JSON")
    }

    /// Creates an admin API token with `role` and `name`; the token.
    pub fn create_admin_token(&self, role: &str, name: &str) -> String {
        self.vakt_ok(&["admin-token", "create", "--role", role, "--name", name])
            .trim()
            .to_string()
    }

    pub fn enroll_token(&self, extra: &[&str]) -> String {
        let mut a = vec!["enroll-token", "create"];
        a.extend_from_slice(extra);
        self.vakt_ok(&a).trim().to_string()
    }

    /// Kills the server at once (SIGKILL: nothing gets a chance to flush).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Everything the server has logged so far.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }

    /// Sends SIGTERM and waits up to `within` for the process to exit: its exit status, or
    /// `None` if it is still running (it is then killed).
    pub fn terminate(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // Our own child, not reaped yet, so the pid is still its.
        let sent = Command::new("kill")
            .args(["-TERM", &c.id().to_string()])
            .status()
            .expect("run kill");
        assert!(sent.success(), "kill -TERM {}", c.id());
        let start = Instant::now();
        while start.elapsed() < within {
            if let Some(status) = c.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = c.kill();
        let _ = c.wait();
        None
    }

    /// Kills and starts again on the same data directory and ports.
    pub fn restart(&mut self) {
        self.kill();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        let again = Self::start_with_console(&self.data, &self.addr, self.console_addr(), &extra);
        *self = again;
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A laptop's file tree for an agent's `root`: `etc/passwd` and `etc/shadow` with root and
/// the given users (uid 1000 on, each with a password hash that a lock can expire), and their
/// home directories. Never this machine's own accounts.
pub fn laptop_root(dir: &Path, users: &[&str]) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let mut passwd = String::from("root:x:0:0:root:/root:/bin/bash\n");
    let mut shadow = String::from("root:*:19000:0:99999:7:::\n");
    for (i, user) in users.iter().enumerate() {
        let uid = 1000 + i;
        passwd.push_str(&format!(
            "{user}:x:{uid}:{uid}:{user}:/home/{user}:/bin/bash\n"
        ));
        shadow.push_str(&format!("{user}:$y$j9T${uid}:19000:0:99999:7:::\n"));
        std::fs::create_dir_all(root.join("home").join(user)).unwrap();
    }
    std::fs::write(root.join("etc/passwd"), passwd).unwrap();
    std::fs::write(root.join("etc/shadow"), shadow).unwrap();
    root
}

/// An agent's directory: config, state, token file.
pub struct TestAgent {
    pub dir: PathBuf,
}

impl TestAgent {
    /// Writes a config for `server` under `dir`, with `token` in the token file.
    pub fn new(dir: &Path, server: &TestServer, token: &str) -> Self {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("enroll.token"), format!("{token}\n")).unwrap();
        let cfg = format!(
            "server = \"{}\"\nca = {:?}\nstate_dir = {:?}\nenroll_token_file = {:?}\nreport_interval = \"10s\"\n",
            server.url(),
            server.ca_path().display().to_string(),
            dir.join("state").display().to_string(),
            dir.join("enroll.token").display().to_string(),
        );
        std::fs::write(dir.join("agent.toml"), cfg).unwrap();
        Self {
            dir: dir.to_path_buf(),
        }
    }

    /// As [`new`](Self::new), with more config lines (root, system_bus, [lock], [wipe]...).
    pub fn with_config(dir: &Path, server: &TestServer, token: &str, extra: &str) -> Self {
        let a = Self::new(dir, server, token);
        let mut cfg = std::fs::read_to_string(a.config()).unwrap();
        cfg.push_str(extra);
        std::fs::write(a.config(), cfg).unwrap();
        a
    }

    /// Starts `vakt-agent run` in the background; killed when the guard drops.
    pub fn spawn(&self) -> AgentProcess {
        self.spawn_with_env(&[])
    }

    /// As [`spawn`](Self::spawn), with more environment (LD_PRELOAD of libfaketime, say).
    pub fn spawn_with_env(&self, env: &[(&str, &str)]) -> AgentProcess {
        let log = self.dir.join("agent.log");
        let child = Command::new(bin("vakt-agent"))
            .args(["run", "--config"])
            .arg(self.config())
            .envs(env.iter().copied())
            .env("VAKT_LOG", "info,vakt_agent=debug")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("spawn vakt-agent");
        AgentProcess { child, log }
    }

    pub fn config(&self) -> PathBuf {
        self.dir.join("agent.toml")
    }

    /// `vakt-agent run --once`.
    pub fn run_once(&self) -> Output {
        Command::new(bin("vakt-agent"))
            .args(["run", "--once", "--config"])
            .arg(self.config())
            .output()
            .expect("run vakt-agent")
    }

    pub fn identity(&self) -> serde_json::Value {
        serde_json::from_str(
            &std::fs::read_to_string(self.dir.join("state/identity.json")).unwrap(),
        )
        .unwrap()
    }

    pub fn device_id(&self) -> String {
        self.identity()["device_id"].as_str().unwrap().to_string()
    }

    pub fn state_file(&self, name: &str) -> String {
        std::fs::read_to_string(self.dir.join("state").join(name)).unwrap()
    }
}

/// A running `vakt-agent run`; killed (SIGKILL) when dropped.
pub struct AgentProcess {
    child: Child,
    pub log: PathBuf,
}

impl AgentProcess {
    /// What the agent logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for AgentProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Waits until `f` is true, polling without blocking the async runtime; panics with `what`
/// after `timeout`.
pub async fn wait_until(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Whether a tool CI installs must be there (`VAKT_REQUIRE_TOOLS=1`): then a missing tool fails
/// the test instead of skipping it.
pub fn tools_required() -> bool {
    std::env::var("VAKT_REQUIRE_TOOLS").is_ok_and(|v| !v.is_empty() && v != "0")
}

/// A real SMTP server (aiosmtpd) on a loopback port, storing mail in a maildir.
pub struct SmtpSink {
    child: Child,
    pub port: u16,
    pub maildir: PathBuf,
    _dir: tempfile::TempDir,
}

impl SmtpSink {
    /// Starts aiosmtpd; `Err(reason)` when it is not installed (see .ci/install-smtp.sh).
    pub fn start() -> Result<Self, String> {
        let python = std::env::var("VAKT_SMTP_PYTHON")
            .unwrap_or_else(|_| "/opt/vakt-ci/smtp/bin/python3".into());
        let ok = Command::new(&python)
            .args(["-c", "import aiosmtpd"])
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            return Err(format!(
                "aiosmtpd is not installed for {python} (run .ci/install-smtp.sh)"
            ));
        }
        let dir = tempfile::tempdir().unwrap();
        let maildir = dir.path().join("maildir");
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new(&python)
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(&maildir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot start aiosmtpd: {e}"))?;
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if start.elapsed() > Duration::from_secs(15) {
                return Err("aiosmtpd did not start listening".into());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        Ok(Self {
            child,
            port,
            maildir,
            _dir: dir,
        })
    }

    pub fn url(&self) -> String {
        format!("smtp://127.0.0.1:{}", self.port)
    }

    /// Every message received so far, as raw text.
    pub fn messages(&self) -> Vec<String> {
        let mut out = Vec::new();
        for sub in ["new", "cur"] {
            if let Ok(rd) = std::fs::read_dir(self.maildir.join(sub)) {
                for e in rd.flatten() {
                    out.push(std::fs::read_to_string(e.path()).unwrap_or_default());
                }
            }
        }
        out
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Waits until `f` is true, polling; panics with `what` after `timeout`.
pub fn wait_for(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if f() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("timed out after {timeout:?} waiting for {what}");
}

/// Whether a client presenting a self-signed certificate (of a CA the server never saw) gets
/// a report call through the TLS handshake to the agent API at `url`: an acknowledgement or
/// the API's own refusal both count, since either means the connection was accepted. It must
/// not be: the handshake refuses the certificate.
pub async fn foreign_ca_gets_through(url: &str, ca_pem: &str) -> bool {
    let key = rcgen::KeyPair::generate().unwrap();
    let foreign = rcgen::CertificateParams::new(vec!["intruder".to_string()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    let identity = (foreign.pem(), key.serialize_pem());
    let Ok(ch) = vakt_agent::link::connect(url, ca_pem, Some((&identity.0, &identity.1))).await
    else {
        return false;
    };
    let req = vakt_proto::pb::ReportRequest {
        sequence: 1,
        ..Default::default()
    };
    match vakt_proto::pb::agent_service_client::AgentServiceClient::new(ch)
        .report(req)
        .await
    {
        Ok(_) => true,
        Err(s) => matches!(
            s.code(),
            tonic::Code::Unauthenticated
                | tonic::Code::PermissionDenied
                | tonic::Code::InvalidArgument
        ),
    }
}

/// stderr of a finished process, as text.
/// Runs `vakt-server serve` on `data` (ephemeral ports) with `args`, which must make it exit
/// with an error at start; returns what it said. A server that wrongly starts would run for
/// ever: it is given a minute, then killed, and the test fails.
pub fn serve_fails(data: &Path, args: &[&str]) -> String {
    use std::io::Read;
    let mut child = Command::new(bin("vakt-server"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--console",
            "127.0.0.1:0",
        ])
        .arg("--data")
        .arg(data)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("vakt-server runs");
    let mut pipe = child.stderr.take().expect("stderr is piped");
    let reader = std::thread::spawn(move || {
        let mut text = String::new();
        let _ = pipe.read_to_string(&mut text);
        text
    });
    let start = std::time::Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for vakt-server") {
            break status;
        }
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "serve {args:?} started: {}",
                reader.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let err = reader.join().unwrap_or_default();
    assert!(!status.success(), "serve {args:?} exited 0: {err}");
    err
}

/// Writes a secret file (a key, a token, a client secret) readable by its owner alone, as the
/// server demands of secrets (`fsutil::exposed`).
pub fn write_secret(path: &Path, text: &str) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).expect("write a secret file");
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))
        .expect("chmod 600 a secret file");
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
