//! Every death explained: real kernel OOM kills in a memory cgroup the test
//! creates (with a small limit) are named as they happen — a process under
//! the main child (counted), an orphan the entrypoint reaps (named), the
//! main child itself (named, and in the exit summary) — each only once; a
//! SIGKILL sent by someone else is not called an OOM kill.

mod support;
use support::cgroup::MemoryCgroup;
use support::*;

const LIMIT: u64 = 48 << 20;
/// Allocates and touches 256 MiB: far past the limit.
const HOG: &str = "perl -e '$x = q(a) x (256 << 20); sleep 5'";

fn run_in(cgroup: &MemoryCgroup, mode: Mode, tag: &str, args: &[&str]) -> Running {
    let mut run = Run::new(mode, tag).args(args);
    cgroup.enter_on_spawn(run.command_mut());
    run.start()
}

fn count(text: &str, what: &str) -> usize {
    text.matches(what).count()
}

#[test]
fn a_process_under_the_main_child_is_counted_once() {
    if !needs_root("a_process_under_the_main_child_is_counted_once") {
        return;
    }
    let Some(cgroup) = MemoryCgroup::new("under", LIMIT) else {
        return;
    };
    let script = format!(
        "{HOG}; echo $? > $T/rc; trap 'exit 0' TERM; while :; do sleep 100 & wait $!; done"
    );
    let mut running = run_in(
        &cgroup,
        Mode::Subreaper,
        "oom-under",
        &["--", "sh", "-c", &script],
    );
    assert_eq!(running.wait_file("rc", secs(60)).trim(), "137");
    let stderr = wait_until(secs(20), || {
        let e = running.dir.read("stderr");
        e.contains("OOM killer killed").then_some(e)
    })
    .unwrap_or_else(|| panic!("no OOM line:\n{}", running.dir.read("stderr")));
    assert_eq!(cgroup.oom_kills(), 1);
    assert!(
        stderr.contains(
            "the kernel's OOM killer killed 1 process(es) in this container (limit 48.0 MiB"
        ),
        "{stderr}"
    );
    // perl was the shell's child: the shell reaped it, so it is not named.
    assert_eq!(
        count(&stderr, "was killed by the OOM killer"),
        0,
        "{stderr}"
    );
    running.signal(libc::SIGTERM);
    let done = running.finish_within(secs(20));
    done.expect_code(0);
    assert_eq!(
        count(&done.stderr, "OOM killer killed"),
        1,
        "{}",
        done.stderr
    );
    assert!(
        done.stderr.contains("1 OOM kill(s) (limit 48.0 MiB, peak "),
        "{}",
        done.stderr
    );
}

/// After the drop to the service user the watch still hears the kernel: it
/// is armed once the child runs (off the path to its exec), but v1's
/// registration file (cgroup.event_control, mode 0200) was opened while the
/// entrypoint was still root. v2 needs no root for its inotify watch.
#[test]
fn after_the_drop_to_the_service_user_an_oom_kill_is_still_heard() {
    if !needs_root("after_the_drop_to_the_service_user_an_oom_kill_is_still_heard") {
        return;
    }
    let Some(cgroup) = MemoryCgroup::new("drop", LIMIT) else {
        return;
    };
    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nastro:x:5000:5000:Astro:/home/astro:/bin/sh\n";
    let script = format!(
        "id -u > $T/uid; {HOG}; echo $? > $T/rc; trap 'exit 0' TERM; while :; do sleep 100 & wait $!; done"
    );
    let mut run = Run::with_users(
        "oom-drop",
        PASSWD,
        "root:x:0:\nastro:x:5000:\n",
        0o644,
        None,
    )
    .args(["--", "sh", "-c", &script]);
    cgroup.enter_on_spawn(run.command_mut());
    let mut running = run.start();
    assert_eq!(running.wait_file("rc", secs(60)).trim(), "137");
    assert_eq!(running.dir.read("uid").trim(), "5000");
    let heard = wait_until(secs(20), || {
        running
            .dir
            .read("stderr")
            .contains("OOM killer killed 1 process(es)")
            .then_some(())
    });
    let stderr = running.dir.read("stderr");
    running.signal(libc::SIGTERM);
    let done = running.finish_within(secs(20));
    assert!(
        heard.is_some(),
        "no OOM line while the child ran:\n{stderr}"
    );
    assert!(!stderr.contains("OOM diagnosis off"), "{stderr}");
    // The notification itself, not a later read of the counter.
    assert!(!stderr.contains("no OOM notifications"), "{stderr}");
    done.expect_code(0);
}

#[test]
fn an_orphan_killed_by_the_oom_killer_is_named_once_as_pid1() {
    if !needs_root("an_orphan_killed_by_the_oom_killer_is_named_once_as_pid1") {
        return;
    }
    let Some(cgroup) = MemoryCgroup::new("orphan", LIMIT) else {
        return;
    };
    // ( ... & ) leaves perl to the entrypoint, which reaps it.
    let script = format!("({HOG} &); echo started > $T/started; trap 'exit 0' TERM; while :; do sleep 100 & wait $!; done");
    let mut running = run_in(
        &cgroup,
        Mode::Pid1,
        "oom-orphan",
        &["--", "sh", "-c", &script],
    );
    running.wait_file("started", secs(20));
    let stderr = wait_until(secs(60), || {
        let e = running.dir.read("stderr");
        e.contains("was killed by the OOM killer").then_some(e)
    })
    .unwrap_or_else(|| panic!("the orphan was not named:\n{}", running.dir.read("stderr")));
    assert!(
        stderr.contains("(perl) was killed by the OOM killer"),
        "{stderr}"
    );
    running.signal(libc::SIGTERM);
    let done = running.finish_within(secs(20));
    done.expect_code(0);
    assert_eq!(
        count(&done.stderr, "was killed by the OOM killer"),
        1,
        "{}",
        done.stderr
    );
    assert_eq!(
        count(&done.stderr, "OOM killer killed 1 process(es)"),
        1,
        "{}",
        done.stderr
    );
    // perl, and the shell's `sleep` left behind when it exited on TERM.
    let orphans: usize = done
        .stderr
        .split(" orphan(s) reaped")
        .next()
        .and_then(|head| head.rsplit(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(orphans >= 1, "{}", done.stderr);
}

#[test]
fn the_main_child_killed_by_the_oom_killer_is_named_and_summarised() {
    if !needs_root("the_main_child_killed_by_the_oom_killer_is_named_and_summarised") {
        return;
    }
    let Some(cgroup) = MemoryCgroup::new("main", LIMIT) else {
        return;
    };
    let args = ["--", "perl", "-e", "$x = q(a) x (256 << 20); sleep 5"];
    let running = run_in(&cgroup, Mode::Pid1, "oom-main", &args);
    let done = running.finish_within(secs(60));
    done.expect_code(137);
    let stderr = &done.stderr;
    assert_eq!(count(stderr, "the main process, pid "), 1, "{stderr}");
    assert_eq!(
        count(stderr, "(perl) was killed by the OOM killer"),
        1,
        "{stderr}"
    );
    assert_eq!(
        count(stderr, "OOM killer killed 1 process(es)"),
        1,
        "{stderr}"
    );
    let summary = stderr
        .lines()
        .find(|l| l.contains("summary: "))
        .unwrap_or_else(|| panic!("no summary:\n{stderr}"));
    assert!(summary.contains("was killed by SIGKILL (137)"), "{summary}");
    assert!(
        summary.contains("1 OOM kill(s) (limit 48.0 MiB"),
        "{summary}"
    );
    assert!(summary.contains("/perl"), "{summary}");
}

#[test]
fn a_sigkill_from_someone_else_is_not_called_an_oom_kill() {
    if !needs_root("a_sigkill_from_someone_else_is_not_called_an_oom_kill") {
        return;
    }
    let Some(cgroup) = MemoryCgroup::new("kill", LIMIT) else {
        return;
    };
    let script = "echo $$ > $T/pid; while :; do sleep 100 & wait $!; done";
    let mut running = run_in(
        &cgroup,
        Mode::Subreaper,
        "oom-kill",
        &["--", "sh", "-c", script],
    );
    let pid: i32 = running.wait_file("pid", secs(20)).trim().parse().unwrap();
    // SAFETY: kill(2) with plain integers.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let done = running.finish_within(secs(20));
    done.expect_code(137);
    assert_eq!(cgroup.oom_kills(), 0);
    assert!(!done.stderr.contains("OOM killer"), "{}", done.stderr);
    assert!(done.stderr.contains("0 OOM kill(s)"), "{}", done.stderr);
}

#[test]
fn the_exit_summary_is_one_json_object_too() {
    let done = Run::new(Mode::Subreaper, "summary-json")
        .env("AIRFLOW_ENTRYPOINT_LOG_FORMAT", "json")
        .args(["--", "sh", "-c", "sleep 0.2 & exit 3"])
        .run(secs(20));
    done.expect_code(3);
    let line = done
        .stderr
        .lines()
        .find(|l| l.contains("summary: "))
        .unwrap_or_else(|| panic!("no summary:\n{}", done.stderr));
    let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object");
    assert_eq!(v["exit_code"], 3, "{line}");
    assert!(
        v["command"].as_str().is_some_and(|c| c.ends_with("/sh")),
        "{line}"
    );
    assert!(v["runtime_s"].as_f64().is_some(), "{line}");
    assert!(v["orphans_reaped"].as_u64().is_some(), "{line}");
    assert!(v["stragglers_term"].as_u64().is_some(), "{line}");
}

#[test]
fn with_a_read_only_cgroupfs_the_victim_is_still_named_when_reaped() {
    if !needs_root("with_a_read_only_cgroupfs_the_victim_is_still_named_when_reaped") {
        return;
    }
    let Some(cgroup) = MemoryCgroup::new("ro", LIMIT) else {
        return;
    };
    if cgroup.v2 {
        return; // v2 needs no write: inotify works on a read-only mount
    }
    // As in a container: the cgroupfs is mounted read-only, so v1's eventfd
    // cannot be registered; the counter is read at each reap instead.
    let dir = TempDir::new("oom-ro");
    let mount = cgroup.path().to_str().unwrap().to_string();
    let mut command = std::process::Command::new("unshare");
    command
        .args([
            "--pid",
            "--fork",
            "--mount-proc",
            "--mount",
            "--kill-child",
            "sh",
            "-c",
        ])
        .arg(
            "mount --bind \"$1\" \"$1\" && mount -o remount,bind,ro \"$1\" && shift && exec \"$@\"",
        )
        .args(["sh", &mount])
        .arg(bin())
        .args(["--", "perl", "-e", "$x = q(a) x (256 << 20); sleep 5"])
        .env("AIRFLOW_ENTRYPOINT_RUN_AS_ROOT", "true")
        .env("AIRFLOW_ENTRYPOINT_LOG_LEVEL", "debug")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap());
    cgroup.enter_on_spawn(&mut command);
    let mut child = command.spawn().expect("unshare");
    let status = wait_until(secs(60), || child.try_wait().ok().flatten());
    if status.is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    let stderr = dir.read("stderr");
    assert_eq!(status.and_then(|s| s.code()), Some(137), "{stderr}");
    assert!(stderr.contains("no OOM notifications"), "{stderr}");
    assert_eq!(
        count(&stderr, "(perl) was killed by the OOM killer"),
        1,
        "{stderr}"
    );
    assert_eq!(
        count(&stderr, "OOM killer killed 1 process(es)"),
        1,
        "{stderr}"
    );
}

/// The summary counts what happened during this entrypoint's life: a first
/// run in the cgroup is OOM-killed, a second run in the same cgroup, ended
/// by a plain SIGKILL, claims no OOM kill and does not pass the first run's
/// peak off as its own (the kernel's counters count the cgroup's life).
#[test]
fn a_second_run_in_the_same_cgroup_does_not_claim_the_first_runs_oom_kill() {
    if !needs_root("a_second_run_in_the_same_cgroup_does_not_claim_the_first_runs_oom_kill") {
        return;
    }
    let Some(cgroup) = MemoryCgroup::new("twice", LIMIT) else {
        return;
    };
    let first = run_in(
        &cgroup,
        Mode::Subreaper,
        "oom-first",
        &["--", "perl", "-e", "$x = q(a) x (256 << 20); sleep 5"],
    )
    .finish_within(secs(60));
    first.expect_code(137);
    assert!(
        first
            .stderr
            .contains("1 OOM kill(s) (limit 48.0 MiB, peak "),
        "{}",
        first.stderr
    );
    assert_eq!(cgroup.oom_kills(), 1);

    let mut second = Run::new(Mode::Subreaper, "oom-second")
        .env("AIRFLOW_ENTRYPOINT_LOG_FORMAT", "json")
        .shell("echo $$ > $T/pid; while :; do sleep 100 & wait $!; done");
    cgroup.enter_on_spawn(second.command_mut());
    let mut running = second.start();
    let pid: i32 = running.wait_file("pid", secs(20)).trim().parse().unwrap();
    // SAFETY: kill(2) with plain integers.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let done = running.finish_within(secs(20));
    done.expect_code(137);
    assert_eq!(cgroup.oom_kills(), 1, "the second run was OOM-killed too");
    assert!(
        !done.stderr.contains("OOM killer"),
        "the first run's OOM kill named in the second:\n{}",
        done.stderr
    );
    let line = done
        .stderr
        .lines()
        .find(|l| l.contains("summary: "))
        .unwrap_or_else(|| panic!("no summary:\n{}", done.stderr));
    let v: serde_json::Value = serde_json::from_str(line).expect("one JSON object");
    assert_eq!(v["oom_kills"], 0, "{line}");
    assert_eq!(v["memory_limit"], LIMIT, "{line}");
    // The first run's peak (about the limit) is not this run's: either the
    // kernel tells this run's own (small), or it is 0 and the cgroup's
    // earlier peak is given apart, labelled.
    let peak = v["memory_peak"].as_u64().unwrap_or(u64::MAX);
    assert!(peak < LIMIT / 2, "{line}");
    let message = v["message"].as_str().unwrap_or_default();
    assert!(message.contains("0 OOM kill(s)"), "{line}");
    if peak == 0 {
        assert!(
            v["cgroup_peak_before_run"].as_u64() > Some(LIMIT / 2),
            "{line}"
        );
        assert!(message.contains("reached before it"), "{line}");
    }
}

/// An OOM kill of a process that another process reaps (here the shell
/// reaps perl) is counted, and expires: a plain SIGKILL of the main child
/// seconds later is not called an OOM kill.
#[test]
fn an_unclaimed_oom_kill_expires_before_a_later_sigkill() {
    if !needs_root("an_unclaimed_oom_kill_expires_before_a_later_sigkill") {
        return;
    }
    let Some(cgroup) = MemoryCgroup::new("expire", LIMIT) else {
        return;
    };
    let script =
        format!("{HOG}; echo $? > $T/rc; echo $$ > $T/pid; while :; do sleep 100 & wait $!; done");
    let mut running = run_in(
        &cgroup,
        Mode::Subreaper,
        "oom-expire",
        &["--", "sh", "-c", &script],
    );
    assert_eq!(running.wait_file("rc", secs(60)).trim(), "137");
    let pid: i32 = running.wait_file("pid", secs(20)).trim().parse().unwrap();
    wait_until(secs(20), || {
        running
            .dir
            .read("stderr")
            .contains("OOM killer killed 1 process(es)")
            .then_some(())
    })
    .unwrap_or_else(|| panic!("no OOM line:\n{}", running.dir.read("stderr")));
    // What is waited for here is time itself: longer than the 2 s an OOM
    // kill waits to be claimed by a death the entrypoint reaps.
    std::thread::sleep(secs(3));
    // SAFETY: kill(2) with plain integers.
    unsafe { libc::kill(pid, libc::SIGKILL) };
    let done = running.finish_within(secs(20));
    done.expect_code(137);
    assert_eq!(cgroup.oom_kills(), 1);
    assert_eq!(
        count(&done.stderr, "was killed by the OOM killer"),
        0,
        "{}",
        done.stderr
    );
    assert!(done.stderr.contains("1 OOM kill(s)"), "{}", done.stderr);
}
