#!/usr/bin/env bash
# Runs every cargo-fuzz target briefly: each parser and decoder gets FUZZ_SECONDS (default 20)
# of libFuzzer on top of its corpus. A crash fails the run and leaves the input under
# <fuzz crate>/artifacts/<target>/.
#
# Cost on the 2-core CI machine: the instrumented build of a fuzz crate (its own workspace,
# nothing shared with the main build) takes several minutes, and then every target runs for
# FUZZ_SECONDS; .ci/run gives each target 5 s (BENCHMARKS.md has the measured times). Needs
# cargo-fuzz, which it installs when missing, and a nightly feature set, which
# RUSTC_BOOTSTRAP=1 opens on the stable toolchain.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${FUZZ_SECONDS:-20}
export RUSTC_BOOTSTRAP=1
export CARGO_TARGET_DIR=${FUZZ_TARGET_DIR:-$PWD/target-fuzz}

if ! command -v cargo-fuzz >/dev/null 2>&1; then
  echo "== installing cargo-fuzz"
  cargo install --locked cargo-fuzz
fi

# Every fuzz crate of the repository (agent/fuzz and server/fuzz).
for crate in */fuzz; do
  [ -f "$crate/Cargo.toml" ] || continue
  echo "== $crate: building the instrumented targets"
  start=$(date +%s)
  (cd "$crate" && cargo fuzz build -O)
  echo "   built in $(( $(date +%s) - start )) s"
  for target in $(cd "$crate" && cargo fuzz list); do
    echo "== $crate: $target for ${seconds} s"
    # Checked-in seeds (hostile inputs from the tests) join the working corpus.
    if [ -d "$crate/seeds/$target" ]; then
      mkdir -p "$crate/corpus/$target"
      cp -n "$crate/seeds/$target"/* "$crate/corpus/$target"/
    fi
    # The delivery-rule readers start from the mail fixtures (scripts modelled on Pigeonhole's
    # tests and Exim's filter examples, agent/tests/mail_rules.rs).
    rules=agent/tests/fixtures/mail/rules
    case "$crate:$target" in
      agent/fuzz:sieve) seeds=$rules/sieve ;;
      agent/fuzz:exim_filter | agent/fuzz:dot_forward) seeds=$rules/exim ;;
      *) seeds= ;;
    esac
    if [ -n "$seeds" ] && [ -d "$seeds" ]; then
      mkdir -p "$crate/corpus/$target"
      find "$seeds" -type f -exec cp -n {} "$crate/corpus/$target"/ \;
    fi
    log=$(mktemp)
    if ! (cd "$crate" && cargo fuzz run -O "$target" -- -max_total_time="$seconds" \
        -print_final_stats=1) >"$log" 2>&1; then
      tail -n 60 "$log"
      echo "FAILED: $crate $target (a crash leaves its input under $crate/artifacts/$target/)"
      exit 1
    fi
    grep -E "^stat::(number_of_executed_units|peak_rss_mb)" "$log" | sed 's/^/   /' || true
    rm -f "$log"
  done
done
echo "fuzz: every target ran ${seconds} s without a crash"
