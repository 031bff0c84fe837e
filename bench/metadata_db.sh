#!/usr/bin/env bash
# Benchmark: the entrypoint's answers to the metadata database's two
# Kubernetes questions against Airflow's own commands, side by side in one
# run against one PostgreSQL with a running scheduler:
#   --healthcheck scheduler              vs airflow jobs check --job-type SchedulerJob --local
#   --wait-only --wait-for-migrations    vs airflow db check-migrations
# Prints a markdown table (median wall time, peak RSS, ratios) on stdout and
# writes it to bench/METADATA_DB.md; progress goes to stderr.
#
#   ENTRYPOINT_UNDER_TEST=/path/to/airflow-entrypoint bash bench/metadata_db.sh
#
# Needs root (the postgres user runs the server), PostgreSQL's server
# package, GNU time, and the Airflow venv (scripts/airflow-venv 3.3.2).
# Tunables (env): BENCH_OURS_RUNS (50), BENCH_AIRFLOW_RUNS (5).
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "$bench_dir/.." && pwd)
ours_runs=${BENCH_OURS_RUNS:-50}
airflow_runs=${BENCH_AIRFLOW_RUNS:-5}
bin=${ENTRYPOINT_UNDER_TEST:-$repo_dir/target/x86_64-unknown-linux-musl/release/airflow-entrypoint}
venv=$("$repo_dir/scripts/airflow-venv" 3.3.2 | tail -n 1)

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root (the server runs as postgres)"
[[ -x $bin ]] || die "no binary at $bin (cargo build --release --target x86_64-unknown-linux-musl)"
[[ -x /usr/bin/time ]] || die "GNU time is needed (apt-get install time)"
pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

work=$(mktemp -d /tmp/airflow-entrypoint-bench-db.XXXXXX)
chmod 755 "$work"
pg_pid=
scheduler_pid=
cleanup() {
  [[ -n $scheduler_pid ]] && kill -KILL -- "-$scheduler_pid" 2>/dev/null || true
  [[ -n $pg_pid ]] && kill -TERM "$pg_pid" 2>/dev/null && wait "$pg_pid" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
mkdir -p "$work/data" "$work/sock" "$work/home/dags"
chown postgres "$work/data" "$work/sock"
log "PostgreSQL on 127.0.0.1:$port"
setpriv --reuid=postgres --regid=postgres --init-groups -- "$pg_bin/initdb" -D "$work/data" -U postgres --auth=trust --no-sync >/dev/null
printf 'local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n' >"$work/data/pg_hba.conf"
setpriv --reuid=postgres --regid=postgres --init-groups -- "$pg_bin/postgres" -D "$work/data" -p "$port" \
  -c listen_addresses=127.0.0.1 -c fsync=off -k "$work/sock" >"$work/pg.log" 2>&1 &
pg_pid=$!
for _ in $(seq 100); do grep -q "ready to accept connections" "$work/pg.log" && break; sleep 0.1; done
psql -h "$work/sock" -p "$port" -U postgres -q -c "CREATE ROLE airflow LOGIN PASSWORD 'bench-pw'" -c "CREATE DATABASE airflow OWNER airflow"

export PATH="$venv/bin:/usr/bin:/bin"
export AIRFLOW_HOME="$work/home"
export AIRFLOW__DATABASE__SQL_ALCHEMY_CONN="postgresql+psycopg2://airflow:bench-pw@127.0.0.1:$port/airflow"
export AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK=False
export AIRFLOW_ENTRYPOINT_LOG_LEVEL=error
export AIRFLOW_ENTRYPOINT_RUN_AS_ROOT=true

log "airflow db migrate"
airflow db migrate >"$work/migrate.log" 2>&1 || die "airflow db migrate failed: $(tail -5 "$work/migrate.log")"
log "starting the scheduler"
setsid airflow scheduler >"$work/scheduler.log" 2>&1 &
scheduler_pid=$!
for _ in $(seq 90); do
  airflow jobs check --job-type SchedulerJob --local >/dev/null 2>&1 && break
  sleep 1
done
airflow jobs check --job-type SchedulerJob --local >/dev/null 2>&1 || die "the scheduler did not come up"

# shellcheck source=bench/timing.sh
source "$bench_dir/timing.sh"


log "--healthcheck scheduler ($ours_runs runs)"
read -r _ ours_hc_rss < <(measure "$ours_runs" "$bin" --healthcheck scheduler)
ours_hc_ms=$(loop_ms "$ours_runs" "$bin" --healthcheck scheduler)
log "airflow jobs check ($airflow_runs runs)"
read -r py_hc_ms py_hc_rss < <(measure "$airflow_runs" airflow jobs check --job-type SchedulerJob --local)
log "--wait-only --wait-for-migrations ($ours_runs runs)"
read -r _ ours_wm_rss < <(measure "$ours_runs" "$bin" --wait-only --wait-for-migrations)
ours_wm_ms=$(loop_ms "$ours_runs" "$bin" --wait-only --wait-for-migrations)
log "--wait-only alone, for reference ($ours_runs runs)"
ours_probe_ms=$(loop_ms "$ours_runs" "$bin" --wait-only)
log "airflow db check-migrations ($airflow_runs runs)"
read -r py_wm_ms py_wm_rss < <(measure "$airflow_runs" airflow db check-migrations)

size=$(stat -c %s "$bin")
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f×", a / b}'; }
table=$(cat <<EOF
| question | airflow-entrypoint | Airflow 3.3.2 | faster | less memory |
|---|---|---|---|---|
| scheduler liveness (\`--healthcheck scheduler\` / \`airflow jobs check --job-type SchedulerJob --local\`) | ${ours_hc_ms} ms, ${ours_hc_rss} kB | ${py_hc_ms} ms, ${py_hc_rss} kB | $(ratio "$py_hc_ms" "$ours_hc_ms") | $(ratio "$py_hc_rss" "$ours_hc_rss") |
| schema at head (\`--wait-only --wait-for-migrations\` / \`airflow db check-migrations\`) | ${ours_wm_ms} ms, ${ours_wm_rss} kB | ${py_wm_ms} ms, ${py_wm_rss} kB | $(ratio "$py_wm_ms" "$ours_wm_ms") | $(ratio "$py_wm_rss" "$ours_wm_rss") |

For reference, \`--wait-only\` alone (connect and SCRAM-SHA-256 login, no query): ${ours_probe_ms} ms.
Wall time: ours the mean of $ours_runs runs in a loop, Airflow's the median of $airflow_runs (GNU time);
peak RSS: the largest of the runs (GNU time's maximum resident set size). One PostgreSQL
on loopback, one running scheduler. Stripped binary: $size bytes.
EOF
)
printf '%s\n' "$table" | tee "$bench_dir/METADATA_DB.md"
