//! Airflow commands without Airflow: a fake `airflow` in a fake venv records
//! how it was called, so the command mapping, the version detection, the
//! per-command signal scope and the start-up steps can be checked fast.
//! (tests/airflow_e2e.rs runs the real thing.)

mod support;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use support::*;

/// A venv-like tree with an `airflow` that appends its argv to $T/calls,
/// exits with $FAKE_EXIT_<n> for its n-th call if set, and with `version`
/// in its dist-info name.
fn fake_airflow(dir: &TempDir, version: &str) -> String {
    let venv = dir.join("venv");
    fs::create_dir_all(venv.join("bin")).unwrap();
    fs::create_dir_all(venv.join(format!(
        "lib/python3.11/site-packages/apache_airflow-{version}.dist-info"
    )))
    .unwrap();
    fs::write(venv.join("pyvenv.cfg"), "home = /usr/bin\n").unwrap();
    let script = r#"#!/bin/sh
echo "airflow $*" >> "$T/calls"
n=$(wc -l < "$T/calls")
case "$*" in
  "db migrate"|"db upgrade")
    # Fails the first $FAKE_MIGRATE_FAILS runs, like a concurrent migration.
    [ "$(grep -c -E "db (migrate|upgrade)" "$T/calls")" -le "${FAKE_MIGRATE_FAILS:-0}" ] && exit 3
    exit 0 ;;
  "celery worker"*) trap 'echo worker-got-TERM >> "$T/calls"; exit 0' TERM; echo ready > "$T/ready"; while :; do sleep 100 & wait $!; done ;;
esac
exit 0
"#;
    fs::write(venv.join("bin/airflow"), script).unwrap();
    fs::write(
        venv.join("bin/python"),
        "#!/bin/sh\necho \"python $*\" >> \"$T/calls\"\n",
    )
    .unwrap();
    for f in ["bin/airflow", "bin/python"] {
        fs::set_permissions(venv.join(f), fs::Permissions::from_mode(0o755)).unwrap();
    }
    format!("{}:/usr/bin:/bin", venv.join("bin").display())
}

/// A run whose $T holds the fake Airflow, with a SQLite metadata DB there.
fn run(version: &str, tag: &str) -> Run {
    let run = Run::new(Mode::Subreaper, tag);
    let path = fake_airflow(run.dir(), version);
    let db = format!("sqlite:///{}/airflow.db", run.dir().path().display());
    run.env("PATH", path)
        .env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", db)
}

fn calls(f: &Finished) -> Vec<String> {
    f.file("calls").lines().map(String::from).collect()
}

#[test]
fn bare_components_run_as_airflow_subcommands() {
    let r = run("3.3.2", "bare");
    let f = r.args(["scheduler", "--num-runs", "1"]).run(secs(20));
    f.expect_code(0);
    assert_eq!(calls(&f), vec!["airflow scheduler --num-runs 1"]);
    let r = run("3.3.2", "bare");
    let f = r.args(["airflow", "webserver"]).run(secs(20));
    f.expect_code(0);
    assert_eq!(
        calls(&f),
        vec!["airflow webserver"],
        "`airflow ...` runs as given"
    );
}

#[test]
fn webserver_and_api_server_follow_the_installed_version() {
    let r = run("3.3.2", "v3");
    let f = r.arg("webserver").run(secs(20));
    f.expect_code(0);
    assert_eq!(calls(&f), vec!["airflow api-server"]);
    assert!(
        f.stderr
            .contains("`webserver` runs `airflow api-server` on Airflow 3"),
        "{}",
        f.stderr
    );
    let r = run("2.11.0", "v2");
    let f = r.arg("api-server").run(secs(20));
    f.expect_code(0);
    assert_eq!(calls(&f), vec!["airflow webserver"]);
    let r = run("3.3.2", "envver");
    let f = r
        .env("AIRFLOW_VERSION", "2.10.5")
        .arg("webserver")
        .run(secs(20));
    f.expect_code(0);
    assert_eq!(
        calls(&f),
        vec!["airflow webserver"],
        "AIRFLOW_VERSION wins over the dist-info"
    );
}

#[test]
fn a_celery_worker_gets_child_scope_even_with_dumb_init_setsid_1() {
    let r = run("3.3.2", "worker");
    let mut running = r
        .env("DUMB_INIT_SETSID", "1")
        .env("AIRFLOW_ENTRYPOINT_WAIT", "never")
        .arg("worker")
        .start();
    running.wait_file("ready", secs(20));
    assert!(
        running.dir.read("stderr").contains("scope=child"),
        "{}",
        running.dir.read("stderr")
    );
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait(secs(20)).code(), Some(0));
    let calls: Vec<String> = running
        .dir
        .read("calls")
        .lines()
        .map(String::from)
        .collect();
    assert_eq!(calls, vec!["airflow celery worker", "worker-got-TERM"]);
}

#[test]
fn a_worker_started_as_the_charts_bash_exec_still_gets_child_scope() {
    // The Helm chart's worker: `bash -c "exec \\\nairflow celery worker"`
    // (its args, with a line continuation). The official image bakes in
    // DUMB_INIT_SETSID=1; the worker must still get its warm shutdown.
    let r = run("3.3.2", "worker-bash");
    let mut running = r
        .env("DUMB_INIT_SETSID", "1")
        .env("AIRFLOW_ENTRYPOINT_WAIT", "never")
        .args(["bash", "-c", "exec \\\nairflow celery worker"])
        .start();
    running.wait_file("ready", secs(20));
    assert!(
        running.dir.read("stderr").contains("scope=child"),
        "{}",
        running.dir.read("stderr")
    );
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait(secs(20)).code(), Some(0));
    let calls = running.dir.read("calls");
    assert_eq!(
        calls.lines().collect::<Vec<_>>(),
        vec!["airflow celery worker", "worker-got-TERM"]
    );
}

#[test]
fn db_migrate_runs_before_the_command_and_a_failure_stops_start_up() {
    let r = run("3.3.2", "migrate");
    let f = r
        .env("_AIRFLOW_DB_MIGRATE", "true")
        .arg("scheduler")
        .run(secs(20));
    f.expect_code(0);
    assert_eq!(calls(&f), vec!["airflow db migrate", "airflow scheduler"]);
    let r = run("2.6.3", "upgrade");
    let f = r
        .env("_AIRFLOW_DB_UPGRADE", "yes")
        .arg("scheduler")
        .run(secs(20));
    f.expect_code(0);
    assert_eq!(calls(&f), vec!["airflow db upgrade", "airflow scheduler"]);
    assert!(f.stderr.contains("deprecated"), "{}", f.stderr);
    let r = run("3.3.2", "retry");
    let f = r
        .env("_AIRFLOW_DB_MIGRATE", "true")
        .env("FAKE_MIGRATE_FAILS", "1")
        .arg("scheduler")
        .run(secs(30));
    f.expect_code(0);
    assert_eq!(
        calls(&f),
        vec![
            "airflow db migrate",
            "airflow db migrate",
            "airflow scheduler"
        ],
        "one failure is tried again"
    );
    assert!(f.stderr.contains("trying again"), "{}", f.stderr);
    let r = run("3.3.2", "fail");
    let f = r
        .env("_AIRFLOW_DB_MIGRATE", "true")
        .env("FAKE_MIGRATE_FAILS", "9")
        .arg("scheduler")
        .run(secs(30));
    f.expect_code(3);
    assert_eq!(
        calls(&f),
        vec!["airflow db migrate"; 3],
        "three attempts; the command must not start"
    );
    assert!(
        f.stderr
            .contains("`airflow db migrate` failed with exit status 3"),
        "{}",
        f.stderr
    );
}

#[test]
fn sigterm_during_a_start_up_step_reaches_it_and_ends_with_143() {
    let r = Run::new(Mode::Subreaper, "stepterm");
    let init = r.dir().join("init.d");
    let marker = r.dir().join("command-ran");
    fs::create_dir_all(&init).unwrap();
    // The step keeps a background process that ignores TERM: it must not
    // outlive the interrupted start-up.
    fs::write(init.join("10-slow"), "#!/bin/sh\nsh -c 'trap \"\" TERM; echo $$ > \"$T/leftover\"; exec sleep 1000' &\ntrap 'echo step-got-TERM > \"$T/step\"; exit 9' TERM\nwhile [ ! -s \"$T/leftover\" ]; do sleep 0.01; done\necho ready > \"$T/ready\"\nwhile :; do sleep 100 & wait $!; done\n").unwrap();
    fs::set_permissions(init.join("10-slow"), fs::Permissions::from_mode(0o755)).unwrap();
    let mut running = r
        .env("AIRFLOW_ENTRYPOINT_INIT_DIR", &init)
        .args(["--", "touch"])
        .arg(&marker)
        .start();
    running.wait_file("ready", secs(20));
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait(secs(20)).code(), Some(143));
    assert_eq!(running.dir.read("step").trim(), "step-got-TERM");
    assert!(!marker.exists());
    let leftover: i32 = running.dir.read("leftover").trim().parse().unwrap();
    let gone = wait_until(secs(10), || (!alive(leftover)).then_some(()));
    assert!(
        gone.is_some(),
        "the step's background process {leftover} outlived start-up"
    );
}

#[test]
fn init_scripts_run_in_order_and_a_failing_one_stops_start_up() {
    let dir = TempDir::new("initd");
    let init = dir.join("init.d");
    fs::create_dir_all(&init).unwrap();
    for (name, body) in [
        ("20-second", "echo second >> \"$T/order\""),
        ("10-first", "echo first >> \"$T/order\""),
        ("README", "not executable"),
    ] {
        fs::write(init.join(name), format!("#!/bin/sh\n{body}\n")).unwrap();
        let mode = if name == "README" { 0o644 } else { 0o755 };
        fs::set_permissions(init.join(name), fs::Permissions::from_mode(mode)).unwrap();
    }
    let f = Run::new(Mode::Subreaper, "initd")
        .env("T", dir.path())
        .env("AIRFLOW_ENTRYPOINT_INIT_DIR", &init)
        .shell("echo command >> $T/order")
        .run(secs(20));
    f.expect_code(0);
    assert_eq!(dir.read("order"), "first\nsecond\ncommand\n");
    fs::write(init.join("15-fails"), "#!/bin/sh\nexit 4\n").unwrap();
    fs::set_permissions(init.join("15-fails"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::remove_file(dir.join("order")).unwrap();
    let f = Run::new(Mode::Subreaper, "initd")
        .env("T", dir.path())
        .env("AIRFLOW_ENTRYPOINT_INIT_DIR", &init)
        .shell("echo command >> $T/order")
        .run(secs(20));
    f.expect_code(4);
    assert_eq!(dir.read("order"), "first\n");
}

#[test]
fn the_admin_user_is_created_without_showing_the_password() {
    let r = run("3.3.2", "fab");
    let f = r
        .env(
            "AIRFLOW__CORE__AUTH_MANAGER",
            "airflow.providers.fab.auth_manager.fab_auth_manager.FabAuthManager",
        )
        .env("_AIRFLOW_WWW_USER_CREATE", "true")
        .env("_AIRFLOW_WWW_USER_PASSWORD", "admin-pw-77")
        .arg("api-server")
        .run(secs(20));
    f.expect_code(0);
    let c = calls(&f);
    assert!(
        c[0].starts_with("airflow users create --username admin --password admin-pw-77"),
        "{c:?}"
    );
    assert!(
        c[0].contains("--role Admin") && c[0].contains("--email airflowadmin@example.com"),
        "{c:?}"
    );
    assert!(!f.stderr.contains("admin-pw-77"), "{}", f.stderr);

    // Airflow 3's simple auth manager: users setting + passwords file.
    let r = run("3.3.2", "simple");
    let f = r
        .env("AIRFLOW_HOME", "/tmp/aep-simple-auth-home")
        .env("_AIRFLOW_WWW_USER_CREATE", "true")
        .env("_AIRFLOW_WWW_USER_USERNAME", "boss")
        .env("_AIRFLOW_WWW_USER_PASSWORD_CMD", "echo simple-pw-88")
        .shell("printf '%s' \"$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS\" > $T/users; cat \"$AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE\" > $T/passwords")
        .run(secs(20));
    f.expect_code(0);
    assert_eq!(f.file("users"), "boss:admin");
    assert_eq!(f.file("passwords"), "{\"boss\":\"simple-pw-88\"}");
    assert!(!f.stderr.contains("simple-pw-88"), "{}", f.stderr);
}

#[test]
fn pip_additional_requirements_install_into_airflows_venv_with_a_warning() {
    let r = run("3.3.2", "pip");
    let f = r
        .env(
            "_PIP_ADDITIONAL_REQUIREMENTS",
            "apache-airflow-providers-http==4.0 'requests<3'",
        )
        .arg("version")
        .run(secs(20));
    f.expect_code(0);
    let c = calls(&f);
    assert_eq!(
        c[0], "python -m pip install --no-cache-dir apache-airflow-providers-http==4.0 requests<3",
        "{c:?}"
    );
    assert_eq!(c[1], "airflow version");
    assert!(f.stderr.contains("development only"), "{}", f.stderr);
}
