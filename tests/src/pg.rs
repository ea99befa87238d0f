//! A private PostgreSQL cluster for tests: `initdb` and `pg_ctl` in a temporary directory, on
//! a free loopback port, stopped (and deleted) on drop.
//!
//! PostgreSQL refuses to run as root, and CI runs as root: then every PostgreSQL command runs
//! as the `postgres` system user the Debian package creates (`runuser -u postgres --`), on a
//! directory handed to that user. Authentication is `trust` for the cluster's own superuser,
//! which is fine on a loopback port of a cluster that lives as long as one test.
//!
//! [`PgCluster::shared`] is one cluster for a whole test binary (initdb costs seconds, a
//! database milliseconds): tests take a fresh database each. A static is never dropped, so a
//! watchdog process stops that cluster and deletes its directory when the test binary exits,
//! however it exits (it waits for the end of a pipe only the test process holds).

use std::io::Write;
use std::path::PathBuf;
use std::process::{ChildStdin, Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};

/// The superuser `initdb` creates, and the user in every URL the cluster hands out.
const USER: &str = "vakt";

/// A running cluster. Each test takes a database of its own ([`PgCluster::database`]).
pub struct PgCluster {
    bin: PathBuf,
    data: PathBuf,
    port: u16,
    /// `Some("postgres")` when this process is root and PostgreSQL runs as that user.
    run_as: Option<&'static str>,
    /// More `-c name=value` settings for the server (TLS).
    settings: String,
    dir: tempfile::TempDir,
}

/// Where the PostgreSQL programs are: the directory `initdb` in `PATH` really lives in, else
/// Debian's versioned directory (the package keeps them out of `PATH`), the newest version.
fn find_bin() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("PATH") {
        for d in std::env::split_paths(&path) {
            // A link in PATH (/usr/local/bin/initdb) stands for the whole directory of
            // programs it points into (createdb, psql).
            if let Ok(real) = std::fs::canonicalize(d.join("initdb"))
                && let Some(dir) = real.parent()
                && dir.join("pg_ctl").is_file()
                && dir.join("psql").is_file()
            {
                return Some(dir.to_path_buf());
            }
        }
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let v = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").is_file().then_some((v, bin))
        })
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

impl PgCluster {
    /// Starts a cluster, or says why it cannot: `Err` only when `initdb` is not installed
    /// (run .ci/install-postgres.sh); with `VAKT_REQUIRE_TOOLS=1` (CI) that panics instead.
    /// Any other failure (initdb or the server failing) panics with the tool's output.
    pub fn start() -> Result<Self, String> {
        Self::start_with(&[])
    }

    /// As [`start`](Self::start), with `ssl=on` and the server certificate chain and key
    /// given (PEM), written into the cluster's directory for its user alone.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Result<Self, String> {
        Self::start_with(&[("server.crt", cert_pem), ("server.key", key_pem)])
    }

    /// As [`start_tls`](Self::start_tls), with client certificates signed by `client_ca_pem`
    /// accepted (`ssl_ca_file`), for `cert` rules in pg_hba.conf ([`set_hba`](Self::set_hba)).
    pub fn start_tls_with_client_ca(
        cert_pem: &str,
        key_pem: &str,
        client_ca_pem: &str,
    ) -> Result<Self, String> {
        Self::start_with(&[
            ("server.crt", cert_pem),
            ("server.key", key_pem),
            ("client-ca.crt", client_ca_pem),
        ])
    }

    /// Starts a cluster with `files` written into its directory first; `server.crt` among
    /// them turns TLS on, `client-ca.crt` client certificates.
    fn start_with(files: &[(&str, &str)]) -> Result<Self, String> {
        let Some(bin) = find_bin() else {
            let why = "initdb is not installed (run .ci/install-postgres.sh)".to_string();
            assert!(!crate::tools_required(), "{why}");
            return Err(why);
        };
        // /proc/self belongs to the effective user: root there means PostgreSQL would refuse.
        let root = std::fs::metadata("/proc/self")
            .map(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
            .unwrap_or(false);
        let run_as = root.then_some("postgres");
        let dir = tempfile::Builder::new()
            .prefix("vakt-pg")
            .tempdir()
            .expect("temporary directory");
        if let Some(user) = run_as {
            let out = Command::new("chown")
                .args([user, "--"])
                .arg(dir.path())
                .output()
                .expect("run chown");
            assert!(
                out.status.success(),
                "chown {user}: {}",
                crate::stderr(&out)
            );
        }
        let data = dir.path().join("data");
        let mut settings = String::new();
        for (name, contents) in files {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).expect("write a cluster file");
            // PostgreSQL refuses a key others can read.
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod a cluster file");
            if let Some(user) = run_as {
                let out = Command::new("chown")
                    .arg(user)
                    .arg(&path)
                    .output()
                    .expect("chown");
                assert!(
                    out.status.success(),
                    "chown {name}: {}",
                    crate::stderr(&out)
                );
            }
        }
        if files.iter().any(|(name, _)| *name == "server.crt") {
            settings = format!(
                " -c ssl=on -c ssl_cert_file={0}/server.crt -c ssl_key_file={0}/server.key",
                dir.path().display()
            );
        }
        if files.iter().any(|(name, _)| *name == "client-ca.crt") {
            settings.push_str(&format!(
                " -c ssl_ca_file={}/client-ca.crt",
                dir.path().display()
            ));
        }
        let cluster = Self {
            bin,
            data,
            port: crate::free_port(),
            run_as,
            settings,
            dir,
        };
        let out = cluster.run(
            "initdb",
            &[
                "--auth=trust",
                "--username",
                USER,
                "--encoding=UTF8",
                "--locale=C",
                // Only initdb's own files are not synced: the cluster dies with the test.
                "--no-sync",
                "-D",
            ],
            &[cluster.data.as_os_str()],
        );
        assert!(out.status.success(), "initdb: {}", crate::stderr(&out));
        cluster.pg_ctl_start();
        Ok(cluster)
    }

    /// `pg_ctl start` on the cluster's port, waiting until it accepts connections.
    fn pg_ctl_start(&self) {
        let opts = format!(
            // Small shared memory: many test clusters run at once beside the other suites.
            "-c listen_addresses=127.0.0.1 -p {} -k {} -c max_connections=200 \
             -c shared_buffers=16MB{}",
            self.port,
            self.dir.path().display(),
            self.settings
        );
        let log = self.dir.path().join("server.log");
        let out = self.run(
            "pg_ctl",
            &["start", "-w", "-t", "60", "-o", &opts, "-l"],
            &[log.as_os_str(), "-D".as_ref(), self.data.as_os_str()],
        );
        assert!(
            out.status.success(),
            "pg_ctl start: {}\n{}",
            crate::stderr(&out),
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }

    /// Stops the server the way an administrator's restart does (`pg_ctl stop -m fast`:
    /// sessions are ended, open transactions rolled back); [`start_again`](Self::start_again)
    /// brings it back on the same port and data.
    pub fn stop_fast(&self) {
        let out = self.stop("fast");
        assert!(out.status.success(), "pg_ctl stop: {}", crate::stderr(&out));
    }

    /// Starts the stopped server again, waiting until it accepts connections.
    pub fn start_again(&self) {
        self.pg_ctl_start();
    }

    fn stop(&self, mode: &str) -> Output {
        self.run(
            "pg_ctl",
            &["stop", "-w", "-m", mode, "-D"],
            &[self.data.as_os_str()],
        )
    }

    /// Runs one of PostgreSQL's programs, as the `postgres` user when we are root.
    fn run(&self, program: &str, args: &[&str], paths: &[&std::ffi::OsStr]) -> Output {
        self.command(program, args, paths)
            .stdin(Stdio::null())
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"))
    }

    /// `program` of the cluster's installation with `args` and `paths`, as the user the
    /// cluster runs as, in its directory.
    fn command(&self, program: &str, args: &[&str], paths: &[&std::ffi::OsStr]) -> Command {
        let exe = self.bin.join(program);
        let mut cmd = match self.run_as {
            Some(user) => {
                let mut c = Command::new("runuser");
                c.args(["-u", user, "--"]).arg(exe);
                c
            }
            None => Command::new(exe),
        };
        cmd.args(args).args(paths).current_dir(self.dir.path());
        cmd
    }

    /// A psql session on database `name` that has sent `statements` and stays connected,
    /// keeping what they took (session locks, an open transaction), until it is dropped:
    /// another server that stopped in the middle of its work, for the tests of what waits
    /// for it.
    pub fn session(&self, name: &str, statements: &str) -> Session {
        let args = self.psql_args(name);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let mut child = self
            .command("psql", &args, &[])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("run psql: {e}"));
        let mut stdin = child.stdin.take().unwrap_or_else(|| panic!("psql's stdin"));
        writeln!(stdin, "{statements}").unwrap_or_else(|e| panic!("write to psql: {e}"));
        Session {
            child,
            _stdin: stdin,
        }
    }

    /// This test binary's cluster, started at first use; `Err` (why) as [`PgCluster::start`].
    pub fn shared() -> Result<&'static Self, String> {
        static SHARED: OnceLock<Result<(PgCluster, ChildStdin), String>> = OnceLock::new();
        SHARED
            .get_or_init(|| {
                let cluster = Self::start()?;
                let watchdog = cluster.watchdog();
                Ok((cluster, watchdog))
            })
            .as_ref()
            .map(|(c, _)| c)
            .map_err(Clone::clone)
    }

    /// A process that stops this cluster and removes its directory once its stdin reaches
    /// its end: when the returned pipe end is closed, which the kernel does when this
    /// process exits. It ignores the signals a Ctrl-C or a killed test run sends its group.
    // The lint does not see the wait in the thread below.
    #[allow(clippy::zombie_processes)]
    fn watchdog(&self) -> ChildStdin {
        let pg_ctl = self.bin.join("pg_ctl");
        let stop = match self.run_as {
            Some(user) => format!("runuser -u {user} -- \"$1\" stop -m immediate -D \"$2\""),
            None => "\"$1\" stop -m immediate -D \"$2\"".to_string(),
        };
        let script = format!(
            "trap '' INT TERM HUP; cat >/dev/null; {stop} >/dev/null 2>&1; rm -rf -- \"$3\""
        );
        let mut child = Command::new("sh")
            .args(["-c", &script, "vakt-pg-watchdog"])
            .arg(pg_ctl)
            .arg(&self.data)
            .arg(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawn the PostgreSQL watchdog");
        let mut stdin = child.stdin.take().expect("watchdog stdin");
        // Proof that the pipe works; the watchdog reads until its end.
        stdin
            .write_all(b"watching\n")
            .expect("write to the watchdog");
        stdin
    }

    /// A fresh database with a name no other test of this binary has, and its URL.
    /// Where the servers on database `db` keep their `--secrets-key` (the first creates it;
    /// inside the cluster's directory, so it goes with the cluster).
    pub fn secrets_key(&self, db: &str) -> PathBuf {
        self.dir.path().join(format!("{db}.secrets.key"))
    }

    pub fn fresh_database(&self) -> String {
        static NEXT: AtomicU32 = AtomicU32::new(1);
        self.database(&format!("test_{}", NEXT.fetch_add(1, Ordering::Relaxed)))
    }

    /// The loopback port the server listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// A new, empty database named `name` and its URL, as `--store` takes it.
    pub fn database(&self, name: &str) -> String {
        let port = self.port.to_string();
        let out = self.run(
            "createdb",
            &["-h", "127.0.0.1", "-p", &port, "-U", USER, name],
            &[],
        );
        assert!(
            out.status.success(),
            "createdb {name}: {}",
            crate::stderr(&out)
        );
        self.url(name)
    }

    /// The URL of database `name` (which may not exist).
    pub fn url(&self, name: &str) -> String {
        format!("postgresql://{USER}@127.0.0.1:{}/{name}", self.port)
    }

    /// Puts `rules` in front of pg_hba.conf's (the first that matches a connection decides)
    /// and has the server take them, waiting until `database` refuses a plain connection
    /// from psql (what the harness's own connections are; so `rules` must be for databases
    /// the harness does not use, and refuse it on `database`).
    pub fn set_hba(&self, rules: &str, database: &str) {
        let hba = self.data.join("pg_hba.conf");
        let old = std::fs::read_to_string(&hba).expect("read pg_hba.conf");
        // Rewritten in place: its owner (the cluster's user) stays.
        std::fs::write(&hba, format!("{rules}\n{old}")).expect("write pg_hba.conf");
        let out = self.run("pg_ctl", &["reload", "-D"], &[self.data.as_os_str()]);
        assert!(
            out.status.success(),
            "pg_ctl reload: {}",
            crate::stderr(&out)
        );
        let mut args = self.psql_args(database);
        args.extend(["-c", "SELECT 1"].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        for _ in 0..100 {
            if !self.run("psql", &args, &[]).status.success() {
                return;
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        panic!("pg_hba.conf's new rules never refused psql on {database}");
    }

    /// psql's arguments for a quiet session on database `name` that stops at the first error.
    fn psql_args(&self, name: &str) -> Vec<String> {
        let port = self.port.to_string();
        let args = [
            "-X",
            "-q",
            "-v",
            "ON_ERROR_STOP=1",
            "-h",
            "127.0.0.1",
            "-p",
            &port,
        ];
        let mut v: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        v.extend(["-U", USER, "-d", name].map(String::from));
        v
    }

    /// Runs one SQL statement in database `name` with psql; panics if it fails.
    pub fn sql(&self, name: &str, statement: &str) -> String {
        let mut args = self.psql_args(name);
        args.extend(["-t", "-A", "-c", statement].map(String::from));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = self.run("psql", &args, &[]);
        assert!(
            out.status.success(),
            "psql {statement}: {}",
            crate::stderr(&out)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

/// A connected psql session ([`PgCluster::session`]); killed on drop, which closes its
/// connection (PostgreSQL then rolls back and releases what it held, as for a server killed
/// or cut off).
pub struct Session {
    child: std::process::Child,
    /// Open while the session lives: psql ends when its input does.
    _stdin: ChildStdin,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        // Immediate: nothing in a test cluster is worth a checkpoint, and the directory goes.
        let _ = self.stop("immediate");
    }
}

/// `n` replicas of `vakt-server` on one new database `db` of `pg`, each with a data directory
/// of its own (`dir/replica-I`) and the same `--secrets-key` ([`PgCluster::secrets_key`]).
/// The first initialises the database (creating the key and writing `admin.token`); the
/// others are given a copy of that `admin.token`, which the tests' `vakt` calls use on every
/// replica. The one place tests start replicas.
pub fn start_replicas(
    pg: &PgCluster,
    db: &str,
    dir: &std::path::Path,
    n: usize,
) -> Vec<crate::TestServer> {
    let url = pg.database(db);
    let key = pg.secrets_key(db).display().to_string();
    let data = |i: usize| dir.join(format!("replica-{i}"));
    let mut replicas = Vec::with_capacity(n);
    for i in 0..n {
        if i > 0 {
            std::fs::create_dir_all(data(i)).expect("replica data directory");
            std::fs::copy(data(0).join("admin.token"), data(i).join("admin.token"))
                .unwrap_or_else(|e| panic!("copy admin.token to replica {i}: {e}"));
        }
        replicas.push(crate::TestServer::start_with(
            &data(i),
            "127.0.0.1:0",
            &["--store", &url, "--secrets-key", &key],
        ));
    }
    replicas
}
