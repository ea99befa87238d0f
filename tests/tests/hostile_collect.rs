//! Issue 16, the agent half: a laptop where one user's home is built to stop the root agent.
//! FIFOs wherever the collectors look, symbolic-link loops, 40,000 Thunderbird profiles, a
//! 1 GiB sparse `prefs.js`, 12,000 programs in `~/.local/bin`, and files and directories
//! swapped while the agent walks. The real `vakt-agent collect --json` must finish within
//! seconds, the other users' facts must be exactly what a clean laptop reports, the report
//! must stay under 2 MiB and say what it left out; `run --once` against a real server must be
//! acknowledged.
//!
//! The other users are the mail fixture tree's (agent/tests/fixtures/mail/root: anna, asa and
//! bo with Thunderbird, Evolution, Sieve and `.forward` settings) plus a program of anna's.

#![allow(clippy::unwrap_used)] // a test file: helpers outside #[test] fns may unwrap too

use std::io::Read;
use std::os::unix::fs::{PermissionsExt, symlink};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};
use vakt_tests::{TestAgent, TestServer, bin, stderr};

/// A hang fails the test instead of blocking the suite; the goal is seconds.
const GUARD: Duration = Duration::from_secs(60);

fn mail_fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../agent/tests/fixtures/mail/root")
}

/// Copies a tree, links as links.
fn copy_tree(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        let target = to.join(e.file_name());
        let t = e.file_type().unwrap();
        if t.is_symlink() {
            symlink(std::fs::read_link(e.path()).unwrap(), &target).unwrap();
        } else if t.is_dir() {
            copy_tree(&e.path(), &target);
        } else {
            std::fs::copy(e.path(), &target).unwrap();
        }
    }
}

fn mkfifo(paths: &[PathBuf]) {
    for chunk in paths.chunks(1000) {
        let st = Command::new("mkfifo").args(chunk).status().unwrap();
        assert!(st.success(), "mkfifo");
    }
}

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// The clean laptop: the mail fixture's users, anna's own program, identity files.
fn clean_laptop(root: &Path) {
    copy_tree(&mail_fixture(), root);
    std::fs::write(root.join("etc/machine-id"), "hostile-fixture\n").unwrap();
    let bin = root.join("home/anna/.local/bin");
    std::fs::create_dir_all(&bin).unwrap();
    write_exec(
        &bin.join("rapport"),
        "#!/usr/bin/env python3\nprint('hej')\n",
    );
}

/// Eve's home, built against every collector (see the module doc). Returns the paths the
/// swapper plays with.
fn hostile_home(root: &Path) -> PathBuf {
    let mut passwd = std::fs::read_to_string(root.join("etc/passwd")).unwrap();
    passwd.push_str("eve:x:1666:1666:Eve,,,:/home/eve:/bin/bash\n");
    std::fs::write(root.join("etc/passwd"), passwd).unwrap();
    let home = root.join("home/eve");
    let at = |p: &str| home.join(p);
    for d in [
        ".thunderbird/p0",
        ".var/app/org.mozilla.Thunderbird/.thunderbird",
        "snap/thunderbird/common",
        ".config/evolution/sources",
        ".config/evolution/mail",
        ".local/bin",
        ".local/share/flatpak/app/org.evil.App/x86_64/stable/active",
        ".local/share/flatpak/repo",
        "sieve",
    ] {
        std::fs::create_dir_all(at(d)).unwrap();
    }
    // 40,000 profiles; the first is real and its prefs.js a 1 GiB hole.
    let mut ini = String::with_capacity(40_000 * 48);
    for i in 0..40_000 {
        ini.push_str(&format!(
            "[Profile{i}]\nName=p{i}\nIsRelative=1\nPath=p{i}\n\n"
        ));
    }
    std::fs::write(at(".thunderbird/profiles.ini"), ini).unwrap();
    std::fs::File::create(at(".thunderbird/p0/prefs.js"))
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    // Loops: a link to itself, two links to each other, a directory link into itself.
    symlink(".thunderbird", at("snap/thunderbird/common/.thunderbird")).unwrap();
    symlink("b", at(".dovecot.sieve")).unwrap();
    symlink(".dovecot.sieve", at("b")).unwrap();
    symlink("config", at(".local/share/flatpak/repo/config")).unwrap();
    symlink("loop", at(".local/bin/loop")).unwrap();
    // FIFOs where the collectors look.
    let mut fifos: Vec<PathBuf> = [
        ".thunderbird/installs.ini",
        ".var/app/org.mozilla.Thunderbird/.thunderbird/profiles.ini",
        ".config/evolution/mail/filters.xml",
        ".local/share/flatpak/app/org.evil.App/x86_64/stable/active/deploy",
        ".local/bin/fifo",
        "Downloads",
        "AppImages",
        "sieve/x.sieve",
        ".fifo",
    ]
    .iter()
    .map(|p| at(p))
    .collect();
    fifos.extend((0..3000).map(|i| at(&format!(".config/evolution/sources/s{i}.source"))));
    mkfifo(&fifos);
    // 12,000 programs: more than a listing keeps, a user's file budget and their programs'.
    for i in 0..12_000 {
        write_exec(&at(&format!(".local/bin/tool{i:05}")), "#!/bin/sh\n");
    }
    home
}

/// Swaps eve's `.forward` between a file, a FIFO and a link to root's shadow, and her
/// `~/.config/evolution/sources` between the directory and a link to `/etc`, until stopped.
fn swapper(home: PathBuf, stop: Arc<AtomicBool>) -> std::thread::JoinHandle<usize> {
    std::thread::spawn(move || {
        let fwd = home.join(".forward");
        let tmp = home.join(".forward.tmp");
        let src = home.join(".config/evolution/sources");
        let aside = home.join(".config/evolution/sources.aside");
        let mut swaps = 0;
        while !stop.load(Ordering::Relaxed) {
            match swaps % 3 {
                0 => {
                    let _ = std::fs::write(&tmp, "eve@evil.example\n");
                }
                1 => {
                    let _ = std::fs::hard_link(home.join(".fifo"), &tmp);
                }
                _ => {
                    let _ = symlink("/etc/shadow", &tmp);
                }
            }
            let _ = std::fs::rename(&tmp, &fwd);
            if swaps % 2 == 0 {
                let _ = std::fs::rename(&src, &aside);
                let _ = symlink("/etc", &src);
            } else {
                let _ = std::fs::remove_file(&src);
                let _ = std::fs::rename(&aside, &src);
            }
            swaps += 1;
            std::thread::sleep(Duration::from_micros(200));
        }
        swaps
    })
}

/// Runs a command to its end, or kills it and fails after [`GUARD`]; its stdout and the time.
fn run_guarded(cmd: &mut Command) -> (std::process::Output, Duration) {
    let start = Instant::now();
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Read stdout on a thread: a report bigger than the pipe's buffer must not stall the child.
    let mut out = child.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        out.read_to_end(&mut buf).unwrap();
        buf
    });
    let mut err = child.stderr.take().unwrap();
    let err_reader = std::thread::spawn(move || {
        let mut buf = Vec::new();
        err.read_to_end(&mut buf).unwrap();
        buf
    });
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if start.elapsed() > GUARD {
            let _ = child.kill();
            panic!("{cmd:?} did not finish within {GUARD:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let took = start.elapsed();
    let output = std::process::Output {
        status,
        stdout: reader.join().unwrap(),
        stderr: err_reader.join().unwrap(),
    };
    (output, took)
}

fn collect_json(root: &Path) -> (serde_json::Value, usize, Duration) {
    let (out, took) = run_guarded(
        Command::new(bin("vakt-agent"))
            .args(["collect", "--json", "--root"])
            .arg(root)
            // No modems to ask: a bus address that answers at once with an error.
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus"),
    );
    assert!(out.status.success(), "collect: {}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    (v, out.stdout.len(), took)
}

/// The facts of everyone but eve, as comparable JSON.
fn others(report: &serde_json::Value) -> serde_json::Value {
    let not_eve = |items: &serde_json::Value| -> Vec<serde_json::Value> {
        items
            .as_array()
            .unwrap()
            .iter()
            .filter(|i| i["user"] != "eve")
            .cloned()
            .collect()
    };
    serde_json::json!({
        "host": report["host"]["machine_id"],
        "software": not_eve(&report["software"]),
        "accounts": not_eve(&report["mail"]["accounts"]),
        "forwards": not_eve(&report["mail"]["forwards"]),
        "identities": not_eve(&report["mail"]["identities"]),
    })
}

fn errors_text(report: &serde_json::Value) -> Vec<String> {
    report["errors"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|e| format!("[{}] {}: {}", e["section"], e["source"], e["message"]))
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn a_hostile_home_costs_its_owner_not_the_report() {
    let tmp = tempfile::tempdir().unwrap();
    let clean = tmp.path().join("clean");
    clean_laptop(&clean);
    let (clean_report, _, clean_took) = collect_json(&clean);
    let want = others(&clean_report);
    assert!(
        !want["forwards"].as_array().unwrap().is_empty()
            && want["software"]
                .as_array()
                .unwrap()
                .iter()
                .any(|p| p["name"] == "rapport" && p["user"] == "anna"),
        "the clean laptop has facts to lose: {want:#}"
    );

    let hostile = tmp.path().join("hostile");
    clean_laptop(&hostile);
    let home = hostile_home(&hostile);
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = swapper(home, Arc::clone(&stop));
    let (report, bytes, took) = collect_json(&hostile);
    // The run --once below walks the same home, still being swapped.
    let errors = errors_text(&report);
    eprintln!(
        "clean laptop: {clean_took:?}; hostile laptop: {took:?}, {bytes} bytes of JSON, {} errors",
        errors.len()
    );

    assert!(
        took < Duration::from_secs(20),
        "finished within seconds: {took:?}"
    );
    assert!(
        bytes < 2 << 20,
        "the report stays under 2 MiB: {bytes} bytes"
    );
    assert_eq!(others(&report), want, "the other users' facts are intact");
    let has = |needle: &str| errors.iter().any(|e| e.contains(needle));
    // Said, not silently dropped: the profiles left out, the sparse file, the FIFOs, the
    // loops, the programs beyond eve's budgets.
    assert!(
        has("names 40,000 profiles: only the first 32 were read"),
        "{errors:#?}"
    );
    assert!(has("more errors from this source"), "{errors:#?}");
    assert!(has("prefs.js") && has("1073741824 bytes"), "{errors:#?}");
    assert!(has("a FIFO, not a regular file"), "{errors:#?}");
    assert!(has("a FIFO, not a directory"), "{errors:#?}");
    assert!(has("too many symbolic links"), "{errors:#?}");
    assert!(has("more than 10,000 entries"), "{errors:#?}");
    assert!(
        has("more programs in this user's home not listed"),
        "{errors:#?}"
    );
    let eves = report["software"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["user"] == "eve")
        .count();
    assert!(eves <= 500, "eve's programs are capped: {eves}");
    assert!(errors.len() <= 4 * 201, "errors folded: {}", errors.len());

    // The same laptop, reporting for real: enrolled, reported, acknowledged.
    let mut server = TestServer::start(&tmp.path().join("server"));
    let token = server.enroll_token(&[]);
    let agent = TestAgent::with_config(
        &tmp.path().join("agent"),
        &server,
        &token,
        &format!("root = {:?}\n", hostile.display().to_string()),
    );
    let (out, once_took) = run_guarded(
        Command::new(bin("vakt-agent"))
            .args(["run", "--once", "--config"])
            .arg(agent.config())
            .env("DBUS_SYSTEM_BUS_ADDRESS", "unix:path=/nonexistent/bus"),
    );
    stop.store(true, Ordering::Relaxed);
    let swapped = swaps.join().unwrap();
    eprintln!("run --once: {once_took:?}; {swapped} swaps during both runs");
    assert!(out.status.success(), "run --once: {}", stderr(&out));
    assert!(
        swapped > 10,
        "files were swapped during the walk: {swapped}"
    );
    let shown = server.vakt_json(&["device", "show", &agent.device_id()]);
    let forwards = shown["mail"]["forwards"].as_array().unwrap();
    assert!(
        forwards
            .iter()
            .any(|f| f["user"] == "anna" && f["target"] == "anna.privat@gmail.com"),
        "anna's forwards reached the server: {forwards:#?}"
    );
    server.kill();
}
