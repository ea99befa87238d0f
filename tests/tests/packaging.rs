//! The Debian packages and the zero-touch install, end to end: `deploy/test-packages.sh` builds
//! both packages from this test run's debug binaries, installs them for real, enrolls the
//! agent with `deploy/install-agent.sh` against the installed server, and purges everything.
//!
//! That changes the machine (packages, /etc/vakt, a `vakt` system user), so it runs only where
//! asked to: in CI (`CI` set, as `.ci/run` is started) or with `VAKT_PACKAGING_TEST=1`. It
//! needs root, cargo-deb and dpkg; without them it prints `SKIP:` and the reason.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// The shipped example of /etc/vakt/agent.toml is what the agent accepts.
#[test]
fn shipped_agent_config_parses() {
    let text = std::fs::read_to_string(workspace().join("deploy/config/agent.toml")).unwrap();
    let cfg = vakt_agent::config::Config::parse(&text).unwrap();
    assert_eq!(cfg.state_dir, PathBuf::from("/var/lib/vakt"));
    assert_eq!(
        cfg.enroll_token_file,
        Some(PathBuf::from("/etc/vakt/enroll.token"))
    );
}

/// The unit's start conditions name the paths the shipped config uses; if one moved without
/// the other, a fresh install would never start (or start with nothing to do).
#[test]
fn agent_unit_conditions_match_the_shipped_config() {
    let unit =
        std::fs::read_to_string(workspace().join("deploy/systemd/vakt-agent.service")).unwrap();
    let text = std::fs::read_to_string(workspace().join("deploy/config/agent.toml")).unwrap();
    let cfg = vakt_agent::config::Config::parse(&text).unwrap();
    let identity = cfg.state_dir.join("identity.json");
    let token = cfg.enroll_token_file.unwrap();
    for path in [identity, token] {
        let line = format!("ConditionPathExists=|{}", path.display());
        assert!(unit.lines().any(|l| l == line), "no `{line}` in the unit");
    }
}

#[test]
fn debian_packages_install_enroll_and_purge() {
    let wanted = std::env::var_os("CI").is_some()
        || std::env::var("VAKT_PACKAGING_TEST").is_ok_and(|v| v == "1");
    if !wanted {
        eprintln!(
            "SKIP: installs and purges system packages; runs in CI or with VAKT_PACKAGING_TEST=1"
        );
        return;
    }
    // target/debug/deps/packaging-… → target/
    let exe = std::env::current_exe().unwrap();
    let target = exe.ancestors().nth(3).unwrap().to_path_buf();
    // The harness asserts the binaries this run built are there.
    for name in ["vakt-agent", "vakt-server", "vakt"] {
        vakt_tests::bin(name);
    }
    let out = Command::new("bash")
        .arg(workspace().join("deploy/test-packages.sh"))
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run bash");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if out.status.code() == Some(77) {
        eprintln!("{}", stderr.trim());
        return;
    }
    assert!(
        out.status.success(),
        "deploy/test-packages.sh failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("all checks passed"), "{stdout}\n{stderr}");
}
