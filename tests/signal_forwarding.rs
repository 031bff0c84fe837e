//! Signals sent to the entrypoint reach the child (or its whole group),
//! after SIGNAL_MAP and TERM_DELAY; GRACE_PERIOD escalates to SIGKILL; a
//! terminating signal before the child exists ends start-up with 128+N.

mod support;
use std::time::Instant;
use support::*;

/// A child that records each of HUP INT USR1 USR2 in $T/got and exits 0 on TERM.
const RECORDER: &str = r#"
for s in HUP INT USR1 USR2; do trap "echo $s >> $T/got" $s; done
trap 'echo TERM >> $T/got; exit 0' TERM
echo ready > $T/ready
while :; do sleep 100 & wait $!; done
"#;

fn signals_reach_the_child(mode: Mode) {
    let mut running = Run::new(mode, "fwd").shell(RECORDER).start();
    running.wait_file("ready", secs(20));
    let names = [
        (libc::SIGHUP, "HUP"),
        (libc::SIGINT, "INT"),
        (libc::SIGUSR1, "USR1"),
        (libc::SIGUSR2, "USR2"),
    ];
    running.expect_recorded_in_order(&names);
    running.signal(libc::SIGTERM);
    let status = running.wait(secs(20));
    assert_eq!(status.code(), Some(0));
    assert_eq!(running.dir.read("got").lines().last(), Some("TERM"));
}

#[test]
fn term_int_hup_usr1_usr2_reach_the_child_as_pid1() {
    if needs_root("term_int_hup_usr1_usr2_reach_the_child_as_pid1") {
        signals_reach_the_child(Mode::Pid1);
    }
}

#[test]
fn term_int_hup_usr1_usr2_reach_the_child_as_subreaper() {
    signals_reach_the_child(Mode::Subreaper);
}

/// A child with a grandchild in its process group; returns whether the
/// grandchild got the USR1 sent to the entrypoint.
fn grandchild_gets_usr1(mode: Mode, env: &[(&str, &str)]) -> bool {
    let script = r#"
sh -c 'trap "echo USR1 >> $T/grand" USR1; trap "echo USR2 >> $T/grand" USR2; echo $$ > $T/grandpid.tmp; mv $T/grandpid.tmp $T/grandpid; while :; do sleep 100 & wait $!; done' &
trap 'echo USR1 >> $T/parent' USR1
trap 'exit 0' TERM
echo ready > $T/ready
while :; do sleep 100 & wait $!; done
"#;
    let mut run = Run::new(mode, "scope");
    for (k, v) in env {
        run = run.env(k, v);
    }
    let mut running = run.shell(script).start();
    running.wait_file("ready", secs(20));
    let grand: i32 = running
        .wait_file("grandpid", secs(20))
        .trim()
        .parse()
        .unwrap();
    let grand_host = match mode {
        Mode::Subreaper => grand,
        Mode::Pid1 => host_pid(running.entrypoint_pid(), grand).expect("grandchild host pid"),
    };
    running.signal(libc::SIGUSR1);
    running.wait_file("parent", secs(20));
    // dash runs pending traps in signal-number order: once USR2 (sent
    // straight to the grandchild) is recorded, a USR1 that the group
    // delivery gave it would already be recorded before it.
    // SAFETY: kill(2) with plain integers.
    unsafe { libc::kill(grand_host, libc::SIGUSR2) };
    let grand_log = wait_until(secs(20), || {
        let text = running.dir.read("grand");
        text.contains("USR2").then_some(text)
    })
    .expect("grandchild never recorded USR2");
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait(secs(20)).code(), Some(0));
    grand_log.contains("USR1")
}

#[test]
fn scope_group_reaches_the_grandchild_and_child_does_not() {
    if !needs_root("scope_group_reaches_the_grandchild_and_child_does_not") {
        return;
    }
    assert!(
        grandchild_gets_usr1(Mode::Pid1, &[]),
        "default scope is group"
    );
    assert!(!grandchild_gets_usr1(
        Mode::Pid1,
        &[("AIRFLOW_ENTRYPOINT_SIGNAL_SCOPE", "child")]
    ));
    assert!(grandchild_gets_usr1(
        Mode::Subreaper,
        &[("AIRFLOW_ENTRYPOINT_SIGNAL_SCOPE", "group")]
    ));
}

#[test]
fn dumb_init_setsid_0_means_child_scope_unless_signal_scope_is_set() {
    assert!(!grandchild_gets_usr1(
        Mode::Subreaper,
        &[("DUMB_INIT_SETSID", "0")]
    ));
    assert!(grandchild_gets_usr1(
        Mode::Subreaper,
        &[("DUMB_INIT_SETSID", "1")]
    ));
    assert!(grandchild_gets_usr1(
        Mode::Subreaper,
        &[
            ("DUMB_INIT_SETSID", "0"),
            ("AIRFLOW_ENTRYPOINT_SIGNAL_SCOPE", "group")
        ]
    ));
}

#[test]
fn a_child_ignoring_term_is_killed_after_the_grace_period_and_not_before() {
    if !needs_root("a_child_ignoring_term_is_killed_after_the_grace_period_and_not_before") {
        return;
    }
    let mut running = Run::new(Mode::Pid1, "grace")
        .env("AIRFLOW_ENTRYPOINT_GRACE_PERIOD", "1.5")
        .shell("trap '' TERM; echo ready > $T/ready; while :; do sleep 100; done")
        .start();
    running.wait_file("ready", secs(20));
    let sent = Instant::now();
    running.signal(libc::SIGTERM);
    let status = running.wait(secs(20));
    let waited = sent.elapsed();
    assert_eq!(status.code(), Some(137), "{}", running.dir.read("stderr"));
    assert!(
        waited.as_secs_f64() >= 1.5,
        "killed before the grace period: {waited:?}"
    );
    assert!(running.dir.read("stderr").contains("grace period"));
}

#[test]
fn sigterm_before_the_child_is_spawned_ends_startup_with_143() {
    if !needs_root("sigterm_before_the_child_is_spawned_ends_startup_with_143") {
        return;
    }
    // perl, as PID 1 of the namespace, makes SIGTERM pending (blocked) and
    // execs the entrypoint: the signal is there before main() runs.
    let dir = TempDir::new("early");
    let marker = dir.join("started");
    let started = Instant::now();
    let f = Run::new(Mode::Subreaper, "early");
    let mut f = f;
    let command = f.command_mut();
    *command = std::process::Command::new("unshare");
    command
        .args(["--pid", "--fork", "--mount-proc", "--kill-child", "perl", "-e"])
        .arg("use POSIX; sigprocmask(SIG_BLOCK, POSIX::SigSet->new(SIGTERM)); kill 'TERM', $$; exec @ARGV or die")
        .arg(bin())
        .args(["--", "touch"])
        .arg(&marker)
        .env("AIRFLOW_ENTRYPOINT_RUN_AS_ROOT", "true")
        .stdin(std::process::Stdio::null());
    let finished = f.run(secs(20));
    finished.expect_code(143);
    assert!(started.elapsed() < secs(10));
    assert!(
        !marker.exists(),
        "the command ran although SIGTERM came first"
    );
    assert!(finished.stderr.contains("SIGTERM"), "{}", finished.stderr);
}

#[test]
fn a_burst_of_100_signals_neither_crashes_nor_wedges_it() {
    if !needs_root("a_burst_of_100_signals_neither_crashes_nor_wedges_it") {
        return;
    }
    let mut running = Run::new(Mode::Pid1, "burst")
        .shell("trap 'echo x >> $T/usr1' USR1; trap 'exit 0' TERM; echo ready > $T/ready; while :; do sleep 100 & wait $!; done")
        .start();
    running.wait_file("ready", secs(20));
    let pid = running.entrypoint_pid();
    for i in 0..100 {
        let signal = if i % 2 == 0 {
            libc::SIGUSR1
        } else {
            libc::SIGWINCH
        };
        // SAFETY: kill(2) with plain integers.
        unsafe { libc::kill(pid, signal) };
    }
    running.wait_file("usr1", secs(20));
    assert!(running.is_running(), "the entrypoint died during the burst");
    running.signal(libc::SIGTERM);
    let status = running.wait(secs(20));
    assert_eq!(status.code(), Some(0), "{}", running.dir.read("stderr"));
    assert!(!running.dir.read("stderr").contains("panic"));
}

#[test]
fn signal_map_rewrites_and_drops() {
    let mut running = Run::new(Mode::Subreaper, "map")
        .env("AIRFLOW_ENTRYPOINT_SIGNAL_MAP", "TERM:INT,USR1:NONE")
        .shell("trap 'echo USR1 >> $T/got' USR1; trap 'echo USR2 >> $T/got' USR2; trap 'echo INT >> $T/got; exit 5' INT; echo ready > $T/ready; while :; do sleep 100 & wait $!; done")
        .start();
    running.wait_file("ready", secs(20));
    running.signal(libc::SIGUSR1);
    running.signal(libc::SIGUSR2);
    let got = running.wait_file("got", secs(20));
    assert_eq!(got.trim(), "USR2", "USR1 should have been dropped");
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait(secs(20)).code(), Some(5));
    assert!(running.dir.read("got").contains("INT"));
}

#[test]
fn term_delay_holds_term_and_a_second_term_forwards_at_once() {
    let mut running = Run::new(Mode::Subreaper, "delay")
        .env("AIRFLOW_ENTRYPOINT_TERM_DELAY", "60")
        .shell("trap 'echo USR2 >> $T/got' USR2; trap 'echo TERM >> $T/got; exit 0' TERM; echo ready > $T/ready; while :; do sleep 100 & wait $!; done")
        .start();
    running.wait_file("ready", secs(20));
    let sent = Instant::now();
    running.signal(libc::SIGTERM);
    // The hold must survive any other signal that arrives after it.
    let held = wait_until(secs(20), || {
        running
            .dir
            .read("stderr")
            .contains("holding SIGTERM")
            .then_some(())
    });
    assert!(held.is_some(), "{}", running.dir.read("stderr"));
    running.signal(libc::SIGUSR2);
    let got = running.wait_file("got", secs(20));
    assert_eq!(got.trim(), "USR2", "TERM must be held, USR2 forwarded");
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait(secs(20)).code(), Some(0));
    assert!(
        sent.elapsed() < secs(30),
        "the second TERM did not cut the delay short"
    );
    assert!(running.dir.read("got").contains("TERM"));
}

#[test]
fn term_delay_forwards_term_after_the_delay() {
    let mut running = Run::new(Mode::Subreaper, "delay")
        .arg("--term-delay=1")
        .shell("trap 'exit 0' TERM; echo ready > $T/ready; while :; do sleep 100 & wait $!; done")
        .start();
    running.wait_file("ready", secs(20));
    let sent = Instant::now();
    running.signal(libc::SIGTERM);
    assert_eq!(running.wait(secs(20)).code(), Some(0));
    assert!(
        sent.elapsed().as_secs_f64() >= 1.0,
        "forwarded before the delay"
    );
}

/// Kills each pid it holds when the test ends, also when it fails (a
/// negative one is a process group).
struct KillOnDrop(Vec<i32>);
impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            // SAFETY: kill(2) with plain integers.
            unsafe { libc::kill(*pid, libc::SIGKILL) };
        }
    }
}

/// A child that writes its pid to $T/child and TERM to $T/got on SIGTERM.
const TERM_RECORDER: &str =
    "trap 'echo TERM > $T/got; exit 0' TERM; echo $$ > $T/child; while :; do sleep 100 & wait $!; done";

/// `--parent-death-signal TERM`: when the process that started the
/// entrypoint is killed, the kernel sends the entrypoint SIGTERM, which it
/// forwards; the child ends and so does the entrypoint.
#[test]
fn the_parent_death_signal_arrives_when_the_parent_is_killed() {
    let dir = TempDir::new("pdeath");
    let mut parent = std::process::Command::new("sh")
        .args(["-c", "\"$0\" \"$@\" & echo $! > \"$T/entrypoint\"; wait"])
        .arg(bin())
        .args([
            "--parent-death-signal",
            "TERM",
            "--",
            "sh",
            "-c",
            TERM_RECORDER,
        ])
        .env_remove("AIRFLOW_ENTRYPOINT_LOG_FORMAT")
        .env("AIRFLOW_ENTRYPOINT_RUN_AS_ROOT", "true")
        .env("AIRFLOW_ENTRYPOINT_LOG_LEVEL", "debug")
        .env("T", dir.path())
        .current_dir(dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::fs::File::create(dir.join("stderr")).unwrap())
        .spawn()
        .expect("start the parent shell");
    let mut guard = KillOnDrop(vec![parent.id() as i32]);
    let entrypoint: i32 = wait_until(secs(20), || dir.read("entrypoint").trim().parse().ok())
        .expect("the parent shell did not start the entrypoint");
    guard.0.push(entrypoint);
    let child: i32 = wait_until(secs(20), || dir.read("child").trim().parse().ok())
        .unwrap_or_else(|| panic!("the child never started; stderr:\n{}", dir.read("stderr")));
    // The child leads a session (and group) of its own: its `sleep` too.
    guard.0.extend([child, -child]);
    let _ = parent.kill();
    let _ = parent.wait();
    wait_until(secs(20), || {
        (dir.read("got").trim() == "TERM").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no TERM reached the child after the parent died; stderr:\n{}",
            dir.read("stderr")
        )
    });
    wait_until(secs(20), || (!alive(entrypoint)).then_some(())).unwrap_or_else(|| {
        panic!(
            "the entrypoint outlived its parent:\n{}",
            dir.read("stderr")
        )
    });
    assert!(
        dir.read("stderr").contains("forwarded signal"),
        "{}",
        dir.read("stderr")
    );
}

/// The kernel clears the parent-death signal when credentials change: after
/// the drop to the service user it is set again, so killing the launcher
/// (unshare, the parent of the namespace's init) still sends it.
#[test]
fn the_parent_death_signal_survives_the_drop_to_the_service_user() {
    if !needs_root("the_parent_death_signal_survives_the_drop_to_the_service_user") {
        return;
    }
    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nastro:x:5000:5000:Astro:/home/astro:/bin/sh\n";
    let script = format!("id -u > $T/uid; {TERM_RECORDER}");
    let mut running = Run::with_users(
        "pdeath-drop",
        PASSWD,
        "root:x:0:\nastro:x:5000:\n",
        0o644,
        None,
    )
    .args(["--parent-death-signal", "TERM", "--", "sh", "-c", &script])
    .start();
    running.wait_file("child", secs(20));
    assert_eq!(running.dir.read("uid").trim(), "5000");
    let entrypoint = running.entrypoint_pid();
    // Once the launcher is reaped the run no longer kills what it started.
    let _guard = KillOnDrop(vec![entrypoint]);
    // SAFETY: kill(2) with plain integers: the launcher only.
    unsafe { libc::kill(running.launcher_pid(), libc::SIGKILL) };
    running.wait(secs(20));
    wait_until(secs(20), || {
        (running.dir.read("got").trim() == "TERM").then_some(())
    })
    .unwrap_or_else(|| {
        panic!(
            "no TERM reached the child after the launcher died; stderr:\n{}",
            running.dir.read("stderr")
        )
    });
    wait_until(secs(20), || (!alive(entrypoint)).then_some(())).unwrap_or_else(|| {
        panic!(
            "the entrypoint outlived its parent:\n{}",
            running.dir.read("stderr")
        )
    });
}
