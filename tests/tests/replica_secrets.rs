//! Server replicas on one PostgreSQL database share one installation: two replicas started at
//! the same moment on an empty database make one CA, one initial admin token (written by the
//! one that won) and one command-signing keyring, sealed in the database under the
//! `--secrets-key` file; an agent enrolled through one reports to the other; a rotation on one
//! reaches an agent held by the other, which then runs a lock queued there, and a retirement on
//! one is seen by the other. A wrong, missing or
//! malformed key is refused at start with nothing written. Skips, saying why, only when
//! PostgreSQL is not installed.

#![allow(clippy::unwrap_used)] // a test file: helpers outside #[test] fns may unwrap too

use serde_json::Value;
use std::path::{Path, PathBuf};
use std::time::Duration;
use vakt_tests::pg::PgCluster;
use vakt_tests::{TestAgent, TestServer, serve_fails, stderr, wait_until};

fn cluster() -> Option<PgCluster> {
    PgCluster::start()
        .map_err(|why| eprintln!("skipped: {why}"))
        .ok()
}

/// A replica of the installation in `url` with its own data directory and key file copy.
fn replica(data: &Path, url: &str, key: &Path) -> TestServer {
    TestServer::start_with(
        data,
        "127.0.0.1:0",
        &["--store", url, "--secrets-key", key.to_str().unwrap()],
    )
}

/// Writes the same secrets key to every path (what an operator copies to each replica).
fn copies_of_one_key(paths: &[&Path]) {
    let text = format!("# a test key\n{}\n", "5a".repeat(32));
    for p in paths {
        vakt_tests::write_secret(p, &text);
    }
}

/// Points the agent's config at `url`, keeping the rest of it.
fn set_server(agent: &TestAgent, url: &str) {
    let cfg = std::fs::read_to_string(agent.config()).unwrap();
    let cfg: Vec<String> = cfg
        .lines()
        .map(|l| {
            if l.starts_with("server = ") {
                format!("server = {url:?}")
            } else {
                l.to_string()
            }
        })
        .collect();
    std::fs::write(agent.config(), cfg.join("\n") + "\n").unwrap();
}

fn vakt_json(server: &TestServer, token: &str, args: &[&str]) -> Value {
    let mut a = args.to_vec();
    a.push("--json");
    let out = server.vakt_with_token(token, &a);
    assert!(out.status.success(), "vakt {args:?}: {}", stderr(&out));
    serde_json::from_slice(&out.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_started_at_once_share_one_installation() {
    let Some(pg) = cluster() else { return };
    let url = pg.database("vakt");
    let tmp = tempfile::tempdir().unwrap();
    let (key_a, key_b) = (tmp.path().join("a.key"), tmp.path().join("b.key"));
    copies_of_one_key(&[&key_a, &key_b]);
    let (data_a, data_b) = (tmp.path().join("a"), tmp.path().join("b"));

    // Both at the same moment on the empty database.
    let start = |data: PathBuf, key: PathBuf| {
        let url = url.clone();
        std::thread::spawn(move || replica(&data, &url, &key))
    };
    let (ta, tb) = (
        start(data_a.clone(), key_a.clone()),
        start(data_b.clone(), key_b.clone()),
    );
    let (a, b) = (ta.join().unwrap(), tb.join().unwrap());

    // Exactly one initialised the database and holds admin.token; one token, one audit entry.
    let tokens: Vec<&Path> = [&data_a, &data_b]
        .into_iter()
        .filter(|d| d.join("admin.token").exists())
        .map(PathBuf::as_path)
        .collect();
    assert_eq!(tokens.len(), 1, "admin.token in exactly one of the two");
    let token = std::fs::read_to_string(tokens[0].join("admin.token"))
        .unwrap()
        .trim()
        .to_string();
    let count = |tree: &str| {
        pg.sql(
            "vakt",
            &format!("SELECT count(*) FROM vakt_kv WHERE tree = '{tree}'"),
        )
    };
    assert_eq!(count("admin_tokens"), "1");
    assert_eq!(count("audit"), "1");
    // The CA key and generation 0 of the signing key, sealed in the database...
    assert_eq!(count("secrets"), "3");
    assert_eq!(
        pg.sql(
            "vakt",
            "SELECT count(*) FROM vakt_kv WHERE tree = 'secrets' \
             AND position(convert_to('PRIVATE KEY', 'UTF8') in value) > 0"
        ),
        "0",
        "nothing in the secrets tree is readable without the key"
    );
    // ...and no data directory holds a shared secret, only its own files.
    assert_eq!(a.ca_pem(), b.ca_pem(), "one CA");
    for d in [&data_a, &data_b] {
        for f in ["ca.key", "command.key", "command-key.1.pem", "db"] {
            assert!(!d.join(f).exists(), "{f} in {}", d.display());
        }
        for f in ["ca.pem", "server.pem", "lock"] {
            assert!(d.join(f).exists(), "{f} missing in {}", d.display());
        }
    }

    // An agent enrolled through A reports to B with the same certificate.
    let out = a.vakt_with_token(&token, &["enroll-token", "create"]);
    assert!(out.status.success(), "enroll-token on A: {}", stderr(&out));
    let enroll = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let mark = tmp.path().join("locked");
    let agent = TestAgent::with_config(
        &tmp.path().join("agent"),
        &a,
        &enroll,
        &format!(
            "[lock]\nmethod = \"command\"\ncommand = [\"/bin/sh\", \"-c\", \"date > '{}'\"]\n",
            mark.display()
        ),
    );
    let out = agent.run_once();
    assert!(out.status.success(), "agent via A: {}", stderr(&out));
    let device = agent.device_id();
    set_server(&agent, &b.url());
    let out = agent.run_once();
    assert!(out.status.success(), "agent via B: {}", stderr(&out));
    let shown = vakt_json(&b, &token, &["device", "show", &device]);
    assert_eq!(shown["last_report_sequence"], 2, "{shown}");

    // The agent is held by B; a rotation on A reaches it through B.
    let proc = agent.spawn();
    wait_until("the agent to connect to B", Duration::from_secs(30), || {
        vakt_json(&b, &token, &["device", "show", &device])["connected"] == true
    })
    .await;
    let rotated = vakt_json(&a, &token, &["signing-key", "rotate"]);
    assert_eq!(rotated["current"], 1, "{rotated}");
    wait_until(
        "the agent on B to trust generation 1",
        Duration::from_secs(30),
        || vakt_json(&b, &token, &["device", "show", &device])["command_key_generation"] == 1,
    )
    .await;
    let on_b = vakt_json(&b, &token, &["signing-key", "show"]);
    assert_eq!(on_b["current"], 1, "{on_b}");
    assert_eq!(
        on_b["generations"][1]["fingerprint"], rotated["generations"][1]["fingerprint"],
        "B hands out A's generation 1"
    );
    assert_eq!(count("secrets"), "4");

    // A lock queued on B is signed with generation 1 and runs.
    let out = b.vakt_with_token(
        &token,
        &[
            "loss",
            "report",
            &device,
            "--reported-by",
            "anna@sorsele.se",
        ],
    );
    assert!(out.status.success(), "loss report on B: {}", stderr(&out));
    wait_until("the lock to run", Duration::from_secs(30), || mark.exists()).await;

    // Generation 0 retired on B: its sealed private item is swapped for its public form, and
    // A (which made generation 1 from it) says so too.
    let retired = vakt_json(&b, &token, &["signing-key", "retire", "--through", "0"]);
    assert_eq!(retired["retired_now"], serde_json::json!([0]), "{retired}");
    let on_a = vakt_json(&a, &token, &["signing-key", "show"]);
    assert_eq!(on_a["generations"][0]["retired"], true, "{on_a}");
    assert_eq!(on_a["generations"][1]["retired"], false, "{on_a}");
    assert_eq!(count("secrets"), "4");
    drop(proc);
}

#[test]
fn a_wrong_missing_or_malformed_secrets_key_is_refused_with_nothing_written() {
    let tmp = tempfile::tempdir().unwrap();
    let key_a = tmp.path().join("a.key");
    let data_b = tmp.path().join("b");

    // Without a PostgreSQL store, and a PostgreSQL store without a key: said at once.
    let err = serve_fails(&data_b, &["--secrets-key", key_a.to_str().unwrap()]);
    assert!(err.contains("only for a PostgreSQL store"), "{err}");
    let err = serve_fails(&data_b, &["--store", "postgresql://vakt@127.0.0.1:1/vakt"]);
    assert!(err.contains("needs --secrets-key FILE"), "{err}");
    assert!(!data_b.exists());

    let Some(pg) = cluster() else { return };
    let url = pg.database("vakt");
    // The first replica creates the key file (private) as it initialises the database.
    let a = replica(&tmp.path().join("a"), &url, &key_a);
    let text = std::fs::read_to_string(&key_a).unwrap();
    assert!(
        text.lines()
            .any(|l| l.len() == 64 && l.bytes().all(|b| b.is_ascii_hexdigit())),
        "{text}"
    );
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&key_a).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    let rows = || pg.sql("vakt", "SELECT count(*) FROM vakt_kv");
    let before = rows();

    // Another key: refused, naming the file; nothing in the data directory or the database.
    let key_b = tmp.path().join("b.key");
    copies_of_one_key(&[&key_b]);
    let key_arg = key_b.to_str().unwrap();
    let err = serve_fails(&data_b, &["--store", &url, "--secrets-key", key_arg]);
    assert!(
        err.contains(key_arg) && err.contains("sealed with another key"),
        "{err}"
    );
    assert!(!data_b.exists(), "the data directory was written");
    assert_eq!(rows(), before, "the database was written");

    // No key file at all on an initialised database: refused, and no key file made.
    let missing = tmp.path().join("missing.key");
    let err = serve_fails(
        &data_b,
        &["--store", &url, "--secrets-key", missing.to_str().unwrap()],
    );
    assert!(
        err.contains("give this replica a copy of the secrets key"),
        "{err}"
    );
    assert!(!missing.exists() && !data_b.exists());

    // A malformed one: the file named, and what is wrong with it.
    vakt_tests::write_secret(&key_b, "hunter2\n");
    let err = serve_fails(&data_b, &["--store", &url, "--secrets-key", key_arg]);
    assert!(
        err.contains(key_arg) && err.contains("not a Vakt secrets key"),
        "{err}"
    );
    assert!(!data_b.exists());

    // A copy of the right key: B serves the same installation, without an admin.token.
    std::fs::copy(&key_a, &key_b).unwrap();
    let b = replica(&data_b, &url, &key_b);
    assert_eq!(a.ca_pem(), b.ca_pem());
    assert!(!data_b.join("admin.token").exists());
    let out = b.vakt_with_token(&a.admin_token(), &["devices"]);
    assert!(
        out.status.success(),
        "A's admin token on B: {}",
        stderr(&out)
    );
}
