//! Several components in one container (`a + b + ...`): output prefixed line
//! by line with stdout and stderr kept apart, restarts within a budget, the
//! exit status of the component that spent it, and one parallel stop. Plain
//! programs, and real Airflow in the `real_airflow_*` tests at the end.

mod support;
use std::fs;
use std::time::Instant;
use support::airflow::*;
use support::servers::*;
use support::*;

/// Processes whose command line holds `needle` (the test's temp dir).
fn processes_mentioning(needle: &str) -> Vec<i32> {
    all_pids()
        .into_iter()
        .filter(|pid| {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).contains(needle) && alive(*pid)
        })
        .collect()
}

#[test]
fn output_is_prefixed_line_by_line_streams_apart_long_and_partial_lines_kept() {
    // sh and sh-2: the second `sh` gets a suffix; both padded to 4.
    let mut running = Run::new(Mode::Pid1, "group-output")
        .env("AIRFLOW_ENTRYPOINT_RESTART", "never")
        .args(["--", "sh", "-c"])
        .arg(concat!(
            "printf 'one\\ntwo'; printf ' and a half\\n'; ",
            "head -c 40000 /dev/zero | tr '\\0' x; echo; ",
            "i=0; while [ $i -lt 500 ]; do echo \"a-$i-aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\"; i=$((i+1)); done; ",
            "while [ ! -e \"$T/b-done\" ]; do sleep 0.02; done; ",
            "printf 'partial-at-exit'"
        ))
        .args(["+", "--", "sh", "-c"])
        .arg(concat!(
            "echo to-stderr >&2; ",
            "i=0; while [ $i -lt 500 ]; do echo \"b-$i-bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\"; i=$((i+1)); done; ",
            "touch \"$T/b-done\"; exec sleep 1000"
        ))
        .start();
    let status = running.wait(secs(30));
    let (stdout, stderr) = (running.dir.read("stdout"), running.dir.read("stderr"));
    // RESTART=never: the first exit (0) ends the group with its status.
    assert_eq!(status.code(), Some(0), "{stderr}");
    for line in stdout.lines() {
        assert!(
            line.starts_with("sh   | ") || line.starts_with("sh-2 | "),
            "an unprefixed or mixed line: {line:?}"
        );
        let body = &line[7..];
        let whole = body.starts_with("a-") && body.ends_with(&"a".repeat(47))
            || body.starts_with("b-") && body.ends_with(&"b".repeat(47))
            || ["one", "two and a half", "partial-at-exit"].contains(&body)
            || body.bytes().all(|b| b == b'x');
        assert!(whole, "a line was cut or mixed: {line:?}");
    }
    let lines: Vec<&str> = stdout.lines().collect();
    assert!(lines.contains(&"sh   | one"));
    assert!(
        lines.contains(&"sh   | two and a half"),
        "a line written in two parts"
    );
    assert!(
        lines.contains(&"sh   | partial-at-exit"),
        "the last partial line was lost"
    );
    for (who, tag) in [("sh   | ", "a"), ("sh-2 | ", "b")] {
        let count = lines
            .iter()
            .filter(|l| l.starts_with(who) && l[7..].starts_with(&format!("{tag}-")))
            .count();
        assert_eq!(count, 500, "lines of {who:?} lost");
    }
    // 40000 bytes without a newline: pieces of 16 KiB, each prefixed.
    let pieces: Vec<usize> = lines
        .iter()
        .filter(|l| l.starts_with("sh   | x"))
        .map(|l| l.len() - 7)
        .collect();
    assert_eq!(pieces, vec![16384, 16384, 7232]);
    assert!(!stdout.contains("to-stderr"), "stderr went to stdout");
    assert!(stderr.lines().any(|l| l == "sh-2 | to-stderr"), "{stderr}");
    assert!(!stdout.contains('\x1b'), "colour on a file");
}

#[test]
fn colour_only_when_forced_and_no_color_wins() {
    // The second part ends the group once the first has spoken.
    let parts = [
        "--",
        "sh",
        "-c",
        "echo hello; echo said > \"$T/said\"; exec sleep 1000",
        "+",
        "--",
        "sh",
        "-c",
        "while [ ! -e \"$T/said\" ]; do sleep 0.02; done",
    ];
    let forced = Run::new(Mode::Subreaper, "group-colour")
        .env("AIRFLOW_ENTRYPOINT_RESTART", "never")
        .env("FORCE_COLOR", "1")
        .args(parts)
        .run(secs(20));
    assert!(
        forced.stdout.contains("\x1b[36msh   | \x1b[0mhello"),
        "{:?}",
        forced.stdout
    );
    let both = Run::new(Mode::Subreaper, "group-colour")
        .env("AIRFLOW_ENTRYPOINT_RESTART", "never")
        .env("FORCE_COLOR", "1")
        .env("NO_COLOR", "1")
        .args(parts)
        .run(secs(20));
    assert!(both.stdout.contains("sh   | hello"), "{:?}", both.stdout);
    assert!(!both.stdout.contains('\x1b'), "{:?}", both.stdout);
}

#[test]
fn a_component_that_always_fails_spends_its_budget_and_its_code_is_the_exit() {
    let mut running = Run::new(Mode::Pid1, "group-budget")
        .env("AIRFLOW_ENTRYPOINT_RESTART_LIMIT", "2")
        .args(["--", "sh", "-c", "date +%s.%N >> \"$T/tries\"; exit 3"])
        .args(["+", "--", "sleep", "1000"])
        .start();
    let status = running.wait(secs(30));
    let stderr = running.dir.read("stderr");
    assert_eq!(status.code(), Some(3), "{stderr}");
    let tries: Vec<f64> = running
        .dir
        .read("tries")
        .lines()
        .filter_map(|l| l.parse().ok())
        .collect();
    assert_eq!(tries.len(), 3, "one start and two restarts: {stderr}");
    // Back-off: about 1 s, then about 2 s (each ×0.5–1.5 for jitter).
    let gaps: Vec<f64> = tries.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps[0] >= 0.45 && gaps[0] < 2.0, "{gaps:?}");
    assert!(gaps[1] >= 0.95 && gaps[1] < 4.0, "{gaps:?}");
    assert_eq!(stderr.matches("exited with 3").count(), 3, "{stderr}");
    assert_eq!(stderr.matches("restarting it").count(), 2, "{stderr}");
    assert!(stderr.contains("its restart budget is spent"), "{stderr}");
    assert!(
        stderr.contains("summary: 2 components, 2 restart(s); exit 3"),
        "{stderr}"
    );
}

#[test]
fn restart_never_exits_on_the_first_death_with_128_plus_the_signal() {
    let mut running = Run::new(Mode::Pid1, "group-never")
        .env("AIRFLOW_ENTRYPOINT_RESTART", "never")
        .args(["--", "sh", "-c", "echo once >> \"$T/tries\"; kill -KILL $$"])
        .args(["+", "--", "sleep", "1000"])
        .start();
    let status = running.wait(secs(30));
    let stderr = running.dir.read("stderr");
    assert_eq!(status.code(), Some(137), "{stderr}");
    assert_eq!(running.dir.read("tries"), "once\n");
    assert!(stderr.contains("was killed by SIGKILL (137)"), "{stderr}");
    assert!(stderr.contains("RESTART=never"), "{stderr}");
}

#[test]
fn sigterm_stops_every_component_in_parallel_and_leaves_no_process() {
    let dir = TempDir::new("group-stop-marks");
    let tag = dir.path().display().to_string();
    // Each takes 2 s to stop: in turn that would be 6 s, in parallel 2.
    let part = |n: u32| {
        format!(
            "trap 'sleep 2; echo {n} >> {tag}/stopped; exit 0' TERM; touch {tag}/up{n}; \
             while :; do sleep 100 & wait $!; done"
        )
    };
    let mut running = Run::new(Mode::Subreaper, "group-stop")
        .args(["--", "sh", "-c", &part(1), "+", "--", "sh", "-c", &part(2)])
        .args(["+", "--", "sh", "-c", &part(3)])
        .start();
    for n in 1..=3 {
        let up = dir.join(&format!("up{n}"));
        assert!(
            wait_until(secs(20), || up.exists().then_some(())).is_some(),
            "{}",
            running.dir.read("stderr")
        );
    }
    assert!(processes_mentioning(&tag).len() >= 3);
    let sent = Instant::now();
    running.signal(libc::SIGTERM);
    let status = running.wait(secs(30));
    let took = sent.elapsed().as_secs_f64();
    let stderr = running.dir.read("stderr");
    assert_eq!(status.code(), Some(0), "a clean stop is 0: {stderr}");
    assert!((1.9..5.0).contains(&took), "not in parallel: {took:.1} s");
    assert_eq!(dir.read("stopped").lines().count(), 3, "{stderr}");
    assert!(stderr.contains("stopping every component"), "{stderr}");
    let left = processes_mentioning(&tag);
    assert!(left.is_empty(), "left running: {left:?}");
}

#[test]
fn a_component_ignoring_term_is_killed_at_the_deadline_and_a_second_term_escalates() {
    let ignoring = "trap '' TERM; echo up > \"$T/up\"; while :; do sleep 100 & wait $!; done";
    // The deadline: GRACE_PERIOD.
    let mut running = Run::new(Mode::Pid1, "group-deadline")
        .env("AIRFLOW_ENTRYPOINT_GRACE_PERIOD", "1")
        .args(["--", "sh", "-c", ignoring, "+", "--", "sleep", "1000"])
        .start();
    running.wait_file("up", secs(20));
    let sent = Instant::now();
    running.signal(libc::SIGTERM);
    let status = running.wait(secs(30));
    let took = sent.elapsed().as_secs_f64();
    let stderr = running.dir.read("stderr");
    assert_eq!(status.code(), Some(137), "{stderr}");
    assert!((0.9..4.0).contains(&took), "{took:.1} s");
    assert!(
        stderr.contains("still running at the stop deadline"),
        "{stderr}"
    );

    // A second TERM does not wait for a long deadline.
    let mut running = Run::new(Mode::Pid1, "group-second")
        .env("AIRFLOW_ENTRYPOINT_GRACE_PERIOD", "120")
        .args(["--", "sh", "-c", ignoring, "+", "--", "sleep", "1000"])
        .start();
    running.wait_file("up", secs(20));
    running.signal(libc::SIGTERM);
    let first = wait_until(secs(20), || {
        running
            .dir
            .read("stderr")
            .contains("stopping every component")
            .then_some(())
    });
    assert!(first.is_some(), "{}", running.dir.read("stderr"));
    let sent = Instant::now();
    running.signal(libc::SIGTERM);
    let status = running.wait(secs(30));
    assert_eq!(status.code(), Some(137), "{}", running.dir.read("stderr"));
    assert!(sent.elapsed() < secs(5));
    assert!(running.dir.read("stderr").contains("a second stop signal"));
}

#[test]
fn a_dead_components_leftovers_are_stopped_before_it_restarts() {
    // The first run leaves a child in its process group that ignores TERM,
    // then dies; only a KILL before the restart ends that child.
    let script = "if [ ! -e \"$T/first\" ]; then touch \"$T/first\"; \
                  (trap '' TERM; exec sh -c 'echo $$ > \"$T/left.tmp\"; mv \"$T/left.tmp\" \"$T/left\"; exec sleep 1001') & \
                  while [ ! -e \"$T/left\" ]; do sleep 0.02; done; exit 1; fi; \
                  echo 2 > \"$T/second\"; exec sleep 1000";
    let mut running = Run::new(Mode::Subreaper, "group-leftover")
        .args(["--", "sh", "-c", script, "+", "--", "sleep", "1000"])
        .start();
    let left: i32 = running.wait_file("left", secs(20)).trim().parse().unwrap();
    running.wait_file("second", secs(20));
    let gone = wait_until(secs(10), || (!alive(left)).then_some(()));
    assert!(
        gone.is_some(),
        "the first run's child still runs beside the second: {}",
        running.dir.read("stderr")
    );
    assert!(running.dir.read("stderr").contains("restarting it"));
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait(secs(30)).code(), Some(0));
}

// ---- Real Airflow 3.3.2: `all` (api-server, scheduler, dag-processor,
// triggerer), on SQLite and on PostgreSQL with a Celery worker.

/// The entrypoint as PID 1, root → astro, running `command` as a group
/// that migrates the database first.
fn airflow_group(venv: &std::path::Path, home: &TempDir, api_port: u16, command: &[&str]) -> Run {
    airflow_run("group-airflow", venv, home, api_port)
        .env("_AIRFLOW_DB_MIGRATE", "true")
        .args(command)
}

/// The health endpoint once every component in `wanted` is healthy.
fn all_healthy(port: u16, wanted: &[&str], bound: std::time::Duration) -> Option<String> {
    wait_until(bound, || {
        match http("GET", port, "/api/v2/monitor/health", None) {
            Some((200, body))
                if wanted
                    .iter()
                    .all(|c| body.contains(&format!("\"{c}\":{{\"status\":\"healthy\""))) =>
            {
                Some(body)
            }
            _ => None,
        }
    })
}

/// The namespace PID the log gives for the latest start of `component`.
fn started_pid(stderr: &str, component: &str) -> Option<i32> {
    stderr
        .lines()
        .rfind(|l| l.contains(&format!("started {component} component={component} ")))?
        .split_whitespace()
        .find_map(|w| w.strip_prefix("pid="))?
        .parse()
        .ok()
}

#[test]
fn real_airflow_all_on_sqlite_comes_up_in_order_restarts_a_killed_scheduler_and_stops_on_term() {
    if !needs_root("group_sqlite_e2e") {
        return;
    }
    let Some(venv) = airflow_venv("3.3.2", "group_sqlite_e2e") else {
        return;
    };
    let _one = exclusive();
    let home = airflow_home("group-sqlite");
    let port = free_port();
    let mut running = airflow_group(&venv, &home, port, &["all"]).start();
    let wanted = ["metadatabase", "scheduler", "triggerer", "dag_processor"];
    let body = all_healthy(port, &wanted, secs(300));
    let stderr = running.dir.read("stderr");
    assert!(body.is_some(), "never healthy:\n{stderr}");

    // The migration ran once, before any component; the api-server first,
    // the others once it answered.
    let at = |needle: &str| stderr.find(needle).unwrap_or(usize::MAX);
    assert!(
        at("airflow db migrate") < at("started api-server"),
        "{stderr}"
    );
    assert!(
        at("started api-server") < at("the api-server answers"),
        "{stderr}"
    );
    assert!(
        at("the api-server answers") < at("started scheduler"),
        "{stderr}"
    );
    // Every component's output, prefixed and padded to `dag-processor`.
    let out = running.dir.read("stdout") + &stderr;
    for name in ["api-server", "scheduler", "dag-processor", "triggerer"] {
        assert!(
            out.lines()
                .any(|l| l.starts_with(&format!("{name:<13} | "))),
            "no output prefixed {name}:\n{out}"
        );
    }
    assert!(
        out.lines().all(|l| !l.starts_with("scheduler |")),
        "a prefix that is not padded"
    );

    // SIGKILL the scheduler's main process: it is restarted, with a log
    // line, and its executor processes do not outlive it.
    let init = running.entrypoint_pid();
    let ns_pid = started_pid(&stderr, "scheduler").expect("the scheduler's pid in the log");
    let host = host_pid(init, ns_pid).expect("the scheduler in the namespace");
    let left_behind = descendants(host);
    // SAFETY: kill(2) with plain integers.
    unsafe { libc::kill(host, libc::SIGKILL) };
    let restarted = wait_until(secs(60), || {
        let stderr = running.dir.read("stderr");
        (stderr.matches("started scheduler").count() >= 2).then_some(stderr)
    });
    let stderr = restarted.unwrap_or_else(|| panic!("{}", running.dir.read("stderr")));
    assert!(
        stderr.contains("scheduler was killed by SIGKILL (137)")
            && stderr.contains("restarting it"),
        "{stderr}"
    );
    for pid in left_behind {
        assert!(
            wait_until(secs(20), || (!alive(pid)).then_some(())).is_some(),
            "pid {pid} of the killed scheduler still runs"
        );
    }
    assert!(
        all_healthy(port, &["scheduler"], secs(180)).is_some(),
        "the restarted scheduler never heartbeat:\n{}",
        running.dir.read("stderr")
    );

    // TERM: every component stops, in parallel, well inside the deadline.
    let sent = Instant::now();
    running.signal(libc::SIGTERM);
    let status = running.wait(secs(90));
    let took = sent.elapsed();
    let stderr = running.dir.read("stderr");
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(took < secs(30), "the stop took {took:?}");
    assert!(
        !stderr.contains("SIGKILL;"),
        "a component needed KILL: {stderr}"
    );
    assert!(stderr.contains("stragglers_kill=0"), "{stderr}");
    assert_eq!(
        stderr.matches("] stopped component=").count(),
        4,
        "{stderr}"
    );
}

#[test]
fn real_airflow_all_plus_a_celery_worker_on_postgres_runs_a_task_and_finishes_it_on_term() {
    if !needs_root("group_celery_e2e") {
        return;
    }
    let Some(venv) = airflow_venv("3.3.2", "group_celery_e2e") else {
        return;
    };
    let _one = exclusive();
    let cluster = PgCluster::init(false);
    let pg = cluster.start();
    assert!(pg.wait_log("ready to accept connections", secs(60)));
    let redis = start_redis(None);
    let home = airflow_home("group-celery");
    write_sleeper_dag(&home, "warm_group");
    let port = free_port();
    let db = format!(
        "postgresql+psycopg2://airflow:airflow-pw@127.0.0.1:{}/airflow",
        cluster.port
    );
    let command = [
        "api-server",
        "+",
        "scheduler",
        "+",
        "dag-processor",
        "+",
        "triggerer",
        "+",
        "worker",
    ];
    let mut running = airflow_group(&venv, &home, port, &command)
        .env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", &db)
        .env("AIRFLOW__CORE__EXECUTOR", "CeleryExecutor")
        .env(
            "AIRFLOW__CELERY__BROKER_URL",
            format!("redis://127.0.0.1:{}/0", redis.port),
        )
        .env(
            "AIRFLOW__CELERY__RESULT_BACKEND",
            format!("db+{}", db.replace("+psycopg2", "")),
        )
        .env("AIRFLOW__CELERY__WORKER_CONCURRENCY", "1")
        .start();
    let wanted = ["metadatabase", "scheduler", "triggerer", "dag_processor"];
    assert!(
        all_healthy(port, &wanted, secs(300)).is_some(),
        "never healthy:\n{}",
        running.dir.read("stderr")
    );
    let parsed = wait_until(secs(240), || {
        matches!(
            http("GET", port, "/api/v2/dags/warm_group", None),
            Some((200, _))
        )
        .then_some(())
    });
    assert!(
        parsed.is_some(),
        "the DAG was never parsed:\n{}",
        running.dir.read("stderr")
    );
    let (code, body) = http(
        "PATCH",
        port,
        "/api/v2/dags/warm_group",
        Some(r#"{"is_paused": false}"#),
    )
    .unwrap();
    assert_eq!(code, 200, "{body}");
    let (code, body) = http(
        "POST",
        port,
        "/api/v2/dags/warm_group/dagRuns",
        Some(r#"{"logical_date": null}"#),
    )
    .unwrap();
    assert!(code == 200 || code == 201, "{code} {body}");
    let started = home.join("markers/started");
    assert!(
        wait_until(secs(240), || started.exists().then_some(())).is_some(),
        "the task never started:\n{}",
        running.dir.read("stderr")
    );

    // TERM to the whole group: the worker alone gets it (scope child) and
    // lets its running task finish; the others stop beside it.
    running.signal(libc::SIGTERM);
    let status = running.wait(secs(120));
    let stderr = running.dir.read("stderr");
    assert!(
        home.join("markers/finished").exists(),
        "the running task was cut off:\n{stderr}"
    );
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("SIGKILL;"), "{stderr}");
    assert_eq!(
        stderr.matches("] stopped component=").count(),
        5,
        "{stderr}"
    );
    drop(pg);
    drop(redis);
}
