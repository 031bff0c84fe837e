//! The child's environment: image defaults < env files < the container's
//! environment; Docker .env syntax with interpolation; Airflow's legacy key
//! and URL resolution (`_CMD` as the service user, airflow.cfg); secrets
//! never shown.

mod support;
use std::fs;
use support::*;

fn write(dir: &TempDir, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        fs::create_dir_all(parent).unwrap();
    }
    fs::write(&path, text).unwrap();
    path
}

#[test]
fn layers_override_key_by_key_with_interpolation_and_quotes() {
    let files = TempDir::new("layers");
    write(
        &files,
        "env.d/00-defaults.env",
        "A=image\nB=image\nC=image\nexport AIRFLOW_HOME=/opt/airflow\n",
    );
    write(
        &files,
        "env.d/10-more.env",
        "A=image2\r\n# a comment\n\nIGNORED_DIR=x\n",
    );
    write(&files, "env.d/README.txt", "NOT=read\n");
    let deploy = write(
        &files,
        "deploy.env",
        "B=file\nC=file\nD=${A}-${C}\nE=\"two words\\nsecond\"\nF='${A} literal'\nG=${UNSET:-fallback}\nH=${AIRFLOW_HOME}/dags\n",
    );
    let f = Run::new(Mode::Subreaper, "layers")
        .env("AIRFLOW_ENTRYPOINT_ENV_DIR", files.join("env.d"))
        .env("AIRFLOW_ENTRYPOINT_ENV_FILES", &deploy)
        .env("C", "container")
        .shell(r#"for v in A B C D E F G H NOT; do eval "printf '%s' \"\$$v\"" > $T/$v; done"#)
        .run(secs(20));
    f.expect_code(0);
    assert_eq!(
        f.file("A"),
        "image2",
        "later env.d files win over earlier ones"
    );
    assert_eq!(
        f.file("B"),
        "file",
        "an env file wins over the image defaults"
    );
    assert_eq!(
        f.file("C"),
        "container",
        "the container's environment always wins"
    );
    assert_eq!(
        f.file("D"),
        "image2-file",
        "the same file first, then the container, then lower layers"
    );
    assert_eq!(f.file("E"), "two words\nsecond");
    assert_eq!(f.file("F"), "${A} literal");
    assert_eq!(f.file("G"), "fallback");
    assert_eq!(f.file("H"), "/opt/airflow/dags");
    assert_eq!(f.file("NOT"), "", "only *.env files are read");
}

#[test]
fn print_env_shows_each_variables_layer_and_masks_secrets() {
    let files = TempDir::new("print");
    write(
        &files,
        "env.d/00.env",
        "AIRFLOW__CORE__EXECUTOR=LocalExecutor\nAIRFLOW__CORE__FERNET_KEY=fernet-from-image\n",
    );
    let deploy = write(&files, "deploy.env", "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN=postgresql://airflow:pg-secret-1@db:5432/airflow\nAIRFLOW_CONN_MY=mysql://u:conn-secret@h/d\n");
    let f = Run::new(Mode::Subreaper, "print")
        .env("AIRFLOW_ENTRYPOINT_ENV_DIR", files.join("env.d"))
        .env("AIRFLOW_ENTRYPOINT_ENV_FILES", &deploy)
        .env(
            "AIRFLOW__CELERY__BROKER_URL",
            "redis://:broker-secret@redis:6379/0",
        )
        .env("AIRFLOW__WEBSERVER__BASE_URL", "http://x:8080")
        .args(["--print-env"])
        .run(secs(20));
    f.expect_code(0);
    let line = |key: &str| {
        f.stdout
            .lines()
            .find(|l| l.starts_with(&format!("{key}=")))
            .unwrap_or_else(|| panic!("{key} missing:\n{}", f.stdout))
            .to_string()
    };
    assert!(
        line("AIRFLOW__CORE__EXECUTOR").contains("LocalExecutor")
            && line("AIRFLOW__CORE__EXECUTOR").contains("image default")
    );
    assert!(line("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN").contains("env file"));
    assert!(line("AIRFLOW__CELERY__BROKER_URL").contains("container environment"));
    assert!(line("AIRFLOW__WEBSERVER__BASE_URL").contains("http://x:8080"));
    for secret in [
        "fernet-from-image",
        "pg-secret-1",
        "conn-secret",
        "broker-secret",
    ] {
        assert!(
            !f.stdout.contains(secret) && !f.stderr.contains(secret),
            "{secret} leaked:\n{}{}",
            f.stdout,
            f.stderr
        );
    }
}

#[test]
fn a_malformed_line_names_file_and_line_and_nothing_starts() {
    let files = TempDir::new("bad");
    let deploy = write(
        &files,
        "bad.env",
        "A=1\nB=2\n# c\n\nC=3\nD=4\nthis line is wrong\nE=5\n",
    );
    let marker = files.join("ran");
    let f = Run::new(Mode::Subreaper, "bad")
        .env("AIRFLOW_ENTRYPOINT_ENV_FILES", &deploy)
        .args(["--", "touch"])
        .arg(&marker)
        .run(secs(20));
    f.expect_code(78);
    assert!(
        f.stderr.contains(&format!("{}:7:", deploy.display())),
        "{}",
        f.stderr
    );
    assert_eq!(f.stderr.lines().count(), 1, "one line:\n{}", f.stderr);
    assert!(!marker.exists());
}

#[test]
fn a_missing_explicit_env_file_or_dir_is_78() {
    let f = Run::new(Mode::Subreaper, "missing")
        .env("AIRFLOW_ENTRYPOINT_ENV_FILES", "/nonexistent/secret.env")
        .args(["--", "true"])
        .run(secs(20));
    f.expect_code(78);
    assert!(f.stderr.contains("/nonexistent/secret.env"), "{}", f.stderr);
    let f = Run::new(Mode::Subreaper, "missing")
        .env("AIRFLOW_ENTRYPOINT_ENV_DIR", "/nonexistent/env.d")
        .args(["--", "true"])
        .run(secs(20));
    f.expect_code(78);
    assert!(
        f.stderr
            .contains("AIRFLOW_ENTRYPOINT_ENV_DIR=/nonexistent/env.d"),
        "{}",
        f.stderr
    );
}

#[test]
fn the_legacy_core_key_is_also_exported_under_database() {
    let f = Run::new(Mode::Subreaper, "legacy")
        .env(
            "AIRFLOW__CORE__SQL_ALCHEMY_CONN",
            "sqlite:////tmp/legacy.db",
        )
        .env_remove("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
        .shell("printf '%s' \"$AIRFLOW__DATABASE__SQL_ALCHEMY_CONN\" > $T/db")
        .run(secs(20));
    f.expect_code(0);
    assert_eq!(f.file("db"), "sqlite:////tmp/legacy.db");
}

/// A fake `airflow` on PATH, so that `airflow scheduler` is a command that
/// needs the metadata database without starting real Airflow.
fn fake_airflow(dir: &TempDir) -> String {
    let bin = dir.join("bin");
    fs::create_dir_all(&bin).unwrap();
    let airflow = bin.join("airflow");
    fs::write(&airflow, "#!/bin/sh\necho \"$@\" > \"$T/airflow-args\"\n").unwrap();
    fs::set_permissions(
        &airflow,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    format!("{}:/usr/bin:/bin", bin.display())
}

#[test]
fn sql_alchemy_conn_cmd_runs_as_the_dropped_user_and_its_output_is_masked() {
    if !needs_root("sql_alchemy_conn_cmd_runs_as_the_dropped_user_and_its_output_is_masked") {
        return;
    }
    let passwd = "root:x:0:0:root:/root:/bin/sh\nastro:x:5000:0::/home/astro:/bin/sh\n";
    let run = Run::with_users("cmd", passwd, "root:x:0:\n", 0o644, None);
    let dir = run.dir().path().to_path_buf();
    let cmd = dir.join("conn.sh");
    // Nothing listens on port 1: the wait fails, and its error shows the URL.
    fs::write(&cmd, "#!/bin/sh\nid -u > \"$T/cmd-uid\"\necho 'postgresql://airflow:cmd-secret-9@127.0.0.1:1/airflow'\n").unwrap();
    fs::set_permissions(&cmd, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let path = {
        let bin = dir.join("bin");
        fs::create_dir_all(&bin).unwrap();
        fs::write(
            bin.join("airflow"),
            "#!/bin/sh\necho \"$@\" > \"$T/airflow-args\"\n",
        )
        .unwrap();
        fs::set_permissions(
            bin.join("airflow"),
            std::os::unix::fs::PermissionsExt::from_mode(0o755),
        )
        .unwrap();
        format!("{}:/usr/bin:/bin", bin.display())
    };
    for format in ["text", "json"] {
        let f = Run::with_users("cmd", passwd, "root:x:0:\n", 0o644, None)
            .env("T", &dir)
            .env("PATH", &path)
            .env("AIRFLOW_ENTRYPOINT_LOG_FORMAT", format)
            .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "0.5")
            .env(
                "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN_CMD",
                format!("'{}'", cmd.display()),
            )
            .args(["--", "airflow", "scheduler"])
            .run(secs(30));
        f.expect_code(69);
        assert_eq!(
            fs::read_to_string(dir.join("cmd-uid")).unwrap().trim(),
            "5000"
        );
        assert!(
            !dir.join("airflow-args").exists(),
            "the command must not start"
        );
        assert!(
            f.stderr
                .contains("postgresql://airflow:***@127.0.0.1:1/airflow"),
            "{}",
            f.stderr
        );
        assert!(f.stderr.contains("SQL_ALCHEMY_CONN_CMD"), "{}", f.stderr);
        assert!(
            !f.stderr.contains("cmd-secret-9"),
            "the password leaked:\n{}",
            f.stderr
        );
    }
}

#[test]
fn airflow_cfg_is_the_fallback_for_the_database_url() {
    let dir = TempDir::new("cfg");
    let path = fake_airflow(&dir);
    write(&dir, "home/airflow.cfg", "[core]\nexecutor = LocalExecutor\n\n[database]\nsql_alchemy_conn = postgresql://u:cfg-secret-3@cfgdb:5432/airflow\n");
    let f = Run::new(Mode::Subreaper, "cfg")
        .env("T", dir.path())
        .env("PATH", &path)
        .env("AIRFLOW_HOME", dir.join("home"))
        .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "0.3")
        .env_remove("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN")
        .env_remove("AIRFLOW__CORE__SQL_ALCHEMY_CONN")
        .args(["--", "airflow", "scheduler"])
        .run(secs(20));
    f.expect_code(69);
    assert!(
        f.stderr.contains("postgresql://u:***@cfgdb:5432/airflow"),
        "{}",
        f.stderr
    );
    assert!(
        f.stderr.contains("[database] sql_alchemy_conn in"),
        "{}",
        f.stderr
    );
    assert!(!f.stderr.contains("cfg-secret-3"));
}
