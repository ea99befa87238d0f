//! The binaries' command lines without a running server: usage errors are clear and exit
//! non-zero. (Having an integration test here also makes `cargo test` build the binaries the
//! end-to-end tests in `tests/` run.)

use std::process::Command;

#[test]
fn vakt_without_a_ca_says_what_to_pass() {
    let out = Command::new(env!("CARGO_BIN_EXE_vakt"))
        .args(["devices", "--token", "vakt_a_x"])
        .env_remove("VAKT_CA")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ca"));
}

#[test]
fn bad_ttl_is_named() {
    let out = Command::new(env!("CARGO_BIN_EXE_vakt"))
        .args([
            "enroll-token",
            "create",
            "--ttl",
            "soon",
            "--token",
            "t",
            "--ca",
            "/nonexistent",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--ttl 'soon'"));
}

#[test]
fn serve_on_an_unwritable_data_dir_fails_clearly() {
    let out = Command::new(env!("CARGO_BIN_EXE_vakt-server"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--data",
            "/proc/vakt-cannot-be-here",
        ])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("/proc/vakt-cannot-be-here"));
}
