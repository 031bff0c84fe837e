# An Apache Airflow image whose PID 1 is airflow-entrypoint: no bash
# entrypoint script, no tini/dumb-init, no gosu, no wait loop.
#
#   docker build -t airflow-entrypoint-airflow .
#
# Build arguments (all optional):
#   BINARY_SOURCE     source   compile the entrypoint in the Rust stage
#                     prebuilt copy ENTRYPOINT_BINARY from the build context
#                              instead (no Rust image, no crates.io)
#   ENTRYPOINT_BINARY the static binary for BINARY_SOURCE=prebuilt, a path in
#                     the build context (default: the musl release build for
#                     the target architecture, x86_64 or aarch64)
#   TARGETARCH        amd64 or arm64: the architecture of the image. BuildKit
#                     (docker build, docker buildx --platform) and buildah set
#                     it from the platform; other builders take it as a build
#                     argument. Unset, the Rust stage builds for its own
#                     machine and the prebuilt stage takes the x86_64 binary.
#   RUST_IMAGE        the image of the Rust stage
#   BASE_IMAGE        the Debian-based Python image Airflow runs on
#   INSTALL_AIRFLOW   true: install Apache Airflow; false: the lean variant,
#                     identical but without Python packages (container tests)
#   AIRFLOW_VERSION, AIRFLOW_EXTRAS, PIP_VERSION
#                     what is installed, with config/constraints-AIRFLOW_VERSION-
#                     pyX.Y.txt as pip constraints (X.Y: BASE_IMAGE's Python)
#   AIRFLOW_VARIANT   full (default), or certified: also CERTIFIED_EXTRAS,
#                     the Astronomer Certified image's providers and extras,
#                     with config/constraints-AIRFLOW_VERSION-pyX.Y-certified.txt
#   ENTRYPOINT_VERSION the version the image's labels give the entrypoint
#   ASTRONOMER_USER, ASTRONOMER_UID
#                     the service user the entrypoint drops root to (GID 0)
#
# With no registry at hand, any local image works as BASE_IMAGE and a
# prebuilt binary replaces the Rust stage, e.g.
#   cargo build --release --target x86_64-unknown-linux-musl
#   buildah bud --format docker --build-arg BINARY_SOURCE=prebuilt \
#     --build-arg BASE_IMAGE=localhost/my-python:3.11 -t airflow .
# (--format docker: the OCI image format has no HEALTHCHECK.)
#
# Docker: build with BuildKit (buildx, or DOCKER_BUILDKIT=1 with a Docker
# 20.10-22.x client). The legacy builder builds every stage, so it pulls
# RUST_IMAGE even for BINARY_SOURCE=prebuilt. No `# syntax=` line on
# purpose: it would make BuildKit pull its Dockerfile frontend from Docker
# Hub first, which breaks builds without a registry; nothing here needs more
# than the frontend built into BuildKit.
#
# Only the binary, to `COPY --from=` into another Airflow image:
#   docker build --target entrypoint -t airflow-entrypoint:0.1.0 .
#
# Both architectures in one image (see docs/deployment.md "Other architectures"):
#   docker buildx build --platform linux/amd64,linux/arm64 -t REGISTRY/airflow:TAG --push .

ARG RUST_IMAGE=docker.io/library/rust:1-slim-bookworm
ARG BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
ARG BINARY_SOURCE=source
ARG INSTALL_AIRFLOW=true
# Declared here for the FROM lines below; the builder gives it its value.
ARG TARGETARCH

# ---------------------------------------------------------------------------
# The entrypoint, compiled: a static musl binary (no libc needed at run time)
# for TARGETARCH. The stage runs on the build machine's own platform: for
# another architecture it cross-compiles (Debian's cross gcc compiles ring's
# C and assembly and links; the Rust target brings its own musl) instead of
# running the compiler under emulation.
FROM --platform=${BUILDPLATFORM} ${RUST_IMAGE} AS entrypoint-source
ARG TARGETARCH
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
# The Rust target into /etc/entrypoint-target; the C toolchain for it (none
# natively: musl-tools) as variables into /etc/entrypoint-target.env.
RUN arch="${TARGETARCH:-$(dpkg --print-architecture)}" \
 && case "$arch" in \
      amd64) target=x86_64-unknown-linux-musl gnu=x86_64-linux-gnu ;; \
      arm64) target=aarch64-unknown-linux-musl gnu=aarch64-linux-gnu ;; \
      *) echo "TARGETARCH=$arch: this Dockerfile builds for amd64 and arm64 only" >&2; exit 1 ;; \
    esac \
 && var="${target//-/_}" \
 && if [ "$arch" = "$(dpkg --print-architecture)" ]; then \
      packages=(musl-tools); : >/etc/entrypoint-target.env; \
    else \
      packages=("gcc-${gnu//_/-}" "libc6-dev-$arch-cross"); \
      printf 'export %s=%s\n' "CC_$var" "$gnu-gcc" "AR_$var" "$gnu-ar" \
        "CARGO_TARGET_${var^^}_LINKER" "$gnu-gcc" >/etc/entrypoint-target.env; \
    fi \
 && echo "$target" >/etc/entrypoint-target \
 && apt-get update \
 && apt-get install -y --no-install-recommends "${packages[@]}" \
 && rm -rf /var/lib/apt/lists/* \
 && rustup target add "$target"
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY build.rs ./
COPY src ./src
# shellcheck source=/dev/null
RUN . /etc/entrypoint-target.env \
 && target="$(cat /etc/entrypoint-target)" \
 && cargo build --release --locked --target "$target" \
 && install -m 0755 "target/$target/release/airflow-entrypoint" /airflow-entrypoint \
 && if [ "$(uname -m)" = "${target%%-*}" ]; then /airflow-entrypoint --version; fi

# The entrypoint, prebuilt: copied from the build context, one stage per
# architecture so that each has its own default.
FROM scratch AS entrypoint-prebuilt-amd64
ARG ENTRYPOINT_BINARY=target/x86_64-unknown-linux-musl/release/airflow-entrypoint
COPY ${ENTRYPOINT_BINARY} /airflow-entrypoint

FROM scratch AS entrypoint-prebuilt-arm64
ARG ENTRYPOINT_BINARY=target/aarch64-unknown-linux-musl/release/airflow-entrypoint
COPY ${ENTRYPOINT_BINARY} /airflow-entrypoint

# (`:-amd64`: for a builder that sets no TARGETARCH; buildah 1.28 also needs
# the default spelled out here, see below.)
FROM entrypoint-prebuilt-${TARGETARCH:-amd64} AS entrypoint-prebuilt

# The one chosen by BINARY_SOURCE; the other stage is never built. The
# `:-source` repeats the default on purpose: buildah 1.28 (Debian 12's
# podman 4.3) picks the stages to build before it applies ARG defaults, and
# without it would skip the stage this one needs.
FROM entrypoint-${BINARY_SOURCE:-source} AS entrypoint

# ---------------------------------------------------------------------------
# Apache Airflow in a virtualenv. The compilers and headers (mysqlclient has
# no Linux wheel) stay in this stage; only the venv moves on.
FROM ${BASE_IMAGE} AS airflow-build
ARG AIRFLOW_VERSION=3.3.2
ARG AIRFLOW_EXTRAS=celery,postgres,mysql,redis,fab
# certified: also the providers and extras of the Astronomer Certified
# image that exist for Airflow 3 (see docs/deployment.md "The certified
# variant"), with a constraints file of their own.
ARG AIRFLOW_VARIANT=full
ARG CERTIFIED_EXTRAS=amazon,microsoft-azure,cncf-kubernetes,elasticsearch,ftp,google,http,imap,slack,sqlite,ssh,statsd,async
ARG PIP_VERSION=26.3
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      build-essential default-libmysqlclient-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
COPY config/constraints-*.txt /tmp/constraints/
RUN python="$(python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
 && case "${AIRFLOW_VARIANT}" in \
      full) extras="${AIRFLOW_EXTRAS}" suffix="" ;; \
      certified) extras="${AIRFLOW_EXTRAS},${CERTIFIED_EXTRAS}" suffix="-certified" ;; \
      *) echo "AIRFLOW_VARIANT=${AIRFLOW_VARIANT}: use full or certified" >&2; exit 1 ;; \
    esac \
 && constraints="/tmp/constraints/constraints-${AIRFLOW_VERSION}-py${python}${suffix}.txt" \
 && if [ ! -f "$constraints" ]; then \
      echo "no constraints for Airflow ${AIRFLOW_VERSION} on Python ${python}:" \
           "generate config/$(basename "$constraints") as its header says" >&2; \
      exit 1; \
    fi \
 && python3 -m venv /opt/airflow-venv \
 && /opt/airflow-venv/bin/pip install --no-cache-dir "pip==${PIP_VERSION}" \
 && /opt/airflow-venv/bin/pip install --no-cache-dir --constraint "$constraints" \
      "apache-airflow[${extras}]==${AIRFLOW_VERSION}" \
 && /opt/airflow-venv/bin/pip check \
 && /opt/airflow-venv/bin/airflow version \
 && cp "$constraints" /opt/airflow-venv/airflow-constraints.txt

# The runtime with Airflow: the venv and the shared libraries it links.
FROM ${BASE_IMAGE} AS runtime-airflow-true
ARG ASTRONOMER_UID=5000
RUN apt-get update \
 && apt-get install -y --no-install-recommends libmariadb3 \
 && rm -rf /var/lib/apt/lists/*
# Owned by the service user, as the official image's user site is, so that
# _PIP_ADDITIONAL_REQUIREMENTS (development only) can install into it.
COPY --from=airflow-build --chown=${ASTRONOMER_UID}:0 /opt/airflow-venv /opt/airflow-venv

# The lean runtime: the base image as it is (no Python packages at all).
FROM ${BASE_IMAGE} AS runtime-airflow-false

# ---------------------------------------------------------------------------
# The image. Everything from here on is the same for both runtimes
# (`:-true`: the default again, for buildah, as above).
FROM runtime-airflow-${INSTALL_AIRFLOW:-true} AS image
ARG ASTRONOMER_USER=astro
ARG ASTRONOMER_UID=5000
ARG AIRFLOW_VERSION=3.3.2
ARG AIRFLOW_VARIANT=full
ARG INSTALL_AIRFLOW=true
# Cargo.toml's version (tests/docs.rs checks that they agree).
ARG ENTRYPOINT_VERSION=0.1.0

LABEL org.opencontainers.image.title="Apache Airflow with airflow-entrypoint" \
      org.opencontainers.image.description="Apache Airflow ${AIRFLOW_VERSION}; PID 1 is airflow-entrypoint" \
      org.opencontainers.image.licenses="Apache-2.0" \
      io.github.airflow-entrypoint.airflow-version="${AIRFLOW_VERSION}" \
      io.github.airflow-entrypoint.variant="${AIRFLOW_VARIANT}" \
      io.github.airflow-entrypoint.install-airflow="${INSTALL_AIRFLOW}" \
      io.github.airflow-entrypoint.entrypoint-version="${ENTRYPOINT_VERSION}"

# The multi-call links first (see below), then the venv.
ENV PATH=/usr/local/lib/airflow-entrypoint/bin:/opt/airflow-venv/bin:${PATH}

# curl: the official image's documented health checks call it (the
# quick-start docker-compose.yaml's api-server and scheduler).
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl ca-certificates \
 && rm -rf /var/lib/apt/lists/*

# Image defaults: the lowest layer of the environment. The build args go into
# a later file so that the entrypoint looks for the user this image has.
COPY config/env.d/ /etc/airflow-entrypoint/env.d/

# The service user (GID 0, OpenShift style) and AIRFLOW_HOME. /etc/passwd is
# group-writable for GID 0 so that an arbitrary non-root UID (OpenShift,
# runAsUser) gets a passwd entry from the entrypoint at start-up.
RUN useradd --no-log-init --uid "${ASTRONOMER_UID}" --gid 0 \
      --home-dir /usr/local/airflow --no-create-home --shell /bin/bash \
      "${ASTRONOMER_USER}" \
 && mkdir -p /usr/local/airflow/dags /usr/local/airflow/logs /usr/local/airflow/plugins \
      /usr/local/airflow/config \
 && ln -s /usr/local/airflow /opt/airflow \
 && chown -R "${ASTRONOMER_UID}:0" /usr/local/airflow \
 && chmod -R g=u /usr/local/airflow \
 && chgrp 0 /etc/passwd \
 && chmod g=u /etc/passwd \
 && printf '%s\n' \
      "# Written by the Dockerfile from its build args (ASTRONOMER_USER, ASTRONOMER_UID)." \
      "ASTRONOMER_USER=${ASTRONOMER_USER}" \
      "ASTRONOMER_UID=${ASTRONOMER_UID}" \
      > /etc/airflow-entrypoint/env.d/10-image-user.env \
 && chmod -R a+rX /etc/airflow-entrypoint

COPY --from=entrypoint /airflow-entrypoint /usr/local/bin/airflow-entrypoint
# Runs on the image's platform: a binary for another architecture (a wrong
# ENTRYPOINT_BINARY or TARGETARCH) fails the build here, not at `docker run`.
RUN ["/usr/local/bin/airflow-entrypoint", "--version"]
# The paths the official image's and Astronomer's callers use:
# - /entrypoint: this binary (the quick-start's init script and the Helm
#   chart's probes call `/entrypoint airflow ...`);
# - /clean-logs: the chart's log groomer runs `bash /clean-logs`, so it is a
#   shell script, which execs the native log cleanup (Astronomer's charts
#   call it /usr/local/bin/clean-airflow-logs);
# - `airflow` and `celery` ahead of the venv on PATH: a health check that
#   calls them directly is answered natively when it is a probe form the
#   binary knows; any other command is exec'd at once to the real program
#   (AIRFLOW_ENTRYPOINT_NATIVE_CHECKS=false: always);
# - /opt/airflow (the official AIRFLOW_HOME) is /usr/local/airflow, so that
#   dags/, logs/, config/ and plugins/ mounted under either are one tree.
RUN ln -s /usr/local/bin/airflow-entrypoint /entrypoint \
 && mkdir -p /usr/local/lib/airflow-entrypoint/bin \
 && ln -s /usr/local/bin/airflow-entrypoint /usr/local/lib/airflow-entrypoint/bin/airflow \
 && ln -s /usr/local/bin/airflow-entrypoint /usr/local/lib/airflow-entrypoint/bin/celery \
 && printf '%s\n' '#!/bin/sh' \
      '# The official image'"'"'s log cleanup, answered natively by airflow-entrypoint.' \
      'exec /usr/local/bin/airflow-entrypoint clean-logs "$@"' >/clean-logs \
 && chmod 0755 /clean-logs \
 && ln -s /clean-logs /usr/local/bin/clean-airflow-logs
# The -onbuild variant's installer (see the onbuild stage below).
COPY config/onbuild/install-project /usr/local/lib/airflow-entrypoint/install-project

WORKDIR /usr/local/airflow
EXPOSE 8080
# The entrypoint forwards SIGTERM to the component and exits as it did.
STOPSIGNAL SIGTERM
# Asks the component that really runs (PID 1's child, so also under the
# Helm chart's `bash -c "exec airflow scheduler"`; each part of `all` or a
# `+` group) on its own endpoint: the api-server's or webserver's health,
# the scheduler's health server or its jobs' heartbeats, the triggerer's
# and dag-processor's heartbeats, a Celery worker's ping and queues
# through its broker. A stopped or exited component is unhealthy at once;
# one with nothing to ask (bash) is said to be so, exit 0. Answers within 5 s.
HEALTHCHECK --interval=30s --timeout=10s --start-period=90s --retries=3 \
  CMD ["/usr/local/bin/airflow-entrypoint", "--healthcheck"]
# The image starts as root: the entrypoint drops to ASTRONOMER_USER itself.
ENTRYPOINT ["/usr/local/bin/airflow-entrypoint"]
CMD ["--help"]

# ---------------------------------------------------------------------------
# The -onbuild variant (`--target onbuild`): a user project's whole
# Dockerfile is `FROM <this image>-onbuild`, beside dags/, plugins/,
# include/, requirements.txt and packages.txt. Its build then installs
# packages.txt with apt (as root), requirements.txt with pip under the
# image's constraints with Apache Airflow kept at its version, and copies
# the project into AIRFLOW_HOME owned by the service user. Either list may
# be missing (the bracket globs let COPY match nothing), and may have
# comments, blank lines and CRLF. Each list is its own layer, so a DAG
# change does not reinstall them.
FROM image AS onbuild
LABEL io.github.airflow-entrypoint.variant.onbuild="true"
ONBUILD COPY packages.tx[t] /tmp/project-lists/
ONBUILD RUN ["/usr/local/lib/airflow-entrypoint/install-project", "packages", "/tmp/project-lists/packages.txt"]
ONBUILD COPY requirements.tx[t] /tmp/project-lists/
ONBUILD RUN ["/usr/local/lib/airflow-entrypoint/install-project", "requirements", "/tmp/project-lists/requirements.txt"]
ONBUILD COPY --chown=5000:0 . /usr/local/airflow/

# The default target: the image itself.
FROM image
