//! The policy end to end: an agent whose laptop forwards work mail to Gmail over plain IMAP,
//! has no signature and roams in Norway with data on gets exactly the Sorsele pack's findings,
//! its person's manager gets the mail at a real SMTP server, and removing the forward resolves
//! that finding. Also: a modem crossing the border reaches the server within 5 seconds, and
//! server-side mail rules the agent reads as their interpreters do (a Sieve redirect through a
//! variable, an Exim filter's pipe, a script with a command it does not know) become the
//! violation and the two notices they should.

#![allow(clippy::unwrap_used)]

use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};
use vakt_tests::dbus::{Mock, PrivateBus};
use vakt_tests::mm::{add_home_modem, come_home, roam_to_norway};
use vakt_tests::{
    Engine, SmtpSink, TestAgent, TestServer, laptop_root, on_both_engines, skip_unless_dbus,
    wait_until,
};

const FILTERS: &str = "version=\"9\"\nlogging=\"no\"\nname=\"till gmail\"\nenabled=\"yes\"\ntype=\"17\"\naction=\"Forward\"\nactionValue=\"anna.berg@gmail.com\"\ncondition=\"ALL\"\n";

/// Anna's laptop: Thunderbird with one IMAP account on the municipality's server without
/// encryption, an identity without a signature, and a filter forwarding everything to Gmail.
fn laptop(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    std::fs::write(
        root.join("etc/passwd"),
        "root:x:0:0:root:/root:/bin/bash\nanna:x:1000:1000:Anna Berg:/home/anna:/bin/bash\n",
    )
    .unwrap();
    let tb = root.join("home/anna/.thunderbird");
    let profile = tb.join("k3x9.default-release");
    std::fs::create_dir_all(profile.join("ImapMail/imap.sorsele.se")).unwrap();
    std::fs::write(tb.join("profiles.ini"), "[Profile0]\nName=default-release\nIsRelative=1\nPath=k3x9.default-release\nDefault=1\n\n[General]\nStartWithLastProfile=1\nVersion=2\n").unwrap();
    std::fs::write(
        profile.join("prefs.js"),
        concat!(
            "// Mozilla User Preferences\n",
            "user_pref(\"mail.accountmanager.accounts\", \"account1\");\n",
            "user_pref(\"mail.account.account1.identities\", \"id1\");\n",
            "user_pref(\"mail.account.account1.server\", \"server1\");\n",
            "user_pref(\"mail.identity.id1.fullName\", \"Anna Berg\");\n",
            "user_pref(\"mail.identity.id1.useremail\", \"anna.berg@sorsele.se\");\n",
            "user_pref(\"mail.server.server1.directory-rel\", \"[ProfD]ImapMail/imap.sorsele.se\");\n",
            "user_pref(\"mail.server.server1.hostname\", \"imap.sorsele.se\");\n",
            "user_pref(\"mail.server.server1.port\", 143);\n",
            "user_pref(\"mail.server.server1.socketType\", 0);\n",
            "user_pref(\"mail.server.server1.type\", \"imap\");\n",
            "user_pref(\"mail.server.server1.userName\", \"anna.berg\");\n",
        ),
    )
    .unwrap();
    std::fs::write(
        profile.join("ImapMail/imap.sorsele.se/msgFilterRules.dat"),
        FILTERS,
    )
    .unwrap();
    root
}

/// A webhook receiver on loopback: records every POSTed JSON body, answers 204.
struct HookSink {
    addr: std::net::SocketAddr,
    bodies: std::sync::Arc<std::sync::Mutex<Vec<Value>>>,
}

impl HookSink {
    async fn start() -> Self {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let bodies = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = bodies.clone();
        tokio::spawn(async move {
            while let Ok((mut s, _)) = l.accept().await {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read the head, then as many body bytes as Content-Length says.
                loop {
                    let n = s.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(i) = text.find("\r\n\r\n") {
                        let len: usize = text
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= i + 4 + len {
                            let body = &buf[i + 4..i + 4 + len];
                            if let Ok(v) = serde_json::from_slice(body) {
                                sink.lock().unwrap().push(v);
                            }
                            break;
                        }
                    }
                }
                let _ = s.write_all(b"HTTP/1.1 204 No Content\r\n\r\n").await;
            }
        });
        Self { addr, bodies }
    }

    fn url(&self) -> String {
        format!("http://{}/vakt-hook", self.addr)
    }

    fn bodies(&self) -> Vec<Value> {
        self.bodies.lock().unwrap().clone()
    }
}

fn open_by_kind(findings: &Value) -> Vec<(String, String, String)> {
    rows(
        findings,
        |f| f["status"] == "open",
        |f| [&f["kind"], &f["section"], &f["severity"]],
    )
}

/// The findings `keep` selects, each as the three strings `row` picks from it, sorted.
fn rows(
    findings: &Value,
    keep: impl Fn(&Value) -> bool,
    row: impl Fn(&Value) -> [&Value; 3],
) -> Vec<(String, String, String)> {
    let text = |v: &Value| v.as_str().unwrap().to_string();
    let mut v: Vec<(String, String, String)> = findings
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| keep(f))
        .map(|f| {
            let [a, b, c] = row(f);
            (text(a), text(b), text(c))
        })
        .collect();
    v.sort();
    v
}

on_both_engines!(async fn findings_manager_mail_and_resolution);
async fn findings_manager_mail_and_resolution(engine: Engine) {
    let bus = skip_unless_dbus!(PrivateBus::start().await);
    let mm = skip_unless_dbus!(Mock::start(&bus, "modemmanager", &json!({})).await);
    let smtp = match SmtpSink::start() {
        Ok(s) => s,
        Err(reason) => {
            assert!(!vakt_tests::tools_required(), "{reason}");
            eprintln!("SKIP: {reason}");
            return;
        }
    };
    let modem = add_home_modem(&mm).await;
    roam_to_norway(&mm, &modem, 2_000_000, 100_000).await;

    let tmp = tempfile::tempdir().unwrap();
    let root = laptop(tmp.path());
    let hook = HookSink::start().await;
    let server = engine.server_with(
        &tmp.path().join("server"),
        "127.0.0.1:0",
        &[
            "--smtp",
            &smtp.url(),
            "--mail-from",
            "vakt@sorsele.se",
            "--webhook",
            &hook.url(),
        ],
    );
    let csv = tmp.path().join("people.csv");
    std::fs::write(&csv, "email,name,manager_email,end_date,leave_from,leave_to\r\nanna.berg@sorsele.se,Anna Berg,chef@sorsele.se,,,\r\nchef@sorsele.se,Örjan Åström,,,,\r\n").unwrap();
    let out = server.vakt_ok(&["people", "import", csv.to_str().unwrap()]);
    assert!(out.contains("2 people"), "{out}");

    let agent = TestAgent::with_config(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
        &format!(
            "root = {:?}\nsystem_bus = {:?}\n",
            root.display().to_string(),
            bus.address()
        ),
    );
    let out = agent.run_once();
    assert!(out.status.success(), "{}", vakt_tests::stderr(&out));
    let device = agent.device_id();
    server.vakt_ok(&["device", "assign", &device, "anna.berg@sorsele.se"]);

    let show = server.vakt_json(&["device", "show", &device]);
    assert_eq!(show["mail"]["forwards"][0]["target"], "anna.berg@gmail.com");
    assert_eq!(show["roaming"]["modems"][0]["country"], "NO");

    let findings = server.vakt_json(&["findings", "--device", &device]);
    let got = open_by_kind(&findings);
    let want: Vec<(String, String, String)> = [
        ("mail-auto-forward-external", "9", "violation"),
        ("mail-signature", "9", "warning"),
        ("mail-transport-encryption", "8.2", "violation"),
        ("mobile-data-abroad", "8.4", "violation"),
        ("private-travel-approval", "8.5", "violation"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(
        got,
        want,
        "findings: {}",
        serde_json::to_string_pretty(&findings).unwrap()
    );
    for f in findings.as_array().unwrap() {
        assert!(
            !f["message_sv"].as_str().unwrap().is_empty()
                && !f["message_en"].as_str().unwrap().is_empty()
        );
    }

    // Each new violation is mailed once to Anna's manager, Swedish first.
    let deadline = Instant::now() + Duration::from_secs(20);
    while smtp.messages().len() < 4 {
        assert!(
            Instant::now() < deadline,
            "the manager's mail did not arrive ({} of 4); server log:\n{}",
            smtp.messages().len(),
            server.log.lock().unwrap().join("\n")
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mails = smtp.messages();
    assert_eq!(
        mails.len(),
        4,
        "one mail per violation (4), none for the warning"
    );
    assert!(mails.iter().all(|m| m.contains("chef@sorsele.se")));
    assert!(
        mails.iter().any(|m| m.contains("gmail.com")),
        "the forward's target is in the mail"
    );

    // The forward is removed: its finding resolves, the others stay, and no new mail goes out.
    std::fs::write(
        root.join("home/anna/.thunderbird/k3x9.default-release/ImapMail/imap.sorsele.se/msgFilterRules.dat"),
        "version=\"9\"\nlogging=\"no\"\n",
    )
    .unwrap();
    assert!(agent.run_once().status.success());
    wait_until(
        "the forward finding to resolve",
        Duration::from_secs(10),
        || {
            let all = server.vakt_json(&["findings", "--device", &device, "--all"]);
            all.as_array()
                .unwrap()
                .iter()
                .any(|f| f["kind"] == "mail-auto-forward-external" && f["status"] == "resolved")
        },
    )
    .await;
    let open = open_by_kind(&server.vakt_json(&["findings", "--device", &device]));
    assert_eq!(open.len(), 4);
    assert_eq!(
        smtp.messages().len(),
        4,
        "no new mail when a finding resolves"
    );

    // From the laptop, Anna asks for a short exemption for a work task: data abroad is exempted.
    let out = std::process::Command::new(vakt_tests::bin("vakt-agent"))
        .args([
            "exemption",
            "request",
            "--minutes",
            "30",
            "--reason",
            "larmcentralens app behöver data",
            "--config",
        ])
        .arg(agent.config())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", vakt_tests::stderr(&out));
    wait_until(
        "the data-abroad finding to be exempted",
        Duration::from_secs(10),
        || {
            let all = server.vakt_json(&["findings", "--device", &device]);
            all.as_array()
                .unwrap()
                .iter()
                .any(|f| f["kind"] == "mobile-data-abroad" && f["status"] == "exempted")
        },
    )
    .await;
    let ex = server.vakt_json(&["exemptions", "list"]);
    assert_eq!(ex[0]["rule"], "mobile-data-abroad");
    let out = std::process::Command::new(vakt_tests::bin("vakt-agent"))
        .args([
            "exemption",
            "request",
            "--minutes",
            "100000",
            "--reason",
            "semester",
            "--config",
        ])
        .arg(agent.config())
        .output()
        .unwrap();
    assert!(!out.status.success(), "an exemption is short");
    // IT grants a long one (for the forwarding rule, so that data abroad is left to the trip
    // below); one that would end past the year 9999 is refused with a reason (it was stored
    // as ended at the epoch, expired at once).
    let grant = |minutes: &str| {
        server.vakt(&[
            "exemptions",
            "grant",
            "--device",
            &device,
            "--rule",
            "mail-auto-forward-external",
            "--minutes",
            minutes,
            "--reason",
            "tjänsteresa hela hösten",
        ])
    };
    let out = grant("4294967295");
    assert!(
        !out.status.success() && vakt_tests::stderr(&out).contains("--minutes must be at most"),
        "{}",
        vakt_tests::stderr(&out)
    );
    let out = grant("5259600");
    assert!(out.status.success(), "{}", vakt_tests::stderr(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let ex = server.vakt_json(&["exemptions", "list"]);
    let granted = ex
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id.as_str())
        .unwrap_or_else(|| panic!("{id} not in {ex}"));
    let until = granted["until"].as_str().unwrap();
    assert!(
        until.starts_with("203") || until.starts_with("204"),
        "{until}"
    );
    // A viewer may read exemptions but not end one: refused, nothing changed.
    let viewer = server.create_admin_token("viewer", "revisor");
    let out = server.vakt_with_token(
        &viewer,
        &["exemptions", "revoke", &id, "--reason", "hösten är över"],
    );
    assert!(!out.status.success(), "a viewer ended an exemption");
    let ex = server.vakt_json(&["exemptions", "list"]);
    assert!(
        ex.as_array()
            .unwrap()
            .iter()
            .any(|e| e["id"] == id.as_str() && e["until"] == until && e["revoked_by"] == ""),
        "{ex}"
    );
    // Ended early from the command line: it stays listed, ended now, saying by whom and why.
    let out = server.vakt(&["exemptions", "revoke", &id, "--reason", "hösten är över"]);
    assert!(out.status.success(), "{}", vakt_tests::stderr(&out));
    let ex = server.vakt_json(&["exemptions", "list"]);
    let ended = ex
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == id.as_str())
        .unwrap();
    assert!(ended["until"].as_str().unwrap() < until, "{ended}");
    assert_eq!(ended["revoke_reason"], "hösten är över");
    assert!(!ended["revoked_by"].as_str().unwrap().is_empty(), "{ended}");
    let out = server.vakt(&["exemptions", "revoke", &id, "--reason", "hösten är över"]);
    assert!(
        vakt_tests::stderr(&out).contains("ended already"),
        "{}",
        vakt_tests::stderr(&out)
    );

    // The manager hears of the exemption, and of a loss (section 8.1, step 4).
    wait_until(
        "the manager's exemption mail",
        Duration::from_secs(20),
        || smtp.messages().len() == 4 + 1,
    )
    .await;
    server.vakt_ok(&["loss", "report", &device]);
    wait_until("the manager's loss mail", Duration::from_secs(20), || {
        smtp.messages().len() == 4 + 2
    })
    .await;
    assert!(
        smtp.messages()
            .iter()
            .all(|m| m.contains("chef@sorsele.se"))
    );
    assert_eq!(
        server.vakt_json(&["loss", "show", &device])["checklist"][3]["note"],
        "chef: chef@sorsele.se"
    );

    // The same events went to the webhook as JSON.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = hook.bodies();
        let violations = got
            .iter()
            .filter(|b| b["event"] == "finding.violation")
            .count();
        if violations == 4 && got.iter().any(|b| b["event"] == "loss.reported") {
            break;
        }
        let log = server.log.lock().unwrap().join("\n");
        assert!(
            Instant::now() < deadline,
            "webhook calls: {got:?}\nserver log:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let got = hook.bodies();
    let fwd = got
        .iter()
        .find(|b| b["finding"]["kind"] == "mail-auto-forward-external")
        .unwrap();
    assert_eq!(fwd["finding"]["section"], "9");
    assert_eq!(fwd["device"]["id"], device.as_str());

    // An approved business trip to Norway exempts the laptop's data abroad. Anna's own
    // exemption is ended first, so that it is the trip that exempts.
    let ex = server.vakt_json(&["exemptions", "list"]);
    let annas = ex
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["rule"] == "mobile-data-abroad")
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    server.vakt_ok(&[
        "exemptions",
        "revoke",
        &annas,
        "--reason",
        "uppgiften är klar",
    ]);
    let data_status = || {
        let all = server.vakt_json(&["findings", "--device", &device]);
        all.as_array()
            .unwrap()
            .iter()
            .find(|f| f["kind"] == "mobile-data-abroad")
            .map(|f| f["status"].as_str().unwrap_or_default().to_string())
            .unwrap_or_default()
    };
    assert_ne!(data_status(), "exempted");
    let today = time::OffsetDateTime::now_utc().date();
    server.vakt_ok(&[
        "trips",
        "add",
        "--person",
        "anna.berg@sorsele.se",
        "--country",
        "NO",
        "--from",
        &today.to_string(),
        "--to",
        &today.next_day().unwrap().to_string(),
        "--kind",
        "business",
    ]);
    let all = server.vakt_json(&["findings", "--device", &device]);
    let data = all
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["kind"] == "mobile-data-abroad")
        .unwrap();
    assert_eq!(data["status"], "exempted", "{data}");
}

on_both_engines!(async fn a_border_crossing_reaches_the_server_within_five_seconds);
async fn a_border_crossing_reaches_the_server_within_five_seconds(engine: Engine) {
    let bus = skip_unless_dbus!(PrivateBus::start().await);
    let mm = skip_unless_dbus!(Mock::start(&bus, "modemmanager", &json!({})).await);
    let modem = add_home_modem(&mm).await;
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("root");
    std::fs::create_dir_all(root.join("etc")).unwrap();
    let server = engine.server(&tmp.path().join("server"));
    // Reports every 10 minutes: only the change notification can bring the crossing in time.
    let agent = TestAgent::with_config(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
        &format!(
            "root = {:?}\nsystem_bus = {:?}\n",
            root.display().to_string(),
            bus.address()
        ),
    );
    let cfg = std::fs::read_to_string(agent.config())
        .unwrap()
        .replace("report_interval = \"10s\"", "report_interval = \"10m\"");
    std::fs::write(agent.config(), cfg).unwrap();
    let proc = agent.spawn();
    let country = |server: &TestServer| -> String {
        let d = server.vakt_json(&["devices"]);
        let Some(id) = d[0]["id"].as_str() else {
            return String::new();
        };
        server.vakt_json(&["device", "show", id])["roaming"]["modems"][0]["country"]
            .as_str()
            .unwrap_or("")
            .to_string()
    };
    wait_until("the first report at home", Duration::from_secs(30), || {
        country(&server) == "SE"
    })
    .await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let t0 = Instant::now();
    roam_to_norway(&mm, &modem, 5_000, 700).await;
    wait_until(
        "roaming in Norway on the server",
        Duration::from_secs(5),
        || country(&server) == "NO",
    )
    .await;
    let abroad = t0.elapsed();

    let t1 = Instant::now();
    come_home(&mm, &modem).await;
    wait_until("back home on the server", Duration::from_secs(5), || {
        country(&server) == "SE"
    })
    .await;
    let home = t1.elapsed();
    eprintln!("border crossing reached the server in {abroad:?} (abroad) and {home:?} (home)");
    let show = server.vakt_json(&["device", "show", &agent.device_id()]);
    let trips = show["roaming"]["abroad"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    assert_eq!(
        trips.len(),
        1,
        "the trip to Norway is in the ledger: {show}; agent log:\n{}",
        proc.log()
    );
    assert_eq!(trips[0]["country"], "NO");
}

on_both_engines!(async fn mail_rules_hidden_in_variables_pipes_and_unknown_commands);
/// Anna's laptop runs her own mail delivery: a Sieve script that redirects through a variable
/// set in a branch, with a command the agent does not know in an included script, and an Exim
/// filter that pipes mail to a program. No D-Bus needed: only the mail section is judged.
async fn mail_rules_hidden_in_variables_pipes_and_unknown_commands(engine: Engine) {
    let tmp = tempfile::tempdir().unwrap();
    let root = laptop_root(tmp.path(), &["anna"]);
    let home = root.join("home/anna");
    std::fs::create_dir_all(home.join("sieve")).unwrap();
    std::fs::write(
        home.join("sieve/jobb.sieve"),
        "require [\"variables\", \"include\"];\n\
         if header :contains \"subject\" \"privat\" { set \"fwd\" \"anna.berg@gmail.com\"; }\n\
         else { set \"fwd\" \"anna.berg@sorsele.se\"; }\n\
         redirect \"${fwd}\";\ninclude \"extra\";\n",
    )
    .unwrap();
    std::fs::write(
        home.join("sieve/extra.sieve"),
        "vidarebefordra \"x@proton.me\";\nredirect :copy \"kollega@sorsele.se\";\n",
    )
    .unwrap();
    std::os::unix::fs::symlink("sieve/jobb.sieve", home.join(".dovecot.sieve")).unwrap();
    std::fs::write(
        home.join(".forward"),
        "# Exim filter\nunseen pipe \"/usr/local/bin/mailfwd $local_part\"\n",
    )
    .unwrap();

    let server = engine.server(&tmp.path().join("server"));
    let agent = TestAgent::with_config(
        &tmp.path().join("agent"),
        &server,
        &server.enroll_token(&[]),
        &format!(
            "root = {:?}\nsystem_bus = \"unix:path=/nonexistent/vakt-test-bus\"\n",
            root.display().to_string()
        ),
    );
    let out = agent.run_once();
    assert!(out.status.success(), "{}", vakt_tests::stderr(&out));
    let device = agent.device_id();

    let show = server.vakt_json(&["device", "show", &device]);
    let forwards = show["mail"]["forwards"].as_array().unwrap();
    assert!(
        forwards
            .iter()
            .any(|f| f["kind"] == "pipe" && f["target"] == "|/usr/local/bin/mailfwd anna"),
        "{forwards:#?}"
    );

    let mut got: Vec<(String, String, String)> = Vec::new();
    wait_until("the mail findings", Duration::from_secs(10), || {
        got = rows(
            &server.vakt_json(&["findings", "--device", &device]),
            |f| f["kind"] == "mail-auto-forward-external",
            |f| [&f["severity"], &f["section"], &f["evidence"]["target"]],
        );
        got.len() >= 3
    })
    .await;
    let want: Vec<(String, String, String)> = [
        ("notice", "9", ""),
        ("notice", "9", "|/usr/local/bin/mailfwd anna"),
        ("violation", "9", "anna.berg@gmail.com"),
    ]
    .iter()
    .map(|(a, b, c)| (a.to_string(), b.to_string(), c.to_string()))
    .collect();
    assert_eq!(got, want);
}
