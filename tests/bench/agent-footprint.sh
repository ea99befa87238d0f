#!/usr/bin/env bash
# The agent's footprint for BENCHMARKS.md: a release vakt-agent enrolled against a local
# release vakt-server, left idle (reports every REPORT_INTERVAL, stream held, heartbeats) for
# IDLE_S seconds while its resident memory (VmRSS) and CPU time (utime+stime of
# /proc/PID/stat) are sampled; then one full scan (`vakt-agent collect --json`, everything the
# agent collects on this machine) measured the same way.
#
#   tests/bench/agent-footprint.sh [IDLE_S] [REPORT_INTERVAL]
#
# AGENT_PROFILE: the cargo profile the agent is built with (default dist, what is shipped;
# release for comparison). The agent runs with MALLOC_ARENA_MAX=1, as its systemd unit sets.
set -euo pipefail
cd "$(dirname "$0")/../.."
idle=${1:-180}
interval=${2:-60s}
target=${CARGO_TARGET_DIR:-$PWD/target-perf}
dir=${BENCH_DIR:-$(mktemp -d /tmp/vakt-agent-bench.XXXXXX)}
mkdir -p "$dir"
port=${BENCH_PORT:-17543}

profile=${AGENT_PROFILE:-dist}
CARGO_TARGET_DIR=$target cargo build --release -q -p vakt-server -p vakt-agent --bins
CARGO_TARGET_DIR=$target cargo build --profile "$profile" -q -p vakt-agent --bins
bin=$target/release
agent_bin=$target/$profile
[ "$profile" = dev ] && agent_bin=$target/debug
tick=$(getconf CLK_TCK)

"$bin/vakt-server" serve --data "$dir/server" --listen 127.0.0.1:$port --console 127.0.0.1:0 >"$dir/server.log" 2>&1 &
server=$!
agent=
trap 'kill $server ${agent:-} 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do [ -s "$dir/server/admin.token" ] && break; sleep 0.1; done
sleep 0.5
token=$("$bin/vakt" --server https://127.0.0.1:$port --ca "$dir/server/ca.pem" \
  --token-file "$dir/server/admin.token" enroll-token create)
mkdir -p "$dir/agent"
echo "$token" > "$dir/agent/enroll.token"
cat > "$dir/agent/agent.toml" <<EOF
server = "https://127.0.0.1:$port"
ca = "$dir/server/ca.pem"
state_dir = "$dir/agent/state"
enroll_token_file = "$dir/agent/enroll.token"
report_interval = "$interval"
EOF

cpu_ticks() { awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$1/stat"; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
hwm_kib() { awk '/^VmHWM:/ { print $2 }' "/proc/$1/status"; }

MALLOC_ARENA_MAX=1 "$agent_bin/vakt-agent" run --config "$dir/agent/agent.toml" 2>"$dir/agent.log" &
agent=$!
# Enrollment and the first report are the start-up, not idling: wait until they are done.
for _ in $(seq 1 300); do
  grep -q "report acknowledged" "$dir/agent.log" 2>/dev/null && break
  sleep 0.1
done
sleep 5
start_ticks=$(cpu_ticks $agent)
start=$(date +%s.%N)
max_rss=0
sum_rss=0
n=0
while [ "$(echo "$(date +%s.%N) - $start < $idle" | bc)" = 1 ]; do
  r=$(rss_kib $agent)
  sum_rss=$((sum_rss + r)); n=$((n + 1))
  [ "$r" -gt "$max_rss" ] && max_rss=$r
  sleep 1
done
end_ticks=$(cpu_ticks $agent)
elapsed=$(echo "$(date +%s.%N) - $start" | bc)
idle_cpu=$(echo "scale=4; ($end_ticks - $start_ticks) / $tick / $elapsed * 100" | bc)
reports=$(grep -c "report acknowledged" "$dir/agent.log" || true)
# Where the resident memory is at the end: the binary's own pages (code and data, file-backed),
# other files (shared libraries), and anonymous memory (heap, stacks).
own_kib=$(awk -v exe="$(readlink -f "$agent_bin/vakt-agent")" '
  /^[0-9a-f]+-[0-9a-f]+ / { cur = $6 }
  /^Rss:/ && cur == exe { sum += $2 }
  END { print sum + 0 }' "/proc/$agent/smaps")
anon_kib=$(awk '/^Anonymous:/ { print $2 }' "/proc/$agent/smaps_rollup")
rss_end=$(rss_kib $agent)
echo "resident at the end: $rss_end KiB = the binary's pages $own_kib KiB + anonymous $anon_kib KiB + other files $((rss_end - own_kib - anon_kib)) KiB ($profile profile)"
echo "idle: ${elapsed%.*} s, resident mean $((sum_rss / n)) KiB, max $max_rss KiB, peak (VmHWM) $(hwm_kib $agent) KiB, CPU ${idle_cpu}% of one core ($((end_ticks - start_ticks)) ticks at $tick/s), $reports reports acknowledged"

# One full scan, measured by GNU time (wall, CPU, maximum resident set).
if [ -x /usr/bin/time ]; then
  /usr/bin/time -f "%e %U %S %M" -o "$dir/scan.time" \
    env MALLOC_ARENA_MAX=1 "$agent_bin/vakt-agent" collect --json >"$dir/collect.json" 2>"$dir/collect.log"
  read -r wall user sys maxrss < "$dir/scan.time"
  packages=$(python3 -c "import json; print(len(json.load(open('$dir/collect.json')).get('software', [])))" 2>/dev/null || echo "?")
  echo "full scan: ${wall} s wall, CPU ${user} s user + ${sys} s system, resident max ${maxrss} KiB, $packages packages"
else
  echo "full scan: /usr/bin/time is missing (apt-get install time)"
fi
echo "logs in $dir"
