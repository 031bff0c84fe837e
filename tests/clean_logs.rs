//! `clean-logs`, the official image's log groomer done natively: what a round
//! removes and keeps (age in whole days, `*.log` only, `lost+found`, emptied
//! directories), its one line a round, no wake-up between rounds, TERM at
//! once, a malformed setting as exit 78, and as a part of a `+` group.

mod support;
use std::fs;
use std::time::{Duration, SystemTime};
use support::*;

const DAY: u64 = 24 * 60 * 60;

/// Writes `path` (under `logs`) with `bytes` bytes, `days_old` days old.
fn log_file(logs: &std::path::Path, path: &str, bytes: usize, days_old: u64) {
    let file = logs.join(path);
    fs::create_dir_all(file.parent().unwrap()).unwrap();
    fs::write(&file, vec![b'x'; bytes]).unwrap();
    let when = SystemTime::now() - Duration::from_secs(days_old * DAY + 60);
    fs::File::options()
        .write(true)
        .open(&file)
        .unwrap()
        .set_modified(when)
        .unwrap();
}

/// An AIRFLOW_HOME with logs of every kind, and the run set up to clean it.
fn groomer(tag: &str) -> Run {
    let run = Run::new(Mode::Subreaper, tag);
    let home = run.dir().join("home");
    let logs = home.join("logs");
    log_file(
        &logs,
        "dag_id=a/run_id=old/task_id=t/attempt=1.log",
        1000,
        20,
    );
    log_file(&logs, "dag_id=a/run_id=new/task_id=t/attempt=1.log", 10, 1);
    log_file(&logs, "scheduler/2026-01-01/x.py.log", 500, 16);
    // Exactly 15 whole days: `find -mtime +15` keeps it.
    log_file(&logs, "scheduler/2026-01-02/y.py.log", 7, 15);
    log_file(&logs, "old-but-not-a-log.txt", 3, 30);
    log_file(&logs, "lost+found/old.log", 3, 30);
    fs::create_dir_all(logs.join("empty/already")).unwrap();
    run.env("AIRFLOW_HOME", &home)
        .env("AIRFLOW__LOG_RETENTION_DAYS", "15")
        .env("AIRFLOW__LOG_CLEANUP_FREQUENCY_MINUTES", "60")
}

fn exists(run_dir: &TempDir, path: &str) -> bool {
    run_dir.join("home/logs").join(path).exists()
}

#[test]
fn a_round_removes_old_logs_and_emptied_directories_keeps_the_rest_and_term_stops_it_at_once() {
    let mut running = groomer("clean").arg("clean-logs").start();
    let line = wait_until(secs(10), || {
        let err = fs::read_to_string(running.dir.join("stderr")).unwrap_or_default();
        err.lines()
            .find(|l| l.contains("clean-logs: removed"))
            .map(String::from)
    })
    .expect("no round line");
    assert!(
        line.contains("removed 2 *.log file(s) older than 15 day(s) (1500 bytes freed) and 5 empty directories"),
        "{line}"
    );
    let dir = &running.dir;
    for gone in ["dag_id=a/run_id=old", "scheduler/2026-01-01", "empty"] {
        assert!(!exists(dir, gone), "{gone} is still there");
    }
    for kept in [
        "dag_id=a/run_id=new/task_id=t/attempt=1.log",
        "scheduler/2026-01-02/y.py.log",
        "old-but-not-a-log.txt",
        "lost+found/old.log",
    ] {
        assert!(exists(dir, kept), "{kept} was removed");
    }
    assert!(
        dir.join("home/logs").is_dir(),
        "the logs directory itself stays"
    );

    // Between rounds it sleeps in the kernel: no context switch while idle.
    let pid = running.entrypoint_pid();
    let switches = || {
        fs::read_to_string(format!("/proc/{pid}/status"))
            .unwrap()
            .lines()
            .filter(|l| l.contains("ctxt_switches"))
            .map(|l| l.split_whitespace().last().unwrap().parse::<u64>().unwrap())
            .sum::<u64>()
    };
    let before = switches();
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(switches(), before, "woke up between rounds");

    let asked = std::time::Instant::now();
    running.signal(libc::SIGTERM);
    let status = running.wait(secs(5));
    assert!(asked.elapsed() < secs(1), "{:?}", asked.elapsed());
    let finished = running.finish(status);
    finished.expect_code(0);
    let rounds = finished
        .stderr
        .lines()
        .filter(|l| l.contains("clean-logs: removed"))
        .count();
    assert_eq!(rounds, 1, "{}", finished.stderr);
}

#[test]
fn a_malformed_cleanup_setting_is_one_line_and_exit_78() {
    for (key, value) in [
        ("AIRFLOW__LOG_RETENTION_DAYS", "fifteen"),
        ("AIRFLOW__LOG_RETENTION_DAYS", "-1"),
        ("AIRFLOW__LOG_CLEANUP_FREQUENCY_MINUTES", "0"),
    ] {
        let finished = groomer("clean-bad")
            .env(key, value)
            .env("AIRFLOW_ENTRYPOINT_LOG_LEVEL", "info")
            .arg("clean-logs")
            .run(secs(10));
        finished.expect_code(78);
        let errors: Vec<&str> = finished
            .stderr
            .lines()
            .filter(|l| l.contains("ERROR"))
            .collect();
        assert_eq!(errors.len(), 1, "{}", finished.stderr);
        assert!(
            errors[0].contains(key) && errors[0].contains(value),
            "{}",
            errors[0]
        );
    }
}

#[test]
fn clean_logs_runs_as_a_part_of_a_group() {
    let mut running = groomer("clean-group")
        .args(["--", "sleep", "600", "+", "clean-logs"])
        .start();
    let line = wait_until(secs(10), || {
        let err = fs::read_to_string(running.dir.join("stderr")).unwrap_or_default();
        err.lines()
            .find(|l| l.contains("clean-logs: removed 2"))
            .map(String::from)
    });
    assert!(line.is_some(), "{}", running.dir.read("stderr"));
    assert!(!exists(&running.dir, "dag_id=a/run_id=old"));
    running.signal(libc::SIGTERM);
    let status = running.wait(secs(10));
    running.finish(status).expect_code(0);
}
