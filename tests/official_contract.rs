//! The official image's entrypoint contract, by whatever path it is called:
//! `/entrypoint` run by root from a script stays root; a bare unknown word is
//! an Airflow subcommand; `bash` waits for the database first and
//! `CONNECTION_CHECK_MAX_COUNT=0` does not wait; and the `airflow`/`celery`
//! multi-call links hand everything but a probe they know to the real
//! program, untouched, without ever running themselves again.

mod support;
use std::fs;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::os::unix::process::CommandExt;
use std::process::Command;
use support::*;

/// A fake venv whose `airflow` and `celery` write their argv, and the value
/// of $PROBE_ENV, to $T/calls; its bin directory.
fn fake_venv(dir: &TempDir) -> std::path::PathBuf {
    let bin = dir.join("venv/bin");
    fs::create_dir_all(&bin).unwrap();
    for name in ["airflow", "celery"] {
        let script = format!(
            "#!/bin/sh\necho \"{name} $* env=$PROBE_ENV mask=$(grep SigBlk /proc/self/status | tr -d '\\t')\" >> \"$T/calls\"\nexit 7\n"
        );
        fs::write(bin.join(name), script).unwrap();
        fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o755)).unwrap();
    }
    bin
}

/// A directory of links to the binary under test, as the image has them.
fn links(dir: &TempDir) -> std::path::PathBuf {
    let links = dir.join("links");
    fs::create_dir_all(&links).unwrap();
    for name in ["airflow", "celery", "entrypoint"] {
        symlink(bin(), links.join(name)).unwrap();
    }
    links
}

#[test]
fn the_links_hand_every_other_command_to_the_real_program_untouched() {
    let dir = TempDir::new("multicall");
    let venv = fake_venv(&dir);
    let links = links(&dir);
    let path = format!("{}:{}:/usr/bin:/bin", links.display(), venv.display());
    let run = |name: &str, args: &[&str], extra: &[(&str, &str)]| {
        let mut command = Command::new(links.join(name));
        command
            .args(args)
            .env("PATH", &path)
            .env("T", dir.path())
            .env("PROBE_ENV", "kept")
            .env_remove("AIRFLOW_ENTRYPOINT_LOG_LEVEL");
        for (k, v) in extra {
            command.env(k, v);
        }
        let out = command.output().unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, _) = run("airflow", &["dags", "list", "--output", "json"], &[]);
    assert_eq!(code, Some(7), "the real program's exit code");
    let (code, _) = run(
        "celery",
        &["--app", "x", "inspect", "ping", "-d", "celery@h"],
        &[],
    );
    assert_eq!(code, Some(7));
    // A probe with a flag the native answer does not know: the real one.
    let (code, _) = run("airflow", &["jobs", "check", "--no-such-flag"], &[]);
    assert_eq!(code, Some(7));
    // Native checks off: even a known probe goes to the real one.
    let (code, _) = run(
        "airflow",
        &["jobs", "check", "--job-type", "SchedulerJob", "--local"],
        &[("AIRFLOW_ENTRYPOINT_NATIVE_CHECKS", "false")],
    );
    assert_eq!(code, Some(7));
    let calls = dir.read("calls");
    let want = [
        "airflow dags list --output json env=kept mask=SigBlk:0000000000000000",
        "celery --app x inspect ping -d celery@h env=kept mask=SigBlk:0000000000000000",
        "airflow jobs check --no-such-flag env=kept mask=SigBlk:0000000000000000",
        "airflow jobs check --job-type SchedulerJob --local env=kept mask=SigBlk:0000000000000000",
    ];
    assert_eq!(calls.lines().collect::<Vec<_>>(), want, "{calls}");

    // Only the links on PATH: 127, and it never runs itself again.
    let (code, err) = {
        let out = Command::new(links.join("airflow"))
            .arg("version")
            .env("PATH", format!("{}:/usr/bin:/bin", links.display()))
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    assert_eq!(code, Some(127), "{err}");
    assert!(err.contains("airflow: command not found"), "{err}");
}

#[test]
fn a_known_probe_is_answered_natively_and_falls_back_to_the_real_program() {
    // A probe the native answer knows, with SQLite (read natively only for
    // PostgreSQL and MySQL): the entrypoint takes it, then execs the real
    // `airflow` by its absolute path with the caller's environment.
    let dir = TempDir::new("multicall-probe");
    let venv = fake_venv(&dir);
    let links = links(&dir);
    let out = Command::new(links.join("airflow"))
        .args([
            "jobs",
            "check",
            "--job-type",
            "TriggererJob",
            "--hostname",
            "h",
        ])
        .env(
            "PATH",
            format!("{}:{}:/usr/bin:/bin", links.display(), venv.display()),
        )
        .env("T", dir.path())
        .env("PROBE_ENV", "kept")
        .env("AIRFLOW_ENTRYPOINT_RUN_AS_ROOT", "true")
        .env("AIRFLOW_ENTRYPOINT_LOG_LEVEL", "debug")
        .env(
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN",
            format!("sqlite:///{}/a.db", dir.path().display()),
        )
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(7), "{err}");
    assert!(
        err.contains("only PostgreSQL and MySQL are read natively"),
        "{err}"
    );
    assert_eq!(
        dir.read("calls").trim(),
        "airflow jobs check --job-type TriggererJob --hostname h env=kept mask=SigBlk:0000000000000000"
    );
}

#[test]
fn entrypoint_called_by_root_from_a_script_stays_root() {
    if !needs_root("entrypoint_called_by_root_from_a_script_stays_root") {
        return;
    }
    let dir = TempDir::new("official-path");
    let links = links(&dir);
    // Not RUN_AS_ROOT: the name alone decides. Under another name the same
    // call would look for the service user (astro) and fail without it.
    let run = |name: &str| {
        Command::new(links.join(name))
            .args(["sh", "-c", "id -u"])
            .env_remove("AIRFLOW_ENTRYPOINT_RUN_AS_ROOT")
            .env("ASTRONOMER_USER", "no-such-user-here")
            .env("ASTRONOMER_UID", "54321")
            .output()
            .unwrap()
    };
    let out = run("entrypoint");
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "0");
    assert!(String::from_utf8_lossy(&out.stderr).contains("staying root"));
    let other = Command::new(bin())
        .args(["sh", "-c", "id -u"])
        .arg0("airflow-entrypoint")
        .env_remove("AIRFLOW_ENTRYPOINT_RUN_AS_ROOT")
        .env("ASTRONOMER_USER", "no-such-user-here")
        .env("ASTRONOMER_UID", "54321")
        .output()
        .unwrap();
    assert_ne!(other.status.code(), Some(0));
}

#[test]
fn a_bare_unknown_word_is_an_airflow_subcommand() {
    let run = Run::new(Mode::Subreaper, "bare-word");
    let venv = fake_venv(run.dir());
    let f = run
        .env("PATH", format!("{}:/usr/bin:/bin", venv.display()))
        .args(["cheat-sheet-2", "--verbose"])
        .run(secs(20));
    f.expect_code(7);
    assert!(
        f.file("calls")
            .starts_with("airflow cheat-sheet-2 --verbose"),
        "{}",
        f.stderr
    );
    // A program on PATH runs as itself.
    let run = Run::new(Mode::Subreaper, "bare-word");
    let venv = fake_venv(run.dir());
    let f = run
        .env("PATH", format!("{}:/usr/bin:/bin", venv.display()))
        .args(["true"])
        .run(secs(20));
    f.expect_code(0);
}

#[test]
fn bash_waits_for_the_database_and_connection_check_max_count_0_does_not() {
    let closed = support::servers::free_port();
    let url = format!("postgresql://airflow:pw@127.0.0.1:{closed}/airflow");
    let f = Run::new(Mode::Subreaper, "bash-wait")
        .env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", &url)
        .env("AIRFLOW_ENTRYPOINT_WAIT_TIMEOUT", "1")
        .args(["bash", "-c", "echo ran > \"$T/ran\""])
        .run(secs(20));
    f.expect_code(69);
    assert!(
        !f.files.contains_key("ran"),
        "bash ran before the database answered"
    );
    let f = Run::new(Mode::Subreaper, "bash-wait")
        .env("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", &url)
        .env("CONNECTION_CHECK_MAX_COUNT", "0")
        .args(["bash", "-c", "echo ran > \"$T/ran\""])
        .run(secs(20));
    f.expect_code(0);
    assert_eq!(f.file("ran").trim(), "ran");
    assert!(
        f.stderr
            .contains("CONNECTION_CHECK_MAX_COUNT=0: not waiting"),
        "{}",
        f.stderr
    );
}
