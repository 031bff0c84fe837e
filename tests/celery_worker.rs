//! The Celery worker's liveness without Python, against real Airflow 3.3.2
//! Celery workers on real Redis and RabbitMQ: the native `celery … inspect
//! ping` says what the real one says on a healthy worker, fails a frozen
//! one within its timeout, answers only for its own node, falls back to
//! the heartbeat with remote control off, fails a wrong password at once
//! without showing it, and leaves no key or queue behind.

mod support;

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::servers::{self, free_port, Server};
use support::*;

const APP: &str = "airflow.providers.celery.executors.celery_executor.app";

/// The environment of a worker and of both probes on one broker.
fn airflow_env(home: &Path, broker: &str) -> Vec<(String, String)> {
    vec![
        ("AIRFLOW_HOME".into(), home.display().to_string()),
        ("AIRFLOW__CORE__EXECUTOR".into(), "CeleryExecutor".into()),
        ("AIRFLOW__CORE__LOAD_EXAMPLES".into(), "False".into()),
        ("AIRFLOW__CELERY__BROKER_URL".into(), broker.into()),
        (
            "AIRFLOW__CELERY__RESULT_BACKEND".into(),
            format!("db+sqlite:///{}/results.db", home.display()),
        ),
        // Silences a warning Airflow prints on stdout at every start.
        (
            "AIRFLOW__CELERY_BROKER_TRANSPORT_OPTIONS__VISIBILITY_TIMEOUT".into(),
            "86400".into(),
        ),
    ]
}

/// A real `airflow celery worker` in its own process group, killed on drop.
struct Worker {
    child: Option<Child>,
    log: PathBuf,
    node: String,
}

impl Worker {
    fn start(
        venv: &Path,
        home: &TempDir,
        broker: &str,
        name: &str,
        extra: &[(&str, &str)],
    ) -> Worker {
        let log = home.join(&format!("{name}.log"));
        let out = fs::File::create(&log).unwrap();
        let node = format!("celery@{name}");
        let mut c = Command::new(venv.join("bin/airflow"));
        c.args([
            "celery",
            "worker",
            "--concurrency",
            "1",
            "--celery-hostname",
            &node,
        ])
        .envs(airflow_env(home.path(), broker))
        .env(
            "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT",
            free_port().to_string(),
        )
        .env("PATH", format!("{}/bin:/usr/bin:/bin", venv.display()))
        .stdin(Stdio::null())
        .stdout(out.try_clone().unwrap())
        .stderr(out)
        .process_group(0);
        for (k, v) in extra {
            c.env(k, v);
        }
        let worker = Worker {
            child: Some(c.spawn().expect("start airflow celery worker")),
            log,
            node,
        };
        let ready = format!("{} ready.", worker.node);
        let up = wait_until(secs(120), || {
            worker.log_text().contains(&ready).then_some(())
        });
        assert!(up.is_some(), "worker did not start:\n{}", worker.log_text());
        worker
    }
    fn pid(&self) -> i32 {
        self.child.as_ref().map_or(0, |c| c.id() as i32)
    }
    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) with plain integers, on the worker's main process.
        unsafe { libc::kill(self.pid(), signal) };
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let group = -(child.id() as i32);
            // SAFETY: kill(2) with plain integers; CONT first, so that a
            // frozen worker can take its KILL at once.
            unsafe {
                libc::kill(group, libc::SIGCONT);
                libc::kill(group, libc::SIGKILL);
            }
            let _ = child.wait();
        }
    }
}

struct Probe {
    code: i32,
    stdout: String,
    stderr: String,
    took: Duration,
}

fn finish(mut c: Command) -> Probe {
    let started = Instant::now();
    let out = c.stdin(Stdio::null()).output().expect("run the probe");
    Probe {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        took: started.elapsed(),
    }
}

/// The entrypoint's native answer to `celery … inspect ping ARGS`.
fn native(
    venv: &Path,
    home: &TempDir,
    broker: &str,
    args: &[&str],
    extra: &[(&str, &str)],
) -> Probe {
    let mut c = Command::new(bin());
    c.args(["celery", "--app", APP, "inspect", "ping"])
        .args(args)
        .env_clear()
        .envs(airflow_env(home.path(), broker))
        .env("PATH", format!("{}/bin:/usr/bin:/bin", venv.display()))
        .env("CONNECTION_CHECK_MAX_COUNT", "0")
        .env("AIRFLOW_ENTRYPOINT_RUN_AS_ROOT", "true")
        .env("AIRFLOW_ENTRYPOINT_LOG_LEVEL", "error");
    for (k, v) in extra {
        c.env(k, v);
    }
    finish(c)
}

/// The real `celery … inspect ping ARGS`.
fn python(
    venv: &Path,
    home: &TempDir,
    broker: &str,
    args: &[&str],
    extra: &[(&str, &str)],
) -> Probe {
    let mut c = Command::new(venv.join("bin/celery"));
    c.args(["--app", APP, "inspect", "ping"])
        .args(args)
        .env_clear()
        .envs(airflow_env(home.path(), broker))
        .env("PATH", format!("{}/bin:/usr/bin:/bin", venv.display()));
    for (k, v) in extra {
        c.env(k, v);
    }
    finish(c)
}

fn redis_keys(redis: &Server) -> BTreeSet<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &redis.port.to_string(), "--scan"])
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

/// Log lines of a worker that a probe must never cause.
fn trouble(log: &str) -> Vec<String> {
    log.lines()
        .filter(|l| {
            let l = l.to_ascii_lowercase();
            (l.contains("[error")
                || l.contains("reconnect")
                || l.contains("connection to broker lost")
                || l.contains("control command error")
                || l.contains("cannot decode"))
                && !l.contains("superuser")
        })
        .map(str::to_string)
        .collect()
}

fn setup(test: &str) -> Option<PathBuf> {
    if !needs_root(test) {
        return None;
    }
    airflow_venv("3.3.2", test)
}

#[test]
fn redis_native_ping_matches_celery_answers_per_node_freezes_and_leaves_nothing() {
    let Some(venv) = setup("redis_native_ping") else {
        return;
    };
    let _one = support::airflow::exclusive();
    let redis = servers::start_redis(None);
    let broker = format!("redis://127.0.0.1:{}/0", redis.port);
    let home = TempDir::new("celery-redis");
    let one = Worker::start(&venv, &home, &broker, "one", &[]);
    let two = Worker::start(&venv, &home, &broker, "two", &[]);

    // Healthy: the same output, streams and exit code as the real celery.
    let ours = native(&venv, &home, &broker, &["-d", &one.node], &[]);
    let theirs = python(&venv, &home, &broker, &["-d", &one.node], &[]);
    assert_eq!(ours.code, 0, "{}{}", ours.stdout, ours.stderr);
    assert_eq!(theirs.code, 0, "{}{}", theirs.stdout, theirs.stderr);
    assert_eq!(ours.stdout, theirs.stdout);
    assert_eq!(
        ours.stdout,
        "->  celery@one: OK\n        pong\n\n1 node online.\n"
    );
    assert!(ours.took < Duration::from_millis(500), "{:?}", ours.took);
    let json = ["-d", one.node.as_str(), "--json"];
    assert_eq!(
        native(&venv, &home, &broker, &json, &[]).stdout,
        python(&venv, &home, &broker, &json, &[]).stdout
    );

    // Each probe answers only for its own node; a broadcast lists both.
    let ours_two = native(&venv, &home, &broker, &["-d", &two.node], &[]);
    assert_eq!(ours_two.code, 0);
    assert!(ours_two.stdout.contains("celery@two: OK") && !ours_two.stdout.contains("celery@one"));
    let all = native(&venv, &home, &broker, &[], &[]);
    let all_python = python(&venv, &home, &broker, &[], &[]);
    let lines = |p: &Probe| {
        p.stdout
            .lines()
            .map(str::to_string)
            .collect::<BTreeSet<_>>()
    };
    assert_eq!(lines(&all), lines(&all_python));
    assert!(
        all.stdout.ends_with("\n2 nodes online.\n"),
        "{}",
        all.stdout
    );

    // No such node: Celery's error, exit 69, within the timeout.
    let nobody = native(
        &venv,
        &home,
        &broker,
        &["-d", "celery@nobody", "-t", "1"],
        &[],
    );
    let nobody_python = python(
        &venv,
        &home,
        &broker,
        &["-d", "celery@nobody", "-t", "1"],
        &[],
    );
    assert_eq!((nobody.code, nobody_python.code), (69, 69));
    assert!(nobody
        .stderr
        .contains("Error: No nodes replied within time constraint"));
    assert!(
        nobody.took < Duration::from_millis(1500),
        "{:?}",
        nobody.took
    );

    // Cleanliness: 100 probes leave no key, and the workers log no error.
    let keys_before = redis_keys(&redis);
    for _ in 0..100 {
        let p = native(&venv, &home, &broker, &["-d", &one.node], &[]);
        assert_eq!(p.code, 0, "{}", p.stderr);
    }
    let keys_after = redis_keys(&redis);
    let left: Vec<_> = keys_after.difference(&keys_before).collect();
    assert!(left.is_empty(), "keys left behind: {left:?}");
    assert!(
        trouble(&one.log_text()).is_empty(),
        "{:?}",
        trouble(&one.log_text())
    );

    // Frozen: unhealthy within the timeout; healthy again once resumed.
    one.signal(libc::SIGSTOP);
    let frozen = native(&venv, &home, &broker, &["-d", &one.node, "-t", "2"], &[]);
    assert_eq!(frozen.code, 69, "{}{}", frozen.stdout, frozen.stderr);
    assert!(
        frozen.took < Duration::from_millis(2500),
        "{:?}",
        frozen.took
    );
    let health_frozen = healthcheck(&home, &broker, &one.node);
    assert_eq!(health_frozen.code, 1, "{}", health_frozen.stdout);
    assert!(health_frozen
        .stdout
        .starts_with("unhealthy: celery@one did not answer ping"));
    one.signal(libc::SIGCONT);
    let back = wait_until(secs(30), || {
        (native(&venv, &home, &broker, &["-d", &one.node], &[]).code == 0).then_some(())
    });
    assert!(back.is_some(), "the resumed worker never answered");
    let health = healthcheck(&home, &broker, &one.node);
    assert_eq!(health.code, 0, "{}", health.stdout);
    assert!(
        health
            .stdout
            .starts_with("healthy: celery@one answered ping in ")
            && health.stdout.contains("consumes default"),
        "{}",
        health.stdout
    );
    // The frozen worker's late replies land in lists that expire.
    for key in redis_keys(&redis).difference(&keys_before) {
        let ttl = Command::new("redis-cli")
            .args(["-p", &redis.port.to_string(), "pttl", key])
            .output()
            .unwrap();
        let ttl: i64 = String::from_utf8_lossy(&ttl.stdout)
            .trim()
            .parse()
            .unwrap_or(-1);
        assert!(ttl > 0, "{key} has no expiry");
    }

    // A worker that pongs but consumes nothing (its consumer cancelled, as
    // the stuck worker of apache/airflow#63580 is): the real ping calls it
    // healthy, the native answer does not; consuming again, healthy.
    let control = |action: &str| {
        let mut c = Command::new(venv.join("bin/celery"));
        c.args(["--app", APP, "control", action, "default", "-d", &two.node])
            .env_clear()
            .envs(airflow_env(home.path(), &broker))
            .env("PATH", format!("{}/bin:/usr/bin:/bin", venv.display()));
        let p = finish(c);
        assert_eq!(p.code, 0, "{action}: {}{}", p.stdout, p.stderr);
    };
    control("cancel_consumer");
    let theirs = python(&venv, &home, &broker, &["-d", &two.node], &[]);
    assert_eq!(theirs.code, 0, "{}", theirs.stderr);
    let ours = native(&venv, &home, &broker, &["-d", &two.node], &[]);
    assert_eq!(ours.code, 69, "{}", ours.stdout);
    assert!(
        ours.stderr.contains("answers ping") && ours.stderr.contains("consumes no queue"),
        "{}",
        ours.stderr
    );
    control("add_consumer");
    assert_eq!(
        native(&venv, &home, &broker, &["-d", &two.node], &[]).code,
        0
    );
}

/// `--healthcheck worker` for `node` (given as the host name, since this
/// host runs two workers).
fn healthcheck(home: &TempDir, broker: &str, node: &str) -> Probe {
    let mut c = Command::new(bin());
    c.args(["--healthcheck", "worker"])
        .env_clear()
        .envs(airflow_env(home.path(), broker))
        .env(
            "AIRFLOW_ENTRYPOINT_HOSTNAME",
            node.trim_start_matches("celery@"),
        );
    finish(c)
}

#[test]
fn redis_wrong_password_fails_at_once_without_showing_it_and_a_down_broker_within_the_timeout() {
    let Some(venv) = setup("redis_wrong_password") else {
        return;
    };
    let redis = servers::start_redis(Some("right-pass"));
    let home = TempDir::new("celery-pass");
    let broker = format!("redis://:hunter2-wrong@127.0.0.1:{}/0", redis.port);
    let p = native(&venv, &home, &broker, &["-d", "celery@x", "-t", "5"], &[]);
    assert_eq!(p.code, 1, "{}", p.stderr);
    assert!(p.took < Duration::from_secs(1), "{:?}", p.took);
    assert!(
        !p.stderr.contains("hunter2") && !p.stdout.contains("hunter2"),
        "{}",
        p.stderr
    );
    let errors: Vec<&str> = p
        .stderr
        .lines()
        .filter(|l| l.starts_with("Error:"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", p.stderr);
    assert!(
        errors[0].contains("wrong password") && errors[0].contains(":***@"),
        "{}",
        errors[0]
    );

    let down = format!("redis://127.0.0.1:{}/0", free_port());
    let p = native(&venv, &home, &down, &["-d", "celery@x", "-t", "2"], &[]);
    assert_eq!(p.code, 1, "{}", p.stderr);
    assert!(p.took < Duration::from_millis(2500), "{:?}", p.took);
    // A blackholed broker (accepts, never answers) also ends in time.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_url = format!(
        "redis://127.0.0.1:{}/0",
        silent.local_addr().unwrap().port()
    );
    let p = native(
        &venv,
        &home,
        &silent_url,
        &["-d", "celery@x", "-t", "1"],
        &[],
    );
    assert_ne!(p.code, 0);
    assert!(p.took < Duration::from_millis(1500), "{:?}", p.took);
}

#[test]
fn remote_control_off_uses_the_heartbeat_and_a_stopped_worker_fails() {
    let Some(venv) = setup("remote_control_off") else {
        return;
    };
    let _one = support::airflow::exclusive();
    let redis = servers::start_redis(None);
    let broker = format!("redis://127.0.0.1:{}/0", redis.port);
    let home = TempDir::new("celery-norc");
    let off = [("AIRFLOW__CELERY__WORKER_ENABLE_REMOTE_CONTROL", "False")];
    let worker = Worker::start(&venv, &home, &broker, "quiet", &off);
    // The real ping cannot work without remote control.
    let theirs = python(&venv, &home, &broker, &["-d", &worker.node], &off);
    assert_eq!(theirs.code, 69);
    let ours = native(&venv, &home, &broker, &["-d", &worker.node], &off);
    assert_eq!(ours.code, 0, "{}{}", ours.stdout, ours.stderr);
    assert!(
        ours.stdout.contains("heartbeat (remote control is off)"),
        "{}",
        ours.stdout
    );
    assert!(ours.took < Duration::from_secs(3), "{:?}", ours.took);
    worker.signal(libc::SIGSTOP);
    let stopped = native(&venv, &home, &broker, &["-d", &worker.node], &off);
    assert_eq!(stopped.code, 69, "{}", stopped.stdout);
    assert!(
        stopped.stderr.contains("sent no heartbeat"),
        "{}",
        stopped.stderr
    );
    assert!(
        stopped.took < Duration::from_millis(3000),
        "{:?}",
        stopped.took
    );
    worker.signal(libc::SIGCONT);
}

#[test]
fn redis_restarted_under_a_running_worker() {
    let Some(venv) = setup("redis_restarted") else {
        return;
    };
    let _one = support::airflow::exclusive();
    let mut redis = servers::start_redis(None);
    let port = redis.port;
    let broker = format!("redis://127.0.0.1:{port}/0");
    let home = TempDir::new("celery-restart");
    let worker = Worker::start(&venv, &home, &broker, "survivor", &[]);
    assert_eq!(
        native(&venv, &home, &broker, &["-d", &worker.node], &[]).code,
        0
    );
    redis.stop();
    let down = native(&venv, &home, &broker, &["-d", &worker.node, "-t", "1"], &[]);
    assert_eq!(down.code, 1, "{}", down.stderr);
    let _redis = servers::start_redis_on(port, None);
    // What really happens here: the worker reconnects and consumes again;
    // until its mailbox and task consumers are back the native answer is
    // unhealthy, and once it is healthy the real ping agrees.
    let healthy = wait_until(secs(60), || {
        (native(&venv, &home, &broker, &["-d", &worker.node], &[]).code == 0).then_some(())
    });
    assert!(
        healthy.is_some(),
        "the worker never recovered:\n{}",
        worker.log_text()
    );
    let theirs = python(&venv, &home, &broker, &["-d", &worker.node], &[]);
    assert_eq!(theirs.code, 0, "{}{}", theirs.stdout, theirs.stderr);
}

#[test]
fn rabbitmq_native_ping_matches_celery_freezes_and_leaves_no_queue() {
    let Some(venv) = setup("rabbitmq_native_ping") else {
        return;
    };
    let _one = support::airflow::exclusive();
    let rabbit = servers::start_rabbitmq();
    let broker = format!("amqp://guest:guest@127.0.0.1:{}//", rabbit.port);
    let home = TempDir::new("celery-amqp");
    let worker = Worker::start(&venv, &home, &broker, "rabbit", &[]);
    let ours = native(&venv, &home, &broker, &["-d", &worker.node], &[]);
    let theirs = python(&venv, &home, &broker, &["-d", &worker.node], &[]);
    assert_eq!(
        (ours.code, theirs.code),
        (0, 0),
        "{}{}",
        ours.stdout,
        ours.stderr
    );
    assert_eq!(ours.stdout, theirs.stdout);

    let queues_before = servers::rabbitmq_queues(&rabbit);
    for _ in 0..100 {
        let p = native(&venv, &home, &broker, &["-d", &worker.node], &[]);
        assert_eq!(p.code, 0, "{}", p.stderr);
    }
    assert_eq!(servers::rabbitmq_queues(&rabbit), queues_before);
    assert!(
        trouble(&worker.log_text()).is_empty(),
        "{:?}",
        trouble(&worker.log_text())
    );

    worker.signal(libc::SIGSTOP);
    let frozen = native(&venv, &home, &broker, &["-d", &worker.node, "-t", "2"], &[]);
    assert_eq!(frozen.code, 69, "{}", frozen.stderr);
    assert!(
        frozen.took < Duration::from_millis(2500),
        "{:?}",
        frozen.took
    );
    worker.signal(libc::SIGCONT);
    let back = wait_until(secs(30), || {
        (native(&venv, &home, &broker, &["-d", &worker.node], &[]).code == 0).then_some(())
    });
    assert!(back.is_some());

    let wrong = format!("amqp://guest:hunter2@127.0.0.1:{}//", rabbit.port);
    let p = native(&venv, &home, &wrong, &["-d", &worker.node, "-t", "5"], &[]);
    assert_eq!(p.code, 1);
    assert!(p.took < Duration::from_secs(2), "{:?}", p.took);
    assert!(
        !p.stderr.contains("hunter2") && p.stderr.contains("refused the login"),
        "{}",
        p.stderr
    );
}
