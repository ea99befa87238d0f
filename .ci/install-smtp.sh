#!/usr/bin/env bash
# A real SMTP listener for the notification tests: aiosmtpd (PyPI) in a virtualenv of its own,
# storing what it receives in a maildir. tests/src/lib.rs looks for exactly this interpreter.
set -euo pipefail
VENV="${VAKT_SMTP_VENV:-/opt/vakt-ci/smtp}"
if ! "$VENV/bin/python3" -c 'import aiosmtpd' 2>/dev/null; then
    dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q 'install ok installed' || {
        export DEBIAN_FRONTEND=noninteractive
        apt-get install -y -qq --no-install-recommends python3-venv
    }
    mkdir -p "$(dirname "$VENV")"
    /usr/bin/python3 -m venv "$VENV"
    "$VENV/bin/pip" install -q aiosmtpd
fi
"$VENV/bin/python3" -c 'import aiosmtpd; print("aiosmtpd", aiosmtpd.__version__)'
