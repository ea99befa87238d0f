#!/usr/bin/env bash
# A real Prometheus (Debian's) for the metrics test (tests/tests/metrics.rs), which starts it
# on a loopback port to scrape a test server; promtool checks deploy/prometheus/alerts.yml.
# Idempotent.
set -euo pipefail
if ! command -v prometheus >/dev/null 2>&1 || ! command -v promtool >/dev/null 2>&1; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends prometheus
fi
prometheus --version | head -1
