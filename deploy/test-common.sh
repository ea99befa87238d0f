# shellcheck shell=bash
# test-common.sh: what test-packages.sh and test-units-under-systemd.sh share. Sourced, not run.
# Both install and purge the real packages on this machine, so both take the same lock and
# refuse to touch a machine where Vakt is installed.

cd "$(dirname "${BASH_SOURCE[0]}")/.." || exit 1
repo=$(pwd)
target=${CARGO_TARGET_DIR:-$repo/target}
export CARGO_TARGET_DIR=$target

skip() {
    echo "SKIP: $*" >&2
    exit 77
}
fail() {
    echo "FAIL: $*" >&2
    exit 1
}
step() {
    echo "== $*"
}

# require_tools TOOL...: skips unless root with every TOOL, cargo-deb and the debug binaries;
# then takes the machine-wide lock and checks that no Vakt installation is in the way.
require_tools() {
    [ "$(id -u)" -eq 0 ] || skip "not root (installs packages)"
    local tool bin pkg path
    for tool in dpkg dpkg-deb flock "$@"; do
        command -v "$tool" >/dev/null || skip "$tool is not installed"
    done
    cargo deb --version >/dev/null 2>&1 ||
        skip "cargo-deb is not installed (cargo install cargo-deb --locked)"
    for bin in vakt-agent vakt-server vakt; do
        [ -x "$target/debug/$bin" ] ||
            fail "$target/debug/$bin is missing: build first (cargo build --workspace)"
    done
    # One run at a time on this machine: the packages and their paths are machine-wide.
    exec 9>/run/lock/vakt-test-packages.lock
    flock -w 600 9 || fail "another package test still holds /run/lock/vakt-test-packages.lock"
    for pkg in vakt-agent vakt-server; do
        if dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -qv "not-installed"; then
            skip "$pkg is installed on this machine; this test installs and purges it"
        fi
    done
    for path in /etc/vakt /var/lib/vakt /var/lib/vakt-server /usr/bin/vakt-agent /usr/bin/vakt-server; do
        [ ! -e "$path" ] || skip "$path exists on this machine; this test would remove it"
    done
}

# build_packages DIR: both packages from the debug binaries into DIR; sets agent_deb and
# server_deb for the caller. --profile dev packages the build cargo test already made (cargo-deb warns that
# it prefers release builds, which is beside the point for a test).
build_packages() {
    local pkg
    for pkg in vakt-agent vakt-server; do
        cargo deb -p "$pkg" --no-build --profile dev --fast --output "$1/" -q \
            >/dev/null 2>"$1/cargo-deb.log" ||
            fail "cargo deb -p $pkg: $(cat "$1/cargo-deb.log")"
    done
    # shellcheck disable=SC2034 # used by the scripts that source this one
    agent_deb=$(ls "$1"/vakt-agent_*.deb)
    # shellcheck disable=SC2034
    server_deb=$(ls "$1"/vakt-server_*.deb)
}
