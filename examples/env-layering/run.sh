#!/usr/bin/env bash
# The three layers of the environment, shown with `airflow-entrypoint
# --print-env` and the binary built from this checkout; no container needed.
#
#   examples/env-layering/run.sh
#
# Lowest first, a higher layer winning key by key:
#   1. image defaults   every *.env in AIRFLOW_ENTRYPOINT_ENV_DIR (the image's
#                       /etc/airflow-entrypoint/env.d; here the repo's config/env.d)
#   2. deployment files AIRFLOW_ENTRYPOINT_ENV_FILES, `:`-separated, in order
#                       (here deployment.env, then secrets.env)
#   3. the container's environment (here: variables set on the command line)
# --print-env drops no privileges, runs nothing and waits for nothing.
set -euo pipefail
exec </dev/null
here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)

bin=${AIRFLOW_ENTRYPOINT_BIN:-}
if [ -z "$bin" ]; then
  for candidate in target/x86_64-unknown-linux-musl/release target/release target/debug; do
    if [ -x "$repo/$candidate/airflow-entrypoint" ]; then bin="$repo/$candidate/airflow-entrypoint"; break; fi
  done
fi
if [ -z "$bin" ]; then
  echo "run.sh: no built binary; building it (cargo build)" >&2
  (cd "$repo" && cargo build --quiet)
  bin="$repo/target/debug/airflow-entrypoint"
fi

# A clean environment, so that this machine's own AIRFLOW_* variables don't
# show up as the container's layer.
clean=(env -i "PATH=$PATH" "HOME=${HOME:-/root}")
defaults="$repo/config/env.d"

step() { printf '\n== %s\n$ %s\n' "$1" "$2"; }

step "1. image defaults only" \
  "airflow-entrypoint --env-dir config/env.d --print-env"
"${clean[@]}" "$bin" --env-dir "$defaults" --print-env

step "2. + deployment files (a ConfigMap, then a Secret)" \
  "AIRFLOW_ENTRYPOINT_ENV_FILES=deployment.env:secrets.env airflow-entrypoint --env-dir config/env.d --print-env"
"${clean[@]}" AIRFLOW_ENTRYPOINT_ENV_FILES="$here/deployment.env:$here/secrets.env" \
  "$bin" --env-dir "$defaults" --print-env

step "3. + the container's environment (docker run -e, Kubernetes env:)" \
  "AIRFLOW_ENV=production AIRFLOW__CORE__PARALLELISM=256 AIRFLOW_ENTRYPOINT_ENV_FILES=... airflow-entrypoint --env-dir config/env.d --print-env"
"${clean[@]}" AIRFLOW_ENTRYPOINT_ENV_FILES="$here/deployment.env:$here/secrets.env" \
  AIRFLOW_ENV=production AIRFLOW__CORE__PARALLELISM=256 \
  "$bin" --env-dir "$defaults" --print-env
