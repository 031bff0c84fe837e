//! Hostile and careless input: URLs split exactly as Airflow's own libraries
//! split them (an empty password is none, a raw `@` is never half shown),
//! secrets masked wherever they would show (text and JSON logs,
//! `--print-env`, `--healthcheck`), and files or names that would hang
//! start-up or corrupt /etc/passwd refused with one line and exit 78.

mod support;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use support::servers::*;
use support::*;

/// Both log formats of one run's setup: `make` builds the run.
fn in_text_and_json(make: impl Fn() -> Run) -> [Finished; 2] {
    [
        make().run(secs(30)),
        make()
            .env("AIRFLOW_ENTRYPOINT_LOG_FORMAT", "json")
            .run(secs(30)),
    ]
}

fn assert_none_shown(f: &Finished, pieces: &[&str]) {
    for piece in pieces {
        assert!(
            !f.stderr.contains(piece) && !f.stdout.contains(piece),
            "{piece:?} shows:\n{}{}",
            f.stdout,
            f.stderr
        );
    }
}

/// The one line that says what failed (text or JSON), and no panic.
fn one_error_line(f: &Finished) -> String {
    assert!(!f.stderr.contains("panicked"), "{}", f.stderr);
    let lines: Vec<&str> = f
        .stderr
        .lines()
        .filter(|l| l.contains(" ERROR ") || l.contains("\"level\":\"error\""))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line:\n{}", f.stderr);
    lines[0].to_string()
}

/// Caps the entrypoint's address space, so that a regression that reads a
/// device without end fails the test instead of the machine.
fn limit_memory(mut run: Run) -> Run {
    // SAFETY: setrlimit is async-signal-safe and touches no memory of ours.
    unsafe {
        run.command_mut().pre_exec(|| {
            let limit = libc::rlimit {
                rlim_cur: 512 << 20,
                rlim_max: 512 << 20,
            };
            if libc::setrlimit(libc::RLIMIT_AS, &limit) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    run
}

/// `--wait-only worker`: a SQLite database in the run's own directory and
/// the Celery broker at `broker`.
fn wait_worker(broker: &str) -> Run {
    let run = Run::new(Mode::Subreaper, "worker");
    let db = format!("sqlite:///{}/airflow.db", run.dir().path().display());
    run.env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", db)
        .env("AIRFLOW__CELERY__BROKER_URL", broker)
        .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "20")
        .args(["--wait-only", "worker"])
}

// ------------------------------------------------------------ URL forms

#[test]
fn quick_start_broker_url_with_empty_password_waits_for_a_redis_without_one() {
    if !needs_root("quick_start_broker_url_with_empty_password_waits_for_a_redis_without_one") {
        return;
    }
    let redis = start_redis(None);
    // The quick-start Compose file's form, and its siblings.
    for url in [
        format!("redis://:@127.0.0.1:{}/0", redis.port),
        format!("redis://:@127.0.0.1:{}", redis.port),
        format!("redis://:@127.0.0.1:{}/0#ignored", redis.port),
    ] {
        let f = wait_worker(&url).run(secs(30));
        f.expect_code(0);
        assert!(f.stderr.contains("Celery broker is ready"), "{}", f.stderr);
        assert!(f.stderr.contains("redis://:@127.0.0.1"), "{}", f.stderr);
    }
}

#[test]
fn a_percent_escaped_broker_host_means_what_kombu_reads() {
    if !needs_root("a_percent_escaped_broker_host_means_what_kombu_reads") {
        return;
    }
    let redis = start_redis(Some("pw@with/raw:chars"));
    // kombu and redis-py unquote host and password.
    let f = wait_worker(&format!(
        "redis://:pw%40with%2Fraw%3Achars@%31%32%37.0.0.1:{}/0",
        redis.port
    ))
    .run(secs(30));
    f.expect_code(0);
    assert_none_shown(&f, &["pw%40with", "pw@with"]);
}

#[test]
fn postgres_url_with_empty_password_sends_none_as_sqlalchemy_does() {
    if !needs_root("postgres_url_with_empty_password_sends_none_as_sqlalchemy_does") {
        return;
    }
    let cluster = PgCluster::init(false);
    let server = cluster.start();
    assert!(server.wait_log("ready to accept connections", secs(60)));
    // SQLAlchemy passes no password for `user:@`: the server's request for
    // one is not a wrong password (the wait calls that "up").
    let f = wait_db(&format!(
        "postgresql+psycopg2://airflow:@127.0.0.1:{}/airflow",
        cluster.port
    ))
    .run(secs(30));
    f.expect_code(0);
    assert!(
        f.stderr.contains("metadata database is ready"),
        "{}",
        f.stderr
    );
    assert!(!f.stderr.contains("28P01"), "{}", f.stderr);
}

#[test]
fn a_raw_at_in_a_database_password_splits_as_sqlalchemy_and_no_piece_shows() {
    // make_url reads host `zq9k` and database `x4@127.0.0.1:1/airflow`;
    // the wait probes that host, and neither piece may show anywhere.
    let url = "postgresql://airflow:Pw7@zq9k/x4@127.0.0.1:1/airflow";
    for f in in_text_and_json(|| wait_db(url).env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "1")) {
        f.expect_code(69);
        assert_none_shown(&f, &["Pw7", "zq9k", "x4"]);
        assert!(
            f.stderr.contains("%40"),
            "the warning says how to write it:\n{}",
            f.stderr
        );
        assert!(
            f.stderr.contains("airflow:***@127.0.0.1:1/airflow"),
            "{}",
            f.stderr
        );
    }
    let f = Run::new(Mode::Subreaper, "print")
        .env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", url)
        .env("AIRFLOW_VAR_ANOTHER", url)
        .arg("--print-env")
        .run(secs(20));
    f.expect_code(0);
    assert_none_shown(&f, &["Pw7", "zq9k", "x4"]);
}

#[test]
fn a_host_holding_a_raw_at_is_78_without_showing_any_piece() {
    // make_url: password `Zx9`, host `rest-of-pw@127.0.0.1`, which no
    // driver reaches.
    let url = "postgresql://airflow:Zx9@rest-of-pw@127.0.0.1:5432/airflow";
    for f in in_text_and_json(|| wait_db(url)) {
        f.expect_code(78);
        let line = one_error_line(&f);
        assert!(
            line.contains("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"),
            "{line}"
        );
        assert!(line.contains("%40"), "{line}");
        assert_none_shown(&f, &["Zx9", "rest-of-pw"]);
    }
    // kombu/redis-py end the authority at `/`: the rest of the password
    // would be read as a port.
    let f = wait_worker("redis://:Ab1/rest-of-pw@127.0.0.1:6379/0").run(secs(20));
    f.expect_code(78);
    let line = one_error_line(&f);
    assert!(line.contains("AIRFLOW__CELERY__BROKER_URL"), "{line}");
    assert_none_shown(&f, &["Ab1", "rest-of-pw"]);
}

// -------------------------------------------------------------- masking

#[test]
fn a_token_only_url_in_pip_requirements_never_shows() {
    let bin = TempDir::new("fakebin");
    let python = bin.join("python3");
    std::fs::write(&python, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&python, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let requirements =
        "--index-url https://tok-9f8e7d6c5b@127.0.0.1:1/simple git+https://ghp_T0kenT0ken@github.com/o/r.git";
    let path = format!("{}:/usr/bin:/bin", bin.path().display());
    for f in in_text_and_json(|| {
        Run::new(Mode::Subreaper, "pip")
            .env("PATH", &path)
            .env("_PIP_ADDITIONAL_REQUIREMENTS", requirements)
            .env("AIRFLOW_ENTRYPOINT_LOG_ENV", "true")
            .args(["--", "true"])
    }) {
        f.expect_code(0);
        assert!(f.stderr.contains("pip install"), "{}", f.stderr);
        assert!(
            f.stderr.contains("https://***@127.0.0.1:1/simple"),
            "{}",
            f.stderr
        );
        assert_none_shown(&f, &["tok-9f8e7d6c5b", "ghp_T0kenT0ken"]);
    }
    let f = Run::new(Mode::Subreaper, "print")
        .env("_PIP_ADDITIONAL_REQUIREMENTS", requirements)
        .arg("--print-env")
        .run(secs(20));
    f.expect_code(0);
    assert!(
        f.stdout.contains("_PIP_ADDITIONAL_REQUIREMENTS="),
        "{}",
        f.stdout
    );
    assert_none_shown(&f, &["tok-9f8e7d6c5b", "ghp_T0kenT0ken"]);
}

#[test]
fn a_password_holding_space_quote_or_question_mark_is_masked_whole() {
    let f = Run::new(Mode::Subreaper, "print")
        .env("AIRFLOW_VAR_SPACE", "postgresql://u:Sp ace-pw1@h/db")
        .env("AIRFLOW_VAR_QUOTE", "mysql://u:Qu\"ote-pw2@h/db")
        .env("AIRFLOW_VAR_ANGLE", "redis://:An<gle>-pw3@h/0")
        .env("AIRFLOW_VAR_QUERY", "amqp://u:Qu?ery#-pw4@h//")
        .arg("--print-env")
        .run(secs(20));
    f.expect_code(0);
    assert!(
        f.stdout
            .contains("AIRFLOW_VAR_SPACE=postgresql://u:***@h/db"),
        "{}",
        f.stdout
    );
    assert_none_shown(
        &f,
        &[
            "Sp ace", "ace-pw1", "Qu\"ote", "ote-pw2", "gle>", "pw3", "Qu?ery", "pw4",
        ],
    );
}

#[test]
fn values_of_names_airflow_treats_as_secret_never_show() {
    let secrets = [
        ("AIRFLOW_VAR_OPENAI_APIKEY", "sk-apikey-0001"),
        ("AIRFLOW_VAR_STRIPE_API_KEY", "sk-apikey-0002"),
        ("AIRFLOW_VAR_SSH_PASSPHRASE", "pass-phrase-0003"),
        ("AIRFLOW_VAR_HTTP_AUTHORIZATION", "Basic-0004"),
        ("AIRFLOW_VAR_GCP_KEYFILE_DICT", "{\"private\":\"kf-0005\"}"),
        ("AIRFLOW_VAR_GCP_SERVICE_ACCOUNT", "sa-0006"),
        ("AIRFLOW_VAR_SFTP_PRIVATE_KEY", "pk-0007"),
        (
            "AIRFLOW__DATABASE__SQL_ALCHEMY_ENGINE_ARGS",
            "{\"connect_args\":{\"password\":\"ea-0008\"}}",
        ),
        (
            "AIRFLOW__OPENLINEAGE__TRANSPORT",
            "{\"type\":\"http\",\"auth\":{\"api_key\":\"ol-0009\"}}",
        ),
    ];
    let make = || {
        let mut run = Run::new(Mode::Subreaper, "print").arg("--print-env");
        for (name, value) in secrets {
            run = run.env(name, value);
        }
        run
    };
    let f = make().run(secs(20));
    f.expect_code(0);
    for (name, _) in secrets {
        assert!(
            f.stdout.contains(&format!("{name}=***")),
            "{name}:\n{}",
            f.stdout
        );
    }
    let values: Vec<&str> = secrets.iter().map(|(_, v)| *v).collect();
    assert_none_shown(&f, &values);
    // LOG_ENV writes the same table into the log.
    for f in in_text_and_json(|| {
        let mut run = Run::new(Mode::Subreaper, "logenv")
            .env("AIRFLOW_ENTRYPOINT_LOG_ENV", "true")
            .args(["--", "true"]);
        for (name, value) in secrets {
            run = run.env(name, value);
        }
        run
    }) {
        f.expect_code(0);
        assert_none_shown(&f, &values);
    }
}

#[test]
fn the_healthcheck_line_is_masked() {
    // A health server whose error body quotes the database URL.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    // Not joined: if the entrypoint never connected, the thread would wait
    // in accept for ever; it ends with the test process.
    std::thread::spawn(move || {
        if let Ok((mut conn, _)) = listener.accept() {
            let mut buf = [0u8; 1024];
            let _ = conn.read(&mut buf);
            let _ = conn.write_all(b"HTTP/1.1 500 Internal Server Error\r\n\r\n{\"error\": \"cannot connect to postgresql://airflow:Hc-pw-0010@db:5432/airflow\"}");
        }
    });
    let f = Run::new(Mode::Subreaper, "hc")
        .env("AIRFLOW__API__PORT", port.to_string())
        .env("AIRFLOW_VERSION", "3.3.2")
        .args(["--healthcheck", "api-server"])
        .run(secs(20));
    f.expect_code(1);
    assert!(f.stdout.starts_with("unhealthy"), "{}", f.stdout);
    assert!(f.stdout.contains("airflow:***@db"), "{}", f.stdout);
    assert_none_shown(&f, &["Hc-pw-0010"]);
}

// --------------------------------------------------------------- files

#[test]
fn an_env_file_that_is_a_device_fifo_or_too_large_is_78_without_hanging() {
    let dir = TempDir::new("files");
    let fifo = dir.join("pipe.env");
    nix_mkfifo(&fifo);
    let large = dir.join("large.env");
    std::fs::write(&large, format!("A={}\n", "x".repeat(1024 * 1024))).unwrap();
    for (path, expected) in [
        (std::path::PathBuf::from("/dev/zero"), "character device"),
        (fifo.clone(), "FIFO"),
        (dir.path().to_path_buf(), "directory"),
        (large.clone(), "1 MiB"),
    ] {
        for f in in_text_and_json(|| {
            limit_memory(
                Run::new(Mode::Subreaper, "envfile")
                    .env("AIRFLOW_ENTRYPOINT_ENV_FILES", &path)
                    .args(["--", "true"]),
            )
        }) {
            f.expect_code(78);
            let line = one_error_line(&f);
            assert!(line.contains("AIRFLOW_ENTRYPOINT_ENV_FILES"), "{line}");
            assert!(line.contains(&path.display().to_string()), "{line}");
            assert!(line.contains(expected), "{line}");
        }
    }
    // At the limit is fine (comments, so the child's environment stays small).
    let exact = dir.join("exact.env");
    let mut text = String::from("AEP_AT_LIMIT=1\n");
    while text.len() < 1024 * 1024 {
        let left = 1024 * 1024 - text.len();
        let line_len = left.min(1000);
        text.push_str(&format!("#{}\n", "c".repeat(line_len.saturating_sub(2))));
    }
    assert_eq!(text.len(), 1024 * 1024);
    std::fs::write(&exact, text).unwrap();
    let f = Run::new(Mode::Subreaper, "envfile")
        .env("AIRFLOW_ENTRYPOINT_ENV_FILES", &exact)
        .shell("echo $AEP_AT_LIMIT > $T/seen")
        .run(secs(20));
    f.expect_code(0);
    assert_eq!(f.file("seen"), "1");
}

#[test]
fn an_airflow_config_that_is_a_fifo_or_a_device_is_78_without_hanging() {
    let dir = TempDir::new("cfg");
    let fifo = dir.join("airflow.cfg");
    nix_mkfifo(&fifo);
    for path in [fifo.clone(), std::path::PathBuf::from("/dev/zero")] {
        // Nothing in the environment: the URL is looked for in airflow.cfg.
        let f = limit_memory(
            Run::new(Mode::Subreaper, "cfg")
                .env("AIRFLOW_CONFIG", &path)
                .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "5")
                .arg("--wait-only"),
        )
        .run(secs(30));
        f.expect_code(78);
        let line = one_error_line(&f);
        assert!(line.contains("AIRFLOW_CONFIG"), "{line}");
        assert!(line.contains("not a regular file"), "{line}");
    }
}

fn nix_mkfifo(path: &std::path::Path) {
    let c_path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    let rc = unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) };
    assert_eq!(rc, 0, "mkfifo {}", path.display());
}

// ---------------------------------------------------------- /etc/passwd

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nastro:x:5000:5000:Astro:/home/astro:/bin/sh\n";
const GROUP: &str = "root:x:0:\nastro:x:5000:\n";

#[test]
fn a_user_name_or_home_that_would_corrupt_passwd_is_78_for_an_arbitrary_uid() {
    if !needs_root("a_user_name_or_home_that_would_corrupt_passwd_is_78_for_an_arbitrary_uid") {
        return;
    }
    for (name, value) in [
        ("ASTRONOMER_USER", "evil:x:0:0::/root:/bin/sh"),
        ("ASTRONOMER_USER", "evil\nroot2::0:0::/root:/bin/sh"),
        ("ASTRONOMER_USER", "+evil"),
        ("AIRFLOW_HOME", "/opt/airflow\nroot2::0:0::/root:/bin/sh"),
        ("AIRFLOW_HOME", "/opt/air:flow"),
    ] {
        let mut running = Run::with_users("passwd", PASSWD, GROUP, 0o666, Some(4321))
            .env(name, value)
            .shell("touch $T/ran")
            .start();
        let passwd_file = running.dir.join("etc/passwd");
        let status = running.wait(secs(30));
        let passwd_after = std::fs::read_to_string(&passwd_file).unwrap();
        let f = running.finish(status);
        f.expect_code(78);
        let line = one_error_line(&f);
        assert!(line.contains(name), "{line}");
        assert!(line.contains("set "), "the fix: {line}");
        assert_eq!(passwd_after, PASSWD, "{name}={value:?} changed /etc/passwd");
        assert!(!f.files.contains_key("ran"), "nothing may start");
    }
    // A plain name still gets its entry.
    let mut running = Run::with_users("passwd", PASSWD, GROUP, 0o666, Some(4321))
        .env("ASTRONOMER_USER", "runner")
        .env("AIRFLOW_HOME", "/opt/airflow")
        .shell("id -un > $T/name")
        .start();
    let passwd_file = running.dir.join("etc/passwd");
    let status = running.wait(secs(30));
    let passwd_after = std::fs::read_to_string(&passwd_file).unwrap();
    let f = running.finish(status);
    f.expect_code(0);
    assert!(
        passwd_after.ends_with("runner:x:4321:0:airflow-entrypoint:/opt/airflow:/bin/bash\n"),
        "{passwd_after}"
    );
}

#[test]
fn a_user_name_that_would_corrupt_passwd_is_78_with_create_user() {
    if !needs_root("a_user_name_that_would_corrupt_passwd_is_78_with_create_user") {
        return;
    }
    let mut running = Run::with_users("create", PASSWD, GROUP, 0o644, None)
        .env("ASTRONOMER_USER", "svc\nroot2::0:0::/root:/bin/sh")
        .env("ASTRONOMER_UID", "6000")
        .env("AIRFLOW_ENTRYPOINT_CREATE_USER", "true")
        .shell("touch $T/ran")
        .start();
    let passwd_file = running.dir.join("etc/passwd");
    let status = running.wait(secs(30));
    let passwd_after = std::fs::read_to_string(&passwd_file).unwrap();
    let f = running.finish(status);
    f.expect_code(78);
    let line = one_error_line(&f);
    assert!(line.contains("ASTRONOMER_USER"), "{line}");
    assert_eq!(passwd_after, PASSWD);
}
