#!/usr/bin/env bash
# Issue 18's figures (BENCHMARKS.md, "Metrics"): the fleet benchmark (fleet.sh) run ROUNDS
# times without and with `--metrics`, alternating (off, on, off, on, ...) so both see the same
# machine, and during each run with metrics a scrape of /metrics every SCRAPE_EVERY_S seconds
# (far more often than Prometheus's usual 15 to 60 s), each scrape's wall time and bytes noted.
#
#   tests/bench/metrics.sh AGENTS [DURATION_S] [ROUNDS] [SCRAPE_EVERY_S]    # e.g. 10000 20 2 2
#
# Output: one line per run (mode, check-ins/s, baseline/s, ratio) and the scrapes' figures,
# split into those taken while check-ins were being counted (the counter rose by more than
# 1,000 a second since the previous scrape) and the rest. Everything under $BENCH_DIR.
# Metrics are counted in every run (atomics, always on); "off" only has no listener and no
# scrapes. The counting's own cost is `cargo bench -p vakt-server --bench metrics_cost`.
set -euo pipefail
cd "$(dirname "$0")/../.."

agents=${1:?usage: metrics.sh AGENTS [DURATION_S] [ROUNDS] [SCRAPE_EVERY_S]}
duration=${2:-20}
rounds=${3:-2}
every=${4:-2}
out=${BENCH_DIR:-$(mktemp -d /tmp/vakt-metrics.XXXXXX)}
mport=${METRICS_PORT:-17490}
target=${CARGO_TARGET_DIR:-$PWD/target-perf}
if [ -z "${BENCH_BIN_DIR:-}" ]; then
  CARGO_TARGET_DIR=$target cargo build --release -q -p vakt-server -p vakt-tests --bins
  export BENCH_BIN_DIR=$target/release
fi

# One line per scrape: unix ms, HTTP status, wall seconds, bytes, reports counted so far.
scrape_loop() {
  local file=$1 body=$2
  while true; do
    local t line n
    t=$(date +%s%3N)
    line=$(curl -s -o "$body" -w '%{http_code} %{time_total} %{size_download}' \
      --max-time 30 "http://127.0.0.1:$mport/metrics" || true)
    n=$(awk '/^vakt_reports_total/{s+=$2} END{printf "%d", s}' "$body" 2>/dev/null || echo 0)
    echo "$t $line $n" >>"$file"
    sleep "$every"
  done
}

for r in $(seq 1 "$rounds"); do
  for mode in off on; do
    d=$out/$r-$mode
    mkdir -p "$d"
    scraper=
    args=
    if [ "$mode" = on ]; then
      args="--metrics 127.0.0.1:$mport"
      scrape_loop "$d/scrapes.txt" "$d/metrics.txt" &
      scraper=$!
    fi
    echo "round $r, metrics $mode: $d" >&2
    # A port of its own per run: the last run's restarted server may still be dying.
    BENCH_PORT=$((17443 + 2 * r + ${#mode})) BENCH_DIR=$d SERVER_ARGS=$args tests/bench/fleet.sh "$agents" "$duration" 0 >"$d/result.json"
    if [ -n "$scraper" ]; then kill "$scraper"; wait "$scraper" 2>/dev/null || true; fi
  done
done

echo "run checkins_per_s baseline_echo_per_s ratio"
for d in "$out"/*-o*; do
  jq -r --arg run "$(basename "$d")" \
    '"\($run) \(.checkins_per_s) \(.baseline_echo_per_s) \((100 * .checkins_per_s / .baseline_echo_per_s) | round)%"' \
    "$d/result.json"
done
# Scrapes that answered 200, split by whether check-ins were being counted meanwhile.
for f in "$out"/*-on/scrapes.txt; do
  awk -v run="$(basename "$(dirname "$f")")" '
    $2 == 200 {
      busy = (pn != "" && ($1 > pt) && ($5 - pn) * 1000 / ($1 - pt) > 1000)
      k = busy ? "under check-ins" : "otherwise"
      n[k]++; s[k] += $3; b[k] = $4
      if ($3 > mx[k]) mx[k] = $3
      if (mn[k] == "" || $3 < mn[k]) mn[k] = $3
      pt = $1; pn = $5
    }
    END {
      for (k in n)
        printf "%s scrapes %s: %d, wall min %.1f / mean %.1f / max %.1f ms, last %d bytes\n",
          run, k, n[k], mn[k] * 1000, s[k] / n[k] * 1000, mx[k] * 1000, b[k]
    }' "$f"
done
