//! The binary called as `airflow` or `celery` (links ahead of the venv on
//! PATH): a probe form the native answers know runs through the entrypoint
//! with no wait; anything else is exec'd at once to the real program, found
//! on PATH past every link to this binary, with the caller's environment,
//! signal mask and dispositions untouched. It runs before anything else in
//! `main`, and must never exec itself.

#![cfg_attr(test, allow(dead_code))]

use std::ffi::{CString, OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::supervisor::program::is_this_binary;

/// The names the image links to this binary.
pub const NAMES: [&str; 2] = ["airflow", "celery"];

/// What the call is, for `main`.
pub enum Call {
    /// Not a multi-call name: the entrypoint as usual.
    Entrypoint,
    /// A probe this binary answers: COMMAND is the real program's absolute
    /// path and the arguments; the real program is the fallback.
    Probe(Vec<OsString>),
}

/// Looks at argv[0]: execs the real program (never returns) unless this is
/// a probe form the native answers know and native checks are on.
pub fn intercept(argv0: &OsStr, args: &[OsString]) -> Call {
    let name = Path::new(argv0)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or("");
    if !NAMES.contains(&name) {
        return Call::Entrypoint;
    }
    let real = match find_real_program(OsStr::new(name), std::env::var_os("PATH").as_deref()) {
        Some(real) => real,
        None => {
            eprintln!(
                "airflow-entrypoint: {name}: command not found (no {name} on PATH other than this binary's links)"
            );
            std::process::exit(127);
        }
    };
    let mut command = vec![real.into_os_string()];
    command.extend(args.iter().cloned());
    if native_checks_on() && crate::airflow::native::is_probe(&command) {
        return Call::Probe(command);
    }
    exec_real(&command)
}

/// `AIRFLOW_ENTRYPOINT_NATIVE_CHECKS`, read raw: the settings phase has not
/// run yet, and a malformed value must not stop the real program.
fn native_checks_on() -> bool {
    std::env::var("AIRFLOW_ENTRYPOINT_NATIVE_CHECKS")
        .ok()
        .and_then(|v| crate::settings::parse_bool(&v))
        .unwrap_or(true)
}

/// The first executable `name` on PATH that is not this binary (a link to
/// it, or a copy of it under another path, is skipped by device and inode).
pub fn find_real_program(name: &OsStr, path_var: Option<&OsStr>) -> Option<PathBuf> {
    let path_var = path_var.unwrap_or(OsStr::new(
        "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    ));
    path_var
        .as_bytes()
        .split(|b| *b == b':')
        .filter(|dir| !dir.is_empty())
        .map(|dir| Path::new(OsStr::from_bytes(dir)).join(name))
        .find(|candidate| {
            let Ok(meta) = std::fs::metadata(candidate) else {
                return false;
            };
            meta.is_file() && meta.mode() & 0o111 != 0 && !is_this_binary(candidate)
        })
}

/// Replaces this process with COMMAND (`command[0]` an absolute path),
/// after putting back what a caller's program expects: no blocked signal
/// and SIGPIPE at its default (main ignores it, and an ignored signal
/// survives exec). Exits 126 when the exec fails.
pub fn exec_real(command: &[OsString]) -> ! {
    // SAFETY: plain libc calls on valid arguments: an empty set is set as
    // the mask; SIGPIPE's disposition goes back to its default.
    unsafe {
        let mut empty: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut empty);
        libc::sigprocmask(libc::SIG_SETMASK, &empty, std::ptr::null_mut());
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let to_c = |a: &OsString| CString::new(a.as_bytes()).unwrap_or_default();
    let argv: Vec<CString> = command.iter().map(to_c).collect();
    let mut pointers: Vec<*const libc::c_char> = argv.iter().map(|a| a.as_ptr()).collect();
    pointers.push(std::ptr::null());
    // SAFETY: argv is NUL-terminated C strings ending with a null pointer;
    // environ is the process's own environment, unchanged.
    unsafe {
        extern "C" {
            static environ: *const *const libc::c_char;
        }
        libc::execve(argv[0].as_ptr(), pointers.as_ptr(), environ);
    }
    let error = std::io::Error::last_os_error();
    eprintln!(
        "airflow-entrypoint: cannot run {}: {error}",
        Path::new(&command[0]).display()
    );
    std::process::exit(126);
}
