#!/usr/bin/env python3
"""Runs Kubernetes pods with `docker run`, as a kubelet would run them.

  kubelet.py --manifests FILE --image IMAGE --network NET --label KEY=VALUE
             --work DIR [--secret-edit OLD NEW]... [--expect-log POD=REGEX]...
             [--timeout SECONDS]

FILE is rendered YAML (`kubectl kustomize`). Every Job, Deployment and
StatefulSet becomes one pod (one replica each; a 2-core machine), named
NAME-0 with that hostname, on NET with the DNS names of the Services that
select it. Jobs run first, to completion; then the other pods together.
For each pod, what a kubelet does:
  - configMap and secret volumes become files (the Secret's mode and the pod's
    fsGroup), emptyDir a 0777 directory, each mounted as volumeMounts say;
  - the pod's and the container's securityContext become --user, --group-add,
    --cap-drop/--cap-add, no-new-privileges, --read-only; memory and cpu
    limits become --memory and --cpus; env, command and args as given;
  - init containers run one after the other, each to exit 0;
  - the main container starts; its startup probe runs on its period until it
    succeeds (failureThreshold failures in a row fail the pod), then the
    readiness and liveness probes on theirs, each with its timeout, by
    `docker exec`, whatever exec command the manifest has;
  - once every probe has succeeded (and every --expect-log REGEX is in the
    pod's log; a pod with neither runs 15 s), `docker stop -t
    terminationGracePeriodSeconds`: it must end before the grace period.
A pod with more containers runs the others beside the first (sidecars, such
as the chart's log groomer): started before it, stopped after it, each with
its own exit code checked. --seed-file POD:VOLUME/PATH:DAYS writes a file
into an emptyDir before the pod starts, DAYS old; --expect-gone and
--expect-kept POD:VOLUME/PATH check it once the pod's probes have passed.
--image-healthcheck runs the image's own HEALTHCHECK command in every
container once its probes have passed (it must say healthy, or that there
is nothing to ask); --freeze POD then stops (SIGSTOP) the main container's
component, the child of its PID 1, and the HEALTHCHECK must say unhealthy
within its timeout, before the component is continued.
--secret-edit replaces text in the Secrets' values (the placeholders a user
replaces); a CHANGE-ME left over is an error. Prints PASS/FAIL lines, the
evidence of a failure indented on stderr; exits 1 when a check failed, 64
on bad arguments or a manifest feature this runner does not know.
"""

import argparse
import base64
import json
import os
import re
import subprocess
import sys
import threading
import time

import yaml

WORKLOADS = ("Job", "Deployment", "StatefulSet")
lock = threading.Lock()
results = {"passed": 0, "failed": 0}


class Unsupported(Exception):
    """A manifest field this runner cannot carry out faithfully."""


def json_loads(text):
    try:
        return json.loads(text)
    except ValueError:
        return None


def report(ok, line, evidence=""):
    with lock:
        results["passed" if ok else "failed"] += 1
        print(("PASS " if ok else "FAIL ") + line, flush=True)
        if evidence and not ok:
            for text in evidence.rstrip().splitlines()[-30:]:
                print("    | " + text, file=sys.stderr, flush=True)


def docker(*args, timeout=None, check=False):
    return subprocess.run(
        ["docker", *args], stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout, check=check)


def quantity_bytes(value):
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "K": 10**3, "M": 10**6, "G": 10**9}
    text = str(value)
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(float(text[: -len(suffix)]) * factor)
    return int(text)


def quantity_cpus(value):
    text = str(value)
    return float(text[:-1]) / 1000 if text.endswith("m") else float(text)


class Pod:
    def __init__(self, kind, workload, services, args):
        self.kind = kind
        self.workload = workload
        self.meta = workload["metadata"]
        self.template = workload["spec"]["template"]
        self.spec = self.template["spec"]
        self.name = f"{self.meta['name']}-0"
        self.args = args
        self.container_prefix = f"{args.run}-{self.name}"
        labels = self.template["metadata"].get("labels", {})
        namespace = self.meta.get("namespace", "default")
        self.aliases = []
        for service in services:
            selector = service["spec"].get("selector", {})
            if selector and all(labels.get(k) == v for k, v in selector.items()):
                svc = service["metadata"]["name"]
                self.aliases += [svc, f"{svc}.{namespace}", f"{svc}.{namespace}.svc"]
                if workload["spec"].get("serviceName") == svc:
                    self.aliases += [f"{self.name}.{svc}", f"{self.name}.{svc}.{namespace}.svc"]

    # -- volumes ----------------------------------------------------------
    def make_volumes(self, objects):
        fs_group = self.spec.get("securityContext", {}).get("fsGroup")
        self.volume_paths = {}
        for volume in self.spec.get("volumes", []):
            path = os.path.join(self.args.work, self.name, "volumes", volume["name"])
            os.makedirs(path, exist_ok=True)
            if "configMap" in volume or "secret" in volume:
                source = volume.get("configMap") or volume.get("secret")
                kind = "ConfigMap" if "configMap" in volume else "Secret"
                ref = source.get("name") or source.get("secretName")
                obj = objects.get((kind, ref))
                if obj is None:
                    raise Unsupported(f"volume {volume['name']}: no {kind} {ref} in the manifests")
                data = dict(obj.get("data", {}))
                if kind == "Secret":
                    data = {k: base64.b64decode(v).decode() for k, v in data.items()}
                    data.update(obj.get("stringData", {}))
                if "items" in source:
                    raise Unsupported(f"volume {volume['name']}: items")
                mode = source.get("defaultMode", 0o644)
                for key, value in data.items():
                    file = os.path.join(path, key)
                    with open(file, "w") as out:
                        out.write(value)
                    os.chmod(file, mode)
                    if fs_group is not None:
                        os.chown(file, 0, fs_group)
                os.chmod(path, 0o755)
            elif "emptyDir" in volume:
                os.chmod(path, 0o777)
                for pod, spec, days in self.args.seed_file:
                    vol, _, rel = spec.partition("/")
                    if pod == self.name and vol == volume["name"]:
                        # As the pod's own user would have written it.
                        security = self.spec.get("securityContext", {})
                        owner = (security.get("runAsUser", 0), security.get("fsGroup", 0))
                        file = os.path.join(path, rel)
                        parent = path
                        for part in os.path.dirname(rel).split("/"):
                            parent = os.path.join(parent, part)
                            os.makedirs(parent, exist_ok=True)
                            os.chown(parent, *owner)
                        with open(file, "w") as out:
                            out.write("seeded by kubelet.py\n")
                        os.chown(file, *owner)
                        when = time.time() - float(days) * 86400 - 60
                        os.utime(file, (when, when))
            else:
                raise Unsupported(f"volume {volume['name']}: only configMap, secret, emptyDir")
            self.volume_paths[volume["name"]] = path

    # -- containers -------------------------------------------------------
    def run_args(self, container, name):
        pod_security = self.spec.get("securityContext", {})
        security = {**pod_security, **container.get("securityContext", {})}
        argv = ["run", "-d", "--name", name, "--hostname", self.name,
                "--label", self.args.label, "--network", self.args.network,
                # A kubelet does not run the image's HEALTHCHECK; probes do that.
                "--no-healthcheck"]
        for alias in self.aliases:
            argv += ["--network-alias", alias]
        user = security.get("runAsUser")
        if user is not None:
            argv += ["--user", f"{user}:{security.get('runAsGroup', 0)}"]
        if security.get("runAsNonRoot") and not user:
            raise Unsupported(f"{name}: runAsNonRoot needs a runAsUser here (the image's USER is root)")
        if "fsGroup" in pod_security:
            argv += ["--group-add", str(pod_security["fsGroup"])]
        for group in pod_security.get("supplementalGroups", []):
            argv += ["--group-add", str(group)]
        if security.get("allowPrivilegeEscalation") is False:
            argv += ["--security-opt", "no-new-privileges"]
        caps = security.get("capabilities", {})
        for cap in caps.get("drop", []):
            argv += ["--cap-drop", cap]
        for cap in caps.get("add", []):
            argv += ["--cap-add", cap]
        if security.get("readOnlyRootFilesystem"):
            argv.append("--read-only")
        if security.get("privileged"):
            raise Unsupported(f"{name}: privileged")
        limits = container.get("resources", {}).get("limits", {})
        if "memory" in limits:
            memory = quantity_bytes(limits["memory"])
            argv += ["--memory", str(memory), "--memory-swap", str(memory)]
        if "cpu" in limits:
            argv += ["--cpus", str(quantity_cpus(limits["cpu"]))]
        for env in container.get("env", []):
            if "value" not in env:
                raise Unsupported(f"{name}: env {env['name']} without a plain value")
            argv += ["--env", f"{env['name']}={env['value']}"]
        if container.get("envFrom"):
            raise Unsupported(f"{name}: envFrom")
        for mount in container.get("volumeMounts", []):
            if "subPath" in mount:
                raise Unsupported(f"{name}: subPath")
            spec = f"{self.volume_paths[mount['name']]}:{mount['mountPath']}"
            argv += ["--volume", spec + (":ro" if mount.get("readOnly") else "")]
        command = container.get("command")
        if command:
            argv += ["--entrypoint", command[0]]
        argv.append(self.args.image)
        argv += (command[1:] if command else []) + [str(a) for a in container.get("args", [])]
        return argv

    def logs(self, name):
        out = docker("logs", name)
        return out.stdout + out.stderr

    def run_init(self, container):
        name = f"{self.container_prefix}-{container['name']}"
        started = time.monotonic()
        out = docker(*self.run_args(container, name))
        if out.returncode != 0:
            report(False, f"({self.args.phase}) {self.name}: init container {container['name']} did not start", out.stderr)
            return False
        try:
            waited = docker("wait", name, timeout=self.args.timeout)
            code = int(waited.stdout.strip() or -1)
        except subprocess.TimeoutExpired:
            code = None
        seconds = time.monotonic() - started
        ok = code == 0
        report(ok, f"({self.args.phase}) {self.name}: init container {container['name']} "
                   f"({' '.join(map(str, container.get('args', [])))}) exited {code} after {seconds:.1f} s",
               self.logs(name))
        docker("rm", "-f", name)
        return ok

    def probe(self, name, probe):
        if "exec" not in probe:
            raise Unsupported(f"{name}: only exec probes")
        timeout = probe.get("timeoutSeconds", 1)
        try:
            out = docker("exec", name, *probe["exec"]["command"], timeout=timeout)
            return out.returncode == 0, (out.stdout + out.stderr).strip()
        except subprocess.TimeoutExpired:
            return False, f"timed out after {timeout} s"

    def run_main(self, container):
        name = f"{self.container_prefix}-{container['name']}"
        out = docker(*self.run_args(container, name))
        if out.returncode != 0:
            report(False, f"({self.args.phase}) {self.name}: container {container['name']} did not start", out.stderr)
            return
        started = time.monotonic()
        deadline = started + self.args.timeout
        probes = {kind: container[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")
                  if kind in container}
        # Per probe: when it runs next, consecutive failures, successes, last output.
        state = {kind: {"next": started + p.get("initialDelaySeconds", 0), "fails": 0,
                        "successes": 0, "runs": 0, "last": ""} for kind, p in probes.items()}
        startup_done = "startupProbe" not in probes
        expects = [re.compile(r) for pod, r in self.args.expect_log if pod == self.name]
        broken = None
        while time.monotonic() < deadline and broken is None:
            running = docker("inspect", "--format", "{{.State.Running}} {{.State.ExitCode}}", name).stdout.split()
            if running[:1] != ["true"]:
                broken = f"the container exited ({' '.join(running[1:])}) before it was stopped"
                break
            now = time.monotonic()
            for kind, p in probes.items():
                if kind != "startupProbe" and not startup_done:
                    continue
                if kind == "startupProbe" and startup_done:
                    continue
                s = state[kind]
                if now < s["next"]:
                    continue
                s["next"] = now + p.get("periodSeconds", 10)
                ok, output = self.probe(name, p)
                s["runs"] += 1
                s["last"] = output
                if ok:
                    s["fails"] = 0
                    s["successes"] += 1
                    if kind == "startupProbe" and s["successes"] >= p.get("successThreshold", 1):
                        startup_done = True
                        # The other probes' delays start now at the earliest.
                        for other in state:
                            if other != "startupProbe":
                                state[other]["next"] = max(state[other]["next"], time.monotonic())
                else:
                    s["fails"] += 1
                    if s["fails"] >= p.get("failureThreshold", 3) and kind != "readinessProbe":
                        broken = f"{kind} failed {s['fails']} times in a row: {output}"
            all_probed = startup_done and all(
                state[k]["successes"] >= probes[k].get("successThreshold", 1) for k in probes)
            logs = self.logs(name) if expects else ""
            all_logged = all(r.search(logs) for r in expects)
            quiet_enough = probes or expects or time.monotonic() - started >= 15
            if all_probed and all_logged and quiet_enough:
                break
            time.sleep(0.2)
        else:
            if broken is None:
                broken = f"not every probe succeeded within {self.args.timeout} s"
        up_seconds = time.monotonic() - started
        summary = ", ".join(
            f"{k} {state[k]['successes']}/{state[k]['runs']} ok (every {probes[k].get('periodSeconds', 10)} s)"
            for k in probes) or "no probes"
        if expects and broken is None:
            summary += ", log has " + " and ".join(repr(r.pattern) for r in expects)
        report(broken is None, f"({self.args.phase}) {self.name}: {container['name']} ({' '.join(map(str, container.get('args', [])))}) "
                               f"up {up_seconds:.0f} s: {summary}" + (f"; {broken}" if broken else ""),
               self.logs(name) + "\n" + "\n".join(f"{k}: {state[k]['last']}" for k in state))
        if broken is None:
            self.after_probes(name)
        if broken is None and self.kind != "Job":
            grace = self.spec.get("terminationGracePeriodSeconds", 30)
            t0 = time.monotonic()
            docker("stop", "-t", str(grace), name, timeout=grace + 60)
            stop_seconds = time.monotonic() - t0
            code = docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
            report(code != "137" and stop_seconds < grace,
                   f"({self.args.phase}) {self.name}: docker stop -t {grace} (terminationGracePeriodSeconds) "
                   f"took {stop_seconds:.1f} s, exit code {code}", self.logs(name))
        docker("rm", "-f", name)

    def image_healthcheck(self, name):
        """The image's own HEALTHCHECK command, run in the container."""
        # The image's, not the container's: a kubelet runs it with none.
        test = json_loads(docker("image", "inspect", "--format", "{{json .Config.Healthcheck}}",
                                 self.args.image).stdout)
        command = (test or {}).get("Test") or []
        if command[:1] != ["CMD"]:
            return None, f"no CMD health check: {command}"
        try:
            out = docker("exec", name, *command[1:], timeout=10)
            return out.returncode, (out.stdout + out.stderr).strip()
        except subprocess.TimeoutExpired:
            return None, "timed out after 10 s"

    def after_probes(self, name):
        for pod, spec in self.args.expect_gone + self.args.expect_kept:
            if pod != self.name:
                continue
            vol, _, rel = spec.partition("/")
            present = os.path.exists(os.path.join(self.volume_paths[vol], rel))
            want = (pod, spec) in self.args.expect_kept
            report(present == want, f"({self.args.phase}) {self.name}: {spec} {'kept' if want else 'removed'}"
                   + ("" if present == want else f" (it is {'there' if present else 'gone'})"),
                   "\n".join(self.logs(n) for n in self.sidecar_names))
        if not self.args.image_healthcheck:
            return
        for container in [name] + self.sidecar_names:
            code, output = self.image_healthcheck(container)
            ok = code == 0 and (output.startswith("healthy") or output.startswith("nothing to ask"))
            report(ok, f"({self.args.phase}) {self.name}: the image's HEALTHCHECK in {container.removeprefix(self.container_prefix + '-')}: "
                       f"exit {code}: {output[:160]}")
        if self.name in self.args.freeze:
            # PID 1's oldest child: the component, not a reparented orphan.
            child = docker("exec", name, "sh", "-c",
                           "for p in $(cat /proc/1/task/1/children); do "
                           "echo \"$(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f20) $p\"; done "
                           "| sort -n | head -n1 | cut -d' ' -f2").stdout.split()[:1]
            if not child:
                report(False, f"({self.args.phase}) {self.name}: no child of PID 1 to freeze")
                return
            # The shell's kill: the image may have no kill program.
            stopped = docker("exec", name, "sh", "-c", f"kill -STOP {child[0]}")
            if stopped.returncode != 0:
                report(False, f"({self.args.phase}) {self.name}: kill -STOP {child[0]} failed", stopped.stderr)
                return
            try:
                t0 = time.monotonic()
                code, output = self.image_healthcheck(name)
                seconds = time.monotonic() - t0
            finally:
                docker("exec", name, "sh", "-c", f"kill -CONT {child[0]}")
            report(code == 1 and output.startswith("unhealthy"),
                   f"({self.args.phase}) {self.name}: component (pid {child[0]}) frozen with SIGSTOP: the image's HEALTHCHECK "
                   f"exit {code} in {seconds:.1f} s: {output[:160]}",
                   docker("exec", name, "sh", "-c",
                          "for p in $(cat /proc/1/task/1/children); do echo \"$p $(cut -d' ' -f3 /proc/$p/stat)"
                          " $(sed 's/.*) //' /proc/$p/stat | cut -d' ' -f20) $(tr '\\0' ' ' </proc/$p/cmdline)\"; done").stdout)

    def start_sidecars(self, containers):
        self.sidecar_names = []
        for container in containers:
            name = f"{self.container_prefix}-{container['name']}"
            out = docker(*self.run_args(container, name))
            if out.returncode != 0:
                report(False, f"({self.args.phase}) {self.name}: sidecar {container['name']} did not start", out.stderr)
                continue
            self.sidecar_names.append(name)

    def stop_sidecars(self):
        grace = self.spec.get("terminationGracePeriodSeconds", 30)
        for name in self.sidecar_names:
            running = docker("inspect", "--format", "{{.State.Running}}", name).stdout.strip()
            t0 = time.monotonic()
            docker("stop", "-t", str(grace), name, timeout=grace + 60)
            seconds = time.monotonic() - t0
            code = docker("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
            short = name.removeprefix(self.container_prefix + "-")
            report(running == "true" and code == "0" and seconds < 5,
                   f"({self.args.phase}) {self.name}: sidecar {short} ran until the pod stopped; docker stop took "
                   f"{seconds:.1f} s, exit code {code}", self.logs(name))
            docker("rm", "-f", name)

    def run(self):
        self.sidecar_names = []
        try:
            for container in self.spec.get("initContainers", []):
                if not self.run_init(container):
                    return
            containers = self.spec["containers"]
            if self.kind == "Job":
                if len(containers) != 1:
                    raise Unsupported("Jobs with more than one container")
                # A Job's container runs to completion, like an init container.
                self.run_init(containers[0])
            else:
                self.start_sidecars(containers[1:])
                try:
                    self.run_main(containers[0])
                finally:
                    self.stop_sidecars()
        except Unsupported as unsupported:
            report(False, f"({self.args.phase}) {self.name}: this runner cannot do {unsupported}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--manifests", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--network", required=True)
    parser.add_argument("--label", required=True)
    parser.add_argument("--work", required=True)
    parser.add_argument("--secret-edit", action="append", default=[], nargs=2, metavar=("OLD", "NEW"))
    parser.add_argument("--expect-log", action="append", default=[],
                        type=lambda a: tuple(a.split("=", 1)))
    parser.add_argument("--timeout", type=int, default=400)
    parser.add_argument("--seed-file", action="append", default=[],
                        type=lambda a: tuple(a.rsplit(":", 1)[0].split(":", 1)) + (a.rsplit(":", 1)[1],))
    parser.add_argument("--expect-gone", action="append", default=[],
                        type=lambda a: tuple(a.split(":", 1)))
    parser.add_argument("--expect-kept", action="append", default=[],
                        type=lambda a: tuple(a.split(":", 1)))
    parser.add_argument("--image-healthcheck", action="store_true")
    parser.add_argument("--phase", default="pods", help="the tag of the PASS/FAIL lines")
    parser.add_argument("--freeze", action="append", default=[])
    args = parser.parse_args()
    args.run = args.label.split("=", 1)[1]

    with open(args.manifests) as f:
        documents = [d for d in yaml.safe_load_all(f) if d]
    objects = {(d["kind"], d["metadata"]["name"]): d for d in documents}
    for d in documents:
        if d["kind"] == "Secret":
            for key, value in d.get("stringData", {}).items():
                for old, new in args.secret_edit:
                    value = value.replace(old, new)
                if "CHANGE-ME" in value:
                    print(f"kubelet.py: Secret {d['metadata']['name']} key {key} still has a CHANGE-ME "
                          "after the --secret-edit replacements", file=sys.stderr)
                    return 64
                d["stringData"][key] = value
    services = [d for d in documents if d["kind"] == "Service"]
    pods = [Pod(d["kind"], d, services, args) for d in documents if d["kind"] in WORKLOADS]
    if not pods:
        print("kubelet.py: no Job, Deployment or StatefulSet in the manifests", file=sys.stderr)
        return 64
    try:
        for pod in pods:
            pod.make_volumes(objects)
    except Unsupported as unsupported:
        print(f"kubelet.py: {unsupported}", file=sys.stderr)
        return 64
    for pod in [p for p in pods if p.kind == "Job"]:
        pod.run()
    if results["failed"]:
        report(False, "(pods) the other pods did not start: a Job failed")
        return 1
    threads = [threading.Thread(target=p.run) for p in pods if p.kind != "Job"]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return 1 if results["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
