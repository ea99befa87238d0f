#!/usr/bin/env bash
# test-packages.sh: the Debian packages, for real, on this machine.
#
# Builds vakt-agent and vakt-server packages with cargo-deb from the debug binaries already in
# the target directory (no release build), checks what is in them, installs the server package
# and runs its /usr/bin/vakt-server as the package's `vakt` user from /etc/vakt/server.toml on a
# loopback port, installs and enrolls the agent with install-agent.sh, reports once with the
# installed agent, then upgrades, removes and purges both and checks that nothing is left
# behind. `systemd-analyze verify` checks the installed units.
#
# Run as root from anywhere: deploy/test-packages.sh (tests/tests/packaging.rs runs it under
# `cargo test` in CI). CARGO_TARGET_DIR says where the debug binaries are (default: target/).
# It installs and purges the vakt-agent and vakt-server packages, so it refuses to run where
# either (or its files) is already present. Exit status 77 means skipped, with the reason on
# stderr; anything else non-zero is a failure.
set -euo pipefail

# shellcheck source=deploy/test-common.sh
. "$(dirname "$0")/test-common.sh"
require_tools apt-get systemd-analyze runuser

work=$(mktemp -d /tmp/vakt-test-packages.XXXXXX)
server_pid=""
cleanup() {
    local status=$?
    if [ -n "$server_pid" ]; then
        kill "$server_pid" 2>/dev/null || true
        wait "$server_pid" 2>/dev/null || true
    fi
    if [ "$status" -ne 0 ] && [ -f "$work/server.log" ]; then
        echo "--- server log" >&2
        tail -n 40 "$work/server.log" >&2
    fi
    # Whatever happened, leave the machine as it was found.
    dpkg --purge vakt-agent vakt-server >/dev/null 2>&1 || true
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

# expect_file PATH OWNER:GROUP MODE
expect_file() {
    [ -e "$1" ] || fail "$1 is missing"
    local got
    got=$(stat -c '%U:%G %a' "$1")
    [ "$got" = "$2 $3" ] || fail "$1 is $got, expected $2 $3"
}
expect_gone() {
    local p
    for p in "$@"; do
        if [ -e "$p" ] || [ -L "$p" ]; then
            fail "$p is still there"
        fi
    done
}

# --- Build.
step "cargo deb (debug binaries from $target/debug)"
build_packages "$work"

# --- Contents: exactly these files (directories aside), with these modes.
step "package contents"
contents() {
    dpkg-deb -c "$1" | awk '$1 !~ /^d/ { print substr($1, 2, 9), $6 }' | LC_ALL=C sort
}
expected_agent="rw-r--r-- ./etc/vakt/agent.toml
rw-r--r-- ./usr/lib/systemd/system/vakt-agent.service
rw-r--r-- ./usr/share/doc/vakt-agent/copyright
rwxr-xr-x ./usr/bin/vakt-agent"
expected_server="rw-r--r-- ./etc/vakt/server.toml
rw-r--r-- ./usr/lib/systemd/system/vakt-server.service
rw-r--r-- ./usr/share/doc/vakt-server/copyright
rwxr-xr-x ./usr/bin/vakt
rwxr-xr-x ./usr/bin/vakt-server"
got_agent=$(contents "$agent_deb")
got_server=$(contents "$server_deb")
[ "$got_agent" = "$(LC_ALL=C sort <<<"$expected_agent")" ] ||
    fail "vakt-agent package holds:"$'\n'"$got_agent"$'\n'"expected:"$'\n'"$expected_agent"
[ "$got_server" = "$(LC_ALL=C sort <<<"$expected_server")" ] ||
    fail "vakt-server package holds:"$'\n'"$got_server"$'\n'"expected:"$'\n'"$expected_server"
[ "$(dpkg-deb -I "$agent_deb" conffiles)" = "/etc/vakt/agent.toml" ] || fail "agent conffiles"
[ "$(dpkg-deb -I "$server_deb" conffiles)" = "/etc/vakt/server.toml" ] || fail "server conffiles"
dpkg-deb -f "$server_deb" Depends | grep -q adduser || fail "vakt-server must depend on adduser"
for script in postinst prerm postrm; do
    dpkg-deb -I "$agent_deb" "$script" >/dev/null || fail "vakt-agent has no $script"
    dpkg-deb -I "$server_deb" "$script" >/dev/null || fail "vakt-server has no $script"
done

# --- The server package: user, data directory, units.
step "install vakt-server"
dpkg -i "$server_deb" >"$work/dpkg.log" 2>&1 || fail "dpkg -i vakt-server: $(cat "$work/dpkg.log")"
getent passwd vakt >/dev/null || fail "no vakt user after installing vakt-server"
vakt_uid=$(id -u vakt)
[ "$vakt_uid" -lt 1000 ] || fail "vakt is not a system user (uid $vakt_uid)"
expect_file /var/lib/vakt-server vakt:vakt 700
expect_file /etc/vakt/server.toml root:root 644
expect_file /lib/systemd/system/vakt-server.service root:root 644
[ -L /etc/systemd/system/multi-user.target.wants/vakt-server.service ] ||
    fail "vakt-server.service is not enabled"
# Without systemd as PID 1 there is no manager to ask; verify reads the unit files alone.
systemd-analyze verify /lib/systemd/system/vakt-server.service >"$work/verify.log" 2>&1 ||
    fail "systemd-analyze verify vakt-server.service: $(cat "$work/verify.log")"
! grep -q vakt "$work/verify.log" || fail "systemd-analyze verify complains: $(cat "$work/verify.log")"

step "run the installed server as user vakt from /etc/vakt/server.toml"
# The unit's command line, with the port overridden (a flag beats the file) so that the test
# never collides with anything on 7443.
(cd / && exec runuser -u vakt -- /usr/bin/vakt-server serve --config /etc/vakt/server.toml \
    --listen 127.0.0.1:0 >/dev/null 2>"$work/server.log") &
server_pid=$!
addr=""
for _ in $(seq 1 600); do
    addr=$(sed -n 's|.*serving gRPC on https://\([^ ]*\).*|\1|p' "$work/server.log")
    [ -n "$addr" ] && break
    kill -0 "$server_pid" 2>/dev/null || fail "vakt-server exited: $(cat "$work/server.log")"
    sleep 0.1
done
[ -n "$addr" ] || fail "vakt-server did not start within 60 s"
url=https://$addr
expect_file /var/lib/vakt-server/admin.token vakt:vakt 600
expect_file /var/lib/vakt-server/ca.pem vakt:vakt 644
vakt() {
    /usr/bin/vakt --server "$url" --ca /var/lib/vakt-server/ca.pem \
        --token-file /var/lib/vakt-server/admin.token "$@"
}
token=$(vakt enroll-token create --uses 1 --ttl 10m)

# --- install-agent.sh: argument checks first (nothing may change on a bad call).
step "install-agent.sh rejects bad arguments"
install_agent=$repo/deploy/install-agent.sh
reject() {
    local want=$1
    shift
    local out
    if out=$(bash "$install_agent" "$@" 2>&1); then
        fail "install-agent.sh $* succeeded"
    fi
    grep -q -- "$want" <<<"$out" || fail "install-agent.sh $*: expected '$want' in: $out"
}
ca=/var/lib/vakt-server/ca.pem
reject "--server URL is required" --ca "$ca" --token "$token"
reject "must be https://" --server "http://$addr" --ca "$ca" --token "$token"
reject "admin API token" --server "$url" --ca "$ca" --token "$(cat /var/lib/vakt-server/admin.token)"
reject "holds no PEM certificate" --server "$url" --ca /etc/vakt/server.toml --token "$token"
reject "not vakt-agent" --server "$url" --ca "$ca" --token "$token" --deb "$server_deb"
reject "not a duration" --server "$url" --ca "$ca" --token "$token" --report-interval soon
reject "unknown argument" --server "$url" --ca "$ca" --token "$token" --frobnicate
expect_gone /etc/vakt/agent.toml /etc/vakt/ca.pem /usr/bin/vakt-agent

# --- Zero-touch: install and enroll.
step "install-agent.sh --deb"
bash "$install_agent" --server "$url" --ca "$ca" --token "$token" --deb "$agent_deb" \
    --report-interval 10m >"$work/install.log" 2>&1 ||
    fail "install-agent.sh failed: $(cat "$work/install.log")"
cat "$work/install.log"
grep -q "systemd is not running" "$work/install.log" || fail "install-agent.sh did not say that systemd is not running"
grep -q "vakt-agent run --config /etc/vakt/agent.toml" "$work/install.log" ||
    fail "install-agent.sh did not say how to start the agent by hand"
expect_file /usr/bin/vakt-agent root:root 755
expect_file /etc/vakt/agent.toml root:root 644
expect_file /etc/vakt/ca.pem root:root 644
expect_file /etc/vakt/enroll.token root:root 600
expect_file /var/lib/vakt root:root 700
expect_file /lib/systemd/system/vakt-agent.service root:root 644
[ -L /etc/systemd/system/multi-user.target.wants/vakt-agent.service ] ||
    fail "vakt-agent.service is not enabled"
cmp -s "$ca" /etc/vakt/ca.pem || fail "/etc/vakt/ca.pem differs from the server's CA"
[ "$(cat /etc/vakt/enroll.token)" = "$token" ] || fail "/etc/vakt/enroll.token does not hold the token"
grep -qx "server = \"$url\"" /etc/vakt/agent.toml || fail "agent.toml does not name $url"
grep -qx 'report_interval = "10m"' /etc/vakt/agent.toml || fail "agent.toml lacks the report interval"
systemd-analyze verify /lib/systemd/system/vakt-agent.service >"$work/verify.log" 2>&1 ||
    fail "systemd-analyze verify vakt-agent.service: $(cat "$work/verify.log")"
! grep -q vakt "$work/verify.log" || fail "systemd-analyze verify complains: $(cat "$work/verify.log")"

step "install-agent.sh again: nothing changes"
bash "$install_agent" --server "$url" --ca "$ca" --token "$token" --deb "$agent_deb" \
    --report-interval 10m >"$work/install2.log" 2>&1 ||
    fail "install-agent.sh (second run) failed: $(cat "$work/install2.log")"
grep -q "wrote" "$work/install2.log" && fail "the second run rewrote files: $(cat "$work/install2.log")"

step "the installed agent enrolls and reports"
/usr/bin/vakt-agent run --once --config /etc/vakt/agent.toml >"$work/agent.log" 2>&1 ||
    fail "vakt-agent run --once: $(cat "$work/agent.log")"
expect_gone /etc/vakt/enroll.token
expect_file /var/lib/vakt/identity.json root:root 600
device=$(/usr/bin/vakt-agent status --json --config /etc/vakt/agent.toml |
    sed -n 's/.*"device_id": *"\([^"]*\)".*/\1/p')
[ -n "$device" ] || fail "vakt-agent status shows no device id"
devices=$(vakt devices --json)
grep -q "\"$device\"" <<<"$devices" || fail "the server does not list device $device: $devices"
identity_sum=$(sha256sum /var/lib/vakt/identity.json)

step "install-agent.sh on an enrolled machine does not write the token"
bash "$install_agent" --server "$url" --ca "$ca" --token "$token" --deb "$agent_deb" \
    --report-interval 10m >"$work/install3.log" 2>&1 ||
    fail "install-agent.sh (enrolled) failed: $(cat "$work/install3.log")"
grep -q "already enrolled" "$work/install3.log" || fail "install-agent.sh did not notice the identity"
expect_gone /etc/vakt/enroll.token

# --- Upgrade (the same package again takes dpkg's upgrade path), remove, reinstall.
step "upgrade keeps the identity and the configuration"
dpkg -i "$agent_deb" >"$work/dpkg.log" 2>&1 || fail "dpkg -i (upgrade): $(cat "$work/dpkg.log")"
[ "$(sha256sum /var/lib/vakt/identity.json)" = "$identity_sum" ] || fail "the upgrade changed the identity"
grep -qx "server = \"$url\"" /etc/vakt/agent.toml || fail "the upgrade replaced agent.toml"
/usr/bin/vakt-agent run --once --config /etc/vakt/agent.toml >"$work/agent.log" 2>&1 ||
    fail "vakt-agent run --once after the upgrade: $(cat "$work/agent.log")"

step "remove keeps configuration and state"
dpkg -r vakt-agent >"$work/dpkg.log" 2>&1 || fail "dpkg -r vakt-agent: $(cat "$work/dpkg.log")"
expect_gone /usr/bin/vakt-agent /lib/systemd/system/vakt-agent.service
expect_file /etc/vakt/agent.toml root:root 644
expect_file /etc/vakt/ca.pem root:root 644
[ "$(sha256sum /var/lib/vakt/identity.json)" = "$identity_sum" ] || fail "remove changed the identity"
dpkg -i "$agent_deb" >"$work/dpkg.log" 2>&1 || fail "dpkg -i (reinstall): $(cat "$work/dpkg.log")"
/usr/bin/vakt-agent run --once --config /etc/vakt/agent.toml >"$work/agent.log" 2>&1 ||
    fail "vakt-agent run --once after reinstalling: $(cat "$work/agent.log")"
devices=$(vakt devices --json)
[ "$(grep -o '"id"' <<<"$devices" | wc -l)" -eq 1 ] ||
    fail "the reinstalled agent enrolled as a second device: $devices"

# --- Purge: nothing left behind.
step "purge vakt-agent"
dpkg --purge vakt-agent >"$work/dpkg.log" 2>&1 || fail "dpkg --purge vakt-agent: $(cat "$work/dpkg.log")"
expect_gone /usr/bin/vakt-agent /etc/vakt/agent.toml /etc/vakt/ca.pem /etc/vakt/enroll.token \
    /var/lib/vakt /lib/systemd/system/vakt-agent.service \
    /etc/systemd/system/multi-user.target.wants/vakt-agent.service \
    /etc/systemd/system/vakt-agent.service
expect_file /etc/vakt/server.toml root:root 644 # the server's, untouched

# --- The Ansible role does the same as install-agent.sh.
if command -v ansible-playbook >/dev/null && [ -x /usr/bin/python3 ] &&
    /usr/bin/python3 -c 'import apt' 2>/dev/null; then
    step "the Ansible role installs and enrolls the agent"
    # The purge above threw the laptop's key away, so this is a reinstalled laptop. Its old
    # certificate is still valid: without IT's word the enrollment would become a new device
    # sharing the hardware (issue 15). IT says so first, as for a real reinstall.
    vakt device reenroll "$device" >"$work/reenroll.log" 2>&1 ||
        fail "vakt device reenroll $device: $(cat "$work/reenroll.log")"
    printf '[laptops]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n' \
        >"$work/inventory"
    cat >"$work/vars.json" <<EOF
{"vakt_server_url": "$url", "vakt_ca_file": "$ca", "vakt_agent_deb": "$agent_deb",
 "vakt_enroll_token": "$(vakt enroll-token create --uses 1 --ttl 10m)"}
EOF
    ansible-playbook -i "$work/inventory" -e "@$work/vars.json" deploy/ansible/site.yml \
        >"$work/ansible.log" 2>&1 || fail "ansible-playbook: $(cat "$work/ansible.log")"
    grep -q "systemd is not running on localhost" "$work/ansible.log" ||
        fail "the role did not say that systemd is not running: $(cat "$work/ansible.log")"
    expect_file /etc/vakt/enroll.token root:root 600
    expect_file /etc/vakt/agent.toml root:root 644
    grep -qx "server = \"$url\"" /etc/vakt/agent.toml || fail "the role's agent.toml does not name $url"
    /usr/bin/vakt-agent run --once --config /etc/vakt/agent.toml >"$work/agent.log" 2>&1 ||
        fail "vakt-agent run --once after the role: $(cat "$work/agent.log")"
    expect_gone /etc/vakt/enroll.token
    # Same machine, same hardware identity, and IT allowed the takeover: the same device.
    again=$(/usr/bin/vakt-agent status --json --config /etc/vakt/agent.toml |
        sed -n 's/.*"device_id": *"\([^"]*\)".*/\1/p')
    [ "$again" = "$device" ] || fail "re-enrolled as $again, expected $device"
    ansible-playbook -i "$work/inventory" -e "@$work/vars.json" deploy/ansible/site.yml \
        >"$work/ansible.log" 2>&1 || fail "ansible-playbook (again): $(cat "$work/ansible.log")"
    grep -Eq "localhost +: ok=[0-9]+ +changed=0 " "$work/ansible.log" ||
        fail "the role's second run changed something: $(cat "$work/ansible.log")"
    expect_gone /etc/vakt/enroll.token
    dpkg --purge vakt-agent >"$work/dpkg.log" 2>&1 || fail "dpkg --purge vakt-agent: $(cat "$work/dpkg.log")"
    rm -f /var/cache/vakt-agent.deb
else
    echo "(ansible-playbook, or /usr/bin/python3 with python3-apt, is missing: the Ansible role is not exercised)"
fi

step "remove and purge vakt-server"
kill "$server_pid"
wait "$server_pid" 2>/dev/null || true
server_pid=""
dpkg -r vakt-server >"$work/dpkg.log" 2>&1 || fail "dpkg -r vakt-server: $(cat "$work/dpkg.log")"
expect_gone /usr/bin/vakt-server /usr/bin/vakt
expect_file /var/lib/vakt-server/ca.pem vakt:vakt 644
expect_file /etc/vakt/server.toml root:root 644
dpkg --purge vakt-server >"$work/dpkg.log" 2>&1 || fail "dpkg --purge vakt-server: $(cat "$work/dpkg.log")"
expect_gone /etc/vakt /var/lib/vakt-server /lib/systemd/system/vakt-server.service \
    /etc/systemd/system/multi-user.target.wants/vakt-server.service
leftovers=$(find /etc /var/lib /usr/bin /usr/lib/systemd /usr/share/doc -name '*vakt*' \
    -not -path '/var/lib/dpkg/*' 2>/dev/null || true)
[ -z "$leftovers" ] || fail "left behind after purging: $leftovers"
# Debian leaves system users in place on purge (see deploy/debian/vakt-server.postrm).
getent passwd vakt >/dev/null || fail "the vakt user was removed; the postrm should keep it"

echo "test-packages.sh: all checks passed"
