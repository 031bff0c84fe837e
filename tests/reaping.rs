//! Zombies are reaped (as PID 1 and as a subreaper), and what the child
//! leaves behind gets SIGTERM, then SIGKILL after KILL_TIMEOUT, while the
//! exit code stays the child's.

mod support;
use std::time::Instant;
use support::*;

#[test]
fn a_thousand_orphaned_zombies_are_all_reaped_as_pid1() {
    if !needs_root("a_thousand_orphaned_zombies_are_all_reaped_as_pid1") {
        return;
    }
    // The subshell forks 1000 short-lived children and exits without waiting:
    // they are reparented to PID 1. The main child then watches /proc until
    // no zombie is left (bounded), and reports how many it saw last.
    let script = r#"
( i=0; while [ $i -lt 1000 ]; do true & i=$((i+1)); done )
n=0
while [ $n -lt 2000 ]; do
  z=$(grep -l '^State:.Z' /proc/[0-9]*/status 2>/dev/null | wc -l)
  [ "$z" -eq 0 ] && break
  sleep 0.01; n=$((n+1))
done
echo "$z" > $T/zombies
[ "$z" -eq 0 ]
"#;
    let mut running = Run::new(Mode::Pid1, "zombies").shell(script).start();
    let status = running.wait(secs(60));
    assert_eq!(running.dir.read("zombies").trim(), "0");
    assert_eq!(status.code(), Some(0), "{}", running.dir.read("stderr"));
}

#[test]
fn orphans_are_reaped_as_a_subreaper() {
    // Orphans reparented to the subreaper entrypoint are reaped: afterwards
    // none of the recorded pids exists, not even as a zombie.
    let script = r#"
( i=0; while [ $i -lt 50 ]; do sh -c 'echo $$ >> $T/pids' & i=$((i+1)); done )
while [ $(wc -l < $T/pids) -lt 50 ]; do sleep 0.01; done
"#;
    let f = Run::new(Mode::Subreaper, "orphans").shell(script);
    let mut running = f.start();
    let status = running.wait(secs(60));
    assert_eq!(status.code(), Some(0));
    let pids = running.dir.read("pids");
    assert_eq!(pids.lines().count(), 50);
    for pid in pids.lines().filter_map(|p| p.trim().parse::<i32>().ok()) {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists() || !is_our_zombie(pid),
            "pid {pid} is still a zombie"
        );
    }
}

fn is_our_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| {
            s.rsplit_once(')')
                .map(|(_, r)| r.trim_start().starts_with('Z'))
                .unwrap_or(false)
        })
        .unwrap_or(false)
}

/// The child leaves two stragglers, one of which ignores TERM, and exits 3.
const LEAVES_STRAGGLERS: &str = r#"
sh -c 'trap "" TERM; echo $$ > $T/stubborn; while :; do sleep 100; done' &
sh -c 'echo $$ > $T/polite; while :; do sleep 100; done' &
while [ ! -s $T/stubborn ] || [ ! -s $T/polite ]; do sleep 0.01; done
exit 3
"#;

#[test]
fn stragglers_get_term_then_kill_and_the_code_is_the_childs_as_pid1() {
    if !needs_root("stragglers_get_term_then_kill_and_the_code_is_the_childs_as_pid1") {
        return;
    }
    let started = Instant::now();
    let f = Run::new(Mode::Pid1, "strag")
        .env("AIRFLOW_ENTRYPOINT_KILL_TIMEOUT", "1")
        .shell(LEAVES_STRAGGLERS)
        .run(secs(30));
    f.expect_code(3);
    assert!(f.stderr.contains("sent SIGTERM"), "{}", f.stderr);
    assert!(f.stderr.contains("sent SIGKILL"), "{}", f.stderr);
    assert!(started.elapsed() < secs(15));
}

#[test]
fn stragglers_are_stopped_as_a_subreaper_too() {
    let mut running = Run::new(Mode::Subreaper, "strag")
        .env("AIRFLOW_ENTRYPOINT_KILL_TIMEOUT", "1")
        .shell(LEAVES_STRAGGLERS)
        .start();
    let status = running.wait(secs(30));
    assert_eq!(status.code(), Some(3), "{}", running.dir.read("stderr"));
    for name in ["stubborn", "polite"] {
        let pid: i32 = running.dir.read(name).trim().parse().unwrap();
        assert!(!alive(pid), "{name} straggler {pid} is still alive");
    }
    assert!(running.dir.read("stderr").contains("sent SIGKILL"));
}

#[test]
fn with_nothing_left_behind_it_exits_at_once() {
    let started = Instant::now();
    let f = Run::new(Mode::Subreaper, "quick")
        .env("AIRFLOW_ENTRYPOINT_KILL_TIMEOUT", "30")
        .shell("exit 0")
        .run(secs(20));
    f.expect_code(0);
    assert!(
        started.elapsed() < secs(10),
        "waited for the kill timeout with nothing left"
    );
    assert!(!f.stderr.contains("SIGTERM"), "{}", f.stderr);
}

/// At debug level every reaped orphan is named: its pid, and its command as
/// read from /proc while it was still a zombie.
#[test]
fn at_debug_level_a_reaped_orphan_is_named_by_pid_and_command() {
    if !needs_root("at_debug_level_a_reaped_orphan_is_named_by_pid_and_command") {
        return;
    }
    // `nap-orphan` is sleep under a name of its own; the subshell leaves
    // it to the entrypoint and the main child lives on.
    let script = "cp \"$(command -v sleep)\" $T/nap-orphan; \
        ($T/nap-orphan 0.2 & echo $! > $T/orphan); \
        trap 'exit 0' TERM; while :; do sleep 100 & wait $!; done";
    // As PID 1: the namespace, and all it holds, dies with the run.
    let mut running = Run::new(Mode::Pid1, "reap-named").shell(script).start();
    let orphan: i32 = running
        .wait_file("orphan", secs(20))
        .trim()
        .parse()
        .unwrap();
    let line = format!("reaped orphan pid {orphan} (nap-orphan)");
    wait_until(secs(20), || {
        running.dir.read("stderr").contains(&line).then_some(())
    })
    .unwrap_or_else(|| panic!("no {line:?}; stderr:\n{}", running.dir.read("stderr")));
    running.signal(libc::SIGTERM);
    let done = running.finish_within(secs(20));
    done.expect_code(0);
    assert_eq!(done.stderr.matches(&line).count(), 1, "{}", done.stderr);
}
