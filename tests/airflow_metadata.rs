//! The questions Kubernetes asks the metadata database, answered without
//! Python and compared, on the same real PostgreSQL, with what real
//! Airflow 3.3.2 answers: the migrations wait and `db check-migrations`,
//! the migrate skip, and job liveness (`--healthcheck`, `jobs check`) for a
//! running, a SIGSTOP'd and a resumed scheduler, a triggerer and a
//! dag-processor, and another host name.

mod support;
use std::fs;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use support::servers::*;
use support::*;

const HEAD: &str = "d2f4e1b3c5a7";
const PW: &str = "airflow-pw";
/// Small, so that a stopped scheduler turns unhealthy quickly.
const THRESHOLD: &str = "6";

struct Env {
    venv: PathBuf,
    home: TempDir,
    url: String,
    /// The URL's password: never in the entrypoint's output.
    password: &'static str,
}

impl Env {
    fn vars(&self) -> Vec<(String, String)> {
        vec![
            (
                "PATH".into(),
                format!("{}/bin:/usr/bin:/bin", self.venv.display()),
            ),
            (
                "AIRFLOW_HOME".into(),
                self.home.path().display().to_string(),
            ),
            (
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN".into(),
                self.url.clone(),
            ),
            ("AIRFLOW__CORE__LOAD_EXAMPLES".into(), "False".into()),
            (
                "AIRFLOW__CORE__DAGS_FOLDER".into(),
                self.home.join("dags").display().to_string(),
            ),
            (
                "AIRFLOW__SCHEDULER__SCHEDULER_HEALTH_CHECK_THRESHOLD".into(),
                THRESHOLD.into(),
            ),
            (
                "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD".into(),
                THRESHOLD.into(),
            ),
            (
                "AIRFLOW__DAG_PROCESSOR__HEALTH_CHECK_THRESHOLD".into(),
                THRESHOLD.into(),
            ),
            (
                "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC".into(),
                "1".into(),
            ),
            ("AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC".into(), "1".into()),
            ("AIRFLOW__SCHEDULER__JOB_HEARTBEAT_SEC".into(), "1".into()),
            (
                "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK".into(),
                "False".into(),
            ),
            (
                "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT".into(),
                free_port().to_string(),
            ),
            (
                "AIRFLOW__TRIGGERER__TRIGGERER_LOG_SERVER_PORT".into(),
                free_port().to_string(),
            ),
        ]
    }
    /// The real airflow command: (exit code, stdout, stderr).
    fn airflow(&self, args: &[&str]) -> (i32, String, String) {
        let out = Command::new(self.venv.join("bin/airflow"))
            .args(args)
            .env_clear()
            .envs(self.vars())
            .current_dir(self.home.path())
            .stdin(Stdio::null())
            .output()
            .expect("run airflow");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
    /// A long-running Airflow component in its own process group.
    fn component(&self, name: &str) -> Component {
        let log = self.home.join(&format!("{name}.log"));
        let file = fs::File::create(&log).unwrap();
        let mut c = Command::new(self.venv.join("bin/airflow"));
        std::os::unix::process::CommandExt::process_group(&mut c, 0);
        let child = c
            .arg(name)
            .env_clear()
            .envs(self.vars())
            .current_dir(self.home.path())
            .stdin(Stdio::null())
            .stdout(file.try_clone().unwrap())
            .stderr(file)
            .spawn()
            .expect("start an airflow component");
        Component { child, log }
    }
    /// The entrypoint with the same environment.
    fn entrypoint(&self, args: &[&str]) -> Run {
        let mut run = Run::new(Mode::Subreaper, "meta");
        for (k, v) in self.vars() {
            run = run.env(&k, v);
        }
        run.env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "60").args(args)
    }
    fn run(&self, args: &[&str]) -> Finished {
        let f = self.entrypoint(args).run(secs(120));
        assert_no_secret(&f, self.password);
        f
    }
}

struct Component {
    child: Child,
    log: PathBuf,
}

impl Component {
    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on the component's own process group.
        unsafe { libc::kill(-(self.child.id() as i32), signal) };
    }
    fn log_text(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Component {
    fn drop(&mut self) {
        self.signal(libc::SIGCONT);
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }
}

fn airflow_home(tag: &str) -> TempDir {
    let home = TempDir::new(tag);
    fs::create_dir_all(home.join("dags")).unwrap();
    home
}

/// Polls `check` every 250 ms (each call is a real query) until it holds.
fn eventually(bound: Duration, mut check: impl FnMut() -> bool) -> bool {
    let until = Instant::now() + bound;
    while Instant::now() < until {
        if check() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    false
}

/// The native `jobs check` and the real one agree: same exit code, and the
/// same message on the same stream. The two ask a few seconds apart (the
/// real one takes that long), and a heartbeat may age past its threshold in
/// between on a loaded machine: a disagreement is asked again, twice.
fn same_jobs_answer(env: &Env, args: &[&str]) -> i32 {
    let mut last = String::new();
    for _ in 0..3 {
        match jobs_answers_agree(env, args) {
            Ok(code) => return code,
            Err(why) => last = why,
        }
    }
    panic!("{last}");
}

fn jobs_answers_agree(env: &Env, args: &[&str]) -> Result<i32, String> {
    let mut full = vec!["jobs", "check"];
    full.extend_from_slice(args);
    let (code, out, err) = env.airflow(&full);
    let mut through = vec!["airflow"];
    through.extend_from_slice(&full);
    let native = env.run(&through);
    if native.code != Some(code) {
        return Err(format!(
            "{args:?}: exit {:?} native ({}) / {code} airflow ({err})",
            native.code, native.stderr
        ));
    }
    let message = |text: &str| {
        text.lines()
            .map(str::trim)
            .rfind(|l| l.starts_with("Found") || l.starts_with("No alive"))
            .map(str::to_string)
    };
    let (ours, theirs) = if code == 0 {
        (message(&native.stdout), message(&out))
    } else {
        if message(&err).is_none() {
            return Err(format!("{args:?}: airflow said: {err}"));
        }
        (message(&native.stderr), message(&err))
    };
    if ours != theirs {
        return Err(format!("{args:?}: native {ours:?} / airflow {theirs:?}"));
    }
    Ok(code)
}

fn healthcheck(env: &Env, component: &str, extra: &[(&str, &str)]) -> Finished {
    let mut run = env.entrypoint(&["--healthcheck", component]);
    for (k, v) in extra {
        run = run.env(k, v);
    }
    let f = run.run(secs(30));
    assert_no_secret(&f, env.password);
    f
}

fn liveness_matches_airflow(env: &Env) {
    let scheduler = env.component("scheduler");
    let local = ["--job-type", "SchedulerJob", "--local"];
    let alive = eventually(secs(180), || {
        env.airflow(&["jobs", "check", "--job-type", "SchedulerJob", "--local"])
            .0
            == 0
    });
    assert!(
        alive,
        "the scheduler never became alive:\n{}",
        scheduler.log_text()
    );
    let f = healthcheck(env, "scheduler", &[]);
    f.expect_code(0);
    assert!(
        f.stdout.starts_with("healthy: SchedulerJob "),
        "{}",
        f.stdout
    );
    assert!(
        f.stdout.contains("heartbeat") && f.stdout.contains("job table"),
        "{}",
        f.stdout
    );
    assert_eq!(same_jobs_answer(env, &local), 0);
    assert_eq!(same_jobs_answer(env, &["--job-type", "SchedulerJob"]), 0);

    // Another host name: no job of its own.
    let f = healthcheck(
        env,
        "scheduler",
        &[("AIRFLOW_ENTRYPOINT_HOSTNAME", "elsewhere.example")],
    );
    f.expect_code(1);
    assert!(
        f.stdout
            .contains("no running SchedulerJob on elsewhere.example"),
        "{}",
        f.stdout
    );
    assert_eq!(
        same_jobs_answer(
            env,
            &[
                "--job-type",
                "SchedulerJob",
                "--hostname",
                "elsewhere.example"
            ]
        ),
        1
    );

    // Stopped: unhealthy once the threshold passes, and Airflow agrees.
    let before = healthcheck(env, "scheduler", &[]);
    before.expect_code(0);
    scheduler.signal(libc::SIGSTOP);
    let stopped = Instant::now();
    let age: f64 = before
        .stdout
        .split("heartbeat ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|a| a.parse().ok())
        .expect("the heartbeat's age");
    assert!(eventually(secs(60), || healthcheck(env, "scheduler", &[])
        .code
        == Some(1)));
    let threshold: f64 = THRESHOLD.parse().unwrap();
    // The last heartbeat was `age` old when the check before the stop ran.
    assert!(
        stopped.elapsed().as_secs_f64() + age + 1.0 >= threshold,
        "unhealthy too soon: {:?} after the stop, heartbeat {age} s old before it",
        stopped.elapsed()
    );
    let f = healthcheck(env, "scheduler", &[]);
    assert!(f.stdout.contains("past the 6 s threshold"), "{}", f.stdout);
    assert_eq!(same_jobs_answer(env, &local), 1);

    // Resumed: healthy again.
    scheduler.signal(libc::SIGCONT);
    assert!(eventually(secs(60), || healthcheck(env, "scheduler", &[])
        .code
        == Some(0)));
    assert_eq!(same_jobs_answer(env, &local), 0);

    // The triggerer and the dag-processor, each from its own jobs.
    let triggerer = env.component("triggerer");
    let processor = env.component("dag-processor");
    for (component, job_type, log) in [
        ("triggerer", "TriggererJob", &triggerer),
        ("dag-processor", "DagProcessorJob", &processor),
    ] {
        let healthy = eventually(secs(180), || {
            healthcheck(env, component, &[]).code == Some(0)
        });
        assert!(healthy, "{component} never healthy:\n{}", log.log_text());
        assert_eq!(
            same_jobs_answer(env, &["--job-type", job_type, "--local"]),
            0
        );
    }
    // Several alive jobs without a type: Airflow's own message and code.
    same_jobs_answer(env, &["--limit", "0"]);
    same_jobs_answer(env, &["--limit", "0", "--allow-multiple"]);
}

fn migrations_match_airflow(env: &Env, set_version: &dyn Fn(&str)) {
    // Before `airflow db migrate`: the wait names what it waits for.
    let mut waiting = env
        .entrypoint(&["--wait-only", "--wait-for-migrations"])
        .start();
    let named = wait_until(secs(60), || {
        waiting
            .dir
            .read("stderr")
            .contains(&format!("waiting for {HEAD}"))
            .then_some(())
    });
    assert!(named.is_some(), "{}", waiting.dir.read("stderr"));
    // check-migrations agrees that it is not there yet.
    let (code, _, err) = env.airflow(&["db", "check-migrations", "-t", "1"]);
    let native = env.run(&["airflow", "db", "check-migrations", "-t", "1"]);
    assert_eq!(
        (code, native.code),
        (1, Some(1)),
        "{err}\n{}",
        native.stderr
    );
    assert!(
        native
            .stderr
            .contains("There are still unapplied migrations after 1 seconds"),
        "{}",
        native.stderr
    );
    assert!(
        err.contains("There are still unapplied migrations after 1 seconds"),
        "{err}"
    );

    let (code, _, err) = env.airflow(&["db", "migrate"]);
    assert_eq!(code, 0, "airflow db migrate: {err}");
    let migrated = Instant::now();
    let status = waiting.wait(secs(60));
    assert_eq!(status.code(), Some(0), "{}", waiting.dir.read("stderr"));
    assert!(migrated.elapsed() < Duration::from_secs(10));

    // At head: both pass, bare and after `airflow`.
    let (code, _, err) = env.airflow(&["db", "check-migrations", "--migration-wait-timeout", "5"]);
    assert_eq!(code, 0, "{err}");
    env.run(&["db", "check-migrations", "--migration-wait-timeout=5"])
        .expect_code(0);
    env.run(&["airflow", "db", "check-migrations"])
        .expect_code(0);

    // _AIRFLOW_DB_MIGRATE skips at head, and says how long it looked.
    let f = env
        .entrypoint(&["--", "true"])
        .env("_AIRFLOW_DB_MIGRATE", "true")
        .run(secs(120));
    f.expect_code(0);
    assert!(
        f.stderr.contains("skipping airflow db migrate") && f.stderr.contains(" ms)"),
        "{}",
        f.stderr
    );
    assert_no_secret(&f, env.password);

    // An older revision in the table: both say unapplied; FAB is checked too.
    set_version("'22ed7efa9da2'");
    let (code, _, _) = env.airflow(&["db", "check-migrations", "-t", "1"]);
    let native = env.run(&["airflow", "db", "check-migrations", "-t", "1"]);
    assert_eq!((code, native.code), (1, Some(1)), "{}", native.stderr);
    assert!(
        native
            .stderr
            .contains("MigrationHead(s) in DB: {'22ed7efa9da2'}"),
        "{}",
        native.stderr
    );
    set_version(&format!("'{HEAD}'"));
}

/// One Airflow stack at a time: the machine has two cores, and the
/// liveness thresholds are short.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn mariadb_answers_match_airflow() {
    if !needs_root("mariadb_answers_match_airflow") {
        return;
    }
    let Some(venv) = airflow_venv("3.3.2", "mariadb_answers_match_airflow") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let server = start_mariadb();
    let env = Env {
        venv,
        home: airflow_home("meta-maria"),
        url: format!(
            "mysql+mysqldb://airflow:my-pw@127.0.0.1:{}/airflow",
            server.port
        ),
        password: "my-pw",
    };
    let set_version = |revision: &str| {
        mariadb_sql(
            &server,
            &format!("UPDATE airflow.alembic_version SET version_num = {revision}"),
        );
    };
    migrations_match_airflow(&env, &set_version);
    liveness_matches_airflow(&env);
}

#[test]
fn postgres_answers_match_airflow() {
    if !needs_root("postgres_answers_match_airflow") {
        return;
    }
    let Some(venv) = airflow_venv("3.3.2", "postgres_answers_match_airflow") else {
        return;
    };
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let cluster = PgCluster::init(false);
    let pg = cluster.start();
    assert!(pg.wait_log("ready to accept connections", secs(60)));
    let env = Env {
        venv,
        home: airflow_home("meta-pg"),
        url: format!(
            "postgresql+psycopg2://airflow:{PW}@127.0.0.1:{}/airflow",
            cluster.port
        ),
        password: PW,
    };
    let set_version = |revision: &str| {
        cluster.psql_as_airflow(&format!(
            "UPDATE alembic_version SET version_num = {revision}"
        ));
    };
    migrations_match_airflow(&env, &set_version);
    liveness_matches_airflow(&env);
}
