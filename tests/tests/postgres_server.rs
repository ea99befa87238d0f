//! `vakt-server serve --store postgresql://…` end to end: an agent enrolls and reports against
//! a server whose store is a real PostgreSQL (a private cluster), the records are in the
//! database and not in the data directory, and they survive a kill -9; a wrong URL or a
//! database of a newer schema stops the server at start with the reason, having written
//! nothing. PostgreSQL restarted under load: reports during the outage are refused, never
//! acknowledged and lost, and service resumes without restarting vakt-server. TLS to
//! PostgreSQL: `sslmode` and `sslrootcert` in the URL, checked against a cluster whose
//! certificate comes from a test CA. Skips, saying why, only when PostgreSQL is not installed.

#![allow(clippy::unwrap_used)] // a test file: helpers outside #[test] fns may unwrap too

use std::time::Duration;
use vakt_tests::load::{admin, reports, sim};
use vakt_tests::pg::PgCluster;
use vakt_tests::{TestAgent, TestServer, stderr, wait_until};

/// A server's state as `serve` prepares it, its store on a new database `db` of `pg` and its
/// data directory under `dir` (`data/`, with its `admin.token`).
async fn prepared(pg: &PgCluster, db: &str, dir: &std::path::Path) -> vakt_server::api::State {
    let location = vakt_server::store::StoreLocation::Postgres(pg.database(db));
    vakt_server::server::prepare_at(
        &dir.join("data"),
        &location,
        Some(&dir.join("secrets.key")),
        &[],
        vakt_server::notify::NotifyConfig::default(),
    )
    .await
    .unwrap()
}

fn cluster() -> Option<PgCluster> {
    PgCluster::start()
        .map_err(|why| eprintln!("skipped: {why}"))
        .ok()
}

#[test]
fn an_agent_enrolls_and_reports_against_a_server_on_postgresql() {
    let Some(pg) = cluster() else { return };
    let url = pg.database("vakt");
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let key = tmp.path().join("secrets.key");
    let mut server = TestServer::start_with(
        &data,
        "127.0.0.1:0",
        &["--store", &url, "--secrets-key", key.to_str().unwrap()],
    );
    for f in ["ca.pem", "server.pem", "admin.token", "lock"] {
        assert!(data.join(f).exists(), "{f} in the data directory");
    }
    for f in ["ca.key", "command.key"] {
        assert!(!data.join(f).exists(), "{f}: the database holds it, sealed");
    }
    assert!(key.exists(), "the secrets key was created");
    assert!(
        !data.join("db").exists(),
        "no embedded store beside PostgreSQL"
    );

    let token = server.enroll_token(&[]);
    let agent = TestAgent::new(&tmp.path().join("agent"), &server, &token);
    let out = agent.run_once();
    assert!(out.status.success(), "agent: {}", stderr(&out));
    let device_id = agent.device_id();
    let show = server.vakt_json(&["device", "show", &device_id]);
    let hostname = show["host"]["hostname"].as_str().unwrap().to_string();
    assert!(!hostname.is_empty(), "the report's host section is stored");
    // The records are PostgreSQL's: the device, its five sections, the audit entries.
    assert_eq!(
        pg.sql(
            "vakt",
            "SELECT count(*) FROM vakt_kv WHERE tree = 'devices'"
        ),
        "1"
    );
    assert_eq!(
        pg.sql(
            "vakt",
            "SELECT count(*) FROM vakt_kv WHERE tree = 'sections'"
        ),
        "5"
    );

    // kill -9 and start again: acknowledged means committed.
    server.restart();
    let show = server.vakt_json(&["device", "show", &device_id]);
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
    let audit = server.vakt_json(&["audit"]);
    assert!(
        audit.as_array().is_some_and(|a| !a.is_empty()),
        "audit log: {audit}"
    );
}

/// `serve --store url` on `data`, which must fail at start having written nothing: no data
/// directory and no secrets key. Returns what it said.
fn serve_fails(data: &std::path::Path, url: &str) -> String {
    let key = data.with_extension("key");
    let err = vakt_tests::serve_fails(
        data,
        &["--store", url, "--secrets-key", key.to_str().unwrap()],
    );
    assert!(
        !data.exists() && !key.exists(),
        "bad --store {url}: the data directory or the key was written"
    );
    err
}

#[test]
fn serve_refuses_a_wrong_store_at_start_and_writes_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("server");
    let err = serve_fails(&data, "postgresql://vakt@127.0.0.1:1/vakt");
    assert!(
        err.contains("cannot use the PostgreSQL database vakt@127.0.0.1:1/vakt"),
        "{err}"
    );
    let err = serve_fails(&data, "/var/lib/vakt");
    assert!(
        err.contains("postgresql://USER@HOST:PORT/DATABASE"),
        "{err}"
    );

    let Some(pg) = cluster() else { return };
    // TLS demanded of a cluster that has none: refused, and the password stays out of it.
    pg.database("plain");
    let err = serve_fails(
        &data,
        &format!(
            "postgresql://vakt:hunter2@127.0.0.1:{}/plain?sslmode=require",
            pg.port()
        ),
    );
    assert!(
        err.contains(&format!(
            "cannot use the PostgreSQL database vakt@127.0.0.1:{}/plain",
            pg.port()
        )) && err.contains("server does not support TLS"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    assert_eq!(
        pg.sql("plain", "SELECT to_regclass('vakt_kv') IS NULL"),
        "t",
        "nothing written to the database"
    );

    let url = pg.database("newer");
    pg.sql(
        "newer",
        "CREATE TABLE vakt_schema (version integer PRIMARY KEY); \
         INSERT INTO vakt_schema VALUES (1000)",
    );
    let err = serve_fails(&data, &url);
    assert!(
        err.contains("has schema version 1000, newer than this vakt-server knows"),
        "{err}"
    );
    assert_eq!(
        pg.sql("newer", "SELECT to_regclass('vakt_kv') IS NULL"),
        "t",
        "nothing written to the database"
    );
}

type Issuer = rcgen::Issuer<'static, rcgen::KeyPair>;

/// A test CA: its certificate (PEM) and what signs with it.
fn test_issuer() -> (String, Issuer) {
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(rcgen::DnType::CommonName, "vakt test CA");
    let ca_pem = ca.self_signed(&ca_key).unwrap().pem();
    (ca_pem, rcgen::Issuer::new(ca, ca_key))
}

/// A certificate of `issuer`'s for the name `name` (a host for a server, a database user for
/// a client, in the common name then): (certificate PEM, key PEM).
fn issue(issuer: &Issuer, name: &str, client: bool) -> (String, String) {
    let key = rcgen::KeyPair::generate().unwrap();
    let params = if client {
        let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        p.distinguished_name.push(rcgen::DnType::CommonName, name);
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ClientAuth];
        p
    } else {
        let mut p = rcgen::CertificateParams::new(vec![name.to_string()]).unwrap();
        p.extended_key_usages = vec![rcgen::ExtendedKeyUsagePurpose::ServerAuth];
        p
    };
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

/// A test CA and a server certificate of its for `host`: (CA PEM, certificate PEM, key PEM).
fn test_ca(host: &str) -> (String, String, String) {
    let (ca_pem, issuer) = test_issuer();
    let (cert, key) = issue(&issuer, host, false);
    (ca_pem, cert, key)
}

/// A replica authenticated to PostgreSQL by a client certificate (`hostssl … cert`), and a
/// password exchange bound to the TLS channel (SCRAM-SHA-256-PLUS, `channel_binding=require`):
/// both serve; without the certificate, or with its key readable by others, the server
/// refuses to start and says why. Checked: with the stream reporting no binding (as before),
/// `channel_binding=require` refused to connect.
#[test]
fn a_replica_authenticates_with_a_client_certificate_or_a_channel_bound_password() {
    let (ca_pem, issuer) = test_issuer();
    let (server_cert, server_key) = issue(&issuer, "db.vakt.test", false);
    let Some(pg) = PgCluster::start_tls_with_client_ca(&server_cert, &server_key, &ca_pem)
        .map_err(|why| eprintln!("skipped: {why}"))
        .ok()
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root.pem");
    std::fs::write(&root, &ca_pem).unwrap();
    let (cert, key) = issue(&issuer, "vakt", true);
    let (cert_file, key_file) = (tmp.path().join("client.pem"), tmp.path().join("client.key"));
    std::fs::write(&cert_file, cert).unwrap();
    std::fs::write(&key_file, key).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
    pg.database("bycert");
    pg.database("bypassword");
    pg.sql("postgres", "ALTER ROLE vakt PASSWORD 'hunter2'");
    pg.set_hba(
        "hostssl bycert all 127.0.0.1/32 cert\n\
         hostnossl bycert all 127.0.0.1/32 reject\n\
         hostssl bypassword all 127.0.0.1/32 scram-sha-256\n\
         hostnossl bypassword all 127.0.0.1/32 reject",
        "bycert",
    );
    let port = pg.port();
    let verified = format!(
        "hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={}",
        root.display()
    );
    let start = |name: &str, url: &str| {
        let key = tmp.path().join(format!("{name}.key")).display().to_string();
        TestServer::start_with(
            &tmp.path().join(name),
            "127.0.0.1:0",
            &["--store", url, "--secrets-key", &key],
        )
    };

    // The certificate: served, and PostgreSQL saw it.
    let by_cert =
        |extra: &str| format!("postgresql://vakt@db.vakt.test:{port}/bycert?{verified}{extra}");
    let with_cert = format!(
        "&sslcert={}&sslkey={}",
        cert_file.display(),
        key_file.display()
    );
    let server = start("a", &by_cert(&with_cert));
    server.enroll_token(&[]);
    let seen = pg.sql(
        "postgres",
        "SELECT DISTINCT client_dn FROM pg_stat_ssl JOIN pg_stat_activity USING (pid) \
         WHERE datname = 'bycert' AND application_name LIKE 'vakt-server%'",
    );
    assert_eq!(seen, "/CN=vakt");
    drop(server);

    // No certificate: PostgreSQL refuses, and the server says so at start.
    let err = serve_fails(&tmp.path().join("b"), &by_cert(""));
    assert!(err.contains("certificate"), "{err}");
    // A key others can read: refused before anything is sent, naming the file.
    std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
    let err = serve_fails(&tmp.path().join("c"), &by_cert(&with_cert));
    assert!(
        err.contains(&format!(
            "sslkey {}: others can read it",
            key_file.display()
        )),
        "{err}"
    );

    // The password, bound to the channel: served.
    let url = format!(
        "postgresql://vakt:hunter2@db.vakt.test:{port}/bypassword?{verified}&channel_binding=require"
    );
    let server = start("d", &url);
    server.enroll_token(&[]);
    assert!(!server.log_text().contains("hunter2"));
}

#[test]
fn tls_to_postgresql_checks_the_root_and_the_host_name() {
    let (ca, cert, key) = test_ca("db.vakt.test");
    let Some(pg) = PgCluster::start_tls(&cert, &key)
        .map_err(|why| eprintln!("skipped: {why}"))
        .ok()
    else {
        return;
    };
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root.pem");
    std::fs::write(&root, &ca).unwrap();
    let wrong = tmp.path().join("wrong.pem");
    std::fs::write(&wrong, test_ca("db.vakt.test").0).unwrap();
    let port = pg.port();
    // The certificate's name in the URL, the address beside it (hostaddr).
    let by_name = |db: &str, query: &str| {
        format!("postgresql://vakt:hunter2@db.vakt.test:{port}/{db}?hostaddr=127.0.0.1&{query}")
    };
    let by_address =
        |db: &str, query: &str| format!("postgresql://vakt@127.0.0.1:{port}/{db}?{query}");
    let encrypted = |db: &str| {
        pg.sql(
            db,
            "SELECT count(*) FILTER (WHERE ssl) || '/' || count(*) FROM pg_stat_ssl \
             JOIN pg_stat_activity USING (pid) WHERE application_name LIKE 'vakt-server%'",
        )
    };

    // verify-full with the CA that signed the certificate: the server starts and works, over
    // TLS only.
    pg.database("full");
    let url = by_name(
        "full",
        &format!("sslmode=verify-full&sslrootcert={}", root.display()),
    );
    let key = tmp.path().join("a.key").display().to_string();
    let server = TestServer::start_with(
        &tmp.path().join("a"),
        "127.0.0.1:0",
        &["--store", &url, "--secrets-key", &key],
    );
    server.enroll_token(&[]);
    let shown = encrypted("full");
    let (tls, all) = shown.split_once('/').unwrap();
    assert!(
        all != "0" && tls == all,
        "vakt-server connections over TLS/all: {shown}"
    );
    assert!(
        !server.log_text().contains("hunter2"),
        "{}",
        server.log_text()
    );
    drop(server);

    // Another CA's root (of the same name, so rustls says BadSignature): refused at start,
    // saying why, the password not shown.
    pg.database("wrong");
    let url = by_name(
        "wrong",
        &format!("sslmode=verify-full&sslrootcert={}", wrong.display()),
    );
    let err = serve_fails(&tmp.path().join("b"), &url);
    assert!(
        err.contains(&format!(
            "cannot use the PostgreSQL database vakt@db.vakt.test:{port}/wrong"
        )) && err.contains("invalid peer certificate"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");

    // The right root but a host name the certificate does not hold: verify-full refuses,
    // verify-ca (the chain only) connects.
    let err = serve_fails(
        &tmp.path().join("c"),
        &by_address(
            "wrong",
            &format!("sslmode=verify-full&sslrootcert={}", root.display()),
        ),
    );
    assert!(
        err.contains("certificate not valid for name \"127.0.0.1\""),
        "{err}"
    );
    let url = by_address(
        "wrong",
        &format!("sslmode=verify-ca&sslrootcert={}", root.display()),
    );
    let key = tmp.path().join("d.key").display().to_string();
    let server = TestServer::start_with(
        &tmp.path().join("d"),
        "127.0.0.1:0",
        &["--store", &url, "--secrets-key", &key],
    );
    server.enroll_token(&[]);
    drop(server);

    // A root file that is not there: named.
    let err = serve_fails(
        &tmp.path().join("e"),
        &by_address(
            "wrong",
            "sslmode=verify-full&sslrootcert=/nonexistent/root.pem",
        ),
    );
    assert!(
        err.contains("sslrootcert /nonexistent/root.pem cannot be read"),
        "{err}"
    );
}

/// PostgreSQL stopped (`pg_ctl stop -m fast`, as an administrator's restart does) while
/// simulated agents report without pause and a real agent reports once: during the outage
/// no report is acknowledged and the real agent keeps its report spooled; once PostgreSQL is
/// back the same vakt-server process serves again by itself (the pool drops the connections
/// PostgreSQL closed and makes new ones); every acknowledged report is in the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgresql_restarted_under_load_refuses_reports_then_resumes_losing_nothing() {
    let Some(pg) = cluster() else { return };
    let url = pg.database("vakt");
    let tmp = tempfile::tempdir().unwrap();
    let key = tmp.path().join("server.key").display().to_string();
    let server = TestServer::start_with(
        &tmp.path().join("server"),
        "127.0.0.1:0",
        &["--store", &url, "--secrets-key", &key],
    );
    let agent = TestAgent::new(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
    );
    let out = agent.run_once();
    assert!(out.status.success(), "agent: {}", stderr(&out));

    // Simulated agents: half full reports, half check-ins, all the time.
    let fleet = sim::Fleet::new(&server.url(), &server.ca_pem(), 4);
    let token = server.enroll_token(&["--uses", "8"]);
    let agents = reports::enroll(&fleet, "pgrestart", 8, &token)
        .await
        .unwrap();
    let load = reports::ReportLoad::start(&agents, Duration::from_millis(200));
    let before = load.acked();
    wait_until(
        "reports to be acknowledged",
        Duration::from_secs(60),
        || load.acked() > before + 10,
    )
    .await;

    // The outage. pg_ctl returns once PostgreSQL has stopped: from then on nothing can be
    // committed, so nothing may be acknowledged.
    tokio::task::block_in_place(|| pg.stop_fast());
    let (acked_down, refused_down) = (load.acked(), load.refused());
    let spooled = agent.state_file("report.json");
    let out = tokio::task::block_in_place(|| agent.run_once());
    assert!(
        !out.status.success(),
        "a report acknowledged with PostgreSQL down"
    );
    assert_eq!(
        agent.state_file("report.json"),
        spooled,
        "the refused report is still the agent's to send"
    );
    wait_until("reports to be refused", Duration::from_secs(30), || {
        load.refused() > refused_down + 8
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        load.acked(),
        acked_down,
        "reports acknowledged while PostgreSQL was down"
    );

    // PostgreSQL back; the same vakt-server process, not restarted, serves again.
    tokio::task::block_in_place(|| pg.start_again());
    wait_until(
        "reports to be acknowledged again",
        Duration::from_secs(60),
        || load.acked() > acked_down + 10,
    )
    .await;
    let out = tokio::task::block_in_place(|| agent.run_once());
    assert!(
        out.status.success(),
        "agent after the restart: {}",
        stderr(&out)
    );
    let report: serde_json::Value = serde_json::from_str(&agent.state_file("report.json")).unwrap();
    assert!(
        report["sequence"].as_u64().unwrap() > 1,
        "the spooled report went through: {report}"
    );

    load.stop().await;
    let mut admin = admin::client(&server.url(), &server.ca_pem(), &server.admin_token())
        .await
        .unwrap();
    let lost = admin::lost_acknowledged(&mut admin, &agents, &fleet, agents.len())
        .await
        .unwrap();
    assert!(lost.is_empty(), "acknowledged but lost: {lost:#?}");
}

/// Listing devices on PostgreSQL reads what each view adds (its hardware peers, its storage
/// section for the wipe readiness) for the whole list at once: the round trips of
/// `ListDevices` do not grow with the devices listed (6 and 4 here; 5 and 3 since session 11,
/// when the readiness kept in each device record spares the sections' read). Checked: with
/// only the hardware peers read one device at a time again, 35 and 303.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_devices_costs_postgresql_the_same_round_trips_for_30_or_300() {
    use vakt_proto::pb::admin_service_server::AdminService;
    use vakt_proto::{model, pb};
    let Some(pg) = cluster() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let state = prepared(&pg, "list", tmp.path()).await;
    let (secret, _) =
        vakt_server::api::admin::create_enroll_token(&state.store, 300, 600, "test", "")
            .await
            .unwrap();
    let report = model::Report {
        storage: model::Storage {
            volumes: vec![model::Volume {
                mount: "/".into(),
                device: "/dev/nvme0n1p3".into(),
                encrypted: true,
                scheme: Some(model::CryptScheme::Luks2),
                ..Default::default()
            }],
            wipe: Some(model::WipePlan {
                strategy: model::WipeStrategy::LuksErase,
                devices: Vec::new(),
            }),
            ..Default::default()
        },
        ..Default::default()
    };
    let sections = vakt_proto::convert::report_to_sections(&report);
    let mut enrolled = 0;
    let admin = std::fs::read_to_string(tmp.path().join("data/admin.token")).unwrap();
    let api = vakt_server::api::admin::AdminApi::new(state.clone());
    let mut cost = |n: usize| {
        let (state, secret, sections, api, admin) =
            (&state, &secret, &sections, &api, admin.trim().to_string());
        let from = enrolled;
        enrolled = n;
        async move {
            for i in from..n {
                let id = format!("dev-{i:03}");
                let hw = pb::HardwareIdentity {
                    machine_id: format!("m{i}"),
                    ..Default::default()
                };
                let device = pb::Device {
                    id: id.clone(),
                    hostname: format!("lap-{i:03}"),
                    ..Default::default()
                };
                let mut cert = [0u8; 32];
                cert[..8].copy_from_slice(&(i as u64).to_be_bytes());
                let token = vakt_server::token::hash(secret);
                state
                    .store
                    .enroll(&token, 1, device, hw, cert)
                    .await
                    .unwrap();
                state
                    .store
                    .store_report(&id, 1, sections, &[], 1, "0.1.0")
                    .await
                    .unwrap();
            }
            let mut req = tonic::Request::new(pb::ListDevicesRequest::default());
            let bearer = format!("Bearer {admin}");
            req.metadata_mut()
                .insert("authorization", bearer.parse().unwrap());
            let before = state.store.round_trips().unwrap();
            let listed = api.list_devices(req).await.unwrap().into_inner().devices;
            let took = state.store.round_trips().unwrap() - before;
            assert_eq!(listed.len(), n);
            assert!(
                listed.iter().all(|d| d
                    .wipe_readiness
                    .as_ref()
                    .is_some_and(|w| w.state == "crypto-erase")),
                "every view judged from its storage section"
            );
            took
        }
    };
    let small = cost(30).await;
    let large = cost(300).await;
    println!("ListDevices round trips: 30 devices {small}, 300 devices {large}");
    assert!(large <= small + 2, "30 devices: {small}, 300: {large}");
}

/// What a loss report's lookups cost on PostgreSQL with 10,000 devices and 5,000 closed loss
/// cases stored, before the indexes (every device and every case read and decoded, as
/// `find_device` and `open_case` did, through the same public store calls) and through them,
/// side by side, and `ReportLoss` end to end by hostname and by id. A measurement, not a
/// check (it takes a minute to fill): run with
/// `cargo test -p vakt-tests --test postgres_server report_loss_on_postgres -- --ignored --nocapture`.
/// BENCHMARKS.md ("Loss report lookups") records its figures.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement: fills 10,000 devices"]
async fn report_loss_on_postgres_before_and_after_the_indexes() {
    use std::time::{Duration, Instant};
    use vakt_proto::pb;
    use vakt_proto::pb::admin_service_server::AdminService;
    const DEVICES: usize = 10_000;
    const CASES: usize = 5_000;
    const RUNS: usize = 30;
    let Some(pg) = cluster() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let state = prepared(&pg, "loss", tmp.path()).await;
    let (secret, _) = vakt_server::api::admin::create_enroll_token(
        &state.store,
        u32::try_from(DEVICES).unwrap(),
        3600,
        "t",
        "",
    )
    .await
    .unwrap();
    let filled = Instant::now();
    for start in (0..DEVICES).step_by(256) {
        let mut tasks = tokio::task::JoinSet::new();
        for i in start..(start + 256).min(DEVICES) {
            let (store, token) = (state.store.clone(), vakt_server::token::hash(&secret));
            tasks.spawn(async move {
                let device = pb::Device {
                    id: format!("dev-{i:05}"),
                    hostname: format!("lap-{i:05}"),
                    ..Default::default()
                };
                let hw = pb::HardwareIdentity {
                    machine_id: format!("m{i}"),
                    ..Default::default()
                };
                let mut cert = [0u8; 32];
                cert[..8].copy_from_slice(&(i as u64).to_be_bytes());
                store.enroll(&token, 1, device, hw, cert).await.unwrap();
                if i >= DEVICES - CASES {
                    let case = pb::LossCase {
                        id: format!("loss-{i:012x}000000"),
                        device_id: format!("dev-{i:05}"),
                        open: false,
                        ..Default::default()
                    };
                    store.save_loss(&case, &[], None).await.unwrap();
                }
            });
        }
        while let Some(r) = tasks.join_next().await {
            r.unwrap();
        }
    }
    println!(
        "report_loss on PostgreSQL: {DEVICES} devices, {CASES} closed cases stored in {:.1} s",
        filled.elapsed().as_secs_f64()
    );
    let admin = std::fs::read_to_string(tmp.path().join("data/admin.token")).unwrap();
    let api = vakt_server::api::admin::AdminApi::new(state.clone());
    let report_loss = |device: String| {
        let mut req = tonic::Request::new(pb::ReportLossRequest {
            device,
            ..Default::default()
        });
        let bearer = format!("Bearer {}", admin.trim());
        req.metadata_mut()
            .insert("authorization", bearer.parse().unwrap());
        api.report_loss(req)
    };
    let store = &state.store;
    let mut times: [Vec<Duration>; 4] = Default::default();
    for run in 0..RUNS {
        // Each device once (a report opens its case), apart from the full scans below, the
        // order alternating, so neither call always follows the other's writes.
        for by_id in [run % 2 == 1, run % 2 == 0] {
            let t = Instant::now();
            if by_id {
                report_loss(format!("dev-{:05}", 100 + run)).await.unwrap();
                times[3].push(t.elapsed());
            } else {
                let case = report_loss(format!("LAP-{run:05}")).await.unwrap();
                times[2].push(t.elapsed());
                assert_eq!(case.into_inner().hostname, format!("lap-{run:05}"));
            }
        }
    }
    for run in 0..RUNS {
        let name = format!("LAP-{:05}", 200 + run);
        let t = Instant::now();
        let found: Vec<_> = store
            .devices()
            .unwrap()
            .into_iter()
            .filter(|r| {
                r.device
                    .as_ref()
                    .is_some_and(|d| d.hostname.eq_ignore_ascii_case(&name))
            })
            .collect();
        let id = found[0].device.as_ref().unwrap().id.clone();
        let open = store
            .losses()
            .unwrap()
            .into_iter()
            .rev()
            .find(|c| c.device_id == id && c.open);
        times[0].push(t.elapsed());
        assert!(open.is_none() && found.len() == 1);
        let t = Instant::now();
        let found = store.devices_named(&name).await.unwrap();
        let open = store.open_loss_of(&id).await.unwrap();
        times[1].push(t.elapsed());
        assert!(open.is_none() && found.len() == 1);
    }
    for (what, mut t) in [
        "lookups before the indexes",
        "lookups through the indexes",
        "ReportLoss by hostname",
        "ReportLoss by id",
    ]
    .into_iter()
    .zip(times)
    {
        t.sort();
        println!(
            "report_loss on PostgreSQL: {what}: median {:.2} ms, worst {:.2} ms",
            t[RUNS / 2].as_secs_f64() * 1e3,
            t[RUNS - 1].as_secs_f64() * 1e3
        );
    }
}

/// A loss report waiting for PostgreSQL holds no thread of the caller's runtime: with the
/// table locked by another session for two seconds, `ReportLoss` on a current-thread runtime
/// (one thread for everything) waits while a ticker task on the same runtime keeps ticking.
/// Checked: with `ReportLoss` authorising through the synchronous `authorize` again, its
/// first read blocks the thread and the ticker stalls while it waits.
#[tokio::test]
async fn a_loss_report_waiting_for_postgresql_holds_no_runtime_thread() {
    held_loss_report(
        "held",
        "LOCK TABLE vakt_kv IN ACCESS EXCLUSIVE MODE",
        "SELECT count(*) FROM pg_locks WHERE mode = 'AccessExclusiveLock' \
         AND relation = 'vakt_kv'::regclass AND granted",
    )
    .await;
}

/// The same for the one write authorising makes, the token's last use (at most once a
/// minute): with only the admin tokens' rows locked (reads pass, the last-use write waits),
/// the loss report waits for it without holding the runtime's thread. Checked: with the last
/// use noted by the synchronous `touch_admin_token` again, the ticker stalls.
#[tokio::test]
async fn a_last_use_note_waiting_for_postgresql_holds_no_runtime_thread() {
    held_loss_report(
        "held_touch",
        "SELECT 1 FROM vakt_kv WHERE tree = 'admin_tokens' FOR UPDATE",
        // psql sends the statements one by one: the sleep runs once the rows are locked.
        "SELECT count(*) FROM pg_stat_activity WHERE state = 'active' \
         AND query LIKE 'SELECT pg_sleep%'",
    )
    .await;
}

/// `ReportLoss` on database `db` of a new server, on this test's current-thread runtime,
/// while another session runs `hold` for two seconds (`held` says when it holds): the call
/// must wait at least half a second and a ticker on the same runtime must keep ticking.
async fn held_loss_report(db: &str, hold: &str, held: &str) {
    use std::sync::atomic::{AtomicU32, Ordering};
    use vakt_proto::pb;
    use vakt_proto::pb::admin_service_server::AdminService;
    let Some(pg) = cluster() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let state = prepared(&pg, db, tmp.path()).await;
    let (secret, _) = vakt_server::api::admin::create_enroll_token(&state.store, 1, 600, "t", "")
        .await
        .unwrap();
    let device = pb::Device {
        id: "d1".into(),
        hostname: "pc-1".into(),
        ..Default::default()
    };
    let token = vakt_server::token::hash(&secret);
    state
        .store
        .enroll(&token, 1, device, Default::default(), [1; 32])
        .await
        .unwrap();
    let admin = std::fs::read_to_string(tmp.path().join("data/admin.token")).unwrap();
    let mut req = tonic::Request::new(pb::ReportLossRequest {
        device: "pc-1".into(),
        ..Default::default()
    });
    let bearer = format!("Bearer {}", admin.trim());
    req.metadata_mut()
        .insert("authorization", bearer.parse().unwrap());
    let _held = pg.session(db, &format!("BEGIN; {hold}; SELECT pg_sleep(2); COMMIT;"));
    wait_until(
        "the other session holds the lock",
        Duration::from_secs(10),
        || pg.sql(db, held) == "1",
    )
    .await;
    let ticks = std::sync::Arc::new(AtomicU32::new(0));
    let ticker = {
        let ticks = ticks.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(10)).await;
                ticks.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    let began = std::time::Instant::now();
    let api = vakt_server::api::admin::AdminApi::new(state.clone());
    let case = tokio::time::timeout(Duration::from_secs(10), api.report_loss(req))
        .await
        .expect("the lock is released after two seconds")
        .unwrap()
        .into_inner();
    let waited = began.elapsed();
    ticker.abort();
    let ticked = ticks.load(Ordering::Relaxed);
    assert_eq!(case.device_id, "d1");
    assert!(
        waited >= Duration::from_millis(500),
        "the report waited for the lock ({waited:?})"
    );
    // A tick every 10 ms while it waited: at least a third of them, however slow the machine.
    let expected = u32::try_from(waited.as_millis() / 10).unwrap();
    assert!(
        ticked >= expected / 3,
        "the runtime's thread was held: {ticked} ticks in {waited:?}"
    );
}
