//! The entrypoint's own failures: one line on stderr, a documented exit code,
//! never a panic. Also --help, --version and the JSON log format.

mod support;
use support::*;

fn one_error_line(stderr: &str) -> String {
    let lines: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("ERROR") || l.contains("error"))
        .collect();
    assert_eq!(lines.len(), 1, "expected one error line, got:\n{stderr}");
    lines[0].to_string()
}

#[test]
fn command_not_found_is_127() {
    let f = Run::new(Mode::Subreaper, "e")
        .args(["--", "no-such-command-anywhere"])
        .run(secs(20));
    f.expect_code(127);
    assert!(one_error_line(&f.stderr).contains("command not found: no-such-command-anywhere"));
}

#[test]
fn command_not_executable_is_126() {
    let dir = TempDir::new("noexec");
    let script = dir.join("script.sh");
    std::fs::write(&script, "#!/bin/sh\necho hi\n").unwrap();
    let f = Run::new(Mode::Subreaper, "e")
        .arg("--")
        .arg(&script)
        .run(secs(20));
    f.expect_code(126);
    assert!(
        one_error_line(&f.stderr).contains("not executable"),
        "{}",
        f.stderr
    );
    let f = Run::new(Mode::Subreaper, "e")
        .args(["--", "/tmp"])
        .run(secs(20));
    f.expect_code(126);
}

#[test]
fn no_command_is_64_with_a_usage_hint() {
    let f = Run::new(Mode::Subreaper, "e").run(secs(20));
    f.expect_code(64);
    assert!(
        one_error_line(&f.stderr).contains("usage: airflow-entrypoint"),
        "{}",
        f.stderr
    );
    let f = Run::new(Mode::Subreaper, "e")
        .args(["--no-such-flag", "true"])
        .run(secs(20));
    f.expect_code(64);
}

#[test]
fn a_bad_setting_is_78_naming_the_variable() {
    for (name, value) in [
        ("AIRFLOW_ENTRYPOINT_GRACE_PERIOD", "soon"),
        ("AIRFLOW_ENTRYPOINT_KILL_TIMEOUT", "-1"),
        ("AIRFLOW_ENTRYPOINT_SIGNAL_SCOPE", "everyone"),
        ("AIRFLOW_ENTRYPOINT_LOG_FORMAT", "xml"),
        ("AIRFLOW_ENTRYPOINT_SIGNAL_MAP", "TERM:BOGUS"),
        ("AIRFLOW_ENTRYPOINT_EXIT_CODE_MAP", "143=0"),
    ] {
        let f = Run::new(Mode::Subreaper, "e")
            .env(name, value)
            .args(["--", "true"])
            .run(secs(20));
        f.expect_code(78);
        assert!(
            one_error_line(&f.stderr).contains(name),
            "{name}: {}",
            f.stderr
        );
    }
    let f = Run::new(Mode::Subreaper, "e")
        .args(["--grace-period", "x", "true"])
        .run(secs(20));
    f.expect_code(78);
    assert!(f.stderr.contains("--grace-period"), "{}", f.stderr);
}

#[test]
fn help_and_version_explain_themselves() {
    let f = Run::new(Mode::Subreaper, "e").arg("--help").run(secs(20));
    f.expect_code(0);
    for needle in [
        "Usage: airflow-entrypoint",
        "--grace-period",
        "AIRFLOW_ENTRYPOINT_KILL_TIMEOUT",
        "Exit codes",
    ] {
        assert!(
            f.stdout.contains(needle),
            "{needle} missing from --help:\n{}",
            f.stdout
        );
    }
    let f = Run::new(Mode::Subreaper, "e")
        .arg("--version")
        .run(secs(20));
    f.expect_code(0);
    assert!(f.stdout.starts_with("airflow-entrypoint "), "{}", f.stdout);
}

#[test]
fn json_logs_are_one_object_a_line_with_the_named_fields() {
    let f = Run::new(Mode::Subreaper, "e")
        .env("AIRFLOW_ENTRYPOINT_LOG_FORMAT", "json")
        .shell("exit 3")
        .run(secs(20));
    f.expect_code(3);
    let mut saw_exit = false;
    for line in f.stderr.lines() {
        let v: serde_json::Value =
            serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        for key in ["timestamp", "level", "message", "phase"] {
            assert!(v.get(key).is_some(), "{key} missing: {line}");
        }
        if v["exit_code"] == 3 {
            saw_exit = true;
        }
    }
    assert!(saw_exit, "no exit_code field:\n{}", f.stderr);
    // A failure is a JSON line too.
    let f = Run::new(Mode::Subreaper, "e")
        .env("AIRFLOW_ENTRYPOINT_LOG_FORMAT", "json")
        .args(["--", "no-such-command-anywhere"])
        .run(secs(20));
    f.expect_code(127);
    let last = f.stderr.lines().last().unwrap_or_default();
    let v: serde_json::Value = serde_json::from_str(last).expect("a JSON line");
    assert_eq!(v["level"], "error");
    assert_eq!(
        f.stderr.lines().filter(|l| l.contains("\"error\"")).count(),
        1
    );
}
