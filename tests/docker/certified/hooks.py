"""docker-test's certified phase: each provider of the certified image is
installed and its main hook (the Celery provider: its executor) imports."""

import importlib
import sys
from importlib.metadata import version

MAIN = {
    "amazon": "airflow.providers.amazon.aws.hooks.s3:S3Hook",
    "microsoft-azure": "airflow.providers.microsoft.azure.hooks.wasb:WasbHook",
    "celery": "airflow.providers.celery.executors.celery_executor:CeleryExecutor",
    "cncf-kubernetes": "airflow.providers.cncf.kubernetes.hooks.kubernetes:KubernetesHook",
    "elasticsearch": "airflow.providers.elasticsearch.hooks.elasticsearch:ElasticsearchSQLHook",
    "ftp": "airflow.providers.ftp.hooks.ftp:FTPHook",
    "google": "airflow.providers.google.cloud.hooks.gcs:GCSHook",
    "http": "airflow.providers.http.hooks.http:HttpHook",
    "imap": "airflow.providers.imap.hooks.imap:ImapHook",
    "mysql": "airflow.providers.mysql.hooks.mysql:MySqlHook",
    "postgres": "airflow.providers.postgres.hooks.postgres:PostgresHook",
    "redis": "airflow.providers.redis.hooks.redis:RedisHook",
    "slack": "airflow.providers.slack.hooks.slack:SlackHook",
    "sqlite": "airflow.providers.sqlite.hooks.sqlite:SqliteHook",
    "ssh": "airflow.providers.ssh.hooks.ssh:SSHHook",
}

failed = []
for provider, target in MAIN.items():
    module, name = target.split(":")
    try:
        getattr(importlib.import_module(module), name)
        print(f"ok {provider} {version('apache-airflow-providers-' + provider)} {name}")
    except Exception as e:  # noqa: BLE001 - every failure is reported
        failed.append(provider)
        print(f"FAILED {provider}: {type(e).__name__}: {e}")
for extra_module in ("statsd",):
    try:
        importlib.import_module(extra_module)
        print(f"ok extra {extra_module} {version(extra_module)}")
    except Exception as e:  # noqa: BLE001
        failed.append(extra_module)
        print(f"FAILED extra {extra_module}: {e}")
sys.exit(1 if failed else 0)
