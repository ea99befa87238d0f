#!/usr/bin/env bash
# test-units-under-systemd.sh: the hardened units, run by a real systemd.
#
# `systemd-analyze verify` (in test-packages.sh) only reads the unit files; whether the
# services still work inside their sandboxes needs a service manager. A CI container has none,
# so this boots one: systemd as PID 1 of new PID and mount namespaces, with a private /run, on
# this machine's file system. It starts only a target of its own, not the machine's services.
# Inside it the script installs the packages (maintainer scripts starting and stopping units
# for real), lets vakt-server.service create its data as the `vakt` user, enrolls the agent
# with install-agent.sh taking its systemd path (enable, restart, wait for enrollment), checks
# that vakt-agent.service reports and holds its command stream, restarts both on an upgrade,
# prints `systemd-analyze security`, and purges everything.
#
# Opt-in, not part of CI: it needs root with CAP_SYS_ADMIN, and it leaves the `vakt` system
# user behind (as the package does on purge). Like test-packages.sh it refuses to run where
# Vakt is installed. Debug binaries from CARGO_TARGET_DIR (default target/). Exit 77: skipped.
set -euo pipefail

# shellcheck source=deploy/test-common.sh
. "$(dirname "$0")/test-common.sh"
port=17443
[ -x /lib/systemd/systemd ] || skip "systemd is not installed"
[ ! -d /run/systemd/system ] || skip "systemd already runs here: use the real one"
require_tools unshare nsenter systemd-analyze
if (: >"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    skip "port $port is in use"
fi

work=$(mktemp -d /tmp/vakt-test-units.XXXXXX)
chmod 755 "$work" # the vakt user reads nothing here, but apt's sandbox user reads the .debs
sd_pid=""
cleanup() {
    local status=$?
    if [ -n "$sd_pid" ]; then
        # PID 1 of the namespace: killing it ends every process in it, and the private /run.
        kill -9 "$sd_pid" 2>/dev/null || true
        sleep 1
        # The named cgroup hierarchies it made are shared with the machine: remove them.
        local d
        for d in /sys/fs/cgroup/*/init.scope /sys/fs/cgroup/*/system.slice; do
            [ -d "$d" ] || continue
            find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null || true
        done
    fi
    dpkg --purge vakt-agent vakt-server >/dev/null 2>&1 || true
    rm -rf "$work"
    exit "$status"
}
trap cleanup EXIT

step "cargo deb"
build_packages "$work"

step "boot systemd in its own namespaces"
cat >"$work/boot.sh" <<EOF
#!/bin/bash
set -e
mount -t tmpfs -o mode=755 tmpfs /run
mkdir -p /run/systemd/system /run/lock
# A target of its own, so that none of the machine's services start.
printf '[Unit]\nDescription=Vakt unit test\nDefaultDependencies=no\n' >/run/systemd/system/vakt-test.target
# The units' own settings stay as packaged; a drop-in only drops the boot-time ordering
# (nothing boots here) and sends output to a file, there being no journal.
for u in vakt-server vakt-agent; do
    mkdir -p /run/systemd/system/\$u.service.d
    printf '[Unit]\nDefaultDependencies=no\n[Service]\nStandardOutput=append:/run/%s.log\nStandardError=append:/run/%s.log\n' \$u \$u \
        >/run/systemd/system/\$u.service.d/test.conf
done
# Docker images forbid maintainer scripts to start services (exit 101); allow it in here.
printf '#!/bin/sh\nexit 0\n' >/run/policy-rc.d
chmod 755 /run/policy-rc.d
[ ! -e /usr/sbin/policy-rc.d ] || mount --bind /run/policy-rc.d /usr/sbin/policy-rc.d
# The server's postinst would start it on the shipped port (7443), which may be someone
# else's on this machine: masked until its config names the test's port.
ln -s /dev/null /run/systemd/system/vakt-server.service
exec /lib/systemd/systemd --system --unit=vakt-test.target </dev/null >/dev/null 2>&1
EOF
chmod 755 "$work/boot.sh"
unshare --pid --fork --mount --propagation private --mount-proc "$work/boot.sh" &
for _ in $(seq 1 100); do
    sd_pid=$(pgrep -f "^/lib/systemd/systemd --system --unit=vakt-test.target" || true)
    if [ -n "$sd_pid" ] &&
        nsenter -t "$sd_pid" -m -p systemctl is-system-running >/dev/null 2>&1; then
        break
    fi
    sleep 0.1
done
[ -n "$sd_pid" ] || fail "systemd did not start in the namespace"
inside() {
    nsenter -t "$sd_pid" -m -p "$@"
}
inside systemctl is-system-running >/dev/null || fail "systemd is not running: $(inside systemctl is-system-running)"

step "install vakt-server and start it as packaged, on a port of its own"
inside dpkg -i "$server_deb" >"$work/dpkg.log" 2>&1 || fail "dpkg -i: $(cat "$work/dpkg.log")"
# The rest of server.toml stays as shipped. dpkg keeps the edited conffile on the upgrade
# below (--force-confold).
sed -i "s/^listen = .*/listen = \"127.0.0.1:$port\"/; s/^console = .*/console = \"127.0.0.1:$((port + 37))\"/" \
    /etc/vakt/server.toml
inside rm /run/systemd/system/vakt-server.service
inside systemctl daemon-reload
inside systemctl start vakt-server.service
url=https://127.0.0.1:$port
for _ in $(seq 1 100); do
    inside grep -q "serving gRPC" /run/vakt-server.log 2>/dev/null && break
    sleep 0.1
done
inside systemctl is-active --quiet vakt-server.service ||
    fail "vakt-server.service is not active: $(inside cat /run/vakt-server.log)"
inside grep -q "serving gRPC on $url" /run/vakt-server.log ||
    fail "vakt-server.service does not serve on $url: $(inside cat /run/vakt-server.log)"
[ "$(stat -c %U /var/lib/vakt-server/admin.token)" = vakt ] || fail "admin.token is not the vakt user's"
main=$(inside systemctl show -p MainPID --value vakt-server.service)
inside grep -q "^NoNewPrivs:.1" "/proc/$main/status" || fail "vakt-server runs without NoNewPrivs"
inside grep -q "^CapEff:.0000000000000000" "/proc/$main/status" || fail "vakt-server holds capabilities"
inside grep -q "^Seccomp:.2" "/proc/$main/status" || fail "vakt-server runs without a system call filter"

vakt() {
    /usr/bin/vakt --server "$url" --ca /var/lib/vakt-server/ca.pem \
        --token-file /var/lib/vakt-server/admin.token "$@"
}
token=$(vakt enroll-token create --uses 1 --ttl 10m)

step "install-agent.sh where systemd runs"
inside bash "$repo/deploy/install-agent.sh" --server "$url" --ca /var/lib/vakt-server/ca.pem \
    --token "$token" --deb "$agent_deb" >"$work/install.log" 2>&1 ||
    fail "install-agent.sh: $(cat "$work/install.log")"
cat "$work/install.log"
grep -q "running and enrolled" "$work/install.log" || fail "install-agent.sh did not see the agent enroll"
inside systemctl is-enabled --quiet vakt-agent.service || fail "vakt-agent.service is not enabled"
[ ! -e /etc/vakt/enroll.token ] || fail "the token file is still there"
device=$(/usr/bin/vakt-agent status --json | sed -n 's/.*"device_id": *"\([^"]*\)".*/\1/p')
connected() {
    vakt device show "$device" --json | grep -q '"connected": *true'
}
for _ in $(seq 1 100); do
    connected && break
    sleep 0.1
done
connected || fail "the server does not show $device with its stream up: $(vakt device show "$device")"
main=$(inside systemctl show -p MainPID --value vakt-agent.service)
inside grep -q "^NoNewPrivs:.1" "/proc/$main/status" || fail "vakt-agent runs without NoNewPrivs"
inside grep -q "^Seccomp:.2" "/proc/$main/status" || fail "vakt-agent runs without a system call filter"

step "upgrades restart both and keep the identity"
identity=$(sha256sum /var/lib/vakt/identity.json)
before=$(inside systemctl show -p ExecMainStartTimestampMonotonic --value vakt-agent.service)
inside dpkg -i --force-confold "$agent_deb" "$server_deb" >"$work/dpkg.log" 2>&1 ||
    fail "dpkg -i (upgrade): $(cat "$work/dpkg.log")"
after=$(inside systemctl show -p ExecMainStartTimestampMonotonic --value vakt-agent.service)
[ "$before" != "$after" ] || fail "the upgrade did not restart vakt-agent.service"
inside systemctl is-active --quiet vakt-agent.service || fail "vakt-agent.service is not active after the upgrade"
inside systemctl is-active --quiet vakt-server.service || fail "vakt-server.service is not active after the upgrade"
[ "$(sha256sum /var/lib/vakt/identity.json)" = "$identity" ] || fail "the upgrade changed the identity"

step "systemd-analyze security"
for unit in vakt-server vakt-agent; do
    inside systemd-analyze security "$unit.service" --no-pager | tail -n 1
done

step "purge stops the services"
inside dpkg --purge vakt-agent vakt-server >"$work/dpkg.log" 2>&1 || fail "dpkg --purge: $(cat "$work/dpkg.log")"
for unit in vakt-server vakt-agent; do
    ! inside systemctl is-active --quiet "$unit.service" || fail "$unit.service still runs after purge"
done
for path in /etc/vakt /var/lib/vakt /var/lib/vakt-server /usr/bin/vakt-agent /usr/bin/vakt-server; do
    [ ! -e "$path" ] || fail "$path is still there"
done
echo "test-units-under-systemd.sh: all checks passed"
