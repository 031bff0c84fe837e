#!/usr/bin/env bash
# Benchmark: the Celery worker's liveness probe, native against Celery's
# own, side by side in one run, on one Redis and one RabbitMQ each with a
# real Airflow 3.3.2 Celery worker:
#   airflow-entrypoint celery --app … inspect ping -d NODE   (the chart's and
#   quick-start's probe, answered natively)
#   airflow-entrypoint --healthcheck worker
#   celery --app … inspect ping -d NODE                       (Python)
# Prints a markdown table (wall time, peak RSS, ratios, targets) on stdout
# and writes it to bench/WORKER_PROBE.md; progress goes to stderr.
#
#   ENTRYPOINT_UNDER_TEST=/path/to/airflow-entrypoint bash bench/worker_probe.sh
#
# Needs root (the servers run as their users), redis-server, rabbitmq-server,
# GNU time, and the Airflow venv (scripts/airflow-venv 3.3.2).
# Tunables (env): BENCH_OURS_RUNS (50), BENCH_PYTHON_RUNS (5).
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "$bench_dir/.." && pwd)
ours_runs=${BENCH_OURS_RUNS:-50}
python_runs=${BENCH_PYTHON_RUNS:-5}
bin=${ENTRYPOINT_UNDER_TEST:-$repo_dir/target/x86_64-unknown-linux-musl/release/airflow-entrypoint}
venv=$("$repo_dir/scripts/airflow-venv" 3.3.2 | tail -n 1)
app=airflow.providers.celery.executors.celery_executor.app

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root (the servers run as their own users)"
[[ -x $bin ]] || die "no binary at $bin (cargo build --release --target x86_64-unknown-linux-musl)"
[[ -x /usr/bin/time ]] || die "GNU time is needed (apt-get install time)"

work=$(mktemp -d /tmp/airflow-entrypoint-bench-worker.XXXXXX)
chmod 777 "$work"
pids=()
cleanup() {
  local p
  for p in "${pids[@]}"; do kill -KILL -- "-$p" 2>/dev/null || true; done
  # RabbitMQ's VM and epmd leave their process group.
  pkill -KILL -u rabbitmq 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_for() { # FILE TEXT SECONDS
  local i
  for ((i = 0; i < $3 * 10; i++)); do grep -q "$2" "$1" 2>/dev/null && return 0; sleep 0.1; done
  die "no '$2' in $1 after $3 s: $(tail -5 "$1")"
}

redis_port=$(free_port)
log "Redis on 127.0.0.1:$redis_port"
setsid setpriv --reuid=redis --regid=redis --init-groups -- /usr/bin/redis-server --port "$redis_port" \
  --bind 127.0.0.1 --save '' --appendonly no --dir "$work" --logfile "$work/redis.log" &
pids+=($!)
wait_for "$work/redis.log" "Ready to accept connections" 30

amqp_port=$(free_port)
log "RabbitMQ on 127.0.0.1:$amqp_port"
mkdir -p "$work/rabbit" && chown rabbitmq "$work/rabbit"
setsid setpriv --reuid=rabbitmq --regid=rabbitmq --init-groups -- env HOME="$work/rabbit" \
  RABBITMQ_NODE_PORT="$amqp_port" RABBITMQ_NODE_IP_ADDRESS=127.0.0.1 RABBITMQ_DIST_PORT="$(free_port)" \
  RABBITMQ_NODENAME="benchw$amqp_port@localhost" RABBITMQ_MNESIA_BASE="$work/rabbit/mnesia" \
  RABBITMQ_LOG_BASE="$work/rabbit/log" RABBITMQ_ENABLED_PLUGINS_FILE="$work/rabbit/plugins" \
  RABBITMQ_CONFIG_FILE="$work/rabbit/rabbitmq" RABBITMQ_LOGS=- /usr/sbin/rabbitmq-server >"$work/rabbit.log" 2>&1 &
pids+=($!)
for _ in $(seq 1200); do (echo >"/dev/tcp/127.0.0.1/$amqp_port") 2>/dev/null && break; sleep 0.1; done

export PATH="$venv/bin:/usr/bin:/bin"
export AIRFLOW__CORE__EXECUTOR=CeleryExecutor AIRFLOW__CORE__LOAD_EXAMPLES=False
export AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT=86400
export AIRFLOW_ENTRYPOINT_LOG_LEVEL=error AIRFLOW_ENTRYPOINT_RUN_AS_ROOT=true CONNECTION_CHECK_MAX_COUNT=0

# start_worker NAME BROKER: a worker with its own AIRFLOW_HOME.
start_worker() {
  mkdir -p "$work/$1"
  AIRFLOW_HOME="$work/$1" AIRFLOW__CELERY__BROKER_URL="$2" \
    AIRFLOW__CELERY__RESULT_BACKEND="db+sqlite:///$work/$1/results.db" \
    AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$(free_port)" \
    setsid airflow celery worker --concurrency 1 --celery-hostname "celery@$1" >"$work/$1.log" 2>&1 &
  pids+=($!)
  wait_for "$work/$1.log" "celery@$1 ready." 120
}

# shellcheck source=bench/timing.sh
source "$bench_dir/timing.sh"
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.0f×", a / b}'; }
mark() { awk -v v="$1" -v max="$2" 'BEGIN {print (v <= max) ? "pass" : "FAIL"}'; }

rows=()
targets=()
for broker in redis amqp; do
  case $broker in
    redis) url="redis://127.0.0.1:$redis_port/0" label=Redis ;;
    amqp) url="amqp://guest:guest@127.0.0.1:$amqp_port//" label=RabbitMQ ;;
  esac
  log "worker on $label"
  start_worker "w$broker" "$url"
  export AIRFLOW_HOME="$work/w$broker" AIRFLOW__CELERY__BROKER_URL="$url"
  node="celery@w$broker"
  ping=(celery --app "$app" inspect ping -d "$node")
  log "$label: native ping ($ours_runs runs)"
  read -r _ ours_rss < <(measure "$ours_runs" "$bin" "${ping[@]}")
  ours_ms=$(loop_ms "$ours_runs" "$bin" "${ping[@]}")
  log "$label: --healthcheck worker ($ours_runs runs)"
  read -r _ hc_rss < <(AIRFLOW_ENTRYPOINT_HOSTNAME="w$broker" measure "$ours_runs" "$bin" --healthcheck worker)
  hc_ms=$(AIRFLOW_ENTRYPOINT_HOSTNAME="w$broker" loop_ms "$ours_runs" "$bin" --healthcheck worker)
  log "$label: celery inspect ping ($python_runs runs)"
  read -r py_ms py_rss < <(measure "$python_runs" "${ping[@]}")
  rows+=("| $label | ${ours_ms} ms, ${ours_rss} kB | ${hc_ms} ms, ${hc_rss} kB | ${py_ms} ms, ${py_rss} kB | $(ratio "$py_ms" "$ours_ms") | $(ratio "$py_rss" "$ours_rss") |")
  targets+=("| $label: native ping ≤ 20 ms | ${ours_ms} ms | $(mark "$ours_ms" 20) |")
  targets+=("| $label: native ping ≤ 3 MB peak RSS | ${ours_rss} kB | $(mark "$ours_rss" 3072) |")
  targets+=("| $label: ≥ 100× faster than celery's ping | $(ratio "$py_ms" "$ours_ms") | $(awk -v a="$py_ms" -v b="$ours_ms" 'BEGIN {print (a / b >= 100) ? "pass" : "FAIL"}') |")
done
size=$(stat -c %s "$bin")
targets+=("| stripped binary ≤ 2.5 MB (2621440 bytes) | $size bytes | $(mark "$size" 2621440) |")

{
  echo "| broker | \`celery … inspect ping\` answered natively | \`--healthcheck worker\` | Celery's \`celery … inspect ping\` (Python) | faster | less memory |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${rows[@]}"
  echo
  echo "| target | measured | |"
  echo "|---|---|---|"
  printf '%s\n' "${targets[@]}"
  echo
  echo "Wall time: ours the mean of $ours_runs runs in a loop, Celery's the median of $python_runs"
  echo "(GNU time); peak RSS: the largest of the runs (GNU time's maximum resident set size). One"
  echo "worker per broker (\`airflow celery worker --concurrency 1\`), on loopback; each run connects,"
  echo "logs in, asks ping and active_queues and cleans up. The entrypoint's own start-up (settings,"
  echo "environment layers, the broker URL) is included."
} | tee "$bench_dir/WORKER_PROBE.md"
