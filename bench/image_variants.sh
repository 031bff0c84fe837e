#!/usr/bin/env bash
# Benchmark: the image variants (issue 27), in one run on one Docker Engine:
#   - each image's size, uncompressed (what `docker images` shows) and
#     compressed (`docker save | gzip`, the default level, about what a
#     registry stores and a pull downloads);
#   - the time from `docker run` to a healthy scheduler (the image's own
#     HEALTHCHECK, run every 0.5 s) against a PostgreSQL container whose
#     database is already migrated, for each variant with Airflow: the
#     entrypoint's native check beside the same image started the way
#     images without it do (a bash loop on `airflow db check`, then the
#     scheduler; `airflow jobs check` as the health check);
#   - the upgraded deployment's time from its first 3.3.2 container to
#     every component healthy, as scripts/docker-test's upgrade phase
#     reports it (one run of that phase).
# Prints a markdown table on stdout and writes it to bench/IMAGE_VARIANTS.md;
# progress goes to stderr.
#
#   bash bench/image_variants.sh
#
# Needs root and a running Docker Engine; builds the images it needs with
# scripts/docker-test (images, onbuild, certified and upgrade phases; about
# 20 minutes when nothing is cached). Tunables (env): BENCH_START_RUNS (3).
# Every container and network it starts carries the label
# airflow-entrypoint-bench=PID and is removed on exit.
set -euo pipefail

bench_dir=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo_dir=$(cd "$bench_dir/.." && pwd)
runs=${BENCH_START_RUNS:-3}
label="airflow-entrypoint-bench=$$"

log() { printf '[bench] %s\n' "$*" >&2; }
die() { printf '[bench] error: %s\n' "$*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root (the Docker socket)"
docker info >/dev/null 2>&1 || die "no Docker Engine answers"

work=$(mktemp -d /tmp/airflow-entrypoint-bench-images.XXXXXX)
cleanup() {
  docker ps -aq --filter "label=$label" | xargs -r docker rm -f >/dev/null 2>&1 || true
  docker network ls -q --filter "label=$label" | xargs -r docker network rm >/dev/null 2>&1 || true
  rm -rf "$work"
}
trap cleanup EXIT

# The images: docker-test builds (or finds) them and prints the upgrade
# figure; its tags carry a hash of their inputs, the newest is this tree's.
log "scripts/docker-test images onbuild certified upgrade (builds what is not cached)"
"$repo_dir/scripts/docker-test" images onbuild certified upgrade >"$work/docker-test.out" 2>"$work/docker-test.err" \
  || { tail -n 30 "$work/docker-test.err" >&2; grep FAIL "$work/docker-test.out" >&2; die "docker-test failed"; }
newest() { docker images --format '{{.Repository}}:{{.Tag}}' "$1" | grep -F "$1:$2-" | head -n 1; }
lean=$(newest airflow-entrypoint-test lean)
full=$(newest airflow-entrypoint-test full)
onbuild=$(newest airflow-entrypoint-test onbuild)
certified=$(newest airflow-entrypoint-test certified)
airflow2=$(newest airflow-entrypoint-test airflow2)
postgres=$(docker images --format '{{.Repository}}:{{.Tag}}' airflow-entrypoint-test-postgres | head -n 1)
for i in "$lean" "$full" "$onbuild" "$certified" "$airflow2" "$postgres"; do
  [[ -n $i ]] || die "an image is missing (docker images airflow-entrypoint-test)"
done
upgrade_ms=$(sed -n 's/.*all healthy \([0-9]*\) ms after the first new container.*/\1/p' "$work/docker-test.out")
[[ -n $upgrade_ms ]] || die "docker-test's upgrade phase printed no time"

# Sizes.
mib() { awk -v b="$1" 'BEGIN { printf "%.0f MiB", b / 1048576 }'; }
size_row() { # NAME IMAGE
  local raw packed
  raw=$(docker image inspect --format '{{.Size}}' "$2")
  log "docker save $2 | gzip"
  packed=$(docker save "$2" | gzip | wc -c)
  printf '| %s | %s | %s |\n' "$1" "$(mib "$raw")" "$(mib "$packed")"
}

# Time to a healthy scheduler.
net="bench-images-$$"
docker network create --label "$label" "$net" >/dev/null
docker run -d --label "$label" --network "$net" --network-alias pg --name "bench-pg-$$" \
  -e POSTGRES_USER=airflow -e POSTGRES_PASSWORD=airflow -e POSTGRES_DB=airflow "$postgres" >/dev/null
deadline=$((SECONDS + 60))
until docker exec "bench-pg-$$" psql -U airflow -tAc 'select 1' >/dev/null 2>&1; do
  [[ $SECONDS -lt $deadline ]] || die "PostgreSQL did not start"; sleep 0.2
done
docker exec "bench-pg-$$" psql -U airflow -tAc 'create database airflow2' >/dev/null
common=(--label "$label" --network "$net" -e AIRFLOW__CORE__EXECUTOR=LocalExecutor
  -e AIRFLOW__CORE__LOAD_EXAMPLES=False -e AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK=True)
db3=(-e AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg2://airflow:airflow@pg:5432/airflow)
db2=(-e AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql+psycopg2://airflow:airflow@pg:5432/airflow2)
log "migrating the 3.3.2 and 2.11.2 databases once"
docker run --rm "${common[@]}" "${db3[@]}" -e _AIRFLOW_DB_MIGRATE=true "$full" airflow version >/dev/null 2>&1 || die "3.3.2 migrate failed"
docker run --rm "${common[@]}" "${db2[@]}" -e _AIRFLOW_DB_MIGRATE=true "$airflow2" airflow version >/dev/null 2>&1 || die "2.11.2 migrate failed"

# start_ms DOCKER-RUN-ARGS...: ms from `docker run` to healthy.
start_ms() {
  local name="bench-sched-$$" t0 status deadline
  t0=$(date +%s%N)
  docker run -d --name "$name" "${common[@]}" --health-interval 500ms --health-timeout 20s \
    --health-start-period 0s --health-retries 1000 "$@" >/dev/null
  deadline=$((SECONDS + 300))
  while :; do
    status=$(docker inspect --format '{{.State.Health.Status}} {{.State.Running}}' "$name" 2>/dev/null || true)
    case "$status" in
      "healthy true") break ;;
      *false) docker logs --tail 20 "$name" >&2; docker rm -f "$name" >/dev/null; die "$*: the scheduler exited" ;;
    esac
    [[ $SECONDS -lt $deadline ]] || { docker rm -f "$name" >/dev/null; die "$*: not healthy in 300 s"; }
    sleep 0.1
  done
  echo $(( ($(date +%s%N) - t0) / 1000000 ))
  docker rm -f "$name" >/dev/null
}
median() { sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
start_median() { # LABEL DOCKER-RUN-ARGS...
  local what=$1 i
  shift
  for ((i = 0; i < runs; i++)); do start_ms "$@"; done >"$work/times"
  log "$what: $(tr '\n' ' ' <"$work/times")ms"
  median <"$work/times"
}
# What images without the entrypoint do: wait with Python, check with Python.
# (The venv's own `airflow`: the image's PATH has the entrypoint's link first.)
python_way=(--user 5000:0 --entrypoint bash -e AIRFLOW_HOME=/usr/local/airflow
  --health-cmd '/opt/airflow-venv/bin/airflow jobs check --job-type SchedulerJob --local')
python_cmd=(-c 'until /opt/airflow-venv/bin/airflow db check >/dev/null 2>&1; do sleep 1; done; exec /opt/airflow-venv/bin/airflow scheduler')

log "time to a healthy scheduler, $runs runs each"
t_full=$(start_median full "${db3[@]}" "$full" scheduler)
t_full_py=$(start_median "full, the Python way" "${db3[@]}" "${python_way[@]}" "$full" "${python_cmd[@]}")
t_cert=$(start_median certified "${db3[@]}" "$certified" scheduler)
t_cert_py=$(start_median "certified, the Python way" "${db3[@]}" "${python_way[@]}" "$certified" "${python_cmd[@]}")
t_a2=$(start_median airflow2 "${db2[@]}" "$airflow2" scheduler)
docker rm -f "bench-pg-$$" >/dev/null

secs() { awk -v m="$1" 'BEGIN { printf "%.1f s", m / 1000 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f×", a / b }'; }
{
  echo "| image variant | uncompressed | compressed (docker save \| gzip) |"
  echo "|---|---|---|"
  size_row "lean (no Airflow; the entrypoint on the base)" "$lean"
  size_row "full (Airflow 3.3.2: celery, postgres, mysql, redis)" "$full"
  size_row "full -onbuild (the same layers and its ONBUILD triggers)" "$onbuild"
  size_row "certified (the 15 providers, statsd, async)" "$certified"
  size_row "full, Airflow 2.11.2 (the upgrade test's old image)" "$airflow2"
  echo
  echo "| image variant | docker run to a healthy scheduler: the entrypoint | the Python way (bash loop on \`airflow db check\`, \`airflow jobs check\`) | faster |"
  echo "|---|---|---|---|"
  echo "| full | $(secs "$t_full") | $(secs "$t_full_py") | $(ratio "$t_full_py" "$t_full") |"
  echo "| certified | $(secs "$t_cert") | $(secs "$t_cert_py") | $(ratio "$t_cert_py" "$t_cert") |"
  echo "| full, Airflow 2.11.2 | $(secs "$t_a2") | | |"
  echo
  echo "| upgrade 2.11.2 → 3.3.2 (scripts/docker-test upgrade) | |"
  echo "|---|---|"
  echo "| first 3.3.2 container to migrate, scheduler, api-server and dag-processor all healthy | $(secs "$upgrade_ms") |"
  echo
  echo "Medians of $runs runs each, on $(nproc) cores; the health check runs every 0.5 s (the upgrade's every 1 s), so a time is up to that late. The database is migrated before the timed runs, so they time the wait, the scheduler's start and its first heartbeat. The onbuild image runs as the full image does (its triggers fire only in a user's build). The upgrade figure includes the 3.3.2 migration of the 2.11.2 schema, which the other components wait out. $(date -u +%Y-%m-%d), Docker $(docker version --format '{{.Server.Version}}')."
} >"$work/table.md"
cat "$work/table.md"
cp "$work/table.md" "$bench_dir/IMAGE_VARIANTS.md"
