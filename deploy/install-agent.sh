#!/usr/bin/env bash
# install-agent.sh: zero-touch installation of the Vakt agent on one machine.
#
#   install-agent.sh --server https://vakt.example.org:7443 --ca ca.pem --token vakt_e_… \
#                    [--deb vakt-agent_VERSION_amd64.deb] [--report-interval 15m]
#
# Installs the vakt-agent package (the given .deb, else from the configured apt repositories),
# writes /etc/vakt/agent.toml, the server's CA certificate (/etc/vakt/ca.pem) and the
# enrollment token (/etc/vakt/enroll.token, mode 0600), then enables and starts the service
# where systemd runs. On its first start the agent enrolls and removes the token file.
#
# Running it again is safe: files that would not change are left alone, and on a machine that
# has already enrolled the token is not written again (a used token is a secret with no
# further use). The same settings can be pushed by the Ansible role in deploy/ansible/ or baked
# into an image; see deploy/README.md.
set -euo pipefail

readonly PROG=install-agent.sh
readonly ETC=/etc/vakt
readonly STATE=/var/lib/vakt
readonly CONFIG=$ETC/agent.toml
readonly CA_DEST=$ETC/ca.pem
readonly TOKEN_DEST=$ETC/enroll.token
readonly AGENT=/usr/bin/vakt-agent

usage() {
    cat <<EOF
Usage: $PROG --server URL --ca FILE (--token TOKEN | --token-file FILE) [--deb FILE]
                         [--report-interval DURATION]

  --server URL            the control server as agents reach it: https://HOST:PORT
  --ca FILE               the server's CA certificate (DATA/ca.pem on the server)
  --token TOKEN           an enrollment token from \`vakt enroll-token create\`
  --token-file FILE       the same, read from FILE (keeps it out of the process list)
  --deb FILE              install this vakt-agent .deb instead of the apt repositories'
  --report-interval D     how often the agent reports, e.g. 15m (default), 1h; at least 10s
  -h, --help              this text

Run as root. Safe to run again with the same arguments.
EOF
}

die() {
    echo "$PROG: $*" >&2
    exit 1
}

usage_error() {
    echo "$PROG: $*" >&2
    echo "Try '$PROG --help'." >&2
    exit 2
}

say() {
    echo "$PROG: $*"
}

server="" ca="" token="" token_file="" deb="" interval="15m"
while [ $# -gt 0 ]; do
    opt=$1
    case "$opt" in
        -h | --help)
            usage
            exit 0
            ;;
        --server | --ca | --token | --token-file | --deb | --report-interval)
            [ $# -ge 2 ] || usage_error "$opt needs a value"
            val=$2
            shift 2
            ;;
        --server=* | --ca=* | --token=* | --token-file=* | --deb=* | --report-interval=*)
            val=${opt#*=}
            opt=${opt%%=*}
            shift
            ;;
        *) usage_error "unknown argument '$opt'" ;;
    esac
    case "$opt" in
        --server) server=$val ;;
        --ca) ca=$val ;;
        --token) token=$val ;;
        --token-file) token_file=$val ;;
        --deb) deb=$val ;;
        --report-interval) interval=$val ;;
    esac
done

# --- Arguments: every problem is reported before anything on the machine changes.
[ -n "$server" ] || usage_error "--server URL is required (e.g. https://vakt.example.org:7443)"
[ -n "$ca" ] || usage_error "--ca FILE is required (the server's DATA/ca.pem)"
if [ -n "$token" ] && [ -n "$token_file" ]; then
    usage_error "give --token or --token-file, not both"
fi
if [ -n "$token_file" ]; then
    [ -r "$token_file" ] || usage_error "--token-file: cannot read '$token_file'"
    token=$(tr -d '[:space:]' <"$token_file")
    [ -n "$token" ] || usage_error "--token-file: '$token_file' is empty"
fi
[ -n "$token" ] || usage_error "--token TOKEN (or --token-file FILE) is required: make one with \`vakt enroll-token create\`"

# The values go into a TOML file between double quotes: allow only what a URL, a duration and
# a token are made of, so nothing can break out of the string.
case "$server" in
    https://*) ;;
    http://*) usage_error "--server: '$server' must be https:// (agents only talk TLS)" ;;
    *) usage_error "--server: '$server' is not a URL; write e.g. https://vakt.example.org:7443" ;;
esac
if ! [[ "$server" =~ ^https://([A-Za-z0-9.-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?/?$ ]]; then
    usage_error "--server: '$server' is not https://HOST or https://HOST:PORT"
fi
server=${server%/}
case "$token" in
    vakt_a_*) usage_error "--token: that is an admin API token; agents need an enrollment token from \`vakt enroll-token create\`" ;;
esac
if ! [[ "$token" =~ ^vakt_e_[0-9a-f]+$ ]]; then
    usage_error "--token: not an enrollment token (vakt_e_ and hex digits, as \`vakt enroll-token create\` prints)"
fi
if ! [[ "$interval" =~ ^[0-9]+(s|m|h|d)$ ]]; then
    usage_error "--report-interval: '$interval' is not a duration like 30s, 15m, 1h"
fi
if ! [ -f "$ca" ] || ! [ -r "$ca" ]; then
    usage_error "--ca: cannot read '$ca'"
fi
grep -q -- "-----BEGIN CERTIFICATE-----" "$ca" ||
    usage_error "--ca: '$ca' holds no PEM certificate (use the server's DATA/ca.pem)"
if [ -n "$deb" ]; then
    if ! [ -f "$deb" ] || ! [ -r "$deb" ]; then
        usage_error "--deb: cannot read '$deb'"
    fi
    pkg=$(dpkg-deb --field "$deb" Package 2>/dev/null) ||
        usage_error "--deb: '$deb' is not a Debian package"
    [ "$pkg" = vakt-agent ] || usage_error "--deb: '$deb' is package '$pkg', not vakt-agent"
    deb=$(realpath "$deb")
fi
[ "$(id -u)" -eq 0 ] || die "run as root: this installs a package and writes $ETC"

# --- The package.
export DEBIAN_FRONTEND=noninteractive
# Keep a locally changed /etc/vakt/agent.toml on upgrades instead of asking (there is nobody to
# ask); this script rewrites it below anyway.
apt_opts=(-y -q --no-install-recommends
    -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
before=$(dpkg-query -W -f='${Status} ${Version}' vakt-agent 2>/dev/null || true)
if [ -n "$deb" ]; then
    say "installing $deb"
    apt-get install "${apt_opts[@]}" "$deb" >/dev/null ||
        die "could not install $deb (see apt-get's message above)"
else
    say "installing vakt-agent from the configured apt repositories"
    apt-get install "${apt_opts[@]}" vakt-agent >/dev/null ||
        die "could not install vakt-agent from the apt repositories: add Vakt's repository, or pass --deb FILE"
fi
after=$(dpkg-query -W -f='${Status} ${Version}' vakt-agent)
changed=no
[ "$before" = "$after" ] || changed=yes
say "package: vakt-agent ${after##* }"

# --- Files. Each is written to a temporary name next to its place and renamed over it, so an
# interrupted run never leaves half a file, and only when its content differs.
install -d -m 0755 "$ETC"

# put SRC DEST MODE: moves SRC (a new file) to DEST unless DEST already has the same content.
put() {
    local src=$1 dest=$2 mode=$3
    chmod "$mode" "$src"
    if [ -f "$dest" ] && cmp -s "$src" "$dest"; then
        rm -f "$src"
        chmod "$mode" "$dest"
        say "$dest unchanged"
    else
        mv -f "$src" "$dest"
        changed=yes
        say "wrote $dest"
    fi
}

tmp=$(mktemp "$ETC/.install-agent.XXXXXX")
trap 'rm -f "$tmp"' EXIT

cp "$ca" "$tmp"
put "$tmp" "$CA_DEST" 0644

tmp=$(mktemp "$ETC/.install-agent.XXXXXX")
cat >"$tmp" <<EOF
# Vakt agent: /etc/vakt/agent.toml, written by install-agent.sh (running it again rewrites
# this file). Unknown keys are errors, so a typo stops the agent instead of being ignored.
# After a change: systemctl restart vakt-agent

# The control server, as agents reach it (its name must be one of the server's hostnames).
server = "$server"
# The server's CA certificate.
ca = "$CA_DEST"
# Identity (key, certificate) and report bookkeeping; the service may write only here and
# in /etc (see vakt-agent.service).
state_dir = "$STATE"
# The enrollment token, read on first start only: the agent removes the file once enrolled.
enroll_token_file = "$TOKEN_DEST"
# How often the agent reports (it sends only what changed). At least 10s.
report_interval = "$interval"

# The defaults for locking (logind) and wiping (LUKS key slots) apply; for [lock] and
# [wipe], see deploy/config/agent.toml in Vakt's source.
EOF
# The agent itself checks the file (a too short interval, say) before it replaces the old one.
if ! check=$("$AGENT" status --config "$tmp" 2>&1 >/dev/null); then
    die "the agent rejects the configuration: $check"
fi
put "$tmp" "$CONFIG" 0644

# --- The token, unless this machine already has an identity.
identity=$STATE/identity.json
if [ -f "$identity" ]; then
    enrolled_with=$(sed -n 's/.*"server" *: *"\([^"]*\)".*/\1/p' "$identity" | head -n 1)
    if [ -n "$enrolled_with" ] && [ "$enrolled_with" != "$server" ]; then
        say "WARNING: this machine is enrolled with $enrolled_with, not $server, and keeps" \
            "talking to it. To enroll with $server instead: apt-get purge vakt-agent, then run" \
            "this script again."
    fi
    say "already enrolled ($identity exists): the token is not written"
    rm -f "$TOKEN_DEST"
else
    tmp=$(mktemp "$ETC/.install-agent.XXXXXX") # mktemp creates it 0600
    printf '%s\n' "$token" >"$tmp"
    put "$tmp" "$TOKEN_DEST" 0600
fi
trap - EXIT

# --- The service.
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    systemctl enable --quiet vakt-agent.service
    if [ "$changed" = yes ]; then
        systemctl restart vakt-agent.service
    else
        systemctl start vakt-agent.service
    fi
    if [ -f "$TOKEN_DEST" ]; then
        # Enrollment takes a moment; say how it went if it is quick, and where to look if not.
        for _ in $(seq 1 30); do
            [ -f "$TOKEN_DEST" ] || break
            sleep 1
        done
    fi
    if [ -f "$identity" ] && ! [ -f "$TOKEN_DEST" ]; then
        say "vakt-agent is running and enrolled; \`vakt-agent status\` shows its device id"
    else
        say "vakt-agent is started but has not enrolled yet; see: journalctl -u vakt-agent"
    fi
else
    say "systemd is not running on this machine (no /run/systemd/system), so the service was" \
        "not started. Start the agent by hand, or from this machine's init system:"
    say "    $AGENT run --config $CONFIG"
    say "(\`$AGENT run --once --config $CONFIG\` enrolls, reports once and exits.)"
fi
