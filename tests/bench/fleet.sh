#!/usr/bin/env bash
# The fleet benchmark of BENCHMARKS.md: a release vakt-server on a fresh data directory on
# loopback, and vakt-loadgen against it (enrollment, held streams, reports, the bare baseline,
# lock latency, a kill -9 and restart under load, the check that nothing acknowledged is lost).
#
#   tests/bench/fleet.sh AGENTS [DURATION_S] [HOLD_AFTER_S]
#
# Builds into $CARGO_TARGET_DIR (default target-perf) so a debug build elsewhere does not
# replace the binaries mid-run (BENCH_BIN_DIR: use binaries from there instead). Extra loadgen flags: LOADGEN_ARGS. Extra server flags:
# SERVER_ARGS. Output: the loadgen JSON on stdout; logs under $BENCH_DIR (default a temp dir).
set -euo pipefail
cd "$(dirname "$0")/../.."

agents=${1:?usage: fleet.sh AGENTS [DURATION_S] [HOLD_AFTER_S]}
duration=${2:-20}
hold_after=${3:-0}
target=${CARGO_TARGET_DIR:-$PWD/target-perf}
dir=${BENCH_DIR:-$(mktemp -d /tmp/vakt-bench.XXXXXX)}
mkdir -p "$dir"
port=${BENCH_PORT:-17443}

# An open file per agent on each side, plus the baseline's two per connection: raise the
# limit as far as allowed (loadgen fits the baseline into what is left).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)"

# BENCH_BIN_DIR: compare binaries built earlier (another commit) instead of building now.
if [ -n "${BENCH_BIN_DIR:-}" ]; then
  bin_dir=$BENCH_BIN_DIR
else
  CARGO_TARGET_DIR=$target cargo build --release -q -p vakt-server -p vakt-tests --bins
  bin_dir=$target/release
fi
server_bin=$bin_dir/vakt-server
loadgen_bin=$bin_dir/vakt-loadgen

# The restart command loadgen runs: kill -9 the server, start it again on the same data and
# port, and return once it listens.
cat > "$dir/start.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
if [ -s "$dir/server.pid" ]; then
  old=\$(cat "$dir/server.pid")
  kill -9 "\$old" 2>/dev/null || true
  # The data directory's lock goes with the process: wait until it is gone.
  while kill -0 "\$old" 2>/dev/null; do sleep 0.02; done
fi
ulimit -n 200000 2>/dev/null || true
# Agents must be let in as fast as they come: the benchmark measures enrollment itself.
"$server_bin" serve --data "$dir/data" --listen 127.0.0.1:$port --console 127.0.0.1:0 \
  --enroll-rate 0 --enroll-rate-per-source 0 ${SERVER_ARGS:-} >>"$dir/server.log" 2>&1 &
echo \$! > "$dir/server.pid"
for _ in \$(seq 1 300); do
  if (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null; then exit 0; fi
  sleep 0.1
done
echo "server did not come up; see $dir/server.log" >&2
exit 1
EOF
chmod +x "$dir/start.sh"
"$dir/start.sh"
trap 'kill -9 "$(cat "$dir/server.pid")" 2>/dev/null || true' EXIT

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB; data and logs in $dir" >&2
"$loadgen_bin" --server "https://127.0.0.1:$port" --ca "$dir/data/ca.pem" \
  --token-file "$dir/data/admin.token" --agents "$agents" --duration "$duration" \
  --hold-after "$hold_after" --server-pid-file "$dir/server.pid" \
  --restart-cmd "$dir/start.sh" --json ${LOADGEN_ARGS:-} 2> >(tee -a "$dir/loadgen.log" >&2) \
  | tee "$dir/result.json"
