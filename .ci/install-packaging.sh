#!/usr/bin/env bash
# Tools for the packaging test (tests/tests/packaging.rs runs deploy/test-packages.sh):
# cargo-deb builds the Debian packages, systemd brings `systemd-analyze verify` (it checks unit
# files without systemd running), adduser is the server package's dependency, and ansible-core
# with python3-apt runs the Ansible role against this machine.
set -euo pipefail

# Only what is missing: installing a package that is there would upgrade it, which is not
# this script's business.
packages=()
command -v systemd-analyze >/dev/null || packages+=(systemd)
command -v adduser >/dev/null || packages+=(adduser)
command -v strip >/dev/null || packages+=(binutils)
/usr/bin/python3 -c 'import apt' 2>/dev/null || packages+=(python3 python3-apt)
if [ ${#packages[@]} -gt 0 ]; then
    apt-get install -y -q --no-install-recommends "${packages[@]}"
fi

# Pinned: cargo-deb warns that packaging a dev-profile build (which the test does, to avoid a
# release build in CI) will become an error in some future version.
cargo_deb_version=3.8.0
if [ "$(cargo deb --version 2>/dev/null)" != "cargo-deb $cargo_deb_version" ]; then
    # Its own dependencies, built in its own target directory, not the project's.
    env -u CARGO_TARGET_DIR cargo install cargo-deb --locked --version "$cargo_deb_version"
fi

if ! command -v ansible-playbook >/dev/null; then
    python3 -m pip install -q 'ansible-core>=2.15,<2.20'
fi
