"""docker-test's certified phase: a task in its own virtualenv.

The PythonVirtualenvOperator (the standard provider's @task.virtualenv)
builds a fresh venv with Python's venv module and runs the function there;
the task prints where it ran, and docker-test looks for that line.
"""

from __future__ import annotations

import pendulum

from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False)
def certified_checks():
    @task.virtualenv(requirements=[], system_site_packages=False)
    def in_its_own_venv() -> None:
        import sys

        print(f"certified venv task: prefix={sys.prefix} base={sys.base_prefix}")

    in_its_own_venv()


certified_checks()
