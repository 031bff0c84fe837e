#!/usr/bin/env bash
# Benchmark: the supervisor of four Airflow 3 components in one container.
# airflow-entrypoint's group (`all`: api-server, scheduler, dag-processor,
# triggerer) against `airflow standalone`'s own Python supervisor, one after
# the other in one run, on SQLite, with the same Airflow and settings.
# Measured on the supervising process alone (not its components), over the
# same idle window once all four are healthy: resident memory (VmRSS), CPU
# time (utime+stime), and wake-ups (voluntary + involuntary context
# switches, of every thread). Prints a markdown table with ratios on stdout
# and writes it to bench/GROUP.md; progress goes to stderr.
#
#   ENTRYPOINT_UNDER_TEST=/path/to/airflow-entrypoint bash bench/group.sh
#
# Needs root (a PID namespace per run), util-linux and the Airflow venv
# (scripts/airflow-venv 3.3.2). Tunables (env): BENCH_GROUP_WINDOW (30 s),
# BENCH_GROUP_SETTLE (20 s after healthy), BENCH_GROUP_UP (300 s bound).
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "$bench_dir/.." && pwd)
window=${BENCH_GROUP_WINDOW:-30}
settle=${BENCH_GROUP_SETTLE:-20}
up_bound=${BENCH_GROUP_UP:-300}
bin=${ENTRYPOINT_UNDER_TEST:-$repo_dir/target/x86_64-unknown-linux-musl/release/airflow-entrypoint}
venv=$("$repo_dir/scripts/airflow-venv" 3.3.2 | tail -n 1)

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root (unshare --pid needs it)"
[[ -x $bin ]] || die "no binary at $bin (cargo build --release --target x86_64-unknown-linux-musl)"

work=$(mktemp -d /tmp/airflow-entrypoint-bench-group.XXXXXX)
chmod 755 "$work"
run_pid=
cleanup() {
  if [[ -n $run_pid ]]; then
    local init
    init=$(cat "/proc/$run_pid/task/$run_pid/children" 2>/dev/null || true)
    for p in $init; do kill -KILL "$p" 2>/dev/null || true; done
    kill -KILL "$run_pid" 2>/dev/null || true
    wait "$run_pid" 2>/dev/null || true
  fi
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# utime+stime in clock ticks, and context switches of every thread.
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
switches() {
  cat /proc/"$1"/task/*/status 2>/dev/null |
    awk '/^(voluntary|nonvoluntary)_ctxt_switches/ {n += $2} END {print n + 0}'
}
rss_kib() { awk '/^VmRSS/ {print $2}' "/proc/$1/status"; }
threads() { awk '/^Threads/ {print $2}' "/proc/$1/status"; }

# measure NAME -- COMMAND...: starts COMMAND as PID 1 of a namespace, waits
# until all four components are healthy, settles, then samples the
# supervisor ($super: the init, or for standalone its airflow child).
measure() {
  local name=$1 which=$2; shift 2
  local home="$work/$name" port
  port=$(free_port)
  mkdir -p "$home/dags"
  chown -R 5000:0 "$home"
  cp "$work/passwd" "$work/group" "$home/" 2>/dev/null || true
  log "$name: starting"
  (cd "$home" && exec unshare --pid --fork --mount-proc --mount --kill-child \
    env -i PATH="$venv/bin:/usr/bin:/bin" HOME="$home" AIRFLOW_HOME="$home" \
      AIRFLOW__CORE__LOAD_EXAMPLES=False AIRFLOW__CORE__DAGS_FOLDER="$home/dags" \
      AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__PORT="$port" AIRFLOW__API__WORKERS=1 \
      AIRFLOW__API_AUTH__JWT_SECRET=bench-jwt-secret-0123456789abcdef0123456789 \
      AIRFLOW__CORE__EXECUTION_API_SERVER_URL="http://127.0.0.1:$port/execution/" \
      AIRFLOW__CORE__PARALLELISM=4 AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES=1 \
      AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT="$(free_port)" \
      AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT="$(free_port)" \
      AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT="$(free_port)" \
      _AIRFLOW_DB_MIGRATE=true AIRFLOW_ENTRYPOINT_LOG_LEVEL=warn \
    sh -c 'mount --bind "$1" /etc/passwd && mount --bind "$2" /etc/group && shift 2 && exec "$@"' \
    sh "$work/passwd" "$work/group" "$@") >"$home/out.log" 2>&1 </dev/null &
  run_pid=$!
  local init= deadline=$((SECONDS + up_bound))
  while ((SECONDS < deadline)); do
    init=$(awk '{print $1}' "/proc/$run_pid/task/$run_pid/children" 2>/dev/null || true)
    body=$(curl -fsS "http://127.0.0.1:$port/api/v2/monitor/health" 2>/dev/null || true)
    if [[ -n $init ]] && [[ $(grep -o '"status":"healthy"' <<<"$body" | wc -l) -ge 4 ]]; then
      break
    fi
    sleep 1
  done
  [[ $(grep -o '"status":"healthy"' <<<"${body:-}" | wc -l) -ge 4 ]] ||
    { tail -n 30 "$home/out.log" >&2; die "$name never became healthy"; }
  local super=$init
  if [[ $which == child ]]; then
    super=$(awk '{print $1}' "/proc/$init/task/$init/children")
  fi
  log "$name: healthy; settling ${settle} s, then ${window} s measured (pid $super, $(tr '\0' ' ' <"/proc/$super/cmdline" | cut -c1-60))"
  sleep "$settle"
  local c0 s0 c1 s1 rss thr
  c0=$(cpu_ticks "$super"); s0=$(switches "$super")
  sleep "$window"
  c1=$(cpu_ticks "$super"); s1=$(switches "$super")
  rss=$(rss_kib "$super"); thr=$(threads "$super")
  local hz; hz=$(getconf CLK_TCK)
  # ms of CPU per minute, wake-ups per second
  eval "${name}_rss=$rss ${name}_thr=$thr"
  eval "${name}_cpu=$(awk -v d=$((c1 - c0)) -v hz="$hz" -v w="$window" 'BEGIN {printf "%.1f", d * 1000 / hz * 60 / w}')"
  eval "${name}_wake=$(awk -v d=$((s1 - s0)) -v w="$window" 'BEGIN {printf "%.2f", d / w}')"
  log "$name: rss ${rss} KiB, ${thr} threads, cpu $((c1 - c0)) ticks, $((s1 - s0)) switches"
  for p in $init; do kill -KILL "$p" 2>/dev/null || true; done
  wait "$run_pid" 2>/dev/null || true
  run_pid=
}

# One namespace-local passwd with astro, as the tests do.
printf 'root:x:0:0:root:/root:/bin/sh\nastro:x:5000:0:Airflow:/tmp:/bin/sh\n' >"$work/passwd"
printf 'root:x:0:\n' >"$work/group"
chmod 644 "$work/passwd" "$work/group"
command -v curl >/dev/null || die "curl is needed"

measure ours init "$bin" all
# standalone under the entrypoint (which drops to astro and migrates as for
# ours); the sampled process is standalone's Python supervisor, its child.
measure standalone child "$bin" standalone

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == 0 && b == 0) print "="; else if (a == 0) print "∞ (ours: 0)"; else printf "%.0f×", b / a }'; }
table=$(cat <<EOF
| Supervisor of 4 components (idle, ${window} s window) | resident memory | CPU per minute | wake-ups per second | threads |
|---|---|---|---|---|
| airflow-entrypoint \`all\` | $((ours_rss)) KiB | ${ours_cpu} ms | ${ours_wake} | ${ours_thr} |
| \`airflow standalone\` (its Python supervisor) | $((standalone_rss)) KiB | ${standalone_cpu} ms | ${standalone_wake} | ${standalone_thr} |
| ratio (standalone / ours) | $(ratio "$ours_rss" "$standalone_rss") | $(ratio "$ours_cpu" "$standalone_cpu") | $(ratio "$ours_wake" "$standalone_wake") | |
EOF
)
printf '%s\n' "$table"
{
  echo "# Several components: the supervisor's cost"
  echo
  echo "\`bash bench/group.sh\`, $(date -u +%Y-%m-%d), $(nproc) cores, Airflow 3.3.2 on SQLite."
  echo
  printf '%s\n' "$table"
  echo
  echo "CPU is counted in clock ticks ($((1000 / $(getconf CLK_TCK))) ms each): 0 means less than one tick in the ${window} s window. Wake-ups are the context switches of the supervising process (all its threads) over the window; each line a component writes is one wake-up for ours."
} >"$bench_dir/GROUP.md"
