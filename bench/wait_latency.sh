#!/usr/bin/env bash
# Wait latency: how long after PostgreSQL is ready does the Airflow command
# start? Three waiters, side by side in one run, each against a real
# PostgreSQL 15 that comes up while the waiter is already polling:
#
#   (a) airflow-entrypoint (protocol-level probe, 50 ms backoff to 250 ms);
#   (b) the Astronomer Certified entrypoint's loop,
#         while ! nc -w 1 -z HOST PORT; do sleep 0.001; done
#   (c) the official apache/airflow entrypoint's loop: `airflow db check`,
#       then `sleep CONNECTION_CHECK_SLEEP_TIME` (3 s) after each failure, up
#       to CONNECTION_CHECK_MAX_COUNT (20) tries, with its LD_PRELOAD of
#       libstdc++ (scripts/docker/entrypoint_prod.sh, run_check_with_retries).
#
# Latency = t_started - t_ready, where t_ready is the millisecond timestamp of
# PostgreSQL's "database system is ready to accept connections" log line
# (log_timezone=UTC) and t_started is `date +%s.%N`, run as the command the
# waiter starts. A negative latency means the waiter started its command
# before the database was ready.
#
# Prints a markdown report on stdout and writes it to bench/WAIT_LATENCY.md;
# progress goes to stderr. Needs root (it runs PostgreSQL as `postgres`).
#
#   ENTRYPOINT_UNDER_TEST=/path/to/airflow-entrypoint bash bench/wait_latency.sh
#
# Settings (environment): ROUNDS (5), AIRFLOW_VENV
# (/opt/airflow-entrypoint/venvs/airflow-3.3.2), PG_BINDIR
# (/usr/lib/postgresql/15/bin), WAIT_LATENCY_OUT (bench/WAIT_LATENCY.md),
# WAIT_LATENCY_TARGET_MS (100), WAIT_LATENCY_KEEP (set: keep the temporary
# directory with every log, for debugging; its processes are still stopped).
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "$bench_dir/.." && pwd)
target=x86_64-unknown-linux-musl

rounds=${ROUNDS:-5}
venv=${AIRFLOW_VENV:-/opt/airflow-entrypoint/venvs/airflow-3.3.2}
pg_bindir=${PG_BINDIR:-/usr/lib/postgresql/15/bin}
out_file=${WAIT_LATENCY_OUT:-$bench_dir/WAIT_LATENCY.md}
target_ms=${WAIT_LATENCY_TARGET_MS:-100}
db_password=bench-pw

log() { printf '[wait-latency] %s\n' "$*" >&2; }
die() { printf '[wait-latency] error: %s\n' "$*" >&2; exit 1; }

[[ $rounds =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a positive integer, not '$rounds'"
[[ $(id -u) -eq 0 ]] || die "run as root (PostgreSQL runs as the postgres user via setpriv)"

# --- cleanup ------------------------------------------------------------------
work=$(mktemp -d /tmp/airflow-entrypoint-waitlat.XXXXXX)
chmod 755 "$work" # the postgres user must reach its data and socket dirs
pg_pid=""          # the running postmaster, if any
waiter_pgids=()    # process groups of waiters (each started by setsid)

# alive PID: the process exists and is not a zombie (kill -0 succeeds on an
# unreaped child, so it cannot tell).
alive() {
  local line
  { read -r line <"/proc/$1/stat"; } 2>/dev/null || return 1
  [[ ${line##*) } != Z* ]]
}

# group_alive PGID: some process of that group is alive (zombies don't count).
group_alive() {
  local f line st pg
  for f in /proc/[0-9]*/stat; do
    { read -r line <"$f"; } 2>/dev/null || continue
    read -r st _ pg _ <<<"${line##*) }"
    [[ $pg == "$1" && $st != Z ]] && return 0
  done
  return 1
}

# stop_pg: fast shutdown (SIGINT), bounded; SIGKILL if it does not go in 30 s.
stop_pg() {
  [[ -n $pg_pid ]] || return 0
  local pid=$pg_pid i
  pg_pid=""
  kill -INT "$pid" 2>/dev/null || true
  for ((i = 0; i < 300; i++)); do
    alive "$pid" || break
    sleep 0.1
  done
  if alive "$pid"; then
    log "postgres $pid ignored SIGINT for 30 s: SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  wait "$pid" 2>/dev/null || true
}

# kill_group PGID: TERM to the group, KILL after 2 s if anything is left; reaps
# the group's leader (our child) and forgets the group.
kill_group() {
  local pgid=$1 i g kept=()
  if kill -TERM -- "-$pgid" 2>/dev/null; then
    for ((i = 0; i < 20; i++)); do
      group_alive "$pgid" || break
      sleep 0.1
    done
    kill -KILL -- "-$pgid" 2>/dev/null || true
  fi
  wait "$pgid" 2>/dev/null || true
  for g in "${waiter_pgids[@]}"; do
    [[ $g == "$pgid" ]] || kept+=("$g")
  done
  waiter_pgids=(${kept[@]+"${kept[@]}"})
}

cleanup() {
  local pgid
  for pgid in ${waiter_pgids[@]+"${waiter_pgids[@]}"}; do
    kill_group "$pgid"
  done
  stop_pg
  # The postmaster's children die with it; anything of postgres still running
  # from our data directory would be a leak: kill it by pid, not by name.
  if [[ -f $work/data/postmaster.pid ]]; then
    local left
    left=$(head -n1 "$work/data/postmaster.pid" 2>/dev/null || true)
    if [[ $left =~ ^[0-9]+$ && $(cat "/proc/$left/comm" 2>/dev/null) == postgres ]]; then
      kill -KILL "$left" 2>/dev/null || true
    fi
  fi
  if [[ -n ${WAIT_LATENCY_KEEP:-} ]]; then
    log "kept $work (WAIT_LATENCY_KEEP)"
  else
    rm -rf "$work"
  fi
}
trap cleanup EXIT
trap 'log "a command failed at line $LINENO (exit $?)"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# --- helpers ------------------------------------------------------------------
# wait_until TIMEOUT_S COMMAND...: polls COMMAND every 10 ms; fails at timeout.
wait_until() {
  local timeout=$1
  shift
  local deadline=$(($(date +%s%N) + timeout * 1000000000))
  until "$@"; do
    (($(date +%s%N) < deadline)) || return 1
    sleep 0.01
  done
}

# stats: "median min max" of the numbers on stdin, one a line.
stats() {
  sort -g | awk '{ a[NR] = $1 }
    END {
      if (NR == 0) exit 1
      m = (NR % 2) ? a[(NR + 1) / 2] : (a[NR / 2] + a[NR / 2 + 1]) / 2
      printf "%.1f %.1f %.1f\n", m, a[1], a[NR]
    }'
}

# pg_ready_epoch LOGFILE: epoch seconds (ms precision) of the "ready" line.
# The line looks like "2025-01-31 12:34:56.789 UTC LOG:  database system is
# ready to accept connections" (log_line_prefix='%m ', log_timezone=UTC).
pg_ready_epoch() {
  local line d t z
  line=$(grep -m1 'database system is ready to accept connections' "$1") || return 1
  read -r d t z _ <<<"$line"
  [[ $z == UTC ]] || die "unexpected log timezone '$z' in: $line"
  date -u -d "$d $t UTC" +%s.%N
}

pg_is_ready_in() { grep -q 'database system is ready to accept connections' "$1"; }

# start_pg LOGFILE: starts the postmaster in the background (we own the
# process: no pg_ctl), returns once its "ready" line is logged (30 s bound).
start_pg() {
  local logf=$1
  : >>"$logf" # exists before the first poll below
  # setpriv straight from `&` (not through a function): bash's child execs it
  # and it execs postgres, so $! is the postmaster itself.
  setpriv --reuid=postgres --regid=postgres --init-groups "$pg_bindir/postgres" -D "$work/data" -p "$port" -k "$work/sock" \
    -c listen_addresses=127.0.0.1 -c "log_line_prefix=%m " -c log_timezone=UTC \
    -c lc_messages=C -c fsync=off \
    </dev/null >>"$logf" 2>&1 &
  pg_pid=$!
  local deadline=$(($(date +%s%N) + 30 * 1000000000))
  until pg_is_ready_in "$logf"; do
    if ! alive "$pg_pid"; then
      wait "$pg_pid" 2>/dev/null || true
      pg_pid=""
      tail -n 20 "$logf" >&2
      die "postgres exited before it was ready (log above)"
    fi
    (($(date +%s%N) < deadline)) || { tail -n 20 "$logf" >&2; die "postgres not ready within 30 s"; }
    sleep 0.01
  done
}

# --- 1. dependencies ----------------------------------------------------------
missing=()
command -v nc >/dev/null || missing+=(netcat-openbsd)
command -v setpriv >/dev/null || missing+=(util-linux)
command -v setsid >/dev/null || missing+=(util-linux)
[[ -x $pg_bindir/postgres ]] || missing+=(postgresql-15)
if ((${#missing[@]})); then
  log "installing with apt: ${missing[*]}"
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${missing[@]}" </dev/null >&2
fi
[[ -x $pg_bindir/postgres && -x $pg_bindir/initdb ]] || die "no PostgreSQL 15 binaries in $pg_bindir"
id postgres >/dev/null 2>&1 || die "no postgres user"
nc -h 2>&1 | grep -qi openbsd || die "nc is not netcat-openbsd (the Astronomer image's nc)"
[[ -x $venv/bin/airflow && -x $venv/bin/python ]] || die "no Airflow venv at $venv (set AIRFLOW_VENV)"

bin=${ENTRYPOINT_UNDER_TEST:-${CARGO_TARGET_DIR:-$repo_dir/target}/$target/release/airflow-entrypoint}
if [[ ! -x $bin ]]; then
  [[ -z ${ENTRYPOINT_UNDER_TEST:-} ]] || die "ENTRYPOINT_UNDER_TEST=$bin is not executable"
  log "building $bin"
  (cd "$repo_dir" && cargo build --release --target "$target" </dev/null >&2)
fi
bin=$(cd "$(dirname "$bin")" && pwd)/$(basename "$bin")
[[ -x $bin ]] || die "no binary at $bin"
# Not for the waiters: our binary would log it as an unknown setting.
unset ENTRYPOINT_UNDER_TEST

# --- 2. one PostgreSQL 15 cluster, initialised once -----------------------------
port=$("$venv/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
mkdir -p "$work/data" "$work/sock" "$work/runs" "$work/airflow-home"
chown postgres:postgres "$work/data" "$work/sock"
chmod 700 "$work/data"
log "initdb in $work/data (port $port)"
timeout -k 5 120 setpriv --reuid=postgres --regid=postgres --init-groups "$pg_bindir/initdb" -D "$work/data" -U postgres --no-locale -E UTF8 \
  --auth-local=trust --auth-host=scram-sha-256 </dev/null >"$work/initdb.log" 2>&1 ||
  { tail -n 20 "$work/initdb.log" >&2; die "initdb failed"; }
grep -Eq '^host +all +all +127\.0\.0\.1/32 +scram-sha-256' "$work/data/pg_hba.conf" ||
  die "pg_hba.conf has no scram-sha-256 line for 127.0.0.1"

start_pg "$work/bootstrap.log"
timeout -k 5 30 setpriv --reuid=postgres --regid=postgres --init-groups "$pg_bindir/psql" -X -q -h "$work/sock" -p "$port" -U postgres -d postgres \
  -v ON_ERROR_STOP=1 -c "CREATE ROLE airflow LOGIN PASSWORD '$db_password'" \
  -c "CREATE DATABASE airflow OWNER airflow" </dev/null >&2
conn="postgresql://airflow:$db_password@127.0.0.1:$port/airflow"
PGPASSWORD=$db_password timeout -k 5 30 "$pg_bindir/psql" -X -q -h 127.0.0.1 -p "$port" -U airflow -d airflow \
  -tAc 'SELECT 1' </dev/null | grep -qx 1 || die "password login over TCP failed"

export AIRFLOW_HOME=$work/airflow-home
# Warm-up and sanity check of every waiter against the live database: fills
# the page cache (Airflow's imports are the slow part) and writes airflow.cfg,
# so round 1 is like the others; fails early if a waiter cannot succeed.
log "warm-up: airflow db check, airflow-entrypoint --wait-only, nc -z"
AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$conn timeout 120 "$venv/bin/airflow" db check \
  </dev/null >"$work/warmup-airflow.log" 2>&1 ||
  { tail -n 20 "$work/warmup-airflow.log" >&2; die "airflow db check fails against the live database"; }
AIRFLOW_ENTRYPOINT_RUN_AS_ROOT=true AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$conn \
  AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT=30 timeout 60 "$bin" --wait-only \
  </dev/null >"$work/warmup-ours.log" 2>&1 ||
  { tail -n 20 "$work/warmup-ours.log" >&2; die "airflow-entrypoint --wait-only fails against the live database"; }
nc -w 1 -z 127.0.0.1 "$port" </dev/null || die "nc -z fails against the live database"
stop_pg

# --- 3. the waiters -----------------------------------------------------------
# Each writes `date +%s.%N` to the absolute path STARTED as the command it
# starts once it thinks the database is up. All run with cwd = their run dir.
waiters=(ours nc airflow)
declare -A label=(
  [ours]="airflow-entrypoint"
  [nc]="Astronomer Certified \`nc -z\` loop"
  [airflow]="official image \`airflow db check\` loop"
)
libstdcxx=/usr/lib/$(uname -m)-linux-gnu/libstdc++.so.6
[[ -f $libstdcxx ]] || libstdcxx=""

# The Astronomer Certified include/entrypoint loop (1.10.x to 2.x): HOST and
# PORT parsed out of the SQLAlchemy URL with its regex, then a busy poll with
# a 1 ms sleep. $1 is the file that the started command writes.
nc_script='url_parse_regex="[^:]+://([^@/]*@)?([^/:]*):?([0-9]*)/?"
[[ ${AIRFLOW__DATABASE__SQL_ALCHEMY_CONN} =~ $url_parse_regex ]]
HOST=${BASH_REMATCH[2]}
PORT=${BASH_REMATCH[3]}
while ! nc -w 1 -z "${HOST}" "${PORT}"; do
  sleep 0.001
done
date +%s.%N > "$1"'

# run_check_with_retries "airflow db check" of the official image's
# entrypoint_prod.sh: output captured, countdown, sleep after each failure.
airflow_script='countdown=$CONNECTION_CHECK_MAX_COUNT
while true; do
  set +e
  last_check_result=$(eval "airflow db check 2>&1")
  res=$?
  set -e
  if [[ $res == 0 ]]; then
    echo
    break
  else
    echo -n "."
    countdown=$((countdown - 1))
  fi
  if [[ $countdown == 0 ]]; then
    echo "ERROR! Maximum number of retries ($CONNECTION_CHECK_MAX_COUNT) reached."
    echo "$last_check_result"
    exit 1
  else
    sleep "$CONNECTION_CHECK_SLEEP_TIME"
  fi
done
date +%s.%N > "$1"'

# waiter_cmd NAME STARTED: sets the array `cmd` to the waiter's command line;
# the command it starts writes `date +%s.%N` to the absolute path STARTED.
waiter_cmd() {
  local started=$2
  case $1 in
  ours)
    cmd=(env AIRFLOW_ENTRYPOINT_RUN_AS_ROOT=true "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$conn"
      AIRFLOW_ENTRYPOINT_WAIT=always AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT=120
      "$bin" -- sh -c 'date +%s.%N > "$1"' sh "$started")
    ;;
  nc)
    cmd=(env "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$conn" bash -c "$nc_script" bash "$started")
    ;;
  airflow)
    cmd=(env "PATH=$venv/bin:$PATH" "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$conn"
      CONNECTION_CHECK_MAX_COUNT=20 CONNECTION_CHECK_SLEEP_TIME=3
      ${libstdcxx:+"LD_PRELOAD=$libstdcxx"} bash -c "$airflow_script" bash "$started")
    ;;
  esac
}

# How long the command may take to start after the database is ready; the
# airflow loop needs up to ~1.5 s of Python start-up per try plus 3 s sleep.
declare -A started_timeout=([ours]=30 [nc]=30 [airflow]=60)

# run_one NAME ROUND: one measurement; sets `ms` to the latency in ms. Runs in
# the main shell (not in $(...)), so the EXIT trap knows every process it
# started.
run_one() {
  local name=$1 round=$2
  local rd=$work/runs/$name-$round
  mkdir -p "$rd"
  local started=$rd/started
  waiter_cmd "$name" "$started"

  # Waiter first, while the database is down; its own process group so that
  # everything it starts can be ended at once.
  (cd "$rd" && exec setsid "${cmd[@]}") </dev/null >"$rd/waiter.log" 2>&1 &
  local wpid=$!
  waiter_pgids+=("$wpid")

  # A random 1.0-3.0 s head start: the waiters' poll phases are not aligned
  # with the moment the database comes up.
  local head_ms=$((1000 + RANDOM % 2001))
  sleep "$(printf '%d.%03d' $((head_ms / 1000)) $((head_ms % 1000)))"
  [[ ! -e $started ]] || die "$name started its command while the database was down (round $round)"
  alive "$wpid" ||
    { tail -n 20 "$rd/waiter.log" >&2; die "$name exited while the database was down (round $round)"; }

  start_pg "$rd/postgres.log"
  wait_until "${started_timeout[$name]}" test -s "$started" ||
    { tail -n 20 "$rd/waiter.log" >&2; die "$name did not start its command within ${started_timeout[$name]} s of the database being ready (round $round)"; }

  local t_ready t_started
  t_ready=$(pg_ready_epoch "$rd/postgres.log")
  t_started=$(<"$started")

  # The waiter has nothing left to do: give it 10 s to exit, then end it.
  local i
  for ((i = 0; i < 1000; i++)); do
    alive "$wpid" || break
    sleep 0.01
  done
  alive "$wpid" && log "$name still running 10 s after its command: killing it"
  kill_group "$wpid"
  stop_pg

  ms=$(awk -v a="$t_started" -v b="$t_ready" 'BEGIN { printf "%.1f\n", (a - b) * 1000 }')
}

# --- 4. the rounds ------------------------------------------------------------
declare -A lat=() # lat[name] = newline-separated latencies in ms
load_before=$(cut -d' ' -f1-3 /proc/loadavg)
t0=$(date +%s)
for ((r = 1; r <= rounds; r++)); do
  for name in "${waiters[@]}"; do
    run_one "$name" "$r"
    log "round $r/$rounds  ${label[$name]}: $ms ms"
    lat[$name]+="$ms"$'\n'
  done
done
elapsed=$(($(date +%s) - t0))
load_after=$(cut -d' ' -f1-3 /proc/loadavg)

# --- 5. report ----------------------------------------------------------------
declare -A med=() min=() max=() early=()
for name in "${waiters[@]}"; do
  read -r "med[$name]" "min[$name]" "max[$name]" < <(printf '%s' "${lat[$name]}" | stats)
  early[$name]=$(printf '%s' "${lat[$name]}" | awk '$1 < 0 { n++ } END { print n + 0 }')
done
# ratio A B: A/B, or n/a when either is not positive (started before ready).
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a <= 0 || b <= 0) print "n/a"; else printf "%.2f×\n", a / b }'; }
verdict=$(awk -v m="${med[ours]}" -v t="$target_ms" 'BEGIN { print (m <= t) ? "PASS" : "FAIL" }')

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
commit=$(git -C "$repo_dir" rev-parse --short HEAD 2>/dev/null || echo unknown)
dirty=""
if [[ -n $(git -C "$repo_dir" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
  dirty=" (work tree modified)"
fi
# Settings of ours that the waiters inherit from this script's environment.
inherited=$(env | grep -E '^AIRFLOW_ENTRYPOINT_[A-Z0-9_]*=' | sort | sed 's/^/`/; s/$/`/' | paste -sd' ' || true)
pg_version=$("$pg_bindir/postgres" --version)
airflow_version=$(grep -m1 '^Version:' "$venv"/lib/python*/site-packages/apache_airflow-*.dist-info/METADATA 2>/dev/null | awk '{ print $2 }' || true)

report() {
  echo "# Wait latency: database ready → command started"
  echo
  echo "Generated by \`bench/wait_latency.sh\` on $(date -u '+%Y-%m-%d %H:%M UTC'); $rounds rounds per waiter, ${elapsed} s."
  echo
  echo "- Kernel: $(uname -srm); CPU: ${cpu:-unknown} × $(nproc); load average before $load_before, after $load_after"
  echo "- airflow-entrypoint: \`$bin\`, commit $commit$dirty; settings inherited from the environment: ${inherited:-none}"
  echo "- $pg_version; Airflow ${airflow_version:-unknown} ($venv); $(nc -h 2>&1 | head -n1)"
  echo
  echo "Latency = t_started − t_ready: t_ready is the timestamp (ms) of PostgreSQL's"
  echo "\"database system is ready to accept connections\" log line, t_started is"
  echo "\`date +%s.%N\` run as the started command. Each measurement starts the waiter"
  echo "first, with the database down, waits a random 1.0–3.0 s, then starts PostgreSQL."
  echo "Lower is better; negative means the command started before the database was"
  echo "ready. Ratio is the waiter's median ÷ airflow-entrypoint's median (n/a when a"
  echo "median is negative: a head start on a database that is not ready is no win)."
  echo
  echo "| waiter | median (ms) | min (ms) | max (ms) | median ÷ ours | started before ready |"
  echo "|---|---:|---:|---:|---:|---:|"
  local name
  for name in "${waiters[@]}"; do
    echo "| ${label[$name]} | ${med[$name]} | ${min[$name]} | ${max[$name]} | $(ratio "${med[$name]}" "${med[ours]}") | ${early[$name]}/$rounds |"
  done
  echo
  echo "Target: airflow-entrypoint median ≤ $target_ms ms: **$verdict** (${med[ours]} ms)."
  echo
  echo "Every measurement (ms), in run order:"
  echo
  echo "| waiter | $(seq -s ' | ' 1 "$rounds") |"
  echo "|---|$(printf -- '---:|%.0s' $(seq 1 "$rounds"))"
  for name in "${waiters[@]}"; do
    echo "| ${label[$name]} | $(printf '%s' "${lat[$name]}" | paste -sd'|' | sed 's/|/ | /g') |"
  done
  echo
  echo "## Commands"
  echo
  echo "PostgreSQL 15, one cluster made once (\`initdb --auth-host=scram-sha-256\`,"
  echo "role \`airflow\` with a password, database \`airflow\`), started for each"
  echo "measurement as the \`postgres\` user and stopped with SIGINT:"
  echo
  echo '```sh'
  echo "setpriv --reuid=postgres --regid=postgres --init-groups $pg_bindir/postgres \\"
  echo "  -D DATADIR -p PORT -k SOCKDIR -c listen_addresses=127.0.0.1 \\"
  echo "  -c 'log_line_prefix=%m ' -c log_timezone=UTC -c lc_messages=C -c fsync=off"
  echo '```'
  echo
  local conn_shown="postgresql://airflow:$db_password@127.0.0.1:PORT/airflow"
  echo "airflow-entrypoint:"
  echo
  echo '```sh'
  echo "env AIRFLOW_ENTRYPOINT_RUN_AS_ROOT=true AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$conn_shown \\"
  echo "  AIRFLOW_ENTRYPOINT_WAIT=always AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT=120 \\"
  echo "  $bin -- sh -c 'date +%s.%N > \"\$1\"' sh STARTED"
  echo '```'
  echo
  echo "${label[nc]}: \`env AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$conn_shown bash -c \"\$SCRIPT\" bash STARTED\` with SCRIPT ="
  echo
  echo '```bash'
  printf '%s\n' "$nc_script"
  echo '```'
  echo
  echo "${label[airflow]}: \`env PATH=$venv/bin:\$PATH AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=$conn_shown CONNECTION_CHECK_MAX_COUNT=20 CONNECTION_CHECK_SLEEP_TIME=3${libstdcxx:+ LD_PRELOAD=$libstdcxx} bash -c \"\$SCRIPT\" bash STARTED\` with SCRIPT ="
  echo
  echo '```bash'
  printf '%s\n' "$airflow_script"
  echo '```'
  echo
  echo "Each waiter runs in its own session (\`setsid\`), with no stdin, \`AIRFLOW_HOME\` set to"
  echo "a fresh temporary directory (warmed up by one \`airflow db check\` before the rounds),"
  echo "PORT a free port and STARTED a file in the run's temporary directory."
  echo
  echo "Notes:"
  echo
  echo "- The \`nc -z\` loop is Astronomer Certified's (\`while ! nc -w 1 -z HOST PORT; do"
  echo "  sleep 0.001; done\`): it polls every ~1 ms and only checks that the port is"
  echo "  open, so it can start the command while PostgreSQL still answers"
  echo "  \`57P03 the database system is starting up\` (negative latency)."
  echo "- t_ready has millisecond resolution (PostgreSQL's \`%m\`, truncated), so every"
  echo "  latency may read up to 1 ms high."
  echo "- The \`airflow db check\` loop is the official image's \`run_check_with_retries\`"
  echo "  (entrypoint_prod.sh), not \`airflow db check --retry N --retry-delay S\`, which"
  echo "  the entrypoint does not use. Each try pays Python and Airflow start-up."
}

report | tee "$out_file"
log "wrote $out_file"
