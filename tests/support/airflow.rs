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
