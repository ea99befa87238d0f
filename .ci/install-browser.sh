#!/usr/bin/env bash
# Debian's Chromium and ChromeDriver for the web console's browser test (tests/tests/console.rs,
# driven over WebDriver by tests/src/webdriver.rs): /usr/bin/chromium and /usr/bin/chromedriver.
# The test runs Chromium headless as root with --no-sandbox and no background networking.
# Idempotent: a second run finds both and installs nothing.
set -euo pipefail
need=()
[ -x /usr/bin/chromium ] || need+=(chromium)
[ -x /usr/bin/chromedriver ] || need+=(chromium-driver)
if [ "${#need[@]}" -gt 0 ]; then
    echo "install-browser: apt-get install ${need[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
# Both come from the same source package; a mismatch would refuse every session.
chromium --version
chromedriver --version
