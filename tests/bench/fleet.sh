#!/usr/bin/env bash
# The fleet benchmark of BENCHMARKS.md: release vakt-server replicas on fresh data directories
# on loopback, and vakt-loadgen against them (enrollment, held streams, reports, the bare
# baseline, lock latency, a kill -9 and restart under load or, with replicas, a kill -9 of
# replica 1 and fail-over, the check that nothing acknowledged is lost).
#
#   [ENGINE=sled|pg] [REPLICAS=N] tests/bench/fleet.sh AGENTS [DURATION_S] [HOLD_AFTER_S]
#
# ENGINE=pg starts a private PostgreSQL cluster in the bench directory (initdb and pg_ctl as the
# `postgres` user when run as root, as tests/src/pg.rs does; a free loopback port, fsync on,
# pg_stat_statements loaded when installed) and serves the store from it; REPLICAS=N (pg only)
# starts N servers on that database, on ports BENCH_PORT, BENCH_PORT+1, ..., and loadgen spreads
# its agents over them (agent i starts on replica i mod N; each knows them all and fails over
# as the real agent does). With one server the last phase kills it with -9 and starts it
# again under check-in load (`reconnect_s`: until every stream is back). With replicas it is
# the fail-over phase instead: every agent holding its stream and checking in every 5 s,
# replica 1 is killed with -9 and not started again; for the agents that were on it the JSON
# gives `failover_moved` (how many hold their stream on another replica), `failover_stream_ms`
# (p50, p99, max: from the kill to the stream open elsewhere) and `failover_report_acked_ms`
# (from the kill to their first report acknowledged elsewhere; it includes waiting for the
# agent's next check-in, up to 5 s), and `failover_lock_ms` (a lock for one of them, not
# locked before, queued on replica 2 right after the kill, until its result is stored);
# details.failover_* the counts (failover_moved_to: where they went, by replica). The check that nothing acknowledged is lost then asks
# replica 2. After a pg run the script prints the database's cost per agent (rows, bytes) and,
# for the check-in phase, commits and statements per check-in (pg_stat_database and
# pg_stat_statements sampled every second; stderr and $BENCH_DIR/pg-cost.txt).
#
# Builds into $CARGO_TARGET_DIR (default target-perf) so a debug build elsewhere does not
# replace the binaries mid-run (BENCH_BIN_DIR: use binaries from there instead). Extra loadgen
# flags: LOADGEN_ARGS (e.g. `--lock-via other` with REPLICAS=2). Extra server flags: SERVER_ARGS.
# Output: the loadgen JSON on stdout; logs under $BENCH_DIR (default a temp dir).
set -euo pipefail
cd "$(dirname "$0")/../.."

agents=${1:?usage: [ENGINE=sled|pg] [REPLICAS=N] fleet.sh AGENTS [DURATION_S] [HOLD_AFTER_S]}
duration=${2:-20}
hold_after=${3:-0}
engine=${ENGINE:-sled}
replicas=${REPLICAS:-1}
target=${CARGO_TARGET_DIR:-$PWD/target-perf}
dir=${BENCH_DIR:-$(mktemp -d /tmp/vakt-bench.XXXXXX)}
mkdir -p "$dir"
port=${BENCH_PORT:-17443}
case "$engine" in
  sled) [ "$replicas" = 1 ] || { echo "REPLICAS needs ENGINE=pg (replicas share a database)" >&2; exit 2; } ;;
  pg) ;;
  *) echo "ENGINE must be sled or pg, not $engine" >&2; exit 2 ;;
esac

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

# A TCP port nobody listens on, from $1 upwards.
free_port() {
  local p=$1
  while (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; do p=$((p + 1)); done
  echo "$p"
}

store_args=""
preload=""
pg_stop=true
if [ "$engine" = pg ]; then
  # PostgreSQL's programs: Debian keeps them in a versioned directory, the newest wins.
  pg_bin=$(dirname "$(readlink -f "$(command -v initdb 2>/dev/null || ls -d /usr/lib/postgresql/*/bin/initdb | sort -V | tail -1)")")
  pgdir=$dir/pg
  mkdir -p "$pgdir"
  as_pg=()
  if [ "$(id -u)" = 0 ]; then
    # PostgreSQL refuses to run as root.
    chown postgres "$pgdir"
    as_pg=(runuser -u postgres --)
  fi
  pgport=$(free_port "${BENCH_PG_PORT:-25432}")
  "${as_pg[@]}" "$pg_bin/initdb" --auth=trust --username vakt --encoding=UTF8 --locale=C \
    -D "$pgdir/data" >"$dir/pg-initdb.log" 2>&1
  if [ -e "$("$pg_bin/pg_config" --pkglibdir 2>/dev/null || echo /nonexistent)/pg_stat_statements.so" ] \
    || ls /usr/lib/postgresql/*/lib/pg_stat_statements.so >/dev/null 2>&1; then
    preload="-c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
  fi
  # Defaults otherwise (fsync and synchronous_commit on): the store's durability is measured.
  "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pgdir/data" -l "$pgdir/server.log" -w start \
    -o "-c listen_addresses=127.0.0.1 -p $pgport -k $pgdir -c max_connections=$((40 * replicas + 20)) $preload" \
    >/dev/null
  pg_stop() { "${as_pg[@]}" "$pg_bin/pg_ctl" -D "$pgdir/data" -m immediate stop >/dev/null 2>&1 || true; }
  pg_stop=pg_stop
  psql_vakt() { "$pg_bin/psql" -h 127.0.0.1 -p "$pgport" -U vakt -X -q -At "$@"; }
  psql_vakt -d postgres -c "CREATE DATABASE vakt"
  if [ -n "$preload" ]; then
    psql_vakt -d vakt -c "CREATE EXTENSION pg_stat_statements"
  fi
  # Every replica opens the secrets sealed in the database with the same key file; replica 1
  # creates it on the empty database.
  store_args="--store postgresql://vakt@127.0.0.1:$pgport/vakt --secrets-key $dir/secrets.key"
  echo "PostgreSQL $("$pg_bin/postgres" --version | awk '{print $3}') on 127.0.0.1:$pgport, data in $pgdir" >&2
fi

# Replica r's data directory and port (replica 1 keeps the single server's names).
data_of() { if [ "$1" = 1 ]; then echo "$dir/data"; else echo "$dir/data$1"; fi; }
port_of() { echo $((port + $1 - 1)); }

# Replica r's own data directory, made before it starts. The secrets replicas share (the CA
# key, the command-signing keys) are in the database, sealed under the one --secrets-key file
# every replica is given (store_args); nothing is copied between data directories.
share_secrets() {
  local to
  to=$(data_of "$1")
  mkdir -p "$to"
  chmod 700 "$to"
}

# The start command for each replica (loadgen's restart command is replica 1's): kill -9 the
# replica if it runs, start it again on the same data and port, and return once it listens.
for r in $(seq 1 "$replicas"); do
  cat > "$dir/start$r.sh" <<EOF
#!/usr/bin/env bash
set -euo pipefail
if [ -s "$dir/server$r.pid" ]; then
  old=\$(cat "$dir/server$r.pid")
  kill -9 "\$old" 2>/dev/null || true
  # The data directory's lock goes with the process: wait until it is gone.
  while kill -0 "\$old" 2>/dev/null; do sleep 0.02; done
fi
ulimit -n 200000 2>/dev/null || true
# Only stdin, stdout and stderr go to the server: an inherited pipe (loadgen's timestamped
# stderr) held open by a restarted server would keep this script from ever finishing.
for fd in /proc/\$\$/fd/*; do
  fd=\${fd##*/}
  case \$fd in 0|1|2|255) ;; *) exec {fd}>&- ;; esac
done
# Agents must be let in as fast as they come: the benchmark measures enrollment itself.
"$server_bin" serve --data "$(data_of "$r")" --listen 127.0.0.1:$(port_of "$r") --console 127.0.0.1:0 \
  --enroll-rate 0 --enroll-rate-per-source 0 $store_args ${SERVER_ARGS:-} >>"$dir/server$r.log" 2>&1 &
echo \$! > "$dir/server$r.pid"
for _ in \$(seq 1 300); do
  if (exec 3<>/dev/tcp/127.0.0.1/$(port_of "$r")) 2>/dev/null; then exit 0; fi
  sleep 0.1
done
echo "server $r did not come up; see $dir/server$r.log" >&2
exit 1
EOF
  chmod +x "$dir/start$r.sh"
done
cleanup() {
  for r in $(seq 1 "$replicas"); do
    kill -9 "$(cat "$dir/server$r.pid" 2>/dev/null)" 2>/dev/null || true
  done
  [ -z "${sampler:-}" ] || kill "$sampler" 2>/dev/null || true
  $pg_stop
}
trap cleanup EXIT
"$dir/start1.sh"
servers="https://127.0.0.1:$(port_of 1)"
for r in $(seq 2 "$replicas"); do
  share_secrets "$r"
  "$dir/start$r.sh"
  servers="$servers,https://127.0.0.1:$(port_of "$r")"
done

restart_args=(--restart-cmd "$dir/start1.sh")
# With replicas, replica 1 is killed and stays down: its agents must fail over.
[ "$replicas" = 1 ] || restart_args=(--kill-cmd "kill -9 \$(cat '$dir/server1.pid')")

# CPU time (clock ticks) of processes: the pids given and, with -c, their children.
cpu_ticks() {
  local total=0 p f
  for p in "$@"; do
    [ -r "/proc/$p/stat" ] || continue
    # Fields after the command name: utime and stime are the 12th and 13th.
    f=$(sed 's/^.*) //' "/proc/$p/stat" 2>/dev/null) || continue
    set -- $f
    total=$((total + ${12} + ${13}))
  done
  echo "$total"
}
# The servers' and PostgreSQL's CPU time and PostgreSQL's counters every second, to cut out
# the check-in phase afterwards: epoch, commits, rollbacks, statements, server ticks,
# PostgreSQL ticks (the postmaster and its backends).
statements="0"
[ "$engine" != pg ] || [ -z "$preload" ] || statements="(SELECT coalesce(sum(calls), 0) FROM pg_stat_statements)"
(
  # A sample that fails (PostgreSQL stopping) is skipped, never the end of the sampler.
  set +e
  while :; do
    server_pids=$(cat "$dir"/server*.pid 2>/dev/null)
    pg_pids=""
    if [ "$engine" = pg ] && [ -s "$pgdir/data/postmaster.pid" ]; then
      pm=$(head -1 "$pgdir/data/postmaster.pid")
      pg_pids="$pm $(ps --ppid "$pm" -o pid= | tr '\n' ' ')"
    fi
    if [ "$engine" = pg ]; then
      counters=$(psql_vakt -d vakt -c "SELECT extract(epoch FROM clock_timestamp()), xact_commit, xact_rollback, $statements FROM pg_stat_database WHERE datname = 'vakt'" 2>/dev/null | tr '|' ' ')
    else
      counters="$(date +%s.%N) 0 0 0"
    fi
    # shellcheck disable=SC2086
    echo "$counters $(cpu_ticks $server_pids) $(cpu_ticks $pg_pids)"
    sleep 1
  done
) > "$dir/samples.txt" &
sampler=$!

echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/{print $2}') GiB, load $(cut -d' ' -f1-3 /proc/loadavg); engine $engine, $replicas replica(s); data and logs in $dir" >&2
# loadgen's progress lines are kept with their time, to find the phases in the samples.
"$loadgen_bin" --server "$servers" --ca "$dir/data/ca.pem" \
  --token-file "$dir/data/admin.token" --agents "$agents" --duration "$duration" \
  --hold-after "$hold_after" --server-pid-file "$dir/server1.pid" \
  "${restart_args[@]}" --json ${LOADGEN_ARGS:-} \
  2> >(while IFS= read -r line; do printf '%s %s\n' "$(date +%s.%N)" "$line"; done \
         | tee -a "$dir/loadgen.log" | cut -d' ' -f2- >&2) \
  | tee "$dir/result.json"
echo "load after the run: $(cut -d' ' -f1-3 /proc/loadavg)" >&2

kill "$sampler" 2>/dev/null || true
sampler=""
sleep 0.5
{
  # The check-in phase: from the end of the full reports, as long as the check-in line says
  # ("check-ins: N in S s").
  t0=$(awk '/\[loadgen\] full reports:/ {print $1; exit}' "$dir/loadgen.log")
  t1=$(awk -v t0="$t0" '/\[loadgen\] check-ins:/ { for (i = 1; i < NF; i++) if ($i == "in") { printf "%.3f", t0 + $(i + 1); exit } }' "$dir/loadgen.log")
  checkins=$(grep -o '"checkins":[0-9]*' "$dir/result.json" | cut -d: -f2)
  awk -v t0="$t0" -v t1="$t1" -v n="${checkins:-0}" -v hz="$(getconf CLK_TCK)" '
    $1 >= t0 && !a { a = 1; c0 = $2; r0 = $3; s0 = $4; v0 = $5; p0 = $6; ta = $1 }
    $1 <= t1 { c1 = $2; r1 = $3; s1 = $4; v1 = $5; p1 = $6; tb = $1 }
    END {
      if (!a || n == 0 || tb <= ta) { print "check-in phase: no samples"; exit }
      # Counters cover the sampled part of the phase; scaled to the whole phase.
      k = (t1 - t0) / (tb - ta) / n
      printf "check-in phase (%.1f of %.1f s sampled, %d check-ins): per check-in %.2f commits, %.2f rollbacks, %.2f statements; CPU %.3f ms in vakt-server, %.3f ms in PostgreSQL\n",
        tb - ta, t1 - t0, n, (c1 - c0) * k, (r1 - r0) * k, (s1 - s0) * k, (v1 - v0) * k * 1000 / hz, (p1 - p0) * k * 1000 / hz
    }' "$dir/samples.txt"
} > "$dir/cost.txt" 2>&1
cat "$dir/cost.txt" >&2

if [ "$engine" = pg ]; then
  {
    devices=$(psql_vakt -d vakt -c "SELECT count(*) FROM vakt_kv WHERE tree = 'devices'")
    echo "database after the run: $devices devices"
    psql_vakt -d vakt -F ' ' -c "SELECT tree, count(*), sum(octet_length(key) + octet_length(value)) FROM vakt_kv GROUP BY tree ORDER BY 3 DESC" \
      | awk -v d="$devices" '{ printf "  %-14s %8d rows (%.2f per device), %10d bytes of keys and values (%.0f per device)\n", $1, $2, $2 / d, $3, $3 / d }'
    psql_vakt -d vakt -F ' ' -c "SELECT pg_total_relation_size('vakt_kv'), pg_database_size('vakt')" \
      | awk -v d="$devices" '{ printf "  vakt_kv with indexes and TOAST: %d bytes (%.0f per device); the whole database %d bytes\n", $1, $1 / d, $2 }'
    if [ -n "$preload" ]; then
      echo "statements by calls (whole run):"
      psql_vakt -d vakt -F ' | ' -c "SELECT calls, round(mean_exec_time::numeric, 3) AS ms, left(regexp_replace(query, '\s+', ' ', 'g'), 90) FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'vakt') ORDER BY calls DESC LIMIT 12" \
        | sed 's/^/  /'
    fi
  } > "$dir/pg-cost.txt" 2>&1
  cat "$dir/pg-cost.txt" >&2
fi
