"""A DAG the quick-start test puts in ./dags: it must be loaded from the
mount and its task's log must appear in ./logs."""

import pendulum

from airflow.providers.standard.operators.bash import BashOperator
from airflow.sdk import DAG

with DAG(
    dag_id="quickstart_dropin",
    schedule=None,
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
):
    BashOperator(task_id="say", bash_command='echo "quickstart task as uid $(id -u) gid $(id -g)"')
