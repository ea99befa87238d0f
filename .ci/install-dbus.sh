#!/usr/bin/env bash
# Installs what the D-Bus tests (tests/src/dbus.rs) need on a fresh Debian 12 machine, as root:
# a dbus-daemon to run a private bus, and python-dbusmock >= 0.32 (the first release with the
# `modemmanager` template; Debian 12 packages 0.28) for a Python that can also import dbus and gi.
#
# Debian's /usr/bin/python3 is the one that gets python3-dbus and python3-gi from apt; a pyenv
# `python3` earlier on PATH cannot import them. So dbusmock goes into a virtualenv made from
# /usr/bin/python3 with --system-site-packages (it sees apt's dbus and gi, and pip never touches
# the system's own site-packages). The test harness looks for exactly this interpreter first;
# VAKT_DBUSMOCK_PYTHON overrides it.
#
# Idempotent: a second run finds everything in place and changes nothing.
set -euo pipefail

VENV="${VAKT_DBUSMOCK_VENV:-/opt/vakt-ci/dbusmock}"
MIN_DBUSMOCK="0.32"

need_apt=()
command -v dbus-daemon >/dev/null 2>&1 || need_apt+=(dbus)
for pkg in python3-dbus python3-gi python3-venv; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' || need_apt+=("$pkg")
done
if [ "${#need_apt[@]}" -gt 0 ]; then
    echo "install-dbus: apt-get install ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}"
fi

if [ ! -x "$VENV/bin/python3" ]; then
    echo "install-dbus: creating $VENV"
    mkdir -p "$(dirname "$VENV")"
    /usr/bin/python3 -m venv --system-site-packages "$VENV"
fi

# True when the venv's python imports dbus, gi and a dbusmock new enough to have the template.
have_dbusmock() {
    "$VENV/bin/python3" - "$MIN_DBUSMOCK" <<'PY' 2>/dev/null
import sys
import dbus, gi  # noqa: F401  (the mock needs both)
import dbusmock
import dbusmock.templates.modemmanager  # noqa: F401
def v(s):
    return tuple(int(p) for p in s.split(".")[:2] if p.isdigit())
sys.exit(0 if v(dbusmock.__version__) >= v(sys.argv[1]) else 1)
PY
}

if ! have_dbusmock; then
    echo "install-dbus: pip install python-dbusmock>=$MIN_DBUSMOCK into $VENV"
    "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check \
        "python-dbusmock>=$MIN_DBUSMOCK"
fi

have_dbusmock || { echo "install-dbus: $VENV/bin/python3 still cannot import dbusmock >= $MIN_DBUSMOCK with dbus and gi" >&2; exit 1; }
echo "install-dbus: ok ($("$VENV/bin/python3" -c 'import dbusmock; print("python-dbusmock", dbusmock.__version__)'), $(dbus-daemon --version | head -1))"
