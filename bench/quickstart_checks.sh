#!/usr/bin/env bash
# Benchmark: the health checks of Airflow's quick-start docker-compose.yaml,
# each as the documented command and as this image answers it, side by side
# in one run against one PostgreSQL with the components running:
#   api-server      curl --fail http://localhost:PORT/api/v2/version  vs  airflow-entrypoint --healthcheck api-server
#   scheduler       curl --fail http://localhost:8974/health          vs  airflow-entrypoint --healthcheck scheduler
#   dag-processor   airflow jobs check --job-type DagProcessorJob --hostname H: Python vs the `airflow` link
#   triggerer       airflow jobs check --job-type TriggererJob --hostname H:    Python vs the `airflow` link
#   worker          celery --app ... inspect ping -d celery@H:              Python vs the `celery` link
# and the cost the `airflow` link adds to a command it does not answer: a
# stand-in `airflow` (a static no-op) called directly and through the link,
# alternately, many times.
# Prints a markdown table (median wall time, peak RSS, ratios) on stdout and
# writes it to bench/QUICKSTART_CHECKS.md; progress goes to stderr.
#
#   ENTRYPOINT_UNDER_TEST=/path/to/airflow-entrypoint bash bench/quickstart_checks.sh
#
# Needs root (the postgres user runs the server), PostgreSQL's server
# package, redis-server, GNU time, curl, a C compiler, and the Airflow venv
# (scripts/airflow-venv 3.3.2). Tunables (env): BENCH_OURS_RUNS (50),
# BENCH_AIRFLOW_RUNS (5), BENCH_PASS_RUNS (2000).
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "$bench_dir/.." && pwd)
ours_runs=${BENCH_OURS_RUNS:-50}
airflow_runs=${BENCH_AIRFLOW_RUNS:-5}
pass_runs=${BENCH_PASS_RUNS:-2000}
bin=${ENTRYPOINT_UNDER_TEST:-$repo_dir/target/x86_64-unknown-linux-musl/release/airflow-entrypoint}
venv=$("$repo_dir/scripts/airflow-venv" 3.3.2 | tail -n 1)

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root (the server runs as postgres)"
[[ -x $bin ]] || die "no binary at $bin (cargo build --release --target x86_64-unknown-linux-musl)"
[[ -x /usr/bin/time ]] || die "GNU time is needed (apt-get install time)"
command -v curl >/dev/null || die "curl is needed (apt-get install curl)"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

work=$(mktemp -d /tmp/airflow-entrypoint-bench-qs.XXXXXX)
chmod 755 "$work"
pg_pid=
redis_pid=
component_pids=()
cleanup() {
  local pid
  for pid in "${component_pids[@]}"; do kill -KILL -- "-$pid" 2>/dev/null || true; done
  [[ -n $redis_pid ]] && kill -TERM "$redis_pid" 2>/dev/null && wait "$redis_pid" 2>/dev/null || true
  [[ -n $pg_pid ]] && kill -TERM "$pg_pid" 2>/dev/null && wait "$pg_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
api_port=$(free_port)
health_port=$(free_port)
redis_port=$(free_port)
mkdir -p "$work/data" "$work/sock" "$work/home/dags" "$work/links"
chown postgres "$work/data" "$work/sock"
log "PostgreSQL on 127.0.0.1:$port"
setpriv --reuid=postgres --regid=postgres --init-groups -- "$pg_bin/initdb" -D "$work/data" -U postgres --auth=trust --no-sync >/dev/null
printf 'local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n' >"$work/data/pg_hba.conf"
setpriv --reuid=postgres --regid=postgres --init-groups -- "$pg_bin/postgres" -D "$work/data" -p "$port" \
  -c listen_addresses=127.0.0.1 -c fsync=off -k "$work/sock" >"$work/pg.log" 2>&1 &
pg_pid=$!
for _ in $(seq 100); do grep -q "ready to accept connections" "$work/pg.log" && break; sleep 0.1; done
psql -h "$work/sock" -p "$port" -U postgres -q -c "CREATE ROLE airflow LOGIN PASSWORD 'bench-pw'" -c "CREATE DATABASE airflow OWNER airflow"

log "Redis on 127.0.0.1:$redis_port"
redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no >"$work/redis.log" 2>&1 &
redis_pid=$!

# The image's links: `airflow` and `celery` ahead of the venv on PATH.
ln -s "$bin" "$work/links/airflow"
ln -s "$bin" "$work/links/celery"
export PATH="$venv/bin:/usr/bin:/bin"
export AIRFLOW_HOME="$work/home"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://airflow:bench-pw@127.0.0.1:$port/airflow"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CORE__EXECUTOR=CeleryExecutor
export AIRFLOW__CELERY__BROKER_URL="redis://127.0.0.1:$redis_port/0"
export AIRFLOW__CELERY__RESULT_BACKEND="db+postgresql://airflow:bench-pw@127.0.0.1:$port/airflow"
export AIRFLOW__API__PORT=$api_port
export AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$api_port/execution/"
export AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK=True
export AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT=$health_port
export AIRFLOW_ENTRYPOINT_LOG_LEVEL=error
export AIRFLOW_ENTRYPOINT_RUN_AS_ROOT=true

log "airflow db migrate"
airflow db migrate >"$work/migrate.log" 2>&1 || die "airflow db migrate failed: $(tail -5 "$work/migrate.log")"
for component in api-server scheduler dag-processor triggerer "celery worker"; do
  log "starting the $component"
  # shellcheck disable=SC2086 # "celery worker" is two words
  setsid airflow $component >"$work/${component// /-}.log" 2>&1 &
  component_pids+=($!)
done
ready() {
  curl -fsS "http://127.0.0.1:$api_port/api/v2/version" >/dev/null 2>&1 \
    && curl -fsS "http://127.0.0.1:$health_port/health" >/dev/null 2>&1 \
    && "$bin" --healthcheck dag-processor >/dev/null 2>&1 \
    && "$bin" --healthcheck triggerer >/dev/null 2>&1 \
    && grep -q ' ready' "$work/celery-worker.log"
}
for _ in $(seq 180); do ready && break; sleep 1; done
ready || die "the components did not come up: $(tail -n 3 "$work"/*.log)"
# The host name as the jobs record it (the quick-start passes $HOSTNAME).
host=$(psql -h "$work/sock" -p "$port" -U postgres -d airflow -Atq \
  -c "SELECT hostname FROM job WHERE job_type = 'TriggererJob' ORDER BY id DESC LIMIT 1")

# shellcheck source=bench/timing.sh
source "$bench_dir/timing.sh"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.1f×", a / b}'; }
row() {
  # row CHECK DOCUMENTED NATIVE RUNS_DOC DOC... -- NATIVE...
  local check=$1 documented=$2 native=$3 doc_runs=$4; shift 4
  local doc=() nat=()
  while [[ $1 != -- ]]; do doc+=("$1"); shift; done
  shift
  nat=("$@")
  log "$check: ${doc[*]} ($doc_runs runs) vs ${nat[*]} ($ours_runs runs)"
  local doc_ms doc_rss nat_ms nat_rss
  read -r doc_ms doc_rss < <(measure "$doc_runs" "${doc[@]}")
  [[ $doc_runs -ge $ours_runs ]] && doc_ms=$(loop_ms "$doc_runs" "${doc[@]}")
  read -r _ nat_rss < <(measure "$ours_runs" "${nat[@]}")
  nat_ms=$(loop_ms "$ours_runs" "${nat[@]}")
  printf '| %s | `%s` | %s ms, %s kB | `%s` | %s ms, %s kB | %s | %s |\n' \
    "$check" "$documented" "$doc_ms" "$doc_rss" "$native" "$nat_ms" "$nat_rss" \
    "$(ratio "$doc_ms" "$nat_ms")" "$(ratio "$doc_rss" "$nat_rss")" >>"$work/rows"
}
: >"$work/rows"
row api-server "curl --fail http://localhost:8080/api/v2/version" "airflow-entrypoint --healthcheck api-server" "$ours_runs" \
  curl --fail -s -o /dev/null "http://127.0.0.1:$api_port/api/v2/version" -- "$bin" --healthcheck api-server
row scheduler "curl --fail http://localhost:8974/health" "airflow-entrypoint --healthcheck scheduler" "$ours_runs" \
  curl --fail -s -o /dev/null "http://127.0.0.1:$health_port/health" -- "$bin" --healthcheck scheduler
row dag-processor "airflow jobs check --job-type DagProcessorJob --hostname \$HOSTNAME" "the same, through the airflow link" "$airflow_runs" \
  "$venv/bin/airflow" jobs check --job-type DagProcessorJob --hostname "$host" -- \
  "$work/links/airflow" jobs check --job-type DagProcessorJob --hostname "$host"
row triggerer "airflow jobs check --job-type TriggererJob --hostname \$HOSTNAME" "the same, through the airflow link" "$airflow_runs" \
  "$venv/bin/airflow" jobs check --job-type TriggererJob --hostname "$host" -- \
  "$work/links/airflow" jobs check --job-type TriggererJob --hostname "$host"
worker_host=$(sed -n 's/.*\(celery@[^ ]*\) ready.*/\1/p' "$work/celery-worker.log" | head -n1)
row worker "celery --app airflow.providers.celery.executors.celery_executor.app inspect ping -d celery@\$HOSTNAME" "the same, through the celery link" "$airflow_runs" \
  "$venv/bin/celery" --app airflow.providers.celery.executors.celery_executor.app inspect ping -d "$worker_host" -- \
  "$work/links/celery" --app airflow.providers.celery.executors.celery_executor.app inspect ping -d "$worker_host"

# The pass-through: a static no-op named `airflow`, direct and through the
# link, alternately so that both see the same machine.
log "pass-through ($pass_runs runs each, alternating)"
mkdir -p "$work/real"
printf 'int main(void) { return 0; }\n' >"$work/noop.c"
cc -O2 -static -o "$work/real/airflow" "$work/noop.c" 2>/dev/null || cc -O2 -o "$work/real/airflow" "$work/noop.c"
read -r direct_us linked_us < <(python3 - "$work" "$pass_runs" <<'PY'
import os, sys, time
work, runs = sys.argv[1], int(sys.argv[2])
direct_env = dict(os.environ, PATH=f"{work}/real:/usr/bin:/bin")
linked_env = dict(os.environ, PATH=f"{work}/links:{work}/real:/usr/bin:/bin")
def once(path, env):
    start = time.perf_counter_ns()
    pid = os.posix_spawn(path, ["airflow", "dags", "list"], env)
    _, status = os.waitpid(pid, 0)
    assert status == 0, status
    return time.perf_counter_ns() - start
direct, linked = [], []
for _ in range(runs):
    direct.append(once(f"{work}/real/airflow", direct_env))
    linked.append(once(f"{work}/links/airflow", linked_env))
med = lambda xs: sorted(xs)[len(xs) // 2] / 1000
print(f"{med(direct):.0f} {med(linked):.0f}")
PY
)
added_us=$((linked_us - direct_us))

size=$(stat -c %s "$bin")
table=$(cat <<EOF
| check | documented command | its cost | answered here by | its cost | faster | less memory |
|---|---|---|---|---|---|---|
$(cat "$work/rows")

Pass-through: \`airflow dags list\` through the \`airflow\` link to a static no-op \`airflow\`
takes ${linked_us} µs against ${direct_us} µs called directly (median of $pass_runs runs each, alternating):
the link adds ${added_us} µs to a command it does not answer.
Wall time: the fast commands the mean of $ours_runs runs in a loop, Airflow's Python the median
of $airflow_runs (GNU time); peak RSS the largest of the runs. One PostgreSQL on loopback; the
api-server, scheduler (health server on), dag-processor, triggerer and Celery worker (Redis) of
Airflow 3.3.2 running.
Stripped binary: $size bytes.
EOF
)
printf '%s\n' "$table" | tee "$bench_dir/QUICKSTART_CHECKS.md"
