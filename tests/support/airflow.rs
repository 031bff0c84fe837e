//! What the real-Airflow tests share: one Airflow at a time, the namespace's
//! passwd with astro (5000), an AIRFLOW_HOME astro owns, and a DAG whose one
//! task marks its start, sleeps and marks its end.

use std::fs;
use std::os::unix::fs::PermissionsExt;

use super::TempDir;

/// One Airflow at a time in a test binary: the machine has two cores.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

pub fn exclusive() -> std::sync::MutexGuard<'static, ()> {
    ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub const PASSWD: &str =
    "root:x:0:0:root:/root:/bin/sh\nastro:x:5000:0:Airflow:/home/astro:/bin/sh\n";
pub const GROUP: &str = "root:x:0:\n";

/// An AIRFLOW_HOME owned by astro (mode 775), with `dags/` and `markers/`.
pub fn airflow_home(tag: &str) -> TempDir {
    let home = TempDir::new(tag);
    for p in [
        home.path().to_path_buf(),
        home.join("dags"),
        home.join("markers"),
    ] {
        fs::create_dir_all(&p).unwrap();
        std::os::unix::fs::chown(&p, Some(5000), Some(0)).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(0o775)).unwrap();
    }
    home
}

/// A DAG `dag_id` with one Bash task: touches `$MARKER_DIR/started`, sleeps
/// 12 s, touches `$MARKER_DIR/finished`; written into `home/dags`.
pub fn write_sleeper_dag(home: &TempDir, dag_id: &str) {
    let text = format!(
        r#"
from datetime import datetime
from airflow.sdk import dag
from airflow.providers.standard.operators.bash import BashOperator

@dag(dag_id="{dag_id}", schedule=None, start_date=datetime(2024, 1, 1), catchup=False)
def sleeper():
    BashOperator(
        task_id="sleeper",
        bash_command='touch "$MARKER_DIR/started"; sleep 12; touch "$MARKER_DIR/finished"',
    )

sleeper()
"#
    );
    let path = home.join(&format!("dags/{dag_id}.py"));
    fs::write(&path, text).unwrap();
    fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
}

/// The entrypoint as PID 1 of its own namespace, started as root (it drops
/// to astro), with what every real-Airflow test sets: the venv first on
/// PATH, `home` as AIRFLOW_HOME with its `dags/`, the API on loopback port
/// `api_port` with one worker and fixed secrets, small parallelism, free
/// ports for the log servers and the scheduler's health server, MARKER_DIR
/// and a 120 s wait. A later `.env` of the same name overrides.
pub fn airflow_run(tag: &str, venv: &std::path::Path, home: &TempDir, api_port: u16) -> super::Run {
    use super::servers::free_port;
    super::Run::with_users(tag, PASSWD, GROUP, 0o644, None)
        .env("PATH", format!("{}/bin:/usr/bin:/bin", venv.display()))
        .env("AIRFLOW_HOME", home.path())
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        .env("AIRFLOW__CORE__DAGS_FOLDER", home.join("dags"))
        .env("AIRFLOW__API__HOST", "127.0.0.1")
        .env("AIRFLOW__API__PORT", api_port.to_string())
        .env("AIRFLOW__API__WORKERS", "1")
        .env(
            "AIRFLOW__API_AUTH__JWT_SECRET",
            "e2e-jwt-secret-0123456789abcdef0123456789abcdef",
        )
        .env("AIRFLOW__API__SECRET_KEY", "e2e-api-secret-key")
        .env("AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_ALL_ADMINS", "True")
        .env(
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL",
            format!("http://127.0.0.1:{api_port}/execution/"),
        )
        .env("AIRFLOW__CORE__PARALLELISM", "4")
        .env("AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES", "1")
        .env(
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
            free_port().to_string(),
        )
        .env(
            "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT",
            free_port().to_string(),
        )
        .env(
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
            free_port().to_string(),
        )
        .env("MARKER_DIR", home.join("markers"))
        .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "120")
}
