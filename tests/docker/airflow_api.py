#!/usr/bin/env python3
"""A real HTTP client for the Compose stack's api-server (Airflow 3).

  airflow_api.py URL login
  airflow_api.py URL trigger DAG CONF_JSON             -> prints the run id
  airflow_api.py URL wait-task DAG RUN TASK STATES SECONDS
  airflow_api.py URL wait-run DAG RUN SECONDS
  airflow_api.py URL log DAG RUN TASK

`login` signs in as the UI does with the simple auth manager: the login page,
POST /auth/token (a wrong password must get 401), then the API with the
token as the UI's `_token` cookie (and 401 without it). The other commands
sign in the same way first. User and password: AIRFLOW_ADMIN_USER and
AIRFLOW_ADMIN_PASSWORD (default admin/admin, as the Compose file). Exits 0
when the command's condition holds, 1 when not (with the reason), 2 on an
HTTP error.
"""

import json
import os
import sys
import time
import urllib.error
import urllib.request


class Client:
    def __init__(self, base):
        self.base = base.rstrip("/")
        self.cookie = None

    def request(self, method, path, body=None, token=True, content_type="application/json"):
        data = None
        headers = {"Accept": "application/json"}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = content_type
        if token and self.cookie:
            headers["Cookie"] = f"_token={self.cookie}"
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                return resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode()

    def json(self, method, path, body=None):
        status, text = self.request(method, path, body)
        if status >= 300:
            print(f"{method} {path}: HTTP {status}: {text[:300]}", file=sys.stderr)
            sys.exit(2)
        return json.loads(text) if text else {}

    def login(self, verbose=False):
        user = os.environ.get("AIRFLOW_ADMIN_USER", "admin")
        password = os.environ.get("AIRFLOW_ADMIN_PASSWORD", "admin")
        problems = []
        status, page = self.request("GET", "/auth/login", token=False)
        if status != 200 or "<html" not in page.lower():
            problems.append(f"GET /auth/login: HTTP {status}")
        status, _ = self.request("POST", "/auth/token", {"username": user, "password": password + "x"}, token=False)
        if status != 401:
            problems.append(f"a wrong password got HTTP {status}, not 401")
        status, _ = self.request("GET", "/api/v2/dags", token=False)
        if status != 401:
            problems.append(f"the API without a token answered HTTP {status}, not 401")
        status, text = self.request("POST", "/auth/token", {"username": user, "password": password}, token=False)
        if status != 201:
            problems.append(f"POST /auth/token: HTTP {status}: {text[:200]}")
        else:
            self.cookie = json.loads(text)["access_token"]
            status, text = self.request("GET", "/api/v2/dags")
            if status != 200:
                problems.append(f"GET /api/v2/dags with the token: HTTP {status}")
            elif verbose:
                dags = [d["dag_id"] for d in json.loads(text)["dags"]]
                print(f"signed in as {user}; DAGs: {', '.join(dags) or 'none yet'}")
        if problems:
            print("; ".join(problems))
            return False
        return True


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 64
    client = Client(argv[0])
    command, args = argv[1], argv[2:]
    if command == "login":
        return 0 if client.login(verbose=True) else 1
    if not client.login():
        return 1
    if command == "trigger":
        dag, conf = args[0], json.loads(args[1])
        deadline = time.monotonic() + 180
        # The DAG processor must have parsed the file first.
        while client.request("GET", f"/api/v2/dags/{dag}")[0] != 200:
            if time.monotonic() > deadline:
                print(f"DAG {dag} not parsed within 180 s")
                return 1
            time.sleep(1)
        client.json("PATCH", f"/api/v2/dags/{dag}", {"is_paused": False})
        run = client.json("POST", f"/api/v2/dags/{dag}/dagRuns", {"logical_date": None, "conf": conf})
        print(run["dag_run_id"])
        return 0
    if command in ("wait-task", "wait-run"):
        dag, run = args[0], args[1]
        if command == "wait-task":
            task, states, seconds = args[2], args[3].split(","), float(args[4])
            path = f"/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}"
        else:
            states, seconds = ["success", "failed"], float(args[2])
            path = f"/api/v2/dags/{dag}/dagRuns/{run}"
        deadline = time.monotonic() + seconds
        last = {}
        while time.monotonic() < deadline:
            status, text = client.request("GET", path)
            if status == 200:
                last = json.loads(text)
                if last.get("state") in states:
                    print(json.dumps({k: last.get(k) for k in ("state", "hostname", "start_date", "end_date", "try_number")}))
                    return 0
            time.sleep(1)
        print(f"still {last.get('state')} after {seconds:.0f} s (want {'/'.join(states)})")
        return 1
    if command == "log":
        dag, run, task = args
        log = client.json("GET", f"/api/v2/dags/{dag}/dagRuns/{run}/taskInstances/{task}/logs/1?full_content=true")
        content = log.get("content", "")
        if isinstance(content, list):
            content = "\n".join(e.get("event", json.dumps(e)) if isinstance(e, dict) else str(e) for e in content)
        print(content)
        return 0
    print(__doc__, file=sys.stderr)
    return 64


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
