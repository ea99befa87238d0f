#!/usr/bin/env bash
# Installs what the console's single sign-on tests (tests/tests/oidc.rs) need on a fresh Debian
# machine, as root: oidc-provider-mock from PyPI, a real OpenID Connect provider (discovery,
# JWKS, authorization code with PKCE, an HTTP API to set a user's claims) that stands in for
# Entra ID or Keycloak. It goes into its own virtualenv so pip never touches the system's
# site-packages. The test harness looks for exactly this interpreter; VAKT_OIDC_MOCK_PYTHON
# overrides it.
#
# Idempotent: a second run finds everything in place and changes nothing.
set -euo pipefail

VENV="${VAKT_OIDC_MOCK_VENV:-/opt/vakt-ci/oidc-mock}"
VERSION="0.2"

if ! dpkg-query -W -f='${Status}' python3-venv 2>/dev/null | grep -q 'install ok installed'; then
    echo "install-oidc: apt-get install python3-venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends python3-venv
fi

if [ ! -x "$VENV/bin/python3" ]; then
    echo "install-oidc: creating $VENV"
    mkdir -p "$(dirname "$VENV")"
    /usr/bin/python3 -m venv "$VENV"
fi

have_mock() {
    "$VENV/bin/python3" -c 'import oidc_provider_mock' 2>/dev/null
}

if ! have_mock; then
    echo "install-oidc: pip install oidc-provider-mock>=$VERSION into $VENV"
    "$VENV/bin/python3" -m pip install --quiet --disable-pip-version-check \
        "oidc-provider-mock>=$VERSION"
fi

have_mock || { echo "install-oidc: $VENV/bin/python3 still cannot import oidc_provider_mock" >&2; exit 1; }
echo "install-oidc: ok ($("$VENV/bin/python3" -m pip show oidc-provider-mock 2>/dev/null | grep -i '^version'))"
