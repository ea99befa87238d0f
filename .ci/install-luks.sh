#!/usr/bin/env bash
# cryptsetup, for the wipe test that erases the key slots of a LUKS image file made by the test.
set -euo pipefail
if ! command -v cryptsetup >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends cryptsetup-bin
fi
cryptsetup --version
