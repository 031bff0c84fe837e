//! Finding a program the way exec would: a name with a slash is a path,
//! else the first executable regular file on PATH. Tells "not found" (127)
//! from "not executable" (126) by looking at the file itself. Part of the
//! spawn mechanism, shared by the main command and every start-up step.

use std::ffi::{OsStr, OsString};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use nix::unistd::{access, AccessFlags};

use crate::error::{code, Failure};

/// A command ready to spawn.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub program: PathBuf,
    pub argv0: OsString,
    pub args: Vec<OsString>,
}

/// The shell's default when PATH is unset.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

pub fn resolve(command: &[OsString], path_var: Option<&OsStr>) -> Result<Resolved, Failure> {
    let Some((name, args)) = command.split_first() else {
        return Err(Failure::usage(
            "no COMMAND given; usage: airflow-entrypoint [OPTIONS] [--] COMMAND [ARGS...] (see --help)",
        ));
    };
    Ok(Resolved {
        program: find_program(name, path_var)?,
        argv0: name.clone(),
        args: args.to_vec(),
    })
}

/// The names the image links to this binary (see `multicall`).
fn is_multicall_name(name: &OsStr) -> bool {
    name == "airflow" || name == "celery"
}

/// True when `path` is this very binary, through any link to it.
pub fn is_this_binary(path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata("/proc/self/exe"), std::fs::metadata(path)) {
        (Ok(own), Ok(other)) => own.dev() == other.dev() && own.ino() == other.ino(),
        _ => false,
    }
}

/// Looks `name` up like execvp: a name with a slash is taken as a path; else
/// the first executable regular file in PATH wins. A file that is found but
/// not executable is remembered and reported as 126 when nothing better is.
pub fn find_program(name: &OsStr, path_var: Option<&OsStr>) -> Result<PathBuf, Failure> {
    let shown = name.to_string_lossy();
    if name.is_empty() {
        return Err(Failure::new(
            code::NOT_FOUND,
            "command not found: (empty name)",
        ));
    }
    if name.as_bytes().contains(&b'/') {
        let path = PathBuf::from(name);
        return match check(&path) {
            Check::Executable => Ok(path),
            Check::Missing => Err(Failure::new(
                code::NOT_FOUND,
                format!("command not found: {shown}"),
            )),
            Check::NotExecutable(why) => Err(not_executable(&path, why)),
        };
    }
    let path_var = path_var.unwrap_or(OsStr::new(DEFAULT_PATH));
    let mut not_executable_candidate = None;
    for dir in path_var.as_bytes().split(|b| *b == b':') {
        let dir = if dir.is_empty() {
            Path::new(".")
        } else {
            Path::new(OsStr::from_bytes(dir))
        };
        let candidate = dir.join(name);
        // The image's multi-call links: the real program is further on.
        if is_multicall_name(name) && is_this_binary(&candidate) {
            continue;
        }
        match check(&candidate) {
            Check::Executable => return Ok(candidate),
            Check::Missing => {}
            Check::NotExecutable(why) => {
                not_executable_candidate.get_or_insert((candidate, why));
            }
        }
    }
    match not_executable_candidate {
        Some((path, why)) => Err(not_executable(&path, why)),
        None => Err(Failure::new(
            code::NOT_FOUND,
            format!(
                "command not found: {shown} (searched PATH={}); install it or give its full path",
                path_var.to_string_lossy()
            ),
        )),
    }
}

enum Check {
    Executable,
    Missing,
    NotExecutable(&'static str),
}

fn check(path: &Path) -> Check {
    let Ok(meta) = std::fs::metadata(path) else {
        return Check::Missing;
    };
    if meta.is_dir() {
        return Check::NotExecutable("it is a directory");
    }
    if meta.permissions().mode() & 0o111 == 0 {
        return Check::NotExecutable("it has no execute permission (chmod +x)");
    }
    if access(path, AccessFlags::X_OK).is_err() {
        return Check::NotExecutable("this user may not execute it");
    }
    Check::Executable
}

fn not_executable(path: &Path, why: &str) -> Failure {
    Failure::new(
        code::NOT_EXECUTABLE,
        format!("command not executable: {}: {why}", path.display()),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_sh_on_path() {
        let found = find_program(OsStr::new("sh"), Some(OsStr::new("/nonexistent:/bin"))).unwrap();
        assert_eq!(found, PathBuf::from("/bin/sh"));
    }

    #[test]
    fn missing_is_127_and_directory_is_126() {
        let e = find_program(OsStr::new("no-such-cmd-xyz"), Some(OsStr::new("/bin"))).unwrap_err();
        assert_eq!(e.exit_code, 127);
        assert!(e.message.starts_with("command not found: no-such-cmd-xyz"));
        let e = find_program(OsStr::new("/tmp"), None).unwrap_err();
        assert_eq!(e.exit_code, 126);
    }

    #[test]
    fn no_command_is_a_usage_error() {
        assert_eq!(resolve(&[], None).unwrap_err().exit_code, 64);
    }
}
