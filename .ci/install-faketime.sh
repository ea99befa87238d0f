#!/usr/bin/env bash
# libfaketime, for the test of an agent whose clock runs hours ahead of the server's
# (tests/tests/signing.rs): the agent runs under LD_PRELOAD with FAKETIME=+3h while its
# monotonic clock stays true. Idempotent.
set -euo pipefail
if ! dpkg-query -W -f='${Status}' libfaketime 2>/dev/null | grep -q 'install ok installed'; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends libfaketime
fi
ls /usr/lib/*/faketime/libfaketime.so.1
