//! Real Apache Airflow under the entrypoint, as PID 1 of its own namespace
//! and started as root (it drops to astro, 5000), against real PostgreSQL
//! and Redis: migrations, api-server health, the scheduler's process tree,
//! the Celery worker's warm shutdown, and a bad database host.

mod support;
use std::fs;
use std::path::Path;
use std::time::{Duration, Instant};
use support::airflow::*;
use support::servers::*;
use support::*;

struct Stack {
    venv: std::path::PathBuf,
    home: TempDir,
    pg: Option<Server>,
    cluster: PgCluster,
    redis: Option<Server>,
    api_port: u16,
    scheduler_port: u16,
}

impl Stack {
    fn new(venv: std::path::PathBuf, tag: &str) -> Stack {
        let cluster = PgCluster::init(false);
        Stack {
            venv,
            home: airflow_home(tag),
            pg: None,
            cluster,
            redis: None,
            api_port: free_port(),
            scheduler_port: free_port(),
        }
    }
    fn db_url(&self) -> String {
        format!(
            "postgresql+psycopg2://airflow:airflow-pw@127.0.0.1:{}/airflow",
            self.cluster.port
        )
    }
    fn start_pg(&mut self) {
        let pg = self.cluster.start();
        assert!(pg.wait_log("ready to accept connections", secs(60)));
        self.pg = Some(pg);
    }
    /// The entrypoint as PID 1, root → astro, with Airflow's environment.
    fn component(&self, tag: &str, command: &[&str]) -> Run {
        let mut run = airflow_run(tag, &self.venv, &self.home, self.api_port)
            .env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", self.db_url())
            .env("AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK", "True")
            .env(
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
                self.scheduler_port.to_string(),
            );
        if let Some(redis) = &self.redis {
            run = run
                .env("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
                .env(
                    "AIRFLOW__CELERY__BROKER_URL",
                    format!("redis://127.0.0.1:{}/0", redis.port),
                )
                .env(
                    "AIRFLOW__CELERY__RESULT_BACKEND",
                    format!(
                        "db+postgresql://airflow:airflow-pw@127.0.0.1:{}/airflow",
                        self.cluster.port
                    ),
                )
                .env("AIRFLOW__CELERY__WORKER_CONCURRENCY", "1");
        }
        run.args(command)
    }
    fn healthy(&self, bound: Duration) -> Option<String> {
        wait_until(bound, || {
            match http("GET", self.api_port, "/api/v2/monitor/health", None) {
                Some((200, body)) => Some(body),
                _ => None,
            }
        })
    }
}

/// UIDs of every process in the namespace whose init has host PID `init`.
fn uids_below(init: i32) -> Vec<(i32, u32)> {
    descendants(init)
        .into_iter()
        .filter_map(|pid| {
            let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
            let uid = status
                .lines()
                .find(|l| l.starts_with("Uid:"))?
                .split_whitespace()
                .nth(1)?
                .parse()
                .ok()?;
            Some((pid, uid))
        })
        .collect()
}

#[test]
fn api_server_migrates_runs_as_5000_answers_health_and_stops_on_term() {
    if !needs_root("api_server_e2e") {
        return;
    }
    let Some(venv) = airflow_venv("3.3.2", "api_server_e2e") else {
        return;
    };
    let _one = exclusive();
    let mut stack = Stack::new(venv, "e2e-api");
    stack.start_pg();
    // `webserver` on Airflow 3 is mapped to `api-server`.
    let mut api = stack
        .component("api", &["webserver"])
        .env("_AIRFLOW_DB_MIGRATE", "true")
        .start();
    let health = stack.healthy(secs(300));
    let stderr = api.dir.read("stderr");
    assert!(
        health.is_some(),
        "api-server never became healthy:\n{stderr}"
    );
    assert!(health
        .unwrap()
        .contains("\"metadatabase\":{\"status\":\"healthy\"}"));
    assert!(
        stderr.contains("`webserver` runs `airflow api-server` on Airflow 3"),
        "{stderr}"
    );
    assert!(
        stderr.contains("running start-up step step=\"airflow db migrate\""),
        "{stderr}"
    );
    let init = api.entrypoint_pid();
    let uids = uids_below(init);
    assert!(
        !uids.is_empty() && uids.iter().all(|(_, uid)| *uid == 5000),
        "{uids:?}"
    );
    let sent = Instant::now();
    api.signal(libc::SIGTERM);
    let status = api.wait(secs(60));
    let stderr = api.dir.read("stderr");
    assert!(
        matches!(status.code(), Some(0) | Some(143)),
        "{status:?}\n{stderr}"
    );
    assert!(
        !stderr.contains("sent SIGKILL"),
        "something had to be killed:\n{stderr}"
    );
    assert!(sent.elapsed() < secs(30), "{:?}", sent.elapsed());
}

#[test]
fn scheduler_waits_for_a_late_database_then_its_whole_tree_stops_on_term() {
    if !needs_root("scheduler_e2e") {
        return;
    }
    let Some(venv) = airflow_venv("3.3.2", "scheduler_e2e") else {
        return;
    };
    let _one = exclusive();
    let mut stack = Stack::new(venv, "e2e-sched");
    let mut scheduler = stack
        .component("sched", &["scheduler"])
        .env("_AIRFLOW_DB_MIGRATE", "true")
        .start();
    wait_until(secs(30), || {
        scheduler
            .dir
            .read("stderr")
            .contains("waiting for the metadata database")
            .then_some(())
    })
    .expect("the scheduler should wait for the database");
    // The database comes up 3 s after the entrypoint started waiting.
    std::thread::sleep(Duration::from_secs(3));
    stack.start_pg();
    let init = scheduler.entrypoint_pid();
    // Running for real: its loop started (a TERM during Airflow's own
    // start-up can leave the scheduler hanging), its health server answers.
    let healthy = wait_until(secs(300), || {
        let output = scheduler.dir.read("stdout") + &scheduler.dir.read("stderr");
        let looping = output.contains("Adopting or resetting orphaned tasks");
        (looping
            && matches!(
                http("GET", stack.scheduler_port, "/health", None),
                Some((200, _))
            ))
        .then_some(())
    });
    assert!(
        healthy.is_some(),
        "the scheduler never became healthy:\n{}",
        scheduler.dir.read("stderr")
    );
    let tree = uids_below(init);
    assert!(
        tree.len() >= 3 && tree.iter().all(|(_, uid)| *uid == 5000),
        "{tree:?}"
    );
    // The entrypoint's own health check agrees.
    let check = std::process::Command::new(bin())
        .args(["--healthcheck", "scheduler"])
        .env("AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK", "True")
        .env(
            "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_SERVER_PORT",
            stack.scheduler_port.to_string(),
        )
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let stderr = scheduler.dir.read("stderr");
    assert!(
        stderr.find("waiting for the metadata database")
            < stderr.find("metadata database is ready")
    );
    scheduler.signal(libc::SIGTERM);
    let status = scheduler.wait(secs(90));
    let stderr = scheduler.dir.read("stderr");
    assert!(
        matches!(status.code(), Some(0) | Some(143)),
        "{status:?}\n{stderr}"
    );
    assert!(
        !stderr.contains("sent SIGKILL"),
        "processes had to be killed:\n{stderr}"
    );
}

#[test]
fn a_bad_database_host_is_69_with_the_masked_url_within_the_budget() {
    if !needs_root("bad_host_e2e") {
        return;
    }
    let Some(venv) = airflow_venv("3.3.2", "bad_host_e2e") else {
        return;
    };
    let _one = exclusive();
    let home = airflow_home("e2e-bad");
    let started = Instant::now();
    let f = Run::with_users("bad", PASSWD, GROUP, 0o644, None)
        .env("PATH", format!("{}/bin:/usr/bin:/bin", venv.display()))
        .env("AIRFLOW_HOME", home.path())
        .env(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            "postgresql://airflow:bad-host-pw@db.invalid:5432/airflow",
        )
        .env("CONNECTION_CHECK_MAX_COUNT", "2")
        .env("CONNECTION_CHECK_SLEEP_TIME", "1")
        .arg("scheduler")
        .run(secs(60));
    f.expect_code(69);
    assert!(started.elapsed() < secs(20), "{:?}", started.elapsed());
    assert!(
        f.stderr
            .contains("postgresql://airflow:***@db.invalid:5432/airflow"),
        "{}",
        f.stderr
    );
    assert!(!f.stderr.contains("bad-host-pw"));
}

#[test]
fn celery_worker_finishes_its_running_task_on_term_then_exits_0() {
    if !needs_root("celery_warm_shutdown_e2e") {
        return;
    }
    let Some(venv) = airflow_venv("3.3.2", "celery_warm_shutdown_e2e") else {
        return;
    };
    let _one = exclusive();
    let mut stack = Stack::new(venv, "e2e-celery");
    stack.start_pg();
    stack.redis = Some(start_redis(None));
    write_sleeper_dag(&stack.home, "warm_shutdown");

    let mut api = stack
        .component("api", &["api-server"])
        .env("_AIRFLOW_DB_MIGRATE", "true")
        .start();
    assert!(
        stack.healthy(secs(300)).is_some(),
        "api-server:\n{}",
        api.dir.read("stderr")
    );
    let mut scheduler = stack.component("sched", &["scheduler"]).start();
    let mut processor = stack.component("dagproc", &["dag-processor"]).start();
    // The official image bakes DUMB_INIT_SETSID=1 in: it must not break warm shutdown.
    let mut worker = stack
        .component("worker", &["worker"])
        .env("DUMB_INIT_SETSID", "1")
        .start();

    let parsed = wait_until(secs(240), || {
        matches!(
            http("GET", stack.api_port, "/api/v2/dags/warm_shutdown", None),
            Some((200, _))
        )
        .then_some(())
    });
    assert!(
        parsed.is_some(),
        "the DAG was never parsed:\n{}",
        processor.dir.read("stderr")
    );
    let (code, body) = http(
        "PATCH",
        stack.api_port,
        "/api/v2/dags/warm_shutdown",
        Some(r#"{"is_paused": false}"#),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(
        "POST",
        stack.api_port,
        "/api/v2/dags/warm_shutdown/dagRuns",
        Some(r#"{"logical_date": null}"#),
    )
    .unwrap();
    assert!(code == 200 || code == 201, "{code} {body}");

    let started = stack.home.join("markers/started");
    let running = wait_until(secs(240), || started.exists().then_some(()));
    assert!(
        running.is_some(),
        "the task never started:\nworker: {}\nscheduler: {}",
        worker.dir.read("stderr"),
        scheduler.dir.read("stderr")
    );
    assert!(worker.dir.read("stderr").contains("scope=child"));

    // Warm shutdown: TERM reaches only the worker's main process, which lets
    // the running task finish before it exits.
    worker.signal(libc::SIGTERM);
    let status = worker.wait(secs(120));
    assert!(
        Path::new(&stack.home.join("markers/finished")).exists(),
        "the running task was cut off:\n{}",
        worker.dir.read("stderr")
    );
    assert_eq!(status.code(), Some(0), "{}", worker.dir.read("stderr"));

    for component in [&mut scheduler, &mut processor, &mut api] {
        component.signal(libc::SIGTERM);
        let _ = component.wait(secs(90));
    }
}

#[test]
fn two_containers_migrating_the_same_fresh_database_at_once_both_succeed() {
    if !needs_root("concurrent_migrate_e2e") {
        return;
    }
    let Some(venv) = airflow_venv("3.3.2", "concurrent_migrate_e2e") else {
        return;
    };
    let _one = exclusive();
    let mut stack = Stack::new(venv, "e2e-migrate");
    stack.start_pg();
    let first = stack
        .component("mig1", &["db", "check"])
        .env("_AIRFLOW_DB_MIGRATE", "true")
        .start();
    let second = stack
        .component("mig2", &["db", "check"])
        .env("_AIRFLOW_DB_MIGRATE", "true")
        .start();
    for mut run in [first, second] {
        let status = run.wait(secs(300));
        assert_eq!(status.code(), Some(0), "{}", run.dir.read("stderr"));
        assert!(run.dir.read("stderr").contains("airflow db migrate"));
    }
}

#[test]
fn airflow_2_11_webserver_smoke() {
    if !needs_root("airflow_2_11_webserver_smoke") {
        return;
    }
    let Some(venv) = airflow_venv("2.11.2", "airflow_2_11_webserver_smoke") else {
        return;
    };
    let _one = exclusive();
    let mut stack = Stack::new(venv, "e2e-211");
    stack.start_pg();
    let port = free_port();
    // `api-server` on Airflow 2 is mapped to `webserver`.
    let mut web = stack
        .component("web211", &["api-server"])
        .env("_AIRFLOW_DB_MIGRATE", "true")
        .env("AIRFLOW__WEBSERVER__WEB_SERVER_PORT", port.to_string())
        .env("AIRFLOW__WEBSERVER__WORKERS", "1")
        .env("AIRFLOW__WEBSERVER__SECRET_KEY", "e2e-webserver-secret")
        .start();
    let healthy = wait_until(secs(300), || match http("GET", port, "/health", None) {
        Some((200, body)) => Some(body),
        _ => None,
    });
    let stderr = web.dir.read("stderr");
    assert!(
        healthy.is_some(),
        "the Airflow 2 webserver never answered /health:\n{stderr}"
    );
    assert!(
        stderr.contains("`api-server` runs `airflow webserver` on Airflow 2"),
        "{stderr}"
    );
    assert!(stderr.contains("airflow db migrate"), "{stderr}");
    web.signal(libc::SIGTERM);
    let status = web.wait(secs(90));
    assert!(
        matches!(status.code(), Some(0) | Some(143)),
        "{status:?}\n{}",
        web.dir.read("stderr")
    );
}

#[test]
fn standalone_with_sqlite_comes_up_and_stops_cleanly_on_term() {
    if !needs_root("standalone_e2e") {
        return;
    }
    let Some(venv) = airflow_venv("3.3.2", "standalone_e2e") else {
        return;
    };
    let _one = exclusive();
    // What the README's quick start runs: SQLite, the simple auth manager
    // with an admin set by _AIRFLOW_WWW_USER_*.
    let home = airflow_home("e2e-standalone");
    let port = free_port();
    let mut standalone = Run::with_users("standalone", PASSWD, GROUP, 0o644, None)
        .env("PATH", format!("{}/bin:/usr/bin:/bin", venv.display()))
        .env("AIRFLOW_HOME", home.path())
        .env("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
        .env("AIRFLOW__API__HOST", "127.0.0.1")
        .env("AIRFLOW__API__PORT", port.to_string())
        .env("AIRFLOW__CORE__PARALLELISM", "4")
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
        .env("_AIRFLOW_WWW_USER_CREATE", "true")
        .env("_AIRFLOW_WWW_USER_PASSWORD", "demo-admin-pw")
        .arg("standalone")
        .start();
    let healthy = wait_until(secs(300), || {
        match http("GET", port, "/api/v2/monitor/health", None) {
            Some((200, body)) if body.contains("\"scheduler\":{\"status\":\"healthy\"") => Some(()),
            _ => None,
        }
    });
    assert!(
        healthy.is_some(),
        "standalone never became healthy:\n{}",
        standalone.dir.read("stderr")
    );
    let login = http(
        "POST",
        port,
        "/auth/token",
        Some(r#"{"username":"admin","password":"demo-admin-pw"}"#),
    );
    assert!(
        matches!(&login, Some((code, body)) if (200..300).contains(code) && body.contains("access_token")),
        "{login:?}"
    );
    standalone.signal(libc::SIGTERM);
    let status = standalone.wait(secs(120));
    let stderr = standalone.dir.read("stderr");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("SIGTERM is forwarded as SIGINT"),
        "{stderr}"
    );
    assert!(!stderr.contains("sent SIGKILL"), "{stderr}");
    assert!(
        !stderr.contains("demo-admin-pw")
            && !standalone.dir.read("stdout").contains("demo-admin-pw")
    );
}
