"""A two-task DAG to see the Compose example run something end to end."""

from __future__ import annotations

import os
import pendulum

from airflow.sdk import dag, task


@dag(schedule=None, start_date=pendulum.datetime(2025, 1, 1, tz="UTC"), catchup=False, tags=["example"])
def hello_entrypoint():
    @task
    def who_am_i() -> str:
        # Runs in the Celery worker, as the service user the entrypoint dropped to.
        return f"uid={os.getuid()} user={os.environ.get('USER')} home={os.environ.get('HOME')}"

    @task
    def say(line: str) -> None:
        print(f"hello from {line}")

    say(who_am_i())


hello_entrypoint()
