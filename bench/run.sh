#!/usr/bin/env bash
# Benchmark: airflow-entrypoint against tini, dumb-init and catatonit, side by
# side in one run. Prints a markdown table on stdout and writes it to
# bench/RESULTS.md; progress goes to stderr. See bench/README.md.
#
#   ENTRYPOINT_UNDER_TEST=/path/to/airflow-entrypoint bash bench/run.sh
#
# Needs root (PID namespaces via unshare) and Debian's apt for the peers.
# Tunables (env): BENCH_SPAWN_RUNS (300), BENCH_SPAWN_WARMUP (20), BENCH_SPAWN_ROUNDS (3),
# BENCH_REAP_N (10000), BENCH_REAP_RUNS (5), BENCH_IDLE_SECONDS (5),
# BENCH_IDLE_INSTANCES (5), BENCH_QUIET_WAIT (60).
# The aarch64 build's size is reported next to the x86-64 one's:
# ENTRYPOINT_AARCH64 (default target/aarch64-unknown-linux-musl/release/
# airflow-entrypoint, built with scripts/build-aarch64 when missing).
# BENCH_ONLY=size prints only our two binaries' sizes (a few seconds; no
# timed phase, bench/RESULTS.md untouched).
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "$bench_dir/.." && pwd)
target=x86_64-unknown-linux-musl

spawn_runs=${BENCH_SPAWN_RUNS:-300}
spawn_warmup=${BENCH_SPAWN_WARMUP:-20}
spawn_rounds=${BENCH_SPAWN_ROUNDS:-3}
reap_n=${BENCH_REAP_N:-10000}
reap_runs=${BENCH_REAP_RUNS:-5}
idle_seconds=${BENCH_IDLE_SECONDS:-5}
idle_instances=${BENCH_IDLE_INSTANCES:-5}

# Keep our binary's own log quiet (it logs INFO lines to stderr by default),
# and keep root like the peers do (no privilege drop) unless a column says
# otherwise. The peers ignore both variables; being in the environment of
# every command, they also leave ours and the peers in one hyperfine run.
export AIRFLOW_ENTRYPOINT_LOG_LEVEL=error
export AIRFLOW_ENTRYPOINT_RUN_AS_ROOT=true

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }

[[ $(id -u) -eq 0 ]] || die "run as root (unshare --pid needs it)"

# --- cleanup ----------------------------------------------------------------
work=$(mktemp -d /tmp/airflow-entrypoint-bench.XXXXXX)
chmod 755 "$work" # the drop-to-nobody run must reach the zombies program
bg_pids=()       # unshare processes started in the background
init_pids=()     # the namespace inits they started (host PIDs)
leftover_pids=() # their supervised sleep processes (host PIDs)

# SIGKILL to a namespace's init kills the whole namespace. --kill-child alone
# is not enough: the kernel clears the parent-death signal it relies on when
# the init changes its credentials (our drop to the service user does).
# unshare itself ignores TERM while it waits, hence KILL for it too.
stop_all() {
  local pid
  for pid in "${init_pids[@]}" "${bg_pids[@]}" "${leftover_pids[@]}"; do
    kill -KILL "$pid" 2>/dev/null || true
  done
  for pid in "${bg_pids[@]}"; do
    wait "$pid" 2>/dev/null || true
  done
}
cleanup() {
  stop_all
  rm -rf "$work"
}
trap cleanup EXIT
trap 'log "error: a command failed at line $LINENO (exit $?)"' ERR
trap 'exit 130' INT
trap 'exit 143' TERM

# median of the numbers on stdin, one a line
median() { sort -g | awk '{ a[NR] = $1 } END { if (NR == 0) exit 1; if (NR % 2) print a[(NR + 1) / 2]; else print (a[NR / 2] + a[NR / 2 + 1]) / 2 }'; }

# wait_until TIMEOUT_S COMMAND...: polls COMMAND every 20 ms; fails at timeout.
wait_until() {
  local timeout=$1; shift
  local deadline=$(( $(date +%s%N) + timeout * 1000000000 ))
  until "$@"; do
    (( $(date +%s%N) < deadline )) || return 1
    sleep 0.02
  done
}

# --- 1. dependencies ---------------------------------------------------------
install_missing() {
  local pkg missing=()
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' \
      || missing+=("$pkg")
  done
  ((${#missing[@]} == 0)) && return 0
  log "installing with apt: ${missing[*]}"
  echo 'man-db man-db/auto-update boolean false' | debconf-set-selections
  DEBIAN_FRONTEND=noninteractive apt-get update -q >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
    "${missing[@]}" >&2
}
bench_only=${BENCH_ONLY:-}
case $bench_only in
  "") install_missing tini dumb-init catatonit hyperfine procps util-linux file jq gcc libc6-dev binutils coreutils ;;
  size) install_missing file binutils coreutils ;;
  *) die "BENCH_ONLY=$bench_only: the only partial run is BENCH_ONLY=size" ;;
esac

# --- our binary ----------------------------------------------------------------
if [[ -n ${ENTRYPOINT_UNDER_TEST:-} ]]; then
  ours=$ENTRYPOINT_UNDER_TEST
  [[ -x $ours ]] || die "ENTRYPOINT_UNDER_TEST=$ours is not an executable file"
else
  ours="${CARGO_TARGET_DIR:-$repo_dir/target}/$target/release/airflow-entrypoint"
  if [[ ! -x $ours ]]; then
    log "building $ours"
    install_missing musl-tools
    rustup target list --installed 2>/dev/null | grep -qx "$target" \
      || rustup target add "$target" >&2
    (cd "$repo_dir" && cargo build --release --target "$target" >&2)
    [[ -x $ours ]] || die "cargo build did not produce $ours"
  fi
fi
ours=$(readlink -f "$ours")
log "airflow-entrypoint under test: $ours"

# --- the aarch64 build, for its size -------------------------------------------
aarch64=${ENTRYPOINT_AARCH64:-${CARGO_TARGET_DIR:-$repo_dir/target}/aarch64-unknown-linux-musl/release/airflow-entrypoint}
if [[ -z ${ENTRYPOINT_AARCH64:-} && ! -f $aarch64 ]]; then
  log "building $aarch64"
  "$repo_dir/scripts/build-aarch64" >&2
fi
[[ -f $aarch64 ]] || die "ENTRYPOINT_AARCH64=$aarch64 is not a file"
file -b "$aarch64" | grep -q 'ARM aarch64' || die "$aarch64 is not an aarch64 binary"
# The stripped size, as for the others (the release profile strips already;
# the host's strip may not know aarch64, the cross binutils do).
stripped_size() { # BINARY STRIP_COMMAND: bytes of a stripped copy
  local copy
  copy=$(mktemp "$work/size.XXXXXX")
  cp "$1" "$copy"
  "$2" "$copy" 2>/dev/null || true
  stat -c %s "$copy"
}
aarch64_strip="strip"
command -v aarch64-linux-gnu-strip >/dev/null && aarch64_strip="aarch64-linux-gnu-strip"
aarch64_size=$(stripped_size "$aarch64" "$aarch64_strip")
if [[ $bench_only == size ]]; then
  ours_size=$(stripped_size "$ours" strip)
  echo "| binary, stripped | bytes | linkage |"
  echo "|---|---:|---|"
  echo "| x86-64 \`$ours\` | $ours_size | $(file -b "$ours" | grep -oE 'static-pie linked|statically linked|dynamically linked') |"
  echo "| aarch64 \`$aarch64\` | $aarch64_size | $(file -b "$aarch64" | grep -oE 'static-pie linked|statically linked|dynamically linked') |"
  awk -v a="$aarch64_size" -v x="$ours_size" 'BEGIN { printf "\naarch64 / x86-64: %.2f×\n", a / x }'
  exit 0
fi

# --- the contenders ----------------------------------------------------------
# names[i] is the column; pid1_args/direct_args are the words before COMMAND
# when the init is PID 1 of a new namespace / when it is run directly; envs[i]
# is the environment (VAR=VALUE words) it runs with.
#
# Column 0 is the like-for-like comparison: the peers run as root and do no
# privilege drop, so neither does ours (AIRFLOW_ENTRYPOINT_RUN_AS_ROOT=true).
# The last column is ours as it runs by default from root: it looks the
# service user up and drops to it (here `nobody`, which Debian always has).
names=(airflow-entrypoint tini-static dumb-init catatonit "tini (dynamic)"
       "airflow-entrypoint, drop to nobody")
bins=("$ours" /usr/bin/tini-static /usr/bin/dumb-init /usr/bin/catatonit /usr/bin/tini "$ours")
pid1_args=("--" "--" "--" "--" "--" "--")
# Not PID 1: tini needs -s (child subreaper) or it warns that it cannot reap;
# ours becomes a subreaper by itself; catatonit and dumb-init need nothing.
direct_args=("--" "-s --" "--" "--" "-s --" "--")
envs=("" "" "" "" ""
      "AIRFLOW_ENTRYPOINT_RUN_AS_ROOT=false ASTRONOMER_USER=nobody ASTRONOMER_UID=65534")
peers=(1 2 3) # indexes compared against ours in the ratio columns

for b in "${bins[@]}"; do [[ -x $b ]] || die "missing $b"; done

# argv of init i in mode pid1|direct, followed by the command, into array $cmd.
build_cmd() {
  local i=$1 mode=$2; shift 2
  local -a pre
  if [[ $mode == pid1 ]]; then read -r -a pre <<<"${pid1_args[$i]}"
  else read -r -a pre <<<"${direct_args[$i]}"; fi
  cmd=("${bins[$i]}" "${pre[@]}" "$@")
}
# `env VAR=VALUE...` for init i into array $with_env (empty when it has none);
# env execs, so the PID that unshare or hyperfine starts stays the same.
build_env() {
  local -a vars
  read -r -a vars <<<"${envs[$1]}"
  with_env=()
  ((${#vars[@]} == 0)) || with_env=(env "${vars[@]}")
}

declare -A val # val[metric,i]

# --- a quiet machine -----------------------------------------------------------
# Wall-clock numbers mean little while something else keeps the CPUs busy
# (a build, a test suite). Wait, with a bound, for the CPUs to be mostly idle,
# and record how busy they were so the reader can judge.
cpu_idle_pct() { # idle share of all CPUs over ~1 s, from /proc/stat
  local a b
  a=$(awk '/^cpu / { print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6 }' /proc/stat)
  sleep 1
  b=$(awk '/^cpu / { print $2+$3+$4+$5+$6+$7+$8+$9, $5+$6 }' /proc/stat)
  awk -v a="$a" -v b="$b" 'BEGIN { split(a, x, " "); split(b, y, " ");
    t = y[1] - x[1]; printf "%d", (t > 0 ? (y[2] - x[2]) * 100 / t : 100) }'
}
quiet_wait=${BENCH_QUIET_WAIT:-60}
waited=0
idle_before=$(cpu_idle_pct)
while ((idle_before < 85 && waited < quiet_wait)); do
  ((waited == 0)) && log "CPUs only ${idle_before}% idle; waiting up to ${quiet_wait} s for a quieter machine"
  idle_before=$(cpu_idle_pct)
  waited=$((waited + 1))
done
quiet_note="CPUs ${idle_before}% idle just before the timed phases (waited ${waited} s)"
((idle_before >= 85)) || quiet_note+="; **the machine was busy: wall-clock rows are unreliable in this run**"
log "$quiet_note"

# CPU used by everything else during the timed phases: the machine's busy
# time (/proc/stat) minus our own (bash's `times`, which includes every
# process this script has waited for: hyperfine, unshare and so each
# namespace's init and, through it, the reaped orphans).
busy_jiffies() { awk '/^cpu / { print $2 + $3 + $4 + $7 + $8 + $9 }' /proc/stat; }
# `times` must run in this shell, not in a pipe or $(...) (a subshell starts
# from zero), so it writes to a file that is then read.
own_cpu_s() { # user+sys of this shell and its reaped children, in seconds
  awk '{ for (f = 1; f <= NF; f++) { split($f, p, "m"); sub("s", "", p[2]); t += p[1] * 60 + p[2] } }
       END { printf "%.3f", t }' "$work/times"
}
times >"$work/times"
phase_busy0=$(busy_jiffies); phase_own0=$(own_cpu_s); phase_t0=$(date +%s%N)

# --- 2a. size ------------------------------------------------------------------
log "a. binary sizes (stripped copies)"
for i in "${!names[@]}"; do
  copy="$work/size.$i"
  cp "${bins[$i]}" "$copy"
  strip "$copy" 2>/dev/null || true
  val[size,$i]=$(stat -c %s "$copy")
  info=$(file -b "${bins[$i]}")
  case $info in
    *static-pie*) val[link,$i]="static-pie" ;;
    *statically*) val[link,$i]="static" ;;
    *dynamically*) val[link,$i]="dynamic (glibc)" ;;
    *) val[link,$i]="?" ;;
  esac
done

# --- 2b/2e. idle RSS and wake-ups, as PID 1 supervising sleep ---------------
# All inits idle at the same time (they do not compete: they are asleep), and
# each several times over: a static-pie binary (ours) is loaded at a random
# address, which moves the kernel's fault-around windows over its text, so
# its VmRSS varies by up to ~90 kB from one start to the next (a fixed-address
# static binary such as tini-static does not). The median of the instances
# is reported.
log "b/e. idle RSS and wake-ups as PID 1 (${idle_instances} instances of each init side by side, ${idle_seconds} s)"
declare -A unshare_pid init_pid sleep_pid # by "i.k": init i, instance k
children_of() { local p=$1; cat "/proc/$p/task/$p/children" 2>/dev/null || true; }
first_child() { local c; c=$(children_of "$1"); c=${c%% *}; echo "${c//[^0-9]/}"; }
has_sleep_child() {
  local c; c=$(first_child "$1")
  [[ -n $c && $(cat "/proc/$c/comm" 2>/dev/null) == sleep ]]
}
started() { has_sleep_child "$(first_child "$1")" || ! kill -0 "$1" 2>/dev/null; }
status_field() { awk -v k="$2:" '$1 == k { print $2 }' "/proc/$1/status"; }
ctxt_total() {
  echo $(( $(status_field "$1" voluntary_ctxt_switches) + $(status_field "$1" nonvoluntary_ctxt_switches) ))
}

for ((k = 0; k < idle_instances; k++)); do
  for i in "${!names[@]}"; do
    build_cmd "$i" pid1 sleep 1000
    build_env "$i"
    "${with_env[@]}" unshare --pid --fork --mount-proc --kill-child "${cmd[@]}" \
      </dev/null >/dev/null 2>"$work/idle.$i.$k.err" &
    unshare_pid[$i.$k]=$!
    bg_pids+=("$!")
  done
done
for ((k = 0; k < idle_instances; k++)); do
  for i in "${!names[@]}"; do
    u=${unshare_pid[$i.$k]}
    wait_until 10 started "$u" || die "${names[$i]}: its sleep child did not appear within 10 s"
    p=$(first_child "$u")
    if ! kill -0 "$u" 2>/dev/null || [[ -z $p ]]; then
      rc=0; wait "$u" || rc=$?
      die "${names[$i]}: exited ($rc) instead of idling; its stderr: $(cat "$work/idle.$i.$k.err")"
    fi
    init_pid[$i.$k]=$p
    init_pids+=("$p")
    sleep_pid[$i.$k]=$(first_child "$p")
    leftover_pids+=("${sleep_pid[$i.$k]}")
    ns_pid=$(awk '$1 == "NSpid:" { print $NF }' "/proc/$p/status")
    [[ $ns_pid == 1 ]] || die "${names[$i]}: host PID $p is not PID 1 of its namespace"
  done
done
sleep 0.5 # let each init finish its start-up work before counting
declare -A ctxt0
for key in "${!init_pid[@]}"; do
  p=${init_pid[$key]}
  status_field "$p" VmRSS >>"$work/rss.${key%.*}"
  status_field "$p" RssAnon >>"$work/rssanon.${key%.*}"
  ctxt0[$key]=$(ctxt_total "$p")
done
sleep "$idle_seconds"
for i in "${!names[@]}"; do val[wake_delta,$i]=0; done
for key in "${!init_pid[@]}"; do
  p=${init_pid[$key]}; i=${key%.*}
  [[ -d /proc/$p ]] || die "${names[$i]}: an init died while idle"
  c1=$(ctxt_total "$p")
  val[wake_delta,$i]=$(( ${val[wake_delta,$i]} + c1 - ${ctxt0[$key]} ))
done
for i in "${!names[@]}"; do
  val[rss,$i]=$(median <"$work/rss.$i")
  val[rssrange,$i]="$(sort -n "$work/rss.$i" | head -n1)–$(sort -n "$work/rss.$i" | tail -n1)"
  val[rssanon,$i]=$(median <"$work/rssanon.$i")
  # per instance: total context switches ÷ instances ÷ seconds
  val[wake,$i]=$(awk -v d="${val[wake_delta,$i]}" -v n="$idle_instances" -v s="$idle_seconds" \
    'BEGIN { printf "%.1f", d / n / s }')
done
stop_all
for key in "${!sleep_pid[@]}"; do
  wait_until 10 bash -c "! kill -0 ${sleep_pid[$key]} 2>/dev/null" \
    || die "${names[${key%.*}]}: sleep ${sleep_pid[$key]} outlived its namespace"
done
bg_pids=(); init_pids=(); leftover_pids=()

# --- 2f. ours with the OOM watch armed, idle as PID 1 ----------------------
# The watch arms only under a memory limit: the same idle measurement for
# ours inside a child memory cgroup with a 4 GiB limit (v1 or v2, whichever
# this machine has), side by side with ours outside it, to show that the
# armed watch costs no wake-up and no memory. The peers do not read cgroups.
log "f. idle RSS and wake-ups of ours with the OOM watch armed (memory cgroup, 4 GiB limit)"
oom_cg=
own_cg=$(awk -F: '$2 ~ /(^|,)memory(,|$)/ { print $3; exit }' /proc/self/cgroup)
if [[ -n $own_cg && -d /sys/fs/cgroup/memory$own_cg ]]; then
  oom_cg=/sys/fs/cgroup/memory$own_cg/aep-bench-oom-$$
  mkdir "$oom_cg" && echo $((4 << 30)) >"$oom_cg/memory.limit_in_bytes"
elif own_cg=$(awk -F: '$1 == "0" { print $3; exit }' /proc/self/cgroup) &&
     [[ -f /sys/fs/cgroup$own_cg/cgroup.subtree_control ]] &&
     grep -qw memory "/sys/fs/cgroup$own_cg/cgroup.subtree_control"; then
  oom_cg=/sys/fs/cgroup$own_cg/aep-bench-oom-$$
  mkdir "$oom_cg" && echo $((4 << 30)) >"$oom_cg/memory.max"
fi
val[oom_rss]="n/a"; val[oom_rssanon]="n/a"; val[oom_wake]="n/a"; val[oom_armed]=0
if [[ -n $oom_cg ]]; then
  declare -A oom_unshare oom_init
  for ((k = 0; k < idle_instances; k++)); do
    sh -c 'echo $$ > "$1/cgroup.procs" && shift && exec "$@"' sh "$oom_cg" \
      env AIRFLOW_ENTRYPOINT_LOG_LEVEL=debug \
      unshare --pid --fork --mount-proc --kill-child "$ours" -- sleep 1000 \
      </dev/null >/dev/null 2>"$work/oom.$k.err" &
    oom_unshare[$k]=$!
    bg_pids+=("$!")
  done
  for ((k = 0; k < idle_instances; k++)); do
    u=${oom_unshare[$k]}
    wait_until 10 started "$u" || die "armed: the sleep child did not appear within 10 s"
    oom_init[$k]=$(first_child "$u")
    init_pids+=("${oom_init[$k]}")
    leftover_pids+=("$(first_child "${oom_init[$k]}")")
    wait_until 10 grep -q "for OOM kills" "$work/oom.$k.err" && val[oom_armed]=$((${val[oom_armed]} + 1))
  done
  sleep 0.5
  : >"$work/oom.rss"; : >"$work/oom.rssanon"; oom_c0=0; oom_c1=0
  for ((k = 0; k < idle_instances; k++)); do
    p=${oom_init[$k]}
    status_field "$p" VmRSS >>"$work/oom.rss"
    status_field "$p" RssAnon >>"$work/oom.rssanon"
    oom_c0=$((oom_c0 + $(ctxt_total "$p")))
  done
  sleep "$idle_seconds"
  for ((k = 0; k < idle_instances; k++)); do oom_c1=$((oom_c1 + $(ctxt_total "${oom_init[$k]}"))); done
  val[oom_rss]=$(median <"$work/oom.rss")
  val[oom_rssanon]=$(median <"$work/oom.rssanon")
  val[oom_wake_delta]=$((oom_c1 - oom_c0))
  val[oom_wake]=$(awk -v d="${val[oom_wake_delta]}" -v n="$idle_instances" -v s="$idle_seconds" \
    'BEGIN { printf "%.1f", d / n / s }')
  stop_all
  bg_pids=(); init_pids=(); leftover_pids=()
  wait_until 10 bash -c "[[ ! -s $oom_cg/cgroup.procs ]]" || true
  rmdir "$oom_cg" 2>/dev/null || true
fi

# --- 2c. spawn overhead, not PID 1 -----------------------------------------------
log "c. spawn overhead: INIT -- /bin/true vs /bin/true (bench/spawn.c, round robin, ${spawn_rounds} rounds of ${spawn_runs} runs)"
# bench/spawn.c runs every init and a bare /bin/true in turn, one run each,
# round after round, and prints each command's median: drifting load on a
# shared VM lands on all of them alike. (hyperfine runs one command's runs
# back to back; here the bare /bin/true's median moved between 0.9 and
# 1.5 ms from one command's turn to the next.) The result is the median over
# rounds of each round's median (for overhead, of the per-round
# differences against that round's /bin/true).
gcc -O2 -Wall -o "$work/spawn" "$bench_dir/spawn.c"
: >"$work/true.ms"
spawn_cmds=(/bin/true)
for i in "${!names[@]}"; do
  build_cmd "$i" direct /bin/true
  spawn_cmds+=("${envs[$i]:+${envs[$i]} }${cmd[*]}")
done
for ((r = 0; r < spawn_rounds; r++)); do
  out="$work/spawn.round.$r"
  "$work/spawn" "$spawn_runs" "$spawn_warmup" "${spawn_cmds[@]}" >"$out" ||
    die "spawn round $r failed"
  t=$(awk 'NR == 1 { print $1 }' "$out")
  echo "$t" >>"$work/true.ms"
  for i in "${!names[@]}"; do
    m=$(awk -v line=$((i + 2)) 'NR == line { print $1 }' "$out")
    echo "$m" >>"$work/spawn.$i"
    awk -v m="$m" -v t="$t" 'BEGIN { print m - t }' >>"$work/overhead.$i"
  done
done
for i in "${!names[@]}"; do
  val[spawn,$i]=$(median <"$work/spawn.$i" | awk '{ printf "%.3f", $1 }')
  val[overhead,$i]=$(median <"$work/overhead.$i" | awk '{ printf "%.3f", $1 }')
done
true_ms=$(median <"$work/true.ms" | awk '{ printf "%.3f", $1 }')

# --- 2d. reaping orphaned zombies as PID 1 -------------------------------------
log "d. reaping ${reap_n} orphaned zombies as PID 1 (${reap_runs} runs each, round robin)"
gcc -O2 -Wall -o "$work/zombies" "$bench_dir/zombies.c"

# One run: prints "TOTAL_MS REAP_MS"; fails if the run failed or left zombies.
reap_once() {
  local i=$1 out rc t0 t1
  build_cmd "$i" pid1 "$work/zombies" "$reap_n" 30
  build_env "$i"
  t0=$(date +%s%N)
  set +e
  out=$(timeout -s KILL 60 "${with_env[@]}" unshare --pid --fork --mount-proc --kill-child "${cmd[@]}" </dev/null 2>"$work/reap.err")
  rc=$?
  set -e
  t1=$(date +%s%N)
  if ((rc != 0)); then
    log "${names[$i]}: run exited $rc: $(tr '\n' ' ' <"$work/reap.err")"
    return 1
  fi
  # The namespace is gone with its init; nothing of it may be left behind.
  if ! wait_until 10 bash -c "! pgrep -x zombies >/dev/null"; then
    log "${names[$i]}: zombies processes left on the host after the run"
    return 1
  fi
  local reap_ms=${out#*reap_ms=}; reap_ms=${reap_ms%% *}
  echo "$(( (t1 - t0) / 1000 )) $reap_ms" | awk '{ printf "%.1f %s\n", $1 / 1000, $2 }'
}

for i in "${!names[@]}"; do
  : >"$work/reap.$i"
  reap_once "$i" >/dev/null || true # warm-up: page cache, first fork storm
done
for ((r = 1; r <= reap_runs; r++)); do
  for i in "${!names[@]}"; do
    if res=$(reap_once "$i"); then echo "$res" >>"$work/reap.$i"; fi
  done
done
for i in "${!names[@]}"; do
  if [[ $(wc -l <"$work/reap.$i") -eq $reap_runs ]]; then
    val[reap,$i]=$(awk '{ print $1 }' "$work/reap.$i" | median | awk '{ printf "%.1f", $1 }')
    val[reapphase,$i]=$(awk '{ print $2 }' "$work/reap.$i" | median | awk '{ printf "%.1f", $1 }')
  else
    val[reap,$i]=FAILED
    val[reapphase,$i]=FAILED
  fi
done

# --- 3. report -------------------------------------------------------------------
ratio() { # ours / peer, or n/a
  awk -v a="$1" -v b="$2" 'BEGIN {
    if (a !~ /^-?[0-9.]+$/ || b !~ /^-?[0-9.]+$/) { print "n/a"; exit }
    if (b + 0 == 0) { print (a + 0 == 0) ? "= (0/0)" : "n/a (÷0)"; exit }
    printf "%.2f×\n", a / b }'
}
le() { awk -v a="$1" -v b="$2" 'BEGIN { exit !(a ~ /^-?[0-9.]+$/ && b ~ /^-?[0-9.]+$/ && a + 0 <= b + 0) }'; }
pct() { awk -v a="$1" -v b="$2" 'BEGIN { if (b + 0 == 0) print "n/a"; else printf "%+.1f%%", (a - b) / b * 100 }'; }
# noise_note A B PCT: a remark when two wall-clock medians are closer than
# PCT per cent, about what repeated runs of this script vary by on a 2-core VM
# (spawn medians ~3 %, the ~20 ms reap phase ~10 %).
noise_note() {
  awk -v a="$1" -v b="$2" -v p="$3" 'BEGIN {
    if (a !~ /^[0-9.]+$/ || b !~ /^[0-9.]+$/ || b + 0 == 0) exit
    d = (a - b) / b; if (d < 0) d = -d
    if (d * 100 < p) printf "; the two differ by %.1f%%, within run-to-run noise (~%d%%), so this verdict can flip between runs", d * 100, p }'
}

row() { # label key
  local label=$1 key=$2 line i
  line="| $label |"
  for i in "${!names[@]}"; do line+=" ${val[$key,$i]} |"; done
  for i in "${peers[@]}"; do line+=" $(ratio "${val[$key,0]}" "${val[$key,$i]}") |"; done
  echo "$line"
}

cpu=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo)
versions=()
declare -A seen_bin
for i in "${!names[@]}"; do
  [[ -z ${seen_bin[${bins[$i]}]+set} ]] || continue
  seen_bin[${bins[$i]}]=1
  v=$("${bins[$i]}" --version 2>&1 | head -n1 || true)
  versions+=("${names[$i]}: \`$v\`")
done
commit=$(git -C "$repo_dir" rev-parse --short HEAD 2>/dev/null || echo unknown)
if [[ -n $(git -C "$repo_dir" status --porcelain --untracked-files=no 2>/dev/null) ]]; then
  commit+=" (work tree has uncommitted changes)"
fi

times >"$work/times"
phase_busy1=$(busy_jiffies); phase_own1=$(own_cpu_s); phase_t1=$(date +%s%N)
others_pct=$(awk -v b0="$phase_busy0" -v b1="$phase_busy1" -v o0="$phase_own0" -v o1="$phase_own1" \
  -v t0="$phase_t0" -v t1="$phase_t1" -v n="$(nproc)" -v hz="$(getconf CLK_TCK)" 'BEGIN {
    others = (b1 - b0) / hz - (o1 - o0); if (others < 0) others = 0
    printf "%d", others / ((t1 - t0) / 1e9 * n) * 100 }')
quiet_note+="; other processes used ${others_pct}% of the CPUs during the timed phases"
((others_pct <= 10)) || quiet_note+=" — **too busy: the wall-clock rows (spawn, reap) of this run are unreliable; re-run on a quiet machine**"
log "other processes used ${others_pct}% of the CPUs during the timed phases"

report="$work/RESULTS.md"
{
  echo "# Benchmark results"
  echo
  echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
  echo "- kernel: $(uname -sr)"
  echo "- CPU: ${cpu:-unknown} ($(nproc) cores online)"
  echo "- airflow-entrypoint binary: \`$ours\`, sha256 $(sha256sum "$ours" | cut -c1-16)…, modified $(date -u -r "$ours" '+%Y-%m-%d %H:%M UTC'); repository HEAD at run time: $commit"
  joined=$(IFS=';'; echo "${versions[*]}")
  echo "- versions: ${joined//;/; }"
  echo "- environments: every command runs with \`AIRFLOW_ENTRYPOINT_LOG_LEVEL=error AIRFLOW_ENTRYPOINT_RUN_AS_ROOT=true\` (only ours reads them; the peers do no privilege drop either), except that column \`${names[5]}\` has \`${envs[5]}\` (the default root start-up: user lookup, drop, no_new_privs)"
  echo "- load: ${quiet_note}; load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "- produced by \`bash bench/run.sh\`; lower is better everywhere; ratios are ours ÷ peer (< 1 means we are ahead)"
  echo
  head="| metric |"; sep="|---|"
  for n in "${names[@]}"; do head+=" $n |"; sep+="---:|"; done
  for i in "${peers[@]}"; do head+=" ours/${names[$i]} |"; sep+="---:|"; done
  echo "$head"
  echo "$sep"
  row "binary size, stripped (bytes)" size
  # Ours built for aarch64 (the peers are x86-64 packages here), with its
  # ratio to our x86-64 build.
  line="| … our aarch64 build, stripped (bytes) | $aarch64_size |"
  for i in "${!names[@]}"; do
    ((i == 0)) && continue
    if [[ ${bins[$i]} == "$ours" ]]; then line+=" $aarch64_size |"; else line+=" — |"; fi
  done
  line+=" aarch64 ÷ x86-64: $(ratio "$aarch64_size" "${val[size,0]}") | | |"
  echo "$line"
  line="| linkage |"
  for i in "${!names[@]}"; do line+=" ${val[link,$i]} |"; done
  for i in "${peers[@]}"; do line+=" |"; done
  echo "$line"
  row "idle VmRSS as PID 1 (kB; median of ${idle_instances} instances)" rss
  line="| … range over the instances (kB) |"
  for i in "${!names[@]}"; do line+=" ${val[rssrange,$i]} |"; done
  for i in "${peers[@]}"; do line+=" |"; done
  echo "$line"
  row "idle RssAnon as PID 1 (kB; median)" rssanon
  row "spawn: median wall time of \`INIT -- /bin/true\` (ms; median of ${spawn_rounds} rounds × ${spawn_runs} runs)" spawn
  row "spawn overhead over bare \`/bin/true\` (${true_ms} ms), ms" overhead
  row "reap ${reap_n} orphans as PID 1: median total wall time of ${reap_runs} runs (ms)" reap
  row "… of which: spawner exit → last orphan reaped, median (ms)" reapphase
  row "idle wake-ups per second as PID 1 (context switches in ${idle_seconds} s, per instance, ÷ ${idle_seconds})" wake
  echo
  echo "**OOM watch armed** (ours as PID 1 in a memory cgroup with a 4 GiB limit, ${idle_instances} instances, armed in ${val[oom_armed]}): idle VmRSS ${val[oom_rss]} kB (unarmed: ${val[rss,0]} kB), RssAnon ${val[oom_rssanon]} kB (unarmed: ${val[rssanon,0]} kB), wake-ups per second ${val[oom_wake]} (unarmed: ${val[wake,0]})."
  echo
  echo "## Targets"
  echo
  t=tini-static
  if le "${val[rss,0]}" "${val[rss,1]}"; then v=PASS; else v=FAIL; fi
  rss_note=""
  lo=${val[rssrange,0]%–*}; hi=${val[rssrange,0]#*–}
  if ((lo <= ${val[rss,1]%.*} && ${val[rss,1]%.*} <= hi)); then
    rss_note="; tini-static's median lies inside our range (address-space randomisation, see bench/README.md), so this verdict can flip between runs"
  fi
  echo "- $v — idle RSS ≤ tini-static's: ${val[rss,0]} kB vs ${val[rss,1]} kB ($(pct "${val[rss,0]}" "${val[rss,1]}")), medians; ranges ${val[rssrange,0]} vs ${val[rssrange,1]} kB${rss_note}"
  if le "${val[overhead,0]}" "${val[overhead,3]}"; then v=PASS; else v=FAIL; fi
  echo "- $v — spawn overhead ≤ catatonit's: ${val[overhead,0]} ms vs ${val[overhead,3]} ms ($(pct "${val[overhead,0]}" "${val[overhead,3]}")); total ${val[spawn,0]} ms vs ${val[spawn,3]} ms$(noise_note "${val[spawn,0]}" "${val[spawn,3]}" 3)"
  if [[ ${val[wake_delta,0]} == 0 ]]; then v=PASS; else v=FAIL; fi
  echo "- $v — 0 idle wake-ups: ${val[wake_delta,0]} context switches in ${idle_seconds} s over ${idle_instances} instances (tini-static: ${val[wake_delta,1]})"
  # Judged on the reap phase, the init's own work: the total is mostly the
  # 10 000 forks, which are the same for every init but noisy.
  if le "${val[reapphase,0]}" "${val[reapphase,1]}"; then v=PASS; else v=FAIL; fi
  echo "- $v — reaping no slower than $t (reap phase): ${val[reapphase,0]} ms vs ${val[reapphase,1]} ms ($(pct "${val[reapphase,0]}" "${val[reapphase,1]}"))$(noise_note "${val[reapphase,0]}" "${val[reapphase,1]}" 10); whole run ${val[reap,0]} ms vs ${val[reap,1]} ms ($(pct "${val[reap,0]}" "${val[reap,1]}"))"
  echo
  echo "Spawn and reap times are wall-clock medians on a shared machine: differences of a few per cent are within noise; see bench/README.md."
} >"$report"

cp "$report" "$bench_dir/RESULTS.md"
cat "$report"
log "wrote $bench_dir/RESULTS.md"
