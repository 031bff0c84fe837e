"""The example project's DAG: an apt package (jq) reads include/, a pip
package (pyfiglet) renders it, and the plugin's macro shouts it."""

from __future__ import annotations

import os
import subprocess

import pendulum

from airflow.sdk import dag, task

HOME = os.environ.get("AIRFLOW_HOME", "/usr/local/airflow")


@dag(schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False, tags=["example"])
def example_project():
    @task
    def read_include() -> str:
        # jq comes from packages.txt.
        out = subprocess.run(
            ["jq", "-r", ".greeting", f"{HOME}/include/greeting.json"],
            check=True, capture_output=True, text=True,
        )
        return out.stdout.strip()

    @task
    def render(text: str) -> None:
        import pyfiglet  # from requirements.txt

        from project_plugin import shout  # plugins/ is on sys.path

        print(pyfiglet.figlet_format("ok", font="standard"))
        print(f"project says: {shout(text)} (pyfiglet {pyfiglet.__version__})")

    render(read_include())


example_project()
