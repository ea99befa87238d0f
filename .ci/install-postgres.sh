#!/usr/bin/env bash
# PostgreSQL from Debian, for the store's PostgreSQL engine: the tests start a private cluster
# of their own (initdb and pg_ctl in a temporary directory as the `postgres` user the package
# creates, tests/src/pg.rs); nothing here starts or configures a server. Idempotent.
set -euo pipefail
if ! dpkg-query -W -f='${Status}' postgresql 2>/dev/null | grep -q 'install ok installed'; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends postgresql
fi
# The package keeps initdb and pg_ctl out of PATH; the harness finds them under here.
ls /usr/lib/postgresql/*/bin/initdb /usr/lib/postgresql/*/bin/pg_ctl
id postgres
