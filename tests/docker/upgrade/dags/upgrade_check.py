"""docker-test's upgrade phase: one DAG that both Airflow 2.11 and 3.3 load.

It runs once under 2.11.2 and once more after the deployment moved to
3.3.2; each run's task prints the Airflow version that ran it, which the
test reads back through the 3.3.2 API.
"""

import datetime

try:  # Airflow 3
    from airflow.sdk import dag, task
except ImportError:  # Airflow 2
    from airflow.decorators import dag, task


@dag(
    dag_id="upgrade_check",
    schedule=None,
    start_date=datetime.datetime(2026, 1, 1),
    catchup=False,
    tags=["docker-test"],
)
def upgrade_check():
    @task
    def report_version():
        import airflow

        print(f"upgrade check ran under Airflow {airflow.__version__}")
        return airflow.__version__

    report_version()


upgrade_check()
