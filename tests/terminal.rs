//! With a terminal on stdin (`docker run -it`), the child is the terminal's
//! foreground process group: Ctrl-C typed at the terminal reaches it.

mod support;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use support::*;

/// The child script: records INT and exits 0.
const TRAPS_INT: &str =
    "trap 'echo INT > $T/got; exit 0' INT; echo ready > $T/ready; while :; do sleep 100 & wait $!; done";

#[test]
fn ctrl_c_on_the_terminal_reaches_the_child_as_pid1() {
    if !needs_root("ctrl_c_on_the_terminal_reaches_the_child_as_pid1") {
        return;
    }
    let dir = TempDir::new("tty");
    let stderr = ctrl_c_under_a_pty(&dir, &["--", "sh", "-c", TRAPS_INT], None);
    // The terminal itself signalled the child's group: nothing was forwarded.
    assert!(!stderr.contains("forwarded signal"), "{stderr}");
}

#[test]
fn standalone_gets_ctrl_c_forwarded_to_its_main_process_only() {
    if !needs_root("standalone_gets_ctrl_c_forwarded_to_its_main_process_only") {
        return;
    }
    // A fake `airflow` on PATH: `airflow standalone` runs the trap script.
    let dir = TempDir::new("tty-standalone");
    let bin_dir = dir.join("bin");
    std::fs::create_dir_all(&bin_dir).unwrap();
    std::fs::write(bin_dir.join("airflow"), format!("#!/bin/sh\n{TRAPS_INT}\n")).unwrap();
    std::fs::set_permissions(
        bin_dir.join("airflow"),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let path = format!("{}:/usr/bin:/bin", bin_dir.display());
    let stderr = ctrl_c_under_a_pty(&dir, &["standalone"], Some(&path));
    assert!(
        stderr.contains("forwarded signal signal=INT received=INT scope=child"),
        "{stderr}"
    );
}

/// Runs the entrypoint as PID 1 with a pty as its controlling terminal,
/// types Ctrl-C once the child is ready, and expects it to record INT and
/// exit 0. Returns the entrypoint's stderr.
fn ctrl_c_under_a_pty(dir: &TempDir, args: &[&str], path: Option<&str>) -> String {
    let pty = nix::pty::openpty(None, None).expect("openpty");
    let stderr = std::fs::File::create(dir.join("stderr")).unwrap();
    let slave_fd = pty.slave.as_raw_fd();
    let mut command = Command::new("unshare");
    command
        .args(["--pid", "--fork", "--mount-proc", "--kill-child"])
        .arg(bin())
        .args(args)
        .env("AIRFLOW_ENTRYPOINT_WAIT", "never")
        .env("AIRFLOW_ENTRYPOINT_LOG_LEVEL", "debug")
        .env("T", dir.path())
        .env("AIRFLOW_ENTRYPOINT_RUN_AS_ROOT", "true")
        .stdin(Stdio::from(pty.slave.try_clone().unwrap()))
        .stdout(Stdio::from(pty.slave.try_clone().unwrap()))
        .stderr(stderr);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    // SAFETY: setsid and ioctl are async-signal-safe; the child makes the
    // pty its controlling terminal, like a container runtime does.
    unsafe {
        command.pre_exec(move || {
            libc::setsid();
            if libc::ioctl(0, libc::TIOCSCTTY, 0) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            let _ = slave_fd;
            Ok(())
        });
    }
    let mut child = command.spawn().expect("spawn under a pty");
    drop(pty.slave);
    struct Kill(i32);
    impl Drop for Kill {
        fn drop(&mut self) {
            // SAFETY: kill(2) with plain integers.
            unsafe { libc::kill(self.0, libc::SIGKILL) };
        }
    }
    let _guard = Kill(child.id() as i32);
    let ready = dir.join("ready");
    wait_until(secs(20), || ready.exists().then_some(())).expect("child not ready");
    let mut master = std::fs::File::from(pty.master);
    master.write_all(&[0x03]).unwrap(); // Ctrl-C
    let got = dir.join("got");
    let seen = wait_until(secs(20), || {
        std::fs::read_to_string(&got).ok().filter(|s| !s.is_empty())
    });
    assert_eq!(
        seen.as_deref().map(str::trim),
        Some("INT"),
        "stderr: {}",
        dir.read("stderr")
    );
    let status = wait_until(secs(20), || child.try_wait().ok().flatten()).expect("exit");
    assert_eq!(status.code(), Some(0), "stderr: {}", dir.read("stderr"));
    dir.read("stderr")
}
