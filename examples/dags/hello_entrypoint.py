"""A two-task DAG to see the Compose example run something end to end.

Trigger it with {"hold_seconds": 60} to keep the first task running for a
minute, e.g. to watch `docker compose stop worker` let it finish (Celery's
warm shutdown).
"""

from __future__ import annotations

import os
import time

import pendulum

from airflow.sdk import Param, dag, get_current_context, task


@dag(
    schedule=None,
    start_date=pendulum.datetime(2025, 1, 1, tz="UTC"),
    catchup=False,
    tags=["example"],
    params={"hold_seconds": Param(0, type="integer", minimum=0, maximum=3600)},
)
def hello_entrypoint():
    @task
    def who_am_i() -> str:
        hold = get_current_context()["params"]["hold_seconds"]
        if hold:
            print(f"holding for {hold} s")
            time.sleep(hold)
        # Runs in the Celery worker, as the service user the entrypoint dropped to.
        return f"uid={os.getuid()} user={os.environ.get('USER')} home={os.environ.get('HOME')}"

    @task
    def say(line: str) -> None:
        print(f"hello from {line}")

    say(who_am_i())


hello_entrypoint()
