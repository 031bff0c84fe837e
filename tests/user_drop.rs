//! Root drops to the service user (astro, 5000) for good; a non-root
//! arbitrary UID gets a passwd entry and a HOME. Each test runs in its own
//! mount namespace with its own /etc/passwd and /etc/group.

mod support;
use support::*;

const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nastro:x:5000:5000:Astro:/home/astro:/bin/sh\nbob:x:1001:1001::/home/bob:/bin/sh\n";
const GROUP: &str = "root:x:0:\nastro:x:5000:\ndocker:x:999:astro,bob\nother:x:1234:bob\n";

/// Records who the child is.
const WHOAMI: &str = r#"id -u > $T/uid; id -g > $T/gid; id -G > $T/groups; echo "$HOME" > $T/home; echo "$USER" > $T/user
grep NoNewPrivs /proc/self/status | tr -dc 0-9 > $T/nnp
perl -e 'use POSIX; print(POSIX::setuid(0) ? "regained" : "refused")' > $T/setuid0
umask > $T/umask"#;

#[test]
fn root_drops_to_astro_5000_with_only_its_groups_and_cannot_regain_root() {
    if !needs_root("root_drops_to_astro_5000_with_only_its_groups_and_cannot_regain_root") {
        return;
    }
    let f = Run::with_users("drop", PASSWD, GROUP, 0o644, None)
        .shell(WHOAMI)
        .run(secs(30));
    f.expect_code(0);
    assert_eq!(f.file("uid"), "5000");
    assert_eq!(f.file("gid"), "5000");
    assert_eq!(f.file("groups"), "5000 999", "exactly the user's groups");
    assert_eq!(
        f.file("home"),
        "/home/astro",
        "HOME from passwd, not the container's /root"
    );
    assert_eq!(f.file("user"), "astro");
    assert_eq!(f.file("nnp"), "1", "PR_SET_NO_NEW_PRIVS");
    assert_eq!(f.file("setuid0"), "refused");
    assert_eq!(f.file("umask"), "0002");
    assert!(
        f.stderr.contains("dropped root to the service user"),
        "{}",
        f.stderr
    );
}

#[test]
fn impersonation_keeps_new_privileges_possible_and_says_so() {
    if !needs_root("impersonation_keeps_new_privileges_possible_and_says_so") {
        return;
    }
    let f = Run::with_users("imp", PASSWD, GROUP, 0o644, None)
        .env("AIRFLOW__CORE__DEFAULT_IMPERSONATION", "airflow")
        .env("AIRFLOW_ENTRYPOINT_UMASK", "022")
        .shell(WHOAMI)
        .run(secs(30));
    f.expect_code(0);
    assert_eq!(f.file("nnp"), "0");
    assert_eq!(f.file("umask"), "0022");
    assert!(f.stderr.contains("DEFAULT_IMPERSONATION"), "{}", f.stderr);
}

#[test]
fn a_name_with_another_uid_is_78_saying_what_was_found() {
    if !needs_root("a_name_with_another_uid_is_78_saying_what_was_found") {
        return;
    }
    let passwd = "root:x:0:0:root:/root:/bin/sh\nastro:x:1000:1000::/home/astro:/bin/sh\n";
    let f = Run::with_users("mismatch", passwd, GROUP, 0o644, None)
        .shell("touch $T/ran")
        .run(secs(30));
    f.expect_code(78);
    assert!(
        f.stderr
            .contains("user astro exists in /etc/passwd with UID 1000, but ASTRONOMER_UID=5000"),
        "{}",
        f.stderr
    );
    assert!(
        f.file("ran").is_empty() && !f.files.contains_key("ran"),
        "nothing may start"
    );
    let f = Run::with_users("mismatch", PASSWD, GROUP, 0o644, None)
        .env("ASTRONOMER_USER", "airflow")
        .shell("true")
        .run(secs(30));
    f.expect_code(78);
    assert!(
        f.stderr.contains("UID 5000 belongs to user astro"),
        "{}",
        f.stderr
    );
}

#[test]
fn a_missing_user_is_78_unless_create_user_appends_it() {
    if !needs_root("a_missing_user_is_78_unless_create_user_appends_it") {
        return;
    }
    let passwd = "root:x:0:0:root:/root:/bin/sh\n";
    let f = Run::with_users("missing", passwd, GROUP, 0o644, None)
        .shell("true")
        .run(secs(30));
    f.expect_code(78);
    assert!(
        f.stderr.contains("AIRFLOW_ENTRYPOINT_CREATE_USER=true"),
        "{}",
        f.stderr
    );
    let f = Run::with_users("create", passwd, GROUP, 0o644, None)
        .env("AIRFLOW_ENTRYPOINT_CREATE_USER", "true")
        .env("AIRFLOW_HOME", "/usr/local/airflow")
        .shell("id -u > $T/uid; id -g > $T/gid; grep '^astro:' /etc/passwd > $T/entry")
        .run(secs(30));
    f.expect_code(0);
    assert_eq!(f.file("uid"), "5000");
    assert_eq!(f.file("gid"), "0");
    assert!(
        f.file("entry").starts_with("astro:x:5000:0:"),
        "{}",
        f.file("entry")
    );
}

#[test]
fn run_as_root_keeps_root_without_any_user_entry() {
    if !needs_root("run_as_root_keeps_root_without_any_user_entry") {
        return;
    }
    let f = Run::with_users(
        "root",
        "root:x:0:0:root:/root:/bin/sh\n",
        GROUP,
        0o644,
        None,
    )
    .env("AIRFLOW_ENTRYPOINT_RUN_AS_ROOT", "true")
    .shell("id -u > $T/uid")
    .run(secs(30));
    f.expect_code(0);
    assert_eq!(f.file("uid"), "0");
    assert!(
        f.stderr.contains("WARN") && f.stderr.contains("runs as root"),
        "{}",
        f.stderr
    );
}

#[test]
fn an_arbitrary_uid_gets_a_passwd_entry_when_the_file_is_writable() {
    if !needs_root("an_arbitrary_uid_gets_a_passwd_entry_when_the_file_is_writable") {
        return;
    }
    let f = Run::with_users("openshift", PASSWD, GROUP, 0o666, Some(1_000_770_000))
        .env("AIRFLOW_HOME", "/usr/local/airflow")
        .shell("id -u > $T/uid; id -un > $T/name; echo \"$HOME\" > $T/home; grep :1000770000: /etc/passwd > $T/entry")
        .run(secs(30));
    f.expect_code(0);
    assert_eq!(f.file("uid"), "1000770000");
    // astro is taken (UID 5000), so the entry is called `default`.
    assert_eq!(f.file("name"), "default");
    assert_eq!(f.file("home"), "/usr/local/airflow");
    assert!(
        f.file("entry").starts_with("default:x:1000770000:0:"),
        "{}",
        f.file("entry")
    );
}

#[test]
fn an_arbitrary_uid_with_a_read_only_passwd_warns_and_still_gets_home() {
    if !needs_root("an_arbitrary_uid_with_a_read_only_passwd_warns_and_still_gets_home") {
        return;
    }
    let f = Run::with_users("readonly", PASSWD, GROUP, 0o644, Some(1_000_770_000))
        .env("AIRFLOW_HOME", "/usr/local/airflow")
        .shell("id -u > $T/uid; echo \"$HOME\" > $T/home")
        .run(secs(30));
    f.expect_code(0);
    assert_eq!(f.file("uid"), "1000770000");
    assert_eq!(f.file("home"), "/usr/local/airflow");
    let warnings = f
        .stderr
        .lines()
        .filter(|l| l.contains("WARN") && l.contains("no entry"))
        .count();
    assert_eq!(warnings, 1, "warn once:\n{}", f.stderr);
}

#[test]
fn the_parent_death_signal_survives_the_drop() {
    if !needs_root("the_parent_death_signal_survives_the_drop") {
        return;
    }
    // unshare --kill-child asks for SIGKILL when unshare dies; the kernel
    // clears that request when credentials change, so the drop restores it.
    let mut running = Run::with_users("pdeath", PASSWD, GROUP, 0o644, None)
        .shell("echo ready > $T/ready; sleep 1000")
        .start();
    running.wait_file("ready", secs(30));
    let init = running.entrypoint_pid();
    // SAFETY: kill(2) with plain integers: only the launcher.
    unsafe { libc::kill(running.launcher_pid(), libc::SIGKILL) };
    let gone = wait_until(secs(20), || (!alive(init)).then_some(()));
    assert!(
        gone.is_some(),
        "the entrypoint {init} outlived its launcher"
    );
}
