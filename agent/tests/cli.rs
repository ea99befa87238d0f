//! The `vakt-agent` binary's command line: config errors name what is wrong, `collect --json`
//! prints the report shape of INTERFACE.md.

use std::process::Command;

fn agent() -> Command {
    Command::new(env!("CARGO_BIN_EXE_vakt-agent"))
}

#[test]
fn malformed_config_gives_a_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.toml");
    std::fs::write(
        &cfg,
        "server = \"https://vakt.example.org:7443\"\nca = \"/etc/vakt/ca.pem\"\nstate_dir = \"/tmp/x\"\nreport_intervall = \"15m\"\n",
    )
    .unwrap();
    let out = agent()
        .args(["run", "--once", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("agent.toml"), "names the file: {err}");
    assert!(err.contains("report_intervall"), "names the key: {err}");
    assert!(err.contains("line 4"), "names the line: {err}");

    let out = agent()
        .args(["run", "--once", "--config"])
        .arg(dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[test]
fn collect_json_has_the_interface_shape() {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(root.path().join("etc")).unwrap();
    std::fs::write(root.path().join("etc/machine-id"), "fixture-machine\n").unwrap();
    std::fs::write(
        root.path().join("etc/os-release"),
        "PRETTY_NAME=\"Fixture Linux 1\"\n",
    )
    .unwrap();
    let out = agent()
        .args(["collect", "--json", "--root"])
        .arg(root.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["host"]["machine_id"], "fixture-machine");
    assert_eq!(v["host"]["os"], "Fixture Linux 1");
    assert!(v["software"].is_array());
    assert!(v["mail"]["accounts"].is_array() && v["mail"]["forwards"].is_array());
    assert!(v["roaming"]["modems"].is_array());
}
