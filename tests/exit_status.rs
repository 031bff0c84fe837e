//! The entrypoint exits exactly as its child did: the child's exit code, or
//! 128+N when signal N killed it; EXIT_CODE_MAP rewrites it on the way out.

mod support;
use support::*;

fn exits_with(mode: Mode, script: &str) -> Option<i32> {
    Run::new(mode, "exit").shell(script).run(secs(20)).code
}

#[test]
fn exit_codes_pass_through_as_pid1() {
    if !needs_root("exit_codes_pass_through_as_pid1") {
        return;
    }
    for code in [0, 1, 7, 255] {
        assert_eq!(exits_with(Mode::Pid1, &format!("exit {code}")), Some(code));
    }
}

#[test]
fn exit_codes_pass_through_as_subreaper() {
    for code in [0, 1, 7, 255] {
        assert_eq!(
            exits_with(Mode::Subreaper, &format!("exit {code}")),
            Some(code)
        );
    }
}

#[test]
fn a_child_killed_by_a_signal_gives_128_plus_n() {
    for mode in [Mode::Pid1, Mode::Subreaper] {
        if mode == Mode::Pid1 && !needs_root("a_child_killed_by_a_signal_gives_128_plus_n") {
            continue;
        }
        assert_eq!(exits_with(mode, "kill -KILL $$"), Some(137));
        assert_eq!(exits_with(mode, "kill -TERM $$"), Some(143));
    }
}

#[test]
fn exit_code_map_rewrites_the_childs_status() {
    let finished = Run::new(Mode::Subreaper, "map")
        .env("AIRFLOW_ENTRYPOINT_EXIT_CODE_MAP", "143:0,3:4")
        .shell("kill -TERM $$")
        .run(secs(20));
    finished.expect_code(0);
    let finished = Run::new(Mode::Subreaper, "map")
        .arg("--exit-code-map=3:4")
        .shell("exit 3")
        .run(secs(20));
    finished.expect_code(4);
}

#[test]
fn exit_code_map_does_not_touch_the_entrypoints_own_failures() {
    let finished = Run::new(Mode::Subreaper, "map")
        .env("AIRFLOW_ENTRYPOINT_EXIT_CODE_MAP", "127:0")
        .args(["--", "no-such-command-anywhere"])
        .run(secs(20));
    finished.expect_code(127);
}
