"""A plugin of the example project: a macro the DAG's template uses."""

from airflow.plugins_manager import AirflowPlugin


def shout(text: str) -> str:
    return text.upper() + "!"


class ProjectPlugin(AirflowPlugin):
    name = "project_plugin"
    macros = [shout]
